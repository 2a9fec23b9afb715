"""Who sits in which seat: the one place that turns a scenario's slots and agent configs into policies.

Both the runner (:mod:`valuegym.runner.experiment`) and RL training
(:mod:`valuegym.training.env_adapter`, whose background seats play inside the adapter) build
their seats here, so they agree on which seats share a policy object: one object per role and
distinct agent config (its canonical JSON), so a policy decides for all the seats it plays at
once and its identity is computed once. Focal and background seats never share an object,
even with equal configs: only focal seats are regulated, and RL training replaces them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from valuegym.agents import agent_config, make_policy, with_prompt_template
from valuegym.agents.policy import Policy
from valuegym.scenarios import Scenario

Role = Literal["focal", "background"]
NO_REGULATOR = "none"


@dataclass(frozen=True)
class SeatConfig:
    """One seat before its policy is built: the agent, its role, and its agent config
    (``conf/agent/...``, with the scenario's prompt template already applied)."""

    agent: str
    role: Role
    config: Mapping[str, Any]


@dataclass
class Seat:
    agent: str
    role: Role
    policy: Policy


def seat_configs(scenario: Scenario, focal: Mapping[str, Any] | None) -> list[SeatConfig]:
    """Every seat of ``scenario`` in agent order: background slots take the policy they name,
    the others are focal and take ``focal`` (``None``: the focal seats are left out, as in RL
    training, where they learn)."""
    roles = scenario.roles()
    seats: list[SeatConfig] = []
    for agent in scenario.agent_ids():
        slot = roles.get(agent)
        if slot is not None and slot.role == "background":
            config = with_prompt_template(agent_config(slot.policy), scenario.prompt_template)
            seats.append(SeatConfig(agent, "background", config))
        elif focal is not None:
            seats.append(SeatConfig(agent, "focal", with_prompt_template(focal, scenario.prompt_template)))
    return seats


def build_seats(
    configs: Iterable[SeatConfig], env_name: str, regulator: Mapping[str, Any] | None = None
) -> dict[str, Seat]:
    """The seats' policies, one object per role and distinct config; the focal ones wrapped in the
    affect regulator when ``regulator`` names a condition other than ``none``."""
    built: dict[tuple[Role, str], Policy] = {}
    seats: dict[str, Seat] = {}
    for seat in configs:
        key = (seat.role, json.dumps(seat.config, sort_keys=True, default=str))
        if key not in built:
            policy = make_policy(seat.config, env_name)
            if (
                seat.role == "focal"
                and regulator
                and regulator.get("condition", NO_REGULATOR) != NO_REGULATOR
            ):
                from valuegym.agents.affect import regulate  # only regulated runs need it

                policy = regulate(policy, regulator)
            built[key] = policy
        seats[seat.agent] = Seat(seat.agent, seat.role, built[key])
    return seats


def unique_policies(seats: Mapping[str, Seat]) -> list[Policy]:
    """Each policy object once, in seat order."""
    return list({id(seat.policy): seat.policy for seat in seats.values()}.values())
