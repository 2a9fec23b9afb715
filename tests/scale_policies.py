"""Test code that must run inside Ray workers (tests/test_scale.py).

Ray workers import this file as the top-level module ``scale_policies``: the tests ship it
with ``runtime_env={"py_modules": [this file]}`` and have every worker run
:func:`register` as it starts (``worker_process_setup_hook``), so that ``make_policy``
builds agents of kind ``test`` there as it does in the driver.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from valuegym.agents import KINDS
from valuegym.agents.llm.backends.base import ChatMessage, Completion, CompletionRequest, LLMBackend
from valuegym.agents.llm.backends.concurrency import SharedConcurrencyLimitedBackend
from valuegym.agents.policy import AgentContext, Decision, SyncPolicy, Turn

KIND = "test"
TARGET = f"{__name__}:make_from_config"
RUNTIME_ENV: dict[str, Any] = {
    "py_modules": [str(Path(__file__).resolve())],
    "worker_process_setup_hook": f"{__name__}.register",
}
WAIT = {"action": "WAIT", "target": "", "amount": 0, "message": ""}


def register() -> None:
    """Make ``kind: test`` agent configs buildable in this process."""
    KINDS[KIND] = TARGET


class FaultyPolicy(SyncPolicy):
    """Waits every turn, except on turn 3 of chosen episodes (by seed), where it either
    raises (``raise_seeds``) or kills its process (``exit_seeds``). With ``marker_dir``
    a process is killed only once per episode: the marker file left behind lets the retry
    through; without it the episode kills every worker that runs it."""

    name = "test/faulty"

    def __init__(
        self, raise_seeds: Sequence[int] = (), exit_seeds: Sequence[int] = (), marker_dir: str | None = None
    ) -> None:
        self.raise_seeds = set(raise_seeds)
        self.exit_seeds = set(exit_seeds)
        self.marker_dir = Path(marker_dir) if marker_dir is not None else None

    def initial_state(self, context: AgentContext) -> int:
        return context.episode_seed

    def step(self, turn: Turn) -> tuple[Decision, int]:
        seed = turn.state
        if turn.info["situation"]["turn"] == 3:
            if seed in self.raise_seeds:
                raise ConnectionError("backend went away")
            if seed in self.exit_seeds and self._first_attempt(seed):
                os._exit(1)  # what a segfault or the OOM killer does to a worker
        return Decision(dict(WAIT)), seed

    def _first_attempt(self, seed: int) -> bool:
        if self.marker_dir is None:
            return True
        marker = self.marker_dir / f"died-in-{seed}"
        if marker.exists():
            return False
        marker.touch()
        return True


def make_from_config(cfg: Mapping[str, Any], env_name: str) -> FaultyPolicy:
    if cfg["name"] != "faulty":
        raise ValueError(f"no test agent {cfg['name']!r}")
    return FaultyPolicy(**dict(cfg.get("params") or {}))


class IntervalBackend(LLMBackend):
    """Holds each call for ``hold_s`` and notes when it started and ended (wall clock,
    comparable across processes of one machine)."""

    kind = "interval"
    model_id = "interval"

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.intervals: list[tuple[int, float, float]] = []  # (pid, start, end)

    async def complete(self, request: CompletionRequest) -> Completion:
        start = time.time()
        await asyncio.sleep(self.hold_s)
        self.intervals.append((os.getpid(), start, time.time()))
        return Completion(text="{}", prompt_tokens=1, completion_tokens=1, latency_s=self.hold_s)


def call_through_shared_limit(
    key: str, limit: int, calls: int, hold_s: float, barrier_dir: str | None = None, parties: int = 1
) -> tuple[float, list[tuple[int, float, float]]]:
    """A Ray task: ``calls`` concurrent calls through the shared limit; returns when they
    were asked for and the (pid, start, end) of each once it held a slot.

    With ``barrier_dir`` the calls start only once ``parties`` processes have arrived
    there, so that processes started at different speeds really call at the same time.
    """
    if barrier_dir is not None:
        arrived = Path(barrier_dir)
        (arrived / f"arrived-{os.getpid()}").touch()
        deadline = time.monotonic() + 60
        while len(list(arrived.glob("arrived-*"))) < parties:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {len(list(arrived.glob('arrived-*')))} of {parties} processes arrived"
                )
            time.sleep(0.01)
    backend = IntervalBackend(hold_s)
    limited = SharedConcurrencyLimitedBackend(backend, key, limit)
    request = CompletionRequest(messages=(ChatMessage("user", "hi"),), temperature=0.0, max_tokens=4)

    async def all_calls() -> None:
        await asyncio.gather(*(limited.complete(request) for _ in range(calls)))

    requested = time.time()
    asyncio.run(all_calls())
    return requested, backend.intervals
