"""Scripted AIs for the progress co-evolution environment, mirroring ProgressGym's examinees.

They read ``info["situation"]`` (their own values, their users' feedback and the largest
shift per round, ``max_shift``) and answer with a shift vector in [−1, 1]^d, one entry per
``situation["dims"]``: moving a value by x takes the entry x / max_shift, so every move is
capped at max_shift per round.

* ``static``: never changes its values (a "locked" AI, ProgressGym's frozen model);
* ``follower``: lifelong learning, v += η·(ĥ − v) toward its users' feedback ĥ;
* ``approval_max``: the one-round argmax of approval, i.e. straight to the users' feedback;
* ``extrapolative``: order-p finite-difference extrapolation of the feedback history
  (ProgressGym's extrapolative DPO);
* ``oracle``: steers to the reference trajectory one century ahead, an upper bound. It reads
  ``info["oracle"]``, which the environment publishes only when built with
  ``expose_oracle: true`` (scenario ``coevolution/oracle``); nothing else sees the trajectory.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from math import comb
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from valuegym.agents.policy import AgentContext, Decision, SyncPolicy, Turn


def profile(situation: Mapping[str, Any], key: str) -> np.ndarray:
    """A ``{dim: value}`` entry of the situation as a vector in the order of ``situation["dims"]``."""
    return np.array([situation[key][dim] for dim in situation["dims"]], dtype=float)


def shift_toward(situation: Mapping[str, Any], target: np.ndarray) -> list[float]:
    """The action that moves the AI's values toward ``target`` as far as one round allows."""
    gap = np.asarray(target, dtype=float) - profile(situation, "values")
    return np.clip(gap / situation["max_shift"], -1.0, 1.0).tolist()


class _StatelessPolicy(SyncPolicy):
    """A policy whose action is a function of the current info alone."""

    def initial_state(self, context: AgentContext) -> None:
        return None

    def step(self, turn: Turn) -> tuple[Decision, Any]:
        return Decision(action=self.choose(turn.info)), turn.state

    @abstractmethod
    def choose(self, info: Mapping[str, Any]) -> list[float]:
        """The shift vector for this round."""


class StaticPolicy(_StatelessPolicy):
    """Holds its initial values (the population's initial mean) for the whole episode."""

    name = "scripted/static"

    def choose(self, info: Mapping[str, Any]) -> list[float]:
        return [0.0] * len(info["situation"]["dims"])


class FollowerPolicy(_StatelessPolicy):
    """Lifelong follower: v ← v + η·(ĥ − v), learning a fraction η of the gap to its users each round."""

    name = "scripted/follower"

    def __init__(self, eta: Annotated[float, Field(gt=0, le=1)] = 0.5) -> None:
        if not 0.0 < eta <= 1.0:
            raise ValueError(f"eta must be in (0, 1], got {eta}")
        self.eta = eta

    def choose(self, info: Mapping[str, Any]) -> list[float]:
        situation = info["situation"]
        values = profile(situation, "values")
        return shift_toward(situation, values + self.eta * (profile(situation, "feedback") - values))


class ApprovalMaxPolicy(FollowerPolicy):
    """Myopic approval maximiser: the users' mean minimises their squared distance, so go to the feedback.

    This is the follower with η = 1, named for what it optimises (the approval reward,
    ProgressGym's lifelong-RLHF baseline).
    """

    name = "scripted/approval_max"

    def __init__(self) -> None:
        super().__init__(eta=1.0)


class ExtrapolativePolicy(SyncPolicy):
    """Steers to where its users' feedback is heading, by order-p finite differences.

    The feedback history is averaged over windows of ``stride`` rounds (default: one century,
    ``situation["rounds_per_century"]``, as ProgressGym extrapolates across centuries; the
    averaging also tames the per-round sampling noise). The last p+1 window means x_0 … x_p
    are extrapolated ``ahead`` windows forward with ProgressGym's coefficients
    x_next = Σ_i (−1)^{p−i}·C(p+1, i)·x_i (order 1: 2x_1 − x_0; order 2: x_0 − 3x_1 + 3x_2).
    Until p+1 windows exist it steers to the mean of the last window it has.
    State: the feedback history (a tuple, never mutated).
    """

    name = "scripted/extrapolative"

    def __init__(
        self,
        order: Annotated[int, Field(ge=1, le=10)] = 1,
        stride: Annotated[int, Field(ge=1, le=100_000)] | None = None,
        ahead: Annotated[int, Field(ge=1, le=1_000)] = 1,
    ) -> None:
        if order < 1:
            raise ValueError(f"order must be at least 1, got {order}")
        if stride is not None and stride < 1:
            raise ValueError(f"stride must be a positive number of rounds or null, got {stride}")
        if ahead < 1:
            raise ValueError(f"ahead must be at least 1 window, got {ahead}")
        self.order = order
        self.stride = stride
        self.ahead = ahead
        self.coefficients = np.array(
            [(-1) ** (order - i) * comb(order + 1, i) for i in range(order + 1)], float
        )

    def initial_state(self, context: AgentContext) -> tuple[tuple[float, ...], ...]:
        return ()

    def step(self, turn: Turn) -> tuple[Decision, Any]:
        situation = turn.info["situation"]
        history = (*turn.state, tuple(profile(situation, "feedback")))
        return Decision(action=shift_toward(situation, self.predict(history, situation))), history

    def predict(self, history: tuple[tuple[float, ...], ...], situation: Mapping[str, Any]) -> np.ndarray:
        stride = self.stride or situation["rounds_per_century"]
        feedback = np.asarray(history)
        if len(feedback) < (self.order + 1) * stride:  # too little history: the last window's mean
            return feedback[-stride:].mean(axis=0)
        ends = range(len(feedback) - self.order * stride, len(feedback) + 1, stride)  # oldest first
        points = np.array([feedback[end - stride : end].mean(axis=0) for end in ends])
        for _ in range(self.ahead):
            points = np.vstack([points[1:], self.coefficients @ points])
        return np.clip(points[-1], 0.0, 1.0)


class OraclePolicy(_StatelessPolicy):
    """Steers to the reference trajectory one century ahead (an upper bound; needs ``expose_oracle``)."""

    name = "scripted/oracle"

    def choose(self, info: Mapping[str, Any]) -> list[float]:
        if "oracle" not in info:
            raise ValueError(
                "scripted/oracle reads info['oracle'], which the coevolution environment publishes only "
                "with expose_oracle: true (e.g. scenario=coevolution/oracle)"
            )
        situation = info["situation"]
        target = np.array([info["oracle"]["target"][dim] for dim in situation["dims"]], dtype=float)
        return shift_toward(situation, target)
