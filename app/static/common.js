"use strict";
// Shared by every page. The DOM is built from elements and text nodes only: nothing that
// comes from the records (prompts, replies, messages, names) is ever parsed as HTML.

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttributes(node, attrs);
  return append(node, children);
}

function setAttributes(node, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.setAttribute("class", value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child)); // strings become text nodes
  }
  return node;
}

function clear(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

function href(page, params) {
  return page + "?" + new URLSearchParams(params).toString();
}

function link(text, page, params, attrs) {
  return el("a", { href: href(page, params), ...(attrs || {}) }, text);
}

function queryParams() {
  return new URLSearchParams(window.location.search);
}

async function api(path, params) {
  const response = await fetch(href(path, params || {}), { headers: { accept: "application/json" } });
  let data;
  try {
    data = await response.json();
  } catch (error) {
    throw new Error(`${path}: ${response.status} ${response.statusText}`);
  }
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function parseJSON(text, fallback) {
  if (typeof text !== "string") return text ?? fallback;
  try {
    return JSON.parse(text);
  } catch (error) {
    return fallback;
  }
}

function num(value, digits) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  return String(Number(value.toFixed(digits ?? 2)));
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function showError(where, error) {
  clear(where, el("p", { class: "error" }, String(error.message || error)));
}

// Poll ``work`` every ``ms`` while the page is open (a failed poll is shown, then retried).
function poll(work, ms, errorBox) {
  let stopped = false;
  async function tick() {
    if (stopped) return;
    try {
      const again = await work();
      if (errorBox) errorBox.replaceChildren();
      if (again === false) return;
    } catch (error) {
      if (errorBox) showError(errorBox, error);
    }
    setTimeout(tick, ms);
  }
  tick();
  return () => {
    stopped = true;
  };
}

// ---------------------------------------------------------------------------- charts (SVG)
const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(key, String(value));
  }
  return append(node, children);
}

// A line chart: series [{name, points: [[x, y], ...], color, dashed}]; returns {node, cursor(x)}.
function lineChart(series, options) {
  const width = options.width || 560;
  const height = options.height || 200;
  const pad = { left: 44, right: 12, top: 12, bottom: 26 };
  const points = series.flatMap((s) => s.points).filter(([, y]) => y !== null && y !== undefined);
  const xs = points.map(([x]) => x);
  const ys = points.map(([, y]) => y);
  const x0 = Math.min(...xs, options.xMin ?? Infinity);
  const x1 = Math.max(...xs, x0 + 1);
  let y0 = Math.min(...ys, options.yMin ?? Infinity);
  let y1 = Math.max(...ys, options.yMax ?? -Infinity);
  if (!Number.isFinite(y0)) [y0, y1] = [0, 1];
  if (y1 - y0 < 1e-9) [y0, y1] = [y0 - 1, y1 + 1];
  const sx = (x) => pad.left + ((x - x0) / (x1 - x0)) * (width - pad.left - pad.right);
  const sy = (y) => height - pad.bottom - ((y - y0) / (y1 - y0)) * (height - pad.top - pad.bottom);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img" });
  if (options.title) chart.append(svg("title", {}, options.title));
  for (const value of [y0, (y0 + y1) / 2, y1]) {
    chart.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: sy(value), y2: sy(value), class: "gridline" }));
    chart.append(svg("text", { x: pad.left - 4, y: sy(value) + 4, "text-anchor": "end", class: "axis" }, num(value, 2)));
  }
  for (const value of [Math.round((x0 + x1) / 2), x1]) {
    chart.append(svg("text", { x: sx(value), y: height - 8, "text-anchor": "middle", class: "axis" }, num(value)));
  }
  if (options.xLabel) {
    chart.append(svg("text", { x: pad.left, y: height - 8, "text-anchor": "start", class: "axis" }, `${options.xLabel} →`));
  }
  series.forEach((s, i) => {
    const color = s.color || PALETTE[i % PALETTE.length];
    let path = "";
    let pen = "M";
    for (const [x, y] of s.points) {
      if (y === null || y === undefined) {
        pen = "M";
        continue;
      }
      path += `${pen}${sx(x).toFixed(1)},${sy(y).toFixed(1)} `;
      pen = "L";
    }
    chart.append(
      svg("path", { d: path, fill: "none", stroke: color, "stroke-width": s.width || 2, "stroke-dasharray": s.dashed ? "5 4" : null }, svg("title", {}, s.name))
    );
  });
  const cursor = svg("line", { y1: pad.top, y2: height - pad.bottom, class: "cursor" });
  chart.append(cursor);
  const legend = el(
    "div",
    { class: "legend" },
    series.map((s, i) =>
      el("span", { class: "key" }, el("span", { class: "swatch" + (s.dashed ? " dashed" : ""), dataset: { color: s.color || PALETTE[i % PALETTE.length] } }), s.name)
    )
  );
  for (const swatch of legend.querySelectorAll(".swatch")) swatch.style.borderColor = swatch.dataset.color;
  const node = el("figure", { class: "chart-box" }, options.title ? el("figcaption", {}, options.title) : null, chart, legend);
  return {
    node,
    cursor(x) {
      cursor.setAttribute("x1", sx(x));
      cursor.setAttribute("x2", sx(x));
    },
  };
}
