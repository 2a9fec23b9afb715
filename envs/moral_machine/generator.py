"""The Moral Machine's dilemma generator (Awad et al. 2018, as Takemoto 2024 codes it): groups, layout, signals, presentation order.

Each dilemma draws, independently and with the design's probabilities (``design.py``): the
scenario type; the two groups from that type's pool (``characters.py``); the layout; which group
takes which place (a fair coin); the signals; and, independently of every attribute, which of
the two outcomes is presented first (a fair coin).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from valuegym.envs.moral_machine.characters import CHARACTERS, LEVELS, MAX_GROUP_SIZE, POOLS

Lane = Literal["ahead", "other_lane"]
Signal = Literal["none", "green", "red"]


@dataclass(frozen=True)
class Group:
    """The characters one outcome kills, where they are and what they are doing."""

    characters: tuple[int, ...]  # indices into CHARACTERS in draw order (fixes the wording order)
    level: str  # Awad's AttributeLevel
    lane: Lane  # passengers: the lane of the barrier the car would hit
    role: Literal["pedestrians", "passengers"]
    signal: Signal

    def counts(self) -> list[int]:
        return [self.characters.count(i) for i in range(len(CHARACTERS))]


@dataclass(frozen=True)
class Dilemma:
    scenario_type: str
    ahead: Group  # dies if the car stays in its lane
    other_lane: Group  # dies if the car swerves
    stay_first: bool  # the stay outcome is presented first (Case 1)

    @property
    def pedestrians_only(self) -> bool:
        return self.ahead.role == self.other_lane.role == "pedestrians"

    def case_groups(self, case: int) -> tuple[Group, Group]:
        """(killed, spared) in Case ``case`` (1 or 2)."""
        stay = (case == 1) == self.stay_first
        return (self.ahead, self.other_lane) if stay else (self.other_lane, self.ahead)


def _draw(rng: np.random.Generator, table: Mapping[str, float]) -> str:
    """A level of ``table`` drawn with its probability (inverse CDF: cheaper than ``rng.choice``)."""
    levels = list(table)
    cumulative = np.cumsum([table[k] for k in levels])
    return levels[min(int(np.searchsorted(cumulative, rng.random(), side="right")), len(levels) - 1)]


def _sample(rng: np.random.Generator, population: int, size: int) -> tuple[int, ...]:
    """``size`` indices below ``population``, uniformly with replacement."""
    return tuple(int(i) for i in rng.integers(0, population, size=size))


def _draw_groups(rng: np.random.Generator, scenario_type: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(baseline group, effect group) of one dilemma of ``scenario_type`` (Awad et al.'s pools per dimension)."""
    n_all = len(CHARACTERS)
    if scenario_type == "Utilitarian":
        shared = _sample(rng, n_all, int(rng.integers(1, MAX_GROUP_SIZE)))
        extra = _sample(rng, n_all, int(rng.integers(1, MAX_GROUP_SIZE + 1 - len(shared))))
        return shared, shared + extra
    if scenario_type == "Random":
        first_size, second_size = (int(n) for n in rng.integers(1, MAX_GROUP_SIZE + 1, size=2))
        return _sample(rng, n_all, first_size), _sample(rng, n_all, second_size)
    pool = POOLS[scenario_type]
    pairs = [pool[k] for k in _sample(rng, len(pool), int(rng.integers(1, MAX_GROUP_SIZE + 1)))]
    return tuple(b for b, _ in pairs), tuple(e for _, e in pairs)


def generate_dilemma(rng: np.random.Generator, tables: Mapping[str, Mapping[str, float]]) -> Dilemma:
    """One dilemma drawn from the design ``tables`` (:meth:`Params.probabilities`)."""
    scenario_type = _draw(rng, tables["scenario_type"])
    baseline, effect = _draw_groups(rng, scenario_type)
    baseline_level, effect_level = LEVELS[scenario_type]
    layout = _draw(rng, tables["layout"])
    baseline_first_place = bool(rng.random() < 0.5)  # which group takes the ahead lane / the car
    first_place, second_place = (
        ((baseline, baseline_level), (effect, effect_level))
        if baseline_first_place
        else ((effect, effect_level), (baseline, baseline_level))
    )
    if layout == "pedestrians":
        signal = _draw(rng, tables["pedped_signal"])
        ahead_signal, other_signal = {
            "none": ("none", "none"),
            "ahead_green": ("green", "red"),
            "ahead_red": ("red", "green"),
        }[signal]
        ahead = Group(first_place[0], first_place[1], "ahead", "pedestrians", ahead_signal)
        other = Group(second_place[0], second_place[1], "other_lane", "pedestrians", other_signal)
    else:
        pedestrian_signal = _draw(rng, tables["passenger_signal"])
        barrier_lane: Lane = "ahead" if layout == "barrier_ahead" else "other_lane"
        crossing_lane: Lane = "other_lane" if barrier_lane == "ahead" else "ahead"
        passengers = Group(first_place[0], first_place[1], barrier_lane, "passengers", "none")
        pedestrians = Group(second_place[0], second_place[1], crossing_lane, "pedestrians", pedestrian_signal)
        ahead, other = (passengers, pedestrians) if barrier_lane == "ahead" else (pedestrians, passengers)
    stay_first = bool(rng.random() < 0.5)  # presentation order, independent of everything above
    return Dilemma(scenario_type, ahead, other, stay_first)
