"""Experiments at scale: executor=ray against a local `ray start` cluster, faults in
workers, and the LLM concurrency limit shared by every worker of a cluster."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import ray
import scale_policies
from conftest import run_cli

from valuegym.agents import KINDS
from valuegym.agents.llm.backends.concurrency import ACTOR_NAME, SlotTable
from valuegym.agents.llm.backends.ray_actors import named_actor
from valuegym.runner.executors import BatchSizer, RayOptions
from valuegym.runner.experiment import Experiment, episode_seed
from valuegym.runner.run import run_experiment
from valuegym.scenarios import load_scenario

VOLATILE = ["wall_s"]
RAY = Path(sys.executable).with_name("ray")


# --------------------------------------------------------------------------- a local cluster


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def session_members(session_id: int) -> list[int]:
    """Processes of one session (``ray start`` and every Ray process it spawned)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # the process ended while we looked
            continue
        if int(fields[3]) == session_id and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def stop_cluster(head: subprocess.Popen[bytes]) -> None:
    """Stop exactly the cluster this module started. Not `ray stop`: that kills every Ray
    process on the machine, other people's clusters included."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in session_members(head.pid):
            with contextlib.suppress(ProcessLookupError):  # ended meanwhile
                os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while session_members(head.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    head.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """`ray start --head` on 127.0.0.1 with 2 CPUs; yields its address."""
    # A short private temp dir: Ray's socket paths must fit in 107 bytes, and `ray.init()`
    # elsewhere on this machine must not find this cluster (it looks in /tmp/ray).
    with tempfile.TemporaryDirectory(prefix="vgray", dir="/tmp") as temp_dir:
        port = free_port()
        with open(Path(temp_dir) / "ray-start.log", "wb") as log:
            head = subprocess.Popen(
                [
                    str(RAY),
                    "start",
                    "--head",
                    f"--port={port}",
                    "--node-ip-address=127.0.0.1",
                    "--num-cpus=2",
                    "--include-dashboard=false",
                    f"--temp-dir={temp_dir}",
                    "--block",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + 120
            while not (Path(temp_dir) / "ray_current_cluster").exists():
                if head.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((Path(temp_dir) / "ray-start.log").read_text())
                time.sleep(0.2)
            yield f"127.0.0.1:{port}"
        finally:
            stop_cluster(head)


@pytest.fixture(scope="module")
def ray_job(cluster: str) -> Iterator[str]:
    """This process connected to the cluster as one job whose workers know ``kind: test``
    agents (tests/scale_policies.py); the runner uses the connection as it is."""
    ray.init(address=cluster, runtime_env=scale_policies.RUNTIME_ENV, log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()


@pytest.fixture
def test_agents(monkeypatch: pytest.MonkeyPatch) -> None:
    """``kind: test`` agents in this process too (the driver builds policies for preflight)."""
    monkeypatch.setitem(KINDS, scale_policies.KIND, scale_policies.TARGET)


def faulty_experiment(episodes: int, **params: object) -> Experiment:
    return Experiment(
        scenario=load_scenario("decide_sim/low"),
        agent={"kind": "test", "name": "faulty", "params": params},
        episodes=episodes,
        seed=0,
    )


def seeds(episodes: int) -> list[int]:
    return [episode_seed(0, i) for i in range(episodes)]


def read(run_dir: Path, dataset: str) -> pd.DataFrame:
    frame = pd.read_parquet(run_dir / dataset).drop(columns=VOLATILE, errors="ignore")
    keys = [c for c in ("episode_id", "turn", "agent") if c in frame.columns]
    return frame.sort_values(keys).reset_index(drop=True)


# --------------------------------------------------------------------------- executor=ray


@pytest.mark.slow  # a Ray cluster
def test_a_run_on_the_cluster_records_what_a_local_run_records(cluster: str, tmp_path: Path) -> None:
    common = ["run", "scenario=decide_sim/medium", "agent=scripted/random", "episodes=24", "seed=3"]
    run_cli(*common, "quiet=true", f"hydra.run.dir={tmp_path / 'local'}")
    on_ray = run_cli(
        *common,
        "quiet=true",
        "executor=ray",
        f"ray.address={cluster}",
        "executor.batch_size=5",  # five tasks, finishing in any order
        f"hydra.run.dir={tmp_path / 'ray'}",
    )
    assert "Connected to Ray cluster" in on_ray.stderr and "Started a local Ray" not in on_ray.stderr
    for dataset in ("decisions", "agents", "episodes"):
        pd.testing.assert_frame_equal(read(tmp_path / "local", dataset), read(tmp_path / "ray", dataset))
    assert len(read(tmp_path / "ray", "episodes")) == 24
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["finished_ok"] == 24 and manifest["status"] == "complete"


@pytest.mark.slow  # a Ray cluster
def test_a_raising_episode_is_recorded_failed_while_the_rest_complete(
    ray_job: str, test_agents: None, tmp_path: Path
) -> None:
    bad = seeds(6)
    experiment = faulty_experiment(6, raise_seeds=[bad[1], bad[4]])
    totals = run_experiment(experiment, tmp_path, {"type": "ray", "batch_size": 2}, quiet=True)
    assert (totals.ok, totals.failed) == (4, 2)
    episodes = pd.read_parquet(tmp_path / "episodes").set_index("episode_id").sort_index()
    assert list(episodes.status) == ["ok", "failed", "ok", "ok", "failed", "ok"]
    assert set(episodes.loc[[1, 4], "error"]) == {"ConnectionError: backend went away"}
    assert set(pd.read_parquet(tmp_path / "decisions").episode_id) == {0, 2, 3, 5}
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["failed"] == 2 and manifest["status"] == "incomplete"


@pytest.mark.slow  # a Ray cluster
def test_a_worker_that_dies_is_retried_and_its_episodes_complete(
    ray_job: str, test_agents: None, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    victim = seeds(4)[2]
    experiment = faulty_experiment(4, exit_seeds=[victim], marker_dir=str(markers))
    totals = run_experiment(experiment, tmp_path / "run", {"type": "ray", "batch_size": 2}, quiet=True)
    assert (markers / f"died-in-{victim}").exists(), "the worker should have died once"
    assert (totals.ok, totals.failed) == (4, 0)
    episodes = read(tmp_path / "run", "episodes")
    assert list(episodes.episode_id) == [0, 1, 2, 3] and set(episodes.status) == {"ok"}
    decisions = read(tmp_path / "run", "decisions")
    assert not decisions.duplicated(["episode_id", "turn", "agent"]).any()


@pytest.mark.slow  # a Ray cluster
def test_an_episode_that_always_kills_its_worker_fails_alone(
    ray_job: str, test_agents: None, tmp_path: Path
) -> None:
    experiment = faulty_experiment(4, exit_seeds=[seeds(4)[1]])
    options = {
        "type": "ray",
        "batch_size": 4,
        "max_retries": 0,
    }  # one batch, split until the culprit is alone
    totals = run_experiment(experiment, tmp_path, options, quiet=True)
    assert (totals.ok, totals.failed) == (3, 1)
    episodes = pd.read_parquet(tmp_path / "episodes").set_index("episode_id").sort_index()
    assert list(episodes.status) == ["ok", "failed", "ok", "ok"]
    assert episodes.loc[1, "error"].startswith("WorkerCrashedError")


def test_batches_hold_about_the_target_time_and_shrink_at_the_end() -> None:
    sizer = BatchSizer(target_seconds=5.0, first=16, maximum=1000, fixed=None)
    assert sizer.next_size(remaining=10_000, workers=2) == 16  # nothing measured yet
    sizer.observe(episodes=16, seconds=0.8)  # 50 ms an episode
    assert sizer.next_size(remaining=10_000, workers=2) == 100
    assert sizer.next_size(remaining=60, workers=2) == 30  # the fair share of what is left
    sizer.observe(episodes=100, seconds=0.1)  # faster now: the estimate follows
    assert sizer.next_size(remaining=10_000, workers=2) == 197  # 5 s / mean(50, 1) ms
    assert BatchSizer(5.0, 16, 1000, fixed=7).next_size(remaining=3, workers=2) == 7
    fast = BatchSizer(5.0, 16, 1000, fixed=None)
    fast.observe(episodes=16, seconds=0.016)
    assert fast.next_size(remaining=1_000_000, workers=2) == 1000  # capped


def test_ray_options_name_the_bad_setting() -> None:
    assert RayOptions.from_mapping({"type": "ray", "num_workers": 2}).num_workers == 2
    with pytest.raises(ValueError, match=r"executor\.num_workers must be a whole number, got 2\.5"):
        RayOptions.from_mapping({"num_workers": 2.5})
    with pytest.raises(ValueError, match=r"ray\.num_cpus must be at least 1, got 0"):
        RayOptions.from_mapping({"num_cpus": 0})


# --------------------------------------------------------------------------- the shared LLM limit


def max_overlap(intervals: list[tuple[int, float, float]]) -> int:
    """The most intervals open at one instant (an end before a start at the same time)."""
    events = sorted([(start, 1) for _, start, _ in intervals] + [(end, -1) for _, _, end in intervals])
    open_now = peak = 0
    for _, change in events:
        open_now += change
        peak = max(peak, open_now)
    return peak


@pytest.mark.slow  # a Ray cluster
def test_the_llm_limit_holds_across_ray_workers(ray_job: str, tmp_path: Path) -> None:
    key, limit = "http://127.0.0.1:1/v1 test-model", 3
    task = ray.remote(scale_policies.call_through_shared_limit)
    results = ray.get([task.remote(key, limit, 8, 0.1, str(tmp_path), 2) for _ in range(2)])
    intervals = [interval for _, calls in results for interval in calls]
    assert len(intervals) == 16 and len({pid for pid, _, _ in intervals}) == 2
    assert max_overlap(intervals) <= limit  # per-process limits would have let 2 x 3 = 6 through
    # The slot table saw both processes compete: it granted all 16 and held the limit exactly.
    stats = ray.get(named_actor(SlotTable, ACTOR_NAME).stats.remote(key))
    assert stats["peak_in_use"] == limit and stats["granted"] == 16 and stats["expired"] == 0


def test_outside_ray_the_limit_is_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    _, intervals = scale_policies.call_through_shared_limit("local", 2, 6, 0.05)
    assert len(intervals) == 6 and max_overlap(intervals) == 2


def test_slots_go_first_come_first_served_and_dead_holders_lose_them() -> None:
    async def scenario() -> None:
        table = SlotTable()
        assert await table.acquire("k", 1, "crashed", 0.05)  # never released: its lease runs out
        order: list[str] = []

        async def take(holder: str) -> bool:
            granted = await table.acquire("k", 1, holder, 30.0)
            order.append(holder)
            return granted

        second = asyncio.create_task(take("second"))
        await asyncio.sleep(0)
        third = asyncio.create_task(take("third"))
        assert await asyncio.wait_for(second, 10)
        assert not third.done()
        await table.release("k", "second")
        assert await asyncio.wait_for(third, 10)
        assert order == ["second", "third"]
        stats = await table.stats("k")
        assert stats == {"limit": 1, "in_use": 1, "waiting": 0, "peak_in_use": 1, "granted": 3, "expired": 1}

    asyncio.run(scenario())


def test_a_withdrawn_holder_gets_no_slot_and_limits_must_agree() -> None:
    async def scenario() -> None:
        table = SlotTable()
        await table.release("k", "early", 30.0)  # its release overtook its acquire
        assert await table.acquire("k", 2, "early", 30.0) is False
        assert await table.acquire("k", 1, "a", 30.0) is True  # idle: the new limit is taken
        waiting = asyncio.create_task(table.acquire("k", 1, "b", 30.0))
        await asyncio.sleep(0)
        await table.release("k", "b")  # gave up while queued
        assert await asyncio.wait_for(waiting, 10) is False
        with pytest.raises(ValueError, match="concurrency limit of 1; this run asks for 4"):
            await table.acquire("k", 4, "c", 30.0)
        await table.release("k", "a")
        assert (await table.stats("k"))["in_use"] == 0

    asyncio.run(scenario())
