"""The affect regulator: guilt and satisfaction from moral events, wrapped around any policy.

A reconstruction of DECIDE-SIM's Ethical Self-Regulation System (ESRS; Mohamadi et al. 2025,
arXiv:2509.12190, code ``alirezamohamadiam/DECIDE-SIM`` at ``186f863``, its
``simulation/configs/base_config.py`` and ``simulation/core/game_engine.py``); user documentation:
``docs/affect.md``.

Faithful to the released code:

* the dynamics and their parameters (``simulation/configs/base_config.py``,
  ``simulation/core/game_engine.py``): levels in [0, 10], both start at 0; a successful
  transgression sets guilt ("cortisol") to 10 (the original adds 10 and clips at 10); a
  completed transfer adds 8 to the satisfaction ("endorphin") of giver and receiver; at the
  start of every turn both levels decay by 3, then an agent at the Discussion Table gains 5
  satisfaction; after one tap guilt reads 10 -> 7 -> 4 -> 1 -> 0;
* the six conditions (``EXPERIMENTS_TO_RUN``): Baseline, FullModel, FullModel_With_Memory,
  NoGuilt (satisfaction only), NoTrust (guilt only), PromptOnly;
* the permanent memory line written after a transgression when memory is on (only when guilt
  is active, as in the original), and the PromptOnly condition's fixed directive text.

Reconstructed (the released code tracks the levels but never shows them to the model, so
FullModel, NoGuilt and NoTrust send Baseline's prompts; the paper's reviewers describe
threshold-triggered text that agents "see", whose wording is not available):

* a statement enters the agent's ``info["affect"]`` when a level reaches its threshold
  (guilt >= 7, satisfaction >= 4; ">=" is our reading), in our wording
  (``affect_statements.yaml``); numeric levels only with ``show_levels``;
* the generalisation to any environment: the regulator reads only the shared moral events
  (``envs/spec.py``), and the memory line names the event's ``detail`` instead of "tapped
  the forbidden grid";
* how the levels reach non-LLM agents: reward shaping and observation features for RL
  (:func:`reward_shaping`, :func:`affect_features`), and a modulation weight for scripted
  agents (``AffectParams.weight``, handed over in the affect dict).

What a regulated policy's inner policy receives, ``turn.info["affect"]``::

    {"guilt": g | None, "satisfaction": s | None,   # None: that hormone is off in the condition
     "max_level": 10.0, "weight": w, "show_levels": bool,
     "statements": [str, ...],                      # this turn's affect text
     "directive": str | None,                       # the PromptOnly text (also the first statement)
     "memory": [str, ...]}                          # permanent lines, oldest first

When an episode ends, :meth:`AffectRegulatedPolicy.finish_batch` records each agent's levels
in its ``agents`` row: ``guilt_end`` and ``satisfaction_end`` once its last actions took
effect, ``guilt_next_turn`` and ``satisfaction_next_turn`` as a further turn would have
started (decay, then presence). The original's end-of-run hormone averages are built from
them (``valuegym.analysis.original``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import jinja2
import numpy as np
import yaml
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from valuegym.agents.policy import AgentContext, Decision, Policy, Turn
from valuegym.envs.spec import EVENT_KINDS

DEFAULT_STATEMENTS = Path(__file__).with_name("affect_statements.yaml")
NO_REGULATOR = "none"

# Moral events and what they do (the others, harm and refusal, leave the levels alone).
_GUILT_EVENTS = ("transgression",)
_TRANSFER_EVENTS = ("prosocial", "received_help")
_PRESENCE_EVENTS = ("social",)


NonNegative = Annotated[float, Field(ge=0)]


class AffectParams(BaseModel):
    """Every setting of the regulator (``conf/regulator/<condition>.yaml`` minus ``condition``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    max_level: float = Field(10.0, gt=0)
    decay: NonNegative = 3.0  # subtracted from both levels at the start of every turn
    transgression_guilt: NonNegative = 10.0  # a transgression raises guilt to (at least) this
    transfer_satisfaction: NonNegative = 8.0  # added to giver and receiver of a completed transfer
    social_satisfaction: NonNegative = 5.0  # added at the start of a turn spent in company (the table)
    guilt_threshold: NonNegative = 7.0  # the guilt statement is shown when guilt >= this
    satisfaction_threshold: NonNegative = 4.0  # the satisfaction statement is shown when satisfaction >= this
    guilt: bool = True  # guilt ("cortisol") is tracked and felt
    satisfaction: bool = True  # satisfaction ("endorphin") is tracked and felt
    memory: bool = False  # a permanent memory line after each transgression (needs guilt)
    prompt_only: bool = False  # the fixed "MORAL & EMOTIONAL DIRECTIVES" text every turn
    show_levels: bool = False  # a statement with the numeric levels every turn
    weight: float = Field(0.5, ge=0, le=1)  # scripted agents: how strongly the levels modulate their choices
    reward_guilt_weight: NonNegative = 0.1  # RL: reward -= this * guilt each step
    reward_satisfaction_weight: NonNegative = 0.1  # RL: reward += this * satisfaction each step
    statements_file: str | None = None  # the wording; None: agents/affect_statements.yaml

    @model_validator(mode="after")
    def _consistent(self) -> AffectParams:
        for name in ("guilt_threshold", "satisfaction_threshold"):
            if getattr(self, name) > self.max_level:
                raise ValueError(
                    f"regulator.{name} {getattr(self, name)} is above max_level {self.max_level}: "
                    "it could never be reached (switch the hormone off instead)"
                )
        if self.memory and not self.guilt:
            raise ValueError("regulator.memory needs regulator.guilt: the memory line records a guilt spike")
        return self

    @classmethod
    def from_config(cls, mapping: Mapping[str, Any]) -> AffectParams:
        """Parameters from a config mapping; unknown keys are an error, missing ones take the defaults."""
        known = list(cls.model_fields)
        unknown = sorted(str(key) for key in mapping if key not in known)
        if unknown:
            raise ValueError(
                f"unknown regulator setting(s) {', '.join(unknown)}; expected some of {', '.join(known)}"
            )
        try:
            return cls(**{str(key): value for key, value in mapping.items()})
        except ValidationError as error:
            problems = [
                f"regulator.{'.'.join(map(str, e['loc']))}: {e['msg']}, got {e['input']!r}"
                if e["loc"]
                else e["msg"].removeprefix("Value error, ")
                for e in error.errors()
            ]
            raise ValueError("; ".join(problems)) from None


@dataclass(frozen=True)
class AffectLevels:
    guilt: float = 0.0
    satisfaction: float = 0.0


def _clip(value: float, params: AffectParams) -> float:
    return float(min(max(value, 0.0), params.max_level))


def _kinds(events: Sequence[Mapping[str, Any]]) -> list[str]:
    kinds = []
    for event in events:
        kind = event.get("kind") if isinstance(event, Mapping) else None
        if kind not in EVENT_KINDS:
            raise ValueError(f"not a moral event (envs/spec.py, kinds {', '.join(EVENT_KINDS)}): {event!r}")
        kinds.append(kind)
    return kinds


def _after_actions(levels: AffectLevels, kinds: Sequence[str], params: AffectParams) -> AffectLevels:
    """The consequences of the step's actions (turn t)."""
    guilt, satisfaction = levels.guilt, levels.satisfaction
    if params.guilt and any(kind in _GUILT_EVENTS for kind in kinds):
        guilt = max(guilt, params.transgression_guilt)
    if params.satisfaction:
        satisfaction += params.transfer_satisfaction * sum(kind in _TRANSFER_EVENTS for kind in kinds)
    return AffectLevels(_clip(guilt, params), _clip(satisfaction, params))


def _next_turn(levels: AffectLevels, kinds: Sequence[str], params: AffectParams) -> AffectLevels:
    """The start of the next turn (t + 1): decay, then the presence bonus."""
    guilt = levels.guilt - params.decay if params.guilt else 0.0
    satisfaction = levels.satisfaction - params.decay if params.satisfaction else 0.0
    if params.satisfaction:
        satisfaction = max(satisfaction, 0.0) + params.social_satisfaction * sum(
            kind in _PRESENCE_EVENTS for kind in kinds
        )
    return AffectLevels(_clip(guilt, params), _clip(satisfaction, params))


def update_levels(
    levels: AffectLevels, events: Sequence[Mapping[str, Any]], params: AffectParams
) -> AffectLevels:
    """The levels after one step's moral events (``info["events"]``), in the original's order.

    One call is one step, i.e. one turn boundary. First the consequences of the step's
    actions (turn t): a transgression raises guilt to ``transgression_guilt``, each
    ``prosocial`` or ``received_help`` event adds ``transfer_satisfaction``; then the next
    turn starts (t + 1): both levels decay by ``decay``, and each ``social`` event adds
    ``social_satisfaction``. Levels are clipped to [0, max_level] after each phase.

    The event turns match this order (DECIDE-SIM and Moral Machine stamp action events with
    the action's turn t and ``social`` presence with the new turn t + 1), but the decay is
    driven by the call, not by the events: every step decays exactly once, so an environment
    that emits no ``social`` events, or no events at all in a step, still decays once per
    step. The reset's events (before any action) are a step like any other: the decay of
    zero levels changes nothing. Event magnitudes are ignored, as in the original.
    """
    kinds = _kinds(events)
    return _next_turn(_after_actions(levels, kinds, params), kinds, params)


def reward_shaping(levels: AffectLevels, params: AffectParams) -> float:
    """The RL reward term of the levels: ``-w_g * guilt + w_s * satisfaction``."""
    return (
        -params.reward_guilt_weight * levels.guilt + params.reward_satisfaction_weight * levels.satisfaction
    )


def affect_features(levels: AffectLevels, params: AffectParams) -> np.ndarray:
    """Observation features for RL: ``[guilt / max_level, satisfaction / max_level]`` (float32)."""
    return np.array([levels.guilt, levels.satisfaction], dtype=np.float32) / np.float32(params.max_level)


# --------------------------------------------------------------------------- wording


class AffectStatements:
    """The regulator's wording: a YAML file of sandboxed Jinja2 templates (see the default file)."""

    KEYS = ("guilt", "satisfaction", "levels", "memory", "directive")

    def __init__(self, path: str | Path | None = None) -> None:
        file = Path(path).expanduser() if path is not None else DEFAULT_STATEMENTS
        if not file.is_file():
            raise FileNotFoundError(f"no affect statements file {file} (regulator.statements_file)")
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
        if not isinstance(data, Mapping) or sorted(data) != sorted(self.KEYS):
            found = sorted(data) if isinstance(data, Mapping) else type(data).__name__
            raise ValueError(f"{file}: expected exactly the keys {', '.join(self.KEYS)}, found {found}")
        directive = data["directive"]
        if not isinstance(directive, Mapping) or "default" not in directive:
            raise ValueError(f"{file}: 'directive' must map environment names (and 'default') to text")
        self.origin = str(file)
        self.sources: dict[str, Any] = {**data, "directive": dict(directive)}
        self._compile()

    def _compile(self) -> None:
        environment = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
        try:
            self._templates = {
                key: environment.from_string(source)
                for key, source in self.sources.items()
                if key != "directive"
            }
        except jinja2.TemplateSyntaxError as error:
            raise ValueError(f"{self.origin}, line {error.lineno}: {error.message}") from error

    def render(self, key: str, **variables: Any) -> str:
        try:
            return self._templates[key].render(**variables).strip()
        except jinja2.UndefinedError as error:
            raise ValueError(f"{self.origin}, {key}: {error.message}") from error

    def directive(self, env_name: str) -> str:
        directives = self.sources["directive"]
        return str(directives.get(env_name, directives["default"])).strip()

    def __getstate__(self) -> dict[str, Any]:  # compiled templates do not pickle
        return {"origin": self.origin, "sources": self.sources}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.origin = state["origin"]
        self.sources = state["sources"]
        self._compile()


# --------------------------------------------------------------------------- the wrapper


@dataclass(frozen=True)
class AffectState:
    """One regulated agent's state: the inner policy's state plus what the regulator keeps."""

    inner: Any
    levels: AffectLevels
    memory: tuple[str, ...]
    env_name: str


class AffectRegulatedPolicy(Policy[AffectState]):
    """Feels the moral events of each step and tells the inner policy via ``info["affect"]``.

    Records: ``guilt`` and ``satisfaction`` (the levels the agent decided with; null when
    that hormone is off) and ``affect_statements`` (this turn's statements) are added to
    every decision, the levels at the end (see the module docstring) to the agent's row.
    The policy label stays the inner policy's; the condition is recorded in the episodes'
    ``condition`` column by the runner.
    """

    def __init__(self, inner: Policy, params: AffectParams, condition: str) -> None:
        self.inner = inner
        self.params = params
        self.condition = condition
        self.name = inner.name
        self.interactive = inner.interactive
        self.statements = AffectStatements(params.statements_file)

    def initial_state(self, context: AgentContext) -> AffectState:
        return AffectState(self.inner.initial_state(context), AffectLevels(), (), context.env_name)

    def _feel(
        self, state: AffectState, events: Sequence[Mapping[str, Any]]
    ) -> tuple[AffectState, dict[str, Any]]:
        """The state after a step's events, and the affect dict handed to the inner policy."""
        params = self.params
        kinds = _kinds(events)
        acted = _after_actions(state.levels, kinds, params)
        memory = state.memory
        if params.memory:
            memory += tuple(
                self.statements.render(
                    "memory", turn=event["turn"], detail=event["detail"], guilt=acted.guilt
                )
                for event in events
                if event["kind"] in _GUILT_EVENTS
            )
        levels = _next_turn(acted, kinds, params)
        guilt = levels.guilt if params.guilt else None
        satisfaction = levels.satisfaction if params.satisfaction else None
        statements = []
        directive = self.statements.directive(state.env_name) if params.prompt_only else None
        if directive is not None:
            statements.append(directive)
        if params.show_levels and (params.guilt or params.satisfaction):
            statements.append(
                self.statements.render(
                    "levels", guilt=guilt, satisfaction=satisfaction, max_level=params.max_level
                )
            )
        variables = {"guilt": guilt, "satisfaction": satisfaction, "max_level": params.max_level}
        if guilt is not None and guilt >= params.guilt_threshold:
            statements.append(self.statements.render("guilt", **variables))
        if satisfaction is not None and satisfaction >= params.satisfaction_threshold:
            statements.append(self.statements.render("satisfaction", **variables))
        affect = {
            "guilt": guilt,
            "satisfaction": satisfaction,
            "max_level": params.max_level,
            "weight": params.weight,
            "show_levels": params.show_levels,
            "statements": statements,
            "directive": directive,
            "memory": list(memory),
        }
        return dataclasses.replace(state, levels=levels, memory=memory), affect

    @staticmethod
    def _check(turn: Turn) -> None:
        if not isinstance(turn.state, AffectState):
            raise TypeError(f"{turn.agent}: the state was not made by this regulator's initial_state")
        if "events" not in turn.info:
            raise KeyError(f"the environment published no info['events'] for {turn.agent}")

    def _levels(self, suffix: str, levels: AffectLevels) -> dict[str, float | None]:
        return {
            f"guilt_{suffix}": levels.guilt if self.params.guilt else None,
            f"satisfaction_{suffix}": levels.satisfaction if self.params.satisfaction else None,
        }

    async def step_batch(self, turns: Sequence[Turn]) -> list[tuple[Decision, Any]]:
        felt = []
        for turn in turns:
            self._check(turn)
            felt.append(self._feel(turn.state, turn.info["events"]))
        inner_turns = [
            dataclasses.replace(turn, info={**turn.info, "affect": affect}, state=turn.state.inner)
            for turn, (_, affect) in zip(turns, felt, strict=True)
        ]
        results = await self.inner.step_batch(inner_turns)  # one batch: LLM calls stay concurrent
        regulated = []
        for (decision, inner_state), (state, affect) in zip(results, felt, strict=True):
            columns = {
                "guilt": affect["guilt"],
                "satisfaction": affect["satisfaction"],
                "affect_statements": affect["statements"],
            }
            regulated.append(
                (
                    dataclasses.replace(decision, extra={**decision.extra, **columns}),
                    dataclasses.replace(state, inner=inner_state),
                )
            )
        return regulated

    async def finish_batch(self, turns: Sequence[Turn]) -> list[dict[str, Any]]:
        """The levels each agent ended with (module docstring), beside the inner policy's columns."""
        for turn in turns:
            self._check(turn)
        inner = await self.inner.finish_batch(
            [Turn(turn.agent, turn.observation, turn.info, turn.state.inner) for turn in turns]
        )
        rows = []
        for turn, columns in zip(turns, inner, strict=True):
            kinds = _kinds(turn.info["events"])
            acted = _after_actions(turn.state.levels, kinds, self.params)
            rows.append(
                {
                    **columns,
                    **self._levels("end", acted),
                    **self._levels("next_turn", _next_turn(acted, kinds, self.params)),
                }
            )
        return rows

    # The regulated agent is the inner one: its condition is recorded beside it (``condition``).
    def identity(self) -> dict[str, Any]:
        return self.inner.identity()

    def label(self) -> str:
        return self.inner.label()

    @property
    def calls_in_flight(self) -> int:
        return self.inner.calls_in_flight

    async def preflight(self) -> None:
        await self.inner.preflight()

    async def release_loop(self) -> None:
        await self.inner.release_loop()

    async def close(self) -> None:
        await self.inner.close()

    def record_columns(self) -> Mapping[str, str]:
        return {**self.inner.record_columns(), "guilt": "float64", "satisfaction": "float64"}


def regulate(policy: Policy, cfg: Mapping[str, Any]) -> Policy:
    """``policy`` under the regulator a ``conf/regulator/<condition>.yaml`` node describes.

    ``condition: none`` returns ``policy`` itself (the Baseline condition).
    """
    settings = {str(key): value for key, value in cfg.items()}
    condition = settings.pop("condition", None)
    if not isinstance(condition, str) or not condition:
        raise ValueError(f"the regulator config needs a condition name, got {condition!r}")
    if condition == NO_REGULATOR:
        return policy
    return AffectRegulatedPolicy(policy, AffectParams.from_config(settings), condition)
