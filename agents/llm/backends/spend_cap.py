"""A spend cap in dollars, the run's (:class:`SpendCapBackend`), for hosted APIs.

:class:`SpendCapBackend` refuses a call whose worst case (its prompt, estimated from the
text, plus ``max_tokens`` of reply, at the configured prices) could take the run's spending
past ``max_cost_usd``, raising :class:`SpendCapReachedError`: the runner then stops taking
new episodes, keeps the finished ones and ends the run with an error. Under Ray the run's
ledger is one actor that all its workers share, so the cap is the run's, not each worker's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from valuegym.agents.llm.backends.base import (
    BackendWrapper,
    BudgetExhaustedError,
    CompletionRequest,
    LLMBackend,
    ScoringRequest,
    estimated_tokens,
)
from valuegym.agents.llm.backends.ray_actors import SharedActor, running_ray

SPEND_ACTOR_NAME = "valuegym_llm_spend"


class SpendCapReachedError(BudgetExhaustedError):
    """The next call could exceed the run's spend cap (``agent.max_cost_usd``)."""


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
        self._shared = SharedActor(SpendLedgers, SPEND_ACTOR_NAME)

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
        return self._shared.handle() if self.run_key else None

    def _key(self) -> str:
        ray = running_ray()
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


async def _maybe_remote(method: Any, *args: Any) -> Any:
    """Call a :class:`SpendLedgers` method, local or on its Ray actor."""
    remote = getattr(method, "remote", None)
    return await (remote(*args) if remote is not None else method(*args))
