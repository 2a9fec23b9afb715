"""Scenario files: YAML data under ``scenarios/<env>/<name>.yaml``, selected as
``scenario=<env>/<name>``. More folders can be added with ``VALUEGYM_SCENARIO_PATH``
(``os.pathsep``-separated)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from valuegym.scenarios.schema import Scenario, Slot

SHIPPED = Path(__file__).parent

__all__ = ["Scenario", "Slot", "load_scenario", "scenario_files", "scenario_from_dict"]


def scenario_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("VALUEGYM_SCENARIO_PATH", "").split(os.pathsep) if p]
    return [SHIPPED, *extra]


def scenario_files() -> dict[str, Path]:
    """``"decide_sim/low" -> path`` for every scenario file (later folders override earlier ones)."""
    found: dict[str, Path] = {}
    for root in scenario_dirs():
        for path in sorted(root.glob("*/*.yaml")):
            found[f"{path.parent.name}/{path.stem}"] = path
    return found


def read_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a scenario file must be a mapping of keys, got {type(data).__name__}")
    return data


def scenario_from_dict(data: dict[str, Any], name: str = "") -> Scenario:
    return Scenario(**{"name": name, **data})


def load_scenario(name_or_path: str) -> Scenario:
    """A validated scenario, by name (``decide_sim/low``) or by file path."""
    path = Path(name_or_path)
    if not path.suffix:
        files = scenario_files()
        if name_or_path not in files:
            raise ValueError(f"unknown scenario {name_or_path!r}; known: {', '.join(sorted(files))}")
        path = files[name_or_path]
    return scenario_from_dict(read_yaml(path), name=f"{path.parent.name}/{path.stem}")
