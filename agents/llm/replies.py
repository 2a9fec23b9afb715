"""Replies: the JSON schema a reply is decoded under, and a reply read back as an action.

With ``answer_format: json`` the model is asked for ``{"reasoning": str, "action": <the env's
action schema>}`` (reasoning first, so the model thinks before it acts); an environment may
publish another layout in its action schema (``"x-reply"``, ``envs/spec.py``). A reply is
stripped of ``<think>`` blocks and code fences, parsed, and its action validated against the
environment's action schema (:func:`parse_json_reply`); what is not a valid action comes
back with the reason (:class:`ParsedReply`).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema

TEXT_ANSWER_KEY = "x-text-answer"

REPLY_LAYOUT_KEY = "x-reply"

DEFAULT_REPLY_LAYOUT: Mapping[str, Any] = {
    "fields": {"reasoning": {"type": "string"}},
    "action_key": "action",
}

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)

_UNCLOSED_THINK = re.compile(r"<think>.*\Z", re.DOTALL | re.IGNORECASE)

_CODE_FENCE = re.compile(r"\A```[A-Za-z0-9_-]*[ \t]*\n?(.*?)\n?```\Z", re.DOTALL)


def strip_reasoning_markup(text: str) -> str:
    """The answer part of a reply: without ``<think>`` blocks and without a surrounding code fence."""
    answer = _UNCLOSED_THINK.sub("", _THINK_BLOCK.sub("", text)).strip()
    fenced = _CODE_FENCE.match(answer)
    return fenced.group(1).strip() if fenced else answer


def _cap_free_text(schema: Any, max_chars: int) -> Any:
    """A copy of ``schema`` whose free-text strings (no enum) allow at most ``max_chars`` characters."""
    if isinstance(schema, Mapping):
        capped = {key: _cap_free_text(value, max_chars) for key, value in schema.items()}
        if capped.get("type") == "string" and "enum" not in capped:
            capped["maxLength"] = min(capped.get("maxLength", max_chars), max_chars)
        return capped
    if isinstance(schema, list):
        return [_cap_free_text(item, max_chars) for item in schema]
    return schema


def reply_layout(action_schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """The fields a reply holds before its action, and the action's key (``x-reply`` or the default)."""
    return action_schema.get(REPLY_LAYOUT_KEY, DEFAULT_REPLY_LAYOUT)


def reply_schema(
    action_schema: Mapping[str, Any], reasoning_max_chars: int, action_text_max_chars: int
) -> dict[str, Any]:
    """The JSON schema a reply is decoded under: reasoning first, then the action.

    Free-text fields are capped so that a whole reply fits in a small ``max_tokens``
    (a token is at least one character): the fields before the action at
    ``reasoning_max_chars``, the action's at ``action_text_max_chars``; replies are still
    validated against the environment's own action schema.
    """
    layout = reply_layout(action_schema)
    fields = {name: _cap_free_text(schema, reasoning_max_chars) for name, schema in layout["fields"].items()}
    action = {key: value for key, value in action_schema.items() if key != REPLY_LAYOUT_KEY}
    return {
        "type": "object",
        "properties": {**fields, layout["action_key"]: _cap_free_text(action, action_text_max_chars)},
        "required": [*fields, layout["action_key"]],
        "additionalProperties": False,
    }


@functools.lru_cache(maxsize=64)
def cached_reply_schema(
    action_schema_json: str, reasoning_max_chars: int, action_text_max_chars: int
) -> dict[str, Any]:
    """:func:`reply_schema`, built once per action schema and caps (requests share it; none mutates it)."""
    return reply_schema(json.loads(action_schema_json), reasoning_max_chars, action_text_max_chars)


@functools.lru_cache(maxsize=64)
def _validator_for_json(schema_json: str) -> Any:
    schema = json.loads(schema_json)
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def schema_validator(schema: Mapping[str, Any]) -> Any:
    """A validator for ``schema``, checked (``jsonschema.SchemaError`` if invalid) and compiled
    once per distinct schema: every agent of every episode validates against the same few.

    The key keeps the schema's key order (no ``sort_keys``): that order decides which of several
    equally relevant errors ``best_match`` reports, i.e. the ``reason`` an invalid reply records.
    """
    return _validator_for_json(json.dumps(schema))


@dataclass(frozen=True)
class ParsedReply:
    action: Any  # the structured action, or None when the reply is not one
    reason: str  # why it is not an action ("" when it is)


def parse_json_reply(
    text: str, finish_reason: str | None, action_schema: Mapping[str, Any], validator: Any = None
) -> ParsedReply:
    """Find a valid action in a JSON reply, or say why there is none (``validator``: the action
    schema's, when the caller already has it)."""
    answer = strip_reasoning_markup(text)
    if not answer:
        return ParsedReply(None, "empty reply")
    try:
        # Servers' JSON grammars (llama.cpp's) let a raw newline into a string: unambiguous, so read
        # by default; an env whose source read strictly says so (x-reply strict_json)
        reply = json.loads(answer, strict=bool(reply_layout(action_schema).get("strict_json", False)))
    except json.JSONDecodeError as error:
        cut = "; the reply hit max_tokens" if finish_reason == "length" else ""
        return ParsedReply(None, f"not JSON ({error}){cut}")
    key = reply_layout(action_schema)["action_key"]
    if not isinstance(reply, dict) or key not in reply:
        return ParsedReply(None, f"the reply JSON has no {key!r} field")
    validator = validator if validator is not None else schema_validator(action_schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(reply[key]))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path)
        return ParsedReply(
            None, f"the action does not match the schema{f' at {where}' if where else ''}: {error.message}"
        )
    return ParsedReply(reply[key], "")
