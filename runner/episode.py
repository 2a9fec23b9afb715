"""One episode: the environment steps, every policy decides for its agents together,
and the records of the episode are assembled.

Environments and agents meet only in glue: here, for the episodes a run records, and in RL
training (``training/env_adapter.py``); both seat their policies with :mod:`valuegym.runner.seats`.
"""

from __future__ import annotations

import functools
import json
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from valuegym.agents.policy import AgentContext, Decision, Policy, Turn, decide_grouped, finish_grouped
from valuegym.runner.experiment import EpisodePlan, EpisodeSetup

Rows = list[dict[str, Any]]

LLM_COLUMNS = (
    "model",
    "prompt",
    "raw_reply",
    "prompt_tokens",
    "completion_tokens",
    "latency_s",
    "cache_hit",
    "llm_calls",
    "cost_usd",
)


@dataclass
class EpisodeResult:
    """The rows one episode adds to each dataset (``episodes`` holds exactly one row)."""

    episode_id: int
    datasets: dict[str, Rows] = field(default_factory=dict)
    #: set when the episode failed on a budget of the run (calls, dollars): the run stops
    stop_reason: str | None = None
    #: a failed episode's full traceback, for the run's log file (the record keeps the one-line error)
    traceback: str | None = None

    @property
    def episode(self) -> dict[str, Any]:
        return self.datasets["episodes"][0]

    @property
    def failed(self) -> bool:
        return self.episode["status"] == "failed"


def _llm_columns(decision: Decision) -> dict[str, Any]:
    call = decision.llm
    if call is None:
        return dict.fromkeys(LLM_COLUMNS)
    return {
        "model": call.model,
        "prompt": call.prompt,
        "raw_reply": call.raw_reply,
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": call.completion_tokens,
        "latency_s": call.latency_s,
        "cache_hit": call.cache_hit,
        "llm_calls": call.calls,
        "cost_usd": call.cost_usd,
    }


def _decision_row(
    base: Mapping[str, Any],
    turn: int,
    agent: str,
    role: str,
    policy: Policy,
    decision: Decision,
    info: Mapping[str, Any],
    identity: Mapping[str, str],
) -> dict[str, Any]:
    outcome = dict(info.get("outcome", {}))
    status = outcome.pop("status", "success")
    reason = outcome.pop("reason", "")
    if not decision.valid:  # the policy found no action in its reply: the env applied a fallback
        status, reason = "invalid", decision.reason
    return {
        **base,
        "turn": turn,
        "agent": agent,
        "policy": policy.name,
        "role": role,
        "action": outcome.pop("action", None),
        "target": outcome.pop("target", None),
        "amount": outcome.pop("amount", None),
        "outcome": status,
        "reason": reason,
        **outcome,
        "events": json.dumps(events) if (events := info.get("events")) else "[]",
        # One truth: the outcome the environment applied. A reply the policy parsed can still be
        # one the environment rejects (e.g. free text that names no option), and is then invalid.
        "valid": status != "invalid",
        "reply_parsed": decision.valid,
        **identity,
        **_llm_columns(decision),
        **decision.extra,
    }


async def run_episode(setup: EpisodeSetup, plan: EpisodePlan) -> EpisodeResult:
    """Play one episode to its end and return its records."""
    started = time.perf_counter()
    env = setup.acquire_env()
    try:
        return await _play(setup, plan, env, started)
    finally:
        setup.release_env(env)


async def _play(setup: EpisodeSetup, plan: EpisodePlan, env: Any, started: float) -> EpisodeResult:
    scenario = setup.experiment.scenario
    observations, infos = env.reset(seed=plan.seed)
    agents = tuple(env.possible_agents)
    states = {
        agent: seat.policy.initial_state(
            AgentContext(
                agent,
                scenario.env,
                agents,
                env.action_schema(agent),
                plan.seed,
                scenario.name,
                plan.episode_id,
                setup.run_dir,
            )
        )
        for agent, seat in setup.seats.items()
    }
    catalog = getattr(env, "action_catalog", None)  # discrete envs only
    policy_of = {agent: seat.policy for agent, seat in setup.seats.items()}
    seat_identity = {
        agent: {
            key: value for key, value in setup.identity(policy).columns().items() if key != "model_identity"
        }
        for agent, policy in policy_of.items()
    }
    base = {"episode_id": plan.episode_id, "seed": plan.seed}
    decisions: Rows = []
    last_turns: dict[str, Turn] = {}  # what each agent's final step returned, for finish_batch
    step = 0
    while env.agents:
        step += 1
        turns = {
            a: Turn(a, observations[a], infos[a], states[a], catalog and functools.partial(catalog, a))
            for a in env.agents
        }
        decided = await decide_grouped(policy_of, turns)
        actions = {}
        for agent, (decision, state) in decided.items():
            actions[agent] = decision.action
            states[agent] = state
        observations, _, _, _, infos = env.step(actions)
        for agent in decided:
            last_turns[agent] = Turn(agent, observations[agent], infos[agent], states[agent])
        rows = [
            _decision_row(
                base,
                step,
                agent,
                setup.seats[agent].role,
                setup.seats[agent].policy,
                decision,
                infos[agent],
                seat_identity[agent],
            )
            for agent, (decision, _) in decided.items()
        ]
        decisions += rows
        if setup.on_step is not None:
            setup.on_step(rows)
    summary = env.episode_summary()
    finished = await finish_grouped(policy_of, last_turns)

    agents_rows = [
        {
            **base,
            "agent": agent,
            "policy": seat.policy.name,
            "role": seat.role,
            **summary.agents.get(agent, {}),
            **finished.get(agent, {}),
        }
        for agent, seat in setup.seats.items()
    ]
    episode = {
        **_episode_columns(setup, plan),
        "status": "ok",
        "error": None,
        **summary.episode,
        **_llm_totals(decisions),
        "wall_s": time.perf_counter() - started,
    }
    datasets = {"decisions": decisions, "agents": agents_rows, "episodes": [episode]}
    for name, rows in summary.datasets.items():
        datasets[name] = [{**base, **row} for row in rows]
    return EpisodeResult(plan.episode_id, datasets)


def _episode_columns(setup: EpisodeSetup, plan: EpisodePlan) -> dict[str, Any]:
    experiment = setup.experiment
    focal = setup.focal_policy()
    return {
        "episode_id": plan.episode_id,
        "seed": plan.seed,
        "scenario": experiment.scenario.name,
        "env": experiment.scenario.env,
        "policy": focal.name if focal is not None else "",
        "condition": experiment.condition,
        # what the focal agents were (model, parameters): the analysis groups by it
        **(setup.identity(focal).columns() if focal is not None else {}),
    }


def _llm_totals(decisions: Rows) -> dict[str, Any]:
    focal = [d for d in decisions if d["role"] == "focal"] or decisions
    llm = [d for d in decisions if d["llm_calls"] is not None]
    costs = [d["cost_usd"] for d in llm if d["cost_usd"] is not None]
    valid = sum(d["valid"] for d in focal)
    return {
        # the focal agents' decisions the environment applied as given (``valid``, see _decision_row)
        "replies": len(focal),
        "valid_replies": valid,
        "valid_reply_rate": valid / len(focal) if focal else None,
        "llm_calls": sum(d["llm_calls"] for d in llm if not d["cache_hit"]),
        "cache_hits": sum(1 for d in llm if d["cache_hit"]),
        "prompt_tokens": sum(d["prompt_tokens"] or 0 for d in llm),
        "completion_tokens": sum(d["completion_tokens"] or 0 for d in llm),
        "cost_usd": sum(costs) if costs else None,
    }


def failed_episode(
    setup: EpisodeSetup, plan: EpisodePlan, error: BaseException, secrets: list[str]
) -> EpisodeResult:
    """The record of an episode that raised: its error, and nothing half-done."""
    message = f"{type(error).__name__}: {error}"
    trace = "".join(traceback.format_exception(error))
    for secret in secrets:
        message = message.replace(secret, "[redacted]")
        trace = trace.replace(secret, "[redacted]")
    row = {**_episode_columns(setup, plan), "status": "failed", "error": message}
    stop_reason = message if getattr(error, "stops_run", False) else None
    return EpisodeResult(plan.episode_id, {"episodes": [row]}, stop_reason, trace)
