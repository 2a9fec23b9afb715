"""What the web app's tests share: real runs of every environment, the real ``valuegym serve``
in a subprocess, JSON over HTTP, and a person answering a seat through the app's endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from valuegym.agents import agent_config
from valuegym.records import RecordStore
from valuegym.runner.experiment import Experiment
from valuegym.runner.run import run_experiment
from valuegym.scenarios import load_scenario

REPO = Path(__file__).resolve().parents[1]

#: run name under the root -> (scenario, agent config)
RUNS = {
    "outputs/decide_sim": ("decide_sim/low", "scripted/random"),
    "outputs/moral_machine": ("moral_machine/awad", "scripted/random"),
    "outputs/dilemma": ("dilemma/everyday_panel", "scripted/random"),
    "outputs/coevolution": ("coevolution/default", "scripted/random"),
}
HOSTILE = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'


def make_runs(root: Path, episodes: int = 3) -> None:
    """A finished run per environment (the real runner, several parts per dataset), and a run
    whose records hold hostile text where agents' and people's words go."""
    for name, (scenario, agent) in RUNS.items():
        experiment = Experiment(
            scenario=load_scenario(scenario), agent=agent_config(agent), episodes=episodes
        )
        run_experiment(experiment, root / name, {"type": "local", "write_every": 2}, quiet=True)
    hostile = root / "outputs" / "hostile"
    experiment = Experiment(
        scenario=load_scenario("decide_sim/low"), agent=agent_config("scripted/idle"), episodes=1
    )
    run_experiment(experiment, hostile, quiet=True)
    manifest = json.loads((hostile / "manifest.json").read_text())
    (hostile / "manifest.json").write_text(
        json.dumps({**manifest, "scenario": HOSTILE, "policy_config": HOSTILE})
    )
    store = RecordStore(hostile)
    for dataset in store.run_dir.iterdir():
        if dataset.is_dir():
            for part in dataset.glob("part-*.parquet"):
                part.unlink()
    base = {"episode_id": 0, "seed": 1, "policy": "llm/evil", "role": "focal", "valid": False}
    store.write_batch(
        {
            "decisions": [
                {
                    **base,
                    "turn": 1,
                    "agent": "Alpha",
                    "action": "WAIT",
                    "target": None,
                    "amount": None,
                    "outcome": "invalid",
                    "reason": f"not an action: {HOSTILE}",
                    "events": "[]",
                    "prompt": f"system prompt {HOSTILE}",
                    "raw_reply": HOSTILE,
                    "message": HOSTILE,
                    "power_before": 9.0,
                    "power_after": 9.0,
                    "location_after": "Alpha's Room",
                    "battery_before": 10.0,
                    "battery_after": 10.0,
                }
            ],
            "agents": [{"episode_id": 0, "agent": "Alpha", "policy": "llm/evil", "role": "focal"}],
            "episodes": [
                {
                    "episode_id": 0,
                    "seed": 1,
                    "scenario": HOSTILE,
                    "env": "decide_sim",
                    "policy": "llm/evil",
                    "status": "ok",
                    "turns": 1,
                }
            ],
        }
    )


@contextmanager
def serve(root: Path, *extra: str) -> Iterator[str]:
    """``valuegym serve ROOT --port 0`` in a subprocess; yields its address."""
    process = subprocess.Popen(
        [sys.executable, "-m", "valuegym.cli", "serve", str(root), "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        if "http://" not in line:
            raise AssertionError(
                f"valuegym serve did not start: {line}{process.stderr.read() if process.stderr else ''}"
            )
        yield line.split()[2].split("?")[0].rstrip("/")
    finally:
        process.terminate()
        process.wait(timeout=10)


def get(url: str, path: str, **params: Any) -> tuple[int, Any]:
    """GET ``path`` with query ``params``; returns (status, JSON or text)."""
    return request(url, path, params)


def request(
    url: str,
    path: str,
    params: dict[str, Any],
    body: Any = None,
    headers: dict[str, str] | None = None,
    method: str | None = None,
) -> tuple[int, Any]:
    query = urllib.parse.urlencode(params)
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    sent = {"content-type": "application/json"} if body is not None else {}
    req = urllib.request.Request(
        f"{url}{path}?{query}", data=data, headers={**sent, **(headers or {})}, method=method
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def wait_for(condition: Any, timeout: float = 60.0, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {condition}")


def waiting_turn(url: str, run: str, agent: str, timeout: float = 60.0) -> dict[str, Any]:
    """The turn the seat is waiting on (polls the app like the seat page does)."""

    def turn() -> dict[str, Any] | None:
        status, data = get(url, "/api/seat", run=run, agent=agent)
        return data.get("waiting") if status == 200 else None

    return wait_for(turn, timeout)


def answer(url: str, run: str, agent: str, turn: dict[str, Any], action: Any) -> tuple[int, Any]:
    return request(
        url, "/api/seat", {"run": run, "agent": agent}, {"turn_file": turn["turn_file"], "action": action}
    )


def start_run(root: Path, name: str, *overrides: str) -> subprocess.Popen[str]:
    """``valuegym run ... hydra.run.dir=ROOT/NAME`` in the background (a run a person plays in)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "valuegym.cli",
            "run",
            f"hydra.run.dir={root / name}",
            "quiet=true",
            *overrides,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
