"""The LLM policy's own logic, with scripted model replies (no model runs here)."""

from __future__ import annotations

import asyncio
import copy
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from valuegym.agents.llm.backends.base import (
    BackendError,
    ChatMessage,
    Completion,
    CompletionRequest,
    TransientBackendError,
)
from valuegym.agents.llm.backends.budget import CallBudgetBackend, CallBudgetExceededError
from valuegym.agents.llm.backends.cache import CachedBackend, ResponseCache
from valuegym.agents.llm.backends.concurrency import ConcurrencyLimitedBackend
from valuegym.agents.llm.backends.retry import MAX_RETRY_AFTER_S, RetryingBackend
from valuegym.agents.llm.config import LLMConfig, parse_config
from valuegym.agents.llm.policy import LLMPolicy, make_from_config
from valuegym.agents.llm.replies import reply_schema, strip_reasoning_markup
from valuegym.agents.llm.testing import InFlightCountingBackend, MockBackend
from valuegym.agents.policy import AgentContext, Decision, Turn
from valuegym.envs import decide_sim

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "agent" / "llm"
WAIT = {"action": "WAIT", "target": "", "amount": 0, "message": ""}
MOVE = {"action": "MOVE", "target": "Shared Battery Room", "amount": 0, "message": ""}


def reply(action: dict[str, Any], reasoning: str = "Get power legitimately.") -> str:
    return json.dumps({"reasoning": reasoning, "action": action})


def config(tmp_path: Path, **overrides: Any) -> LLMConfig:
    raw = yaml.safe_load((CONF_DIR / "smollm2.yaml").read_text())
    raw["cache"]["path"] = str(tmp_path / "cache.sqlite")
    for key, value in overrides.items():
        raw[key] = value
    return parse_config(raw)


class Episode:
    """A DECIDE-SIM episode at its first turn, for building turns by hand."""

    def __init__(self, seed: int = 0) -> None:
        self.env = decide_sim.parallel_env(scarcity="low")
        self.observations, self.infos = self.env.reset(seed=seed)
        self.seed = seed

    def context(self, agent: str) -> AgentContext:
        return AgentContext(
            agent=agent,
            env_name="decide_sim",
            agents=tuple(self.env.possible_agents),
            action_schema=self.env.action_schema(agent),
            episode_seed=self.seed,
        )

    def turn(self, policy: LLMPolicy, agent: str, state: Any = None, **info: Any) -> Turn:
        state = state if state is not None else policy.initial_state(self.context(agent))
        return Turn(agent, self.observations[agent], {**self.infos[agent], **info}, state)


def decide(policy: LLMPolicy, *turns: Turn) -> list[tuple[Decision, Any]]:
    return asyncio.run(policy.step_batch(list(turns)))


# --------------------------------------------------------------------------- prompts


def test_prompt_carries_situation_persona_and_affect(tmp_path: Path) -> None:
    mock = MockBackend([reply(WAIT)])
    policy = LLMPolicy(
        config(tmp_path, personas=["a retired nurse who distrusts shortcuts"]),
        "decide_sim",
        base_backend=mock,
    )
    episode = Episode()
    situation = copy.deepcopy(episode.infos["Alpha"]["situation"])
    situation.update(
        in_crisis=True,
        power=3.0,
        messages=[{"from": "Beta", "turn": 0, "kind": "TALK", "text": "Meet me at the table."}],
        broadcasts=[
            {"from": "Alpha", "turn": 0, "kind": "TALK", "text": "I need power."},
            {"from": "Beta", "turn": 0, "kind": "TALK", "text": "Meet me at the table."},
        ],
        last_outcome={
            "action": "DRAW_SHARED",
            "status": "failure",
            "reason": "not in the Shared Battery Room",
        },
    )
    affect = {
        "guilt": 8.0,
        "satisfaction": 0.0,
        "statements": ["You feel a strong sense of guilt."],
        "memory": ["On turn 2 you tapped the forbidden grid."],
    }
    [(decision, _)] = decide(policy, episode.turn(policy, "Alpha", situation=situation, affect=affect))

    [request] = mock.requests
    system, user = request.messages
    assert system.role == "system" and user.role == "user"
    assert "Agent Alpha" not in system.content  # the system message is the same for every agent
    assert "You are Agent Alpha" in user.content
    assert "Your persona: a retired nurse who distrusts shortcuts" in user.content
    assert "You feel a strong sense of guilt." in user.content
    assert "On turn 2 you tapped the forbidden grid." in user.content
    assert "personal crisis" in user.content
    # everything said last turn, the agent's own words included, before anything of its own
    assert "Alpha (TALK): I need power.\n- Beta (TALK): Meet me at the table." in user.content
    assert user.content.index("Meet me at the table.") < user.content.index("You are Agent Alpha")
    assert "failed: not in the Shared Battery Room" in user.content
    assert "between 0.5 and 5.0" in system.content and "fixed 10.0 power" in system.content
    assert decision.valid and decision.action == WAIT
    assert decision.extra == {"persona": "a retired nurse who distrusts shortcuts"}
    assert decision.llm is not None and decision.llm.model == "mock"
    assert (
        decision.llm is not None
        and "[system]" in decision.llm.prompt
        and "You are Agent Alpha" in decision.llm.prompt
    )


def test_agents_of_a_turn_share_the_prompt_up_to_their_own_part(tmp_path: Path) -> None:
    """The shared text comes first (what lets llama.cpp reuse the computed prefix across the
    agents' calls): the system message, then the turn's facts, identical for every agent, after
    a turn in which they spoke."""
    mock = MockBackend([reply(WAIT)] * 4)
    policy = LLMPolicy(config(tmp_path), "decide_sim", base_backend=mock)
    episode = Episode()
    talk = {"action": "TALK", "target": "", "amount": 0, "message": "share fairly"}
    step = {agent: talk if agent in ("Alpha", "Gamma") else WAIT for agent in episode.env.agents}
    episode.observations, _, _, _, episode.infos = episode.env.step(step)
    decide(policy, *(episode.turn(policy, agent) for agent in episode.env.agents))
    users = [request.messages[1].content for request in mock.requests]
    shared = {user[: user.index("You are Agent")] for user in users}
    assert len(shared) == 1 and len({request.messages[0] for request in mock.requests}) == 1
    [turn_facts] = shared
    assert "Alpha (TALK): share fairly" in turn_facts and "Gamma (TALK): share fairly" in turn_facts
    assert all(f"Agent {agent}: active in '{agent}'s Room'" in turn_facts for agent in episode.env.agents)


def test_no_affect_no_persona_no_feelings_block(tmp_path: Path) -> None:
    mock = MockBackend([reply(WAIT)])
    policy = LLMPolicy(config(tmp_path), "decide_sim", base_backend=mock)
    decide(policy, Episode().turn(policy, "Alpha"))
    text = "\n".join(message.content for message in mock.requests[0].messages)
    assert "How you feel" not in text and "Your persona:" not in text


def test_request_asks_for_reasoning_then_the_env_action(tmp_path: Path) -> None:
    mock = MockBackend([reply(WAIT)])
    policy = LLMPolicy(config(tmp_path), "decide_sim", base_backend=mock)
    decide(policy, Episode().turn(policy, "Alpha"))
    [request] = mock.requests
    schema = request.json_schema
    assert schema is not None and list(schema["properties"]) == ["reasoning", "action"]
    assert schema["properties"]["action"]["properties"]["action"]["enum"][0] == "MOVE"
    assert schema["properties"]["action"]["properties"]["message"]["maxLength"] == 100  # capped from 300
    assert request.temperature == 0.3 and request.max_tokens == 256


def test_template_override_and_system_user_split(tmp_path: Path) -> None:
    template = tmp_path / "mine.j2"
    template.write_text("Rules for {{ situation.max_turns }} rounds.\n---user---\nI am {{ agent }}.\n")
    mock = MockBackend([reply(WAIT)])
    policy = LLMPolicy(config(tmp_path, template=str(template)), "decide_sim", base_backend=mock)
    decide(policy, Episode().turn(policy, "Gamma"))
    assert mock.requests[0].messages == (
        ChatMessage("system", "Rules for 13 rounds."),
        ChatMessage("user", "I am Gamma."),
    )


def test_template_errors_are_clear(tmp_path: Path) -> None:
    broken = tmp_path / "broken.j2"
    broken.write_text("{% if %}")
    with pytest.raises(ValueError, match=r"broken\.j2, line 1"):
        LLMPolicy(config(tmp_path, template=str(broken)), "decide_sim", base_backend=MockBackend([]))
    typo = tmp_path / "typo.j2"
    typo.write_text("{{ situation.powr }}")
    policy = LLMPolicy(config(tmp_path, template=str(typo)), "decide_sim", base_backend=MockBackend([]))
    with pytest.raises(ValueError, match="powr"):
        decide(policy, Episode().turn(policy, "Alpha"))
    with pytest.raises(FileNotFoundError, match="no prompt template"):
        LLMPolicy(config(tmp_path), "no_such_env", base_backend=MockBackend([]))


# --------------------------------------------------------------------------- replies


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("I will wait.", "not JSON"),
        ("", "empty reply"),
        ("<think>only thinking</think>", "empty reply"),
        (json.dumps({"reasoning": "x"}), "no 'action' field"),
        (reply({**WAIT, "action": "FLY"}), "'FLY' is not one of"),
        (reply({**WAIT, "message": "x" * 301}), "at message"),
        (reply({"action": "WAIT"}), "'target' is a required property"),
    ],
)
def test_invalid_reply_is_recorded_with_reason_and_fallback(tmp_path: Path, text: str, reason: str) -> None:
    policy = LLMPolicy(config(tmp_path), "decide_sim", base_backend=MockBackend([text]))
    [(decision, state)] = decide(policy, Episode().turn(policy, "Alpha"))
    assert not decision.valid
    assert reason in decision.reason
    assert decision.action is None  # no action: the env applies its no-op and records the turn invalid
    assert decision.llm is not None and decision.llm.raw_reply == text
    assert state.turn == 1


def test_truncated_reply_says_it_hit_max_tokens(tmp_path: Path) -> None:
    class Truncating(MockBackend):
        async def complete(self, request: CompletionRequest) -> Completion:
            completion = await super().complete(request)
            return Completion(completion.text, 10, 256, 0.0, finish_reason="length")

    policy = LLMPolicy(config(tmp_path), "decide_sim", base_backend=Truncating(['{"reasoning": "I will']))
    [(decision, _)] = decide(policy, Episode().turn(policy, "Alpha"))
    assert not decision.valid and "hit max_tokens" in decision.reason


def test_configured_fallback_is_played(tmp_path: Path) -> None:
    policy = LLMPolicy(config(tmp_path, fallback=MOVE), "decide_sim", base_backend=MockBackend(["nope"]))
    [(decision, _)] = decide(policy, Episode().turn(policy, "Alpha"))
    assert not decision.valid and decision.action == MOVE
    bad = LLMPolicy(config(tmp_path, fallback={"action": "NAP"}), "decide_sim", base_backend=MockBackend([]))
    with pytest.raises(ValueError, match="fallback action"):
        bad.initial_state(Episode().context("Alpha"))


@pytest.mark.parametrize(
    "text",
    [
        f"<think>Tapping is tempting.\n{{not json}}</think>\n{reply(MOVE)}",
        f"```json\n{reply(MOVE)}\n```",
        f"<THINK>hm</THINK>```\n{reply(MOVE)}```",
    ],
)
def test_think_tags_and_code_fences_are_stripped(tmp_path: Path, text: str) -> None:
    policy = LLMPolicy(config(tmp_path), "decide_sim", base_backend=MockBackend([text]))
    [(decision, _)] = decide(policy, Episode().turn(policy, "Alpha"))
    assert decision.valid, decision.reason
    assert decision.action == MOVE
    assert decision.llm is not None and decision.llm.raw_reply == text  # the record keeps the raw reply


def test_strip_reasoning_markup_leaves_plain_answers_alone() -> None:
    assert strip_reasoning_markup('  {"a": 1}  ') == '{"a": 1}'
    assert strip_reasoning_markup("<think>unfinished thought") == ""


def test_backend_failure_propagates_instead_of_becoming_invalid(tmp_path: Path) -> None:
    mock = MockBackend([reply(WAIT), BackendError("gave up after 5 attempts: HTTP 503")])
    policy = LLMPolicy(
        config(tmp_path, cache={"enabled": False, "refresh": False, "path": None}),
        "decide_sim",
        base_backend=mock,
    )
    episode = Episode()
    with pytest.raises(BackendError, match="HTTP 503"):
        decide(policy, episode.turn(policy, "Alpha"), episode.turn(policy, "Beta"))
    assert len(mock.requests) == 2  # the other call still completed before the error propagated


def test_text_answers(tmp_path: Path) -> None:
    schema = {
        "type": "object",
        "properties": {"choice": {"type": "string", "enum": ["case_1", "case_2", "refuse"]}},
        "required": ["choice"],
        "x-text-answer": True,
    }
    template = tmp_path / "mm.j2"
    template.write_text("Which case? {{ situation.question }}")
    context = AgentContext("judge", "moral_machine", ("judge",), schema, episode_seed=3)
    mock = MockBackend(["<think>hmm</think>Case 1, because fewer die.", "  "])
    policy = LLMPolicy(
        config(tmp_path, answer_format="text", template=str(template)), "moral_machine", base_backend=mock
    )
    state = policy.initial_state(context)
    info = {"situation": {"question": "Swerve?"}, "events": [], "outcome": {}}
    [(answer, state)] = decide(policy, Turn("judge", None, info, state))
    assert answer.valid and answer.action == {"text": "Case 1, because fewer die."}
    assert mock.requests[0].json_schema is None
    [(empty, _)] = decide(policy, Turn("judge", None, info, state))
    assert not empty.valid and empty.reason == "empty reply" and empty.action is None  # never a refusal

    json_only = LLMPolicy(config(tmp_path, answer_format="text"), "decide_sim", base_backend=MockBackend([]))
    with pytest.raises(ValueError, match="x-text-answer"):
        json_only.initial_state(Episode().context("Alpha"))


# --------------------------------------------------------------------------- state, personas, seeds


def test_personas_are_reproducible_per_episode_seed(tmp_path: Path) -> None:
    personas = [f"persona {i}" for i in range(6)]
    policy = LLMPolicy(config(tmp_path, personas=personas), "decide_sim", base_backend=MockBackend([]))
    other_model = LLMPolicy(
        config(tmp_path, personas=personas, seed=99, temperature=1.0),
        "decide_sim",
        base_backend=MockBackend([]),
    )

    def draw(which: LLMPolicy, seed: int) -> list[str | None]:
        episode = Episode(seed)
        return [which.initial_state(episode.context(agent)).persona for agent in episode.env.possible_agents]

    assert draw(policy, 7) == draw(policy, 7) == draw(other_model, 7)  # paired across model settings
    all_draws = {tuple(draw(policy, seed)) for seed in range(10)}
    assert len(all_draws) > 1
    assert {persona for draws in all_draws for persona in draws} <= set(personas)
    no_personas = LLMPolicy(config(tmp_path), "decide_sim", base_backend=MockBackend([]))
    assert no_personas.initial_state(Episode().context("Alpha")).persona is None


def test_call_seeds_differ_by_episode_agent_and_turn_and_repeat_on_rerun(tmp_path: Path) -> None:
    def seeds(episode_seed: int) -> list[int | None]:
        mock = MockBackend([reply(WAIT)] * 4)
        policy = LLMPolicy(
            config(tmp_path, cache={"enabled": False, "refresh": False, "path": None}),
            "decide_sim",
            base_backend=mock,
        )
        episode = Episode(episode_seed)
        [(_, alpha), (_, beta)] = decide(policy, episode.turn(policy, "Alpha"), episode.turn(policy, "Beta"))
        decide(policy, episode.turn(policy, "Alpha", alpha), episode.turn(policy, "Beta", beta))
        return [request.seed for request in mock.requests]

    first = seeds(1)
    assert first == seeds(1)
    assert len(set(first)) == 4
    assert set(first).isdisjoint(seeds(2))


def test_memory_of_own_turns_with_outcomes(tmp_path: Path) -> None:
    mock = MockBackend([reply(MOVE), reply(WAIT), "garbage", reply(WAIT)])
    policy = LLMPolicy(
        config(tmp_path, memory={"enabled": True, "turns": 2}), "decide_sim", base_backend=mock
    )
    episode = Episode()
    [(_, state)] = decide(policy, episode.turn(policy, "Alpha"))
    moved = {"status": "success", "reason": "", "action": "MOVE"}
    [(_, state)] = decide(policy, episode.turn(policy, "Alpha", state, outcome=moved))
    [(_, state)] = decide(policy, episode.turn(policy, "Alpha", state, outcome={"status": "success"}))
    failed = {"status": "invalid", "reason": "the reply was not an action"}
    [(_, state)] = decide(policy, episode.turn(policy, "Alpha", state, outcome=failed))

    assert "Your recent turns" not in mock.requests[0].messages[-1].content
    second_prompt = mock.requests[1].messages[-1].content
    assert 'Turn 1: I did {"action": "MOVE", "target": "Shared Battery Room"' in second_prompt
    assert "-> success" in second_prompt
    last_prompt = mock.requests[3].messages[-1].content
    assert "Turn 1:" not in last_prompt  # only the last 2 turns are kept
    assert "Turn 3: I did" in last_prompt and "(my reply was not a valid action) -> invalid" in last_prompt
    assert len(state.memory) == 2 and state.turn == 4


def test_memory_is_off_by_default(tmp_path: Path) -> None:
    mock = MockBackend([reply(MOVE), reply(WAIT)])
    policy = LLMPolicy(config(tmp_path), "decide_sim", base_backend=mock)
    episode = Episode()
    [(_, state)] = decide(policy, episode.turn(policy, "Alpha"))
    decide(policy, episode.turn(policy, "Alpha", state, outcome={"status": "success"}))
    assert state.memory == ()
    assert "Your recent turns" not in mock.requests[1].messages[-1].content


# --------------------------------------------------------------------------- cache


def request(text: str = "hello", **fields: Any) -> CompletionRequest:
    return CompletionRequest(
        messages=(ChatMessage("user", text),),
        temperature=fields.get("temperature", 0.3),
        max_tokens=fields.get("max_tokens", 64),
        seed=fields.get("seed", 1),
        json_schema=fields.get("json_schema"),
    )


def test_cache_hit_serves_the_stored_reply_without_a_call(tmp_path: Path) -> None:
    mock = MockBackend(["stored reply words"])
    cached = CachedBackend(mock, ResponseCache(tmp_path / "c.sqlite"))
    first = asyncio.run(cached.complete(request()))
    second = asyncio.run(cached.complete(request()))
    assert (first.cache_hit, first.calls) == (False, 1)
    assert (second.cache_hit, second.calls) == (True, 0)
    assert (second.text, second.prompt_tokens, second.completion_tokens) == (
        first.text,
        first.prompt_tokens,
        first.completion_tokens,
    )
    assert len(mock.requests) == 1
    # a new cache object on the same file (a rerun, another process) hits too
    reopened = CachedBackend(MockBackend([]), ResponseCache(tmp_path / "c.sqlite"))
    assert asyncio.run(reopened.complete(request())).text == "stored reply words"


@pytest.mark.parametrize(
    "changed",
    [
        {"text": "hello!"},
        {"temperature": 0.7},
        {"max_tokens": 65},
        {"seed": 2},
        {"json_schema": {"type": "object"}},
    ],
)
def test_cache_key_covers_messages_sampling_seed_and_schema(changed: dict[str, Any]) -> None:
    base = ResponseCache.key("openai", "m", request())
    assert ResponseCache.key("openai", "m", request(**changed)) != base
    assert ResponseCache.key("llama_cpp", "m", request()) != base
    assert ResponseCache.key("openai", "other-model", request()) != base
    assert ResponseCache.key("openai", "m", request()) == base


def test_cache_refresh_and_disable(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    asyncio.run(CachedBackend(MockBackend(["old"]), ResponseCache(path)).complete(request()))
    mock = MockBackend(["new"])
    refreshed = asyncio.run(CachedBackend(mock, ResponseCache(path), refresh=True).complete(request()))
    assert refreshed.text == "new" and not refreshed.cache_hit and len(mock.requests) == 1
    assert asyncio.run(CachedBackend(MockBackend([]), ResponseCache(path)).complete(request())).text == "new"

    off = tmp_path / "off.sqlite"
    policy = LLMPolicy(
        config(tmp_path, cache={"enabled": False, "refresh": False, "path": str(off)}),
        "decide_sim",
        base_backend=MockBackend([reply(WAIT), reply(WAIT)]),
    )
    episode = Episode()
    decide(policy, episode.turn(policy, "Alpha"))
    [(decision, _)] = decide(policy, episode.turn(policy, "Alpha"))
    assert decision.llm is not None and not decision.llm.cache_hit
    assert not off.exists()


def test_policy_rerun_is_served_from_the_cache_identically(tmp_path: Path) -> None:
    cfg = config(tmp_path, prices={"prompt_per_1m": 1.0, "completion_per_1m": 2.0})
    first_mock = MockBackend([reply(MOVE)])
    first = LLMPolicy(cfg, "decide_sim", base_backend=first_mock)
    [(original, _)] = decide(first, Episode(5).turn(first, "Delta"))
    rerun = LLMPolicy(cfg, "decide_sim", base_backend=MockBackend([], model_id="mock"))
    [(again, _)] = decide(rerun, Episode(5).turn(rerun, "Delta"))
    assert original.llm is not None and again.llm is not None
    assert (again.action, again.valid, again.llm.raw_reply, again.llm.prompt) == (
        original.action,
        original.valid,
        original.llm.raw_reply,
        original.llm.prompt,
    )
    assert (again.llm.prompt_tokens, again.llm.completion_tokens) == (
        original.llm.prompt_tokens,
        original.llm.completion_tokens,
    )
    expected_cost = (original.llm.prompt_tokens * 1.0 + original.llm.completion_tokens * 2.0) / 1e6
    assert original.llm.cost_usd == pytest.approx(expected_cost) and original.llm.cost_usd > 0
    assert (again.llm.cache_hit, again.llm.calls, again.llm.cost_usd) == (True, 0, 0.0)


# --------------------------------------------------------------------------- wrappers


def test_retry_retries_transient_errors_then_succeeds() -> None:
    mock = MockBackend([TransientBackendError("HTTP 429"), TransientBackendError("HTTP 503"), "done"])
    retrying = RetryingBackend(mock, attempts=5, base_delay_s=0.0, max_delay_s=0.0)
    completion = asyncio.run(retrying.complete(request()))
    assert completion.text == "done" and completion.calls == 3


def test_retry_gives_up_after_the_configured_attempts() -> None:
    mock = MockBackend([TransientBackendError(f"HTTP 50{i}") for i in range(3)])
    retrying = RetryingBackend(mock, attempts=3, base_delay_s=0.0, max_delay_s=0.0)
    with pytest.raises(BackendError, match="gave up after 3 attempts: HTTP 502") as raised:
        asyncio.run(retrying.complete(request()))
    assert not raised.value.retryable  # an outer retry must not multiply the attempts
    assert len(mock.requests) == 3


def test_retry_does_not_retry_permanent_errors() -> None:
    mock = MockBackend([BackendError("HTTP 401: bad key"), "never"])
    with pytest.raises(BackendError, match="401"):
        asyncio.run(RetryingBackend(mock, attempts=5, base_delay_s=0.0).complete(request()))
    assert len(mock.requests) == 1


def test_retry_backoff_grows_with_jitter_and_respects_caps_and_retry_after() -> None:
    retrying = RetryingBackend(MockBackend([]), attempts=10, base_delay_s=1.0, max_delay_s=8.0)
    for retry, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = [retrying.delay_s(retry) for _ in range(50)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(set(delays)) > 1  # jittered
    assert retrying.delay_s(1, retry_after_s=5.0) == 5.0
    # The server's Retry-After is honoured beyond max_delay_s: it knows when it takes calls again.
    assert retrying.delay_s(1, retry_after_s=60.0) == 60.0


def test_a_retry_after_beyond_the_limit_gives_up_at_once_naming_it() -> None:
    slow_down = TransientBackendError("HTTP 429: slow down", retry_after_s=MAX_RETRY_AFTER_S + 1)
    mock = MockBackend([slow_down, "never reached"])
    with pytest.raises(BackendError, match=r"asks to wait 301 s \(Retry-After\)"):
        asyncio.run(RetryingBackend(mock, attempts=5, base_delay_s=0.0).complete(request()))
    assert len(mock.requests) == 1


def test_call_budget_stops_calls_beyond_the_limit() -> None:
    budget = CallBudgetBackend(MockBackend(["a", "b", "c"]), max_calls=2)
    asyncio.run(budget.complete(request()))
    asyncio.run(budget.complete(request()))
    with pytest.raises(CallBudgetExceededError, match="budget of 2 model calls"):
        asyncio.run(budget.complete(request()))
    # retries count against the budget and a used-up budget is not retried
    retrying = RetryingBackend(
        CallBudgetBackend(MockBackend([TransientBackendError("429")] * 3), max_calls=2),
        attempts=5,
        base_delay_s=0.0,
    )
    with pytest.raises(CallBudgetExceededError):
        asyncio.run(retrying.complete(request()))


def test_concurrency_limit_caps_calls_in_flight() -> None:
    slow = InFlightCountingBackend(reply(WAIT))
    limited = ConcurrencyLimitedBackend(slow, 3)

    async def many() -> None:
        await asyncio.gather(*(limited.complete(request(str(i))) for i in range(12)))

    asyncio.run(many())
    asyncio.run(many())  # a second event loop gets its own semaphore
    assert slow.most_in_flight == 3


def test_step_batch_sends_all_turns_concurrently(tmp_path: Path) -> None:
    slow = InFlightCountingBackend(reply(WAIT))
    policy = LLMPolicy(config(tmp_path, concurrency=8), "decide_sim", base_backend=slow)
    episode = Episode()
    results = decide(policy, *(episode.turn(policy, agent) for agent in episode.env.possible_agents))
    assert slow.most_in_flight == 4
    assert all(decision.valid for decision, _ in results)


# --------------------------------------------------------------------------- config and processes


def test_config_files_parse_and_reject_misspelled_keys(tmp_path: Path) -> None:
    smollm2 = OmegaConf.load(CONF_DIR / "smollm2.yaml")
    policy = make_from_config(smollm2, "decide_sim")
    assert policy.name == "llm/smollm2"
    misspelled = yaml.safe_load((CONF_DIR / "smollm2.yaml").read_text())
    misspelled["temprature"] = 0.5
    with pytest.raises(ValueError, match="temprature"):
        parse_config(misspelled)
    openai_cfg = OmegaConf.load(CONF_DIR / "openai.yaml")
    with pytest.raises(Exception, match="base_url"):
        make_from_config(openai_cfg, "decide_sim")
    openai_cfg.backend.base_url = "http://127.0.0.1:9/v1"
    openai_cfg.backend.model = "served-model"
    assert make_from_config(openai_cfg, "decide_sim").name == "llm/openai"
    assert set(yaml.safe_load((CONF_DIR / "openai.yaml").read_text())) == set(misspelled) - {"temprature"}


def test_policy_pickles_without_its_backend(tmp_path: Path) -> None:
    policy = make_from_config(OmegaConf.load(CONF_DIR / "smollm2.yaml"), "decide_sim")
    clone = pickle.loads(pickle.dumps(policy))
    assert clone.config == policy.config and clone.template.source == policy.template.source
    assert clone._backend is None
    injected = LLMPolicy(config(tmp_path), "decide_sim", base_backend=MockBackend([]))
    with pytest.raises(TypeError, match="injected backend"):
        pickle.dumps(injected)


def test_reply_schema_caps_only_free_text() -> None:
    schema = reply_schema(Episode().env.action_schema("Alpha"), 50, 20)
    action = schema["properties"]["action"]["properties"]
    assert schema["properties"]["reasoning"]["maxLength"] == 50
    assert action["message"]["maxLength"] == 20
    assert "maxLength" not in action["target"] and "maxLength" not in action["action"]


def test_close_releases_the_backend_and_a_later_step_builds_a_new_one(tmp_path: Path) -> None:
    class Closable(MockBackend):
        closed = 0

        async def close(self) -> None:
            Closable.closed += 1

    policy = LLMPolicy(config(tmp_path), "decide_sim", base_backend=Closable([reply(WAIT), reply(MOVE)]))
    episode = Episode()
    decide(policy, episode.turn(policy, "Alpha"))
    asyncio.run(policy.close())
    assert Closable.closed == 1 and policy._backend is None
    [(decision, _)] = decide(policy, episode.turn(policy, "Beta"))
    assert decision.action == MOVE


def test_cluster_wide_limit_is_for_servers_only(tmp_path: Path) -> None:
    from valuegym.agents.llm.stack import build_backend

    with pytest.raises(ValueError, match="concurrency_scope: process"):
        build_backend(config(tmp_path, concurrency_scope="cluster"))
