"""Hosted-API limits: requests and tokens per minute, and a spend cap in dollars.

* :class:`RateLimitedBackend` keeps calls under a backend's requests-per-minute (RPM) and
  tokens-per-minute (TPM) limits with leaky buckets (``aiolimiter``), and honours
  ``Retry-After``: a rate-limit error that carries it pauses *every* call to that backend
  until then, not just the one that was refused. Under Ray (``concurrency_scope:
  cluster``) the buckets live in one named, detached actor that every worker and driver
  shares, like the concurrency slots of ``shared_limit.py``, so a cluster keeps one limit.
* :class:`SpendCapBackend` refuses a call whose worst case (its prompt, estimated from the
  text, plus ``max_tokens`` of reply, at the configured prices) could take the run's spending
  past ``max_cost_usd``, raising :class:`SpendCapReachedError`: the runner then stops
  taking new episodes, keeps the finished ones and ends the run with an error. Under Ray the
  run's ledger is one actor that all its workers share, so the cap is the run's, not each
  worker's.

Buckets hold one second of requests and ten seconds of tokens (``rpm / 60`` requests,
``tpm / 6`` tokens), so calls go out smoothly rather than in a burst of a minute's worth
that providers reject. The token cost of a call is known only after it, so a call takes
its estimate (prompt characters / 3, generous for English, plus ``max_tokens``) from the
TPM bucket before it is sent.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from valuegym.agents.llm.backends import (
    BackendError,
    BackendWrapper,
    BudgetExhaustedError,
    CompletionRequest,
    LLMBackend,
    PerEventLoop,
    ScoringRequest,
)

ACTOR_NAME = "valuegym_llm_rates"
ACTOR_NAMESPACE = "valuegym"
#: requests waiting for the shared buckets at once (each occupies one actor call)
ACTOR_MAX_CONCURRENCY = 100_000
TPM_BUCKET_SECONDS = 10.0
#: characters per token assumed when estimating a prompt's tokens before sending it
CHARS_PER_TOKEN_ESTIMATE = 3.0


class SpendCapReachedError(BudgetExhaustedError):
    """The next call could exceed the run's spend cap (``agent.max_cost_usd``)."""


def estimated_tokens(request: CompletionRequest | ScoringRequest) -> tuple[int, int]:
    """(prompt tokens, reply tokens) a request may use at most, judged before it is sent."""
    chars = sum(len(message.content) for message in request.messages)
    if isinstance(request, ScoringRequest):  # one prompt plus one option per request
        options = sum(len(option) for option in request.options)
        prompt = math.ceil((len(request.options) * chars + options) / CHARS_PER_TOKEN_ESTIMATE)
        return prompt, len(request.options)
    return math.ceil(chars / CHARS_PER_TOKEN_ESTIMATE), request.max_tokens


def _requests_of(request: CompletionRequest | ScoringRequest) -> int:
    """HTTP requests a call makes (scoring over HTTP sends one per option)."""
    return len(request.options) if isinstance(request, ScoringRequest) else 1


# --------------------------------------------------------------------------- rate limits


class RateTable:
    """Leaky buckets by key (requests and tokens per minute) and Retry-After pauses.

    Plain asyncio, so the same class serves one process and, as a Ray actor, a cluster.
    """

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str, float], Any] = {}
        self._paused_until: dict[str, float] = {}

    def _bucket(self, key: str, kind: str, per_minute: float) -> Any:
        from aiolimiter import AsyncLimiter

        bucket = self._buckets.get((key, kind, per_minute))
        if bucket is None:
            seconds = 1.0 if kind == "rpm" else TPM_BUCKET_SECONDS
            capacity = max(1.0, per_minute * seconds / 60.0)
            # capacity per (capacity * 60 / per_minute) seconds: the rate is per_minute / 60 per second
            bucket = AsyncLimiter(capacity, capacity * 60.0 / per_minute)
            self._buckets[(key, kind, per_minute)] = bucket
        return bucket

    async def acquire(
        self, key: str, rpm: float | None, tpm: float | None, requests: int, tokens: int
    ) -> None:
        """Wait until ``requests`` requests and ``tokens`` tokens fit under ``key``'s limits."""
        while (pause := self._paused_until.get(key, 0.0) - time.monotonic()) > 0:
            await asyncio.sleep(pause)
        if rpm is not None:
            bucket = self._bucket(key, "rpm", rpm)
            for _ in range(requests):
                await bucket.acquire(1)
        if tpm is not None:
            bucket = self._bucket(key, "tpm", tpm)
            await bucket.acquire(min(float(tokens), bucket.max_rate))  # a huge call waits for a full bucket

    async def pause(self, key: str, seconds: float) -> None:
        """No call to ``key`` starts in the next ``seconds`` (a Retry-After)."""
        until = time.monotonic() + seconds
        self._paused_until[key] = max(self._paused_until.get(key, 0.0), until)


def shared_rates() -> Any:
    """The cluster's rate table actor, created by the first process that asks for it."""
    import ray

    return (
        ray.remote(RateTable)
        .options(
            name=ACTOR_NAME,
            namespace=ACTOR_NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
            max_concurrency=ACTOR_MAX_CONCURRENCY,
            max_restarts=-1,
            max_task_retries=-1,
        )
        .remote()
    )


class RateLimitedBackend(BackendWrapper):
    """Calls under ``rpm`` requests and ``tpm`` tokens per minute (either may be None: no limit).

    ``scope="cluster"`` shares the buckets of ``key`` across the Ray cluster when Ray is
    running (per process otherwise); ``"process"`` keeps them in this process.
    """

    def __init__(
        self,
        inner: LLMBackend,
        key: str,
        *,
        rpm: float | None,
        tpm: float | None,
        scope: str = "process",
    ) -> None:
        super().__init__(inner)
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive (or null for no limit), got {value}")
        self.key = key
        self.rpm = rpm
        self.tpm = tpm
        self.scope = scope
        self._tables: PerEventLoop[RateTable] = PerEventLoop(RateTable)
        self._shared: tuple[str, Any] | None = None  # (Ray session, actor handle)

    def _shared_table(self) -> Any | None:
        if self.scope != "cluster":
            return None
        import ray

        if not ray.is_initialized():
            return None
        session = ray.get_runtime_context().get_session_name()
        if self._shared is None or self._shared[0] != session:
            self._shared = (session, shared_rates())
        return self._shared[1]

    async def _around(self, call: Callable[[Any], Any], request: CompletionRequest | ScoringRequest) -> Any:
        prompt, reply = estimated_tokens(request)
        shared = self._shared_table()
        if shared is not None:
            await shared.acquire.remote(self.key, self.rpm, self.tpm, _requests_of(request), prompt + reply)
        else:
            await self._tables.get().acquire(
                self.key, self.rpm, self.tpm, _requests_of(request), prompt + reply
            )
        try:
            return await call(request)
        except BackendError as error:
            if error.retryable and error.retry_after_s:
                if shared is not None:
                    await shared.pause.remote(self.key, error.retry_after_s)
                else:
                    await self._tables.get().pause(self.key, error.retry_after_s)
            raise


# --------------------------------------------------------------------------- spend cap

SPEND_ACTOR_NAME = "valuegym_llm_spend"


@dataclass(frozen=True)
class SpendState:
    spent_usd: float
    reserved_usd: float


@dataclass
class _Ledger:
    spent_usd: float = 0.0
    reserved_usd: float = 0.0


class SpendLedgers:
    """Dollars spent and reserved by calls under way, by key (a run), against a cap.

    Plain asyncio, so the same class serves one process and, as a Ray actor, every worker
    of a run (its methods never wait, so calls are applied one at a time).
    """

    def __init__(self) -> None:
        self._ledgers: dict[str, _Ledger] = {}

    async def reserve(self, key: str, cap_usd: float, worst_usd: float) -> tuple[bool, SpendState]:
        """Reserve ``worst_usd`` unless spent + reserved + it would exceed ``cap_usd``; returns
        whether it was reserved and the ledger as it stood before."""
        ledger = self._ledgers.setdefault(key, _Ledger())
        state = SpendState(ledger.spent_usd, ledger.reserved_usd)
        if ledger.spent_usd + ledger.reserved_usd + worst_usd > cap_usd:
            return False, state
        ledger.reserved_usd += worst_usd
        return True, state

    async def settle(self, key: str, reserved_usd: float, spent_usd: float) -> None:
        """A call reserved ``reserved_usd`` and cost ``spent_usd`` (0 if it failed)."""
        ledger = self._ledgers.setdefault(key, _Ledger())
        ledger.reserved_usd = max(0.0, ledger.reserved_usd - reserved_usd)
        ledger.spent_usd += spent_usd

    async def state(self, key: str) -> SpendState:
        ledger = self._ledgers.get(key, _Ledger())
        return SpendState(ledger.spent_usd, ledger.reserved_usd)


def shared_spend_ledgers() -> Any:
    """The cluster's spend ledgers actor, created by the first process that asks for it."""
    import ray

    return (
        ray.remote(SpendLedgers)
        .options(
            name=SPEND_ACTOR_NAME,
            namespace=ACTOR_NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
            max_concurrency=ACTOR_MAX_CONCURRENCY,
            max_restarts=-1,
            max_task_retries=-1,
        )
        .remote()
    )


class SpendCapBackend(BackendWrapper):
    """Refuses calls that could take the run's spending past ``max_cost_usd``.

    Each call reserves its worst-case cost before it is sent and settles the actual cost
    (from the reply's token counts) afterwards, so calls in flight together can never
    overshoot the cap. Prices are USD per million prompt and completion tokens.

    The ledger is the run's: with ``run_key`` set (the policy sets it from the episodes' run
    directory) and Ray running, it lives in one named, detached actor shared by every Ray
    worker of the run, keyed by the Ray job (one ``valuegym run``) and the run directory, so
    N workers share one cap rather than each spending up to it. Otherwise it is this process's.
    """

    def __init__(
        self, inner: LLMBackend, max_cost_usd: float, *, prompt_per_1m: float, completion_per_1m: float
    ) -> None:
        super().__init__(inner)
        if max_cost_usd <= 0:
            raise ValueError(f"max_cost_usd must be positive, got {max_cost_usd}")
        self.max_cost_usd = max_cost_usd
        self.prompt_per_1m = prompt_per_1m
        self.completion_per_1m = completion_per_1m
        self.run_key = ""  # "" : no run known, the ledger is this process's
        self._local = SpendLedgers()
        self._shared: tuple[str, Any] | None = None  # (Ray session, actor handle)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_shared"] = None
        return state

    @property
    def spent_usd(self) -> float:
        """What this process's ledger (or, under Ray, the run's) says was spent so far."""
        shared = self._shared_ledgers()
        if shared is not None:
            import ray

            return float(ray.get(shared.state.remote(self._key())).spent_usd)
        return self._local._ledgers.get(self._key(), _Ledger()).spent_usd

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt_per_1m + completion_tokens * self.completion_per_1m) / 1e6

    def _shared_ledgers(self) -> Any | None:
        ray = _running_ray()
        if not self.run_key or ray is None:
            return None
        session = ray.get_runtime_context().get_session_name()
        if self._shared is None or self._shared[0] != session:
            self._shared = (session, shared_spend_ledgers())
        return self._shared[1]

    def _key(self) -> str:
        ray = _running_ray()
        if self.run_key and ray is not None:  # one `valuegym run` is one Ray job
            return f"{ray.get_runtime_context().get_job_id()} {self.run_key}"
        return self.run_key

    async def _around(self, call: Callable[[Any], Any], request: CompletionRequest | ScoringRequest) -> Any:
        worst = self.cost_usd(*estimated_tokens(request))
        ledgers = self._shared_ledgers() or self._local
        key = self._key()
        reserved, before = await _maybe_remote(ledgers.reserve, key, self.max_cost_usd, worst)
        if not reserved:
            raise SpendCapReachedError(
                f"the spend cap of ${self.max_cost_usd:g} (agent.max_cost_usd) would be exceeded: "
                f"${before.spent_usd:.4f} spent, ${before.reserved_usd:.4f} in calls under way, and this "
                f"call may cost up to ${worst:.4f}; raise the cap and rerun to finish the remaining episodes"
            )
        spent = 0.0
        try:
            result = await call(request)
            completion_tokens = getattr(result, "completion_tokens", None)
            if completion_tokens is None:  # scores: one token generated per option request
                completion_tokens = len(result.tokens)
            spent = self.cost_usd(result.prompt_tokens, completion_tokens)
            return result
        finally:
            await _maybe_remote(ledgers.settle, key, worst, spent)


def _running_ray() -> Any | None:
    """The ray module if this process is connected to Ray (never imported just to find out)."""
    ray = sys.modules.get("ray")
    return ray if ray is not None and ray.is_initialized() else None


async def _maybe_remote(method: Any, *args: Any) -> Any:
    """Call a :class:`SpendLedgers` method, local or on its Ray actor."""
    remote = getattr(method, "remote", None)
    return await (remote(*args) if remote is not None else method(*args))
