"use strict";
// A person's seat: the waiting turn's situation (views.js) and the actions the env's mask allows
// now, as buttons with fields; the answer goes to POST /api/seat, which checks it again.

// The first required property with a list of values names the kind of action (action, choice).
function keyField(schema) {
  const properties = schema.properties || {};
  return (schema.required || []).find((name) => properties[name] && properties[name].enum) || Object.keys(properties).find((name) => properties[name].enum);
}

function fieldInput(name, spec, values, initial) {
  if (spec.enum || values) {
    const options = values || spec.enum;
    return el("select", { name, dataset: { field: name } }, options.map((v) => el("option", { value: v, selected: v === initial }, v === "" ? "(none)" : v)));
  }
  if (spec.type === "number" || spec.type === "integer") {
    return el("input", { type: "number", name, step: spec.type === "integer" ? 1 : "any", value: initial ?? 0, dataset: { field: name } });
  }
  return el("input", { type: "text", name, maxlength: spec.maxLength || null, value: initial ?? "", placeholder: name, dataset: { field: name } });
}

function readField(input, spec) {
  if (spec.type === "number") return input.value === "" ? null : Number(input.value);
  if (spec.type === "integer") return input.value === "" ? null : parseInt(input.value, 10);
  return input.value;
}

// One row per kind of allowed action; fields where the allowed entries differ (or carry text).
function catalogForm(turn, submit) {
  const schema = turn.schema;
  const properties = schema.properties || {};
  const key = keyField(schema);
  const groups = new Map();
  for (const entry of turn.choices) {
    if (!groups.has(entry[key])) groups.set(entry[key], []);
    groups.get(entry[key]).push(entry);
  }
  const free = Object.keys(properties).filter((name) => name !== key && !turn.choices.some((e) => name in e));
  const freeInputs = free.map((name) => [name, fieldInput(name, properties[name], null, "")]);
  const rows = [...groups].map(([value, entries]) => {
    const inputs = [];
    const fixed = {};
    for (const name of Object.keys(properties)) {
      if (name === key || !entries.some((e) => name in e)) continue;
      const seen = [...new Set(entries.map((e) => e[name]))];
      const spec = properties[name];
      if (spec.enum && (seen.length > 1 || (seen[0] !== "" && seen[0] !== null))) inputs.push([name, fieldInput(name, spec, seen, seen[0])]);
      else if (!spec.enum && (seen.length > 1 || (seen[0] !== "" && seen[0] !== 0 && seen[0] !== null))) inputs.push([name, fieldInput(name, spec, null, seen[0])]);
      else fixed[name] = seen[0];
    }
    const send = () => {
      const action = { [key]: value, ...fixed };
      for (const [name, input] of [...inputs, ...freeInputs]) {
        const v = readField(input, properties[name]);
        if (v !== "" || (schema.required || []).includes(name)) action[name] = v;
      }
      submit(action);
    };
    return el(
      "div",
      { class: "action-row", dataset: { action: value } },
      el("button", { type: "button", class: "primary", dataset: { choose: value }, onclick: send }, String(value)),
      inputs.map(([name, input]) => el("label", {}, `${name} `, input))
    );
  });
  return el("div", {}, rows, freeInputs.length ? el("div", { class: "action-row" }, freeInputs.map(([name, input]) => el("label", {}, `${name} (optional) `, input))) : null);
}

// Without a catalog (continuous envs): one input per schema field, nested objects included.
function schemaForm(turn, submit) {
  const inputs = [];
  function fields(spec, path) {
    if (spec.type === "object") return Object.entries(spec.properties || {}).map(([name, sub]) => fields(sub, [...path, name]));
    const input = fieldInput(path.join("."), spec, null, spec.enum ? spec.enum.includes("hold") ? "hold" : spec.enum[0] : null);
    inputs.push([path, spec, input]);
    return el("div", { class: "action-row" }, el("label", {}, `${path[path.length - 1]} `, input));
  }
  const body = fields(turn.schema, []);
  const send = () => {
    const action = {};
    for (const [path, spec, input] of inputs) {
      let node = action;
      for (const part of path.slice(0, -1)) node = node[part] = node[part] || {};
      node[path[path.length - 1]] = readField(input, spec);
    }
    submit(action);
  };
  return el("div", {}, body, el("button", { type: "button", class: "primary", dataset: { choose: "submit" }, onclick: send }, "submit"));
}

document.addEventListener("DOMContentLoaded", () => {
  const params = queryParams();
  const runId = params.get("run");
  const agent = params.get("agent");
  const main = document.getElementById("main");
  const errors = el("div");
  const status = el("div", { id: "seat-status", class: "notice" }, "Looking for your turn…");
  const board = el("div", { id: "board" });
  const countdown = el("span", { id: "countdown" });
  clear(main, el("h1", {}, `${agent}'s seat`, el("span", { class: "muted" }, ` · ${runId}`)), errors, status, board);
  document.getElementById("where").textContent = `${runId} · seat ${agent}`;
  let shown = null;
  let deadline = 0;
  let sent = false;

  async function submit(action) {
    const response = await fetch(href("/api/seat", { run: runId, agent }), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ turn_file: shown, action }),
    });
    const data = await response.json().catch(() => ({ error: response.statusText }));
    if (!response.ok) return showError(errors, new Error(data.error));
    errors.replaceChildren();
    sent = true;
    clear(status, "Sent. Waiting for the others and your next turn…");
    board.replaceChildren();
  }

  setInterval(() => {
    if (deadline && !sent) countdown.textContent = ` (${ago(deadline - Date.now() / 1000)} left)`;
  }, 500);

  poll(async () => {
    let data;
    try {
      data = await api("/api/seat", { run: runId, agent });
    } catch (error) {
      if (!String(error.message).includes("has no seat")) throw error;
      clear(status, `The run has not opened ${agent}'s seat yet (is it starting?). This page waits for it.`);
      return;
    }
    const turn = data.waiting;
    if (!turn) {
      deadline = 0;
      if (shown !== null && !sent) clear(status, "That turn closed (timed out). Waiting for the next one…");
      shown = null;
      sent = false;
      board.replaceChildren();
      if (data.status && data.status !== "running") {
        clear(status, `The run is ${data.status} (${num(data.ok)} of ${num(data.requested)} episodes). `, link("Replay the episodes", "/run", { run: runId }));
        return false;
      }
      if (!status.textContent.startsWith("Sent")) clear(status, `Waiting for your turn… (run ${data.status || "starting"}, ${num(data.ok)} of ${num(data.requested)} episodes done)`);
      return;
    }
    if (turn.turn_file === shown) return;
    shown = turn.turn_file;
    sent = false;
    deadline = turn.deadline;
    errors.replaceChildren();
    clear(status, `Your turn: episode ${turn.episode_id}, turn ${turn.turn}`, countdown);
    const situation = (SITUATIONS[turn.env] || (() => null))(turn);
    const form = turn.choices ? catalogForm(turn, submit) : schemaForm(turn, submit);
    clear(
      board,
      situation,
      turn.affect ? el("p", { class: "muted" }, `You feel guilt ${num(turn.affect.guilt, 2)}, satisfaction ${num(turn.affect.satisfaction, 2)}`) : null,
      el("h2", {}, "Your move"),
      el("div", { class: "seat-form", id: "seat-form" }, form),
      el("details", {}, el("summary", {}, "everything the environment told you"), jsonTree(turn.situation))
    );
  }, 400, errors);
});
