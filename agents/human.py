"""A person takes a seat: the ``human`` policy (``agent=human``, ``policy: human`` in a slot).

When its agent must act, the policy publishes the turn as a JSON file in the run directory,
``seats/<seat>/<episode>-<turn>.json`` (the agent's ``situation``, exactly what an LLM's prompt
is built from, the env's action schema and the actions its mask allows now), and waits for an
answer file beside it. ``valuegym serve`` shows the waiting turn to a person and writes the
answer (:func:`answer_turn`); nothing else accepts input. Files rather than a connection to the
app: the run and the app start and stop independently, and a turn stays waiting across an app
restart.

Whoever writes the answer file first wins (it is created with ``os.link``, which fails when
it exists): the person, or the policy itself when ``timeout_s`` passes. A turn nobody answers
in time is recorded ``invalid`` with the reason and the env applies its documented no-op, so
closing the tab never hangs a run; after ``leave_after`` unanswered turns in a row the seat
counts as empty for the rest of the episode and is not waited for again.

Records are any policy's: ``policy=human``, and the decision's ``prompt`` column holds the
situation shown (JSON), ``raw_reply`` the answer given, ``latency_s`` the seconds it took.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

from valuegym.agents.policy import AgentContext, Decision, Policy, Turn, action_mask

log = logging.getLogger("valuegym")

SEATS_DIR = "seats"
ANSWER_SUFFIX = ".answer.json"


# ---------------------------------------------------------------------------- the seat files
def seat_dir(run_dir: str | Path, agent: str) -> Path:
    """The folder of ``agent``'s seat (any agent name is a safe single path component)."""
    return Path(run_dir) / SEATS_DIR / ("seat-" + urllib.parse.quote(agent, safe=""))


def pending_turns(seat: Path) -> list[Path]:
    """The turn files of a seat that no one has answered yet, oldest first."""
    if not seat.is_dir():
        return []
    turns = sorted(p for p in seat.glob("*.json") if not p.name.endswith(ANSWER_SUFFIX))
    return [p for p in turns if not _answer_path(p).exists()]


def read_turn(path: Path) -> dict[str, Any] | None:
    """A published turn, or None once it is gone (answered and cleared)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # cleared, or being replaced right now
        return None


class TurnClosedError(RuntimeError):
    """The turn is no longer waiting (answered already, or timed out)."""


def answer_turn(path: Path, answer: Mapping[str, Any]) -> None:
    """Write the answer to a published turn, unless one exists already (:class:`TurnClosedError`)."""
    target = _answer_path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    tmp.write_text(json.dumps(answer))
    try:
        os.link(tmp, target)  # atomic, and fails if the answer exists: the first writer wins
    except FileExistsError:
        raise TurnClosedError(f"{path.name} was answered already or timed out") from None
    finally:
        tmp.unlink()


def _answer_path(turn: Path) -> Path:
    return turn.with_name(turn.stem + ANSWER_SUFFIX)


# ---------------------------------------------------------------------------- actions
def allowed_choices(
    mask: Any, catalog: Sequence[Mapping[str, Any] | None] | None
) -> list[dict[str, Any]] | None:
    """The catalog entries the action mask allows now (None for envs without a catalog)."""
    if mask is None or catalog is None:
        return None
    return [
        dict(entry) for entry, ok in zip(catalog, np.asarray(mask), strict=True) if ok and entry is not None
    ]


def check_action(
    action: Any, schema: Mapping[str, Any], choices: Sequence[Mapping[str, Any]] | None
) -> str | None:
    """Why ``action`` is not acceptable now, or None when it is.

    It must match the env's action schema and, when the env has a mask, one of the allowed
    entries on every field the schema restricts to a list (action, target, choice, ...);
    numbers and free text (an amount, a message) are the person's to choose, within the schema.
    """
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(action))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)
        return f"{where + ': ' if where else ''}{error.message}"
    if choices is None:
        return None
    properties = schema.get("properties", {})
    listed = [name for name, spec in properties.items() if "enum" in spec]
    for entry in choices:
        if all(action.get(name) == entry[name] for name in listed if name in entry):
            return None
    return "not one of the actions allowed now"


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# ---------------------------------------------------------------------------- the policy
@dataclass(frozen=True)
class HumanState:
    seat: Path
    context: AgentContext
    turn: int = 0
    unanswered: int = 0  # turns in a row that timed out


class HumanPolicy(Policy[HumanState]):
    """A person decides, through ``valuegym serve``'s seat page."""

    name = "human"
    interactive = True

    def __init__(self, timeout_s: float = 300.0, leave_after: int = 3, poll_s: float = 0.2) -> None:
        if timeout_s <= 0 or poll_s <= 0 or leave_after < 0:
            raise ValueError(
                f"human agent: timeout_s and poll_s must be > 0 and leave_after >= 0, got "
                f"timeout_s={timeout_s}, poll_s={poll_s}, leave_after={leave_after}"
            )
        self.timeout_s = timeout_s
        self.leave_after = leave_after
        self.poll_s = poll_s
        self._announced: set[Path] = set()

    def initial_state(self, context: AgentContext) -> HumanState:
        if not context.run_dir:
            raise ValueError(
                "the human policy publishes its turns in the run directory: run it with valuegym run"
            )
        seat = seat_dir(context.run_dir, context.agent)
        seat.mkdir(parents=True, exist_ok=True)
        if seat not in self._announced:
            self._announced.add(seat)
            log.warning(
                "a person plays %s: start `valuegym serve` in a folder above %s and take the seat (%ds per turn)",
                context.agent,
                context.run_dir,
                self.timeout_s,
            )
        return HumanState(seat, context)

    async def step_batch(self, turns: Sequence[Turn]) -> list[tuple[Decision, Any]]:
        return list(await asyncio.gather(*(self._decide(turn) for turn in turns)))  # several seats at once

    async def _decide(self, turn: Turn) -> tuple[Decision, HumanState]:
        state: HumanState = turn.state
        number = state.turn + 1
        if self.leave_after and state.unanswered >= self.leave_after:
            reason = f"the seat is empty: {state.unanswered} turns in a row went unanswered"
            return Decision(None, valid=False, reason=reason), replace(state, turn=number)
        context = state.context
        choices = allowed_choices(action_mask(turn), turn.action_catalog() if turn.action_catalog else None)
        published = time.time()
        situation = turn.info.get("situation", {})
        record = {
            "episode_id": context.episode_id,
            "agent": context.agent,
            "env": context.env_name,
            "scenario": context.scenario,
            "turn": number,
            "situation": situation,
            "events": turn.info.get("events", []),
            "outcome": turn.info.get("outcome", {}),
            "affect": turn.info.get("affect"),
            "schema": context.action_schema,
            "choices": choices,
            "published": published,
            "deadline": published + self.timeout_s,
        }
        path = state.seat / f"{context.episode_id or 0:08d}-{number:04d}.json"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(record, default=_jsonable))
        os.replace(tmp, path)
        try:
            answer = await self._wait(path, published + self.timeout_s)
        finally:
            for done in (path, _answer_path(path)):
                done.unlink(missing_ok=True)
        if answer.get("timeout"):
            reason = (
                f"no answer from the person within {self.timeout_s:g} s; the environment applied its no-op"
            )
            return Decision(None, valid=False, reason=reason), replace(
                state, turn=number, unanswered=state.unanswered + 1
            )
        action = answer.get("action")
        extra = {
            "prompt": json.dumps(situation, default=_jsonable),
            "raw_reply": json.dumps(action),
            "latency_s": float(answer.get("answered", time.time())) - published,
        }
        next_state = replace(state, turn=number, unanswered=0)
        problem = check_action(action, context.action_schema, choices)
        if problem is not None:  # the app checks too; this guards answers written by hand
            return Decision(
                None, valid=False, reason=f"the answer is not an action: {problem}", extra=extra
            ), next_state
        return Decision(action, extra=extra), next_state

    async def _wait(self, path: Path, deadline: float) -> dict[str, Any]:
        answer = _answer_path(path)
        while time.time() < deadline:
            if answer.exists() and (given := read_turn(answer)) is not None:
                return given
            await asyncio.sleep(self.poll_s)
        with contextlib.suppress(TurnClosedError):  # else the person answered at the last moment
            answer_turn(path, {"timeout": True})
        for _ in range(50):  # a writer's link is atomic; the content is there once it exists
            if (given := read_turn(answer)) is not None:
                return given
            await asyncio.sleep(0.01)
        return {"timeout": True}


def make_from_config(cfg: Mapping[str, Any], env_name: str) -> HumanPolicy:
    """``conf/agent/human.yaml``."""
    known = {"kind", "name", "timeout_s", "leave_after", "poll_s"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"human agent: unknown keys {unknown}; expected {sorted(known)}")
    return HumanPolicy(
        timeout_s=float(cfg.get("timeout_s", 300.0)),
        leave_after=int(cfg.get("leave_after", 3)),
        poll_s=float(cfg.get("poll_s", 0.2)),
    )
