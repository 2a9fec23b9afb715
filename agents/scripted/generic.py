"""Scripted policies that work in every environment."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from valuegym.agents.policy import AgentContext, Decision, SyncPolicy, Turn, action_mask

T = TypeVar("T")
#: draws happen on this generator, whose state is set from the stream drawn from and read back
_SCRATCH = np.random.Generator(np.random.PCG64(0))


def agent_rng(context: AgentContext, stream: int = 0) -> np.random.Generator:
    """A generator private to one agent in one episode, stable across processes and runs."""
    return np.random.default_rng([context.episode_seed, context.agents.index(context.agent), stream])


@dataclass(frozen=True)
class RandomStream:
    """A random stream as a value, for policy states that are never mutated: :meth:`draw`
    returns the draw and the stream after it (the draws :func:`agent_rng`'s generator makes)."""

    bit_state: Mapping[str, Any]  # numpy's PCG64 ``bit_generator.state``

    @classmethod
    def of(cls, context: AgentContext, stream: int = 0) -> RandomStream:
        return cls(agent_rng(context, stream).bit_generator.state)

    def draw(self, sample: Callable[[np.random.Generator], T]) -> tuple[T, RandomStream]:
        _SCRATCH.bit_generator.state = self.bit_state
        value = sample(_SCRATCH)
        return value, RandomStream(_SCRATCH.bit_generator.state)


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


@dataclass(frozen=True)
class RandomState:
    stream: RandomStream
    action_schema: Mapping[str, Any]


class RandomPolicy(SyncPolicy[RandomState]):
    """A uniformly random valid action: among those the action mask allows, or, for an
    environment without a mask (continuous actions), a random structured action."""

    name = "scripted/random"

    def initial_state(self, context: AgentContext) -> RandomState:
        return RandomState(RandomStream.of(context), context.action_schema)

    def step(self, turn: Turn[RandomState]) -> tuple[Decision, RandomState]:
        state = turn.state
        mask = action_mask(turn)
        if mask is None:
            action, stream = state.stream.draw(lambda rng: sample_schema(state.action_schema, rng))
        else:
            action, stream = state.stream.draw(lambda rng: int(rng.choice(np.flatnonzero(mask))))
        return Decision(action=action), replace(state, stream=stream)
