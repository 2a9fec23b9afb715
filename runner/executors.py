"""Where episodes run: in this process (``local``) or as Ray tasks (``ray``).

Both hand each finished episode to ``on_result``; the caller writes records in batches,
so a crash loses at most the unwritten batch.

How many episodes run at once follows from the policies alone (:func:`episodes_in_flight`):
an LLM policy's ``concurrency`` (its calls in flight) is the one knob; the runner keeps
enough episodes going to give it that many calls, locally and inside each Ray task.

An episode that fails on a budget of the run (``stops_run``: calls or dollars used up)
stops the run: no new episode starts, the running ones finish or fail, and the caller
raises once the finished ones are written.

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
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from valuegym.runner.episode import EpisodeResult, failed_episode, run_episode
from valuegym.runner.experiment import EpisodePlan, EpisodeSetup, Experiment

if TYPE_CHECKING:
    import ray

OnResult = Callable[[EpisodeResult], None]
Executor = Callable[[Experiment, Sequence[EpisodePlan], Mapping[str, Any], OnResult], None]


# --------------------------------------------------------------------------- local

#: episodes in flight at most in one process, whatever the policies could use: each holds its
#: environment and its records (prompts included) until it ends
MAX_EPISODES_IN_FLIGHT = 1024
#: episodes kept going per "full" set of calls: an episode's agents decide together, then it
#: steps its environment (and agents that are out leave their seats idle), so twice the bare
#: minimum keeps calls queued for every slot while some episodes are between steps
EPISODES_PER_CALL_SLOT = 2


def episodes_in_flight(setup: EpisodeSetup) -> int:
    """Episodes to run at once in one process so that every policy's ``calls_in_flight`` is used.

    A policy deciding for ``k`` agents of each episode with ``c`` calls in flight needs about
    ``c / k`` episodes; policies that decide at once (``calls_in_flight == 1``) need one, and
    so does a person (an interactive policy), who never faces several games at once.
    """
    if any(policy.interactive for policy in setup.policies()):
        return 1
    seats = Counter(id(seat.policy) for seat in setup.seats.values())
    wanted = [
        math.ceil(EPISODES_PER_CALL_SLOT * policy.calls_in_flight / seats[id(policy)])
        for policy in setup.policies()
        if policy.calls_in_flight > 1
    ]
    return max(1, min(MAX_EPISODES_IN_FLIGHT, max(wanted, default=1)))


async def run_plans(experiment: Experiment, plans: Sequence[EpisodePlan], on_result: OnResult) -> None:
    """Run episodes in this event loop, :func:`episodes_in_flight` at once (their LLM calls overlap).

    Stops starting episodes once one fails on a budget of the run (``stops_run``).
    """
    setup = experiment.setup()
    secrets = experiment.secrets()
    pending: Iterator[EpisodePlan] = iter(plans)
    stopped = False

    async def worker() -> None:
        nonlocal stopped
        for plan in pending:  # one shared iterator: each plan is taken by exactly one worker
            if stopped:
                return
            try:
                result = await run_episode(setup, plan)
            except Exception as error:  # recorded as a failed episode; the others go on
                result = failed_episode(setup, plan, error, secrets)
            stopped = stopped or result.stop_reason is not None
            on_result(result)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, min(episodes_in_flight(setup), len(plans))))))
    finally:
        for policy in setup.policies():  # connections die with this loop: close them in it
            await policy.release_loop()


def run_local(
    experiment: Experiment, plans: Sequence[EpisodePlan], options: Mapping[str, Any], on_result: OnResult
) -> None:
    asyncio.run(run_plans(experiment, plans, on_result))


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

    Until a task has finished, batches hold ``first`` episodes (the episodes one task keeps
    in flight), so slow (LLM) episodes are measured before big batches are cut.
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
        if current is None or current != experiment:  # any setting, operational ones too
            cls.current = current = experiment
        return current


def run_batch(
    experiment: Experiment, plans: Sequence[EpisodePlan], run_dir: str = ""
) -> tuple[float, list[EpisodeResult]]:
    """One Ray task: run ``plans`` of the run writing to ``run_dir`` (policies see it in
    ``AgentContext.run_dir``, e.g. a spend cap that is the run's); returns (seconds taken,
    their results)."""
    experiment = _WorkerExperiment.reuse(experiment)
    experiment.setup().run_dir = run_dir
    started = time.perf_counter()
    results: list[EpisodeResult] = []
    asyncio.run(run_plans(experiment, plans, results.append))
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
        # The driver's policies are those every worker builds: the same episodes in flight per task.
        sizer = BatchSizer(
            settings.batch_seconds,
            episodes_in_flight(experiment.setup()),
            settings.max_batch_size,
            settings.batch_size,
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
                seconds_ref, results_ref = task.remote(experiment_ref, batch, experiment.setup().run_dir)
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
                if any(result.stop_reason is not None for result in results):
                    fresh.clear()  # a budget of the run is used up: start nothing new
                    halves.clear()
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
