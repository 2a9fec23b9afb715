"""``valuegym scenario``: list, validate and document scenario files.

valuegym scenario list [--tag TAG ...]         every scenario: name, env, tags, description
valuegym scenario validate [FILE|NAME ...]     check files (default: every scenario); exit 1 on any error
valuegym scenario fields [ENV ...]             the params each environment accepts (Markdown)
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from valuegym.envs import ENVIRONMENTS
from valuegym.scenarios import ScenarioError, load_scenario, read_yaml, scenario_files
from valuegym.scenarios.schema import env_module

DESCRIPTION_WIDTH = 72


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="valuegym scenario", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="list the scenario files")
    listing.add_argument(
        "--tag", action="append", default=[], help="only scenarios with this tag (repeatable)"
    )
    validate = commands.add_parser("validate", help="validate scenario files; exit 1 on any error")
    validate.add_argument("targets", nargs="*", metavar="FILE|NAME", help="default: every scenario file")
    fields = commands.add_parser("fields", help="the params of each environment, as Markdown tables")
    fields.add_argument(
        "envs", nargs="*", metavar="ENV", help=f"default: all of {', '.join(sorted(ENVIRONMENTS))}"
    )
    args = parser.parse_args(argv)
    if args.command == "list":
        return list_scenarios(args.tag)
    if args.command == "validate":
        return validate_targets(args.targets)
    unknown = [env for env in args.envs if env not in ENVIRONMENTS]
    if unknown:
        parser.error(f"unknown environment {', '.join(unknown)}; known: {', '.join(sorted(ENVIRONMENTS))}")
    for env in args.envs or sorted(ENVIRONMENTS):
        print(params_table(env))
    return 0


# ---------------------------------------------------------------------------- list
def list_scenarios(tags: list[str]) -> int:
    """A table of every scenario file, read as written (``validate`` checks them)."""
    rows = []
    for name, path in scenario_files().items():
        try:
            data = read_yaml(path)
        except ScenarioError as error:
            rows.append((name, "?", "", f"unreadable: {error.problems[0].message}"))
            continue
        file_tags = [str(t) for t in data.get("tags") or []]
        if not set(tags) <= set(file_tags):
            continue
        description = " ".join(str(data.get("description", "")).split())
        rows.append(
            (
                name,
                str(data.get("env", "?")),
                ", ".join(file_tags),
                textwrap.shorten(description, DESCRIPTION_WIDTH, placeholder=" …"),
            )
        )
    if not rows:
        print(f"no scenario has the tags {', '.join(tags)}" if tags else "no scenario files found")
        return 0
    header = ("NAME", "ENV", "TAGS", "DESCRIPTION")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        print("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[3]]))
    return 0


# ---------------------------------------------------------------------------- validate
def validate_targets(targets: list[str]) -> int:
    """Validate each file (or scenario name); one message per file; 1 if any is invalid."""
    paths = [Path(t) for t in targets] if targets else [_relative(p) for p in scenario_files().values()]
    invalid = 0
    for target in paths:
        try:
            scenario = load_scenario(target)
        except ScenarioError as error:
            invalid += 1
            count = len(error.problems)
            print(f"FAIL  {target}: {count} problem{'s' if count > 1 else ''}", file=sys.stderr)
            for problem in error.problems:
                print(f"  {problem.describe(str(target))}", file=sys.stderr)
        except ValueError as error:  # an unknown scenario name
            invalid += 1
            print(f"FAIL  {target}: {error}", file=sys.stderr)
        else:
            agents = scenario.agent_ids()
            print(f"ok    {target}: {scenario.name}, env {scenario.env}, agents {', '.join(agents)}")
    if invalid:
        print(f"{invalid} of {len(paths)} scenario files invalid", file=sys.stderr)
    return 1 if invalid else 0


def _relative(path: Path) -> Path:
    """``path`` relative to the working directory when it is inside it (shorter messages)."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


# ---------------------------------------------------------------------------- fields
def params_table(env: str) -> str:
    """The Markdown table of an environment's ``Params`` (and of the models its fields use)."""
    module = env_module(env)
    models: list[type[BaseModel]] = [module.Params]
    sections = []
    for model in models:  # grows while nested models are found
        title = f"`{env}` params" if model is module.Params else f"`{env}`: `{model.__name__}`"
        lines = [f"#### {title}", "", "| field | type | default | meaning |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            cells = (f"`{name}`", _type_text(field), _default_text(field), field.description or "")
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
            for nested in _models_in(field.annotation):
                if nested not in models:
                    models.append(nested)
        sections.append("\n".join(lines) + "\n")
    return "\n".join(sections)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _annotation_text(annotation: Any, nested: bool = False) -> str:
    """A type as a reader says it: ``low | medium``, ``list of str``, ``(map str → float) | null``."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        return _annotation_text(args[0], nested)
    if origin is Literal:
        text = " | ".join(str(a) for a in args)
    elif origin in (Union, UnionType):
        text = " | ".join(_annotation_text(a, nested=get_origin(a) is not Literal) for a in args)
    elif origin in (list, tuple):
        return f"list of {_annotation_text(args[0], nested=True)}"
    elif origin is dict:
        text = f"map {_annotation_text(args[0], nested=True)} → {_annotation_text(args[1], nested=True)}"
    elif annotation is NoneType:
        return "null"
    else:
        return getattr(annotation, "__name__", str(annotation))
    return f"({text})" if nested and " " in text else text


_BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "length ≥", "max_length": "length ≤"}


def _type_text(field: FieldInfo) -> str:
    bounds = [
        f"{symbol} {getattr(item, attribute)}"
        for item in field.metadata
        for attribute, symbol in _BOUNDS.items()
        if getattr(item, attribute, None) is not None
    ]
    return _annotation_text(field.annotation) + (f" ({', '.join(bounds)})" if bounds else "")


def _default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    text = json.dumps(value, default=str, ensure_ascii=False)
    return f"`{textwrap.shorten(text, 40, placeholder='…')}`"
