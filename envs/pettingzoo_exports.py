"""The AEC versions every environment module exports beside its ``parallel_env``.

PettingZoo's convention is that an environment module exports ``parallel_env``, ``env`` (the
AEC version with the standard wrappers) and ``raw_env`` (the AEC version with no wrapper at all);
its tests call ``mod.env(max_cycles=...)`` and ``env_fn(render_mode=...)``. Each valuegym module
keeps those three names as one-line functions built on the helpers below, so every environment
is converted the same way and ``raw_env`` means the same thing in all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils import parallel_to_aec, wrappers
from pettingzoo.utils.conversions import parallel_to_aec_wrapper


def raw_aec_env(parallel_env: Callable[..., ParallelEnv], **kwargs: Any) -> AECEnv:
    """``raw_env``: ``parallel_env(**kwargs)`` converted to AEC, with no wrapper (not even the call order)."""
    return parallel_to_aec_wrapper(parallel_env(**kwargs))


def aec_env(parallel_env: Callable[..., ParallelEnv], **kwargs: Any) -> AECEnv:
    """``parallel_env(**kwargs)`` converted to AEC by PettingZoo, which enforces only the call order."""
    return parallel_to_aec(parallel_env(**kwargs))


def bounds_checked_aec_env(parallel_env: Callable[..., ParallelEnv], **kwargs: Any) -> AECEnv:
    """:func:`aec_env` with PettingZoo's standard wrappers: every action must lie in ``action_space``.

    For environments whose AEC actions are indices into a ``Discrete`` catalog; an environment
    whose AEC version also takes structured actions uses :func:`aec_env`, as the bounds check
    would reject them.
    """
    checked = wrappers.AssertOutOfBoundsWrapper(aec_env(parallel_env, **kwargs))
    return wrappers.OrderEnforcingWrapper(checked)
