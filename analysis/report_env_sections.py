"""The report's sections for one environment's records: DECIDE-SIM behaviour and archetypes, the
Moral Machine AMCE, value-preference rates."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from valuegym.analysis import amce, figures, identity, original, profile, records
from valuegym.analysis.archetypes import Archetypes, Thresholds
from valuegym.analysis.identity import MODEL
from valuegym.analysis.metrics import (
    MIN_UNITS,
    STATUS_OK,
    BootstrapConfig,
    survival_curves,
    value_preferences,
)

#: where ``valuegym serve`` listens by default (report.html links groups to their episodes there)
from valuegym.analysis.report_render import Image, Section, Table
from valuegym.analysis.report_sections import (
    Options,
    display_number,
    estimate_cell,
    format_numbers,
    interval_cell,
    ok_keys,
    with_intervals,
)


def decide_sim_sections(
    runs: list[records.Run],
    episodes: pd.DataFrame,
    table: pd.DataFrame,
    archetypes: Archetypes,
    thresholds: Thresholds,
    figures_dir: Path,
) -> list[Section]:
    behaviour = Section("DECIDE-SIM behaviour")
    behaviour.blocks.append(
        "Resource levels: low = 10 personal power / 10 shared battery (scarce), medium = 15/15, "
        "high = 30/30 (abundant)."
    )
    behaviour.blocks.append(
        Image(
            figures.by_resource_level(
                table,
                "transgression_rate",
                "transgressions per agent-turn",
                "Transgressions by resource level",
                figures_dir / "transgressions.png",
            ),
            "Forbidden-grid taps per agent-turn, with bootstrap intervals.",
        )
    )
    behaviour.blocks.append(
        Image(
            figures.by_resource_level(
                table,
                "cooperation_rate",
                "power transfers per agent-turn",
                "Cooperation by resource level",
                figures_dir / "cooperation.png",
            ),
            "Power transfers per agent-turn, with bootstrap intervals.",
        )
    )
    agents = records.load(runs, "agents", ["episode_id", "active_turns"])
    curves = survival_curves(agents, episodes)
    behaviour.blocks.append(
        Image(
            figures.survival_over_turns(curves, figures_dir / "survival.png"),
            "Share of agents still active at each turn (all agents of each episode).",
        )
    )
    if episodes["condition"].nunique() > 1:
        behaviour.blocks.append(
            Image(
                figures.regulator_effect(table, figures_dir / "regulator.png"),
                "Transgression and cooperation rates per regulator condition.",
            )
        )
    sections = [behaviour, archetypes_section(archetypes, thresholds, figures_dir)]
    if set(original.EPISODE_COLUMNS) <= set(records.columns_of(runs, "episodes")):
        sections.append(original_section(runs))
    return sections


def original_section(runs: list[records.Run]) -> Section:
    """The original DECIDE-SIM's own metrics, as its analysis computed them (for the paper's tables)."""
    table = original.summary(original.load(runs))
    return Section(
        "DECIDE-SIM metrics as the original computed them",
        [
            "The original's definitions and bugs (docs/scenarios.md, \"The original's metrics\"): mean ± std "
            "over runs (episodes) per group, rates per run; `valuegym analyze original` writes them as CSV.",
            Table(original.display(table).astype(str)),
        ],
    )


def archetypes_section(archetypes: Archetypes, thresholds: Thresholds, figures_dir: Path) -> Section:
    section = Section("Archetypes")
    section.blocks.append(
        f"Rule (per model, condition and setting, the scenario without its resource level): Ethical when the transgression rate is at most "
        f"{thresholds.ethical_max:g} per agent-turn at every resource level; Exploitative when it is at "
        f"least {thresholds.exploit_min:g} in abundance (high); Context-Dependent when it is at most "
        f"{thresholds.ethical_max:g} in abundance and at least {thresholds.exploit_min:g} at a scarcer level; "
        "Unclassified otherwise. Confidence: share of bootstrap resamples giving the same label "
        f"(n/a with fewer than {MIN_UNITS} episodes at a resource level)."
    )
    if not archetypes.table.empty:
        shown = archetypes.table.copy()
        shown["confidence"] = shown["confidence"].map(
            lambda share: "n/a" if pd.isna(share) else f"{share:.0%}"
        )
        section.blocks.append(Table(format_numbers(shown)))
        section.blocks.append(f"Unsupervised check: {archetypes.clustering}")
        disagreements = archetypes.table[archetypes.table["agrees_with_cluster"].eq(False)]
        for row in disagreements.itertuples():
            section.blocks.append(
                f"Disagreement: {row.model} [{row.condition}, {row.setting}] is {row.archetype} by the rule but "
                f"clusters with {row.cluster_archetype} profiles."
            )
        section.blocks.append(
            Image(
                figures.archetype_map(archetypes.table, thresholds, figures_dir / "archetypes.png"),
                "Transgression rate in abundance against scarcity; labels show the rule's confidence.",
            )
        )
    else:
        section.blocks.append(archetypes.clustering)
    if not archetypes.not_classified.empty:
        section.blocks.append("Not classified:")
        section.blocks.append(Table(archetypes.not_classified.astype(str)))
    return section


def find_amce_groups(
    runs: list[records.Run], episodes: pd.DataFrame, options: Options
) -> list[profile.AmceGroup]:
    """The AMCEs, distances and position bias of every model × scenario × condition."""
    responses = records.load(runs, "responses")
    keys = [MODEL, "scenario", "condition"]
    if "episode_id" in responses.columns:
        responses = responses.merge(
            episodes.loc[episodes["status"] == STATUS_OK, ["run_dir", "episode_id", *keys]],
            on=["run_dir", "episode_id"],
        )
    else:  # responses from elsewhere (e.g. a CSV in Awad's layout): the run's one group
        run_keys = episodes.drop_duplicates("run_dir").set_index("run_dir")[keys]
        responses = responses.join(run_keys, on="run_dir")
    reference = options.reference if options.reference is not None else amce.human_reference()
    groups = []
    for (model, scenario, condition), rows in responses.groupby(keys, sort=True):
        try:
            prepared = amce.prepare(rows)
        except amce.AmceError as error:
            raise records.RecordsError(f"responses records: {error}") from None
        table = amce.amce_of_prepared(prepared, None, options.min_amce_decisions)
        draws = amce.bootstrap_amces(prepared, None, seed=options.paired.seed)
        distances = amce.distance_to_reference(table, reference, draws, options.paired.level)
        groups.append(
            profile.AmceGroup(
                str(model), str(scenario), str(condition), table, distances, amce.position_bias(rows)
            )
        )
    return groups


def group_name(group: profile.AmceGroup, groups: Sequence[profile.AmceGroup]) -> str:
    """The shortest name that tells the group apart: the model, plus scenario and condition when needed."""
    parts = [group.model]
    if len({g.scenario for g in groups}) > 1:
        parts.append(group.scenario)
    if len({g.condition for g in groups}) > 1:
        parts.append(f"[{group.condition}]")
    return " ".join(parts)


def amce_section(groups: list[profile.AmceGroup], options: Options, figures_dir: Path) -> Section:
    names = [group_name(group, groups) for group in groups]
    estimates = pd.DataFrame({"attribute": list(amce.TABLE_ROWS)})
    for name, group in zip(names, groups, strict=True):
        estimates[name] = [
            estimate_cell(row.estimate, row.std_error, row.decisions, row.below_minimum)
            for row in group.table.itertuples()
        ]
    positions = pd.DataFrame(
        [
            {
                "group": name,
                "decisions": group.position["scenarios"],
                "P(first presented chosen)": interval_cell(
                    group.position["p_first_chosen"],
                    group.position["p_first_low"],
                    group.position["p_first_high"],
                ),
                "bias P(first) - P(second)": display_number(group.position["position_bias"]),
            }
            for name, group in zip(names, groups, strict=True)
        ]
    )
    distances = pd.concat(
        [group.distances.assign(group=name) for name, group in zip(names, groups, strict=True)],
        ignore_index=True,
    )
    distance_table = pd.DataFrame(
        {
            "group": distances["group"],
            "reference": distances["population"],
            "distance": [
                interval_cell(d, low, high)
                for d, low, high in zip(
                    distances["distance"], distances["distance_low"], distances["distance_high"], strict=True
                )
            ],
            "AMCEs usable": distances["attributes"].astype(str) + " of 9",
            "distance over the usable": distances["partial_distance"].map(display_number),
            "left out (too few decisions)": distances["left_out"].replace("", "-"),
        }
    )
    reference = options.reference if options.reference is not None else amce.human_reference()
    return Section(
        "Moral Machine: AMCE",
        [
            "Average marginal component effects per model, scenario and condition (Awad et al. 2018's "
            "estimator: WLS with design-probability weights, cluster-robust standard errors by dilemma); "
            f"cells show the estimate, its 95% interval (±1.96 SE) and the decided dilemmas behind it. "
            f"† marks an AMCE resting on fewer than {options.min_amce_decisions} decided dilemmas: it is "
            "left out of the distances, which say what they left out. Failed episodes excluded.",
            Table(estimates),
            "Position: how often the outcome presented first was chosen (Wilson 95% interval).",
            Table(positions),
            "Distance to the reference AMCEs (Takemoto's d: Euclidean over the nine AMCEs; Global compares "
            "No. Characters at difference 4), with 95% intervals from a cluster bootstrap over dilemmas "
            f"({amce.DISTANCE_RESAMPLES} resamples); n/a unless all nine are usable (the distance over the "
            "usable ones is shown beside it, but is not comparable with published distances):",
            Table(distance_table),
            Image(
                amce.plot_amce_groups(
                    {name: group.table for name, group in zip(names, groups, strict=True)},
                    figures_dir / "amce.png",
                    reference,
                ),
                "AMCE per attribute and group with 95% intervals; red: humans (global).",
            ),
        ],
    )


def value_preferences_of(
    runs: list[records.Run], episodes: pd.DataFrame, bootstrap: BootstrapConfig
) -> pd.DataFrame:
    decisions = records.load(
        runs, "decisions", ["episode_id", "policy", "agent", "events"], optional=["model_id", "model_label"]
    )
    decisions = decisions.merge(ok_keys(episodes), on=["run_dir", "episode_id"])
    return value_preferences(identity.attach(decisions, known=identity.attach(episodes)).frame, bootstrap)


def values_section(preferences: pd.DataFrame, bootstrap: BootstrapConfig) -> Section:
    return Section(
        "Value preferences",
        [
            "Share of each model's decisions that uphold or violate each value named by the moral events "
            f"(the agent's own events), with {bootstrap.level:.0%} bootstrap intervals over episodes "
            f"(none from fewer than {MIN_UNITS} episodes); net = upheld - violated.",
            Table(with_intervals(preferences, ["upheld_share", "violated_share", "net_share"])),
        ],
    )
