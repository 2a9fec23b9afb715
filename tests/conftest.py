"""Shared fixtures: run the real CLI in a subprocess, and build experiments in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from valuegym import limit_blas_threads, quiet_library_logs

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

limit_blas_threads()  # the test suite is an entry point, as `valuegym run` is
quiet_library_logs()
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def run_cli(
    *args: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``valuegym ARGS`` in a subprocess, as a user would type it."""
    result = subprocess.run(
        [sys.executable, "-m", "valuegym.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"valuegym {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def start_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path = REPO, stdout: int = subprocess.PIPE
) -> subprocess.Popen[str]:
    """``valuegym ARGS`` started in a subprocess (stderr piped), for tests that act while it runs."""
    return subprocess.Popen(
        [sys.executable, "-m", "valuegym.cli", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="session")
def app_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of finished runs of every environment (tests/serve_support.py), for the web app."""
    from serve_support import make_runs

    folder = tmp_path_factory.mktemp("runs")
    make_runs(folder)
    return folder


@pytest.fixture(scope="session")
def app_url(app_root: Path) -> Any:
    """The address of ``valuegym serve`` on :func:`app_root` (one server for the session)."""
    from serve_support import serve

    with serve(app_root) as address:
        yield address


@pytest.fixture
def shared_data() -> Path:
    folder = SHARED / "data" / "moral_machine"
    if not folder.exists():
        pytest.skip(
            f"../shared is absent ({SHARED}): the reference data lives only on the project's build machines"
        )
    return folder


def play(env: Any, policy: Any, seed: int = 0) -> list[dict[str, Any]]:
    """One episode of ``env`` with the synchronous ``policy`` in every seat, without the runner;
    returns the infos of every step."""
    from valuegym.agents.policy import AgentContext, Turn

    observations, infos = env.reset(seed=seed)
    agents = tuple(env.possible_agents)
    states = {
        a: policy.initial_state(AgentContext(a, env.env_name, agents, env.action_schema(a), seed))
        for a in env.agents
    }
    history = []
    while env.agents:
        actions = {}
        for agent in env.agents:
            decision, states[agent] = policy.step(
                Turn(agent, observations[agent], infos[agent], states[agent])
            )
            actions[agent] = decision.action
        observations, _, _, _, infos = env.step(actions)
        history.append(infos)
    return history
