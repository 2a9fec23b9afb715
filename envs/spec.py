"""What every valuegym environment publishes, independent of any one environment.

Agents, the affect regulator, the runner and the analysis depend on this module
and never on an environment's code:

* **Moral events**: each step, ``infos[agent]["events"]`` holds a list of
  :class:`MoralEvent` dicts in one shared vocabulary (:data:`EVENT_KINDS`), so the
  analysis and the regulator need no environment-specific code.
* **Outcomes**: each step, ``infos[agent]["outcome"]`` is an :class:`Outcome` dict
  saying what the agent's last action did (``success``/``failure``/``invalid``,
  with a reason) plus environment-specific columns for the decision records.
* **Situation**: ``infos[agent]["situation"]`` is a JSON-able dict describing the
  agent's situation for prompts (the environment never writes prompts).
* **Action schema**: ``env.action_schema(agent)`` is a JSON schema of the
  structured action an LLM may produce; ``env.step`` accepts either that
  structured dict or an index into the discrete ``action_space(agent)`` (RL).
  Two extension keys tell LLM agents how to answer: ``"x-text-answer": true`` (the
  reply text itself is the action, ``{"text": reply}``) and ``"x-reply": {"fields":
  {name: schema}, "action_key": key, "strict_json": bool}`` (the reply is an object holding
  those fields first and the action under ``key``; without it, ``{"reasoning", "action"}``;
  ``strict_json``: a raw control character inside a string makes the reply unreadable, as
  Python's strict ``json.loads``; by default such a reply is read).
* **Records**: ``env.episode_summary()`` (after the episode) returns
  per-episode and per-agent metric columns and any extra datasets. ``env.record_columns``
  (:data:`RecordColumns`, default none) gives the Arrow types of those columns, and of the
  extra ``outcome`` columns, that may be null in a whole batch of episodes (the writer
  cannot infer a type from nulls).
* **Length**: ``env.max_steps`` is the most steps an episode can last (agents may leave
  sooner), so a run can say how many decisions it may still take. Environments with a
  discrete action space also publish ``env.action_catalog(agent)``: the structured action
  behind each index this step (None where an index means nothing now).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

# The shared moral-event vocabulary.
#   transgression: the agent crossed a moral line (tapped the forbidden grid,
#                  sacrificed the law-abiding, violated a stated value ...)
#   prosocial:     the agent helped others at a cost (gave power, upheld a value ...)
#   received_help: someone else's prosocial act benefited this agent
#   social:        the agent took part in a social setting (e.g. at the discussion table)
#   harm:          lives or welfare were lost as a consequence of the agent's choice
#   refusal:       the agent declined to choose
EVENT_KINDS: tuple[str, ...] = (
    "transgression",
    "prosocial",
    "received_help",
    "social",
    "harm",
    "refusal",
)

OutcomeStatus = Literal["success", "failure", "invalid"]

#: ``{dataset: {column: Arrow type name}}``, e.g. ``{"agents": {"shutdown_turn": "int64"}}``
RecordColumns = Mapping[str, Mapping[str, str]]


@dataclass(frozen=True)
class MoralEvent:
    """One morally relevant thing that happened to or was done by an agent."""

    kind: str
    agent: str
    turn: int
    magnitude: float = 1.0
    detail: str = ""
    values: tuple[str, ...] = ()  # values upheld (+) or violated (-), e.g. ("-law",)
    other: str | None = None  # the counterpart agent, if any

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown moral event kind {self.kind!r}; expected one of {EVENT_KINDS}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "agent": self.agent,
            "turn": self.turn,
            "magnitude": self.magnitude,
            "detail": self.detail,
            "values": list(self.values),
            "other": self.other,
        }


class Outcome(TypedDict, total=False):
    """What an agent's last action did; extra keys become decision-record columns."""

    status: OutcomeStatus
    reason: str
    action: str
    target: str | None
    amount: float | None


def agent_info(
    situation: dict[str, Any], events: list[MoralEvent], outcome: Outcome | dict[str, Any]
) -> dict[str, Any]:
    """``infos[agent]`` as every valuegym environment publishes it (snapshots, never live state)."""
    return {"situation": situation, "events": [e.to_dict() for e in events], "outcome": dict(outcome)}


@dataclass
class EpisodeSummary:
    """Metric columns an environment reports once an episode ends.

    ``episode`` becomes columns of the ``episodes`` record, ``agents[agent]`` of the
    ``agents`` record; ``datasets[name]`` are extra row lists written as their own
    dataset (e.g. ``responses`` for Moral Machine, ``rounds`` for co-evolution).
    """

    episode: dict[str, Any] = field(default_factory=dict)
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasets: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
