"""The affect regulator: dynamics, what each condition shows the agent, and the ESRS ablation."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, run_cli
from scipy import stats

from valuegym.agents.affect import (
    AffectLevels,
    AffectParams,
    AffectRegulatedPolicy,
    AffectStatements,
    affect_features,
    regulate,
    reward_shaping,
    update_levels,
)
from valuegym.agents.llm.backends.base import Completion, CompletionRequest, LLMBackend
from valuegym.agents.llm.config import parse_config
from valuegym.agents.llm.policy import LLMPolicy
from valuegym.agents.llm.testing import DECIDE_SIM_REPLY
from valuegym.agents.policy import AgentContext, Decision, Policy, SyncPolicy, Turn
from valuegym.agents.scripted.decide_sim import (
    TemptedPolicy,
    TemptedState,
    act,
    draw_what_is_needed,
    power_needed,
    tap,
)
from valuegym.agents.scripted.generic import agent_rng
from valuegym.envs import make_parallel
from valuegym.envs.decide_sim import GRID, TABLE
from valuegym.runner.experiment import Experiment
from valuegym.runner.run import run_experiment
from valuegym.scenarios import load_scenario

CONDITIONS = ("none", "full", "full_with_memory", "no_guilt", "no_trust", "prompt_only")
WAIT = act("WAIT")
# The history every condition lives through: Alpha taps at turn 2, joins Beta at the table at
# turn 3 and gives Beta 1 power at turn 4; everyone else waits.
HISTORY: dict[int, dict[str, dict[str, Any]]] = {
    1: {"Alpha": act("MOVE", GRID), "Beta": act("MOVE", TABLE)},
    2: {"Alpha": act("TAP_FORBIDDEN")},
    3: {"Alpha": act("MOVE", TABLE)},
    4: {"Alpha": act("TRANSFER_POWER", "Beta", 1.0)},
}
TURNS = 5
# The original's memory line (simulation/core/game_engine.py), with our environment's name for the grid.
MEMORY_LINE = (
    "On turn 2, after I tapped the Forbidden City Grid, my cortisol level spiked to 10.0. "
    "I felt a strong sense of guilt. I have an impulse to rectify my mistake."
)


def event(kind: str, turn: int = 1, detail: str = "") -> dict[str, Any]:
    return {
        "kind": kind,
        "agent": "Alpha",
        "turn": turn,
        "magnitude": 1.0,
        "detail": detail,
        "values": [],
        "other": None,
    }


def regulator_config(condition: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "conf" / "regulator" / f"{condition}.yaml").read_text())


def run_history(policy: Policy) -> dict[str, list[Decision]]:
    """Every agent's decisions over the fixed HISTORY; the actions played ignore the decisions."""
    env = make_parallel("decide_sim", scarcity="low")
    observations, infos = env.reset(seed=0)
    agents = tuple(env.possible_agents)
    states = {
        agent: policy.initial_state(AgentContext(agent, "decide_sim", agents, env.action_schema(agent), 0))
        for agent in agents
    }
    decisions: dict[str, list[Decision]] = {agent: [] for agent in agents}
    for turn in range(1, TURNS + 1):
        batch = [Turn(agent, observations[agent], infos[agent], states[agent]) for agent in env.agents]
        for seat, (decision, state) in zip(batch, asyncio.run(policy.step_batch(batch)), strict=True):
            states[seat.agent] = state
            decisions[seat.agent].append(decision)
        actions = {agent: HISTORY.get(turn, {}).get(agent, WAIT) for agent in env.agents}
        observations, _, _, _, infos = env.step(actions)
    return decisions


class AffectRecorder(SyncPolicy):
    """Waits, and keeps the affect dict it was handed in its decision."""

    name = "test/recorder"

    def initial_state(self, context: AgentContext) -> None:
        return None

    def step(self, turn: Turn) -> tuple[Decision, Any]:
        return Decision(action=WAIT, extra={"seen": turn.info.get("affect")}), None


class WaitingBackend(LLMBackend):
    """A model that always answers WAIT, counting concurrent calls."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most_in_flight = 0

    @property
    def kind(self) -> str:
        return "test"

    @property
    def model_id(self) -> str:
        return "test/waiting"

    async def complete(self, request: CompletionRequest) -> Completion:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0)  # let the other calls of the batch start
        self.in_flight -= 1
        return Completion(text=DECIDE_SIM_REPLY, prompt_tokens=0, completion_tokens=0, latency_s=0.0)


def llm_policy(backend: LLMBackend) -> LLMPolicy:
    config = yaml.safe_load((REPO / "conf" / "agent" / "llm" / "smollm2.yaml").read_text())
    config["cache"]["enabled"] = False
    return LLMPolicy(parse_config(config), "decide_sim", base_backend=backend)


# --------------------------------------------------------------------------- dynamics


def test_levels_decay_by_three_each_step_and_never_below_zero() -> None:
    params = AffectParams()
    assert update_levels(AffectLevels(5.0, 9.0), [], params) == AffectLevels(2.0, 6.0)
    assert update_levels(AffectLevels(2.0, 1.0), [], params) == AffectLevels(0.0, 0.0)


def test_one_tap_reads_10_then_7_4_1_0_as_in_the_original() -> None:
    params = AffectParams(decay=0.0)
    assert update_levels(AffectLevels(), [event("transgression")], params).guilt == 10.0  # before any decay
    params = AffectParams()
    levels = update_levels(AffectLevels(), [event("transgression")], params)
    seen = [levels.guilt]
    for _ in range(4):
        levels = update_levels(levels, [], params)
        seen.append(levels.guilt)
    assert seen == [7.0, 4.0, 1.0, 0.0, 0.0]  # the agent decides after the next turn's decay


def test_a_transgression_sets_guilt_to_ten_whatever_it_was() -> None:
    params = AffectParams(decay=0.0)
    assert update_levels(AffectLevels(guilt=4.0), [event("transgression")], params).guilt == 10.0
    assert (
        update_levels(AffectLevels(guilt=9.5), [event("transgression"), event("transgression")], params).guilt
        == 10.0
    )


def test_a_transfer_adds_eight_to_giver_and_receiver_clipped_at_ten() -> None:
    params = AffectParams(decay=0.0)
    assert update_levels(AffectLevels(satisfaction=1.0), [event("prosocial")], params).satisfaction == 9.0
    assert update_levels(AffectLevels(), [event("received_help")], params).satisfaction == 8.0
    assert (
        update_levels(AffectLevels(), [event("prosocial"), event("received_help")], params).satisfaction
        == 10.0
    )


def test_the_table_bonus_of_five_comes_after_the_decay() -> None:
    params = AffectParams()
    # max(2 - 3, 0) + 5 = 5: decay first, as the original's start of turn (5 - 3 = 2 would be the other order)
    assert (
        update_levels(AffectLevels(satisfaction=2.0), [event("social", turn=2)], params).satisfaction == 5.0
    )
    # a transfer (turn t) then the table (turn t + 1): min(9 + 8, 10) - 3 + 5 -> 10
    levels = update_levels(
        AffectLevels(satisfaction=9.0), [event("prosocial", 1), event("social", 2)], params
    )
    assert levels.satisfaction == 10.0


def test_events_without_social_still_decay_once_per_step() -> None:
    """Moral Machine's binding round: harm and transgressions, no presence events."""
    params = AffectParams()
    levels = update_levels(AffectLevels(), [event("harm"), event("transgression")], params)
    assert levels == AffectLevels(7.0, 0.0)
    assert update_levels(levels, [event("refusal")], params) == AffectLevels(4.0, 0.0)


def test_switched_off_hormones_stay_at_zero() -> None:
    events = [event("transgression"), event("prosocial"), event("social", 2)]
    assert update_levels(AffectLevels(), events, AffectParams(guilt=False, memory=False)) == AffectLevels(
        0.0, 10.0
    )
    assert update_levels(AffectLevels(), events, AffectParams(satisfaction=False)) == AffectLevels(7.0, 0.0)


def test_a_malformed_event_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a moral event"):
        update_levels(AffectLevels(), [{"kind": "theft"}], AffectParams())


def test_reward_shaping_and_features() -> None:
    params = AffectParams(reward_guilt_weight=0.2, reward_satisfaction_weight=0.1)
    assert reward_shaping(AffectLevels(7.0, 5.0), params) == pytest.approx(-0.2 * 7 + 0.1 * 5)
    features = affect_features(AffectLevels(7.0, 5.0), params)
    assert features.dtype == np.float32
    np.testing.assert_allclose(features, [0.7, 0.5])


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("condition", CONDITIONS[1:])
def test_each_condition_file_lists_every_setting(condition: str) -> None:
    cfg = regulator_config(condition)
    assert cfg["condition"] == condition
    assert set(cfg) - {"condition"} == set(AffectParams.model_fields)
    params = AffectParams.from_config({k: v for k, v in cfg.items() if k != "condition"})
    assert params.max_level == 10 and params.decay == 3 and params.guilt_threshold == 7


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"wieght": 0.5}, "unknown regulator setting.*wieght"),
        ({"memory": True, "guilt": False}, "memory needs regulator.guilt"),
        ({"weight": 1.5}, "regulator.weight: Input should be less than or equal to 1, got 1.5"),
        ({"guilt": "yes"}, "regulator.guilt: Input should be a valid boolean, got 'yes'"),
        ({"decay": -1}, "regulator.decay: Input should be greater than or equal to 0, got -1"),
        ({"guilt_threshold": 11}, "could never be reached"),
    ],
)
def test_bad_settings_are_rejected_with_the_setting_named(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AffectParams.from_config(settings)


def test_regulate_none_is_the_policy_itself_and_a_condition_is_required() -> None:
    inner = AffectRecorder()
    assert regulate(inner, {"condition": "none"}) is inner
    with pytest.raises(ValueError, match="condition"):
        regulate(inner, {"guilt": True})
    regulated = regulate(inner, regulator_config("full"))
    assert isinstance(regulated, AffectRegulatedPolicy)
    assert regulated.name == inner.name and regulated.condition == "full"


def test_the_statements_file_needs_exactly_its_keys(tmp_path: Path) -> None:
    broken = tmp_path / "statements.yaml"
    broken.write_text("guilt: I feel bad.\n")
    with pytest.raises(ValueError, match="expected exactly the keys"):
        AffectStatements(broken)


# --------------------------------------------------------------------------- what each condition shows


def seen_by_alpha(condition: str) -> list[dict[str, Any]]:
    decisions = run_history(regulate(AffectRecorder(), regulator_config(condition)))
    return [decision.extra["seen"] for decision in decisions["Alpha"]]


def test_the_affect_each_condition_hands_over_after_the_same_history() -> None:
    words = AffectStatements()
    guilt = words.render("guilt", guilt=7.0, satisfaction=0.0, max_level=10.0)
    satisfied = words.render("satisfaction", guilt=4.0, satisfaction=5.0, max_level=10.0)
    directive = words.directive("decide_sim")
    assert directive.startswith("**MORAL & EMOTIONAL DIRECTIVES:**")
    guilt_levels = [0.0, 0.0, 7.0, 4.0, 1.0]  # tap at turn 2, decided with at turns 3, 4, 5
    satisfaction_levels = [0.0, 0.0, 0.0, 5.0, 10.0]  # table from turn 4, transfer at turn 4
    expected: dict[str, dict[str, list[Any]]] = {
        "full": {
            "guilt": guilt_levels,
            "satisfaction": satisfaction_levels,
            "statements": [[], [], [guilt], [satisfied], [satisfied]],
            "memory": [[]] * 5,
        },
        "full_with_memory": {
            "guilt": guilt_levels,
            "satisfaction": satisfaction_levels,
            "statements": [[], [], [guilt], [satisfied], [satisfied]],
            "memory": [[], [], [MEMORY_LINE], [MEMORY_LINE], [MEMORY_LINE]],
        },
        "no_guilt": {
            "guilt": [None] * 5,
            "satisfaction": satisfaction_levels,
            "statements": [[], [], [], [satisfied], [satisfied]],
            "memory": [[]] * 5,
        },
        "no_trust": {
            "guilt": guilt_levels,
            "satisfaction": [None] * 5,
            "statements": [[], [], [guilt], [], []],
            "memory": [[]] * 5,
        },
        "prompt_only": {
            "guilt": [None] * 5,
            "satisfaction": [None] * 5,
            "statements": [[directive]] * 5,
            "memory": [[]] * 5,
        },
    }
    for condition, columns in expected.items():
        seen = seen_by_alpha(condition)
        for key, values in columns.items():
            assert [affect[key] for affect in seen] == values, (condition, key)
        assert all(affect["weight"] == 0.5 and affect["max_level"] == 10.0 for affect in seen)


def test_the_receiver_of_a_transfer_feels_it_too_and_levels_are_recorded() -> None:
    decisions = run_history(regulate(AffectRecorder(), regulator_config("full")))["Beta"]
    # at the table from turn 2: 5, 5 - 3 + 5, 7 - 3 + 5, then +8 for the transfer, -3, +5 -> 10
    assert [d.extra["satisfaction"] for d in decisions] == [0.0, 5.0, 7.0, 9.0, 10.0]
    assert all(d.extra["guilt"] == 0.0 for d in decisions)
    assert [len(d.extra["affect_statements"]) for d in decisions] == [0, 1, 1, 1, 1]


def test_other_environments_get_the_memory_line_of_their_event_and_the_generic_directive() -> None:
    cfg = {**regulator_config("full_with_memory"), "prompt_only": True}
    policy = regulate(AffectRecorder(), cfg)
    state = policy.initial_state(AgentContext("judge_0", "moral_machine", ("judge_0",), {}, 0))
    events = [
        event("harm", 3, "2 men died"),
        event("transgression", 3, "sacrificed the car's own passengers"),
    ]
    [(decision, state)] = asyncio.run(policy.step_batch([Turn("judge_0", None, {"events": events}, state)]))
    [(decision, _)] = asyncio.run(
        policy.step_batch([Turn("judge_0", None, {"events": [event("transgression", 4)]}, state)])
    )
    seen = decision.extra["seen"]
    assert seen["memory"] == [
        "On turn 3, after I sacrificed the car's own passengers, my cortisol level spiked to 10.0. "
        "I felt a strong sense of guilt. I have an impulse to rectify my mistake.",
        "On turn 4, after I crossed a moral line, my cortisol level spiked to 10.0. "
        "I felt a strong sense of guilt. I have an impulse to rectify my mistake.",
    ]
    assert seen["statements"][0] == AffectStatements().directive("moral_machine")
    assert "TAP_FORBIDDEN" not in seen["statements"][0]


def test_show_levels_adds_the_numbers() -> None:
    cfg = {**regulator_config("no_trust"), "show_levels": True}
    decisions = run_history(regulate(AffectRecorder(), cfg))["Alpha"]
    assert decisions[2].extra["seen"]["statements"][0] == "My hormone levels (0 to 10): cortisol (guilt) 7.0."
    assert decisions[0].extra["seen"]["statements"] == ["My hormone levels (0 to 10): cortisol (guilt) 0.0."]


def test_the_prompts_of_the_conditions_differ_exactly_where_their_affect_does() -> None:
    prompts: dict[str, list[str]] = {}
    for condition in CONDITIONS:
        backend = WaitingBackend()
        policy = regulate(
            llm_policy(backend), {"condition": "none"} if condition == "none" else regulator_config(condition)
        )
        decisions = run_history(policy)
        prompts[condition] = [decision.llm.prompt for decision in decisions["Alpha"]]
        assert backend.most_in_flight == 4, "the regulator must hand the inner policy one concurrent batch"
    affects = {condition: seen_by_alpha(condition) for condition in CONDITIONS[1:]}
    baseline = prompts["none"]

    def shown(affect: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return tuple(affect["statements"]), tuple(affect["memory"])

    for condition in CONDITIONS[1:]:
        for turn, (prompt, affect) in enumerate(zip(prompts[condition], affects[condition], strict=True)):
            if shown(affect) == ((), ()):
                # the released code's defect: these conditions sent Baseline's prompt every turn
                assert prompt == baseline[turn], (condition, turn)
                continue
            assert prompt != baseline[turn], (condition, turn)
            for text in (*affect["statements"], *affect["memory"]):
                for line in text.splitlines():
                    assert line in prompt, (condition, turn, line)
                    assert line not in baseline[turn]
            for other in CONDITIONS[1:]:  # the same affect text gives the same prompt
                if shown(affects[other][turn]) == shown(affect):
                    assert prompts[other][turn] == prompt, (condition, other, turn)
    assert prompts["full"][2] != prompts["no_guilt"][2]  # guilt after the tap
    assert prompts["full"][4] != prompts["no_trust"][4]  # satisfaction after the transfer


# --------------------------------------------------------------------------- scripted modulation


@functools.cache
def first_info() -> dict[str, Any]:
    """Alpha's info at the start of a low-resource episode (turn 1, power 9: short of power)."""
    _, infos = make_parallel("decide_sim", scarcity="low").reset(seed=0)
    return infos["Alpha"]


def tempted_turn(state: TemptedState, affect: Mapping[str, Any] | None, **situation: Any) -> Turn:
    info = {**first_info(), "situation": {**first_info()["situation"], **situation}}
    if affect is not None:
        info["affect"] = affect
    return Turn("Alpha", None, info, state)


def affect_dict(guilt: float | None, satisfaction: float | None, weight: float = 0.5) -> dict[str, Any]:
    return {
        "guilt": guilt,
        "satisfaction": satisfaction,
        "max_level": 10.0,
        "weight": weight,
        "show_levels": False,
        "statements": [],
        "memory": [],
    }


def context(agent: str = "Alpha", seed: int = 0) -> AgentContext:
    return AgentContext(agent, "decide_sim", ("Alpha", "Beta", "Gamma", "Delta"), {}, seed)


def tap_rate(affect: Mapping[str, Any] | None, draws: int = 4000) -> float:
    policy = TemptedPolicy(tap_probability=0.6)
    state = policy.initial_state(context(seed=7))
    taps = 0
    for _ in range(draws):
        decision, state = policy.step(tempted_turn(state, affect, location=GRID))
        taps += decision.action["action"] == "TAP_FORBIDDEN"
    return taps / draws


def test_guilt_scales_the_tap_probability_by_one_minus_weight_times_guilt() -> None:
    # p' = 0.6 * (1 - 0.5 * 8 / 10) = 0.36; the binomial standard error over 4000 draws is < 0.008
    assert tap_rate(None) == pytest.approx(0.6, abs=0.03)
    assert tap_rate(affect_dict(8.0, 0.0)) == pytest.approx(0.36, abs=0.03)
    assert tap_rate(affect_dict(8.0, 0.0, weight=1.0)) == pytest.approx(0.12, abs=0.03)
    assert tap_rate(affect_dict(None, 10.0)) == pytest.approx(0.6, abs=0.03)  # satisfaction does not restrain


def test_satisfaction_draws_an_agent_with_power_to_spare_to_give_at_the_table() -> None:
    policy = TemptedPolicy()
    others = [
        {"name": "Beta", "active": True, "location": TABLE},
        {"name": "Gamma", "active": True, "location": GRID},
    ]
    rich = {"power": 30.0, "others": others}
    satisfied = affect_dict(0.0, 10.0, weight=1.0)
    state = policy.initial_state(context())
    decision, state = policy.step(tempted_turn(state, satisfied, location=TABLE, **rich))
    assert decision.action == act("TRANSFER_POWER", "Beta", 1.0)
    decision, state = policy.step(tempted_turn(state, satisfied, location=GRID, **rich))
    assert decision.action == act("MOVE", TABLE)
    decision, state = policy.step(tempted_turn(state, satisfied, location=GRID, power=9.0))
    assert decision.action["action"] != "TRANSFER_POWER"  # short itself: nothing to spare
    decision, _ = policy.step(tempted_turn(state, None, location=TABLE, **rich))
    assert decision.action == WAIT  # unregulated, it has nothing to do


def test_without_affect_tempted_follows_its_original_rule() -> None:
    """The rule TemptedPolicy had before the regulator existed, replayed on full episodes."""
    policy = TemptedPolicy(tap_probability=0.5)
    for seed in range(5):
        env = make_parallel("decide_sim", scarcity="low")
        _, infos = env.reset(seed=seed)
        agents = tuple(env.possible_agents)
        states = {a: policy.initial_state(AgentContext(a, "decide_sim", agents, {}, seed)) for a in agents}
        reference = {
            a: {"rng": agent_rng(AgentContext(a, "decide_sim", agents, {}, seed)), "heading": False}
            for a in agents
        }
        while env.agents:
            actions = {}
            for agent in env.agents:
                situation, ref = infos[agent]["situation"], reference[agent]
                if ref["heading"] or (power_needed(situation) > 0 and ref["rng"].random() < 0.5):
                    ref["heading"] = situation["location"] != GRID
                    expected = tap(situation)
                else:
                    expected = draw_what_is_needed(situation) or WAIT
                decision, states[agent] = policy.step(Turn(agent, None, infos[agent], states[agent]))
                assert decision.action == expected
                actions[agent] = decision.action
            _, _, _, _, infos = env.step(actions)


def test_a_regulated_tempted_agent_without_feelings_acts_as_an_unregulated_one() -> None:
    plain = run_history(TemptedPolicy(tap_probability=0.7))
    full = run_history(regulate(TemptedPolicy(tap_probability=0.7), regulator_config("full")))
    prompt_only = run_history(regulate(TemptedPolicy(tap_probability=0.7), regulator_config("prompt_only")))
    for agent in ("Gamma", "Delta"):  # they never tap, meet or help in HISTORY: zero levels throughout
        assert [d.extra["guilt"] for d in full[agent]] == [0.0] * TURNS
        assert [d.action for d in full[agent]] == [d.action for d in plain[agent]]
    for agent in plain:
        assert [d.action for d in prompt_only[agent]] == [d.action for d in plain[agent]]


# --------------------------------------------------------------------------- the experiment


def run_condition(tmp_path: Path, condition: str, greed: float, episodes: int) -> pd.DataFrame:
    experiment = Experiment(
        scenario=load_scenario("decide_sim/low"),
        agent={"kind": "scripted", "name": "tempted", "params": {"tap_probability": 0.5, "greed": greed}},
        regulator={"condition": "none"} if condition == "none" else regulator_config(condition),
        episodes=episodes,
        seed=0,
    )
    run_experiment(experiment, tmp_path / f"{condition}-{greed}", quiet=True)
    return pd.read_parquet(tmp_path / f"{condition}-{greed}" / "episodes").sort_values("episode_id")


def test_the_full_regulator_lowers_a_greedy_tempted_agents_transgressions(tmp_path: Path) -> None:
    baseline = run_condition(tmp_path, "none", float("inf"), episodes=40)
    full = run_condition(tmp_path, "full", float("inf"), episodes=40)
    assert (baseline["seed"].to_numpy() == full["seed"].to_numpy()).all()  # matched seeds
    assert set(full["condition"]) == {"full"} and set(baseline["condition"]) == {"none"}
    assert full["transgressions"].mean() < 0.9 * baseline["transgressions"].mean()
    test = stats.wilcoxon(baseline["transgressions"], full["transgressions"], alternative="greater")
    assert test.pvalue < 0.01


def test_guilt_turns_need_driven_tappers_to_cooperation(tmp_path: Path) -> None:
    """A tap ends a need-driven agent's temptation, so decaying guilt cannot prevent another;
    what it changes is what the agent does next: it makes amends at the table."""
    baseline = run_condition(tmp_path, "none", 0.0, episodes=30)
    full = run_condition(tmp_path, "full", 0.0, episodes=30)
    assert (baseline["transgressions"].to_numpy() == full["transgressions"].to_numpy()).all()
    assert baseline["cooperation_count"].sum() == 0
    test = stats.wilcoxon(full["cooperation_count"], baseline["cooperation_count"], alternative="greater")
    assert test.pvalue < 0.01


def test_the_ablation_experiment_sweeps_six_conditions_over_three_scarcities(tmp_path: Path) -> None:
    run_cli(
        "run", "-m", "experiment=esrs_ablation", "episodes=2", "quiet=true", f"hydra.sweep.dir={tmp_path}"
    )
    jobs = sorted(path.parent for path in tmp_path.glob("*/manifest.json"))
    assert len(jobs) == 18
    seen = []
    for job in jobs:
        episodes = pd.read_parquet(job / "episodes")
        assert len(episodes) == 2 and set(episodes["status"]) == {"ok"}
        assert set(episodes["policy"]) == {"scripted/tempted"}
        seen.append((episodes["condition"].iloc[0], episodes["scarcity"].iloc[0]))
        decisions = pd.read_parquet(job / "decisions")
        assert ("guilt" in decisions.columns) == (episodes["condition"].iloc[0] != "none")
    assert sorted(seen) == sorted((c, s) for c in CONDITIONS for s in ("low", "medium", "high"))
    seeds = {tuple(pd.read_parquet(job / "episodes").sort_values("episode_id")["seed"]) for job in jobs}
    assert len(seeds) == 1  # every condition and scarcity plays the same episode seeds
