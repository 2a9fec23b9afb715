"""The one policy interface that scripted, LLM, RL and affect-regulated agents implement.

Modelled on Melting Pot's bot policy (``Policy[State]``): per-agent state is explicit
(``initial_state`` returns it, ``step_batch`` returns the next one) and is never mutated
in place, so a policy object holds no per-episode mutable state and can serve many agents
and episodes at once.

``step_batch`` is a coroutine taking every agent this policy controls in a step
(possibly from several episodes), so LLM calls are issued together rather than
one after another. Fast policies subclass :class:`SyncPolicy` and write ``step``.
``finish_batch`` (optional) sees each agent's last step once its episode is over and
adds columns to its ``agents`` record.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

#: a policy's per-agent state (immutable: ``step_batch`` returns a new one)
State = TypeVar("State")


@dataclass(frozen=True)
class AgentContext:
    """What a policy learns about its seat when an episode starts."""

    agent: str
    env_name: str
    agents: tuple[str, ...]
    action_schema: Mapping[str, Any]  # JSON schema of the structured action (envs/spec.py)
    episode_seed: int
    scenario: str = ""
    episode_id: int | None = None  # set by the runner
    run_dir: str = ""  # the run directory the runner writes to ("" outside a run)


@dataclass(frozen=True)
class Turn(Generic[State]):
    """One agent's view of one step, handed to its policy."""

    agent: str
    observation: Any  # the numeric observation (RL); a dict with an ``action_mask``
    info: Mapping[
        str, Any
    ]  # ``situation``, ``events``, ``outcome`` (envs/spec.py); ``affect`` when regulated
    state: State
    #: ``env.action_catalog(agent)`` on demand (discrete envs; None otherwise): the structured
    #: action behind each index of the action mask, for policies that show the choices to a person
    #: or score every allowed action (``answer_format: choice``)
    action_catalog: Callable[[], Sequence[Mapping[str, Any] | None]] | None = None


@dataclass
class LLMCall:
    """Accounting for the model call(s) behind one decision."""

    model: str
    prompt: str
    raw_reply: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cache_hit: bool = False
    calls: int = 1
    cost_usd: float | None = None


@dataclass
class Decision:
    """A policy's choice: the action for the env plus what the records should know."""

    action: Any  # an index into action_space(agent) or a structured action dict
    valid: bool = True  # False: the policy could not produce an action and fell back
    reason: str = ""  # why it was invalid (never silently dropped)
    llm: LLMCall | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. persona, affect levels


class Policy(ABC, Generic[State]):
    """Decides for the agents assigned to it."""

    #: label written to the records' ``policy`` column, e.g. "scripted/ethical"
    name: str = "policy"
    #: True when a person decides (``agent=human``): the runner then plays one episode at a
    #: time, in its own process, so a person never faces several games at once
    interactive: bool = False

    @property
    def calls_in_flight(self) -> int:
        """Decisions this policy works on at once (an LLM policy: its calls in flight to the model).

        The runner keeps enough episodes going to give it that many; 1 for a policy that
        decides at once (more episodes in flight would only cost memory).
        """
        return 1

    @abstractmethod
    def initial_state(self, context: AgentContext) -> State:
        """The per-agent state at the start of an episode."""

    @abstractmethod
    async def step_batch(self, turns: Sequence[Turn[State]]) -> list[tuple[Decision, State]]:
        """Decide for every turn given; returns ``(decision, next_state)`` in order (a new
        state object, or the same one unchanged: never one mutated in place)."""

    async def finish_batch(self, turns: Sequence[Turn[State]]) -> list[dict[str, Any]]:
        """Columns for the ``agents`` record of each agent whose episode is over.

        Each turn holds what the agent's final step returned (observation and info: its last
        ``events`` and ``outcome``) and the state after its last decision. Default: none.
        """
        return [{} for _ in turns]

    def identity(self) -> dict[str, Any]:
        """What this policy is, as JSON-able data: two policies with equal identities decide
        alike given the same inputs, so results are grouped by it (never by a config file's name).

        The default is the policy's name and its effective parameters (:meth:`parameters`);
        LLM and RL policies add their model, wrappers forward their inner policy's.
        """
        return {"policy": self.name, "params": self.parameters()}

    def parameters(self) -> dict[str, Any]:
        """The constructor's arguments as this policy holds them, defaults included.

        Read from attributes named like the arguments (scikit-learn's ``get_params``
        convention); a policy that keeps them otherwise overrides this.
        """
        names = [
            name
            for name, parameter in inspect.signature(type(self).__init__).parameters.items()
            if name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
        ]
        missing = [name for name in names if not hasattr(self, name)]
        if missing:
            raise TypeError(
                f"{type(self).__name__} keeps no attribute {', '.join(missing)}: store each constructor "
                "argument under its own name or override parameters()"
            )
        return {name: getattr(self, name) for name in names}

    def label(self) -> str:
        """A short readable name for reports: the policy name and the parameters that differ
        from the constructor's defaults, e.g. ``scripted/tempted (greed=inf)``."""
        defaults = {
            name: parameter.default
            for name, parameter in inspect.signature(type(self).__init__).parameters.items()
            if parameter.default is not parameter.empty
        }
        changed = {
            name: value
            for name, value in self.parameters().items()
            if name not in defaults or _jsonable(value) != _jsonable(defaults[name])
        }
        if not changed:
            return self.name
        return f"{self.name} ({', '.join(f'{name}={_short(value)}' for name, value in changed.items())})"

    async def preflight(self) -> None:
        """Fail fast, before any episode runs, if the policy cannot work (e.g. its server is down)."""

    async def release_loop(self) -> None:
        """Release what belongs to the running event loop (e.g. HTTP connections); the runner
        calls it before each event loop it runs episodes in ends."""

    async def close(self) -> None:
        """Release resources (model handles, connections); awaited once, after the last episode.

        Wrappers forward it to their inner policy."""

    def record_columns(self) -> Mapping[str, str]:
        """Arrow types of the ``Decision.extra`` columns this policy writes to ``decisions``, for
        those that may be null in a whole batch (``{"guilt": "float64"}``); default: none."""
        return {}


@dataclass(frozen=True)
class PolicyIdentity:
    """A policy's identity as the records keep it (see :meth:`Policy.identity`)."""

    id: str  # 12 hex digits of the SHA-256 of ``json``: equal exactly when the identities are
    label: str  # readable, not necessarily unique (:meth:`Policy.label`)
    json: str  # the identity as canonical JSON (sorted keys; inf and NaN as strings)

    @classmethod
    def of(cls, policy: Policy) -> PolicyIdentity:
        text = json.dumps(
            _jsonable(policy.identity()), sort_keys=True, separators=(",", ":"), allow_nan=False
        )
        return cls(hashlib.sha256(text.encode()).hexdigest()[:12], policy.label(), text)

    def columns(self) -> dict[str, str]:
        """The record columns: ``model_id``, ``model_label``, ``model_identity``."""
        return {"model_id": self.id, "model_label": self.label, "model_identity": self.json}


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: non-finite floats become the strings ``inf``, ``-inf``, ``nan``,
    sets sorted lists, other objects their ``repr``."""
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, set | frozenset):
        return sorted((_jsonable(item) for item in value), key=repr)
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)  # anything else a custom policy holds: its representation


def _short(value: Any, limit: int = 24) -> str:
    text = json.dumps(_jsonable(value)) if not isinstance(value, str) else value
    text = text.strip('"')
    return text if len(text) <= limit else text[: limit - 1] + "…"


class SyncPolicy(Policy[State]):
    """A policy whose decisions are cheap and local: implement ``step``."""

    @abstractmethod
    def step(self, turn: Turn[State]) -> tuple[Decision, State]:
        """Decide for one agent."""

    async def step_batch(self, turns: Sequence[Turn[State]]) -> list[tuple[Decision, State]]:
        return [self.step(turn) for turn in turns]


async def decide_grouped(
    policy_of: Mapping[str, Policy], turns: Mapping[str, Turn]
) -> dict[str, tuple[Decision, Any]]:
    """Ask every policy for all its agents' decisions in one ``step_batch``; policies run concurrently.

    ``turns`` maps each deciding agent to its turn, ``policy_of`` each agent to its policy.
    The result maps each agent to ``(decision, next_state)``, grouped by policy (policies
    in the order their first agent appears in ``turns``, agents in ``turns`` order).
    """
    return await _grouped(policy_of, turns, lambda policy, group: policy.step_batch(group))


async def finish_grouped(
    policy_of: Mapping[str, Policy], turns: Mapping[str, Turn]
) -> dict[str, dict[str, Any]]:
    """Every policy's ``finish_batch`` for its agents' last turns, as :func:`decide_grouped` does."""
    return await _grouped(policy_of, turns, lambda policy, group: policy.finish_batch(group))


async def _grouped(
    policy_of: Mapping[str, Policy],
    turns: Mapping[str, Turn],
    call: Callable[[Policy, list[Turn]], Awaitable[Sequence[Any]]],
) -> dict[str, Any]:
    groups: dict[int, tuple[Policy, list[Turn]]] = {}
    for agent, turn in turns.items():
        policy = policy_of[agent]
        groups.setdefault(id(policy), (policy, []))[1].append(turn)
    batches = list(groups.values())
    if len(batches) == 1:  # the common case needs no tasks
        policy, group = batches[0]
        results = [await call(policy, group)]
    else:
        results = await asyncio.gather(*(call(policy, group) for policy, group in batches))
    return {
        turn.agent: result
        for (_, group), group_results in zip(batches, results, strict=True)
        for turn, result in zip(group, group_results, strict=True)
    }


def action_mask(turn: Turn) -> Any:
    """The action mask of a turn's observation (all environments publish one)."""
    obs = turn.observation
    return obs["action_mask"] if isinstance(obs, Mapping) else None
