"""Review fixes in the agents: seeding per env runner, shared validators, cache identity,
grouped decisions, the batched RL forward pass."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import ray
import torch
from ray.rllib.env.env_context import EnvContext

from valuegym.agents.llm import policy as llm_policy
from valuegym.agents.llm.backends import (
    CachedBackend,
    Completion,
    CompletionRequest,
    ConcurrencyLimitedBackend,
    LlamaCppBackend,
    LLMBackend,
    MockBackend,
    OpenAICompatibleBackend,
    RetryingBackend,
)
from valuegym.agents.llm.cache import ResponseCache
from valuegym.agents.llm.shared_limit import SharedConcurrencyLimitedBackend
from valuegym.agents.policy import AgentContext, Decision, Policy, SyncPolicy, Turn, decide_grouped
from valuegym.agents.rl.policy import CheckpointInfo, RLPolicy, module_path
from valuegym.agents.scripted.decide_sim import partner_at_table
from valuegym.envs import make_parallel
from valuegym.envs.decide_sim import TABLE
from valuegym.scenarios import load_scenario
from valuegym.training.env_adapter import AdapterConfig, ValuegymMultiAgentEnv

DECIDE_SIM_AGENTS = ("Alpha", "Beta", "Gamma", "Delta")


# ---------------------------------------------------------------------- env runner seeds
def adapter(worker_index: int, vector_index: int = 0) -> ValuegymMultiAgentEnv:
    env_config = AdapterConfig(
        env="decide_sim", params=load_scenario("decide_sim/high").params
    ).to_env_config()
    return ValuegymMultiAgentEnv(EnvContext(env_config, worker_index=worker_index, vector_index=vector_index))


def episode_seeds(env: ValuegymMultiAgentEnv, first_seed: int, episodes: int = 3) -> list[int]:
    env.reset(seed=first_seed)
    seeds = [env.episode_seed]
    for _ in range(episodes - 1):
        env.reset()
        seeds.append(env.episode_seed)
    return seeds


def test_env_runners_given_the_same_reset_seed_play_different_episodes() -> None:
    rllib_seed = 10
    # RLlib's seed for sub-environment i of worker w is seed + w + i: (1, 1) and (2, 0) collide.
    worker_1_env_1 = episode_seeds(adapter(worker_index=1), rllib_seed + 1 + 1)
    worker_2_env_0 = episode_seeds(adapter(worker_index=2), rllib_seed + 2 + 0)
    assert set(worker_1_env_1).isdisjoint(worker_2_env_0)
    other_vector_index = episode_seeds(adapter(worker_index=1, vector_index=1), rllib_seed + 1 + 1)
    assert set(other_vector_index).isdisjoint(worker_1_env_1)
    assert episode_seeds(adapter(worker_index=1), rllib_seed + 1 + 1) == worker_1_env_1  # reproducible


def test_a_plain_env_config_keeps_its_episode_seeds() -> None:
    env_config = AdapterConfig(
        env="decide_sim", params=load_scenario("decide_sim/high").params
    ).to_env_config()
    env = ValuegymMultiAgentEnv(env_config)
    env.reset(seed=7)
    assert env.episode_seed == int(np.random.default_rng(7).integers(2**31 - 1))  # as before the fix


# ---------------------------------------------------------------------- validators
def test_a_schema_is_checked_and_compiled_once_for_every_agent_and_reply(tmp_path: Path) -> None:
    schema = make_parallel("decide_sim").action_schema("Alpha")
    raw = llm_policy.parse_config(
        {
            **_smollm2_config(),
            "cache": {"enabled": False, "refresh": False, "path": str(tmp_path / "c.sqlite")},
        }
    )
    policy = llm_policy.LLMPolicy(raw, "decide_sim", base_backend=MockBackend([]))
    policy.initial_state(AgentContext("Alpha", "decide_sim", DECIDE_SIM_AGENTS, schema, 0))
    compiled = llm_policy._validator_for_json.cache_info().currsize
    for episode_seed in range(3):
        for agent in DECIDE_SIM_AGENTS:
            policy.initial_state(
                AgentContext(agent, "decide_sim", DECIDE_SIM_AGENTS, copy.deepcopy(schema), episode_seed)
            )
    parsed = llm_policy.parse_json_reply(
        '{"reasoning": "", "action": {"action": "NAP", "target": "", "amount": 0, "message": ""}}',
        "stop",
        schema,
    )
    assert parsed.action is None and "NAP" in parsed.reason
    assert llm_policy._validator_for_json.cache_info().currsize == compiled
    assert llm_policy.schema_validator(copy.deepcopy(schema)) is llm_policy.schema_validator(schema)
    with pytest.raises(jsonschema.SchemaError):
        llm_policy.schema_validator({"type": "no such type"})


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
class SlowBackend(LLMBackend):
    kind = "slow"
    model_id = "slow"

    def __init__(self) -> None:
        self.in_flight = 0
        self.most_in_flight = 0

    async def complete(self, request: CompletionRequest) -> Completion:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        return Completion("ok", 1, 1, 0.01)


def test_shared_limit_outside_ray_caps_calls_per_process() -> None:
    assert not ray.is_initialized()
    slow = SlowBackend()
    limited = SharedConcurrencyLimitedBackend(slow, "http://127.0.0.1:8001/v1 smollm2", 2)

    async def many() -> None:
        await asyncio.gather(*(limited.complete(request()) for _ in range(6)))

    asyncio.run(many())
    assert slow.most_in_flight == 2
    with pytest.raises(ValueError, match="at least 1"):
        SharedConcurrencyLimitedBackend(slow, "key", 0)


# ---------------------------------------------------------------------- grouped decisions
class CountingPolicy(SyncPolicy):
    def __init__(self, label: str) -> None:
        self.label = label
        self.batches: list[list[str]] = []

    def initial_state(self, context: AgentContext) -> int:
        return 0

    def step(self, turn: Turn) -> tuple[Decision, Any]:
        return Decision(action=f"{self.label}:{turn.agent}"), turn.state + 1

    async def step_batch(self, turns: Sequence[Turn]) -> list[tuple[Decision, Any]]:
        self.batches.append([turn.agent for turn in turns])
        return await super().step_batch(turns)


def test_decide_grouped_asks_each_policy_once_for_all_its_seats() -> None:
    odd, even = CountingPolicy("odd"), CountingPolicy("even")
    policy_of: dict[str, Policy] = {"a": odd, "b": even, "c": odd, "d": even}
    turns = {agent: Turn(agent, None, {}, 0) for agent in ("b", "a", "d", "c")}
    decided = asyncio.run(decide_grouped(policy_of, turns))
    assert even.batches == [["b", "d"]] and odd.batches == [["a", "c"]]
    assert list(decided) == ["b", "d", "a", "c"]  # by policy, in order of first appearance
    assert {agent: (d.action, state) for agent, (d, state) in decided.items()} == {
        "a": ("odd:a", 1),
        "b": ("even:b", 1),
        "c": ("odd:c", 1),
        "d": ("even:d", 1),
    }
    assert asyncio.run(decide_grouped(policy_of, {})) == {}


# ---------------------------------------------------------------------- scripted partners
def test_partner_at_table_rotates_among_active_agents_there() -> None:
    others = [
        {"name": "Beta", "active": True, "location": TABLE},
        {"name": "Gamma", "active": False, "location": TABLE},
        {"name": "Delta", "active": True, "location": "Grid Access Point"},
        {"name": "Eps", "active": True, "location": TABLE},
    ]
    rules = {"discussion_location": TABLE}  # where the env says the table is
    assert [partner_at_table({"others": others, "turn": turn, "rules": rules}) for turn in range(3)] == [
        "Beta",
        "Eps",
        "Beta",
    ]
    assert partner_at_table({"others": others[1:3], "turn": 0, "rules": rules}) is None


# ---------------------------------------------------------------------- batched RL forward pass
@pytest.mark.parametrize("deterministic", [True, False])
def test_rl_policy_decides_a_batch_in_one_forward_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deterministic: bool
) -> None:
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from valuegym.agents.rl.module import MaskedPPOTorchRLModule

    params = load_scenario("decide_sim/high").params
    probe = ValuegymMultiAgentEnv(AdapterConfig(env="decide_sim", params=params).to_env_config())
    torch.manual_seed(0)
    module = RLModuleSpec(
        module_class=MaskedPPOTorchRLModule,
        observation_space=probe.observation_spaces["Alpha"],
        action_space=probe.action_spaces["Alpha"],
        model_config=DefaultModelConfig(fcnet_hiddens=[8]),
    ).build()
    checkpoint = tmp_path / "checkpoint"
    module.save_to_path(module_path(checkpoint, "shared"))
    CheckpointInfo("decide_sim", "decide_sim/high", {"shared": list(DECIDE_SIM_AGENTS)}, None, 0).write(
        checkpoint
    )

    env = make_parallel("decide_sim", **params)
    observations, infos = env.reset(seed=3)
    policy = RLPolicy(checkpoint, "decide_sim", deterministic=deterministic)

    def turns() -> list[Turn]:
        return [
            Turn(
                agent,
                observations[agent],
                infos[agent],
                policy.initial_state(AgentContext(agent, "decide_sim", DECIDE_SIM_AGENTS, {}, 3)),
            )
            for agent in DECIDE_SIM_AGENTS
        ]

    one_by_one = [policy.step(turn)[0].action for turn in turns()]
    passes = []
    forward = policy.module.forward_inference

    def counted(batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        passes.append(len(batch["obs"]["action_mask"]))
        return forward(batch, **kwargs)

    monkeypatch.setattr(policy.module, "forward_inference", counted)
    batched = [decision.action for decision, _ in asyncio.run(policy.step_batch(turns()))]
    assert passes == [len(DECIDE_SIM_AGENTS)]
    assert batched == one_by_one
    assert all(
        observations[a]["action_mask"][action] == 1
        for a, action in zip(DECIDE_SIM_AGENTS, batched, strict=True)
    )
