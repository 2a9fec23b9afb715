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
(``difflib``). Line numbers come from the nodes PyYAML composes (``yaml.compose``); that layer
(reading bounded YAML with lines, locating pydantic errors) is :mod:`valuegym.scenarios.located_yaml`.

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
from collections.abc import Mapping
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Literal

import jinja2
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
from valuegym.scenarios.located_yaml import (
    Loc,
    Problem,
    ScenarioError,
    problems_from_validation,
    read_document,
    suggest,
)

#: ``json_schema_extra`` key marking a Params field as the path of a data file (see the module docstring)
DATA_FILE_KEY = "x-data-file"
#: ``json_schema_extra`` key marking a Params field as a path; its value lists the field's non-path words
PATH_KEY = "x-path"
#: validation context key: a list that collects the problems instead of raising them
PROBLEMS = "problems"


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
