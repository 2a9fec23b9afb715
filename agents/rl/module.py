"""The torch RLModule for environments whose observations carry an action mask.

RLlib's default PPO module builds its networks for a flat observation. Discrete valuegym
environments publish ``Dict({"observation": Box, "action_mask": Box})``;
:mod:`valuegym.agents.rl.observation` renames the first key to ``observations``, the
key RLlib's own action-masking example reads. This module (modelled on that example,
``rllib/examples/rl_modules/classes/action_masking_rlm.py``, but without mutating the
batch it is given) builds PPO's networks for the ``observations`` part only and pushes the
logits of masked actions to the lowest float, so they are never sampled, never chosen
greedily and carry no probability in the PPO loss.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import torch
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.core.columns import Columns
from ray.rllib.utils.torch_utils import FLOAT_MIN

#: the observation keys RLlib's action-masking convention uses
OBSERVATIONS = "observations"
ACTION_MASK = "action_mask"


class MaskedPPOTorchRLModule(DefaultPPOTorchRLModule):
    """PPO's default torch module, fed ``observations`` and masking its logits with ``action_mask``."""

    def __init__(self, *, observation_space: gymnasium.Space | None = None, **kwargs: Any) -> None:
        if not isinstance(observation_space, gymnasium.spaces.Dict) or set(observation_space.spaces) != {
            OBSERVATIONS,
            ACTION_MASK,
        }:
            raise ValueError(
                f"{type(self).__name__} needs a Dict observation space with keys {OBSERVATIONS!r} and "
                f"{ACTION_MASK!r}, got {observation_space}"
            )
        self._space_with_mask = observation_space
        super().__init__(observation_space=observation_space[OBSERVATIONS], **kwargs)

    def setup(self) -> None:
        super().setup()  # the networks see the unmasked observation space
        # A checkpoint records the module's observation space to rebuild it: record the full one.
        self.observation_space = self._space_with_mask

    def _forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        inner, mask = _split(batch)
        return _masked(super()._forward_inference(inner, **kwargs), mask)

    def _forward_exploration(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        inner, mask = _split(batch)
        return _masked(super()._forward_exploration(inner, **kwargs), mask)

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        inner, mask = _split(batch)
        return _masked(super()._forward_train(inner, **kwargs), mask)

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        inner, _ = _split(batch)
        return super().compute_values(inner, embeddings)


def _split(batch: dict[str, Any]) -> tuple[dict[str, Any], torch.Tensor]:
    """A shallow copy of ``batch`` whose observation is the unmasked part, and the mask."""
    observation = batch[Columns.OBS]
    return {**batch, Columns.OBS: observation[OBSERVATIONS]}, observation[ACTION_MASK]


def _masked(outputs: dict[str, Any], mask: torch.Tensor) -> dict[str, Any]:
    # log(1) = 0 keeps allowed logits; log(0) = -inf, clamped to the lowest float so no NaN appears.
    penalty = torch.clamp(torch.log(mask.float()), min=FLOAT_MIN)
    outputs[Columns.ACTION_DIST_INPUTS] = outputs[Columns.ACTION_DIST_INPUTS] + penalty
    return outputs
