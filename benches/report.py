#!/usr/bin/env python3
"""Helpers and the analysis for scripts/bench.sh and scripts/bench-http.sh.

Subcommands (all output on stdout):

  id-regex N                 the rand_regex pattern (for `oha --rand-regex-url`) that draws ids
                             uniformly from 1..N (see `id_blocks` for how, and for the tiny
                             deviation it accepts)
  check-ids URLS_FILE N      reads URLs dumped by `oha --dump-urls`, checks the ids are uniform
                             over 1..N (per-decile counts) and prints a JSON summary
  peak-rps RAW_FILE          requests/s of one raw load-generator result (oha or wrk JSON)
  proc-cpu PID               CPU seconds and context switches of PID (with its descendants) and
                             of every `postgres` process, as JSON (read before and after a run)
  report DIR [CHART]         reads DIR/runs.jsonl (+ raw files) and writes DIR/results.json,
                             DIR/table.md (also printed) and the chart (default docs/benchmark.png)
  http-report DIR            the HTTP-core comparison: DIR/http-runs.jsonl -> DIR/http-core.md

The raw results are oha's `--output-format json` documents, or, with the wrk fallback, the JSON
line that benches/*.lua print from wrk's done() callback; `load()` normalises both.
"""

import json
import math
import os
import statistics
import sys
from collections import Counter

# ---------------------------------------------------------------------------------------------
# Drawing ids uniformly with oha's --rand-regex-url
#
# oha samples the URL from a regex with the rand_regex crate: an alternation picks each of its
# branches with equal probability (nested alternations are flattened into one list), a class
# picks each character with equal probability, and `x{a,b}` picks the repeat count uniformly.
# So `[1-9][0-9]{0,6}` is NOT uniform over 1..10^7 (a 1-digit id would get 1/7 of the load).
#
# Instead 1..N is cut into decimal blocks "prefix + j free digits" (10^j ids each, e.g. for
# N = 10^7: 1[0-9]{6}, ..., 9[0-9]{6}, 1[0-9]{5}, ..., 1..9, 10000000), and every block becomes
# round(size / unit) identical branches of one alternation, unit = N / BRANCHES. Each drawn id
# then has probability 1/N within rounding; only blocks smaller than unit/2 (ids below about
# N / BRANCHES / 5) are never drawn. `check-ids` measures the result on a sample.
BRANCHES = 2000


def fixed_rate(meta):
    """The fixed-rate run's load: "17,000 req/s" (the same for every system, LATENCY_RATE) or
    "70%" (of each system's own peak, LATENCY_LOAD)."""
    if meta.get("latency_rate"):
        return f"{meta['latency_rate']:,} req/s"
    return f"{int(round(float(meta.get('latency_load', 0.7)) * 100))}%"


def latency_label(meta):
    """Column label for the fixed-rate run: "at 17,000 req/s" or "at 70%"."""
    return f"at {fixed_rate(meta)}"


def id_blocks(n):
    """Decimal blocks (prefix, free_digits) that partition 1..n exactly."""
    s = str(n)
    blocks = []
    for length in range(1, len(s)):
        for d in range(1, 10):
            blocks.append((str(d), length - 1))
    for i, ch in enumerate(s):
        lo = 1 if i == 0 else 0
        for d in range(lo, int(ch)):
            blocks.append((s[:i] + str(d), len(s) - i - 1))
    blocks.append((s, 0))
    return blocks


def id_regex(n):
    unit = n / BRANCHES
    branches = []
    for prefix, j in id_blocks(n):
        size = 10**j
        count = round(size / unit)
        branch = prefix + (f"[0-9]{{{j}}}" if j > 1 else "[0-9]" if j == 1 else "")
        branches.extend([branch] * count)
    return "(?:" + "|".join(branches) + ")"


def id_regex_coverage(n):
    """Fraction of 1..n that the regex can draw, and the largest relative over-weight."""
    unit = n / BRANCHES
    covered = 0
    total_branches = 0
    worst = 0.0
    for _prefix, j in id_blocks(n):
        size = 10**j
        count = round(size / unit)
        total_branches += count
    for _prefix, j in id_blocks(n):
        size = 10**j
        count = round(size / unit)
        if count:
            covered += size
            p_per_id = count / total_branches / size
            worst = max(worst, abs(p_per_id * n - 1))
    return covered / n, worst


def check_ids(path, n):
    ids = []
    bad = 0
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                ids.append(int(line.rsplit("/", 1)[1]))
            except ValueError:
                bad += 1
    out_of_range = sum(1 for i in ids if i < 1 or i > n)
    deciles = Counter(min(9, (i - 1) * 10 // n) for i in ids if 1 <= i <= n)
    expected = len(ids) / 10
    dev = max(abs(deciles.get(k, 0) - expected) / expected for k in range(10)) if ids else 1.0
    coverage, worst = id_regex_coverage(n)
    return {
        "sample": len(ids),
        "unparsable": bad,
        "out_of_range": out_of_range,
        "min": min(ids) if ids else None,
        "max": max(ids) if ids else None,
        "mean": statistics.fmean(ids) if ids else None,
        "expected_mean": (n + 1) / 2,
        "decile_counts": [deciles.get(k, 0) for k in range(10)],
        "max_decile_deviation": round(dev, 4),
        "regex_branches": BRANCHES,
        "regex_coverage_of_ids": coverage,
        "regex_max_per_id_weight_error": round(worst, 4),
        # 5 sigma of a binomial decile count, relative
        "ok": bad == 0
        and out_of_range == 0
        and dev < max(0.03, 5 * math.sqrt(0.09 * len(ids)) / max(expected, 1)),
    }


# ---------------------------------------------------------------------------------------------
# Raw results


def load(path):
    """Normalise one raw load-generator result to a flat dict (latencies in ms)."""
    with open(path) as f:
        text = f.read()
    try:
        doc = json.loads(text)
    except ValueError:  # wrk: its text summary, then the JSON line printed by done()
        doc = json.loads([line for line in text.splitlines() if line.startswith("{")][-1])
    if doc.get("tool") == "wrk":
        lat = doc["latency_us"]
        total = doc["requests"]

        def us(key):
            # wrk 4.1 reports 0 for high percentiles when pipelining (it records one latency
            # sample per batch of requests): no figure rather than a wrong one
            v = lat[key]
            return None if v == 0 and lat["max"] > 0 else v / 1000

        return {
            "tool": "wrk",
            "requests": total,
            "rps": doc["requests"] / (doc["duration_us"] / 1e6),
            "p50_ms": us("p50"),
            "p99_ms": us("p99"),
            "p999_ms": us("p99.9"),
            "max_ms": lat["max"] / 1000,
            "errors": doc["errors"]["connect"]
            + doc["errors"]["read"]
            + doc["errors"]["write"]
            + doc["errors"]["timeout"],
            "non_2xx": doc["errors"]["status"],
            "status": {},
        }
    # oha --output-format json
    summary = doc["summary"]
    pct = doc.get("latencyPercentiles") or {}
    status = {str(k): v for k, v in (doc.get("statusCodeDistribution") or {}).items()}
    errors = sum((doc.get("errorDistribution") or {}).values())
    ok = sum(v for k, v in status.items() if k.startswith("2"))
    non_2xx = sum(status.values()) - ok

    def ms(key):
        v = pct.get(key)
        return None if v is None else v * 1000

    return {
        "tool": "oha",
        "requests": sum(status.values()) + errors,
        "rps": summary.get("requestsPerSec") or 0.0,
        "success_rate": summary.get("successRate"),
        "p50_ms": ms("p50"),
        "p99_ms": ms("p99"),
        "p999_ms": ms("p99.9"),
        "max_ms": None if summary.get("slowest") is None else summary["slowest"] * 1000,
        "errors": errors,
        "non_2xx": non_2xx,
        "status": status,
        "error_kinds": doc.get("errorDistribution") or {},
    }


# ---------------------------------------------------------------------------------------------
# CPU accounting from /proc


def _stat(pid):
    """(comm, ppid, own cpu ticks: utime + stime, waited-for children's: cutime + cstime) of one
    process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17
    return (
        comm,
        int(fields[1]),
        int(fields[11]) + int(fields[12]),
        int(fields[13]) + int(fields[14]),
    )


def _switches(pid):
    """Voluntary + involuntary context switches over every thread of one process."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def proc_cpu(root):
    tick = os.sysconf("SC_CLK_TCK")
    procs = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st:
                procs[int(name)] = st
    tree = {root}
    grew = True
    while grew:  # the server and its descendants (a supervisor's workers)
        grew = False
        for pid, (_, ppid, _, _) in procs.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    server = [p for p in tree if p in procs]
    return {
        # the server's tree, with what it reaped (a supervisor's exited workers)
        "server_cpu_s": sum(procs[p][2] + procs[p][3] for p in server) / tick,
        "server_switches": sum(_switches(p) for p in server),
        # each postgres process's own time only: the postmaster's cutime would add the whole
        # lifetime of every backend it reaps during the run. Every cluster on the machine
        # counts: run nothing else on PostgreSQL meanwhile.
        "postgres": {
            str(pid): {"cpu_s": st[2] / tick, "switches": _switches(pid)}
            for pid, st in procs.items()
            if st[0] == "postgres"
        },
    }


def cpu_delta(before, after):
    """Server and PostgreSQL CPU seconds and context switches spent between two snapshots."""
    pg_cpu = pg_sw = 0.0
    for pid, a in after["postgres"].items():
        b = before["postgres"].get(pid)
        if b is None or b["cpu_s"] > a["cpu_s"]:  # started during the run (or a reused pid)
            b = {"cpu_s": 0.0, "switches": 0}
        pg_cpu += a["cpu_s"] - b["cpu_s"]
        pg_sw += a["switches"] - b["switches"]
    return {
        "server_cpu_s": after["server_cpu_s"] - before["server_cpu_s"],
        "server_switches": after["server_switches"] - before["server_switches"],
        "pg_cpu_s": pg_cpu,
        "pg_switches": pg_sw,
    }


def attach_cpu(out_dir, r):
    """Per-request CPU (µs) and context switches of one run, from its two snapshots."""
    files = r.get("cpu_files")
    if not files:
        return
    snaps = []
    for name in files:
        with open(os.path.join(out_dir, name)) as f:
            snaps.append(json.load(f))
    d = cpu_delta(*snaps)
    n = r["peak"]["requests"] or 0
    r["cpu"] = d
    if n:
        r["server_us_per_req"] = d["server_cpu_s"] * 1e6 / n
        r["pg_us_per_req"] = d["pg_cpu_s"] * 1e6 / n
        r["server_switches_per_req"] = d["server_switches"] / n
        r["pg_switches_per_req"] = d["pg_switches"] / n


def spread(xs):
    """max/min of positive figures (None without any)."""
    return max(xs) / min(xs) if xs and min(xs) > 0 else None


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


SYSTEM_LABELS = {
    "ours": "records-service (WORKERS={workers})",
    "ours-1": "records-service (WORKERS=1)",
    "ours-nometrics": "records-service, METRICS=off (WORKERS={workers})",
    "ours-access": "records-service, ACCESS_LOG=all (WORKERS={workers})",
    "ours-auth": ("records-service, AUTH_REQUIRED=all, a valid HS256 token on every request "
                  "(WORKERS={workers})"),
    "ours-base": "records-service, BASE_BIN (WORKERS={workers})",
    "axum": "axum 0.8 + tokio-postgres + deadpool",
    "xitca": "xitca-web 0.8 + xitca-postgres 0.4, TechEmpower's build (WORKERS={workers})",
    "xitca-epoll": "xitca-web, TechEmpower's build, XITCA_IO_URING=0 (WORKERS={workers})",
    "xitca-plain": "xitca-web 0.8 + xitca-postgres 0.4, the old build (WORKERS={workers})",
    "fastapi": "FastAPI 0.110 + psycopg 3.1 pool (1 uvicorn worker)",
}
ORDER = [
    "ours",
    "ours-nometrics",
    "ours-access",
    "ours-auth",
    "ours-base",
    "ours-1",
    "xitca",
    "xitca-epoll",
    "xitca-plain",
    "axum",
    "fastapi",
]


def fmt(v, digits=2):
    if v is None:
        return "–"
    if isinstance(v, float) and math.isnan(v):
        return "–"
    return f"{v:.{digits}f}"


def report(out_dir, chart):
    runs = []
    with open(os.path.join(out_dir, "runs.jsonl")) as f:
        for line in f:
            if line.strip():
                runs.append(json.loads(line))
    meta = {}
    meta_path = os.path.join(out_dir, "meta.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
    for r in runs:
        r["peak"] = load(os.path.join(out_dir, r["peak_file"]))
        r["fixed"] = load(os.path.join(out_dir, r["fixed_file"])) if r.get("fixed_file") else None
        attach_cpu(out_dir, r)

    systems = [s for s in ORDER if any(r["system"] == s for r in runs)]
    systems += sorted({r["system"] for r in runs} - set(systems))
    medians = {}
    for s in systems:
        rs = [r for r in runs if r["system"] == s]
        fixed = [r["fixed"] for r in rs if r["fixed"]]
        lat_src = fixed if fixed else [r["peak"] for r in rs]
        medians[s] = {
            "label": SYSTEM_LABELS.get(s, s).format(workers=meta.get("nproc", "nproc")),
            "rounds": len(rs),
            "connections": meta.get("connections"),
            "rps": median([r["peak"]["rps"] for r in rs]),
            "rps_runs": [round(r["peak"]["rps"], 1) for r in rs],
            "peak_p99_ms": median([r["peak"]["p99_ms"] for r in rs]),
            "latency_at": "fixed rate" if fixed else "closed loop (no fixed-rate run)",
            "fixed_target_rps": median([r.get("fixed_target_rps") for r in rs]),
            "fixed_rps": median([f["rps"] for f in fixed]) if fixed else None,
            "p50_ms": median([x["p50_ms"] for x in lat_src]),
            "p99_ms": median([x["p99_ms"] for x in lat_src]),
            "p999_ms": median([x["p999_ms"] for x in lat_src]),
            # errors are summed over every measured run (peak and fixed-rate), not a median
            "errors": sum(
                r["peak"]["errors"] + (r["fixed"]["errors"] if r["fixed"] else 0) for r in rs
            ),
            "non_2xx": sum(
                r["peak"]["non_2xx"] + (r["fixed"]["non_2xx"] if r["fixed"] else 0) for r in rs
            ),
            "rss_mb": median([r.get("rss_kb") / 1024 if r.get("rss_kb") else None for r in rs]),
            "rss_mb_max": max((r.get("rss_kb") or 0) / 1024 for r in rs) or None,
            # max/min of the rounds' req/s: how steady the system is on this machine
            "rps_spread": spread([x["peak"]["rps"] for x in rs]),
            "server_us_per_req": median([r.get("server_us_per_req") for r in rs]),
            "pg_us_per_req": median([r.get("pg_us_per_req") for r in rs]),
            "server_switches_per_req": median([r.get("server_switches_per_req") for r in rs]),
            "pg_switches_per_req": median([r.get("pg_switches_per_req") for r in rs]),
        }
    base_axum = medians.get("axum", {}).get("rps")
    base_fastapi = medians.get("fastapi", {}).get("rps")
    xitca = medians.get("xitca", {})
    for m in medians.values():
        m["vs_axum"] = m["rps"] / base_axum if base_axum and m["rps"] else None
        m["vs_fastapi"] = m["rps"] / base_fastapi if base_fastapi and m["rps"] else None
        for key in ("rps", "server_us_per_req", "pg_us_per_req"):
            a, b = m.get(key), xitca.get(key)
            m[f"{key}_vs_xitca"] = a / b if a and b else None

    sweep = sweep_report(out_dir, systems, medians)
    results = {"meta": meta, "medians": medians, "runs": runs, "sweep": sweep}
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)

    lines = []
    if meta.get("fixed_rate_run", True):
        whose = "for every system" if meta.get("latency_rate") else "of that peak"
        latency_note = (
            f"Latency: p99 of the closed-loop peak run, and p50/p99/p99.9 of a run at a fixed "
            f"rate of {fixed_rate(meta)} {whose} (oha -q, --latency-correction: measured from "
            f"when each request was due, so the load generator's own scheduling delays count too)."
        )
    else:
        latency_note = (
            "Latency: percentiles of the closed-loop peak run (wrk has no fixed-rate mode)."
        )
    rows = meta.get("rows")
    lines.append(
        f"`GET /user/{{id}}`, ids uniform in 1..{rows:,}, "
        if isinstance(rows, int)
        else "`GET /user/{id}`, "
    )
    lines[-1] += (
        f"{meta.get('connections', '?')} keep-alive connections, {meta.get('tool', '?')}; "
        f"medians of {meta.get('rounds', '?')} round(s) of {meta.get('seconds', '?')} s "
        f"(after {meta.get('warmup_seconds', '?')} s warm-up). " + latency_note
    )
    lines.append("")
    if meta.get("machine"):
        lines.append(f"Machine: {meta['machine']}")
        lines.append("")
    at = (
        latency_label(meta)
        if all(m["latency_at"] == "fixed rate" for m in medians.values())
        else "closed loop"
    )
    lines.append(
        f"| system | req/s (median) | vs axum | vs FastAPI | p99 ms at peak "
        f"| p50 ms {at} | p99 ms {at} | p99.9 ms {at} "
        f"| errors / non-2xx | peak RSS MB |"
    )
    lines.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for s in systems:
        m = medians[s]
        lines.append(
            f"| {m['label']} | {fmt(m['rps'], 0)} | {fmt(m['vs_axum'])}× "
            f"| {fmt(m['vs_fastapi'], 1)}× | {fmt(m['peak_p99_ms'])} | {fmt(m['p50_ms'])} "
            f"| {fmt(m['p99_ms'])} | {fmt(m['p999_ms'])} "
            f"| {m['errors']} / {m['non_2xx']} | {fmt(m['rss_mb'], 1)} |"
        )
    lines.append("")
    lines.append(
        "CPU per request during the closed-loop peak runs (from /proc: the server with its "
        "children, and every postgres process), context switches per request, and the spread "
        "of req/s over the rounds (max/min):"
    )
    lines.append("")
    x = "xitca" in medians
    lines.append(
        "| system | server µs/req | PostgreSQL µs/req | server switches/req "
        "| PostgreSQL switches/req | req/s spread"
        + (" | req/s vs xitca | server CPU vs xitca | PostgreSQL CPU vs xitca |" if x else " |")
    )
    lines.append("|---|--:|--:|--:|--:|--:" + ("|--:|--:|--:|" if x else "|"))
    for s in systems:
        m = medians[s]
        row = (
            f"| {m['label']} | {fmt(m['server_us_per_req'], 1)} | {fmt(m['pg_us_per_req'], 1)} "
            f"| {fmt(m['server_switches_per_req'])} | {fmt(m['pg_switches_per_req'])} "
            f"| {fmt(m['rps_spread'])}"
        )
        if x:
            row += (
                f" | {fmt(m['rps_vs_xitca'])} | {fmt(m['server_us_per_req_vs_xitca'])} "
                f"| {fmt(m['pg_us_per_req_vs_xitca'])}"
            )
        lines.append(row + " |")
    lines.append("")
    lines.append(
        "Runs (req/s): "
        + "; ".join(
            f"{s}: {', '.join(str(round(x)) for x in medians[s]['rps_runs'])}" for s in systems
        )
    )
    if sweep:
        lines.append("")
        lines.extend(sweep_lines(sweep, meta))
    table = "\n".join(lines) + "\n"
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(table)
    print(table)
    if chart:
        draw_chart(medians, systems, meta, chart)


def sweep_report(out_dir, systems, medians):
    """The connections sweep: per system and connection count, medians over the rounds."""
    path = os.path.join(out_dir, "sweep.jsonl")
    if not os.path.exists(path):
        return None
    runs = []
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                r["peak"] = load(os.path.join(out_dir, r["peak_file"]))
                attach_cpu(out_dir, r)
                runs.append(r)
    out = {}
    for s in systems:
        # resident memory per connection: the slope from the main run's connections
        base_conns = medians[s].get("connections")
        base_rss = medians[s].get("rss_mb")
        points = {}
        for c in sorted({r["connections"] for r in runs if r["system"] == s}):
            rs = [r for r in runs if r["system"] == s and r["connections"] == c]
            rss = median([r["rss_kb"] / 1024 if r.get("rss_kb") else None for r in rs])
            points[str(c)] = {
                "rounds": len(rs),
                "rps": median([r["peak"]["rps"] for r in rs]),
                "p99_ms": median([r["peak"]["p99_ms"] for r in rs]),
                "rss_mb": rss,
                "server_us_per_req": median([r.get("server_us_per_req") for r in rs]),
                "errors": sum(r["peak"]["errors"] + r["peak"]["non_2xx"] for r in rs),
            }
        if points:
            out[s] = {"base_rss_mb": base_rss, "points": points}
            for c, p in points.items():
                p["kb_per_connection"] = None
                if (
                    base_rss is not None
                    and p["rss_mb"] is not None
                    and base_conns
                    and int(c) > base_conns
                ):
                    p["kb_per_connection"] = (p["rss_mb"] - base_rss) * 1024 / (int(c) - base_conns)
    return out


def sweep_lines(sweep, meta):
    secs = meta.get("sweep_seconds", "?")
    lines = [
        f"Connections sweep: closed loop, {secs} s per point after the warm-up, medians over "
        f"the rounds; RSS is the server's peak resident memory (VmHWM), KB/connection the "
        f"slope from the "
        f"{meta.get('connections', '?')}-connection run.",
        "",
        "| system | connections | req/s | p99 ms | peak RSS MB | KB/connection "
        "| server µs/req | errors |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for s, v in sweep.items():
        for c, p in v["points"].items():
            lines.append(
                f"| {s} | {int(c):,} | {fmt(p['rps'], 0)} | {fmt(p['p99_ms'])} "
                f"| {fmt(p['rss_mb'], 1)} | {fmt(p['kb_per_connection'], 1)} "
                f"| {fmt(p['server_us_per_req'], 1)} | {p['errors']} |"
            )
    return lines


def draw_chart(medians, systems, meta, chart):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart", file=sys.stderr)
        return
    labels = [medians[s]["label"].replace(" (", "\n(").replace(" + ", "\n+ ", 1) for s in systems]
    values = [medians[s]["rps"] or 0 for s in systems]
    colors = {
        "ours": "#2b7bba",
        "ours-1": "#6fa8dc",
        "xitca": "#6aa84f",
        "xitca-epoll": "#93c47d",
        "xitca-plain": "#b6d7a8",
        "axum": "#999999",
        "fastapi": "#e69138",
    }
    with_cpu = any(medians[s].get("server_us_per_req") for s in systems)
    if with_cpu:
        fig, (ax, cax) = plt.subplots(
            1, 2, figsize=(14, 5), dpi=120, gridspec_kw={"width_ratios": [3, 2]}
        )
    else:
        fig, ax = plt.subplots(figsize=(9, 5), dpi=120)
    bars = ax.bar(range(len(systems)), values, color=[colors.get(s, "#777777") for s in systems])
    top = max(values) if values else 1
    for bar, s in zip(bars, systems, strict=True):
        m = medians[s]
        note = (
            f"{m['rps']:,.0f} req/s\np99 {fmt(m['peak_p99_ms'])} ms at peak\n"
            f"p99 {fmt(m['p99_ms'])} ms {latency_label(meta)}"
        )
        ax.text(
            bar.get_x() + bar.get_width() / 2,
            bar.get_height() + top * 0.01,
            note,
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_xticks(range(len(systems)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("requests/s (median)")
    ax.set_ylim(0, top * 1.3)
    ax.set_title(
        f"GET /user/{{id}}, {meta.get('rows', 0):,} rows, {meta.get('connections', '?')} "
        f"connections (median of {meta.get('rounds', '?')} round(s))",
        fontsize=10,
    )
    if meta.get("machine"):
        fig.text(0.01, 0.01, meta["machine"], fontsize=7, color="#555555")
    ax.spines[["top", "right"]].set_visible(False)
    if with_cpu:
        srv = [medians[s].get("server_us_per_req") or 0 for s in systems]
        pg = [medians[s].get("pg_us_per_req") or 0 for s in systems]
        xs = list(range(len(systems)))
        w = 0.38
        # side by side (a log scale would distort stacked bars)
        cax.bar(
            [x - w / 2 for x in xs],
            srv,
            w,
            color=[colors.get(s, "#777777") for s in systems],
            label="server",
        )
        cax.bar([x + w / 2 for x in xs], pg, w, color="#bbbbbb", label="PostgreSQL")
        for i, (a, b) in enumerate(zip(srv, pg, strict=True)):
            cax.text(i - w / 2, a, f"{a:.1f}", ha="center", va="bottom", fontsize=7)
            cax.text(i + w / 2, b, f"{b:.1f}", ha="center", va="bottom", fontsize=7)
        cax.set_xticks(xs)
        cax.set_xticklabels([s for s in systems], fontsize=8)
        cax.set_ylabel("CPU µs per request (median; log scale)")
        cax.set_yscale("log")
        cax.set_ylim(bottom=1)
        cax.legend(fontsize=8)
        cax.set_title("CPU per request (lower is better)", fontsize=10)
        cax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    os.makedirs(os.path.dirname(chart) or ".", exist_ok=True)
    fig.savefig(chart)
    print(f"chart: {chart}", file=sys.stderr)


def http_report(out_dir):
    runs = []
    with open(os.path.join(out_dir, "http-runs.jsonl")) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                r.update(load(os.path.join(out_dir, r["file"])))
                runs.append(r)
    meta = {}
    meta_path = os.path.join(out_dir, "http-meta.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
    modes = [m for m in ("keepalive", "pipeline16") if any(r["mode"] == m for r in runs)]
    servers = ["hello_core", "hello_minihttp"]
    med = {}
    for mode in modes:
        for srv in servers:
            rs = [r for r in runs if r["mode"] == mode and r["server"] == srv]
            med[(mode, srv)] = {
                "rps": median([r["rps"] for r in rs]),
                "p99_ms": median([r["p99_ms"] for r in rs]),
                "errors": sum(r["errors"] + r["non_2xx"] for r in rs),
                "runs": [round(r["rps"]) for r in rs],
            }
    lines = [
        "HTTP core alone: `GET /json` answering `{\"message\":\"Hello, World!\"}`, wrk, "
        f"{meta.get('connections', '?')} connections, {meta.get('threads', '?')} threads, "
        f"medians of {meta.get('rounds', '?')} round(s) of {meta.get('seconds', '?')} s, "
        "servers alternating.",
        "",
    ]
    if meta.get("machine"):
        lines += [f"Machine: {meta['machine']}", ""]
    lines.append(
        "| mode | ours req/s | may_minihttp req/s | ours / may_minihttp | ours p99 ms "
        "| may_minihttp p99 ms | errors (ours / minihttp) |"
    )
    lines.append("|---|--:|--:|--:|--:|--:|--:|")
    summary = {}
    for mode in modes:
        a, b = med[(mode, "hello_core")], med[(mode, "hello_minihttp")]
        ratio = a["rps"] / b["rps"] if a["rps"] and b["rps"] else None
        summary[mode] = {"ours": a, "may_minihttp": b, "ratio": ratio}
        label = "keep-alive" if mode == "keepalive" else "pipelined, depth 16"
        lines.append(
            f"| {label} | {fmt(a['rps'], 0)} | {fmt(b['rps'], 0)} | {fmt(ratio, 3)} "
            f"| {fmt(a['p99_ms'])} | {fmt(b['p99_ms'])} | {a['errors']} / {b['errors']} |"
        )
    lines.append("")
    lines.append(
        "Runs (req/s): "
        + "; ".join(
            f"{mode} {srv}: {', '.join(str(x) for x in med[(mode, srv)]['runs'])}"
            for mode in modes
            for srv in servers
        )
    )
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out_dir, "http-core.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out_dir, "http-core.json"), "w") as f:
        json.dump({"meta": meta, "summary": summary, "runs": runs}, f, indent=2)
    print(text)


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd = argv[1]
    if cmd == "id-regex":
        print(id_regex(int(argv[2])))
    elif cmd == "check-ids":
        res = check_ids(argv[2], int(argv[3]))
        print(json.dumps(res))
        return 0 if res["ok"] else 1
    elif cmd == "proc-cpu":
        print(json.dumps(proc_cpu(int(argv[2]))))
    elif cmd == "peak-rps":
        print(f"{load(argv[2])['rps']:.1f}")
    elif cmd == "report":
        report(argv[2], argv[3] if len(argv) > 3 else "docs/benchmark.png")
    elif cmd == "http-report":
        http_report(argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
