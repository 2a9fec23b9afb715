"""Scenario files: YAML data under ``scenarios/<env>/<name>.yaml``, selected as
``scenario=<env>/<name>``. More folders can be added with ``VALUEGYM_SCENARIO_PATH``
(``os.pathsep``-separated); a file there overrides a shipped one of the same name.

* :func:`load_scenario` (a name or a file) and :func:`validate_file` check a file and report
  every problem with its line (:class:`ScenarioError`);
* :func:`scenario_from_dict` checks a scenario as Hydra composed it (the file plus command-line
  overrides); if that fails, the file is checked on its own first, so a broken file is still
  reported with its lines.

The schema and what "valid" means: :mod:`valuegym.scenarios.schema`. Authoring guide:
``docs/authoring.md``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from valuegym.envs import ENVIRONMENTS
from valuegym.scenarios.located_yaml import Problem, ScenarioError, read_document, suggest
from valuegym.scenarios.schema import Scenario, Slot, validate_data

SHIPPED = Path(__file__).parent

__all__ = [
    "Problem",
    "Scenario",
    "ScenarioError",
    "Slot",
    "load_scenario",
    "read_yaml",
    "register_scenarios",
    "scenario_dirs",
    "scenario_files",
    "scenario_from_dict",
    "scenario_name",
    "validate_file",
]


def scenario_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("VALUEGYM_SCENARIO_PATH", "").split(os.pathsep) if p]
    return [SHIPPED, *extra]


def scenario_files() -> dict[str, Path]:
    """``"decide_sim/low" -> path`` for every scenario file (later folders override earlier ones).

    Only files directly inside a folder of a scenario directory count, so data files a scenario
    names can live in a subfolder (``scenarios/dilemma/sets/``)."""
    found: dict[str, Path] = {}
    for root in scenario_dirs():
        for path in sorted(root.glob("*/*.yaml")):
            found[scenario_name(path)] = path
    return found


def scenario_name(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping a scenario file holds, as written (bad YAML -> :class:`ScenarioError` with the line)."""
    document = read_document(path)
    if not isinstance(document.data, dict):
        raise ScenarioError(str(path), [_not_a_mapping(document.data, path)])
    problems = document.interpolations() + _outside_the_envelope(document.data, document)
    if problems:
        raise ScenarioError(str(path), problems)
    return document.data


def _outside_the_envelope(data: dict[str, Any], document: Any) -> list[Problem]:
    """Top-level keys a scenario does not have. Checked before a file is registered with Hydra:
    there a ``defaults`` list would be obeyed (pulling in other configs, e.g. one setting
    ``hydra.callbacks`` whose ``_target_`` Hydra instantiates: code a shared file could run)."""
    fields = list(Scenario.model_fields)
    return [
        document.locate(
            Problem(
                (str(key),),
                f"unknown key {key!r}{suggest(str(key), fields)}; valid keys: {', '.join(fields)}",
            )
        )
        for key in data
        if key not in Scenario.model_fields
    ]


def _not_a_mapping(data: Any, path: Path) -> Problem:
    got = "an empty file" if data is None else f"a {type(data).__name__}"
    return Problem(
        (), f"a scenario file must be a mapping with at least 'env' and 'params', got {got}", path, 1
    )


def validate_file(path: str | Path) -> Scenario:
    """The scenario in ``path``, or a :class:`ScenarioError` listing every problem with its line."""
    path = Path(path)
    document = read_document(path)
    if not isinstance(document.data, dict):
        raise ScenarioError(str(path), [_not_a_mapping(document.data, path)])
    data = document.data
    problems = document.duplicate_keys() + document.interpolations()
    name = scenario_name(path)
    if "name" in data:
        problems.append(Problem(("name",), f"remove it: a scenario's name comes from its path ({name})"))
    env = data.get("env")
    folder = path.parent.name
    if folder in ENVIRONMENTS and isinstance(env, str) and env in ENVIRONMENTS and env != folder:
        problems.append(
            Problem(
                ("env",),
                f"the file is in the folder {folder!r} but says env: {env}; keep a scenario in the folder "
                f"of its environment (it is selected as scenario={name})",
            )
        )
    fields = {key: value for key, value in data.items() if key != "name"}
    scenario, found = validate_data(fields, name=name, folder=path.parent, written=data)
    problems += found
    if problems or scenario is None:
        raise ScenarioError(str(path), [p if p.file is not None else document.locate(p) for p in problems])
    return scenario


def scenario_from_dict(data: Mapping[str, Any], name: str = "") -> Scenario:
    """A validated scenario from data already read, e.g. ``cfg.scenario`` as Hydra composed it.

    ``name`` (``<env>/<name>``) ties it to its scenario file: paths written there are relative
    to that file's folder; other relative paths (command-line overrides) to the working directory.
    """
    path = scenario_files().get(name) if name else None
    written = None
    if path is not None:
        try:
            written = read_yaml(path)
        except ScenarioError:
            validate_file(path)  # raises the file's own problems, with lines
    scenario, problems = validate_data(
        dict(data), name=name, folder=path.parent if path else None, written=written
    )
    if scenario is not None:
        return scenario
    if path is None:
        raise ScenarioError(f"scenario {name or '(unnamed)'}", problems)
    validate_file(path)  # a broken file is reported with its lines
    raise ScenarioError(
        f"scenario={name} with the command-line overrides (the file itself is valid)", problems
    )


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A validated scenario, by name (``decide_sim/low``) or by file path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return validate_file(path)
    files = scenario_files()
    if str(name_or_path) not in files:
        hint = suggest(str(name_or_path), list(files))
        raise ValueError(f"unknown scenario {str(name_or_path)!r}{hint}; known: {', '.join(sorted(files))}")
    return validate_file(files[str(name_or_path)])


def register_scenarios() -> None:
    """Make every scenario file selectable as ``scenario=<env>/<name>``.

    The files are data under ``scenarios/`` (and ``VALUEGYM_SCENARIO_PATH``); Hydra composes
    them like any config group (``scenario.params.scarcity=high`` overrides a key the file sets,
    ``+scenario.params.max_turns=20`` adds one), and the runner validates the result against
    the environment's schema.
    """
    from hydra.core.config_store import ConfigStore  # only Hydra apps need it

    store = ConfigStore.instance()
    for name, path in scenario_files().items():
        group, option = name.split("/")
        try:
            node = read_yaml(path)
        except Exception as error:  # a broken file must not break other scenarios; it fails when chosen
            # (the text is escaped: OmegaConf would read a ${...} quoted from the file as an interpolation)
            message = str(error) if isinstance(error, ScenarioError) else f"{path}: {error}"
            node = {"env": "invalid", "error": message.replace("${", "\\${")}
        store.store(group=f"scenario/{group}", name=option, node=node, package="scenario")
