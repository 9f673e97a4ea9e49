//! What an operator sees: `/metrics` moving as requests are made, request ids, JSON logs that
//! carry them, `METRICS_ADDR` and `METRICS=off`. The real binary against a real PostgreSQL.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use crate::support::app::{env_for, App};
use crate::support::http::{get, request, Conn};
use crate::support::pg::{server, TestDb};
use crate::support::wait::eventually;

/// One scrape: every sample, by its series (name with labels, as written).
struct Scrape(HashMap<String, f64>);

impl Scrape {
    fn of(addr: SocketAddr) -> Scrape {
        let r = get(addr, "/metrics");
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
            "{:?}",
            r.header("content-type")
        );
        let mut samples = HashMap::new();
        for line in r.text().lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect(line);
            samples.insert(series.to_string(), value.parse().expect(line));
        }
        Scrape(samples)
    }

    /// A scrape rendered after `before` was (answers are reused for 250 ms): one that counts
    /// `before`'s own request.
    fn after(addr: SocketAddr, before: &Scrape) -> Scrape {
        const SCRAPES: &str =
            r#"records_service_http_requests_total{route="/metrics",method="GET",status="200"}"#;
        let mut fresh = None;
        let rendered = eventually(Duration::from_secs(5), || {
            let s = Scrape::of(addr);
            let newer = s.value(SCRAPES) > before.value(SCRAPES);
            fresh = Some(s);
            newer
        });
        assert!(rendered, "no new rendering of /metrics");
        fresh.unwrap()
    }

    fn value(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }

    fn has(&self, name: &str) -> bool {
        self.0
            .keys()
            .any(|k| k == name || k.starts_with(&format!("{name}{{")))
    }
}

const BY_ID_404: &str =
    r#"records_service_http_requests_total{route="/user/{id}",method="GET",status="404"}"#;
const BY_ID_200: &str =
    r#"records_service_http_requests_total{route="/user/{id}",method="GET",status="200"}"#;
const BY_ID_COUNT: &str =
    r#"records_service_http_request_duration_seconds_count{route="/user/{id}"}"#;

#[test]
fn requests_and_queries_are_counted_under_their_route_template() {
    let db = TestDb::new();
    let app = App::start(&db);
    let before = Scrape::of(app.addr);
    assert_eq!(get(app.addr, "/user/999999").status, 404);
    assert_eq!(get(app.addr, "/user/123456789012").status, 404);
    let created = request(
        app.addr,
        "POST",
        "/user?email=m@x.io",
        Some(br#"{"text":"t"}"#),
    );
    assert_eq!(created.status, 200, "{}", created.text());
    let id = db
        .client()
        .simple_query(
            "SELECT id FROM records WHERE email = 'm@x.io'",
            Duration::from_secs(5),
        )
        .unwrap();
    let id = id.rows[0].text(0).unwrap().unwrap().to_string();
    assert_eq!(get(app.addr, &format!("/user/{id}")).status, 200);
    assert_eq!(get(app.addr, "/no/such/path").status, 404);
    let after = Scrape::after(app.addr, &before);

    let moved = |series: &str| after.value(series) - before.value(series);
    assert_eq!(moved(BY_ID_404), 2.0, "both 404s, under the template");
    assert_eq!(moved(BY_ID_200), 1.0);
    assert_eq!(moved(BY_ID_COUNT), 3.0);
    assert_eq!(
        moved(r#"records_service_http_requests_total{route="/user",method="POST",status="200"}"#),
        1.0
    );
    assert_eq!(
        moved(
            r#"records_service_http_requests_total{route="unmatched",method="GET",status="404"}"#
        ),
        1.0
    );
    assert!(
        !after
            .0
            .keys()
            .any(|k| k.contains("999999") || k.contains("/no/such")),
        "a raw path became a label"
    );
    // Only the in-int4 lookup and the found one reached the database.
    assert_eq!(
        moved(r#"records_service_pg_queries_total{statement="by_id",outcome="ok"}"#),
        2.0
    );
    assert_eq!(
        moved(r#"records_service_pg_queries_total{statement="upsert",outcome="ok"}"#),
        1.0
    );
    assert!(after.value(r#"records_service_pg_connection_up{pool="fast",conn="0"}"#) == 1.0);
    assert!(after.value(r#"records_service_pg_circuit_open{pool="fast",conn="0"}"#) == 0.0);
    assert!(after.value(r#"records_service_pg_batch_queries_count{pool="fast"}"#) >= 3.0);

    // Buckets are cumulative and end in +Inf, which equals the count.
    let buckets: Vec<(String, f64)> = {
        let mut b: Vec<(f64, String, f64)> = after
            .0
            .iter()
            .filter(|(k, _)| {
                k.starts_with("records_service_http_request_duration_seconds_bucket{")
                    && k.contains(r#"route="/user/{id}""#)
            })
            .map(|(k, v)| {
                let le = k.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
                let order = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                (order, le.to_string(), *v)
            })
            .collect();
        b.sort_by(|x, y| x.0.partial_cmp(&y.0).unwrap());
        b.into_iter().map(|(_, le, v)| (le, v)).collect()
    };
    assert_eq!(buckets.len(), 17, "{buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(
        buckets.last().unwrap(),
        &("+Inf".to_string(), after.value(BY_ID_COUNT))
    );

    // Counters never go down between scrapes.
    for (series, v) in &before.0 {
        if series.contains("_total") || series.contains("_bucket") || series.contains("_count") {
            assert!(after.value(series) >= *v, "{series} went down");
        }
    }
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "records_service_build_info",
        "records_service_log_events_dropped_total",
        "records_service_http_connections_open",
        "records_service_http_sent_bytes_total",
    ] {
        assert!(after.has(name), "{name} missing");
    }
}

#[test]
fn the_http_core_counts_its_own_answers_and_timeouts() {
    let db = TestDb::new();
    let app = App::start_with(&db, &[("HTTP_HEADER_TIMEOUT_MS", "300")]);
    let before = Scrape::of(app.addr);
    let mut bad = Conn::connect(app.addr);
    bad.send(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n");
    assert_eq!(bad.response().status, 400);
    let mut slow = Conn::connect(app.addr);
    slow.send(b"GET / HTTP/1.1\r\n");
    assert_eq!(slow.response().status, 408);
    // A connection that never sends a request runs out the header timeout, not an idle one.
    let mut silent = Conn::connect(app.addr);
    assert!(silent.closed_within(Duration::from_secs(10)));
    let after = Scrape::after(app.addr, &before);
    let moved = |series: &str| after.value(series) - before.value(series);
    assert_eq!(
        moved(r#"records_service_http_timeouts_total{kind="idle"}"#),
        0.0
    );
    assert_eq!(
        moved(r#"records_service_http_core_responses_total{status="400"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"records_service_http_core_responses_total{status="408"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"records_service_http_timeouts_total{kind="head"}"#),
        2.0,
        "the 408 and the silent connection"
    );
    assert!(moved("records_service_http_connections_accepted_total") >= 2.0);
    assert!(moved("records_service_http_received_bytes_total") > 0.0);
}

#[test]
fn request_ids_are_taken_from_the_client_or_made() {
    let db = TestDb::new();
    let app = App::start(&db);
    let with_id = |id: &str| {
        let mut c = Conn::connect(app.addr);
        c.send(format!("GET /livez HTTP/1.1\r\nHost: a\r\nX-Request-Id: {id}\r\n\r\n").as_bytes());
        c.response()
    };
    let r = with_id("trace-abc_123.XYZ");
    assert_eq!(r.header("x-request-id"), Some("trace-abc_123.XYZ"));
    let long = "a".repeat(128);
    assert_eq!(with_id(&long).header("x-request-id"), Some(long.as_str()));
    let mut made = Vec::new();
    // Too long, a space, a byte outside ASCII (which HTTP allows in a field value).
    for rejected in ["a".repeat(129), "has space".into(), "caf\u{e9}".into()] {
        let got = with_id(&rejected)
            .header("x-request-id")
            .unwrap()
            .to_string();
        assert_ne!(got, rejected);
        made.push(got);
    }
    for _ in 0..3 {
        made.push(
            get(app.addr, "/livez")
                .header("x-request-id")
                .unwrap()
                .to_string(),
        );
    }
    let distinct: std::collections::HashSet<_> = made.iter().collect();
    assert_eq!(distinct.len(), made.len(), "{made:?}");
    assert!(made
        .iter()
        .all(|id| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())));
}

/// Every line of the log as JSON.
fn json_lines(app: &App) -> Vec<serde_json::Value> {
    app.log
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn logs_are_json_lines_and_carry_the_request_id() {
    let db = TestDb::new();
    // The test cluster trusts local connections: any password will do, and this one must
    // appear nowhere in the log.
    let app = App::start_with(
        &db,
        &[
            ("ACCESS_LOG", "all"),
            ("POSTGRES_DB_PASSWORD", "pw-Secret-9f3e"),
        ],
    );
    let mut c = Conn::connect(app.addr);
    c.send(b"GET /user/1 HTTP/1.1\r\nHost: a\r\nX-Request-Id: find-me-42\r\n\r\n");
    assert_eq!(c.response().header("x-request-id"), Some("find-me-42"));
    let found = eventually(Duration::from_secs(5), || {
        json_lines(&app)
            .iter()
            .any(|v| v["request_id"] == "find-me-42")
    });
    assert!(found, "no event with the request id:\n{}", app.log_text());
    let lines = json_lines(&app);
    for v in &lines {
        assert!(
            v["timestamp"].as_str().is_some_and(|t| t.contains('T')),
            "{v}"
        );
        assert!(v["level"].is_string() && v["event"].is_string(), "{v}");
    }
    let access = lines
        .iter()
        .find(|v| v["request_id"] == "find-me-42")
        .unwrap();
    assert_eq!(access["event"], "request", "{access}");
    assert_eq!(access["route"], "/user/{id}", "{access}");
    assert_eq!(access["method"], "GET", "{access}");
    assert!(
        access["status"] == 200 || access["status"] == 404,
        "{access}"
    );
    assert!(
        access["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
        "{access}"
    );
    assert!(
        access["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{access}"
    );
    let events: Vec<&str> = lines.iter().filter_map(|v| v["event"].as_str()).collect();
    for expected in ["config", "database_reachable", "listening"] {
        assert!(events.contains(&expected), "{expected} missing: {events:?}");
    }
    let config = lines.iter().find(|v| v["event"] == "config").unwrap();
    assert!(
        config.to_string().contains("<redacted>"),
        "the startup event shows the configuration: {config}"
    );
    assert!(
        !app.log_text().contains("pw-Secret-9f3e"),
        "the password is in the log:\n{}",
        app.log_text()
    );
}

#[test]
fn a_503_is_logged_with_its_request_id_and_cause() {
    // A database that is not there: the service starts and answers 503.
    let dead_port = free_port();
    let mut env = env_for(server(), "records");
    env.retain(|(k, _)| k != "POSTGRES_DB_PORT");
    env.push(("POSTGRES_DB_PORT".into(), dead_port.to_string()));
    let app = App::spawn(&env);
    let mut c = Conn::connect(app.addr);
    c.send(b"GET /user/1 HTTP/1.1\r\nHost: a\r\nX-Request-Id: down-7\r\n\r\n");
    assert_eq!(c.response().status, 503);
    // The default access log (errors) has the 503, with its request id and cause, once.
    let logged = eventually(Duration::from_secs(5), || {
        json_lines(&app).iter().any(|v| v["request_id"] == "down-7")
    });
    assert!(logged, "{}", app.log_text());
    let lines = json_lines(&app);
    let of_request: Vec<_> = lines
        .iter()
        .filter(|v| v["request_id"] == "down-7")
        .collect();
    assert_eq!(
        of_request.len(),
        1,
        "one event per failed request: {of_request:?}"
    );
    let event = of_request[0];
    assert_eq!(
        (&event["event"], &event["status"], &event["cause"]),
        (&"request".into(), &503.into(), &"database".into()),
        "{event}"
    );
    // /readyz failing its check: one event too, with its own cause.
    let mut probe = Conn::connect(app.addr);
    probe.send(b"GET /readyz HTTP/1.1\r\nHost: a\r\nX-Request-Id: probe-1\r\n\r\n");
    assert_eq!(probe.response().status, 503);
    assert!(eventually(Duration::from_secs(5), || json_lines(&app)
        .iter()
        .any(|v| v["request_id"] == "probe-1")));
    let probe_events: Vec<_> = json_lines(&app)
        .into_iter()
        .filter(|v| v["request_id"] == "probe-1")
        .collect();
    assert_eq!(probe_events.len(), 1, "{probe_events:?}");
    assert_eq!(
        probe_events[0]["cause"], "not_ready",
        "{:?}",
        probe_events[0]
    );
    let scrape = Scrape::of(app.addr);
    assert_eq!(
        scrape.value(r#"records_service_http_unavailable_total{cause="database"}"#),
        1.0
    );
    assert_eq!(
        scrape.value(r#"records_service_pg_circuit_open{pool="fast",conn="0"}"#),
        1.0
    );
    assert!(
        json_lines(&app)
            .iter()
            .any(|v| v["event"] == "database_connect_failed" && v["circuit"] == "open"),
        "{}",
        app.log_text()
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn metrics_addr_moves_metrics_off_the_public_port() {
    let db = TestDb::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let app = App::start_with(&db, &[("METRICS_ADDR", &addr)]);
    let admin: SocketAddr = addr.parse().unwrap();
    assert_eq!(get(app.addr, "/metrics").status, 404);
    assert_eq!(get(app.addr, "/user/1").status, 404, "an empty table");
    let scrape = Scrape::of(admin);
    assert_eq!(scrape.value(BY_ID_404), 1.0, "public requests are counted");
    assert_eq!(get(admin, "/readyz").status, 200);
    assert_eq!(get(admin, "/livez").status, 200);
    assert_eq!(
        get(admin, "/user/1").status,
        404,
        "the admin port serves no records"
    );
    assert_eq!(get(admin, "/").status, 404);
}

#[test]
fn metrics_off_skips_the_counting() {
    let db = TestDb::new();
    let app = App::start_with(&db, &[("METRICS", "off")]);
    assert_eq!(get(app.addr, "/user/1").status, 404, "an empty table");
    let scrape = Scrape::of(app.addr);
    assert!(!scrape.has("records_service_http_requests_total"));
    assert!(!scrape.has("records_service_pg_queries_total"));
    assert!(scrape.has("records_service_http_connections_open"));
    assert!(scrape.has("records_service_pg_connection_up"));
    assert!(scrape.has("process_resident_memory_bytes"));
}

#[test]
fn a_scrape_loop_renders_at_most_every_250_ms() {
    let db = TestDb::new();
    let app = App::start(&db);
    let started = std::time::Instant::now();
    let first = get(app.addr, "/metrics").text();
    let mut c = Conn::connect(app.addr);
    for _ in 0..20 {
        c.request("GET", "/metrics", None);
        let again = c.response().text();
        if started.elapsed() < Duration::from_millis(200) {
            // Within the interval: the same text, however many times it is asked for (the
            // in-flight gauge and byte counters would otherwise differ).
            assert_eq!(again, first);
        }
    }
    // Later, a new rendering.
    assert!(eventually(Duration::from_secs(5), || get(
        app.addr, "/metrics"
    )
    .text()
        != first));
}
