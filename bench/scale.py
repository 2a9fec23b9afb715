"""Experiments at scale through the runner (records written to Parquet), on a local Ray with 2 CPUs.

(a) throughput: scripted DECIDE-SIM episodes per second with executor=ray (2 workers)
    beside executor=local, 10,000 episodes each;
(b) worker scaling: episodes whose agents block 5 ms per decision (standing in for I/O that
    cannot overlap: a blocking sleep, one episode at a time per task), 1 worker beside 2;
(c) memory through 100,000 scripted episodes with executor=ray: the proportional set size
    (PSS: shared pages counted once) of the driver, the Ray workers and Ray's own services.

Ray starts once, before anything is timed; its start-up time is printed apart. On 2 cores
the driver (which writes the records) competes with the 2 workers, so (a) cannot reach 2.

Last line: RESULT scale ratio=<(b) 2-worker rate / 1-worker rate> target=1.7
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pyarrow.parquet as pq
import ray

from bench import _scale_policies
from bench._common import episodes_per_second, result, scripted, table
from valuegym.runner.experiment import Experiment
from valuegym.runner.run import run_experiment
from valuegym.scenarios import load_scenario

TARGET = 1.7
CPUS = 2
BLOCKING_S = 0.005
BENCH_DIR = Path(__file__).resolve().parent


def blocking(episodes: int) -> Experiment:
    return Experiment(
        scenario=load_scenario("decide_sim/low"),
        agent={"kind": _scale_policies.KIND, "name": "blocking", "params": {"seconds": BLOCKING_S}},
        episodes=episodes,
        seed=0,
    )


# --------------------------------------------------------------------------- memory


@dataclass
class MemorySample:
    elapsed_s: float
    episodes_written: int
    driver_mb: float
    workers_mb: float
    services_mb: float

    @property
    def driver_and_workers_mb(self) -> float:
        return self.driver_mb + self.workers_mb


def _pss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:  # the process ended meanwhile
        pass
    return 0.0


def _descendants(root: int) -> dict[int, str]:
    """pid -> command line of every process under ``root`` (Ray's services and workers)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):
            continue
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                try:
                    found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                frontier.append(pid)
    return found


def _is_worker(command: str) -> bool:
    """Ray names worker processes ``ray::<task>`` (``ray::IDLE`` between tasks); its agents too."""
    return command.startswith("ray::") and not command.startswith(
        ("ray::DashboardAgent", "ray::RuntimeEnvAgent")
    )


class MemorySampler(threading.Thread):
    """Samples memory and the episodes written so far, every ``interval_s``."""

    def __init__(self, run_dir: Path, interval_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.run_dir = run_dir
        self.interval_s = interval_s
        self.samples: list[MemorySample] = []
        self._done = threading.Event()
        self._rows: dict[str, int] = {}  # part file -> episodes in it (parts are written once)
        self._start = time.monotonic()

    def run(self) -> None:
        while not self._done.wait(self.interval_s):
            self.sample()

    def stop(self) -> None:
        self._done.set()
        self.join()
        self.sample()

    def sample(self) -> None:
        processes = _descendants(os.getpid())
        workers = sum(_pss_mb(pid) for pid, command in processes.items() if _is_worker(command))
        services = sum(_pss_mb(pid) for pid, command in processes.items() if not _is_worker(command))
        self.samples.append(
            MemorySample(
                time.monotonic() - self._start,
                self._episodes_written(),
                _pss_mb(os.getpid()),
                workers,
                services,
            )
        )

    def _episodes_written(self) -> int:
        for part in sorted((self.run_dir / "episodes").glob("part-*.parquet")):
            if part.name not in self._rows:
                try:
                    self._rows[part.name] = pq.read_metadata(part).num_rows
                except OSError:  # being rewritten
                    continue
        return sum(self._rows.values())


def memory_over_run(episodes: int) -> list[MemorySample]:
    with tempfile.TemporaryDirectory() as run_dir:
        sampler = MemorySampler(Path(run_dir))
        sampler.start()
        try:
            run_experiment(scripted(episodes), run_dir, {"type": "ray"}, quiet=True)
        finally:
            sampler.stop()
    return sampler.samples


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=10_000, help="(a) scripted episodes per executor")
    parser.add_argument("--io-episodes", type=int, default=60, help="(b) blocking episodes per worker count")
    parser.add_argument("--memory-episodes", type=int, default=100_000, help="(c) scripted episodes")
    args = parser.parse_args()

    _scale_policies.register()  # the driver builds policies too (preflight)
    start = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=CPUS,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={  # the bench agent, importable in the workers
            "py_modules": [str(BENCH_DIR)],
            "worker_process_setup_hook": f"{_scale_policies.__name__}.register",
        },
    )
    startup_s = time.perf_counter() - start

    local = episodes_per_second(scripted(args.episodes), {"type": "local"})
    on_ray = episodes_per_second(scripted(args.episodes), {"type": "ray"})
    one = episodes_per_second(blocking(args.io_episodes), {"type": "ray", "num_workers": 1})
    two = episodes_per_second(blocking(args.io_episodes), {"type": "ray", "num_workers": 2})
    samples = memory_over_run(args.memory_episodes)
    ray.shutdown()

    print(
        f"bench/scale: DECIDE-SIM (low scarcity) through the runner; local Ray, {CPUS} CPUs (started in {startup_s:.1f} s)"
    )
    print(f"(a) {args.episodes:,} scripted episodes (context_dependent)")
    table(
        [
            ("executor=local", f"{local:8,.0f} episodes/s"),
            (f"executor=ray, {CPUS} workers", f"{on_ray:8,.0f} episodes/s"),
            ("ratio", f"{on_ray / local:8.2f}"),
        ]
    )
    print(
        f"(b) {args.io_episodes} episodes, agents blocking {BLOCKING_S * 1000:.0f} ms per decision, executor=ray"
    )
    table(
        [
            ("1 worker", f"{one:8.2f} episodes/s"),
            ("2 workers", f"{two:8.2f} episodes/s"),
            ("scaling ratio", f"{two / one:8.2f}  (target >= {TARGET})"),
        ]
    )
    print(f"(c) {args.memory_episodes:,} scripted episodes, executor=ray: memory (PSS, MB)")
    print(
        f"  {'elapsed':>8} {'episodes':>9} {'driver':>7} {'workers':>8} {'drv+wrk':>8} {'ray services':>13}"
    )
    shown = sorted({round(i * (len(samples) - 1) / 10) for i in range(11)})
    for sample in (samples[i] for i in shown):
        print(
            f"  {sample.elapsed_s:7.0f}s {sample.episodes_written:9,} {sample.driver_mb:7.0f} "
            f"{sample.workers_mb:8.0f} {sample.driver_and_workers_mb:8.0f} {sample.services_mb:13.0f}"
        )
    peak = max(samples, key=lambda s: s.driver_and_workers_mb)
    tenth = samples[shown[1]]
    table(
        [
            ("peak driver + workers", f"{peak.driver_and_workers_mb:6.0f} MB (aim: under 1024, flat)"),
            ("at 10% of the run", f"{tenth.driver_and_workers_mb:6.0f} MB"),
            ("at the end", f"{samples[-1].driver_and_workers_mb:6.0f} MB"),
            (
                "peak incl. Ray services",
                f"{max(s.driver_and_workers_mb + s.services_mb for s in samples):6.0f} MB",
            ),
        ]
    )
    result("scale", two / one, TARGET)


if __name__ == "__main__":
    main()
