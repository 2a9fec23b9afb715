"use strict";
// The runs page: every run under the root, running ones updated every second.

function progressCell(run) {
  const done = run.progress ? run.progress.done : run.ok + run.failed;
  const requested = run.requested || 0;
  const share = requested ? Math.min(1, done / requested) : 0;
  const bar = el("span", { class: "bar" }, el("span"));
  bar.firstChild.style.width = `${(share * 100).toFixed(1)}%`;
  const rate = run.progress && run.progress.episodes_per_s ? ` · ${num(run.progress.episodes_per_s, 1)} ep/s` : "";
  return el("td", { class: "progress" }, bar, ` ${num(done)} / ${num(requested)}${rate}`);
}

function statusCell(run) {
  return el("td", { class: `status status-${run.status}` }, run.status);
}

function seatsCell(run) {
  return el(
    "td",
    {},
    run.waiting.map((seat) => [link(`${seat.agent} (turn ${seat.turn})`, "/seat", { run: run.run, agent: seat.agent }, { class: "seat-link" }), " "])
  );
}

function runRow(run) {
  const live = run.progress || {};
  return el(
    "tr",
    { dataset: { run: run.run } },
    el("td", {}, link(run.run, "/run", { run: run.run })),
    el("td", {}, run.scenario),
    el("td", {}, run.policy),
    el("td", {}, run.model || "–"),
    el("td", {}, run.condition),
    statusCell(run),
    progressCell(run),
    el("td", { class: "num" }, num(run.ok)),
    el("td", { class: "num" + (run.failed ? " error" : "") }, num(run.failed)),
    el("td", { class: "num" }, num(live.calls ?? run.calls)),
    el("td", { class: "num" }, num(live.tokens ?? run.tokens)),
    el("td", { class: "num" }, run.cost_usd === null ? "–" : `$${num(run.cost_usd, 4)}`),
    seatsCell(run)
  );
}

function runsTable(runs) {
  const head = ["run", "scenario", "policy", "model", "condition", "status", "episodes", "ok", "failed", "calls", "tokens", "cost", "people wanted"];
  return el("table", { id: "runs" }, el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))), el("tbody", {}, runs.map(runRow)));
}

document.addEventListener("DOMContentLoaded", () => {
  const main = document.getElementById("main");
  const errors = el("div");
  const body = el("div");
  clear(main, el("h1", {}, "Runs"), errors, body);
  poll(async () => {
    const data = await api("/api/runs");
    document.getElementById("where").textContent = data.root;
    if (!data.runs.length) {
      clear(body, el("p", { class: "muted" }, "No runs under this folder yet: start one with valuegym run, it appears here."));
    } else {
      clear(body, runsTable(data.runs));
    }
  }, 1000, errors);
});
