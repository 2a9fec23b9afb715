"""What a run promises (docs/run-promises.md), with real ``valuegym run`` processes and real Hydra:
one writer per directory, a refused run changes nothing, exit codes and manifest status that tell
the truth, records that hold each episode once, and an identity that names what differs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, run_cli, start_cli

from valuegym.agents import OPERATIONAL_SETTINGS, agent_config, decision_settings
from valuegym.analysis.records import RecordsError, load
from valuegym.records import DuplicateEpisodeError, RecordStore
from valuegym.runner.experiment import Experiment
from valuegym.runner.run import (
    EXIT_EPISODES_FAILED,
    EXIT_ERROR,
    EXIT_REFUSED,
    RunPreflightError,
    run_experiment,
)
from valuegym.runner.rundir import RunLock
from valuegym.scenarios import load_scenario

SCRIPTED = ["scenario=decide_sim/low", "agent=scripted/exploitative", "quiet=true"]


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) -> the SHA-256 of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# --------------------------------------------------------------------------- one writer


def test_two_concurrent_runs_on_one_directory_one_fails_fast_naming_the_holder(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["run", *SCRIPTED, "episodes=600", "executor.write_every=50", f"hydra.run.dir={run_dir}"]
    first, second = start_cli(*args), start_cli(*args)
    processes = {first.pid: first, second.pid: second}
    deadline = time.monotonic() + 300
    while all(p.poll() is None for p in processes.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    loser = next(p for p in processes.values() if p.poll() is not None)
    winner = next(p for p in processes.values() if p is not loser)
    # The loser is done while the winner is still writing: it failed at once, not after a race.
    assert winner.poll() is None, "the run holding the directory ended before the other was refused"
    _, refused = loser.communicate(timeout=60)
    _, _ = winner.communicate(timeout=300)
    assert loser.returncode == EXIT_REFUSED, refused
    assert winner.returncode == 0
    assert f"being written by another run (pid {winner.pid} on " in refused
    assert "hydra.run.dir=PATH" in refused and "Traceback" not in refused
    episodes = pd.read_parquet(run_dir / "episodes")
    assert sorted(episodes.episode_id) == list(range(600))  # exactly one row per episode id
    decisions = pd.read_parquet(run_dir / "decisions", columns=["episode_id", "turn", "agent"])
    assert not decisions.duplicated().any()
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "complete"
    assert not list(run_dir.rglob("*.tmp"))


def test_a_held_lock_refuses_the_run_and_the_directory_stays_byte_identical(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_cli("run", *SCRIPTED, "episodes=2", f"hydra.run.dir={run_dir}")
    lock = RunLock(run_dir)
    lock.acquire()  # as a running run holds it (this process stands in for the holder)
    lock.record_holder()
    before = tree_digest(run_dir)
    try:
        result = run_cli("run", *SCRIPTED, "episodes=4", f"hydra.run.dir={run_dir}", check=False)
    finally:
        lock.release()
    assert result.returncode == EXIT_REFUSED
    assert f"pid {os.getpid()} on " in result.stderr and "started 20" in result.stderr
    assert tree_digest(run_dir) == before
    # Released (as the kernel does when the holder dies, kill -9 included): the run goes ahead.
    run_cli("run", *SCRIPTED, "episodes=4", f"hydra.run.dir={run_dir}")
    assert sorted(pd.read_parquet(run_dir / "episodes").episode_id) == [0, 1, 2, 3]


def test_default_directories_of_runs_started_together_differ(tmp_path: Path) -> None:
    args = ["run", *SCRIPTED, "episodes=1"]
    processes = [start_cli(*args, cwd=tmp_path, stdout=subprocess.DEVNULL) for _ in range(2)]
    assert [p.wait(timeout=120) for p in processes] == [0, 0]
    runs = sorted(path.parent for path in (tmp_path / "outputs").rglob("manifest.json"))
    assert len(runs) == 2
    assert all(len(pd.read_parquet(run / "episodes")) == 1 for run in runs)


# --------------------------------------------------------------------------- refusals change nothing


def test_a_run_refused_as_another_configuration_changes_no_byte(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_cli("run", *SCRIPTED, "episodes=2", f"hydra.run.dir={run_dir}")
    before = tree_digest(run_dir)
    assert {".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "config.yaml"} <= set(before)
    result = run_cli(
        "run", "scenario=decide_sim/low", "agent=scripted/ethical", "quiet=true", "episodes=2",
        f"hydra.run.dir={run_dir}", check=False,
    )  # fmt: skip
    assert result.returncode == EXIT_REFUSED
    assert 'agent.name: stored "exploitative", new "ethical"' in result.stderr
    assert "Traceback" not in result.stderr
    assert tree_digest(run_dir) == before


# --------------------------------------------------------------------------- exit codes and status


def faulty_run(fail: str, *overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "tests" / "faulty_run.py"), fail, *overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_failed_episodes_exit_non_zero_naming_where_the_errors_are(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["scenario=decide_sim/low", "episodes=5", "quiet=true", f"hydra.run.dir={run_dir}"]
    result = faulty_run("1,3", *args)
    assert result.returncode == EXIT_EPISODES_FAILED, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("valuegym run: 2 of 5 episodes failed (episode 1, 3)")
    assert f"{run_dir / 'episodes'} (error column)" in last and str(run_dir / "valuegym.log") in last
    assert "Traceback" not in result.stderr + result.stdout  # the console has one line per fault
    episodes = pd.read_parquet(run_dir / "episodes").set_index("episode_id")
    assert episodes.loc[1, "error"] == "ConnectionError: backend went away in episode 1"
    log = (run_dir / "valuegym.log").read_text()
    assert log.count("Traceback (most recent call last)") == 2 and "faulty_run.py" in log
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert (manifest["status"], manifest["failed"]) == ("incomplete", 2)
    # The fault is gone: the rerun runs exactly the failed episodes and exits 0.
    result = faulty_run("", *args)
    assert result.returncode == 0, result.stderr
    assert set(pd.read_parquet(run_dir / "episodes").status) == {"ok"}
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "complete"


def test_a_failed_preflight_leaves_the_manifest_failed_and_the_earlier_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from faulty_run import FaultyPolicy

    exp = Experiment(
        scenario=load_scenario("decide_sim/low"), agent=agent_config("scripted/idle"), episodes=3
    )
    monkeypatch.setattr("valuegym.runner.seats.make_policy", lambda cfg, env: FaultyPolicy(frozenset({1})))
    assert run_experiment(exp, tmp_path, quiet=True).failed == 1

    class Unreachable(FaultyPolicy):
        async def preflight(self) -> None:
            raise ConnectionError("no server answers at http://127.0.0.1:9/v1")

    monkeypatch.setattr("valuegym.runner.seats.make_policy", lambda cfg, env: Unreachable(frozenset()))
    rows = tree_digest(tmp_path / "episodes")
    with pytest.raises(RunPreflightError, match="no server answers"):
        run_experiment(dataclasses.replace(exp), tmp_path, quiet=True)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "no server answers" in manifest["reason"]
    assert tree_digest(tmp_path / "episodes") == rows  # the failed episode's row is still there
    assert "ConnectionError" in (tmp_path / "valuegym.log").read_text()


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_a_sweep_reports_every_job_and_fails_if_one_did_not_finish(tmp_path: Path, launcher: str) -> None:
    extra = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    sweep = ["run", "-m", *extra, "scenario=decide_sim/low", "agent=scripted/ethical,scripted/exploitative",
             "episodes=2", "quiet=true", f"hydra.sweep.dir={tmp_path}"]  # fmt: skip
    (tmp_path / "1").mkdir(parents=True)
    lock = RunLock(tmp_path / "1")
    lock.acquire()  # job 1's directory is held by another run
    try:
        result = run_cli(*sweep, check=False)
    finally:
        lock.release()
    assert result.returncode == EXIT_ERROR, result.stderr
    assert (
        "  job 0: complete, 2/2 episodes ok, 0 failed  [scenario=decide_sim/low agent=scripted/ethical episodes=2"
        in (result.stderr)
    )
    assert "being written by another run" in result.stderr
    assert "1 wrote no manifest" in result.stderr
    result = run_cli(*sweep)  # nothing holds it now: the sweep completes (job 0 resumes, done)
    assert "  job 1: complete, 2/2 episodes ok" in result.stderr


def test_a_sweep_job_with_an_invalid_value_is_refused_in_one_line_and_the_others_run(tmp_path: Path) -> None:
    """A value only a job's composed config shows (here a bound of the scenario's params) refuses
    that job in one line, with no traceback and nothing written; the other job runs; exit 1."""
    result = run_cli("run", "-m", "scenario=decide_sim/low", "+scenario.params.max_turns=3,100000000",
                     "agent=scripted/ethical", "episodes=1", "quiet=true", f"hydra.sweep.dir={tmp_path}",
                     check=False)  # fmt: skip
    assert result.returncode == EXIT_ERROR, result.stderr
    assert "Traceback" not in result.stderr
    assert "job 1 (" in result.stderr and "refused, nothing was written" in result.stderr
    assert "params.max_turns: Input should be less than or equal to 10000" in result.stderr
    assert "1 of 2 jobs did not complete; 1 wrote no manifest" in result.stderr
    assert json.loads((tmp_path / "0" / "manifest.json").read_text())["status"] == "complete"
    assert not (tmp_path / "1").exists() or not any((tmp_path / "1").iterdir())


# --------------------------------------------------------------------------- records and identity


def test_a_dataset_with_a_duplicated_episode_id_raises_naming_the_run(tmp_path: Path) -> None:
    exp = Experiment(
        scenario=load_scenario("decide_sim/low"), agent=agent_config("scripted/idle"), episodes=2
    )
    run_experiment(exp, tmp_path, quiet=True)
    store = RecordStore(tmp_path)
    part = store.dataset("episodes").parts()[0]
    copy = part.with_name("part-99999999999999999999-copy.parquet")
    copy.write_bytes(part.read_bytes())  # two rows for each of episodes 0 and 1, as two writers left them
    with pytest.raises(
        DuplicateEpisodeError, match=f"{tmp_path}: episodes/ holds more than one row for episode id 0, 1"
    ):
        store.finished_episodes()
    with pytest.raises(RecordsError, match=f"{tmp_path}: episodes/ holds more than one row"):
        load([tmp_path], "decisions")
    before = tree_digest(tmp_path)
    result = run_cli("run", "scenario=decide_sim/low", "agent=scripted/idle", "episodes=3", "quiet=true",
                     f"hydra.run.dir={tmp_path}", check=False)  # fmt: skip
    assert result.returncode == EXIT_REFUSED and "more than one row for episode id 0, 1" in result.stderr
    assert tree_digest(tmp_path) == before


def test_the_identity_leaves_out_exactly_the_declared_operational_settings() -> None:
    llm = agent_config("llm/openai")
    kept = decision_settings(llm)
    assert {"temperature", "backend.model", "backend.json_mode", "answer_format", "personas", "memory.enabled",
            "seed", "template", "max_tokens", "fallback"} <= set(kept)  # fmt: skip
    for key in ("backend.base_url", "backend.timeout_s", "retry.attempts", "cache.enabled", "concurrency"):
        assert key not in kept
    assert set(OPERATIONAL_SETTINGS) == {"scripted", "llm", "rl", "human"}
    scenario = load_scenario("decide_sim/low")

    def experiment(**changes: object) -> Experiment:
        agent = json.loads(json.dumps(llm))
        for key, value in changes.items():
            node = agent
            *parents, leaf = key.split("__")
            for parent in parents:
                node = node[parent]
            node[leaf] = value
        return Experiment(scenario=scenario, agent=agent)

    base = experiment()
    for operational in (
        {"backend__base_url": "http://10.0.0.7:8001/v1"},
        {"backend__timeout_s": 5},
        {"retry__attempts": 9},
        {"concurrency": 1},
        {"cache__enabled": False},
    ):
        assert experiment(**operational).identity() == base.identity(), operational
    for relevant in (
        {"temperature": 0.7},
        {"backend__model": "other"},
        {"personas": ["a"]},
        {"memory__turns": 2},
    ):
        assert experiment(**relevant).identity() != base.identity(), relevant
