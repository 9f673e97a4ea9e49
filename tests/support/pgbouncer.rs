//! A real PgBouncer (Debian's `pgbouncer`) in front of the tests' PostgreSQL, in session or
//! transaction pooling mode, run as the unprivileged user like the server, stopped on drop.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use records_service::pg::{self, ConnectParams};

use super::pg::{chown, command, free_port, spawn_guarded, Server};

static COUNTER: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    Session,
    Transaction,
}

pub struct PgBouncer {
    /// Where clients connect: PgBouncer's address, the server's user and password.
    pub server: Server,
    dir: PathBuf,
    child: Option<Child>,
}

/// The pgbouncer binary: `PGBOUNCER` if set, else the Debian package's.
fn binary() -> PathBuf {
    let path = std::env::var("PGBOUNCER")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/sbin/pgbouncer"));
    assert!(
        path.exists(),
        "no pgbouncer at {} (apt-get install pgbouncer, or run .ci/run)",
        path.display()
    );
    path
}

impl PgBouncer {
    /// PgBouncer on a free port, forwarding every database to `upstream` with at most
    /// `pool_size` server connections per database and user.
    pub fn start(upstream: &Server, mode: PoolMode, pool_size: u32) -> PgBouncer {
        let dir = std::env::temp_dir().join(format!(
            "records-test-{}-bouncer-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let mode_name = match mode {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        };
        // PgBouncer with trust authentication still requires the user in auth_file.
        std::fs::write(
            dir.join("userlist.txt"),
            format!("\"{}\" \"{}\"\n", upstream.user, upstream.password),
        )
        .unwrap();
        let ini = format!(
            "[databases]\n\
             * = host={host} port={upstream_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {dir}/userlist.txt\n\
             pool_mode = {mode_name}\n\
             default_pool_size = {pool_size}\n\
             max_client_conn = 500\n\
             server_reset_query = DISCARD ALL\n\
             logfile = {dir}/pgbouncer.log\n\
             pidfile = {dir}/pgbouncer.pid\n",
            host = upstream.host,
            upstream_port = upstream.port,
            dir = dir.display(),
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
        chown(&dir);
        for f in ["userlist.txt", "pgbouncer.ini"] {
            chown(&dir.join(f));
        }
        let mut cmd = command(&binary());
        cmd.arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawn_guarded(cmd, &dir);
        let bouncer = PgBouncer {
            server: Server {
                host: "127.0.0.1".into(),
                port,
                user: upstream.user.clone(),
                password: upstream.password.clone(),
                admin_db: upstream.admin_db.clone(),
            },
            dir,
            child: Some(child),
        };
        bouncer.wait_ready();
        bouncer
    }

    /// Connection settings for `dbname` through PgBouncer.
    pub fn params(&self, dbname: &str) -> ConnectParams {
        self.server.params(dbname)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut p = self.params(&self.server.admin_db);
            p.connect_timeout = Duration::from_secs(2);
            match pg::connect_once(&p) {
                Ok(c) => {
                    c.close();
                    return;
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => panic!("PgBouncer did not start: {e}\n{}", self.log()),
            }
        }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child (SIGINT: PgBouncer's safe shutdown).
            unsafe {
                libc::kill(child.id() as i32, libc::SIGINT);
            }
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
