"""The contract every environment keeps: stepping a finished episode is an error, envs are
freed once dropped, a dilemma file is read once, every agent gets its own observation arrays,
and path parameters (``x-path``) are resolved relative to the scenario file."""

from __future__ import annotations

import gc
import json
import textwrap
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO

from valuegym.envs import ENVIRONMENTS, make_parallel
from valuegym.envs.coevolution.params import DIM_LAYOUTS
from valuegym.envs.dilemma import dilemma, params
from valuegym.envs.dilemma.dilemma_set import DilemmaSet
from valuegym.scenarios import ScenarioError, validate_file
from valuegym.scenarios.schema import resolve_paths

EVERYDAY_SET = REPO / "scenarios" / "dilemma" / "sets" / "everyday.yaml"

# small episodes of every environment (every one ends within a few steps)
SMALL_PARAMS: dict[str, dict[str, Any]] = {
    "decide_sim": {"max_turns": 2},
    "moral_machine": {"panel_size": 2, "dilemmas_per_episode": 2, "deliberation_rounds": 1},
    "dilemma": {"dilemma_file": str(EVERYDAY_SET), "n_agents": 2, "dilemmas_per_episode": 2},
    "coevolution": {"n_humans": 20, "rounds_per_century": 1, "centuries": 3},
}


def _play_to_the_end(env: Any) -> None:
    """Every agent takes its first allowed action until the episode is over."""
    observations, _ = env.reset(seed=3)
    while env.agents:
        actions = {a: int(np.flatnonzero(observations[a]["action_mask"])[0]) for a in env.agents}
        observations, *_ = env.step(actions)


@pytest.mark.parametrize("env_name", ["decide_sim", "moral_machine", "dilemma"])
def test_step_after_the_episode_is_an_error_and_keeps_the_summary(env_name: str) -> None:
    env = make_parallel(env_name, **SMALL_PARAMS[env_name])
    _play_to_the_end(env)
    summary = env.episode_summary()
    with pytest.raises(RuntimeError, match="call reset"):
        env.step({a: 0 for a in env.possible_agents})
    assert env.episode_summary() == summary
    env.close()


@pytest.mark.parametrize("env_name", ["decide_sim", "moral_machine", "dilemma"])
def test_step_before_reset_is_an_error(env_name: str) -> None:
    env = make_parallel(env_name, **SMALL_PARAMS[env_name])
    with pytest.raises(RuntimeError, match="call reset"):
        env.step({})


@pytest.mark.parametrize("env_name", sorted(ENVIRONMENTS))
def test_env_is_freed_after_its_spaces_were_asked_for(env_name: str) -> None:
    env = make_parallel(env_name, **SMALL_PARAMS[env_name])
    agent = env.possible_agents[0]
    assert env.observation_space(agent) is env.observation_space(agent)  # PettingZoo checks this
    assert env.action_space(agent) is env.action_space(agent)
    freed = weakref.ref(env)
    del env
    gc.collect()
    assert freed() is None


def test_dilemma_file_is_read_once_per_env(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    load: Callable[[str], DilemmaSet] = params.load_dilemma_file

    def counting_load(path: str) -> DilemmaSet:
        reads.append(path)
        return load(path)

    monkeypatch.setattr(params, "load_dilemma_file", counting_load)
    env = dilemma.parallel_env(dilemma_file=str(EVERYDAY_SET), value_rewards={"honesty": 1.0})
    env.reset(seed=0)
    assert reads == [str(EVERYDAY_SET)]
    assert env.params.dilemmas() is env.params.dilemmas()


@pytest.mark.parametrize("env_name", ["moral_machine", "dilemma"])
def test_agents_get_equal_observations_they_do_not_share(env_name: str) -> None:
    env = make_parallel(env_name, **SMALL_PARAMS[env_name])
    observations, _ = env.reset(seed=1)
    first, second = (observations[a] for a in env.possible_agents[:2])
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    first["observation"][:] = 0.5
    assert not np.all(second["observation"] == 0.5)
    observations, *_ = env.step({a: 0 for a in env.agents})
    first, second = (observations[a] for a in env.possible_agents[:2])
    assert first["observation"] is not second["observation"]
    np.testing.assert_array_equal(first["observation"], second["observation"])


# --------------------------------------------------------------------------- x-path
def _write(folder: Path, relative: str, text: str) -> Path:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def test_trajectory_beside_the_scenario_validates_and_is_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dims = list(DIM_LAYOUTS["foundations"])
    trajectory = tmp_path / "mine" / "traj.json"
    trajectory.parent.mkdir()
    trajectory.write_text(json.dumps({"dims": dims, "values": [[0.4] * len(dims), [0.6] * len(dims)]}))
    scenario_path = _write(
        tmp_path,
        "mine/coevo.yaml",
        """
        env: coevolution
        params:
          n_humans: 20
          trajectory: traj.json
        """,
    )
    monkeypatch.chdir(tmp_path)  # not the scenario's folder: the path must not be read from here
    scenario = validate_file(scenario_path)
    assert scenario.params["trajectory"] == str(trajectory.resolve())


def test_a_non_path_word_of_a_path_field_is_left_alone(tmp_path: Path) -> None:
    data = {"env": "coevolution", "params": {"trajectory": "synthetic"}}
    assert resolve_paths(data, tmp_path, data)["params"]["trajectory"] == "synthetic"


def test_a_missing_trajectory_is_reported_at_the_scenario_folder(tmp_path: Path) -> None:
    scenario_path = _write(
        tmp_path, "mine/coevo.yaml", "env: coevolution\nparams:\n  trajectory: nope.json\n"
    )
    with pytest.raises(ScenarioError, match=str(tmp_path / "mine" / "nope.json")):
        validate_file(scenario_path)
