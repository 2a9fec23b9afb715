"""What ``valuegym run`` is given, checked before Hydra writes or prints anything.

:func:`check_run_arguments` runs first, on the command line as typed: an API key given anywhere
but an environment variable is refused (without echoing it), and a config group option that
does not exist (``agent=scripted/ethicl``) is named with the real choices. Then, for a single
run, the configuration is composed once as Hydra will compose it and :func:`check_config`
checks it: secrets in any field, required values left ``???``, the top-level numbers and flags
(:class:`RunInputs`), the scripted agent's params and an LLM agent's config. A sweep's top-level
values are checked as typed, and each of its jobs runs :func:`check_config` when it starts.
Each refusal is an :class:`InputError` whose message names the key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from difflib import get_close_matches
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

#: values that are API keys or tokens by their shape (OpenAI/Anthropic/Groq, GitHub, Hugging
#: Face, Slack, AWS, Google, JWTs, bearer headers). Keys without a recognisable shape are caught
#: by their config key's name (:data:`SECRET_KEY`) and in ``api_key_env`` by its own rule; a
#: shape-free rule ("long mixed-case token") would refuse ordinary run-directory and model names.
SECRET_VALUE = re.compile(
    r"sk-[A-Za-z0-9_\-]{16,}"
    r"|(?:ghp|gho|ghu|ghs|ghr|github_pat)_[A-Za-z0-9_]{20,}"
    r"|hf_[A-Za-z0-9]{20,}"
    r"|xox[abprs]-[A-Za-z0-9\-]{10,}"
    r"|AKIA[0-9A-Z]{16}"
    r"|AIza[0-9A-Za-z_\-]{30,}"
    r"|eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}"
    r"|gsk_[A-Za-z0-9]{20,}"
    r"|[Bb]earer\s+\S{16,}"
)
#: config keys that hold a secret by their name (``api_key``, ``hf_token``, ``password``), not
#: ``api_key_env`` (the *name* of the variable) or ``max_tokens``
SECRET_KEY = re.compile(
    r"(?:^|[._])(?:api[_-]?key|apikey|secret|secret[_-]key|password|passwd|token|access[_-]token"
    r"|auth[_-]token|bearer|authorization|credentials?)$",
    re.IGNORECASE,
)
ENV_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: config groups whose options the command line may choose
GROUPS = ("agent", "scenario", "regulator", "executor", "experiment")
HIDDEN = "<hidden>"


class InputError(ValueError):
    """A command-line input or composed config value that cannot run; the message names the key."""


def looks_secret(value: object) -> bool:
    return isinstance(value, str) and SECRET_VALUE.search(value) is not None


def redact(text: str) -> str:
    """``text`` with every secret-looking part replaced by ``<hidden>``."""
    return SECRET_VALUE.sub(HIDDEN, text)


# ---------------------------------------------------------------------------- secrets
_KEY_HELP = (
    "valuegym reads API keys only from environment variables: export the key "
    "(e.g. export OPENAI_API_KEY=...) and name the variable with agent.backend.api_key_env=OPENAI_API_KEY"
)


def secret_problem(key: str, value: object) -> str | None:
    """Why ``key: value`` must not be accepted (a key in a config), or None. Never echoes the value."""
    last = key.rsplit(".", 1)[-1]
    if last.endswith("api_key_env"):
        # a variable's name: UPPER_CASE by convention, or one that is set; a pasted key is neither
        if value is None or (
            isinstance(value, str)
            and ENV_VAR_NAME.match(value)
            and not looks_secret(value)
            and (value.upper() == value or value in os.environ)
        ):
            return None
        return (  # the value is not shown: a key pasted here by mistake must not reach the terminal
            f"{key}={HIDDEN} must be the name of an environment variable (UPPER_CASE letters, digits "
            f"and _, or a variable that is set); {_KEY_HELP}"
        )
    if SECRET_KEY.search(key) and value not in (None, "", "???"):
        return f"{key}={HIDDEN}: an API key or token may not be given in a config; {_KEY_HELP}"
    if looks_secret(value):
        return f"{key}={HIDDEN}: the value looks like an API key or token; {_KEY_HELP}"
    return None


def _walk(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _walk(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            yield from _walk(value, f"{prefix}[{index}]")
    else:
        yield prefix, node


def config_secret_problems(config: Mapping[str, Any]) -> list[str]:
    """Every key of ``config`` (a plain container, unresolved) that holds or names a secret wrongly."""
    problems = []
    for key, value in _walk(config):
        if key.startswith("hydra."):
            continue
        problem = secret_problem(key, value)
        if problem:
            problems.append(problem)
    return problems


# ---------------------------------------------------------------------------- the command line
def _overrides(argv: Iterable[str]) -> Iterator[tuple[str, str]]:
    """``(key, value)`` of each ``key=value`` argument (``+``/``++``/``~`` prefixes dropped)."""
    for argument in argv:
        if argument.startswith("-") or "=" not in argument:
            continue
        key, value = argument.split("=", 1)
        yield key.lstrip("+~"), value


def config_dirs(argv: list[str]) -> list[Path]:
    """The folders given with ``--config-dir DIR`` / ``-cd DIR`` (their groups add options)."""
    found = []
    for index, argument in enumerate(argv):
        if argument.startswith("--config-dir="):
            found.append(Path(argument.split("=", 1)[1]))
        elif argument in ("--config-dir", "-cd") and index + 1 < len(argv):
            found.append(Path(argv[index + 1]))
    return found


def group_options(group: str, extra_dirs: Iterable[Path] = ()) -> list[str]:
    """The options a config group offers (``agent`` -> ``scripted/ethical``, ``llm/openai``, ...),
    in the package's ``conf/`` and in ``extra_dirs``."""
    if group == "scenario":
        from valuegym.scenarios import scenario_files  # file names only: nothing is read

        return sorted(scenario_files())
    found: list[str] = []
    folders: list[tuple[str, Any]] = [("", resources.files("valuegym.conf").joinpath(group))]
    folders += [("", directory / group) for directory in extra_dirs]
    while folders:
        prefix, folder = folders.pop()
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.name.startswith("_"):
                folders.append((f"{prefix}{entry.name}/", entry))
            elif entry.name.endswith(".yaml"):
                found.append(prefix + entry.name.removesuffix(".yaml"))
    return sorted(found)


def _sweep_values(value: str) -> list[str] | None:
    """The options a group override names: one, or a plain comma list; None for other sweep syntax."""
    if any(character in value for character in "()[]{}*$"):
        return None
    return [part.strip() for part in value.split(",")]


def choice_problem(group: str, option: str, extra_dirs: Iterable[Path] = ()) -> str | None:
    options = group_options(group, extra_dirs)
    if option in options or option == "null":
        return None
    close = get_close_matches(option, options, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    where = (
        f"no scenario file {option}.yaml in scenarios/ or VALUEGYM_SCENARIO_PATH"
        if group == "scenario"
        else f"no config conf/{group}/{option}.yaml"
    )
    return f"{group}={option}: {where}{hint}\n  available: {', '.join(options)}"


def check_secrets(argv: list[str]) -> None:
    """Keys given in the arguments as typed (any command that launches Hydra)."""
    problems = [p for key, value in _overrides(argv) if (p := secret_problem(key, value))]
    if problems:
        raise InputError("\n".join(problems))


def check_command_line(argv: list[str]) -> None:
    """Secrets and unknown group options in the arguments as typed (:class:`InputError`)."""
    check_secrets(argv)
    problems = []
    extra_dirs = config_dirs(argv)
    for key, value in _overrides(argv):
        if key in GROUPS:
            for option in _sweep_values(value) or []:
                problem = choice_problem(key, option, extra_dirs)
                if problem:
                    problems.append(problem)
        elif key in TOP_LEVEL:
            problems += _top_level_problems(f"{key}={value}")
    if problems:
        raise InputError("\n".join(problems))


def _top_level_problems(override: str) -> list[str]:
    """A top-level value (or every value of a sweep over it) against :class:`RunInputs`, so a
    sweep's bad value is refused before any job starts."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_override(override)
        values = list(parsed.sweep_iterator()) if parsed.is_sweep_override() else [parsed.value()]
    except HydraException:
        return []  # Hydra reports its own syntax errors
    key = parsed.key_or_group
    problems = []
    for value in values:
        if isinstance(value, str) and "${" in value:
            continue  # an interpolation: checked once composed
        try:
            TOP_LEVEL[key].validate_python(value)
        except ValidationError as error:
            problems += [
                _describe({**item, "loc": tuple(key.split("."))}, {}, value) for item in error.errors()
            ]
    return problems


# ---------------------------------------------------------------------------- the composed config
class RayInputs(BaseModel):
    model_config = ConfigDict(extra="allow", hide_input_in_errors=True)

    address: str | None
    num_cpus: StrictInt | None = Field(ge=1, le=100_000)


class RunInputs(BaseModel):
    """The top-level keys of ``conf/config.yaml``, with the types and bounds a run accepts."""

    model_config = ConfigDict(extra="allow", hide_input_in_errors=True)

    episodes: StrictInt = Field(ge=1, le=100_000_000, description="episodes to run")
    seed: StrictInt = Field(ge=0, le=2**63 - 1, description="base seed")
    episode_seeds: Literal["derived", "consecutive"]
    quiet: StrictBool
    ray: RayInputs


def _describe(item: Mapping[str, Any], config: Mapping[str, Any], value: Any = None) -> str:
    key = ".".join(str(part) for part in item["loc"])
    if config:
        value = config
        for part in item["loc"]:
            value = value.get(part) if isinstance(value, Mapping) else None
    shown = HIDDEN if looks_secret(value) else repr(value)
    kind = item["type"]
    if kind == "int_type":
        expected = "a whole number"
    elif kind == "bool_type":
        expected = "true or false"
    else:
        expected = item["msg"][0].lower() + item["msg"][1:]
    return f"{key}={shown}: expected {expected}" if kind.endswith("_type") else f"{key}={shown}: {expected}"


def _adapter(field: FieldInfo) -> TypeAdapter[Any]:
    if not field.metadata:
        return TypeAdapter(field.annotation)
    return TypeAdapter(Annotated[(field.annotation, *field.metadata)])


#: the top-level keys a command line sets directly -> their validator (as in :class:`RunInputs`)
TOP_LEVEL: dict[str, TypeAdapter[Any]] = {
    **{name: _adapter(field) for name, field in RunInputs.model_fields.items() if name != "ray"},
    **{f"ray.{name}": _adapter(field) for name, field in RayInputs.model_fields.items()},
}


def missing_problems(cfg: Any) -> list[str]:
    """Required values left ``???`` (``agent.backend.base_url``), each named with how to give it."""
    from omegaconf import OmegaConf

    problems = []
    for key in sorted(OmegaConf.missing_keys(cfg)):
        if key.startswith("hydra."):
            continue
        problems.append(
            f"{key} is required: the config leaves it ??? (set it on the command line: {key}=...)"
        )
    return problems


def check_config(cfg: Any) -> None:
    """The composed run config (an OmegaConf ``DictConfig``): secrets, required values, the
    top-level inputs and the scripted agent's params (:class:`InputError` naming each key)."""
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(raw, dict)
    problems = config_secret_problems(raw)
    if problems:
        raise InputError("\n".join(problems))  # before anything else looks at the values
    problems = missing_problems(cfg)
    if problems:
        raise InputError("\n".join(problems))
    scenario_node = raw.get("scenario")
    if isinstance(scenario_node, Mapping) and scenario_node.get("env") == "invalid":
        error = str(scenario_node.get("error")).replace("\\${", "${")
        raise InputError(f"the scenario file is invalid: {error}")  # see register_scenarios
    values = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(values, dict)
    problems = config_secret_problems(values)  # e.g. ${oc.env:OPENAI_API_KEY} resolved into a value
    if problems:
        raise InputError("\n".join(problems))
    try:
        RunInputs.model_validate(values)
    except ValidationError as error:
        problems += [_describe(item, values) for item in error.errors()]
    agent = values.get("agent") or {}
    scenario = values.get("scenario") or {}
    if agent.get("kind") == "scripted" and isinstance(scenario.get("env"), str):
        from valuegym.agents.scripted import policy_class, validated_params

        try:  # an unknown scripted name is refused here too, with the environment's choices
            validated_params(policy_class(scenario["env"], str(agent.get("name"))), agent.get("params") or {})
        except ValueError as error:
            problems.append(str(error))
    elif agent.get("kind") == "llm":
        from valuegym.agents.llm.config import parse_config

        try:
            parse_config(agent)
        except ValueError as error:  # pydantic's errors; the config models never echo inputs
            problems.append(f"agent: {error}")
    if problems:
        raise InputError("\n".join(problems))


def compose(argv: list[str]) -> Any | None:
    """The config a single run of ``argv`` composes to, or None when it cannot be composed here
    (a sweep, or an error Hydra itself will report)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    extra_dirs = config_dirs(argv)
    flags = [arg for arg in argv if arg.startswith("-") and not arg.startswith("--config-dir")]
    if flags:  # -m (a sweep: each job checks itself), --cfg, --help, ...
        return None
    overrides = [arg for arg in argv if "=" in arg and not arg.startswith("-")]
    if extra_dirs:
        paths = ",".join(f"file://{directory.resolve()}" for directory in extra_dirs)
        overrides.append(f"hydra.searchpath=[{paths}]")
    try:
        with initialize_config_module("valuegym.conf", version_base="1.3"):
            return hydra_compose("config", overrides=overrides)
    except Exception:
        return None
    finally:
        GlobalHydra.instance().clear()


def check_run_arguments(argv: list[str]) -> None:
    """Every check that can refuse ``valuegym run ARGV`` before Hydra writes or prints anything."""
    check_command_line(argv)
    cfg = compose(argv)
    if cfg is not None:
        check_config(cfg)
