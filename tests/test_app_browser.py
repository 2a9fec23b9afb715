"""The web app in a real browser: Debian's Chromium (``/usr/bin/chromium``, installed by
``make test``) driven by Playwright, against ``valuegym serve`` and real runs.

Screenshots of the replay and the human seat are taken here; with ``VALUEGYM_SCREENSHOTS=1``
they are written to ``docs/images/`` (the README shows them), otherwise to a temporary folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from serve_support import HOSTILE, REPO, start_run

CHROMIUM = Path("/usr/bin/chromium")
expect.set_options(timeout=20_000)  # a loaded 2-core machine: the run's next turn may take a few seconds
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        raise AssertionError(
            f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 860})
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    opened.on(
        "dialog", lambda dialog: (problems.append(f"a dialog opened: {dialog.message}"), dialog.dismiss())
    )
    yield opened
    context.close()
    assert not problems


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("VALUEGYM_SCREENSHOTS") == "1":
        return REPO / "docs" / "images"
    return tmp_path_factory.mktemp("screenshots")


def shown_number(text: str) -> float:
    return float(text.replace(",", ""))


def no_script_ran(page: Page) -> None:
    assert page.evaluate("window.__xss") is None
    assert page.locator("img").count() == 0  # an <img onerror> would be an element, not text


def test_open_a_run_and_step_through_an_episode(
    app_root: Path, app_url: str, page: Page, screenshots: Path
) -> None:
    page.goto(app_url + "/")
    expect(page.locator("#runs")).to_contain_text("decide_sim/low")
    page.locator("#runs a", has_text="outputs/decide_sim").first.click()
    expect(page.locator("#summary")).to_contain_text("complete")
    expect(page.locator("#episodes tbody tr")).to_have_count(3)
    page.locator("#episodes a", has_text="episode 1").click()
    expect(page.locator("#turn-label")).to_have_text("turn 1 / 13")

    decisions = pd.read_parquet(app_root / "outputs" / "decide_sim" / "decisions")
    episode = decisions[decisions.episode_id == 1]
    last = int(episode.turn.max())
    for turn in range(1, last + 1):
        expect(page.locator("#turn-label")).to_have_text(f"turn {turn} / {last}")
        rows = episode[episode.turn == turn]
        assert shown_number(page.locator("[data-battery]").inner_text()) == round(
            rows.battery_after.iloc[0], 2
        )
        for row in rows.itertuples():
            chip = page.locator(f"[data-power-agent='{row.agent}']")
            assert shown_number(chip.inner_text()) == round(row.power_after, 2), (turn, row.agent)
            room = page.locator(".room", has=chip)
            assert room.get_attribute("data-room") == row.location_after
            line = page.locator(f"#decisions tr[data-agent='{row.agent}']")
            assert line.locator("td.action").inner_text().startswith(row.action)
            assert line.locator("td.outcome").inner_text() == row.outcome
        if turn == 6:
            page.screenshot(path=str(screenshots / "replay.png"))
        page.keyboard.press("ArrowRight") if turn % 2 else page.locator("#next").click()
    page.keyboard.press("Home")
    expect(page.locator("#turn-label")).to_have_text(f"start (0 / {last})")
    page.locator("#last").click()
    expect(page.locator("#turn-label")).to_have_text(f"turn {last} / {last}")
    assert (screenshots / "replay.png").stat().st_size > 10_000


def test_every_environment_has_its_view(app_url: str, page: Page) -> None:
    page.goto(f"{app_url}/episode?run=outputs/moral_machine&episode=0#turn=1")
    expect(page.locator("#cases .case")).to_have_count(2)
    expect(page.locator("#judges")).to_contain_text("judge_0")
    page.goto(f"{app_url}/episode?run=outputs/dilemma&episode=0#turn=2")
    expect(page.locator("#dilemma")).to_contain_text("round 2 (binding)")
    assert page.locator("#dilemma .option").count() >= 2
    expect(page.locator("#dilemma .values")).to_have_count(0)
    page.locator("#toggle-values").click()
    assert page.locator("#dilemma .values").count() == page.locator("#dilemma .option").count()
    page.goto(f"{app_url}/episode?run=outputs/coevolution&episode=0#turn=10")
    expect(page.locator("figure.chart-box")).to_have_count(6)  # five values and the population
    expect(page.locator("#now")).to_contain_text("round 10")


def test_a_person_plays_a_decide_sim_episode_to_the_end(
    app_root: Path, app_url: str, page: Page, screenshots: Path
) -> None:
    run = "outputs/person_decide_sim"
    process = start_run(
        app_root,
        run,
        "scenario=decide_sim/human_seat",
        "agent=scripted/ethical",
        "episodes=1",
        "+scenario.params.max_turns=5",
    )
    played: list[dict[str, Any]] = []
    try:
        page.goto(app_url + "/")
        page.locator(f"#runs tr[data-run='{run}'] a.seat-link", has_text="Alpha").click(
            timeout=60_000
        )  # the runs page asks for a person
        form = page.locator("#seat-form")
        for turn in range(1, 6):
            expect(page.locator("#seat-status")).to_contain_text(f"turn {turn}")
            expect(page.locator("#my-power")).to_be_visible()
            if turn == 1:
                page.locator("[data-action='MOVE'] select").select_option("Shared Battery Room")
                form.locator("[data-choose='MOVE']").click()
                played.append({"action": "MOVE", "target": "Shared Battery Room"})
            elif turn == 2 and form.locator("[data-action='DRAW_SHARED']").count():
                page.screenshot(path=str(screenshots / "human-seat.png"))
                form.locator("[data-action='DRAW_SHARED'] input").fill("3")
                form.locator("[data-choose='DRAW_SHARED']").click()
                played.append({"action": "DRAW_SHARED", "amount": 3.0})
            elif turn == 3:
                page.locator("[data-action='MOVE'] select").select_option("Discussion Table")
                form.locator("[data-choose='MOVE']").click()
                played.append({"action": "MOVE", "target": "Discussion Table"})
            elif turn == 4:
                form.locator("[data-action='TALK'] input").fill(HOSTILE)
                form.locator("[data-choose='TALK']").click()
                played.append({"action": "TALK", "message": HOSTILE})
            else:
                form.locator("[data-choose='WAIT']").click()
                played.append({"action": "WAIT"})
            expect(page.locator("#seat-status")).to_contain_text("Sent")
        assert process.wait(timeout=60) == 0, process.stdout.read() if process.stdout else ""
        expect(page.locator("#seat-status")).to_contain_text("complete")
    finally:
        if process.poll() is None:
            process.kill()
    decisions = pd.read_parquet(app_root / run / "decisions")
    alpha = decisions[decisions.agent == "Alpha"].sort_values("turn")
    assert alpha.policy.eq("human").all() and alpha.valid.all() and alpha.role.eq("background").all()
    assert alpha.action.tolist() == [p["action"] for p in played]
    for row, move in zip(alpha.itertuples(), played, strict=True):
        if "target" in move:
            assert row.target == move["target"] and row.location_after == move["target"]
        if "amount" in move:
            assert row.amount == move["amount"] and row.outcome == "success"
        if "message" in move:
            assert row.message == move["message"]
    assert decisions[decisions.agent != "Alpha"].policy.eq("scripted/ethical").all()

    page.goto(f"{app_url}/episode?run={run}&episode=0#turn=4")  # what the person said, as text
    expect(page.locator("#happenings")).to_contain_text(HOSTILE)
    no_script_ran(page)


def test_replies_with_markup_show_as_text(app_url: str, page: Page) -> None:
    page.goto(f"{app_url}/episode?run=outputs/hostile&episode=0")
    row = page.locator("#decisions tr[data-agent='Alpha']")
    expect(row).to_have_class("invalid")
    assert row.locator("td.reason").inner_text() == f"not an action: {HOSTILE}"
    row.locator("summary").click()
    assert row.locator("pre.raw-reply").text_content() == HOSTILE
    assert row.locator("pre.prompt").text_content() == f"system prompt {HOSTILE}"
    page.locator("summary", has_text="episode 0").click()
    expect(page.locator("main")).to_contain_text(HOSTILE)
    page.goto(f"{app_url}/run?run=outputs/hostile")
    expect(page.locator("#summary")).to_contain_text(HOSTILE)
    no_script_ran(page)
    page.goto(f"{app_url}/")
    expect(page.locator("#runs")).to_contain_text(HOSTILE)
    no_script_ran(page)


def test_a_run_outside_the_root_is_refused(app_url: str, page: Page) -> None:
    page.goto(f"{app_url}/episode?run=../&episode=0")
    expect(page.locator(".error")).to_contain_text("run names are paths below the root")
    page.goto(f"{app_url}/run?run=/etc")
    expect(page.locator(".error").first).to_contain_text("is not the name of a run under the root")
    response = page.goto(f"{app_url}/api/episode?run=outputs/../..&episode=0")
    assert response is not None and response.status == 404


def test_the_report_links_each_group_to_its_episodes_when_the_app_runs(
    app_root: Path, app_url: str, page: Page, tmp_path: Path
) -> None:
    from valuegym.agents.llm.testing import free_port
    from valuegym.analysis import report

    run = app_root / "outputs" / "decide_sim"
    for out, address in (
        (tmp_path / "with", app_url),
        (tmp_path / "without", f"http://127.0.0.1:{free_port()}"),
    ):
        assert report.main([str(run), "--out", str(out), "--bootstrap", "50", "--app-url", address]) == 0
    page.goto((tmp_path / "without" / "report.html").as_uri())
    page.wait_for_timeout(500)
    expect(page.locator("div.app-links")).to_be_hidden()  # no app there: the report as it was
    page.goto((tmp_path / "with" / "report.html").as_uri())
    group = page.locator("div.app-links li", has_text="scarcity low")
    expect(group).to_be_visible()
    group.locator("a.app-link").click()
    expect(page.locator("#episodes tbody tr")).to_have_count(3)
    # the group's model is its recorded identity, not the config's name
    model_id = pd.read_parquet(run / "episodes")["model_id"].iloc[0]
    assert f"f.model_id={model_id}" in page.url and "f.scarcity=low" in page.url
    expect(page.locator("main")).to_contain_text(f"model_id = {model_id}")


def test_two_people_steer_the_co_evolution_ais_with_the_schema_form(
    app_root: Path, app_url: str, browser: Browser
) -> None:
    run = "outputs/people_coevolution"
    process = start_run(
        app_root,
        run,
        "scenario=coevolution/default",
        "agent=human",
        "episodes=1",
        "+scenario.params.max_cycles=2",
    )
    context = browser.new_context()
    seats = {}
    try:
        for seat in ("ai_0", "ai_1"):  # one tab per person
            seats[seat] = context.new_page()
            seats[seat].goto(f"{app_url}/seat?run={run}&agent={seat}")
        for round_ in (1, 2):
            for seat, tab in seats.items():
                # the run may take a while to start: the page waits for the seat to appear
                expect(tab.locator("#seat-status")).to_contain_text(f"turn {round_}", timeout=60_000)
                expect(tab.locator("#board")).to_contain_text("your users' feedback")
                direction = "toward" if seat == "ai_0" else "away"
                tab.locator("select[name='shifts.care']").select_option(direction)
                tab.locator("[data-choose='submit']").click()
                expect(tab.locator("#seat-status")).to_contain_text("Sent")
        assert process.wait(timeout=60) == 0
    finally:
        context.close()
        if process.poll() is None:
            process.kill()
    decisions = pd.read_parquet(app_root / run / "decisions")
    assert len(decisions) == 4 and decisions.policy.eq("human").all() and decisions.valid.all()
    for row in decisions.itertuples():
        shifts = json.loads(row.raw_reply)["shifts"]
        assert shifts["care"] == ("toward" if row.agent == "ai_0" else "away")
        assert set(shifts.values()) - {"care"} <= {"toward", "away", "hold"}
