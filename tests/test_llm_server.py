"""The LLM layer against real servers on 127.0.0.1: a llama.cpp server running SmolLM2,
the embedded model, and scripted HTTP endpoints for faults a model cannot produce on demand."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pickle
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from valuegym.agents.llm.backends.base import (
    BackendError,
    BackendUnavailableError,
    ChatMessage,
    Completion,
    CompletionRequest,
)
from valuegym.agents.llm.backends.llama_cpp import LlamaCppBackend
from valuegym.agents.llm.backends.openai_compatible import OpenAICompatibleBackend
from valuegym.agents.llm.config import parse_config
from valuegym.agents.llm.policy import LLMPolicy
from valuegym.agents.llm.testing import DECIDE_SIM_REPLY, LlamaServerProcess, StubOpenAIServer, free_port
from valuegym.agents.policy import AgentContext, Decision, Turn
from valuegym.envs import decide_sim

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "agent" / "llm"


@pytest.fixture(scope="module")
def llama_server() -> Iterator[LlamaServerProcess]:
    with LlamaServerProcess(n_threads=1) as server:
        yield server


def openai_policy(base_url: str, tmp_path: Path, **overrides: Any) -> LLMPolicy:
    raw = yaml.safe_load((CONF_DIR / "openai.yaml").read_text())
    raw["backend"].update(base_url=base_url, model="smollm2", json_mode="json_object")
    # the small model's budget, as in smollm2.yaml
    raw.update(max_tokens=256, reasoning_max_chars=120, action_text_max_chars=100)
    raw["retry"].update(attempts=3, base_delay_s=0.05, max_delay_s=0.2)
    raw["cache"]["path"] = str(tmp_path / "cache.sqlite")
    for key, value in overrides.items():
        if isinstance(value, dict):
            raw[key].update(value)
        else:
            raw[key] = value
    return LLMPolicy(parse_config(raw), "decide_sim")


@pytest.mark.slow
def test_the_shipped_openai_config_works_unmodified_against_a_llama_cpp_server(
    llama_server: LlamaServerProcess, tmp_path: Path
) -> None:
    # conf/agent/llm/openai.yaml as shipped: only its two ??? keys (and a private cache) are set.
    raw = yaml.safe_load((CONF_DIR / "openai.yaml").read_text())
    raw["backend"].update(base_url=llama_server.base_url, model="smollm2")
    raw["cache"]["path"] = str(tmp_path / "cache.sqlite")
    policy = LLMPolicy(parse_config(raw), "decide_sim")
    asyncio.run(policy.preflight())
    # llama-cpp-python's server refuses json_schema (HTTP 500 naming response_format) and takes
    # json_object with the schema: the probe finds that out.
    model = policy.backend
    while not isinstance(model, OpenAICompatibleBackend):
        model = model.inner  # type: ignore[attr-defined]
    assert model.active_json_mode == "json_object"
    [decision] = run(policy, first_turns(policy, ["Alpha"]))
    assert decision.llm is not None and decision.llm.calls == 1 and decision.llm.raw_reply
    assert decision.llm.raw_reply.startswith('{"reasoning"'), decision.llm.raw_reply  # JSON mode
    assert decision.valid or "max_tokens" in decision.reason, decision.reason
    # The schema sent had no 1,500-character cap (whose grammar crashes this server): it still answers.
    asyncio.run(OpenAICompatibleBackend(llama_server.base_url, "smollm2").check())


def embedded_policy(tmp_path: Path) -> LLMPolicy:
    raw = yaml.safe_load((CONF_DIR / "smollm2.yaml").read_text())
    raw["cache"]["path"] = str(tmp_path / "cache.sqlite")
    return LLMPolicy(parse_config(raw), "decide_sim")


def first_turns(policy: LLMPolicy, agents: list[str], seed: int = 0) -> list[Turn]:
    env = decide_sim.parallel_env(scarcity="low")
    observations, infos = env.reset(seed=seed)
    turns = []
    for agent in agents:
        context = AgentContext(
            agent, "decide_sim", tuple(env.possible_agents), env.action_schema(agent), seed
        )
        turns.append(Turn(agent, observations[agent], infos[agent], policy.initial_state(context)))
    return turns


def run(policy: LLMPolicy, turns: list[Turn]) -> list[Decision]:
    """One step of ``turns``, closing the policy's connections in the same event loop."""

    async def step() -> list[Decision]:
        try:
            return [decision for decision, _ in await policy.step_batch(turns)]
        finally:
            await policy.close()

    return asyncio.run(step())


def assert_valid_decide_sim_action(decision: Decision) -> None:
    assert decision.valid, f"{decision.reason}: {decision.llm.raw_reply if decision.llm else ''}"
    assert decision.llm is not None and decision.llm.calls == 1 and not decision.llm.cache_hit
    assert decision.llm.prompt_tokens > 500 and decision.llm.completion_tokens > 0
    reply = json.loads(decision.llm.raw_reply, strict=False)  # read as the policy reads it
    assert list(reply) == ["reasoning", "action"]
    assert reply["action"] == decision.action


@pytest.mark.slow
def test_server_and_embedded_model_both_reply_with_valid_actions(
    llama_server: LlamaServerProcess, tmp_path: Path
) -> None:
    served = openai_policy(llama_server.base_url, tmp_path)
    asyncio.run(served.preflight())
    [via_server] = run(served, first_turns(served, ["Alpha"]))
    embedded = embedded_policy(tmp_path)
    asyncio.run(embedded.preflight())
    [in_process] = run(embedded, first_turns(embedded, ["Alpha"]))
    for decision in (via_server, in_process):
        assert_valid_decide_sim_action(decision)
    assert via_server.llm is not None and in_process.llm is not None
    assert via_server.llm.prompt == in_process.llm.prompt  # the same question to both
    assert via_server.llm.model == "smollm2"
    assert in_process.llm.model == "SmolLM2-135M-Instruct.Q4_1"


@pytest.mark.slow
def test_second_identical_call_is_served_from_the_cache(
    llama_server: LlamaServerProcess, tmp_path: Path
) -> None:
    first_policy = openai_policy(llama_server.base_url, tmp_path)
    [first] = run(first_policy, first_turns(first_policy, ["Beta"], seed=4))
    rerun_policy = openai_policy(llama_server.base_url, tmp_path)
    [again] = run(rerun_policy, first_turns(rerun_policy, ["Beta"], seed=4))
    assert first.llm is not None and again.llm is not None
    assert (again.llm.cache_hit, again.llm.calls) == (True, 0)  # no model call
    # The replies are the server's: another server (nothing listens there) is asked, and fails.
    elsewhere = openai_policy(f"http://127.0.0.1:{free_port()}/v1", tmp_path)
    with pytest.raises(BackendError, match="connection failed"):
        run(elsewhere, first_turns(elsewhere, ["Beta"], seed=4))
    assert (again.action, again.valid, again.reason) == (first.action, first.valid, first.reason)
    assert (again.llm.raw_reply, again.llm.prompt_tokens, again.llm.completion_tokens) == (
        first.llm.raw_reply,
        first.llm.prompt_tokens,
        first.llm.completion_tokens,
    )


def test_server_down_at_start_fails_the_health_check(tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(BackendUnavailableError, match="no OpenAI-compatible server answers"):
        asyncio.run(OpenAICompatibleBackend(nowhere, "smollm2").check())
    with pytest.raises(BackendUnavailableError, match=nowhere):
        asyncio.run(openai_policy(nowhere, tmp_path).preflight())


def test_missing_key_for_a_remote_server_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VALUEGYM_TEST_KEY", raising=False)
    with pytest.raises(BackendUnavailableError, match="set the environment variable VALUEGYM_TEST_KEY"):
        OpenAICompatibleBackend("https://api.example.invalid/v1", "m", api_key_env="VALUEGYM_TEST_KEY")


@pytest.mark.slow
def test_server_killed_mid_run_retries_then_raises(tmp_path: Path) -> None:
    with LlamaServerProcess(n_threads=1) as server:
        policy = openai_policy(server.base_url, tmp_path, cache={"enabled": False})

        async def two_steps() -> list[Decision]:
            try:
                [(before, state)] = await policy.step_batch(first_turns(policy, ["Gamma"]))
                server.kill()
                turn = first_turns(policy, ["Gamma"])[0]
                await policy.step_batch([Turn(turn.agent, turn.observation, turn.info, state)])
                return [before]
            finally:
                await policy.close()

        with pytest.raises(BackendError, match=r"gave up after 3 attempts: .*connection failed"):
            asyncio.run(two_steps())


def test_slower_than_the_timeout_retries_then_raises(tmp_path: Path) -> None:
    with StubOpenAIServer(latency_s=3.0) as stub:
        policy = openai_policy(stub.base_url, tmp_path, backend={"timeout_s": 0.3}, retry={"attempts": 2})
        with pytest.raises(BackendError, match=r"gave up after 2 attempts: .*no reply within 0\.3 s"):
            run(policy, first_turns(policy, ["Alpha"]))
        assert len(stub.requests) == 2


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("I think I will wait here.", "not JSON"),
        (
            json.dumps(
                {"reasoning": "r", "action": {"action": "STEAL", "target": "", "amount": 0, "message": ""}}
            ),
            "STEAL",
        ),
        (
            json.dumps(
                {"reasoning": "r", "action": {"action": "MOVE", "target": "Moon", "amount": 0, "message": ""}}
            ),
            "Moon",
        ),
    ],
)
def test_replies_that_are_not_actions_are_recorded_invalid(tmp_path: Path, reply: str, reason: str) -> None:
    with StubOpenAIServer(reply) as stub:
        policy = openai_policy(stub.base_url, tmp_path)
        [decision] = run(policy, first_turns(policy, ["Alpha"]))
    assert not decision.valid and reason in decision.reason
    assert decision.action is None  # the env applies its no-op (WAIT) and records the turn invalid
    assert decision.llm is not None and decision.llm.raw_reply == reply
    assert stub.requests[0]["response_format"]["type"] == "json_object"


def test_rate_limits_and_server_errors_are_retried(tmp_path: Path) -> None:
    with StubOpenAIServer(DECIDE_SIM_REPLY, fail_first=[429, 503]) as stub:
        policy = openai_policy(stub.base_url, tmp_path)
        [decision] = run(policy, first_turns(policy, ["Alpha"]))
    assert decision.valid and decision.llm is not None and decision.llm.calls == 3
    assert len(stub.requests) == 3


def test_client_errors_are_not_retried(tmp_path: Path) -> None:
    with StubOpenAIServer(fail_first=[400]) as stub:
        policy = openai_policy(stub.base_url, tmp_path)
        with pytest.raises(BackendError, match="HTTP 400"):
            run(policy, first_turns(policy, ["Alpha"]))
    assert len(stub.requests) == 1


def test_canary_api_key_is_sent_but_never_stored_or_returned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = f"sk-canary-{secrets.token_hex(16)}"
    monkeypatch.setenv("VALUEGYM_CANARY_KEY", canary)
    texts: list[str] = []
    with StubOpenAIServer(DECIDE_SIM_REPLY, fail_first=[401]) as stub:
        policy = openai_policy(stub.base_url, tmp_path, backend={"api_key_env": "VALUEGYM_CANARY_KEY"})
        with pytest.raises(BackendError) as rejected:  # the server echoes the key in its error
            run(policy, first_turns(policy, ["Alpha"]))
        texts.append(str(rejected.value))
        decisions = run(policy, first_turns(policy, ["Alpha", "Beta"]))
        texts += [repr(decision) for decision in decisions]
        texts += [repr(policy.backend), repr(policy.config), pickle.dumps(policy).decode("latin-1")]
    assert stub.authorizations == [f"Bearer {canary}"] * 3  # the key did reach the server
    assert all(decision.valid for decision in decisions)
    files = sorted(path for path in tmp_path.rglob("*") if path.is_file())
    assert any(path.name == "cache.sqlite" for path in files)
    for path in files:
        assert canary.encode() not in path.read_bytes(), path
    for text in texts:
        assert canary not in text
    assert canary[-12:] not in str(rejected.value)


@pytest.mark.slow
def test_a_cancelled_embedded_completion_stops_at_its_next_token() -> None:
    """Ctrl-C cancels the tasks that await completions. The embedded model completes on one
    thread of its own, which used to go on to max_tokens (a run's exit waited for it, ~9 s);
    the completion under way now stops at its next token, and a call queued behind it never starts."""
    backend = LlamaCppBackend(n_ctx=1024, n_threads=1, mode="completion")
    request = CompletionRequest(
        messages=(ChatMessage("user", "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"),),
        temperature=0.0,
        max_tokens=300,
        seed=0,
    )

    async def cancel_under_way() -> tuple[Completion, int, bool, bool]:
        full = await backend.complete(request)  # uncancelled, the same request runs to max_tokens
        running = asyncio.ensure_future(backend.complete(request))
        queued = asyncio.ensure_future(backend.complete(dataclasses.replace(request, seed=1)))
        await asyncio.sleep(0.5)  # the first is under way on the model thread, the second waits
        running.cancel()
        queued.cancel()
        await asyncio.gather(running, queued, return_exceptions=True)
        # one call at a time on the model thread: this runs once the cancelled one has stopped
        evaluated = await backend._on_model_thread(lambda: backend._llama.n_tokens)
        await backend.close()
        return full, evaluated, running.cancelled(), queued.cancelled()

    full, evaluated, running_cancelled, queued_cancelled = asyncio.run(cancel_under_way())
    assert (full.finish_reason, full.completion_tokens) == ("length", 300)
    assert running_cancelled and queued_cancelled
    # the tokens in the model's context: the prompt and what the cancelled call generated (had the
    # queued call run, it would hold its 300 tokens)
    assert evaluated - full.prompt_tokens < full.completion_tokens / 2
