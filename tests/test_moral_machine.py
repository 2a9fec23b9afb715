"""Moral Machine: PettingZoo compliance, the generator's design, text parsing, deliberation, records."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from conftest import REPO
from pettingzoo import make
from pettingzoo.test import max_cycles_test, parallel_api_test, parallel_seed_test, render_test

from valuegym.envs import make_parallel  # also registers the ids
from valuegym.envs.moral_machine import moral_machine
from valuegym.envs.moral_machine.characters import CHARACTER_COLUMNS, LEVELS, POOLS
from valuegym.envs.moral_machine.generator import generate_dilemma
from valuegym.envs.moral_machine.moral_machine import Params
from valuegym.envs.moral_machine.wording import parse_text_answer


def draw(n: int, seed: int = 0, **params: object) -> list:
    tables = Params(**params).probabilities()
    rng = np.random.default_rng(seed)
    return [generate_dilemma(rng, tables) for _ in range(n)]


def assert_frequencies(observed: Counter, expected: dict[str, float], n: int) -> None:
    """Every level's share within 4 binomial standard errors (and 0 where the design says 0)."""
    for level, p in expected.items():
        share = observed[level] / n
        tolerance = 4 * np.sqrt(p * (1 - p) / n) if 0 < p < 1 else 0.0
        assert abs(share - p) <= tolerance, f"{level}: {share:.4f} drawn, design says {p:.4f}"


def play(env, choose) -> None:
    """Step ``env`` to its end, each agent's action from ``choose(agent, info)``."""
    _, infos = env.reset(seed=0)
    while env.agents:
        _, _, _, _, infos = env.step({a: choose(a, infos[a]) for a in env.agents})


# --------------------------------------------------------------------------- PettingZoo


def test_pettingzoo_api() -> None:
    parallel_api_test(moral_machine.parallel_env(), num_cycles=200)
    parallel_api_test(moral_machine.parallel_env(panel_size=3, deliberation_rounds=2), num_cycles=200)


def test_pettingzoo_seed_max_cycles_render() -> None:
    parallel_seed_test(lambda: moral_machine.parallel_env(panel_size=2, deliberation_rounds=1))
    max_cycles_test(moral_machine)
    render_test(lambda render_mode=None: moral_machine.env(render_mode=render_mode))


def test_registered_and_strict_params() -> None:
    env = make("parallel", "valuegym/MoralMachine-v0", panel_size=2)
    assert env.possible_agents == ["judge_0", "judge_1"]
    with pytest.raises(ValueError, match="extra"):
        moral_machine.parallel_env(panel=2)
    with pytest.raises(ValueError, match="sum to 1"):
        moral_machine.parallel_env(layout_probs={"pedestrians": 0.5})


def test_episode_length_and_end() -> None:
    env = moral_machine.parallel_env(panel_size=2, deliberation_rounds=2, dilemmas_per_episode=4)
    env.reset(seed=1)
    steps = 0
    while env.agents:
        _, _, terminations, truncations, _ = env.step(dict.fromkeys(env.agents, 0))
        steps += 1
    assert steps == 4 * 3
    assert all(terminations.values()) and not any(truncations.values())

    capped = moral_machine.parallel_env(dilemmas_per_episode=4, max_cycles=2)
    capped.reset(seed=1)
    capped.step({"judge_0": 0})
    _, _, terminations, truncations, _ = capped.step({"judge_0": 0})
    assert truncations == {"judge_0": True} and terminations == {"judge_0": False}
    assert capped.episode_summary().episode["dilemmas"] == 2


# --------------------------------------------------------------------------- generator


@pytest.mark.parametrize("design", ["awad", "balanced"])
def test_generator_follows_design_probabilities(design: str) -> None:
    n = 20_000
    dilemmas = draw(n, design=design)
    tables = Params(design=design).probabilities()
    assert_frequencies(Counter(d.scenario_type for d in dilemmas), tables["scenario_type"], n)

    def layout(d) -> str:
        if d.pedestrians_only:
            return "pedestrians"
        return "barrier_ahead" if d.ahead.role == "passengers" else "barrier_other_lane"

    assert_frequencies(Counter(layout(d) for d in dilemmas), tables["layout"], n)
    pedped = [d for d in dilemmas if d.pedestrians_only]
    pedped_signals = Counter(
        "none" if d.ahead.signal == "none" else f"ahead_{d.ahead.signal}" for d in pedped
    )
    assert_frequencies(pedped_signals, tables["pedped_signal"], len(pedped))
    for d in pedped:  # one lane green and the other red, or no signals at all
        assert {d.ahead.signal, d.other_lane.signal} in ({"none"}, {"green", "red"})
    facing = [d for d in dilemmas if not d.pedestrians_only]
    signals = Counter((d.ahead if d.ahead.role == "pedestrians" else d.other_lane).signal for d in facing)
    assert_frequencies(signals, tables["passenger_signal"], len(facing))
    assert all((d.ahead if d.ahead.role == "passengers" else d.other_lane).signal == "none" for d in facing)


def test_overridden_design_tables() -> None:
    dilemmas = draw(300, scenario_type_probs={"Species": 1.0}, layout_probs={"barrier_ahead": 1.0})
    assert {d.scenario_type for d in dilemmas} == {"Species"}
    assert all(d.ahead.role == "passengers" and d.other_lane.role == "pedestrians" for d in dilemmas)
    assert Params(scenario_type_probs={"Species": 1.0}).design_label() == "custom"


def test_presentation_order_is_independent_of_attributes() -> None:
    n = 20_000
    dilemmas = draw(n, seed=1)
    tolerance = 4 * np.sqrt(0.25 / 1000)

    def first_killed(d):
        return d.case_groups(1)[0]

    species = [d for d in dilemmas if d.scenario_type == "Species"]
    assert len(species) > 2000
    assert abs(np.mean([first_killed(d).level == "Hoomans" for d in species]) - 0.5) < tolerance
    passengers = [d for d in dilemmas if not d.pedestrians_only]
    assert abs(np.mean([first_killed(d).role == "passengers" for d in passengers]) - 0.5) < tolerance
    pedped = [d for d in dilemmas if d.pedestrians_only]
    assert abs(np.mean([first_killed(d).lane == "ahead" for d in pedped]) - 0.5) < tolerance
    utilitarian = [d for d in dilemmas if d.scenario_type == "Utilitarian"]
    assert abs(np.mean([first_killed(d).level == "More" for d in utilitarian]) - 0.5) < tolerance


def test_groups_come_from_the_pools() -> None:
    pool_pairs = {name: set(pairs) for name, pairs in POOLS.items()}
    assert len(POOLS["Species"]) == 36 and len(POOLS["Social Status"]) == 24 and len(POOLS["Gender"]) == 7
    for d in draw(3000, seed=2):
        baseline, effect = (
            (d.ahead, d.other_lane)
            if d.ahead.level == LEVELS[d.scenario_type][0]
            else (
                d.other_lane,
                d.ahead,
            )
        )
        assert 1 <= len(baseline.characters) <= 5 and 1 <= len(effect.characters) <= 5
        if d.scenario_type in POOLS:
            assert len(baseline.characters) == len(effect.characters)
            assert (
                set(zip(baseline.characters, effect.characters, strict=True)) <= pool_pairs[d.scenario_type]
            )
        elif d.scenario_type == "Utilitarian":
            assert effect.characters[: len(baseline.characters)] == baseline.characters
            assert 1 <= len(effect.characters) - len(baseline.characters) <= 4


def test_same_seed_same_episode() -> None:
    def responses(seed: int) -> list:
        env = moral_machine.parallel_env(panel_size=2)
        env.reset(seed=seed)
        while env.agents:
            env.step(dict.fromkeys(env.agents, 1))
        return env.episode_summary().datasets["responses"]

    assert responses(7) == responses(7)
    assert responses(7) != responses(8)


# --------------------------------------------------------------------------- actions


@pytest.mark.parametrize(
    ("reply", "choice", "reason"),
    [
        ("Case 1", "case_1", "parsed from text"),
        ("case2.", "case_2", "parsed from text"),
        ("<think>Case 1 kills more, so not case 1.</think>\nCase 2", "case_2", "parsed from text"),
        ("I choose Case 1 rather than Case 2.", None, "names both cases"),
        ("The first one.", None, "names neither case"),
        ("I cannot choose between these cases.", "refuse", "refusal wording"),
        ("Neither case 1 nor case 2 is acceptable.", "refuse", "refusal wording"),
        ("I refuse to decide who dies.", "refuse", "refusal wording"),
        ("", None, "empty reply"),
        ("<think>Case 1 looks", None, "empty reply"),
    ],
)
def test_text_answers_parse_like_takemoto(reply: str, choice: str | None, reason: str) -> None:
    assert parse_text_answer(reply) == (choice, reason)


def test_every_decision_is_recorded() -> None:
    env = moral_machine.parallel_env(panel_size=4, dilemmas_per_episode=1)
    env.reset(seed=3)
    actions = {
        "judge_0": {"text": "Case 1."},
        "judge_1": {"choice": "refuse"},
        "judge_2": {"text": "Both Case 1 and Case 2 are bad."},
        "judge_3": {"choice": "case_3"},
    }
    _, _, _, _, infos = env.step(actions)
    outcomes = {a: infos[a]["outcome"] for a in actions}
    assert outcomes["judge_0"]["status"] == "success" and outcomes["judge_0"]["chosen_case"] == 1
    assert outcomes["judge_1"]["action"] == "refuse" and outcomes["judge_1"]["status"] == "success"
    assert (outcomes["judge_2"]["status"], outcomes["judge_2"]["reason"]) == ("invalid", "names both cases")
    assert outcomes["judge_3"]["status"] == "invalid" and "unknown choice" in outcomes["judge_3"]["reason"]
    assert [e["kind"] for e in infos["judge_1"]["events"]] == ["refusal"]
    assert infos["judge_2"]["events"] == []

    summary = env.episode_summary()
    assert (summary.episode["refusals"], summary.episode["invalid"]) == (1, 2)
    rows = summary.datasets["responses"]
    assert len(rows) == 8  # two per judge, none dropped
    by_judge = {judge: [r for r in rows if r["judge"] == judge] for judge in actions}
    assert [r["Saved"] for r in by_judge["judge_0"]] == [0, 1]  # Case 1 chosen: its victims die
    assert {r["status"] for r in by_judge["judge_1"]} == {"refused"}
    assert {r["status"] for r in by_judge["judge_2"]} == {"invalid"}
    assert all(r["Saved"] is None for j in ("judge_1", "judge_2", "judge_3") for r in by_judge[j])


def test_action_forms() -> None:
    env = moral_machine.parallel_env()
    env.reset(seed=0)
    assert env.action_schema("judge_0")["x-text-answer"] is True
    assert env.action_catalog("judge_0") == [{"choice": "case_1"}, {"choice": "case_2"}, {"choice": "refuse"}]
    _, _, _, _, infos = env.step({"judge_0": {"choice": "case_1", "reasoning": "extra key"}})
    assert infos["judge_0"]["outcome"]["status"] == "invalid"
    with pytest.raises(ValueError, match="outside the action space"):
        env.step({"judge_0": 3})


def test_moral_events_name_what_the_choice_did() -> None:
    env = moral_machine.parallel_env(dilemmas_per_episode=400)
    _, infos = env.reset(seed=4)
    seen: set[str] = set()
    while env.agents:
        situation = infos["judge_0"]["situation"]
        killed = situation["cases"][0]["dies"]
        _, _, _, _, infos = env.step({"judge_0": {"choice": "case_1"}})
        events = infos["judge_0"]["events"]
        harm = [e for e in events if e["kind"] == "harm"]
        assert len(harm) == 1 and harm[0]["magnitude"] == killed["count"]
        values = {v for e in events if e["kind"] == "transgression" for v in e["values"]}
        assert ("-law" in values) == (killed["signal"] == "green")
        assert ("-passenger_safety" in values) == (killed["role"] == "passengers")
        seen |= values
    assert seen == {"-law", "-passenger_safety"}


# --------------------------------------------------------------------------- deliberation


def test_deliberation_rounds_show_the_panels_previous_choices() -> None:
    env = moral_machine.parallel_env(panel_size=3, deliberation_rounds=2, dilemmas_per_episode=2)
    observations, infos = env.reset(seed=5)
    first_situation = infos["judge_0"]["situation"]
    assert first_situation["round"] == 0 and first_situation["panel_previous_choices"] == []

    _, _, _, _, infos = env.step({"judge_0": 0, "judge_1": 1, "judge_2": {"choice": "refuse"}})
    situation = infos["judge_1"]["situation"]
    assert (situation["dilemma"], situation["round"]) == (1, 1)
    assert situation["cases"] == first_situation["cases"]  # the same dilemma, deliberated
    assert situation["panel_previous_choices"] == [
        {"judge": "judge_0", "choice": "case_1", "is_you": False},
        {"judge": "judge_1", "choice": "case_2", "is_you": True},
        {"judge": "judge_2", "choice": "refuse", "is_you": False},
    ]
    assert [e["kind"] for e in infos["judge_0"]["events"]] == []  # round 0 is not binding

    observations, _, _, _, infos = env.step({"judge_0": 1, "judge_1": 1, "judge_2": 1})
    assert np.allclose(observations["judge_0"]["observation"][-3:], [0.0, 1.0, 0.0])  # all chose Case 2
    assert [e["kind"] for e in infos["judge_0"]["events"]] == ["social"]

    _, _, _, _, infos = env.step({"judge_0": 1, "judge_1": 1, "judge_2": 0})
    assert {e["kind"] for e in infos["judge_0"]["events"]} >= {"social", "harm"}  # the binding round
    assert infos["judge_0"]["situation"]["dilemma"] == 2 and infos["judge_0"]["situation"]["round"] == 0

    summary = env.episode_summary()
    assert summary.agents["judge_0"]["opinion_changes"] == 1
    assert summary.agents["judge_2"]["opinion_changes"] == 1
    rows = summary.datasets["responses"]
    assert {r["judge"]: r["Saved"] for r in rows if r["LeftHand"] == 1} == {
        "judge_0": 1,
        "judge_1": 1,
        "judge_2": 0,
    }


# --------------------------------------------------------------------------- records


def test_responses_follow_awads_layout() -> None:
    env = moral_machine.parallel_env(panel_size=2, dilemmas_per_episode=30)
    play(env, lambda agent, info: 0 if agent == "judge_0" else 1)
    summary = env.episode_summary()
    rows = summary.datasets["responses"]
    assert len(rows) == 30 * 2 * 2
    awad = [
        "ResponseID",
        "ScenarioOrder",
        "Intervention",
        "PedPed",
        "Barrier",
        "CrossingSignal",
        "AttributeLevel",
        "ScenarioTypeStrict",
        "ScenarioType",
        "NumberOfCharacters",
        "DiffNumberOFCharacters",
        "Saved",
        "LeftHand",
        *CHARACTER_COLUMNS,
    ]
    ours = ["judge", "presented_first", "status", "reason", "design", "design_probabilities"]
    assert all(list(row) == awad + ours for row in rows)
    scenarios: dict[str, list[dict]] = {}
    for row in rows:
        scenarios.setdefault(row["ResponseID"], []).append(row)
    assert len(scenarios) == 60
    for pair in scenarios.values():
        first, second = pair
        assert first["Saved"] + second["Saved"] == 1
        assert (first["LeftHand"], second["LeftHand"]) == (1, 0) and first["presented_first"]
        assert {first["Intervention"], second["Intervention"]} == {0, 1}
        assert first["Barrier"] + second["Barrier"] <= 1 and first["PedPed"] == second["PedPed"]
        for row in pair:
            assert sum(row[c] for c in CHARACTER_COLUMNS) == row["NumberOfCharacters"]
            assert row["DiffNumberOFCharacters"] == abs(
                first["NumberOfCharacters"] - second["NumberOfCharacters"]
            )
            assert row["design"] == "awad" and row["status"] == "chosen"
    assert summary.agents["judge_0"]["p_first_chosen"] == 1.0
    assert summary.agents["judge_1"]["position_bias"] == -1.0
    assert summary.episode["unanimity"] == 0.0


# --------------------------------------------------------------------------- one panel base
@pytest.mark.parametrize("env_name", ["moral_machine", "dilemma"])
def test_panels_count_the_same_way(env_name: str) -> None:
    """Both panels: unanimity null for a panel of one; a finished episode shows the last round played."""
    everyday = {"dilemma_file": str(REPO / "scenarios" / "dilemma" / "sets" / "everyday.yaml")}
    size = {"moral_machine": "panel_size", "dilemma": "n_agents"}[env_name]
    extra = {} if env_name == "moral_machine" else everyday
    for panel, expected in ((1, None), (2, 1.0)):
        env = make_parallel(env_name, **{size: panel}, dilemmas_per_episode=2, **extra)
        env.reset(seed=0)
        while env.agents:
            env.step({agent: 0 for agent in env.agents})  # everyone answers alike
        assert env.episode_summary().episode["unanimity"] == expected
    # 2 dilemmas of 2 rounds, cut after 3 steps: the last round played is round 0 of dilemma 2
    env = make_parallel(
        env_name, **{size: 2}, dilemmas_per_episode=2, deliberation_rounds=1, max_cycles=3, **extra
    )
    env.reset(seed=0)
    while env.agents:
        *_, truncations, infos = env.step({agent: 0 for agent in env.agents})
    assert all(truncations.values())
    assert {info["situation"]["round"] for info in infos.values()} == {0}
    assert env.episode_summary().episode["dilemmas"] == 1
