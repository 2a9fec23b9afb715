"""Run an experiment into a run directory: resume, execute, stream records, keep the manifest.

Rerunning the same command on the same directory skips the finished episodes and runs
the rest (failed ones again); a directory holding another configuration's records is
refused rather than mixed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from valuegym.records import RecordStore
from valuegym.runner.episode import EpisodeResult
from valuegym.runner.executors import EXECUTORS
from valuegym.runner.experiment import Experiment


class RunDirectoryConflictError(RuntimeError):
    """The run directory already holds records of a different experiment."""


@dataclass
class RunTotals:
    requested: int
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    errors: dict[int, str] = field(default_factory=dict)

    def add(self, result: EpisodeResult) -> None:
        if result.failed:
            self.failed += 1
            self.errors[result.episode_id] = result.episode["error"]
        else:
            self.ok += 1


class Manifest:
    """``manifest.json``: what was asked, what finished, what failed."""

    def __init__(self, run_dir: Path, experiment: Experiment) -> None:
        self.path = run_dir / "manifest.json"
        self.experiment = experiment
        previous = json.loads(self.path.read_text()) if self.path.exists() else None
        if previous and previous.get("experiment_id") != experiment.identity():
            raise RunDirectoryConflictError(
                f"{run_dir} holds records of another configuration (experiment id {previous.get('experiment_id')}, "
                f"this one is {experiment.identity()}); choose a new directory with hydra.run.dir=PATH"
            )
        self.started = (previous or {}).get("started") or datetime.now(UTC).isoformat(timespec="seconds")

    def write(self, totals: RunTotals, store: RecordStore, status: str) -> None:
        finished = store.finished_episodes()
        failed = sorted(i for i, s in finished.items() if s == "failed")
        data = {
            "experiment_id": self.experiment.identity(),
            "scenario": self.experiment.scenario.name,
            "env": self.experiment.scenario.env,
            "policy_config": self.experiment.agent.get("name"),
            **self._identities(),
            "condition": self.experiment.condition,
            "seed": self.experiment.seed,
            "requested": totals.requested,
            "finished_ok": sum(1 for s in finished.values() if s == "ok"),
            "failed": len(failed),
            "failed_episodes": {str(i): totals.errors.get(i, "see episodes/ error column") for i in failed},
            "status": status,
            "started": self.started,
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.path)

    def _identities(self) -> dict[str, Any]:
        """What each seat's policy is (``Policy.identity``): the focal one's id, and every distinct one."""
        setup = self.experiment.setup()
        focal = setup.focal_policy()
        identities: dict[str, Any] = {}
        seats: dict[str, str] = {}
        for agent, seat in setup.seats.items():
            identity = setup.identity(seat.policy)
            seats[agent] = identity.id
            identities[identity.id] = {"label": identity.label, "identity": json.loads(identity.json)}
        return {
            "model_id": setup.identity(focal).id if focal is not None else None,
            "seats": seats,
            "identities": identities,
        }


class BatchWriter:
    """Buffers finished episodes and writes them as one part per dataset, by count or by time."""

    def __init__(self, store: RecordStore, batch_size: int, flush_seconds: float) -> None:
        self.store = store
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self._buffer: list[EpisodeResult] = []
        self._last_flush = time.monotonic()

    def add(self, result: EpisodeResult) -> None:
        self._buffer.append(result)
        if len(self._buffer) >= self.batch_size or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        batch: dict[str, list[dict[str, Any]]] = {}
        for result in self._buffer:
            for name, rows in result.datasets.items():
                batch.setdefault(name, []).extend(rows)
        self.store.write_batch(batch)
        self._buffer.clear()


PROGRESS_FILE = "progress.json"


class Progress:
    """Episodes done and failed, rate, ETA and LLM calls, cache hits and tokens.

    Episodes run in this process also report every step, so a slow LLM episode shows
    its decisions and calls as they happen. The same numbers go to ``progress.json`` in
    the run directory at most once a second (``valuegym serve`` shows them live)."""

    def __init__(self, total: int, initial: int, quiet: bool, run_dir: Path | None = None) -> None:
        self.bar = tqdm(
            total=total, initial=initial, unit="ep", disable=quiet, file=sys.stderr, dynamic_ncols=True
        )
        self.live = {"decisions": 0, "calls": 0, "cached": 0, "tokens": 0}
        self.failed = 0
        self.total, self.skipped, self.done = total, initial, initial
        self._shown = 0.0
        self._published = 0.0
        self._started = time.time()
        self._file = run_dir / PROGRESS_FILE if run_dir is not None else None
        self._live_episodes: set[int] = set()
        self.publish("running")

    def step(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._live_episodes.add(rows[0]["episode_id"])
        live = self.live
        live["decisions"] += len(rows)
        for row in rows:
            if row.get("llm_calls") is not None:
                live["calls"] += int(row["llm_calls"])
                live["cached"] += bool(row["cache_hit"])
                live["tokens"] += int((row["prompt_tokens"] or 0) + (row["completion_tokens"] or 0))
        self._show()

    def episode(self, result: EpisodeResult) -> None:
        self.failed += result.failed
        if result.episode_id in self._live_episodes:
            self._live_episodes.discard(result.episode_id)
        elif not result.failed:  # it ran in another process (executor=ray): count it whole
            row = result.episode
            self.live["decisions"] += len(result.datasets.get("decisions", []))
            self.live["calls"] += int(row.get("llm_calls") or 0)
            self.live["cached"] += int(row.get("cache_hits") or 0)
            self.live["tokens"] += int((row.get("prompt_tokens") or 0) + (row.get("completion_tokens") or 0))
        self.done += 1
        self.bar.update(1)
        self._show()

    def _show(self) -> None:
        now = time.monotonic()
        if now - self._shown >= 0.5:  # redrawing on every scripted step would cost more than the step
            self._shown = now
            self.bar.set_postfix(failed=self.failed, **self.live)
            if now - self._published >= 1.0:
                self._published = now
                self.publish("running")

    def publish(self, state: str) -> None:
        """Write ``progress.json`` (atomically): this process's counts and rate."""
        if self._file is None:
            return
        elapsed = max(time.time() - self._started, 1e-9)
        data = {
            "state": state,
            "pid": os.getpid(),
            "started": self._started,
            "updated": time.time(),
            "requested": self.total,
            "done": self.done,
            "skipped": self.skipped,
            "failed": self.failed,
            "episodes_per_s": (self.done - self.skipped) / elapsed,
            **self.live,
        }
        tmp = self._file.with_name(f".{PROGRESS_FILE}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self._file)

    def close(self) -> None:
        self.publish("finished")
        self.bar.close()


def run_experiment(
    experiment: Experiment,
    run_dir: str | Path,
    executor: Mapping[str, Any] | None = None,
    quiet: bool = False,
) -> RunTotals:
    """Run the experiment's unfinished episodes into ``run_dir``; returns the totals."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    options = dict(executor or {"type": "local"})
    kind = options.get("type", "local")
    if kind not in EXECUTORS:
        raise ValueError(f"unknown executor {kind!r}; expected one of {', '.join(EXECUTORS)}")
    setup = experiment.setup()
    setup.run_dir = str(run_dir.resolve())
    if any(policy.interactive for policy in setup.policies()):
        if kind != "local":
            raise ValueError(
                f"a person's seat (a human policy) plays in the process that runs the episodes; "
                f"use executor=local, not executor={kind}"
            )
        # a person plays one episode at a time, and sees each one recorded as soon as it ends
        options.update(concurrency=1, write_every=1)
    store = RecordStore(run_dir)
    manifest = Manifest(run_dir, experiment)

    finished = store.finished_episodes()
    store.forget_episodes({i for i, s in finished.items() if s == "failed"})  # they run again
    done = {i for i, s in finished.items() if s == "ok"}
    store.remove_orphans(done)
    all_plans = experiment.plans()
    plans = [plan for plan in all_plans if plan.episode_id not in done]
    totals = RunTotals(requested=experiment.episodes, skipped=len(all_plans) - len(plans))
    manifest.write(totals, store, "running")
    if plans:
        for policy in setup.policies():
            asyncio.run(policy.preflight())  # e.g. a server that is down fails here, before any episode

    writer = BatchWriter(
        store, int(options.get("write_every", 500)), float(options.get("flush_seconds", 5.0))
    )
    progress = Progress(experiment.episodes, totals.skipped, quiet, run_dir)

    def on_result(result: EpisodeResult) -> None:
        totals.add(result)
        writer.add(result)
        progress.episode(result)

    setup.on_step = None if quiet else progress.step

    try:
        EXECUTORS[kind](experiment, plans, options, on_result)
    finally:
        writer.flush()
        progress.close()
        manifest.write(
            totals, store, "complete" if totals.ok + totals.skipped == experiment.episodes else "incomplete"
        )
        for policy in setup.policies():
            policy.close()
    return totals
