"""Any valuegym environment as an RLlib ``MultiAgentEnv`` whose agents are the learners.

Training glue, beside the runner: this is where RL training joins environments and agents.

* **Agents.** Only the focal seats are RLlib agents (``agents``, ``possible_agents``,
  ``observation_spaces``, ``action_spaces``). Background seats (a scenario's ``slots``
  with ``role: background``) are played *inside* the adapter by the policy their slot
  names, built by the runner's seat builder (:func:`valuegym.runner.seats.build_seats`),
  so RLlib never sees them and training cannot change them.
* **Observations** are converted by :func:`valuegym.agents.rl.observation.module_observation`,
  the one conversion, shared with the checkpoint-backed policy so a trained module sees the
  same inputs when it plays in the runner.
* **Rewards** are the environment's own, from the scenario's reward parameters (the
  training config merges its reward overrides into them), plus optional affect shaping
  (:class:`~valuegym.agents.rl.observation.AffectShaping`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from valuegym.agents.policy import AgentContext, Policy, Turn, decide_grouped
from valuegym.agents.rl.observation import (
    AffectShaping,
    AffectShapingConfig,
    module_observation,
    module_observation_space,
)
from valuegym.envs import make_parallel
from valuegym.runner.seats import SeatConfig, build_seats


@dataclass(frozen=True)
class AdapterConfig:
    """Everything an adapter needs; plain data, so it travels to Ray env runners as ``env_config``."""

    env: str  # environment name, e.g. "decide_sim"
    params: Mapping[str, Any]  # the environment's keyword arguments, rewards included
    background: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # agent -> agent config
    affect: AffectShapingConfig | None = None
    scenario: str = ""  # the scenario's name, for the background policies' context
    seed: int = 0  # episode seeds when RLlib does not seed the first reset

    def to_env_config(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_env_config(cls, config: Mapping[str, Any]) -> AdapterConfig:
        values = {name: config[name] for name in cls.__dataclass_fields__ if name in config}
        affect = values.get("affect")
        if isinstance(affect, Mapping):
            values["affect"] = AffectShapingConfig(**affect)
        return cls(**values)


# ---------------------------------------------------------------------- the adapter
class ValuegymMultiAgentEnv(MultiAgentEnv):
    """A valuegym ``ParallelEnv`` with its focal seats exposed to RLlib and its background seats played inside."""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if not config:
            raise ValueError("ValuegymMultiAgentEnv needs an env_config (AdapterConfig.to_env_config())")
        self.config = AdapterConfig.from_env_config(config)
        self.env = make_parallel(self.config.env, **self.config.params)
        unknown = sorted(set(self.config.background) - set(self.env.possible_agents))
        if unknown:
            raise ValueError(
                f"background agents {unknown} are not agents of {self.config.env} ({self.env.possible_agents})"
            )
        self.background_agents = [a for a in self.env.possible_agents if a in self.config.background]
        self.possible_agents = [a for a in self.env.possible_agents if a not in self.config.background]
        if not self.possible_agents:
            raise ValueError("every seat is background: RL training needs at least one focal agent")
        self.agents = []
        self.affect = AffectShaping(self.config.affect) if self.config.affect is not None else None
        n_features = self.affect.n_features if self.affect is not None else 0
        self.observation_spaces = {
            a: module_observation_space(self.env.observation_space(a), n_features)
            for a in self.possible_agents
        }
        self.action_spaces = {a: self.env.action_space(a) for a in self.possible_agents}
        self._loop = asyncio.new_event_loop()  # background policies' methods are coroutines
        self._background_policies = self._build_background_policies()
        for policy in self._unique_background_policies():
            self._loop.run_until_complete(policy.preflight())  # e.g. an LLM server that is down fails here
        # RLlib seeds an env runner's first reset with seed + worker index + sub-env index, so
        # one such seed recurs on several workers: episode seeds also derive from the worker and
        # vector indices of the EnvContext (0 for a plain dict), see _seed_stream.
        self._worker_index = int(getattr(config, "worker_index", 0))
        self._vector_index = int(getattr(config, "vector_index", 0))
        # Seeds each episode when RLlib does not (it seeds only an env runner's first reset).
        self._episode_seeds = self._seed_stream(self.config.seed)
        self._observations: dict[str, Any] = {}
        self._infos: dict[str, Any] = {}
        self._states: dict[str, Any] = {}
        self._levels: dict[str, Any] = {}
        self.episode_seed: int | None = None
        #: the joint action (focal and background) applied at the last step
        self.last_actions: dict[str, Any] = {}

    def _build_background_policies(self) -> dict[str, Policy]:
        configs = [
            SeatConfig(agent, "background", self.config.background[agent]) for agent in self.background_agents
        ]
        return {agent: seat.policy for agent, seat in build_seats(configs, self.config.env).items()}

    def _seed_stream(self, seed: int) -> np.random.Generator:
        """The episode seeds of this sub-environment from ``seed``."""
        return np.random.default_rng([seed, self._worker_index, self._vector_index])

    # ------------------------------------------------------------------ episode
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if seed is not None:
            self._episode_seeds = self._seed_stream(seed)
        self.episode_seed = int(self._episode_seeds.integers(2**31 - 1))
        self._observations, self._infos = self.env.reset(seed=self.episode_seed, options=options)
        agents = tuple(self.env.possible_agents)
        self._states = {
            agent: policy.initial_state(
                AgentContext(
                    agent,
                    self.config.env,
                    agents,
                    self.env.action_schema(agent),
                    self.episode_seed,
                    self.config.scenario,
                )
            )
            for agent, policy in self._background_policies.items()
        }
        self.agents = [a for a in self.env.agents if a in self.observation_spaces]
        if self.affect is not None:
            self._levels = {
                a: self.affect.update(self.affect.initial(), self._infos[a]["events"]) for a in self.agents
            }
        self.last_actions = {}
        return {a: self._module_observation(a) for a in self.agents}, {}

    def step(
        self, action_dict: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, float], dict[str, bool], dict[str, bool], dict[str, Any]]:
        missing = [a for a in self.agents if a not in action_dict]
        if missing:
            raise ValueError(f"no action for focal agents {missing}")
        actions = {a: _env_action(action_dict[a]) for a in self.agents}
        actions.update(self._background_actions())
        self.last_actions = actions
        acting = list(self.agents)
        self._observations, rewards, terminations, truncations, self._infos = self.env.step(actions)

        observations: dict[str, Any] = {}
        focal_rewards: dict[str, float] = {}
        for agent in acting:
            reward = float(rewards[agent])
            if self.affect is not None:
                self._levels[agent] = self.affect.update(self._levels[agent], self._infos[agent]["events"])
                reward += self.affect.reward(self._levels[agent])
            focal_rewards[agent] = reward
            observations[agent] = self._module_observation(agent)
        self.agents = [a for a in self.env.agents if a in self.observation_spaces]
        episode_over = not self.agents  # the learners' episode ends with the last focal agent
        all_terminated = episode_over and all(terminations[a] for a in acting)
        terminateds = {a: bool(terminations[a]) for a in acting} | {"__all__": all_terminated}
        truncateds = {a: bool(truncations[a]) for a in acting} | {
            "__all__": episode_over and not all_terminated
        }
        return observations, focal_rewards, terminateds, truncateds, {}

    def _module_observation(self, agent: str) -> Any:
        features = None
        if self.affect is not None and self.affect.n_features:
            features = self.affect.features(self._levels[agent])
        return module_observation(self._observations[agent], features)

    def _background_actions(self) -> dict[str, Any]:
        """The background seats' actions, every policy deciding for all its seats at once."""
        turns = {
            agent: Turn(agent, self._observations[agent], self._infos[agent], self._states[agent])
            for agent in self.env.agents
            if agent in self._background_policies
        }
        if not turns:
            return {}
        decided = self._loop.run_until_complete(decide_grouped(self._background_policies, turns))
        actions: dict[str, Any] = {}
        for agent, (decision, state) in decided.items():
            actions[agent] = decision.action
            self._states[agent] = state
        return actions

    def _unique_background_policies(self) -> list[Policy]:
        return list({id(p): p for p in self._background_policies.values()}.values())

    def close(self) -> None:
        for policy in self._unique_background_policies():
            self._loop.run_until_complete(policy.close())  # in the loop the policies ran in
        self._loop.close()
        self.env.close()


def _env_action(action: Any) -> Any:
    """RLlib's action as the environment takes it: a catalog index, or a continuous vector."""
    if isinstance(action, np.ndarray) and action.ndim == 0:
        return int(action)
    if isinstance(action, np.integer):
        return int(action)
    return action
