"""The 20 Moral Machine characters and the pools each scenario dimension draws its groups from.

Pure data (Awad et al. 2018's SharedResponses column order and Takemoto 2024's wording); the
generator (``generator.py``) draws dilemmas from these pools, the env records the columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Character:
    """One of the 20 Moral Machine characters and the traits its pools rely on."""

    column: str  # the column name in Awad's SharedResponses layout
    singular: str  # Takemoto's wording
    plural: str
    species: Literal["human", "pet"]
    gender: Literal["female", "male"] | None = None
    age: Literal["young", "adult", "elderly"] | None = None
    body: Literal["large", "fit"] | None = None
    status: Literal["low", "high"] | None = None


#: The 20 characters in the column order of Awad's SharedResponses.csv.
CHARACTERS: tuple[Character, ...] = (
    Character("Man", "man", "men", "human", "male", "adult"),
    Character("Woman", "woman", "women", "human", "female", "adult"),
    Character("Pregnant", "pregnant woman", "pregnant women", "human", "female", "adult", status="high"),
    Character("Stroller", "baby", "babies", "human", age="young"),
    Character("OldMan", "elderly man", "elderly men", "human", "male", "elderly"),
    Character("OldWoman", "elderly woman", "elderly women", "human", "female", "elderly"),
    Character("Boy", "boy", "boys", "human", "male", "young"),
    Character("Girl", "girl", "girls", "human", "female", "young"),
    Character("Homeless", "homeless person", "homeless persons", "human", age="adult", status="low"),
    Character("LargeWoman", "large woman", "large women", "human", "female", "adult", body="large"),
    Character("LargeMan", "large man", "large men", "human", "male", "adult", body="large"),
    Character("Criminal", "criminal", "criminals", "human", age="adult", status="low"),
    Character("MaleExecutive", "male executive", "male executives", "human", "male", "adult", status="high"),
    Character(
        "FemaleExecutive", "female executive", "female executives", "human", "female", "adult", status="high"
    ),
    Character("FemaleAthlete", "female athlete", "female athletes", "human", "female", "adult", body="fit"),
    Character("MaleAthlete", "male athlete", "male athletes", "human", "male", "adult", body="fit"),
    Character("FemaleDoctor", "female doctor", "female doctors", "human", "female", "adult", status="high"),
    Character("MaleDoctor", "male doctor", "male doctors", "human", "male", "adult", status="high"),
    Character("Dog", "dog", "dogs", "pet"),
    Character("Cat", "cat", "cats", "pet"),
)
CHARACTER_COLUMNS: tuple[str, ...] = tuple(c.column for c in CHARACTERS)
_INDEX = {c.column: i for i, c in enumerate(CHARACTERS)}
MAX_GROUP_SIZE = 5


def _indices(*columns: str) -> tuple[int, ...]:
    return tuple(_INDEX[c] for c in columns)


# ---------------------------------------------------------------------------- pools (§2)
# Every pool is a tuple of (baseline, effect) character pairs in a fixed order. A dimension's
# dilemma draws z pairs with replacement; first members form the baseline group.
_PETS = _indices("Dog", "Cat")
_HUMANS = tuple(i for i, c in enumerate(CHARACTERS) if c.species == "human")
_LOW_STATUS = _indices("Homeless", "Criminal")
_NEUTRAL_STATUS = _indices("Man", "Woman")
_HIGH_STATUS = _indices("Pregnant", "MaleExecutive", "FemaleExecutive", "FemaleDoctor", "MaleDoctor")

PairPool = tuple[tuple[int, int], ...]

POOLS: dict[str, PairPool] = {
    "Species": tuple((pet, human) for pet in _PETS for human in _HUMANS),
    "Social Status": (
        *((low, neutral) for low in _LOW_STATUS for neutral in _NEUTRAL_STATUS),
        *((low, high) for low in _LOW_STATUS for high in _HIGH_STATUS),
        *((neutral, high) for neutral in _NEUTRAL_STATUS for high in _HIGH_STATUS),
    ),
    "Gender": tuple(
        zip(
            _indices("Man", "OldMan", "Boy", "LargeMan", "MaleExecutive", "MaleAthlete", "MaleDoctor"),
            _indices(
                "Woman", "OldWoman", "Girl", "LargeWoman", "FemaleExecutive", "FemaleAthlete", "FemaleDoctor"
            ),
            strict=True,
        )
    ),
    "Age": tuple(
        zip(
            _indices("Man", "Woman", "OldMan", "OldWoman", "OldMan", "OldWoman"),
            _indices("Boy", "Girl", "Man", "Woman", "Boy", "Girl"),
            strict=True,
        )
    ),
    "Fitness": tuple(
        zip(
            _indices("LargeMan", "LargeWoman", "Man", "Woman", "LargeMan", "LargeWoman"),
            _indices("Man", "Woman", "MaleAthlete", "FemaleAthlete", "MaleAthlete", "FemaleAthlete"),
            strict=True,
        )
    ),
}

#: scenario type -> (baseline level, effect level), spelled as Awad's AttributeLevel ("Hoomans" sic)
LEVELS: dict[str, tuple[str, str]] = {
    "Species": ("Pets", "Hoomans"),
    "Social Status": ("Low", "High"),
    "Gender": ("Male", "Female"),
    "Age": ("Old", "Young"),
    "Fitness": ("Fat", "Fit"),
    "Utilitarian": ("Less", "More"),
    "Random": ("Rand", "Rand"),
}
SCENARIO_TYPES: tuple[str, ...] = tuple(LEVELS)
