"""A budget of model calls (:class:`CallBudgetBackend`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from valuegym.agents.llm.backends.base import (
    BackendWrapper,
    BudgetExhaustedError,
    CompletionRequest,
    LLMBackend,
    ScoringRequest,
)


class CallBudgetExceededError(BudgetExhaustedError):
    """The configured maximum number of model calls has been used up."""


class CallBudgetBackend(BackendWrapper):
    """Refuses calls beyond ``max_calls`` (counted in this process, retries included)."""

    def __init__(self, inner: LLMBackend, max_calls: int) -> None:
        super().__init__(inner)
        if max_calls < 1:
            raise ValueError(f"max_calls must be at least 1, got {max_calls}")
        self.max_calls = max_calls
        self.calls_made = 0

    async def _around(self, call: Callable[[Any], Any], request: CompletionRequest | ScoringRequest) -> Any:
        if self.calls_made >= self.max_calls:
            raise CallBudgetExceededError(
                f"the budget of {self.max_calls} model calls is used up (agent.max_calls)"
            )
        self.calls_made += 1
        return await call(request)
