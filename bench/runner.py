"""Scripted DECIDE-SIM episodes per second through the runner (records written to Parquet)
beside a bare loop over the env with the same policies and no records."""

from __future__ import annotations

import asyncio
import time

from bench._common import episodes_per_second, result, scripted, table
from valuegym.agents.policy import AgentContext, Turn
from valuegym.envs import make_parallel
from valuegym.runner.experiment import Experiment

TARGET = 0.5
EPISODES = 2000


def bare_loop(exp: Experiment) -> float:
    """The same episodes and policies, stepping one reused env directly."""
    setup = exp.setup()
    env = make_parallel(exp.scenario.env, **exp.scenario.params)
    start = time.perf_counter()
    for plan in exp.plans():
        observations, infos = env.reset(seed=plan.seed)
        agents = tuple(env.possible_agents)
        states = {
            a: setup.seats[a].policy.initial_state(AgentContext(a, exp.scenario.env, agents, {}, plan.seed))
            for a in agents
        }
        while env.agents:
            actions = {}
            for agent in env.agents:
                decision, states[agent] = setup.seats[agent].policy.step(
                    Turn(agent, observations[agent], infos[agent], states[agent])
                )
                actions[agent] = decision.action
            observations, _, _, _, infos = env.step(actions)
        env.episode_summary()
    return EPISODES / (time.perf_counter() - start)


def main() -> None:
    exp = scripted(EPISODES)
    asyncio.run(asyncio.sleep(0))  # import asyncio machinery before timing
    bare = bare_loop(exp)
    runner = episodes_per_second(exp, {"type": "local"})
    ratio = runner / bare
    print(f"bench/runner: {EPISODES} scripted DECIDE-SIM episodes (low scarcity, context_dependent)")
    table(
        [
            ("bare loop", f"{bare:10,.0f} episodes/s"),
            ("runner + records", f"{runner:10,.0f} episodes/s"),
            ("ratio", f"{ratio:10.3f}  (target >= {TARGET})"),
        ]
    )
    result("runner", ratio, TARGET)


if __name__ == "__main__":
    main()
