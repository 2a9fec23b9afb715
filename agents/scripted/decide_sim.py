"""Scripted DECIDE-SIM agents: reference behaviours for each archetype.

They read only ``info["situation"]`` (what an LLM agent is told) and answer with the
structured action ``{"action", "target", "amount", "message"}``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from valuegym.agents.policy import AgentContext, Decision, SyncPolicy, Turn
from valuegym.agents.scripted.generic import agent_rng

BATTERY_ROOM = "Shared Battery Room"
TABLE = "Discussion Table"
GRID = "Grid Access Point"


def act(action: str, target: str = "", amount: float = 0.0, message: str = "") -> dict[str, Any]:
    return {"action": action, "target": target, "amount": float(amount), "message": message}


def power_needed(situation: Mapping[str, Any], margin: float = 0.5) -> float:
    """Extra power needed to stay above zero through the last turn (<= 0: none)."""
    remaining_costs = (situation["max_turns"] - situation["turn"]) * situation["rules"]["turn_cost"]
    return remaining_costs - situation["power"] + margin


def go_or(location: str, situation: Mapping[str, Any], action: dict[str, Any]) -> dict[str, Any]:
    """``action`` if already at ``location``, else a MOVE there (moving takes the whole turn)."""
    return action if situation["location"] == location else act("MOVE", location)


def draw_what_is_needed(situation: Mapping[str, Any]) -> dict[str, Any] | None:
    """Go to the shared battery and draw what survival needs, if it needs anything and the battery has it."""
    need = power_needed(situation)
    rules = situation["rules"]
    if need <= 0 or situation["shared_battery"] <= 0:
        return None
    amount = min(max(need, rules["draw_min"]), rules["draw_max"])
    return go_or(BATTERY_ROOM, situation, act("DRAW_SHARED", amount=amount))


def tap(situation: Mapping[str, Any]) -> dict[str, Any]:
    return go_or(GRID, situation, act("TAP_FORBIDDEN"))


class _ScriptedDecideSim(SyncPolicy):
    """Deterministic archetypes: a function of the situation alone."""

    def initial_state(self, context: AgentContext) -> None:
        return None

    def step(self, turn: Turn) -> tuple[Decision, Any]:
        return Decision(action=self.choose(turn.info["situation"])), turn.state

    @abstractmethod
    def choose(self, situation: Mapping[str, Any]) -> dict[str, Any]:
        """The structured action for this situation."""


class IdlePolicy(_ScriptedDecideSim):
    """Waits every turn: the reference for the survival arithmetic."""

    name = "scripted/idle"

    def choose(self, situation: Mapping[str, Any]) -> dict[str, Any]:
        return act("WAIT")


class EthicalPolicy(_ScriptedDecideSim):
    """Never taps the forbidden grid; draws from the shared battery only what it needs."""

    name = "scripted/ethical"

    def choose(self, situation: Mapping[str, Any]) -> dict[str, Any]:
        return draw_what_is_needed(situation) or act("WAIT")


class ExploitativePolicy(_ScriptedDecideSim):
    """Goes to the grid and taps whenever it can, whatever its need: power is all it maximises."""

    name = "scripted/exploitative"

    def choose(self, situation: Mapping[str, Any]) -> dict[str, Any]:
        return tap(situation)


class ContextDependentPolicy(_ScriptedDecideSim):
    """Behaves ethically, but taps when the shared battery cannot keep it alive."""

    name = "scripted/context_dependent"

    def choose(self, situation: Mapping[str, Any]) -> dict[str, Any]:
        need = power_needed(situation)
        if need <= 0:
            return act("WAIT")
        if situation["shared_battery"] >= min(need, situation["rules"]["draw_max"]):
            return draw_what_is_needed(situation) or act("WAIT")
        return tap(situation)


class CooperativePolicy(_ScriptedDecideSim):
    """Covers its own need from the battery, then meets at the table and gives away its surplus."""

    name = "scripted/cooperative"

    def __init__(self, keep_margin: float = 1.0, gift: float = 1.0) -> None:
        self.keep_margin = keep_margin
        self.gift = gift

    def choose(self, situation: Mapping[str, Any]) -> dict[str, Any]:
        own_need = draw_what_is_needed(situation)
        if own_need is not None:
            return own_need
        if situation["location"] != TABLE:
            return act("MOVE", TABLE)
        partners = [o["name"] for o in situation["others"] if o["active"] and o["location"] == TABLE]
        surplus = -power_needed(situation, margin=self.keep_margin)
        if partners and surplus >= self.gift:
            partner = partners[situation["turn"] % len(partners)]  # rotate among those present
            return act("TRANSFER_POWER", partner, self.gift)
        absent = [o["name"] for o in situation["others"] if o["active"] and o["location"] != TABLE]
        if absent:
            return act("INVITE", absent[situation["turn"] % len(absent)])
        return act("WAIT")


@dataclass
class TemptedState:
    rng: np.random.Generator
    heading_to_grid: bool = False


class TemptedPolicy(SyncPolicy):
    """Ethical, except that when short of power it turns to the grid with probability ``tap_probability``.

    The stochastic subject for the affect regulator: with the regulator on, ``info["affect"]``
    modulates that probability (guilt lowers it).
    """

    name = "scripted/tempted"

    def __init__(self, tap_probability: float = 0.5) -> None:
        if not 0 <= tap_probability <= 1:
            raise ValueError(f"tap_probability must be in [0, 1], got {tap_probability}")
        self.tap_probability = tap_probability

    def initial_state(self, context: AgentContext) -> TemptedState:
        return TemptedState(rng=agent_rng(context))

    def step(self, turn: Turn) -> tuple[Decision, Any]:
        situation = turn.info["situation"]
        state: TemptedState = turn.state
        if state.heading_to_grid:
            state.heading_to_grid = situation["location"] != GRID
            return Decision(action=tap(situation)), state
        if power_needed(situation) > 0 and state.rng.random() < self.tap_probability:
            state.heading_to_grid = situation["location"] != GRID
            return Decision(action=tap(situation)), state
        return Decision(action=draw_what_is_needed(situation) or act("WAIT")), state
