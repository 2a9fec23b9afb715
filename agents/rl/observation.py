"""What an RL module sees: an environment observation converted for RLlib, plus optional affect features.

Shared by training (:mod:`valuegym.training.env_adapter`) and the checkpoint-backed policy
(:mod:`valuegym.agents.rl.policy`), so a trained module is fed exactly the inputs it learnt
on when it plays in the runner.

* A ``Dict`` observation with an action mask becomes ``{"observations": ..., "action_mask": ...}``,
  the keys of RLlib's action-masking convention (PettingZoo's key is ``observation``), read by
  :class:`~valuegym.agents.rl.module.MaskedPPOTorchRLModule`; a flat ``Box`` observation (e.g.
  co-evolution, whose action is continuous) passes through.
* Affect (optional): guilt and satisfaction levels follow ``infos[agent]["events"]``
  (:mod:`valuegym.agents.affect`); training adds ``w_s·satisfaction − w_g·guilt`` to the reward,
  and the levels can be appended to the observation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np

from valuegym.agents.rl.module import ACTION_MASK, OBSERVATIONS

#: PettingZoo-side key of the numeric observation inside a masked ``Dict`` observation
ENV_OBSERVATION = "observation"


@dataclass(frozen=True)
class AffectShapingConfig:
    """How affect shapes training: the regulator's parameters (its reward weights included)
    and whether the levels are also observed."""

    params: Mapping[str, Any] = field(default_factory=dict)  # valuegym.agents.affect.AffectParams fields
    features: bool = True


# ---------------------------------------------------------------------- observations
def is_masked(space: gymnasium.Space) -> bool:
    """True for the ``Dict({"observation", "action_mask"})`` observations of discrete envs."""
    return isinstance(space, gymnasium.spaces.Dict) and set(space.spaces) == {ENV_OBSERVATION, ACTION_MASK}


def _with_features(box: gymnasium.spaces.Box, n_features: int) -> gymnasium.spaces.Box:
    if n_features == 0:
        return box
    low = np.concatenate([box.low.astype(np.float32), np.full(n_features, -np.inf, np.float32)])
    high = np.concatenate([box.high.astype(np.float32), np.full(n_features, np.inf, np.float32)])
    return gymnasium.spaces.Box(low, high, dtype=np.float32)


def module_observation_space(space: gymnasium.Space, n_features: int = 0) -> gymnasium.Space:
    """The observation space the RL module sees for an environment observation space."""
    if is_masked(space):
        mask = space[ACTION_MASK]
        return gymnasium.spaces.Dict(
            {
                OBSERVATIONS: _with_features(space[ENV_OBSERVATION], n_features),
                ACTION_MASK: gymnasium.spaces.Box(0.0, 1.0, mask.shape, dtype=np.float32),
            }
        )
    if isinstance(space, gymnasium.spaces.Box) and len(space.shape) == 1:
        return _with_features(space, n_features)
    raise ValueError(
        "RL training supports a flat Box observation or a Dict with keys 'observation' and "
        f"'action_mask'; got {space}"
    )


def module_observation(observation: Any, features: np.ndarray | None = None) -> Any:
    """An environment observation as the RL module sees it (see :func:`module_observation_space`)."""
    if isinstance(observation, Mapping):
        return {
            OBSERVATIONS: _flat(observation[ENV_OBSERVATION], features),
            ACTION_MASK: np.asarray(observation[ACTION_MASK], dtype=np.float32),
        }
    return _flat(observation, features)


def _flat(values: Any, features: np.ndarray | None) -> np.ndarray:
    values = np.asarray(values, dtype=np.float32)
    return values if features is None else np.concatenate([values, features], dtype=np.float32)


# ---------------------------------------------------------------------- affect
class AffectShaping:
    """Per-agent affect levels driven by moral events: the reward shaping and the extra features.

    Used by the adapter while training and by the checkpoint-backed policy while playing,
    so a module trained with affect features is fed the same features in the runner.
    """

    def __init__(self, config: AffectShapingConfig) -> None:
        from valuegym.agents import affect  # only runs that enable affect need the regulator

        self._affect = affect
        self.params = affect.AffectParams.from_config(config.params)
        self.n_features = len(self.features(self.initial())) if config.features else 0

    def initial(self) -> Any:
        return self._affect.AffectLevels()

    def update(self, levels: Any, events: Sequence[Mapping[str, Any]]) -> Any:
        return self._affect.update_levels(levels, list(events), self.params)

    def reward(self, levels: Any) -> float:
        return float(self._affect.reward_shaping(levels, self.params))

    def features(self, levels: Any) -> np.ndarray:
        return np.asarray(self._affect.affect_features(levels, self.params), dtype=np.float32)
