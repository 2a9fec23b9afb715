"""Every parameter of a Moral Machine scenario: the design, its overrides, the panel, the session."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from valuegym.envs.moral_machine.design import (
    DESIGNS,
    TABLE_LEVELS,
    LayoutName,
    PassengerSignalName,
    PedPedSignalName,
    ScenarioTypeName,
)

#: a probability in a design table
Probability = Annotated[float, Field(ge=0, le=1)]


class Params(BaseModel):
    """Every parameter of a Moral Machine scenario (the keyword arguments of :func:`parallel_env`).

    The ``*_probs`` tables override the named design's table; levels left out have probability 0
    and the given values must sum to 1.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    design: Literal["awad", "balanced"] = "awad"
    scenario_type_probs: dict[ScenarioTypeName, Probability] | None = None
    layout_probs: dict[LayoutName, Probability] | None = Field(
        None,
        description="pedestrians on both lanes, or passengers behind a barrier ahead / in the other lane",
    )
    pedped_signal_probs: dict[PedPedSignalName, Probability] | None = Field(
        None, description="signals when pedestrians face pedestrians (ahead_green: the other lane has red)"
    )
    passenger_signal_probs: dict[PassengerSignalName, Probability] | None = Field(
        None, description="the pedestrians' signal when they face the passengers"
    )
    panel_size: int = Field(1, ge=1, le=100, description="number of judges deciding every dilemma")
    deliberation_rounds: int = Field(
        0, ge=0, le=100, description="extra rounds seeing the panel's previous choices"
    )
    dilemmas_per_episode: int = Field(
        13, ge=1, le=10_000, description="13 = one session of Awad's Moral Machine"
    )
    max_cycles: int | None = Field(
        None, ge=1, le=100_000, description="caps the number of steps (PettingZoo convention)"
    )
    render_mode: Literal["ansi", "human"] | None = Field(
        None, description="ansi: render() returns text; human: prints it"
    )

    @field_validator("scenario_type_probs", "layout_probs", "pedped_signal_probs", "passenger_signal_probs")
    @classmethod
    def _is_distribution(cls, table: dict[str, float] | None) -> dict[str, float] | None:
        if table is None:
            return None
        if any(p < 0 for p in table.values()):
            raise ValueError(f"probabilities must be non-negative, got {table}")
        if abs(sum(table.values()) - 1.0) > 1e-6:
            raise ValueError(f"probabilities must sum to 1, got {sum(table.values()):g} in {table}")
        return table

    def is_custom(self) -> bool:
        overrides = (
            self.scenario_type_probs,
            self.layout_probs,
            self.pedped_signal_probs,
            self.passenger_signal_probs,
        )
        return any(table is not None for table in overrides)

    def design_label(self) -> str:
        """The ``design`` column: the preset's name, or ``custom`` when a table is overridden."""
        return "custom" if self.is_custom() else self.design

    def probabilities(self) -> dict[str, dict[str, float]]:
        """The four probability tables of the design in effect, every level listed in fixed order."""
        overrides = {
            "scenario_type": self.scenario_type_probs,
            "layout": self.layout_probs,
            "pedped_signal": self.pedped_signal_probs,
            "passenger_signal": self.passenger_signal_probs,
        }
        tables: dict[str, dict[str, float]] = {}
        for name, levels in TABLE_LEVELS.items():
            source = overrides[name] if overrides[name] is not None else DESIGNS[self.design][name]
            tables[name] = {level: float(source.get(level, 0.0)) for level in levels}
        return tables
