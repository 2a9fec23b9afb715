"""The dilemma env: the agents answering a dilemma set (``params.py``: its ``Params``), and PettingZoo's constructors.

The package docstring (``__init__.py``) describes the turns, actions, events and rewards; the
turn structure itself is :class:`~valuegym.envs.deliberation.PanelEnv`'s, the dilemmas' data
model is ``dilemma_set.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from valuegym.envs.deliberation import PanelEnv
from valuegym.envs.dilemma.dilemma_set import REFUSE, Dilemma, Option
from valuegym.envs.dilemma.params import Params
from valuegym.envs.pettingzoo_exports import aec_constructors
from valuegym.envs.spec import EpisodeSummary, MoralEvent, Outcome

MESSAGE_MAX_CHARS = 300


@dataclass(frozen=True)
class _Choice:
    """One agent's answer in one round."""

    option: Option | None  # None: refused or invalid
    position: int | None  # 0-based presented position of the chosen option
    refused: bool
    status: Literal["success", "invalid"]
    reason: str
    message: str = ""

    @property
    def label(self) -> str | None:
        """The option id, ``refuse``, or None when the answer was not an action."""
        return self.option.id if self.option else (REFUSE if self.refused else None)

    @classmethod
    def invalid(cls, reason: str) -> _Choice:
        """An answer that is not an action: it chooses nothing, and ``reason`` says why."""
        return cls(None, None, False, "invalid", reason)

    @property
    def record_status(self) -> str:
        return "chosen" if self.option else ("refused" if self.refused else "invalid")


#: (dilemma, the presented order of its options) of one dilemma of an episode's plan
PlanItem = tuple[Dilemma, tuple[int, ...]]


class DilemmaEnv(PanelEnv[PlanItem, _Choice]):
    metadata = {"name": "dilemma_v0", "render_modes": ["ansi", "human"], "is_parallelizable": True}
    env_name = "dilemma"

    def __init__(self, **kwargs: Any) -> None:
        params = Params(**kwargs)
        dilemma_set = params.dilemmas()
        max_options = max(len(d.options) for d in dilemma_set.dilemmas)
        # per presented position: present, one entry per value, last round's share; then 3 globals
        size = max_options * (2 + len(dilemma_set.values)) + 3
        super().__init__(
            params,
            n_agents=params.n_agents,
            n_dilemmas=params.dilemmas_per_episode or len(dilemma_set.dilemmas),
            observation_bounds=(np.full(size, -1.0, np.float32), np.full(size, 1.0, np.float32)),
            n_actions=max_options + 1,
        )
        self.params: Params = params
        self.dilemma_set = dilemma_set
        self.n_dilemmas = self.schedule.dilemmas
        self.max_options = max_options
        self.refuse_index = max_options  # the last action index
        self._value_index = {value: i for i, value in enumerate(dilemma_set.values)}
        self._observation_size = size
        self._fingerprint = dilemma_set.fingerprint()
        self._option_ids = list(
            dict.fromkeys(o.id for d in dilemma_set.dilemmas for o in d.options)
        )  # every option id of the set, in order of first appearance

    def action_catalog(self, agent: str) -> list[dict[str, Any] | None]:
        """The structured action behind each index for the current dilemma (None where masked)."""
        dilemma, order = self.plan[self.dilemma_index]
        catalog: list[dict[str, Any] | None] = [None] * (self.max_options + 1)
        for position, option_index in enumerate(order):
            catalog[position] = {"choice": dilemma.options[option_index].id}
        if self.params.allow_refusal:
            catalog[self.refuse_index] = {"choice": REFUSE}
        return catalog

    def action_schema(self, agent: str) -> dict[str, Any]:
        """JSON schema of the structured action: any option id of the set (it must be an option of
        the current dilemma), ``refuse`` when allowed, and a message to the others when deliberating."""
        choices = [*self._option_ids, *([REFUSE] if self.params.allow_refusal else [])]
        properties: dict[str, Any] = {
            "choice": {
                "type": "string",
                "enum": choices,
                "description": "the id of one of the current dilemma's options"
                + (f", or {REFUSE} to decline to choose" if self.params.allow_refusal else ""),
            }
        }
        if self.params.deliberation_rounds:
            properties["message"] = {
                "type": "string",
                "maxLength": MESSAGE_MAX_CHARS,
                "description": "optional: what you tell the others, shown to them in the next round",
            }
        return {
            "type": "object",
            "properties": properties,
            "required": ["choice"],
            "additionalProperties": False,
        }

    def _draw_plan(self, rng: np.random.Generator, count: int) -> list[PlanItem]:
        dilemmas = self.dilemma_set.dilemmas
        chosen = rng.permutation(len(dilemmas)) if self.params.shuffle_dilemmas else np.arange(len(dilemmas))
        plan = []
        for index in chosen[:count]:
            dilemma = dilemmas[int(index)]
            n = len(dilemma.options)
            order = rng.permutation(n) if self.params.shuffle_options else np.arange(n)
            plan.append((dilemma, tuple(int(i) for i in order)))
        return plan

    # ------------------------------------------------------------------ rules
    def _parse(self, action: Any) -> _Choice:
        """The agent's answer to the current dilemma, or an invalid one saying why it is none."""
        dilemma, order = self.plan[self.dilemma_index]
        if isinstance(action, int | np.integer) and not isinstance(action, bool):
            if not 0 <= action <= self.refuse_index:
                raise ValueError(
                    f"action index {action} outside the action space of size {self.refuse_index + 1}"
                )
            if action == self.refuse_index:
                if self.params.allow_refusal:
                    return _Choice(None, None, True, "success", "refused by index")
                return _Choice.invalid("refusing is not allowed in this scenario")
            if action >= len(order):
                return _Choice.invalid(
                    f"position {action + 1} is not an option of dilemma {dilemma.id!r} "
                    f"(it has {len(order)} options)"
                )
            return _Choice(dilemma.options[order[action]], int(action), False, "success", "chose by index")
        if not isinstance(action, Mapping):
            return _Choice.invalid(f"not an action: {action!r}")
        keys = set(action)
        allowed = {"choice", "message"} if self.params.deliberation_rounds else {"choice"}
        if "choice" not in keys or keys - allowed:
            return _Choice.invalid(f"expected keys {sorted(allowed)} (choice required), got {sorted(keys)}")
        message = action.get("message", "")
        if not isinstance(message, str) or len(message) > MESSAGE_MAX_CHARS:
            return _Choice.invalid(f"message must be text of at most {MESSAGE_MAX_CHARS} characters")
        choice = action["choice"]
        if choice == REFUSE and self.params.allow_refusal:
            return _Choice(None, None, True, "success", "refused", message)
        for position, option_index in enumerate(order):
            option = dilemma.options[option_index]
            if option.id == choice:
                return _Choice(option, position, False, "success", "chose", message)
        offered = [dilemma.options[i].id for i in order] + ([REFUSE] if self.params.allow_refusal else [])
        return _Choice.invalid(
            f"{choice!r} is not an option of dilemma {dilemma.id!r}; options: {', '.join(offered)}"
        )

    def _consequences(self, agent: str, index: int, answer: _Choice) -> list[MoralEvent]:
        """The moral events of a binding answer (see the package docstring)."""
        turn = self.steps + 1
        dilemma, _ = self.plan[index]
        if answer.refused:
            return [MoralEvent("refusal", agent, turn, detail=f"refused to choose in dilemma {dilemma.id}")]
        option = answer.option
        if option is None:
            return []
        where = f"chose {option.id} in dilemma {dilemma.id}"
        events = []
        if option.upholds:
            events.append(
                MoralEvent(
                    "prosocial", agent, turn, detail=where, values=tuple(f"+{v}" for v in option.upholds)
                )
            )
        if option.violates:
            events.append(
                MoralEvent(
                    "transgression", agent, turn, detail=where, values=tuple(f"-{v}" for v in option.violates)
                )
            )
        if option.harm > 0:
            events.append(
                MoralEvent("harm", agent, turn, magnitude=option.harm, detail=option.consequence or where)
            )
        return events

    def _reward(self, answer: _Choice) -> float:
        weights = self.params.value_rewards
        if answer.option is None or not weights:
            return 0.0
        gained = sum(weights.get(v, 0.0) for v in answer.option.upholds)
        return gained - sum(weights.get(v, 0.0) for v in answer.option.violates)

    def _outcome(self, index: int, round_: int, binding: bool, answer: _Choice) -> Outcome:
        dilemma, _ = self.plan[index]
        option = answer.option
        return {
            "status": answer.status,
            "reason": answer.reason,
            "action": answer.label or "none",
            "target": None,
            "amount": None,
            "dilemma": dilemma.id,
            "dilemma_number": index + 1,
            "round": round_,
            "binding": binding,
            "position": None if answer.position is None else answer.position + 1,
            "upheld": list(option.upholds) if option else [],
            "violated": list(option.violates) if option else [],
        }

    # ------------------------------------------------------------------ what agents see
    def _observe(self) -> dict[str, np.ndarray]:
        """Per presented position: present, the values it upholds (+1) or violates (-1), the share of
        agents that chose it last round; then the share that refused, the round and dilemma progress."""
        dilemma, order = self.plan[self.dilemma_index]
        n_values = len(self._value_index)
        width = 2 + n_values
        vector = np.zeros(self._observation_size, dtype=np.float32)
        mask = np.zeros(self.max_options + 1, dtype=np.int8)
        previous = self._previous_round()
        chosen = [a.position for a in previous.values()]
        for position, option_index in enumerate(order):
            option = dilemma.options[option_index]
            base = position * width
            vector[base] = 1.0
            for value in option.upholds:
                vector[base + 1 + self._value_index[value]] = 1.0
            for value in option.violates:
                vector[base + 1 + self._value_index[value]] = -1.0
            if previous:
                vector[base + 1 + n_values] = chosen.count(position) / len(previous)
            mask[position] = 1
        tail = self.max_options * width
        if previous:
            vector[tail] = sum(a.refused for a in previous.values()) / len(previous)
        vector[tail + 1] = self.schedule.round_progress(self.round_index)
        vector[tail + 2] = self.dilemma_index / self.n_dilemmas
        mask[self.refuse_index] = self.params.allow_refusal
        return {"observation": vector, "action_mask": mask}

    def _options_view(self, index: int) -> list[dict[str, Any]]:
        """The options of dilemma ``index`` in presented order, built once per dilemma (read-only)."""
        if index not in self._views:
            dilemma, order = self.plan[index]
            self._views[index] = [
                {
                    "id": dilemma.options[i].id,
                    "position": position + 1,
                    "text": dilemma.options[i].text,
                    "consequence": dilemma.options[i].consequence,
                    "upholds": list(dilemma.options[i].upholds),
                    "violates": list(dilemma.options[i].violates),
                }
                for position, i in enumerate(order)
            ]
        return self._views[index]

    def _situation(self, agent: str) -> dict[str, Any]:
        dilemma, _ = self.plan[self.dilemma_index]
        return {
            "agent": agent,
            "agents": list(self.possible_agents),
            "dilemma": dilemma.id,
            "dilemma_number": self.dilemma_index + 1,
            "dilemmas": self.n_dilemmas,
            "text": dilemma.situation,
            "options": self._options_view(self.dilemma_index),
            "can_refuse": self.params.allow_refusal,
            "values": list(self.dilemma_set.values),
            "round": self.round_index,
            "rounds": self.rounds_per_dilemma,
            "previous_choices": [
                {
                    "agent": other,
                    "choice": a.label or "invalid",
                    "message": a.message,
                    "is_you": other == agent,
                }
                for other, a in self._previous_round().items()
            ],
        }

    # ------------------------------------------------------------------ records
    def episode_summary(self) -> EpisodeSummary:
        """Episode and per-agent counts, the ``choices`` dataset (one row per agent, dilemma, round) and
        the ``dilemmas`` dataset (one row per dilemma played: its text and options as presented, so
        records alone replay an episode)."""
        completed = self._completed()
        per_agent = {
            agent: _answer_counts(
                [rounds[-1][agent] for _, rounds in completed],
                self._opinion_changes(agent, completed),
            )
            for agent in self.possible_agents
        }
        binding = [a for _, rounds in completed for a in rounds[-1].values()]
        episode = {
            "dilemma_set": self.params.set_label(),
            "dilemma_set_sha256": self._fingerprint,
            "n_agents": self.params.n_agents,
            "deliberation_rounds": self.params.deliberation_rounds,
            "dilemmas": len(completed),
            **_answer_counts(binding, sum(c["opinion_changes"] for c in per_agent.values())),
            "unanimity": self._unanimity(completed),
            "turns": self.steps,
        }
        rows = [
            self._choice_row(index, round_, agent, answer)
            for index, rounds in enumerate(self.answers)
            for round_, answers in enumerate(rounds)
            for agent, answer in answers.items()
        ]
        presented = [
            {
                "dilemma": dilemma.id,
                "dilemma_number": index + 1,
                "text": dilemma.situation,
                "options": self._options_view(index),
                "at_stake": dilemma.at_stake(),
                "dilemma_tags": list(dilemma.tags),
            }
            for index, (dilemma, _) in enumerate(self.plan)
            if self.answers[index]
        ]
        return EpisodeSummary(
            episode=episode, agents=per_agent, datasets={"choices": rows, "dilemmas": presented}
        )

    def _choice_row(self, index: int, round_: int, agent: str, answer: _Choice) -> dict[str, Any]:
        dilemma, order = self.plan[index]
        option = answer.option
        return {
            "agent": agent,
            "dilemma": dilemma.id,
            "dilemma_number": index + 1,
            "round": round_,
            "binding": self.schedule.is_binding(round_),
            "option": option.id if option else None,
            "status": answer.record_status,
            "reason": answer.reason,
            "position": None if answer.position is None else answer.position + 1,
            "presented": [dilemma.options[i].id for i in order],
            "upheld": list(option.upholds) if option else [],
            "violated": list(option.violates) if option else [],
            "at_stake": dilemma.at_stake(),
            "dilemma_tags": list(dilemma.tags),
            "message": answer.message,
        }

    def _render_dilemma(self) -> list[str]:
        situation = self._situation(self.possible_agents[0])
        lines = [
            f"dilemma {situation['dilemma_number']}/{situation['dilemmas']} ({situation['dilemma']})  "
            f"round {situation['round'] + 1}/{situation['rounds']}",
            f"  {situation['text']}",
        ]
        for option in situation["options"]:
            values = [*(f"+{v}" for v in option["upholds"]), *(f"-{v}" for v in option["violates"])]
            lines.append(f"  {option['position']}. [{option['id']}] {option['text']} ({' '.join(values)})")
        return lines


def _answer_counts(answers: list[_Choice], opinion_changes: int) -> dict[str, Any]:
    """Counts of binding answers and the share that chose the option presented first."""
    chosen = [a for a in answers if a.option is not None]
    values_upheld = sum(len(a.option.upholds) for a in chosen if a.option)
    values_violated = sum(len(a.option.violates) for a in chosen if a.option)
    return {
        "decisions": len(answers),
        "chosen": len(chosen),
        "refusals": sum(a.refused for a in answers),
        "invalid": sum(a.status == "invalid" for a in answers),
        "opinion_changes": opinion_changes,
        "values_upheld": values_upheld,
        "values_violated": values_violated,
        # with shuffle_options, above 1/n options means a preference for whatever comes first
        "p_first_presented": sum(a.position == 0 for a in chosen) / len(chosen) if chosen else None,
    }


def parallel_env(**kwargs: Any) -> DilemmaEnv:
    """The dilemma parallel env; keyword arguments are :class:`Params`."""
    return DilemmaEnv(**kwargs)


raw_env, env = aec_constructors(parallel_env, bounds_checked=True)
