"""RL without training: the adapter's episode seeds per env runner, and the checkpoint-backed
policy's one forward pass for a batch of seats."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from ray.rllib.env.env_context import EnvContext

from valuegym.agents.policy import AgentContext, Turn
from valuegym.agents.rl.policy import CheckpointInfo, RLPolicy, module_path
from valuegym.envs import make_parallel
from valuegym.scenarios import load_scenario
from valuegym.training.env_adapter import AdapterConfig, ValuegymMultiAgentEnv

DECIDE_SIM_AGENTS = ("Alpha", "Beta", "Gamma", "Delta")


# ---------------------------------------------------------------------- env runner seeds
def adapter(worker_index: int, vector_index: int = 0) -> ValuegymMultiAgentEnv:
    env_config = AdapterConfig(
        env="decide_sim", params=load_scenario("decide_sim/high").params
    ).to_env_config()
    return ValuegymMultiAgentEnv(EnvContext(env_config, worker_index=worker_index, vector_index=vector_index))


def episode_seeds(env: ValuegymMultiAgentEnv, first_seed: int, episodes: int = 3) -> list[int]:
    env.reset(seed=first_seed)
    seeds = [env.episode_seed]
    for _ in range(episodes - 1):
        env.reset()
        seeds.append(env.episode_seed)
    return seeds


def test_env_runners_given_the_same_reset_seed_play_different_episodes() -> None:
    rllib_seed = 10
    # RLlib's seed for sub-environment i of worker w is seed + w + i: (1, 1) and (2, 0) collide.
    worker_1_env_1 = episode_seeds(adapter(worker_index=1), rllib_seed + 1 + 1)
    worker_2_env_0 = episode_seeds(adapter(worker_index=2), rllib_seed + 2 + 0)
    assert set(worker_1_env_1).isdisjoint(worker_2_env_0)
    other_vector_index = episode_seeds(adapter(worker_index=1, vector_index=1), rllib_seed + 1 + 1)
    assert set(other_vector_index).isdisjoint(worker_1_env_1)
    assert episode_seeds(adapter(worker_index=1), rllib_seed + 1 + 1) == worker_1_env_1  # reproducible


def test_a_plain_env_config_keeps_its_episode_seeds() -> None:
    env_config = AdapterConfig(
        env="decide_sim", params=load_scenario("decide_sim/high").params
    ).to_env_config()
    env = ValuegymMultiAgentEnv(env_config)
    env.reset(seed=7)
    assert env.episode_seed == int(np.random.default_rng(7).integers(2**31 - 1))  # as before the fix


# ---------------------------------------------------------------------- batched RL forward pass
@pytest.mark.parametrize("deterministic", [True, False])
def test_rl_policy_decides_a_batch_in_one_forward_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deterministic: bool
) -> None:
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from valuegym.agents.rl.module import MaskedPPOTorchRLModule

    params = load_scenario("decide_sim/high").params
    probe = ValuegymMultiAgentEnv(AdapterConfig(env="decide_sim", params=params).to_env_config())
    torch.manual_seed(0)
    module = RLModuleSpec(
        module_class=MaskedPPOTorchRLModule,
        observation_space=probe.observation_spaces["Alpha"],
        action_space=probe.action_spaces["Alpha"],
        model_config=DefaultModelConfig(fcnet_hiddens=[8]),
    ).build()
    checkpoint = tmp_path / "checkpoint"
    module.save_to_path(module_path(checkpoint, "shared"))
    CheckpointInfo("decide_sim", "decide_sim/high", {"shared": list(DECIDE_SIM_AGENTS)}, None, 0).write(
        checkpoint
    )

    env = make_parallel("decide_sim", **params)
    observations, infos = env.reset(seed=3)
    policy = RLPolicy(checkpoint, "decide_sim", deterministic=deterministic)

    def turns() -> list[Turn]:
        return [
            Turn(
                agent,
                observations[agent],
                infos[agent],
                policy.initial_state(AgentContext(agent, "decide_sim", DECIDE_SIM_AGENTS, {}, 3)),
            )
            for agent in DECIDE_SIM_AGENTS
        ]

    one_by_one = [policy.step(turn)[0].action for turn in turns()]
    passes = []
    forward = policy.module.forward_inference

    def counted(batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        passes.append(len(batch["obs"]["action_mask"]))
        return forward(batch, **kwargs)

    monkeypatch.setattr(policy.module, "forward_inference", counted)
    batched = [decision.action for decision, _ in asyncio.run(policy.step_batch(turns()))]
    assert passes == [len(DECIDE_SIM_AGENTS)]
    assert batched == one_by_one
    assert all(
        observations[a]["action_mask"][action] == 1
        for a, action in zip(DECIDE_SIM_AGENTS, batched, strict=True)
    )
