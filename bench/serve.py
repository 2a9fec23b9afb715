"""``valuegym serve`` on a run of 100,000 scripted DECIDE-SIM episodes: opening the run and
jumping to any episode, through the app over HTTP, beside reading that episode's decision
rows directly with pyarrow (a dataset read filtered on ``episode_id``, statistics pruning the
parts).

The run is made once with the real runner (a few minutes) and kept in ``bench/.data/`` (or
``$VALUEGYM_BENCH_DIR``). The ratio is the median app jump over the median direct read;
the app returns every record of the episode (decisions, agents, the episode row) as JSON.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq

from bench._common import result, table

EPISODES = 100_000
JUMPS = 30
TARGET = 2.0  # the app's jump may cost at most twice a direct read of the rows
DATA = Path(os.environ.get("VALUEGYM_BENCH_DIR", Path(__file__).parent / ".data")) / "serve-100k"
RUN = DATA / "run"


def ensure_run() -> None:
    manifest = RUN / "manifest.json"
    if manifest.exists() and json.loads(manifest.read_text()).get("finished_ok") == EPISODES:
        return
    print(f"making the run: {EPISODES:,} scripted DECIDE-SIM episodes into {RUN} (once; a few minutes)")
    subprocess.run(
        [sys.executable, "-m", "valuegym.cli", "run", "scenario=decide_sim/low", "agent=scripted/random",
         f"episodes={EPISODES}", "quiet=true", f"hydra.run.dir={RUN}"],
        check=True,
    )  # fmt: skip


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def timed(work: object) -> float:
    start = time.perf_counter()
    work()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    ensure_run()
    ids = random.Random(0).sample(range(EPISODES), JUMPS)
    server = subprocess.Popen(
        [sys.executable, "-m", "valuegym.cli", "serve", str(DATA), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        base = server.stdout.readline().split()[2].rstrip("/")  # type: ignore[union-attr]
        run = "run"
        # Cold: the first look at the run (summary, first page of episodes) and a first jump.
        opened = timed(lambda: fetch(f"{base}/api/run?run={run}")) + timed(
            lambda: fetch(f"{base}/api/episodes?run={run}&offset=0&limit=50")
        )
        first_jump = timed(lambda: fetch(f"{base}/api/episode?run={run}&episode={ids[0]}"))
        app = [timed(lambda i=i: fetch(f"{base}/api/episode?run={run}&episode={i}")) for i in ids]
        direct = [
            timed(lambda i=i: pq.read_table(RUN / "decisions", filters=[("episode_id", "==", i)]))
            for i in ids
        ]
        rows = pq.read_table(RUN / "decisions", filters=[("episode_id", "==", ids[0])]).num_rows
    finally:
        server.terminate()
        server.wait(timeout=10)
    parts = len(list((RUN / "decisions").glob("part-*.parquet")))
    ratio = statistics.median(app) / statistics.median(direct)
    print(
        f"bench/serve: a run of {EPISODES:,} DECIDE-SIM episodes ({parts} parts per dataset), {JUMPS} random jumps"
    )
    table(
        [
            ("open the run (summary + first page)", f"{opened * 1000:8.1f} ms  (cold)"),
            (
                "first jump to an episode",
                f"{first_jump * 1000:8.1f} ms  (cold: part ranges read from footers)",
            ),
            ("open + first jump", f"{(opened + first_jump) * 1000:8.1f} ms  (target < 1000 ms)"),
            ("app jump, median", f"{statistics.median(app) * 1000:8.1f} ms  (max {max(app) * 1000:.1f})"),
            (f"direct read of the {rows} rows, median", f"{statistics.median(direct) * 1000:8.1f} ms"),
            ("ratio app / direct", f"{ratio:8.3f}  (target <= {TARGET})"),
        ]
    )
    result("serve", ratio, TARGET)


if __name__ == "__main__":
    main()
