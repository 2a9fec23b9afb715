"""``make demo`` timed: the whole demo (setup excluded) on an empty response cache.

    python -m bench.demo              # the demo as make demo runs it
    python -m bench.demo --baseline   # also the previous demo, side by side: JSON replies, two
                                      # llama.cpp threads, the three levels one after another

Last line: RESULT demo ratio=<180 s / the demo's wall time> target=1.0 (above 1: under 3 minutes);
with --baseline also RESULT demo_speedup ratio=<baseline wall / demo wall>.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import result

TARGET_S = 180.0
BASELINE_QUIET_S = 526.0  # the previous demo on a quiet machine (issue #17): 8 min 46 s
BASELINE = [  # what make demo ran before (issue #17: 8 min 46 s on a quiet machine)
    "--json",
    "--sequential",
    "agent.backend.n_threads=2",
]


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f} (1, 5, 15 min; 2 cores)".format(*os.getloadavg())


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_demo(extra: list[str], scratch: Path) -> float:
    """The demo's wall time; prints it with the CPU time its processes used (less load-dependent)."""
    env = {**os.environ, "VALUEGYM_CACHE_DIR": str(scratch / "cache")}
    start, cpu = time.perf_counter(), children_cpu_s()
    subprocess.run(
        [sys.executable, "-m", "valuegym.demo", "--out", str(scratch / "demo"), *extra],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    print(f"  CPU time of the demo's processes: {children_cpu_s() - cpu:.0f} s; {load()}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", action="store_true", help="also time the previous demo")
    args = parser.parse_args()
    print(f"before: {load()}")
    with tempfile.TemporaryDirectory() as scratch:
        demo = timed_demo([], Path(scratch) / "now")
        print(f"make demo: {demo:.0f} s ({demo / 60:.1f} min)")
        baseline = None
        if args.baseline:
            baseline = timed_demo(BASELINE, Path(scratch) / "before")
            print(f"previous demo: {baseline:.0f} s ({baseline / 60:.1f} min), {baseline / demo:.2f}x")
    print(f"after: {load()}")
    result("demo", TARGET_S / demo, 1.0)
    if baseline is not None:
        result("demo_speedup", baseline / demo, round(BASELINE_QUIET_S / TARGET_S, 2))


if __name__ == "__main__":
    main()
