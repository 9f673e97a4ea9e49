//! A scripted PostgreSQL peer for the few behaviours no real server can be made to show (a
//! hostile or buggy proxy: absurd message lengths, FATAL errors with odd SQLSTATEs). It speaks
//! just enough of the protocol: startup with trust authentication, then whatever the script
//! sends. Everything else in the tests talks to a real PostgreSQL.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// A listener on a free port whose every accepted connection runs `script` on its own thread,
/// after startup. `port` is where to point the client.
pub struct FakePg {
    pub port: u16,
}

impl FakePg {
    /// Runs `script` on each connection after a trust login (AuthenticationOk, ReadyForQuery).
    pub fn start(script: fn(&mut TcpStream, usize)) -> FakePg {
        FakePg::listen(script, true)
    }

    /// Runs `script` on each connection right after the startup message, before any answer:
    /// the script plays the authentication exchange itself.
    pub fn start_raw(script: fn(&mut TcpStream, usize)) -> FakePg {
        FakePg::listen(script, false)
    }

    fn listen(script: fn(&mut TcpStream, usize), login: bool) -> FakePg {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(mut conn) = conn else { return };
                std::thread::spawn(move || {
                    conn.set_read_timeout(Some(Duration::from_secs(30))).ok();
                    if read_startup(&mut conn).is_ok() && (!login || trust_login(&mut conn).is_ok())
                    {
                        script(&mut conn, n);
                    }
                });
            }
        });
        FakePg { port }
    }
}

/// Reads the startup message, answering `N` to an SSLRequest first.
fn read_startup(conn: &mut TcpStream) -> std::io::Result<()> {
    loop {
        let mut len = [0u8; 4];
        conn.read_exact(&mut len)?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize - 4];
        conn.read_exact(&mut body)?;
        if body[..4] == [0x04, 0xd2, 0x16, 0x2f] {
            conn.write_all(b"N")?; // SSLRequest: no TLS here
            continue;
        }
        return Ok(());
    }
}

/// AuthenticationOk, BackendKeyData and ReadyForQuery.
fn trust_login(conn: &mut TcpStream) -> std::io::Result<()> {
    let mut out = Vec::new();
    out.extend(message(b'R', &0u32.to_be_bytes()));
    out.extend(message(b'K', &[0, 0, 0, 1, 0, 0, 0, 2]));
    out.extend(message(b'Z', b"I"));
    conn.write_all(&out)
}

/// One backend message: type, length, body.
pub fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend(((body.len() + 4) as u32).to_be_bytes());
    m.extend(body);
    m
}

/// An ErrorResponse with severity `severity` (both `S` and `V`), SQLSTATE `code`.
pub fn error_response(severity: &str, code: &str, text: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', text),
    ] {
        body.push(field);
        body.extend(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    message(b'E', &body)
}

/// Reads frontend messages until a Sync (`S`) or a Query (`Q`) has arrived; returns their types.
pub fn read_until_sync(conn: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    Ok(read_batch(conn)?
        .into_iter()
        .map(|(kind, _)| kind)
        .collect())
}

/// The answers to one extended-protocol query (Parse, Bind, Execute, Sync) that changed a row.
pub fn write_answered() -> Vec<u8> {
    let mut out = message(b'1', &[]);
    out.extend(message(b'2', &[]));
    out.extend(message(b'C', b"UPDATE 1\0"));
    out.extend(message(b'Z', b"I"));
    out
}

/// Keeps the connection open, reading and discarding, until the client closes it.
pub fn drain(conn: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
}

/// Reads frontend messages until a Sync (`S`) or a Query (`Q`) has arrived; returns each
/// message's type and body, for scripts that act on what was asked (a statement's name).
pub fn read_batch(conn: &mut TcpStream) -> std::io::Result<Vec<(u8, Vec<u8>)>> {
    let mut batch = Vec::new();
    loop {
        let mut head = [0u8; 5];
        conn.read_exact(&mut head)?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        conn.read_exact(&mut body)?;
        let last = head[0] == b'S' || head[0] == b'Q';
        batch.push((head[0], body));
        if last {
            return Ok(batch);
        }
    }
}

/// The `n`th NUL-terminated string of a message body (a Parse's statement name is the 0th, a
/// Bind's statement name the 1st: its portal name comes first).
pub fn cstr(body: &[u8], n: usize) -> &[u8] {
    body.split(|&b| b == 0).nth(n).unwrap_or_default()
}

/// A DataRow of one binary int4 column.
pub fn int4_row(v: i32) -> Vec<u8> {
    let mut body = 1u16.to_be_bytes().to_vec();
    body.extend(4u32.to_be_bytes());
    body.extend(v.to_be_bytes());
    message(b'D', &body)
}

/// What a server with every statement in place answers to `batch`: each Parse, Bind and Close
/// succeeds, each Execute returns one row (int4 1) and `SELECT 1` (read as one affected row),
/// each Sync or Query ends with ReadyForQuery, idle.
pub fn obliging_answers(batch: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, _) in batch {
        match kind {
            b'P' => out.extend(message(b'1', &[])),
            b'B' => out.extend(message(b'2', &[])),
            b'C' => out.extend(message(b'3', &[])),
            b'E' => {
                out.extend(int4_row(1));
                out.extend(message(b'C', b"SELECT 1\0"));
            }
            b'S' | b'Q' => out.extend(message(b'Z', b"I")),
            _ => {}
        }
    }
    out
}

/// Answers every batch as [`obliging_answers`] says, until the client closes the connection.
pub fn serve(conn: &mut TcpStream) {
    while let Ok(batch) = read_batch(conn) {
        if conn.write_all(&obliging_answers(&batch)).is_err() {
            return;
        }
    }
}

/// The answer to a simple query whose result is one row of one text column, `value`:
/// DataRow, CommandComplete, ReadyForQuery (no RowDescription: the client reads values only).
pub fn one_value(value: &str) -> Vec<u8> {
    let mut row = 1i16.to_be_bytes().to_vec();
    row.extend((value.len() as i32).to_be_bytes());
    row.extend(value.as_bytes());
    let mut out = message(b'D', &row);
    out.extend(message(b'C', b"SELECT 1\0"));
    out.extend(message(b'Z', b"I"));
    out
}

/// Plays a hot standby to target_session_attrs's checks: `on` to `SHOW transaction_read_only`,
/// then `lag` as the replay lag in seconds; then drains.
pub fn standby_with_lag(conn: &mut TcpStream, lag: &str) {
    for value in ["on", lag] {
        if read_until_sync(conn).is_err() || conn.write_all(&one_value(value)).is_err() {
            return;
        }
    }
    drain(conn);
}
