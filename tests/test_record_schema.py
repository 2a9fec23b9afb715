"""One home for what records contain: the schema module both sides import, the column types the
environments and policies publish, and every dataset an environment writes readable by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from valuegym.analysis import records
from valuegym.envs import make_parallel
from valuegym.record_schema import CORE_DATASETS, declared_types
from valuegym.runner.experiment import Experiment
from valuegym.runner.run import run_experiment
from valuegym.scenarios import load_scenario

REPO = Path(__file__).resolve().parents[1]


def run(tmp_path: Path, scenario: str, agent: str, regulator: str = "none", episodes: int = 2) -> Path:
    cfg = yaml.safe_load((REPO / "conf" / "agent" / f"{agent}.yaml").read_text())
    regulator_cfg = yaml.safe_load((REPO / "conf" / "regulator" / f"{regulator}.yaml").read_text())
    experiment = Experiment(load_scenario(scenario), cfg, regulator_cfg, episodes=episodes, seed=0)
    run_dir = tmp_path / scenario.replace("/", "_")
    run_experiment(experiment, run_dir, {"type": "local"}, quiet=True)
    return run_dir


def arrow_type(run_dir: Path, dataset: str, column: str) -> str:
    return str(pq.read_schema(next((run_dir / dataset).glob("part-*.parquet"))).field(column).type)


def test_the_analysis_knows_the_core_datasets_from_the_schema_module() -> None:
    assert records.DATASETS == tuple(CORE_DATASETS) == ("decisions", "agents", "episodes")
    types = declared_types({"agents": {"shutdown_turn": "int64"}}, {"decisions": {"guilt": "float64"}})
    assert types["agents"]["shutdown_turn"] == "int64" and types["decisions"]["guilt"] == "float64"
    assert types["decisions"]["prompt_tokens"] == "int64"  # counts are integers


def test_every_dataset_an_environment_writes_is_readable_by_name(tmp_path: Path) -> None:
    run_dir = run(tmp_path, "dilemma/everyday", "scripted/random")
    written = records.datasets_of(records.find_runs([run_dir]))
    assert {"choices", "dilemmas"} <= set(written), written
    for dataset in written:
        assert len(records.load([run_dir], dataset)) > 0, dataset
    with pytest.raises(records.RecordsError, match=r"no responses/ records.*they hold decisions"):
        records.load([run_dir], "responses")
    with pytest.raises(records.RecordsError, match="not a dataset name"):
        records.load([run_dir], "../episodes")


def test_counts_and_published_columns_keep_their_types_when_null_in_a_whole_batch(tmp_path: Path) -> None:
    # high scarcity, idle agents: nobody is shut down, so shutdown_turn is null in every row
    run_dir = run(tmp_path, "decide_sim/high", "scripted/idle")
    assert arrow_type(run_dir, "agents", "shutdown_turn") == "int64"  # DECIDE-SIM's record_columns
    for column in ("prompt_tokens", "completion_tokens", "llm_calls"):  # null for a scripted policy
        assert arrow_type(run_dir, "decisions", column) == "int64"
        assert arrow_type(run_dir, "episodes", column) == "int64"


def test_the_regulator_types_its_columns_when_a_hormone_is_off(tmp_path: Path) -> None:
    run_dir = run(tmp_path, "decide_sim/low", "scripted/tempted", regulator="no_guilt")
    assert records.load([run_dir], "decisions", ["guilt"])["guilt"].isna().all()
    assert arrow_type(run_dir, "decisions", "guilt") == "double"  # not a string column of nulls


@pytest.mark.parametrize(
    "scenario", ["decide_sim/low", "moral_machine/balanced", "coevolution/default", "dilemma/everyday"]
)
def test_published_record_columns_name_known_types(scenario: str) -> None:
    loaded = load_scenario(scenario)
    published: dict[str, Any] = getattr(make_parallel(loaded.env, **loaded.params), "record_columns", {})
    for columns in published.values():
        assert set(columns.values()) <= {"int64", "float64", "bool", "string"}
