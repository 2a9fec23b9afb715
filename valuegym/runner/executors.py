"""Where episodes run: in this process (``local``) or as Ray tasks (``ray``).

Both hand each finished episode to ``on_result``; the caller writes records in batches,
so a crash loses at most the unwritten batch.

``ray`` cuts the episodes into batches, one Ray task each, and keeps exactly one task
per worker in flight (``ray.wait`` backpressure), so driver memory does not grow with
the number of episodes. Batches are sized from measured task times: big enough that
scheduling is cheap next to the work, small enough that a lost task costs little and
the progress bar moves. A worker that dies is retried by Ray (``max_retries``); a batch
whose worker keeps dying is split in halves until the episode that kills it is alone,
and that episode alone is recorded as failed.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from valuegym.runner.episode import EpisodeResult, failed_episode, run_episode
from valuegym.runner.experiment import EpisodePlan, Experiment

if TYPE_CHECKING:
    import ray

OnResult = Callable[[EpisodeResult], None]
Executor = Callable[[Experiment, Sequence[EpisodePlan], Mapping[str, Any], OnResult], None]


# --------------------------------------------------------------------------- local


async def run_plans(
    experiment: Experiment, plans: Sequence[EpisodePlan], concurrency: int, on_result: OnResult
) -> None:
    """Run episodes in this event loop, up to ``concurrency`` in flight (their LLM calls overlap)."""
    setup = experiment.setup()
    secrets = experiment.secrets()
    pending: Iterator[EpisodePlan] = iter(plans)

    async def worker() -> None:
        for plan in pending:  # one shared iterator: each plan is taken by exactly one worker
            try:
                result = await run_episode(setup, plan)
            except Exception as error:  # recorded as a failed episode; the others go on
                result = failed_episode(setup, plan, error, secrets)
            on_result(result)

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(plans))))))


def run_local(
    experiment: Experiment, plans: Sequence[EpisodePlan], options: Mapping[str, Any], on_result: OnResult
) -> None:
    asyncio.run(run_plans(experiment, plans, int(options.get("concurrency", 16)), on_result))


# --------------------------------------------------------------------------- ray


RAY_BLOCK_KEYS = ("address", "num_cpus")  # set under ``ray:`` in conf/config.yaml, not ``executor:``


@dataclass(frozen=True)
class RayOptions:
    """``conf/executor/ray.yaml`` plus the ``ray:`` block of ``conf/config.yaml``."""

    address: str | None = None  # None: a new local Ray; "auto" or host:port: an existing cluster
    num_cpus: int | None = None  # a new local Ray only
    runtime_env: Mapping[str, Any] | None = None  # Ray runtime environment of the job's workers
    num_workers: int | None = None  # tasks running at once (None: the cluster's CPUs / cpus_per_task)
    cpus_per_task: float = 1.0
    concurrency: int = 16  # episodes in flight inside one task
    batch_size: int | None = None  # episodes per task (None: sized from measured task times)
    batch_seconds: float = 5.0  # the work one task should hold when batch_size is None
    max_batch_size: int = 1000  # bounds the records one finished task hands to the driver
    max_retries: int = 3  # Ray retries of a task whose worker died

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> RayOptions:
        def number(key: str, kind: type[int] | type[float], minimum: float) -> Any:
            value = options.get(key)
            if value is None:
                return getattr(cls, key)
            name = f"ray.{key}" if key in RAY_BLOCK_KEYS else f"executor.{key}"
            whole = kind is float or (isinstance(value, int | float) and value == int(value))
            if isinstance(value, bool) or not isinstance(value, int | float) or not whole:
                raise ValueError(f"{name} must be {'a whole' if kind is int else 'a'} number, got {value!r}")
            if value < minimum:
                raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
            return kind(value)

        runtime_env = options.get("runtime_env")
        if runtime_env is not None and not isinstance(runtime_env, Mapping):
            raise ValueError(
                f"executor.runtime_env must be a mapping (a Ray runtime_env), got {runtime_env!r}"
            )
        return cls(
            address=options.get("address") or os.environ.get("RAY_ADDRESS") or None,
            num_cpus=number("num_cpus", int, 1),
            runtime_env=dict(runtime_env) if runtime_env is not None else None,
            num_workers=number("num_workers", int, 1),
            cpus_per_task=number("cpus_per_task", float, 0.01),
            concurrency=number("concurrency", int, 1),
            batch_size=number("batch_size", int, 1),
            batch_seconds=number("batch_seconds", float, 0.01),
            max_batch_size=number("max_batch_size", int, 1),
            max_retries=number("max_retries", int, -1),
        )


def ray_connect(options: RayOptions) -> bool:
    """Connect to the cluster at ``options.address`` or start a local Ray; an already
    connected process (a Ray worker, a notebook) is used as it is.

    Returns whether this call connected, i.e. whether the caller should disconnect.
    """
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"log_to_driver": False, "runtime_env": options.runtime_env}
    if options.address:
        if options.num_cpus is not None:
            raise ValueError(
                f"ray.num_cpus applies to a local Ray only; the cluster at {options.address} "
                "has the CPUs its nodes were started with"
            )
        ray.init(address=options.address, **kwargs)
    else:
        # "local", not None: None would join a `ray start` cluster on this machine, unasked.
        ray.init(address="local", num_cpus=options.num_cpus, include_dashboard=False, **kwargs)
    return True


class BatchSizer:
    """Episodes per task: about ``target_seconds`` of work, judged from finished tasks.

    Until a task has finished, batches hold ``first`` episodes (one task's worth of
    concurrency), so slow (LLM) episodes are measured before big batches are cut.
    Near the end batches shrink so that every worker finishes at about the same time.
    """

    def __init__(self, target_seconds: float, first: int, maximum: int, fixed: int | None) -> None:
        self.target_seconds = target_seconds
        self.first = max(1, min(first, maximum))
        self.maximum = maximum
        self.fixed = fixed
        self._seconds_per_episode: float | None = None

    def observe(self, episodes: int, seconds: float) -> None:
        per_episode = max(seconds, 1e-6) / episodes
        previous = self._seconds_per_episode
        self._seconds_per_episode = per_episode if previous is None else 0.5 * (previous + per_episode)

    def next_size(self, remaining: int, workers: int) -> int:
        if self.fixed is not None:
            return self.fixed
        if self._seconds_per_episode is None:
            size = self.first
        else:
            size = math.ceil(self.target_seconds / self._seconds_per_episode)
        fair_share = math.ceil(remaining / workers)
        return max(1, min(size, self.maximum, fair_share))


class _WorkerExperiment:
    """The experiment this worker process last ran, kept so that its policies (an LLM
    policy may load a model) are built once per process, not once per task: every task
    receives a freshly deserialised copy of the experiment."""

    current: Experiment | None = None

    @classmethod
    def reuse(cls, experiment: Experiment) -> Experiment:
        current = cls.current
        if current is None or current.identity() != experiment.identity():
            cls.current = current = experiment
        return current


def run_batch(
    experiment: Experiment, plans: Sequence[EpisodePlan], concurrency: int
) -> tuple[float, list[EpisodeResult]]:
    """One Ray task: run ``plans``; returns (seconds taken, their results)."""
    experiment = _WorkerExperiment.reuse(experiment)
    started = time.perf_counter()
    results: list[EpisodeResult] = []
    asyncio.run(run_plans(experiment, plans, concurrency, results.append))
    return time.perf_counter() - started, results


def _failed(
    experiment: Experiment, plans: Sequence[EpisodePlan], error: BaseException
) -> list[EpisodeResult]:
    setup, secrets = experiment.setup(), experiment.secrets()
    return [failed_episode(setup, plan, error, secrets) for plan in plans]


def run_ray(
    experiment: Experiment, plans: Sequence[EpisodePlan], options: Mapping[str, Any], on_result: OnResult
) -> None:
    """Episodes in batches on Ray tasks, one task per worker in flight."""
    import ray
    from ray.exceptions import NodeDiedError, OutOfMemoryError, RayTaskError, WorkerCrashedError

    settings = RayOptions.from_mapping(options)
    if not plans:
        return
    connected = ray_connect(settings)
    try:
        largest_node = max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"]), default=0.0)
        if settings.cpus_per_task > largest_node:  # Ray would wait forever for such a node
            raise ValueError(
                f"executor.cpus_per_task={settings.cpus_per_task} but the largest Ray node has "
                f"{largest_node:g} CPUs"
            )
        cpus = ray.cluster_resources().get("CPU", largest_node)
        workers = settings.num_workers or max(1, int(cpus // settings.cpus_per_task))
        sizer = BatchSizer(
            settings.batch_seconds, settings.concurrency, settings.max_batch_size, settings.batch_size
        )
        task = ray.remote(run_batch).options(
            num_returns=2, max_retries=settings.max_retries, num_cpus=settings.cpus_per_task
        )
        experiment_ref = ray.put(experiment)
        fresh: deque[EpisodePlan] = deque(plans)
        halves: deque[list[EpisodePlan]] = deque()  # parts of batches whose worker kept dying
        in_flight: dict[ray.ObjectRef, tuple[ray.ObjectRef, list[EpisodePlan]]] = {}

        def fill() -> None:
            while len(in_flight) < workers and (halves or fresh):
                if halves:
                    batch = halves.popleft()
                else:
                    size = sizer.next_size(len(fresh), workers)
                    batch = [fresh.popleft() for _ in range(min(size, len(fresh)))]
                seconds_ref, results_ref = task.remote(experiment_ref, batch, settings.concurrency)
                in_flight[results_ref] = (seconds_ref, batch)

        fill()
        try:
            while in_flight:
                [results_ref], _ = ray.wait(list(in_flight), num_returns=1)
                seconds_ref, batch = in_flight.pop(results_ref)
                results: list[EpisodeResult] = []
                try:
                    sizer.observe(len(batch), ray.get(seconds_ref))
                    fill()  # before reading the results, so the worker is not left idle
                    results = ray.get(results_ref)
                except RayTaskError as error:  # run_batch itself raised (e.g. building a policy)
                    results = _failed(experiment, batch, error.cause or error)
                except (WorkerCrashedError, OutOfMemoryError, NodeDiedError) as error:
                    if len(batch) > 1:  # find the episode that kills its worker; run the others
                        middle = len(batch) // 2
                        halves.extend([batch[:middle], batch[middle:]])
                    else:
                        results = _failed(experiment, batch, error)
                fill()
                for result in results:
                    on_result(result)
        finally:
            for results_ref in in_flight:  # interrupted: stop the work nobody will collect
                ray.cancel(results_ref)
    finally:
        if connected:
            ray.shutdown()


EXECUTORS: dict[str, Executor] = {"local": run_local, "ray": run_ray}
