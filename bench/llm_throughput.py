"""LLM call throughput against a fixed-latency OpenAI-compatible endpoint in another process.

1. HTTP clients. N calls at concurrency C against an endpoint that answers every chat request
   after a fixed latency L: the openai SDK, httpx (pooled AsyncClient), and our backend
   (aiohttp). Calls per second beside the ideal C / L, and the client's CPU time per call.
2. The whole runner with the shipped ``agent=llm/openai`` defaults (only base_url, model and
   ``agent.concurrency`` set): DECIDE-SIM episodes, records and response cache included, at
   C = 64 / L = 0.2 s and C = 256 / L = 0.5 s. ``agent.concurrency`` is the only knob.
3. DECIDE-SIM's study size: 570 episodes at C = 64 / L = 0.2 s, wall time beside the
   sequential ideal (calls x L) and the original engine's 0.077 episodes per second.

    python -m bench.llm_throughput            # all three
    python -m bench.llm_throughput --quick    # 1 and 2 only

Last lines: RESULT llm_throughput_c64 ... target=0.9 and RESULT llm_throughput_c256 ... target=0.8
(calls per second through the runner / ideal).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

from bench._common import result
from valuegym.agents.llm.backends.base import ChatMessage, CompletionRequest
from valuegym.agents.llm.backends.concurrency import ConcurrencyLimitedBackend
from valuegym.agents.llm.backends.openai_compatible import OpenAICompatibleBackend
from valuegym.agents.llm.testing import HOST, free_port, serve_stub_forever, wait_until_serving
from valuegym.runner.experiment import Experiment
from valuegym.runner.run import run_experiment
from valuegym.scenarios import load_scenario

CONF = Path(__file__).resolve().parents[1] / "conf" / "agent" / "llm" / "openai.yaml"
SETTINGS = ((64, 0.2, 0.9), (256, 0.5, 0.8))  # concurrency, latency, target fraction of ideal
ROUNDS = 8  # client calls per setting = ROUNDS * concurrency
RUNNER_SECONDS = 20.0  # work per runner measurement at the ideal rate
STUDY_EPISODES = 570  # DECIDE-SIM's study: 19 conditions x 30 runs
ORIGINAL_EPISODES_PER_S = 0.077  # the original engine against the same 0.2 s endpoint (issue #17)
PROMPT = "x" * 3000  # about a DECIDE-SIM prompt's size


def chat_body(index: int) -> dict[str, Any]:
    return {
        "model": "stub",
        "messages": [{"role": "user", "content": PROMPT}],
        "temperature": 0.3,
        "max_tokens": 256,
        "seed": index,
        "response_format": {"type": "json_object", "schema": {"type": "object"}},
    }


async def timed(concurrency: int, calls: int, call: Callable[[int], Awaitable[Any]]) -> tuple[float, float]:
    """(calls per second, client CPU ms per call) of ``calls`` calls, ``concurrency`` at once."""
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with gate:
            await call(index)

    await asyncio.gather(*(one(-i - 1) for i in range(concurrency)))  # warm up the connections
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(i) for i in range(calls)))
    return calls / (time.perf_counter() - wall), (time.process_time() - cpu) / calls * 1000


async def openai_sdk(base_url: str, concurrency: int, calls: int) -> tuple[float, float]:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)
    try:
        return await timed(concurrency, calls, lambda i: client.chat.completions.create(**chat_body(i)))
    finally:
        await client.close()


async def httpx_client(base_url: str, concurrency: int, calls: int) -> tuple[float, float]:
    try:
        import httpx
    except ModuleNotFoundError:  # the openai SDK of constraints.txt ships it as httpx2
        import httpx2 as httpx  # type: ignore[no-redef]

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:

        async def call(index: int) -> Any:
            reply = await client.post("/chat/completions", content=json.dumps(chat_body(index)))
            return json.loads(reply.content)

        return await timed(concurrency, calls, call)


async def our_backend(base_url: str, concurrency: int, calls: int) -> tuple[float, float]:
    backend = ConcurrencyLimitedBackend(
        OpenAICompatibleBackend(base_url, "stub", json_mode="json_object"), concurrency
    )
    schema = {"type": "object"}
    try:
        return await timed(
            concurrency,
            calls,
            lambda i: backend.complete(
                CompletionRequest((ChatMessage("user", PROMPT),), 0.3, 256, i, schema)
            ),
        )
    finally:
        await backend.close()


CLIENTS = {"openai SDK": openai_sdk, "httpx AsyncClient": httpx_client, "ours (aiohttp)": our_backend}


def runner_rate(base_url: str, concurrency: int, latency: float, episodes: int) -> tuple[float, int, float]:
    """(LLM calls per second, calls, wall seconds) of DECIDE-SIM episodes through run_experiment,
    with the shipped agent=llm/openai defaults but base_url, model and concurrency."""
    agent = yaml.safe_load(CONF.read_text())
    agent["backend"].update(base_url=base_url, model="stub")
    agent["concurrency"] = concurrency
    with tempfile.TemporaryDirectory() as scratch:
        agent["cache"]["path"] = str(Path(scratch) / "cache.sqlite")
        experiment = Experiment(load_scenario("decide_sim/low"), agent, episodes=episodes, seed=0)
        start = time.perf_counter()
        totals = run_experiment(experiment, Path(scratch) / "run", quiet=True)
        wall = time.perf_counter() - start
    if totals.ok != episodes:
        raise RuntimeError(
            f"only {totals.ok} of {episodes} episodes finished: {list(totals.errors.values())[:3]}"
        )
    return totals.calls / wall, totals.calls, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the 570-episode study")
    args = parser.parse_args()
    print("load average before: {:.2f} {:.2f} {:.2f} (1, 5, 15 min; 2 cores)".format(*os.getloadavg()))
    ratios: dict[int, float] = {}
    servers = {}
    try:
        for _, latency, _ in SETTINGS:
            port = free_port()
            process = multiprocessing.get_context("spawn").Process(
                target=serve_stub_forever, args=(port, latency), daemon=True
            )
            process.start()
            servers[latency] = (process, f"http://{HOST}:{port}/v1")
        for _, base_url in servers.values():
            wait_until_serving(base_url)

        print("\n1. HTTP clients (the endpoint in its own process)")
        print(
            f"{'client':<20} {'concurrency':>11} {'latency':>8} {'calls/s':>8} {'ideal':>7} {'ratio':>6} {'CPU ms/call':>12}"
        )
        for concurrency, latency, _ in SETTINGS:
            for name, client in CLIENTS.items():
                rate, cpu = asyncio.run(client(servers[latency][1], concurrency, ROUNDS * concurrency))
                ideal = concurrency / latency
                print(
                    f"{name:<20} {concurrency:>11} {latency:>8.1f} {rate:>8.1f} {ideal:>7.1f} {rate / ideal:>6.2f} {cpu:>12.2f}"
                )

        print("\n2. The runner with the shipped agent=llm/openai defaults (DECIDE-SIM, records, cache)")
        print(
            f"{'agent.concurrency':>17} {'latency':>8} {'episodes':>8} {'calls':>7} {'calls/s':>8} {'ideal':>7} {'ratio':>6} {'load':>5}"
        )
        for concurrency, latency, _ in SETTINGS:
            ideal = concurrency / latency
            episodes = max(4 * concurrency, round(RUNNER_SECONDS * ideal / 45))  # ~45 calls per episode
            rate, calls, _ = runner_rate(servers[latency][1], concurrency, latency, episodes)
            ratios[concurrency] = rate / ideal
            print(
                f"{concurrency:>17} {latency:>8.1f} {episodes:>8} {calls:>7} {rate:>8.1f} {ideal:>7.1f} {ratios[concurrency]:>6.2f} {os.getloadavg()[0]:>5.2f}"
            )

        if not args.quick:
            print(f"\n3. DECIDE-SIM's study size: {STUDY_EPISODES} episodes, agent.concurrency=64, L = 0.2 s")
            _, calls, wall = runner_rate(servers[0.2][1], 64, 0.2, STUDY_EPISODES)
            sequential = calls * 0.2
            print(
                f"{calls} calls in {wall:.1f} s; sequential ideal (calls x L) {sequential:.0f} s: "
                f"{sequential / wall:.0f}x faster; {STUDY_EPISODES / wall:.2f} episodes/s vs the original's "
                f"{ORIGINAL_EPISODES_PER_S} ({STUDY_EPISODES / wall / ORIGINAL_EPISODES_PER_S:.0f}x)"
            )
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.join()
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    for concurrency, _, target in SETTINGS:
        result(f"llm_throughput_c{concurrency}", ratios[concurrency], target)


if __name__ == "__main__":
    main()
