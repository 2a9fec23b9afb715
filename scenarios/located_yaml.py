"""YAML with line numbers and pydantic errors located in it: the reusable layer under scenario validation.

:class:`Problem` is one error: the file, the line, the field (``params.max_turns``) and what
was expected, with the nearest valid key for a misspelt one (``difflib``). :func:`read_document`
reads a YAML file into a :class:`YamlDocument` (the composed nodes, so every value has a line),
bounded in size, depth and alias expansion while it is composed: a hostile file is refused, never
expanded. :func:`problems_from_validation` turns a pydantic ``ValidationError`` into located
problems. Nothing here knows scenarios; :mod:`valuegym.scenarios.schema` builds on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from difflib import get_close_matches
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

Loc = tuple[str | int, ...]


# ---------------------------------------------------------------------------- problems
@dataclass(frozen=True)
class Problem:
    """One thing wrong with a scenario: where (file, line, field) and what was expected."""

    loc: Loc  # the field, e.g. ("params", "max_turns"); () for the whole file
    message: str
    file: Path | None = None  # None: the scenario file being validated
    line: int | None = None  # 1-based

    @property
    def field(self) -> str:
        """``params.options[0].text`` style."""
        text = ""
        for part in self.loc:
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
        return text

    def describe(self, source: str = "") -> str:
        where = str(self.file) if self.file is not None else source
        if self.line is not None:
            where += f":{self.line}"
        parts = [p for p in (where, self.field) if p]
        return ": ".join([*parts, self.message])


class ScenarioError(ValueError):
    """A scenario (or a file it names) is invalid; ``problems`` says where and why, one per line."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = sorted(problems, key=lambda p: (str(p.file or ""), p.line or 0))
        super().__init__("\n".join(p.describe(source) for p in self.problems))


# ---------------------------------------------------------------------------- YAML with lines
@dataclass(frozen=True)
class YamlDocument:
    """A YAML file's data (``yaml.safe_load``'s) and the composed nodes that say where each part is."""

    path: Path
    data: Any
    root: yaml.Node | None

    def line_of(self, loc: Loc) -> int | None:
        """The line of the deepest part of ``loc`` present in the file (a mapping's key line)."""
        node = self.root
        if node is None:
            return None
        line = node.start_mark.line + 1
        for part in loc:
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                match = next(
                    (kv for kv in node.value if isinstance(kv[0], yaml.ScalarNode) and kv[0].value == part),
                    None,
                )
                if match is None:
                    break
                line, node = match[0].start_mark.line + 1, match[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                break
        return line

    def locate(self, problem: Problem) -> Problem:
        return replace(problem, file=self.path, line=self.line_of(problem.loc))

    def _nodes(self) -> Iterator[yaml.Node]:
        """Every node of the file once (an alias's node is shared, not walked again)."""
        stack, visited = [self.root], set()
        while stack:
            node = stack.pop()
            if node is None or id(node) in visited:
                continue
            visited.add(id(node))
            yield node
            if isinstance(node, yaml.MappingNode):
                stack += [part for pair in node.value for part in pair]
            elif isinstance(node, yaml.SequenceNode):
                stack += node.value

    def interpolations(self) -> list[Problem]:
        """Strings holding an OmegaConf interpolation (``${oc.env:OPENAI_API_KEY}``): Hydra would
        resolve them when the scenario runs, so a shared file could read the runner's environment
        into prompts and records. Scenario files are plain data: refused."""
        return [
            Problem(
                (),
                "interpolations (${...}) are not allowed in a scenario file: it is plain data; "
                "give computed values on the command line",
                self.path,
                node.start_mark.line + 1,
            )
            for node in self._nodes()
            if isinstance(node, yaml.ScalarNode) and "${" in str(node.value)
        ]

    def duplicate_keys(self) -> list[Problem]:
        """Keys given twice in one mapping (PyYAML would silently keep the last)."""
        problems: list[Problem] = []
        for node in self._nodes():
            if not isinstance(node, yaml.MappingNode):
                continue
            first: dict[str, int] = {}
            for key, _ in node.value:
                line = key.start_mark.line + 1
                if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                    if key.value in first:
                        problems.append(
                            Problem(
                                (),
                                f"key {key.value!r} appears twice (first on line {first[key.value]}); "
                                "YAML would keep only the last",
                                self.path,
                                line,
                            )
                        )
                    first.setdefault(key.value, line)
        return problems


#: Bounds on one scenario or data file, so that reading any file is quick and small: its size,
#: how deeply it nests and how many nodes its aliases (``*name``) would add if expanded
#: (a "billion laughs" file is refused, not expanded).
MAX_FILE_BYTES = 2_000_000
MAX_DEPTH = 64
MAX_ALIAS_NODES = 10_000


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing documents nested deeper than :data:`MAX_DEPTH` and aliases
    that would expand to more than :data:`MAX_ALIAS_NODES` nodes (counted while composing, before
    anything is constructed)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._alias_nodes = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            anchored = self.anchors.get(event.anchor)
            if anchored is not None:
                self._alias_nodes += self._size(anchored)
                if self._alias_nodes > MAX_ALIAS_NODES:
                    raise yaml.composer.ComposerError(
                        None,
                        None,
                        f"aliases would expand to more than {MAX_ALIAS_NODES} nodes "
                        "(scenario files may reuse an anchor, not multiply one)",
                        event.start_mark,
                    )
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark
            )
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _size(self, node: yaml.Node) -> int:
        """Nodes under ``node``, aliases expanded (memoised: composed nodes form a DAG)."""
        known = self._sizes.get(id(node))
        if known is not None:
            return known
        if isinstance(node, yaml.SequenceNode):
            size = 1 + sum(self._size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            size = 1 + sum(self._size(key) + self._size(value) for key, value in node.value)
        else:
            size = 1
        self._sizes[id(node)] = size
        return size


def read_document(path: Path) -> YamlDocument:
    """Parse ``path`` with the safe loader, keeping the nodes; bad YAML -> :class:`ScenarioError` with the line.

    Bounded (:data:`MAX_FILE_BYTES`, :data:`MAX_DEPTH`, :data:`MAX_ALIAS_NODES`): a file is data
    from someone else, and reading it must not freeze or exhaust the machine."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ScenarioError(
                str(path),
                [
                    Problem(
                        (),
                        f"the file has {size} bytes; scenario and data files may have {MAX_FILE_BYTES}",
                        path,
                    )
                ],
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ScenarioError(str(path), [Problem((), f"cannot read the file: {error}", path)]) from None
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        what = " ".join(p for p in (error.context, error.problem) if p)
        if isinstance(error, yaml.constructor.ConstructorError):
            what += " (scenario files are plain data: tags that build Python objects are not allowed)"
        line = mark.line + 1 if mark is not None else None
        raise ScenarioError(str(path), [Problem((), f"invalid YAML: {what}", path, line)]) from None
    except yaml.YAMLError as error:
        raise ScenarioError(str(path), [Problem((), f"invalid YAML: {error}", path)]) from None
    finally:
        loader.dispose()
    return YamlDocument(path, data, root)


# ---------------------------------------------------------------------------- pydantic errors
_UNION_TAG = re.compile(r"[\[\]()]")  # pydantic's loc parts naming a union member, e.g. "list[str]"
_QUOTED = re.compile(r"'([^']*)'")


def suggest(word: str, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the choice closest to a misspelt ``word``, or ``""``."""
    close = get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a union / Optional / Annotated type."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin in (Union, UnionType):
        return [m for arg in get_args(annotation) for m in _members(arg)]
    return [annotation]


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The pydantic model that holds the last key of ``loc`` (to suggest its field names)."""
    current: list[Any] = [model]
    for part in loc[:-1]:
        following: list[Any] = []
        for annotation in current:
            for member in _members(annotation):
                origin = get_origin(member)
                if isinstance(member, type) and issubclass(member, BaseModel) and isinstance(part, str):
                    if part in member.model_fields:
                        following.append(member.model_fields[part].annotation)
                elif origin in (list, tuple, Sequence) and isinstance(part, int):
                    following.append(get_args(member)[0])
                elif origin in (dict, Mapping) and isinstance(part, str):
                    following.append(get_args(member)[1])
        current = following
    for annotation in current:
        for member in _members(annotation):
            if isinstance(member, type) and issubclass(member, BaseModel):
                return member
    return None


def _describe_error(error: Mapping[str, Any], model: type[BaseModel], loc: Loc) -> str:
    kind, message, given = error["type"], str(error["msg"]), error.get("input")
    if kind == "extra_forbidden":
        owner = _model_at(model, loc)
        fields = list(owner.model_fields) if owner else []
        hint = suggest(str(loc[-1]), fields)
        return f"unknown key {loc[-1]!r}{hint}" + (
            "" if hint or not fields else f"; valid keys: {', '.join(fields)}"
        )
    if kind == "missing":
        owner = _model_at(model, loc)
        field = owner.model_fields.get(str(loc[-1])) if owner else None
        described = f" ({field.description})" if field is not None and field.description else ""
        return f"required field is missing{described}"
    if kind == "literal_error" and isinstance(given, str):
        return f"{message}, got {given!r}{suggest(given, _QUOTED.findall(error['ctx']['expected']))}"
    if kind in ("value_error", "assertion_error"):
        return (
            message.split(", ", 1)[1]
            if message.startswith(("Value error, ", "Assertion failed, "))
            else message
        )
    if "url" not in error or isinstance(given, Mapping | list):  # custom errors already name the input
        return message
    return f"{message}, got {given!r}"


def problems_from_validation(
    error: ValidationError, model: type[BaseModel], prefix: Loc = ()
) -> list[Problem]:
    """pydantic's errors as problems; a union's alternatives are merged into one problem per field."""
    merged: dict[Loc, list[str]] = {}
    for item in error.errors():
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and _UNION_TAG.search(p)))
        text = _describe_error(item, model, loc)
        if text not in merged.setdefault(prefix + loc, []):
            merged[prefix + loc].append(text)
    return [Problem(loc, "; or: ".join(texts)) for loc, texts in merged.items()]
