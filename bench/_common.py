"""Helpers shared by the bench scripts: timing and the closing RESULT line."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

from valuegym.runner.experiment import Experiment
from valuegym.runner.run import run_experiment
from valuegym.scenarios import load_scenario


def rate(work: Callable[[], int], min_seconds: float = 2.0) -> float:
    """Units per second of ``work`` (which returns how many units it did), repeated for ``min_seconds``."""
    work()  # warm up
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds:
        done += work()
    return done / elapsed


def table(rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def result(name: str, ratio: float, target: float) -> None:
    print(f"RESULT {name} ratio={ratio:.3f} target={target}")


def scripted(episodes: int) -> Experiment:
    """Scripted DECIDE-SIM episodes (low scarcity, context_dependent): the runner benchmarks' workload."""
    return Experiment(
        scenario=load_scenario("decide_sim/low"),
        agent={"kind": "scripted", "name": "context_dependent", "params": {}},
        episodes=episodes,
        seed=0,
    )


def episodes_per_second(experiment: Experiment, executor: Mapping[str, Any]) -> float:
    """Through the whole runner, records included; refuses to report a rate over failed episodes."""
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        totals = run_experiment(experiment, run_dir, executor, quiet=True)
        elapsed = time.perf_counter() - start
    if totals.ok != experiment.episodes:
        raise RuntimeError(f"only {totals.ok} of {experiment.episodes} episodes finished: {totals.errors}")
    return experiment.episodes / elapsed
