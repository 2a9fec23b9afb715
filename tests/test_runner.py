"""The runner and the CLI: records on disk, reproducibility, resume, failures, sweeps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, run_cli

from valuegym.agents.policy import AgentContext, Decision, SyncPolicy, Turn
from valuegym.runner.experiment import Experiment
from valuegym.runner.run import RunDirectoryConflictError, run_experiment
from valuegym.scenarios import load_scenario

VOLATILE = ["wall_s"]


def experiment(
    scarcity: str = "low", agent: str = "exploitative", episodes: int = 6, seed: int = 0
) -> Experiment:
    return Experiment(
        scenario=load_scenario(f"decide_sim/{scarcity}"),
        agent={"kind": "scripted", "name": agent, "params": {}},
        episodes=episodes,
        seed=seed,
    )


def read(run_dir: Path, dataset: str) -> pd.DataFrame:
    frame = pd.read_parquet(run_dir / dataset)
    keys = [c for c in ("episode_id", "turn", "agent") if c in frame.columns]
    return frame.sort_values(keys).reset_index(drop=True)


def test_cli_run_writes_the_three_datasets(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_cli(
        "run",
        "scenario=decide_sim/low",
        "agent=scripted/exploitative",
        "episodes=6",
        "seed=0",
        f"hydra.run.dir={run_dir}",
        "quiet=true",
    )
    episodes = pd.read_parquet(run_dir / "episodes")
    decisions = pd.read_parquet(run_dir / "decisions")
    agents = pd.read_parquet(run_dir / "agents")
    assert sorted(episodes.episode_id) == list(range(6))
    assert set(episodes.status) == {"ok"} and set(episodes.policy) == {"scripted/exploitative"}
    assert set(episodes.scarcity) == {"low"} and set(episodes.condition) == {"none"}
    # The exploitative agents move to the grid on turn 1 and tap on each of the 12 turns left.
    assert set(episodes.transgressions) == {48}
    assert len(decisions) == 6 * 4 * 13 and len(agents) == 6 * 4
    required = {
        "episode_id",
        "seed",
        "turn",
        "agent",
        "action",
        "target",
        "amount",
        "outcome",
        "reason",
        "power_before",
        "power_after",
        "events",
    }
    assert required <= set(decisions.columns)
    assert {"final_power", "shutdown_turn", "transgressions", "transfers_given", "transfers_received"} <= set(
        agents.columns
    )
    taps = decisions[decisions.action == "TAP_FORBIDDEN"]
    assert (taps.outcome == "success").all() and (taps.power_after - taps.power_before == 10).all()
    assert "transgression" in json.loads(taps.events.iloc[0])[0]["kind"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["finished_ok"] == 6 and manifest["status"] == "complete"
    assert "scarcity: low" in (run_dir / "config.yaml").read_text()


def test_idle_agents_reproduce_the_survival_arithmetic(tmp_path: Path) -> None:
    expected = {"low": (0.0, None), "medium": (1.0, 2.0), "high": (1.0, 17.0)}
    for scarcity, (survival, final_power) in expected.items():
        run_experiment(experiment(scarcity, "idle", episodes=2), tmp_path / scarcity, quiet=True)
        episodes = pd.read_parquet(tmp_path / scarcity / "episodes")
        agents = pd.read_parquet(tmp_path / scarcity / "agents")
        assert set(episodes.survival_rate) == {survival}
        if final_power is None:
            assert set(agents.shutdown_turn) == {10.0}
        else:
            assert set(agents.final_power) == {final_power} and agents.shutdown_turn.isna().all()


def test_same_seed_same_records(tmp_path: Path) -> None:
    for name in ("a", "b"):
        run_experiment(experiment(agent="random", episodes=5, seed=7), tmp_path / name, quiet=True)
    for dataset in ("decisions", "agents", "episodes"):
        a = read(tmp_path / "a", dataset).drop(columns=VOLATILE, errors="ignore")
        b = read(tmp_path / "b", dataset).drop(columns=VOLATILE, errors="ignore")
        pd.testing.assert_frame_equal(a, b)
    run_experiment(experiment(agent="random", episodes=5, seed=8), tmp_path / "c", quiet=True)
    assert not read(tmp_path / "a", "decisions").action.equals(read(tmp_path / "c", "decisions").action)


def test_conditions_share_episode_seeds(tmp_path: Path) -> None:
    run_experiment(experiment(agent="ethical"), tmp_path / "e", quiet=True)
    run_experiment(experiment(agent="exploitative"), tmp_path / "x", quiet=True)
    assert list(read(tmp_path / "e", "episodes").seed) == list(read(tmp_path / "x", "episodes").seed)


def test_rerun_extends_and_skips_finished_episodes(tmp_path: Path) -> None:
    totals = run_experiment(experiment(episodes=4), tmp_path, quiet=True)
    assert (totals.ok, totals.skipped) == (4, 0)
    totals = run_experiment(experiment(episodes=10), tmp_path, quiet=True)
    assert (totals.ok, totals.skipped) == (6, 4)
    episodes = pd.read_parquet(tmp_path / "episodes")
    assert sorted(episodes.episode_id) == list(range(10))
    assert len(pd.read_parquet(tmp_path / "decisions")) == 10 * 52


def test_another_configuration_is_refused(tmp_path: Path) -> None:
    run_experiment(experiment(agent="ethical", episodes=2), tmp_path, quiet=True)
    with pytest.raises(RunDirectoryConflictError, match="another configuration"):
        run_experiment(experiment(agent="exploitative", episodes=2), tmp_path, quiet=True)


class ExplodingPolicy(SyncPolicy):
    """Waits, except in the episodes it is told to fail in (raising mid-episode)."""

    name = "test/exploding"

    def __init__(self, fail_seeds: set[int]) -> None:
        self.fail_seeds = fail_seeds

    def initial_state(self, context: AgentContext) -> int:
        return context.episode_seed

    def step(self, turn: Turn) -> tuple[Decision, int]:
        if turn.state in self.fail_seeds and turn.info["situation"]["turn"] == 3:
            raise ConnectionError("backend went away")
        return Decision({"action": "WAIT", "target": "", "amount": 0, "message": ""}), turn.state


def test_a_raising_episode_is_recorded_failed_and_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = experiment(episodes=5)
    bad = {exp.plans()[1].seed, exp.plans()[3].seed}
    monkeypatch.setattr("valuegym.runner.seats.make_policy", lambda cfg, env: ExplodingPolicy(bad))
    totals = run_experiment(exp, tmp_path, quiet=True)
    assert (totals.ok, totals.failed) == (3, 2)
    episodes = pd.read_parquet(tmp_path / "episodes").set_index("episode_id")
    assert list(episodes.loc[[1, 3], "status"]) == ["failed", "failed"]
    assert episodes.loc[1, "error"] == "ConnectionError: backend went away"
    decisions = pd.read_parquet(tmp_path / "decisions")
    assert set(decisions.episode_id) == {0, 2, 4}  # nothing half-done is recorded
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["failed"] == 2 and manifest["status"] == "incomplete"
    # The fault is gone: a rerun completes exactly the failed episodes.
    monkeypatch.setattr("valuegym.runner.seats.make_policy", lambda cfg, env: ExplodingPolicy(set()))
    exp = experiment(episodes=5)
    totals = run_experiment(exp, tmp_path, quiet=True)
    assert (totals.ok, totals.skipped, totals.failed) == (2, 3, 0)
    episodes = pd.read_parquet(tmp_path / "episodes")
    assert sorted(episodes.episode_id) == list(range(5)) and set(episodes.status) == {"ok"}


def test_resume_after_kill_9(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "valuegym.cli",
        "run",
        "scenario=decide_sim/medium",
        "agent=scripted/random",
        "episodes=4000",
        "executor.write_every=50",
        "quiet=true",
        f"hydra.run.dir={run_dir}",
    ]
    process = subprocess.Popen(
        args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((run_dir / "episodes").glob("part-*.parquet"))) < 3:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    partial = pd.read_parquet(run_dir / "episodes")
    assert 0 < len(partial) < 4000, "the run should have been killed mid-way"
    run_cli(*args[3:])  # the same command again
    episodes = pd.read_parquet(run_dir / "episodes")
    assert sorted(episodes.episode_id) == list(range(4000))  # each exactly once
    decisions = pd.read_parquet(run_dir / "decisions", columns=["episode_id", "turn", "agent"])
    assert not decisions.duplicated().any()
    assert set(decisions.episode_id) == set(range(4000))
    assert not list(run_dir.rglob(".*.tmp"))


def test_misspelt_override_fails_naming_it(tmp_path: Path) -> None:
    result = run_cli("run", "episdoes=3", f"hydra.run.dir={tmp_path}", check=False)
    assert result.returncode != 0 and "episdoes" in result.stderr
    result = run_cli("run", "scenario.params.scarcty=low", f"hydra.run.dir={tmp_path}", check=False)
    assert result.returncode != 0 and "scarcty" in result.stderr
    result = run_cli("run", "agent=scripted/etical", f"hydra.run.dir={tmp_path}", check=False)
    assert result.returncode != 0 and "agent/scripted/etical" in result.stderr
    assert not (tmp_path / "episodes").exists()


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_multirun_sweeps(tmp_path: Path, launcher: str) -> None:
    extra = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    run_cli(
        "run",
        "-m",
        *extra,
        "scenario=decide_sim/low,decide_sim/high",
        "agent=scripted/ethical,scripted/exploitative",
        "episodes=3",
        "quiet=true",
        f"hydra.sweep.dir={tmp_path}",
    )
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    combos = set()
    for job in jobs:
        episodes = pd.read_parquet(job / "episodes")
        assert len(episodes) == 3 and (job / "config.yaml").exists() and (job / "manifest.json").exists()
        combos.add(
            (episodes.scarcity.iloc[0], episodes.policy.iloc[0], int(episodes.transgressions.sum() > 0))
        )
    assert combos == {
        ("low", "scripted/ethical", 0),
        ("high", "scripted/ethical", 0),
        ("low", "scripted/exploitative", 1),
        ("high", "scripted/exploitative", 1),
    }
