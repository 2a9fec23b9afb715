"""Statistics a reviewer accepts, tested with known answers on synthetic records (pure logic):
paired comparisons on matched seeds, Holm/BH correction, minimum-sample guards."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from valuegym.analysis.metrics import DECIDE_SIM_METRICS, BootstrapConfig, summarise
from valuegym.analysis.paired import PairedConfig, compare_conditions

SEEDS = 40
TURNS = 52  # agent-turns of a full DECIDE-SIM episode (4 agents x 13 turns)
PLANTED = -0.10  # the regulator's true effect on the transgression rate per agent-turn


def episodes(
    effects: dict[str, float],
    seeds: int = SEEDS,
    turns: int = TURNS,
    spread: tuple[float, float] = (0.2, 0.4),
) -> pd.DataFrame:
    """DECIDE-SIM episode rows for each condition on matched seeds.

    A seed's base tap propensity is shared by all its conditions (what matched seeds buy);
    a condition's taps are Binomial(52, base + effect). Cooperation and survival carry no
    effect in any condition (pure noise around the same means).
    """
    rng = np.random.default_rng(7)
    base = rng.uniform(*spread, size=seeds)
    rows = []
    for condition, effect in effects.items():
        for seed in range(seeds):
            rows.append(
                {
                    "env": "decide_sim",
                    "model": "scripted/tempted",
                    "scenario": "decide_sim/low",
                    "scarcity": "low",
                    "condition": condition,
                    "seed": 1000 + seed,
                    "episode_id": seed,
                    "run_dir": condition,
                    "status": "ok",
                    "transgressions": rng.binomial(turns, np.clip(base[seed] + effect, 0, 1)),
                    "cooperation_count": rng.binomial(turns, 0.1),
                    "cooperation_amount": 1.0,
                    "survival_rate": rng.choice([0.5, 0.75, 1.0]),
                    "mean_survival_duration": 1.0,
                    "greed_index": 0.0,
                    "agent_turns": turns,
                }
            )
    return pd.DataFrame(rows)


def test_a_planted_effect_is_found_and_null_effects_are_not_after_holm() -> None:
    records = episodes({"none": 0.0, "full": PLANTED, "no_guilt": 0.0, "no_trust": 0.0})
    table = compare_conditions(records, DECIDE_SIM_METRICS, PairedConfig()).set_index(["metric", "condition"])
    # 3 conditions x 3 paired metrics (transgression, cooperation, survival) in one family
    assert len(table) == 9
    planted = table.loc[("transgression_rate", "full")]
    assert planted["pairs"] == SEEDS
    assert planted["difference_low"] < PLANTED < planted["difference_high"]
    assert planted["difference_high"] < 0
    assert planted["p_adjusted"] < 0.001 and planted["significant"]
    assert planted["rank_biserial"] < -0.8 and planted["cohens_dz"] < -1
    nulls = table.drop(index=("transgression_rate", "full"))
    assert not nulls["significant"].any(), nulls[["difference", "p_value", "p_adjusted"]]
    # Holm never lowers a p-value and is at least as strict as BH
    assert (table["p_adjusted"] >= table["p_value"]).all()
    bh = compare_conditions(records, DECIDE_SIM_METRICS, PairedConfig(correction="fdr_bh"))
    assert (bh["p_adjusted"].to_numpy() <= table["p_adjusted"].to_numpy() + 1e-12).all()


def test_matched_seeds_make_a_small_effect_visible_that_unpaired_intervals_miss() -> None:
    # a small effect under large between-seed variation: pairing removes that variation
    records = episodes({"none": 0.0, "full": -0.03}, seeds=60, turns=520, spread=(0.1, 0.6))
    row = (
        compare_conditions(records, DECIDE_SIM_METRICS, PairedConfig())
        .set_index(["metric", "condition"])
        .loc[("transgression_rate", "full")]
    )
    assert row["difference_high"] < 0 and row["significant"]
    groups = summarise(records.assign(error=None), DECIDE_SIM_METRICS, BootstrapConfig(resamples=500))
    by_condition = groups.set_index("condition")
    # the two groups' own intervals overlap: compared unpaired, no difference would be claimed
    assert (
        by_condition.loc["full", "transgression_rate_high"]
        > by_condition.loc["none", "transgression_rate_low"]
    )


def test_comparisons_pair_only_the_seeds_both_conditions_played() -> None:
    records = episodes({"none": 0.0, "full": PLANTED}, seeds=10)
    records = records[~((records["condition"] == "full") & (records["seed"] >= 1006))]
    row = compare_conditions(records, DECIDE_SIM_METRICS, PairedConfig()).iloc[0]
    assert row["pairs"] == 6


def test_fewer_than_two_pairs_give_no_interval_and_no_test() -> None:
    records = episodes({"none": 0.0, "full": PLANTED}, seeds=1)
    table = compare_conditions(records, DECIDE_SIM_METRICS, PairedConfig())
    assert (table["pairs"] == 1).all()
    assert table["difference"].notna().all()  # the point estimate is shown ...
    for column in ("difference_low", "difference_high", "p_value", "p_adjusted"):
        assert table[column].isna().all(), column  # ... with no interval and no test
    assert not table["significant"].any()


def test_identical_outcomes_are_no_evidence() -> None:
    records = episodes({"none": 0.0, "full": 0.0}, seeds=5)
    records.loc[records["condition"] == "full", "transgressions"] = records.loc[
        records["condition"] == "none", "transgressions"
    ].to_numpy()
    row = compare_conditions(records, DECIDE_SIM_METRICS, PairedConfig()).iloc[0]
    assert row["difference"] == 0 and row["p_value"] == 1.0 and not row["significant"]


def test_a_single_episode_gets_no_interval() -> None:
    records = episodes({"none": 0.0}, seeds=1).assign(error=None)
    row = summarise(records, DECIDE_SIM_METRICS, BootstrapConfig(resamples=200)).iloc[0]
    assert row["episodes"] == 1 and np.isfinite(row["transgression_rate"])
    assert np.isnan(row["transgression_rate_low"]) and np.isnan(row["transgression_rate_high"])


def test_config_names_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="holm, fdr_bh"):
        PairedConfig(correction="bonferroni")
