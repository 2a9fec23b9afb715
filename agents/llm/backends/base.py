"""The backend interface: what a model call takes, what it returns, and how it fails.

A backend turns a :class:`CompletionRequest` (chat messages, sampling parameters and
optionally a JSON schema the reply must follow) into a :class:`Completion` (the reply
text, token counts, latency). Besides completing a request, a backend may **score** a
:class:`ScoringRequest`: the log-likelihood of each of several continuations of a prompt
(``answer_format: choice``).

Errors: a backend raises :class:`BackendError`; ``retryable`` marks the transient ones
(rate limits, 5xx, timeouts, refused connections), which only ``RetryingBackend``
retries. :meth:`LLMBackend.check` raises :class:`BackendUnavailableError` so that a
server that is down fails before any episode runs.

A wrapper (:class:`BackendWrapper`) adds one concern around another backend and is itself
a backend (Concordia's ``retry_wrapper``/``call_limit_wrapper`` pattern).

asyncio primitives and HTTP clients belong to one event loop; a backend may be driven
from several loops in turn (one ``asyncio.run`` per batch of episodes), so such
resources are kept per running loop (:class:`PerEventLoop`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

T = TypeVar("T")

#: ``chat``: the messages go through the model's chat template; ``completion``: one plain prompt (base models)
PromptMode = Literal["chat", "completion"]


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


class ScoringUnsupportedError(BackendError):
    """The backend cannot score options (``answer_format: choice``)."""


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


#: characters per token assumed when estimating a prompt's tokens before sending it
CHARS_PER_TOKEN_ESTIMATE = 3.0


def estimated_tokens(request: CompletionRequest | ScoringRequest) -> tuple[int, int]:
    """(prompt tokens, reply tokens) a request may use at most, judged before it is sent."""
    chars = sum(len(message.content) for message in request.messages)
    if isinstance(request, ScoringRequest):  # one prompt plus one option per request
        options = sum(len(option) for option in request.options)
        prompt = math.ceil((len(request.options) * chars + options) / CHARS_PER_TOKEN_ESTIMATE)
        return prompt, len(request.options)
    return math.ceil(chars / CHARS_PER_TOKEN_ESTIMATE), request.max_tokens


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
