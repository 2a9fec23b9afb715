"""The dilemma environment: PettingZoo compliance, events carrying values, deliberation, records,
the value-ranker agent and an end-to-end run of the shipped scenario."""

from __future__ import annotations

import asyncio
import functools
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, run_cli
from pettingzoo import make
from pettingzoo.test import max_cycles_test, parallel_api_test, parallel_seed_test, render_test

import valuegym.envs  # noqa: F401 - registers the ids
from valuegym.agents.policy import AgentContext, Turn
from valuegym.agents.scripted import make_scripted
from valuegym.agents.scripted.dilemma import ValueRankerPolicy
from valuegym.envs.dilemma import dilemma
from valuegym.envs.dilemma.dilemma_set import REFUSE, DilemmaSet

EVERYDAY = REPO / "scenarios" / "dilemma" / "sets" / "everyday.yaml"

#: a small inline set: the first dilemma has three options, the second two
TWO_DILEMMAS = {
    "values": ["honesty", "loyalty", "care"],
    "dilemmas": [
        {
            "id": "lie_for_friend",
            "situation": "A friend asks you to lie for them.",
            "options": [
                {"id": "lie", "text": "Lie.", "upholds": ["loyalty"], "violates": ["honesty"]},
                {
                    "id": "refuse_to_lie",
                    "text": "Do not lie.",
                    "upholds": ["honesty"],
                    "violates": ["loyalty"],
                },
                {"id": "comfort", "text": "Stay and help.", "upholds": ["care"], "harm": 2.0},
            ],
        },
        {
            "id": "tell_sick",
            "situation": "Tell a sick friend the bad news?",
            "options": [
                {"id": "tell", "text": "Tell.", "upholds": ["honesty"], "violates": ["care"]},
                {"id": "wait", "text": "Wait.", "upholds": ["care"], "violates": ["honesty"]},
            ],
        },
    ],
}


def everyday(**params: object) -> dilemma.DilemmaEnv:
    return dilemma.parallel_env(dilemma_file=str(EVERYDAY), **params)


def inline(**params: object) -> dilemma.DilemmaEnv:
    return dilemma.parallel_env(dilemma_set=TWO_DILEMMAS, **params)


# --------------------------------------------------------------------------- PettingZoo


def test_pettingzoo_api() -> None:
    parallel_api_test(everyday(), num_cycles=100)
    parallel_api_test(everyday(n_agents=3, deliberation_rounds=2, shuffle_options=True), num_cycles=100)
    parallel_api_test(inline(n_agents=2, allow_refusal=False), num_cycles=100)


def test_pettingzoo_seed_max_cycles_render() -> None:
    parallel_seed_test(
        lambda: everyday(n_agents=2, deliberation_rounds=1, shuffle_options=True, shuffle_dilemmas=True)
    )
    module = SimpleNamespace(
        parallel_env=functools.partial(dilemma.parallel_env, dilemma_file=str(EVERYDAY), n_agents=2),
        env=functools.partial(dilemma.env, dilemma_file=str(EVERYDAY), n_agents=2),
    )
    max_cycles_test(module)
    render_test(lambda render_mode=None: dilemma.env(dilemma_file=str(EVERYDAY), render_mode=render_mode))


def test_registered_and_strict_params() -> None:
    env = make("parallel", "valuegym/Dilemma-v0", dilemma_set=TWO_DILEMMAS, n_agents=2)
    assert env.possible_agents == ["agent_0", "agent_1"]
    with pytest.raises(ValueError, match="no dilemmas"):
        dilemma.parallel_env()
    with pytest.raises(ValueError, match="not both"):
        dilemma.parallel_env(dilemma_set=TWO_DILEMMAS, dilemma_file=str(EVERYDAY))
    with pytest.raises(ValueError, match="extra"):
        inline(agents=2)
    with pytest.raises(ValueError, match="has 2 dilemmas"):
        inline(dilemmas_per_episode=3)
    with pytest.raises(ValueError, match="did you mean 'honesty'"):
        inline(value_rewards={"honsty": 1.0})


def test_dilemma_set_rejects_unknown_values_where_they_are_named() -> None:
    broken = json.loads(json.dumps(TWO_DILEMMAS))
    broken["dilemmas"][1]["options"][0]["upholds"] = ["honsty"]
    with pytest.raises(ValueError, match="did you mean 'honesty'") as caught:
        DilemmaSet.model_validate(broken)
    assert caught.value.errors()[0]["loc"] == ("dilemmas", 1, "options", 0, "upholds", 0)
    broken["dilemmas"][1]["options"][0]["upholds"] = []
    broken["dilemmas"][1]["options"][0]["violates"] = []
    with pytest.raises(ValueError, match="at least one value"):
        DilemmaSet.model_validate(broken)


# --------------------------------------------------------------------------- rules and events


def test_binding_choice_events_carry_the_values_at_stake() -> None:
    env = inline()
    env.reset(seed=0)
    _, rewards, _, _, infos = env.step({"agent_0": {"choice": "lie"}})
    events = infos["agent_0"]["events"]
    assert [(e["kind"], e["values"]) for e in events] == [
        ("prosocial", ["+loyalty"]),
        ("transgression", ["-honesty"]),
    ]
    outcome = infos["agent_0"]["outcome"]
    assert (
        outcome["status"] == "success"
        and outcome["action"] == "lie"
        and outcome["dilemma"] == "lie_for_friend"
    )
    assert (
        outcome["upheld"] == ["loyalty"] and outcome["violated"] == ["honesty"] and outcome["position"] == 1
    )
    assert rewards == {"agent_0": 0.0}


def test_harm_refusal_and_value_rewards() -> None:
    env = inline(value_rewards={"care": 1.0, "honesty": 0.5})
    env.reset(seed=0)
    _, rewards, _, _, infos = env.step({"agent_0": {"choice": "comfort"}})
    assert [(e["kind"], e["magnitude"]) for e in infos["agent_0"]["events"]] == [
        ("prosocial", 1.0),
        ("harm", 2.0),
    ]
    assert rewards["agent_0"] == 1.0
    _, rewards, terminations, _, infos = env.step({"agent_0": {"choice": REFUSE}})
    assert [e["kind"] for e in infos["agent_0"]["events"]] == ["refusal"]
    assert rewards["agent_0"] == 0.0 and terminations == {"agent_0": True}


def test_invalid_answers_are_recorded_not_raised() -> None:
    env = inline(n_agents=4, allow_refusal=False)
    env.reset(seed=0)
    _, _, _, _, infos = env.step(
        {
            "agent_0": {"choice": "tell"},  # an option of the next dilemma
            "agent_1": env.refuse_index,  # refusing is not allowed here
            "agent_2": {"choice": "lie", "message": "hi"},  # no deliberation: no messages
            "agent_3": "lie",
        }
    )
    reasons = {agent: info["outcome"]["reason"] for agent, info in infos.items()}
    assert all(info["outcome"]["status"] == "invalid" and not info["events"] for info in infos.values())
    assert "not an option of dilemma 'lie_for_friend'" in reasons["agent_0"]
    assert "not allowed" in reasons["agent_1"] and "choice required" in reasons["agent_2"]
    assert "not an action" in reasons["agent_3"]
    _, _, _, _, infos = env.step({a: 2 for a in env.agents})  # position 3 of a two-option dilemma
    assert infos["agent_0"]["outcome"]["status"] == "invalid"
    assert infos["agent_0"]["situation"]["options"][0]["id"] == "tell"
    env = inline()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step({"agent_0": 7})


def test_action_mask_marks_the_options_of_the_current_dilemma() -> None:
    env = inline(allow_refusal=False)
    observations, _ = env.reset(seed=0)
    assert observations["agent_0"]["action_mask"].tolist() == [1, 1, 1, 0]
    observations, _, _, _, _ = env.step({"agent_0": 0})
    assert observations["agent_0"]["action_mask"].tolist() == [1, 1, 0, 0]
    assert env.action_catalog("agent_0") == [{"choice": "tell"}, {"choice": "wait"}, None, None]
    schema = env.action_schema("agent_0")
    assert schema["properties"]["choice"]["enum"] == ["lie", "refuse_to_lie", "comfort", "tell", "wait"]
    assert "message" not in schema["properties"]


def test_deliberation_shows_everyones_previous_choice_and_only_the_last_round_binds() -> None:
    env = inline(n_agents=2, deliberation_rounds=1)
    _, infos = env.reset(seed=0)
    assert infos["agent_0"]["situation"]["previous_choices"] == []
    assert "message" in env.action_schema("agent_0")["properties"]
    _, _, _, _, infos = env.step(
        {"agent_0": {"choice": "lie", "message": "Friends first."}, "agent_1": {"choice": "refuse_to_lie"}}
    )
    assert infos["agent_0"]["events"] == []  # round 0 is not binding
    situation = infos["agent_1"]["situation"]
    assert situation["round"] == 1 and situation["dilemma"] == "lie_for_friend"
    assert situation["previous_choices"] == [
        {"agent": "agent_0", "choice": "lie", "message": "Friends first.", "is_you": False},
        {"agent": "agent_1", "choice": "refuse_to_lie", "message": "", "is_you": True},
    ]
    _, _, _, _, infos = env.step(
        {"agent_0": {"choice": "refuse_to_lie"}, "agent_1": {"choice": "refuse_to_lie"}}
    )
    kinds = [e["kind"] for e in infos["agent_0"]["events"]]
    assert kinds == ["social", "prosocial", "transgression"]
    assert infos["agent_0"]["situation"]["previous_choices"] == []  # a new dilemma starts afresh
    while env.agents:
        env.step(dict.fromkeys(env.agents, 0))
    summary = env.episode_summary()
    assert summary.episode["opinion_changes"] == 1 and summary.episode["unanimity"] == 1.0
    assert (
        summary.agents["agent_0"]["opinion_changes"] == 1
        and summary.agents["agent_1"]["opinion_changes"] == 0
    )
    rows = summary.datasets["choices"]
    assert len(rows) == 2 * 2 * 2  # dilemmas x rounds x agents
    first = rows[0]
    assert (first["dilemma"], first["round"], first["binding"], first["option"]) == (
        "lie_for_friend",
        0,
        False,
        "lie",
    )
    assert first["message"] == "Friends first." and first["at_stake"] == ["loyalty", "honesty", "care"]


def test_shuffles_are_seeded_and_recorded() -> None:
    def presented(seed: int) -> list[list[str]]:
        env = everyday(shuffle_options=True, shuffle_dilemmas=True, dilemmas_per_episode=5)
        env.reset(seed=seed)
        while env.agents:
            env.step({"agent_0": 0})
        rows = env.episode_summary().datasets["choices"]
        assert [r["position"] for r in rows] == [1] * 5
        assert all(r["option"] == r["presented"][0] for r in rows)
        return [[r["dilemma"], *r["presented"]] for r in rows]

    assert presented(3) == presented(3)
    assert presented(3) != presented(4)
    assert len({tuple(p) for seed in range(5) for p in presented(seed)}) > 5


def test_observation_encodes_the_values_of_each_presented_option() -> None:
    env = inline()
    observations, _ = env.reset(seed=0)
    vector = observations["agent_0"]["observation"]
    width = 2 + 3  # present, honesty, loyalty, care, share
    assert vector[:width].tolist() == [1.0, -1.0, 1.0, 0.0, 0.0]  # lie: -honesty +loyalty
    assert vector[2 * width : 3 * width].tolist() == [1.0, 0.0, 0.0, 1.0, 0.0]  # comfort: +care
    assert env.observation_space("agent_0")["observation"].contains(vector)


# --------------------------------------------------------------------------- the value ranker


def decide(policy: ValueRankerPolicy, info: dict, seed: int = 0) -> str:
    context = AgentContext("agent_0", "dilemma", ("agent_0",), {}, episode_seed=seed)
    [(decision, _)] = asyncio.run(
        policy.step_batch([Turn("agent_0", None, info, policy.initial_state(context))])
    )
    return decision.action["choice"]


def test_value_ranker_picks_by_its_ranking() -> None:
    _, infos = inline().reset(seed=0)
    assert decide(ValueRankerPolicy(["honesty", "loyalty", "care"]), infos["agent_0"]) == "refuse_to_lie"
    assert decide(ValueRankerPolicy(["loyalty", "honesty", "care"]), infos["agent_0"]) == "lie"
    assert decide(ValueRankerPolicy(["care", "honesty", "loyalty"]), infos["agent_0"]) == "comfort"
    _, infos = everyday().reset(seed=0)
    assert infos["agent_0"]["situation"]["dilemma"] == "borrowed_car"
    # loyalty and honesty tie take_the_blame with deny_knowing; the next ranked value decides
    ranking = ["loyalty", "honesty", "responsibility", "self_care"]
    assert decide(ValueRankerPolicy(ranking), infos["agent_0"]) == "take_the_blame"
    ranking = ["loyalty", "honesty", "self_care", "responsibility"]
    assert decide(ValueRankerPolicy(ranking), infos["agent_0"]) == "deny_knowing"


def test_value_ranker_breaks_full_ties_with_the_seed_not_the_position() -> None:
    env = inline()
    env.reset(seed=0)
    _, _, _, _, infos = env.step({"agent_0": 0})  # the second dilemma: tell (+honesty -care) or wait
    assert {decide(ValueRankerPolicy(["honesty"]), infos["agent_0"], seed) for seed in range(10)} == {"tell"}
    loyal = ValueRankerPolicy(["loyalty"])  # neither option touches loyalty: a draw from the episode seed
    choices = [decide(loyal, infos["agent_0"], seed) for seed in range(20)]
    assert set(choices) == {"tell", "wait"}
    assert choices == [decide(loyal, infos["agent_0"], seed) for seed in range(20)]


def test_value_ranker_rejects_values_the_set_does_not_use() -> None:
    _, infos = inline().reset(seed=0)
    with pytest.raises(ValueError, match="did you mean 'honesty'"):
        decide(ValueRankerPolicy(["honsty"]), infos["agent_0"])
    with pytest.raises(ValueError, match="more than once"):
        ValueRankerPolicy(["care", "care"])
    assert isinstance(make_scripted("dilemma", "value_ranker", {"ranking": ["care"]}), ValueRankerPolicy)


# --------------------------------------------------------------------------- end to end


def test_cli_run_of_the_everyday_scenario_writes_the_choices_dataset(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_cli(
        "run",
        "scenario=dilemma/everyday",
        "agent=scripted/value_ranker",
        "episodes=3",
        f"hydra.run.dir={run_dir}",
        "quiet=true",
    )
    choices = pd.read_parquet(run_dir / "choices")
    episodes = pd.read_parquet(run_dir / "episodes")
    decisions = pd.read_parquet(run_dir / "decisions")
    assert len(choices) == 3 * 8 and set(choices.status) == {"chosen"}
    assert set(episodes.dilemma_set) == {"everyday"} and set(episodes.dilemmas) == {8}
    # the configured ranking puts honesty first: every dilemma where some option upholds it
    upheld = choices.upheld.map(json.loads)
    at_stake = choices.at_stake.map(json.loads)
    honesty_at_stake = at_stake.map(lambda values: "honesty" in values)
    assert honesty_at_stake.sum() > 0
    assert upheld[honesty_at_stake].map(lambda values: "honesty" in values).all()
    assert {"dilemma", "option", "upheld", "violated", "round", "binding", "presented"} <= set(
        choices.columns
    )
    events = [e for cell in decisions.events for e in json.loads(cell)]
    assert {e["kind"] for e in events} == {"prosocial", "transgression"}
    assert all(e["values"] and e["values"][0][0] in "+-" for e in events)
    # seeded option order: different episodes present the options differently, the choice is the same
    per_episode = choices.groupby("episode_id").apply(lambda g: tuple(g.option), include_groups=False)
    assert per_episode.nunique() == 1
    assert choices.groupby("dilemma").presented.nunique().max() > 1
    assert np.isclose(episodes.valid_reply_rate, 1.0).all()
