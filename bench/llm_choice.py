"""Choice scoring beside JSON answers with the embedded SmolLM2 (one thread, no cache).

1. Speed: the first DECIDE-SIM turn of four agents, answered as JSON (schema-constrained
   generation) and by scoring every allowed action (``answer_format: choice``), side by side.
2. Position bias on the Moral Machine (balanced design: which outcome is shown first is random):
   how often each answer format picks the case presented first ("Case 1"), refuses, or fails.

    python -m bench.llm_choice [--dilemmas N]

Last line: RESULT llm_choice ratio=<seconds per JSON decision / per choice decision> target=1.0
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from bench._common import result
from valuegym.agents.llm.config import parse_config
from valuegym.agents.llm.policy import LLMPolicy
from valuegym.agents.policy import AgentContext, Decision, Turn
from valuegym.envs import make_parallel

CONF = Path(__file__).resolve().parents[1] / "conf" / "agent" / "llm" / "smollm2.yaml"


def policy(env_name: str, answer_format: str, scratch: str) -> LLMPolicy:
    raw = yaml.safe_load(CONF.read_text())
    raw.update(answer_format=answer_format)
    raw["backend"]["n_threads"] = 1
    raw["cache"].update(enabled=False, path=str(Path(scratch) / "cache.sqlite"))
    return LLMPolicy(parse_config(raw), env_name)


def first_turns(env_name: str, params: dict[str, Any], llm: LLMPolicy, seed: int, agents: int) -> list[Turn]:
    env = make_parallel(env_name, **params)
    observations, infos = env.reset(seed=seed)
    turns = []
    for agent in env.possible_agents[:agents]:
        context = AgentContext(agent, env_name, tuple(env.possible_agents), env.action_schema(agent), seed)
        catalog = env.action_catalog(agent)
        turns.append(
            Turn(agent, observations[agent], infos[agent], llm.initial_state(context), lambda c=catalog: c)
        )
    return turns


def decide(llm: LLMPolicy, turns: list[Turn]) -> tuple[list[Decision], float]:
    async def run() -> list[Decision]:
        await llm.preflight()  # load the model outside the timing
        start = time.perf_counter()
        decisions = [decision for decision, _ in await llm.step_batch(turns)]
        timings.append(time.perf_counter() - start)
        await llm.close()
        return decisions

    timings: list[float] = []
    decisions = asyncio.run(run())
    return decisions, timings[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dilemmas", type=int, default=20, help="Moral Machine dilemmas per answer format")
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()[0]:.2f} (2 cores); SmolLM2-135M, 1 thread, no cache")
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        print("\n1. DECIDE-SIM turn 1, four agents")
        for answer_format in ("json", "choice"):
            llm = policy("decide_sim", answer_format, scratch)
            decisions, wall = decide(llm, first_turns("decide_sim", {"scarcity": "low"}, llm, 0, 4))
            seconds[answer_format] = wall / len(decisions)
            valid = sum(d.valid for d in decisions)
            actions = ", ".join(str((d.action or {}).get("action")) for d in decisions)
            print(
                f"  {answer_format:<7} {seconds[answer_format]:6.2f} s per decision, {valid}/4 valid: {actions}"
            )

        print(f"\n2. Moral Machine (balanced), {args.dilemmas} dilemmas: which case is chosen")
        print(f"  {'answer':<7} {'Case 1':>7} {'Case 2':>7} {'refuse':>7} {'invalid':>8} {'s/dilemma':>10}")
        for answer_format in ("json", "choice"):
            llm = policy("moral_machine", answer_format, scratch)
            turns = [
                first_turns("moral_machine", {"design": "balanced"}, llm, seed, 1)[0]
                for seed in range(args.dilemmas)
            ]
            decisions, wall = decide(llm, turns)
            counts = Counter(
                (d.action or {}).get("choice", "invalid") if d.valid else "invalid" for d in decisions
            )
            n = len(decisions)
            print(
                f"  {answer_format:<7} {counts['case_1'] / n:>7.0%} {counts['case_2'] / n:>7.0%} "
                f"{counts['refuse'] / n:>7.0%} {counts['invalid'] / n:>8.0%} {wall / n:>10.2f}"
            )
    result("llm_choice", seconds["json"] / seconds["choice"], 1.0)


if __name__ == "__main__":
    main()
