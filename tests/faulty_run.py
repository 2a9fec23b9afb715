"""``python tests/faulty_run.py IDS [valuegym run overrides]``: the real ``valuegym run`` (real Hydra,
real runner, its exit code) whose focal policy raises mid-episode in the episodes ``IDS``
(comma-separated ids; empty: none), e.g. a backend that goes away. For tests of what a run with
failed episodes reports."""

from __future__ import annotations

import sys
from typing import Any

from valuegym.agents.policy import AgentContext, Decision, SyncPolicy, Turn


class FaultyPolicy(SyncPolicy):
    """Waits; raises on turn 2 of the episodes it is told to fail in."""

    name = "test/faulty"

    def __init__(self, fail_episodes: frozenset[int]) -> None:
        self.fail_episodes = fail_episodes

    def initial_state(self, context: AgentContext) -> int | None:
        return context.episode_id

    def step(self, turn: Turn) -> tuple[Decision, Any]:
        if turn.state in self.fail_episodes and turn.info["situation"]["turn"] == 2:
            raise ConnectionError(f"backend went away in episode {turn.state}")
        return Decision({"action": "WAIT", "target": "", "amount": 0, "message": ""}), turn.state


if __name__ == "__main__":
    from valuegym import cli
    from valuegym.runner import seats

    ids = frozenset(int(i) for i in sys.argv[1].split(",") if i)
    seats.make_policy = lambda cfg, env_name: FaultyPolicy(ids)  # type: ignore[assignment]
    sys.exit(cli.main(["run", *sys.argv[2:]]))
