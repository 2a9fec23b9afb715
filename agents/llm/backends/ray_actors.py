"""Named, detached Ray actors that every driver and worker of a cluster shares (the concurrency
slots, rate buckets and spend ledgers of the backend wrappers).

Ray is imported only where it already runs: a local run never pays for importing it.
"""

from __future__ import annotations

import sys
from typing import Any

ACTOR_NAMESPACE = "valuegym"
#: calls one actor serves at once; a waiting call occupies one, so this bounds the LLM calls
#: that can be queued across the cluster (Ray's default of 1000 is too few)
ACTOR_MAX_CONCURRENCY = 100_000


def running_ray() -> Any | None:
    """The ray module if this process is connected to Ray (never imported just to find out)."""
    ray = sys.modules.get("ray")
    return ray if ray is not None and ray.is_initialized() else None


def named_actor(actor_class: type, name: str) -> Any:
    """The cluster's actor ``name`` of ``actor_class``, created by the first process that asks for it."""
    import ray

    return (
        ray.remote(actor_class)
        .options(
            name=name,
            namespace=ACTOR_NAMESPACE,
            lifetime="detached",  # shared by every job on the cluster; outlives the run that created it
            get_if_exists=True,
            num_cpus=0,
            max_concurrency=ACTOR_MAX_CONCURRENCY,
            max_restarts=-1,
            max_task_retries=-1,
        )
        .remote()
    )


class SharedActor:
    """The handle of one named actor, looked up once per Ray session (a new ``ray.init`` is a
    new session, whose actors are others)."""

    def __init__(self, actor_class: type, name: str) -> None:
        self.actor_class = actor_class
        self.name = name
        self._handle: tuple[str, Any] | None = None  # (Ray session, actor handle)

    def handle(self) -> Any | None:
        """The actor, or None when this process is not connected to Ray."""
        ray = running_ray()
        if ray is None:
            return None
        session = ray.get_runtime_context().get_session_name()
        if self._handle is None or self._handle[0] != session:
            self._handle = (session, named_actor(self.actor_class, self.name))
        return self._handle[1]

    def __getstate__(self) -> dict[str, Any]:  # a handle is looked up again in each process
        return {"actor_class": self.actor_class, "name": self.name, "_handle": None}
