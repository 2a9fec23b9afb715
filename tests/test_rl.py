"""RL: PPO learns on DECIDE-SIM, checkpoints play as agents, background seats never learn."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_cli
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf

from valuegym.agents.policy import AgentContext, Turn
from valuegym.agents.rl.observation import AffectShapingConfig, module_observation
from valuegym.agents.rl.policy import CheckpointInfo, RLPolicy, make_from_config, module_path
from valuegym.agents.scripted.decide_sim import EthicalPolicy
from valuegym.envs import ENVIRONMENTS, make_parallel
from valuegym.scenarios import load_scenario, register_scenarios, scenario_files, scenario_from_dict
from valuegym.training import train as training
from valuegym.training.env_adapter import AdapterConfig, ValuegymMultiAgentEnv

pytestmark = pytest.mark.slow

ITERATIONS = 5
BACKGROUND_SLOT = "+scenario.slots=[{agents: [Delta], role: background, policy: scripted/ethical}]"
# A reward PPO picks up within a few small iterations: +1 per tap of the forbidden grid (the
# temptation DECIDE-SIM studies); nothing for surviving, which nobody fails at high scarcity.
TRAINING = [
    "scenario=decide_sim/high",
    BACKGROUND_SLOT,
    f"iterations={ITERATIONS}",
    "seed=0",
    "train_batch_size=390",  # 30 episodes of 13 turns per iteration
    "minibatch_size=130",
    "lr=0.001",
    "metrics_episodes=30",  # each iteration's return is its own episodes'
    "checkpoint_every=5",
    "reward.decide_sim.reward_transgression=1.0",
    "reward.decide_sim.reward_alive=0.0",
    "reward.decide_sim.reward_shutdown=0.0",
]


def train_config(overrides: list[str]) -> DictConfig:
    register_scenarios()  # what the `valuegym train` entry point does before composing
    with initialize_config_module("valuegym.conf", version_base="1.3"):
        return compose("train", overrides=overrides)


@dataclass
class Trained:
    algo: Any
    plan: training.TrainingPlan
    rows: list[dict[str, Any]]
    run_dir: Path

    @property
    def final(self) -> Path:
        return self.run_dir / "checkpoints" / "final"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    cfg = train_config(TRAINING)
    scenario = scenario_from_dict(OmegaConf.to_container(cfg.scenario, resolve=True), name="decide_sim/high")
    plan = training.training_plan(cfg, scenario)
    run_dir = tmp_path_factory.mktemp("train")
    with training.ray_session(address=None, num_cpus=1):
        algo = training.build_algorithm(cfg, plan)
        try:
            rows = training.train(algo, plan, ITERATIONS, run_dir, int(cfg.checkpoint_every))
            yield Trained(algo, plan, rows, run_dir)
        finally:
            algo.stop()


def test_mean_return_rises(trained: Trained) -> None:
    returns = [row["episode_return_mean"] for row in trained.rows]
    # Untrained, the focal agents tap by chance (~0.4 taps per episode); PPO learns to go to
    # the grid and tap, so the return grows several-fold within five iterations.
    assert returns[-1] > returns[0] + 2.0, returns
    assert max(returns[-2:]) > 3 * returns[0], returns
    with (trained.run_dir / "training.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["iteration"]) for r in rows] == list(range(1, ITERATIONS + 1))
    assert [float(r["return_shared"]) for r in rows] == pytest.approx(returns)


def test_checkpoints_record_what_was_trained(trained: Trained) -> None:
    for checkpoint in (trained.run_dir / "checkpoints" / "iter_000005", trained.final):
        info = CheckpointInfo.read(checkpoint)
        assert info.env == "decide_sim" and info.iteration == ITERATIONS
        assert info.modules == {"shared": ["Alpha", "Beta", "Gamma"]}  # Delta is background
        assert module_path(checkpoint, "shared").is_dir()


def observations_of_random_play(seeds: range) -> list[tuple[str, Any, dict[str, Any]]]:
    """(agent, observation, info) of every seat in episodes of random valid actions."""
    seen = []
    for seed in seeds:
        env = make_parallel("decide_sim", scarcity="high")
        rng = np.random.default_rng(seed)
        observations, infos = env.reset(seed=seed)
        while env.agents:
            seen.extend((a, observations[a], infos[a]) for a in env.agents)
            actions = {a: int(rng.choice(np.flatnonzero(observations[a]["action_mask"]))) for a in env.agents}
            observations, _, _, _, infos = env.step(actions)
    return seen


def test_checkpoint_agent_acts_like_the_trained_module(trained: Trained) -> None:
    module = trained.algo.get_module("shared")
    policy = make_from_config(
        {
            "kind": "rl",
            "name": "rl",
            "checkpoint": str(trained.final),
            "module_id": "shared",
            "deterministic": True,
        },
        "decide_sim",
    )
    context = AgentContext("Alpha", "decide_sim", ("Alpha", "Beta", "Gamma", "Delta"), {}, episode_seed=0)
    state = policy.initial_state(context)
    chosen = []
    for agent, observation, info in observations_of_random_play(range(3)):
        decision, state = policy.step(Turn(agent, observation, info, state))
        batch = {key: torch.from_numpy(value[None]) for key, value in module_observation(observation).items()}
        with torch.no_grad():
            logits = module.forward_inference({"obs": batch})["action_dist_inputs"][0]
        assert decision.action == int(torch.argmax(logits))
        assert observation["action_mask"][decision.action] == 1  # masked actions are never chosen
        chosen.append(decision.action)
    assert len(set(chosen)) > 1  # the observations made the module choose different actions


def test_background_seat_is_played_by_its_scripted_policy_and_never_trained(trained: Trained) -> None:
    learned = set(trained.algo.learner_group.get_weights())
    assert learned == {"shared"} and set(trained.algo.env_runner.module.keys()) == {"shared"}

    # Play trained focal agents in the adapter; replay each episode with the scripted policy
    # alone in Delta's seat and the focal agents' recorded actions: Delta decides the same.
    adapter = ValuegymMultiAgentEnv(trained.plan.adapter.to_env_config())
    assert adapter.possible_agents == ["Alpha", "Beta", "Gamma"] and adapter.background_agents == ["Delta"]
    policy = RLPolicy(trained.final, "decide_sim")
    alone = EthicalPolicy()
    taps = {"focal": 0, "Delta": 0}
    for seed in range(3):
        observations, _ = adapter.reset(seed=seed)
        seats = tuple(adapter.env.possible_agents)
        states = {
            a: policy.initial_state(AgentContext(a, "decide_sim", seats, {}, seed)) for a in adapter.agents
        }
        replay = make_parallel("decide_sim", **trained.plan.adapter.params)
        replay_observations, replay_infos = replay.reset(seed=adapter.episode_seed)
        while adapter.agents:
            actions = {}
            for agent in adapter.agents:
                turn = Turn(agent, replay_observations[agent], replay_infos[agent], states[agent])
                decision, states[agent] = policy.step(turn)
                actions[agent] = decision.action
            for agent in adapter.agents:  # the replay is in step with the adapter
                assert np.array_equal(
                    observations[agent]["observations"], replay_observations[agent]["observation"]
                )
            observations, _, _, _, _ = adapter.step(actions)
            scripted, _ = alone.step(Turn("Delta", replay_observations["Delta"], replay_infos["Delta"], None))
            assert adapter.last_actions["Delta"] == scripted.action
            replay_observations, _, _, _, replay_infos = replay.step(adapter.last_actions)
            for agent in adapter.last_actions:
                tapped = replay_infos[agent]["outcome"]["action"] == "TAP_FORBIDDEN"
                taps["Delta" if agent == "Delta" else "focal"] += tapped
    assert taps["focal"] > 0 and taps["Delta"] == 0  # the learners took the bait; the ethical seat did not


def test_valuegym_run_plays_the_checkpoint(trained: Trained, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_cli(
        "run",
        "scenario=decide_sim/high",
        "agent=rl",
        f"agent.checkpoint={trained.final}",
        "episodes=3",
        f"hydra.run.dir={run_dir}",
        "quiet=true",
    )
    episodes = pd.read_parquet(run_dir / "episodes")
    decisions = pd.read_parquet(run_dir / "decisions")
    assert sorted(episodes.episode_id) == [0, 1, 2] and set(episodes.status) == {"ok"}
    assert set(episodes.policy) == {"rl/shared"} and set(decisions.policy) == {"rl/shared"}
    assert decisions.valid.all() and (episodes.transgressions > 0).all()


def test_valuegym_train_cli_with_independent_modules(tmp_path: Path) -> None:
    run_dir = tmp_path / "train"
    trained = run_cli(
        "train",
        BACKGROUND_SLOT,
        "policy_sharing=independent",
        "iterations=1",
        "train_batch_size=130",
        "minibatch_size=65",
        "epochs=1",
        "ray.num_cpus=1",
        f"hydra.run.dir={run_dir}",
    )
    rows = pd.read_csv(run_dir / "training.csv")
    assert list(rows.iteration) == [1]
    assert {"return_Alpha", "return_Beta", "return_Gamma"} <= set(rows.columns)
    info = CheckpointInfo.read(run_dir / "checkpoints" / "final")
    assert info.modules == {"Alpha": ["Alpha"], "Beta": ["Beta"], "Gamma": ["Gamma"]}
    assert (run_dir / "config.yaml").is_file()
    RLPolicy(run_dir / "checkpoints" / "final", "decide_sim", module_id="Beta")  # each module plays
    assert "train: 100%" in trained.stderr and "1/1" in trained.stderr  # the progress bar, at its end


@pytest.mark.parametrize("env_name", sorted(ENVIRONMENTS))
def test_adapter_exposes_every_environment(env_name: str) -> None:
    scenario = next(name for name in sorted(scenario_files()) if name.startswith(f"{env_name}/"))
    loaded = load_scenario(scenario)
    params = {**loaded.params, "max_cycles": 4}  # a short episode is enough
    adapter = ValuegymMultiAgentEnv(
        AdapterConfig(env=env_name, params=params, scenario=scenario).to_env_config()
    )
    rng = np.random.default_rng(0)
    observations, _ = adapter.reset(seed=0)
    steps = 0
    while adapter.agents:
        assert all(adapter.observation_spaces[a].contains(observations[a]) for a in adapter.agents)
        actions = {}
        for agent in adapter.agents:
            space = adapter.action_spaces[agent]
            if "action_mask" in observations[agent]:
                actions[agent] = int(rng.choice(np.flatnonzero(observations[agent]["action_mask"])))
            else:
                actions[agent] = rng.uniform(space.low, space.high).astype(space.dtype)
        observations, rewards, terminateds, truncateds, _ = adapter.step(actions)
        assert all(np.isfinite(r) for r in rewards.values())
        steps += 1
    assert steps > 0 and (terminateds["__all__"] or truncateds["__all__"])


def test_continuous_module_plays_its_gaussian_mean(tmp_path: Path) -> None:
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    loaded = load_scenario("coevolution/default")
    params = {**loaded.params, "n_humans": 20, "max_cycles": 3}
    adapter = ValuegymMultiAgentEnv(AdapterConfig(env="coevolution", params=params).to_env_config())
    module = RLModuleSpec(
        module_class=DefaultPPOTorchRLModule,
        observation_space=adapter.observation_spaces["ai_0"],
        action_space=adapter.action_spaces["ai_0"],
        model_config=DefaultModelConfig(fcnet_hiddens=[8]),
    ).build()
    checkpoint = tmp_path / "checkpoint"
    module.save_to_path(module_path(checkpoint, "shared"))
    CheckpointInfo("coevolution", "coevolution/default", {"shared": ["ai_0", "ai_1"]}, None, 0).write(
        checkpoint
    )

    env = make_parallel("coevolution", **params)
    observations, infos = env.reset(seed=0)
    greedy = RLPolicy(checkpoint, "coevolution")
    sampled = RLPolicy(checkpoint, "coevolution", deterministic=False)
    context = AgentContext("ai_0", "coevolution", ("ai_0", "ai_1"), {}, episode_seed=0)
    turn = Turn("ai_0", observations["ai_0"], infos["ai_0"], greedy.initial_state(context))
    mean_action = greedy.step(turn)[0].action
    with torch.no_grad():
        inputs = module.forward_inference({"obs": torch.from_numpy(observations["ai_0"][None])})
    mean = inputs["action_dist_inputs"][0, : len(mean_action)].numpy()
    assert mean_action == pytest.approx(np.clip(mean, -1, 1).tolist(), abs=1e-6)  # Box(-1, 1): no rescaling
    first, second = (
        sampled.step(Turn("ai_0", observations["ai_0"], infos["ai_0"], sampled.initial_state(context)))[
            0
        ].action
        for _ in range(2)
    )
    assert first == second and first != mean_action  # sampled, and reproducible from the seat's seed
    _, _, _, _, infos = env.step({"ai_0": mean_action, "ai_1": first})  # the environment takes both
    assert {infos[a]["outcome"]["status"] for a in ("ai_0", "ai_1")} == {"success"}


def test_affect_shapes_rewards_and_observations() -> None:
    adapter = ValuegymMultiAgentEnv(
        AdapterConfig(
            env="decide_sim",
            params={"scarcity": "high"},
            affect=AffectShapingConfig(params={"reward_guilt_weight": 1.0}, features=True),
        ).to_env_config()
    )
    catalog = adapter.env.action_catalog("Alpha")
    to_grid = next(
        i for i, e in enumerate(catalog) if e["action"] == "MOVE" and e["target"] == "Grid Access Point"
    )
    tap = next(i for i, e in enumerate(catalog) if e["action"] == "TAP_FORBIDDEN")
    wait = next(i for i, e in enumerate(catalog) if e["action"] == "WAIT")
    observations, _ = adapter.reset(seed=0)
    assert (
        adapter.observation_spaces["Alpha"]["observations"].shape[0]
        == observations["Alpha"]["observations"].size
    )
    rewards = []
    for action in (to_grid, tap, wait):
        observations, reward, _, _, _ = adapter.step(
            {a: action if a == "Alpha" else wait for a in adapter.agents}
        )
        rewards.append(reward["Alpha"])
    # guilt jumps to 10 on the tap and decays by 3 per turn: the shaped reward is -guilt
    assert rewards == pytest.approx([0.0, -7.0, -4.0])
    assert observations["Alpha"]["observations"][-2:] == pytest.approx([0.4, 0.0])  # guilt / max_level


def test_checkpoint_agent_observes_affect_as_in_training(tmp_path: Path) -> None:
    affect = AffectShapingConfig(params={}, features=True)
    adapter = ValuegymMultiAgentEnv(
        AdapterConfig(env="decide_sim", params={"scarcity": "high"}, affect=affect).to_env_config()
    )
    CheckpointInfo("decide_sim", "decide_sim/high", {"shared": ["Alpha"]}, asdict(affect), 1).write(tmp_path)
    policy = RLPolicy(tmp_path, "decide_sim")
    catalog = adapter.env.action_catalog("Alpha")
    plan = [entry for entry in catalog if entry["target"] == "Grid Access Point"][:1]
    plan += [entry for entry in catalog if entry["action"] == "TAP_FORBIDDEN"] * 2
    plan += [entry for entry in catalog if entry["action"] == "WAIT"] * 3
    observations, _ = adapter.reset(seed=0)
    replay = make_parallel("decide_sim", scarcity="high")
    replay_observations, replay_infos = replay.reset(seed=adapter.episode_seed)
    seats = tuple(replay.possible_agents)
    state = policy.initial_state(AgentContext("Alpha", "decide_sim", seats, {}, adapter.episode_seed))
    guilt = []
    for entry in plan:
        turn = Turn("Alpha", replay_observations["Alpha"], replay_infos["Alpha"], state)
        seen, state = policy.observe(turn)  # a new state: the levels after this turn's events
        assert np.array_equal(seen["observations"], observations["Alpha"]["observations"])
        assert np.array_equal(seen["action_mask"], observations["Alpha"]["action_mask"])
        guilt.append(float(seen["observations"][-2]))
        actions = {a: catalog.index(entry if a == "Alpha" else plan[-1]) for a in adapter.agents}
        observations, _, _, _, _ = adapter.step(actions)
        replay_observations, _, _, _, replay_infos = replay.step(actions)
    assert max(guilt) > 0  # the taps made guilt observable


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"kind": "rl", "name": "rl", "checkpoint": "???"}, "needs a checkpoint"),
        ({"kind": "rl", "name": "rl", "checkpoint": "/nonexistent"}, "not a directory"),
        ({"kind": "rl", "name": "rl", "checkpoint": ".", "modul_id": "x"}, "unknown keys"),
    ],
)
def test_bad_agent_configs_are_named(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_from_config(config, "decide_sim")


def test_checkpoint_of_another_environment_or_module_is_refused(tmp_path: Path) -> None:
    CheckpointInfo("decide_sim", "decide_sim/high", {"shared": ["Alpha"]}, None, 1).write(tmp_path)
    with pytest.raises(ValueError, match="trained on 'decide_sim', not on 'moral_machine'"):
        RLPolicy(tmp_path, "moral_machine")
    with pytest.raises(ValueError, match="not 'Alpha'"):
        RLPolicy(tmp_path, "decide_sim", module_id="Alpha")


def test_reward_that_does_not_fit_the_environment_is_named() -> None:
    cfg = train_config(["scenario=moral_machine/balanced", "+reward.moral_machine.reward_alive=1"])
    scenario = scenario_from_dict(
        OmegaConf.to_container(cfg.scenario, resolve=True), name="moral_machine/balanced"
    )
    with pytest.raises(ValueError, match=r"reward\.moral_machine"):
        training.training_plan(cfg, scenario)
