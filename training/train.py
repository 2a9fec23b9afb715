"""``valuegym train``: multi-agent PPO with RLlib's new API stack on any valuegym scenario.

    valuegym train scenario=decide_sim/low iterations=50
    valuegym train scenario=decide_sim/high policy_sharing=independent \
        '+scenario.slots=[{agents: [Delta], role: background, policy: scripted/ethical}]'
    valuegym train -m scenario=decide_sim/low,decide_sim/high seed=0,1      # a Hydra sweep

The scenario's focal seats learn (one shared module, or one module per agent); its
background seats are played inside the environment adapter by the policy their slot names
and never train. The run directory (``outputs/train/<date>/<time>``) receives
``config.yaml``, ``training.csv`` (one row per iteration) and ``checkpoints/iter_NNNNNN``
every ``checkpoint_every`` iterations plus ``checkpoints/final``, each playable with
``valuegym run agent=rl agent.checkpoint=<dir>``. ``ray.address=auto`` (or ``RAY_ADDRESS``)
trains on an existing cluster with ``env_runners`` / ``learners`` from the config.
"""

from __future__ import annotations

import csv
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import hydra
import ray
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from tqdm import tqdm

from valuegym import quiet_library_logs
from valuegym.agents.rl.module import MaskedPPOTorchRLModule
from valuegym.agents.rl.observation import AffectShapingConfig, is_masked
from valuegym.agents.rl.policy import CheckpointInfo
from valuegym.runner.seats import seat_configs
from valuegym.scenarios import Scenario, scenario_from_dict
from valuegym.training.env_adapter import AdapterConfig, ValuegymMultiAgentEnv

log = logging.getLogger("valuegym.train")

SHARED_MODULE = "shared"
POLICY_SHARING = ("shared", "independent")
CSV_FIELDS = (
    "iteration",
    "env_steps",
    "episodes",
    "episode_return_mean",
    "episode_len_mean",
    "iteration_s",
)


@dataclass(frozen=True)
class TrainingPlan:
    """Who learns what: the adapter's config, the modules and which focal agent each one plays."""

    scenario: Scenario
    adapter: AdapterConfig
    agent_modules: dict[str, str]  # focal agent -> module id

    @property
    def modules(self) -> dict[str, list[str]]:
        """module id -> the focal agents it plays, in seat order."""
        modules: dict[str, list[str]] = {}
        for agent, module in self.agent_modules.items():
            modules.setdefault(module, []).append(agent)
        return modules


class AgentToModule:
    """RLlib's ``policy_mapping_fn``: a plain lookup, so it pickles to remote env runners."""

    def __init__(self, agent_modules: Mapping[str, str]) -> None:
        self.agent_modules = dict(agent_modules)

    def __call__(self, agent_id: str, episode: Any = None, **kwargs: Any) -> str:
        return self.agent_modules[agent_id]


def training_plan(cfg: DictConfig, scenario: Scenario) -> TrainingPlan:
    """Validate the training config against the scenario and decide who learns."""
    if cfg.policy_sharing not in POLICY_SHARING:
        raise ValueError(f"policy_sharing must be one of {POLICY_SHARING}, got {cfg.policy_sharing!r}")
    reward = OmegaConf.to_container(cfg.reward, resolve=True).get(scenario.env) or {}
    try:  # the environment's own Params model validates the reward parameters
        rewarded = scenario_from_dict(
            {**scenario.model_dump(exclude={"name"}), "params": {**scenario.params, **reward}},
            name=scenario.name,
        )
    except ValueError as error:
        raise ValueError(f"reward.{scenario.env} {reward} does not fit the environment: {error}") from None
    background = {seat.agent: seat.config for seat in seat_configs(scenario, focal=None)}
    focal = [agent for agent in scenario.agent_ids() if agent not in background]
    affect = None
    if cfg.affect.enabled:
        affect = AffectShapingConfig(
            params=OmegaConf.to_container(cfg.affect.params, resolve=True),
            features=bool(cfg.affect.features),
        )
    adapter = AdapterConfig(
        env=scenario.env,
        params=rewarded.params,
        background=background,
        affect=affect,
        scenario=scenario.name,
        seed=int(cfg.seed),
    )
    if cfg.policy_sharing == "shared":
        agent_modules = dict.fromkeys(focal, SHARED_MODULE)
    else:
        agent_modules = {agent: agent for agent in focal}
    return TrainingPlan(scenario, adapter, agent_modules)


def build_algorithm(cfg: DictConfig, plan: TrainingPlan) -> Algorithm:
    """The RLlib algorithm for the plan (Ray must be initialised)."""
    ppo = cfg.algo
    if ppo.name != "ppo":
        raise ValueError(f"unknown algo {ppo.name!r}; valuegym trains with ppo")
    # Torch's default thread pool makes the tiny per-step forward passes ~10x slower on a busy machine.
    torch.set_num_threads(int(cfg.torch_threads))
    probe = ValuegymMultiAgentEnv(plan.adapter.to_env_config())  # the spaces RLlib will see
    specs = {}
    for module, agents in plan.modules.items():
        observation_space, action_space = probe.observation_spaces[agents[0]], probe.action_spaces[agents[0]]
        if any(
            probe.observation_spaces[a] != observation_space or probe.action_spaces[a] != action_space
            for a in agents
        ):
            raise ValueError(
                f"agents {agents} have different observation or action spaces and cannot share "
                "one module; use policy_sharing=independent"
            )
        specs[module] = RLModuleSpec(
            # Masked discrete envs need the masking module; a Box observation takes PPO's default.
            module_class=MaskedPPOTorchRLModule
            if is_masked(probe.env.observation_space(agents[0]))
            else None,
            observation_space=observation_space,
            action_space=action_space,
            model_config=DefaultModelConfig(fcnet_hiddens=list(ppo.hidden)),
        )
    probe.close()
    config = (
        PPOConfig()
        .environment(ValuegymMultiAgentEnv, env_config=plan.adapter.to_env_config())
        .env_runners(
            num_env_runners=int(cfg.env_runners),
            num_envs_per_env_runner=int(cfg.envs_per_env_runner),
        )
        .learners(num_learners=int(cfg.learners))
        .multi_agent(
            policies=set(specs),
            policy_mapping_fn=AgentToModule(plan.agent_modules),
            policies_to_train=sorted(specs),
        )
        .rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs=specs))
        .training(
            train_batch_size_per_learner=int(cfg.train_batch_size),
            minibatch_size=int(cfg.minibatch_size),
            num_epochs=int(cfg.epochs),
            lr=float(cfg.lr),
            gamma=float(ppo.gamma),
            lambda_=float(ppo.lambda_),
            clip_param=float(ppo.clip_param),
            entropy_coeff=float(ppo.entropy_coeff),
            vf_loss_coeff=float(ppo.vf_loss_coeff),
        )
        .reporting(metrics_num_episodes_for_smoothing=int(cfg.metrics_episodes))
        .debugging(seed=int(cfg.seed))
    )
    return config.build_algo()


def result_row(iteration: int, result: Mapping[str, Any], modules: list[str]) -> dict[str, Any]:
    """One ``training.csv`` row from an RLlib result: returns overall and per module."""
    runners = result.get("env_runners", {})
    per_module = runners.get("module_episode_returns_mean", {})
    return {
        "iteration": iteration,
        "env_steps": result["num_env_steps_sampled_lifetime"],
        "episodes": runners.get("num_episodes_lifetime"),
        "episode_return_mean": runners.get("episode_return_mean"),
        "episode_len_mean": runners.get("episode_len_mean"),
        "iteration_s": result.get("time_this_iter_s"),
        **{f"return_{module}": per_module.get(module) for module in modules},
    }


def save_checkpoint(algo: Algorithm, plan: TrainingPlan, path: Path, iteration: int) -> Path:
    """RLlib's algorithm checkpoint plus ``valuegym.json`` (what :class:`RLPolicy` needs)."""
    algo.save_to_path(str(path))
    affect = plan.adapter.affect
    CheckpointInfo(
        env=plan.scenario.env,
        scenario=plan.scenario.name,
        modules=plan.modules,
        affect=None if affect is None else asdict(affect),
        iteration=iteration,
    ).write(path)
    return path


def train(
    algo: Algorithm,
    plan: TrainingPlan,
    iterations: int,
    run_dir: Path,
    checkpoint_every: int,
    quiet: bool = False,
) -> list[dict[str, Any]]:
    """Run ``iterations`` training iterations; write ``training.csv`` and the checkpoints.

    A bar on stderr counts iterations, with the rate and ETA from the iterations so far and
    the last return and env steps.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    checkpoints = run_dir / "checkpoints"
    modules = list(plan.modules)
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=iterations, unit="it", disable=quiet, file=sys.stderr, dynamic_ncols=True, desc="train")
    with (run_dir / "training.csv").open("w", newline="") as handle, bar:
        writer = csv.DictWriter(handle, fieldnames=[*CSV_FIELDS, *(f"return_{m}" for m in modules)])
        writer.writeheader()
        for iteration in range(1, iterations + 1):
            row = result_row(iteration, algo.train(), modules)
            rows.append(row)
            writer.writerow(row)
            handle.flush()  # a long run can be watched (and survives a crash) row by row
            log.debug(
                "iteration %d: return %.3f over %s env steps",
                iteration,
                row["episode_return_mean"] or float("nan"),
                row["env_steps"],
            )
            bar.set_postfix(return_mean=row["episode_return_mean"], env_steps=row["env_steps"], refresh=False)
            bar.update(1)
            if checkpoint_every > 0 and iteration % checkpoint_every == 0:
                save_checkpoint(algo, plan, checkpoints / f"iter_{iteration:06d}", iteration)
    save_checkpoint(algo, plan, checkpoints / "final", iterations)
    return rows


@contextmanager
def ray_session(address: str | None, num_cpus: int | None) -> Iterator[None]:
    """Ray for the training run: a cluster (``address``/``RAY_ADDRESS``) or a local instance."""
    if ray.is_initialized():  # the caller manages Ray (tests, notebooks)
        yield
        return
    options: dict[str, Any] = {"address": address, "include_dashboard": False}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        options["num_cpus"] = num_cpus  # only a local instance takes a CPU count
    ray.init(**options)
    try:
        yield
    finally:
        ray.shutdown()


@hydra.main(version_base="1.3", config_path="pkg://valuegym.conf", config_name="train")
def train_job(cfg: DictConfig) -> None:
    """One Hydra job: train on the chosen scenario into the job's output directory."""
    quiet_library_logs()
    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    scenario = scenario_from_dict(
        OmegaConf.to_container(cfg.scenario, resolve=True), name=hydra_config.runtime.choices["scenario"]
    )
    plan = training_plan(cfg, scenario)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    with ray_session(cfg.ray.address, cfg.ray.num_cpus):
        algo = build_algorithm(cfg, plan)
        try:
            rows = train(algo, plan, int(cfg.iterations), run_dir, int(cfg.checkpoint_every), bool(cfg.quiet))
        finally:
            algo.stop()
    log.info(
        "%s: %d iterations, final return %s -> %s",
        scenario.name,
        len(rows),
        rows[-1]["episode_return_mean"],
        run_dir / "checkpoints" / "final",
    )
