"""Retries of transient errors (:class:`RetryingBackend`)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from valuegym.agents.llm.backends.base import (
    BackendError,
    BackendWrapper,
    CompletionRequest,
    LLMBackend,
    ScoringRequest,
)

#: the longest Retry-After a call waits for; beyond it the call fails (a run should not hang for hours)
MAX_RETRY_AFTER_S = 300.0


class RetryingBackend(BackendWrapper):
    """Retries transient errors with capped exponential backoff and jitter.

    The delay before retry ``n`` (1-based) is ``min(max_delay_s, base_delay_s * 2**(n-1))``
    scaled by a random factor in [0.5, 1], or the server's Retry-After hint if longer: the
    server knows when it will take calls again, so its hint is honoured beyond ``max_delay_s``
    (up to :data:`MAX_RETRY_AFTER_S`; a longer one gives up at once, naming it). Errors that
    are not retryable propagate at once; after ``attempts`` failed attempts a
    :class:`BackendError` naming the last failure is raised.
    """

    def __init__(
        self, inner: LLMBackend, *, attempts: int = 5, base_delay_s: float = 0.5, max_delay_s: float = 20.0
    ) -> None:
        super().__init__(inner)
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        self.attempts = attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        # Jitter only spreads out retries of many workers; it never affects results,
        # so it deliberately draws fresh OS entropy instead of an experiment seed.
        self._jitter = np.random.default_rng()

    def delay_s(self, retry: int, retry_after_s: float | None = None) -> float:
        backoff = min(self.max_delay_s, self.base_delay_s * 2 ** (retry - 1))
        delay = backoff * float(self._jitter.uniform(0.5, 1.0))
        return max(delay, retry_after_s) if retry_after_s is not None else delay

    async def _around(self, call: Callable[[Any], Any], request: CompletionRequest | ScoringRequest) -> Any:
        failures = 0
        while True:
            try:
                result = await call(request)
            except BackendError as error:
                if not error.retryable:
                    raise
                failures += 1
                if failures >= self.attempts:
                    raise BackendError(f"gave up after {failures} attempts: {error}") from error
                if error.retry_after_s is not None and error.retry_after_s > MAX_RETRY_AFTER_S:
                    raise BackendError(
                        f"the server asks to wait {error.retry_after_s:g} s (Retry-After) before trying "
                        f"again: {error}"
                    ) from error
                await asyncio.sleep(self.delay_s(failures, error.retry_after_s))
                continue
            return dataclasses.replace(result, calls=result.calls + failures)
