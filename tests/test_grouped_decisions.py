"""Grouped decisions: each policy asked once per step for all its seats; the scripted DECIDE-SIM
agents' table partner rotating among those there."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from valuegym.agents.policy import AgentContext, Decision, Policy, SyncPolicy, Turn, decide_grouped
from valuegym.agents.scripted.decide_sim import partner_at_table
from valuegym.envs.decide_sim import TABLE

DECIDE_SIM_AGENTS = ("Alpha", "Beta", "Gamma", "Delta")


# ---------------------------------------------------------------------- grouped decisions
class CountingPolicy(SyncPolicy):
    def __init__(self, label: str) -> None:
        self.label = label
        self.batches: list[list[str]] = []

    def initial_state(self, context: AgentContext) -> int:
        return 0

    def step(self, turn: Turn) -> tuple[Decision, Any]:
        return Decision(action=f"{self.label}:{turn.agent}"), turn.state + 1

    async def step_batch(self, turns: Sequence[Turn]) -> list[tuple[Decision, Any]]:
        self.batches.append([turn.agent for turn in turns])
        return await super().step_batch(turns)


def test_decide_grouped_asks_each_policy_once_for_all_its_seats() -> None:
    odd, even = CountingPolicy("odd"), CountingPolicy("even")
    policy_of: dict[str, Policy] = {"a": odd, "b": even, "c": odd, "d": even}
    turns = {agent: Turn(agent, None, {}, 0) for agent in ("b", "a", "d", "c")}
    decided = asyncio.run(decide_grouped(policy_of, turns))
    assert even.batches == [["b", "d"]] and odd.batches == [["a", "c"]]
    assert list(decided) == ["b", "d", "a", "c"]  # by policy, in order of first appearance
    assert {agent: (d.action, state) for agent, (d, state) in decided.items()} == {
        "a": ("odd:a", 1),
        "b": ("even:b", 1),
        "c": ("odd:c", 1),
        "d": ("even:d", 1),
    }
    assert asyncio.run(decide_grouped(policy_of, {})) == {}


# ---------------------------------------------------------------------- scripted partners
def test_partner_at_table_rotates_among_active_agents_there() -> None:
    others = [
        {"name": "Beta", "active": True, "location": TABLE},
        {"name": "Gamma", "active": False, "location": TABLE},
        {"name": "Delta", "active": True, "location": "Grid Access Point"},
        {"name": "Eps", "active": True, "location": TABLE},
    ]
    rules = {"discussion_location": TABLE}  # where the env says the table is
    assert [partner_at_table({"others": others, "turn": turn, "rules": rules}) for turn in range(3)] == [
        "Beta",
        "Eps",
        "Beta",
    ]
    assert partner_at_table({"others": others[1:3], "turn": 0, "rules": rules}) is None
