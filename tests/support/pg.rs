//! A real PostgreSQL for the tests.
//!
//! By default a throwaway cluster: `initdb` in a temporary directory, `postgres` on a free port,
//! run as the unprivileged `postgres` user when the tests run as root (PostgreSQL refuses root),
//! stopped and removed when the test process exits (an `atexit` hook, plus PR_SET_PDEATHSIG so a
//! killed test run does not leave it behind; directories of dead runs are swept at start).
//! If `DATABASE_URL` or `POSTGRES_DB_HOST` is set, that server is used instead; it must allow
//! the configured user to create databases. With `RECORDS_TEST_DB=testcontainers`, a
//! `postgres:15` container started through testcontainers is (needs Docker).
//!
//! Each test gets its own database, cloned from a migrated template, so tests run in parallel
//! without seeing each other's rows.

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use records_service::pg::{self, Client, ConnectParams};
use records_service::records::migrate;

pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a server is and who may log in as its administrator.
#[derive(Clone, Debug)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// The database to connect to for administration.
    pub admin_db: String,
}

impl Server {
    pub fn params(&self, dbname: &str) -> ConnectParams {
        let mut p = ConnectParams::new(
            &self.host,
            self.port,
            &self.user,
            Some(&self.password),
            dbname,
        );
        p.statement_timeout = Duration::ZERO;
        // Not the service's name: tests select the service's sessions by it.
        p.application_name = "records-tests".into();
        p
    }

    pub fn admin(&self) -> Client {
        pg::connect_once(&self.params(&self.admin_db)).expect("connect to the test server")
    }

    pub fn execute(&self, sql: &str) -> pg::Reply {
        let c = self.admin();
        let r = c.simple_query(sql, ADMIN_TIMEOUT);
        c.close();
        r.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

/// A cluster this process made. Stopped and deleted on drop (private ones) or at exit (shared).
pub struct Cluster {
    pub server: Server,
    dir: PathBuf,
    bindir: PathBuf,
    child: Mutex<Option<Child>>,
    /// Extra `-c name=value` settings of the postmaster.
    settings: Vec<String>,
}

static SHARED: OnceLock<Server> = OnceLock::new();
static TEMPLATE: OnceLock<String> = OnceLock::new();
static COUNTER: AtomicU32 = AtomicU32::new(0);
/// Postmaster pids and directories to clean up at exit.
static AT_EXIT: Mutex<Vec<(u32, PathBuf)>> = Mutex::new(Vec::new());

/// The server the tests share: an external one if configured, else a throwaway cluster.
pub fn server() -> &'static Server {
    super::init_runtime();
    SHARED.get_or_init(|| {
        if let Some(s) = external() {
            return s;
        }
        Cluster::start().shared()
    })
}

fn external() -> Option<Server> {
    if std::env::var("RECORDS_TEST_DB").as_deref() == Ok("testcontainers") {
        return Some(testcontainer());
    }
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return Some(parse_url(&url));
    }
    let host = std::env::var("POSTGRES_DB_HOST").ok()?;
    Some(Server {
        host,
        port: std::env::var("POSTGRES_DB_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(5432),
        user: std::env::var("POSTGRES_DB_USER").unwrap_or_else(|_| "postgres".into()),
        password: std::env::var("POSTGRES_DB_PASSWORD").unwrap_or_default(),
        admin_db: std::env::var("POSTGRES_DB_NAME").unwrap_or_else(|_| "postgres".into()),
    })
}

/// `postgres://user:password@host:port/db` (password and port optional).
fn parse_url(url: &str) -> Server {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .expect("DATABASE_URL must start with postgres://");
    let (auth, rest) = rest.rsplit_once('@').unwrap_or(("postgres", rest));
    let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
    let (hostport, db) = rest.split_once('/').unwrap_or((rest, "postgres"));
    let db = db.split('?').next().unwrap_or("postgres");
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
    Server {
        host: host.to_string(),
        port: port.parse().expect("port in DATABASE_URL"),
        user: user.to_string(),
        password: password.to_string(),
        admin_db: if db.is_empty() {
            "postgres".into()
        } else {
            db.to_string()
        },
    }
}

/// A fresh, migrated, empty database on the shared server, dropped when this is dropped.
pub struct TestDb {
    pub server: Server,
    pub name: String,
}

impl TestDb {
    pub fn new() -> TestDb {
        let server = server().clone();
        let template = TEMPLATE.get_or_init(|| {
            let name = format!("records_template_{}", std::process::id());
            server.execute(&format!("DROP DATABASE IF EXISTS {name}"));
            server.execute(&format!("CREATE DATABASE {name}"));
            let c = pg::connect_once(&server.params(&name)).expect("connect to the template");
            migrate::migrate(&c).expect("migrate the template");
            c.close();
            name
        });
        let name = format!(
            "records_test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        // CREATE DATABASE ... TEMPLATE fails while another session uses the template; the
        // template's own session is closed above, but retry briefly in case of overlap.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let c = server.admin();
            let r = c.simple_query(
                &format!("CREATE DATABASE {name} TEMPLATE {template}"),
                ADMIN_TIMEOUT,
            );
            c.close();
            match r {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline && e.code() == Some("55006") => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("create test database: {e}"),
            }
        }
        TestDb { server, name }
    }

    pub fn params(&self) -> ConnectParams {
        self.server.params(&self.name)
    }

    pub fn client(&self) -> Client {
        pg::connect_once(&self.params()).expect("connect to the test database")
    }

    /// Runs SQL in this database and returns the reply.
    pub fn execute(&self, sql: &str) -> pg::Reply {
        let c = self.client();
        let r = c.simple_query(sql, ADMIN_TIMEOUT);
        c.close();
        r.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The first column of the first row, as text.
    pub fn scalar(&self, sql: &str) -> Option<String> {
        let reply = self.execute(sql);
        let row = reply.rows.first()?;
        row.text(0).unwrap().map(str::to_string)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(c) = pg::connect_once(&self.server.params(&self.server.admin_db)) {
            let _ = c.simple_query(
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
                ADMIN_TIMEOUT,
            );
            c.close();
        }
    }
}

/// Where the PostgreSQL server binaries (`initdb`, `postgres`) are: `PG_BINDIR` when set, else
/// the first of these that holds `initdb`: the directory `initdb` on PATH resolves to (through
/// symlinks, so Homebrew's links find the install), `pg_config --bindir`, the versioned installs
/// in [`VERSIONED_INSTALLS`] newest version first, then `/opt/homebrew/bin` and `/usr/local/bin`.
/// scripts/localpg.sh's `find_bindir` looks in the same order. Panics, saying how to install
/// them, when none does.
fn bindir() -> PathBuf {
    if let Some(d) = std::env::var_os("PG_BINDIR") {
        let d = PathBuf::from(d);
        assert!(
            d.join("initdb").is_file(),
            "PG_BINDIR={} holds no initdb",
            d.display()
        );
        return d;
    }
    let mut candidates = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        let initdb = std::env::split_paths(&path)
            .map(|d| d.join("initdb"))
            .find(|p| p.is_file());
        if let Some(dir) = initdb
            .and_then(|p| std::fs::canonicalize(p).ok())
            .and_then(|p| p.parent().map(Path::to_path_buf))
        {
            candidates.push(dir);
        }
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !dir.is_empty() {
            candidates.push(PathBuf::from(dir));
        }
    }
    let mut versioned = Vec::new();
    for (parent, prefix) in VERSIONED_INSTALLS {
        for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                versioned.push(entry.path().join("bin"));
            }
        }
    }
    candidates.extend(newest_first(versioned));
    candidates.extend(["/opt/homebrew/bin", "/usr/local/bin"].map(PathBuf::from));
    candidates
        .into_iter()
        .find(|d| d.join("initdb").is_file())
        .unwrap_or_else(|| {
            panic!(
                "no PostgreSQL server binaries (initdb) found on PATH, by pg_config, under \
                 /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin or Homebrew's prefixes. Install \
                 them (Debian/Ubuntu: apt-get install postgresql; Fedora/RHEL: dnf install \
                 postgresql-server; macOS: brew install postgresql@15) or set PG_BINDIR to the \
                 directory that holds initdb"
            )
        })
}

/// Where versioned installs live: (directory, what an install's name has before its version),
/// each install's binaries in its `bin`.
const VERSIONED_INSTALLS: &[(&str, &str)] = &[
    // Debian/Ubuntu: /usr/lib/postgresql/15/bin.
    ("/usr/lib/postgresql", ""),
    // RHEL/Fedora with the PGDG packages: /usr/pgsql-15/bin.
    ("/usr", "pgsql-"),
    // Homebrew on Apple silicon, then on Intel: /opt/homebrew/opt/postgresql@15/bin.
    ("/opt/homebrew/opt", "postgresql@"),
    ("/usr/local/opt", "postgresql@"),
];

/// The version in a versioned install's bin directory's name: (15, 0) for
/// `/usr/lib/postgresql/15/bin`, (9, 6) for `/usr/pgsql-9.6/bin`, (16, 0) for
/// `/opt/homebrew/opt/postgresql@16/bin`; None when there is none.
fn install_version(bindir: &Path) -> Option<(u32, u32)> {
    let name = bindir.parent()?.file_name()?.to_str()?;
    let version = name
        .strip_prefix("pgsql-")
        .or_else(|| name.strip_prefix("postgresql@"))
        .unwrap_or(name);
    let (major, minor) = version.split_once('.').unwrap_or((version, "0"));
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Versioned bin directories, newest version first (numerically: 9.6 is older than 15); those
/// with no version in their name are left out.
fn newest_first(dirs: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut versioned: Vec<((u32, u32), PathBuf)> = dirs
        .into_iter()
        .filter_map(|d| Some((install_version(&d)?, d)))
        .collect();
    versioned.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    versioned.into_iter().map(|(_, d)| d).collect()
}

#[test]
fn bindir_versioned_installs_newest_first() {
    let dirs = [
        "/usr/lib/postgresql/9.6/bin",
        "/usr/lib/postgresql/15/bin",
        "/opt/homebrew/opt/postgresql@14/bin",
        "/usr/lib/postgresql/common/bin",
        "/usr/pgsql-16/bin",
        "/usr/lib/postgresql/10/bin",
    ]
    .map(PathBuf::from)
    .to_vec();
    let expected = [
        "/usr/pgsql-16/bin",
        "/usr/lib/postgresql/15/bin",
        "/opt/homebrew/opt/postgresql@14/bin",
        "/usr/lib/postgresql/10/bin",
        "/usr/lib/postgresql/9.6/bin",
    ]
    .map(PathBuf::from)
    .to_vec();
    assert_eq!(newest_first(dirs), expected);
}

/// uid and gid to run PostgreSQL as: ourselves, or `postgres` (else `nobody`) when root.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return None;
    }
    for name in ["postgres", "nobody"] {
        let cname = std::ffi::CString::new(name).unwrap();
        // SAFETY: getpwnam with a valid C string; the result is read at once.
        let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
        if !pw.is_null() {
            // SAFETY: non-null passwd entry from getpwnam.
            let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
            return Some((uid, gid));
        }
    }
    panic!("running as root and there is no postgres or nobody user to run PostgreSQL as");
}

/// A command run as the unprivileged user when the tests run as root.
pub fn command(path: &Path) -> Command {
    let mut c = Command::new(path);
    if let Some((uid, gid)) = run_as() {
        c.uid(uid).gid(gid);
    }
    c.env_remove("PGDATA").env("LC_ALL", "C.UTF-8");
    c
}

pub fn chown(path: &Path) {
    if let Some((uid, gid)) = run_as() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown test directory");
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Users made in every throwaway cluster, one per authentication method (pg_hba.conf below).
pub const AUTH_USERS: &[(&str, &str, &str)] = &[
    ("trust_user", "", "trust"),
    ("clear_user", "clear-secret", "password"),
    ("md5_user", "md5-secret", "md5"),
    ("scram_user", "scram-secret", "scram-sha-256"),
];

impl Cluster {
    /// A new cluster that this test owns (for tests that stop and start the server).
    pub fn start() -> Cluster {
        let hba: Vec<String> = ["host all postgres 127.0.0.1/32 trust".to_string()]
            .into_iter()
            .chain(
                AUTH_USERS
                    .iter()
                    .map(|(user, _, method)| format!("host all {user} 127.0.0.1/32 {method}")),
            )
            .chain(std::iter::once(
                "host all all 127.0.0.1/32 scram-sha-256".to_string(),
            ))
            .collect();
        Cluster::start_with(&hba, &[], &[])
    }

    /// A new cluster with `local all all trust` then `hba` as its pg_hba.conf, the postmaster
    /// settings `settings` (`name=value`), and `files` (source, name in the data directory,
    /// mode) copied in first, owned by the server's user. The AUTH_USERS are created.
    pub fn start_with(
        hba: &[String],
        settings: &[String],
        files: &[(&Path, &str, u32)],
    ) -> Cluster {
        sweep_stale_dirs();
        let bindir = bindir();
        let dir = std::env::temp_dir().join(format!(
            "records-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        chown(&dir);
        chown(&dir.join("data"));
        let out = command(&bindir.join("initdb"))
            .args(["-D"])
            .arg(dir.join("data"))
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ])
            .stdout(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hba: String = std::iter::once("local all all trust")
            .chain(hba.iter().map(String::as_str))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(dir.join("data/pg_hba.conf"), hba).unwrap();
        for (source, name, mode) in files {
            use std::os::unix::fs::PermissionsExt;
            let target = dir.join("data").join(name);
            std::fs::copy(source, &target).unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode)).unwrap();
            chown(&target);
        }
        let cluster = Cluster {
            server: Server {
                host: "127.0.0.1".into(),
                port: free_port(),
                user: "postgres".into(),
                password: String::new(),
                admin_db: "postgres".into(),
            },
            dir,
            bindir,
            child: Mutex::new(None),
            settings: settings.to_vec(),
        };
        cluster.start_server();
        for (user, password, method) in AUTH_USERS {
            let encryption = if *method == "md5" {
                "md5"
            } else {
                "scram-sha-256"
            };
            cluster.server.execute(&format!(
                "SET password_encryption = '{encryption}'; \
                 CREATE ROLE {user} LOGIN PASSWORD '{password}'"
            ));
        }
        cluster
    }

    /// Starts (or restarts) the postmaster on the cluster's port and waits until it answers.
    pub fn start_server(&self) {
        let mut child = self.child.lock().unwrap();
        assert!(child.is_none(), "already running");
        let dir = self.dir.clone();
        let mut cmd = command(&self.bindir.join("postgres"));
        cmd.arg("-D")
            .arg(dir.join("data"))
            .args(["-p", &self.server.port.to_string()])
            .arg("-k")
            .arg(&dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
                "-c",
                "log_min_messages=fatal",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("postgres.log")).unwrap());
        for setting in &self.settings {
            cmd.arg("-c").arg(setting);
        }
        *child = Some(spawn_guarded(cmd, &self.dir));
        drop(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut p = self.server.params("postgres");
            p.connect_timeout = Duration::from_secs(2);
            match pg::connect_once(&p) {
                Ok(c) => {
                    c.close();
                    return;
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => panic!(
                    "PostgreSQL did not start: {e}\n{}",
                    std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
                ),
            }
        }
    }

    /// A streaming standby of `primary` (whose pg_hba.conf must accept replication connections
    /// from 127.0.0.1 for `postgres`): `pg_basebackup -R` into a directory of its own, then its
    /// own postmaster on a free port, with the primary's settings. Read-only until promoted.
    pub fn standby_of(primary: &Cluster) -> Cluster {
        let dir = std::env::temp_dir().join(format!(
            "records-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        chown(&dir);
        let out = command(&primary.bindir.join("pg_basebackup"))
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-h", "127.0.0.1", "-p", &primary.server.port.to_string()])
            .args([
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ])
            .stdout(Stdio::null())
            .output()
            .expect("run pg_basebackup");
        assert!(
            out.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let standby = Cluster {
            server: Server {
                port: free_port(),
                ..primary.server.clone()
            },
            dir,
            bindir: primary.bindir.clone(),
            child: Mutex::new(None),
            settings: primary.settings.clone(),
        };
        standby.start_server();
        standby
    }

    /// Promotes a standby to a primary (`pg_ctl promote`, waiting until it is done).
    pub fn promote(&self) {
        let out = command(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["promote", "-w"])
            .stdout(Stdio::null())
            .output()
            .expect("run pg_ctl promote");
        assert!(
            out.status.success(),
            "pg_ctl promote failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Keeps the cluster for the rest of the process (the atexit hook stops it) and returns where
    /// it is: for the servers the tests of a process share.
    pub fn shared(self) -> Server {
        let server = self.server.clone();
        std::mem::forget(self);
        server
    }

    /// Stops the postmaster (fast shutdown: sessions are terminated) and waits for it to exit.
    pub fn stop_server(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGINT);
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_server();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Spawns a server process (PostgreSQL, PgBouncer) that dies with the test process: SIGQUIT by
/// the exit hook (which then removes `dir`), or by PR_SET_PDEATHSIG if the run is killed.
pub fn spawn_guarded(mut cmd: Command, dir: &Path) -> Child {
    // SAFETY: prctl in the forked child before exec; async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
            Ok(())
        });
    }
    // PR_SET_PDEATHSIG fires when the *thread* that forked exits: fork from a thread that lives
    // as long as the process.
    let spawned = spawn_from_long_lived_thread(cmd);
    AT_EXIT
        .lock()
        .unwrap()
        .push((spawned.id(), dir.to_path_buf()));
    register_exit_hook();
    spawned
}

fn spawn_from_long_lived_thread(cmd: Command) -> Child {
    use std::sync::mpsc;
    type Request = (Command, mpsc::Sender<Child>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("pg-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let child = cmd.spawn().expect("spawn postgres");
                    let _ = reply.send(child);
                }
                // The channel never closes (the sender is static): this thread lives on.
            })
            .unwrap();
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = std::sync::mpsc::channel();
    spawner.lock().unwrap().send((cmd, reply_tx)).unwrap();
    reply_rx.recv().expect("spawner thread answers")
}

fn register_exit_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    extern "C" fn at_exit() {
        if let Ok(mut ids) = AT_EXIT_CONTAINERS.lock() {
            for id in std::mem::take(&mut *ids) {
                let _ = Command::new("docker")
                    .args(["rm", "-f", "-v", &id])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        if let Ok(mut dirs) = AT_EXIT_DIRS.lock() {
            for dir in std::mem::take(&mut *dirs) {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        let entries = match AT_EXIT.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(_) => return,
        };
        for (pid, dir) in entries {
            // SAFETY: signalling and reaping a postmaster this process started.
            unsafe {
                if libc::kill(pid as i32, libc::SIGQUIT) == 0 {
                    let mut status = 0;
                    libc::waitpid(pid as i32, &mut status, 0);
                }
            }
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    ONCE.call_once(|| {
        // SAFETY: registering a plain extern "C" function.
        unsafe {
            libc::atexit(at_exit);
        }
    });
}

/// Removes `records-test-PID-*` directories whose process is gone (a run that was killed).
fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("records-test-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Directories to remove at exit that no postmaster runs in (the test PKI).
static AT_EXIT_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Containers to remove at exit (`RECORDS_TEST_DB=testcontainers`).
static AT_EXIT_CONTAINERS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// PostgreSQL 15 in a container started with testcontainers (the `postgres` module), for
/// `RECORDS_TEST_DB=testcontainers`: needs a Docker engine and the `postgres:15` image (pulled,
/// or built by scripts/standin-images.sh). Removed when the test process exits.
fn testcontainer() -> Server {
    use testcontainers_modules::postgres::Postgres;
    use testcontainers_modules::testcontainers::runners::SyncRunner;
    use testcontainers_modules::testcontainers::ImageExt;
    let container = Postgres::default().with_tag("15").start().expect(
        "start postgres:15 with testcontainers (RECORDS_TEST_DB=testcontainers needs Docker)",
    );
    let port = container
        .get_host_port_ipv4(5432)
        .expect("the container's PostgreSQL port");
    AT_EXIT_CONTAINERS
        .lock()
        .unwrap()
        .push(container.id().to_string());
    register_exit_hook();
    // Removed by the exit hook; dropping it here would stop it.
    std::mem::forget(container);
    Server {
        host: "127.0.0.1".into(),
        port,
        user: "postgres".into(),
        password: "postgres".into(),
        admin_db: "postgres".into(),
    }
}

/// A test PKI made with the `openssl` command: a CA, certificates it signs (servers and a
/// client), and an unrelated second CA with a client certificate of its own. EC P-256 keys.
pub struct TestPki {
    pub dir: PathBuf,
    /// The CA the clusters' certificates chain to (also the server's `ssl_ca_file`).
    pub ca: PathBuf,
    /// A CA that signed nothing the servers present.
    pub other_ca: PathBuf,
    /// Server certificate for DNS:localhost and IP:127.0.0.1, signed with ecdsa-with-SHA256.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// Server certificate for DNS:db.example.com only, signed with ecdsa-with-SHA384.
    pub wrong_name_cert: PathBuf,
    pub wrong_name_key: PathBuf,
    /// Client certificate with CN=cert_user, signed by `ca`.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Client certificate with CN=cert_user, signed by `other_ca`.
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
    /// Server certificate for localhost, signed by an Ed25519 CA: a signature algorithm for
    /// which tls-server-end-point defines no hash (no channel binding possible).
    pub ed25519_signed_cert: PathBuf,
    pub ed25519_signed_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl (apt-get install -y openssl)");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestPki {
    /// The PKI of this test process, made once.
    pub fn get() -> &'static TestPki {
        static PKI: OnceLock<TestPki> = OnceLock::new();
        PKI.get_or_init(TestPki::make)
    }

    fn make() -> TestPki {
        sweep_stale_dirs();
        let dir = std::env::temp_dir().join(format!("records-test-{}-pki", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        AT_EXIT_DIRS.lock().unwrap().push(dir.clone());
        register_exit_hook();
        let ca_conf = "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = v3_ca\n\
                       [dn]\nCN = records-test CA\n\
                       [v3_ca]\nbasicConstraints = critical,CA:TRUE\n\
                       keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n";
        std::fs::write(dir.join("ca.cnf"), ca_conf).unwrap();
        std::fs::write(
            dir.join("other-ca.cnf"),
            ca_conf.replace("records-test CA", "unrelated CA"),
        )
        .unwrap();
        std::fs::write(
            dir.join("leaf.cnf"),
            "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = leaf\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("ed-ca.cnf"),
            ca_conf.replace("records-test CA", "Ed25519 CA"),
        )
        .unwrap();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-new",
                "-nodes",
                "-newkey",
                "ed25519",
                "-keyout",
                "ed-ca.key",
                "-out",
                "ed-ca.crt",
                "-days",
                "3",
                "-config",
                "ed-ca.cnf",
            ],
        );
        for ca in ["ca", "other-ca"] {
            let (key, crt, cnf) = (
                format!("{ca}.key"),
                format!("{ca}.crt"),
                format!("{ca}.cnf"),
            );
            let mut args = vec!["req", "-x509", "-new", "-nodes"];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &crt, "-days", "3", "-config", &cnf]);
            openssl(&dir, &args);
        }
        // name, subject, extensions, signing CA, digest
        let leaves = [
            (
                "server",
                "/CN=localhost",
                "extendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost,IP:127.0.0.1\n",
                "ca",
                "-sha256",
            ),
            (
                "wrong-name",
                "/CN=db.example.com",
                "extendedKeyUsage = serverAuth\nsubjectAltName = DNS:db.example.com\n",
                "ca",
                "-sha384",
            ),
            (
                "client",
                "/CN=cert_user",
                "extendedKeyUsage = clientAuth\n",
                "ca",
                "-sha256",
            ),
            (
                "stranger",
                "/CN=cert_user",
                "extendedKeyUsage = clientAuth\n",
                "other-ca",
                "-sha256",
            ),
            (
                "ed25519-signed",
                "/CN=localhost",
                "extendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost,IP:127.0.0.1\n",
                "ed-ca",
                // Ed25519 signs the whole certificate: no separate digest.
                "",
            ),
        ];
        for (serial, (name, subject, extensions, ca, digest)) in leaves.iter().enumerate() {
            let ext = format!(
                "basicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\n\
                 authorityKeyIdentifier = keyid\n{extensions}"
            );
            std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
            let (key, csr, crt) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
            );
            let mut args = vec!["req", "-new", "-nodes"];
            args.extend(ec);
            args.extend([
                "-keyout", &key, "-out", &csr, "-subj", subject, "-config", "leaf.cnf",
            ]);
            openssl(&dir, &args);
            let (ca_crt, ca_key, ext, serial) = (
                format!("{ca}.crt"),
                format!("{ca}.key"),
                format!("{name}.ext"),
                format!("{}", serial + 2),
            );
            let mut args = vec![
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_crt,
                "-CAkey",
                &ca_key,
                "-set_serial",
                &serial,
                "-days",
                "3",
                "-extfile",
                &ext,
                "-out",
                &crt,
            ];
            if !digest.is_empty() {
                args.push(digest);
            }
            openssl(&dir, &args);
        }
        let at = |name: &str| dir.join(name);
        TestPki {
            ca: at("ca.crt"),
            other_ca: at("other-ca.crt"),
            server_cert: at("server.crt"),
            server_key: at("server.key"),
            wrong_name_cert: at("wrong-name.crt"),
            wrong_name_key: at("wrong-name.key"),
            client_cert: at("client.crt"),
            client_key: at("client.key"),
            stranger_cert: at("stranger.crt"),
            stranger_key: at("stranger.key"),
            ed25519_signed_cert: at("ed25519-signed.crt"),
            ed25519_signed_key: at("ed25519-signed.key"),
            dir,
        }
    }
}

/// Users of the TLS clusters besides AUTH_USERS: (name, password), by their pg_hba.conf lines
/// in [`Cluster::start_tls`].
pub const TLS_USERS: &[(&str, &str)] = &[
    // hostssl scram-sha-256, hostnossl reject.
    ("ssl_only", "ssl-secret"),
    // hostssl reject, hostnossl trust.
    ("plain_only", ""),
    // hostssl cert (the client certificate's CN), no hostnossl line.
    ("cert_user", ""),
];

/// Which server certificate a TLS cluster presents.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ServerCert {
    /// For localhost and 127.0.0.1.
    Localhost,
    /// For db.example.com only.
    WrongName,
    /// For localhost, signed with Ed25519 (no tls-server-end-point hash).
    Ed25519Signed,
}

impl Cluster {
    /// A private cluster with `ssl = on`, presenting `cert` (signed by [`TestPki`]'s CA) and
    /// verifying client certificates against that CA. pg_hba.conf: the AUTH_USERS with their
    /// methods over either transport, postgres trusted, and the [`TLS_USERS`] rules.
    pub fn start_tls(cert: ServerCert) -> Cluster {
        let pki = TestPki::get();
        let (crt, key) = match cert {
            ServerCert::Localhost => (&pki.server_cert, &pki.server_key),
            ServerCert::WrongName => (&pki.wrong_name_cert, &pki.wrong_name_key),
            ServerCert::Ed25519Signed => (&pki.ed25519_signed_cert, &pki.ed25519_signed_key),
        };
        let hba: Vec<String> = ["host all postgres 127.0.0.1/32 trust".to_string()]
            .into_iter()
            .chain(
                AUTH_USERS
                    .iter()
                    .map(|(user, _, method)| format!("host all {user} 127.0.0.1/32 {method}")),
            )
            .chain(
                [
                    "hostssl all ssl_only 127.0.0.1/32 scram-sha-256",
                    "hostnossl all ssl_only 127.0.0.1/32 reject",
                    "hostssl all plain_only 127.0.0.1/32 reject",
                    "hostnossl all plain_only 127.0.0.1/32 trust",
                    "hostssl all cert_user 127.0.0.1/32 cert",
                ]
                .map(String::from),
            )
            .collect();
        let settings = [
            "ssl=on",
            "ssl_cert_file=server.crt",
            "ssl_key_file=server.key",
            "ssl_ca_file=ca.crt",
        ]
        .map(String::from);
        let cluster = Cluster::start_with(
            &hba,
            &settings,
            &[
                (crt.as_path(), "server.crt", 0o644),
                (key.as_path(), "server.key", 0o600),
                (pki.ca.as_path(), "ca.crt", 0o644),
            ],
        );
        for (user, password) in TLS_USERS {
            let password = if password.is_empty() {
                String::new()
            } else {
                format!(" PASSWORD '{password}'")
            };
            cluster
                .server
                .execute(&format!("CREATE ROLE {user} LOGIN{password}"));
        }
        cluster
    }
}

/// The TLS cluster the tests of a process share (certificate for localhost and 127.0.0.1).
pub fn tls_server() -> &'static Server {
    super::init_runtime();
    static TLS: OnceLock<Server> = OnceLock::new();
    TLS.get_or_init(|| Cluster::start_tls(ServerCert::Localhost).shared())
}

/// A shared TLS cluster whose certificate names only db.example.com.
pub fn wrong_name_server() -> &'static Server {
    super::init_runtime();
    static WRONG: OnceLock<Server> = OnceLock::new();
    WRONG.get_or_init(|| Cluster::start_tls(ServerCert::WrongName).shared())
}

/// A shared TLS cluster whose certificate is signed with Ed25519.
pub fn ed25519_signed_server() -> &'static Server {
    super::init_runtime();
    static ED: OnceLock<Server> = OnceLock::new();
    ED.get_or_init(|| Cluster::start_tls(ServerCert::Ed25519Signed).shared())
}
