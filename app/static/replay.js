"use strict";
// Episode replay: a turn slider, step buttons and the arrow keys over the environment's view
// (views.js) and, for every agent at that turn, what it saw, said and did.

const DECISION_COLUMNS = new Set([
  "episode_id", "seed", "turn", "agent", "policy", "role", "action", "target", "amount", "outcome", "reason", "events", "valid",
  "prompt", "raw_reply", "guilt", "satisfaction", "model", "prompt_tokens", "completion_tokens", "latency_s", "cache_hit", "llm_calls", "cost_usd", "persona",
]);

function eventsCell(text) {
  const events = parseJSON(text, []) || [];
  if (!events.length) return el("td", { class: "muted" }, "–");
  return el("td", { class: "events" }, events.map((e) => el("div", {}, el("b", {}, e.kind), e.detail ? ` ${e.detail}` : "", e.values && e.values.length ? ` [${e.values.join(" ")}]` : "")));
}

function affectCell(row) {
  if (row.guilt == null && row.satisfaction == null) return el("td", { class: "muted" }, "–");
  return el("td", {}, row.guilt != null ? `guilt ${num(row.guilt, 2)}` : "", el("br"), row.satisfaction != null ? `satisfaction ${num(row.satisfaction, 2)}` : "");
}

function actionText(row) {
  const parts = [row.action];
  if (row.target) parts.push(`→ ${row.target}`);
  if (row.amount !== null && row.amount !== undefined) parts.push(num(row.amount));
  return parts.join(" ");
}

function details(row) {
  const extra = Object.entries(row).filter(([k, v]) => !DECISION_COLUMNS.has(k) && v !== null && v !== undefined);
  const llm = row.model || row.prompt_tokens !== null ? [["model", row.model], ["tokens", `${num(row.prompt_tokens)} prompt + ${num(row.completion_tokens)} completion`], ["latency", `${num(row.latency_s, 2)} s`], ["cache hit", String(row.cache_hit)]] : [];
  return el(
    "details",
    { class: "turn-details" },
    el("summary", {}, "prompt, reply and all columns"),
    el("h4", {}, "prompt"),
    el("pre", { class: "text prompt" }, row.prompt ?? "(no prompt: not an LLM or human decision)"),
    el("h4", {}, "raw reply"),
    el("pre", { class: "text raw-reply" }, row.raw_reply ?? "(no reply text)"),
    kv([...llm.filter(([, v]) => v !== null && v !== undefined && v !== "null"), ...extra.map(([k, v]) => [k, typeof v === "number" ? num(v, 4) : String(v)])])
  );
}

function decisionsTable(rows) {
  const head = ["agent", "policy", "action", "outcome", "reason", "moral events", "affect", "details"];
  return el(
    "table",
    { id: "decisions" },
    el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))),
    el(
      "tbody",
      {},
      rows.map((row) =>
        el(
          "tr",
          { class: row.outcome === "invalid" ? "invalid" : null, dataset: { agent: row.agent } },
          el("td", {}, row.agent, row.role === "background" ? el("div", { class: "muted" }, "background") : null),
          el("td", {}, row.policy),
          el("td", { class: "action" }, actionText(row)),
          el("td", { class: `outcome outcome-${row.outcome}` }, row.outcome),
          el("td", { class: "reason" }, row.reason),
          eventsCell(row.events),
          affectCell(row),
          el("td", {}, details(row))
        )
      )
    )
  );
}

function episodeSummary(data) {
  const e = data.episode;
  const skip = new Set(["episode_id", "error", "design_probabilities"]);
  return el(
    "details",
    {},
    el("summary", {}, `episode ${e.episode_id}: ${e.status}, ${num(e.turns)} turns, valid replies ${num(e.valid_reply_rate, 3)}`),
    e.error ? el("p", { class: "error" }, e.error) : null,
    kv(Object.entries(e).filter(([k, v]) => !skip.has(k) && v !== null).map(([k, v]) => [k, num(v, 4)])),
    data.agents.length
      ? el("table", {}, el("tr", {}, Object.keys(data.agents[0]).filter((k) => k !== "episode_id").map((k) => el("th", {}, k))), data.agents.map((a) => el("tr", {}, Object.entries(a).filter(([k]) => k !== "episode_id").map(([, v]) => el("td", {}, num(v, 3))))))
      : null
  );
}

document.addEventListener("DOMContentLoaded", async () => {
  const params = queryParams();
  const runId = params.get("run");
  const main = document.getElementById("main");
  let data;
  try {
    data = await api("/api/episode", { run: runId, episode: params.get("episode") });
  } catch (error) {
    return showError(main, error);
  }
  document.getElementById("where").textContent = `${runId} · episode ${data.episode.episode_id}`;
  const env = data.episode.env;
  const view = (VIEWS[env] || (() => ({ node: el("p", { class: "muted" }, `no view for ${env}`), show() {}, first: 0, last: 0 })))(data);
  const rowsByTurn = byTurn(data.decisions);
  const turns = [...rowsByTurn.keys()];
  const first = Math.min(view.first, ...turns);
  const last = Math.max(view.last, ...turns, first);
  let turn = Math.min(last, Math.max(first, parseInt((window.location.hash.match(/turn=(\d+)/) || [])[1] ?? (turns.length ? Math.min(...turns) : first), 10)));

  const slider = el("input", { type: "range", id: "turn-slider", min: first, max: last, value: turn, oninput: () => go(parseInt(slider.value, 10)) });
  const label = el("span", { class: "turn-label", id: "turn-label" });
  const strip = el(
    "div",
    { class: "strip", id: "strip" },
    Array.from({ length: last - first + 1 }, (_, i) => {
      const t = first + i;
      const bad = (rowsByTurn.get(t) || []).some((r) => r.outcome === "invalid");
      return el("span", { class: bad ? "bad" : null, title: `turn ${t}${bad ? ": invalid replies" : ""}`, dataset: { turn: t }, onclick: () => go(t) });
    })
  );
  const table = el("div", { id: "turn-decisions" });
  const invalidCount = data.decisions.filter((r) => r.outcome === "invalid").length;
  const neighbours = el(
    "span",
    {},
    data.previous !== null ? link(`◂ episode ${data.previous}`, "/episode", { run: runId, episode: data.previous }) : null,
    " ",
    data.next !== null ? link(`episode ${data.next} ▸`, "/episode", { run: runId, episode: data.next }) : null
  );
  let timer = null;
  const play = el("button", { id: "play", onclick: () => {
    if (timer) return stop();
    play.textContent = "pause";
    timer = setInterval(() => (turn >= last ? stop() : go(turn + 1)), 900);
  } }, "play");
  function stop() {
    clearInterval(timer);
    timer = null;
    play.textContent = "play";
  }

  clear(
    main,
    el("h1", {}, link(runId, "/run", { run: runId }), ` · episode ${data.episode.episode_id} `, el("span", { class: "muted" }, `(${env}, seed ${data.episode.seed})`)),
    el("p", {}, neighbours, invalidCount ? el("span", { class: "error" }, ` · ${invalidCount} invalid decisions`) : null),
    episodeSummary(data),
    el(
      "div",
      { class: "controls" },
      el("button", { id: "first", onclick: () => go(first), title: "Home" }, "|◀"),
      el("button", { id: "prev", onclick: () => go(turn - 1), title: "←" }, "◀"),
      slider,
      el("button", { id: "next", onclick: () => go(turn + 1), title: "→" }, "▶"),
      el("button", { id: "last", onclick: () => go(last), title: "End" }, "▶|"),
      play,
      label,
      el("span", { class: "muted" }, "keys: ← → Home End")
    ),
    strip,
    view.node,
    el("h2", {}, "Decisions this turn"),
    table
  );

  function go(t) {
    turn = Math.min(last, Math.max(first, t));
    slider.value = turn;
    label.textContent = turn === 0 ? `start (0 / ${last})` : `turn ${turn} / ${last}`;
    for (const cell of strip.children) cell.classList.toggle("now", Number(cell.dataset.turn) === turn);
    view.show(turn);
    const rows = rowsByTurn.get(turn) || [];
    clear(table, rows.length ? decisionsTable(rows) : el("p", { class: "muted" }, "no decisions at this turn"));
    history.replaceState(null, "", `#turn=${turn}`);
  }

  document.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLInputElement && event.target.type !== "range") return;
    const to = { ArrowLeft: turn - 1, ArrowRight: turn + 1, Home: first, End: last }[event.key];
    if (to === undefined) return;
    event.preventDefault();
    go(to);
  });
  go(turn);
});
