"""The scenario file schema and its validation, with every error located in the file.

A scenario file is one envelope (:class:`Scenario`) for every environment; its ``params`` are
validated by the environment module's own pydantic model ``Params`` (``extra="forbid"``), its
``slots`` against the agents of the environment those params build.

Scenario files are data. They are read with PyYAML's safe loader only (tags that would build
Python objects are rejected), nothing in them is imported or executed, and the only code that
runs is ours: the environment module named by ``env`` (looked up in ``valuegym.envs``'
registry, never imported by a name taken from the file) validates the params and builds the
environment once to learn its agents.

Errors are :class:`Problem` s: the file, the line, the field (``params.max_turns``,
``slots[0].policy``) and what was expected, with the nearest valid key for a misspelt one
(``difflib``). Line numbers come from the nodes PyYAML composes (``yaml.compose``).

Data files. A ``Params`` field whose ``json_schema_extra`` holds ``{"x-data-file": "Model"}`` is
the path of a YAML (or JSON) file validated by the pydantic model ``Model`` of the environment
module (the dilemma environment's ``dilemma_file`` is one). Its errors are reported with that
file's lines.

Paths. In a scenario file a relative path is relative to the scenario's folder: ``prompt_template``,
every data file, and every ``Params`` field marked ``{"x-path": [words]}``, whose value is the path
of a file unless it is one of ``words`` (values the field takes that are not paths, e.g. the
co-evolution environment's ``trajectory: synthetic``).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from difflib import get_close_matches
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from types import ModuleType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from valuegym.envs import ENVIRONMENTS, make_parallel

#: ``json_schema_extra`` key marking a Params field as the path of a data file (see the module docstring)
DATA_FILE_KEY = "x-data-file"
#: ``json_schema_extra`` key marking a Params field as a path; its value lists the field's non-path words
PATH_KEY = "x-path"
#: validation context key: a list that collects the problems instead of raising them
PROBLEMS = "problems"

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


# ---------------------------------------------------------------------------- the envelope
_TAG = re.compile(r"^[a-z0-9][a-z0-9_.\-/]*$")


def _check_tag(tag: str) -> str:
    if not _TAG.match(tag):
        raise ValueError(f"tag {tag!r} must be lowercase words, digits and - _ . / (e.g. scarcity/low)")
    return tag


def agent_configs() -> list[str]:
    """Every agent config a slot may name: ``conf/agent/<reference>.yaml`` as ``<reference>``
    (``scripted/ethical``, ``llm/openai``)."""
    found: list[str] = []
    folders = [("", resources.files("valuegym.conf").joinpath("agent"))]
    while folders:
        prefix, folder = folders.pop()
        for entry in folder.iterdir():
            if entry.is_dir():
                folders.append((f"{prefix}{entry.name}/", entry))
            elif entry.name.endswith(".yaml"):
                found.append(prefix + entry.name.removesuffix(".yaml"))
    return sorted(found)


class Slot(BaseModel):
    """Seats in the scenario: focal ones are played by the agent under study,
    background ones by the policy the slot names (Melting Pot's focal/background split)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agents: list[str] = Field(min_length=1, description="agent ids of the environment")
    role: Literal["focal", "background"] = "focal"
    policy: str | None = Field(None, description="agent config for background seats, e.g. scripted/ethical")

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, policy: str | None) -> str | None:
        if policy is not None:
            known = agent_configs()
            if policy not in known:
                hint = suggest(policy, known) or f"; known: {', '.join(known)}"
                raise ValueError(f"no agent config conf/agent/{policy}.yaml{hint}")
        return policy

    @model_validator(mode="after")
    def _background_needs_policy(self) -> Slot:
        if self.role == "background" and not self.policy:
            raise ValueError("a background slot needs a policy, e.g. policy: scripted/ethical")
        if self.role == "focal" and self.policy:
            raise ValueError(
                "a focal slot takes the agent under study; remove its policy or make it background"
            )
        return self


class Scenario(BaseModel):
    """A validated scenario: build one with ``valuegym.scenarios`` (files, names or dicts)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str = Field(description=f"the environment type, one of {', '.join(sorted(ENVIRONMENTS))}")
    name: str = Field("", description="set from the file's path: <folder>/<file name>")
    description: str = ""
    source: str = Field("", description="where the scenario comes from (paper, repository, file)")
    tags: list[Annotated[str, AfterValidator(_check_tag)]] = Field(default_factory=list)
    prompt_template: str | None = Field(
        None, description="a Jinja2 prompt template for LLM agents whose config sets no template"
    )
    params: dict[str, Any] = Field(default_factory=dict, description="the environment's Params")
    slots: list[Slot] = Field(default_factory=list, description="default: every agent is focal")

    _agents: tuple[str, ...] = PrivateAttr(default=())

    @field_validator("env")
    @classmethod
    def _known_env(cls, env: str) -> str:
        if env not in ENVIRONMENTS:
            raise ValueError(
                f"unknown environment {env!r}{suggest(env, sorted(ENVIRONMENTS))}; "
                f"known environments: {', '.join(sorted(ENVIRONMENTS))}"
            )
        return env

    @model_validator(mode="after")
    def _params_and_slots(self, info: ValidationInfo) -> Scenario:
        problems = self._check()
        collector = (info.context or {}).get(PROBLEMS)
        if problems and collector is None:
            raise ValueError("\n".join(p.describe() for p in problems))
        if collector is not None:
            collector.extend(problems)
        return self

    def _check(self) -> list[Problem]:
        """Validate params (and their data files), the prompt template and the slots; fills ``_agents``."""
        validated, problems = check_params(self.env, self.params)
        if validated is not None:
            object.__setattr__(self, "params", validated)
        if self.prompt_template is not None:
            problems += check_template(Path(self.prompt_template))
        if problems:
            return problems
        try:
            environment = make_parallel(self.env, **self.params)
        except Exception as error:  # the env's own checks beyond Params: report, never crash validation
            reason = str(error) or f"{type(error).__name__} (no message)"
            return [Problem(("params",), f"the environment cannot be built with these params: {reason}")]
        self._agents = tuple(environment.possible_agents)
        environment.close()
        return self._slot_problems()

    def _slot_problems(self) -> list[Problem]:
        problems = []
        slot_of: dict[str, int] = {}
        for i, slot in enumerate(self.slots):
            for j, agent in enumerate(slot.agents):
                if agent not in self._agents:
                    problems.append(
                        Problem(
                            ("slots", i, "agents", j),
                            f"unknown agent {agent!r}{suggest(agent, self._agents)}; "
                            f"this scenario's agents are: {', '.join(self._agents)}",
                        )
                    )
                elif agent in slot_of:
                    problems.append(
                        Problem(
                            ("slots", i, "agents", j),
                            f"agent {agent!r} is already in slots[{slot_of[agent]}]",
                        )
                    )
                else:
                    slot_of[agent] = i
        return problems

    def agent_ids(self) -> list[str]:
        return list(self._agents)

    def roles(self) -> dict[str, Slot]:
        return {agent: slot for slot in self.slots for agent in slot.agents}


# ---------------------------------------------------------------------------- params and the files they name
def check_params(env: str, params: Mapping[str, Any]) -> tuple[dict[str, Any] | None, list[Problem]]:
    """``params`` validated by the environment's ``Params`` (as set, without defaults), or the problems."""
    module = env_module(env)
    params_model: type[BaseModel] = module.Params
    problems: list[Problem] = []
    broken_files = set()
    for field, model in data_file_fields(module).items():
        value = params.get(field)
        if isinstance(value, str):
            found = check_data_file(Path(value), model, ("params", field))
            if found:
                problems += found
                broken_files.add(field)
    if broken_files:  # Params would read the broken file again (unbounded): its own problems say more
        return None, problems
    try:
        validated = params_model.model_validate(params)
    except ValidationError as error:
        return None, problems + problems_from_validation(error, params_model, ("params",))
    return (None, problems) if problems else (validated.model_dump(exclude_unset=True), [])


def env_module(env: str) -> ModuleType:
    """The module of a registered environment (``ENVIRONMENTS``); never a name from a file."""
    return ENVIRONMENTS[env].module()


def data_file_fields(module: ModuleType) -> dict[str, type[BaseModel]]:
    """``Params`` field -> the model its data file must match (fields marked with :data:`DATA_FILE_KEY`)."""
    fields = {}
    declared_in = sys.modules[module.Params.__module__]  # the model is named where Params uses it
    for name, field in module.Params.model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and DATA_FILE_KEY in extra:
            fields[name] = getattr(declared_in, str(extra[DATA_FILE_KEY]))
    return fields


def path_fields(module: ModuleType) -> dict[str, tuple[str, ...]]:
    """``Params`` field -> the words it takes that are not paths, for every field holding a path
    (marked with :data:`PATH_KEY`, or with :data:`DATA_FILE_KEY`, which implies it)."""
    fields = {}
    for name, field in module.Params.model_fields.items():
        extra = field.json_schema_extra
        if not isinstance(extra, dict) or not (PATH_KEY in extra or DATA_FILE_KEY in extra):
            continue
        words = extra.get(PATH_KEY, [])
        if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
            raise TypeError(
                f"{module.__name__}.Params.{name}: {PATH_KEY} must list the words that are not paths, "
                f"got {words!r}"
            )
        fields[name] = tuple(words)
    return fields


def check_data_file(path: Path, model: type[BaseModel], field: Loc) -> list[Problem]:
    """Problems of a data file, located in it; a missing file is a problem of ``field``."""
    if not path.is_file():
        return [Problem(field, f"file not found: {path}")]
    try:
        document = read_document(path)
    except ScenarioError as error:
        return list(error.problems)
    problems = document.duplicate_keys()
    try:
        model.model_validate(document.data)
    except ValidationError as error:
        problems += [document.locate(p) for p in problems_from_validation(error, model)]
    return problems


def check_template(path: Path) -> list[Problem]:
    """A prompt template must exist and parse (parsed only: nothing in it runs here)."""
    if not path.is_file():
        return [Problem(("prompt_template",), f"file not found: {path}")]
    try:
        SandboxedEnvironment().parse(path.read_text(encoding="utf-8"))
    except jinja2.TemplateSyntaxError as error:
        return [Problem((), f"template syntax error: {error.message}", path, error.lineno)]
    return []


def resolve_paths(
    data: Mapping[str, Any], folder: Path | None, written: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``data`` with its relative file paths made absolute: relative to ``folder`` (the scenario
    file's) where the value is the one ``written`` in that file, else to the working directory
    (a value given on the command line)."""
    resolved = dict(data)

    def absolute(value: Any, as_written: Any) -> Any:
        if not isinstance(value, str) or os.path.isabs(value):
            return value
        base = folder if folder is not None and value == as_written else Path.cwd()
        return str((base / value).resolve())

    written = written or {}
    if "prompt_template" in resolved:
        resolved["prompt_template"] = absolute(resolved["prompt_template"], written.get("prompt_template"))
    params, written_params = resolved.get("params"), written.get("params")
    if resolved.get("env") in ENVIRONMENTS and isinstance(params, Mapping):
        written_params = written_params if isinstance(written_params, Mapping) else {}
        params = dict(params)
        for field, words in path_fields(env_module(resolved["env"])).items():
            if field in params and params[field] not in words:
                params[field] = absolute(params[field], written_params.get(field))
        resolved["params"] = params
    return resolved


def shipped_roots() -> tuple[Path, ...]:
    """The package's own folders a scenario file may name files in: the shipped scenarios (and
    their data files) and the shipped prompt templates."""
    scenarios = Path(__file__).resolve().parent
    agents = find_spec("valuegym.agents")  # the package's location; nothing of agents is imported
    locations = list(agents.submodule_search_locations or []) if agents is not None else []
    return (scenarios, *(Path(p).resolve() / "llm" / "templates" for p in locations))


def path_problems(
    data: Mapping[str, Any], folder: Path | None, written: Mapping[str, Any] | None
) -> list[Problem]:
    """Paths written in the scenario file (``written``, in ``folder``) that lead outside the
    scenario's folder tree and the package's shipped files (:func:`shipped_roots`).

    A scenario file is someone else's data: it may name its own templates and data files, never
    ``/etc/passwd`` or ``../../secrets`` (their content would reach a model server and the
    records). A path given on the command line is the user's own and is not limited."""
    if folder is None or not written:
        return []
    roots = (folder.resolve(), *shipped_roots())
    candidates: list[tuple[Loc, Any]] = []
    if "prompt_template" in data and data["prompt_template"] == written.get("prompt_template"):
        candidates.append((("prompt_template",), data["prompt_template"]))
    params, written_params = data.get("params"), written.get("params")
    if (
        data.get("env") in ENVIRONMENTS
        and isinstance(params, Mapping)
        and isinstance(written_params, Mapping)
    ):
        for field, words in path_fields(env_module(data["env"])).items():
            value = params.get(field)
            if value not in words and value == written_params.get(field):
                candidates.append((("params", field), value))
    problems = []
    for loc, value in candidates:
        if not isinstance(value, str):
            continue
        target = (folder / Path(value).expanduser()).resolve()
        if not any(target.is_relative_to(root) for root in roots):
            problems.append(
                Problem(
                    loc,
                    f"the path {value!r} leads outside the scenario's folder ({folder}); a scenario "
                    "file may name only files in its own folder tree or shipped with valuegym "
                    "(give another file on the command line instead)",
                )
            )
    return problems


def validate_data(
    data: Mapping[str, Any],
    name: str = "",
    folder: Path | None = None,
    written: Mapping[str, Any] | None = None,
) -> tuple[Scenario | None, list[Problem]]:
    """The scenario ``data`` describes, or the problems that stop it (not yet located in a file)."""
    escapes = path_problems(data, folder, written)
    if escapes:
        return None, escapes
    resolved = resolve_paths(data, folder, written)
    problems: list[Problem] = []
    try:
        scenario = Scenario.model_validate({**resolved, "name": name}, context={PROBLEMS: problems})
    except ValidationError as error:
        problems = problems_from_validation(error, Scenario)
        env, params = resolved.get("env"), resolved.get("params", {})
        if env in ENVIRONMENTS and isinstance(params, Mapping):
            problems += check_params(env, params)[1]  # report the params' problems along with the envelope's
        return None, problems
    return (None, problems) if problems else (scenario, [])
