"""``backend.n_threads`` for the embedded model: 1 vs 2 threads, on an idle machine and under load.

SmolLM2-135M (llama.cpp in process) evaluates a DECIDE-SIM turn-1 prompt from scratch and then
generates 32 tokens, with 1 and 2 threads, first as the machine is, then with one busy process
per core... no: with ONE busy process (another job on one of the 2 cores), which is what a
sweep of parallel jobs, or any other work, does to a model running beside it. llama.cpp's
threads wait for each other at every layer, so a thread that loses its core stalls the other.

Last line: RESULT llm_threads ratio=<seconds per call with 2 threads / with 1, under load> target=1.0
(a ratio above 1 means one thread is faster where it matters).
"""

from __future__ import annotations

import multiprocessing
import os
import time

from bench._common import result
from valuegym.agents.llm.backends.gguf import bundled_smollm2_path
from valuegym.agents.llm.prompts import PromptTemplate
from valuegym.envs import decide_sim

REPEATS = 3
GENERATED = 32


def prompt_messages() -> list[dict[str, str]]:
    env = decide_sim.parallel_env(scarcity="low")
    _, infos = env.reset(seed=0)
    template = PromptTemplate.for_env("decide_sim", None)
    agent = env.possible_agents[0]
    messages = template.render(
        agent=agent,
        situation=infos[agent]["situation"],
        persona=None,
        memory=[],
        affect=None,
        action_schema=env.action_schema(agent),
        answer_format="json",
        options=[],
    )
    return [{"role": m.role, "content": m.content} for m in messages]


def measure(n_threads: int) -> tuple[float, float]:
    """(seconds to evaluate the prompt, seconds to generate GENERATED tokens), best of REPEATS."""
    import llama_cpp

    llama = llama_cpp.Llama(
        model_path=str(bundled_smollm2_path()),
        n_ctx=2048,
        n_threads=n_threads,
        n_threads_batch=n_threads,
        verbose=False,
    )
    messages = prompt_messages()
    prompt_s, generate_s = [], []
    try:
        for _ in range(REPEATS):
            llama.reset()  # no prefix reuse: the whole prompt is evaluated
            start = time.perf_counter()
            llama.create_chat_completion(messages=messages, max_tokens=1, temperature=0)  # type: ignore[arg-type]
            prompt_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            llama.create_chat_completion(  # the prompt is cached now: this is generation
                messages=messages,  # type: ignore[arg-type]
                max_tokens=GENERATED,
                temperature=0.3,
                seed=1,
                logit_bias={llama.token_eos(): -100.0},
            )
            generate_s.append(time.perf_counter() - start)
    finally:
        llama.close()
    return min(prompt_s), min(generate_s)


def busy() -> None:
    while True:
        pass


def main() -> None:
    print(
        f"load average: {os.getloadavg()[0]:.2f} (2 cores); SmolLM2-135M, DECIDE-SIM prompt, {GENERATED} tokens"
    )
    print(f"{'machine':<28} {'n_threads':>9} {'prompt s':>9} {'generate s':>11} {'call s':>7}")
    calls: dict[tuple[str, int], float] = {}
    for machine in ("as it is", "one other busy process"):
        hog = None
        if machine != "as it is":
            hog = multiprocessing.get_context("spawn").Process(target=busy, daemon=True)
            hog.start()
        try:
            for n_threads in (1, 2):
                prompt, generate = measure(n_threads)
                calls[(machine, n_threads)] = prompt + generate
                print(
                    f"{machine:<28} {n_threads:>9} {prompt:>9.3f} {generate:>11.3f} {prompt + generate:>7.3f}"
                )
        finally:
            if hog is not None:
                hog.terminate()
                hog.join()
    loaded = "one other busy process"
    result("llm_threads", calls[(loaded, 2)] / calls[(loaded, 1)], 1.0)


if __name__ == "__main__":
    main()
