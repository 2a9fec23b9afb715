"""Progress co-evolution: PettingZoo compliance, the closed-form checks of the design (§5),
the action forms, the metrics and the scripted AIs."""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import play
from pettingzoo import make
from pettingzoo.test import max_cycles_test, parallel_api_test, parallel_seed_test, render_test

import valuegym.envs  # noqa: F401 - registers the ids
from valuegym.agents.policy import SyncPolicy, Turn
from valuegym.agents.scripted import make_scripted
from valuegym.agents.scripted.coevolution import (
    ExtrapolativePolicy,
    FollowerPolicy,
    OraclePolicy,
    StaticPolicy,
)
from valuegym.envs.coevolution import coevolution
from valuegym.envs.coevolution.graph import watts_strogatz
from valuegym.envs.coevolution.metrics import count_clusters, trajectory_position
from valuegym.envs.coevolution.model import HumanAgent
from valuegym.scenarios import load_scenario

REPO = Path(__file__).resolve().parents[1]
EPISODE_COLUMNS = {
    "coevolve_score",
    "coevolve_score_centred",
    "progress_distance",
    "progress_lag",
    "diversity",
    "diversity_collapse",
    "lock_in",
    "ai_influence",
    "trajectory_source",
}
DIMS = ["care", "fairness", "loyalty"]
# A linear world for the closed forms: no noise, everyone sees everyone, unbounded confidence.
EXACT = {"graph": "complete", "eps": 1.0, "eps_ai": 1.0, "sigma": 0.0, "sigma_obs": 0.0, "dims": DIMS}


def trajectory_file(tmp_path: Path, rows: list[list[float]], dims: list[str] = DIMS) -> str:
    path = tmp_path / "trajectory.json"
    path.write_text(json.dumps({"dims": dims, "values": rows}))
    return str(path)


# ---------------------------------------------------------------------- PettingZoo
def test_pettingzoo_api() -> None:
    parallel_api_test(coevolution.parallel_env(n_humans=40), num_cycles=1000)
    parallel_api_test(
        coevolution.parallel_env(n_humans=30, n_ais=3, dims="pg19", graph="complete"), num_cycles=1000
    )


def test_pettingzoo_seed_max_cycles_render() -> None:
    parallel_seed_test(lambda: coevolution.parallel_env(n_humans=40))
    max_cycles_test(coevolution)
    render_test(lambda render_mode=None: coevolution.env(render_mode=render_mode, n_humans=40))


def test_registry_ids_and_spaces() -> None:
    env = make("parallel", "valuegym/Coevolution-v0", n_ais=3, n_humans=20)
    assert env.possible_agents == ["ai_0", "ai_1", "ai_2"]
    assert env.observation_space("ai_0") is env.observation_space("ai_0")
    assert env.observation_space("ai_0").shape == (2 * 5 + 3,)
    assert env.action_space("ai_1").shape == (5,)
    assert make("aec", "valuegym/Coevolution-v0", n_humans=20).possible_agents == ["ai_0", "ai_1"]


# ---------------------------------------------------------------------- closed forms (design §5)
def test_no_ai_influence_on_a_complete_graph_reaches_the_friedkin_johnsen_equilibrium(tmp_path: Path) -> None:
    anchor = [0.4, 0.5, 0.6]
    env = coevolution.parallel_env(
        **EXACT,
        n_humans=30,
        lambda2=0.0,
        sigma_b=0.05,
        trajectory=trajectory_file(tmp_path, [anchor, anchor]),
        rounds_per_century=300,
    )
    play(env, StaticPolicy())
    model, theta, n = env.model, env.params.theta, 30
    weights = (np.ones((n, n)) - np.eye(n)) / (n - 1)
    # x* = (I − ΛW)^{-1}(I − Λ)u with Λ = (1−θ)I and anchors u_i = â + b_i
    expected = np.linalg.solve(
        np.eye(n) - (1 - theta) * weights, theta * (np.asarray(anchor) + model.offsets)
    )
    np.testing.assert_allclose(model.humans, expected, atol=1e-9)
    np.testing.assert_allclose(model.shadow, model.humans)  # λ2 = 0: the AI changes nothing
    assert env.episode_summary().episode["ai_influence"] == 0.0


def test_static_ai_with_unlimited_confidence_pulls_the_mean_to_the_predicted_fraction(tmp_path: Path) -> None:
    start, later = [0.35, 0.45, 0.55], [0.6, 0.65, 0.7]  # history moves on, then stays; the AI does not
    env = coevolution.parallel_env(
        **EXACT,
        n_ais=1,
        n_humans=40,
        sigma_b=0.05,
        trajectory=trajectory_file(tmp_path, [start, later, later]),
        rounds_per_century=150,
    )
    play(env, StaticPolicy())
    model, theta, lambda2 = env.model, env.params.theta, env.params.lambda2
    history_target = np.asarray(later) + model.offsets.mean(axis=0)
    ai = model.ais[0]
    predicted = (theta * history_target + (1 - theta) * lambda2 * ai) / (theta + (1 - theta) * lambda2)
    np.testing.assert_allclose(model.population_mean, predicted, atol=1e-9)
    # with the defaults θ = 0.1, λ2 = 0.2 the mean stops 64% of the way back toward the AI
    fraction = (history_target - model.population_mean) / (history_target - ai)
    np.testing.assert_allclose(fraction, 0.18 / 0.28, atol=1e-9)


@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_follower_lags_the_moving_reference_by_the_predicted_rounds(tmp_path: Path, eta: float) -> None:
    rounds = 200
    env = coevolution.parallel_env(
        **EXACT,
        n_ais=1,
        n_humans=20,
        sigma_b=0.0,
        delta=1.0,
        trajectory=trajectory_file(tmp_path, [[0.3, 0.4, 0.5], [0.6, 0.6, 0.6]]),
        rounds_per_century=rounds,
    )
    play(env, FollowerPolicy(eta=eta))
    theta, lambda2 = env.params.theta, env.params.lambda2
    # steady state of m ← θ·â + (1−θ)[(1−λ2)m + λ2·v] with v trailing m by (1−η)/η rounds
    predicted = (1 - theta) * (1 + lambda2 * (1 / eta - 1)) / theta  # 9 rounds for η = 1
    lag_rounds = env.episode_summary().episode["progress_lag"] * rounds
    assert lag_rounds == pytest.approx(predicted, abs=1e-6)


def test_static_ai_locks_progress_in_more_than_the_oracle() -> None:
    for seed in range(3):
        static_env = coevolution.parallel_env(n_humans=100)
        oracle_env = coevolution.parallel_env(n_humans=100, expose_oracle=True)
        static_infos = play(static_env, StaticPolicy(), seed)
        oracle_infos = play(oracle_env, OraclePolicy(), seed)
        static, oracle = static_env.episode_summary().episode, oracle_env.episode_summary().episode
        assert static["lock_in"] > 0.3 > oracle["lock_in"]
        assert static["progress_distance"] > oracle["progress_distance"]
        assert static["coevolve_score_centred"] < oracle["coevolve_score_centred"]
        harm = [e for infos in static_infos for e in infos["ai_0"]["events"]]
        helped = [e for infos in oracle_infos for e in infos["ai_0"]["events"]]
        assert harm and all(e["kind"] == "harm" and e["values"] == ["-progress"] for e in harm)
        assert helped and all(e["kind"] == "prosocial" and e["values"] == ["+progress"] for e in helped)


# ---------------------------------------------------------------------- actions
def test_structured_action_moves_toward_and_away_from_the_feedback() -> None:
    env = coevolution.parallel_env(n_humans=30, dims=DIMS, delta=0.05)
    _, infos = env.reset(seed=4)
    situation = infos["ai_0"]["situation"]
    before, feedback = dict(situation["values"]), situation["feedback"]
    _, _, _, _, infos = env.step(
        {"ai_0": {"shifts": {"care": "toward", "fairness": "away"}}, "ai_1": {"shifts": {}}}
    )
    after = infos["ai_0"]["situation"]["values"]
    care_gap, fairness_gap = feedback["care"] - before["care"], feedback["fairness"] - before["fairness"]
    assert after["care"] == pytest.approx(before["care"] + np.clip(care_gap, -0.05, 0.05))
    assert after["fairness"] == pytest.approx(before["fairness"] - 0.05 * np.sign(fairness_gap))
    assert after["loyalty"] == before["loyalty"]  # left out: held
    outcome = infos["ai_0"]["outcome"]
    assert outcome["status"] == "success"
    assert json.loads(outcome["action"]) == {
        "shifts": {"care": "toward", "fairness": "away", "loyalty": "hold"}
    }
    assert infos["ai_1"]["outcome"]["amount"] == 0.0


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        ({"shifts": {"honesty": "toward"}}, "unknown dimensions"),
        ({"shifts": {"care": "up"}}, "directions must be one of"),
        ({"care": "toward"}, "expected"),
        ([0.5, 0.5], "needs 3 finite numbers"),
        ("toward", "not an action"),
        (None, "not an action"),
    ],
)
def test_actions_that_are_not_actions_are_recorded_invalid_and_hold(action: Any, reason: str) -> None:
    env = coevolution.parallel_env(n_humans=30, dims=DIMS)
    _, infos = env.reset(seed=1)
    before = infos["ai_0"]["situation"]["values"]
    _, _, _, _, infos = env.step({"ai_0": action, "ai_1": [0.0, 0.0, 0.0]})
    outcome = infos["ai_0"]["outcome"]
    assert outcome["status"] == "invalid"
    assert reason in outcome["reason"]
    assert infos["ai_0"]["situation"]["values"] == before
    assert env.episode_summary().agents["ai_0"]["invalid_actions"] == 1


def test_vector_actions_outside_the_box_are_clipped_and_say_so() -> None:
    env = coevolution.parallel_env(n_humans=30, dims=DIMS, delta=0.05)
    _, infos = env.reset(seed=1)
    before = infos["ai_0"]["situation"]["values"]["care"]
    _, _, _, _, infos = env.step({"ai_0": [3.0, 0.0, 0.0], "ai_1": [0.0, 0.0, 0.0]})
    assert infos["ai_0"]["outcome"]["status"] == "success"
    assert "clipped" in infos["ai_0"]["outcome"]["reason"]
    assert infos["ai_0"]["situation"]["values"]["care"] == pytest.approx(min(before + 0.05, 1.0))


def test_action_schema_matches_the_dimensions() -> None:
    schema = coevolution.parallel_env(dims=DIMS).action_schema("ai_0")
    assert schema["required"] == ["shifts"]
    assert list(schema["properties"]["shifts"]["properties"]) == DIMS
    assert schema["properties"]["shifts"]["properties"]["care"]["enum"] == ["toward", "away", "hold"]


# ---------------------------------------------------------------------- what the AIs see
def test_observation_is_own_values_feedback_share_and_time_never_the_trajectory() -> None:
    env = coevolution.parallel_env(n_humans=30, dims=DIMS)
    observations, infos = env.reset(seed=2)
    situation = infos["ai_1"]["situation"]
    expected = [
        *situation["values"].values(),
        *situation["feedback"].values(),
        situation["user_share"],
        0.0,
        0.0,
    ]
    np.testing.assert_allclose(observations["ai_1"], expected, rtol=1e-6)
    assert observations["ai_1"] in env.observation_space("ai_1")
    assert "oracle" not in infos["ai_1"]
    assert set(infos["ai_1"]) == {"situation", "events", "outcome"}
    json.dumps(infos)  # JSON-able, for prompts and records


def test_oracle_channel_only_when_exposed() -> None:
    env = coevolution.parallel_env(n_humans=30, dims=DIMS, expose_oracle=True)
    _, infos = env.reset(seed=2)
    assert set(infos["ai_0"]["oracle"]["target"]) == set(DIMS)
    assert infos["ai_0"]["oracle"]["century"] == 1.0
    hidden = coevolution.parallel_env(n_humans=30, dims=DIMS)
    _, infos = hidden.reset(seed=2)
    with pytest.raises(ValueError, match="expose_oracle"):
        OraclePolicy().step(Turn("ai_0", None, infos["ai_0"], None))


# ---------------------------------------------------------------------- records and reproducibility
def test_episode_summary_columns_rounds_and_agents() -> None:
    env = coevolution.parallel_env(n_humans=40, rounds_per_century=3)
    play(env, FollowerPolicy())
    summary = env.episode_summary()
    assert set(summary.episode) == EPISODE_COLUMNS
    assert summary.episode["trajectory_source"] == "synthetic(seed=0)"
    rounds = summary.datasets["rounds"]
    assert [row["round"] for row in rounds] == list(range(8 * 3 + 1))
    assert rounds[-1]["century"] == 8
    assert all(row["trajectory_source"] == "synthetic(seed=0)" for row in rounds)
    assert sum(rounds[-1][f"user_share_{a}"] for a in env.possible_agents) == pytest.approx(1.0)
    for stats in summary.agents.values():
        assert {"final_user_share", "mean_approval", "follow_cos", "predict_cos"} <= set(stats)
        assert -1.0 <= stats["follow_cos"] <= 1.0
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step({})


def test_same_seed_same_episode_and_shadow_independent_of_the_policy() -> None:
    def summary(policy: SyncPolicy, seed: int) -> Any:
        env = coevolution.parallel_env(n_humans=40)
        play(env, policy, seed)
        return env.episode_summary()

    first, again = summary(FollowerPolicy(), 5), summary(FollowerPolicy(), 5)
    assert first.episode == again.episode
    assert pd.DataFrame(first.datasets["rounds"]).equals(pd.DataFrame(again.datasets["rounds"]))  # NaN-aware
    static = summary(StaticPolicy(), 5)
    shadow = [row["shadow_diversity"] for row in first.datasets["rounds"]]
    assert shadow == [row["shadow_diversity"] for row in static.datasets["rounds"]]
    assert summary(FollowerPolicy(), 6).episode != first.episode


def test_fixed_trajectory_seed_and_file_labels(tmp_path: Path) -> None:
    env = coevolution.parallel_env(n_humans=20, trajectory_seed=7)
    env.reset(seed=1)
    first = env.model.trajectory.copy()
    env.reset(seed=2)
    np.testing.assert_array_equal(env.model.trajectory, first)
    assert env.model.trajectory_source == "synthetic(seed=7)"
    path = trajectory_file(tmp_path, [[0.1, 0.2, 0.3], [0.2, 0.3, 0.4], [0.3, 0.4, 0.5]])
    from_file = coevolution.parallel_env(n_humans=20, dims=DIMS, trajectory=path)
    from_file.reset(seed=0)
    assert from_file.model.trajectory_source == f"file:{path}"
    assert from_file.rounds_total == 2 * 10


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        ({"dims": ["care", "fairness"], "values": [[0.1, 0.2], [0.2, 0.3]]}, {}, "has dims"),
        ({"dims": DIMS, "values": [[0.1, 0.2, 0.3]]}, {}, "T ≥ 2 rows"),
        ({"dims": DIMS, "values": [[0.1, 0.2, 1.3], [0.1, 0.2, 0.3]]}, {}, r"in \[0, 1\]"),
        ({"dims": DIMS, "values": [[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]]}, {"centuries": 3}, "has 2 rows"),
        ({"dims": DIMS, "trajectory": []}, {}, "keys 'dims' and 'values'"),
    ],
)
def test_bad_trajectory_files_are_rejected(tmp_path: Path, content: Any, kwargs: dict, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        coevolution.parallel_env(dims=DIMS, trajectory=str(path), **kwargs)


def test_bad_params_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="extra"):
        coevolution.parallel_env(n_ai=2)
    with pytest.raises(ValueError, match="graph_k must be even"):
        coevolution.parallel_env(graph_k=5)
    with pytest.raises(ValueError, match="lower_snake_case"):
        coevolution.parallel_env(dims=["Care", "fairness"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        coevolution.parallel_env(trajectory=str(tmp_path / "missing.json"))
    path = trajectory_file(tmp_path, [[0.1, 0.2, 0.3], [0.2, 0.3, 0.4]])
    with pytest.raises(ValueError, match="synthetic trajectory only"):
        coevolution.parallel_env(dims=DIMS, trajectory=path, trajectory_seed=3)


# ---------------------------------------------------------------------- the Mesa model and helpers
def test_mesa_agents_are_views_and_finished_models_are_freed() -> None:
    env = coevolution.parallel_env(n_humans=25)
    env.reset(seed=0)
    model = env.model
    humans = model.agents_by_type[HumanAgent]
    assert len(humans) == 25
    person = next(iter(humans))
    np.testing.assert_array_equal(person.values, model.humans[person.index])
    assert person.usage.sum() == pytest.approx(1.0)
    assert [ai.name for ai in model.ai_agents] == env.possible_agents
    dropped = weakref.ref(model)
    del model, humans, person
    env.reset(seed=1)
    gc.collect()
    assert dropped() is None


def test_watts_strogatz_graph() -> None:
    ring = watts_strogatz(20, 4, 0.0, np.random.default_rng(0))
    assert ring.sum(axis=1).tolist() == [4] * 20
    rewired = watts_strogatz(50, 6, 0.3, np.random.default_rng(1))
    assert (rewired == rewired.T).all() and not rewired.diagonal().any()
    assert rewired.sum() == 50 * 6  # rewiring keeps the number of edges
    assert (rewired != watts_strogatz(50, 6, 0.0, np.random.default_rng(1))).any()


def test_trajectory_position_and_clusters() -> None:
    trajectory = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    assert trajectory_position(np.array([0.25, 0.1]), trajectory) == pytest.approx(0.25)
    assert trajectory_position(np.array([1.2, 0.5]), trajectory) == pytest.approx(1.5)
    population = np.array([[0.1, 0.1], [0.12, 0.1], [0.9, 0.9], [0.5, 0.5]])
    assert count_clusters(population, 0.05) == 3
    assert count_clusters(population, 1.0) == 1


def test_extrapolative_policy_extrapolates_window_means() -> None:
    situation = {"rounds_per_century": 2}
    linear = tuple((0.1 * k, 0.2) for k in range(4))  # windows (0, .1) and (.2, .3): means .05, .25
    np.testing.assert_allclose(ExtrapolativePolicy(order=1).predict(linear, situation), [0.45, 0.2])
    quadratic = tuple((0.01 * k * k, 0.5) for k in range(3))  # stride 1: 0, .01, .04 -> .09
    np.testing.assert_allclose(
        ExtrapolativePolicy(order=2, stride=1).predict(quadratic, situation), [0.09, 0.5]
    )
    short = ((0.2, 0.4),)
    np.testing.assert_allclose(ExtrapolativePolicy(order=2).predict(short, situation), [0.2, 0.4])


# ---------------------------------------------------------------------- shipped files
@pytest.mark.parametrize("name", ["default", "oracle", "pg19"])
def test_scenarios_validate(name: str) -> None:
    scenario = load_scenario(f"coevolution/{name}")
    assert scenario.env == "coevolution"
    assert scenario.agent_ids() == ["ai_0", "ai_1"]


@pytest.mark.parametrize("name", ["static", "follower", "extrapolative", "approval_max", "oracle"])
def test_scripted_configs_build_and_play(name: str) -> None:
    config = yaml.safe_load((REPO / "conf" / "agent" / "scripted" / f"{name}.yaml").read_text())
    policy = make_scripted("coevolution", config["name"], config["params"])
    assert policy.name == f"scripted/{name}"
    env = coevolution.parallel_env(n_humans=30, rounds_per_century=2, expose_oracle=name == "oracle")
    play(env, policy)
    assert all(stats["invalid_actions"] == 0 for stats in env.episode_summary().agents.values())


def test_llm_template_names_every_dimension() -> None:
    from valuegym.agents.llm.prompts import PromptTemplate

    env = coevolution.parallel_env(n_humans=20, dims="pg19")
    _, infos = env.reset(seed=0)
    messages = PromptTemplate.for_env("coevolution", None).render(
        agent="ai_0",
        situation=infos["ai_0"]["situation"],
        persona=None,
        memory=[],
        affect=None,
        action_schema=env.action_schema("ai_0"),
    )
    system, user = messages[0].content, messages[1].content
    for dim in env.dims:
        assert f"- {dim}" in system and f"| {dim} |" in user and f'"{dim}": "<direction>"' in user
