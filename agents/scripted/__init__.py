"""Scripted agents, selectable as ``agent=scripted/NAME``.

Scripted behaviour is specific to an environment's situation, so each environment has
its own module; ``random`` (a uniformly random valid action) works everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from typing import Any

from valuegym.agents.policy import Policy

GENERIC: dict[str, str] = {"random": "valuegym.agents.scripted.generic:RandomPolicy"}

#: env_name -> scripted name -> "module:Class"
BY_ENV: dict[str, dict[str, str]] = {
    "decide_sim": {
        name: f"valuegym.agents.scripted.decide_sim:{cls}"
        for name, cls in {
            "idle": "IdlePolicy",
            "ethical": "EthicalPolicy",
            "exploitative": "ExploitativePolicy",
            "context_dependent": "ContextDependentPolicy",
            "cooperative": "CooperativePolicy",
            "tempted": "TemptedPolicy",
        }.items()
    },
    "moral_machine": {
        name: f"valuegym.agents.scripted.moral_machine:{cls}"
        for name, cls in {"utility": "UtilityPolicy", "first": "FirstCasePolicy"}.items()
    },
    "coevolution": {
        name: f"valuegym.agents.scripted.coevolution:{cls}"
        for name, cls in {
            "static": "StaticPolicy",
            "follower": "FollowerPolicy",
            "extrapolative": "ExtrapolativePolicy",
            "approval_max": "ApprovalMaxPolicy",
            "oracle": "OraclePolicy",
        }.items()
    },
    "dilemma": {
        name: f"valuegym.agents.scripted.dilemma:{cls}"
        for name, cls in {"value_ranker": "ValueRankerPolicy"}.items()
    },
}


def available(env_name: str) -> list[str]:
    return sorted({*GENERIC, *BY_ENV.get(env_name, {})})


def make_scripted(env_name: str, name: str, params: Mapping[str, Any] | None = None) -> Policy:
    """The scripted policy ``name`` for ``env_name``, built with ``params``."""
    target = BY_ENV.get(env_name, {}).get(name) or GENERIC.get(name)
    if target is None:
        raise ValueError(
            f"no scripted agent {name!r} for environment {env_name!r}; "
            f"available: {', '.join(available(env_name))}"
        )
    module, cls = target.split(":")
    return getattr(import_module(module), cls)(**dict(params or {}))


def make_from_config(cfg: Mapping[str, Any], env_name: str) -> Policy:
    return make_scripted(env_name, cfg["name"], cfg.get("params"))
