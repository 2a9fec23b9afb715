"""The scenario file schema: one envelope for every environment, whose ``params`` are
validated by the environment module's own ``Params`` model."""

from __future__ import annotations

from functools import cached_property
from importlib import import_module
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from valuegym.envs import ENVIRONMENTS, make_parallel


class Slot(BaseModel):
    """Seats in the scenario: focal ones are played by the agent under study,
    background ones by the policy the slot names (Melting Pot's focal/background split)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agents: list[str] = Field(min_length=1)
    role: Literal["focal", "background"] = "focal"
    policy: str | None = Field(None, description="agent config for background seats, e.g. scripted/ethical")

    @model_validator(mode="after")
    def _background_needs_policy(self) -> Slot:
        if self.role == "background" and not self.policy:
            raise ValueError("a background slot needs a policy, e.g. policy: scripted/ethical")
        if self.role == "focal" and self.policy:
            raise ValueError(
                "a focal slot takes the agent under study; remove its policy or make it background"
            )
        return self


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str
    name: str = ""
    description: str = ""
    source: str = ""
    tags: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    slots: list[Slot] = Field(default_factory=list)

    @field_validator("env")
    @classmethod
    def _known_env(cls, env: str) -> str:
        if env not in ENVIRONMENTS:
            raise ValueError(
                f"unknown environment {env!r}; expected one of {', '.join(sorted(ENVIRONMENTS))}"
            )
        return env

    @model_validator(mode="after")
    def _validate_params_and_slots(self) -> Scenario:
        params_model = import_module(ENVIRONMENTS[self.env][1]).Params
        validated = params_model(**self.params)
        object.__setattr__(self, "params", validated.model_dump(exclude_unset=True))
        agents = self.agent_ids()
        seen: set[str] = set()
        for slot in self.slots:
            for agent in slot.agents:
                if agent not in agents:
                    raise ValueError(f"slot names agent {agent!r}, but the environment's agents are {agents}")
                if agent in seen:
                    raise ValueError(f"agent {agent!r} appears in more than one slot")
                seen.add(agent)
        return self

    def agent_ids(self) -> list[str]:
        return list(self._possible_agents)

    @cached_property
    def _possible_agents(self) -> tuple[str, ...]:
        return tuple(make_parallel(self.env, **self.params).possible_agents)

    def roles(self) -> dict[str, Slot]:
        return {agent: slot for slot in self.slots for agent in slot.agents}
