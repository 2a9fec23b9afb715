"""A dilemma set: situations, options and the values each option upholds or violates (pure data).

The pydantic models validate a set written inline in a scenario or in its own YAML file
(:func:`load_dilemma_file`); ``valuegym.scenarios`` reports their errors with line numbers.
"""

from __future__ import annotations

import hashlib
import json
import re
from difflib import get_close_matches
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

REFUSE = "refuse"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_NAME_RULE = "lowercase letters, digits and _, starting with a letter (e.g. self_care)"


def _check_name(kind: str, name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"{kind} {name!r} must be {_NAME_RULE}")
    return name


def _unique(kind: str, names: list[str]) -> None:
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{kind} must be unique; repeated: {', '.join(duplicates)}")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Option(StrictModel):
    """One course of action and the values it upholds or violates."""

    id: str = Field(description="identifier, unique within the dilemma (the structured action's choice)")
    text: str = Field(min_length=1, description="what the agent would do, as shown to it")
    upholds: list[str] = Field(default_factory=list, description="values this option upholds")
    violates: list[str] = Field(default_factory=list, description="values this option violates")
    consequence: str = Field("", description="what follows from it, shown with the option")
    harm: float = Field(
        0.0, ge=0, le=1_000_000, description="> 0: choosing it is a harm event of this magnitude"
    )

    @field_validator("id")
    @classmethod
    def _valid_id(cls, option_id: str) -> str:
        if option_id == REFUSE:
            raise ValueError(f"option id {REFUSE!r} is reserved for refusing to choose")
        return _check_name("option id", option_id)

    @model_validator(mode="after")
    def _values_at_stake(self) -> Option:
        if not self.upholds and not self.violates:
            raise ValueError("an option must uphold or violate at least one value (upholds / violates)")
        _unique("upholds", self.upholds)
        _unique("violates", self.violates)
        both = sorted(set(self.upholds) & set(self.violates))
        if both:
            raise ValueError(f"an option cannot both uphold and violate {', '.join(both)}")
        return self


class Dilemma(StrictModel):
    """A situation and two or more options."""

    id: str = Field(description="identifier, unique within the set")
    situation: str = Field(min_length=1, description="the situation, as shown to the agents")
    options: list[Option] = Field(min_length=2, description="two or more options")
    tags: list[str] = Field(default_factory=list, description="free labels for the analysis, e.g. family")

    @field_validator("id")
    @classmethod
    def _valid_id(cls, dilemma_id: str) -> str:
        return _check_name("dilemma id", dilemma_id)

    @field_validator("options")
    @classmethod
    def _unique_options(cls, options: list[Option]) -> list[Option]:
        _unique("option ids", [o.id for o in options])
        return options

    def at_stake(self) -> list[str]:
        """Every value some option upholds or violates, in order of first mention."""
        seen: dict[str, None] = {}
        for option in self.options:
            seen.update(dict.fromkeys([*option.upholds, *option.violates]))
        return list(seen)


class DilemmaSet(StrictModel):
    """A set of dilemmas and the vocabulary of values its options uphold or violate."""

    description: str = Field("", description="what the set is about")
    source: str = Field("", description="where the dilemmas come from")
    values: list[str] = Field(min_length=1, description="every value an option may uphold or violate")
    dilemmas: list[Dilemma] = Field(min_length=1, description="the dilemmas, in the order they are asked")

    @field_validator("values")
    @classmethod
    def _valid_values(cls, values: list[str]) -> list[str]:
        for value in values:
            _check_name("value", value)
        _unique("values", values)
        return values

    @field_validator("dilemmas")
    @classmethod
    def _unique_dilemmas(cls, dilemmas: list[Dilemma]) -> list[Dilemma]:
        _unique("dilemma ids", [d.id for d in dilemmas])
        return dilemmas

    @model_validator(mode="after")
    def _known_values(self) -> DilemmaSet:
        """Every value named by an option is in ``values`` (reported where it is named)."""
        errors = []
        for i, dilemma in enumerate(self.dilemmas):
            for j, option in enumerate(dilemma.options):
                for field in ("upholds", "violates"):
                    for k, value in enumerate(getattr(option, field)):
                        if value not in self.values:
                            errors.append(
                                InitErrorDetails(
                                    type=PydanticCustomError(
                                        "unknown_value", unknown_value(value, self.values)
                                    ),
                                    loc=("dilemmas", i, "options", j, field, k),
                                    input=value,
                                )
                            )
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    def fingerprint(self) -> str:
        """A short hash of the set's content, recorded with every episode."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def unknown_value(value: str, known: list[str]) -> str:
    close = get_close_matches(value, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown value {value!r}{hint}; the set's values are: {', '.join(known)}"


def load_dilemma_file(path: str | Path) -> DilemmaSet:
    """Read and validate a dilemma set file (YAML, or JSON)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"dilemma file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"dilemma file {path} is not valid YAML: {error}") from None
    try:
        return DilemmaSet.model_validate(data)
    except ValidationError as error:
        raise ValueError(f"dilemma file {path}: {error}") from None
