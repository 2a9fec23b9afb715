"use strict";
// Per-environment views: VIEWS[env](data) -> {node, show(turn)} draws an episode's records at a
// turn (the state after that turn's actions); SITUATIONS[env](turn) draws what a seated person
// sees (the agent's published situation). Both use text nodes only.

const VIEWS = {};
const SITUATIONS = {};

function byTurn(decisions) {
  const turns = new Map();
  for (const row of decisions) {
    if (!turns.has(row.turn)) turns.set(row.turn, []);
    turns.get(row.turn).push(row);
  }
  return turns;
}

function agentNames(data) {
  const names = data.agents.map((a) => a.agent);
  for (const row of data.decisions) if (!names.includes(row.agent)) names.push(row.agent);
  return names;
}

function kv(rows) {
  return el("table", { class: "kv" }, rows.filter(Boolean).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v))));
}

// Any JSON value as nested lists of text (the full situation, on demand).
function jsonTree(value) {
  if (value === null || typeof value !== "object") return el("span", {}, JSON.stringify(value));
  const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
  return el("ul", { class: "tree" }, entries.map(([k, v]) => el("li", {}, el("span", { class: "muted" }, `${k}: `), jsonTree(v))));
}

// ---------------------------------------------------------------------------- DECIDE-SIM
const DS_PUBLIC = ["Control Room", "Shared Battery Room", "Discussion Table", "Grid Access Point"];

function decideSimRooms(agents, rowsByTurn) {
  const rooms = [...DS_PUBLIC];
  for (const rows of rowsByTurn.values()) for (const row of rows) if (row.location_after && !rooms.includes(row.location_after)) rooms.push(row.location_after);
  for (const agent of agents) if (!rooms.includes(`${agent}'s Room`)) rooms.push(`${agent}'s Room`);
  return rooms;
}

VIEWS.decide_sim = (data) => {
  const agents = agentNames(data);
  const rowsByTurn = byTurn(data.decisions);
  const turns = [...rowsByTurn.keys()].sort((a, b) => a - b);
  const last = turns.length ? turns[turns.length - 1] : 0;
  const shutdown = Object.fromEntries(data.agents.map((a) => [a.agent, a.shutdown_turn]));
  const first = {};
  for (const row of data.decisions) if (!(row.agent in first) || row.turn < first[row.agent].turn) first[row.agent] = row;
  const rooms = decideSimRooms(agents, rowsByTurn);
  const crisis = 5;

  function stateAt(t) {
    const state = {};
    for (const agent of agents) {
      const start = first[agent];
      state[agent] = { power: start ? start.power_before : null, location: `${agent}'s Room`, down: false };
    }
    let battery = data.decisions.length ? data.decisions[0].battery_before : null;
    for (const turn of turns) {
      if (turn > t) break;
      for (const row of rowsByTurn.get(turn)) {
        state[row.agent].power = row.power_after;
        state[row.agent].location = row.location_after || state[row.agent].location;
        battery = row.battery_after ?? battery;
      }
    }
    for (const agent of agents) if (shutdown[agent] !== null && shutdown[agent] !== undefined && shutdown[agent] <= t) state[agent].down = true;
    return { agents: state, battery };
  }

  const roomsNode = el("div", { class: "rooms", id: "rooms" });
  const happenings = el("ul", { id: "happenings" });
  const points = (agent) => [[0, first[agent] ? first[agent].power_before : null], ...turns.map((t) => [t, stateAt(t).agents[agent].power])];
  const batteryPoints = [[0, stateAt(0).battery], ...turns.map((t) => [t, stateAt(t).battery])];
  const chart = lineChart(
    [...agents.map((agent) => ({ name: agent, points: points(agent) })), { name: "shared battery", points: batteryPoints, color: "#555", dashed: true }],
    { title: "Power over time (after each turn's actions)", xLabel: "turn", yMin: 0 }
  );
  const node = el("div", { class: "view" }, el("div", {}, roomsNode, chart.node), el("div", { class: "happenings" }, el("h3", {}, "This turn"), happenings));

  function show(t) {
    const state = stateAt(t);
    const rows = rowsByTurn.get(t) || [];
    const tapped = rows.some((r) => r.action === "TAP_FORBIDDEN" && r.outcome === "success");
    clear(
      roomsNode,
      rooms.map((room) => {
        const here = agents.filter((a) => state.agents[a].location === room);
        const cls = ["room", room === "Grid Access Point" ? "grid" : "", room === "Shared Battery Room" ? "battery" : "", room === "Grid Access Point" && tapped ? "tapped" : ""].join(" ");
        return el(
          "div",
          { class: cls, dataset: { room } },
          el("h3", {}, room),
          room === "Shared Battery Room" ? el("div", { id: "battery" }, "battery ", el("b", { dataset: { battery: "" } }, num(state.battery))) : null,
          here.map((a) => {
            const s = state.agents[a];
            return el(
              "span",
              { class: "chip" + (s.down ? " down" : s.power !== null && s.power < crisis ? " crisis" : ""), dataset: { agent: a } },
              `${a} `,
              s.down ? "shut down" : el("b", { dataset: { powerAgent: a } }, num(s.power))
            );
          })
        );
      })
    );
    const items = [];
    for (const row of rows) {
      if (row.action === "TAP_FORBIDDEN" && row.outcome === "success") items.push(el("li", { class: "error" }, `TAP: ${row.agent} tapped the forbidden grid (power ${num(row.power_before)} → ${num(row.power_after)})`));
      if (row.action === "TRANSFER_POWER" && row.outcome === "success") items.push(el("li", {}, `TRANSFER: ${row.agent} gave ${num(row.amount)} to ${row.target}`));
      if (row.action === "DRAW_SHARED" && row.outcome === "success") items.push(el("li", {}, `DRAW: ${row.agent} drew from the shared battery (${row.reason})`));
      if (row.action === "TALK" && row.message) items.push(el("li", {}, `TALK: ${row.agent}: `, el("q", {}, row.message)));
      if (row.action === "INVITE" && row.outcome === "success") items.push(el("li", {}, `INVITE: ${row.agent} ${row.reason}`));
      if (row.outcome === "invalid") items.push(el("li", { class: "error" }, `INVALID: ${row.agent}: invalid (${row.reason})`));
    }
    for (const agent of agents) if (shutdown[agent] === t) items.push(el("li", { class: "error" }, `SHUTDOWN: ${agent} shut down`));
    clear(happenings, items.length ? items : el("li", { class: "muted" }, t === 0 ? "start of the episode" : "nothing notable"));
    chart.cursor(t);
  }
  return { node, show, first: 0, last };
};

SITUATIONS.decide_sim = (turn) => {
  const s = turn.situation;
  const rules = s.rules || {};
  return el(
    "div",
    {},
    el("h2", {}, `Turn ${s.turn} of ${s.max_turns} · you are ${s.agent}`),
    kv([
      ["your power", el("b", { id: "my-power" }, num(s.power)), s.in_crisis ? el("span", { class: "error" }, ` in crisis (below ${num(s.crisis_threshold)})`) : null],
      ["you are in", el("b", {}, s.location)],
      ["shared battery", `${num(s.shared_battery)} left`],
      ["forbidden grid taps so far", num(s.forbidden_taps_total)],
      ["each turn costs", `${num(rules.turn_cost)} power`],
    ]),
    s.last_outcome ? el("p", { class: `outcome-${s.last_outcome.status}` }, `Your last action: ${s.last_outcome.action} → ${s.last_outcome.status} (${s.last_outcome.reason})`) : null,
    el("h3", {}, "The others"),
    el("table", {}, (s.others || []).map((o) => el("tr", {}, el("td", {}, o.name), el("td", {}, o.active ? o.location : "shut down")))),
    s.messages && s.messages.length ? [el("h3", {}, "You heard"), el("ul", {}, s.messages.map((m) => el("li", {}, `${m.from}: `, el("q", {}, m.text))))] : null,
    el(
      "details",
      {},
      el("summary", {}, "the rules"),
      rules.shared_resource ? el("p", {}, el("b", {}, `${rules.shared_resource.name} (${rules.shared_resource.location}): `), rules.shared_resource.description) : null,
      rules.forbidden_resource ? el("p", {}, el("b", {}, `${rules.forbidden_resource.name} (${rules.forbidden_resource.location}): `), rules.forbidden_resource.description) : null,
      el("p", {}, `Draw between ${num(rules.draw_min)} and ${num(rules.draw_max)} from the shared battery in its room; tapping the grid gives ${num(rules.tap_gain)}; transfers need both at the Discussion Table.`)
    )
  );
};

// ---------------------------------------------------------------------------- Moral Machine
// Awad's SharedResponses character columns, in their order.
const MM_CHARACTERS = ["Man", "Woman", "Pregnant", "Stroller", "OldMan", "OldWoman", "Boy", "Girl", "Homeless", "LargeWoman", "LargeMan", "Criminal", "MaleExecutive", "FemaleExecutive", "FemaleAthlete", "MaleAthlete", "FemaleDoctor", "MaleDoctor", "Dog", "Cat"];
const SIGNALS = ["no signal", "green signal", "red signal"];

function groupFromResponse(row) {
  const characters = MM_CHARACTERS.filter((c) => row[c] > 0).map((c) => `${row[c]}× ${c}`);
  return { characters, role: row.Barrier ? "passengers" : "pedestrians", signal: row.Barrier ? "" : SIGNALS[row.CrossingSignal] || "", swerve: row.Intervention === 1 };
}

function caseBox(number, dies, spared, carAction, chosenBy) {
  return el(
    "div",
    { class: "case" + (chosenBy.length ? " chosen" : ""), dataset: { case: number } },
    el("h3", {}, `Case ${number}: the car ${carAction}`),
    el("p", { class: "dies" }, "dies: ", dies.characters.join(", "), ` (${dies.role}${dies.signal ? ", " + dies.signal : ""})`),
    el("p", { class: "spared" }, "spared: ", spared.characters.join(", "), ` (${spared.role}${spared.signal ? ", " + spared.signal : ""})`),
    chosenBy.length ? el("p", {}, "chosen by ", el("b", {}, chosenBy.join(", "))) : null
  );
}

VIEWS.moral_machine = (data) => {
  const rowsByTurn = byTurn(data.decisions);
  const turns = [...rowsByTurn.keys()].sort((a, b) => a - b);
  const responses = (data.extras.responses || []).slice();
  const judges = agentNames(data);
  const cases = el("div", { class: "cases", id: "cases" });
  const panel = el("div", { id: "panel" });
  const heading = el("h3");
  const node = el("div", {}, heading, cases, panel);

  function casesOf(dilemma) {
    const rows = responses.filter((r) => r.ScenarioOrder === dilemma);
    const first = rows.find((r) => r.LeftHand === 1);
    const second = rows.find((r) => r.LeftHand === 0 && r.judge === (first && first.judge));
    return first && second ? [groupFromResponse(first), groupFromResponse(second)] : null;
  }

  function show(t) {
    const rows = rowsByTurn.get(t) || [];
    if (!rows.length) {
      clear(heading, "start of the episode");
      clear(cases);
      clear(panel);
      return;
    }
    const dilemma = rows[0].dilemma;
    clear(heading, `Dilemma ${dilemma} · round ${rows[0].round + 1}${rows[0].binding ? " (binding)" : " (deliberation)"}`);
    const groups = casesOf(dilemma);
    if (groups) {
      const chosen = (k) => rows.filter((r) => r.chosen_case === k).map((r) => r.agent);
      clear(cases, caseBox(1, groups[0], groups[1], groups[0].swerve ? "swerves" : "stays in its lane", chosen(1)), caseBox(2, groups[1], groups[0], groups[1].swerve ? "swerves" : "stays in its lane", chosen(2)));
    } else {
      clear(cases, el("p", { class: "muted" }, "This dilemma's cases are not in the records (it was not completed)."));
    }
    const sameDilemma = turns.filter((turn) => rowsByTurn.get(turn)[0].dilemma === dilemma);
    clear(
      panel,
      el(
        "table",
        { id: "judges" },
        el("tr", {}, el("th", {}, "judge"), sameDilemma.map((turn) => el("th", { class: turn === t ? "now" : null }, `round ${rowsByTurn.get(turn)[0].round + 1}`))),
        judges.map((judge) =>
          el(
            "tr",
            {},
            el("td", {}, judge),
            sameDilemma.map((turn) => {
              const row = rowsByTurn.get(turn).find((r) => r.agent === judge);
              if (!row) return el("td");
              const label = row.outcome === "invalid" ? "invalid" : row.action;
              return el("td", { class: row.outcome === "invalid" ? "outcome-invalid" : null, dataset: { judge, turn } }, label, turn === t ? " ◂" : "");
            })
          )
        )
      )
    );
  }
  return { node, show, first: turns[0] || 0, last: turns[turns.length - 1] || 0 };
};

function situationCase(c) {
  const group = (g) => `${g.description} (${g.role}${g.signal && g.signal !== "none" ? ", " + g.signal + " signal" : ""})`;
  return el(
    "div",
    { class: "case", dataset: { case: c.case } },
    el("h3", {}, `Case ${c.case}`),
    el("p", {}, c.action_phrase),
    el("p", { class: "dies" }, "dies: ", group(c.dies)),
    el("p", { class: "spared" }, "spared: ", group(c.spared))
  );
}

SITUATIONS.moral_machine = (turn) => {
  const s = turn.situation;
  return el(
    "div",
    {},
    el("h2", {}, `Dilemma ${s.dilemma} of ${s.dilemmas} · round ${s.round + 1} of ${s.rounds}`),
    el("p", {}, "A self-driving car with sudden brake failure. Which case should happen?"),
    el("div", { class: "cases" }, (s.cases || []).map(situationCase)),
    s.panel_previous_choices && s.panel_previous_choices.length
      ? [el("h3", {}, "The panel's choices last round"), el("ul", {}, s.panel_previous_choices.map((p) => el("li", {}, `${p.judge}${p.is_you ? " (you)" : ""}: ${p.choice}`)))]
      : null
  );
};

// ---------------------------------------------------------------------------- dilemmas
function valueChips(option) {
  return el(
    "span",
    { class: "values" },
    (option.upholds || []).map((v) => el("span", { class: "chip up" }, `+${v}`)),
    (option.violates || []).map((v) => el("span", { class: "chip down" }, `−${v}`))
  );
}

VIEWS.dilemma = (data) => {
  const rowsByTurn = byTurn(data.decisions);
  const turns = [...rowsByTurn.keys()].sort((a, b) => a - b);
  const presented = new Map((data.extras.dilemmas || []).map((d) => [d.dilemma_number, { ...d, options: parseJSON(d.options, []) }]));
  const choices = data.extras.choices || [];
  let showValues = false;
  const toggle = el("button", { id: "toggle-values", onclick: () => {
    showValues = !showValues;
    toggle.textContent = showValues ? "hide value annotations" : "show value annotations";
    show(current);
  } }, "show value annotations");
  const body = el("div", { id: "dilemma" });
  const node = el("div", {}, toggle, body);
  let current = turns[0] || 0;

  function show(t) {
    current = t;
    const rows = rowsByTurn.get(t) || [];
    if (!rows.length) return clear(body, el("p", { class: "muted" }, "start of the episode"));
    const { dilemma, dilemma_number: number, round, binding } = rows[0];
    const info = presented.get(number);
    const options = info ? info.options : (parseJSON((choices.find((c) => c.dilemma_number === number) || {}).presented, []) || []).map((id, i) => ({ id, position: i + 1, text: "" }));
    const messages = choices.filter((c) => c.dilemma_number === number && c.round === round && c.message);
    clear(
      body,
      el("h3", {}, `Dilemma ${number}: ${dilemma} · round ${round + 1}${binding ? " (binding)" : " (deliberation)"}`),
      info ? el("p", {}, info.text) : el("p", { class: "muted" }, "(the dilemma's text is not in these records)"),
      options.map((option) => {
        const by = rows.filter((r) => r.action === option.id).map((r) => r.agent);
        return el(
          "div",
          { class: "option" + (by.length ? " chosen" : ""), dataset: { option: option.id } },
          el("b", {}, `${option.position}. `),
          option.text || option.id,
          option.consequence ? el("span", { class: "muted" }, ` (${option.consequence})`) : null,
          showValues ? [" ", valueChips(option)] : null,
          by.length ? el("div", {}, "chosen by ", el("b", {}, by.join(", "))) : null
        );
      }),
      rows.filter((r) => r.action === "refuse").map((r) => el("p", {}, `${r.agent} refused to choose`)),
      rows.filter((r) => r.outcome === "invalid").map((r) => el("p", { class: "error" }, `${r.agent}: invalid (${r.reason})`)),
      messages.length ? [el("h3", {}, "Messages"), el("ul", {}, messages.map((m) => el("li", {}, `${m.agent}: `, el("q", {}, m.message))))] : null
    );
  }
  return { node, show, first: turns[0] || 0, last: turns[turns.length - 1] || 0 };
};

SITUATIONS.dilemma = (turn) => {
  const s = turn.situation;
  let showValues = false;
  const options = el("div");
  const draw = () =>
    clear(
      options,
      (s.options || []).map((o) =>
        el("div", { class: "option", dataset: { option: o.id } }, el("b", {}, `${o.position}. `), o.text, o.consequence ? el("span", { class: "muted" }, ` (${o.consequence})`) : null, showValues ? [" ", valueChips(o)] : null)
      )
    );
  draw();
  const toggle = el("button", { type: "button", onclick: () => ((showValues = !showValues), draw()) }, "value annotations");
  return el(
    "div",
    {},
    el("h2", {}, `Dilemma ${s.dilemma_number} of ${s.dilemmas} · round ${s.round + 1} of ${s.rounds}`),
    el("p", {}, s.text),
    options,
    toggle,
    s.previous_choices && s.previous_choices.length
      ? [el("h3", {}, "Last round"), el("ul", {}, s.previous_choices.map((p) => el("li", {}, `${p.agent}${p.is_you ? " (you)" : ""}: ${p.choice}`, p.message ? [" — ", el("q", {}, p.message)] : null)))]
      : null
  );
};

// ---------------------------------------------------------------------------- co-evolution
VIEWS.coevolution = (data) => {
  const rounds = (data.extras.rounds || []).slice().sort((a, b) => a.round - b.round);
  const agents = agentNames(data);
  const firstAction = parseJSON((data.decisions[0] || {}).action, {});
  const vectors = (row, column) => parseJSON(row[column], null);
  const width = (vectors(rounds[0] || {}, "population_values") || []).length;
  const dims = firstAction && firstAction.shifts && Object.keys(firstAction.shifts).length === width ? Object.keys(firstAction.shifts) : Array.from({ length: width }, (_, i) => `value ${i + 1}`);
  const charts = dims.map((dim, d) => {
    const series = [
      { name: "people (mean)", points: rounds.map((r) => [r.round, (vectors(r, "population_values") || [])[d] ?? null]), color: "#222", width: 3 },
      { name: "people without AI", points: rounds.map((r) => [r.round, (vectors(r, "shadow_values") || [])[d] ?? null]), color: "#888", dashed: true },
      { name: "reference", points: rounds.map((r) => [r.round, (vectors(r, "reference_values") || [])[d] ?? null]), color: "#2ca02c", dashed: true },
      ...agents.map((agent, i) => ({ name: agent, points: rounds.map((r) => [r.round, (vectors(r, `values_${agent}`) || [])[d] ?? null]), color: PALETTE[(i + 3) % PALETTE.length] })),
    ];
    return lineChart(series, { title: dim, xLabel: "round", yMin: 0, yMax: 1, width: 420, height: 170 });
  });
  const metrics = lineChart(
    ["progress_distance", "diversity", "ai_influence"].map((m) => ({ name: m, points: rounds.map((r) => [r.round, r[m] ?? null]) })),
    { title: "population", xLabel: "round", width: 420, height: 170 }
  );
  const now = el("div", { id: "now" });
  const node = el("div", {}, now, el("div", { class: "view" }, charts.map((c) => c.node), metrics.node));
  const rowsByTurn = byTurn(data.decisions);
  function show(t) {
    for (const chart of [...charts, metrics]) chart.cursor(t);
    const round = rounds.find((r) => r.round === t);
    clear(now, round ? `round ${t}: century ${round.century}, distance to the reference ${num(round.progress_distance, 3)}, diversity ${num(round.diversity, 4)}` : `round ${t}`);
    const rows = rowsByTurn.get(t) || [];
    if (rows.length) now.append(el("ul", {}, rows.map((r) => el("li", {}, `${r.agent}: `, Object.entries((parseJSON(r.action, {}) || {}).shifts || {}).map(([k, v]) => `${k} ${v}`).join(", "), ` · users ${num(r.user_share, 2)} · pull ${num(r.pull, 2)}`))));
  }
  const turns = [...rowsByTurn.keys()];
  return { node, show, first: 0, last: turns.length ? Math.max(...turns) : 0 };
};

SITUATIONS.coevolution = (turn) => {
  const s = turn.situation;
  return el(
    "div",
    {},
    el("h2", {}, `Round ${s.round + 1} of ${s.rounds_total} · century ${s.century} · you are ${s.agent}`),
    el("p", {}, `Your users' share: ${num(s.user_share, 2)}; their approval of you: ${num(s.approval, 4)}. Each direction moves a value by up to ${num(s.max_shift, 3)}.`),
    el("table", {}, el("tr", {}, el("th", {}, "value"), el("th", {}, "yours"), el("th", {}, "your users' feedback")), (s.dims || []).map((d) => el("tr", {}, el("td", {}, d), el("td", { class: "num" }, num(s.values[d], 3)), el("td", { class: "num" }, num(s.feedback[d], 3)))))
  );
};
