"""Limits on the calls in flight to one backend: per process, or across a Ray cluster.

:class:`ConcurrencyLimitedBackend` bounds the calls of one process. On Ray every worker is
such a process, so ``N`` workers would send ``N × limit`` calls to one server.
:class:`SharedConcurrencyLimitedBackend` instead takes a slot from a :class:`SlotTable` held
by one named, detached Ray actor that every driver and worker of the cluster shares (Hydra
sweep jobs included), with one pool of slots per backend key (e.g. the server URL and
model). Outside Ray (``ray.is_initialized()`` is false) it is a per-process semaphore, like
a local run's.

Slots are granted first come, first served. A slot whose holder died (a crashed worker
never releases) is taken back after ``lease_s``, which must therefore exceed the longest
call. If the actor itself dies, Ray restarts it with empty pools: for the calls then in
flight the limit may be exceeded once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from valuegym.agents.llm.backends.base import (
    BackendWrapper,
    Completion,
    CompletionRequest,
    LLMBackend,
    PerEventLoop,
    ScoringRequest,
)
from valuegym.agents.llm.backends.ray_actors import SharedActor


class ConcurrencyLimitedBackend(BackendWrapper):
    """At most ``limit`` calls in flight at once (per event loop, i.e. per process)."""

    def __init__(self, inner: LLMBackend, limit: int) -> None:
        super().__init__(inner)
        if limit < 1:
            raise ValueError(f"the concurrency limit must be at least 1, got {limit}")
        self.limit = limit
        self._semaphores: PerEventLoop[asyncio.Semaphore] = PerEventLoop(lambda: asyncio.Semaphore(limit))

    async def _around(self, call: Callable[[Any], Any], request: CompletionRequest | ScoringRequest) -> Any:
        async with self._semaphores.get():
            return await call(request)


DEFAULT_LEASE_S = 600.0

ACTOR_NAME = "valuegym_llm_slots"


@dataclass
class _Waiter:
    slot: asyncio.Future[bool]  # True: granted; False: withdrawn
    lease_s: float


@dataclass
class _Pool:
    """The slots of one key: who holds them and who waits, in arrival order."""

    limit: int
    holders: dict[str, asyncio.TimerHandle] = field(default_factory=dict)  # holder -> lease timer
    waiting: dict[str, _Waiter] = field(default_factory=dict)  # insertion order: first come, first served
    peak_in_use: int = 0
    granted: int = 0
    expired: int = 0


class SlotTable:
    """Counting semaphores by key, with leases: the state of the shared actor.

    Plain asyncio (no Ray), so it is also usable and testable in one process. Callers name
    themselves with a unique ``holder`` string. ``release`` works whether the holder holds a
    slot, still waits for one, or has not been seen yet (an async actor may run one caller's
    calls out of order): the holder is then withdrawn and its ``acquire`` returns False.
    """

    def __init__(self) -> None:
        self._pools: dict[str, _Pool] = {}
        self._withdrawn: dict[str, asyncio.TimerHandle] = {}  # holders released before they acquired

    async def acquire(self, key: str, limit: int, holder: str, lease_s: float) -> bool:
        """Wait for a slot of ``key``; True once held, False if the holder was withdrawn."""
        withdrawn = self._withdrawn.pop(holder, None)
        if withdrawn is not None:
            withdrawn.cancel()
            return False
        pool = self._pool(key, limit)
        if not pool.waiting and len(pool.holders) < pool.limit:
            self._grant(pool, holder, lease_s)
            return True
        waiter = _Waiter(asyncio.get_running_loop().create_future(), lease_s)
        pool.waiting[holder] = waiter
        try:
            return await asyncio.shield(waiter.slot)  # shielded: only _hand_on and _withdraw settle it
        except asyncio.CancelledError:  # the actor call was cancelled: pass the slot on
            self._withdraw(pool, holder, lease_s)
            raise

    async def release(self, key: str, holder: str, lease_s: float = DEFAULT_LEASE_S) -> None:
        """Give back ``holder``'s slot, or its place in the queue (see the class docstring)."""
        self._withdraw(self._pools.get(key), holder, lease_s)

    async def stats(self, key: str) -> dict[str, int]:
        """``limit``, ``in_use``, ``waiting``, ``peak_in_use``, ``granted`` and ``expired`` (leases
        taken back) for ``key``; empty if the key was never used."""
        pool = self._pools.get(key)
        if pool is None:
            return {}
        return {
            "limit": pool.limit,
            "in_use": len(pool.holders),
            "waiting": len(pool.waiting),
            "peak_in_use": pool.peak_in_use,
            "granted": pool.granted,
            "expired": pool.expired,
        }

    def _pool(self, key: str, limit: int) -> _Pool:
        if limit < 1:
            raise ValueError(f"the concurrency limit must be at least 1, got {limit}")
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(limit)
        elif pool.limit != limit:
            if pool.holders or pool.waiting:
                raise ValueError(
                    f"the LLM backend {key!r} is in use on this Ray cluster with a concurrency limit of "
                    f"{pool.limit}; this run asks for {limit}. Use the same limit, or wait until those "
                    "calls are done (slots of crashed runs are freed after their lease)"
                )
            pool.limit = limit
        return pool

    def _grant(self, pool: _Pool, holder: str, lease_s: float) -> None:
        lease = asyncio.get_running_loop().call_later(lease_s, self._expire, pool, holder)
        pool.holders[holder] = lease
        pool.granted += 1
        pool.peak_in_use = max(pool.peak_in_use, len(pool.holders))

    def _withdraw(self, pool: _Pool | None, holder: str, lease_s: float) -> None:
        if pool is not None:
            lease = pool.holders.pop(holder, None)
            if lease is not None:
                lease.cancel()
                self._hand_on(pool)
                return
            waiter = pool.waiting.pop(holder, None)
            if waiter is not None:
                waiter.slot.set_result(False)
                return
        # Not seen yet: remember it, for as long as a lease, so that its acquire gives up.
        loop = asyncio.get_running_loop()
        self._withdrawn[holder] = loop.call_later(lease_s, self._withdrawn.pop, holder, None)

    def _expire(self, pool: _Pool, holder: str) -> None:
        if pool.holders.pop(holder, None) is not None:
            pool.expired += 1
            self._hand_on(pool)

    def _hand_on(self, pool: _Pool) -> None:
        """Give free slots to the longest-waiting holders."""
        while pool.waiting and len(pool.holders) < pool.limit:
            holder = next(iter(pool.waiting))
            waiter = pool.waiting.pop(holder)
            self._grant(pool, holder, waiter.lease_s)
            waiter.slot.set_result(True)


class SharedConcurrencyLimitedBackend(BackendWrapper):
    """At most ``limit`` calls in flight to the backend ``key`` across the whole Ray cluster
    (per event loop, i.e. per process, when Ray is not running)."""

    def __init__(self, inner: LLMBackend, key: str, limit: int, *, lease_s: float = DEFAULT_LEASE_S) -> None:
        super().__init__(inner)
        # Outside Ray the limit is a per-process one: delegate to the local wrapper (checks ``limit``).
        self._local = ConcurrencyLimitedBackend(inner, limit)
        if not key:
            raise ValueError(
                "a shared concurrency limit needs a key naming the backend (e.g. its URL and model)"
            )
        if lease_s <= 0:
            raise ValueError(f"lease_s must be positive, got {lease_s}")
        self.key = key
        self.limit = limit
        self.lease_s = lease_s
        self._slots = SharedActor(SlotTable, ACTOR_NAME)

    async def complete(self, request: CompletionRequest) -> Completion:
        slots = self._slots.handle()
        if slots is None:
            return await self._local.complete(request)
        holder = uuid.uuid4().hex  # names this call's slot; never affects results
        try:
            await slots.acquire.remote(self.key, self.limit, holder, self.lease_s)
        except BaseException:  # cancelled while waiting: withdraw, whether granted yet or not
            slots.release.remote(self.key, holder, self.lease_s)
            raise
        try:
            return await self.inner.complete(request)
        finally:
            slots.release.remote(self.key, holder, self.lease_s)  # no need to wait for it
