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
