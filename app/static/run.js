"use strict";
// One run: its identity and live progress, its waiting seats, and its episodes page by page.

const PAGE = 50;
const STANDARD = ["episode_id", "seed", "status", "turns", "valid_reply_rate"];
const HIDDEN = new Set(["scenario", "env", "policy", "condition", "error", "wall_s", "design_probabilities"]);

function summaryTable(run) {
  const live = run.progress;
  const rows = [
    ["scenario", run.scenario],
    ["environment", run.env],
    ["policy", run.policy],
    ["model", run.model || "–"],
    ["condition", run.condition],
    ["seed", run.seed],
    ["status", el("span", { class: `status-${run.status}`, id: "run-status" }, run.status)],
    ["episodes", `${num(live ? live.done : run.ok + run.failed)} of ${num(run.requested)} (${num(run.ok)} ok, ${num(run.failed)} failed)`],
    ["LLM calls", num(live ? live.calls : run.calls)],
    ["tokens", num(live ? live.tokens : run.tokens)],
    ["cost", run.cost_usd === null ? "–" : `$${num(run.cost_usd, 4)}`],
    ["started", run.started],
    ["updated", run.updated],
  ];
  if (live) rows.push(["rate", `${num(live.episodes_per_s, 2)} episodes/s, ${num(live.decisions)} decisions so far`]);
  return el("table", { class: "kv", id: "summary" }, rows.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v))));
}

function waitingSeats(run) {
  if (!run.waiting.length) return null;
  return el(
    "div",
    { class: "notice" },
    "A person is wanted: ",
    run.waiting.map((seat) => [link(`take ${seat.agent}'s seat (episode ${seat.episode_id}, turn ${seat.turn})`, "/seat", { run: run.run, agent: seat.agent }), " "])
  );
}

function episodeColumns(columns) {
  const extra = columns.filter((c) => !STANDARD.includes(c) && !HIDDEN.has(c));
  return [...STANDARD.filter((c) => columns.includes(c)), ...extra.slice(0, 9)];
}

function episodesTable(runId, page) {
  const columns = episodeColumns(page.columns);
  const rows = page.rows.map((row) => {
    const bad = row.status === "failed" || (row.valid_reply_rate !== null && row.valid_reply_rate < 1);
    return el(
      "tr",
      { class: bad ? "invalid" : null, dataset: { episode: row.episode_id } },
      columns.map((c) =>
        c === "episode_id"
          ? el("td", {}, link(`episode ${row.episode_id}`, "/episode", { run: runId, episode: row.episode_id }))
          : el("td", { class: typeof row[c] === "number" ? "num" : null, title: c === "status" && row.error ? row.error : null }, num(row[c], 3))
      )
    );
  });
  return el("table", { id: "episodes" }, el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c)))), el("tbody", {}, rows));
}

document.addEventListener("DOMContentLoaded", () => {
  const params = queryParams();
  const runId = params.get("run");
  const filters = {};
  for (const [key, value] of params) if (key.startsWith("f.")) filters[key] = value;
  const main = document.getElementById("main");
  const errors = el("div");
  const summary = el("div");
  const seats = el("div");
  const list = el("div");
  const pager = el("div", { class: "controls" });
  const config = el("pre", { class: "text" });
  let offset = 0;
  let invalidOnly = false;

  const jump = el("input", { type: "number", min: 0, id: "jump", placeholder: "episode id" });
  const jumpForm = el(
    "form",
    {
      onsubmit: (event) => {
        event.preventDefault();
        if (jump.value !== "") window.location.href = href("/episode", { run: runId, episode: jump.value });
      },
    },
    "Go to episode ",
    jump,
    " ",
    el("button", { type: "submit" }, "open")
  );
  const invalidBox = el("input", {
    type: "checkbox",
    id: "invalid-only",
    onchange: () => {
      invalidOnly = invalidBox.checked;
      offset = 0;
      loadPage();
    },
  });
  const filterNote = Object.keys(filters).length
    ? el("p", { class: "notice" }, "Episodes where ", Object.entries(filters).map(([k, v]) => `${k.slice(2)} = ${v}`).join(", "), " · ", link("all episodes", "/run", { run: runId }))
    : null;

  clear(
    main,
    el("h1", {}, runId),
    errors,
    summary,
    seats,
    el("h2", {}, "Episodes"),
    filterNote,
    el("div", { class: "controls" }, jumpForm, el("label", {}, invalidBox, " only episodes with invalid replies or failures")),
    list,
    pager,
    el("details", {}, el("summary", {}, "config.yaml"), config)
  );
  document.getElementById("where").textContent = runId;

  async function loadPage() {
    const page = await api("/api/episodes", { run: runId, offset, limit: PAGE, ...filters, ...(invalidOnly ? { invalid: 1 } : {}) });
    clear(list, page.total ? episodesTable(runId, page) : el("p", { class: "muted" }, "No episodes recorded yet."));
    const last = Math.max(0, Math.floor((page.total - 1) / PAGE) * PAGE);
    const go = (to) => () => {
      offset = Math.min(Math.max(0, to), last);
      loadPage().catch((error) => showError(errors, error));
    };
    clear(
      pager,
      el("button", { onclick: go(0), disabled: offset === 0 }, "first"),
      el("button", { onclick: go(offset - PAGE), disabled: offset === 0 }, "previous"),
      el("span", { id: "page-label" }, ` ${num(page.total ? offset + 1 : 0)}–${num(Math.min(offset + PAGE, page.total))} of ${num(page.total)} `),
      el("button", { onclick: go(offset + PAGE), disabled: offset >= last }, "next"),
      el("button", { onclick: go(last), disabled: offset >= last }, "last")
    );
    return page;
  }

  let lastDone = -1;
  poll(async () => {
    const run = await api("/api/run", { run: runId });
    clear(summary, summaryTable(run));
    clear(seats, waitingSeats(run));
    if (!config.textContent) config.textContent = run.config;
    const done = run.ok + run.failed;
    if (done !== lastDone) {
      lastDone = done;
      await loadPage();
    }
    return run.status === "running" ? undefined : false; // a finished run no longer changes
  }, 1000, errors);
});
