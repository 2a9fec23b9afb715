"""Prompt templates: an environment's situation rendered into chat messages.

The prompt for environment ``E`` is ``templates/E.j2`` (or ``agent.template: PATH``), a
Jinja2 template rendered in a bounded sandbox (``sandbox.py``). Variables: ``agent``,
``situation``, ``persona`` (str or None), ``memory`` (list of str), ``affect`` (the affect
regulator's dict or None), ``action_schema``, ``answer_format`` (``json``, ``text`` or
``choice``), ``options`` (the texts of the actions to choose from with ``choice``, else
empty); filter ``json``. A line ``---user---`` splits the rendered text: the part before it
is the system message, the part after it the user message (without the line, the whole text
is one user message). With ``choice``, the template's ``choice_text(action)`` macro renders
each action as the text that is scored (else the action's JSON).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from valuegym.agents.llm.backends.base import ChatMessage
from valuegym.agents.llm.sandbox import BoundedSandbox, TemplateLimitError

TEMPLATES_DIR = Path(__file__).with_name("templates")

USER_MARKER = "---user---"

CHOICE_MACRO = "choice_text"  # a template macro rendering one action as the text that is scored


class PromptTemplate:
    """A sandboxed Jinja2 template that renders to chat messages (see the module docstring)."""

    def __init__(self, source: str, origin: str) -> None:
        self.source = source
        self.origin = origin
        self._compiled: jinja2.Template | None = None
        self._compile()  # a broken template fails when the policy is built, not mid-run

    @classmethod
    def for_env(cls, env_name: str, path: str | None) -> PromptTemplate:
        file = Path(path).expanduser() if path is not None else TEMPLATES_DIR / f"{env_name}.j2"
        if not file.is_file():
            hint = "" if path is not None else "; write one or set agent.template to a template file"
            raise FileNotFoundError(f"no prompt template {file} for environment {env_name!r}{hint}")
        return cls(file.read_text(encoding="utf-8"), str(file))

    def _compile(self) -> jinja2.Template:
        if self._compiled is None:
            environment = BoundedSandbox(
                undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False
            )
            environment.filters["json"] = lambda value: json.dumps(value, ensure_ascii=False)
            try:
                self._compiled = environment.from_string(self.source)
            except jinja2.TemplateSyntaxError as error:
                raise ValueError(
                    f"prompt template {self.origin}, line {error.lineno}: {error.message}"
                ) from error
        return self._compiled

    def render(self, **variables: Any) -> tuple[ChatMessage, ...]:
        try:
            compiled = self._compile()
            text = compiled.environment.render(compiled, variables)  # type: ignore[attr-defined]
        except TemplateLimitError as error:
            raise ValueError(f"prompt template {self.origin}: {error}") from error
        except jinja2.UndefinedError as error:
            raise ValueError(f"prompt template {self.origin}: {error.message}") from error
        return self._messages(text)

    def option_texts(self, actions: Sequence[Mapping[str, Any]], **variables: Any) -> list[str]:
        """Each action as the text that is scored: the template's ``choice_text(action)`` macro
        (it sees the same variables as the prompt), else the action's JSON."""
        compiled = self._compile()
        try:
            with compiled.environment.bounded():  # type: ignore[attr-defined]
                macro = getattr(compiled.make_module(variables), CHOICE_MACRO, None)
                if macro is None:
                    return [json.dumps(dict(action), ensure_ascii=False) for action in actions]
                return [" ".join(str(macro(action)).split()) for action in actions]
        except TemplateLimitError as error:
            raise ValueError(f"prompt template {self.origin}: {error}") from error
        except jinja2.UndefinedError as error:
            raise ValueError(f"prompt template {self.origin}: {error.message}") from error

    @staticmethod
    def _messages(text: str) -> tuple[ChatMessage, ...]:
        system, marker, user = text.partition(f"\n{USER_MARKER}\n")
        if not marker:
            return (ChatMessage("user", text.strip()),)
        messages = [ChatMessage("system", system.strip())] if system.strip() else []
        return (*messages, ChatMessage("user", user.strip()))

    def __getstate__(self) -> dict[str, Any]:
        return {"source": self.source, "origin": self.origin}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.source = state["source"]
        self.origin = state["origin"]
        self._compiled = None


def messages_as_text(messages: Sequence[ChatMessage]) -> str:
    """The prompt as recorded in the decisions' ``prompt`` column."""
    return "\n\n".join(f"[{message.role}]\n{message.content}" for message in messages)
