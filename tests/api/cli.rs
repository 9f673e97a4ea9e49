//! The command line: configuration errors, `migrate` and `seed`, as a user runs them.

use std::process::Stdio;
use std::time::Duration;

use crate::support::app::{command, env_for, readable, App};
use crate::support::pg::{server, TestDb};

fn run(env: &[(String, String)], args: &[&str]) -> (i32, String) {
    let out = command(env)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run records-service");
    (
        out.status.code().unwrap_or(-1),
        readable(&String::from_utf8_lossy(&out.stderr)) + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn help_explains_each_command() {
    let (code, text) = run(&[], &["--help"]);
    assert_eq!(code, 0);
    for word in ["serve", "migrate", "seed", "healthcheck", ".env"] {
        assert!(text.contains(word), "{word} missing from help:\n{text}");
    }
    let (code, text) = run(&[], &["frobnicate"]);
    assert_eq!(code, 2);
    assert!(
        text.contains("unrecognized subcommand 'frobnicate'"),
        "{text}"
    );
    let (code, text) = run(&[], &["seed", "--rows", "-5"]);
    assert_eq!(code, 2);
    assert!(text.contains("--rows must be a whole number"), "{text}");
    let (code, text) = run(&[], &["seed"]);
    assert_eq!(code, 2);
    assert!(text.contains("--rows <N>"), "seed needs --rows: {text}");
}

#[test]
fn version_prints_the_version() {
    let (code, text) = run(&[], &["--version"]);
    assert_eq!(code, 0);
    assert_eq!(
        text.trim(),
        format!("records-service {}", env!("CARGO_PKG_VERSION"))
    );
}

/// `help seed` and `seed --help` both show seed's own flags, not only the command list.
#[test]
fn each_command_has_its_own_help() {
    for args in [&["help", "seed"][..], &["seed", "--help"]] {
        let (code, text) = run(&[], args);
        assert_eq!(code, 0, "{args:?}: {text}");
        for flag in ["--rows <N>", "--if-empty", "Usage: records-service seed"] {
            assert!(text.contains(flag), "{args:?}: {flag} missing:\n{text}");
        }
    }
    let (code, text) = run(&[], &["help", "healthcheck"]);
    assert_eq!(code, 0);
    assert!(text.contains("/readyz"), "{text}");
}

/// A mistyped command names the one meant, in a few lines, not the whole help.
#[test]
fn a_mistyped_command_gets_a_suggestion() {
    let (code, text) = run(&[], &["serv"]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("similar") && text.contains("'serve'"),
        "{text}"
    );
    assert!(
        !text.contains("healthcheck") && text.lines().count() < 10,
        "the mistake, not the whole help:\n{text}"
    );
    let (code, text) = run(&[], &["seed", "--row", "5"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("'--rows'"), "{text}");
}

#[test]
fn bad_configuration_stops_the_process_naming_the_variable() {
    let base = env_for(server(), "records");
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("POSTGRES_DB_HOST", None, "POSTGRES_DB_HOST: is not set"),
        ("POSTGRES_DB_NAME", None, "POSTGRES_DB_NAME: is not set"),
        (
            "POSTGRES_DB_PORT",
            Some("fivefourthreetwo"),
            "POSTGRES_DB_PORT: \"fivefourthreetwo\" is not a whole number",
        ),
        (
            "SERVER_PORT",
            Some("99999"),
            "SERVER_PORT: 99999 is out of range (0 to 65535)",
        ),
        ("WORKERS", Some("0"), "WORKERS: 0 is out of range"),
        (
            "HTTP_HEADER_TIMEOUT_MS",
            Some("ten"),
            "HTTP_HEADER_TIMEOUT_MS",
        ),
        // Read before the logger exists: still one clear line.
        (
            "LOG_FORMAT",
            Some("xml"),
            "error: configuration error: LOG_FORMAT: \"xml\" is not json or text",
        ),
    ];
    for (var, value, message) in cases {
        let mut env = base.clone();
        env.retain(|(k, _)| k != var);
        if let Some(v) = value {
            env.push((var.to_string(), v.to_string()));
        }
        let (code, text) = run(&env, &["serve"]);
        assert_eq!(code, 1, "{var}={value:?}: {text}");
        assert!(text.contains(message), "{var}={value:?}: {text}");
        assert!(!text.contains("panicked"), "{text}");
        assert!(
            !text.contains("configuration error: configuration error"),
            "said once: {text}"
        );
    }
}

#[test]
fn database_errors_at_start_are_explained() {
    let s = server();
    let db = TestDb::new();
    let mut wrong_password = env_for(s, &db.name);
    wrong_password.retain(|(k, _)| k != "POSTGRES_DB_USER" && k != "POSTGRES_DB_PASSWORD");
    wrong_password.push(("POSTGRES_DB_USER".into(), "scram_user".into()));
    wrong_password.push(("POSTGRES_DB_PASSWORD".into(), "wrong".into()));
    let (code, text) = run(&wrong_password, &["serve"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("refused the credentials"), "{text}");

    // The client's own refusal (an MD5 password asked for over plain TCP) is not a wrong
    // password and is not reported as one.
    let mut md5 = env_for(s, &db.name);
    md5.retain(|(k, _)| k != "POSTGRES_DB_USER" && k != "POSTGRES_DB_PASSWORD");
    md5.push(("POSTGRES_DB_USER".into(), "md5_user".into()));
    md5.push(("POSTGRES_DB_PASSWORD".into(), "md5-secret".into()));
    let (code, text) = run(&md5, &["migrate"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("authentication with PostgreSQL at")
            && text.contains("set require_auth=md5 to allow it")
            && !text.contains("refused the credentials")
            && !text.contains("md5-secret"),
        "{text}"
    );

    let mut unknown_db = env_for(s, "no_such_database");
    unknown_db.retain(|_| true);
    let (code, text) = run(&unknown_db, &["migrate"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("has no database \"no_such_database\""),
        "{text}"
    );

    // Nothing listens on port 1: refused at once.
    let mut unreachable = env_for(s, &db.name);
    unreachable.retain(|(k, _)| k != "POSTGRES_DB_PORT");
    unreachable.push(("POSTGRES_DB_PORT".into(), "1".into()));
    let started = std::time::Instant::now();
    let (code, text) = run(&unreachable, &["migrate"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("cannot reach PostgreSQL at"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a clear failure, not a hang"
    );
}

#[test]
fn migrate_is_idempotent_and_safe_concurrently() {
    let s = server();
    let name = format!("records_bare_{}", std::process::id());
    s.execute(&format!("DROP DATABASE IF EXISTS {name}"));
    s.execute(&format!("CREATE DATABASE {name}"));
    let env = env_for(s, &name);
    // Two processes at once: both succeed, the migration is applied exactly once.
    let a = command(&env)
        .arg("migrate")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let b = command(&env)
        .arg("migrate")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let (code, text) = run(&env, &["migrate"]);
    assert_eq!(code, 0);
    assert!(text.contains("up to date"), "{text}");
    let c = records_service::pg::connect_once(&s.params(&name)).unwrap();
    let r = c
        .simple_query(
            "SELECT count(*) FROM schema_migrations",
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(r.rows[0].text(0).unwrap(), Some("1"));
    c.close();
    s.execute(&format!("DROP DATABASE {name} WITH (FORCE)"));
}

#[test]
fn seed_tops_the_table_up_to_contiguous_ids() {
    let db = TestDb::new();
    let env = env_for(&db.server, &db.name);
    let (code, text) = run(&env, &["seed", "--rows", "1000"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("1000/1000 rows"),
        "progress on stderr: {text}"
    );
    let (code, _) = run(&env, &["seed", "--rows", "1500"]);
    assert_eq!(code, 0);
    let (code, text) = run(&env, &["seed", "--rows", "1500"]);
    assert_eq!(code, 0);
    assert!(text.contains("nothing to do"), "{text}");
    assert_eq!(
        db.scalar("SELECT count(*) || ' ' || min(id) || ' ' || max(id) || ' ' || count(DISTINCT email) FROM records").as_deref(),
        Some("1500 1 1500 1500")
    );
    // Every generated email passes the service's own validation; texts fit the column.
    let reply = db.execute("SELECT email::text, coalesce(text, '') FROM records");
    for row in &reply.rows {
        let email = row.text(0).unwrap().unwrap();
        assert!(
            records_service::records::EmailAddress::parse(email).is_ok(),
            "{email}"
        );
        assert!(row.text(1).unwrap().unwrap().chars().count() <= 100);
    }
    // New records continue after the seeded ids.
    db.execute("INSERT INTO records (email, text) VALUES ('after@seed.com', 'x')");
    assert_eq!(
        db.scalar("SELECT id FROM records WHERE email = 'after@seed.com'")
            .as_deref(),
        Some("1501")
    );
}

/// With stderr not a terminal (a pipe here, a file or a container's log in production), seed's
/// progress is log events, not a progress bar: no escape codes, no carriage returns.
#[test]
fn seed_progress_to_a_pipe_is_log_lines() {
    let db = TestDb::new();
    let env = env_for(&db.server, &db.name);
    let out = command(&env)
        .args(["seed", "--rows", "250000"])
        .stdin(Stdio::null())
        .output()
        .expect("run records-service seed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        !err.contains('\x1b') && !err.contains('\r'),
        "terminal control in a pipe: {err:?}"
    );
    let progress: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("seed_progress"))
        .collect();
    let text = readable(&progress.join("\n"));
    for line in [
        "inserting ids 1 to 250000",
        "100000/250000 rows",
        "250000/250000 rows",
        "done, 250000 rows",
    ] {
        assert!(text.contains(line), "{line} missing: {text}");
    }
}

/// `healthcheck` (what the image's HEALTHCHECK runs): 0 against a ready service, 1 against a
/// port where nothing answers, and it needs no database settings.
#[test]
fn healthcheck_probes_readyz() {
    let db = TestDb::new();
    let app = App::start(&db);
    let port = app.addr.port().to_string();
    let only_port = [
        ("SERVER_HOST".to_string(), "0.0.0.0".to_string()),
        ("SERVER_PORT".to_string(), port),
    ];
    let (code, text) = run(&only_port, &["healthcheck"]);
    assert_eq!((code, text.trim()), (0, "ready"));
    let closed = [("SERVER_PORT".to_string(), "1".to_string())];
    let (code, text) = run(&closed, &["healthcheck"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("cannot connect"), "{text}");
    // Up but not ready: its database is unreachable, /readyz answers 503.
    let no_db = App::start_with(&db, &[("POSTGRES_DB_PORT", "1")]);
    let port = [("SERVER_PORT".to_string(), no_db.addr.port().to_string())];
    let (code, text) = run(&port, &["healthcheck"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("not ready: HTTP/1.1 503"), "{text}");
}

/// A port already served is refused, not shared. The service listens through `http::bind`, not
/// may's own bind, which sets SO_REUSEPORT: with it a second instance started by mistake on the
/// same port silently took half of the connections (and two servers bound to port 0 could be
/// handed the same one).
#[test]
fn a_port_in_use_is_refused_not_shared() {
    let db = TestDb::new();
    let first = App::start(&db);
    let mut env = env_for(&db.server, &db.name);
    env.retain(|(k, _)| k != "SERVER_PORT");
    env.push(("SERVER_PORT".into(), first.addr.port().to_string()));
    let mut second = command(&env)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a second records-service");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() >= deadline {
            let _ = second.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(second.stderr.as_mut().unwrap(), &mut err).unwrap();
    let err = readable(&err);
    assert!(
        status.is_some_and(|s| !s.success()),
        "a second instance serves the same port: {err}"
    );
    assert!(
        err.contains("cannot listen on") && err.contains("in use"),
        "{err}"
    );
    let r = crate::support::http::get(first.addr, "/livez");
    assert_eq!(r.status, 200, "the first instance serves on");
}
