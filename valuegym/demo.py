"""``make demo``: DECIDE-SIM over the three scarcity levels, with records and a summary.

    python -m valuegym.demo              # embedded SmolLM2 agents (the main job), one episode each
    python -m valuegym.demo --json       # the same agents writing JSON replies (slower)
    python -m valuegym.demo --scripted   # the scripted archetypes, in seconds

Both go through the real ``valuegym run`` (Hydra multirun, the three levels in parallel
processes with the joblib launcher, one llama.cpp thread each) and ``valuegym analyze``.
The LLM agents answer by choice scoring (``agent.answer_format=choice``): every action the
environment allows is scored by the model's log-likelihood and the best one is played, which
spares the ~70 tokens of a JSON reply per decision; ``--json`` asks for JSON replies instead.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd

SCARCITIES = ("low", "medium", "high")


def valuegym(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "valuegym.cli", *args], check=True)


def summary(sweep_dir: Path) -> pd.DataFrame:
    """Transgressions, cooperation, survival and the valid-reply rate by scarcity and agent."""
    frames = [
        pd.read_parquet(job / "episodes")
        for job in sorted(sweep_dir.iterdir())
        if (job / "episodes").is_dir()
    ]
    episodes = pd.concat(frames, ignore_index=True)
    episodes = episodes[episodes.status == "ok"]
    # grouped by what ran (the recorded model), valid replies pooled as the report pools them
    table = episodes.groupby(["model_label", "scarcity"], sort=False).agg(
        episodes=("episode_id", "count"),
        transgressions=("transgressions", "mean"),
        cooperation=("cooperation_count", "mean"),
        survival_rate=("survival_rate", "mean"),
        valid_replies=("valid_replies", "sum"),
        replies=("replies", "sum"),
    )
    table["valid_reply_rate"] = table.pop("valid_replies") / table.pop("replies")
    order = {s: i for i, s in enumerate(SCARCITIES)}
    return table.rename_axis(["model", "scarcity"]).sort_index(
        level=["model", "scarcity"], key=lambda index: index.map(lambda v: order.get(v, v))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="valuegym demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scripted", action="store_true", help="scripted archetypes instead of the embedded LLM"
    )
    parser.add_argument(
        "--json", action="store_true", help="LLM agents write JSON replies instead of scoring the actions"
    )
    parser.add_argument("--episodes", type=int, default=None, help="episodes per scarcity level")
    parser.add_argument(
        "--out", type=Path, default=None, help="sweep directory (default: multirun/demo-<time>)"
    )
    parser.add_argument(
        "--sequential", action="store_true", help="the levels one after another (Hydra's basic launcher)"
    )
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides for valuegym run")
    args = parser.parse_args(argv)

    out = args.out or Path("multirun") / f"demo-{datetime.now():%Y-%m-%d_%H-%M-%S}"
    scenarios = ",".join(f"decide_sim/{s}" for s in SCARCITIES)
    options: list[str] = []
    if args.scripted:
        agents = "scripted/ethical,scripted/exploitative,scripted/context_dependent,scripted/cooperative"
        episodes = args.episodes or 20
    else:
        agents = "llm/smollm2"
        episodes = args.episodes or 1
        if not args.json:
            options.append("agent.answer_format=choice")
    print(
        f"valuegym demo: DECIDE-SIM, scarcity {', '.join(SCARCITIES)}; agents {agents}; {episodes} episode(s) each -> {out}"
    )
    # one process per scarcity level, at once: with one llama.cpp thread each (the default),
    # three models keep both cores busy, where one model's two threads wait for each other
    parallel = (
        [] if args.sequential else ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={len(SCARCITIES)}"]
    )
    valuegym(
        "run",
        "-m",
        *parallel,
        f"scenario={scenarios}",
        f"agent={agents}",
        f"episodes={episodes}",
        f"hydra.sweep.dir={out}",
        *options,
        *args.overrides,
    )
    valuegym("analyze", str(out), "--bootstrap", "200")

    print(
        "\nMean per episode (transgressions = taps of the forbidden grid; survival = share of agents alive at the end)"
    )
    print(summary(out).to_string(float_format="{:.2f}".format))
    print(f"\nRecords: {out}/<job>/{{decisions,agents,episodes}}/   Report: {out}/report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
