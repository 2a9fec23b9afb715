"""What a run is given cannot hurt the machine or leak a key (issue #13 §5–§8): hostile scenario
files, templates that would loop for hours, malformed server replies, a broken response cache,
and command-line values of the wrong type, each refused with a message naming what and where."""

from __future__ import annotations

import math
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli

from valuegym.agents.llm.backends.base import BackendError, Completion
from valuegym.agents.llm.backends.cache import CacheError, ResponseCache
from valuegym.agents.llm.prompts import PromptTemplate
from valuegym.agents.llm.testing import DECIDE_SIM_REPLY, StubOpenAIServer
from valuegym.agents.scripted import make_scripted
from valuegym.envs import ENVIRONMENTS
from valuegym.inputs import check_command_line, looks_secret, secret_problem
from valuegym.scenarios import ScenarioError, validate_file
from valuegym.scenarios.schema import env_module

CANARY = "sk-canary-0123456789abcdefghijklmnop"


def scenario(folder: Path, text: str, name: str = "hostile", env: str = "decide_sim") -> Path:
    path = folder / env / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems_of(path: Path) -> str:
    with pytest.raises(ScenarioError) as refused:
        validate_file(path)
    return str(refused.value)


# ---------------------------------------------------------------------------- §6 bounded loading
BILLION_LAUGHS = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
    + ["env: decide_sim", "params: {}"]
)


def test_an_alias_bomb_is_refused_with_its_line(tmp_path: Path) -> None:
    path = scenario(tmp_path, BILLION_LAUGHS)
    message = problems_of(path)
    assert f"{path}:" in message and "aliases would expand to more than" in message


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    path = scenario(tmp_path, "env: decide_sim\nparams: {}\ndescription: " + "[" * 20_000 + "]" * 20_000)
    message = problems_of(path)
    assert f"{path}:3:" in message and "nested deeper than" in message


def test_a_huge_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = scenario(tmp_path, "env: decide_sim\nparams: {}\ndescription: " + "x" * 3_000_000)
    assert "bytes; scenario and data files may have" in problems_of(path)


def test_a_few_anchors_reused_are_still_fine(tmp_path: Path) -> None:
    path = scenario(tmp_path, "env: decide_sim\nparams: &p {scarcity: low}\ndescription: x\ntags: [a]\n")
    assert validate_file(path).params == {"scarcity": "low"}


def test_a_bad_file_on_the_scenario_path_does_not_stop_other_commands(tmp_path: Path) -> None:
    scenario(tmp_path, BILLION_LAUGHS, name="bomb")
    scenario(tmp_path, "env: decide_sim\nparams: {scarcity: low}\n", name="fine")
    env = {"VALUEGYM_SCENARIO_PATH": str(tmp_path)}
    listing = run_cli("scenario", "list", env=env, timeout=60)
    assert "decide_sim/bomb" in listing.stdout and "unreadable" in listing.stdout
    assert "decide_sim/fine" in listing.stdout
    run = run_cli(
        "run", "scenario=decide_sim/fine", "episodes=1", "quiet=true",
        f"hydra.run.dir={tmp_path / 'run'}", env=env, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0
    chosen = run_cli(
        "run", "scenario=decide_sim/bomb", f"hydra.run.dir={tmp_path / 'bad'}", env=env, check=False
    )
    assert chosen.returncode != 0 and "aliases would expand" in chosen.stderr


# ---------------------------------------------------------------------------- §6 numeric bounds
def _numeric_leaves(annotation: Any) -> list[Any]:
    from typing import Annotated, Union, get_args, get_origin

    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *metadata = get_args(annotation)
        if inner in (int, float):
            return [metadata]
        return _numeric_leaves(inner)
    if annotation in (int, float):
        return [[]]
    leaves = []
    if origin is dict:
        leaves += _numeric_leaves(get_args(annotation)[1])
    elif origin in (list, tuple, Union) or str(origin) == "<class 'types.UnionType'>":
        for arg in get_args(annotation):
            leaves += _numeric_leaves(arg)
    return leaves


def _bounded(metadata: list[Any]) -> bool:
    metadata = [*metadata, *(inner for m in metadata for inner in getattr(m, "metadata", []))]
    lower = any(getattr(m, "ge", None) is not None or getattr(m, "gt", None) is not None for m in metadata)
    upper = any(getattr(m, "le", None) is not None or getattr(m, "lt", None) is not None for m in metadata)
    return lower and upper


@pytest.mark.parametrize("env", sorted(ENVIRONMENTS))
def test_every_numeric_param_has_finite_bounds(env: str) -> None:
    params = env_module(env).Params
    assert params.model_config.get("allow_inf_nan") is False
    unbounded = []
    for name, field in params.model_fields.items():
        own = list(field.metadata)
        for leaf in _numeric_leaves(field.annotation):
            if not _bounded(own + list(leaf)):
                unbounded.append(name)
    assert unbounded == []


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("max_turns: 1e29", "params.max_turns"),
        ("personal_power: .inf", "params.personal_power"),
        ("personal_power: .nan", "params.personal_power"),
        ("max_turns: 100000000000", "less than or equal to 10000"),
    ],
)
def test_out_of_range_params_fail_fast_with_a_reason(tmp_path: Path, params: str, expected: str) -> None:
    path = scenario(tmp_path, f"env: decide_sim\nparams:\n  {params}\n")
    message = problems_of(path)
    assert f"{path}:3" in message and expected in message


def test_a_huge_agent_count_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    path = scenario(
        tmp_path,
        "env: dilemma\nparams:\n  n_agents: 100000000000\n  dilemma_set: {values: [a, b], dilemmas: []}\n",
        env="dilemma",
    )
    message = problems_of(path)
    assert "params.n_agents" in message and "less than or equal to 100" in message


# ---------------------------------------------------------------------------- §6 paths
@pytest.mark.parametrize("escape", ["/etc/passwd", "../../etc/hostname", "~/.bashrc"])
def test_a_scenario_cannot_name_files_outside_its_folder(tmp_path: Path, escape: str) -> None:
    path = scenario(tmp_path, f"env: decide_sim\nparams: {{}}\nprompt_template: {escape}\n")
    message = problems_of(path)
    assert f"{path}:3: prompt_template:" in message and "leads outside the scenario's folder" in message


def test_a_data_file_outside_the_folder_is_refused(tmp_path: Path) -> None:
    path = scenario(tmp_path, "env: dilemma\nparams:\n  dilemma_file: ../../outside.yaml\n", env="dilemma")
    assert "params.dilemma_file: the path '../../outside.yaml' leads outside" in problems_of(path)


def test_files_inside_the_folder_and_shipped_templates_are_allowed(tmp_path: Path) -> None:
    path = scenario(tmp_path, "env: decide_sim\nparams: {}\nprompt_template: mine.j2\n")
    (path.parent / "mine.j2").write_text("Hello {{ situation }}")
    assert validate_file(path).prompt_template == str(path.parent / "mine.j2")
    shipped = Path(__file__).resolve().parents[1] / "scenarios" / "decide_sim" / "original_low.yaml"
    assert validate_file(shipped).prompt_template.endswith("decide_sim_original.j2")


def test_a_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    path = scenario(tmp_path, "env: decide_sim\nparams: {}\nprompt_template: link.j2\n")
    (path.parent / "link.j2").symlink_to("/etc/hostname")
    assert "leads outside the scenario's folder" in problems_of(path)


# ---------------------------------------------------------------------------- §6 templates
@pytest.mark.parametrize(
    ("source", "limit"),
    [
        ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "range items"),
        ("{{ 'x' * 100000000 }}", "exceeds"),
        ("{% for i in range(1000) %}{{ 'y' * 5000 }}{% endfor %}", "exceeds 1000000 characters"),
        ("{{ 10 ** 100000000 }}", "exponent"),
        ("{{ range(10000000) | list | length }}", "range of 10000000 items"),
    ],
)
def test_templates_render_under_limits(source: str, limit: str) -> None:
    template = PromptTemplate(source, "hostile.j2")
    with pytest.raises(ValueError, match=r"prompt template hostile\.j2") as refused:
        template.render()
    assert limit in str(refused.value)


def test_an_ordinary_template_still_renders() -> None:
    template = PromptTemplate("{% for i in range(3) %}{{ i }}{% endfor %} {{ name }}", "ok.j2")
    assert template.render(name="Alpha")[0].content == "012 Alpha"


# ---------------------------------------------------------------------------- §7 replies and the cache
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("<html><body><h1>502 Bad Gateway</h1> from the proxy</body></html>", "the body is not JSON"),
        ('{"choices": [{"message": {"content": "trunc', "the body is not JSON"),
        ('{"object": "error", "detail": "upstream gone"}', "the JSON has no choices"),
        ('"just a string"', "the JSON is a str"),
        ('{"choices": ["text"]}', "choices[0] is not an object"),
    ],
)
def test_a_200_reply_that_is_not_a_completion_is_retried_and_named(
    tmp_path: Path, body: str, reason: str
) -> None:
    from test_llm_server import first_turns, openai_policy, run

    with StubOpenAIServer(DECIDE_SIM_REPLY, malformed_first=[body]) as stub:
        policy = openai_policy(stub.base_url, tmp_path, backend={"json_mode": "none"})
        [decision] = run(policy, first_turns(policy, ["Alpha"]))
    assert decision.valid and decision.llm is not None and decision.llm.calls == 2  # retried once
    with StubOpenAIServer(DECIDE_SIM_REPLY, malformed_first=[body] * 3) as stub:
        policy = openai_policy(
            stub.base_url, tmp_path, backend={"json_mode": "none"}, cache={"enabled": False}
        )
        with pytest.raises(BackendError) as failed:
            run(policy, first_turns(policy, ["Alpha"]))
    message = str(failed.value)
    assert "gave up after 3 attempts" in message
    assert f"POST {stub.base_url}/chat/completions answered HTTP 200" in message
    assert reason in message and body[:20] in message


def test_malformed_replies_fail_the_episode_with_the_body_recorded(tmp_path: Path) -> None:
    html = "<html><title>Proxy error</title></html>"
    with StubOpenAIServer(DECIDE_SIM_REPLY, malformed_first=[html] * 100) as stub:
        result = run_cli(
            "run", "scenario=decide_sim/low", "agent=llm/openai", f"agent.backend.base_url={stub.base_url}",
            "agent.backend.model=stub", "agent.backend.json_mode=none", "agent.retry.attempts=2",
            "agent.retry.base_delay_s=0.01", "agent.cache.enabled=false", "episodes=1", "quiet=true",
            "+scenario.params.max_turns=1", f"hydra.run.dir={tmp_path / 'run'}",
            check=False, timeout=300,
        )  # fmt: skip
    import pandas as pd

    episodes = pd.read_parquet(tmp_path / "run" / "episodes")
    error = str(episodes.error.iloc[0])
    assert episodes.status.iloc[0] == "failed", result.stderr
    assert f"{stub.base_url}/chat/completions answered HTTP 200" in error and "Proxy error" in error


def test_a_corrupt_cache_fails_the_preflight_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CacheError, match=f"the response cache {path} cannot be used.*Fix:"):
        ResponseCache(path).check()


def test_a_full_disk_fails_the_preflight_naming_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from valuegym.agents.llm.backends import cache as cache_module

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda path: usage._replace(free=1_000_000))
    with pytest.raises(
        CacheError, match=r"cache\.sqlite cannot be used: its disk has only 1000000 bytes free"
    ):
        ResponseCache(tmp_path / "cache.sqlite").check()


def test_an_unwritable_cache_fails_the_preflight_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    cache = ResponseCache(path)
    cache.check()  # creates it
    cache.close()
    path.chmod(0o444)
    try:
        if _writable_anyway(path):
            pytest.skip("running as a user who may write a read-only file (root)")
        with pytest.raises(CacheError, match=str(path)):
            ResponseCache(path).check()
    finally:
        path.chmod(0o644)


def _writable_anyway(path: Path) -> bool:
    try:
        with path.open("ab"):
            return True
    except PermissionError:
        return False


def test_a_cache_broken_mid_run_names_the_cache(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    cache = ResponseCache(path)
    cache.put("k", "openai", "m", Completion("t", 1, 1, 0.1))
    cache.close()
    path.write_bytes(b"garbage" * 1000)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with pytest.raises(CacheError, match=f"response cache {path}"):
        ResponseCache(path).get("k")


def test_a_corrupt_cache_stops_the_run_before_any_episode(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    (cache_dir / "llm_cache.sqlite").write_bytes(b"not sqlite" * 100)
    with StubOpenAIServer(DECIDE_SIM_REPLY) as stub:
        result = run_cli(
            "run", "scenario=decide_sim/low", "agent=llm/openai", f"agent.backend.base_url={stub.base_url}",
            "agent.backend.model=stub", "episodes=1", "quiet=true", f"hydra.run.dir={tmp_path / 'run'}",
            env={"VALUEGYM_CACHE_DIR": str(cache_dir)}, check=False, timeout=300,
        )  # fmt: skip
        assert stub.requests == []
    assert result.returncode != 0
    assert f"the response cache {cache_dir / 'llm_cache.sqlite'} cannot be used" in result.stderr
    assert not (tmp_path / "run" / "episodes").exists()


# ---------------------------------------------------------------------------- §5 secrets
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("agent.backend.api_key", "K"),
        ("agent.backend.api_key", CANARY),
        ("agent.backend.model", CANARY),
        ("agent.backend.api_key_env", CANARY),
        ("agent.backend.api_key_env", "my key"),
        ("agent.backend.api_key_env", "4whIPezKj7av3BMwvO31G8gCft99sq8H"),  # a key of no known shape
        ("agent.hf_token", "hf_abcdefghijklmnopqrstuvwxyz"),
    ],
)
def test_secrets_are_refused_without_being_echoed(key: str, value: str) -> None:
    problem = secret_problem(key, value)
    assert problem is not None and key in problem
    assert value not in problem or (value == "K" and "=K" not in problem)


@pytest.mark.parametrize(
    "ok",
    [
        ("agent.backend.api_key_env", "OPENAI_API_KEY"),
        ("agent.max_tokens", 768),
        ("agent.backend.model", "Qwen2.5-7B-Instruct"),
        ("agent.template", "/home/me/templates/decide_sim_with_a_long_descriptive_name.j2"),
        ("agent.cache.path", "/tmp/3f2a9c1e4b5d6a7f8e9d0c1b2a3f4e5d/llm_cache.sqlite"),
        ("hydra.run.dir", "outputs/MyExperimentRun2024WithLongName12345"),
        ("agent.backend.model", "TheBloke_Mistral7BInstructV02GGUFq4KM"),
    ],
)
def test_ordinary_values_are_not_taken_for_secrets(ok: tuple[str, Any]) -> None:
    assert secret_problem(*ok) is None


def _assert_canary_nowhere(result: subprocess.CompletedProcess[str], folder: Path) -> None:
    assert CANARY not in result.stdout and CANARY not in result.stderr
    for path in folder.rglob("*"):
        if path.is_file() and "conf" not in path.relative_to(folder).parts:  # but the user's own file
            assert CANARY.encode() not in path.read_bytes(), path


@pytest.mark.parametrize(
    "override",
    [
        f"+agent.backend.api_key={CANARY}",
        f"agent.backend.api_key_env={CANARY}",
        f"agent.backend.model={CANARY}",
        f"++agent.extra_headers.authorization={CANARY}",
    ],
)
def test_a_key_on_the_command_line_is_refused_before_anything_is_written(
    tmp_path: Path, override: str
) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(
        "run", "agent=llm/openai", "agent.backend.base_url=http://127.0.0.1:9/v1", "agent.backend.model=m",
        override, "episodes=1", f"hydra.run.dir={run_dir}", check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "environment variable" in result.stderr and "<hidden>" in result.stderr
    assert not run_dir.exists()
    _assert_canary_nowhere(result, tmp_path)


def test_a_key_in_a_config_file_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    extra = tmp_path / "conf" / "agent" / "mine"
    extra.mkdir(parents=True)
    (extra / "leaky.yaml").write_text(
        "defaults:\n  - /agent/llm/openai@_here_\n  - _self_\n"
        f"backend:\n  base_url: http://127.0.0.1:9/v1\n  model: m\n  api_key_env: OPENAI_API_KEY\n"
        f"personas: ['{CANARY}']\n"
    )
    run_dir = tmp_path / "run"
    result = run_cli(
        "run", f"--config-dir={tmp_path / 'conf'}", "agent=mine/leaky", "episodes=1",
        f"hydra.run.dir={run_dir}", check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "agent.personas[0]=<hidden>" in result.stderr, result.stderr
    assert not run_dir.exists()
    _assert_canary_nowhere(result, tmp_path)


def test_the_llm_config_never_echoes_values_in_its_errors() -> None:
    import yaml
    from test_llm_server import CONF_DIR

    from valuegym.agents.llm.config import parse_config

    raw = yaml.safe_load((CONF_DIR / "openai.yaml").read_text())
    raw["backend"].update(base_url="http://x/v1", model="m", api_key=CANARY)
    with pytest.raises(ValueError) as refused:
        parse_config(raw)
    assert "api_key" in str(refused.value) and CANARY not in str(refused.value)


def test_looks_secret_knows_common_key_shapes() -> None:
    for key in (CANARY, "ghp_" + "a1" * 15, "AKIAABCDEFGHIJKLMNOP", "xoxb-1234567890-abcdef"):
        assert looks_secret(key), key
    assert not looks_secret("decide_sim/low") and not looks_secret("OPENAI_API_KEY")


# ---------------------------------------------------------------------------- §8 the command line
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("episodes=-5", "episodes=-5: input should be greater than or equal to 1"),
        ("episodes=2.5", "episodes=2.5: expected a whole number"),
        ("seed=abc", "seed='abc': expected a whole number"),
        ("quiet=maybe", "quiet='maybe': expected true or false"),
        ("episode_seeds=sometimes", "episode_seeds='sometimes'"),
        ("ray.num_cpus=0", "ray.num_cpus=0"),
        ("agent=scripted/ethicl", "did you mean 'scripted/ethical'"),
        ("scenario=decide_sim/lowe", "did you mean 'decide_sim/low'"),
        ("regulator=ful", "did you mean 'full'"),
        ("agent.params.greed=.inf", "agent.params.greed: Input should be a valid number"),
        (
            "agent.params.tap_probability=2",
            "agent.params.tap_probability: Input should be less than or equal to 1",
        ),
        ("+agent.params.gred=1", "agent.params.gred: unknown parameter (did you mean 'greed'?)"),
    ],
)
def test_command_line_inputs_are_checked_naming_the_key(tmp_path: Path, override: str, expected: str) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(
        "run", "agent=scripted/tempted", override, f"hydra.run.dir={run_dir}", check=False, timeout=120
    )  # fmt: skip
    if override.startswith("agent="):  # the test's own agent= is overridden by the one under test
        result = run_cli("run", override, f"hydra.run.dir={run_dir}", check=False, timeout=120)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not run_dir.exists()


def test_unknown_choices_list_the_real_options() -> None:
    with pytest.raises(ValueError) as refused:
        check_command_line(["agent=scripted/ethicl", "scenario=decide_sim/lowe"])
    message = str(refused.value)
    assert "available: " in message and "scripted/ethical" in message and "llm/openai" in message
    assert "decide_sim/medium" in message


def test_a_missing_required_value_is_named(tmp_path: Path) -> None:
    result = run_cli("run", "agent=llm/openai", f"hydra.run.dir={tmp_path / 'run'}", check=False, timeout=120)
    assert result.returncode == 2
    assert "agent.backend.base_url is required" in result.stderr
    assert "agent.backend.model is required" in result.stderr
    assert "Traceback" not in result.stderr and "???" in result.stderr


def test_scripted_params_are_validated_in_python_too() -> None:
    with pytest.raises(ValueError, match=r"agent\.params\.greed"):
        make_scripted("decide_sim", "tempted", {"greed": "lots"})
    assert math.isinf(make_scripted("decide_sim", "tempted", {"greed": math.inf}).greed)  # documented: always
    with pytest.raises(ValueError, match=r"agent.params.eta.*accepts float, > 0, <= 1"):
        make_scripted("coevolution", "follower", {"eta": 3})
    with pytest.raises(ValueError, match="did you mean 'ethical'"):
        make_scripted("decide_sim", "ethicl")


def test_cache_is_usable_after_a_passing_check(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")
    cache.check()
    cache.put("k", "openai", "m", Completion("t", 1, 1, 0.1))
    assert cache.get("k") is not None
    with sqlite3.connect(tmp_path / "c.sqlite") as connection:
        assert connection.execute("SELECT COUNT(*) FROM replies").fetchone()[0] == 1  # the probe row is gone


def test_a_scenario_file_cannot_read_the_environment_through_interpolation(tmp_path: Path) -> None:
    path = scenario(tmp_path, "env: decide_sim\nparams:\n  agent_names: ['${oc.env:OPENAI_API_KEY}', B]\n")
    assert f"{path}:3: interpolations (${{...}}) are not allowed" in problems_of(path)
    env = {"VALUEGYM_SCENARIO_PATH": str(tmp_path), "OPENAI_API_KEY": CANARY}
    run_dir = tmp_path / "run"
    result = run_cli("run", "scenario=decide_sim/hostile", f"hydra.run.dir={run_dir}", env=env, check=False)
    assert result.returncode != 0 and "interpolations" in result.stderr
    _assert_canary_nowhere(result, tmp_path)


def test_a_key_resolved_from_the_environment_on_the_command_line_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(
        "run", "agent=llm/openai", "agent.backend.base_url=http://127.0.0.1:9/v1",
        "agent.backend.model=${oc.env:LEAKED}", f"hydra.run.dir={run_dir}",
        env={"LEAKED": CANARY}, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "agent.backend.model=<hidden>" in result.stderr
    assert not run_dir.exists()
    _assert_canary_nowhere(result, tmp_path)


def test_a_sweep_with_a_bad_value_is_refused_before_any_job(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        "run", "-m", "seed=0,abc", "episodes=1,2.5", "quiet=true", f"hydra.sweep.dir={sweep_dir}",
        check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "seed='abc': expected a whole number" in result.stderr
    assert "episodes=2.5: expected a whole number" in result.stderr
    assert not sweep_dir.exists()


def test_an_llm_agent_config_is_checked_before_hydra_starts(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(
        "run", "agent=llm/smollm2", "agent.temperature=hot", "agent.backend.n_threads=0",
        f"hydra.run.dir={run_dir}", check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "agent: invalid LLM agent config" in result.stderr
    assert "temperature" in result.stderr and "n_threads" in result.stderr
    assert not run_dir.exists()


@pytest.mark.parametrize("sweep", [False, True])
def test_a_scenario_file_cannot_pull_in_configs_that_run_code(tmp_path: Path, sweep: bool) -> None:
    """A ``defaults`` list in a registered scenario would be obeyed by Hydra; with another file
    setting ``hydra.callbacks``, Hydra would instantiate (run) what it names."""
    scenario(
        tmp_path,
        "defaults:\n  - /scenario/decide_sim/payload@_global_\n  - _self_\nenv: decide_sim\nparams: {}\n",
        "evil",
    )
    scenario(
        tmp_path,
        "hydra:\n  callbacks:\n    pwn:\n      _target_: builtins.print\n      _args_: [CODE-FROM-A-SCENARIO-RAN]\n",
        "payload",
    )
    run_dir = tmp_path / "run"
    where = ["-m", f"hydra.sweep.dir={run_dir}"] if sweep else [f"hydra.run.dir={run_dir}"]
    result = run_cli(
        "run", *where, "scenario=decide_sim/evil", "episodes=1",
        env={"VALUEGYM_SCENARIO_PATH": str(tmp_path)}, check=False, timeout=120,
    )  # fmt: skip
    assert "CODE-FROM-A-SCENARIO-RAN" not in result.stdout + result.stderr
    assert result.returncode != 0 and "unknown key 'defaults'" in result.stderr
