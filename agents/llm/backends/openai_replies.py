"""What an OpenAI-compatible server answers, read defensively: HTTP errors and their messages,
replies that are not completions (:class:`MalformedReplyError`), echoed logprobs, and the
reply schema as it is sent."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from valuegym.agents.llm.backends.base import BackendError, TransientBackendError

#: HTTP statuses worth retrying (the same set the openai SDK retries on its own)
RETRYABLE_STATUSES: frozenset[int] = frozenset({408, 409, 429})


class HTTPStatusError(BackendError):
    """The server answered with an HTTP error status."""

    def __init__(
        self, message: str, status: int, *, retryable: bool, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.status = status
        self.retryable = retryable


#: bytes of a malformed reply's body kept in its error (and so in the failure record)
REPLY_START_BYTES = 300


class MalformedReplyError(TransientBackendError):
    """The server answered (often HTTP 200) with something that is not a completion: a proxy's
    HTML page, broken JSON, JSON without choices. Retryable: such replies are usually passing."""

    def __init__(self, message: str, *, url: str, status: int, body_start: str) -> None:
        super().__init__(message)
        self.url, self.status, self.body_start = url, status, body_start


def check_completion(reply: Any, text_key: str | None) -> None:
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


def error_text(raw: bytes) -> str:
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


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header in seconds (an HTTP date falls back to our own backoff)."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def option_logprob(reply: Any, prompt_chars: int, end_chars: int) -> tuple[float, int, int]:
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


_SENT_SCHEMAS: dict[int, tuple[Any, Any]] = {}  # id -> (schema, without caps): requests share a few schemas


def sent_schema(schema: Mapping[str, Any]) -> Any:
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
