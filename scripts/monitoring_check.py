#!/usr/bin/env python3
"""Checks for scripts/test-monitoring.sh (python3 standard library only).

Subcommands (each prints PASS/FAIL/NOTE lines and exits 1 when any check failed):

  wait-target  --prom URL --job JOB --timeout S
      until Prometheus reports the job's target up (GET /api/v1/targets).
  wait-scrape  --prom URL --job JOB --after UNIX_TS --timeout S
      until the job has a successful scrape after UNIX_TS (timestamp(up{job=...} == 1)).
  spec         --spec docs/metrics.md --metrics FILE [--content-type CT]
               [--classic FILE [--classic-content-type CT]]
      every metric of the spec's tables exists in the /metrics text (OpenMetrics, and the
      classic format) with its type, its labels and its buckets; the Content-Types.
  dashboard    --dashboard JSON --metrics FILE [--spec docs/metrics.md] [--prom URL]
      every metric name and label the dashboard's queries (and legends, and variables) use
      exists in the /metrics text (labels of a family with no sample yet: the spec's);
      with --prom, every query evaluates on Prometheus.
  compare      --prom URL --wrk FILE --metrics FILE --route R --start TS --before N
      Prometheus' view of the load agrees with wrk's (request count, rate, p99, mean).
  value        --prom URL --expr PROMQL [--default X]
      prints an instant query's single value.
  classic      --metrics FILE
      prints the OpenMetrics text converted to the classic text format (for a diagnosis).
"""

import argparse
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

FAILED = []


def report(ok, what, detail=""):
    line = f"{'PASS' if ok else 'FAIL'}: {what}"
    if detail:
        line += f" ({detail})"
    print(line, flush=True)
    if not ok:
        FAILED.append(what)
    return ok


def note(what):
    print(f"NOTE: {what}", flush=True)


# --------------------------------------------------------------------------- Prometheus API

def prom_get(prom, path, params=None, timeout=10):
    url = prom.rstrip("/") + path
    if params:
        url += "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:  # 400/422 carry the error in the JSON body
        try:
            return json.load(e)
        except ValueError:
            return {"status": "error", "error": f"HTTP {e.code}"}


def query(prom, expr, at=None):
    """An instant query: the list of (labels, float) of its vector (or scalar) result."""
    params = {"query": expr}
    if at is not None:
        params["time"] = f"{at:.3f}"
    body = prom_get(prom, "/api/v1/query", params)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body.get('errorType', '')} {body.get('error', body)}")
    data = body["data"]
    if data["resultType"] == "scalar":
        return [({}, float(data["result"][1]))]
    if data["resultType"] != "vector":
        raise RuntimeError(f"{expr}: result type {data['resultType']}")
    return [(s["metric"], float(s["value"][1])) for s in data["result"]]


def query_one(prom, expr, at=None, default=None):
    res = query(prom, expr, at)
    if not res:
        if default is None:
            raise RuntimeError(f"{expr}: empty result")
        return default
    if len(res) != 1:
        raise RuntimeError(f"{expr}: {len(res)} series, expected one")
    return res[0][1]


def cmd_wait_target(a):
    deadline = time.monotonic() + a.timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            body = prom_get(a.prom, "/api/v1/targets", {"state": "active"}, timeout=2)
            targets = [t for t in body["data"]["activeTargets"]
                       if t["labels"].get("job") == a.job]
            if targets and all(t["health"] == "up" for t in targets):
                return report(True, f"prometheus: target of job {a.job} is up",
                              ", ".join(t["scrapeUrl"] for t in targets))
            if targets:
                last = "; ".join(f"{t['scrapeUrl']}: {t['health']} {t['lastError']}"
                                 for t in targets)
            else:
                last = f"no target of job {a.job}"
        except (OSError, ValueError, KeyError) as e:
            last = str(e)
        time.sleep(0.25)  # poll interval
    return report(False, f"prometheus: target of job {a.job} is up",
                  f"not within {a.timeout}s: {last}")


def cmd_wait_scrape(a):
    deadline = time.monotonic() + a.timeout
    seen = None
    while time.monotonic() < deadline:
        try:
            # A successful scrape: up is 1 (a failed one records up 0, at its time too).
            seen = query_one(a.prom, f'max(timestamp(up{{job="{a.job}"}} == 1))', default=0.0)
            if seen > a.after:
                return True
        except (OSError, RuntimeError, ValueError) as e:
            seen = str(e)
        time.sleep(0.25)  # poll interval
    return report(False, f"prometheus: a scrape after {a.after:.3f}",
                  f"not within {a.timeout}s; last scrape: {seen}")


# --------------------------------------------------------------------------- /metrics text

LABEL_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')
# Label values may hold braces (route="/user/{id}"): the label set is quoted strings and the
# characters between them.
SAMPLE_RE = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?\s+(\S+)')
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "gauge": ("",),
    "unknown": ("",),
    "untyped": ("",),
}


class Exposition:
    """The families (TYPE lines) and samples of a /metrics text (OpenMetrics or classic)."""

    def __init__(self, text):
        self.types = {}        # family -> type
        self.samples = {}      # sample name -> list of label dicts
        self.values = {}       # sample name -> list of (labels, value)
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                parts = line.split()
                if len(parts) >= 4:
                    self.types[parts[2]] = parts[3]
                continue
            if not line or line.startswith("#"):
                continue
            m = SAMPLE_RE.match(line)
            if not m:
                continue
            labels = dict(LABEL_RE.findall(m.group(2) or ""))
            self.samples.setdefault(m.group(1), []).append(labels)
            try:
                value = float(m.group(3))
            except ValueError:
                value = math.nan
            self.values.setdefault(m.group(1), []).append((labels, value))

    def family_of(self, name):
        """(family, type) a sample name belongs to, or (None, None)."""
        best = (None, None)
        for fam, typ in self.types.items():
            for suf in SUFFIXES.get(typ, ("",)):
                # A classic-format counter's family name already ends in _total.
                if name == fam + suf or (typ == "counter" and name == fam
                                         and fam.endswith("_total")):
                    if best[0] is None or len(fam) > len(best[0]):
                        best = (fam, typ)
        return best

    def declared(self, name):
        return name in self.samples or self.family_of(name)[0] is not None

    def labels_of(self, name):
        """The label names seen on samples called `name` (None: no sample to tell)."""
        if name not in self.samples:
            return None
        out = set()
        for labels in self.samples[name]:
            out.update(labels)
        return out

    def family_labels(self, fam, typ):
        """Label names over every sample of a family, le excluded; None when it has none."""
        out, any_sample = set(), False
        names = [fam + suf for suf in SUFFIXES.get(typ, ("",))]
        if typ == "counter" and fam.endswith("_total"):
            names.append(fam)  # the classic format names a counter family with its _total
        for name in names:
            for labels in self.samples.get(name, []):
                any_sample = True
                out.update(labels)
        out.discard("le")
        return out if any_sample else None

    def buckets(self, name, match=None):
        """Sorted distinct finite `le` bounds of `name`_bucket samples (optionally filtered)."""
        out = set()
        for labels in self.samples.get(name + "_bucket", []):
            if match and any(labels.get(k) != v for k, v in match.items()):
                continue
            le = labels.get("le")
            if le is not None and le not in ("+Inf", "Inf"):
                out.add(float(le))
        return sorted(out)


def load_exposition(path):
    with open(path, encoding="utf-8") as f:
        return Exposition(f.read())


# --------------------------------------------------------------------------- spec check

SPEC_ROW = re.compile(r"^\|\s*`([a-z_]+)`\s*\|\s*([a-z]+)\s*\|([^|]*)\|")
DURATION_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1, 2.5, 5, 10]
BATCH_BUCKETS = [float(2 ** i) for i in range(11)]  # 1, 2, 4, ..., 1024


def spec_family(name, typ):
    """The OpenMetrics family name a spec row's metric name implies."""
    if typ == "counter" and name.endswith("_total"):
        return name[: -len("_total")]
    return name


def spec_rows(path):
    """(name, type, labels) of every row of the spec's metric tables."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = SPEC_ROW.match(line)
            if m:
                labels = set(re.findall(r"`([a-z_]+)`", m.group(3)))
                rows.append((m.group(1), m.group(2), labels))
    return rows


def check_spec_rows(expo, rows, fmt, verbose):
    """The spec's metrics in one exposition: PASS/FAIL lines when verbose, else only FAILs
    (and one PASS line for the lot)."""
    bad_before = len(FAILED)
    for name, typ, labels in rows:
        fam = spec_family(name, typ)
        got = expo.types.get(fam)
        if got is None and typ == "counter":
            got = expo.types.get(name)  # the classic format: the family named with _total
            fam = name if got else fam
        if got is None:
            report(False, f"spec ({fmt}): {name} ({typ}) is exposed",
                   f"no '# TYPE {fam} ...' line in /metrics")
            continue
        if got != typ:
            report(False, f"spec ({fmt}): {name} is a {typ}", f"/metrics declares {fam} as {got}")
            continue
        have = expo.family_labels(fam, typ)
        if have is None:
            if verbose:
                note(f"spec ({fmt}): {name} ({typ}) is declared but has no sample yet: "
                     f"labels {sorted(labels) or '(none)'} unverified")
            continue
        if have != labels:
            report(False, f"spec ({fmt}): {name} has labels {sorted(labels)}",
                   f"/metrics has {sorted(have)}")
            continue
        detail = f"labels {sorted(labels)}" if labels else "no labels"
        if typ == "histogram":
            want = BATCH_BUCKETS if name == "records_service_pg_batch_queries" else (
                DURATION_BUCKETS if name.endswith("_seconds") else None)
            if want is not None:
                got_b = expo.buckets(name)
                if got_b != [float(x) for x in want]:
                    report(False, f"spec ({fmt}): {name} buckets",
                           f"spec {want}, /metrics {got_b}")
                    continue
                detail += f", buckets {got_b[0]:g}..{got_b[-1]:g} +Inf"
        if verbose:
            report(True, f"spec ({fmt}): {name} {typ}", detail)
    if not verbose and len(FAILED) == bad_before:
        report(True, f"spec ({fmt}): all {len(rows)} metrics declared with their types, "
                     "labels and buckets")


def cmd_spec(a):
    """docs/metrics.md against /metrics as Prometheus gets it (OpenMetrics, asked for by its
    Accept header) and, with --classic, as curl gets it (no Accept: the classic 0.0.4 text)."""
    rows = spec_rows(a.spec)
    report(len(rows) >= 20, f"spec: {len(rows)} metrics read from {a.spec}")
    with open(a.metrics, encoding="utf-8") as f:
        om_text = f.read()
    om = Exposition(om_text)
    if a.content_type is not None:
        ct = a.content_type.strip()
        report(ct.startswith("application/openmetrics-text") and "version=1.0.0" in ct,
               "spec: /metrics asked for OpenMetrics answers "
               "application/openmetrics-text; version=1.0.0", f"Content-Type {ct!r}")
    report(om_text.rstrip("\n").endswith("\n# EOF") or om_text.strip() == "# EOF",
           "spec: the OpenMetrics text ends with # EOF")
    check_spec_rows(om, rows, "OpenMetrics", verbose=True)
    if a.classic:
        with open(a.classic, encoding="utf-8") as f:
            classic_text = f.read()
        classic = Exposition(classic_text)
        if a.classic_content_type is not None:
            ct = a.classic_content_type.strip()
            report(ct.startswith("text/plain") and "version=0.0.4" in ct,
                   "spec: /metrics without Accept answers text/plain; version=0.0.4",
                   f"Content-Type {ct!r}")
        report("# EOF" not in classic_text.splitlines() and "# UNIT" not in classic_text,
               "spec: the classic text has no # EOF and no # UNIT")
        check_spec_rows(classic, rows, "classic", verbose=False)
        # The same series in both formats (values move between the two fetches).
        def series(e):
            return {(n, tuple(sorted(lab.items()))) for n, labs in e.samples.items()
                    if not n.endswith("_created") for lab in labs}
        only_om, only_classic = series(om) - series(classic), series(classic) - series(om)
        # A series may appear between the fetches (a first /metrics answer, say): name them.
        report(not only_om and not only_classic,
               "spec: both formats carry the same series",
               f"{len(series(om))} series" if not (only_om or only_classic) else
               f"only in OpenMetrics: {sorted(only_om)[:5]}, only in classic: "
               f"{sorted(only_classic)[:5]}")
    return not FAILED


# --------------------------------------------------------------------------- dashboard check

NAME_RE = re.compile(r"(?<![A-Za-z0-9_:])((?:records_service|process)_[a-z0-9_]+)")
SELECTOR_RE = re.compile(
    r"(?<![A-Za-z0-9_:])((?:records_service|process)_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)")
GROUPING_RE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
LEGEND_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
LABEL_VALUES_RE = re.compile(
    r"label_values\(\s*(?:([A-Za-z_:][A-Za-z0-9_:]*)\s*(?:\{[^}]*\})?\s*,)?"
    r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)")
# Labels Prometheus attaches to every scraped series (the target's), not in /metrics.
TARGET_LABELS = {"job", "instance"}
STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')


def dashboard_queries(dash):
    """(where, expr, legend) for every panel target (rows' nested panels included)."""
    out = []

    def walk(panels):
        for p in panels or []:
            for t in p.get("targets", []) or []:
                if t.get("expr"):
                    out.append((f"panel {p.get('title')!r} {t.get('refId', '')}",
                                t["expr"], t.get("legendFormat", "")))
            walk(p.get("panels"))

    walk(dash.get("panels"))
    return out


def grafana_to_promql(expr):
    """Grafana's variables replaced by values Prometheus accepts (1 s scrapes)."""
    expr = re.sub(r"\$__rate_interval|\$\{__rate_interval\}|\$__interval|\$\{__interval\}",
                  "10s", expr)
    expr = re.sub(r"\$__range|\$\{__range\}", "60s", expr)
    return re.sub(r"\$\{[A-Za-z0-9_]+(?::[a-z]+)?\}|\$[A-Za-z_][A-Za-z0-9_]*", ".*", expr)


def check_name(expo, name, where):
    if expo.declared(name):
        return True
    hint = ""
    for typ_fam, typ in expo.types.items():
        if name.startswith(typ_fam) and typ == "histogram":
            hint = f"; {typ_fam} is a histogram: use _bucket, _sum or _count"
    return report(False, f"dashboard: {where}: metric {name} exists in /metrics",
                  f"not exposed{hint}")


def cmd_dashboard(a):
    with open(a.dashboard, encoding="utf-8") as f:
        dash = json.load(f)
    expo = load_exposition(a.metrics)
    # A labelled family with no child yet (no 503 so far, say) has no sample that shows its
    # labels: for those, and only those, the spec's labels stand in (a NOTE says so).
    spec = {}
    if a.spec:
        for name, typ, labels in spec_rows(a.spec):
            for suf in SUFFIXES.get(typ, ("",)):
                fam = spec_family(name, typ)
                spec[fam + suf] = labels | ({"le"} if suf == "_bucket" else set())
    noted = set()

    def labels_of(name):
        have = expo.labels_of(name)
        if have is None and name in spec and expo.declared(name):
            if name not in noted:
                noted.add(name)
                note(f"dashboard: {name} is declared but has no sample yet: its labels "
                     f"{sorted(spec[name])} are the spec's")
            return spec[name]
        return have

    queries = dashboard_queries(dash)
    report(len(queries) > 0, f"dashboard: {len(queries)} queries in {a.dashboard}")

    # Every panel and target on the provisioned datasource.
    def walk_ds(panels):
        for p in panels or []:
            for obj in [p] + list(p.get("targets", []) or []):
                ds = obj.get("datasource")
                if ds is not None and p.get("type") != "row":
                    if not (isinstance(ds, dict) and ds.get("uid") == "prometheus"):
                        report(False, f"dashboard: panel {p.get('title')!r} datasource uid "
                                      f"is prometheus", f"got {ds!r}")
            walk_ds(p.get("panels"))

    walk_ds(dash.get("panels"))

    bad_before = len(FAILED)
    names_used, labels_checked = set(), 0
    for where, expr, legend in queries:
        bare = STRING_RE.sub('""', expr)
        names = NAME_RE.findall(bare)
        if not names:
            report(False, f"dashboard: {where}: uses a records_service_/process_ metric", expr)
            continue
        ok = all([check_name(expo, n, where) for n in names])
        names_used.update(names)
        # Label matchers, per selector.
        for name, body in SELECTOR_RE.findall(bare):
            have = labels_of(name)
            for label, _op in MATCHER_RE.findall(body):
                if label in TARGET_LABELS:
                    continue
                labels_checked += 1
                if have is None:
                    ok = report(False, f"dashboard: {where}: label {label} of {name}",
                                "no sample of it in /metrics to verify the label") and ok
                elif label not in have:
                    ok = report(False, f"dashboard: {where}: label {label} of {name}",
                                f"{name} has {sorted(have)}") and ok
        # by/without/on/ignoring labels and legend {{labels}}: on one of the query's metrics.
        union = set(TARGET_LABELS)
        unknown = False
        for n in names:
            have = labels_of(n)
            if have is None:
                unknown = True
            else:
                union |= have
        grouping = [lab.strip() for _kw, body in GROUPING_RE.findall(bare)
                    for lab in body.split(",") if lab.strip()]
        for label in dict.fromkeys(grouping + LEGEND_RE.findall(legend)):
            if label in TARGET_LABELS:
                continue
            labels_checked += 1
            if label not in union:
                ok = report(False, f"dashboard: {where}: label {label} exists",
                            f"not on {sorted(set(names))}" +
                            ("; some have no sample to tell" if unknown else "")) and ok
        if "histogram_quantile" in bare and "le" not in grouping:
            ok = report(False, f"dashboard: {where}: histogram_quantile keeps le", expr) and ok
        if a.prom:
            promql = grafana_to_promql(expr)
            try:
                res = query(a.prom, promql)
                if not res:
                    note(f"dashboard: {where}: evaluates to no series now: {promql}")
            except (RuntimeError, OSError) as e:
                ok = report(False, f"dashboard: {where}: evaluates on Prometheus", str(e)) and ok
    # Template variables: label_values(metric, label).
    for var in (dash.get("templating") or {}).get("list", []):
        q = var.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        for metric, label in LABEL_VALUES_RE.findall(q):
            where = f"variable {var.get('name')!r}"
            if metric:
                check_name(expo, metric, where)
                names_used.add(metric)
            labels_checked += 1
            if label not in TARGET_LABELS:
                have = labels_of(metric) if metric else None
                if have is None or label not in have:
                    report(False, f"dashboard: {where}: label {label} exists on {metric}")
    if len(FAILED) == bad_before:
        report(True, f"dashboard: every metric ({len(names_used)}) and label "
                     f"({labels_checked} uses) of its queries exists in /metrics"
               + ("; every query evaluates on Prometheus" if a.prom else ""))
    return not FAILED


# --------------------------------------------------------------------------- wrk vs Prometheus

UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def wrk_seconds(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(path):
    """wrk --latency's totals: requests, duration (s), req/s, mean and p50/p99 latency (s)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out = {}
    m = re.search(r"^\s*(\d+) requests in ([0-9.]+\w+),", text, re.M)
    out["requests"] = int(m.group(1))
    out["duration"] = wrk_seconds(m.group(2))
    out["rps"] = float(re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M).group(1))
    out["mean"] = wrk_seconds(re.search(r"^\s*Latency\s+(\S+)", text, re.M).group(1))
    for q in ("50", "99"):
        out["p" + q] = wrk_seconds(re.search(rf"^\s*{q}%\s+(\S+)", text, re.M).group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    out["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["socket_errors"] = sum(map(int, m.groups())) if m else 0
    return out


def cmd_compare(a):
    w = parse_wrk(a.wrk)
    expo = load_exposition(a.metrics)
    route = a.route
    sel = f'route="{route}"'
    # Every query is evaluated at the last successful scrape (one after the load: the caller
    # waited for it), over a window reaching back 2 s before the load began: increase() and
    # rate() see the whole load, and no extrapolation past the last sample happens at the
    # window's end. Prometheus then extrapolates only at its start, by at most half a scrape
    # interval (the series appears at the first scrape after the load began, <= 1 s in): the
    # increase is off by about one scrape interval's worth of requests at most, 5% of a 20 s
    # load at 1 s scrapes.
    at = query_one(a.prom, f'max(timestamp(up{{job="{a.job}"}} == 1))')
    window = int(math.ceil(at - a.start)) + 2
    print(f"wrk: {w['requests']} requests in {w['duration']:.2f}s = {w['rps']:.1f} req/s; "
          f"latency mean {w['mean'] * 1e3:.3f} ms, p50 {w['p50'] * 1e3:.3f} ms, "
          f"p99 {w['p99'] * 1e3:.3f} ms; window {window}s", flush=True)
    report(w["requests"] > 0, "wrk: made requests", f"{w['requests']}")
    report(w["non2xx"] == 0 and w["socket_errors"] == 0, "wrk: every response 2xx, no socket error",
           f"non-2xx {w['non2xx']}, socket errors {w['socket_errors']}")

    # 1. Request count. The counter's value after the load minus before it (exact, no
    # extrapolation) against wrk's total. The server counts the few requests that were
    # answered but not yet read by wrk when its clock ran out (at most one per connection),
    # and wrk counts only completed ones: the two agree to a handful; 10% is the contract.
    after = query_one(a.prom, f"sum(records_service_http_requests_total{{{sel}}})",
                      at=at, default=0.0)
    counted = after - a.before
    err = abs(counted - w["requests"]) / max(w["requests"], 1)
    report(err <= 0.10, "count: Prometheus' request count increase matches wrk's within 10%",
           f"prometheus {counted:.0f}, wrk {w['requests']}, {err * 100:.2f}% apart")

    # 2. Request rate: increase() over the window (with Prometheus' extrapolation at its start,
    # <= ~5% at 20 s, see above) over wrk's duration, against wrk's req/s, within 10%.
    inc = query_one(a.prom, f"sum(increase(records_service_http_requests_total{{{sel}}}"
                            f"[{window}s]))", at=at, default=0.0)
    rate = inc / w["duration"]
    err = abs(rate - w["rps"]) / max(w["rps"], 1e-9)
    report(err <= 0.10, "rate: Prometheus' request rate over the load matches wrk's within 10%",
           f"increase {inc:.0f} / {w['duration']:.2f}s = {rate:.1f} req/s, wrk {w['rps']:.1f} "
           f"req/s, {err * 100:.2f}% apart")

    # 3. p99. Per request, the server's time (parsed request -> answer written) lies inside
    # wrk's (request write begun -> response read): server <= client for every request, so
    # the server's distribution is dominated by the client's and its true p99 is <= wrk's p99.
    # histogram_quantile only knows buckets: it interpolates linearly inside the bucket that
    # holds the quantile, so its estimate can exceed the true value by up to that bucket's
    # width; it can thus be at most the upper bound of the bucket holding wrk's p99, i.e.
    # wrk_p99 + width of that bucket. wrk's percentiles are themselves approximate (HdrHistogram,
    # printed with 2 decimals) and the window's edges are fuzzy (1 s scrapes): a factor 1.5 on
    # wrk's p99 absorbs that. Bound: server_p99 <= 1.5 * wrk_p99 + width(bucket of wrk_p99).
    # No sound lower bound exists beyond > 0: the server's share of a request's time can be
    # small (wrk's own scheduling, the kernel's socket queues on a loaded machine).
    p99 = query_one(a.prom, f"histogram_quantile(0.99, sum by (le) (rate("
                            f"records_service_http_request_duration_seconds_bucket{{{sel}}}"
                            f"[{window}s])))", at=at, default=math.nan)
    bounds = expo.buckets("records_service_http_request_duration_seconds", {"route": route})
    lower = 0.0
    width = math.inf  # beyond the largest finite bound (the +Inf bucket): no bound
    for b in bounds:
        if w["p99"] <= b:
            width = b - lower
            break
        lower = b
    limit = 1.5 * w["p99"] + width
    report(bool(p99 > 0) and bool(p99 <= limit),
           "p99: Prometheus' p99 is > 0 and <= 1.5 * wrk's p99 + its bucket's width",
           f"prometheus {p99 * 1e3:.3f} ms, wrk {w['p99'] * 1e3:.3f} ms, "
           f"bucket ({lower * 1e3:g}, {(lower + width) * 1e3:g}] ms, limit {limit * 1e3:.3f} ms")

    # 4. Mean: _sum/_count has no bucket quantisation, and server <= client per request
    # makes the server's mean <= wrk's mean; 10% slack for the window's edges and wrk's
    # rounding of its printed mean.
    mean = query_one(a.prom, f"sum(rate(records_service_http_request_duration_seconds_sum{{{sel}}}"
                             f"[{window}s])) / sum(rate(records_service_http_request_duration_"
                             f"seconds_count{{{sel}}}[{window}s]))", at=at, default=math.nan)
    report(bool(mean > 0) and bool(mean <= 1.1 * w["mean"] + 1e-5),
           "mean: Prometheus' mean latency is > 0 and <= wrk's mean (+10%)",
           f"prometheus {mean * 1e3:.3f} ms, wrk {w['mean'] * 1e3:.3f} ms")

    # 5. The lookups reached PostgreSQL: by_id queries, ok, and batches on the fast pool.
    q = query_one(a.prom, 'sum(increase(records_service_pg_queries_total{statement="by_id",'
                          f'outcome="ok"}}[{window}s]))', at=at, default=0.0)
    report(q >= 0.9 * w["requests"], "pg: by_id queries (outcome ok) cover wrk's requests",
           f"prometheus {q:.0f}, wrk {w['requests']}")
    depth = query_one(a.prom, "sum(rate(records_service_pg_batch_queries_sum"
                              f'{{pool="fast"}}[{window}s])) / sum(rate('
                              f'records_service_pg_batch_queries_count{{pool="fast"}}'
                              f"[{window}s]))", at=at, default=math.nan)
    report(bool(depth >= 1), "pg: mean batch size on the fast pool is >= 1",
           f"{depth:.2f} queries per write")
    return not FAILED


def cmd_classic(a):
    """The OpenMetrics text in the classic (0.0.4) text format, on stdout: a counter family's
    HELP and TYPE under its samples' _total name, no # UNIT, no # EOF. Only to tell whether
    promtool's complaints are about the format or about the metrics themselves."""
    with open(a.metrics, encoding="utf-8") as f:
        lines = f.read().splitlines()
    counters = {ln.split()[2] for ln in lines
                if ln.startswith("# TYPE ") and len(ln.split()) >= 4 and ln.split()[3] == "counter"}
    for line in lines:
        if line.startswith("# UNIT ") or line == "# EOF":
            continue
        m = re.match(r"# (HELP|TYPE) (\S+)(.*)", line)
        if m and m.group(2) in counters and not m.group(2).endswith("_total"):
            line = f"# {m.group(1)} {m.group(2)}_total{m.group(3)}"
        print(line)
    return True


def cmd_value(a):
    """Print one instant query's single value (a.default when it has no series)."""
    print(f"{query_one(a.prom, a.expr, default=a.default):.6f}")
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("wait-target")
    p.add_argument("--prom", required=True)
    p.add_argument("--job", required=True)
    p.add_argument("--timeout", type=float, default=30)
    p.set_defaults(fn=cmd_wait_target)
    p = sub.add_parser("wait-scrape")
    p.add_argument("--prom", required=True)
    p.add_argument("--job", required=True)
    p.add_argument("--after", type=float, required=True)
    p.add_argument("--timeout", type=float, default=30)
    p.set_defaults(fn=cmd_wait_scrape)
    p = sub.add_parser("spec")
    p.add_argument("--spec", required=True)
    p.add_argument("--metrics", required=True, help="/metrics fetched asking for OpenMetrics")
    p.add_argument("--content-type", help="its Content-Type")
    p.add_argument("--classic", help="/metrics fetched without an Accept header")
    p.add_argument("--classic-content-type", help="its Content-Type")
    p.set_defaults(fn=cmd_spec)
    p = sub.add_parser("dashboard")
    p.add_argument("--dashboard", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--spec", help="docs/metrics.md: labels of families with no sample yet")
    p.add_argument("--prom")
    p.set_defaults(fn=cmd_dashboard)
    p = sub.add_parser("compare")
    p.add_argument("--prom", required=True)
    p.add_argument("--wrk", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--route", default="/user/{id}")
    p.add_argument("--job", default="records-service")
    p.add_argument("--start", type=float, required=True, help="unix time before the load")
    p.add_argument("--before", type=float, required=True,
                   help="the route's request count (Prometheus) before the load")
    p.set_defaults(fn=cmd_compare)
    p = sub.add_parser("classic")
    p.add_argument("--metrics", required=True)
    p.set_defaults(fn=cmd_classic)
    p = sub.add_parser("value")
    p.add_argument("--prom", required=True)
    p.add_argument("--expr", required=True)
    p.add_argument("--default", type=float, default=0.0)
    p.set_defaults(fn=cmd_value)
    a = ap.parse_args()
    try:
        ok = a.fn(a)
    except (RuntimeError, OSError, ValueError, AttributeError, KeyError) as e:
        report(False, f"{a.cmd}: ran to the end", f"{type(e).__name__}: {e}")
        ok = False
    sys.exit(0 if ok and not FAILED else 1)


if __name__ == "__main__":
    main()
