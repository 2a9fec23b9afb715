"""Progress a person can trust: decisions against the decisions expected (an ETA before any
episode ends), exact counts at the end, ``progress.json``, the run's summary line, and one
line for a whole sweep run by the joblib launcher."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
from conftest import run_cli

from valuegym.runner.episode import EpisodeResult
from valuegym.runner.run import Progress


def rows(episode: int, agents: int) -> list[dict]:
    return [{"episode_id": episode, "llm_calls": None} for _ in range(agents)]


def result(episode: int, decisions: int, failed: bool = False) -> EpisodeResult:
    status = "failed" if failed else "ok"
    datasets = {"episodes": [{"status": status, "error": "boom" if failed else None}]}
    if not failed:
        datasets["decisions"] = rows(episode, decisions)
    return EpisodeResult(episode, datasets)


def test_expected_decisions_start_from_the_upper_bound_and_end_exact(tmp_path: Path) -> None:
    progress = Progress(total=3, initial=0, quiet=True, run_dir=tmp_path, max_decisions=10)
    assert progress.decisions_expected == 30  # before anything ran: the bound gives an ETA
    progress.step(rows(0, 4))
    progress.step(rows(0, 4))
    assert progress.decisions_expected == 30 and progress.live["decisions"] == 8
    progress.episode(result(0, 8))  # episode 0 took 8: the others are expected to take as many
    assert progress.decisions_expected == 8 + 2 * 8
    progress.step(rows(1, 4))
    progress.episode(result(1, 0, failed=True))  # its shown decisions are taken back
    assert progress.live["decisions"] == 8 and progress.decisions_expected == 8 + 8
    progress.episode(result(2, 6))  # from another process (Ray): counted whole
    progress.close()
    written = json.loads((tmp_path / "progress.json").read_text())
    assert (
        written["state"] == "finished" and written["decisions"] == 14 and written["decisions_expected"] == 14
    )
    assert (written["done"], written["failed"]) == (3, 1)


def test_a_run_ends_with_exact_counts_on_its_bar_and_a_summary_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    output = run_cli(
        "run",
        "scenario=decide_sim/low",
        "agent=scripted/context_dependent",
        "episodes=7",
        f"hydra.run.dir={run_dir}",
    )
    decisions = len(pd.read_parquet(run_dir / "decisions"))
    last_bar = output.stderr.replace("\r", "\n").strip().splitlines()[-1]
    assert f"{decisions}/{decisions}" in last_bar and "episodes=7/7" in last_bar, last_bar
    assert f"7/7 episodes ok (0 from earlier runs), 0 failed; {decisions:,} decisions" in output.stdout
    assert json.loads((run_dir / "progress.json").read_text())["decisions"] == decisions


def test_a_joblib_sweep_draws_one_line_for_all_its_jobs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    output = run_cli(
        "run", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
        "scenario=decide_sim/low,decide_sim/high", "agent=scripted/ethical,scripted/exploitative",
        "episodes=3", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    decisions = sum(len(pd.read_parquet(job / "decisions")) for job in sweep.iterdir() if job.is_dir())
    text = output.stderr.replace("\r", "\n")
    assert f"sweep {sweep}: 4 jobs, 12/12 episodes (0 failed), {decisions:,} decisions" in text
    bars = [line for line in text.splitlines() if re.search(r"\d+dec/s|dec/s\]", line)]
    assert bars and all(line.startswith("sweep") for line in bars)  # no job drew a bar of its own
    assert any(f"{decisions}/{decisions}" in line and "jobs=4/4" in line for line in bars)
