//! Every route and error of API.md, checked through the running service.

use crate::support::app::App;
use crate::support::http::{get, request, Conn, Response};
use crate::support::pg::TestDb;
use records_service::records::route::Route;

const INVALID: &str = "Invalid payload provided! Please check the API documentation.";

fn seeded() -> (TestDb, App) {
    let db = TestDb::new();
    db.execute(
        "INSERT INTO records (id, email, text) VALUES \
         (1, 'a@b.com', 'hello'), (2, 'c@d.com', NULL), (3, 'Mixed.Case@Example.org', 'third'); \
         SELECT setval(pg_get_serial_sequence('records', 'id'), 3)",
    );
    let app = App::start(&db);
    (db, app)
}

fn post(app: &App, email_query: &str, body: &str) -> Response {
    request(
        app.addr,
        "POST",
        &format!("/user{email_query}"),
        Some(body.as_bytes()),
    )
}

#[test]
fn get_user_by_id() {
    let (_db, app) = seeded();
    let r = get(app.addr, "/user/1");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        serde_json::json!({"id": 1, "email": "a@b.com", "text": "hello"})
    );
    let r = get(app.addr, "/user/2");
    assert_eq!(
        r.json(),
        serde_json::json!({"id": 2, "email": "c@d.com", "text": null})
    );
}

#[test]
fn get_user_by_id_errors() {
    let (_db, app) = seeded();
    let cases: &[(&str, u16, &str, &str)] = &[
        (
            "/user/42",
            404,
            "Record with ID 42 was not found!",
            "absent id",
        ),
        ("/user/0", 404, "Record with ID 0 was not found!", "zero"),
        (
            "/user/-1",
            404,
            "Record with ID -1 was not found!",
            "negative",
        ),
        (
            "/user/2147483648",
            404,
            "Record with ID 2147483648 was not found!",
            "just past int4",
        ),
        (
            "/user/99999999999999999999999",
            404,
            "Record with ID 99999999999999999999999 was not found!",
            "past i64",
        ),
        ("/user/abc", 400, INVALID, "not an integer"),
        ("/user/1.5", 400, INVALID, "not an integer"),
        ("/user/1%20", 400, INVALID, "encoded space"),
        ("/user/", 404, "Not Found", "no id"),
        ("/user/1/x", 404, "Not Found", "extra segment"),
    ];
    for (path, status, detail, why) in cases {
        let r = get(app.addr, path);
        assert_eq!(r.status, *status, "{path}: {why}");
        assert_eq!(r.detail(), *detail, "{path}: {why}");
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
    }
}

#[test]
fn get_user_by_email() {
    let (_db, app) = seeded();
    let r = get(app.addr, "/user?email=a%40b.com");
    assert_eq!((r.status, r.json()), (200, serde_json::json!(["hello"])));
    let r = get(app.addr, "/user?email=mixed.case@example.ORG");
    assert_eq!(
        (r.status, r.json()),
        (200, serde_json::json!(["third"])),
        "case-insensitive"
    );
    let r = get(app.addr, "/user?email=c@d.com");
    assert_eq!((r.status, r.json()), (200, serde_json::json!([null])));
    let r = get(app.addr, "/user?email=x@b.com&email=a@b.com");
    assert_eq!(r.json(), serde_json::json!(["hello"]), "last value wins");
    let r = get(app.addr, "/user?email=nobody@b.com");
    assert_eq!(
        (r.status, r.detail()),
        (
            404,
            "Record for email nobody@b.com was not found!".to_string()
        )
    );
    for q in ["/user", "/user?email=", "/user?other=1", "/user?email"] {
        let r = get(app.addr, q);
        assert_eq!(
            (r.status, r.detail()),
            (400, "No email provided".to_string()),
            "{q}"
        );
    }
    for q in ["/user?email=%00", "/user?email=a%00@b.com"] {
        let r = get(app.addr, q);
        assert_eq!((r.status, r.detail()), (400, INVALID.to_string()), "{q}");
    }
    let r = request(app.addr, "DELETE", "/user?email=a%00@b.com", None);
    assert_eq!((r.status, r.detail()), (400, INVALID.to_string()));
}

#[test]
fn post_user_inserts_and_updates_case_insensitively() {
    let (db, app) = seeded();
    let r = post(
        &app,
        "?email=new.person%2Btag@mail.example-host.co.uk",
        r#"{"text": "first"}"#,
    );
    assert_eq!((r.status, r.text()), (200, "null".to_string()));
    let r = get(
        app.addr,
        "/user?email=new.person%2Btag@mail.example-host.co.uk",
    );
    assert_eq!(r.json(), serde_json::json!(["first"]));
    // Upsert: the same address in another case overwrites the text, no second row.
    let r = post(
        &app,
        "?email=NEW.PERSON%2BTAG@MAIL.EXAMPLE-HOST.CO.UK",
        r#"{"text": "second", "extra": {"ignored": [1, 2]}}"#,
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        db.scalar(
            "SELECT count(*) FROM records WHERE email = 'new.person+tag@mail.example-host.co.uk'"
        )
        .as_deref(),
        Some("1")
    );
    assert_eq!(
        db.scalar(
            "SELECT text FROM records WHERE email = 'new.person+tag@mail.example-host.co.uk'"
        )
        .as_deref(),
        Some("second")
    );
    // The new record's id comes from the sequence, after the seeded ones.
    assert_eq!(
        db.scalar("SELECT id FROM records WHERE email = 'new.person+tag@mail.example-host.co.uk'")
            .as_deref(),
        Some("4")
    );
    let exactly_100 = "é".repeat(100);
    let r = post(
        &app,
        "?email=x@example.museum",
        &format!(r#"{{"text": "{exactly_100}"}}"#),
    );
    assert_eq!(r.status, 200, "100 characters (200 bytes) is allowed");
}

#[test]
fn post_user_rejects_bad_input_and_stores_nothing() {
    let (db, app) = seeded();
    let long = "x".repeat(101);
    let long_body = format!(r#"{{"text": "{long}"}}"#);
    let cases: Vec<(&str, &str, String, &str)> = vec![
        (
            "",
            r#"{"text": "t"}"#,
            "No email provided".into(),
            "no email",
        ),
        (
            "?email=",
            r#"{"text": "t"}"#,
            "No email provided".into(),
            "empty email",
        ),
        (
            "?email=not-an-email",
            r#"{"text": "t"}"#,
            "Invalid email address provided! Email: not-an-email".into(),
            "no @",
        ),
        (
            "?email=a%20b@c.com",
            r#"{"text": "t"}"#,
            "Invalid email address provided! Email: a b@c.com".into(),
            "space",
        ),
        (
            "?email=user@localhost",
            r#"{"text": "t"}"#,
            "Invalid email address provided! Email: user@localhost".into(),
            "no dot in domain",
        ),
        ("?email=a@b.com", "not json", INVALID.into(), "not JSON"),
        (
            "?email=a@b.com",
            r#"{"text": null}"#,
            INVALID.into(),
            "null text",
        ),
        (
            "?email=a@b.com",
            r#"{"text": 5}"#,
            INVALID.into(),
            "number text",
        ),
        ("?email=a@b.com", r#"{}"#, INVALID.into(), "missing text"),
        (
            "?email=a@b.com",
            r#"["text"]"#,
            INVALID.into(),
            "not an object",
        ),
        ("?email=a@b.com", "", INVALID.into(), "empty body"),
        (
            "?email=a@b.com",
            &long_body,
            "Text is too long: at most 100 characters are allowed".into(),
            "101 characters",
        ),
        // PostgreSQL text cannot hold NUL: refused here, not a 500 from the server (22021).
        (
            "?email=a@b.com",
            r#"{"text": "a\u0000b"}"#,
            "Text must not contain NUL (\\u0000) characters".into(),
            "NUL in text",
        ),
        (
            "?email=a%00@b.com",
            r#"{"text": "t"}"#,
            INVALID.into(),
            "NUL in email",
        ),
    ];
    for (query, body, detail, why) in &cases {
        let r = post(&app, query, body);
        assert_eq!(r.status, 400, "{why}");
        assert_eq!(r.detail(), *detail, "{why}");
    }
    assert_eq!(
        db.scalar("SELECT count(*) FROM records").as_deref(),
        Some("3")
    );
    assert_eq!(
        db.scalar("SELECT text FROM records WHERE id = 1")
            .as_deref(),
        Some("hello")
    );
}

#[test]
fn deeply_nested_json_is_refused_without_crashing() {
    let (_db, app) = seeded();
    let deep = format!(
        r#"{{"text": "t", "x": {}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let r = post(&app, "?email=deep@b.com", &deep);
    assert_eq!(
        (r.status, r.detail()),
        (400, INVALID.to_string()),
        "refused before parsing"
    );
    assert_eq!(get(app.addr, "/livez").status, 200, "the process lives on");
}

#[test]
fn delete_user() {
    let (db, app) = seeded();
    let r = request(app.addr, "DELETE", "/user?email=A@B.COM", None);
    assert_eq!((r.status, r.text()), (200, "null".to_string()));
    assert_eq!(
        db.scalar("SELECT count(*) FROM records WHERE id = 1")
            .as_deref(),
        Some("0")
    );
    let r = request(app.addr, "DELETE", "/user?email=a@b.com", None);
    assert_eq!(
        (r.status, r.text()),
        (200, "null".to_string()),
        "nothing to delete is still 200"
    );
    let r = request(app.addr, "DELETE", "/user", None);
    assert_eq!(
        (r.status, r.detail()),
        (400, "No email provided".to_string())
    );
}

#[test]
fn list_users() {
    let (db, app) = seeded();
    let r = get(app.addr, "/users");
    assert_eq!(
        r.json(),
        serde_json::json!([
            ["a@b.com", "hello"],
            ["c@d.com", null],
            ["Mixed.Case@Example.org", "third"]
        ])
    );
    db.execute("INSERT INTO records (email, text) SELECT 'bulk' || g || '@x.com', 't' FROM generate_series(10, 29) g");
    assert_eq!(
        get(app.addr, "/users?limit=100")
            .json()
            .as_array()
            .unwrap()
            .len(),
        10,
        "capped at 10"
    );
    assert_eq!(
        get(app.addr, "/users?limit=2")
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        get(app.addr, "/users?limit=0").json(),
        serde_json::json!([])
    );
    let page = get(app.addr, "/users?limit=2&offset=1").json();
    assert_eq!(
        page,
        serde_json::json!([["bulk10@x.com", "t"], ["bulk11@x.com", "t"]])
    );
    // after and offset combine: the page starts `offset` rows after the key (an OpenAPI
    // document cannot say "not both", and schemathesis sent both); an empty `after` is no key.
    assert_eq!(
        get(app.addr, "/users?after=bulk27@x.com&offset=1&limit=2").json(),
        serde_json::json!([["bulk29@x.com", "t"], ["c@d.com", null]])
    );
    assert_eq!(
        get(app.addr, "/users?after=&offset=1&limit=2").json(),
        get(app.addr, "/users?offset=1&limit=2").json()
    );
    let after = get(app.addr, "/users?after=bulk28@x.com&limit=3").json();
    assert_eq!(
        after,
        serde_json::json!([
            ["bulk29@x.com", "t"],
            ["c@d.com", null],
            ["Mixed.Case@Example.org", "third"]
        ])
    );
    let cases: &[(&str, &str)] = &[
        (
            "/users?limit=-1",
            "Invalid limit or offset provided! Limit: -1 Offset: 0",
        ),
        (
            "/users?offset=-5",
            "Invalid limit or offset provided! Limit: 10 Offset: -5",
        ),
        ("/users?limit=abc", INVALID),
        ("/users?offset=1.5", INVALID),
        ("/users?limit=99999999999999999999", INVALID),
        // A NUL cannot be in PostgreSQL text: 400 here, not 500 (22021) from the server.
        ("/users?after=%00", INVALID),
        ("/users?after=a%00b&limit=3", INVALID),
    ];
    for (q, detail) in cases {
        let r = get(app.addr, q);
        assert_eq!((r.status, r.detail()), (400, detail.to_string()), "{q}");
    }
}

#[test]
fn protocol_level_behaviour_shared_by_every_route() {
    let (_db, app) = seeded();
    let r = get(app.addr, "/nope");
    assert_eq!((r.status, r.detail()), (404, "Not Found".to_string()));
    for (method, path, allow) in [
        ("PUT", "/user", "GET, HEAD, POST, DELETE"),
        ("POST", "/user/1", "GET, HEAD"),
        ("DELETE", "/users", "GET, HEAD"),
        ("POST", "/livez", "GET, HEAD"),
    ] {
        let r = request(app.addr, method, path, None);
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
        assert_eq!(r.detail(), "Method Not Allowed");
    }
    for r in [
        get(app.addr, "/user/1"),
        get(app.addr, "/nope"),
        get(app.addr, "/"),
    ] {
        for h in ["content-length", "content-type", "date", "server"] {
            assert!(r.header(h).is_some(), "{h} missing");
        }
    }
    // 413 decided from Content-Length, before the body is sent.
    let mut c = Conn::connect(app.addr);
    c.send(b"POST /user?email=a@b.com HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\n");
    let r = c.raw_response(false);
    assert_eq!(
        (r.status, r.detail()),
        (413, "Request body too large".to_string())
    );
    // HEAD: the headers of GET, no body.
    let mut c = Conn::connect(app.addr);
    c.request("HEAD", "/user/1", None);
    let r = c.raw_response(true);
    assert_eq!(r.status, 200);
    let get_len = get(app.addr, "/user/1").body.len().to_string();
    assert_eq!(r.header("content-length"), Some(get_len.as_str()));
    // No body bytes follow: the next response on the connection parses cleanly.
    c.request("GET", "/livez", None);
    let next = c.raw_response(false);
    assert_eq!(
        (next.status, next.text()),
        (200, r#"{"status":"ok"}"#.to_string())
    );
}

#[test]
fn static_console_openapi_and_probes() {
    let (_db, app) = seeded();
    let r = get(app.addr, "/");
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some("text/html; charset=utf-8"))
    );
    assert!(r.text().contains("<html"), "the console page");
    let r = get(app.addr, "/static/app.js");
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some("text/javascript; charset=utf-8"))
    );
    let r = get(app.addr, "/static/app.css");
    assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
    for escape in [
        "/static/../Cargo.toml",
        "/static/..%2fCargo.toml",
        "/static//etc/passwd",
        "/static/",
        "/static/nope.js",
    ] {
        assert_eq!(get(app.addr, escape).status, 404, "{escape}");
    }
    assert_eq!(
        get(app.addr, "/livez").json(),
        serde_json::json!({"status": "ok"})
    );
    assert_eq!(
        get(app.addr, "/readyz").json(),
        serde_json::json!({"status": "ready"})
    );
    let spec = get(app.addr, "/openapi.json").json();
    assert_eq!(
        spec["openapi"].as_str().map(|v| v.starts_with("3.1")),
        Some(true)
    );
}

/// One request with extra header lines on a new connection, its answer unchecked.
fn get_with(app: &App, method: &str, target: &str, headers: &[(&str, &str)]) -> Response {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: test\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    let mut c = Conn::connect(app.addr);
    c.send(req.as_bytes());
    c.raw_response(method == "HEAD")
}

/// The bytes of a file under static/, as the service must serve them.
fn static_file(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/static/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The body as sent, decoded per its Content-Encoding.
fn decoded(r: &Response) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    match r.header("content-encoding") {
        None => out.extend_from_slice(&r.body),
        Some("gzip") => {
            flate2::read::GzDecoder::new(&r.body[..])
                .read_to_end(&mut out)
                .unwrap();
        }
        Some("br") => {
            brotli::Decompressor::new(&r.body[..], 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some(other) => panic!("unexpected Content-Encoding {other}"),
    }
    out
}

const SWAGGER_JS: &str = "vendor/swagger-ui-5.35.0/swagger-ui-bundle.js";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Text files are sent compressed as the client accepts (br first, then gzip; q=0 refuses a
/// coding), always decoding to the file's bytes, with `Vary: Accept-Encoding`.
#[test]
fn static_files_are_compressed_as_the_client_accepts() {
    let db = TestDb::new();
    let app = App::start(&db);
    for (path, file) in [
        (format!("/static/{SWAGGER_JS}"), SWAGGER_JS),
        ("/docs".to_string(), "docs.html"),
        ("/".to_string(), "index.html"),
        ("/static/app.js".to_string(), "app.js"),
    ] {
        let identity = static_file(file);
        for (accept, want) in [
            (None, None),
            (Some("gzip, deflate, br, zstd"), Some("br")),
            (Some("gzip"), Some("gzip")),
            (Some("br;q=0, gzip"), Some("gzip")),
            (Some("gzip;q=0.8, br;q=0.9"), Some("br")),
            (Some("GZIP;Q=1, br;q=0.5"), Some("gzip")),
            (Some("br;q=0, gzip;q=0"), None),
            (Some("*"), Some("br")),
            (Some("*;q=0, identity"), None),
            (Some("deflate"), None),
        ] {
            let headers: Vec<(&str, &str)> =
                accept.map(|a| ("Accept-Encoding", a)).into_iter().collect();
            let r = get_with(&app, "GET", &path, &headers);
            let case = format!("{path} with Accept-Encoding {accept:?}");
            assert_eq!(r.status, 200, "{case}");
            assert_eq!(r.header("content-encoding"), want, "{case}");
            assert_eq!(r.header("vary"), Some("Accept-Encoding"), "{case}");
            assert!(decoded(&r) == identity, "{case}: decodes to the file");
            if want.is_some() {
                assert!(r.body.len() < identity.len(), "{case}: smaller");
            }
        }
    }
    // Not a text type: never compressed, so the answer does not vary.
    let r = get_with(
        &app,
        "GET",
        "/static/vendor/swagger-ui-5.35.0/LICENSE",
        &[("Accept-Encoding", "br, gzip")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        (r.header("content-encoding"), r.header("vary")),
        (None, None)
    );
    assert!(r.body == static_file("vendor/swagger-ui-5.35.0/LICENSE"));
}

/// Each variant has its own strong ETag; If-None-Match with it (weak comparison, lists, `*`)
/// is answered 304 with the validators and no body; anything else gets the file. Vendored
/// files, versioned by their directory, are cached for a year; the pages are revalidated.
#[test]
fn static_files_are_cacheable_and_revalidated() {
    let db = TestDb::new();
    let app = App::start(&db);
    let js = format!("/static/{SWAGGER_JS}");
    let plain = get_with(&app, "GET", &js, &[]);
    let br = get_with(&app, "GET", &js, &[("Accept-Encoding", "br")]);
    let gzip = get_with(&app, "GET", &js, &[("Accept-Encoding", "gzip")]);
    let tags: Vec<&str> = [&plain, &br, &gzip]
        .iter()
        .map(|r| r.header("etag").expect("an ETag"))
        .collect();
    for tag in &tags {
        assert!(
            tag.starts_with('"') && tag.ends_with('"') && tag.len() > 2,
            "strong: {tag}"
        );
    }
    assert!(
        tags[0] != tags[1] && tags[1] != tags[2] && tags[0] != tags[2],
        "{tags:?}"
    );
    assert_eq!(plain.header("cache-control"), Some(IMMUTABLE));

    let br_tag = tags[1];
    let weak = format!("W/{br_tag}");
    let listed = format!("\"other\", {br_tag}");
    let spaced = format!("\"a,b\" ,W/\"c\",{br_tag} ");
    for inm in [br_tag, weak.as_str(), listed.as_str(), spaced.as_str(), "*"] {
        let r = get_with(
            &app,
            "GET",
            &js,
            &[("Accept-Encoding", "br"), ("If-None-Match", inm)],
        );
        assert_eq!(r.status, 304, "If-None-Match: {inm}");
        assert_eq!(r.header("etag"), Some(br_tag), "{inm}");
        assert_eq!(r.header("vary"), Some("Accept-Encoding"), "{inm}");
        assert_eq!(r.header("cache-control"), Some(IMMUTABLE), "{inm}");
        assert_eq!(r.header("content-length"), None, "{inm}");
        assert!(r.body.is_empty(), "{inm}");
    }
    // Another variant's tag, or none that matches: the file.
    for inm in [tags[2], "\"nope\"", "W/\"nope\", \"\""] {
        let r = get_with(
            &app,
            "GET",
            &js,
            &[("Accept-Encoding", "br"), ("If-None-Match", inm)],
        );
        assert_eq!(r.status, 200, "If-None-Match: {inm}");
        assert_eq!(r.header("etag"), Some(br_tag), "{inm}");
        assert!(r.body == br.body, "{inm}");
    }

    for (path, cache) in [
        ("/", "no-cache"),
        ("/docs", "no-cache"),
        ("/redoc", "no-cache"),
        ("/static/app.js", "no-cache"),
        ("/static/vendor/redoc-2.5.4/redoc.standalone.js", IMMUTABLE),
        ("/static/vendor/swagger-ui-5.35.0/swagger-ui.css", IMMUTABLE),
        ("/openapi.json", "no-cache"),
    ] {
        let r = get_with(&app, "GET", path, &[("Accept-Encoding", "gzip")]);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("cache-control"), Some(cache), "{path}");
        let tag = r
            .header("etag")
            .unwrap_or_else(|| panic!("{path}: an ETag"));
        let again = get_with(
            &app,
            "GET",
            path,
            &[("Accept-Encoding", "gzip"), ("If-None-Match", tag)],
        );
        assert_eq!(again.status, 304, "{path}");
    }
}

/// HEAD gets the headers GET gets, the variant's Content-Length included, and no body: the
/// next answer on the connection follows the head at once.
#[test]
fn head_of_a_static_file_is_its_get_without_the_body() {
    let db = TestDb::new();
    let app = App::start(&db);
    let js = format!("/static/{SWAGGER_JS}");
    for (accept, encoding) in [
        ("br", Some("br")),
        ("gzip", Some("gzip")),
        ("identity", None),
    ] {
        let got = get_with(&app, "GET", &js, &[("Accept-Encoding", accept)]);
        assert_eq!(got.header("content-encoding"), encoding, "{accept}");
        let mut c = Conn::connect(app.addr);
        let req = format!("HEAD {js} HTTP/1.1\r\nHost: test\r\nAccept-Encoding: {accept}\r\n\r\n");
        c.send(format!("{req}GET /livez HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        let head = c.head_response();
        assert_eq!(head.status, 200, "{accept}");
        for name in [
            "content-type",
            "content-length",
            "content-encoding",
            "etag",
            "vary",
            "cache-control",
        ] {
            assert_eq!(head.header(name), got.header(name), "{accept}: {name}");
        }
        assert_eq!(
            head.header("content-length"),
            Some(got.body.len().to_string().as_str()),
            "{accept}"
        );
        let next = c.response();
        assert_eq!(
            (next.status, next.text()),
            (200, r#"{"status":"ok"}"#.to_string()),
            "{accept}: no body between"
        );
    }
}

/// The OpenAPI document stays true: every documented path and method answers (not 404/405),
/// and every route the service answers is documented.
#[test]
fn openapi_document_matches_the_server() {
    let (_db, app) = seeded();
    let spec = get(app.addr, "/openapi.json").json();
    let paths = spec["paths"].as_object().expect("paths");
    for (path, item) in paths {
        let concrete = path.replace("{id}", "1").replace("{path}", "app.js");
        for method in item.as_object().unwrap().keys() {
            let method = method.to_ascii_uppercase();
            if !["GET", "POST", "DELETE", "HEAD"].contains(&method.as_str()) {
                continue;
            }
            let body = (method == "POST").then_some(&br#"{"text":"x"}"#[..]);
            let target = if concrete == "/user" {
                "/user?email=doc@b.com".to_string()
            } else {
                concrete.clone()
            };
            let r = request(app.addr, &method, &target, body);
            let unrouted = r.status == 405 || (r.status == 404 && r.detail() == "Not Found");
            assert!(
                !unrouted,
                "{method} {path} is documented but not routed: {}",
                r.status
            );
        }
    }
    // Every route the service has is documented (the route list, not a copy of it).
    for route in Route::ALL {
        if route == Route::Unmatched {
            continue;
        }
        assert!(
            paths.contains_key(route.template()),
            "{} is not documented",
            route.template()
        );
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (_db, app) = seeded();
    let mut c = Conn::connect(app.addr);
    let mut batch = Vec::new();
    for id in [3, 1, 42, 2] {
        batch.extend_from_slice(format!("GET /user/{id} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    }
    c.send(&batch);
    let got: Vec<(u16, String)> = (0..4)
        .map(|_| {
            let r = c.raw_response(false);
            (r.status, r.text())
        })
        .collect();
    assert_eq!(got[0].0, 200);
    assert!(got[0].1.contains("\"id\":3"));
    assert!(got[1].1.contains("\"id\":1"));
    assert_eq!(got[2].0, 404);
    assert!(got[3].1.contains("\"id\":2"));
}

/// While shutting down, `/readyz` answers 503 so a load balancer stops sending, and every
/// other route is served as usual. The service is built in-process exactly as `serve` builds it
/// (`records::app::build`), to hold it between the two phases.
#[test]
fn readyz_turns_503_while_draining() {
    use std::time::Duration;
    crate::support::init_runtime();
    let db = TestDb::new();
    let p = db.params();
    let static_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/static");
    let cfg = records_service::config::Source::new(|name: &str| match name {
        "POSTGRES_DB_HOST" => Some(p.host.clone()),
        "POSTGRES_DB_PORT" => Some(p.port.to_string()),
        "POSTGRES_DB_NAME" => Some(p.dbname.clone()),
        "POSTGRES_DB_USER" => Some(p.user.clone()),
        "POSTGRES_DB_PASSWORD" => Some(p.password.clone().unwrap_or_default()),
        "SERVER_PORT" => Some("0".into()),
        "WORKERS" => Some("2".into()),
        "STATIC_DIR" => Some(static_dir.into()),
        _ => None,
    })
    .config()
    .unwrap();
    let running = records_service::records::app::build(&cfg).unwrap();
    let addr = running.local_addr();
    assert_eq!(get(addr, "/readyz").status, 200);
    running.begin_draining();
    let r = get(addr, "/readyz");
    assert_eq!((r.status, r.detail()), (503, "Shutting down".to_string()));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(get(addr, "/livez").status, 200);
    assert_eq!(get(addr, "/").status, 200, "served as usual while draining");
    assert!(running.shutdown(Duration::ZERO, Duration::from_secs(5)));
}
