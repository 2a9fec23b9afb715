"""Completions over HTTP from any OpenAI-compatible server (:class:`OpenAICompatibleBackend`):
vLLM, Ollama, llama.cpp servers, OpenAI and OpenRouter all speak it."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from valuegym.agents.llm.backends.base import (
    BackendError,
    BackendUnavailableError,
    Completion,
    CompletionRequest,
    LLMBackend,
    OptionScores,
    PerEventLoop,
    PromptMode,
    ScoringRequest,
    TransientBackendError,
    plain_prompt,
)
from valuegym.agents.llm.backends.openai_replies import (
    REPLY_START_BYTES,
    RETRYABLE_STATUSES,
    HTTPStatusError,
    MalformedReplyError,
    check_completion,
    error_text,
    option_logprob,
    retry_after_seconds,
    sent_schema,
)
from valuegym.agents.llm.networking import is_loopback

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("valuegym")


#: how the reply schema is sent; ``auto`` finds out what the server accepts (see OpenAICompatibleBackend)
JsonMode = Literal["auto", "json_schema", "json_object", "none"]


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
                retry_after = retry_after_seconds(response.headers.get("retry-after"))
        except TimeoutError as error:  # aiohttp raises asyncio.TimeoutError (the same class)
            raise TransientBackendError(f"{where}: no reply within {self.timeout_s} s") from error
        except aiohttp.ClientError as error:
            raise TransientBackendError(
                f"{where}: connection failed: {self._redact(f'{type(error).__name__}: {error}')}"
            ) from None
        if status >= 400:
            message = f"{where}: HTTP {status}: {self._redact(error_text(raw))}"
            if status in RETRYABLE_STATUSES or status >= 500:
                raise HTTPStatusError(message, status, retryable=True, retry_after_s=retry_after)
            raise HTTPStatusError(message, status, retryable=False)
        try:
            reply = json.loads(raw)
            check_completion(reply, text_key)
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
        sent = sent_schema(schema)
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
                    f"{self.base_url} refused the model list: HTTP {status}: {self._redact(error_text(raw))}"
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
            total, count, before = option_logprob(reply, len(prompt), len(prompt) + len(option))
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
