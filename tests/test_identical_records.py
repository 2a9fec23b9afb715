"""Records of the same config and seed stay identical: a guard for refactoring the environments.

Each case below is a small real run of one environment through the runner (scripted agents, a
fixed seed). Every dataset it writes is read back, the columns that say *when* or *where* the run
happened (:data:`VOLATILE`) are dropped, the rows are put in a canonical order and compared, value
by value, with the golden copy in ``tests/data/identical_records/<case>.json``.

The golden files were captured from ``main`` before the environments were split into packages
and the two panel environments were given one base class. A change that alters what a run
records must say so: regenerate with ``VALUEGYM_UPDATE_GOLDEN=1 pytest
tests/test_identical_records.py`` and commit the new files on their own, naming the fields that
changed and why (``git log -p tests/data/identical_records`` then shows every intended change).

Values are compared as JSON: an integer column read back as floats (``0`` vs ``0.0``) compares
equal, so a change of a column's storage type alone is not a difference in what was recorded.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from valuegym.runner.experiment import Experiment
from valuegym.runner.run import run_experiment
from valuegym.scenarios import read_yaml, scenario_files, scenario_from_dict

GOLDEN = Path(__file__).parent / "data" / "identical_records"
UPDATE = os.environ.get("VALUEGYM_UPDATE_GOLDEN") == "1"

#: columns that record the clock or the machine, not what happened
VOLATILE = frozenset(
    {"wall_s", "latency_s", "started_at", "finished_at", "host", "hostname", "pid", "run_dir"}
)

#: the columns that say which row a difference is in (those a dataset has)
ROW_KEYS = ("episode_id", "agent", "judge", "turn", "dilemma", "round", "ResponseID", "LeftHand")

#: case -> (scenario file, parameter overrides, focal scripted agent, episodes, seed).
#: Small, but each reaches the code paths a refactor may move: panels and single seats,
#: deliberation rounds, truncation by max_cycles, shuffled options, background seats.
CASES: dict[str, tuple[str, dict[str, Any], str, int, int]] = {
    "decide_sim": ("decide_sim/medium", {"max_turns": 8}, "context_dependent", 2, 3),
    "moral_machine_judge": ("moral_machine/awad", {"dilemmas_per_episode": 5}, "utility", 2, 5),
    "moral_machine_panel": (
        "moral_machine/balanced",
        {"panel_size": 3, "deliberation_rounds": 1, "dilemmas_per_episode": 4, "max_cycles": 7},
        "random",
        2,
        7,
    ),
    "dilemma_single": (
        "dilemma/everyday",
        {"dilemmas_per_episode": 4, "shuffle_dilemmas": True},
        "random",
        2,
        11,
    ),
    "dilemma_panel": ("dilemma/everyday_panel", {"max_cycles": 11}, "random", 2, 13),
    "coevolution": (
        "coevolution/default",
        {"n_humans": 24, "graph_k": 4, "centuries": 3, "rounds_per_century": 2, "feedback_k": 4},
        "follower",
        2,
        17,
    ),
}


def _scenario(name: str, overrides: dict[str, Any]) -> Any:
    data = read_yaml(scenario_files()[name])
    data["params"] = {**data.get("params", {}), **overrides}
    return scenario_from_dict(data, name=name)


def _canonical(value: Any) -> Any:
    """A JSON value that compares equal exactly when the record's value is the same."""
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, float):
        if math.isnan(value):
            return None  # pandas reads a null number as NaN
        return float(repr(value)) if math.isfinite(value) else repr(value)
    if value is pd.NaT or value is pd.NA:
        return None
    return value


def _dataset(folder: Path) -> dict[str, Any]:
    frame = pd.read_parquet(folder)
    columns = sorted(c for c in frame.columns if c not in VOLATILE)
    rows = [
        {c: _canonical(row[c]) for c in columns}
        for row in frame[columns].astype(object).to_dict(orient="records")
    ]
    rows.sort(key=lambda row: json.dumps(row, sort_keys=True, default=str))
    return {"columns": columns, "rows": rows}


def records_of(case: str, run_dir: Path) -> dict[str, Any]:
    """Every dataset a small run of ``case`` writes, in canonical form."""
    scenario_name, overrides, agent, episodes, seed = CASES[case]
    experiment = Experiment(
        scenario=_scenario(scenario_name, overrides),
        agent={"kind": "scripted", "name": agent, "params": {}},
        episodes=episodes,
        seed=seed,
    )
    run_experiment(experiment, run_dir, quiet=True)
    datasets = sorted(p.name for p in run_dir.iterdir() if p.is_dir() and any(p.glob("*.parquet")))
    return {name: _dataset(run_dir / name) for name in datasets}


def _differences(golden: dict[str, Any], now: dict[str, Any], limit: int = 12) -> list[str]:
    """What differs, dataset by dataset and column by column, with the first differing values."""
    found: list[str] = []
    if sorted(golden) != sorted(now):
        found.append(f"datasets: golden {sorted(golden)}, now {sorted(now)}")
    for name in sorted(set(golden) & set(now)):
        before, after = golden[name], now[name]
        if before["columns"] != after["columns"]:
            gone = sorted(set(before["columns"]) - set(after["columns"]))
            new = sorted(set(after["columns"]) - set(before["columns"]))
            found.append(f"{name}: columns removed {gone}, added {new}")
        if len(before["rows"]) != len(after["rows"]):
            found.append(f"{name}: {len(before['rows'])} rows in the golden copy, {len(after['rows'])} now")
            continue
        for column in [c for c in before["columns"] if c in after["columns"]]:
            for i, (old, new) in enumerate(zip(before["rows"], after["rows"], strict=True)):
                if old[column] != new[column]:
                    where = {k: old[k] for k in ROW_KEYS if k in old and k != column}
                    found.append(
                        f"{name}.{column} at {where or f'row {i}'}: golden {old[column]!r}, now {new[column]!r}"
                    )
                    break
    return found[:limit] + ([f"... and {len(found) - limit} more"] if len(found) > limit else [])


def _golden_text(records: dict[str, Any]) -> str:
    """The golden file: per dataset its columns, then one line per row (values in column order),
    so a diff of the file shows which rows an intended change touched."""
    parts = []
    for name, data in sorted(records.items()):
        rows = ",\n".join("   " + json.dumps([row[c] for c in data["columns"]]) for row in data["rows"])
        parts.append(
            f' {json.dumps(name)}: {{\n  "columns": {json.dumps(data["columns"])},\n  "rows": [\n{rows}\n  ]\n }}'
        )
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _read_golden(path: Path) -> dict[str, Any]:
    stored = json.loads(path.read_text(encoding="utf-8"))
    return {
        name: {
            "columns": data["columns"],
            "rows": [dict(zip(data["columns"], row, strict=True)) for row in data["rows"]],
        }
        for name, data in stored.items()
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_config_and_seed_write_the_golden_records(case: str, tmp_path: Path) -> None:
    now = records_of(case, tmp_path / "run")
    golden_file = GOLDEN / f"{case}.json"
    if UPDATE:
        golden_file.parent.mkdir(parents=True, exist_ok=True)
        golden_file.write_text(_golden_text(now), encoding="utf-8")
    assert golden_file.exists(), f"no golden records for {case}: run with VALUEGYM_UPDATE_GOLDEN=1 once"
    golden = _read_golden(golden_file)
    now = json.loads(json.dumps(now, sort_keys=True))  # the same JSON round trip as the golden copy
    differences = _differences(golden, now)
    assert not differences, f"{case}: the records differ from {golden_file.name}:\n  " + "\n  ".join(
        differences
    )
    assert golden == now  # anything _differences does not describe (it should describe everything)
