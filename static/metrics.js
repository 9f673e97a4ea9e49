// Reading the service's `metrics` text for the console's live panel: a parser for the
// Prometheus / OpenMetrics text format and the arithmetic the panel needs (counter increases
// between two scrapes, histogram_quantile). No DOM in this file, so the same code runs under
// node or in a test's execute_script for a quick check of the numbers.
"use strict";

const RecordsMetrics = (() => {
  // A sample value: OpenMetrics spells infinities `+Inf`/`-Inf` (Number() does not know them).
  function parseValue(token) {
    switch (token) {
      case "+Inf": case "Inf": case "+inf": case "inf": return Infinity;
      case "-Inf": case "-inf": return -Infinity;
      case "NaN": case "nan": return NaN;
      default: {
        // Number("") is 0: an empty token is a malformed line, not a zero.
        if (token === "") return undefined;
        const v = Number(token);
        return Number.isNaN(v) ? undefined : v;
      }
    }
  }

  // One sample line: `name{label="value",...} value [timestamp] [# {exemplar} ...]`, or
  // `name value`. Label values escape `\\`, `\"` and `\n`, so they are read character by
  // character: a `}` or `,` inside quotes is part of the value. A malformed line gives null
  // (skipped), so one odd line never blanks the whole panel.
  function parseLine(line) {
    let i = 0;
    const n = line.length;
    while (i < n && line[i] !== "{" && line[i] !== " " && line[i] !== "\t") i++;
    const name = line.slice(0, i);
    if (name === "") return null;
    const labels = {};
    if (line[i] === "{") {
      i++;
      for (;;) {
        while (i < n && (line[i] === " " || line[i] === ",")) i++;
        if (i >= n) return null;
        if (line[i] === "}") { i++; break; }
        const eq = line.indexOf("=", i);
        if (eq < 0) return null;
        const key = line.slice(i, eq).trim();
        i = eq + 1;
        if (line[i] !== "\"") return null;
        i++;
        let value = "";
        for (;;) {
          if (i >= n) return null;
          const c = line[i];
          if (c === "\\") {
            const next = line[i + 1];
            value += next === "n" ? "\n" : next === undefined ? "" : next;
            i += 2;
          } else if (c === "\"") {
            i++;
            break;
          } else {
            value += c;
            i++;
          }
        }
        labels[key] = value;
      }
    }
    // The value is the first token after the name and labels; a timestamp or an exemplar
    // (` # {...} 1.0`) may follow and is ignored.
    const rest = line.slice(i).trim();
    const token = rest.split(/[ \t]+/, 1)[0];
    const value = parseValue(token);
    if (value === undefined) return null;
    return { name, labels, value };
  }

  // Every sample of a scrape, in order. `#` lines (HELP, TYPE, UNIT, EOF) are skipped.
  function parse(text) {
    const samples = [];
    for (const raw of text.split("\n")) {
      const line = raw.trim();
      if (line === "" || line[0] === "#") continue;
      const sample = parseLine(line);
      if (sample !== null) samples.push(sample);
    }
    return samples;
  }

  // Prometheus' histogram_quantile on one histogram given as cumulative buckets
  // [{le, count}] (promql/quantile.go, bucketQuantile): linear interpolation within the bucket
  // holding the rank, the first bucket starting at 0, and a rank in the +Inf bucket answered
  // with the highest finite bound. NaN when there is no observation.
  function histogramQuantile(q, buckets) {
    if (Number.isNaN(q)) return NaN;
    if (q < 0) return -Infinity;
    if (q > 1) return Infinity;
    // Equal bounds are merged, and counts forced monotonic, as Prometheus does: a scrape
    // taken while a bucket is being incremented can be off by one.
    const sorted = buckets.filter((b) => !Number.isNaN(b.le)).sort((a, b) => a.le - b.le);
    const b = [];
    for (const { le, count } of sorted) {
      if (b.length && b[b.length - 1].le === le) b[b.length - 1].count += count;
      else b.push({ le, count });
    }
    if (b.length < 2 || b[b.length - 1].le !== Infinity) return NaN;
    let max = -Infinity;
    for (const x of b) {
      if (x.count < max) x.count = max;
      else max = x.count;
    }
    const observations = b[b.length - 1].count;
    if (!(observations > 0)) return NaN;
    let rank = q * observations;
    // The first bucket (the +Inf one excluded) whose count reaches the rank.
    let i = 0;
    while (i < b.length - 1 && b[i].count < rank) i++;
    if (i === b.length - 1) return b[b.length - 2].le;
    if (i === 0 && b[0].le <= 0) return b[0].le;
    let start = 0;
    let count = b[i].count;
    if (i > 0) {
      start = b[i - 1].le;
      count -= b[i - 1].count;
      rank -= b[i - 1].count;
    }
    return start + (b[i].le - start) * (rank / count);
  }

  // A label set as a map key.
  const key = (labels, names) => names.map((k) => labels[k] ?? "").join("\u0000");

  // What the live panel keeps of one scrape: the counters it differentiates, per series (so a
  // series that appears between two scrapes, or a restart, is counted right), and the gauges.
  // Requests to `/metrics` are left out: the panel's own polling would otherwise dominate an
  // idle service's rate and latency.
  function snapshot(samples) {
    const s = {
      startTime: undefined,
      requests: new Map(),     // route, method, status -> count
      buckets: new Map(),      // route, le -> cumulative count
      batchSum: new Map(),     // pool -> queries
      batchCount: new Map(),   // pool -> socket writes
      inFlight: undefined,     // sum over connections
      circuitOpen: 0,          // connections whose circuit is open
      circuitTotal: 0,         // connections reporting a circuit
    };
    for (const { name, labels, value } of samples) {
      switch (name) {
        case "process_start_time_seconds":
          s.startTime = value;
          break;
        case "records_service_http_requests_total":
          if (labels.route !== "/metrics") {
            s.requests.set(key(labels, ["route", "method", "status"]), value);
          }
          break;
        case "records_service_http_request_duration_seconds_bucket":
          if (labels.route !== "/metrics") s.buckets.set(key(labels, ["route", "le"]), value);
          break;
        case "records_service_pg_batch_queries_sum":
          s.batchSum.set(key(labels, ["pool"]), value);
          break;
        case "records_service_pg_batch_queries_count":
          s.batchCount.set(key(labels, ["pool"]), value);
          break;
        case "records_service_pg_in_flight_queries":
          s.inFlight = (s.inFlight ?? 0) + value;
          break;
        case "records_service_pg_circuit_open":
          s.circuitTotal++;
          if (value === 1) s.circuitOpen++;
          break;
        default:
          break;
      }
    }
    return s;
  }

  // How much each counter series grew from `prev` to `cur`: a series new since `prev` grew
  // from 0 (the client library creates a series on its first use), and one that went down was
  // reset (a restart) and grew by its current value, as PromQL's increase() assumes.
  function increases(prev, cur) {
    const out = new Map();
    for (const [k, v] of cur) {
      const p = prev.get(k) ?? 0;
      out.set(k, v >= p ? v - p : v);
    }
    return out;
  }

  const total = (map) => {
    let sum = 0;
    for (const v of map.values()) sum += v;
    return sum;
  };

  // The panel's numbers for the interval between two snapshots `dt` seconds apart: request
  // rate, p50 and p99 latency of the requests answered in the interval (NaN without any),
  // the mean queries per socket write (NaN without a write), and the gauges of `cur`.
  function interval(prev, cur, dt) {
    // A different start time is a restarted process: every counter began again at 0.
    const base = prev.startTime !== cur.startTime
      ? snapshot([])
      : prev;
    const rate = total(increases(base.requests, cur.requests)) / dt;
    // Per `le`, summed over routes: the interval's histogram of every route together.
    const byLe = new Map();
    for (const [k, d] of increases(base.buckets, cur.buckets)) {
      const le = k.slice(k.indexOf("\u0000") + 1);
      byLe.set(le, (byLe.get(le) ?? 0) + d);
    }
    const buckets = [...byLe].map(([le, count]) => ({ le: parseValue(le), count }))
      .filter((b) => b.le !== undefined);
    const writes = total(increases(base.batchCount, cur.batchCount));
    const queries = total(increases(base.batchSum, cur.batchSum));
    return {
      rate,
      p50: histogramQuantile(0.5, buckets),
      p99: histogramQuantile(0.99, buckets),
      batch: writes > 0 ? queries / writes : NaN,
      inFlight: cur.inFlight,
      circuitOpen: cur.circuitOpen,
      circuitTotal: cur.circuitTotal,
    };
  }

  return { parse, parseLine, parseValue, histogramQuantile, snapshot, interval };
})();

if (typeof module !== "undefined") module.exports = RecordsMetrics;
