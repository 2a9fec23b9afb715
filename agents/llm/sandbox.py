"""A Jinja sandbox that also bounds the work a template does.

Jinja's ``SandboxedEnvironment`` stops a template from reaching Python internals, but not from
looping for hours (``{% for i in range(100000) %}{% for j in range(100000) %}``) or building a
string of gigabytes (``"x" * 10**10``). A prompt template may come from a scenario file someone
shared, so every render here is bounded: the items all ``range`` calls may yield, the size of
what ``*`` and ``**`` build, the characters of the output, and the wall time. Exceeding any of
them raises :class:`TemplateLimitError`, which names the limit.
"""

from __future__ import annotations

import operator
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

#: items every ``range`` of one render may yield together
MAX_RANGE_ITEMS = 100_000
#: characters one render may produce (the prompt sent to the model)
MAX_OUTPUT_CHARS = 1_000_000
#: seconds one render may take
MAX_RENDER_S = 2.0


class TemplateLimitError(ValueError):
    """A template exceeded a bound of :class:`BoundedSandbox` (its message names which)."""


class _Budget(threading.local):
    items = 0
    deadline = float("inf")


class _BoundedRange:
    """``range`` whose iteration is charged to the render's budget."""

    def __init__(self, environment: BoundedSandbox, *args: int) -> None:
        self._range = range(*args)
        self._environment = environment
        if len(self._range) > MAX_RANGE_ITEMS:
            raise TemplateLimitError(
                f"range of {len(self._range)} items; a template may iterate over {MAX_RANGE_ITEMS} at most"
            )

    def __iter__(self) -> Iterator[int]:
        for value in self._range:
            self._environment.charge()
            yield value

    def __len__(self) -> int:
        return len(self._range)

    def __getitem__(self, index: Any) -> Any:
        return self._range[index]


class BoundedSandbox(SandboxedEnvironment):
    """A sandboxed Jinja environment whose renders are bounded (see the module docstring).

    Render with :meth:`render` (or run other template code inside :meth:`bounded`)."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._budget = _Budget()
        self.globals["range"] = lambda *args: _BoundedRange(self, *args)

    def charge(self, items: int = 1) -> None:
        budget = self._budget
        budget.items += items
        if budget.items > MAX_RANGE_ITEMS:
            raise TemplateLimitError(
                f"the template's loops ran over {MAX_RANGE_ITEMS} range items; simplify the template"
            )
        if time.monotonic() > budget.deadline:
            raise TemplateLimitError(f"rendering the template took over {MAX_RENDER_S:g} s")

    def call_binop(self, context: jinja2.runtime.Context, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**":
            if isinstance(left, int | float) and isinstance(right, int | float) and abs(right) > 64:
                raise TemplateLimitError(f"exponent {right!r} is too large for a template")
            return operator.pow(left, right)
        if (
            isinstance(left, str | list | tuple)
            and isinstance(right, int)
            and len(left) * right > MAX_OUTPUT_CHARS
        ):
            raise TemplateLimitError(f"repeating a value {right} times exceeds {MAX_OUTPUT_CHARS} items")
        if (
            isinstance(right, str | list | tuple)
            and isinstance(left, int)
            and len(right) * left > MAX_OUTPUT_CHARS
        ):
            raise TemplateLimitError(f"repeating a value {left} times exceeds {MAX_OUTPUT_CHARS} items")
        return operator.mul(left, right)

    def bounded(self) -> _Bounded:
        """A context in which template code runs under a fresh budget."""
        return _Bounded(self._budget)

    def render(self, template: jinja2.Template, variables: Mapping[str, Any]) -> str:
        """``template`` rendered with ``variables``, within every bound."""
        with self.bounded():
            parts, size = [], 0
            for chunk in template.generate(**variables):
                size += len(chunk)
                if size > MAX_OUTPUT_CHARS:
                    raise TemplateLimitError(f"the rendered template exceeds {MAX_OUTPUT_CHARS} characters")
                parts.append(chunk)
                self.charge(0)
            return "".join(parts)


class _Bounded:
    def __init__(self, budget: _Budget) -> None:
        self._budget = budget

    def __enter__(self) -> None:
        self._budget.items = 0
        self._budget.deadline = time.monotonic() + MAX_RENDER_S

    def __exit__(self, *exc: object) -> None:
        self._budget.deadline = float("inf")
