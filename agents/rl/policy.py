"""A trained RLlib module as an ordinary valuegym policy (``agent=rl agent.checkpoint=PATH``).

The checkpoint is a directory written by ``valuegym train`` (``checkpoints/final`` or
``checkpoints/iter_NNNNNN`` in the training run): RLlib's algorithm checkpoint plus
``valuegym.json`` (:class:`CheckpointInfo`), which says which environment the modules were
trained on and how their observations were built. The torch module is loaded lazily, once
per process, so the policy pickles cheaply to Ray workers and joblib processes.

Acting: the observation is converted exactly as during training
(:func:`~valuegym.agents.rl.observation.module_observation`), the module's
``forward_inference`` gives the action distribution inputs, and the action is the greedy
one (``deterministic: true``: argmax over the masked logits, or the Gaussian mean for
continuous actions) or a sample drawn with the seat's own seeded generator.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.utils.spaces.space_utils import unsquash_action

from valuegym.agents.policy import AgentContext, Decision, SyncPolicy, Turn
from valuegym.agents.rl.observation import AffectShaping, AffectShapingConfig, module_observation
from valuegym.agents.scripted.generic import RandomStream

METADATA_FILE = "valuegym.json"
CONFIG_KEYS = frozenset({"kind", "name", "checkpoint", "module_id", "deterministic"})


@dataclass(frozen=True)
class CheckpointInfo:
    """What ``valuegym train`` records beside RLlib's checkpoint (``valuegym.json``)."""

    env: str
    scenario: str
    modules: dict[str, list[str]]  # module id -> the focal agents it played in training
    affect: dict[str, Any] | None  # AffectShapingConfig fields, when training used affect
    iteration: int

    def write(self, checkpoint: Path) -> None:
        (checkpoint / METADATA_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, checkpoint: Path) -> CheckpointInfo:
        if not checkpoint.is_dir():
            raise ValueError(f"RL checkpoint {checkpoint} is not a directory")
        path = checkpoint / METADATA_FILE
        if not path.is_file():
            raise ValueError(
                f"{checkpoint} is not a valuegym RL checkpoint (no {METADATA_FILE}); use a directory "
                "written by `valuegym train`, e.g. <run dir>/checkpoints/final"
            )
        return cls(**json.loads(path.read_text()))


def module_path(checkpoint: Path, module_id: str) -> Path:
    """Where RLlib's algorithm checkpoint keeps the module ``module_id``."""
    return checkpoint / "learner_group" / "learner" / "rl_module" / module_id


@dataclass(frozen=True)
class SeatState:
    stream: RandomStream  # for sampled (non-deterministic) actions
    affect_levels: Any = None  # when the module was trained with affect features


class RLPolicy(SyncPolicy[SeatState]):
    """Plays one module of a trained checkpoint for every seat it is given."""

    def __init__(
        self, checkpoint: str | Path, env_name: str, module_id: str = "shared", deterministic: bool = True
    ) -> None:
        self.checkpoint = Path(checkpoint).expanduser().resolve()
        self.info = CheckpointInfo.read(self.checkpoint)
        if self.info.env != env_name:
            raise ValueError(
                f"RL checkpoint {self.checkpoint} was trained on {self.info.env!r}, not on {env_name!r}"
            )
        if module_id not in self.info.modules:
            raise ValueError(
                f"RL checkpoint {self.checkpoint} has modules {sorted(self.info.modules)}, not {module_id!r}; "
                "choose one with agent.module_id=..."
            )
        self.module_id = module_id
        self.deterministic = deterministic
        self.name = f"rl/{module_id}"
        affect = self.info.affect
        self._affect_config = (
            AffectShapingConfig(**affect) if affect is not None and affect["features"] else None
        )
        self._module: RLModule | None = None
        self._affect: AffectShaping | None = None

    def parameters(self) -> dict[str, Any]:
        return {"module_id": self.module_id, "deterministic": self.deterministic}

    def identity(self) -> dict[str, Any]:
        """The checkpoint (its path and training metadata) and how it is played."""
        return {
            "policy": self.name,
            "model": {"type": "rl", "checkpoint": str(self.checkpoint), "trained": asdict(self.info)},
            "params": self.parameters(),
        }

    def label(self) -> str:
        return f"{self.name} [{self.checkpoint.parent.name}/{self.checkpoint.name}]"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_module"] = None  # each process loads the torch module itself
        state["_affect"] = None
        return state

    @property
    def module(self) -> RLModule:
        """The torch RLModule, loaded on first use in this process."""
        if self._module is None:
            self._module = RLModule.from_checkpoint(module_path(self.checkpoint, self.module_id))
            self._module.eval()
        return self._module

    @property
    def affect(self) -> AffectShaping | None:
        if self._affect is None and self._affect_config is not None:
            self._affect = AffectShaping(self._affect_config)
        return self._affect

    def initial_state(self, context: AgentContext) -> SeatState:
        affect = self.affect
        return SeatState(RandomStream.of(context), affect_levels=affect.initial() if affect else None)

    def observe(self, turn: Turn[SeatState]) -> tuple[Any, SeatState]:
        """The module's input for this turn, as the adapter built it in training, and the seat's
        state with its affect levels updated (when the module observes them)."""
        state = turn.state
        affect = self.affect
        if affect is None:
            return module_observation(turn.observation), state
        state = replace(state, affect_levels=affect.update(state.affect_levels, turn.info["events"]))
        return module_observation(turn.observation, affect.features(state.affect_levels)), state

    def step(self, turn: Turn[SeatState]) -> tuple[Decision, SeatState]:
        return self.decide([turn])[0]

    async def step_batch(self, turns: Sequence[Turn[SeatState]]) -> list[tuple[Decision, SeatState]]:
        return self.decide(turns)

    def decide(self, turns: Sequence[Turn[SeatState]]) -> list[tuple[Decision, SeatState]]:
        """The seats' decisions from one forward pass over their stacked observations."""
        if not turns:
            return []
        observed = [self.observe(turn) for turn in turns]
        observations = [observation for observation, _ in observed]
        if isinstance(observations[0], Mapping):
            batch = {
                key: torch.from_numpy(np.stack([o[key] for o in observations])) for key in observations[0]
            }
        else:
            batch = torch.from_numpy(np.stack(observations))
        with torch.no_grad():
            outputs = self.module.forward_inference({Columns.OBS: batch})
        inputs = outputs[Columns.ACTION_DIST_INPUTS].numpy().astype(np.float64)
        decided = []
        for (_, state), row in zip(observed, inputs, strict=True):
            action, stream = state.stream.draw(lambda rng, row=row: self.choose(row, rng))
            decided.append((Decision(action=action), replace(state, stream=stream)))
        return decided

    def choose(self, inputs: np.ndarray, rng: np.random.Generator) -> int | list[float]:
        """The action for the module's action distribution inputs."""
        space = self.module.action_space
        if isinstance(space, gymnasium.spaces.Discrete):
            if self.deterministic:
                return int(np.argmax(inputs))
            probabilities = np.exp(inputs - inputs.max())  # masked logits are ~-3e38: probability 0
            return int(rng.choice(len(inputs), p=probabilities / probabilities.sum()))
        if isinstance(space, gymnasium.spaces.Box):
            mean, log_std = np.split(inputs, 2)  # PPO's diagonal Gaussian
            normalised = mean if self.deterministic else rng.normal(mean, np.exp(log_std))
            # Training normalises Box actions to [-1, 1] (RLlib's normalize_actions): undo it as the env runner does.
            return np.asarray(unsquash_action(normalised, space), dtype=float).tolist()
        raise ValueError(f"RLPolicy supports Discrete and Box action spaces, not {space}")


def make_from_config(cfg: Mapping[str, Any], env_name: str) -> RLPolicy:
    """``conf/agent/rl.yaml``: ``checkpoint`` (required), ``module_id``, ``deterministic``."""
    unknown = sorted(set(cfg) - CONFIG_KEYS)
    if unknown:
        raise ValueError(f"unknown keys {unknown} in the rl agent config; expected {sorted(CONFIG_KEYS)}")
    checkpoint = cfg.get("checkpoint")
    if not checkpoint or checkpoint == "???":
        raise ValueError("agent=rl needs a checkpoint: agent.checkpoint=<training run>/checkpoints/final")
    return RLPolicy(
        checkpoint,
        env_name,
        module_id=str(cfg.get("module_id", "shared")),
        deterministic=bool(cfg.get("deterministic", True)),
    )
