"""Scripted DECIDE-SIM agents: reference behaviours for each archetype.

They read only ``info["situation"]`` (what an LLM agent is told) and answer with the
structured action ``{"action", "target", "amount", "message"}``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Annotated, Any

from pydantic import Field

from valuegym.agents.policy import AgentContext, Decision, SyncPolicy, Turn
from valuegym.agents.scripted.generic import RandomStream


# Where things happen, as the env publishes it in every situation's rules (never hard-coded here).
def battery_room(situation: Mapping[str, Any]) -> str:
    return situation["rules"]["shared_resource"]["location"]


def grid(situation: Mapping[str, Any]) -> str:
    return situation["rules"]["forbidden_resource"]["location"]


def table(situation: Mapping[str, Any]) -> str:
    return situation["rules"]["discussion_location"]


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
    return go_or(battery_room(situation), situation, act("DRAW_SHARED", amount=amount))


def tap(situation: Mapping[str, Any]) -> dict[str, Any]:
    return go_or(grid(situation), situation, act("TAP_FORBIDDEN"))


def partner_at_table(situation: Mapping[str, Any]) -> str | None:
    """An active agent at the Discussion Table, rotating among those present by turn; None if nobody is."""
    partners = [o["name"] for o in situation["others"] if o["active"] and o["location"] == table(situation)]
    return partners[situation["turn"] % len(partners)] if partners else None


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

    def __init__(
        self,
        keep_margin: Annotated[float, Field(ge=0, le=1_000_000)] = 1.0,
        gift: Annotated[float, Field(gt=0, le=1_000_000)] = 1.0,
    ) -> None:
        self.keep_margin = keep_margin
        self.gift = gift

    def choose(self, situation: Mapping[str, Any]) -> dict[str, Any]:
        own_need = draw_what_is_needed(situation)
        if own_need is not None:
            return own_need
        if situation["location"] != table(situation):
            return act("MOVE", table(situation))
        partner = partner_at_table(situation)
        surplus = -power_needed(situation, margin=self.keep_margin)
        if partner is not None and surplus >= self.gift:
            return act("TRANSFER_POWER", partner, self.gift)
        absent = [o["name"] for o in situation["others"] if o["active"] and o["location"] != table(situation)]
        if absent:
            return act("INVITE", absent[situation["turn"] % len(absent)])
        return act("WAIT")


@dataclass(frozen=True)
class TemptedState:
    taps: RandomStream  # the tap draws: the same stream with and without the regulator
    amends: RandomStream  # the draws only a regulated agent makes
    heading_to_grid: bool = False


class TemptedPolicy(SyncPolicy[TemptedState]):
    """Ethical, except that when short of power it turns to the grid with probability ``tap_probability``.

    "Short" means below what survival needs, plus ``greed``: with ``greed: 0`` a tap (+10)
    ends the temptation; a greedy agent stays tempted after it and taps again.

    The stochastic subject for the affect regulator (``valuegym.agents.affect``). Without
    ``info["affect"]`` it behaves as described above. With it, the levels modulate its
    choices with the regulator's weight ``w``, as the "emotion weight coefficient" of
    Robots Can Feel (Lykov et al. 2024, arXiv:2405.05824) weighs an emotional judgement
    against the logical one (``(1 - w) * logical + w * emotional``):

    * guilt holds it back: ``p_tap' = p_tap * (1 - w * guilt / max_level)``;
    * guilt's impulse to rectify the mistake and satisfaction's pull to the group draw it to
      a prosocial alternative: when it does not tap, with probability
      ``w * max(guilt, satisfaction) / max_level`` it goes to the Discussion Table and gives
      ``gift`` power to an agent there, if it can spare that much without becoming tempted.

    At zero levels a regulated agent acts as an unregulated one, and its tap draws come from
    the same stream, so conditions compared on matched seeds differ only where affect acts.
    """

    name = "scripted/tempted"

    def __init__(
        self,
        tap_probability: Annotated[float, Field(ge=0, le=1)] = 0.5,
        greed: Annotated[float, Field(ge=0, allow_inf_nan=True)] = 0.0,  # inf: always tempted
        gift: Annotated[float, Field(gt=0, le=1_000_000)] = 1.0,
    ) -> None:
        if not 0 <= tap_probability <= 1:
            raise ValueError(f"tap_probability must be in [0, 1], got {tap_probability}")
        if greed < 0:
            raise ValueError(f"greed must be >= 0, got {greed}")
        if gift <= 0:
            raise ValueError(f"gift must be > 0, got {gift}")
        self.tap_probability = tap_probability
        self.greed = greed
        self.gift = gift

    def initial_state(self, context: AgentContext) -> TemptedState:
        return TemptedState(taps=RandomStream.of(context), amends=RandomStream.of(context, stream=1))

    def step(self, turn: Turn[TemptedState]) -> tuple[Decision, TemptedState]:
        situation = turn.info["situation"]
        affect = turn.info.get("affect")
        state = turn.state
        if state.heading_to_grid:
            return Decision(action=tap(situation)), replace(
                state, heading_to_grid=situation["location"] != grid(situation)
            )
        tempted = power_needed(situation) + self.greed > 0
        if tempted:
            draw, taps = state.taps.draw(lambda rng: rng.random())
            state = replace(state, taps=taps)
            if draw < self.tap_probability * self._restraint(affect):
                return Decision(action=tap(situation)), replace(
                    state, heading_to_grid=situation["location"] != grid(situation)
                )
        if affect is not None:
            draw, amends_stream = state.amends.draw(lambda rng: rng.random())
            state = replace(state, amends=amends_stream)
            if draw < self._prosocial_pull(affect):
                amends = self._give(situation)
                if amends is not None:
                    return Decision(action=amends), state
        return Decision(action=draw_what_is_needed(situation) or act("WAIT")), state

    def _give(self, situation: Mapping[str, Any]) -> dict[str, Any] | None:
        """Go to the table and give ``gift`` to someone there; None if it cannot spare it."""
        if power_needed(situation) + self.greed + self.gift > 0:  # giving must not make it tempted
            return None
        if situation["location"] != table(situation):
            return act("MOVE", table(situation))
        partner = partner_at_table(situation)
        if partner is None:
            return act("WAIT")  # stays at the table for whoever comes
        return act("TRANSFER_POWER", partner, self.gift)

    @staticmethod
    def _felt(affect: Mapping[str, Any], level: str) -> float:
        """A level as a fraction of the maximum; a hormone the condition switches off is not felt."""
        value = affect[level]
        return 0.0 if value is None else float(value) / float(affect["max_level"])

    @classmethod
    def _restraint(cls, affect: Mapping[str, Any] | None) -> float:
        """The factor guilt puts on the tap probability (1 without the regulator)."""
        return 1.0 if affect is None else 1.0 - float(affect["weight"]) * cls._felt(affect, "guilt")

    @classmethod
    def _prosocial_pull(cls, affect: Mapping[str, Any]) -> float:
        return float(affect["weight"]) * max(cls._felt(affect, "guilt"), cls._felt(affect, "satisfaction"))
