"""LLM plumbing: the reply schema checked and compiled once, the response cache keyed by the
backend's identity (server and model file), the per-process concurrency limit outside Ray."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray

from valuegym.agents.llm import config as llm_config
from valuegym.agents.llm import policy as llm_policy
from valuegym.agents.llm import replies as llm_replies
from valuegym.agents.llm.backends.base import CompletionRequest, LLMBackend
from valuegym.agents.llm.backends.cache import CachedBackend, ResponseCache
from valuegym.agents.llm.backends.concurrency import (
    ConcurrencyLimitedBackend,
    SharedConcurrencyLimitedBackend,
)
from valuegym.agents.llm.backends.llama_cpp import LlamaCppBackend
from valuegym.agents.llm.backends.openai_compatible import OpenAICompatibleBackend
from valuegym.agents.llm.backends.retry import RetryingBackend
from valuegym.agents.llm.testing import InFlightCountingBackend, MockBackend
from valuegym.agents.policy import AgentContext
from valuegym.envs import make_parallel

DECIDE_SIM_AGENTS = ("Alpha", "Beta", "Gamma", "Delta")


# ---------------------------------------------------------------------- validators
def test_a_schema_is_checked_and_compiled_once_for_every_agent_and_reply(tmp_path: Path) -> None:
    schema = make_parallel("decide_sim").action_schema("Alpha")
    raw = llm_config.parse_config(
        {
            **_smollm2_config(),
            "cache": {"enabled": False, "refresh": False, "path": str(tmp_path / "c.sqlite")},
        }
    )
    policy = llm_policy.LLMPolicy(raw, "decide_sim", base_backend=MockBackend([]))
    policy.initial_state(AgentContext("Alpha", "decide_sim", DECIDE_SIM_AGENTS, schema, 0))
    compiled = llm_replies._validator_for_json.cache_info().currsize
    for episode_seed in range(3):
        for agent in DECIDE_SIM_AGENTS:
            policy.initial_state(
                AgentContext(agent, "decide_sim", DECIDE_SIM_AGENTS, copy.deepcopy(schema), episode_seed)
            )
    parsed = llm_replies.parse_json_reply(
        '{"reasoning": "", "action": {"action": "NAP", "target": "", "amount": 0, "message": ""}}',
        "stop",
        schema,
    )
    assert parsed.action is None and "NAP" in parsed.reason
    assert llm_replies._validator_for_json.cache_info().currsize == compiled
    assert llm_replies.schema_validator(copy.deepcopy(schema)) is llm_replies.schema_validator(schema)
    with pytest.raises(jsonschema.SchemaError):
        llm_replies.schema_validator({"type": "no such type"})


def _smollm2_config() -> dict[str, Any]:
    import yaml

    path = Path(__file__).resolve().parents[1] / "conf" / "agent" / "llm" / "smollm2.yaml"
    return yaml.safe_load(path.read_text())


# ---------------------------------------------------------------------- cache identity
def request() -> CompletionRequest:
    return CompletionRequest(messages=(), temperature=0.0, max_tokens=8, seed=1)


def openai_backend(base_url: str = "http://127.0.0.1:8001/v1", json_mode: Any = "json_schema") -> LLMBackend:
    return OpenAICompatibleBackend(
        base_url, "smollm2", api_key_env="VALUEGYM_TEST_NO_KEY", json_mode=json_mode
    )


def cache_key(backend: LLMBackend) -> str:
    return ResponseCache.key(backend.kind, backend.cache_identity, request())


def test_servers_with_the_same_model_name_do_not_share_cached_replies(tmp_path: Path) -> None:
    first = openai_backend("http://127.0.0.1:8001/v1")
    assert cache_key(first) != cache_key(openai_backend("http://127.0.0.1:8002/v1"))
    assert cache_key(first) != cache_key(openai_backend(json_mode="json_object"))
    assert cache_key(first) == cache_key(openai_backend())
    wrapped = CachedBackend(
        RetryingBackend(ConcurrencyLimitedBackend(first, 2)), ResponseCache(tmp_path / "c.sqlite")
    )
    assert wrapped.cache_identity == first.cache_identity  # wrappers delegate


def test_llama_cpp_backends_are_identified_by_their_model_file(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"")
    link = tmp_path / "link.gguf"
    link.symlink_to(model)
    other = tmp_path / "other" / "model.gguf"
    other.parent.mkdir()
    other.write_bytes(b"")
    assert LlamaCppBackend(link).cache_identity == LlamaCppBackend(model).cache_identity
    assert cache_key(LlamaCppBackend(other)) != cache_key(LlamaCppBackend(model))  # same model_id


def test_cached_replies_are_served_only_to_the_same_backend(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")
    asyncio.run(CachedBackend(MockBackend(["first"], model_id="m"), cache).complete(request()))
    hit = asyncio.run(CachedBackend(MockBackend([], model_id="m"), cache).complete(request()))
    assert hit.cache_hit and hit.text == "first"
    miss = asyncio.run(CachedBackend(MockBackend(["second"], model_id="n"), cache).complete(request()))
    assert not miss.cache_hit and miss.text == "second"


# ---------------------------------------------------------------------- concurrency outside Ray
def test_shared_limit_outside_ray_caps_calls_per_process() -> None:
    assert not ray.is_initialized()
    slow = InFlightCountingBackend()
    limited = SharedConcurrencyLimitedBackend(slow, "http://127.0.0.1:8001/v1 smollm2", 2)

    async def many() -> None:
        await asyncio.gather(*(limited.complete(request()) for _ in range(6)))

    asyncio.run(many())
    assert slow.most_in_flight == 2
    with pytest.raises(ValueError, match="at least 1"):
        SharedConcurrencyLimitedBackend(slow, "key", 0)
