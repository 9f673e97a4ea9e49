//! What a client can make the server hold: a non-reading pipeliner's memory and the write
//! timeout that ends it, and the accept loop out of file descriptors. The tests that measure
//! the process (memory, CPU, descriptor limit) run in a child process of this test binary, so
//! that other tests running in parallel neither disturb the figure nor feel the limit.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{config, eventually, proc_status_kib, TestServer};

const CHILD_ENV: &str = "HTTP_CORE_CHILD";

/// The harness's name for the test `name` of this module: its path without the crate, as
/// `memory::child_accept_out_of_fds`, which `--exact` must match.
fn test_path(name: &str) -> String {
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    format!("{module}::{name}")
}

/// Runs the test `name` of this module in a child process of this binary (with
/// `CHILD_ENV=name`), bounded to 60 s, and fails with its output if it fails or did not run.
fn run_in_child(name: &str) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            &test_path(name),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, name)
        // A panic in the child (a refused spawn is one) prints no backtrace: symbolizing runs
        // on a 64 KiB coroutine stack, under the child's address-space cap.
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child test");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child test {name} ran past 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(status.success(), "child test {name} failed:\n{text}");
    assert!(
        text.contains("1 passed"),
        "child test {name} did not run:\n{text}"
    );
    eprint!("{text}");
}

fn in_child(name: &str) -> bool {
    std::env::var(CHILD_ENV).as_deref() == Ok(name)
}

/// Guards against the conn.rs defect that
/// `pipelining::requests_left_when_a_batch_hits_the_output_limit_are_answered` also covers: the
/// loop used to read again after a batch stopped on `max_output_bytes` with complete requests
/// still buffered, offering the whole (doubling) input buffer, so the server took all 20 MiB
/// into memory before its output blocked. Now nothing is read until they are answered.
#[test]
fn non_reading_pipeliner_cannot_grow_server_memory() {
    run_in_child("child_non_reading_pipeliner");
}

/// Run by `non_reading_pipeliner_cannot_grow_server_memory`; passes at once otherwise.
#[test]
fn child_non_reading_pipeliner() {
    if !in_child("child_non_reading_pipeliner") {
        return;
    }
    const TOTAL: usize = 20 << 20;
    let server = TestServer::start(config(|c| {
        c.limits.max_output_bytes = 16 * 1024;
        c.timeouts.write = Duration::from_secs(3);
    }));
    // 20 MiB of pipelined requests, each asking for a 4 KiB answer.
    let one = b"GET /big?n=4096 HTTP/1.1\r\nHost: a\r\n\r\n";
    let payload = one.repeat(TOTAL / one.len());
    let total = payload.len();
    // Warm up (the runtime, the first connection's buffers), then take the baseline.
    let mut warm = server.client();
    warm.send(one);
    assert_eq!(warm.response().body.len(), 4096);
    drop(warm);
    let rss_before = proc_status_kib("VmRSS");
    let peak_before = proc_status_kib("VmHWM");

    let c = server.client();
    let mut writer = c.stream.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // Write without ever reading, until the server stops taking bytes (a write blocked for
    // 500 ms) or everything is sent. Scoped, so the payload outlives the measurement.
    let written = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let mut sent = 0;
                while sent < payload.len() {
                    match writer.write(&payload[sent..]) {
                        Ok(n) => sent += n,
                        Err(_) => break,
                    }
                }
                sent
            })
            .join()
            .unwrap()
    });
    let rss_during = proc_status_kib("VmRSS");
    let peak = proc_status_kib("VmHWM");
    println!(
        "pipeliner: wrote {written} of {total} bytes; RSS {rss_before} -> {rss_during} KiB, \
         peak {peak_before} -> {peak} KiB"
    );
    assert!(
        written < total,
        "the server took all {total} bytes from a client that never reads its answers"
    );
    let grown = peak.saturating_sub(peak_before.max(rss_before));
    assert!(
        grown < 8 * 1024,
        "peak RSS grew by {grown} KiB for a client that never reads"
    );
    // The server gives up on the client at the write timeout.
    assert!(
        eventually(Duration::from_secs(10), || server
            .handle
            .active_connections()
            == 0),
        "the non-reading connection was not closed after the write timeout"
    );
    drop(c);
    drop(payload);
}

#[test]
fn accept_backs_off_when_out_of_file_descriptors() {
    run_in_child("child_accept_out_of_fds");
}

/// CPU time (user + system) this process has used.
fn cpu_time() -> Duration {
    // SAFETY: getrusage into a local struct.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Run by `accept_backs_off_when_out_of_file_descriptors`; passes at once otherwise. Lowers
/// this process's descriptor limit, fills the table with connections (client and server ends
/// share it) so that the server's accept fails with EMFILE while connections wait in the
/// backlog, checks the accept loop does not spin, then frees descriptors and checks the
/// waiting connections are taken and served.
#[test]
fn child_accept_out_of_fds() {
    if !in_child("child_accept_out_of_fds") {
        return;
    }
    let server = TestServer::default_config();
    let addr = server.addr();
    let mut warm = server.client();
    warm.send(b"GET /warm HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(warm.response().status, 200);
    drop(warm);
    assert!(server.connections_settle_at(0));

    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = open + 48;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    let mut reserve: Vec<std::fs::File> = (0..4)
        .map(|_| std::fs::File::open("/dev/null").unwrap())
        .collect();
    let mut conns = Vec::new();
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => conns.push(s),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
            Err(e) => panic!("connect: {e}"),
        }
        assert!(conns.len() < 100, "the descriptor limit did not bite");
    }
    let pending = |conns: &Vec<TcpStream>| conns.len() > server.handle.active_connections();
    // The table is full. Unless a connection already waits unaccepted, free one reserved
    // descriptor for one more client end: its server end cannot be had.
    if !eventually(Duration::from_millis(300), || pending(&conns)) {
        reserve.pop();
        conns.push(TcpStream::connect(addr).expect("connect with the freed descriptor"));
    }
    assert!(pending(&conns), "no connection waits for accept");
    let accepted = server.handle.active_connections();

    // A measurement window, not synchronisation: a spinning accept loop would use about all
    // of it on one worker.
    let cpu_before = cpu_time();
    std::thread::sleep(Duration::from_millis(600));
    let cpu = cpu_time() - cpu_before;
    println!(
        "out of descriptors: {} client connections, {accepted} accepted; CPU {cpu:?} in 600 ms",
        conns.len()
    );
    assert!(
        cpu < Duration::from_millis(250),
        "the accept loop used {cpu:?} of CPU in 600 ms while out of descriptors"
    );
    assert_eq!(server.handle.active_connections(), accepted);

    // Free descriptors by closing the oldest (accepted) connections: the server must then
    // take the waiting ones, and serve new ones.
    drop(reserve);
    conns.drain(..conns.len() / 2);
    let keep = conns.len();
    assert!(
        eventually(Duration::from_secs(5), || server
            .handle
            .active_connections()
            == keep),
        "{} connections open on the server, {keep} expected",
        server.handle.active_connections()
    );
    let mut c = server.client();
    c.send(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().status, 200);
}

/// A client that sends requests but never reads the answers: once the server's write has been
/// blocked for the write timeout, it gives up and closes the connection.
#[test]
fn client_that_never_reads_is_closed_at_the_write_timeout() {
    let server = TestServer::start(config(|c| {
        c.limits.max_output_bytes = 16 * 1024;
        c.timeouts.write = Duration::from_millis(300);
    }));
    let c = server.client();
    let mut writer = c.stream.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // Ask for far more output than the socket buffers hold, and never read.
    let one = b"GET /big?n=65536 HTTP/1.1\r\nHost: a\r\n\r\n";
    for _ in 0..400 {
        if writer.write_all(one).is_err() {
            break;
        }
    }
    assert!(
        server.connections_settle_at(0),
        "the stalled connection is closed after the write timeout; {} still open",
        server.handle.active_connections()
    );
    drop(c);
}

/// The accept loop survives coroutines that cannot be started (may panics when a stack cannot
/// be mapped: memory, `vm.max_map_count`). The child keeps may's pool of ready coroutines to
/// one, asks for 8 MiB stacks and caps its address space 4 MiB above what it uses, so that a
/// new connection's stack no longer fits while small allocations still do; then it lifts
/// both, and a new connection must be served.
#[test]
fn accept_survives_a_failed_coroutine_spawn() {
    run_in_child("child_spawn_fails");
}

/// Run by `accept_survives_a_failed_coroutine_spawn`; passes at once otherwise.
#[test]
fn child_spawn_fails() {
    if !in_child("child_spawn_fails") {
        return;
    }
    const WORDS: usize = std::mem::size_of::<usize>();
    // Before the runtime starts: otherwise may keeps 1,000 coroutines (and stacks) ready.
    may::config().set_pool_capacity(1);
    let server = TestServer::default_config();
    let mut warm = server.client();
    warm.send(b"GET /warm HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(warm.response().status, 200);

    let normal_stack = may::config().get_stack_size();
    may::config().set_stack_size((8 << 20) / WORDS);
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on this process with valid pointers.
    unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut old) };
    let capped = libc::rlimit {
        rlim_cur: (proc_status_kib("VmSize") + 4 * 1024) * 1024,
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &capped) }, 0);
    let clients: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(server.addr()).unwrap())
        .collect();
    // A client whose coroutine could not start is closed by the server.
    let refused = eventually(Duration::from_secs(10), || {
        clients.iter().any(|c| {
            c.set_nonblocking(true).unwrap();
            let mut byte = [0u8; 1];
            match (&*c).read(&mut byte) {
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                Ok(n) => n == 0,
            }
        })
    });
    // SAFETY: as above; the soft limit goes back to what it was (not above the hard one).
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &old) }, 0);
    may::config().set_stack_size(normal_stack);
    assert!(
        refused,
        "every connection got its coroutine: the cap proved nothing"
    );
    drop(clients);
    let mut after = server.client();
    after.send(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(
        after.response().status,
        200,
        "the accept loop is still running"
    );
}
