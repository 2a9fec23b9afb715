"""Requests and tokens per minute (:class:`RateLimitedBackend`), for hosted APIs.

:class:`RateLimitedBackend` keeps calls under a backend's requests-per-minute (RPM) and
tokens-per-minute (TPM) limits with leaky buckets (``aiolimiter``), and honours
``Retry-After``: a rate-limit error that carries it pauses *every* call to that backend
until then, not just the one that was refused. Under Ray (``concurrency_scope:
cluster``) the buckets live in one named, detached actor that every worker and driver
shares, like the concurrency slots of ``concurrency.py``, so a cluster keeps one limit.

Buckets hold one second of requests and ten seconds of tokens (``rpm / 60`` requests,
``tpm / 6`` tokens), so calls go out smoothly rather than in a burst of a minute's worth
that providers reject. The token cost of a call is known only after it, so a call takes
its estimate (:func:`~valuegym.agents.llm.backends.base.estimated_tokens`) from the TPM
bucket before it is sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from valuegym.agents.llm.backends.base import (
    BackendError,
    BackendWrapper,
    CompletionRequest,
    LLMBackend,
    PerEventLoop,
    ScoringRequest,
    estimated_tokens,
)
from valuegym.agents.llm.backends.ray_actors import SharedActor

ACTOR_NAME = "valuegym_llm_rates"

TPM_BUCKET_SECONDS = 10.0


def _requests_of(request: CompletionRequest | ScoringRequest) -> int:
    """HTTP requests a call makes (scoring over HTTP sends one per option)."""
    return len(request.options) if isinstance(request, ScoringRequest) else 1


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
        self._shared = SharedActor(RateTable, ACTOR_NAME)

    async def _around(self, call: Callable[[Any], Any], request: CompletionRequest | ScoringRequest) -> Any:
        prompt, reply = estimated_tokens(request)
        shared = self._shared.handle() if self.scope == "cluster" else None
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
