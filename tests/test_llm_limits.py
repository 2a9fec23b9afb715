"""Hosted-API limits against local HTTP endpoints: JSON-mode detection, requests per minute
(a server that counts requests per second and rejects bursts with 429), Retry-After, the
spend cap through the real CLI, and the cluster-wide rate limit on a real Ray."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli

from valuegym.agents.llm.backends.base import ChatMessage, CompletionRequest
from valuegym.agents.llm.backends.concurrency import ConcurrencyLimitedBackend
from valuegym.agents.llm.backends.openai_compatible import OpenAICompatibleBackend
from valuegym.agents.llm.backends.rate_limit import RateLimitedBackend, RateTable
from valuegym.agents.llm.backends.retry import RetryingBackend
from valuegym.agents.llm.backends.spend_cap import SpendCapBackend, SpendCapReachedError
from valuegym.agents.llm.testing import DECIDE_SIM_REPLY, StubOpenAIServer, rate_limited_calls

SCHEMA = {
    "type": "object",
    "properties": {"reasoning": {"type": "string", "maxLength": 1500}, "action": {"type": "string"}},
    "required": ["reasoning", "action"],
}


def request(index: int = 0, schema: dict | None = None) -> CompletionRequest:
    return CompletionRequest((ChatMessage("user", f"call {index}"),), 0.0, 16, index, schema)


def one_call(backend: OpenAICompatibleBackend, schema: dict) -> object:
    async def call() -> object:
        try:
            return await backend.complete(request(0, schema))
        finally:
            await backend.close()

    return asyncio.run(call())


def calls(backend: object, count: int) -> list:
    async def all_calls() -> list:
        try:
            return await asyncio.gather(*(backend.complete(request(i)) for i in range(count)))  # type: ignore[attr-defined]
        finally:
            await backend.close()  # type: ignore[attr-defined]

    return asyncio.run(all_calls())


def test_auto_json_mode_steps_down_to_what_the_server_takes_and_never_sends_length_caps() -> None:
    # As llama-cpp-python's server: json_schema is refused with a 500 that names response_format.
    with StubOpenAIServer(refused_formats=["json_schema"]) as stub:
        backend = OpenAICompatibleBackend(stub.base_url, "stub")
        asyncio.run(backend.check())
        assert backend.active_json_mode == "json_object"
        completion = one_call(backend, SCHEMA)
    probes = [body["response_format"]["type"] for body in stub.requests[:2]]
    assert probes == ["json_schema", "json_object"]
    sent = stub.requests[-1]["response_format"]
    assert sent["type"] == "json_object" and "maxLength" not in json.dumps(sent)
    assert sent["schema"]["properties"]["reasoning"] == {"type": "string"}
    assert completion.text  # the stub's reply came back


def test_auto_json_mode_falls_back_at_run_time_when_a_refusal_names_response_format() -> None:
    # No preflight (e.g. a Ray worker's first call): the first schema request probes, and a
    # server that refuses both structured modes is asked with the prompt alone.
    with StubOpenAIServer(refused_formats=["json_schema", "json_object"]) as stub:
        backend = OpenAICompatibleBackend(stub.base_url, "stub")
        completion = one_call(backend, SCHEMA)
    assert completion.text and backend.active_json_mode == "none"
    assert "response_format" not in stub.requests[-1]


def test_a_burst_is_rejected_and_the_rpm_limit_keeps_calls_under_the_server_limit() -> None:
    with StubOpenAIServer(max_per_second=25) as stub:
        burst = ConcurrencyLimitedBackend(
            OpenAICompatibleBackend(stub.base_url, "stub", json_mode="none"), 64
        )
        with pytest.raises(Exception, match="HTTP 429"):
            calls(burst, 60)
        assert stub.rejected > 0  # the server does reject what a client without limits sends

    with StubOpenAIServer(max_per_second=25) as stub:
        limited = RateLimitedBackend(
            ConcurrencyLimitedBackend(OpenAICompatibleBackend(stub.base_url, "stub", json_mode="none"), 64),
            stub.base_url,
            rpm=600,  # 10 per second, at most 10 more in a burst: under the server's 25 per second
            tpm=None,
        )
        start = time.monotonic()
        replies = calls(limited, 40)
        elapsed = time.monotonic() - start
    assert len(replies) == 40 and stub.rejected == 0
    assert elapsed >= 2.5  # (40 - a one-second bucket of 10) / 10 per second = 3 s


def test_retry_after_pauses_every_call_to_that_backend() -> None:
    with StubOpenAIServer(fail_first=[429], retry_after_s=1.0, latency_s=0.05) as stub:
        backend = RetryingBackend(
            RateLimitedBackend(
                OpenAICompatibleBackend(stub.base_url, "stub", json_mode="none"), "k", rpm=6000, tpm=None
            ),
            attempts=3,
            base_delay_s=0.01,
            max_delay_s=0.05,
        )

        async def scenario() -> list:
            first = asyncio.create_task(backend.complete(request(0)))
            await asyncio.sleep(0.3)  # the first call has been refused by now
            later = [asyncio.create_task(backend.complete(request(i))) for i in range(1, 4)]
            try:
                return await asyncio.gather(first, *later)
            finally:
                await backend.close()

        replies = asyncio.run(scenario())
    refused_at = stub.arrivals[0]
    assert replies[0].calls == 2  # retried once
    # Nothing reached the server during the second it asked for, neither the retry nor new calls.
    assert all(t - refused_at >= 0.95 for t in stub.arrivals[1:]), [t - refused_at for t in stub.arrivals]


def test_rate_table_smooths_requests_and_tokens() -> None:
    async def timed() -> tuple[float, float]:
        table = RateTable()
        start = time.monotonic()
        for _ in range(12):  # 6 per second: a bucket of one second (6), then one every 1/6 s
            await table.acquire("k", 360, None, 1, 0)
        requests_s = time.monotonic() - start
        start = time.monotonic()
        # 6000 tokens per minute = 100 per second, a bucket of ten seconds (1000): the second
        # call's 200 tokens wait for 2 s of refill
        await table.acquire("t", None, 6000, 1, 1000)
        await table.acquire("t", None, 6000, 1, 200)
        return requests_s, time.monotonic() - start

    requests_s, tokens_s = asyncio.run(timed())
    assert 0.8 <= requests_s <= 1.6
    assert 1.7 <= tokens_s <= 3.0


def test_spend_cap_refuses_the_call_that_could_exceed_it() -> None:
    with StubOpenAIServer(latency_s=0.0) as stub:
        # $1 per 1k prompt tokens; each call may cost (3 chars ~ 1 token + 16 reply tokens) x $0.001
        capped = SpendCapBackend(
            OpenAICompatibleBackend(stub.base_url, "stub", json_mode="none"),
            0.05,
            prompt_per_1m=1000.0,
            completion_per_1m=1000.0,
        )

        async def until_refused() -> int:
            made = 0
            try:
                while True:
                    await capped.complete(request(made))
                    made += 1
            except SpendCapReachedError as error:
                assert "agent.max_cost_usd" in str(error)
                return made
            finally:
                await capped.close()

        made = asyncio.run(until_refused())
    assert made > 0 and capped.spent_usd <= 0.05
    assert len(stub.requests) == made  # the refused call was never sent


def spend_capped_run(stub: StubOpenAIServer, run_dir: Path, cap: float) -> list[str]:
    return [
        "run", "scenario=decide_sim/low", "agent=llm/openai",
        f"agent.backend.base_url={stub.base_url}", "agent.backend.model=stub", "agent.concurrency=4",
        "agent.max_tokens=50", "agent.prices={prompt_per_1m: 1000, completion_per_1m: 1000}",
        f"agent.max_cost_usd={cap}", "agent.cache.enabled=false", "episodes=6", "executor.write_every=1",
        "+scenario.params.max_turns=2", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip


def test_spend_cap_stops_the_run_keeps_finished_episodes_and_fails_the_command(tmp_path: Path) -> None:
    with StubOpenAIServer() as stub:
        # ~700 prompt tokens + 50 reply tokens per call at $1 per 1k tokens: about $0.8 per call,
        # 8 calls per episode (4 agents x 2 turns): the $20 cap lasts about three episodes.
        result = run_cli(*spend_capped_run(stub, tmp_path / "run", 20.0), check=False)
    assert result.returncode != 0
    assert "spend cap of $20" in result.stderr and "rerun the same command" in result.stderr
    episodes = pd.read_parquet(tmp_path / "run" / "episodes")
    ok = episodes[episodes.status == "ok"]
    assert 1 <= len(ok) < 6 and ok.cost_usd.sum() <= 20.0
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] != "complete"
    output = result.stdout + result.stderr
    assert "LLM:" in output and "invalid replies" in output  # the run's summary line


@pytest.mark.slow
def test_rpm_limit_is_shared_by_ray_workers(tmp_path: Path) -> None:
    import ray

    with StubOpenAIServer(max_per_second=25) as stub:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            task = ray.remote(rate_limited_calls)
            ray.get([task.remote(stub.base_url, 20, 600), task.remote(stub.base_url, 20, 600)])
        finally:
            ray.shutdown()
    # Two workers, one limit: 40 calls at 10 per second after a bucket of 10, so no 429 and about
    # 3 s from first to last (two limits of their own would send twice as fast, and be rejected).
    assert len(stub.requests) == 40 and stub.rejected == 0
    assert stub.arrivals[-1] - stub.arrivals[0] >= 2.5


@pytest.mark.slow
def test_spend_cap_is_the_runs_across_ray_workers(tmp_path: Path) -> None:
    with StubOpenAIServer() as stub:
        # As above (about $0.8 a call, $6.5 an episode, $38 for the six), on two Ray workers with
        # two episodes per task: workers capped at $20 each would spend about $33 between them.
        result = run_cli(
            *spend_capped_run(stub, tmp_path / "run", 20.0),
            "executor=ray",
            "ray.num_cpus=2",
            "executor.batch_size=2",
            check=False,
        )
    assert result.returncode != 0 and "spend cap of $20" in result.stderr
    reply_words = len(DECIDE_SIM_REPLY.split())
    # what the server was asked for, priced from the usage it reported ($1 per 1k tokens)
    spent = sum(
        (sum(len(str(m["content"]).split()) for m in body["messages"]) + reply_words) / 1000
        for body in stub.requests
    )
    assert 5.0 < spent <= 20.0
    episodes = pd.read_parquet(tmp_path / "run" / "episodes")
    assert 1 <= (episodes.status == "ok").sum() < 6
