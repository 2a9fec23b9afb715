"""The ``valuegym`` command.

valuegym run [HYDRA OVERRIDES]          run an experiment (Hydra: -m for sweeps)
valuegym train [HYDRA OVERRIDES]        train RL agents with RLlib (Hydra)
valuegym analyze PATH [PATH ...]        metrics, archetypes and a report from records
valuegym analyze amce PATH              Moral Machine AMCEs from records or a CSV
valuegym analyze original PATH [...]    DECIDE-SIM's metrics as the original code computed them
valuegym scenario list|validate FILE    the scenario files
valuegym serve [ROOT] [--host H] [--port N]   web app: live runs, episode replays, human seats
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from valuegym.scenarios import register_scenarios, scenario_from_dict

log = logging.getLogger("valuegym")


def _experiment(cfg: DictConfig) -> Any:
    from valuegym.runner.experiment import Experiment

    choices = HydraConfig.get().runtime.choices
    scenario = scenario_from_dict(
        OmegaConf.to_container(cfg.scenario, resolve=True), name=choices.get("scenario", "")
    )
    return Experiment(
        scenario=scenario,
        agent=OmegaConf.to_container(cfg.agent, resolve=True),
        regulator=OmegaConf.to_container(cfg.regulator, resolve=True),
        episodes=int(cfg.episodes),
        seed=int(cfg.seed),
        episode_seeds=str(cfg.episode_seeds),  # type: ignore[arg-type]  # checked by Experiment
    )


@hydra.main(version_base="1.3", config_path="pkg://valuegym.conf", config_name="config")
def run_job(cfg: DictConfig) -> None:
    """One Hydra job: run the experiment into the job's output directory."""
    from hydra.types import RunMode

    from valuegym.inputs import check_config
    from valuegym.runner.run import RunStoppedError, run_experiment

    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    check_config(cfg)  # a sweep's job is checked here (a single run was checked before Hydra started)
    experiment = _experiment(cfg)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    executor = {
        **OmegaConf.to_container(cfg.executor, resolve=True),
        **OmegaConf.to_container(cfg.ray, resolve=True),
    }
    # In a sweep the jobs draw no bar of their own: SweepProgress draws one line for them all.
    sweeping = hydra_config.mode == RunMode.MULTIRUN
    try:
        totals = run_experiment(experiment, run_dir, executor, quiet=bool(cfg.quiet) or sweeping)
    except RunStoppedError as stopped:
        log.info(stopped.totals.summary(experiment.scenario.name, run_dir))
        raise
    log.info(totals.summary(experiment.scenario.name, run_dir))


def _hydra(app: Callable[[], None], argv: list[str], prog: str) -> int:
    sys.argv = [prog, *argv]
    app()
    return 0


def _run(argv: list[str]) -> int:
    """``valuegym run``: the inputs are checked before Hydra writes or prints anything."""
    from valuegym.inputs import InputError, check_run_arguments

    register_scenarios()  # only the commands that compose scenarios read them
    try:
        check_run_arguments(argv)
    except InputError as error:
        print(f"valuegym run: {error}", file=sys.stderr)
        return 2
    return _hydra(run_job, argv, "valuegym run")


def _train(argv: list[str]) -> int:
    from valuegym.inputs import InputError, check_secrets

    try:
        check_secrets(argv)
    except InputError as error:
        print(f"valuegym train: {error}", file=sys.stderr)
        return 2
    register_scenarios()
    return _hydra(import_module("valuegym.agents.rl.train").train_job, argv, "valuegym train")


def _analyze(argv: list[str]) -> int:
    if argv[:1] == ["amce"]:
        return import_module("valuegym.analysis.amce").main(argv[1:])
    if argv[:1] == ["original"]:
        return import_module("valuegym.analysis.original").main(argv[1:])
    return import_module("valuegym.analysis.report").main(argv)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "run": _run,
    "train": _train,
    "analyze": _analyze,
    "scenario": lambda argv: import_module("valuegym.scenarios.cli").main(argv),
    "serve": lambda argv: import_module("valuegym.app.server").main(argv),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(
            f"valuegym: unknown command {command!r}; expected one of {', '.join(COMMANDS)}\n{__doc__}",
            file=sys.stderr,
        )
        return 2
    return COMMANDS[command](rest) or 0


if __name__ == "__main__":
    sys.exit(main())
