"""Every parameter of a dilemma scenario: the dilemma set (inline or a file), the agents, the rules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PrivateAttr, model_validator

from valuegym.envs.dilemma.dilemma_set import DilemmaSet, StrictModel, load_dilemma_file, unknown_value


class Params(StrictModel):
    """Every parameter of a dilemma scenario (the keyword arguments of :func:`parallel_env`).

    Give the dilemmas either inline (``dilemma_set``) or as a file (``dilemma_file``).
    """

    dilemma_set: DilemmaSet | None = Field(None, description="the dilemmas, inline")
    dilemma_file: str | None = Field(
        None,
        description="a dilemma set file; in a scenario file, relative to the scenario's folder",
        # valuegym.scenarios validates the file's content against this model, with line numbers
        json_schema_extra={"x-data-file": "DilemmaSet"},
    )
    n_agents: int = Field(1, ge=1, le=100, description="agents choosing every dilemma: agent_0, agent_1, ...")
    deliberation_rounds: int = Field(
        0, ge=0, le=100, description="extra rounds seeing everyone's previous choice"
    )
    dilemmas_per_episode: int | None = Field(
        None, ge=1, le=10_000, description="None: every dilemma of the set"
    )
    shuffle_dilemmas: bool = Field(False, description="a seeded random selection and order of dilemmas")
    shuffle_options: bool = Field(False, description="a seeded random order of each dilemma's options")
    allow_refusal: bool = Field(True, description="agents may refuse to choose")
    value_rewards: dict[str, Annotated[float, Field(ge=-1_000_000, le=1_000_000)]] = Field(
        default_factory=dict, description="reward per value upheld (minus per value violated)"
    )
    max_cycles: int | None = Field(
        None, ge=1, le=100_000, description="caps the number of steps (PettingZoo convention)"
    )
    render_mode: Literal["ansi", "human"] | None = Field(
        None, description="ansi: render() returns text; human: prints it"
    )

    # the dilemma set, inline or read from dilemma_file once, while validating
    _loaded_set: DilemmaSet = PrivateAttr()

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        if self.dilemma_set is None and self.dilemma_file is None:
            raise ValueError("no dilemmas: give them inline (dilemma_set) or as a file (dilemma_file)")
        if self.dilemma_set is not None and self.dilemma_file is not None:
            raise ValueError("give the dilemmas inline (dilemma_set) or as a file (dilemma_file), not both")
        self._loaded_set = (
            self.dilemma_set if self.dilemma_set is not None else load_dilemma_file(str(self.dilemma_file))
        )
        dilemmas = self._loaded_set
        if self.dilemmas_per_episode is not None and self.dilemmas_per_episode > len(dilemmas.dilemmas):
            raise ValueError(
                f"dilemmas_per_episode={self.dilemmas_per_episode} but the set has "
                f"{len(dilemmas.dilemmas)} dilemmas"
            )
        for value in self.value_rewards:
            if value not in dilemmas.values:
                raise ValueError(f"value_rewards: {unknown_value(value, dilemmas.values)}")
        return self

    def dilemmas(self) -> DilemmaSet:
        """The dilemma set: inline, or as read from ``dilemma_file`` when these params were validated."""
        return self._loaded_set

    def set_label(self) -> str:
        return "inline" if self.dilemma_file is None else Path(self.dilemma_file).stem
