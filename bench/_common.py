"""Helpers shared by the bench scripts: timing and the closing RESULT line."""

from __future__ import annotations

import time
from collections.abc import Callable


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
