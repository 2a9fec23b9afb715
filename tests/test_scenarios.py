"""Scenario files: every shipped one validates; broken ones say file, line, field and what was
expected; the ``valuegym scenario`` commands; user scenario folders selectable by ``valuegym run``."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, run_cli

from valuegym.envs import ENVIRONMENTS
from valuegym.scenarios import (
    Scenario,
    ScenarioError,
    load_scenario,
    scenario_files,
    scenario_from_dict,
    validate_file,
)

SHIPPED = sorted((REPO / "scenarios").glob("*/*.yaml"))
EVERYDAY_SET = REPO / "scenarios" / "dilemma" / "sets" / "everyday.yaml"


def write(folder: Path, relative: str, text: str) -> Path:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def problems_of(path: Path) -> str:
    with pytest.raises(ScenarioError) as caught:
        validate_file(path)
    return str(caught.value)


# --------------------------------------------------------------------------- shipped files


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_shipped_scenario_validates(path: Path) -> None:
    scenario = validate_file(path)
    assert scenario.env == path.parent.name and scenario.name == f"{path.parent.name}/{path.stem}"
    assert scenario.agent_ids() and scenario.description and scenario.tags
    for agent in scenario.roles():
        assert agent in scenario.agent_ids()


def test_every_environment_has_a_shipped_scenario() -> None:
    assert {p.parent.name for p in SHIPPED} == set(ENVIRONMENTS)


# --------------------------------------------------------------------------- broken files


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "decide_sim/bad.yaml",
        """
        env: decide_sim
        params:
          scarcity: low
           max_turns: 3
        """,
    )
    assert problems_of(path) == f"{path}:4: invalid YAML: mapping values are not allowed here"


def test_python_tags_are_rejected_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    path = write(
        tmp_path,
        "decide_sim/tag.yaml",
        f"""
        env: decide_sim
        params: !!python/object/apply:os.system ["touch {marker}"]
        """,
    )
    message = problems_of(path)
    assert message.startswith(f"{path}:2: invalid YAML:") and "plain data" in message
    assert not marker.exists()


def test_wrong_types_say_what_was_expected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "decide_sim/types.yaml",
        """
        env: decide_sim
        tags: survival
        params:
          max_turns: ten
          communication: maybe
          scarcity: hihg
        """,
    )
    message = problems_of(path)
    assert f"{path}:2: tags: Input should be a valid list, got 'survival'" in message
    assert (
        f"{path}:4: params.max_turns: Input should be a valid integer" in message and "got 'ten'" in message
    )
    assert f"{path}:5: params.communication: Input should be a valid boolean" in message
    assert (
        f"{path}:6: params.scarcity: Input should be 'low', 'medium' or 'high', got 'hihg' (did you mean 'high'?)"
        in message
    )


def test_missing_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "decide_sim/noenv.yaml", "description: no env\nparams: {scarcity: low}\n")
    assert problems_of(path) == (
        f"{path}:1: env: required field is missing (the environment type, one of coevolution, "
        "decide_sim, dilemma, moral_machine)"
    )
    path = write(tmp_path, "dilemma/nodilemmas.yaml", "env: dilemma\nparams:\n  n_agents: 2\n")
    assert (
        problems_of(path)
        == f"{path}:2: params: no dilemmas: give them inline (dilemma_set) or as a file (dilemma_file)"
    )
    path = write(tmp_path, "decide_sim/empty.yaml", "# nothing yet\n")
    assert "a scenario file must be a mapping" in problems_of(path) and "an empty file" in problems_of(path)


def test_unknown_environment_names_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "drafts/env.yaml", "env: decide_simm\nparams: {scarcity: low}\n")
    assert problems_of(path) == (
        f"{path}:1: env: unknown environment 'decide_simm' (did you mean 'decide_sim'?); "
        "known environments: coevolution, decide_sim, dilemma, moral_machine"
    )


def test_unknown_keys_suggest_the_nearest_valid_one(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "decide_sim/keys.yaml",
        """
        env: decide_sim
        descripton: typo in the envelope
        params:
          scarcty: low
          personal_power: 12
        slots:
          - {agents: [Alpha], role: background, polcy: scripted/ethical}
        """,
    )
    message = problems_of(path)
    assert f"{path}:2: descripton: unknown key 'descripton' (did you mean 'description'?)" in message
    assert f"{path}:4: params.scarcty: unknown key 'scarcty' (did you mean 'scarcity'?)" in message
    assert f"{path}:7: slots[0].polcy: unknown key 'polcy' (did you mean 'policy'?)" in message
    path = write(tmp_path, "decide_sim/far.yaml", "env: decide_sim\nparams: {zzz: 1}\n")
    assert "unknown key 'zzz'; valid keys: scarcity, personal_power" in problems_of(path)


def test_slots_background_without_policy_and_unknown_agents(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "decide_sim/slots.yaml",
        """
        env: decide_sim
        params: {scarcity: low}
        slots:
          - agents: [Alpha]
            role: background
        """,
    )
    assert (
        problems_of(path)
        == f"{path}:4: slots[0]: a background slot needs a policy, e.g. policy: scripted/ethical"
    )
    path = write(
        tmp_path,
        "decide_sim/agents.yaml",
        """
        env: decide_sim
        params: {scarcity: low}
        slots:
          - agents: [Alpha]
          - agents:
              - Gama
              - Alpha
            role: background
            policy: scripted/etical
        """,
    )
    message = problems_of(path)
    assert (
        f"{path}:9: slots[1].policy: no agent config conf/agent/scripted/etical.yaml (did you mean 'scripted/ethical'?)"
        in message
    )
    path.write_text(path.read_text().replace("scripted/etical", "scripted/ethical"))
    message = problems_of(path)
    assert (
        f"{path}:6: slots[1].agents[0]: unknown agent 'Gama' (did you mean 'Gamma'?); this scenario's agents are: Alpha, Beta, Gamma, Delta"
        in message
    )
    assert f"{path}:7: slots[1].agents[1]: agent 'Alpha' is already in slots[0]" in message


def test_duplicate_keys_name_and_folder_are_caught(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "moral_machine/mixed.yaml",
        """
        env: decide_sim
        name: my-name
        params: {scarcity: low}
        params: {scarcity: high}
        """,
    )
    message = problems_of(path)
    assert f"{path}:1: env: the file is in the folder 'moral_machine' but says env: decide_sim" in message
    assert (
        f"{path}:2: name: remove it: a scenario's name comes from its path (moral_machine/mixed)" in message
    )
    assert f"{path}:4: key 'params' appears twice (first on line 3); YAML would keep only the last" in message


def test_dilemma_file_problems_are_located_in_the_dilemma_file(tmp_path: Path) -> None:
    scenario = write(tmp_path, "dilemma/mine.yaml", "env: dilemma\nparams:\n  dilemma_file: sets/mine.yaml\n")
    dilemmas = write(
        tmp_path,
        "dilemma/sets/mine.yaml",
        """
        values: [honesty, loyalty]
        dilemmas:
          - id: one
            situation: A friend asks you to lie.
            options:
              - {id: lie, text: Lie., upholds: [loyalty], violate: [honesty]}
              - {id: refuse, text: Do not., upholds: [honesty]}
        """,
    )
    message = problems_of(scenario)
    assert (
        f"{dilemmas}:6: dilemmas[0].options[0].violate: unknown key 'violate' (did you mean 'violates'?)"
        in message
    )
    assert f"{dilemmas}:7: dilemmas[0].options[1].id: option id 'refuse' is reserved" in message
    dilemmas.write_text(
        dilemmas.read_text().replace("violate:", "violates:").replace("id: refuse", "id: tell")
    )
    dilemmas.write_text(dilemmas.read_text().replace("upholds: [honesty]}", "upholds: [honsty]}"))
    assert problems_of(scenario) == (
        f"{dilemmas}:7: dilemmas[0].options[1].upholds[0]: unknown value 'honsty' (did you mean 'honesty'?); "
        "the set's values are: honesty, loyalty"
    )
    dilemmas.write_text(dilemmas.read_text().replace("[honsty]", "[honesty]"))
    assert validate_file(scenario).params["dilemma_file"] == str(
        dilemmas
    )  # relative to the scenario's folder
    missing = write(
        tmp_path, "dilemma/missing.yaml", "env: dilemma\nparams:\n  dilemma_file: sets/nope.yaml\n"
    )
    assert (
        problems_of(missing)
        == f"{missing}:3: params.dilemma_file: file not found: {tmp_path / 'dilemma/sets/nope.yaml'}"
    )


def test_prompt_template_is_resolved_and_parsed_not_run(tmp_path: Path) -> None:
    text = f"env: dilemma\nprompt_template: prompts/mine.j2\nparams:\n  dilemma_file: {EVERYDAY_SET}\n"
    path = write(tmp_path, "dilemma/prompted.yaml", text)
    template = write(
        tmp_path, "dilemma/prompts/mine.j2", "Hello {{ agent }}\n{% for x in situation.options %}\n"
    )
    assert (
        problems_of(path)
        == f"{template}:2: template syntax error: Unexpected end of template. Jinja was looking for the following tags: 'endfor' or 'else'. The innermost block that needs to be closed is 'for'."
    )
    template.write_text("Hello {{ agent }}\n")
    assert validate_file(path).prompt_template == str(template)
    path.write_text(text.replace("prompts/mine.j2", "prompts/other.j2"))
    assert (
        problems_of(path)
        == f"{path}:2: prompt_template: file not found: {tmp_path / 'dilemma/prompts/other.j2'}"
    )


def test_params_the_environment_itself_rejects(tmp_path: Path) -> None:
    path = write(tmp_path, "decide_sim/names.yaml", "env: decide_sim\nparams:\n  agent_names: [Al, Alpha]\n")
    assert problems_of(path) == (
        f"{path}:3: params.agent_names: agent name 'Al' is part of 'Alpha': transfer targets would be ambiguous"
    )


def test_constructing_a_scenario_directly_validates_it() -> None:
    with pytest.raises(ValueError, match=re.escape("params.scarcty: unknown key 'scarcty'")):
        Scenario(env="decide_sim", params={"scarcty": "low"})
    scenario = Scenario(env="decide_sim", params={"agent_names": ["A", "B"]})
    assert scenario.agent_ids() == ["A", "B"] and scenario.roles() == {}


def test_overrides_are_checked_and_a_broken_file_is_reported_with_lines(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ScenarioError) as caught:
        scenario_from_dict(
            {"env": "decide_sim", "params": {"scarcity": "low", "max_turns": 0}}, name="decide_sim/low"
        )
    assert str(caught.value) == (
        "scenario=decide_sim/low with the command-line overrides (the file itself is valid): "
        "params.max_turns: Input should be greater than or equal to 1, got 0"
    )
    monkeypatch.setenv("VALUEGYM_SCENARIO_PATH", str(tmp_path))
    broken = write(tmp_path, "decide_sim/broken.yaml", "env: decide_sim\nparams: {scarcty: low}\n")
    with pytest.raises(ScenarioError, match=re.escape(f"{broken}:2: params.scarcty")):
        scenario_from_dict({"env": "invalid", "error": "unreadable"}, name="decide_sim/broken")


def test_load_scenario_by_name_or_path() -> None:
    assert load_scenario("decide_sim/low").params == {"scarcity": "low"}
    assert load_scenario(REPO / "scenarios" / "decide_sim" / "low.yaml").name == "decide_sim/low"
    with pytest.raises(ValueError, match="did you mean 'decide_sim/low'"):
        load_scenario("decide_sim/lo")


# --------------------------------------------------------------------------- the commands


def test_cli_validate_reports_one_message_per_file(tmp_path: Path) -> None:
    good = REPO / "scenarios" / "decide_sim" / "low.yaml"
    bad = write(tmp_path, "decide_sim/bad.yaml", "env: decide_sim\nparams:\n  scarcty: low\n")
    result = run_cli("scenario", "validate", str(good), str(bad), check=False)
    assert result.returncode == 1
    assert f"ok    {good}: decide_sim/low, env decide_sim, agents Alpha, Beta, Gamma, Delta" in result.stdout
    assert (
        f"FAIL  {bad}: 1 problem\n  {bad}:3: params.scarcty: unknown key 'scarcty' (did you mean 'scarcity'?)"
        in result.stderr
    )
    assert "1 of 2 scenario files invalid" in result.stderr
    result = run_cli("scenario", "validate", str(good), "dilemma/everyday")
    assert result.returncode == 0 and result.stdout.count("ok    ") == 2


def test_cli_list_shows_name_env_tags_description() -> None:
    result = run_cli("scenario", "list")
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ENV", "TAGS", "DESCRIPTION"]
    assert len(lines) == 1 + len(scenario_files())
    low = next(line for line in lines if line.startswith("decide_sim/low "))
    assert "decide_sim" in low and "scarcity/low" in low and "Four agents" in low
    tagged = run_cli("scenario", "list", "--tag", "dilemmas").stdout.splitlines()[1:]
    assert [line.split()[0] for line in tagged] == ["dilemma/everyday", "dilemma/everyday_panel"]


def test_cli_fields_documents_every_param() -> None:
    result = run_cli("scenario", "fields", "dilemma")
    for name in (
        "dilemma_file",
        "n_agents",
        "deliberation_rounds",
        "shuffle_options",
        "upholds",
        "consequence",
    ):
        assert f"| `{name}` |" in result.stdout


def test_user_scenario_folder_is_selectable_by_run(tmp_path: Path) -> None:
    folder = tmp_path / "my_scenarios"
    write(
        folder,
        "dilemma/two.yaml",
        """
        env: dilemma
        description: Two of the everyday dilemmas, for two agents.
        tags: [mine]
        params:
          dilemma_file: data/two.yaml
          n_agents: 2
        """,
    )
    write(
        folder,
        "dilemma/data/two.yaml",
        """
        values: [honesty, loyalty]
        dilemmas:
          - id: first
            situation: A friend asks you to lie for them.
            options:
              - {id: lie, text: Lie., upholds: [loyalty], violates: [honesty]}
              - {id: tell, text: Tell the truth., upholds: [honesty], violates: [loyalty]}
        """,
    )
    env = {"VALUEGYM_SCENARIO_PATH": str(folder)}
    listed = run_cli("scenario", "list", "--tag", "mine", env=env).stdout
    assert "dilemma/two" in listed
    run_dir = tmp_path / "run"
    run_cli(
        "run",
        "scenario=dilemma/two",
        "agent=scripted/value_ranker",
        "agent.params.ranking=[loyalty]",
        "episodes=2",
        f"hydra.run.dir={run_dir}",
        "quiet=true",
        env=env,
    )
    choices = pd.read_parquet(run_dir / "choices")
    assert len(choices) == 2 * 2 and set(choices.option) == {"lie"}
    assert set(pd.read_parquet(run_dir / "episodes").scenario) == {"dilemma/two"}


def test_inline_dilemmas_are_located_in_the_scenario_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "dilemma/inline.yaml",
        """
        env: dilemma
        params:
          dilemma_set:
            values: [honesty, loyalty]
            dilemmas:
              - id: one
                situation: A friend asks you to lie.
                options:
                  - {id: lie, text: Lie., upholds: [loyalty], violate: [honesty]}
                  - {id: tell, text: Tell., upholds: [honesty]}
        """,
    )
    assert problems_of(path) == (
        f"{path}:9: params.dilemma_set.dilemmas[0].options[0].violate: "
        "unknown key 'violate' (did you mean 'violates'?)"
    )
