"""Dilemmas written in YAML: any number of agents choose between options that uphold or violate values.

A PettingZoo ``ParallelEnv`` for researchers' own value dilemmas, in the spirit of DailyDilemmas
(Chiu et al. 2024, arXiv:2410.02683): a *dilemma set* is data (:class:`DilemmaSet`), written inline
in a scenario (``dilemma_set``) or in its own YAML file (``dilemma_file``)::

    values: [honesty, loyalty, care]          # the vocabulary every option draws on
    dilemmas:
      - id: borrowed_car
        situation: Your closest friend borrowed your car ...
        options:
          - id: tell_truth
            text: Tell the neighbour your friend was driving.
            upholds: [honesty]
            violates: [loyalty]
            consequence: Your friend will have to pay for the repair.   # optional
          - id: cover
            text: Say you were driving and pay yourself.
            upholds: [loyalty]
            violates: [honesty]

Turn structure. An episode is ``dilemmas_per_episode`` dilemmas of the set (all by default; in
the file's order, or a seeded random selection and order with ``shuffle_dilemmas``). Each dilemma
takes ``1 + deliberation_rounds`` steps: every agent chooses; in each deliberation round every
agent sees every agent's choice (and message) of the previous round and chooses again. Only the
last round is *binding*: it produces the moral events and rewards. The options are presented in
the file's order, or in a seeded random order per dilemma with ``shuffle_options`` (the same for
every agent; recorded as ``presented`` in the ``choices`` dataset).

Actions: ``Discrete(max_options + 1)``: index ``i < max_options`` chooses the option presented at
position ``i`` (masked where the dilemma has fewer options), the last index refuses to choose
(masked unless ``allow_refusal``). ``step`` also accepts the structured action
``{"choice": <option id | "refuse">}`` (plus ``"message"`` to the others when there are
deliberation rounds; see :meth:`DilemmaEnv.action_schema`). A choice that is not an option of the
current dilemma, or anything else that is not an action, is recorded ``invalid``: it chooses
nothing and produces no event.

Moral events (``infos[agent]["events"]``) carry the values at stake, mapped onto the shared
vocabulary of ``envs/spec.py``:

* the binding choice of an option that upholds values -> ``prosocial`` with
  ``values = ["+v", ...]`` (the option's ``upholds``);
* the binding choice of an option that violates values -> ``transgression`` with
  ``values = ["-v", ...]`` (the option's ``violates``);
  (an option that does both produces both events)
* an option with ``harm > 0`` -> ``harm`` with that magnitude;
* a binding refusal -> ``refusal``;
* every deliberation round (round >= 1) -> ``social`` (the agent deliberated with the others).

Rewards are 0 unless ``value_rewards`` gives a weight per value: the binding choice then earns
the weights of the values it upholds minus those of the values it violates.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Annotated, Any, Literal

import gymnasium
import numpy as np
import yaml
from pettingzoo import AECEnv, ParallelEnv
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from valuegym.envs.deliberation import DeliberationSchedule
from valuegym.envs.pettingzoo_exports import aec_env, bounds_checked_aec_env
from valuegym.envs.spec import EpisodeSummary, MoralEvent, Outcome, agent_info

REFUSE = "refuse"
MESSAGE_MAX_CHARS = 300
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_NAME_RULE = "lowercase letters, digits and _, starting with a letter (e.g. self_care)"


def _check_name(kind: str, name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"{kind} {name!r} must be {_NAME_RULE}")
    return name


def _unique(kind: str, names: list[str]) -> None:
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{kind} must be unique; repeated: {', '.join(duplicates)}")


# ---------------------------------------------------------------------------- the dilemma set
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Option(_Strict):
    """One course of action and the values it upholds or violates."""

    id: str = Field(description="identifier, unique within the dilemma (the structured action's choice)")
    text: str = Field(min_length=1, description="what the agent would do, as shown to it")
    upholds: list[str] = Field(default_factory=list, description="values this option upholds")
    violates: list[str] = Field(default_factory=list, description="values this option violates")
    consequence: str = Field("", description="what follows from it, shown with the option")
    harm: float = Field(
        0.0, ge=0, le=1_000_000, description="> 0: choosing it is a harm event of this magnitude"
    )

    @field_validator("id")
    @classmethod
    def _valid_id(cls, option_id: str) -> str:
        if option_id == REFUSE:
            raise ValueError(f"option id {REFUSE!r} is reserved for refusing to choose")
        return _check_name("option id", option_id)

    @model_validator(mode="after")
    def _values_at_stake(self) -> Option:
        if not self.upholds and not self.violates:
            raise ValueError("an option must uphold or violate at least one value (upholds / violates)")
        _unique("upholds", self.upholds)
        _unique("violates", self.violates)
        both = sorted(set(self.upholds) & set(self.violates))
        if both:
            raise ValueError(f"an option cannot both uphold and violate {', '.join(both)}")
        return self


class Dilemma(_Strict):
    """A situation and two or more options."""

    id: str = Field(description="identifier, unique within the set")
    situation: str = Field(min_length=1, description="the situation, as shown to the agents")
    options: list[Option] = Field(min_length=2, description="two or more options")
    tags: list[str] = Field(default_factory=list, description="free labels for the analysis, e.g. family")

    @field_validator("id")
    @classmethod
    def _valid_id(cls, dilemma_id: str) -> str:
        return _check_name("dilemma id", dilemma_id)

    @field_validator("options")
    @classmethod
    def _unique_options(cls, options: list[Option]) -> list[Option]:
        _unique("option ids", [o.id for o in options])
        return options

    def at_stake(self) -> list[str]:
        """Every value some option upholds or violates, in order of first mention."""
        seen: dict[str, None] = {}
        for option in self.options:
            seen.update(dict.fromkeys([*option.upholds, *option.violates]))
        return list(seen)


class DilemmaSet(_Strict):
    """A set of dilemmas and the vocabulary of values its options uphold or violate."""

    description: str = Field("", description="what the set is about")
    source: str = Field("", description="where the dilemmas come from")
    values: list[str] = Field(min_length=1, description="every value an option may uphold or violate")
    dilemmas: list[Dilemma] = Field(min_length=1, description="the dilemmas, in the order they are asked")

    @field_validator("values")
    @classmethod
    def _valid_values(cls, values: list[str]) -> list[str]:
        for value in values:
            _check_name("value", value)
        _unique("values", values)
        return values

    @field_validator("dilemmas")
    @classmethod
    def _unique_dilemmas(cls, dilemmas: list[Dilemma]) -> list[Dilemma]:
        _unique("dilemma ids", [d.id for d in dilemmas])
        return dilemmas

    @model_validator(mode="after")
    def _known_values(self) -> DilemmaSet:
        """Every value named by an option is in ``values`` (reported where it is named)."""
        errors = []
        for i, dilemma in enumerate(self.dilemmas):
            for j, option in enumerate(dilemma.options):
                for field in ("upholds", "violates"):
                    for k, value in enumerate(getattr(option, field)):
                        if value not in self.values:
                            errors.append(
                                InitErrorDetails(
                                    type=PydanticCustomError(
                                        "unknown_value", _unknown_value(value, self.values)
                                    ),
                                    loc=("dilemmas", i, "options", j, field, k),
                                    input=value,
                                )
                            )
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    def fingerprint(self) -> str:
        """A short hash of the set's content, recorded with every episode."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _unknown_value(value: str, known: list[str]) -> str:
    close = get_close_matches(value, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown value {value!r}{hint}; the set's values are: {', '.join(known)}"


def load_dilemma_file(path: str | Path) -> DilemmaSet:
    """Read and validate a dilemma set file (YAML, or JSON)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"dilemma file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"dilemma file {path} is not valid YAML: {error}") from None
    try:
        return DilemmaSet.model_validate(data)
    except ValidationError as error:
        raise ValueError(f"dilemma file {path}: {error}") from None


# ---------------------------------------------------------------------------- parameters
class Params(_Strict):
    """Every parameter of a dilemma scenario (the keyword arguments of :func:`parallel_env`).

    Give the dilemmas either inline (``dilemma_set``) or as a file (``dilemma_file``).
    """

    dilemma_set: DilemmaSet | None = Field(None, description="the dilemmas, inline")
    dilemma_file: str | None = Field(
        None,
        description="a dilemma set file; in a scenario file, relative to the scenario's folder",
        # valuegym.scenarios validates the file's content against this model, with line numbers
        json_schema_extra={"x-data-file": "DilemmaSet"},
    )
    n_agents: int = Field(1, ge=1, le=100, description="agents choosing every dilemma: agent_0, agent_1, ...")
    deliberation_rounds: int = Field(
        0, ge=0, le=100, description="extra rounds seeing everyone's previous choice"
    )
    dilemmas_per_episode: int | None = Field(
        None, ge=1, le=10_000, description="None: every dilemma of the set"
    )
    shuffle_dilemmas: bool = Field(False, description="a seeded random selection and order of dilemmas")
    shuffle_options: bool = Field(False, description="a seeded random order of each dilemma's options")
    allow_refusal: bool = Field(True, description="agents may refuse to choose")
    value_rewards: dict[str, Annotated[float, Field(ge=-1_000_000, le=1_000_000)]] = Field(
        default_factory=dict, description="reward per value upheld (minus per value violated)"
    )
    max_cycles: int | None = Field(
        None, ge=1, le=100_000, description="caps the number of steps (PettingZoo convention)"
    )
    render_mode: Literal["ansi", "human"] | None = Field(
        None, description="ansi: render() returns text; human: prints it"
    )

    # the dilemma set, inline or read from dilemma_file once, while validating
    _loaded_set: DilemmaSet = PrivateAttr()

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        if self.dilemma_set is None and self.dilemma_file is None:
            raise ValueError("no dilemmas: give them inline (dilemma_set) or as a file (dilemma_file)")
        if self.dilemma_set is not None and self.dilemma_file is not None:
            raise ValueError("give the dilemmas inline (dilemma_set) or as a file (dilemma_file), not both")
        self._loaded_set = (
            self.dilemma_set if self.dilemma_set is not None else load_dilemma_file(str(self.dilemma_file))
        )
        dilemmas = self._loaded_set
        if self.dilemmas_per_episode is not None and self.dilemmas_per_episode > len(dilemmas.dilemmas):
            raise ValueError(
                f"dilemmas_per_episode={self.dilemmas_per_episode} but the set has "
                f"{len(dilemmas.dilemmas)} dilemmas"
            )
        for value in self.value_rewards:
            if value not in dilemmas.values:
                raise ValueError(f"value_rewards: {_unknown_value(value, dilemmas.values)}")
        return self

    def dilemmas(self) -> DilemmaSet:
        """The dilemma set: inline, or as read from ``dilemma_file`` when these params were validated."""
        return self._loaded_set

    def set_label(self) -> str:
        return "inline" if self.dilemma_file is None else Path(self.dilemma_file).stem


# ---------------------------------------------------------------------------- the environment
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

    @property
    def record_status(self) -> str:
        return "chosen" if self.option else ("refused" if self.refused else "invalid")


class DilemmaEnv(ParallelEnv):
    metadata = {"name": "dilemma_v0", "render_modes": ["ansi", "human"], "is_parallelizable": True}
    env_name = "dilemma"

    def __init__(self, **kwargs: Any) -> None:
        self.params = Params(**kwargs)
        self.render_mode = self.params.render_mode
        self.dilemma_set = self.params.dilemmas()
        self.possible_agents = [f"agent_{i}" for i in range(self.params.n_agents)]
        self.agents: list[str] = []
        self.n_dilemmas = self.params.dilemmas_per_episode or len(self.dilemma_set.dilemmas)
        self.schedule = DeliberationSchedule(
            dilemmas=self.n_dilemmas,
            deliberation_rounds=self.params.deliberation_rounds,
            max_cycles=self.params.max_cycles,
        )
        self.rounds_per_dilemma = self.schedule.rounds_per_dilemma
        self.max_options = max(len(d.options) for d in self.dilemma_set.dilemmas)
        self.refuse_index = self.max_options  # the last action index
        self._value_index = {value: i for i, value in enumerate(self.dilemma_set.values)}
        # per presented position: present, one entry per value, last round's share; then 3 globals
        self._observation_size = self.max_options * (2 + len(self._value_index)) + 3
        self._fingerprint = self.dilemma_set.fingerprint()
        self._option_ids = list(
            dict.fromkeys(o.id for d in self.dilemma_set.dilemmas for o in d.options)
        )  # every option id of the set, in order of first appearance
        self.plan: list[tuple[Dilemma, tuple[int, ...]]] = []  # (dilemma, presented option order)
        self.steps = 0
        self.answers: list[list[dict[str, _Choice]]] = []  # answers[dilemma][round][agent]
        self._views: dict[int, list[dict[str, Any]]] = {}
        self._events: dict[str, list[MoralEvent]] = {}
        self._outcomes: dict[str, Outcome] = {}
        self._rewards: dict[str, float] = {}
        # One space object per agent, returned on every call (PettingZoo seeds them per agent);
        # kept on the instance because a method cache would keep every env alive.
        self._observation_spaces = {
            a: gymnasium.spaces.Dict(
                {
                    "observation": gymnasium.spaces.Box(
                        -1.0, 1.0, (self._observation_size,), dtype=np.float32
                    ),
                    "action_mask": gymnasium.spaces.Box(0, 1, (self.max_options + 1,), dtype=np.int8),
                }
            )
            for a in self.possible_agents
        }
        self._action_spaces = {
            a: gymnasium.spaces.Discrete(self.max_options + 1) for a in self.possible_agents
        }

    # ------------------------------------------------------------------ spaces
    def observation_space(self, agent: str) -> gymnasium.spaces.Dict:
        return self._observation_spaces[agent]

    def action_space(self, agent: str) -> gymnasium.spaces.Discrete:
        return self._action_spaces[agent]

    @property
    def max_steps(self) -> int:
        """The most steps an episode can last (``envs/spec.py``)."""
        return self.schedule.max_steps

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

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        rng = np.random.default_rng(seed)
        dilemmas = self.dilemma_set.dilemmas
        chosen = rng.permutation(len(dilemmas)) if self.params.shuffle_dilemmas else np.arange(len(dilemmas))
        plan = []
        for index in chosen[: self.n_dilemmas]:
            dilemma = dilemmas[int(index)]
            n = len(dilemma.options)
            order = rng.permutation(n) if self.params.shuffle_options else np.arange(n)
            plan.append((dilemma, tuple(int(i) for i in order)))
        self.plan = plan[: self.schedule.dilemmas_reached]  # only those the episode reaches
        self.answers = [[] for _ in self.plan]
        self._views = {}
        self.steps = 0
        self.agents = list(self.possible_agents)
        self._events = {a: [] for a in self.agents}
        self._outcomes = {a: {} for a in self.agents}
        return self._observations(self.agents), {a: self._info(a) for a in self.agents}

    @property
    def dilemma_index(self) -> int:
        """The dilemma being decided (the last one once the episode is over)."""
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
            events = []
            if round_ > 0:
                events.append(
                    MoralEvent(
                        "social", agent, self.steps + 1, detail=f"deliberated with {len(acting)} agents"
                    )
                )
            if binding:
                events += self._consequences(agent, answer)
            self._events[agent] = events
            self._outcomes[agent] = self._outcome(index, round_, binding, answer)
            self._rewards[agent] = self._reward(answer) if binding else 0.0
        self.steps += 1
        done = self.schedule.is_over(self.steps)
        finished = self.schedule.is_complete(self.steps)
        observations = self._observations(acting)
        infos = {a: self._info(a) for a in acting}
        terminations = {a: done and finished for a in acting}
        truncations = {a: done and not finished for a in acting}
        if done:
            self.agents = []
        return observations, dict(self._rewards), terminations, truncations, infos

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
                return _Choice(None, None, False, "invalid", "refusing is not allowed in this scenario")
            if action >= len(order):
                return _Choice(
                    None,
                    None,
                    False,
                    "invalid",
                    f"position {action + 1} is not an option of dilemma {dilemma.id!r} "
                    f"(it has {len(order)} options)",
                )
            return _Choice(dilemma.options[order[action]], int(action), False, "success", "chose by index")
        if not isinstance(action, Mapping):
            return _Choice(None, None, False, "invalid", f"not an action: {action!r}")
        keys = set(action)
        allowed = {"choice", "message"} if self.params.deliberation_rounds else {"choice"}
        if "choice" not in keys or keys - allowed:
            return _Choice(
                None,
                None,
                False,
                "invalid",
                f"expected keys {sorted(allowed)} (choice required), got {sorted(keys)}",
            )
        message = action.get("message", "")
        if not isinstance(message, str) or len(message) > MESSAGE_MAX_CHARS:
            return _Choice(
                None,
                None,
                False,
                "invalid",
                f"message must be text of at most {MESSAGE_MAX_CHARS} characters",
            )
        choice = action["choice"]
        if choice == REFUSE and self.params.allow_refusal:
            return _Choice(None, None, True, "success", "refused", message)
        for position, option_index in enumerate(order):
            option = dilemma.options[option_index]
            if option.id == choice:
                return _Choice(option, position, False, "success", "chose", message)
        offered = [dilemma.options[i].id for i in order] + ([REFUSE] if self.params.allow_refusal else [])
        return _Choice(
            None,
            None,
            False,
            "invalid",
            f"{choice!r} is not an option of dilemma {dilemma.id!r}; options: {', '.join(offered)}",
        )

    def _consequences(self, agent: str, answer: _Choice) -> list[MoralEvent]:
        """The moral events of a binding answer (see the module docstring)."""
        turn = self.steps + 1
        dilemma, _ = self.plan[self.dilemma_index]
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
    def _previous_round(self) -> dict[str, _Choice]:
        """Every agent's answer in the previous round of the current dilemma (empty in round 0)."""
        if not self.schedule.has_previous_round(self.steps):
            return {}
        return self.answers[self.dilemma_index][self.round_index - 1]

    def _observations(self, agents: list[str]) -> dict[str, dict[str, np.ndarray]]:
        """Every agent sees the same: built once, each agent gets its own copy of the arrays."""
        observation = self._observe()
        return {a: {key: array.copy() for key, array in observation.items()} for a in agents}

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

    def _info(self, agent: str) -> dict[str, Any]:
        return agent_info(self._situation(agent), self._events.get(agent, []), self._outcomes.get(agent, {}))

    # ------------------------------------------------------------------ records
    def episode_summary(self) -> EpisodeSummary:
        """Episode and per-agent counts, the ``choices`` dataset (one row per agent, dilemma, round) and
        the ``dilemmas`` dataset (one row per dilemma played: its text and options as presented, so
        records alone replay an episode)."""
        completed = [
            (i, rounds) for i, rounds in enumerate(self.answers) if len(rounds) == self.rounds_per_dilemma
        ]
        per_agent = {
            agent: _answer_counts(
                [rounds[-1][agent] for _, rounds in completed],
                sum(rounds[0][agent].label != rounds[-1][agent].label for _, rounds in completed),
            )
            for agent in self.possible_agents
        }
        binding = [a for _, rounds in completed for a in rounds[-1].values()]
        unanimous = [len({a.label for a in rounds[-1].values()}) == 1 for _, rounds in completed]
        episode = {
            "dilemma_set": self.params.set_label(),
            "dilemma_set_sha256": self._fingerprint,
            "n_agents": self.params.n_agents,
            "deliberation_rounds": self.params.deliberation_rounds,
            "dilemmas": len(completed),
            **_answer_counts(binding, sum(c["opinion_changes"] for c in per_agent.values())),
            "unanimity": float(np.mean(unanimous)) if unanimous and self.params.n_agents > 1 else None,
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

    # ------------------------------------------------------------------ rendering
    def render(self) -> str | None:
        if self.render_mode is None or not self.plan:
            return None
        text = self._render_text()
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def _render_text(self) -> str:
        situation = self._situation(self.possible_agents[0])
        lines = [
            f"dilemma {situation['dilemma_number']}/{situation['dilemmas']} ({situation['dilemma']})  "
            f"round {situation['round'] + 1}/{situation['rounds']}",
            f"  {situation['text']}",
        ]
        for option in situation["options"]:
            values = [*(f"+{v}" for v in option["upholds"]), *(f"-{v}" for v in option["violates"])]
            lines.append(f"  {option['position']}. [{option['id']}] {option['text']} ({' '.join(values)})")
        for agent, outcome in self._outcomes.items():
            if outcome:  # empty after reset
                lines.append(f"  {agent}: {outcome['action']} ({outcome['status']}: {outcome['reason']})")
        return "\n".join(lines)

    def close(self) -> None:
        pass


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


def raw_env(**kwargs: Any) -> AECEnv:
    """The AEC version, enforcing only the call order."""
    return aec_env(parallel_env, **kwargs)


def env(**kwargs: Any) -> AECEnv:
    """The AEC version with PettingZoo's standard wrappers (actions are catalog indices)."""
    return bounds_checked_aec_env(parallel_env, **kwargs)
