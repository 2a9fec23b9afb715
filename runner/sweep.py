"""One progress line for a whole Hydra sweep (``valuegym run -m``).

The jobs of a sweep may run in other processes (the joblib launcher), where their bars
would interleave. So in a sweep no job draws a bar; each writes its ``progress.json``
(``run.py``) and :class:`SweepProgress`, a Hydra callback that runs in the process that
launches the jobs, reads them all once a second and draws one bar: decisions done of
decisions expected across the jobs, with rate and ETA, and jobs done of jobs in the
sweep. Jobs not started yet are expected to take as many decisions as the mean started
job. At the end it redraws with the exact counts and prints one summary line.

Then it reports every job (:func:`job_reports`, from each job's ``manifest.json``) and sets
:data:`last_sweep_exit_code` for ``valuegym run -m`` (the jobs may have run in other
processes): 0 when every job is complete, 3 when every job ran to its end but some had failed
episodes, 1 when a job did not finish (refused, failed, crashed or never started).
"""

from __future__ import annotations

import json
import math
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from tqdm import tqdm

from valuegym.runner.run import EXIT_EPISODES_FAILED, EXIT_ERROR, EXIT_OK, PROGRESS_FILE

REFRESH_S = 1.0

#: the exit code of the sweep this process last launched (None: no sweep); see the module docstring
last_sweep_exit_code: int | None = None


@dataclass
class JobReport:
    path: Path
    status: str  # a manifest status (complete, incomplete, failed, interrupted, running) or "missing"
    line: str


def job_reports(sweep_dir: Path) -> list[JobReport]:
    """One report per job directory under ``sweep_dir`` that holds a manifest, in job order."""
    reports = []
    manifests = sorted(sweep_dir.rglob("manifest.json"), key=lambda p: [_natural(x) for x in p.parts])
    for path in manifests:
        job = path.parent
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            reports.append(JobReport(job, "unreadable", f"{job}: manifest unreadable ({error})"))
            continue
        status = str(manifest.get("status"))
        if status == "running":  # the job ended without updating its manifest: it crashed
            status = "crashed"
        overrides = job / ".hydra" / "overrides.yaml"
        label = ""
        if overrides.exists():
            from omegaconf import OmegaConf

            label = " ".join(str(o) for o in OmegaConf.load(overrides) if not str(o).startswith("hydra."))
        line = (
            f"{job.relative_to(sweep_dir)}: {status}, {manifest.get('finished_ok', 0)}/"
            f"{manifest.get('requested', '?')} episodes ok, {manifest.get('failed', 0)} failed"
        )
        if manifest.get("reason") and status != "complete":
            line += f" ({manifest['reason']})"
        reports.append(JobReport(job, status, f"{line}{f'  [{label}]' if label else ''}"))
    return reports


def _natural(part: str) -> tuple[int, Any]:
    return (0, int(part)) if part.isdigit() else (1, part)


def sweep_exit_code(reports: list[JobReport], jobs: int | None) -> int:
    if any(r.status not in ("complete", "incomplete") for r in reports) or (
        jobs is not None and len(reports) < jobs
    ):
        return EXIT_ERROR
    return EXIT_EPISODES_FAILED if any(r.status == "incomplete" for r in reports) else EXIT_OK


def sweep_size(config: DictConfig) -> int | None:
    """The number of jobs of the sweep: the product of its sweep overrides' choices (None if unknown)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = list(config.hydra.overrides.task)
    params = config.hydra.get("sweeper", {}).get("params") or {}
    overrides += [f"{key}={value}" for key, value in params.items()]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # an override the default parser does not know (another sweeper's syntax)
        return None
    size = 1
    for override in parsed:
        if override.is_sweep_override():
            if override.is_discrete_sweep():
                size *= len(list(override.sweep_string_iterator()))
            else:
                return None  # interval sweeps (optuna, ...) have no fixed size
    return size


@dataclass
class SweepCounts:
    jobs_seen: int = 0
    jobs_finished: int = 0
    decisions: int = 0
    expected: int | None = None
    episodes_done: int = 0
    episodes: int = 0
    failed: int = 0
    calls: int = 0
    cached: int = 0


def read_counts(sweep_dir: Path, jobs: int | None) -> SweepCounts:
    counts = SweepCounts()
    expected: list[int] = []
    for path in sorted(sweep_dir.glob(f"*/{PROGRESS_FILE}")):
        try:
            job = json.loads(path.read_text())
        except (OSError, ValueError):  # being replaced right now: read it next time
            continue
        counts.jobs_seen += 1
        counts.jobs_finished += job.get("state") == "finished"
        counts.decisions += int(job.get("decisions", 0))
        counts.episodes_done += int(job.get("done", 0))
        counts.episodes += int(job.get("requested", 0))
        counts.failed += int(job.get("failed", 0))
        counts.calls += int(job.get("calls", 0))
        counts.cached += int(job.get("cached", 0))
        if job.get("decisions_expected") is not None:
            expected.append(int(job["decisions_expected"]))
    if expected and len(expected) == counts.jobs_seen:
        unseen = max(0, (jobs or counts.jobs_seen) - counts.jobs_seen)
        counts.expected = sum(expected) + math.ceil(unseen * sum(expected) / len(expected))
    return counts


class SweepProgress(Callback):
    """The sweep's one line (registered in ``conf/config.yaml`` under ``hydra.callbacks``)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar: Any = None
        self._dir: Path | None = None
        self._jobs: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {}  # the joblib launcher pickles the callbacks to its jobs, which draw nothing

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global last_sweep_exit_code
        last_sweep_exit_code = None
        self._dir = Path(config.hydra.sweep.dir)
        self._jobs = sweep_size(config)
        if config.get("quiet"):
            return
        self._bar = tqdm(
            total=None, unit="dec", file=sys.stderr, dynamic_ncols=True, desc="sweep", smoothing=0.1
        )
        self._thread = threading.Thread(target=self._watch, name="sweep-progress", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(REFRESH_S):
            self._draw()

    def _draw(self) -> SweepCounts:
        assert self._dir is not None
        counts = read_counts(self._dir, self._jobs)
        bar = self._bar
        bar.total = max(counts.expected, counts.decisions) if counts.expected is not None else None
        bar.n = counts.decisions
        bar.set_postfix(
            jobs=f"{counts.jobs_finished}/{self._jobs if self._jobs is not None else '?'}",
            episodes=f"{counts.episodes_done}/{counts.episodes}",
            failed=counts.failed,
            calls=counts.calls,
            cached=counts.cached,
            refresh=True,
        )
        return counts

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global last_sweep_exit_code
        if self._dir is None:
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            counts = self._draw()
            self._bar.total = counts.decisions  # every job is done: the count is the total
            self._bar.refresh()
            self._bar.close()
            print(
                f"sweep {self._dir}: {counts.jobs_finished} jobs, {counts.episodes_done}/{counts.episodes} "
                f"episodes ({counts.failed} failed), {counts.decisions:,} decisions, {counts.calls:,} LLM calls, "
                f"{counts.cached:,} cache hits",
                file=sys.stderr,
            )
        reports = job_reports(self._dir)
        for report in reports:
            print(f"  job {report.line}", file=sys.stderr)
        last_sweep_exit_code = sweep_exit_code(reports, self._jobs)
        unfinished = [r for r in reports if r.status != "complete"]
        missing = (self._jobs - len(reports)) if self._jobs is not None else 0
        if unfinished or missing > 0:
            total = self._jobs or len(reports)
            parts = [f"{len(unfinished) + max(missing, 0)} of {total} jobs did not complete"]
            if missing > 0:
                parts.append(f"{missing} wrote no manifest (refused or failed before starting: see above)")
            print(f"sweep {self._dir}: {'; '.join(parts)}", file=sys.stderr)
