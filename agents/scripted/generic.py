"""Scripted policies that work in every environment."""

from __future__ import annotations

from typing import Any

import numpy as np
from valuegym.agents.policy import AgentContext, Decision, SyncPolicy, Turn, action_mask


def agent_rng(context: AgentContext, stream: int = 0) -> np.random.Generator:
    """A generator private to one agent in one episode, stable across processes and runs."""
    return np.random.default_rng([context.episode_seed, context.agents.index(context.agent), stream])


class RandomPolicy(SyncPolicy):
    """A uniformly random action among those the action mask allows."""

    name = "scripted/random"

    def initial_state(self, context: AgentContext) -> np.random.Generator:
        return agent_rng(context)

    def step(self, turn: Turn) -> tuple[Decision, Any]:
        rng: np.random.Generator = turn.state
        mask = action_mask(turn)
        if mask is None:
            raise ValueError(f"{self.name} needs an observation with an action_mask (agent {turn.agent})")
        allowed = np.flatnonzero(mask)
        return Decision(action=int(rng.choice(allowed))), rng
