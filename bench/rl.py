"""Environment steps per second sampled by RLlib beside the raw environment's rate.

DECIDE-SIM at high scarcity (four learning agents, 13-turn episodes). Three rates, all in
environment steps (one step = every agent acting once):

* raw env: the ParallelEnv with random valid (masked) actions;
* adapter: the same through the RLlib adapter (renamed keys, float masks), still random actions;
* RLlib sampling: the local env runner of a PPO algorithm, i.e. the adapter plus RLlib's
  connectors, episode bookkeeping and one batched forward pass of the masking module per step.

The ratio is RLlib sampling over the raw env. Target 0.02: RLlib's fixed cost per env step
(connector pipelines, a torch forward, episode buffers) is around a millisecond, while a
DECIDE-SIM step costs tens of microseconds, so sampling cannot approach the raw rate; a ratio
under 0.02 would mean our adapter or masking module adds more than RLlib itself.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from bench._common import rate, result, table

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from valuegym.envs import make_parallel
from valuegym.scenarios import register_scenarios, scenario_from_dict
from valuegym.training import train as training
from valuegym.training.env_adapter import ValuegymMultiAgentEnv

TARGET = 0.02
SCENARIO = "decide_sim/high"
EPISODES_PER_ROUND = 10


def random_episodes(env: Any, rng: np.random.Generator, reset: Any, mask_of: Any) -> int:
    """Play ``EPISODES_PER_ROUND`` episodes of random valid actions; returns the env steps."""
    steps = 0
    for _ in range(EPISODES_PER_ROUND):
        observations = reset()
        while env.agents:
            actions = {a: int(rng.choice(np.flatnonzero(mask_of(observations[a])))) for a in env.agents}
            observations = env.step(actions)[0]
            steps += 1
    return steps


def main() -> None:
    register_scenarios()
    with initialize_config_module("valuegym.conf", version_base="1.3"):
        cfg = compose(
            "train", overrides=[f"scenario={SCENARIO}", "train_batch_size=520", "minibatch_size=130"]
        )
    scenario = scenario_from_dict(OmegaConf.to_container(cfg.scenario, resolve=True), name=SCENARIO)
    plan = training.training_plan(cfg, scenario)

    raw = make_parallel(scenario.env, **plan.adapter.params)
    raw_rng, seeds = np.random.default_rng(0), iter(range(10**9))
    raw_rate = rate(
        lambda: random_episodes(
            raw, raw_rng, lambda: raw.reset(seed=next(seeds))[0], lambda o: o["action_mask"]
        )
    )

    adapter = ValuegymMultiAgentEnv(plan.adapter.to_env_config())
    adapter.reset(seed=0)
    adapter_rng = np.random.default_rng(0)
    adapter_rate = rate(
        lambda: random_episodes(adapter, adapter_rng, lambda: adapter.reset()[0], lambda o: o["action_mask"])
    )

    with training.ray_session(address=None, num_cpus=1):
        algo = training.build_algorithm(cfg, plan)
        try:
            runner = algo.env_runner

            def sample() -> int:
                return sum(e.env_steps() for e in runner.sample(num_timesteps=520, explore=True))

            rllib_rate = rate(sample, min_seconds=5.0)
        finally:
            algo.stop()

    ratio = rllib_rate / raw_rate
    print(
        f"bench/rl: env steps per second, {SCENARIO}, {len(raw.possible_agents)} agents, random valid actions"
    )
    table(
        [
            ("raw env", f"{raw_rate:10,.0f} steps/s"),
            ("adapter (no RLlib)", f"{adapter_rate:10,.0f} steps/s  ({adapter_rate / raw_rate:.2f} of raw)"),
            ("RLlib sampling", f"{rllib_rate:10,.0f} steps/s"),
            ("ratio", f"{ratio:10.3f}  (target >= {TARGET})"),
        ]
    )
    result("rl", ratio, TARGET)


if __name__ == "__main__":
    main()
