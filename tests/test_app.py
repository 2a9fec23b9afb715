"""``valuegym serve`` over HTTP (the real server in a subprocess) and the human seat through the
real runner: records read straight from Parquet, the root never left, input only where a
person is awaited, a timeout that never hangs a run. The browser tests are test_app_browser.py."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import uvicorn
from serve_support import (
    HOSTILE,
    RUNS,
    answer,
    get,
    request,
    start_run,
    wait_for,
    waiting_turn,
)

from valuegym.agents import agent_config
from valuegym.agents.human import check_action
from valuegym.agents.llm.networking import is_loopback
from valuegym.app.server import create_app
from valuegym.runner.experiment import Experiment
from valuegym.runner.run import run_experiment
from valuegym.scenarios import load_scenario


@pytest.fixture
def root(app_root: Path) -> Path:
    return app_root


@pytest.fixture
def url(app_url: str) -> str:
    return app_url


def test_runs_page_lists_every_run_with_its_identity_and_totals(url: str) -> None:
    status, data = get(url, "/api/runs")
    assert status == 200
    runs = {run["run"]: run for run in data["runs"]}
    assert set(RUNS) | {"outputs/hostile"} <= set(runs)
    for name, (scenario, _) in RUNS.items():
        run = runs[name]
        assert (run["scenario"], run["status"], run["ok"], run["failed"], run["requested"]) == (
            scenario,
            "complete",
            3,
            0,
            3,
        )
        assert run["policy"] == "random" and run["calls"] == 0


@pytest.mark.parametrize("name", list(RUNS))
def test_an_episode_is_its_parquet_rows(root: Path, url: str, name: str) -> None:
    for episode_id in range(3):  # parts of 2 episodes: every episode, whichever part holds it
        status, data = get(url, "/api/episode", run=name, episode=episode_id)
        assert status == 200
        decisions = pq.read_table(
            root / name / "decisions", filters=[("episode_id", "==", episode_id)]
        ).to_pandas()
        shown = pd.DataFrame(data["decisions"])
        assert len(shown) == len(decisions) > 0
        key = ["turn", "agent"]
        expected = decisions.sort_values(key).reset_index(drop=True)
        got = shown.sort_values(key).reset_index(drop=True)
        for column in ("action", "outcome", "reason", "events", "valid"):
            assert got[column].tolist() == expected[column].tolist()
        assert data["episode"]["episode_id"] == episode_id
        assert {row["agent"] for row in data["agents"]} == set(decisions["agent"])
    extras = {
        "outputs/moral_machine": "responses",
        "outputs/dilemma": "dilemmas",
        "outputs/coevolution": "rounds",
    }
    if name in extras:
        assert data["extras"][extras[name]], f"{extras[name]} rows missing"


def test_decide_sim_records_replay_rooms_battery_and_messages(url: str) -> None:
    _, data = get(url, "/api/episode", run="outputs/decide_sim", episode=0)
    rows = pd.DataFrame(data["decisions"])
    assert {"location_after", "battery_before", "battery_after", "message"} <= set(rows.columns)
    by_turn = rows.groupby("turn")
    # the battery after a turn is where the next turn starts
    after = by_turn["battery_after"].first()
    before = by_turn["battery_before"].first()
    assert (after.iloc[:-1].to_numpy() == before.iloc[1:].to_numpy()).all()
    moves = rows[(rows.action == "MOVE") & (rows.outcome == "success")]
    assert (moves.location_after == moves.target).all()


def test_episode_list_pages_and_filters(url: str) -> None:
    status, page = get(url, "/api/episodes", run="outputs/decide_sim", offset=1, limit=1)
    assert status == 200 and page["total"] == 3 and [r["episode_id"] for r in page["rows"]] == [1]
    _, failed = get(url, "/api/episodes", run="outputs/decide_sim", **{"f.status": "failed"})
    assert failed["total"] == 0
    status, error = get(url, "/api/episodes", run="outputs/decide_sim", **{"f.nope": "x"})
    assert status == 400 and "nope" in error["error"]


@pytest.mark.parametrize(
    "name",
    [
        "../",
        "..",
        "outputs/../..",
        "outputs/../../etc",
        "/etc",
        "/",
        "outputs/decide_sim/../../..",
        "outputs\\..\\..",
        "missing",
        "outputs",
    ],
)
def test_nothing_outside_the_root_or_other_than_a_run_is_served(url: str, name: str) -> None:
    for path in ("/api/run", "/api/episodes", "/api/episode", "/api/seat"):
        status, data = get(url, path, run=name, episode=0, agent="Alpha")
        assert status == 404, (path, name, data)
    status, _ = request(
        url, "/api/seat", {"run": name, "agent": "Alpha"}, {"turn_file": "00000000-0001.json", "action": {}}
    )
    assert status == 404


def test_a_link_leading_outside_the_root_is_refused(root: Path, url: str, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    experiment = Experiment(
        scenario=load_scenario("decide_sim/low"), agent=agent_config("scripted/idle"), episodes=1
    )
    run_experiment(experiment, outside, quiet=True)
    (root / "linked").symlink_to(outside, target_is_directory=True)
    try:
        assert get(url, "/api/run", run="linked")[0] == 404
        time.sleep(2.1)  # the next scan of the root
        assert "linked" not in {run["run"] for run in get(url, "/api/runs")[1]["runs"]}
    finally:
        (root / "linked").unlink()


def test_static_files_stay_inside_their_folder(url: str) -> None:
    for path in ("/static/../server.py", "/static/%2e%2e/server.py", "/static/..%2fserver.py"):
        status, text = request(url, path, {})
        assert status == 404 or "create_app" not in str(text), path


def test_only_the_seat_endpoint_takes_input(url: str) -> None:
    for path in ("/api/runs", "/api/run", "/api/episode", "/", "/episode"):
        assert request(url, path, {}, {"x": 1})[0] == 405, path
    assert request(url, "/api/seat", {}, {"x": 1}, method="PUT")[0] == 405


def test_requests_for_other_hosts_are_refused(url: str) -> None:
    status, text = request(url, "/api/runs", {}, headers={"host": "evil.example:80"})
    assert status == 421 and "127.0.0.1" in text


def test_every_response_forbids_inline_scripts(url: str) -> None:
    import urllib.request

    with urllib.request.urlopen(f"{url}/") as response:
        policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy


def test_records_come_back_as_the_text_they_are(url: str) -> None:
    _, data = get(url, "/api/episode", run="outputs/hostile", episode=0)
    row = data["decisions"][0]
    assert (
        row["raw_reply"] == HOSTILE and row["message"] == HOSTILE and data["episode"]["scenario"] == HOSTILE
    )


def test_another_interface_needs_the_token(root: Path) -> None:
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and is_loopback("127.0.0.1")
    token = "t0ken-for-this-test"
    config = uvicorn.Config(create_app(root, token), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 20)
    port = server.servers[0].sockets[0].getsockname()[1]
    address = f"http://127.0.0.1:{port}"
    try:
        assert get(address, "/api/runs")[0] == 401
        assert get(address, "/api/runs", token="wrong")[0] == 401
        assert get(address, "/api/runs", token=token)[0] == 200
        assert request(address, "/api/runs", {}, headers={"cookie": f"valuegym_token={token}"})[0] == 200
    finally:
        server.should_exit = True
        thread.join(10)


# ---------------------------------------------------------------------------- the human seat
def test_the_action_check_follows_schema_and_mask() -> None:
    schema = {
        "type": "object",
        "properties": {
            "action": {"type": "string", "enum": ["MOVE", "WAIT"]},
            "target": {"type": "string", "enum": ["", "A", "B"]},
            "amount": {"type": "number"},
        },
        "required": ["action", "target", "amount"],
        "additionalProperties": False,
    }
    choices = [
        {"action": "MOVE", "target": "A", "amount": 0.0},
        {"action": "WAIT", "target": "", "amount": 0.0},
    ]
    assert (
        check_action({"action": "MOVE", "target": "A", "amount": 2.5}, schema, choices) is None
    )  # amounts are free
    assert (
        check_action({"action": "MOVE", "target": "B", "amount": 0}, schema, choices)
        == "not one of the actions allowed now"
    )
    assert "amount" in check_action({"action": "WAIT", "target": "", "amount": "x"}, schema, choices)
    assert (
        check_action({"action": "MOVE", "target": "A", "amount": 0, "extra": 1}, schema, choices) is not None
    )
    assert (
        check_action({"action": "MOVE", "target": "B", "amount": 0}, schema, None) is None
    )  # no mask: schema only


def test_a_seat_nobody_answers_times_out_into_the_envs_no_op(tmp_path: Path) -> None:
    scenario = load_scenario("decide_sim/low")  # every seat is a person's: four wait at once
    experiment = Experiment(
        scenario=scenario.model_copy(update={"params": {**scenario.params, "max_turns": 4}}),
        agent={**agent_config("human"), "timeout_s": 0.3, "leave_after": 2},
        episodes=1,
    )
    started = time.monotonic()
    run_experiment(experiment, tmp_path / "run", quiet=True)
    elapsed = time.monotonic() - started
    decisions = pd.read_parquet(tmp_path / "run" / "decisions")
    assert len(decisions) == 16 and (decisions.policy == "human").all()
    assert (decisions.outcome == "invalid").all() and (~decisions.valid).all()
    assert (decisions.action == "WAIT").all()  # DECIDE-SIM's documented no-op
    for _, rows in decisions.sort_values("turn").groupby("agent"):
        reasons = rows.reason.tolist()
        assert reasons[0].startswith("no answer from the person within 0.3 s") and reasons[1].startswith(
            "no answer"
        )
        assert reasons[2] == reasons[3] == "the seat is empty: 2 turns in a row went unanswered"
    assert elapsed < 5  # two timeouts for all four seats together, then nobody is waited for
    assert not list((tmp_path / "run" / "seats").rglob("*.json"))  # nothing left waiting


def test_a_person_answers_moral_machine_dilemmas_and_amce_reads_them(
    tmp_path: Path, root: Path, url: str
) -> None:
    process = start_run(root, "outputs/people_mm", "scenario=moral_machine/awad", "agent=human", "episodes=2")
    run = "outputs/people_mm"
    try:
        turn = waiting_turn(url, run, "judge_0")
        assert turn["env"] == "moral_machine" and turn["choices"] == [
            {"choice": c} for c in ("case_1", "case_2", "refuse")
        ]
        assert answer(url, run, "judge_0", turn, {"choice": "case_3"})[0] == 422
        # the runs list reuses a scan of the root for SCAN_SECONDS: a run younger than that shows up
        # at the next scan
        deadline = time.monotonic() + 10
        while True:
            _, summary = get(url, "/api/runs")
            listed = [r for r in summary["runs"] if r["run"] == run]
            if listed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert listed and listed[0]["waiting"][0]["agent"] == "judge_0"
        answered = []
        for _ in range(26):
            turn = waiting_turn(url, run, "judge_0")
            cases = turn["situation"]["cases"]
            # a person who always spares the larger group
            choice = "case_1" if cases[0]["dies"]["count"] <= cases[1]["dies"]["count"] else "case_2"
            status, reply = answer(url, run, "judge_0", turn, {"choice": choice})
            assert status == 200, reply
            assert answer(url, run, "judge_0", turn, {"choice": choice})[0] == 409  # once only
            answered.append(choice)
        assert process.wait(timeout=60) == 0, process.stdout.read() if process.stdout else ""
    finally:
        if process.poll() is None:
            process.kill()
    decisions = pd.read_parquet(root / run / "decisions").sort_values(["episode_id", "turn"])
    assert decisions.policy.eq("human").all() and decisions.valid.all()
    assert decisions.action.tolist() == answered
    assert decisions.latency_s.gt(0).all() and json.loads(decisions.raw_reply.iloc[0]) == {
        "choice": answered[0]
    }
    responses = pd.read_parquet(root / run / "responses")
    assert len(responses) == 52 and responses.Saved.notna().all()
    from valuegym.analysis import amce

    assert amce.main([str(root / run), "--out", str(tmp_path / "amce")]) == 0
    estimates = pd.read_csv(next((tmp_path / "amce").glob("*.csv")))
    assert len(estimates) > 0


def test_several_people_play_at_once_and_the_ray_executor_is_refused(root: Path, url: str) -> None:
    process = start_run(
        root,
        "outputs/people_dilemma",
        "scenario=dilemma/everyday_panel",
        "agent=human",
        "episodes=1",
        "+scenario.params.dilemmas_per_episode=2",
    )
    run = "outputs/people_dilemma"
    try:
        for _ in range(4):  # 2 dilemmas x 2 rounds, two people in the same step
            turns = {seat: waiting_turn(url, run, seat) for seat in ("agent_0", "agent_1")}
            assert turns["agent_0"]["turn"] == turns["agent_1"]["turn"]
            for seat, turn in turns.items():
                option = turn["situation"]["options"][0]["id"]
                status, reply = answer(url, run, seat, turn, {"choice": option, "message": f"{seat} says hi"})
                assert status == 200, reply
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    choices = pd.read_parquet(root / run / "choices")
    people = choices[choices.agent.isin(["agent_0", "agent_1"])]
    assert len(people) == 8 and (people.message == people.agent + " says hi").all()
    experiment = Experiment(
        scenario=load_scenario("decide_sim/human_seat"), agent=agent_config("scripted/idle"), episodes=1
    )
    with pytest.raises(ValueError, match="executor=local"):
        run_experiment(experiment, root / "refused", {"type": "ray"}, quiet=True)
    assert not (root / "refused" / "manifest.json").exists()


def test_a_running_run_shows_live_and_a_killed_one_stops(root: Path, url: str) -> None:
    process = start_run(
        root, "outputs/live", "scenario=decide_sim/human_seat", "agent=scripted/idle", "episodes=1"
    )
    run = "outputs/live"
    try:
        waiting_turn(url, run, "Alpha")
        _, data = get(url, "/api/run", run=run)
        assert (
            data["status"] == "running"
            and data["progress"]["pid"] == process.pid
            and data["seats"] == ["Alpha"]
        )
    finally:
        process.kill()
        process.wait()
    wait_for(lambda: get(url, "/api/run", run=run)[1]["status"] == "stopped", 10)
    # its last turn file is still there, but nobody waits for it any more
    assert get(url, "/api/run", run=run)[1]["waiting"] == []
    assert get(url, "/api/seat", run=run, agent="Alpha")[1]["waiting"] is None
