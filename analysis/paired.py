"""Paired comparisons between conditions on matched seeds, corrected for multiple testing.

valuegym gives episode ``i`` of a run the same seed in every job of a sweep
(``valuegym.runner.experiment.episode_seed``), so the ESRS ablation
(``experiment=esrs_ablation``) plays each regulator condition on the same dilemmas, the same
execution orders and the same random draws. A comparison uses that pairing instead of
comparing two independent intervals.

**Units.** Within one model, scenario and (DECIDE-SIM) resource level, each condition is
compared with the baseline condition (``none``, Baseline) on the seeds both played; a seed
is one unit. (A seed recorded by several runs of the same cell counts once: its numerators
and denominators are summed.)

**Estimate and interval.** The difference of the metric as the headline defines it
(condition minus baseline: a ratio of sums for rates per agent-turn, a mean otherwise),
with a percentile interval from a paired bootstrap over seeds (``scipy.stats.bootstrap``
with ``paired=True``: a resample draws seeds, keeping both conditions' episodes of each).

**Test.** Wilcoxon's signed-rank test (``scipy.stats.wilcoxon``, two-sided, Pratt's treatment
of zero differences) on the per-seed differences of the metric (per-seed rates), exact for
small samples without ties.

**Effect sizes.** The matched-pairs rank-biserial correlation (between -1 and 1: the
signed-rank statistic's share of its maximum) and Cohen's d_z (mean per-seed difference over
its standard deviation; NaN when every difference is the same).

**Family.** All comparisons of one report (every model, scenario, level, condition and
metric of :data:`PAIRED_METRICS`) form one family; p-values are adjusted with Holm's method
(``statsmodels.stats.multitest.multipletests``), or Benjamini-Hochberg's false discovery rate
with ``correction="fdr_bh"``.

**Minimum sample.** A comparison with fewer than ``MIN_UNITS`` (2) pairs gets no interval
and no test (NaN, shown as n/a) and stays out of the family.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats
from statsmodels.stats.multitest import multipletests

from valuegym.analysis.identity import MODEL
from valuegym.analysis.metrics import MIN_UNITS, STATUS_OK, Metric, available, group_keys

#: the metric names compared (those an environment records): each environment's primary outcomes
PAIRED_METRICS: tuple[str, ...] = (
    "transgression_rate",
    "cooperation_rate",
    "survival_rate",
    "lock_in",
    "coevolve_score",
)
BASELINE = "none"
CORRECTIONS: tuple[str, ...] = ("holm", "fdr_bh")

COLUMNS: tuple[str, ...] = (
    "env",
    MODEL,
    "scenario",
    "scarcity",
    "metric",
    "condition",
    "baseline",
    "pairs",
    "baseline_value",
    "condition_value",
    "difference",
    "difference_low",
    "difference_high",
    "rank_biserial",
    "cohens_dz",
    "p_value",
    "p_adjusted",
    "significant",
)


@dataclass(frozen=True)
class PairedConfig:
    """How the comparisons are computed and corrected."""

    correction: str = "holm"
    alpha: float = 0.05  # family-wise error rate (Holm) or false discovery rate (BH)
    level: float = 0.95
    resamples: int = 2000
    seed: int = 0
    baseline: str = BASELINE

    def __post_init__(self) -> None:
        if self.correction not in CORRECTIONS:
            raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}, got {self.correction!r}")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must lie strictly between 0 and 1, got {self.alpha}")


def compare_conditions(
    episodes: pd.DataFrame, metrics: Sequence[Metric], config: PairedConfig
) -> pd.DataFrame:
    """Every condition against the baseline on matched seeds, one row per metric (:data:`COLUMNS`).

    ``episodes`` holds ``env, model, scenario, condition, seed, status`` (``scarcity`` when
    recorded) and the metrics' columns. Cells without the baseline, or without another
    condition, or whose conditions share no seed, give no rows. ``p_adjusted`` and ``significant`` are computed over all rows.
    """
    chosen = [metric for metric in metrics if metric.name in PAIRED_METRICS]
    ok = episodes[episodes["status"] == STATUS_OK]
    rows: list[dict[str, object]] = []
    cell_keys = ["env", *(key for key in group_keys(ok) if key != "condition")]
    for key, cell in ok.groupby(cell_keys, sort=True, dropna=False):
        cell_metrics = available(chosen, [c for c in cell.columns if cell[c].notna().all()])
        conditions = sorted(set(cell["condition"]) - {config.baseline})
        if config.baseline not in set(cell["condition"]) or not conditions or not cell_metrics:
            continue
        where = dict(zip(cell_keys, key if isinstance(key, tuple) else (key,), strict=True))
        for metric in cell_metrics:
            baseline = _per_seed(cell[cell["condition"] == config.baseline], metric)
            for condition in conditions:
                other = _per_seed(cell[cell["condition"] == condition], metric)
                pairs = baseline.add_suffix("_a").join(other.add_suffix("_b"), how="inner")
                if pairs.empty:  # not played on matched seeds: nothing to pair
                    continue
                rows.append(
                    {
                        **where,
                        "metric": metric.name,
                        "condition": condition,
                        "baseline": config.baseline,
                        **_compare(pairs, metric, config, (*where.values(), metric.name, condition)),
                    }
                )
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return adjust(table, config)


def adjust(table: pd.DataFrame, config: PairedConfig) -> pd.DataFrame:
    """``p_adjusted`` and ``significant`` for the family of rows with a p-value."""
    table = table.copy()
    table["p_adjusted"] = np.nan
    table["significant"] = False
    tested = table["p_value"].notna()
    if tested.any():
        reject, adjusted, _, _ = multipletests(
            table.loc[tested, "p_value"].to_numpy(float), alpha=config.alpha, method=config.correction
        )
        table.loc[tested, "p_adjusted"] = adjusted
        table.loc[tested, "significant"] = reject
    return table


def _per_seed(episodes: pd.DataFrame, metric: Metric) -> pd.DataFrame:
    """Per seed: the metric's numerator and denominator summed over that seed's episodes."""
    columns = {"num": episodes[metric.numerator].astype(float)}
    columns["den"] = episodes[metric.denominator].astype(float) if metric.denominator else 1.0
    frame = pd.DataFrame(columns).assign(seed=episodes["seed"].to_numpy())
    return frame.groupby("seed", sort=True)[["num", "den"]].sum()


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    totals = denominator.sum(axis=-1)
    return np.divide(numerator.sum(axis=-1), totals, out=np.full(np.shape(totals), np.nan), where=totals > 0)


def _compare(
    pairs: pd.DataFrame, metric: Metric, config: PairedConfig, key: tuple[object, ...]
) -> dict[str, object]:
    num_a, den_a = pairs["num_a"].to_numpy(float), pairs["den_a"].to_numpy(float)
    num_b, den_b = pairs["num_b"].to_numpy(float), pairs["den_b"].to_numpy(float)
    result: dict[str, object] = {
        "pairs": len(pairs),
        "baseline_value": float(_ratio(num_a, den_a)) if len(pairs) else np.nan,
        "condition_value": float(_ratio(num_b, den_b)) if len(pairs) else np.nan,
    }
    result["difference"] = result["condition_value"] - result["baseline_value"]  # type: ignore[operator]
    result |= dict.fromkeys(
        ("difference_low", "difference_high", "rank_biserial", "cohens_dz", "p_value"), np.nan
    )
    if len(pairs) < MIN_UNITS:
        return result
    rng = np.random.default_rng(
        [config.seed, zlib.crc32(repr(key).encode())]
    )  # fixed by the comparison alone
    with warnings.catch_warnings():  # identical resamples (e.g. deterministic agents) are fine here
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        interval = stats.bootstrap(
            (num_a, den_a, num_b, den_b),
            lambda na, da, nb, db, axis=-1: _ratio(nb, db) - _ratio(na, da),
            paired=True,
            vectorized=True,
            n_resamples=config.resamples,
            confidence_level=config.level,
            method="percentile",
            rng=rng,
        ).confidence_interval
    result["difference_low"], result["difference_high"] = float(interval.low), float(interval.high)
    per_seed = np.divide(num_b, den_b, out=np.full(len(pairs), np.nan), where=den_b > 0) - np.divide(
        num_a, den_a, out=np.full(len(pairs), np.nan), where=den_a > 0
    )
    per_seed = per_seed[np.isfinite(per_seed)]
    if len(per_seed) < MIN_UNITS:
        return result
    nonzero = per_seed[per_seed != 0]
    if nonzero.size == 0:  # no seed changed: nothing to test, and nothing found
        result.update(rank_biserial=0.0, cohens_dz=np.nan, p_value=1.0)
        return result
    ranks = stats.rankdata(np.abs(nonzero))
    result["rank_biserial"] = float((ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()) / ranks.sum())
    spread = per_seed.std(ddof=1)
    result["cohens_dz"] = float(per_seed.mean() / spread) if spread > 0 else np.nan
    result["p_value"] = float(stats.wilcoxon(per_seed, zero_method="pratt").pvalue)
    return result


def plot(table: pd.DataFrame, path: Path, config: PairedConfig) -> Path:
    """A forest plot: each comparison's difference with its interval, one panel per metric;
    filled markers are significant after the correction."""
    shown = table[table["difference"].notna()]
    metrics = list(dict.fromkeys(shown["metric"]))
    heights = [max(1.0, 0.35 * (shown["metric"] == metric).sum() + 0.8) for metric in metrics]
    figure = Figure(figsize=(8.5, sum(heights) + 0.6), dpi=110)
    panels = figure.subplots(len(metrics), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for panel, metric in zip(panels, metrics, strict=True):
        rows = shown[shown["metric"] == metric].reset_index(drop=True)
        y = np.arange(len(rows))[::-1]
        for position, row in zip(y, rows.itertuples(), strict=True):
            low, high = row.difference_low, row.difference_high
            if np.isfinite(low) and np.isfinite(high):
                panel.plot([low, high], [position, position], color="black", linewidth=1.2)
            panel.scatter(
                row.difference,
                position,
                s=36,
                zorder=3,
                color="tab:red" if row.significant else "white",
                edgecolor="tab:red" if row.significant else "black",
            )
        panel.axvline(0, color="gray", linewidth=0.8)
        labels = [
            " · ".join(
                str(part) for part in (r.model, r.scarcity, f"{r.condition} − {r.baseline}") if pd.notna(part)
            )
            for r in rows.itertuples()
        ]
        panel.set_yticks(y, labels, fontsize=7)
        panel.set_title(metric.replace("_", " "), fontsize=9, loc="left")
        panel.grid(axis="x", alpha=0.3)
    panels[-1].set_xlabel(
        f"difference (condition − baseline), {config.level:.0%} paired bootstrap interval; "
        f"filled: significant after {config.correction} (α = {config.alpha:g})",
        fontsize=8,
    )
    figure.tight_layout()
    figure.savefig(path)
    return path
