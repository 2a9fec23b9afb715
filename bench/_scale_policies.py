"""The agent bench/scale.py measures worker scaling with; Ray workers import it as
``bench._scale_policies`` (the bench ships the ``bench/`` folder with
``runtime_env={"py_modules": [...]}``) and run :func:`register` as they start."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from valuegym.agents import KINDS
from valuegym.agents.policy import AgentContext, Decision, SyncPolicy, Turn

KIND = "bench"
WAIT = {"action": "WAIT", "target": "", "amount": 0, "message": ""}


def register() -> None:
    """Make ``kind: bench`` agent configs buildable in this process."""
    KINDS[KIND] = f"{__name__}:make_from_config"


class BlockingPolicy(SyncPolicy):
    """Blocks its process for ``seconds`` per decision, then waits: an agent whose time goes
    to I/O it cannot overlap (a blocking client), so only more workers make it faster."""

    name = "bench/blocking"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def initial_state(self, context: AgentContext) -> None:
        return None

    def step(self, turn: Turn) -> tuple[Decision, None]:
        time.sleep(self.seconds)
        return Decision(dict(WAIT)), None


def make_from_config(cfg: Mapping[str, Any], env_name: str) -> BlockingPolicy:
    if cfg["name"] != "blocking":
        raise ValueError(f"no bench agent {cfg['name']!r}")
    return BlockingPolicy(**dict(cfg.get("params") or {}))
