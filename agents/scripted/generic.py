"""Scripted policies that work in every environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from valuegym.agents.policy import AgentContext, Decision, SyncPolicy, Turn, action_mask


def agent_rng(context: AgentContext, stream: int = 0) -> np.random.Generator:
    """A generator private to one agent in one episode, stable across processes and runs."""
    return np.random.default_rng([context.episode_seed, context.agents.index(context.agent), stream])


def sample_schema(schema: Mapping[str, Any], rng: np.random.Generator) -> Any:
    """A random value of a JSON schema made of objects, enums, numbers and strings."""
    if "enum" in schema:
        return schema["enum"][int(rng.integers(len(schema["enum"])))]
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        return {key: sample_schema(sub, rng) for key, sub in properties.items()}
    if kind in ("number", "integer"):
        low, high = schema.get("minimum", 0), schema.get("maximum", 10)
        value = rng.uniform(low, high)
        return int(value) if kind == "integer" else float(value)
    if kind == "string":
        return ""
    if kind == "boolean":
        return bool(rng.integers(2))
    raise ValueError(f"cannot sample the schema {dict(schema)}")


@dataclass
class RandomState:
    rng: np.random.Generator
    action_schema: Mapping[str, Any]


class RandomPolicy(SyncPolicy):
    """A uniformly random valid action: among those the action mask allows, or, for an
    environment without a mask (continuous actions), a random structured action."""

    name = "scripted/random"

    def initial_state(self, context: AgentContext) -> RandomState:
        return RandomState(agent_rng(context), context.action_schema)

    def step(self, turn: Turn) -> tuple[Decision, Any]:
        state: RandomState = turn.state
        mask = action_mask(turn)
        if mask is None:
            return Decision(action=sample_schema(state.action_schema, state.rng)), state
        return Decision(action=int(state.rng.choice(np.flatnonzero(mask)))), state
