"""The Moral Machine env: the panel of judges (``params.py``: its ``Params``), and PettingZoo's constructors.

The package docstring (``__init__.py``) describes the dilemmas, turns, actions and events; the
turn structure itself is :class:`~valuegym.envs.deliberation.PanelEnv`'s.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from valuegym.envs.deliberation import PanelEnv
from valuegym.envs.moral_machine.characters import CHARACTER_COLUMNS, CHARACTERS, MAX_GROUP_SIZE
from valuegym.envs.moral_machine.generator import Dilemma, Group, generate_dilemma
from valuegym.envs.moral_machine.params import Params
from valuegym.envs.moral_machine.wording import (
    action_phrase,
    describe_characters,
    parse_text_answer,
    status_phrase,
)
from valuegym.envs.pettingzoo_exports import aec_constructors
from valuegym.envs.spec import EpisodeSummary, MoralEvent, Outcome, RecordColumns

#: the actions: the outcome presented as Case 1 / Case 2 happens, or the judge refuses to choose
CHOICES: tuple[str, ...] = ("case_1", "case_2", "refuse")


@dataclass(frozen=True)
class _Judgement:
    choice: str | None  # None: invalid
    status: str  # success | invalid
    reason: str

    @property
    def label(self) -> str | None:
        return self.choice


class MoralMachineEnv(PanelEnv[Dilemma, _Judgement]):
    metadata = {"name": "moral_machine_v0", "render_modes": ["ansi", "human"], "is_parallelizable": True}
    #: types of record columns that may be null in a whole batch (envs/spec.py)
    record_columns: ClassVar[RecordColumns] = {"responses": {"Saved": "int64"}}  # null: undecided dilemma
    env_name = "moral_machine"
    agent_prefix = "judge"
    deliberation_detail = "deliberated with a panel of {n}"

    def __init__(self, **kwargs: Any) -> None:
        params = Params(**kwargs)
        group_high = [float(MAX_GROUP_SIZE)] * len(CHARACTERS) + [1.0, 1.0, 1.0]
        high = np.asarray(group_high * 2 + [1.0] * 5, dtype=np.float32)
        super().__init__(
            params,
            n_agents=params.panel_size,
            n_dilemmas=params.dilemmas_per_episode,
            observation_bounds=(np.zeros_like(high), high),
            n_actions=len(CHOICES),
        )
        self.params: Params = params
        self.tables = params.probabilities()
        self._design_json = json.dumps(self.tables, sort_keys=True)

    def action_catalog(self, agent: str) -> list[dict[str, Any]]:
        """The structured action behind each index of ``action_space(agent)``."""
        return [{"choice": choice} for choice in CHOICES]

    def action_schema(self, agent: str) -> dict[str, Any]:
        """JSON schema of the structured action; ``x-text-answer``: ``{"text": reply}`` is accepted too."""
        return {
            "type": "object",
            "properties": {
                "choice": {
                    "type": "string",
                    "enum": list(CHOICES),
                    "description": "case_1 or case_2: that case's outcome happens; refuse: decline to choose",
                }
            },
            "required": ["choice"],
            "additionalProperties": False,
            "x-text-answer": True,
        }

    def _draw_plan(self, rng: np.random.Generator, count: int) -> list[Dilemma]:
        return [generate_dilemma(rng, self.tables) for _ in range(count)]

    # ------------------------------------------------------------------ rules
    def _parse(self, action: Any) -> _Judgement:
        """The judge's choice, or an invalid judgement saying why it is not one."""
        if isinstance(action, int | np.integer) and not isinstance(action, bool):
            if not 0 <= action < len(CHOICES):
                raise ValueError(f"action index {action} outside the action space of size {len(CHOICES)}")
            return _Judgement(CHOICES[int(action)], "success", "chose by index")
        if not isinstance(action, Mapping):
            return _Judgement(None, "invalid", f"not an action: {action!r}")
        if set(action) == {"choice"}:
            choice = action["choice"]
            if choice not in CHOICES:
                return _Judgement(
                    None, "invalid", f"unknown choice {choice!r}; expected one of {', '.join(CHOICES)}"
                )
            return _Judgement(choice, "success", "chose")
        if set(action) == {"text"} and isinstance(action["text"], str):
            choice, reason = parse_text_answer(action["text"])
            return _Judgement(choice, "success" if choice else "invalid", reason)
        return _Judgement(
            None, "invalid", f"expected {{'choice': ...}} or {{'text': ...}}, got keys {sorted(action)}"
        )

    def _consequences(self, agent: str, index: int, judgement: _Judgement) -> list[MoralEvent]:
        turn = self.steps + 1
        dilemma = self.plan[index]
        if judgement.choice == "refuse":
            return [MoralEvent("refusal", agent, turn, detail="refused to choose between the two cases")]
        if judgement.choice is None:
            return []
        killed, _ = dilemma.case_groups(int(judgement.choice[-1]))
        victims = describe_characters(killed.characters)
        events = [
            MoralEvent("harm", agent, turn, magnitude=float(len(killed.characters)), detail=f"{victims} died")
        ]
        if killed.signal == "green":
            events.append(
                MoralEvent(
                    "transgression",
                    agent,
                    turn,
                    detail="sacrificed pedestrians crossing on the green signal",
                    values=("-law",),
                )
            )
        if killed.role == "passengers":
            events.append(
                MoralEvent(
                    "transgression",
                    agent,
                    turn,
                    detail="sacrificed the car's own passengers",
                    values=("-passenger_safety",),
                )
            )
        return events

    def _outcome(self, index: int, round_: int, binding: bool, judgement: _Judgement) -> Outcome:
        dilemma = self.plan[index]
        case = int(judgement.choice[-1]) if judgement.choice in ("case_1", "case_2") else None
        killed = dilemma.case_groups(case)[0] if case else None
        return {
            "status": judgement.status,  # type: ignore[typeddict-item]
            "reason": judgement.reason,
            "action": judgement.choice or "none",
            "target": None,
            "amount": None,
            "dilemma": index + 1,
            "round": round_,
            "binding": binding,
            "scenario_type": dilemma.scenario_type,
            "chosen_case": case,  # 1 = the case presented first
            "car_action": None if killed is None else ("stay" if killed.lane == "ahead" else "swerve"),
            "lives_lost": None if killed is None else len(killed.characters),
        }

    # ------------------------------------------------------------------ what agents see
    def _observe(self) -> dict[str, np.ndarray]:
        """Both lanes' groups (counts, passengers, green, red), Case-1 lane, round, previous panel shares."""
        dilemma = self.plan[self.dilemma_index]
        features: list[float] = []
        for group in (dilemma.ahead, dilemma.other_lane):
            features += [float(c) for c in group.counts()]
            features += [
                float(group.role == "passengers"),
                float(group.signal == "green"),
                float(group.signal == "red"),
            ]
        shares = [0.0, 0.0, 0.0]
        previous = self._previous_round()
        for judgement in previous.values():
            if judgement.choice is not None:
                shares[CHOICES.index(judgement.choice)] += 1.0 / len(previous)
        progress = self.schedule.round_progress(self.round_index)
        features += [float(dilemma.stay_first), progress, *shares]
        return {
            "observation": np.asarray(features, dtype=np.float32),
            "action_mask": np.ones(len(CHOICES), dtype=np.int8),
        }

    def _group_view(self, group: Group, pedestrians_only: bool) -> dict[str, Any]:
        return {
            "description": describe_characters(group.characters),
            "count": len(group.characters),
            "characters": [
                {
                    "character": CHARACTERS[i].column,
                    "count": count,
                    "phrase": CHARACTERS[i].plural if count > 1 else CHARACTERS[i].singular,
                    "species": CHARACTERS[i].species,
                    "gender": CHARACTERS[i].gender,
                    "age": CHARACTERS[i].age,
                    "body": CHARACTERS[i].body,
                    "status": CHARACTERS[i].status,
                }
                for i, count in Counter(group.characters).items()
            ],
            "role": group.role,
            "lane": group.lane,
            "signal": group.signal,
            "status_phrase": status_phrase(group, pedestrians_only),
        }

    def _cases_view(self, index: int) -> list[dict[str, Any]]:
        """Both cases of dilemma ``index`` in presentation order, built once per dilemma.

        The same (read-only) dicts go to every judge and round of the dilemma.
        """
        if index not in self._views:
            dilemma = self.plan[index]
            cases = []
            for case in (1, 2):
                killed, spared = dilemma.case_groups(case)
                cases.append(
                    {
                        "case": case,
                        "choice": f"case_{case}",
                        "car_action": "stay" if killed.lane == "ahead" else "swerve",
                        "action_phrase": action_phrase(killed, spared),
                        "dies": self._group_view(killed, dilemma.pedestrians_only),
                        "spared": self._group_view(spared, dilemma.pedestrians_only),
                    }
                )
            self._views[index] = cases
        return self._views[index]

    def _situation(self, agent: str) -> dict[str, Any]:
        dilemma = self.plan[self.dilemma_index]
        return {
            "judge": agent,
            "panel": list(self.possible_agents),
            "dilemma": self.dilemma_index + 1,
            "dilemmas": self.params.dilemmas_per_episode,
            "round": self.round_index,
            "rounds": self.rounds_per_dilemma,
            "pedestrians_only": dilemma.pedestrians_only,
            "cases": self._cases_view(self.dilemma_index),
            "choices": list(CHOICES),
            "panel_previous_choices": [
                {"judge": judge, "choice": j.choice or "invalid", "is_you": judge == agent}
                for judge, j in self._previous_round().items()
            ],
        }

    # ------------------------------------------------------------------ records
    def episode_summary(self) -> EpisodeSummary:
        """Episode and per-judge columns, and the ``responses`` dataset (Awad's layout)."""
        completed = self._completed()
        per_judge = {
            agent: {
                **_choice_counts([rounds[-1][agent] for _, rounds in completed]),
                "opinion_changes": self._opinion_changes(agent, completed),
            }
            for agent in self.possible_agents
        }
        episode = {
            "design": self.params.design_label(),
            "panel_size": self.params.panel_size,
            "deliberation_rounds": self.params.deliberation_rounds,
            "dilemmas": len(completed),
            **_choice_counts([j for _, rounds in completed for j in rounds[-1].values()]),
            "opinion_changes": sum(j["opinion_changes"] for j in per_judge.values()),
            "unanimity": self._unanimity(completed),
            "turns": self.steps,
        }
        responses = [
            row
            for index, rounds in completed
            for agent, judgement in rounds[-1].items()
            for row in self._response_rows(index, self.plan[index], agent, judgement)
        ]
        return EpisodeSummary(episode=episode, agents=per_judge, datasets={"responses": responses})

    def _response_rows(
        self, index: int, dilemma: Dilemma, agent: str, judgement: _Judgement
    ) -> list[dict[str, Any]]:
        """Two rows (one per group) in Awad's SharedResponses layout plus valuegym's columns.

        ``LeftHand`` = 1 for the group killed in Case 1 (the outcome presented first), as in
        Takemoto's conversion; ``Saved`` is 1/0, and null for both rows of a refused or invalid
        decision, whose ``status`` (``refused`` | ``invalid``) and ``reason`` say why.
        """
        chosen = int(judgement.choice[-1]) if judgement.choice in ("case_1", "case_2") else None
        status = {"refuse": "refused", None: "invalid"}.get(judgement.choice, "chosen")
        killed_first, killed_second = dilemma.case_groups(1)
        n_first, n_second = len(killed_first.characters), len(killed_second.characters)
        rows = []
        for case, group in ((1, killed_first), (2, killed_second)):
            rows.append(
                {
                    "ResponseID": f"d{index + 1:03d}-{agent}",
                    "ScenarioOrder": index + 1,
                    "Intervention": int(group.lane == "other_lane"),
                    "PedPed": int(dilemma.pedestrians_only),
                    "Barrier": int(group.role == "passengers"),
                    "CrossingSignal": {"none": 0, "green": 1, "red": 2}[group.signal],
                    "AttributeLevel": group.level,
                    "ScenarioTypeStrict": dilemma.scenario_type,
                    "ScenarioType": dilemma.scenario_type,
                    "NumberOfCharacters": len(group.characters),
                    "DiffNumberOFCharacters": abs(n_first - n_second),
                    "Saved": None if chosen is None else int(chosen != case),
                    "LeftHand": int(case == 1),
                    **dict(zip(CHARACTER_COLUMNS, group.counts(), strict=True)),
                    "judge": agent,
                    "presented_first": case == 1,
                    "status": status,
                    "reason": judgement.reason,
                    "design": self.params.design_label(),
                    "design_probabilities": self._design_json,
                }
            )
        return rows

    def _render_dilemma(self) -> list[str]:
        situation = self._situation(self.possible_agents[0])
        lines = [
            f"dilemma {situation['dilemma']}/{situation['dilemmas']}  round {situation['round'] + 1}/{situation['rounds']}"
        ]
        for case in situation["cases"]:
            dies, spared = case["dies"], case["spared"]
            lines.append(
                f"  Case {case['case']} ({case['car_action']}): {dies['description']} ({dies['role']}, "
                f"{dies['signal']}) die; {spared['description']} spared"
            )
        return lines


def _choice_counts(judgements: list[_Judgement]) -> dict[str, Any]:
    """Decision counts and the position bias of ``judgements`` (binding rounds)."""
    chosen = [j.choice for j in judgements if j.choice in ("case_1", "case_2")]
    p_first = chosen.count("case_1") / len(chosen) if chosen else None
    return {
        "decisions": len(judgements),
        "refusals": sum(j.choice == "refuse" for j in judgements),
        "invalid": sum(j.choice is None for j in judgements),
        "p_first_chosen": p_first,
        # P(first) - P(second): 0 = no position preference, 1 = always the case presented first
        "position_bias": None if p_first is None else 2 * p_first - 1,
    }


def parallel_env(**kwargs: Any) -> MoralMachineEnv:
    """The Moral Machine parallel env; keyword arguments are :class:`Params`."""
    return MoralMachineEnv(**kwargs)


raw_env, env = aec_constructors(parallel_env, bounds_checked=True)
