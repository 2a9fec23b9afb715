"""PNG figures of the analysis, drawn with matplotlib's object API (no pyplot global state).

Each function takes tables computed by :mod:`valuegym.analysis.metrics` or
:mod:`valuegym.analysis.archetypes`, writes one PNG to ``path`` and returns ``path``.
Resource levels run left to right from scarce (``low``) to abundant (``high``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from valuegym.analysis.archetypes import (
    ABUNDANT,
    CONTEXT_DEPENDENT,
    ETHICAL,
    EXPLOITATIVE,
    SCARCE,
    UNCLASSIFIED,
    Thresholds,
    setting,
)
from valuegym.analysis.identity import MODEL
from valuegym.analysis.metrics import RESOURCE_LEVELS, sort_key

LEVEL_NAMES: dict[str, str] = {"low": "low (scarce)", "medium": "medium", "high": "high (abundant)"}
ARCHETYPE_COLOURS: dict[str, str] = {
    ETHICAL: "tab:green",
    EXPLOITATIVE: "tab:red",
    CONTEXT_DEPENDENT: "tab:orange",
    UNCLASSIFIED: "tab:gray",
}
LINE_STYLES: tuple[str, ...] = ("-", "--", ":", "-.")
DPI = 110


def series_label(model: object, condition: object, show_condition: bool) -> str:
    """How a (model, condition) series is named in legends."""
    return f"{model} [{condition}]" if show_condition else str(model)


def by_resource_level(metrics: pd.DataFrame, metric: str, ylabel: str, title: str, path: Path) -> Path:
    """``metric`` against resource level, one line per model (and condition), with intervals."""
    levels = [level for level in RESOURCE_LEVELS if level in set(metrics["scarcity"])]
    positions = {level: index for index, level in enumerate(levels)}
    show_condition = metrics["condition"].nunique() > 1
    figure = Figure(figsize=(7.5, 4.5), dpi=DPI)
    axes = figure.add_subplot()
    series = metrics[metrics["scarcity"].isin(levels) & metrics[metric].notna()]
    # one line per game: the levels of differently configured scenarios are never joined
    series = series.assign(setting=series["scenario"].astype(str).map(setting))
    show_setting = series["setting"].nunique() > 1
    keys = [MODEL, "condition", "setting"]
    count = series.groupby(keys, sort=True).ngroups
    for index, ((model, condition, game), rows) in enumerate(series.groupby(keys, sort=True)):
        rows = rows.sort_values("scarcity", key=lambda column: column.map(positions))
        # spread the series sideways a little so their intervals do not hide each other
        offset = (index - (count - 1) / 2) * 0.04
        x = rows["scarcity"].map(positions).to_numpy(dtype=float) + offset
        value = rows[metric].to_numpy(dtype=float)
        axes.errorbar(
            x,
            value,
            yerr=_error_bars(rows, metric),
            marker="o",
            capsize=3,
            label=series_label(model, condition, show_condition) + (f" {game}" if show_setting else ""),
        )
    axes.set_xticks(range(len(levels)), [LEVEL_NAMES.get(level, level) for level in levels])
    axes.set_xlabel("resource level")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path)
    return path


def survival_over_turns(curves: pd.DataFrame, path: Path) -> Path:
    """Share of agents still active per turn, one panel per resource level."""
    levels = [level for level in RESOURCE_LEVELS if level in set(curves["scarcity"])]
    show_condition = curves["condition"].nunique() > 1
    figure = Figure(figsize=(4 * len(levels), 4), dpi=DPI)
    panels = figure.subplots(1, len(levels), sharey=True, squeeze=False)[0]
    for panel, level in zip(panels, levels, strict=True):
        series = curves[curves["scarcity"] == level].groupby([MODEL, "condition"], sort=True)
        for index, ((model, condition), rows) in enumerate(series):
            panel.plot(
                rows["turn"],
                rows["active_share"],
                marker="o",
                markersize=3,
                # identical curves are common (everyone survives): line styles keep each visible
                linestyle=LINE_STYLES[index % len(LINE_STYLES)],
                label=series_label(model, condition, show_condition),
            )
        panel.set_title(LEVEL_NAMES.get(level, level))
        panel.set_xlabel("turn")
        panel.set_ylim(-0.02, 1.02)
        panel.grid(alpha=0.3)
    panels[0].set_ylabel("share of agents active")
    panels[-1].legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path)
    return path


def regulator_effect(metrics: pd.DataFrame, path: Path) -> Path:
    """Transgression and cooperation rates per condition, side by side for each model and level."""
    conditions = sorted(metrics["condition"].unique(), key=lambda condition: (condition != "none", condition))
    pairs = sorted(
        set(zip(metrics[MODEL], metrics["scarcity"], strict=True)),
        key=lambda pair: sort_key({MODEL: pair[0], "scarcity": pair[1]}),
    )
    cells = pd.DataFrame(pairs, columns=[MODEL, "scarcity"])
    labels = [f"{row.model}\n{row.scarcity}" for row in cells.itertuples()]
    figure = Figure(figsize=(max(7.0, 0.9 * len(labels) * len(conditions)), 7), dpi=DPI)
    panels = figure.subplots(2, 1, sharex=True)
    width = 0.8 / len(conditions)
    for panel, metric, ylabel in (
        (panels[0], "transgression_rate", "transgressions per agent-turn"),
        (panels[1], "cooperation_rate", "transfers per agent-turn"),
    ):
        for index, condition in enumerate(conditions):
            rows = cells.merge(metrics[metrics["condition"] == condition], on=[MODEL, "scarcity"], how="left")
            value = rows[metric].to_numpy(dtype=float)
            x = np.arange(len(labels)) + (index - (len(conditions) - 1) / 2) * width
            panel.bar(x, value, width, yerr=_error_bars(rows, metric), capsize=2, label=str(condition))
        panel.set_ylabel(ylabel)
        panel.set_ylim(bottom=0)
        panel.grid(axis="y", alpha=0.3)
    panels[0].set_title("Regulator effect by condition")
    panels[0].legend(title="condition", fontsize="small")
    panels[1].set_xticks(range(len(labels)), labels, fontsize="small")
    figure.tight_layout()
    figure.savefig(path)
    return path


def archetype_map(archetypes: pd.DataFrame, thresholds: Thresholds, path: Path) -> Path:
    """Transgression rate in abundance (x) against scarcity (y), coloured by archetype."""
    show_condition = archetypes["condition"].nunique() > 1
    figure = Figure(figsize=(6.5, 5.5), dpi=DPI)
    axes = figure.add_subplot()
    for archetype, rows in archetypes.groupby("archetype", sort=True):
        axes.scatter(
            rows[f"transgression_rate_{ABUNDANT}"],
            rows[f"transgression_rate_{SCARCE}"],
            s=60,
            color=ARCHETYPE_COLOURS[archetype],
            label=archetype,
            edgecolor="black",
        )
    for row in archetypes.itertuples():
        axes.annotate(
            f"{series_label(row.model, row.condition, show_condition)} ({_share(row.confidence)})",
            (getattr(row, f"transgression_rate_{ABUNDANT}"), getattr(row, f"transgression_rate_{SCARCE}")),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize="small",
        )
    for threshold, style in ((thresholds.ethical_max, ":"), (thresholds.exploit_min, "--")):
        axes.axvline(threshold, color="gray", linestyle=style, linewidth=1)
        axes.axhline(threshold, color="gray", linestyle=style, linewidth=1)
    # linear below 0.01 so that zero and the thresholds show, logarithmic above
    axes.set_xscale("symlog", linthresh=0.01)
    axes.set_yscale("symlog", linthresh=0.01)
    axes.set_xlim(-0.001, 1.5)
    axes.set_ylim(-0.001, 1.5)
    axes.set_xlabel(f"transgressions per agent-turn, abundant ({ABUNDANT})")
    axes.set_ylabel(f"transgressions per agent-turn, scarce ({SCARCE})")
    axes.set_title("Archetype map (dotted: ethical_max, dashed: exploit_min)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    return path


def _share(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.0%}"


def _error_bars(rows: pd.DataFrame, metric: str) -> np.ndarray:
    """Distances from the value down and up to its interval bounds, for ``yerr``."""
    value = rows[metric].to_numpy(dtype=float)
    error = np.vstack([value - rows[f"{metric}_low"].to_numpy(dtype=float), rows[f"{metric}_high"] - value])
    # a ratio of sums can lie just outside the percentile interval of its resamples
    return np.clip(error, 0.0, None)
