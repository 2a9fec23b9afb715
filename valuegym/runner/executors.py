"""Where episodes run: in this process (``local``) or on Ray workers (``ray``).

Both stream each finished episode to ``on_result`` as soon as it is done; the caller
writes records in batches, so a crash loses at most the unwritten batch.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from valuegym.runner.episode import EpisodeResult, failed_episode, run_episode
from valuegym.runner.experiment import EpisodePlan, Experiment

OnResult = Callable[[EpisodeResult], None]


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
    experiment: Experiment, plans: Sequence[EpisodePlan], options: dict[str, Any], on_result: OnResult
) -> None:
    asyncio.run(run_plans(experiment, plans, int(options.get("concurrency", 16)), on_result))


def _run_batch(experiment: Experiment, plans: Sequence[EpisodePlan], concurrency: int) -> list[EpisodeResult]:
    results: list[EpisodeResult] = []
    asyncio.run(run_plans(experiment, plans, concurrency, results.append))
    return results


def ray_init(options: dict[str, Any]) -> None:
    """Connect to a cluster (``ray.address`` or ``RAY_ADDRESS``) or start a local Ray."""
    import ray

    if ray.is_initialized():
        return
    address = options.get("address") or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address:
        kwargs["address"] = address
    elif options.get("num_cpus"):
        kwargs["num_cpus"] = int(options["num_cpus"])
    ray.init(**kwargs)


def batch_size_for(n_plans: int, options: dict[str, Any], workers: int) -> int:
    """Episodes per Ray task: big enough that scheduling is cheap next to the work, small
    enough that every worker stays busy and a lost task costs little."""
    configured = options.get("batch_size")
    if configured:
        return int(configured)
    return max(1, min(1000, math.ceil(n_plans / (workers * 4))))


def run_ray(
    experiment: Experiment, plans: Sequence[EpisodePlan], options: dict[str, Any], on_result: OnResult
) -> None:
    """Episodes in batches on Ray tasks, at most ``max_in_flight`` batches at once (backpressure)."""
    import ray

    ray_init(options)
    workers = max(1, int(options.get("num_workers") or ray.cluster_resources().get("CPU", 1)))
    size = batch_size_for(len(plans), options, workers)
    batches = [plans[i : i + size] for i in range(0, len(plans), size)]
    remote = ray.remote(_run_batch).options(
        max_retries=int(options.get("max_retries", 3)), num_cpus=float(options.get("cpus_per_task", 1))
    )
    experiment_ref = ray.put(experiment)
    concurrency = int(options.get("concurrency", 16))
    max_in_flight = int(options.get("max_in_flight") or 2 * workers)
    in_flight: dict[Any, Sequence[EpisodePlan]] = {}
    queue = iter(batches)

    def submit() -> None:
        for batch in queue:
            in_flight[remote.remote(experiment_ref, batch, concurrency)] = batch
            if len(in_flight) >= max_in_flight:
                return

    submit()
    while in_flight:
        done, _ = ray.wait(list(in_flight), num_returns=1)
        batch = in_flight.pop(done[0])
        try:
            results = ray.get(done[0])
        except Exception as error:  # the task kept failing after its retries
            setup = experiment.setup()
            results = [failed_episode(setup, plan, error, experiment.secrets()) for plan in batch]
        for result in results:
            on_result(result)
        submit()


EXECUTORS: dict[str, Callable[[Experiment, Sequence[EpisodePlan], dict[str, Any], OnResult], None]] = {
    "local": run_local,
    "ray": run_ray,
}
