"""Agents: everything that implements the policy interface (``valuegym.agents.policy``)."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module, resources
from typing import Any

import yaml

from valuegym.agents.policy import Policy

#: agent ``kind`` in an agent config -> "module:function(cfg, env_name) -> Policy"
KINDS: dict[str, str] = {
    "scripted": "valuegym.agents.scripted:make_from_config",
    "llm": "valuegym.agents.llm.policy:make_from_config",
    "rl": "valuegym.agents.rl.policy:make_from_config",
    "human": "valuegym.agents.human:make_from_config",
}

#: Per agent kind, the config keys (dotted paths; a key covers everything under it) that change
#: how a policy runs, never what it decides: where the model is served, timeouts, retries,
#: concurrency, rate limits, caching, budgets. They are left out of the experiment identity, so a
#: resume may change them (a cluster job's server address changes every allocation); every other
#: key, present or future, is decision-relevant. docs/run-promises.md lists them.
OPERATIONAL_SETTINGS: dict[str, frozenset[str]] = {
    "scripted": frozenset(),
    "llm": frozenset(
        {
            "backend.base_url",
            "backend.api_key_env",
            "backend.timeout_s",
            "backend.rpm",
            "backend.tpm",
            "backend.n_threads",
            "concurrency",
            "concurrency_scope",
            "max_calls",
            "retry",
            "cache",
            "prices",
            "max_cost_usd",
        }
    ),
    "rl": frozenset(),
    "human": frozenset({"poll_s"}),
}


def is_operational(kind: str, key: str) -> bool:
    """Whether the dotted config ``key`` of an agent of ``kind`` is operational (see above)."""
    return any(key == name or key.startswith(f"{name}.") for name in OPERATIONAL_SETTINGS.get(kind, ()))


def flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``{"dotted.key": leaf}`` (lists are leaves)."""
    flat: dict[str, Any] = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def decision_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The agent config's decision-relevant keys, flattened: every key but the operational ones."""
    kind = str(cfg.get("kind"))
    return {key: value for key, value in flatten(cfg).items() if not is_operational(kind, key)}


def agent_config(reference: str) -> dict[str, Any]:
    """The agent config ``conf/agent/<reference>.yaml`` (e.g. ``scripted/ethical``)."""
    path = resources.files("valuegym.conf").joinpath("agent", *f"{reference}.yaml".split("/"))
    if not path.is_file():
        raise ValueError(f"unknown agent {reference!r}: no conf/agent/{reference}.yaml")
    return yaml.safe_load(path.read_text())


def with_prompt_template(cfg: Mapping[str, Any], template: str | None) -> Mapping[str, Any]:
    """An LLM agent config that names no template takes the scenario's ``prompt_template``."""
    if template and cfg.get("kind") == "llm" and cfg.get("template") is None:
        return {**cfg, "template": template}
    return cfg


def make_policy(cfg: Mapping[str, Any], env_name: str) -> Policy:
    """Build the policy described by an agent config (``conf/agent/...``) for ``env_name``."""
    kind = cfg.get("kind")
    if kind not in KINDS:
        raise ValueError(f"agent config needs kind in {sorted(KINDS)}, got {kind!r}")
    module, function = KINDS[kind].split(":")
    return getattr(import_module(module), function)(cfg, env_name)
