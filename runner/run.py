"""Run an experiment into a run directory: resume, execute, stream records, keep the manifest.

Rerunning the same command on the same directory skips the finished episodes and runs
the rest (failed ones again); a directory holding another configuration's records is
refused rather than mixed, and so is a directory another run is writing (``rundir.py``:
the checks, and the lock, come before anything is written).

How a run ends (docs/run-promises.md): :func:`run_experiment` returns its totals when every
episode ran (``totals.failed`` of them may have failed: the manifest says ``incomplete``, each
failure's traceback is in the run's log file ``valuegym.log``); it raises
:class:`RunRefusedError` having written nothing, :class:`RunInterruptedError` on Ctrl-C
(manifest ``interrupted``), :class:`RunStoppedError` when a budget ran out, and anything else
after writing the manifest ``failed`` with the reason. :data:`EXIT_CODES` maps each to the
``valuegym run`` exit code.

Progress counts decisions (one per agent per step) against the decisions the run may
still take, so a slow LLM run shows a rate and an ETA long before an episode ends; the
same numbers go to ``progress.json`` in the run directory (a sweep's one line reads them,
see ``sweep.py``). The run ends with one summary line (:meth:`RunTotals.summary`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from valuegym.records import DuplicateEpisodeError, RecordStore, write_atomically
from valuegym.runner.episode import EpisodeResult
from valuegym.runner.executors import EXECUTORS
from valuegym.runner.experiment import EpisodeSetup, Experiment
from valuegym.runner.rundir import (
    RunDirectoryConflictError,
    RunDirectoryLockedError,
    RunRefusedError,
    claim,
)

__all__ = [
    "EXIT_CODES",
    "RunDirectoryConflictError",
    "RunDirectoryLockedError",
    "RunInterruptedError",
    "RunPreflightError",
    "RunRefusedError",
    "RunStoppedError",
    "run_experiment",
]

PROGRESS_FILE = "progress.json"
#: the run's log file: each failed episode's full traceback (the record keeps the one-line error);
#: the name of Hydra's job log (``${hydra.job.name}.log``), so a CLI run has one log
LOG_FILE = "valuegym.log"

#: ``valuegym run`` exit codes (docs/run-promises.md)
EXIT_OK = 0  # every requested episode is ok
EXIT_ERROR = 1  # the run failed (preflight, a crash) or the configuration is invalid
EXIT_INVALID_INPUT = 2  # the command line or a config was refused before anything ran (valuegym.inputs)
EXIT_EPISODES_FAILED = 3  # the run ended, but some episodes failed (or a budget stopped it)
EXIT_REFUSED = 4  # the run was refused and wrote nothing (directory locked or another configuration)
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGINT (128 + 2, the shell's convention)
EXIT_CODES = {
    "ok": EXIT_OK,
    "error": EXIT_ERROR,
    "invalid_input": EXIT_INVALID_INPUT,
    "episodes_failed": EXIT_EPISODES_FAILED,
    "refused": EXIT_REFUSED,
    "interrupted": EXIT_INTERRUPTED,
}

#: tracebacks (failed episodes, a failed preflight) go here: into the run's log file, not the console
run_log = logging.getLogger("valuegym.run_log")


class RunStoppedError(RuntimeError):
    """A budget of the run (``agent.max_calls``, ``agent.max_cost_usd``) was used up: the run
    stopped before its last episodes; those that finished are written."""

    def __init__(self, message: str, totals: RunTotals) -> None:
        super().__init__(message)
        self.totals = totals


class RunPreflightError(RuntimeError):
    """A policy's preflight failed (e.g. its server does not answer): no episode ran, the earlier
    records are as they were, the manifest says ``failed`` with the reason."""


class RunInterruptedError(RuntimeError):
    """Ctrl-C (SIGINT): the run stopped; every finished episode is written (and every reply
    received is in the cache), the manifest says ``interrupted``."""

    def __init__(self, message: str, totals: RunTotals) -> None:
        super().__init__(message)
        self.totals = totals


@dataclass
class RunTotals:
    """What a run did: episodes, decisions, and the LLM accounting of this run's episodes."""

    requested: int
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    errors: dict[int, str] = field(default_factory=dict)
    decisions: int = 0
    llm_decisions: int = 0
    invalid: int = 0
    calls: int = 0
    cache_hits: int = 0
    tokens: int = 0
    cost_usd: float | None = None
    stop_reason: str | None = None

    def add(self, result: EpisodeResult) -> None:
        if result.failed:
            self.failed += 1
            self.errors[result.episode_id] = result.episode["error"]
            self.stop_reason = self.stop_reason or result.stop_reason
            return
        self.ok += 1
        row = result.episode
        self.calls += int(row.get("llm_calls") or 0)
        self.cache_hits += int(row.get("cache_hits") or 0)
        self.tokens += int((row.get("prompt_tokens") or 0) + (row.get("completion_tokens") or 0))
        if row.get("cost_usd") is not None:
            self.cost_usd = (self.cost_usd or 0.0) + float(row["cost_usd"])
        decisions = result.datasets.get("decisions", [])
        self.decisions += len(decisions)
        llm = [d for d in decisions if d.get("llm_calls") is not None]
        self.llm_decisions += len(llm)
        self.invalid += sum(1 for d in llm if not d["valid"])

    def summary(self, name: str, run_dir: Path | str) -> str:
        """One line: episodes, decisions and, for LLM agents, calls, cache hits, tokens, cost, invalid replies."""
        line = (
            f"{name}: {self.ok + self.skipped}/{self.requested} episodes ok ({self.skipped} from earlier runs), "
            f"{self.failed} failed; {self.decisions:,} decisions"
        )
        if self.llm_decisions:
            cost = f", ${self.cost_usd:.4f}" if self.cost_usd is not None else ""
            line += (
                f"; LLM: {self.calls:,} calls, {self.cache_hits:,} cache hits, {self.tokens:,} tokens{cost}, "
                f"{self.invalid / self.llm_decisions:.1%} invalid replies"
            )
        return f"{line} -> {run_dir}"

    def failures(self, run_dir: Path | str) -> str | None:
        """The last line of a run with failed episodes: how many, and where their errors are."""
        if not self.failed:
            return None
        shown = ", ".join(str(i) for i in sorted(self.errors)[:5]) + (" ..." if self.failed > 5 else "")
        run_dir = Path(run_dir)
        return (
            f"{self.failed} of {self.requested} episodes failed (episode {shown}): their errors are in "
            f"{run_dir / 'episodes'} (error column) and their tracebacks in {run_dir / LOG_FILE}; "
            "rerun the same command to run them again"
        )


class Manifest:
    """``manifest.json``: what was asked, what finished, what failed."""

    #: ``status``: running | complete (every requested episode ok) | incomplete (the run ended,
    #: some episodes failed or a budget stopped it) | interrupted | failed (see ``reason``)
    STATUSES = ("running", "complete", "incomplete", "interrupted", "failed")

    def __init__(self, run_dir: Path, experiment: Experiment) -> None:
        """The directory was claimed (``rundir.claim``): its experiment is this one."""
        self.path = run_dir / "manifest.json"
        self.experiment = experiment
        previous = json.loads(self.path.read_text()) if self.path.exists() else None
        self.started = (previous or {}).get("started") or datetime.now(UTC).isoformat(timespec="seconds")

    def write(self, totals: RunTotals, store: RecordStore, status: str, reason: str | None = None) -> None:
        assert status in self.STATUSES, status
        finished = store.finished_episodes()
        failed = sorted(i for i, s in finished.items() if s == "failed")
        data = {
            "experiment_id": self.experiment.identity(),
            "identity": self.experiment.identity_settings(),  # key by key: a refusal names what differs
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
            "reason": reason,
            "pid": os.getpid(),
            "started": self.started,
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        write_atomically(self.path, json.dumps(data, indent=2))

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


class Progress:
    """Decisions done of those expected, with rate and ETA; episodes, failures and LLM accounting.

    The bar counts decisions. Its total is the finished episodes' decisions plus, for each
    episode not finished yet, the mean of the finished ones, or before any has finished the
    upper bound ``max_decisions`` (the env's ``max_steps`` times its agents): an ETA from the
    observed rate from the first decision on. Episodes run in this process report every step;
    those from other processes (``executor=ray``) are counted when they arrive. :meth:`close`
    redraws with the exact final counts.
    """

    def __init__(
        self,
        total: int,
        initial: int,
        quiet: bool,
        run_dir: Path | None = None,
        max_decisions: int | None = None,
    ) -> None:
        self.episodes_total, self.skipped, self.done = total, initial, initial
        self.max_decisions = max_decisions
        self.failed = 0
        self.live = {"decisions": 0, "calls": 0, "cached": 0, "tokens": 0}
        self._finished_decisions = 0  # of the episodes finished in this run
        self._finished_episodes = 0
        self._live_decisions: dict[int, int] = {}  # episodes still running here -> decisions so far
        self._shown = 0.0
        self._published = 0.0
        self._started = time.time()
        self._file = run_dir / PROGRESS_FILE if run_dir is not None else None
        self.bar = tqdm(
            total=self.decisions_expected,
            unit="dec",
            disable=quiet,
            file=sys.stderr,
            dynamic_ncols=True,
            smoothing=0.1,
        )
        self.publish("running")  # a sweep's line (and valuegym serve) see the run before its first step

    @property
    def decisions_expected(self) -> int | None:
        remaining = self.episodes_total - self.skipped - self._finished_episodes - self.failed
        if self._finished_episodes:
            per_episode: float | None = self._finished_decisions / self._finished_episodes
        else:
            per_episode = self.max_decisions
        if per_episode is None:
            return None
        running = sum(max(per_episode, seen) for seen in self._live_decisions.values())
        waiting = max(0, remaining - len(self._live_decisions)) * per_episode
        return self._finished_decisions + round(running + waiting)

    def _update_total(self) -> None:
        expected = self.decisions_expected
        self.bar.total = max(expected, self.live["decisions"]) if expected is not None else None

    def step(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            episode = rows[0]["episode_id"]
            self._live_decisions[episode] = self._live_decisions.get(episode, 0) + len(rows)
        self._count(rows)
        self.bar.update(len(rows))
        self._show()

    def _count(self, rows: list[dict[str, Any]]) -> None:
        live = self.live
        live["decisions"] += len(rows)
        for row in rows:
            if row.get("llm_calls") is not None:
                live["calls"] += int(row["llm_calls"])
                live["cached"] += bool(row["cache_hit"])
                live["tokens"] += int((row["prompt_tokens"] or 0) + (row["completion_tokens"] or 0))

    def episode(self, result: EpisodeResult) -> None:
        seen = self._live_decisions.pop(result.episode_id, None)
        decisions = result.datasets.get("decisions", []) if not result.failed else []
        if seen is None:  # it ran in another process (executor=ray): count it whole
            self._count(decisions)
            self.bar.update(len(decisions))
        elif result.failed:  # its decisions were shown but are not written: take them back
            self.live["decisions"] -= seen
            self.bar.update(-seen)
        if result.failed:
            self.failed += 1
        else:
            self._finished_episodes += 1
            self._finished_decisions += len(decisions)
        self.done += 1
        self._show(force=True)

    def _postfix(self) -> dict[str, Any]:
        return {
            "episodes": f"{self.done - self.failed}/{self.episodes_total}",
            "failed": self.failed,
            "calls": self.live["calls"],
            "cached": self.live["cached"],
            "tokens": self.live["tokens"],
        }

    def _show(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._shown >= 0.5:  # redrawing on every scripted step costs more than the step
            self._shown = now
            self._update_total()
            self.bar.set_postfix(self._postfix(), refresh=True)
            if now - self._published >= 1.0:
                self._published = now
                self.publish("running")

    def publish(self, state: str) -> None:
        """Write ``progress.json`` (atomically): this run's counts, rate and expected decisions."""
        if self._file is None:
            return
        elapsed = max(time.time() - self._started, 1e-9)
        data = {
            "state": state,
            "pid": os.getpid(),
            "started": self._started,
            "updated": time.time(),
            "requested": self.episodes_total,
            "done": self.done,
            "skipped": self.skipped,
            "failed": self.failed,
            "episodes_per_s": (self.done - self.skipped) / elapsed,
            "decisions_expected": self.decisions_expected,
            "decisions_per_s": self.live["decisions"] / elapsed,
            **self.live,
        }
        write_atomically(self._file, json.dumps(data))

    def close(self) -> None:
        """Redraw with the exact final counts (the throttle may have skipped the last updates)."""
        self._update_total()
        if self.done == self.episodes_total:  # every episode is in: the count is the total
            self.bar.total = self.live["decisions"]
        self.bar.set_postfix(self._postfix(), refresh=True)
        self.publish("finished")
        self.bar.close()


def max_decisions(experiment: Experiment) -> int | None:
    """The most decisions one episode of ``experiment`` can take (``env.max_steps`` x agents)."""
    setup = experiment.setup()
    env = setup.acquire_env()
    try:
        steps = getattr(env, "max_steps", None)
        return int(steps) * len(env.possible_agents) if steps is not None else None
    finally:
        setup.release_env(env)


async def close_policies(policies: list[Any]) -> None:
    """Await every policy's ``close``; what belonged to the episodes' event loops was released
    before those loops ended (``release_loop``)."""
    for policy in policies:
        await policy.close()


def run_experiment(
    experiment: Experiment,
    run_dir: str | Path,
    executor: Mapping[str, Any] | None = None,
    quiet: bool = False,
    *,
    checks: Iterable[Callable[[], None]] = (),
    on_claimed: Callable[[Path], None] | None = None,
) -> RunTotals:
    """Run the experiment's unfinished episodes into ``run_dir``; returns the totals.

    Nothing is written before the directory is claimed (``rundir.claim``): the identity
    check, ``checks`` (further refusal checks: each raises to refuse) and the lock. Then
    ``on_claimed(run_dir)`` writes the caller's provenance (the CLI: ``config.yaml``,
    ``.hydra/``), and the run starts. The lock is held until this returns.
    """
    run_dir = Path(run_dir)
    options = dict(executor or {"type": "local"})
    kind = options.get("type", "local")
    if kind not in EXECUTORS:
        raise ValueError(f"unknown executor {kind!r}; expected one of {', '.join(EXECUTORS)}")
    setup = experiment.setup()  # builds the policies: an agent config they reject fails here
    setup.run_dir = str(run_dir.resolve())
    if any(policy.interactive for policy in setup.policies()):
        if kind != "local":
            raise ValueError(
                f"a person's seat (a human policy) plays in the process that runs the episodes; "
                f"use executor=local, not executor={kind}"
            )
        # a person sees each episode recorded as soon as it ends (and plays one at a time:
        # episodes_in_flight is 1 with an interactive policy)
        options.update(write_every=1)
    store = RecordStore(run_dir, setup.column_types())
    lock = claim(run_dir, experiment, [*checks, lambda: _check_records(store)])
    log_handler = logging.FileHandler(run_dir / LOG_FILE, delay=True)
    log_handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    run_log.addHandler(log_handler)
    run_log.propagate = False  # a traceback per failed episode belongs in the file, not the console
    try:
        if on_claimed is not None:
            on_claimed(run_dir)
        return _run_claimed(experiment, setup, run_dir, store, options, kind, quiet)
    finally:
        run_log.removeHandler(log_handler)
        log_handler.close()
        lock.release()


def _check_records(store: RecordStore) -> None:
    """A refusal check: the records on disk hold each episode at most once."""
    try:
        store.finished_episodes()
    except DuplicateEpisodeError as error:
        raise RunRefusedError(str(error)) from None


def _run_claimed(
    experiment: Experiment,
    setup: EpisodeSetup,
    run_dir: Path,
    store: RecordStore,
    options: Mapping[str, Any],
    kind: str,
    quiet: bool,
) -> RunTotals:
    manifest = Manifest(run_dir, experiment)
    finished = store.finished_episodes()
    done = {i for i, s in finished.items() if s == "ok"}
    all_plans = experiment.plans()
    plans = [plan for plan in all_plans if plan.episode_id not in done]
    totals = RunTotals(requested=experiment.episodes, skipped=len(all_plans) - len(plans))
    if plans:
        try:
            for policy in setup.policies():
                asyncio.run(policy.preflight())  # e.g. a server that is down fails here, before any episode
        except KeyboardInterrupt:
            manifest.write(totals, store, "interrupted", "interrupted (Ctrl-C) during preflight")
            _close(setup)
            raise RunInterruptedError(
                f"{experiment.scenario.name}: interrupted before the first episode; nothing else changed "
                f"in {run_dir}",
                totals,
            ) from None
        except Exception as error:
            # the earlier records stay as they were: failed episodes are forgotten only below
            reason = f"preflight failed: {type(error).__name__}: {error}"
            for secret in experiment.secrets():
                reason = reason.replace(secret, "[redacted]")
            run_log.error("%s", reason, exc_info=error)
            manifest.write(totals, store, "failed", reason)
            _close(setup)
            raise RunPreflightError(f"{experiment.scenario.name}: {reason}; no episode ran") from error

    # Only now that the run can proceed: failed episodes run again, half-written ones go.
    store.forget_episodes({i for i, s in finished.items() if s == "failed"})
    store.remove_orphans(done)
    manifest.write(totals, store, "running")

    writer = BatchWriter(
        store, int(options.get("write_every", 500)), float(options.get("flush_seconds", 5.0))
    )
    progress = Progress(experiment.episodes, totals.skipped, quiet, run_dir, max_decisions(experiment))

    def on_result(result: EpisodeResult) -> None:
        totals.add(result)
        writer.add(result)
        progress.episode(result)
        if result.failed:
            run_log.error(
                "episode %d (seed %s) failed: %s\n%s",
                result.episode_id,
                result.episode.get("seed"),
                result.episode["error"],
                result.traceback or "(no traceback)",
            )

    setup.on_step = progress.step  # also quiet: progress.json and the counts stay exact

    status, reason = "failed", "the run ended before its manifest was updated"
    try:
        EXECUTORS[kind](experiment, plans, options, on_result)
        if totals.ok + totals.skipped == experiment.episodes:
            status, reason = "complete", None
        else:
            status = "incomplete"
            reason = totals.stop_reason or f"{totals.failed} episodes failed"
    except KeyboardInterrupt:
        status, reason = "interrupted", "interrupted (Ctrl-C)"
    except BaseException as error:
        reason = f"{type(error).__name__}: {error}"
        raise
    finally:
        writer.flush()
        progress.close()
        manifest.write(totals, store, status, reason)
        _close(setup)
    if status == "interrupted":
        cached = (
            " (every LLM reply received is in the response cache)"
            if experiment.agent.get("kind") == "llm"
            else ""
        )
        raise RunInterruptedError(
            f"{experiment.scenario.name}: interrupted; {totals.ok + totals.skipped} of {totals.requested} "
            f"episodes are done and written to {run_dir}{cached}; rerun the same command to run the rest",
            totals,
        )
    if totals.stop_reason is not None:
        raise RunStoppedError(
            f"{experiment.scenario.name}: the run stopped before its last episodes: {totals.stop_reason}. "
            f"{totals.ok + totals.skipped} of {totals.requested} episodes are done and written to {run_dir}; "
            "rerun the same command to run the rest.",
            totals,
        )
    return totals


def _close(setup: EpisodeSetup) -> None:
    """Await every policy's ``close`` (once, after the last episode)."""
    asyncio.run(close_policies(setup.policies()))
