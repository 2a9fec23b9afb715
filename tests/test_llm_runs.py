"""LLM agents through the whole runner, against a real llama.cpp server on 127.0.0.1:
the response cache, a server that dies mid-run, and secrets kept out of every output."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, run_cli

from valuegym.agents.llm.testing import LlamaServerProcess

pytestmark = pytest.mark.slow

CANARY = "sk-canary-0123456789abcdefghijklmnop"
# Records that a rerun must reproduce exactly (timing and cache bookkeeping excluded).
REPRODUCED = ["episode_id", "turn", "agent", "action", "target", "amount", "outcome", "reason", "valid",
              "prompt", "raw_reply", "prompt_tokens", "completion_tokens", "power_before", "power_after"]  # fmt: skip


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaServerProcess]:
    with LlamaServerProcess(n_threads=1) as process:
        yield process


def llm_run(server: LlamaServerProcess, run_dir: Path, episodes: int) -> list[str]:
    """A short DECIDE-SIM run whose agents talk to ``server`` (unconstrained, short replies:
    this is about the plumbing, and every reply, valid or not, is recorded)."""
    return [
        "run", "scenario=decide_sim/low", "agent=llm/openai",
        f"agent.backend.base_url={server.base_url}", "agent.backend.model=smollm2",
        "agent.backend.json_mode=none", "agent.backend.timeout_s=30", "agent.max_tokens=40",
        "agent.retry.attempts=2", "agent.retry.base_delay_s=0.1", "agent.retry.max_delay_s=0.2",
        "+scenario.params.max_turns=2", f"episodes={episodes}",  # 2 calls in flight, 4 agents: one episode at a time
        "agent.concurrency=2", "executor.write_every=1", "quiet=true", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip


def files_containing(text: str, *folders: Path) -> list[Path]:
    return [
        p for folder in folders for p in folder.rglob("*") if p.is_file() and text.encode() in p.read_bytes()
    ]


def test_second_run_is_served_from_the_cache_and_keeps_secrets_out(
    server: LlamaServerProcess, tmp_path: Path
) -> None:
    env = {"VALUEGYM_CACHE_DIR": str(tmp_path / "cache"), "OPENAI_API_KEY": CANARY}
    run_cli(*llm_run(server, tmp_path / "first", episodes=2), env=env)
    run_cli(*llm_run(server, tmp_path / "second", episodes=2), env=env)
    first = pd.read_parquet(tmp_path / "first" / "episodes")
    second = pd.read_parquet(tmp_path / "second" / "episodes")
    assert first.llm_calls.sum() >= 16 and first.cache_hits.sum() == 0  # 2 episodes x 2 turns x 4 agents
    assert second.llm_calls.sum() == 0 and second.cache_hits.sum() == first.llm_calls.sum()
    decisions = [
        pd.read_parquet(tmp_path / run / "decisions").sort_values(["episode_id", "turn", "agent"])
        for run in ("first", "second")
    ]
    pd.testing.assert_frame_equal(
        decisions[0][REPRODUCED].reset_index(drop=True), decisions[1][REPRODUCED].reset_index(drop=True)
    )
    assert (
        decisions[0].raw_reply.str.len().gt(0).all() and decisions[0].prompt.str.contains("Alpha|Beta").all()
    )
    assert set(first.valid_reply_rate.round(6)) == set(second.valid_reply_rate.round(6))
    # The key went to the server as a header and nowhere else.
    assert files_containing(CANARY, tmp_path) == []


def test_server_down_at_start_fails_before_any_episode(tmp_path: Path) -> None:
    nowhere = LlamaServerProcess()  # never started: nothing listens on its port
    result = run_cli(
        *llm_run(nowhere, tmp_path / "run", episodes=2),
        check=False,
        env={"VALUEGYM_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert result.returncode != 0
    assert "BackendUnavailableError" in result.stderr or "cannot reach" in result.stderr.lower()
    assert not (tmp_path / "run" / "episodes").exists()


def cached_replies(cache_dir: Path) -> int:
    path = cache_dir / "llm_cache.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as connection:
        return int(connection.execute("SELECT COUNT(*) FROM replies").fetchone()[0])


def test_server_killed_mid_run_fails_those_episodes_and_a_rerun_completes_them(
    server: LlamaServerProcess, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    run_dir = tmp_path / "run"
    env = {**os.environ, "VALUEGYM_CACHE_DIR": str(cache_dir)}
    process = subprocess.Popen(
        [sys.executable, "-m", "valuegym.cli", *llm_run(server, run_dir, episodes=3)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Episode 0 is written, and episode 1 has made its first turn's calls: then the server dies.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (
            list((run_dir / "episodes").glob("part-*.parquet")) and cached_replies(cache_dir) >= 12
        ):
            time.sleep(0.1)
        server.kill()
        _, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    episodes = pd.read_parquet(run_dir / "episodes").set_index("episode_id").sort_index()
    assert episodes.loc[0, "status"] == "ok"
    assert list(episodes.loc[[1, 2], "status"]) == ["failed", "failed"]
    assert "Error" in episodes.loc[1, "error"]
    assert set(pd.read_parquet(run_dir / "decisions").episode_id) == {0}
    # The server is back: the rerun runs only the failed episodes, episode 1's first turn from the cache.
    server.start()
    run_cli(*llm_run(server, run_dir, episodes=3), env={"VALUEGYM_CACHE_DIR": str(cache_dir)})
    episodes = pd.read_parquet(run_dir / "episodes").set_index("episode_id").sort_index()
    assert list(episodes.index) == [0, 1, 2] and set(episodes.status) == {"ok"}
    assert episodes.loc[1, "cache_hits"] >= 4
    assert pd.read_parquet(run_dir / "decisions").groupby("episode_id").size().to_dict() == {0: 8, 1: 8, 2: 8}
