"""``valuegym analyze PATH [PATH ...]``: metrics, archetypes, figures and a report from records.

PATHs are run directories or multirun directories (:mod:`valuegym.analysis.records`).
Everything is written into the first PATH, or into ``--out``:

* ``report.md`` and ``report.html`` (self-contained: figures embedded as base64 PNG, inline
  CSS), opening with what ran (one row per group: model identity, scenario, condition, runs),
  then the headline table of metrics per group with bootstrap intervals;
* ``metrics.csv``: that table for every environment analysed (one row per group);
* ``archetypes.csv``: the DECIDE-SIM archetype of each model (when DECIDE-SIM records with
  both the scarce and the abundant resource level are present);
* ``paired.csv``: conditions compared on matched seeds (:mod:`valuegym.analysis.paired`);
* ``profile.csv``: the value profile of every model (:mod:`valuegym.analysis.profile`);
* ``figures/*.png``.

Groups are model × scenario × condition (× resource level): the model is the recorded
policy identity (:mod:`valuegym.analysis.identity`), never the config file's name.

Sections join the report when their records exist: DECIDE-SIM figures and archetypes;
the Moral Machine AMCE (``responses/`` records, via :mod:`valuegym.analysis.amce`); the
co-evolution metrics (their ``episodes`` columns); value-preference rates (decisions whose
moral events name values, e.g. the generic dilemma environment). Failed episodes are
excluded from every statistic; the report says how many and why.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from valuegym.analysis import amce, identity, paired, profile, records
from valuegym.analysis.archetypes import Archetypes, Thresholds, classify_policies
from valuegym.analysis.identity import MODEL
from valuegym.analysis.metrics import (
    BootstrapConfig,
    failure_summary,
    summarise,
)

#: where ``valuegym serve`` listens by default (report.html links groups to their episodes there)
from valuegym.analysis.report_env_sections import (
    amce_section,
    decide_sim_sections,
    find_amce_groups,
    value_preferences_of,
    values_section,
)
from valuegym.analysis.report_render import Section, Table, render_html, render_markdown
from valuegym.analysis.report_sections import (
    ALL_METRICS,
    Options,
    app_links,
    definitions_section,
    failures_section,
    metrics_display,
    paired_section,
    profile_section,
    published_llms,
    runs_section,
    summary_section,
    what_ran_section,
)

#: where ``valuegym serve`` listens by default (report.html links groups to their episodes there)
APP_URL = "http://127.0.0.1:8765"


REQUIRED_EPISODE_COLUMNS: tuple[str, ...] = (
    "episode_id",
    "seed",
    "scenario",
    "env",
    "status",
    "error",
    "policy",
    "condition",
)


OPTIONAL_EPISODE_COLUMNS: tuple[str, ...] = (
    *identity.IDENTITY_COLUMNS,
    "scarcity",
    "turns",
    *dict.fromkeys(column for metric in ALL_METRICS for column in metric.columns),
)


@dataclass(frozen=True)
class Analysis:
    """Everything :func:`analyse` found, ready to be written."""

    sections: list[Section]
    metrics: pd.DataFrame  # metrics.csv
    archetypes: Archetypes | None
    paired: pd.DataFrame = field(default_factory=pd.DataFrame)  # paired.csv
    profile: pd.DataFrame = field(default_factory=pd.DataFrame)  # profile.csv


def analyse(
    paths: Sequence[str | Path],
    out: Path,
    bootstrap: BootstrapConfig,
    thresholds: Thresholds,
    app_url: str = APP_URL,
    options: Options | None = None,
) -> Analysis:
    """Read the records under ``paths``, compute everything, draw figures into ``out/figures``."""
    options = options or Options()
    runs = records.find_runs(paths)
    figures_dir = out / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    models = identity.attach(_load_episodes(runs))
    episodes = models.frame
    failures = failure_summary(episodes)

    headline = Section("Headline")
    headline.blocks.append(
        f"Metrics per group with {bootstrap.level:.0%} bootstrap intervals over episodes "
        f"({bootstrap.resamples} resamples, seed {bootstrap.seed}); failed episodes excluded."
    )
    tables: list[pd.DataFrame] = []
    sections: list[Section] = []
    archetypes: Archetypes | None = None
    # environments in the order the given runs hold them
    for env in episodes["env"].unique():
        env_episodes = episodes[episodes["env"] == env]
        env_run_dirs = set(env_episodes["run_dir"])
        env_runs = [run for run in runs if str(run.path) in env_run_dirs]
        # other environments' columns are null here: keep those this environment records
        # (and the model each group is, as named for the whole analysis)
        recorded = {*records.columns_of(env_runs, "episodes"), *records.SOURCE_COLUMNS, MODEL, "model_id"}
        env_episodes = env_episodes[[column for column in env_episodes.columns if column in recorded]]
        table = summarise(env_episodes, ALL_METRICS, bootstrap)
        table.insert(0, "env", env)
        tables.append(table)
        headline.blocks.append(
            Section(
                str(env),
                [Table(metrics_display(table)), app_links(env_episodes, env_runs, app_url)],
                level=3,
            )
        )
        if "transgression_rate" in table.columns and "scarcity" in table.columns:
            archetypes = classify_policies(env_episodes, thresholds, bootstrap)
            sections.extend(
                decide_sim_sections(env_runs, env_episodes, table, archetypes, thresholds, figures_dir)
            )
    metrics = pd.concat(tables, ignore_index=True)
    summary = summary_section(runs, episodes, failures)
    comparisons = paired.compare_conditions(episodes, ALL_METRICS, options.paired)
    sections = [
        what_ran_section(runs, models),
        headline,
        summary,
        *([failures_section(failures)] if failures.failed else []),
        *([paired_section(comparisons, options.paired, figures_dir)] if not comparisons.empty else []),
        *sections,
    ]
    amce_groups: list[profile.AmceGroup] = []
    if records.has_dataset(runs, "responses"):
        amce_groups = find_amce_groups(runs, episodes, options)
        sections.append(amce_section(amce_groups, options, figures_dir))
    # a run whose episodes all failed has episodes records only
    preferences = None
    if records.has_dataset(runs, "decisions"):
        preferences = value_preferences_of(runs, episodes, bootstrap)
        if not preferences.empty:
            sections.append(values_section(preferences, bootstrap))
    profiles = profile.build(
        identity.profile_names(models),
        metrics,
        archetypes,
        amce_groups,
        preferences,
        distances_shown=["Global", *published_llms(options)],
    )
    if not profiles.empty:
        sections.append(profile_section(profiles, figures_dir))
    sections.append(definitions_section(tables, bootstrap))
    sections.append(runs_section(runs, episodes))
    return Analysis(sections, metrics, archetypes, comparisons, profiles)


def write(analysis: Analysis, out: Path) -> list[Path]:
    """Write the report and its tables (``metrics.csv``, ``archetypes.csv``, ``paired.csv``,
    ``profile.csv``); returns the paths written."""
    written = [out / "metrics.csv"]
    analysis.metrics.to_csv(written[0], index=False)
    if analysis.archetypes is not None and not analysis.archetypes.table.empty:
        written.append(out / "archetypes.csv")
        analysis.archetypes.table.to_csv(written[-1], index=False)
    for name, table in (("paired.csv", analysis.paired), ("profile.csv", analysis.profile)):
        if not table.empty:
            written.append(out / name)
            table.to_csv(written[-1], index=False)
    written.append(out / "report.md")
    written[-1].write_text(render_markdown(analysis.sections, out), encoding="utf-8")
    written.append(out / "report.html")
    written[-1].write_text(render_html(analysis.sections), encoding="utf-8")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``valuegym analyze``; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        bootstrap = BootstrapConfig(resamples=args.bootstrap, level=args.level, seed=args.seed)
        thresholds = Thresholds(ethical_max=args.ethical_max, exploit_min=args.exploit_min)
        comparisons = paired.PairedConfig(
            correction=args.correction, level=args.level, resamples=args.bootstrap, seed=args.seed
        )
    except ValueError as error:
        parser.error(str(error))
    out = Path(args.out if args.out is not None else args.paths[0])
    try:
        options = Options(comparisons, args.min_amce_decisions, amce.reference_from_options(args))
        analysis = analyse(args.paths, out, bootstrap, thresholds, args.app_url.rstrip("/"), options)
    except (records.RecordsError, amce.AmceError) as error:
        print(f"valuegym analyze: error: {error}", file=sys.stderr)
        return 2
    for path in write(analysis, out):
        print(f"wrote {path}")
    return 0


def _parser() -> argparse.ArgumentParser:
    defaults = Thresholds()
    parser = argparse.ArgumentParser(
        prog="valuegym analyze",
        description="Metrics with bootstrap intervals, archetypes, figures and a report from run records.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="run directories or multirun directories")
    parser.add_argument("--out", metavar="DIR", help="where to write the report (default: the first PATH)")
    parser.add_argument(
        "--bootstrap", type=int, default=BootstrapConfig.resamples, metavar="N", help="resamples"
    )
    parser.add_argument("--seed", type=int, default=BootstrapConfig.seed, metavar="S", help="bootstrap seed")
    parser.add_argument(
        "--level", type=float, default=BootstrapConfig.level, metavar="P", help="confidence level (0.95)"
    )
    parser.add_argument(
        "--ethical-max",
        type=float,
        default=defaults.ethical_max,
        metavar="R",
        help="transgression rate per agent-turn at or below which a policy counts as not transgressing",
    )
    parser.add_argument(
        "--exploit-min",
        type=float,
        default=defaults.exploit_min,
        metavar="R",
        help="transgression rate per agent-turn at or above which a policy counts as transgressing",
    )
    parser.add_argument(
        "--app-url",
        default=APP_URL,
        metavar="URL",
        help=f"where report.html looks for valuegym serve to link groups to their episodes ({APP_URL})",
    )
    parser.add_argument(
        "--correction",
        choices=paired.CORRECTIONS,
        default="holm",
        help="multiple-testing correction over the report's paired comparisons: Holm (family-wise) "
        "or Benjamini-Hochberg (false discovery rate)",
    )
    amce.add_reference_options(parser)
    return parser


def _load_episodes(runs: list[records.Run]) -> pd.DataFrame:
    return records.load(runs, "episodes", REQUIRED_EPISODE_COLUMNS, optional=OPTIONAL_EPISODE_COLUMNS)
