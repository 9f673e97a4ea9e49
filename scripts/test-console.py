#!/usr/bin/env python3
"""The browser console (static/), end to end in headless Chromium driven by Selenium.

    scripts/localpg.sh start && eval "$(scripts/localpg.sh env)"
    python3 scripts/test-console.py            # or: make test-console

Needs the POSTGRES_DB_* variables exported (a database the service can write to), the binary
at $BIN (default target/release/records-service, built beforehand), and the Debian packages
chromium, chromium-driver and python3-selenium (CHROMIUM and CHROMEDRIVER override their paths).

It seeds the table as `make run` does when it is empty, then starts the service itself on free
ports:
  1. with the database: a lookup by id and an upsert through the forms, checked against direct
     HTTP requests; then load from Python threads while the live panel must show it (the rate,
     p50/p99, the chart); then docs/console.png is saved;
  2. with the database unreachable (nothing listens on its port): the lookup form must show the
     503, and the header "not ready" and the PostgreSQL circuit open;
  3. with METRICS_ADDR set: the public port answers 404 for metrics and the live panel must say
     so instead of breaking;
  4. /docs (Swagger UI) and /redoc (ReDoc): every operation of /openapi.json rendered, and
     Swagger UI's "Try it out" on GET /user/{id} answering the record a direct GET returns;
  5. the bytes a first and a second visit to /docs and to /redoc cost (resource timing): the
     first compressed, the second revalidated or from the cache, so far less;
  6. with AUTH_REQUIRED=writes: Swagger UI's "Try it out" on POST /user answers 401 until a
     token is entered through "Authorize", then 200 (the record is then read back directly).
The browser resolves no host but 127.0.0.1: every page must work offline (no CDN).
Every wait is a bounded poll, never a fixed sleep. Everything started is stopped at the end.
Prints PASS or FAIL; the exit status is 0 only on PASS.
"""

import os
import sys

# `python3` may be a pyenv or venv interpreter without the Debian package's selenium; the
# system one has it.
try:
    import selenium  # noqa: F401
except ImportError:
    SYSTEM_PYTHON = "/usr/bin/python3"
    if (os.path.exists(SYSTEM_PYTHON)
            and os.path.realpath(sys.executable) != os.path.realpath(SYSTEM_PYTHON)
            and not os.environ.get("TEST_CONSOLE_REEXEC")):
        os.environ["TEST_CONSOLE_REEXEC"] = "1"
        os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON, *sys.argv])
    print("test-console: FAIL: selenium is missing "
          "(apt-get install python3-selenium chromium chromium-driver)")
    sys.exit(1)

import base64
import hashlib
import hmac
import http.client
import json
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.abspath(os.environ.get("BIN") or os.path.join(REPO, "target/release/records-service"))
STATIC_DIR = os.path.join(REPO, "static")
SCREENSHOT = os.path.join(REPO, "docs/console.png")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
# As `make run` and the other targets seed: 100,000 rows, only into an empty table (a table
# seeded otherwise is left alone; the test needs ids 1..LOAD_IDS).
SEED_ROWS = 100000
LOAD_IDS = 1000
LOAD_THREADS = 4
LOAD_MIN_REQUESTS = 3000
# The load lasts at least this long, so that the chart (and docs/console.png) shows a plateau of
# several one-second points rather than a single spike.
LOAD_MIN_SECONDS = 5


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


def log(message):
    print(f"test-console: {message}", flush=True)


def free_port():
    # Bound and closed again: nothing listens on it afterwards (what the unreachable-database
    # instance needs), and the kernel will not hand it out again right away.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_request(port, method, path, body=None, timeout=10):
    """One request on a fresh connection: (status, headers, body text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Accept": "application/json"}
        if body is not None:
            body = json.dumps(body)
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=headers)
        res = conn.getresponse()
        return res.status, res, res.read().decode("utf-8", "replace")
    finally:
        conn.close()


def poll(what, predicate, timeout, interval=0.1):
    """Calls `predicate` until it returns something truthy (returned), or fails after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except (OSError, http.client.HTTPException) as e:
            last_error = e
        if time.monotonic() >= deadline:
            suffix = f" (last error: {last_error})" if last_error else ""
            raise Failure(f"timed out after {timeout} s waiting for {what}{suffix}")
        time.sleep(interval)


def service_env(**overrides):
    """The environment for a service: the caller's, without what would redirect it elsewhere."""
    env = dict(os.environ)
    # DATABASE_URL would conflict with the POSTGRES_DB_* variables (both set stops the process),
    # and an inherited METRICS_ADDR would move metrics off the port under test.
    for name in ("DATABASE_URL", "METRICS_ADDR", "SERVER_HOST", "SERVER_PORT", "STATIC_DIR"):
        env.pop(name, None)
    env.update({"SERVER_HOST": "127.0.0.1", "WORKERS": "2", "STATIC_DIR": STATIC_DIR})
    env.update({k: str(v) for k, v in overrides.items()})
    return env


class Services:
    """The service processes this test started, each logging to a file in `workdir`."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []

    def start(self, name, port, **overrides):
        log_path = os.path.join(self.workdir, f"{name}.log")
        out = open(log_path, "wb")
        # The working directory is an empty temporary one, so no .env file is read: the test
        # runs with exactly the environment it sets.
        env = service_env(SERVER_PORT=port, **overrides)
        proc = subprocess.Popen([BIN, "serve"], cwd=self.workdir, stdout=out,
                                stderr=subprocess.STDOUT, env=env)
        out.close()
        self.procs.append((name, proc, log_path))
        log(f"started {name} (pid {proc.pid}) on 127.0.0.1:{port}")
        return proc

    def alive(self, proc):
        if proc.poll() is not None:
            raise Failure(f"the service (pid {proc.pid}) exited with status {proc.returncode}")
        return True

    def stop_all(self):
        for _name, proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _name, proc, _ in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def print_logs(self, lines=30):
        for name, _, log_path in self.procs:
            try:
                with open(log_path, "rb") as f:
                    tail = f.read().decode("utf-8", "replace").splitlines()[-lines:]
            except OSError:
                continue
            print(f"--- {name} log (last {lines} lines) ---")
            for line in tail:
                print(line)


def wait_listening(services, proc, port, path, want_status=None, timeout=30):
    """Polls GET `path` until it answers (with `want_status`, when given)."""
    def answered():
        services.alive(proc)
        status, _, _ = http_request(port, "GET", path, timeout=2)
        return status if want_status is None or status == want_status else None
    return poll(f"GET {path} on port {port}", answered, timeout)


def start_browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Every host but the service's own address resolves to nothing: the pages must work
    # offline (no CDN, no web font, no validator badge), and a request elsewhere would fail.
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000", "--disable-extensions", "--no-first-run",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    # The viewport itself 1280x1000 (the window size includes what headless Chromium reserves
    # for its absent frame), for a screenshot of a known size.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": False})
    return driver


def wait_for(driver, what, condition, timeout=20):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
    except TimeoutException:
        raise Failure(f"timed out after {timeout} s waiting for {what}") from None


def text(driver, selector):
    return driver.find_element(By.CSS_SELECTOR, selector).text


def attr(driver, selector, name):
    return driver.find_element(By.CSS_SELECTOR, selector).get_attribute(name)


def figure(driver, selector):
    """A live figure's number (its data-value), or None while unknown."""
    value = attr(driver, selector, "data-value")
    return float(value) if value else None


def submit(driver, form, **fields):
    for name, value in fields.items():
        el = driver.find_element(By.CSS_SELECTOR, f"{form} [name={name}]")
        el.clear()
        el.send_keys(str(value))
    driver.find_element(By.CSS_SELECTOR, f"{form} button[type=submit]").click()


def wait_response(driver, request_line, timeout=15):
    """Waits until the Response panel shows the answer to `request_line`; returns its status."""
    def shown(d):
        if text(d, "#request") != request_line:
            return None
        status = text(d, "#status")
        return status if status and status != "…" else None
    return wait_for(driver, f"the answer to {request_line}", shown, timeout)


def check_parser_in_page(driver):
    """metrics.js against a hand-written scrape: escapes, exemplars, the /metrics exclusion, a
    series new between scrapes, a counter reset, and histogram_quantile's interpolation."""
    result = driver.execute_script(r"""
      const M = RecordsMetrics;
      const a = M.snapshot(M.parse([
        '# TYPE records_service_http_requests counter',
        'records_service_http_requests_total{route="/user/{id}",method="GET",status="200"} 100',
        'records_service_http_requests_total{route="/metrics",method="GET",status="200"} 50',
        'records_service_http_request_duration_seconds_bucket{route="/user/{id}",le="0.001"} 40',
        'records_service_http_request_duration_seconds_bucket{route="/user/{id}",le="0.01"} 90',
        'records_service_http_request_duration_seconds_bucket{route="/user/{id}",le="+Inf"} 100',
        'records_service_pg_batch_queries_sum{pool="fast"} 10',
        'records_service_pg_batch_queries_count{pool="fast"} 5',
        'process_start_time_seconds 1000',
        '# EOF'].join('\n')));
      const b = M.snapshot(M.parse([
        'records_service_http_requests_total{route="/user/{id}",method="GET",status="200"} 300',
        'records_service_http_requests_total{route="/metrics",method="GET",status="200"} 9999',
        'records_service_http_requests_total{route="/user",method="POST",status="503"} 100 17e8',
        'records_service_http_request_duration_seconds_bucket{route="/user/{id}",le="0.001"} 140',
        'records_service_http_request_duration_seconds_bucket{route="/user/{id}",le="0.01"} 290',
        'records_service_http_request_duration_seconds_bucket{route="/user/{id}",le="+Inf"} 300'
          + ' # {id="x"} 0.5',
        'records_service_http_request_duration_seconds_bucket{route="/user",le="0.001"} 0',
        'records_service_http_request_duration_seconds_bucket{route="/user",le="0.01"} 0',
        'records_service_http_request_duration_seconds_bucket{route="/user",le="+Inf"} 100',
        'records_service_pg_batch_queries_sum{pool="fast"} 40',
        'records_service_pg_batch_queries_count{pool="fast"} 15',
        'records_service_pg_in_flight_queries{pool="fast",conn="0"} 3',
        'records_service_pg_in_flight_queries{pool="fast",conn="1"} 4',
        'records_service_pg_circuit_open{pool="fast",conn="0"} 1',
        'records_service_pg_circuit_open{pool="fast",conn="1"} 0',
        'process_start_time_seconds 1000'].join('\n')));
      const restarted = M.snapshot(M.parse([
        'records_service_http_requests_total{route="/user/{id}",method="GET",status="200"} 7',
        'process_start_time_seconds 2000'].join('\n')));
      const odd = M.parseLine(
        'x{a="q\\"uo}te,d",b="back\\\\slash",c="new\\nline"} +Inf');
      const iv = M.interval(a, b, 2);
      return {
        rate: iv.rate, p50: iv.p50, p99: iv.p99, batch: iv.batch, inFlight: iv.inFlight,
        open: iv.circuitOpen, total: iv.circuitTotal,
        restartRate: M.interval(b, restarted, 1).rate,
        odd: [odd.labels.a, odd.labels.b, odd.labels.c, odd.value === Infinity],
        q: M.histogramQuantile(0.25,
          [{le: 0.1, count: 10}, {le: 0.2, count: 30}, {le: Infinity, count: 40}]),
        qInf: M.histogramQuantile(0.99,
          [{le: 0.1, count: 10}, {le: 0.2, count: 30}, {le: Infinity, count: 40}]),
        qEmpty: M.histogramQuantile(0.5, [{le: 0.1, count: 0}, {le: Infinity, count: 0}]),
      };
    """)

    def close(a, b):
        return a is not None and abs(a - b) <= 1e-9 * max(1.0, abs(b))

    # (300-100) + 100 new /user requests over 2 s; /metrics' 9949 left out.
    check(close(result["rate"], 150), f"parser: rate {result['rate']}, expected 150")
    # The interval's histogram, both routes summed: 100 <= 1 ms, 100 in (1, 10] ms, 100 above.
    # p50: rank 150, the middle of (1, 10] ms: 5.5 ms. p99: rank 297, in the +Inf bucket: the
    # highest finite bound, 10 ms.
    check(close(result["p50"], 0.0055), f"parser: p50 {result['p50']}, expected 0.0055")
    check(close(result["p99"], 0.01), f"parser: p99 {result['p99']}, expected 0.01")
    check(close(result["batch"], 3), f"parser: batch {result['batch']}, expected 3")
    check(result["inFlight"] == 7, f"parser: in flight {result['inFlight']}, expected 7")
    check(result["open"] == 1 and result["total"] == 2, f"parser: circuit {result}")
    check(close(result["restartRate"], 7),
          f"parser: after a restart {result['restartRate']}, expected 7")
    check(result["odd"] == ['q"uo}te,d', "back\\slash", "new\nline", True],
          f"parser: escaped labels {result['odd']}")
    # rank 10 of 40 is the end of the first bucket [0, 0.1]: 0.1; rank 0.25*40 = 10 -> 0.1.
    check(close(result["q"], 0.1), f"parser: quantile {result['q']}, expected 0.1")
    check(close(result["qInf"], 0.2), f"parser: quantile in +Inf {result['qInf']}, expected 0.2")
    check(result["qEmpty"] is None, f"parser: quantile without observations {result['qEmpty']}")
    log("metrics.js: parser, increases and histogram_quantile agree with hand-computed values")


class Load:
    """Keep-alive GET /user/{id} from threads until stopped; counts answers by status."""

    def __init__(self, port, threads):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.statuses = {}
        self.errors = []
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self):
        rng = random.Random()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        counts = {}
        try:
            while not self.stop.is_set():
                conn.request("GET", f"/user/{rng.randint(1, LOAD_IDS)}")
                res = conn.getresponse()
                res.read()
                counts[res.status] = counts.get(res.status, 0) + 1
                if sum(counts.values()) % 100 == 0:
                    self.merge(counts)
                    counts = {}
        except (OSError, http.client.HTTPException) as e:
            self.errors.append(repr(e))
        finally:
            self.merge(counts)
            conn.close()

    def merge(self, counts):
        with self.lock:
            for k, v in counts.items():
                self.statuses[k] = self.statuses.get(k, 0) + v

    def total(self):
        with self.lock:
            return sum(self.statuses.values())

    def start(self):
        self.started = time.monotonic()
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=20)
        self.elapsed = time.monotonic() - self.started


def test_with_database(services, driver):
    port = free_port()
    proc = services.start("service", port)
    wait_listening(services, proc, port, "/readyz", want_status=200)
    status, res, body = http_request(port, "GET", "/metrics")
    check(status == 200, f"GET /metrics answered {status}: {body[:200]}")
    log(f"GET /metrics: 200, Content-Type {res.getheader('Content-Type')}")

    driver.get(f"http://127.0.0.1:{port}/")
    page_loaded = time.monotonic()
    check_parser_in_page(driver)
    wait_for(driver, "the readiness indicator to say ready",
             lambda d: attr(d, "#ready-state", "data-state") == "ok")
    check(text(driver, "#ready-state") == "ready",
          f"readiness shows {text(driver, '#ready-state')!r}")
    wait_for(driver, "the live panel's first interval",
             lambda d: attr(d, "#live", "data-state") == "ok"
             and figure(d, "#live-rate") is not None)
    wait_for(driver, "the PostgreSQL circuit shown closed",
             lambda d: attr(d, "#circuit-state", "data-state") == "ok")
    log(f"page loaded: {text(driver, '#ready-state')!r}, {text(driver, '#circuit-state')!r}")

    # Lookup by id, compared with the same request made directly.
    status, _, body = http_request(port, "GET", "/user/1")
    check(status == 200, f"GET /user/1 answered {status} ({body}); the seed should have made id 1")
    expected = json.loads(body)
    submit(driver, "#by-id", id=1)
    shown = wait_response(driver, "GET user/1")
    check(shown.startswith("200"), f"lookup by id shows {shown!r}")
    check(json.loads(text(driver, "#body")) == expected,
          f"lookup by id shows {text(driver, '#body')!r}, GET /user/1 gives {expected!r}")
    check(text(driver, "#request-id").startswith("X-Request-Id: "),
          f"the request id is not shown: {text(driver, '#request-id')!r}")
    log(f"lookup by id: {shown}, body matches {expected}")

    # Upsert through the form, verified with a direct lookup.
    email = f"console-{uuid.uuid4().hex[:12]}@example.com"
    note = f"written by test-console.py at {time.strftime('%Y-%m-%d %H:%M:%S')}"
    submit(driver, "#upsert", email=email, text=note)
    shown = wait_response(driver, f"POST user?email={urllib.parse.quote(email, safe='')}")
    check(shown.startswith("200"), f"upsert shows {shown!r}")
    query = urllib.parse.urlencode({"email": email})
    status, _, body = http_request(port, "GET", f"/user?{query}")
    check(status == 200 and json.loads(body) == [note],
          f"after the upsert, GET /user?{query} answered {status} {body}")
    log(f"upsert: {shown}, stored as {body}")

    # Load: the live panel must show it.
    chart_before = attr(driver, "#rate-chart path.series", "d")
    load = Load(port, LOAD_THREADS)
    load.start()
    try:
        wait_for(driver, f"a rate above 20 req/s shown and {LOAD_MIN_REQUESTS} requests sent",
                 lambda d: (figure(d, "#live-rate") or 0) > 20
                 and load.total() >= LOAD_MIN_REQUESTS
                 and time.monotonic() - load.started >= LOAD_MIN_SECONDS,
                 timeout=60)
        wait_for(driver, "p50 and p99 shown",
                 lambda d: figure(d, "#live-p50") is not None
                 and figure(d, "#live-p99") is not None)
        shown = {k: text(driver, k) for k in ("#live-rate", "#live-p50", "#live-p99",
                                               "#live-depth", "#live-batch")}
        p50, p99 = figure(driver, "#live-p50"), figure(driver, "#live-p99")
    finally:
        load.finish()
    check(not load.errors, f"load errors: {load.errors[:3]}")
    check(set(load.statuses) == {200},
          f"load answers by status: {load.statuses} (ids 1..{LOAD_IDS} should all exist)")
    check(p50 <= p99, f"p50 {p50} above p99 {p99}")
    log(f"load: {load.total()} requests in {load.elapsed:.1f} s; the panel showed {shown}")

    # Two more scrapes, so that the last interval holds the end of the load.
    mark = driver.execute_script("return livePoints.length")
    wait_for(driver, "two more scrapes",
             lambda d: d.execute_script("return livePoints.length") >= mark + 2)
    chart_after = attr(driver, "#rate-chart path.series", "d")
    check(chart_after != chart_before and "L" in chart_after,
          f"the rate chart did not change: {chart_before!r} -> {chart_after!r}")
    # The panel's rates integrated over its intervals are the counter's increase: every load
    # request counted once, plus the few others (readyz polls, forms, direct requests).
    integral = driver.execute_script("""
      let sum = 0;
      for (let i = 1; i < livePoints.length; i++) {
        const p = livePoints[i];
        if (!Number.isFinite(p.rate)) return null;
        sum += p.rate * (p.t - livePoints[i - 1].t) / 1000;
      }
      return sum;""")
    check(integral is not None, "the live history has gaps (a scrape failed)")
    others = 20 + 1.0 * (time.monotonic() - page_loaded)
    check(load.total() <= integral + 0.5 <= load.total() + others,
          f"the panel's rates add up to {integral:.1f} requests; {load.total()} were sent")
    log(f"the rate chart changed; its rates add up to {integral:.0f} requests "
        f"({load.total()} sent by the load)")

    os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
    check(driver.save_screenshot(SCREENSHOT), "the screenshot could not be saved")
    log(f"screenshot: {os.path.relpath(SCREENSHOT, REPO)}")

    status, _, body = http_request(port, "DELETE", f"/user?{query}")
    check(status == 200, f"cleanup: DELETE /user?{query} answered {status} {body}")


def test_without_database(services, driver):
    port = free_port()
    # Nothing listens on this port: every connection attempt is refused. A short connect
    # timeout makes the service give up its first attempt, and start serving, sooner.
    proc = services.start("service-no-db", port, POSTGRES_DB_PORT=free_port(),
                          PG_CONNECT_TIMEOUT_MS=1000)
    wait_listening(services, proc, port, "/readyz")
    status, res, body = http_request(port, "GET", "/readyz")
    check(status == 503 and res.getheader("Retry-After"),
          f"GET /readyz without a database answered {status} (Retry-After "
          f"{res.getheader('Retry-After')}): {body}")

    driver.get(f"http://127.0.0.1:{port}/")
    wait_for(driver, "the readiness indicator to say not ready",
             lambda d: attr(d, "#ready-state", "data-state") == "err")
    ready = text(driver, "#ready-state")
    check("503" in ready, f"readiness shows {ready!r}")
    submit(driver, "#by-id", id=1)
    shown = wait_response(driver, "GET user/1")
    check(shown.startswith("503"), f"lookup without a database shows {shown!r}")
    classes = attr(driver, "#status", "class").split()
    check("err" in classes and "unavailable" in classes, f"the 503 has classes {classes}")
    check("detail" in json.loads(text(driver, "#body")),
          f"the 503's body: {text(driver, '#body')!r}")
    wait_for(driver, "the PostgreSQL circuit shown open",
             lambda d: attr(d, "#circuit-state", "data-state") == "err")
    log(f"without a database: {shown!r}, {ready!r}, {text(driver, '#circuit-state')!r}")


def test_metrics_elsewhere(services, driver):
    port, metrics_port = free_port(), free_port()
    proc = services.start("service-metrics-addr", port, METRICS_ADDR=f"127.0.0.1:{metrics_port}")
    wait_listening(services, proc, port, "/", want_status=200)
    wait_listening(services, proc, metrics_port, "/metrics", want_status=200)
    status, _, body = http_request(port, "GET", "/metrics")
    check(status == 404, f"with METRICS_ADDR, the public port answered {status} for /metrics")

    driver.get(f"http://127.0.0.1:{port}/")
    wait_for(driver, "the live panel to say metrics are elsewhere",
             lambda d: attr(d, "#live", "data-state") == "absent")
    note = text(driver, "#live-note")
    check("404" in note and "METRICS_ADDR" in note, f"the live panel says {note!r}")
    check(text(driver, "#live-rate") == "—", f"the rate shows {text(driver, '#live-rate')!r}")
    log(f"with METRICS_ADDR: {note!r}")


def documented_operations(port):
    status, _, body = http_request(port, "GET", "/openapi.json")
    check(status == 200, f"GET /openapi.json answered {status}")
    spec = json.loads(body)
    ops = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "put", "delete", "patch", "head", "options"):
                ops.append((method.upper(), path, op.get("operationId"),
                            (op.get("tags") or ["default"])[0]))
    check(ops, "the document lists no operation")
    return ops


def test_api_docs(services, driver):
    """/docs (Swagger UI) and /redoc (ReDoc), offline: every documented operation is rendered,
    and Swagger UI's "Try it out" on GET /user/{id} returns the record."""
    port = free_port()
    proc = services.start("service-docs", port)
    wait_listening(services, proc, port, "/readyz", want_status=200)
    ops = documented_operations(port)

    driver.get(f"http://127.0.0.1:{port}/docs")
    wait_for(driver, "Swagger UI to render the operations",
             lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= len(ops), timeout=30)
    rendered = set()
    for block in driver.find_elements(By.CSS_SELECTOR, ".opblock"):
        method = block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text.strip()
        path = (block.find_element(By.CSS_SELECTOR, ".opblock-summary-path")
                .get_attribute("data-path"))
        rendered.add((method.upper(), path))
    missing = [(m, p) for m, p, _, _ in ops if (m, p) not in rendered]
    check(not missing, f"Swagger UI does not show {missing} (it shows {sorted(rendered)})")
    log(f"/docs: Swagger UI renders all {len(ops)} documented operations")

    # Try it out: GET /user/{id} with id 1, answered by the service itself.
    _, _, expected = http_request(port, "GET", "/user/1")
    expected = json.loads(expected)
    by_id = next((op, tag) for m, p, op, tag in ops if (m, p) == ("GET", "/user/{id}"))
    block = driver.find_element(By.ID, f"operations-{by_id[1]}-{by_id[0]}")
    block.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait_for(driver, "the operation to open",
             lambda d: block.find_elements(By.CSS_SELECTOR, "button.try-out__btn"))
    block.find_element(By.CSS_SELECTOR, "button.try-out__btn").click()
    field = wait_for(driver, "the id field",
                     lambda d: (block.find_elements(
                         By.CSS_SELECTOR, "tr[data-param-name='id'] input") or [None])[0])
    field.clear()
    field.send_keys("1")
    block.find_element(By.CSS_SELECTOR, "button.execute").click()
    status_cell = wait_for(
        driver, "the live response",
        lambda d: (block.find_elements(
            By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_status")
            or [None])[0])
    check(status_cell.text.strip().startswith("200"), f"Try it out answered {status_cell.text!r}")
    body = block.find_element(
        By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_description pre")
    got = json.loads(body.text)
    check(got == expected, f"Try it out showed {got}, GET /user/1 answers {expected}")
    log(f"/docs: Try it out on GET /user/{{id}} with id 1: 200 {got}")

    driver.get(f"http://127.0.0.1:{port}/redoc")
    wait_for(driver, "ReDoc to render the operations",
             lambda d: len(d.find_elements(By.CSS_SELECTOR, "[data-section-id^='operation/']"))
             >= len(ops), timeout=30)
    sections = {e.get_attribute("data-section-id")
                for e in driver.find_elements(By.CSS_SELECTOR, "[data-section-id^='operation/']")}
    missing = [op for _, _, op, _ in ops if f"operation/{op}" not in sections]
    check(not missing, f"ReDoc does not show {missing}")
    log(f"/redoc: ReDoc renders all {len(ops)} documented operations")


# Resource timing of the page and everything it loaded: transferSize counts the bytes that
# came over the network, headers included (0 when served from the cache, only headers for a
# 304); encodedBodySize the body as sent (compressed); decodedBodySize the body as used.
PAGE_BYTES_JS = """
return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))
  .map(e => ({name: e.name, transfer: e.transferSize, encoded: e.encodedBodySize,
              decoded: e.decodedBodySize}));
"""

# A second visit may fetch at most this share of the first visit's bytes: only the heads of the
# revalidated answers (the pages, docs.js, /openapi.json), the vendored bundles from the cache.
SECOND_VISIT_MAX_SHARE = 0.02


def visit_bytes(driver, url, rendered, what):
    """Loads `url` after a blank page (a new visit, not a reload), waits for `rendered`, and
    returns the resource entries of the page."""
    driver.get("about:blank")
    driver.get(url)
    wait_for(driver, what, rendered, timeout=30)
    return driver.execute_script(PAGE_BYTES_JS)


def test_docs_transfer(services, driver):
    """What the documentation pages cost in bytes, on a fresh origin: a first visit gets the
    compressed variants, a second one revalidates the pages (304) and takes the versioned
    bundles from the cache."""
    port = free_port()
    proc = services.start("service-docs-bytes", port)
    wait_listening(services, proc, port, "/readyz", want_status=200)
    ops = documented_operations(port)
    pages = {
        "/docs": ("Swagger UI to render the operations", "swagger-ui-bundle.js",
                  lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= len(ops)),
        "/redoc": ("ReDoc to render the operations", "redoc.standalone.js",
                   lambda d: len(d.find_elements(
                       By.CSS_SELECTOR, "[data-section-id^='operation/']")) >= len(ops)),
    }
    for path, (what, bundle, rendered) in pages.items():
        url = f"http://127.0.0.1:{port}{path}"
        first = visit_bytes(driver, url, rendered, what)
        second = visit_bytes(driver, url, rendered, what)
        big = [e for e in first if e["name"].endswith(bundle)]
        check(len(big) == 1, f"{path}: {bundle} not loaded: {[e['name'] for e in first]}")
        check(0 < big[0]["encoded"] < big[0]["decoded"] / 2,
              f"{path}: {bundle} not sent compressed: {big[0]}")
        sent = [sum(e["transfer"] for e in visit) for visit in (first, second)]
        decoded = sum(e["decoded"] for e in first)
        for e in second:
            log(f"{path}: second visit: {e['name'].split(str(port))[-1]}: "
                f"{e['transfer']} bytes transferred")
        log(f"{path}: first visit {sent[0]} bytes transferred ({decoded} decoded, "
            f"{len(first)} resources), second visit {sent[1]} bytes")
        check(sent[1] <= sent[0] * SECOND_VISIT_MAX_SHARE,
              f"{path}: the second visit transferred {sent[1]} bytes, the first {sent[0]}")


# The HS256 secret of the access-control check (test-only).
AUTH_SECRET = "test-console-hs256-secret-" + uuid.uuid4().hex


def hs256_token(secret, claims):
    """A JWT signed with HS256 (RFC 7519): what an identity provider would issue."""
    def b64(raw):
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    signed = (b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "."
              + b64(json.dumps(claims).encode()))
    mac = hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest()
    return f"{signed}.{b64(mac)}"


def execute_post_user(driver, block, email):
    """Try it out on POST /user with `email`; returns the status Swagger UI shows."""
    field = wait_for(driver, "the email field",
                     lambda d: (block.find_elements(
                         By.CSS_SELECTOR, "tr[data-param-name='email'] input") or [None])[0])
    field.clear()
    field.send_keys(email)
    # Swagger UI keeps the previous answer until the new one arrives: clear it first.
    for button in block.find_elements(By.CSS_SELECTOR, "button.btn-clear"):
        button.click()
    block.find_element(By.CSS_SELECTOR, "button.execute").click()
    cell = wait_for(
        driver, "the live response to POST /user",
        lambda d: (block.find_elements(
            By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_status")
            or [None])[0])
    return cell.text.strip()


def test_docs_authorize(services, driver):
    """With AUTH_REQUIRED=writes, /docs offers "Authorize" (the document declares the bearer
    scheme): a POST without a token answers 401, the same POST after a token is entered 200."""
    port = free_port()
    proc = services.start("service-auth", port, AUTH_REQUIRED="writes",
                          AUTH_JWT_SECRET=AUTH_SECRET)
    wait_listening(services, proc, port, "/readyz", want_status=200)
    email = f"authorize-{uuid.uuid4().hex[:8]}@example.com"

    driver.get(f"http://127.0.0.1:{port}/docs")
    wait_for(driver, "Swagger UI's Authorize button",
             lambda d: d.find_elements(By.CSS_SELECTOR, ".auth-wrapper button.authorize"))
    block = driver.find_element(By.ID, "operations-records-upsertRecord")
    block.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait_for(driver, "the operation to open",
             lambda d: block.find_elements(By.CSS_SELECTOR, "button.try-out__btn"))
    block.find_element(By.CSS_SELECTOR, "button.try-out__btn").click()
    status = execute_post_user(driver, block, email)
    check(status.startswith("401"), f"POST /user without a token answered {status!r}")
    log(f"/docs with AUTH_REQUIRED=writes: POST /user without a token: {status}")

    token = hs256_token(AUTH_SECRET, {"sub": "test-console", "exp": int(time.time()) + 600,
                                      "scope": "records:write"})
    driver.find_element(By.CSS_SELECTOR, ".auth-wrapper button.authorize").click()
    value = wait_for(driver, "the bearer token field",
                     lambda d: (d.find_elements(
                         By.CSS_SELECTOR, "input[aria-label='auth-bearer-value']") or [None])[0])
    value.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "button[aria-label='Apply credentials']").click()
    wait_for(driver, "the token to be taken",
             lambda d: d.find_elements(
                 By.CSS_SELECTOR, "button[aria-label='Remove authorization']"))
    driver.find_element(By.CSS_SELECTOR, "button.btn-done").click()
    status = execute_post_user(driver, block, email)
    check(status.startswith("200"), f"POST /user with the token answered {status!r}")
    got, _, body = http_request(port, "GET", f"/user?email={urllib.parse.quote(email)}")
    check(got == 200, f"the record POSTed through /docs is not there: {got} {body}")
    log(f"/docs: after Authorize, POST /user: {status}; GET it back: {got} {body}")


def seed():
    missing = [v for v in ("POSTGRES_DB_HOST", "POSTGRES_DB_NAME", "POSTGRES_DB_USER")
               if not os.environ.get(v)]
    check(not missing, f"{', '.join(missing)} not set: run "
          "scripts/localpg.sh start && eval \"$(scripts/localpg.sh env)\" first")
    check(os.access(BIN, os.X_OK), f"{BIN} is not an executable: build it (make build) or set BIN")
    out = subprocess.run([BIN, "seed", "--rows", str(SEED_ROWS), "--if-empty"],
                         env=service_env(), cwd=tempfile.gettempdir(), capture_output=True,
                         text=True, timeout=300)
    check(out.returncode == 0, f"seed failed ({out.returncode}): {out.stderr.strip()[-500:]}")


def main():
    workdir = tempfile.mkdtemp(prefix="test-console.")
    services = Services(workdir)
    driver = None
    ok = False
    try:
        seed()
        driver = start_browser()
        test_with_database(services, driver)
        test_without_database(services, driver)
        test_metrics_elsewhere(services, driver)
        test_api_docs(services, driver)
        test_docs_transfer(services, driver)
        test_docs_authorize(services, driver)
        ok = True
    except Failure as e:
        log(f"failed: {e}")
    except Exception as e:  # a bug of the test or a broken browser: still stop everything
        log(f"error: {e!r}")
        raise
    finally:
        if driver is not None and not ok:
            try:
                for entry in driver.get_log("browser"):
                    if "favicon.ico" not in entry.get("message", ""):
                        print(f"browser: {entry.get('level')} {entry.get('message')}")
            except Exception:
                pass
        if driver is not None:
            driver.quit()
        services.stop_all()
        if not ok:
            services.print_logs()
        shutil.rmtree(workdir, ignore_errors=True)
        print("PASS" if ok else "FAIL", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
