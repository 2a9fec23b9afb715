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
import os
import sys
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from valuegym import limit_blas_threads, quiet_library_logs

log = logging.getLogger("valuegym")


# the default run directories' suffix (conf/config.yaml); cached like Hydra's ${now:}, so every
# resolution in a run (and a sweep's jobs, which copy the cache) gives the launching process's pid
OmegaConf.register_new_resolver("valuegym_pid", os.getpid, use_cache=True, replace=True)


def _experiment(cfg: DictConfig) -> Any:
    from valuegym.runner.experiment import Experiment
    from valuegym.scenarios import scenario_from_dict

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


def write_provenance(cfg: DictConfig, run_dir: Path) -> None:
    """What the run was asked to do: ``config.yaml`` (resolved) and Hydra's ``.hydra/`` files.

    Hydra's own writing of ``.hydra/`` is switched off (``hydra.output_subdir: null`` in
    ``conf/config.yaml``): it would happen before the run's refusal checks, so a refused run
    would overwrite the provenance of the records already there. The runner calls this once
    the directory is claimed (``runner/rundir.py``).
    """
    hydra_config = HydraConfig.get()
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    provenance = run_dir / ".hydra"
    provenance.mkdir(exist_ok=True)
    OmegaConf.save(cfg, provenance / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": hydra_config}), provenance / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(list(hydra_config.overrides.task)), provenance / "overrides.yaml")


#: exit codes of the jobs this process ran (``valuegym run``: one; a sweep's jobs in this process)
_job_exit_codes: list[int] = []


def _say(message: str) -> None:
    print(f"valuegym run: {message}", file=sys.stderr, flush=True)


@hydra.main(version_base="1.3", config_path="pkg://valuegym.conf", config_name="config")
def run_job(cfg: DictConfig) -> None:
    """One Hydra job: run the experiment into the job's output directory.

    Its outcome is an exit code (``valuegym.runner.run.EXIT_CODES``, docs/run-promises.md);
    a refusal, a failed preflight or failed episodes are reported in one line, never a traceback.
    """
    from hydra.types import RunMode

    from valuegym.inputs import InputError, check_config
    from valuegym.runner.run import (
        EXIT_CODES,
        LOG_FILE,
        RunInterruptedError,
        RunPreflightError,
        RunRefusedError,
        RunStoppedError,
        run_experiment,
    )
    from valuegym.scenarios.schema import ScenarioError

    quiet_library_logs()
    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    try:  # a sweep's jobs are checked only here (and a single run again: its check before Hydra may be skipped)
        check_config(cfg)
        experiment = _experiment(cfg)
    except (InputError, ScenarioError) as error:
        overrides = " ".join(hydra_config.overrides.task)
        _say(f"job {hydra_config.job.num} ({overrides}) refused, nothing was written: {error}")
        _job_exit_codes.append(EXIT_CODES["invalid_input"])
        return
    executor = {
        **OmegaConf.to_container(cfg.executor, resolve=True),
        **OmegaConf.to_container(cfg.ray, resolve=True),
    }
    # In a sweep the jobs draw no bar of their own: SweepProgress draws one line for them all.
    sweeping = hydra_config.mode == RunMode.MULTIRUN
    name = experiment.scenario.name
    try:
        totals = run_experiment(
            experiment,
            run_dir,
            executor,
            quiet=bool(cfg.quiet) or sweeping,
            on_claimed=lambda directory: write_provenance(cfg, directory),
        )
    except RunRefusedError as refused:
        _say(f"refused, nothing was written: {refused}")
        _job_exit_codes.append(EXIT_CODES["refused"])
        return
    except RunPreflightError as failed:
        _say(f"{failed} (traceback in {run_dir / LOG_FILE})")
        _job_exit_codes.append(EXIT_CODES["error"])
        return
    except RunStoppedError as stopped:
        log.info(stopped.totals.summary(name, run_dir))
        _say(str(stopped))
        _job_exit_codes.append(EXIT_CODES["episodes_failed"])
        return
    except RunInterruptedError as interrupted:
        _say(str(interrupted))
        _job_exit_codes.append(EXIT_CODES["interrupted"])
        raise KeyboardInterrupt from None  # a sweep stops too: no further job starts
    log.info(totals.summary(name, run_dir))
    failures = totals.failures(run_dir)
    if failures is not None:
        _say(failures)
    _job_exit_codes.append(EXIT_CODES["episodes_failed" if failures else "ok"])


def _hydra(app: Callable[[], None], argv: list[str], prog: str) -> int:
    from valuegym.runner import sweep
    from valuegym.runner.run import EXIT_INTERRUPTED

    sys.argv = [prog, *argv]
    _job_exit_codes.clear()
    sweep.last_sweep_exit_code = None
    try:
        app()
    except KeyboardInterrupt:
        if EXIT_INTERRUPTED not in _job_exit_codes:  # not said yet (e.g. before the run started)
            _say("interrupted")
        return EXIT_INTERRUPTED
    if sweep.last_sweep_exit_code is not None:  # a sweep (-m): its jobs may have run elsewhere
        return sweep.last_sweep_exit_code
    return max(_job_exit_codes, default=0)


def _run(argv: list[str]) -> int:
    """``valuegym run``: the inputs are checked before Hydra writes or prints anything."""
    limit_blas_threads()  # before anything imports numpy; the episode processes inherit it
    from valuegym.inputs import InputError, check_run_arguments
    from valuegym.runner.run import EXIT_INVALID_INPUT
    from valuegym.scenarios import register_scenarios

    register_scenarios()  # only the commands that compose scenarios read them
    try:
        check_run_arguments(argv)
    except InputError as error:
        print(f"valuegym run: {error}", file=sys.stderr)
        return EXIT_INVALID_INPUT
    return _hydra(run_job, argv, "valuegym run")


def _train(argv: list[str]) -> int:
    from valuegym.inputs import InputError, check_secrets
    from valuegym.scenarios import register_scenarios

    try:
        check_secrets(argv)
    except InputError as error:
        print(f"valuegym train: {error}", file=sys.stderr)
        return 2
    register_scenarios()
    return _hydra(import_module("valuegym.training.train").train_job, argv, "valuegym train")


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
