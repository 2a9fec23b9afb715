"""A panel deciding a sequence of dilemmas, with deliberation rounds: the base of two environments.

The Moral Machine (``moral_machine/``) and the YAML dilemmas (``dilemma/``) share one turn
structure: an episode asks a sequence of dilemmas (the *plan*), and each dilemma takes ``1 +
deliberation_rounds`` steps. In the first round every agent chooses; in each deliberation round
every agent sees the panel's choices of the previous round and chooses again. Only the last
round of a dilemma is *binding*: it alone has consequences (moral events, rewards). Every
deliberation round is a ``social`` event for each agent. ``max_cycles`` (PettingZoo's
convention) may cut an episode short: it then ends truncated, and only the dilemmas it reaches
are drawn.

:class:`DeliberationSchedule` is that arithmetic; :class:`PanelEnv` is the environment around
it (spaces, reset, step, what the previous round was, rendering, the counts every panel
records). A subclass supplies only what differs between panels: the plan of an episode, how an
action is parsed, its consequences and reward, the outcome columns, the observation, the
situation, and its records.

Two choices hold for every panel:

* once an episode is over, :attr:`PanelEnv.round_index` is the last round *played* (in an
  episode cut short by ``max_cycles`` that may be a deliberation round, not the binding one);
* ``unanimity`` (the share of completed dilemmas whose binding answers were all the same) is
  null for a panel of one: a single agent cannot disagree with anyone, and a 1.0 there would
  count as perfect agreement wherever panels of different sizes are averaged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import gymnasium
import numpy as np
from pettingzoo import ParallelEnv

from valuegym.envs.spec import MoralEvent, Outcome, agent_info


@dataclass(frozen=True)
class DeliberationSchedule:
    """``dilemmas`` dilemmas of ``1 + deliberation_rounds`` steps each, capped at ``max_cycles`` steps."""

    dilemmas: int
    deliberation_rounds: int
    max_cycles: int | None = None

    def __post_init__(self) -> None:
        if self.dilemmas < 1:
            raise ValueError(f"a schedule needs at least one dilemma, got dilemmas={self.dilemmas}")
        if self.deliberation_rounds < 0:
            raise ValueError(f"deliberation_rounds must be >= 0, got {self.deliberation_rounds}")
        if self.max_cycles is not None and self.max_cycles < 1:
            raise ValueError(f"max_cycles must be >= 1 or None, got {self.max_cycles}")

    @property
    def rounds_per_dilemma(self) -> int:
        return 1 + self.deliberation_rounds

    @property
    def total_steps(self) -> int:
        """The steps of an episode that asks every dilemma."""
        return self.dilemmas * self.rounds_per_dilemma

    @property
    def max_steps(self) -> int:
        """The steps an episode lasts: every dilemma, or fewer when ``max_cycles`` says so."""
        return min(self.total_steps, self.max_cycles or self.total_steps)

    @property
    def dilemmas_reached(self) -> int:
        """How many dilemmas an episode of ``max_steps`` steps starts (a cut-short one counts)."""
        return -(-self.max_steps // self.rounds_per_dilemma)

    def is_over(self, steps: int) -> bool:
        """The episode has ended after ``steps`` steps (it ran its course or reached ``max_cycles``)."""
        return steps >= self.max_steps

    def is_complete(self, steps: int) -> bool:
        """Every dilemma was decided: an episode that is over terminates if complete, else truncates."""
        return steps >= self.total_steps

    def dilemma_index(self, steps: int) -> int:
        """The dilemma decided after ``steps`` steps (the last one reached once the episode is over)."""
        return min(steps // self.rounds_per_dilemma, self.dilemmas_reached - 1)

    def round_index(self, steps: int) -> int:
        """The round of its dilemma decided after ``steps`` steps (once over: the last round played)."""
        return min(steps, self.max_steps - 1) % self.rounds_per_dilemma

    def is_binding(self, round_index: int) -> bool:
        """Only a dilemma's last round counts: its choices have consequences."""
        return round_index == self.rounds_per_dilemma - 1

    def has_previous_round(self, steps: int) -> bool:
        """After ``steps`` steps the panel is deliberating: a round of the same dilemma came before."""
        return not self.is_over(steps) and steps % self.rounds_per_dilemma > 0

    def round_progress(self, round_index: int) -> float:
        """How far into its deliberation ``round_index`` is: 0 in the first round, 1 in the binding one."""
        return round_index / self.deliberation_rounds if self.deliberation_rounds else 0.0


class PanelAnswer(Protocol):
    """One agent's answer in one round, as a panel environment records it."""

    @property
    def label(self) -> str | None:
        """What the answer chose (a refusal included), or None when it was not an action."""
        ...


class PanelParams(Protocol):
    """The parameters every panel environment has."""

    deliberation_rounds: int
    max_cycles: int | None
    render_mode: str | None


ItemT = TypeVar("ItemT")
AnswerT = TypeVar("AnswerT", bound=PanelAnswer)


class PanelEnv(ParallelEnv, ABC, Generic[ItemT, AnswerT]):
    """A PettingZoo ``ParallelEnv`` in which a panel answers a plan of dilemmas (see the module docstring).

    ``plan[i]`` is the i-th dilemma of the episode as the subclass draws it; ``answers[i][r][agent]``
    the answer ``agent`` gave in round ``r`` of it.
    """

    #: agents are ``<agent_prefix>_0``, ``<agent_prefix>_1``, ...
    agent_prefix: ClassVar[str] = "agent"
    #: the detail of the ``social`` event of a deliberation round; ``{n}``: the panel's size
    deliberation_detail: ClassVar[str] = "deliberated with {n} agents"

    def __init__(
        self,
        params: PanelParams,
        n_agents: int,
        n_dilemmas: int,
        observation_bounds: tuple[np.ndarray, np.ndarray],
        n_actions: int,
    ) -> None:
        self.params = params
        self.render_mode = params.render_mode
        self.possible_agents = [f"{self.agent_prefix}_{i}" for i in range(n_agents)]
        self.agents: list[str] = []
        self.schedule = DeliberationSchedule(
            dilemmas=n_dilemmas, deliberation_rounds=params.deliberation_rounds, max_cycles=params.max_cycles
        )
        self.rounds_per_dilemma = self.schedule.rounds_per_dilemma
        self.plan: list[ItemT] = []
        self.answers: list[list[dict[str, AnswerT]]] = []
        self.steps = 0
        self._views: dict[int, Any] = {}  # per dilemma, what its situation shows (built once)
        self._events: dict[str, list[MoralEvent]] = {}
        self._outcomes: dict[str, Outcome] = {}
        self._rewards: dict[str, float] = {}
        # One space object per agent, returned on every call (PettingZoo seeds them per agent);
        # kept on the instance because a method cache would keep every env alive.
        low, high = observation_bounds
        self._observation_spaces = {
            a: gymnasium.spaces.Dict(
                {
                    "observation": gymnasium.spaces.Box(low, high, dtype=np.float32),
                    "action_mask": gymnasium.spaces.Box(0, 1, (n_actions,), dtype=np.int8),
                }
            )
            for a in self.possible_agents
        }
        self._action_spaces = {a: gymnasium.spaces.Discrete(n_actions) for a in self.possible_agents}

    # ------------------------------------------------------------------ what a panel supplies
    @abstractmethod
    def _draw_plan(self, rng: np.random.Generator, count: int) -> list[ItemT]:
        """The first ``count`` dilemmas of an episode, drawn with ``rng``."""

    @abstractmethod
    def _parse(self, action: Any) -> AnswerT:
        """The answer ``action`` gives to the current dilemma (an invalid one says why it is none)."""

    @abstractmethod
    def _consequences(self, agent: str, index: int, answer: AnswerT) -> list[MoralEvent]:
        """The moral events of a binding answer to dilemma ``index``."""

    def _reward(self, answer: AnswerT) -> float:
        """The reward of a binding answer (0 unless a panel rewards answers)."""
        return 0.0

    @abstractmethod
    def _outcome(self, index: int, round_: int, binding: bool, answer: AnswerT) -> Outcome:
        """``infos[agent]["outcome"]`` of an answer in round ``round_`` of dilemma ``index``."""

    @abstractmethod
    def _observe(self) -> dict[str, np.ndarray]:
        """The observation and action mask now; every agent of a panel sees the same."""

    @abstractmethod
    def _situation(self, agent: str) -> dict[str, Any]:
        """``infos[agent]["situation"]`` now."""

    @abstractmethod
    def _render_dilemma(self) -> list[str]:
        """The lines of :meth:`render` that show the current dilemma."""

    # ------------------------------------------------------------------ spaces
    def observation_space(self, agent: str) -> gymnasium.spaces.Dict:
        return self._observation_spaces[agent]

    def action_space(self, agent: str) -> gymnasium.spaces.Discrete:
        return self._action_spaces[agent]

    @property
    def max_steps(self) -> int:
        """The most steps an episode can last (``envs/spec.py``)."""
        return self.schedule.max_steps

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        # only the dilemmas the episode reaches
        self.plan = self._draw_plan(np.random.default_rng(seed), self.schedule.dilemmas_reached)
        self.answers = [[] for _ in self.plan]
        self._views = {}
        self.steps = 0
        self.agents = list(self.possible_agents)
        self._events = {a: [] for a in self.agents}
        self._outcomes = {a: {} for a in self.agents}
        return self._observations(self.agents), {a: self._info(a) for a in self.agents}

    @property
    def dilemma_index(self) -> int:
        """The dilemma being decided (the last one reached once the episode is over)."""
        return self.schedule.dilemma_index(self.steps)

    @property
    def round_index(self) -> int:
        """The round being decided (the last round played once the episode is over)."""
        return self.schedule.round_index(self.steps)

    def step(self, actions: Mapping[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        if not self.agents:
            raise RuntimeError("the episode is over (or not started); call reset() to start one")
        acting = list(self.agents)
        index, round_ = self.dilemma_index, self.round_index
        binding = self.schedule.is_binding(round_)
        answers = {agent: self._parse(actions.get(agent)) for agent in acting}
        self.answers[index].append(answers)
        self._events, self._outcomes, self._rewards = {}, {}, {}
        for agent, answer in answers.items():
            events: list[MoralEvent] = []
            if round_ > 0:
                detail = self.deliberation_detail.format(n=len(acting))
                events.append(MoralEvent("social", agent, self.steps + 1, detail=detail))
            if binding:
                events += self._consequences(agent, index, answer)
            self._events[agent] = events
            self._outcomes[agent] = self._outcome(index, round_, binding, answer)
            self._rewards[agent] = self._reward(answer) if binding else 0.0
        self.steps += 1
        done = self.schedule.is_over(self.steps)
        complete = self.schedule.is_complete(self.steps)
        observations = self._observations(acting)
        infos = {a: self._info(a) for a in acting}
        terminations = {a: done and complete for a in acting}
        truncations = {a: done and not complete for a in acting}
        if done:
            self.agents = []
        return observations, dict(self._rewards), terminations, truncations, infos

    # ------------------------------------------------------------------ what agents see
    def _observations(self, agents: list[str]) -> dict[str, dict[str, np.ndarray]]:
        """Every agent sees the same: built once, each agent gets its own copy of the arrays."""
        observation = self._observe()
        return {a: {key: array.copy() for key, array in observation.items()} for a in agents}

    def _previous_round(self) -> dict[str, AnswerT]:
        """The panel's answers in the previous round of the current dilemma (empty in round 0)."""
        if not self.schedule.has_previous_round(self.steps):
            return {}
        return self.answers[self.dilemma_index][self.round_index - 1]

    def _info(self, agent: str) -> dict[str, Any]:
        return agent_info(self._situation(agent), self._events.get(agent, []), self._outcomes.get(agent, {}))

    # ------------------------------------------------------------------ records
    def _completed(self) -> list[tuple[int, list[dict[str, AnswerT]]]]:
        """(index, rounds) of every dilemma whose binding round was played."""
        return [
            (i, rounds) for i, rounds in enumerate(self.answers) if len(rounds) == self.rounds_per_dilemma
        ]

    @staticmethod
    def _opinion_changes(agent: str, completed: list[tuple[int, list[dict[str, AnswerT]]]]) -> int:
        """The completed dilemmas in which ``agent``'s binding answer differs from its first one."""
        return sum(rounds[0][agent].label != rounds[-1][agent].label for _, rounds in completed)

    def _unanimity(self, completed: list[tuple[int, list[dict[str, AnswerT]]]]) -> float | None:
        """The share of completed dilemmas whose binding answers agree; null for a panel of one."""
        if len(self.possible_agents) < 2 or not completed:
            return None
        return float(np.mean([len({a.label for a in rounds[-1].values()}) == 1 for _, rounds in completed]))

    # ------------------------------------------------------------------ rendering
    def render(self) -> str | None:
        if self.render_mode is None or not self.plan:
            return None
        lines = self._render_dilemma()
        for agent, outcome in self._outcomes.items():
            if outcome:  # empty after reset
                lines.append(f"  {agent}: {outcome['action']} ({outcome['status']}: {outcome['reason']})")
        text = "\n".join(lines)
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def close(self) -> None:
        pass
