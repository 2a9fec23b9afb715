"""DECIDE-SIM steps per second beside a do-nothing ParallelEnv with the same agents and spaces.

The ratio says how much of a step's time is the simulation itself; the same random
actions (precomputed) drive both environments.
"""

from __future__ import annotations

import numpy as np
from pettingzoo import ParallelEnv

from bench._common import rate, result, table
from valuegym.envs.decide_sim import parallel_env

TARGET = 0.25


class DoNothingEnv(ParallelEnv):
    """Same agents, spaces and episode length as DECIDE-SIM, and no dynamics at all.

    Like any env it hands out a fresh observation per agent per step (callers may keep
    them); ``reuse_observations=True`` returns the same arrays every step instead, the
    absolute floor no real environment can reach (printed for reference).
    """

    metadata = {"name": "do_nothing"}

    def __init__(self, template: ParallelEnv, max_turns: int, reuse_observations: bool = False) -> None:
        self.reuse_observations = reuse_observations
        self.possible_agents = list(template.possible_agents)
        self._spaces = {
            a: (template.observation_space(a), template.action_space(a)) for a in self.possible_agents
        }
        self._obs = {a: self._spaces[a][0].sample() for a in self.possible_agents}
        self.max_turns = max_turns

    def observation_space(self, agent):  # built once, as in the valuegym envs
        return self._spaces[agent][0]

    def action_space(self, agent):
        return self._spaces[agent][1]

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        self.turn = 1
        return dict(self._obs), {a: {} for a in self.agents}

    def step(self, actions):
        done = self.turn >= self.max_turns
        self.turn += 1
        agents = self.agents
        if self.reuse_observations:
            observations = {a: self._obs[a] for a in agents}
        else:
            observations = {a: {k: v.copy() for k, v in self._obs[a].items()} for a in agents}
        out = (
            observations,
            dict.fromkeys(agents, 0.0),
            dict.fromkeys(agents, False),
            dict.fromkeys(agents, done),
            {a: {} for a in agents},
        )
        if done:
            self.agents = []
        return out


def episodes_of(env: ParallelEnv, actions: np.ndarray, episodes: int = 20) -> int:
    steps = 0
    for episode in range(episodes):
        env.reset(seed=episode)
        while env.agents:
            env.step({a: int(actions[steps % len(actions), i]) for i, a in enumerate(env.agents)})
            steps += 1
    return steps


def main() -> None:
    decide = parallel_env(scarcity="medium")  # nobody shuts down: 13 full steps per episode
    nothing = DoNothingEnv(decide, decide.max_turns)
    floor = DoNothingEnv(decide, decide.max_turns, reuse_observations=True)
    actions = np.random.default_rng(0).integers(0, decide.action_space("Alpha").n, size=(10_000, 4))
    decide_rate = rate(lambda: episodes_of(decide, actions))
    nothing_rate = rate(lambda: episodes_of(nothing, actions))
    floor_rate = rate(lambda: episodes_of(floor, actions))
    ratio = decide_rate / nothing_rate
    print("bench/env_step: parallel steps per second (4 agents, random catalog actions)")
    table(
        [
            ("DECIDE-SIM", f"{decide_rate:12,.0f} steps/s"),
            ("do-nothing env (fresh obs)", f"{nothing_rate:12,.0f} steps/s"),
            (
                "do-nothing env (reused obs)",
                f"{floor_rate:12,.0f} steps/s   ratio {decide_rate / floor_rate:.3f}",
            ),
            ("ratio to fresh-obs baseline", f"{ratio:12.3f}  (target >= {TARGET})"),
        ]
    )
    result("env_step", ratio, TARGET)


if __name__ == "__main__":
    main()
