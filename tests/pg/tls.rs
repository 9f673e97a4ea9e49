//! TLS and the authentication policy against real PostgreSQL servers started with
//! `ssl = on` and a test CA made with the `openssl` command: every sslmode, certificate
//! verification errors, SCRAM-SHA-256-PLUS channel binding, the default refusal of cleartext
//! and MD5 passwords without TLS, client certificates, pg_hba.conf rejections explained,
//! several hosts with target_session_attrs, and a pipelined load over one TLS session.

use std::sync::Arc;
use std::time::Duration;

use crate::support;
use crate::support::pg::{
    ed25519_signed_server, server, tls_server, wrong_name_server, Server, TestPki,
};
use records_service::pg::{
    self, AuthMethod, ChannelBinding, Client, ConnectParams, ErrorKind, Param, RootCert, SslMode,
    Statement, TargetSessionAttrs,
};

const T: Duration = Duration::from_secs(10);

fn params(s: &Server, user: &str, password: Option<&str>, mode: SslMode) -> ConnectParams {
    let mut p = ConnectParams::new(&s.host, s.port, user, password, "postgres");
    p.application_name = "records-tests".into();
    p.statement_timeout = Duration::ZERO;
    p.tls.mode = mode;
    p
}

fn with_root(mut p: ConnectParams, ca: &std::path::Path) -> ConnectParams {
    p.tls.root_cert = Some(RootCert::File(ca.to_path_buf()));
    p
}

/// Connects, checks who it is and whether the session is encrypted, as the server sees it.
fn connect_as(p: &ConnectParams) -> Result<bool, pg::Error> {
    let c = pg::connect_once(p)?;
    let r = c
        .simple_query(
            "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            T,
        )
        .unwrap();
    c.close();
    assert_eq!(r.rows[0].text(0).unwrap(), Some(p.user.as_str()));
    Ok(r.rows[0].text(1).unwrap() == Some("t"))
}

fn external_shared_server() -> bool {
    std::env::var("DATABASE_URL").is_ok() || std::env::var("POSTGRES_DB_HOST").is_ok()
}

#[test]
fn each_sslmode_against_a_tls_server() {
    let s = tls_server();
    let pki = TestPki::get();
    let user = |mode| params(s, "ssl_only", Some("ssl-secret"), mode);

    // disable: the hostnossl reject line answers, and the error says so.
    let e = connect_as(&user(SslMode::Disable)).expect_err("hostssl only");
    assert_eq!(e.kind(), ErrorKind::AuthFailed, "{e}");
    assert_eq!(e.code(), Some("28000"), "{e}");
    assert!(
        e.message()
            .contains("the server's pg_hba.conf rejects this connection")
            && e.message().contains("without TLS")
            && e.message().contains("sslmode=require")
            && e.message().contains("not a wrong password"),
        "{e}"
    );
    // The same for "no pg_hba.conf entry" (cert_user has a hostssl line only).
    let e = connect_as(&params(s, "cert_user", None, SslMode::Disable)).expect_err("no entry");
    assert_eq!(e.kind(), ErrorKind::AuthFailed, "{e}");
    assert!(
        e.message()
            .contains("the server's pg_hba.conf rejects this connection")
            && e.message().contains("no pg_hba.conf entry"),
        "{e}"
    );

    assert!(connect_as(&user(SslMode::Prefer)).unwrap(), "prefer: TLS");
    assert!(connect_as(&user(SslMode::Require)).unwrap(), "require: TLS");
    assert!(
        connect_as(&with_root(user(SslMode::VerifyCa), &pki.ca)).unwrap(),
        "verify-ca with the right CA"
    );
    for host in ["localhost", "127.0.0.1"] {
        let mut p = with_root(user(SslMode::VerifyFull), &pki.ca);
        p.host = host.into();
        assert!(connect_as(&p).unwrap(), "verify-full, host {host}");
    }

    // The wrong CA: verify-ca, and require with sslrootcert (libpq verifies it like verify-ca).
    for mode in [SslMode::VerifyCa, SslMode::VerifyFull, SslMode::Require] {
        let e = connect_as(&with_root(user(mode), &pki.other_ca)).expect_err("wrong CA");
        assert_eq!(e.kind(), ErrorKind::ConnectFailed, "{e}");
        assert!(
            e.message().contains(&format!(
                "the server's certificate is not signed by a CA in sslrootcert {}",
                pki.other_ca.display()
            )) && e.message().contains("unknown CA"),
            "{mode:?}: {e}"
        );
    }

    // verify-* need sslrootcert: said before anything is sent.
    for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
        let e = connect_as(&user(mode)).expect_err("no sslrootcert");
        assert_eq!(e.kind(), ErrorKind::ConnectFailed, "{e}");
        assert!(e.message().contains("needs sslrootcert"), "{mode:?}: {e}");
    }
    // The OS store does not hold the test CA (or holds nothing at all).
    let mut p = user(SslMode::VerifyFull);
    p.tls.root_cert = Some(RootCert::System);
    let e = connect_as(&p).expect_err("the test CA is not in the system store");
    assert!(e.message().contains("sslrootcert=system"), "{e}");
}

#[test]
fn verify_full_checks_the_name_and_verify_ca_does_not() {
    let s = wrong_name_server();
    let pki = TestPki::get();
    for host in ["127.0.0.1", "localhost"] {
        let mut p = with_root(
            params(s, "scram_user", Some("scram-secret"), SslMode::VerifyFull),
            &pki.ca,
        );
        p.host = host.into();
        let e = connect_as(&p).expect_err("the certificate names db.example.com");
        assert_eq!(e.kind(), ErrorKind::ConnectFailed, "{e}");
        assert!(
            e.message().contains(&format!(
                "the server's certificate is for db.example.com, which does not match host {host}"
            )),
            "{e}"
        );
        p.tls.mode = SslMode::VerifyCa;
        assert!(connect_as(&p).unwrap(), "verify-ca ignores the name");
        // require with sslrootcert: the chain, not the name.
        p.tls.mode = SslMode::Require;
        assert!(connect_as(&p).unwrap(), "require with sslrootcert");
    }
}

#[test]
fn a_server_without_tls() {
    if external_shared_server() {
        eprintln!("external server: whether it has TLS is not known");
        return;
    }
    let s = server();
    let pki = TestPki::get();
    for mode in [SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull] {
        let p = with_root(params(s, "postgres", None, mode), &pki.ca);
        let e = connect_as(&p).expect_err("no TLS on this server");
        assert_eq!(e.kind(), ErrorKind::ConnectFailed, "{e}");
        let name = match mode {
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            _ => "verify-full",
        };
        assert_eq!(
            e.message(),
            format!("the server does not support TLS and sslmode={name}"),
        );
    }
    assert!(
        !connect_as(&params(s, "postgres", None, SslMode::Prefer)).unwrap(),
        "prefer: plain TCP when the server says N"
    );
}

/// libpq's prefer: when the server refuses the session over TLS, try again without it.
#[test]
fn prefer_falls_back_to_plain_tcp_when_pg_hba_refuses_tls() {
    let s = tls_server();
    assert!(
        !connect_as(&params(s, "plain_only", None, SslMode::Prefer)).unwrap(),
        "prefer ended up on plain TCP"
    );
    let e = connect_as(&params(s, "plain_only", None, SslMode::Require)).expect_err("reject");
    assert_eq!(e.kind(), ErrorKind::AuthFailed, "{e}");
    assert!(
        e.message()
            .contains("the server's pg_hba.conf rejects this connection")
            && e.message().contains("with TLS")
            && e.message().contains("hostnossl"),
        "{e}"
    );
}

#[test]
fn scram_sha_256_plus_binds_the_tls_channel() {
    // Both certificate hashes: ecdsa-with-SHA256 (localhost) and ecdsa-with-SHA384 (wrong
    // name). A wrong tls-server-end-point hash fails the server's SCRAM check.
    for s in [tls_server(), wrong_name_server()] {
        let mut p = params(s, "scram_user", Some("scram-secret"), SslMode::Require);
        p.channel_binding = ChannelBinding::Require;
        assert!(connect_as(&p).unwrap(), "channel_binding=require over TLS");
        p.password = Some("wrong".into());
        let e = connect_as(&p).expect_err("a wrong password still fails");
        assert_eq!(e.code(), Some("28P01"), "{e}");

        // Without TLS there is no channel to bind.
        let mut p = params(s, "scram_user", Some("scram-secret"), SslMode::Disable);
        p.channel_binding = ChannelBinding::Require;
        let e = connect_as(&p).expect_err("channel_binding=require over plain TCP");
        assert_eq!(e.kind(), ErrorKind::AuthFailed, "{e}");
        assert!(
            e.message().contains("channel_binding=require") && e.message().contains("no TLS"),
            "{e}"
        );
        // Other methods never bind the channel (MD5 allowed by require_auth, to get that far).
        let mut p = params(s, "md5_user", Some("md5-secret"), SslMode::Require);
        p.channel_binding = ChannelBinding::Require;
        p.require_auth = Some(vec![AuthMethod::Md5]);
        let e = connect_as(&p).expect_err("MD5 cannot bind");
        assert!(
            e.message()
                .contains("only SCRAM-SHA-256-PLUS over TLS binds the channel"),
            "{e}"
        );
        // prefer (the default) and disable over TLS work too.
        for binding in [ChannelBinding::Prefer, ChannelBinding::Disable] {
            let mut p = params(s, "scram_user", Some("scram-secret"), SslMode::Require);
            p.channel_binding = binding;
            assert!(connect_as(&p).unwrap(), "{binding:?}");
        }
    }
}

#[test]
fn cleartext_and_md5_need_tls_or_require_auth() {
    let s = tls_server();
    for (user, password, what, name) in [
        (
            "clear_user",
            "clear-secret",
            "a cleartext password",
            "password",
        ),
        ("md5_user", "md5-secret", "an MD5 password", "md5"),
    ] {
        // Without TLS, and with TLS whose certificate nobody checked (a man in the middle
        // can terminate that TLS and ask for the password in place of SCRAM): refused.
        for mode in [SslMode::Disable, SslMode::Prefer, SslMode::Require] {
            let e = connect_as(&params(s, user, Some(password), mode))
                .expect_err("refused to an unverified server");
            assert_eq!(e.kind(), ErrorKind::AuthFailed, "{e}");
            assert_eq!(e.code(), None, "refused by the client, before sending: {e}");
            assert_eq!(
                e.message(),
                format!(
                    "the server asked for {what} over a connection whose server is not \
                     verified (no TLS, or TLS without sslrootcert): a man in the middle could \
                     be asking; refused (set require_auth={name} to allow it, or \
                     sslmode=verify-full with sslrootcert)"
                ),
                "{mode:?}"
            );
        }
        // A verified server may ask for them.
        let pki = TestPki::get();
        for mode in [SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull] {
            let p = with_root(params(s, user, Some(password), mode), &pki.ca);
            assert!(connect_as(&p).unwrap(), "{mode:?} with sslrootcert");
        }
        let mut p = params(s, user, Some(password), SslMode::Disable);
        p.require_auth = Some(vec![AuthMethod::Password, AuthMethod::Md5]);
        assert!(
            !connect_as(&p).unwrap(),
            "allowed by require_auth over plain TCP"
        );
    }
    // An explicit list allows exactly its methods, TLS or not.
    let mut p = params(s, "md5_user", Some("md5-secret"), SslMode::Require);
    p.require_auth = Some(vec![AuthMethod::ScramSha256]);
    let e = connect_as(&p).expect_err("md5 not listed");
    assert_eq!(
        e.message(),
        "the server asked for an MD5 password, which require_auth=scram-sha-256 does not \
         allow; refused"
    );
    let mut p = params(s, "trust_user", None, SslMode::Require);
    p.require_auth = Some(vec![AuthMethod::Md5]);
    let e = connect_as(&p).expect_err("trust is not md5");
    assert!(e.message().contains("without a password"), "{e}");
    p.require_auth = Some(vec![AuthMethod::None]);
    assert!(connect_as(&p).unwrap());
    let mut p = params(s, "scram_user", Some("scram-secret"), SslMode::Disable);
    p.require_auth = Some(vec![AuthMethod::ScramSha256]);
    assert!(!connect_as(&p).unwrap(), "SCRAM over plain TCP is allowed");
}

#[test]
fn client_certificate_authentication() {
    let s = tls_server();
    let pki = TestPki::get();
    let mut p = with_root(params(s, "cert_user", None, SslMode::VerifyFull), &pki.ca);
    p.tls.cert = Some(pki.client_cert.clone());
    p.tls.key = Some(pki.client_key.clone());
    assert!(connect_as(&p).unwrap(), "cert_user by its certificate");

    // A certificate from another CA: the server ends the handshake.
    let mut stranger = p.clone();
    stranger.tls.cert = Some(pki.stranger_cert.clone());
    stranger.tls.key = Some(pki.stranger_key.clone());
    let e = connect_as(&stranger).expect_err("unknown CA on the server's side");
    assert!(e.is_connection_error(), "{e}");
    assert!(
        e.message().contains("rejected the client certificate"),
        "{e}"
    );

    // No certificate: the cert method refuses.
    let mut none = p.clone();
    none.tls.cert = None;
    none.tls.key = None;
    let e = connect_as(&none).expect_err("no client certificate");
    assert_eq!(e.kind(), ErrorKind::AuthFailed, "{e}");
    assert!(e.message().contains("certificate"), "{e}");

    // A certificate without its key is a configuration error.
    let mut half = p.clone();
    half.tls.key = None;
    let e = connect_as(&half).expect_err("sslcert without sslkey");
    assert!(e.message().contains("sslcert and sslkey"), "{e}");
}

const ECHO: Statement = Statement {
    name: "echo",
    sql: "SELECT $1::int4, 'n' || $1::int4",
};
const ECHO_TEXT: Statement = Statement {
    name: "echo_text",
    sql: "SELECT $1::text, length($1::text)",
};

/// 2,000 lookups from 1,000 coroutines on one client over one TLS session, some with 40 KB
/// in each direction (many TLS records per message), all answered to the right caller.
#[test]
fn pipelined_load_over_one_tls_session() {
    let s = tls_server();
    let pki = TestPki::get();
    let p = with_root(
        params(s, "scram_user", Some("scram-secret"), SslMode::VerifyFull),
        &pki.ca,
    );
    let client = Arc::new(Client::start(p, &[ECHO, ECHO_TEXT]));
    client.wait_connected(T).expect("connect over TLS");
    let handles: Vec<_> = (0..1000)
        .map(|i: i32| {
            let client = client.clone();
            // SAFETY: the coroutine only blocks on may primitives (the client).
            unsafe {
                may::coroutine::spawn(move || {
                    for round in 0..2 {
                        let n = i * 2 + round;
                        if n % 50 == 0 {
                            let text = format!("{n:08}").repeat(5_000);
                            let reply = client
                                .query_read(ECHO_TEXT.name, &[Param::Text(&text)], T)
                                .expect("big echo");
                            let row = &reply.rows[0];
                            assert_eq!(row.text(0).unwrap(), Some(text.as_str()), "caller {n}");
                            assert_eq!(row.int4(1).unwrap(), Some(40_000));
                        } else {
                            let reply = client
                                .query_read(ECHO.name, &[Param::Int4(n)], T)
                                .expect("echo");
                            let row = &reply.rows[0];
                            assert_eq!(
                                (row.int4(0).unwrap(), row.text(1).unwrap()),
                                (Some(n), Some(format!("n{n}").as_str())),
                                "caller {i} round {round}"
                            );
                        }
                    }
                })
            }
        })
        .collect();
    for h in handles {
        h.join().expect("every caller got its own answer");
    }
    let stats = client.stats();
    let queries = stats.queries.load(std::sync::atomic::Ordering::Relaxed);
    let writes = stats.writes.load(std::sync::atomic::Ordering::Relaxed);
    assert!(queries >= 2000, "{queries}");
    assert!(
        writes < queries / 2,
        "pipelined over TLS: {queries} queries in {writes} writes"
    );
    assert_eq!(client.connects(), 1, "one connection throughout");
    let r = client
        .simple_query(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            T,
        )
        .unwrap();
    assert_eq!(r.rows[0].text(0).unwrap(), Some("t"));
    client.close();
}

/// Several hosts: the first that accepts, or with read-write the first that is not read-only.
#[test]
fn several_hosts_and_target_session_attrs() {
    if external_shared_server() {
        eprintln!("external server: needs the throwaway cluster");
        return;
    }
    let plain = server();
    let tls = tls_server();
    let db = format!("rw_check_{}", std::process::id());
    plain.execute(&format!("CREATE DATABASE {db}"));
    tls.execute(&format!("CREATE DATABASE {db}"));
    // Read-only for every new session on the TLS cluster, as on a standby.
    tls.execute(&format!(
        "ALTER DATABASE {db} SET default_transaction_read_only = on"
    ));
    let hosts = |first: &Server, more: &[&Server], attrs| {
        let mut p = ConnectParams::new(&first.host, first.port, "postgres", None, &db);
        p.application_name = "records-tests".into();
        p.more_hosts = more.iter().map(|s| (s.host.clone(), s.port)).collect();
        p.target_session_attrs = attrs;
        p
    };
    let port_of = |p: &ConnectParams| {
        let c = pg::connect_once(p)?;
        let r = c.simple_query("SHOW port", T).unwrap();
        c.close();
        Ok::<_, pg::Error>(r.rows[0].text(0).unwrap().unwrap().to_string())
    };
    let (plain_port, tls_port) = (plain.port.to_string(), tls.port.to_string());
    assert_eq!(
        port_of(&hosts(tls, &[plain], TargetSessionAttrs::Any)).unwrap(),
        tls_port,
        "any: the first host"
    );
    assert_eq!(
        port_of(&hosts(tls, &[plain], TargetSessionAttrs::ReadWrite)).unwrap(),
        plain_port,
        "read-write: the read-only first host is skipped"
    );
    let e = port_of(&hosts(tls, &[], TargetSessionAttrs::ReadWrite)).expect_err("read-only");
    assert!(
        e.message()
            .contains(&format!("{}:{} is read-only", tls.host, tls.port)),
        "{e}"
    );
    let e = port_of(&hosts(tls, &[tls], TargetSessionAttrs::ReadWrite)).expect_err("none");
    assert!(
        e.message()
            .starts_with("no host is writable (target_session_attrs=read-write)"),
        "{e}"
    );
    // A host that refuses connections is passed over.
    let dead = Server {
        host: "127.0.0.1".into(),
        port: 1,
        ..plain.clone()
    };
    assert_eq!(
        port_of(&hosts(&dead, &[plain], TargetSessionAttrs::Any)).unwrap(),
        plain_port
    );
    let e = port_of(&hosts(&dead, &[&dead], TargetSessionAttrs::Any)).expect_err("all down");
    assert_eq!(e.kind(), ErrorKind::ConnectFailed, "{e}");
    assert!(
        e.message()
            .starts_with("no host accepted the connection: 127.0.0.1:1: "),
        "{e}"
    );
    plain.execute(&format!("DROP DATABASE {db}"));
    tls.execute(&format!("DROP DATABASE {db}"));
}

/// CVE-2021-23222: bytes after the server's 'S' and before the handshake are refused. No
/// PostgreSQL sends them; a listener in the test plays the man in the middle.
#[test]
fn bytes_injected_before_the_handshake_are_refused() {
    support::init_runtime();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mitm = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut socket, _) = listener.accept().unwrap();
        let mut request = [0u8; 8];
        socket.read_exact(&mut request).unwrap();
        assert_eq!(request, [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f], "SSLRequest");
        // 'S' and, in the same segment, a forged AuthenticationOk.
        socket.write_all(b"SR\0\0\0\x08\0\0\0\0").unwrap();
        let mut rest = Vec::new();
        let _ = socket.read_to_end(&mut rest);
    });
    let mut p = ConnectParams::new("127.0.0.1", port, "postgres", None, "postgres");
    p.tls.mode = SslMode::Require;
    let e = pg::connect_once(&p).expect_err("injected bytes");
    assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
    assert!(
        e.message()
            .contains("unexpected bytes after its answer to the TLS request"),
        "{e}"
    );
    mitm.join().unwrap();
}

/// The README's examples, end to end: the service binary itself, configured by nothing but a
/// `DATABASE_URL` with each sslmode, migrates and serves over TLS against a server whose
/// pg_hba.conf accepts this user over TLS only; `sslmode=disable` is refused with the reason.
/// The environment of a service binary configured by `DATABASE_URL` alone, one worker, any port.
fn service_env(url: &str) -> Vec<(String, String)> {
    [
        ("DATABASE_URL", url.to_string()),
        ("SERVER_PORT", "0".into()),
        ("WORKERS", "1".into()),
        (
            "STATIC_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/static").into(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[test]
fn the_service_connects_with_each_documented_sslmode() {
    use crate::support::app::{command, App};
    use crate::support::http::{get, request};
    let s = tls_server();
    let pki = TestPki::get();
    let db = format!("e2e_{}", std::process::id());
    s.execute(&format!("DROP DATABASE IF EXISTS {db}"));
    s.execute(&format!("CREATE DATABASE {db} OWNER ssl_only"));
    let port = s.port;
    let ca = pki.ca.display();
    let base = |host: &str| format!("postgres://ssl_only:ssl-secret@{host}:{port}/{db}");
    let urls = [
        base("127.0.0.1"),
        format!("{}?sslmode=prefer", base("127.0.0.1")),
        format!("{}?sslmode=require", base("127.0.0.1")),
        format!("{}?sslmode=verify-ca&sslrootcert={ca}", base("127.0.0.1")),
        format!("{}?sslmode=verify-full&sslrootcert={ca}", base("localhost")),
    ];
    for (n, url) in urls.iter().enumerate() {
        let out = command(&service_env(url)).arg("migrate").output().unwrap();
        assert!(
            out.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let app = App::spawn(&service_env(url));
        assert!(
            support::wait::eventually(T, || get(app.addr, "/readyz").status == 200),
            "{url}: {}",
            app.log_text()
        );
        let email = format!("tls{n}@example.com");
        let r = request(
            app.addr,
            "POST",
            &format!("/user?email={email}"),
            Some(br#"{"text":"over TLS"}"#),
        );
        assert_eq!(r.status, 200, "{url}: {}", r.text());
        assert_eq!(get(app.addr, &format!("/user?email={email}")).status, 200);
        assert!(!app.log_text().contains("ssl-secret"), "{}", app.log_text());
    }
    let url = format!("{}?sslmode=disable", base("127.0.0.1"));
    let out = command(&service_env(&url)).arg("migrate").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("pg_hba.conf rejects this connection"),
        "{stderr}"
    );
    assert!(!stderr.contains("ssl-secret"), "{stderr}");
    s.execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
}

/// A certificate signed with Ed25519 has no tls-server-end-point hash. The server still offers
/// SCRAM-SHA-256-PLUS over TLS; sending plain SCRAM with the "n" flag (client cannot bind)
/// would let a man in the middle strip PLUS unnoticed, so the client refuses, as libpq does,
/// unless channel_binding=disable.
#[test]
fn channel_binding_is_not_silently_dropped() {
    let s = ed25519_signed_server();
    for binding in [ChannelBinding::Prefer, ChannelBinding::Require] {
        let mut p = params(s, "scram_user", Some("scram-secret"), SslMode::Require);
        p.channel_binding = binding;
        let e = connect_as(&p).expect_err("no binding hash for this certificate");
        assert_eq!(e.kind(), ErrorKind::AuthFailed, "{e}");
        assert_eq!(e.code(), None, "refused by the client: {e}");
        assert!(
            e.message().contains("tls-server-end-point"),
            "{binding:?}: {e}"
        );
    }
    let mut p = params(s, "scram_user", Some("scram-secret"), SslMode::Require);
    p.channel_binding = ChannelBinding::Disable;
    assert!(
        connect_as(&p).unwrap(),
        "channel_binding=disable: SCRAM without binding"
    );
}

/// A server certificate that fails verification is a configuration error, as a pg_hba.conf
/// rejection is: the service stops at start and says why, instead of serving 503 for as long
/// as nobody reads its log.
#[test]
fn the_service_stops_at_start_when_the_certificate_fails_verification() {
    use crate::support::app::command;
    use std::process::Stdio;
    let s = tls_server();
    let pki = TestPki::get();
    let url = format!(
        "postgres://ssl_only:ssl-secret@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        s.port,
        pki.other_ca.display()
    );
    let env = service_env(&url);
    let child = command(&env)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start records-service");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: signalling our own child process; its output arrives below.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let out = rx.recv().unwrap().unwrap();
            panic!(
                "still running 30 s after start; its log:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the server's certificate is not signed by a CA in sslrootcert"),
        "{stderr}"
    );
    assert!(!stderr.contains("ssl-secret"), "{stderr}");
}

/// Whether a start-up failure is the TLS settings' fault (which stops the service at start)
/// must not depend on the order of the hosts: one host whose certificate fails verification and
/// one that is down are no verdict on the settings, whichever comes last.
#[test]
fn the_tls_verdict_does_not_depend_on_host_order() {
    let s = tls_server();
    let pki = TestPki::get();
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = || {
        let mut p = ConnectParams::new(
            "localhost",
            s.port,
            "ssl_only",
            Some("ssl-secret"),
            "postgres",
        );
        p.statement_timeout = Duration::ZERO;
        p.connect_timeout = Duration::from_secs(2);
        p.tls.mode = SslMode::VerifyFull;
        p.tls.root_cert = Some(RootCert::File(pki.other_ca.clone()));
        p
    };
    let mut bad_then_down = base();
    bad_then_down.more_hosts = vec![("127.0.0.1".into(), down)];
    let mut down_then_bad = base();
    down_then_bad.host = "127.0.0.1".into();
    down_then_bad.port = down;
    down_then_bad.more_hosts = vec![("localhost".into(), s.port)];
    let a = pg::connect_once(&bad_then_down).expect_err("no host");
    let b = pg::connect_once(&down_then_bad).expect_err("no host");
    assert!(!a.is_tls_misconfigured(), "[bad, down]: {a}");
    assert!(!b.is_tls_misconfigured(), "[down, bad]: {b}");
    // The bad certificate alone is the settings' fault.
    let alone = pg::connect_once(&base()).expect_err("bad certificate");
    assert!(alone.is_tls_misconfigured(), "{alone}");
}
