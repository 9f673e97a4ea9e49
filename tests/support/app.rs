//! The real service binary, started the way users start it (environment variables, its own
//! process), on a free port, against a test database.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::pg::{Server, TestDb};

pub const BIN: &str = env!("CARGO_BIN_EXE_records-service");

/// A running `records-service serve`.
pub struct App {
    pub addr: SocketAddr,
    pub child: Child,
    /// Everything the process wrote to stderr so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

/// The environment for a database on `server` named `db`, plus test-friendly defaults.
pub fn env_for(server: &Server, db: &str) -> Vec<(String, String)> {
    [
        ("POSTGRES_DB_HOST", server.host.clone()),
        ("POSTGRES_DB_PORT", server.port.to_string()),
        ("POSTGRES_DB_NAME", db.to_string()),
        ("POSTGRES_DB_USER", server.user.clone()),
        ("POSTGRES_DB_PASSWORD", server.password.clone()),
        ("SERVER_HOST", "127.0.0.1".into()),
        ("SERVER_PORT", "0".into()),
        ("WORKERS", "2".into()),
        (
            "STATIC_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/static").into(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A command for the binary with exactly `env` (nothing inherited but PATH), run from a
/// directory without a `.env` file.
pub fn command(env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(std::env::temp_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

impl App {
    pub fn start(db: &TestDb) -> App {
        App::start_with(db, &[])
    }

    /// Starts the service on `db` with `extra` variables added or overriding the defaults.
    pub fn start_with(db: &TestDb, extra: &[(&str, &str)]) -> App {
        let mut env = env_for(&db.server, &db.name);
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            env.push((k.to_string(), v.to_string()));
        }
        App::spawn(&env)
    }

    pub fn spawn(env: &[(String, String)]) -> App {
        let mut child = command(env)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start records-service");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.split("listening on http://").nth(1) {
                    // Text or JSON logs: the address ends at a space or a quote.
                    let addr: String = addr
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '"')
                        .collect();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a.parse().expect("listening address"),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the service did not start listening; its log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        App { addr, child, log }
    }

    /// The log as written, then each JSON line's message as plain text (see [`readable`]).
    pub fn log_text(&self) -> String {
        readable(&self.log.lock().unwrap().join("\n"))
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for the process to exit, up to `timeout`; its exit code if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Resident memory of the process in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

/// `log` (the service's stderr, JSON lines) followed by the `message` of each JSON line, so a
/// test can look for a message's text as a person reads it (unescaped quotes), and a check that
/// something is absent covers both the raw lines and their messages.
pub fn readable(log: &str) -> String {
    let messages: Vec<String> = log
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            Some(v.get("message")?.as_str()?.to_string())
        })
        .collect();
    format!("{log}\n{}", messages.join("\n"))
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
