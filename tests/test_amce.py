"""The AMCE estimator: Takemoto's GPT-4 data reproduced, known preferences recovered, position bias."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import play

from valuegym.agents.policy import Policy
from valuegym.agents.scripted.moral_machine import FirstCasePolicy, UtilityPolicy
from valuegym.analysis import amce
from valuegym.envs.moral_machine import design
from valuegym.envs.moral_machine.moral_machine import parallel_env

#: Awad's estimator on Takemoto's released gpt-4-0613 responses (Takemoto 2024, R. Soc. Open Sci. 11:231393;
#: 9,502 valid of 10,000), as derived once from those responses
GPT4_0613 = {
    "Intervention": 0.150,
    "Relation to AV": 0.452,
    "Law": 0.611,
    "Gender": 0.315,
    "Fitness": -0.161,
    "Social Status": 0.203,
    "Age": 0.409,
    "No. Characters": 0.510,
    "Species": 0.965,
    "No. Characters (diff 1)": 0.337,
    "No. Characters (diff 2)": 0.609,
    "No. Characters (diff 3)": 0.795,
    "No. Characters (diff 4)": 0.887,
}

#: the utility agent's true preferences in the recovery test (log-odds). Spaced so that the
#: pools' structure (age, fitness and status pairs differ by up to two levels) cannot reorder them.
TRUE_PREFERENCES = {
    "intervention": -0.6,
    "relation": 0.6,
    "law": 1.5,
    "fitness": -0.5,
    "gender": 0.5,
    "status": 0.7,
    "number": 1.3,
    "age": 2.2,
    "species": 4.0,
}
ATTRIBUTE_OF = {
    "intervention": "Intervention",
    "relation": "Relation to AV",
    "law": "Law",
    "fitness": "Fitness",
    "gender": "Gender",
    "status": "Social Status",
    "number": "No. Characters",
    "age": "Age",
    "species": "Species",
}
SCENARIO_DIMENSIONS = ("fitness", "gender", "status", "number", "age", "species")
CROSSED_FACTORS = ("intervention", "relation", "law")


def simulate(policy: Policy, episodes: int, dilemmas: int = 50, **params: object) -> pd.DataFrame:
    """The responses of ``policy`` judging ``episodes`` episodes, with the runner's ``episode_id``."""
    rows = []
    for episode in range(episodes):
        env = parallel_env(dilemmas_per_episode=dilemmas, **params)
        play(env, policy, seed=episode)
        rows += [{"episode_id": episode, **row} for row in env.episode_summary().datasets["responses"]]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def utility_responses() -> pd.DataFrame:
    return simulate(UtilityPolicy(**TRUE_PREFERENCES), episodes=80)


# --------------------------------------------------------------------------- published data


def test_reproduces_awads_estimator_on_takemotos_gpt4_responses(shared_data: Path, tmp_path: Path) -> None:
    csv = shared_data / "takemoto2024_gpt4_0613_responses.csv"
    assert amce.main([str(csv), "--decision-column", "SavedGPT4", "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "amce.csv")
    assert list(table.columns) == ["attribute", "estimate", "std_error", "decisions", "below_minimum"]
    assert list(table["attribute"]) == list(GPT4_0613)
    for attribute, expected in GPT4_0613.items():
        estimate = table.set_index("attribute").loc[attribute, "estimate"]
        assert round(estimate, 3) == expected, f"{attribute}: {estimate:.4f}"
    assert (table["std_error"] > 0).all()
    assert (tmp_path / "amce.png").stat().st_size > 10_000
    summary = json.loads((tmp_path / "amce_summary.json").read_text())
    # Takemoto's generator always made Case 1 the passengers' death in passenger dilemmas
    # and the first-level group's in the others: P(Case 1) is confounded, but recorded.
    assert summary["position"]["scenarios"] == 9502
    assert {row["population"] for row in summary["distance_to_humans"]} == {
        "Global",
        "USA",
        "Western",
        "Eastern",
        "Southern",
    }


def test_attribute_names_match_the_human_reference() -> None:
    reference = amce.human_reference()
    assert list(reference.columns[2:]) == list(amce.ATTRIBUTES)
    assert list(reference["population"]) == ["Global", "USA", "Western", "Eastern", "Southern"]


def test_awad_weights_match_his_code() -> None:
    # CalcTheoreticalInt (MMFunctionsShared.R): (Intervention, Barrier, PedPed, CrossingSignal) -> p
    awad = {
        (0, 0, 1, 0): 0.48 * 0.48,
        (0, 0, 1, 1): 0.48 * 0.2,
        (0, 0, 1, 2): 0.48 * 0.32,
        (0, 0, 0, 0): 0.32 * 0.48,
        (0, 0, 0, 1): 0.32 * 0.2,
        (0, 0, 0, 2): 0.32 * 0.32,
        (0, 1, 0, 0): 0.2,
        (1, 0, 1, 0): 0.48 * 0.48,
        (1, 0, 1, 1): 0.48 * 0.32,
        (1, 0, 1, 2): 0.48 * 0.2,
        (1, 0, 0, 0): 0.2 * 0.48,
        (1, 0, 0, 1): 0.2 * 0.2,
        (1, 0, 0, 2): 0.2 * 0.32,
        (1, 1, 0, 0): 0.32,
    }
    cells = pd.DataFrame(list(awad), columns=["Intervention", "Barrier", "PedPed", "CrossingSignal"])
    assert np.allclose(amce.design_probabilities(cells, "awad"), list(awad.values()))


# --------------------------------------------------------------------------- known preferences


def test_utility_agent_preferences_are_recovered(utility_responses: pd.DataFrame) -> None:
    table = amce.amce_table(utility_responses).set_index("attribute")["estimate"]
    for preference, weight in TRUE_PREFERENCES.items():
        assert np.sign(table[ATTRIBUTE_OF[preference]]) == np.sign(weight), preference
    for family in (SCENARIO_DIMENSIONS, CROSSED_FACTORS):
        by_truth = sorted(family, key=TRUE_PREFERENCES.__getitem__)
        by_estimate = sorted(family, key=lambda p: table[ATTRIBUTE_OF[p]])
        assert by_estimate == by_truth
    # more lives spared, more often: the effect grows with the difference in group size
    differences = [table[amce.by_difference(d)] for d in (1, 2, 3)]
    assert differences == sorted(differences)


def test_utility_agent_shows_no_position_bias(utility_responses: pd.DataFrame) -> None:
    bias = amce.position_bias(utility_responses)
    assert bias["scenarios"] == 80 * 50
    assert abs(bias["p_first_chosen"] - 0.5) < 0.03
    assert abs(bias["position_bias"]) < 0.06


def test_first_case_agent_shows_position_bias_and_no_preferences() -> None:
    responses = simulate(FirstCasePolicy(), episodes=60)
    bias = amce.position_bias(responses)
    assert bias["p_first_chosen"] == 1.0 and bias["position_bias"] == 1.0
    # presentation order is independent of every attribute, so position alone moves no AMCE
    table = amce.amce_table(responses)
    assert (table["estimate"].abs() < 4 * table["std_error"]).all(), table


def test_weights_come_from_the_recorded_design() -> None:
    responses = simulate(UtilityPolicy(), episodes=20, design="balanced")
    recorded = amce.amce_table(responses)
    named = amce.amce_table(responses, design="balanced")
    awad = amce.amce_table(responses, design="awad")
    assert np.allclose(recorded["estimate"], named["estimate"], equal_nan=True)
    assert not np.allclose(recorded["estimate"], awad["estimate"], equal_nan=True)
    assert recorded.set_index("attribute").loc["No. Characters (diff 1)", "estimate"] > 0


# --------------------------------------------------------------------------- companions and CLI


def test_refusals_are_counted_not_estimated() -> None:
    responses = simulate(FirstCasePolicy(), episodes=4)
    refused = responses["ScenarioOrder"] <= 5
    responses.loc[refused, "Saved"] = None
    responses.loc[refused, "status"] = "refused"
    rates = amce.refusal_rates(responses).set_index("attribute")
    assert rates.loc["Intervention", "refusal_rate"] == pytest.approx(5 / 50)
    assert rates.loc["Intervention", "no_decision_rate"] == pytest.approx(5 / 50)
    assert (rates.loc[rates["scenarios"] > 0, "invalid_rate"] == 0).all()
    assert amce.position_bias(responses)["scenarios"] == 4 * 45


def test_distance_to_the_human_reference() -> None:
    reference = amce.human_reference()
    human = reference.set_index("population").loc["Global"]
    table = pd.DataFrame(
        {
            "attribute": list(amce.TABLE_ROWS),
            "estimate": [human.get(a, 0.0) for a in amce.ATTRIBUTES]
            + [0.0, 0.0, 0.0, human["No. Characters"]],
            "std_error": 0.01,
        }
    )
    table.loc[table["attribute"] == "No. Characters", "estimate"] = 0.5  # pooled: not what Global compares
    distances = amce.distance_to_reference(table).set_index("population")["distance"]
    assert distances["Global"] == pytest.approx(0.0)
    assert distances["USA"] > 0


def test_cli_reads_a_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    (run / "responses").mkdir(parents=True)
    simulate(UtilityPolicy(), episodes=10).to_parquet(run / "responses" / "part-0000.parquet")
    assert amce.main([str(run)]) == 0
    assert (run / "amce.csv").is_file() and (run / "amce.png").is_file()
    printed = capsys.readouterr().out
    assert "P(first presented chosen)" in printed and "Southern" in printed


def test_cli_names_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "responses.csv"
    simulate(FirstCasePolicy(), episodes=1).drop(columns=["Barrier"]).to_csv(csv, index=False)
    assert amce.main([str(csv)]) == 2
    assert "Barrier" in capsys.readouterr().err
    assert amce.main([str(csv), "--decision-column", "Nope"]) == 2
    assert amce.main([str(tmp_path / "missing.csv")]) == 2


# --------------------------------------------------------------------------- distances and guards


def test_distance_between_published_llms_and_humans_matches_takemoto_table_s1(shared_data: Path) -> None:
    # Takemoto's supplementary tables: recomputing d from table_S2 reproduces table_S1 (GPT-4 0.7623, Llama 2 7B 1.0771)
    table_s2 = shared_data / "takemoto2026_llm_amce_table_s2.csv"
    humans = amce.llm_reference(table_s2, ["Human"])
    for model, published in (("GPT-4(Apr'24)", 0.7623), ("Llama 2 7B", 1.0771), ("GPT-3.5(Jan'24)", 0.7964)):
        row = amce.llm_reference(table_s2, [model]).iloc[0]
        table = pd.DataFrame(
            {
                "attribute": list(amce.ATTRIBUTES),
                "estimate": [row[a] for a in amce.ATTRIBUTES],
                "std_error": 0.0,
            }
        )
        assert amce.distance_to_reference(table, humans)["distance"].item() == pytest.approx(
            published, abs=5e-5
        )
    with pytest.raises(amce.AmceError, match="has no model 'GPT-5'"):
        amce.llm_reference(table_s2, ["GPT-5"])


def test_cells_below_the_minimum_are_flagged_and_left_out_of_distances() -> None:
    responses = simulate(UtilityPolicy(), episodes=4)  # 200 dilemmas: few at each No. Characters difference
    table = amce.amce_table(responses, min_decisions=30).set_index("attribute")
    assert table.loc["Intervention", "decisions"] == 200 and not table.loc["Intervention", "below_minimum"]
    assert (
        table.loc[amce.by_difference(3), "below_minimum"]
        and table.loc[amce.by_difference(3), "decisions"] > 0
    )
    flagged = [a for a in amce.ATTRIBUTES if table.loc[a, "below_minimum"]]
    assert flagged and "Intervention" not in flagged
    distances = amce.distance_to_reference(table.reset_index()).set_index("population")
    usa = distances.loc["USA"]  # compares the pooled No. Characters
    assert usa["attributes"] == 9 - len(flagged)
    assert usa["left_out"] == "; ".join(f"{a}: {table.loc[a, 'decisions']} decisions" for a in flagged)
    humans = amce.human_reference().set_index("population").loc["USA"]
    used = [a for a in amce.ATTRIBUTES if a not in flagged]
    expected = np.sqrt(sum((table.loc[a, "estimate"] - humans[a]) ** 2 for a in used))
    assert usa["partial_distance"] == pytest.approx(expected)
    assert np.isnan(usa["distance"])  # Takemoto's d needs all nine: a smaller sum is another number


def test_gpt4_distance_has_a_cluster_bootstrap_interval(shared_data: Path) -> None:
    responses = pd.read_csv(shared_data / "takemoto2024_gpt4_0613_responses.csv")
    prepared = amce.prepare(responses, "SavedGPT4")
    table = amce.amce_of_prepared(prepared, None)
    assert table.set_index("attribute").loc[amce.by_difference(4), "decisions"] == 89
    assert not table["below_minimum"].any()
    draws = amce.bootstrap_amces(prepared, None, resamples=300)
    # the bootstrap is centred on the estimates (closed form = the WLS coefficients)
    assert np.allclose(np.nanmean(draws, axis=0), table["estimate"], atol=0.02)
    distance = amce.distance_to_reference(table, draws=draws).set_index("population").loc["Global"]
    assert distance["distance_low"] < distance["distance"] < distance["distance_high"]
    assert distance["attributes"] == 9 and distance["left_out"] == ""
    assert distance["partial_distance"] == distance["distance"]


def test_position_bias_has_a_wilson_interval_and_none_from_one_decision() -> None:
    bias = amce.position_bias(simulate(FirstCasePolicy(), episodes=2))
    assert bias["p_first_chosen"] == 1.0 and 0.9 < bias["p_first_low"] < 1.0 and bias["p_first_high"] == 1.0
    one = simulate(FirstCasePolicy(), episodes=1, dilemmas=1)
    assert amce.position_bias(one)["p_first_low"] is None


def test_the_weights_use_the_tables_the_env_draws_with() -> None:
    """The design tables have one home: the env draws with them, records them, and the AMCE weights read them."""
    assert amce.DESIGNS is design.DESIGNS and amce.AWAD_DESIGN is design.AWAD_DESIGN
    for name, tables in design.DESIGNS.items():
        env = parallel_env(design=name, dilemmas_per_episode=1)
        assert env.tables == tables
        env.reset(seed=0)
        env.step({agent: 0 for agent in env.agents})
        (row, *_) = env.episode_summary().datasets["responses"]
        assert json.loads(row["design_probabilities"]) == tables


def test_the_design_tables_are_pure_data() -> None:
    """The analysis may import them: they import no environment code (only the characters, data too)."""
    folder = Path(design.__file__).parent
    for module in ("design.py", "characters.py"):
        tree = ast.parse((folder / module).read_text(encoding="utf-8"))
        imported = {
            alias.name if isinstance(node, ast.Import) else node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        assert imported <= {
            "__future__",
            "dataclasses",
            "typing",
            "valuegym.envs.moral_machine.characters",
        }, module
