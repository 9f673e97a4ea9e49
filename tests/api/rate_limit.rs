//! The per-client rate limit and who the client is: `RATE_LIMIT_PER_CLIENT`,
//! `RATE_LIMIT_MAX_CLIENTS`, `TRUSTED_PROXIES` with `X-Forwarded-For` and the PROXY protocol
//! v2. The real binary on a real socket against a real PostgreSQL.
//!
//! A burst is sent as pipelined requests in one write, so that they are answered within
//! milliseconds of each other: far inside the interval in which a token comes back (half a
//! second at 2 requests a second), which is what makes "the third is refused" certain.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::Duration;

use crate::support::app::{command, env_for, readable, App};
use crate::support::http::{get, Conn, Response};
use crate::support::pg::{server, TestDb};
use crate::support::wait::eventually;

/// A route answered without a query, small: the rate limit is the only thing under test.
const CHEAP: &str = "/nothing-here";

/// `n` GETs of `target`, each with the header lines in `headers` (`"Name: value\r\n"`...), in
/// one write on a new connection; the connection and the answers in order.
fn burst(addr: SocketAddr, target: &str, headers: &str, n: usize) -> (Conn, Vec<Response>) {
    let mut c = Conn::connect(addr);
    let one = format!("GET {target} HTTP/1.1\r\nHost: test\r\n{headers}\r\n");
    c.send(one.repeat(n).as_bytes());
    let answers = (0..n).map(|_| c.response()).collect();
    (c, answers)
}

fn statuses(answers: &[Response]) -> Vec<u16> {
    answers.iter().map(|r| r.status).collect()
}

/// The statuses of a burst of `n` from the client `X-Forwarded-For` names (from a trusted
/// 127.0.0.1).
fn burst_from(addr: SocketAddr, client: &str, n: usize) -> Vec<u16> {
    let xff = format!("X-Forwarded-For: {client}\r\n");
    statuses(&burst(addr, CHEAP, &xff, n).1)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The service with `extra` settings and a metrics listener of its own (never rate limited,
/// so the test's scrapes do not spend the limit); the app and that listener's address.
fn start(db: &TestDb, extra: &[(&str, &str)]) -> (App, SocketAddr) {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin_text = admin.to_string();
    let mut env = vec![("METRICS_ADDR", admin_text.as_str())];
    env.extend_from_slice(extra);
    (App::start_with(db, &env), admin)
}

/// Every sample of one scrape of `admin`, by series (name with labels, as written).
fn scrape(admin: SocketAddr) -> HashMap<String, f64> {
    let r = get(admin, "/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// A scrape rendered after this call began (answers are reused for 250 ms): one that counts
/// the scrape made first.
fn metrics_now(admin: SocketAddr) -> HashMap<String, f64> {
    const SCRAPES: &str =
        r#"records_service_http_requests_total{route="/metrics",method="GET",status="200"}"#;
    let first = scrape(admin).get(SCRAPES).copied().unwrap_or(0.0);
    let mut fresh = None;
    let rendered = eventually(Duration::from_secs(5), || {
        let s = scrape(admin);
        let newer = s.get(SCRAPES).copied().unwrap_or(0.0) > first;
        fresh = Some(s);
        newer
    });
    assert!(rendered, "no new rendering of /metrics");
    fresh.unwrap()
}

/// The value of `series` in `scrape` (0 if absent).
fn value(scrape: &HashMap<String, f64>, series: &str) -> f64 {
    scrape.get(series).copied().unwrap_or(0.0)
}

const RATE_LIMITED: &str = "records_service_http_rate_limited_total";
const TRACKED: &str = "records_service_rate_limit_tracked_clients";

fn json_lines(app: &App) -> Vec<serde_json::Value> {
    app.log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The access log event of the request with `id`, once written.
fn access_event(app: &App, id: &str) -> serde_json::Value {
    let mut event = None;
    eventually(Duration::from_secs(5), || {
        event = json_lines(app).into_iter().find(|v| v["request_id"] == id);
        event.is_some()
    });
    event.unwrap_or_else(|| panic!("no event for {id}:\n{}", app.log_text()))
}

#[test]
fn off_by_default_no_request_is_ever_refused() {
    let db = TestDb::new();
    let (app, admin) = start(&db, &[]);
    let (_, answers) = burst(app.addr, CHEAP, "", 300);
    assert!(
        answers.iter().all(|r| r.status == 404),
        "{:?}",
        statuses(&answers)
    );
    assert!(
        answers.iter().all(|r| r.header("ratelimit").is_none()),
        "no RateLimit fields without a limit"
    );
    let now = metrics_now(admin);
    assert_eq!(now.get(RATE_LIMITED), Some(&0.0), "exported, at 0");
    assert_eq!(now.get(TRACKED), Some(&0.0), "exported, at 0");
}

#[test]
fn over_the_limit_is_429_with_retry_after_and_ratelimit_fields_then_served_again() {
    let db = TestDb::new();
    let (app, admin) = start(&db, &[("RATE_LIMIT_PER_CLIENT", "2")]);
    let (mut c, answers) = burst(app.addr, CHEAP, "", 4);
    assert_eq!(
        statuses(&answers),
        [404, 404, 429, 429],
        "a burst of 2, then refused"
    );
    let refused = &answers[2];
    assert_eq!(refused.reason, "Too Many Requests");
    assert_eq!(refused.detail(), "Too Many Requests");
    assert_eq!(refused.header("content-type"), Some("application/json"));
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some(r#""default";q=2;w=1"#)
    );
    assert_eq!(refused.header("ratelimit"), Some(r#""default";r=0;t=1"#));
    assert!(refused.header("x-request-id").is_some());
    assert!(!refused.closes(), "the connection stays open after a 429");

    // The orchestrator's probes are never refused, however spent the client's limit is.
    for probe in ["/livez", "/readyz"] {
        c.request("GET", probe, None);
        assert_eq!(c.response().status, 200, "{probe}");
    }
    // On the same connection, as told: a token comes back within the second.
    let served = eventually(Duration::from_secs(3), || {
        c.request("GET", CHEAP, None);
        c.response().status == 404
    });
    assert!(served, "still refused after Retry-After");
    let now = metrics_now(admin);
    assert!(
        value(&now, RATE_LIMITED) >= 2.0,
        "{}",
        value(&now, RATE_LIMITED)
    );
    assert_eq!(
        value(
            &now,
            r#"records_service_http_requests_total{route="unmatched",method="GET",status="429"}"#
        ),
        value(&now, RATE_LIMITED),
        "each 429 is counted under its route too"
    );
    assert_eq!(value(&now, TRACKED), 1.0, "one client: 127.0.0.1");
}

#[test]
fn a_429_costs_no_database_query() {
    let db = TestDb::new();
    let (app, admin) = start(&db, &[("RATE_LIMIT_PER_CLIENT", "2")]);
    let (_, answers) = burst(app.addr, "/user/1", "", 6);
    let statuses = statuses(&answers);
    assert_eq!(&statuses[..2], [404, 404], "an empty table: {statuses:?}");
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!(refused >= 3, "{statuses:?}");
    let now = metrics_now(admin);
    let answered = value(
        &now,
        r#"records_service_http_requests_total{route="/user/{id}",method="GET",status="404"}"#,
    );
    assert_eq!(answered, (6 - refused) as f64);
    assert_eq!(
        value(
            &now,
            r#"records_service_pg_queries_total{statement="by_id",outcome="ok"}"#
        ),
        answered,
        "one query per request answered, none for a 429"
    );
    assert_eq!(value(&now, RATE_LIMITED), refused as f64);
}

/// `/readyz` is never refused, but its check is a query: a client over its limit must not get
/// one query per probe (a pipelined flood of probes would be a flood of queries the limit does
/// not bound). Past the limit, the answer is the last check's.
#[test]
fn probes_over_the_limit_cost_no_query_each() {
    const PINGS: &str = r#"records_service_pg_queries_total{statement="ping",outcome="ok"}"#;
    let db = TestDb::new();
    let (app, admin) = start(&db, &[("RATE_LIMIT_PER_CLIENT", "2")]);
    let before = value(&metrics_now(admin), PINGS);
    let (_, answers) = burst(app.addr, "/readyz", "", 50);
    let statuses = statuses(&answers);
    assert!(
        statuses.iter().all(|s| *s == 200),
        "never refused: {statuses:?}"
    );
    let pings = value(&metrics_now(admin), PINGS) - before;
    assert!(
        (1.0..=4.0).contains(&pings),
        "{pings} queries for 50 probes at 2 a second"
    );
}

#[test]
fn clients_behind_a_trusted_proxy_have_buckets_of_their_own() {
    let db = TestDb::new();
    let (app, _) = start(
        &db,
        &[
            ("RATE_LIMIT_PER_CLIENT", "2"),
            ("TRUSTED_PROXIES", "127.0.0.1"),
            ("ACCESS_LOG", "all"),
        ],
    );
    assert_eq!(burst_from(app.addr, "203.0.113.1", 3), [404, 404, 429]);
    assert_eq!(
        burst_from(app.addr, "203.0.113.2", 2),
        [404, 404],
        "another client"
    );
    // What the client itself wrote (left of the address the proxy appended) is not believed.
    assert_eq!(burst_from(app.addr, "203.0.113.9, 203.0.113.1", 1), [429]);
    // The proxy itself (no X-Forwarded-For) is a client of its own.
    assert_eq!(statuses(&burst(app.addr, CHEAP, "", 2).1), [404, 404]);

    let mut c = Conn::connect(app.addr);
    c.send(b"GET /nothing-here HTTP/1.1\r\nHost: t\r\nX-Request-Id: xff-1\r\nX-Forwarded-For: 198.51.100.4\r\n\r\n");
    assert_eq!(c.response().status, 404);
    let event = access_event(&app, "xff-1");
    assert_eq!(event["client"], "198.51.100.4", "{event}");
    assert!(
        event["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{event}"
    );
}

#[test]
fn an_untrusted_peers_forwarded_for_is_ignored() {
    let db = TestDb::new();
    for trusted in ["", "10.0.0.0/8"] {
        let (app, _) = start(
            &db,
            &[("RATE_LIMIT_PER_CLIENT", "2"), ("TRUSTED_PROXIES", trusted)],
        );
        // A new address in each request: all of them are 127.0.0.1, which is not trusted.
        let mut c = Conn::connect(app.addr);
        for i in 1..=4 {
            c.send(
                format!(
                    "GET {CHEAP} HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.{i}\r\n\r\n"
                )
                .as_bytes(),
            );
        }
        let answers: Vec<u16> = (0..4).map(|_| c.response().status).collect();
        assert_eq!(answers, [404, 404, 429, 429], "TRUSTED_PROXIES={trusted:?}");
    }
}

#[test]
fn a_malformed_forwarded_for_entry_counts_as_the_proxy_that_appended_it() {
    let db = TestDb::new();
    let (app, _) = start(
        &db,
        &[
            ("RATE_LIMIT_PER_CLIENT", "2"),
            ("TRUSTED_PROXIES", "127.0.0.1"),
        ],
    );
    // Both count against 127.0.0.1, the proxy: the walk stops at the entry that is not an
    // address, and never reaches the 203.0.113.5 to its left.
    assert_eq!(burst_from(app.addr, "unknown", 1), [404]);
    assert_eq!(burst_from(app.addr, "203.0.113.5, garbage", 1), [404]);
    assert_eq!(
        statuses(&burst(app.addr, CHEAP, "", 1).1),
        [429],
        "the proxy's own bucket is spent"
    );
    assert_eq!(burst_from(app.addr, "203.0.113.5", 1), [404], "not spent");
}

#[test]
fn ipv6_clients_are_limited_per_64() {
    let db = TestDb::new();
    let (app, _) = start(
        &db,
        &[
            ("RATE_LIMIT_PER_CLIENT", "2"),
            ("TRUSTED_PROXIES", "127.0.0.1"),
        ],
    );
    assert_eq!(burst_from(app.addr, "2001:db8:1:2::1", 1), [404]);
    assert_eq!(burst_from(app.addr, "2001:db8:1:2:ffff::9", 1), [404]);
    assert_eq!(
        burst_from(app.addr, "[2001:db8:1:2::77]:443", 1),
        [429],
        "a third address of the same /64"
    );
    assert_eq!(
        burst_from(app.addr, "2001:db8:1:3::1", 1),
        [404],
        "the next /64"
    );
}

#[test]
fn rotating_addresses_keep_the_tracked_clients_and_memory_bounded() {
    const CAP: usize = 1_000;
    const ADDRESSES: u32 = 50_000;
    const WRITE: u32 = 500;
    let db = TestDb::new();
    let cap = CAP.to_string();
    let (app, admin) = start(
        &db,
        &[
            ("RATE_LIMIT_PER_CLIENT", "1"),
            ("RATE_LIMIT_MAX_CLIENTS", &cap),
            ("TRUSTED_PROXIES", "127.0.0.1"),
        ],
    );
    // Each thread sends its share of the addresses (198.18.0.0/15, one request each), in
    // pipelined writes of 500; every one is a new client, with a full burst.
    let send = |from: u32, to: u32| {
        let mut c = Conn::connect(app.addr);
        for start in (from..to).step_by(WRITE as usize) {
            let end = (start + WRITE).min(to);
            let mut bytes = Vec::new();
            for i in start..end {
                let client = IpAddr::from((0xC612_0000_u32 + i).to_be_bytes());
                bytes.extend_from_slice(
                    format!("GET {CHEAP} HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: {client}\r\n\r\n")
                        .as_bytes(),
                );
            }
            c.send(&bytes);
            for i in start..end {
                let status = c.raw_response(false).status;
                assert_eq!(status, 404, "address {i}, new, was refused");
            }
        }
    };
    // Warm up (buffers, the allocator's arenas), then measure the rest.
    send(0, 2 * CAP as u32);
    assert!(value(&metrics_now(admin), TRACKED) <= CAP as f64);
    let rss_before = app.rss_kib();
    let done = std::sync::atomic::AtomicBool::new(false);
    let most_tracked = std::thread::scope(|s| {
        let senders: Vec<_> = (0..4)
            .map(|t| {
                let share = (ADDRESSES - 2 * CAP as u32) / 4;
                let from = 2 * CAP as u32 + t * share;
                s.spawn(move || send(from, from + share))
            })
            .collect();
        let monitor = s.spawn(|| {
            let mut most = 0.0_f64;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                most = most.max(value(&scrape(admin), TRACKED));
                // Paces the scrapes (answers are rendered at most every 250 ms).
                std::thread::sleep(Duration::from_millis(50));
            }
            most
        });
        for sender in senders {
            sender.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        monitor.join().unwrap()
    });
    let tracked = value(&metrics_now(admin), TRACKED);
    let rss_after = app.rss_kib();
    assert!(
        most_tracked <= CAP as f64,
        "{most_tracked} tracked, cap {CAP}"
    );
    assert!(tracked <= CAP as f64 && tracked > 0.0, "{tracked}");
    // Measured: bounded, under 100 KiB more; with the cap out of the way
    // (RATE_LIMIT_MAX_CLIENTS=10000000), the 48,000 more clients took 4.2 to 4.5 MB.
    let grew = rss_after.saturating_sub(rss_before);
    assert!(
        grew < 1_500,
        "resident memory grew by {grew} KiB ({rss_before} -> {rss_after}) over {ADDRESSES} clients"
    );
}

/// A PROXY protocol v2 header: a relayed TCP/IPv4 connection from `source`:40000.
fn proxy_header(source: [u8; 4]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    h.extend_from_slice(&source);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&40000u16.to_be_bytes());
    h.extend_from_slice(&8000u16.to_be_bytes());
    h
}

/// A connection that begins with a PROXY header from `source`, then `n` pipelined GETs
/// (the first with `X-Request-Id: id`); the statuses.
fn proxied_burst(addr: SocketAddr, source: [u8; 4], id: &str, n: usize) -> Vec<u16> {
    let mut c = Conn::connect(addr);
    let mut bytes = proxy_header(source);
    bytes.extend_from_slice(
        format!("GET {CHEAP} HTTP/1.1\r\nHost: t\r\nX-Request-Id: {id}\r\n\r\n").as_bytes(),
    );
    for _ in 1..n {
        bytes.extend_from_slice(format!("GET {CHEAP} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    }
    c.send(&bytes);
    (0..n).map(|_| c.response().status).collect()
}

#[test]
fn a_proxy_protocol_header_from_a_trusted_peer_names_the_client() {
    let db = TestDb::new();
    let (app, _) = start(
        &db,
        &[
            ("RATE_LIMIT_PER_CLIENT", "2"),
            ("TRUSTED_PROXIES", "127.0.0.1"),
            ("ACCESS_LOG", "all"),
        ],
    );
    assert_eq!(
        proxied_burst(app.addr, [192, 0, 2, 10], "pp-1", 3),
        [404, 404, 429]
    );
    assert_eq!(
        proxied_burst(app.addr, [192, 0, 2, 11], "pp-2", 2),
        [404, 404],
        "another client, through the same proxy"
    );
    assert_eq!(
        proxied_burst(app.addr, [192, 0, 2, 10], "pp-3", 1),
        [429],
        "the first client again, on a new connection"
    );
    assert_eq!(
        statuses(&burst(app.addr, CHEAP, "", 2).1),
        [404, 404],
        "the proxy's own connections, without a header, are plain HTTP"
    );
    let event = access_event(&app, "pp-1");
    assert_eq!(event["client"], "192.0.2.10", "{event}");
    assert_eq!(event["peer"], "192.0.2.10:40000", "{event}");
}

#[test]
fn a_proxy_protocol_header_from_any_other_peer_is_a_bad_request() {
    let db = TestDb::new();
    let (app, _) = start(&db, &[("TRUSTED_PROXIES", "10.0.0.0/8")]);
    let mut c = Conn::connect(app.addr);
    let mut bytes = proxy_header([192, 0, 2, 10]);
    bytes.extend_from_slice(format!("GET {CHEAP} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    c.send(&bytes);
    let r = c.response();
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.detail(), "Malformed request");
    c.expect_closed();
}

#[test]
fn bad_rate_limit_settings_stop_the_process_naming_the_variable() {
    let base = env_for(server(), "records");
    let cases = [
        (
            "TRUSTED_PROXIES",
            "10.0.0.0/33",
            "TRUSTED_PROXIES: \"10.0.0.0/33\": the prefix length must be a whole number from 0 to 32",
        ),
        (
            "TRUSTED_PROXIES",
            "10.0.0.0/8, 192.168.1.1/16",
            "TRUSTED_PROXIES: \"192.168.1.1/16\" has bits set past its /16 prefix (the block is 192.168.0.0/16)",
        ),
        (
            "TRUSTED_PROXIES",
            "balancer",
            "TRUSTED_PROXIES: \"balancer\" is not an IP address or CIDR block",
        ),
        (
            "RATE_LIMIT_PER_CLIENT",
            "-1",
            "RATE_LIMIT_PER_CLIENT: -1 is out of range (0 to 1000000)",
        ),
        (
            "RATE_LIMIT_MAX_CLIENTS",
            "0",
            "RATE_LIMIT_MAX_CLIENTS: 0 is out of range (1 to 10000000)",
        ),
    ];
    for (var, value, message) in cases {
        let mut env = base.clone();
        env.push((var.to_string(), value.to_string()));
        let out = command(&env)
            .arg("serve")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run records-service");
        let text = readable(&String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{var}={value}: {text}");
        assert!(text.contains(message), "{var}={value}: {text}");
    }
}
