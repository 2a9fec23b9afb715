"""The AEC versions every environment module exports beside its ``parallel_env``.

PettingZoo's convention is that an environment module exports ``parallel_env``, ``env`` (the
AEC version with the standard wrappers) and ``raw_env`` (the AEC version with no wrapper at all);
its tests call ``mod.env(max_cycles=...)`` and ``env_fn(render_mode=...)``. Each valuegym module
defines ``parallel_env`` and takes the other two from :func:`aec_constructors`, so every
environment is converted the same way and ``raw_env`` means the same thing in all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils import wrappers
from pettingzoo.utils.conversions import parallel_to_aec_wrapper


def aec_constructors(
    parallel_env: Callable[..., ParallelEnv], bounds_checked: bool
) -> tuple[Callable[..., AECEnv], Callable[..., AECEnv]]:
    """``raw_env`` and ``env`` of the module whose parallel constructor is ``parallel_env``.

    ``raw_env(**kwargs)``: ``parallel_env(**kwargs)`` converted to AEC, with no wrapper at all.
    ``env(**kwargs)``: ``raw_env`` with PettingZoo's standard wrappers: the call order is
    enforced and, with ``bounds_checked`` (environments whose AEC actions are indices into a
    ``Discrete`` catalog), every action must lie in ``action_space``; an environment whose AEC
    version also takes structured actions passes ``bounds_checked=False``, as the check would
    reject them.
    """

    def raw_env(**kwargs: Any) -> AECEnv:
        return parallel_to_aec_wrapper(parallel_env(**kwargs))

    def env(**kwargs: Any) -> AECEnv:
        aec = raw_env(**kwargs)
        if bounds_checked:
            aec = wrappers.AssertOutOfBoundsWrapper(aec)
        return wrappers.OrderEnforcingWrapper(aec)

    where = parallel_env.__module__
    for constructor, what in ((raw_env, "with no wrapper"), (env, "with PettingZoo's standard wrappers")):
        constructor.__module__ = where
        constructor.__qualname__ = constructor.__name__
        constructor.__doc__ = f"The AEC version of :func:`parallel_env`, {what} (``pettingzoo_exports.py``)."
    return raw_env, env
