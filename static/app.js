// The records console: one small form per API route, no dependencies.
// Every URL is relative, so the page works behind any prefix the server is mounted at.
"use strict";

const $ = (sel) => document.querySelector(sel);

// Sends one request, shows the method, URL, status and JSON body, and returns the parsed body
// (or undefined when the request failed or the body was not JSON).
async function call(method, url, body) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  $("#request").textContent = `${method} ${url}`;
  const status = $("#status");
  status.textContent = "…";
  status.className = "status";
  $("#request-id").textContent = "";
  try {
    const res = await fetch(url, init);
    const text = await res.text();
    let parsed;
    try { parsed = text === "" ? undefined : JSON.parse(text); } catch (_) { parsed = undefined; }
    // A 503 is not the request's fault (the database is down, or the service is overloaded
    // or shutting down): it gets its own look and the Retry-After hint, so it does not read
    // as one more "not found".
    const retry = res.headers.get("Retry-After");
    status.textContent = `${res.status} ${res.statusText}`.trim() +
      (res.status === 503 && retry ? ` (retry after ${retry} s)` : "");
    status.className = `status ${res.ok ? "ok" : "err"}${res.status === 503 ? " unavailable" : ""}`;
    // The id the service logged this request under, to find it in the logs.
    const requestId = res.headers.get("X-Request-Id");
    $("#request-id").textContent = requestId ? `X-Request-Id: ${requestId}` : "";
    $("#body").textContent = parsed === undefined ? text : JSON.stringify(parsed, null, 2);
    return res.ok ? parsed : undefined;
  } catch (err) {
    status.textContent = "network error";
    status.className = "status err unavailable";
    $("#body").textContent = String(err);
    return undefined;
  }
}

const q = (params) =>
  Object.entries(params)
    .filter(([, v]) => v !== undefined && v !== "")
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
    .join("&");

const field = (form, name) => form.elements[name].value.trim();

function on(id, handler) {
  $(id).addEventListener("submit", (ev) => {
    ev.preventDefault();
    handler(ev.currentTarget);
  });
}

on("#by-id", (f) => call("GET", `user/${encodeURIComponent(field(f, "id"))}`));
on("#by-email", (f) => call("GET", `user?${q({ email: field(f, "email") })}`));
on("#upsert", (f) =>
  call("POST", `user?${q({ email: field(f, "email") })}`, { text: f.elements.text.value }));
on("#delete", (f) => call("DELETE", `user?${q({ email: field(f, "email") })}`));

// Browsing. `pages` holds the query of every page shown since the last offset search, so
// "previous" can step back; "next" asks for the page after the last email shown (keyset).
const browse = $("#browse");
let pages = [];
let lastEmail = null;

async function showPage(query) {
  const rows = await call("GET", `users?${q(query)}`);
  const tbody = $("#rows tbody");
  tbody.replaceChildren();
  if (!Array.isArray(rows)) return false;
  for (const [email, text] of rows) {
    const tr = document.createElement("tr");
    const e = document.createElement("td");
    const t = document.createElement("td");
    e.textContent = email;
    t.textContent = text === null ? "null" : text;
    if (text === null) t.className = "null";
    tr.append(e, t);
    tr.title = "click to copy the email into the forms above";
    tr.addEventListener("click", () => {
      document.querySelectorAll('input[name="email"]').forEach((i) => { i.value = email; });
    });
    tbody.append(tr);
  }
  lastEmail = rows.length ? rows[rows.length - 1][0] : null;
  $("#next").disabled = lastEmail === null;
  return true;
}

function updatePrev() {
  $("#prev").disabled = pages.length < 2;
}

on("#browse", async (f) => {
  const query = { limit: field(f, "limit"), offset: field(f, "offset") };
  pages = (await showPage(query)) ? [query] : [];
  updatePrev();
});

$("#next").addEventListener("click", async () => {
  if (lastEmail === null) return;
  const query = { after: lastEmail, limit: field(browse, "limit") };
  if (await showPage(query)) pages.push(query);
  updatePrev();
});

$("#prev").addEventListener("click", async () => {
  if (pages.length < 2) return;
  pages.pop();
  await showPage(pages[pages.length - 1]);
  updatePrev();
});

$("#prev").disabled = true;
$("#next").disabled = true;

// Live panel. `metrics` is read every second; each pair of consecutive scrapes gives one point
// (RecordsMetrics.interval, in metrics.js) and the charts show the points of the last five
// minutes. The charts are plain SVG drawn here, so the console stays a directory of static
// files that works offline, with no library to vet or update.
const WINDOW_MS = 5 * 60 * 1000;
const METRICS_EVERY_MS = 1000;
// After a 404 (METRICS_ADDR moved metrics to another listener) there is nothing to poll for;
// looking again now and then notices a restart with metrics back on this port.
const METRICS_ABSENT_EVERY_MS = 15000;
const READY_EVERY_MS = 2000;
// A poll that hangs (a stalled service) must not stop the next ones: each has a deadline.
const FETCH_TIMEOUT_MS = 3000;
const METRICS_ACCEPT =
  "application/openmetrics-text; version=1.0.0, text/plain; version=0.0.4; q=0.5";

// Points {t, rate, p50, p99, inFlight, batch}, oldest first; t is performance.now() (it never
// jumps with the wall clock). A NaN value draws as a gap.
const livePoints = [];
let lastScrape = null; // {t, snap}: the scrape the next one is compared with

async function fetchWithTimeout(url, init) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), FETCH_TIMEOUT_MS);
  try {
    const res = await fetch(url, { ...init, cache: "no-store", signal: abort.signal });
    return { res, text: await res.text() };
  } finally {
    clearTimeout(timer);
  }
}

// Runs `task` now and again after the delay it returns, counted from the task's start, so a
// slow answer does not add up to drift, and two polls of one kind never overlap.
function every(task) {
  const run = async () => {
    const started = performance.now();
    let delay;
    try { delay = await task(); } catch (err) { console.error(err); delay = METRICS_EVERY_MS; }
    setTimeout(run, Math.max(0, delay - (performance.now() - started)));
  };
  run();
}

function setPill(el, state, text) {
  el.textContent = text;
  el.className = `pill ${state}`;
  el.dataset.state = state;
}

function setLive(state, note) {
  $("#live").dataset.state = state;
  $("#live-note").textContent = note;
}

// ---- formatting -------------------------------------------------------------------------

const fmtNumber = (v) => {
  if (!Number.isFinite(v)) return "—";
  if (v >= 10000) return `${(v / 1000).toFixed(0)}k`;
  if (v >= 1000) return `${(v / 1000).toFixed(1)}k`;
  return String(Number(v.toPrecision(3)));
};

const fmtSeconds = (v) => {
  if (!Number.isFinite(v)) return "—";
  if (v === 0) return "0";
  if (v < 0.001) return `${Number((v * 1e6).toPrecision(3))} µs`;
  if (v < 1) return `${Number((v * 1e3).toPrecision(3))} ms`;
  return `${Number(v.toPrecision(3))} s`;
};

// A figure shows the formatted value; data-value keeps the number (empty when unknown) for
// tests and for anyone reading the page with a script.
function setFigure(id, value, format) {
  const el = $(id);
  el.textContent = format(value);
  el.dataset.value = Number.isFinite(value) ? String(value) : "";
}

// ---- charts -----------------------------------------------------------------------------

const SVG_NS = "http://www.w3.org/2000/svg";
const CHART = { w: 360, h: 150, left: 44, right: 8, top: 22, bottom: 16 };

function svg(tag, attrs, text) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

// The top of the y axis: 1, 2, 2.5 or 5 times a power of ten, at or above `v`, so the three
// grid lines carry round numbers.
function niceMax(v) {
  if (!(v > 0) || !Number.isFinite(v)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5]) if (m * p >= v * (1 - 1e-9)) return m * p;
  return 10 * p;
}

// Draws `lines` ([{key, label, cls}] read from livePoints) over the last five
// minutes into the <svg> `el`, replacing what was there.
function drawChart(el, title, lines, format) {
  const { w, h, left, right, top, bottom } = CHART;
  const now = performance.now();
  const since = now - WINDOW_MS;
  const points = livePoints.filter((p) => p.t >= since);
  let max = 0;
  for (const line of lines) {
    for (const p of points) {
      if (Number.isFinite(p[line.key]) && p[line.key] > max) max = p[line.key];
    }
  }
  const yMax = niceMax(max);
  const x = (t) => left + (w - left - right) * (1 - (now - t) / WINDOW_MS);
  const y = (v) => top + (h - top - bottom) * (1 - Math.min(v, yMax) / yMax);

  const kids = [svg("text", { x: 2, y: 12, class: "title" }, title)];
  // The legend, right-aligned on the title's line (widths estimated: no layout pass needed).
  let cursor = w - right;
  for (const line of [...lines].reverse()) {
    kids.push(svg("text", { x: cursor, y: 12, class: `legend ${line.cls}`, "text-anchor": "end" },
      line.label));
    cursor -= line.label.length * 5.8 + 9;
    kids.push(svg("rect", { x: cursor, y: 6, width: 6, height: 6, class: `swatch ${line.cls}` }));
    cursor -= 8;
  }
  for (const f of [0, 0.5, 1]) {
    const yy = y(yMax * f).toFixed(1);
    kids.push(svg("line", { x1: left, x2: w - right, y1: yy, y2: yy, class: "grid" }));
    kids.push(svg("text", { x: left - 4, y: Number(yy) + 3, class: "axis", "text-anchor": "end" },
      format(yMax * f)));
  }
  kids.push(svg("text", { x: left, y: h - 3, class: "axis" }, "−5 min"));
  kids.push(svg("text", { x: w - right, y: h - 3, class: "axis", "text-anchor": "end" }, "now"));

  for (const line of lines) {
    let d = "";
    let pen = false;
    let last = null;
    for (const p of points) {
      const v = p[line.key];
      if (!Number.isFinite(v)) { pen = false; continue; }
      const px = x(p.t).toFixed(1);
      const py = y(v).toFixed(1);
      d += `${pen ? "L" : "M"}${px},${py}`;
      pen = true;
      last = [px, py];
    }
    kids.push(svg("path", { d, class: `series ${line.cls}`, "data-key": line.key }));
    // The newest value as a dot: visible even when it is a single point between gaps.
    if (last) {
      kids.push(svg("circle", { cx: last[0], cy: last[1], r: 2, class: `dot ${line.cls}` }));
    }
  }
  el.replaceChildren(...kids);
}

function render() {
  const p = livePoints.length ? livePoints[livePoints.length - 1] : {};
  setFigure("#live-rate", p.rate, fmtNumber);
  setFigure("#live-p50", p.p50, fmtSeconds);
  setFigure("#live-p99", p.p99, fmtSeconds);
  setFigure("#live-depth", p.inFlight, fmtNumber);
  setFigure("#live-batch", p.batch, fmtNumber);
  drawChart($("#rate-chart"), "requests/s", [{ key: "rate", label: "all routes", cls: "s0" }],
    fmtNumber);
  drawChart($("#latency-chart"), "latency", [
    { key: "p50", label: "p50", cls: "s0" },
    { key: "p99", label: "p99", cls: "s1" },
  ], fmtSeconds);
  drawChart($("#depth-chart"), "PostgreSQL pipeline", [
    { key: "inFlight", label: "in flight", cls: "s0" },
    { key: "batch", label: "per write", cls: "s1" },
  ], fmtNumber);
}

function addPoint(point) {
  livePoints.push(point);
  const since = performance.now() - WINDOW_MS - 5000;
  while (livePoints.length && livePoints[0].t < since) livePoints.shift();
}

// A failed scrape breaks the lines instead of joining the points either side of it.
function addGap() {
  const last = livePoints[livePoints.length - 1];
  if (last && Number.isFinite(last.rate)) addPoint({ t: performance.now(), rate: NaN });
}

// ---- polling ----------------------------------------------------------------------------

function showCircuit(snap) {
  const el = $("#circuit-state");
  if (snap === null) {
    setPill(el, "unknown", "PostgreSQL: circuit unknown (no metrics)");
  } else if (snap.circuitTotal === 0) {
    setPill(el, "unknown", "PostgreSQL: no circuit reported");
  } else if (snap.circuitOpen > 0) {
    const n = snap.circuitTotal;
    setPill(el, "err",
      `PostgreSQL: circuit open on ${snap.circuitOpen} of ${n} connection${n === 1 ? "" : "s"}`);
  } else {
    const n = snap.circuitTotal;
    setPill(el, "ok", `PostgreSQL: circuit closed (${n} connection${n === 1 ? "" : "s"})`);
  }
}

async function pollMetrics() {
  let answer;
  try {
    answer = await fetchWithTimeout("metrics", { headers: { Accept: METRICS_ACCEPT } });
  } catch (err) {
    const why = err.name === "AbortError" ? "timed out" : "network error";
    setLive("error", `metrics: no answer (${why})`);
    showCircuit(null);
    addGap();
    render();
    return METRICS_EVERY_MS;
  }
  const { res, text } = answer;
  if (res.status === 404) {
    // Not an error of the service: the operator serves metrics on a separate listener.
    setLive("absent", "metrics is not served on this port (404): with METRICS_ADDR set, the " +
      "service serves it on a separate listener, so the live charts are off here");
    livePoints.length = 0;
    lastScrape = null;
    showCircuit(null);
    render();
    return METRICS_ABSENT_EVERY_MS;
  }
  if (!res.ok) {
    setLive("error", `metrics: ${res.status} ${res.statusText}`.trim());
    showCircuit(null);
    addGap();
    render();
    return METRICS_EVERY_MS;
  }
  const t = performance.now();
  const snap = RecordsMetrics.snapshot(RecordsMetrics.parse(text));
  showCircuit(snap);
  if (lastScrape !== null) {
    const iv = RecordsMetrics.interval(lastScrape.snap, snap, (t - lastScrape.t) / 1000);
    addPoint({ t, rate: iv.rate, p50: iv.p50, p99: iv.p99, inFlight: iv.inFlight ?? NaN,
      batch: iv.batch });
    setLive("ok", "every second, over the last 5 minutes");
  } else {
    setLive("ok", "first scrape read; the rates start with the next one");
  }
  lastScrape = { t, snap };
  render();
  return METRICS_EVERY_MS;
}

async function pollReady() {
  const el = $("#ready-state");
  try {
    const { res, text } =
      await fetchWithTimeout("readyz", { headers: { Accept: "application/json" } });
    if (res.ok) {
      setPill(el, "ok", "ready");
    } else if (res.status === 404) {
      setPill(el, "unknown", "readyz is not served on this port");
    } else {
      let detail = "";
      try { detail = JSON.parse(text).detail ?? ""; } catch (_) { detail = ""; }
      setPill(el, "err", `not ready: ${res.status}${detail ? ` ${detail}` : ""}`);
    }
  } catch (err) {
    setPill(el, "err", "not ready: no answer");
  }
  return READY_EVERY_MS;
}

render();
every(pollMetrics);
every(pollReady);
