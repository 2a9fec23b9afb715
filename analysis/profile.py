"""A value profile per model: how the agents analysed differ, across every environment they ran.

One profile per model identity without its prompt template
(:func:`valuegym.analysis.identity.profile_key`: the same model with the same settings in
DECIDE-SIM and the Moral Machine is one profile) and regulator condition. Its measures, each
with an interval and the number of units behind it, where the records hold them:

* DECIDE-SIM: the archetype (label; ``value`` its bootstrap confidence) and the
  transgression rate per resource level, per setting (scenario without its level);
* Moral Machine: the nine AMCEs (±1.96 cluster-robust SE; flagged below the minimum number
  of decisions), the distance to the human global AMCEs and to any published LLM asked for
  (cluster-bootstrap interval), and P(the outcome presented first is chosen) (Wilson);
* dilemmas: per value, the share of decisions upholding minus violating it;
* co-evolution: the lock-in (bootstrap over episodes).

:func:`build` returns the long table written as ``profile.csv``; :func:`wide` the models ×
measures display table; :func:`plot` the figure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from valuegym.analysis.archetypes import Archetypes, setting
from valuegym.analysis.identity import MODEL

COLUMNS: tuple[str, ...] = (
    "profile",
    "condition",
    "env",
    "source",
    "measure",
    "value",
    "low",
    "high",
    "n",
    "text",
)
Z_95 = 1.959963984540054


@dataclass(frozen=True)
class AmceGroup:
    """The Moral Machine results of one model, scenario and condition."""

    model: str
    scenario: str
    condition: str
    table: pd.DataFrame  # amce.amce_table
    distances: pd.DataFrame  # amce.distance_to_reference
    position: Mapping[str, object]  # amce.position_bias


def build(
    names: Mapping[str, str],
    metrics: pd.DataFrame,
    archetypes: Archetypes | None,
    amce_groups: Sequence[AmceGroup],
    values: pd.DataFrame | None,
    distances_shown: Iterable[str] = ("Global",),
) -> pd.DataFrame:
    """The long profile table (:data:`COLUMNS`). ``names`` maps each analysis model (display
    name) to its profile name; ``metrics`` is the headline table of every environment."""
    rows: list[dict[str, object]] = []

    def add(model: object, condition: object, env: str, source: str, measure: str, **values: object) -> None:
        rows.append(
            {
                "profile": names[str(model)],
                "condition": condition,
                "env": env,
                "source": source,
                "measure": measure,
                **values,
            }
        )

    decide_sim = metrics.iloc[0:0]
    if "transgression_rate" in metrics.columns:
        decide_sim = metrics[(metrics["env"] == "decide_sim") & metrics["transgression_rate"].notna()]
    for row in decide_sim.itertuples():
        add(
            row.model,
            row.condition,
            "decide_sim",
            setting(str(row.scenario)),
            f"transgression rate ({row.scarcity})",
            value=row.transgression_rate,
            low=row.transgression_rate_low,
            high=row.transgression_rate_high,
            n=row.episodes,
        )
    if archetypes is not None and not archetypes.table.empty:
        for row in archetypes.table.itertuples():
            episodes = min(
                int(getattr(row, c)) for c in archetypes.table.columns if c.startswith("episodes_")
            )
            add(
                row.model,
                row.condition,
                "decide_sim",
                row.setting,
                "archetype",
                value=row.confidence,
                n=episodes,
                text=row.archetype,
            )
    if "lock_in" in metrics.columns:
        coevolution = metrics[(metrics["env"] == "coevolution") & metrics["lock_in"].notna()]
        for row in coevolution.itertuples():
            add(
                row.model,
                row.condition,
                "coevolution",
                str(row.scenario),
                "lock-in",
                value=row.lock_in,
                low=row.lock_in_low,
                high=row.lock_in_high,
                n=row.episodes,
            )
    shown = set(distances_shown)
    for group in amce_groups:
        for row in group.table.itertuples():
            if row.attribute.startswith("No. Characters (diff"):
                continue
            finite = np.isfinite(row.std_error)
            add(
                group.model,
                group.condition,
                "moral_machine",
                group.scenario,
                f"AMCE {row.attribute}",
                value=row.estimate,
                low=row.estimate - Z_95 * row.std_error if finite else np.nan,
                high=row.estimate + Z_95 * row.std_error if finite else np.nan,
                n=row.decisions,
                text="below the minimum decisions" if row.below_minimum else "",
            )
        for row in group.distances.itertuples():
            if row.population in shown:
                add(
                    group.model,
                    group.condition,
                    "moral_machine",
                    group.scenario,
                    f"distance to {row.population}",
                    value=row.distance,
                    low=row.distance_low,
                    high=row.distance_high,
                    n=row.attributes,
                    text=f"left out: {row.left_out}" if row.left_out else "",
                )
        position = group.position
        if position.get("p_first_chosen") is not None:
            add(
                group.model,
                group.condition,
                "moral_machine",
                group.scenario,
                "P(first presented chosen)",
                value=position["p_first_chosen"],
                low=position["p_first_low"],
                high=position["p_first_high"],
                n=position["scenarios"],
            )
    if values is not None and not values.empty:
        for row in values.itertuples():
            add(
                row.model,
                row.condition,
                str(row.env),
                str(row.env),
                f"{row.value}: upheld − violated",
                value=row.net_share,
                low=row.net_share_low,
                high=row.net_share_high,
                n=row.decisions,
            )
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    for column in ("value", "low", "high"):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    table["text"] = table["text"].astype(object).fillna("").astype(str)
    return table


def _column(frame: pd.DataFrame) -> pd.Series:
    """Measure names, with their source where a measure comes from more than one."""
    sources = frame.groupby("measure")["source"].nunique()
    return frame["measure"] + frame.apply(
        lambda row: f" [{row['source']}]" if sources[row["measure"]] > 1 else "", axis=1
    )


def wide(profile: pd.DataFrame, number: object) -> pd.DataFrame:
    """Models (and conditions) as rows, measures as columns: "value [low, high]" (n/a without one)."""
    if profile.empty:
        return pd.DataFrame()
    frame = profile.assign(column=_column(profile))

    def cell(row: pd.Series) -> str:
        if row["measure"] == "archetype":
            confidence = "n/a" if pd.isna(row["value"]) else f"{row['value']:.0%}"
            return f"{row['text']} ({confidence})"
        interval = "n/a" if pd.isna(row["low"]) else f"{number(row['low'])}, {number(row['high'])}"
        flag = " †" if row["text"] else ""
        return f"{number(row['value'])} [{interval}]{flag}"

    frame["cell"] = frame.apply(cell, axis=1)
    frame["row"] = frame["profile"] + frame["condition"].map(lambda c: "" if c == "none" else f" [{c}]")
    table = frame.pivot_table(index="row", columns="column", values="cell", aggfunc="first", sort=False)
    table = table.reindex(columns=list(dict.fromkeys(frame["column"]))).fillna("")
    return table.reset_index().rename(columns={"row": MODEL})


def plot(profile: pd.DataFrame, path: Path) -> Path:
    """One small panel per numeric measure: every model's value with its interval."""
    numeric = profile[(profile["measure"] != "archetype") & profile["value"].notna()]
    numeric = numeric.assign(
        column=_column(numeric),
        row=numeric["profile"] + numeric["condition"].map(lambda c: "" if c == "none" else f" [{c}]"),
    )
    columns = list(dict.fromkeys(numeric["column"]))
    models = list(dict.fromkeys(numeric["row"]))
    across = min(4, max(1, len(columns)))
    down = max(1, -(-len(columns) // across))
    figure = Figure(figsize=(3.4 * across, 0.9 + down * (0.3 * len(models) + 1.0)), dpi=110)
    panels = figure.subplots(down, across, squeeze=False).ravel()
    y = {model: position for position, model in enumerate(reversed(models))}
    for panel, column in zip(panels, columns, strict=False):
        rows = numeric[numeric["column"] == column]
        positions = rows["row"].map(y).to_numpy(float)
        values = rows["value"].to_numpy(float)
        errors = np.vstack([values - rows["low"].to_numpy(float), rows["high"].to_numpy(float) - values])
        panel.errorbar(
            values, positions, xerr=np.clip(np.nan_to_num(errors), 0, None), fmt="o", capsize=3, color="black"
        )
        panel.set_yticks(list(y.values()), list(y.keys()), fontsize=7)
        panel.set_ylim(-0.6, len(models) - 0.4)
        panel.set_title(column, fontsize=8)
        panel.grid(axis="x", alpha=0.3)
        if column.startswith("AMCE"):
            panel.axvline(0, color="gray", linewidth=0.8)
    for panel in panels[len(columns) :]:
        panel.set_visible(False)
    figure.suptitle("Value profiles: each measure with its interval", fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    return path
