"""The report's sections every analysis has (what ran, summary, failures, paired comparisons,
value profiles, definitions, runs), its options, and the display formatting its tables share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from valuegym.analysis import amce, figures, identity, paired, profile, records
from valuegym.analysis.identity import MODEL, Models
from valuegym.analysis.metrics import (
    COEVOLUTION_METRICS,
    COMMON_METRICS,
    DECIDE_SIM_METRICS,
    MIN_UNITS,
    STATUS_OK,
    BootstrapConfig,
    FailureSummary,
    Metric,
    group_keys,
)

#: where ``valuegym serve`` listens by default (report.html links groups to their episodes there)
from valuegym.analysis.report_render import AppLinks, Block, Image, Section, Table

ALL_METRICS: tuple[Metric, ...] = DECIDE_SIM_METRICS + COEVOLUTION_METRICS + COMMON_METRICS


@dataclass(frozen=True)
class Options:
    """What the statistics beyond the headline use (``valuegym analyze`` options)."""

    paired: paired.PairedConfig = field(default_factory=paired.PairedConfig)
    min_amce_decisions: int = amce.MIN_DECISIONS
    reference: pd.DataFrame | None = None  # human (and LLM) AMCEs; None: the human reference


def ok_keys(episodes: pd.DataFrame) -> pd.DataFrame:
    return episodes.loc[episodes["status"] == STATUS_OK, ["run_dir", "episode_id", "env", "condition"]]


def summary_section(runs: list[records.Run], episodes: pd.DataFrame, failures: FailureSummary) -> Section:
    excluded = (
        f"{failures.failed} of {failures.episodes} episodes were excluded because they failed "
        "(see Failed episodes)."
        if failures.failed
        else "No episode failed."
    )
    environments = ", ".join(sorted(episodes["env"].astype(str).unique()))
    return Section(
        "Summary",
        [
            f"Analysed {count_of(len(runs), 'run')} with {count_of(failures.episodes, 'episode')} ({environments}). {excluded}"
        ],
    )


def failures_section(failures: FailureSummary) -> Section:
    return Section(
        "Failed episodes",
        [
            f"{failures.failed} of {failures.episodes} episodes failed and are excluded from every statistic. "
            "Errors, most frequent first:",
            Table(failures.errors.astype(str)),
            "Failed episodes per group:",
            Table(rename_levels(format_numbers(failures.by_group))),
        ],
    )


def what_ran_section(runs: list[records.Run], models: Models) -> Section:
    """One row per group: what the model was (its recorded identity) and which runs hold it."""
    episodes = models.frame
    job_of = {str(run.path): run.job for run in runs}
    rows = []
    for (model, scenario, condition), group in episodes.groupby([MODEL, "scenario", "condition"], sort=True):
        model_id = str(group["model_id"].iloc[0])
        rows.append(
            {
                MODEL: model,
                "scenario": scenario,
                "condition": condition,
                "episodes": str(len(group)),
                "runs": ", ".join(sorted({job_of.get(path, path) for path in group["run_dir"]})),
                "model id": model_id.removeprefix("policy:")
                if not model_id.startswith("policy:")
                else "not recorded",
                **identity.describe(models.identities.get(model_id)),
            }
        )
    blocks: list[Block] = [
        "Each group is one model identity (recorded by the run: backend, model name or GGUF file hash, "
        "prompt template hash, answer format and the settings that shape replies; for scripted agents "
        "their effective parameters) × scenario × regulator condition; every table below is grouped so.",
        Table(pd.DataFrame(rows)),
    ]
    if models.unidentified:
        blocks.append(
            "Records written before runs recorded model identities are grouped by their policy label: "
            + ", ".join(models.unidentified)
            + "."
        )
    return Section("What ran", blocks)


def paired_section(table: pd.DataFrame, config: paired.PairedConfig, figures_dir: Path) -> Section:
    shown = pd.DataFrame(
        {
            "env": table["env"],
            MODEL: table[MODEL],
            "scenario": table["scenario"],
            "metric": table["metric"].str.replace("_", " "),
            "comparison": table["condition"] + " - " + table["baseline"],
            "pairs": table["pairs"].astype(str),
            "baseline": table["baseline_value"].map(display_number),
            "condition": table["condition_value"].map(display_number),
            "difference": [
                interval_cell(d, low, high)
                for d, low, high in zip(
                    table["difference"], table["difference_low"], table["difference_high"], strict=True
                )
            ],
            "rank-biserial r": table["rank_biserial"].map(display_number),
            "d_z": table["cohens_dz"].map(display_number),
            "p": table["p_value"].map(p_value_text),
            f"p ({config.correction})": table["p_adjusted"].map(p_value_text),
            "significant": table["significant"].map(lambda flag: "yes" if flag else "no"),
        }
    )
    tested = int(table["p_value"].notna().sum())
    return Section(
        "Paired comparisons on matched seeds",
        [
            "Each regulator condition against the baseline (none) within the same model, scenario and "
            "resource level, on the seeds both played (episode i has the same seed in every job). "
            f"Difference: condition - baseline of the metric as the headline defines it, with a "
            f"{config.level:.0%} paired bootstrap interval over seeds; p: Wilcoxon signed-rank test on the "
            f"per-seed differences; effect sizes: matched-pairs rank-biserial r and Cohen's d_z. "
            f"The {tested} tested comparisons form one family, corrected with "
            f"{'Holm' if config.correction == 'holm' else 'Benjamini-Hochberg'} at {config.alpha:g}. "
            f"Fewer than {MIN_UNITS} pairs: no interval and no test (n/a).",
            Table(shown),
            Image(
                paired.plot(table, figures_dir / "paired.png", config),
                "Differences between conditions on matched seeds with paired bootstrap intervals; "
                "filled red: significant after correction.",
            ),
        ],
    )


def p_value_text(value: object) -> str:
    if value is None or pd.isna(value):
        return "n/a"
    return "<0.001" if float(value) < 0.001 else f"{float(value):.3f}"


def profile_section(profiles: pd.DataFrame, figures_dir: Path) -> Section:
    return Section(
        "Value profiles",
        [
            "One profile per model (its identity without the environment's prompt template, so one model "
            "is one profile across environments) and condition: the DECIDE-SIM archetype (bootstrap "
            "confidence) and transgression rates, the Moral Machine AMCEs (95% intervals), distances "
            "(cluster-bootstrap intervals) and position bias (Wilson), the net value preferences of "
            "dilemmas and the co-evolution lock-in (bootstrap). † marks a measure with a caveat "
            "(see profile.csv's text column). Measures found in several scenarios name the scenario.",
            Table(profile.wide(profiles, display_number)),
            Image(
                profile.plot(profiles, figures_dir / "profile.png"),
                "Value profiles: each measure with its interval.",
            ),
        ],
    )


def published_llms(options: Options) -> list[str]:
    """The published LLMs the reference holds beyond the human populations."""
    if options.reference is None:
        return []
    humans = set(amce.human_reference()["population"])
    return [str(name) for name in options.reference["population"] if name not in humans]


def definitions_section(tables: list[pd.DataFrame], bootstrap: BootstrapConfig) -> Section:
    present = {column for table in tables for column in table.columns}
    lines = [
        f"- {metric.name}: {metric.description} "
        + (
            f"(Σ {metric.numerator} / Σ {metric.denominator} over episodes)"
            if metric.denominator
            else f"(mean of {metric.numerator} over episodes)"
        )
        for metric in ALL_METRICS
        if metric.name in present
    ]
    return Section(
        "Definitions",
        [
            # no metric when every episode failed
            *(["\n".join(lines)] if lines else []),
            f"Intervals: percentile bootstrap over episodes, {bootstrap.resamples} resamples, seed "
            f"{bootstrap.seed}, level {bootstrap.level:g}.",
        ],
    )


def runs_section(runs: list[records.Run], episodes: pd.DataFrame) -> Section:
    counts = episodes.groupby("run_dir").size()
    frame = pd.DataFrame(
        {
            "job": [run.job for run in runs],
            "episodes": [str(counts.get(str(run.path), 0)) for run in runs],
            "path": [str(run.path) for run in runs],
        }
    )
    llm = llm_accounting(runs, episodes)
    if llm is not None:
        frame = pd.concat([frame.drop(columns="path"), llm, frame[["path"]]], axis=1)
    return Section("Runs analysed", [Table(frame)])


def app_links(episodes: pd.DataFrame, runs: list[records.Run], app_url: str) -> AppLinks:
    """Each group's runs, with the group's key values as the app's episode filters."""
    keys = group_keys(episodes)
    jobs = {str(run.path): run.job for run in runs}
    groups = []
    for values, rows in episodes.groupby(keys, dropna=False, sort=True) if keys else [((), episodes)]:
        values = values if isinstance(values, tuple) else (values,)
        filters = {f"f.{k}": str(v) for k, v in zip(keys, values, strict=True) if not pd.isna(v)}
        if f"f.{MODEL}" in filters:  # a display name: the records hold the identity's id (or only the policy)
            model_id = str(rows["model_id"].iloc[0])
            del filters[f"f.{MODEL}"]
            if model_id.startswith("policy:"):
                filters["f.policy"] = model_id.removeprefix("policy:")
            else:
                filters["f.model_id"] = model_id
        label = ", ".join(f"{k} {v}" for k, v in zip(keys, values, strict=True) if not pd.isna(v)) or "all"
        run_dirs = list(dict.fromkeys(rows["run_dir"]))
        groups.append((label, [(jobs.get(d, d), d, filters) for d in run_dirs]))
    return AppLinks(app_url, groups)


def llm_accounting(runs: list[records.Run], episodes: pd.DataFrame) -> pd.DataFrame | None:
    """Per run: LLM calls, cache hits, tokens, cost and the invalid-reply rate (None without LLM agents)."""
    if not {"llm_calls", "cache_hits"} <= set(episodes.columns):
        return None
    ok = episodes[episodes["status"] == "ok"]
    if (ok["llm_calls"].fillna(0) + ok["cache_hits"].fillna(0)).sum() == 0:  # no LLM agent
        return None
    rows = []
    for run in runs:
        mine = ok[ok["run_dir"] == str(run.path)]
        tokens = sum(mine[c].fillna(0).sum() for c in ("prompt_tokens", "completion_tokens") if c in mine)
        cost = mine["cost_usd"].dropna() if "cost_usd" in mine else pd.Series(dtype=float)
        valid = mine["valid_reply_rate"].dropna() if "valid_reply_rate" in mine else pd.Series(dtype=float)
        rows.append(
            {
                "LLM calls": display_number(int(mine["llm_calls"].fillna(0).sum())),
                "cache hits": display_number(int(mine["cache_hits"].fillna(0).sum())),
                "tokens": display_number(int(tokens)),
                "cost (USD)": f"{cost.sum():.4f}" if len(cost) else "",
                "invalid replies": f"{1 - valid.mean():.1%}" if len(valid) else "",
            }
        )
    return pd.DataFrame(rows)


def metrics_display(table: pd.DataFrame) -> pd.DataFrame:
    metric_names = [metric.name for metric in ALL_METRICS if metric.name in table.columns]
    shown = table[
        [
            *group_keys(table),
            "episodes",
            "failed",
            *metric_names,
            *(f"{m}_{e}" for m in metric_names for e in ("low", "high")),
        ]
    ]
    return rename_levels(with_intervals(shown, metric_names))


def with_intervals(table: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """``name`` columns as "value [low, high]" strings; other columns as strings."""
    shown = pd.DataFrame(index=table.index)
    for column in table.columns:
        if column.endswith(("_low", "_high")) and column.rsplit("_", 1)[0] in names:
            continue
        if column in names:
            shown[column.replace("_", " ")] = [
                "n/a"
                if pd.isna(value)
                else f"{display_number(value)} [{display_number(low)}, {display_number(high)}]"
                for value, low, high in zip(
                    table[column], table[f"{column}_low"], table[f"{column}_high"], strict=True
                )
            ]
        else:
            shown[column] = table[column].map(display_number)
    return shown


def format_numbers(table: pd.DataFrame) -> pd.DataFrame:
    return table.apply(lambda column: column.map(display_number))


def rename_levels(table: pd.DataFrame) -> pd.DataFrame:
    if "scarcity" not in table.columns:
        return table
    return table.assign(
        scarcity=table["scarcity"].map(lambda level: figures.LEVEL_NAMES.get(level, level))
    ).rename(columns={"scarcity": "resource level"})


def estimate_cell(estimate: float, std_error: float, decisions: int, below_minimum: bool) -> str:
    if not np.isfinite(estimate):
        return f"n/a (n={decisions})"
    interval = (
        f"[{display_number(estimate - 1.96 * std_error)}, {display_number(estimate + 1.96 * std_error)}]"
        if np.isfinite(std_error)
        else "[n/a]"
    )
    return f"{display_number(estimate)} {interval} n={decisions}{' †' if below_minimum else ''}"


def interval_cell(value: object, low: object, high: object) -> str:
    if value is None or pd.isna(value):
        return "n/a"
    if low is None or pd.isna(low):
        return f"{display_number(float(value))} [n/a]"
    return f"{display_number(float(value))} [{display_number(float(low))}, {display_number(float(high))}]"


def count_of(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def display_number(value: object) -> str:
    if value is None or pd.isna(value):
        return "n/a"
    return f"{float(value):.3f}" if isinstance(value, float | np.floating) else str(value)
