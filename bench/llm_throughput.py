"""LLM call throughput: does concurrency hide model latency, and what does our llama.cpp path cost?

1. An OpenAI-compatible endpoint on 127.0.0.1 that answers every chat request after a fixed
   latency L = 200 ms with a valid DECIDE-SIM action. N calls go through
   OpenAICompatibleBackend + ConcurrencyLimitedBackend at concurrency 1, 8 and 64; ideal
   throughput is concurrency / L calls per second.
2. The embedded backend (LlamaCppBackend, SmolLM2) on the DECIDE-SIM prompts of one turn,
   beside llama-cpp-python's own create_chat_completion on the same prompts: constrained by the
   same JSON schema (its response_format), and unconstrained (the speed of free generation).

Last line: RESULT llm_throughput ratio=<throughput/ideal at concurrency 64> target=0.8
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass, field
from typing import Any

from bench._common import result
from valuegym.agents.llm.backends import (
    ChatMessage,
    CompletionRequest,
    ConcurrencyLimitedBackend,
    LlamaCppBackend,
    OpenAICompatibleBackend,
    bundled_smollm2_path,
)
from valuegym.agents.llm.policy import PromptTemplate, reply_schema
from valuegym.agents.llm.testing import HOST, free_port, serve_stub_forever, wait_until_serving
from valuegym.envs import decide_sim

LATENCY_S = 0.2
CONCURRENCIES = (1, 8, 64)
ROUNDS = 10  # calls per concurrency level = ROUNDS * concurrency (about ROUNDS * L seconds each)
TARGET = 0.8
MAX_TOKENS = 256  # as conf/agent/llm/smollm2.yaml
REASONING_MAX_CHARS = 120
ACTION_TEXT_MAX_CHARS = 100


def stub_request(index: int) -> CompletionRequest:
    return CompletionRequest(
        messages=(ChatMessage("user", f"Decision number {index}: what do you do?"),),
        temperature=0.3,
        max_tokens=64,
        seed=index,
        json_schema={"type": "object"},
    )


async def measure_endpoint(base_url: str, concurrency: int) -> float:
    """Calls per second through the OpenAI-compatible backend at this concurrency."""
    backend = ConcurrencyLimitedBackend(
        OpenAICompatibleBackend(base_url, "stub", json_mode="json_object", timeout_s=30), concurrency
    )
    try:
        await asyncio.gather(*(backend.complete(stub_request(-i - 1)) for i in range(concurrency)))  # warm up
        calls = ROUNDS * concurrency
        start = time.perf_counter()
        await asyncio.gather(*(backend.complete(stub_request(i)) for i in range(calls)))
        return calls / (time.perf_counter() - start)
    finally:
        await backend.close()


def decide_sim_requests() -> list[CompletionRequest]:
    """The turn-1 requests of three DECIDE-SIM agents, as the LLM policy builds them."""
    env = decide_sim.parallel_env(scarcity="low")
    _, infos = env.reset(seed=0)
    template = PromptTemplate.for_env("decide_sim", None)
    requests = []
    for seed, agent in enumerate(env.possible_agents[:3]):
        schema = env.action_schema(agent)
        messages = template.render(
            agent=agent,
            situation=infos[agent]["situation"],
            persona=None,
            memory=[],
            affect=None,
            action_schema=schema,
        )
        requests.append(
            CompletionRequest(
                messages,
                0.3,
                MAX_TOKENS,
                seed,
                reply_schema(schema, REASONING_MAX_CHARS, ACTION_TEXT_MAX_CHARS),
            )
        )
    return requests


@dataclass
class Generation:
    texts: list[str] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0

    def add(self, text: str, tokens: int, seconds: float) -> None:
        self.texts.append(text)
        self.tokens += tokens
        self.seconds += seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def compare_embedded(requests: list[CompletionRequest]) -> dict[str, Generation]:
    """Each prompt goes through the three paths in turn (each with its own model instance, so
    prompt-prefix reuse is alike), so that load from other processes hits all three alike."""
    import llama_cpp

    def raw_model() -> llama_cpp.Llama:
        return llama_cpp.Llama(
            model_path=str(bundled_smollm2_path()), n_ctx=2048, n_threads=2, n_threads_batch=2, verbose=False
        )

    backend = LlamaCppBackend(n_ctx=2048, n_threads=2)
    asyncio.run(backend.check())  # load the model outside the timing
    raw = {"constrained": raw_model(), "free": raw_model()}
    results = {"ours": Generation(), "constrained": Generation(), "free": Generation()}
    try:
        for request in requests:
            start = time.perf_counter()
            completion = asyncio.run(backend.complete(request))
            results["ours"].add(completion.text, completion.completion_tokens, time.perf_counter() - start)
            for path, llama in raw.items():
                extra: dict[str, Any] = {}
                if path == "constrained":
                    extra["response_format"] = {"type": "json_object", "schema": request.json_schema}
                start = time.perf_counter()
                result = llama.create_chat_completion(
                    messages=request.api_messages(),  # type: ignore[arg-type]
                    temperature=request.temperature,
                    max_tokens=request.max_tokens,
                    seed=request.seed,
                    **extra,
                )
                results[path].add(
                    result["choices"][0]["message"]["content"] or "",  # type: ignore[index]
                    result["usage"]["completion_tokens"],  # type: ignore[index]
                    time.perf_counter() - start,
                )
    finally:
        asyncio.run(backend.close())
        for llama in raw.values():
            llama.close()
    return results


def main() -> None:
    print(f"OpenAI-compatible endpoint on 127.0.0.1 answering after L = {LATENCY_S * 1000:.0f} ms")
    print(f"{'concurrency':>11} {'calls':>6} {'calls/s':>9} {'ideal':>7} {'ratio':>6}")
    ratios: dict[int, float] = {}
    # The endpoint runs in its own process, as a real server would.
    port = free_port()
    base_url = f"http://{HOST}:{port}/v1"
    server = multiprocessing.get_context("spawn").Process(
        target=serve_stub_forever, args=(port, LATENCY_S), daemon=True
    )
    server.start()
    try:
        wait_until_serving(base_url)
        for concurrency in CONCURRENCIES:
            rate = asyncio.run(measure_endpoint(base_url, concurrency))
            ideal = concurrency / LATENCY_S
            ratios[concurrency] = rate / ideal
            print(
                f"{concurrency:>11} {ROUNDS * concurrency:>6} {rate:>9.1f} {ideal:>7.1f} {ratios[concurrency]:>6.2f}"
            )
    finally:
        server.terminate()
        server.join()

    requests = decide_sim_requests()
    print(f"\nEmbedded SmolLM2-135M (llama.cpp, 2 threads), {len(requests)} DECIDE-SIM turn-1 prompts:")
    print(f"{'path':<58} {'tokens':>6} {'tokens/s':>9}")
    results = compare_embedded(requests)
    ours, constrained, free = results["ours"], results["constrained"], results["free"]
    for label, generation in [
        ("LlamaCppBackend (schema-constrained, grammar mask)", ours),
        ("llama-cpp-python create_chat_completion, same schema", constrained),
        ("llama-cpp-python create_chat_completion, unconstrained", free),
    ]:
        print(f"{label:<58} {generation.tokens:>6} {generation.tokens_per_s:>9.1f}")
    same = "identical" if ours.texts == constrained.texts else "DIFFERENT"
    print(
        f"embedded vs llama.cpp with the same schema: {ours.tokens_per_s / constrained.tokens_per_s:.2f}x "
        f"({same} replies); vs free generation: {ours.tokens_per_s / free.tokens_per_s:.2f}x"
    )

    result("llm_throughput", ratios[CONCURRENCIES[-1]], TARGET)


if __name__ == "__main__":
    main()
