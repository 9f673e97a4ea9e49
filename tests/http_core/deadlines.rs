//! The write deadline: a batch of answers must be sent within the write timeout whatever the
//! client sends meanwhile (may's I/O timer restarts whenever the socket turns readable, so a
//! client that never reads but sends a byte now and then used to hold a write open).

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use records_service::http::Timeout;

use crate::support::{config, eventually, http, waiting_first, Conn, EchoBody, TestServer};

#[test]
fn input_does_not_extend_the_write_deadline() {
    let server = TestServer::start(config(|c| c.timeouts.write = Duration::from_millis(1000)));
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    // 64 answers of 1 MiB: far more than the socket buffers hold, and the client never reads.
    s.write_all(&b"GET /big?n=1048576 HTTP/1.1\r\nHost: a\r\n\r\n".repeat(64))
        .unwrap();
    let start = Instant::now();
    let mut keep_sending = s.try_clone().unwrap();
    let pacer = std::thread::spawn(move || {
        // A blank line every 200 ms (paces the input; errors once the server cut us).
        while keep_sending.write_all(b"\r\n").is_ok() && start.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    // Accepted first (on a busy machine the accept can lag; "no connection open" must not pass
    // for "cut"), then cut.
    assert!(
        eventually(Duration::from_secs(10), || server.handle.stats().accepted
            == 1),
        "the connection was never accepted"
    );
    let accepted = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || server
            .handle
            .active_connections()
            == 0),
        "the connection was not cut"
    );
    let took = accepted.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "cut after {took:?}, write timeout 1 s"
    );
    // Counted once, as a write timeout (whichever timer cut it), and as nothing else.
    let stats = server.handle.stats();
    let count = |kind: Timeout| stats.timeouts.iter().find(|(k, _)| *k == kind).unwrap().1;
    assert_eq!(count(Timeout::Write), 1, "{stats:?}");
    assert_eq!(count(Timeout::Head) + count(Timeout::Idle), 0, "{stats:?}");
    drop(s);
    pacer.join().unwrap();
}

/// Urgent (`MSG_OOB`) bytes used to wake a blocked read that found nothing, which re-armed
/// may's timer for the full timeout: a half-sent request stayed open past the header timeout.
#[test]
fn urgent_bytes_do_not_extend_the_header_timeout() {
    use std::os::fd::AsRawFd;
    let server = TestServer::start(config(|c| c.timeouts.header = Duration::from_millis(500)));
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.write_all(b"GET /urgent HTTP/1.1\r\n").unwrap();
    let start = Instant::now();
    assert!(server.connections_settle_at(1));
    let fd = s.as_raw_fd();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let pacer = std::thread::spawn(move || {
        // One urgent byte every 100 ms (paces the input) until the server closes or 5 s pass.
        while start.elapsed() < Duration::from_secs(5)
            && !stopped.load(std::sync::atomic::Ordering::SeqCst)
        {
            if send_raw(fd, b"x", libc::MSG_OOB) < 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    // The 408 arrives at the header timeout (the connection then lingers, bounded, while the
    // client keeps sending).
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = [0u8; 12];
    let got = std::io::Read::read_exact(&mut s, &mut head);
    let took = start.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    pacer.join().unwrap();
    assert!(got.is_ok(), "no answer within 5 s: {got:?}");
    assert_eq!(&head, b"HTTP/1.1 408");
    assert!(
        took < Duration::from_millis(2500),
        "answered after {took:?}"
    );
    drop(s);
}

/// One `send(2)` of `bytes` with `flags` (MSG_MORE, MSG_OOB) on the socket `fd`, which the
/// test owns; what it returns.
fn send_raw(fd: std::os::fd::RawFd, bytes: &[u8], flags: libc::c_int) -> isize {
    // SAFETY: a send on a socket the caller owns, from a valid buffer.
    unsafe {
        libc::send(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            flags | libc::MSG_NOSIGNAL,
        )
    }
}

/// Sends all of `bytes` with `flags` on the client's socket, in one call.
fn send_flags(c: &Conn, bytes: &[u8], flags: libc::c_int) {
    use std::os::fd::AsRawFd;
    assert_eq!(
        send_raw(c.stream.as_raw_fd(), bytes, flags),
        bytes.len() as isize
    );
}

/// A connection that has been answered once: its last read emptied the socket, so it waits
/// for a readiness event before it reads again (`read_until`'s `wait_first`).
fn answered_once(server: &TestServer) -> Conn {
    let mut c = server.client();
    c.request("GET", "/first", None);
    assert_eq!(c.response().status, 200);
    c
}

/// A request and the client's FIN in one segment: one readiness event for both, and the read
/// takes both. The connection must not then wait for another event (none comes): it answers
/// and closes at once, not at the idle timeout (60 s).
#[test]
fn a_request_with_the_fin_in_its_segment_is_answered_and_closed_at_once() {
    let server = waiting_first(|_| {});
    let mut c = answered_once(&server);
    // MSG_MORE holds the segment back until the shutdown adds the FIN to it.
    send_flags(
        &c,
        &http::request_bytes("GET", "/second", None),
        libc::MSG_MORE,
    );
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(c.response().echo().path, "/second");
    assert!(
        c.closed_within(Duration::from_secs(2)),
        "still open 2 s after the client's FIN"
    );
}

/// Half a head, then the client closes, in one segment: the slot is freed at once, not at
/// the header timeout (10 s).
#[test]
fn half_a_head_then_a_close_frees_the_connection_at_once() {
    let server = waiting_first(|_| {});
    let c = answered_once(&server);
    send_flags(&c, b"GET /x HTTP/1.1\r\nHo", libc::MSG_MORE);
    drop(c);
    assert!(
        eventually(Duration::from_secs(2), || server
            .handle
            .active_connections()
            == 0),
        "the connection stayed open after the client closed"
    );
}

/// A read stops short at an urgent mark (SO_OOBINLINE puts the byte in line) with the rest in
/// the socket and no event to come: a partial request is read again at once, not after the
/// header timeout.
#[test]
fn a_request_ending_in_an_urgent_byte_is_answered_at_once() {
    let server = waiting_first(|c| c.timeouts.header = Duration::from_secs(5));
    let mut c = answered_once(&server);
    let start = Instant::now();
    // The urgent byte is the last one (the final \n).
    send_flags(
        &c,
        &http::request_bytes("GET", "/urgent", None),
        libc::MSG_OOB,
    );
    assert_eq!(c.response().echo().path, "/urgent");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "answered after {:?} (header timeout 5 s)",
        start.elapsed()
    );
}

/// The one case the waiting path leaves: an urgent byte at the very start of a pipelined
/// request ends the read exactly at the request before it, with no event to come for the rest.
/// That request is served at the idle deadline (the watchdog wakes the read), not lost.
#[test]
fn a_request_starting_with_an_urgent_byte_is_served_by_the_idle_deadline() {
    // Long enough that a test thread descheduled on a busy machine does not see the idle
    // connection closed before it sends.
    let server = waiting_first(|c| c.timeouts.idle = Duration::from_secs(3));
    let mut c = answered_once(&server);
    let second = http::request_bytes("GET", "/urgent-start", None);
    send_flags(&c, &http::request_bytes("GET", "/a", None), libc::MSG_MORE);
    send_flags(&c, &second[..1], libc::MSG_OOB | libc::MSG_MORE);
    let start = Instant::now();
    send_flags(&c, &second[1..], 0);
    assert_eq!(c.response().echo().path, "/a");
    assert_eq!(c.response().echo().path, "/urgent-start");
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "served after {:?} (idle timeout 3 s)",
        start.elapsed()
    );
}

/// A client socket whose receive buffer is set to `bytes` before it connects (so its window
/// stays small): answers larger than that wait in the server's kernel until it reads.
fn connect_with_receive_buffer(addr: std::net::SocketAddr, bytes: libc::c_int) -> TcpStream {
    use std::os::fd::FromRawFd;
    let std::net::SocketAddr::V4(v4) = addr else {
        panic!("the test server listens on IPv4")
    };
    // SAFETY: plain socket calls on a descriptor created here, with valid pointers and
    // lengths; the descriptor is handed to the TcpStream, which owns it from then on.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let set = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(set, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let connected = libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(connected, 0, "connect: {}", std::io::Error::last_os_error());
        stream
    }
}

/// The write deadline covers delivery, not only the hand-over to the kernel: an answer the
/// kernel took whole (so the server's write returned at once) but the client never reads used
/// to sit in the kernel until the idle timeout, and many such clients pinned gigabytes. It is
/// cut at the write timeout, with a reset, so the kernel frees what it held.
#[test]
fn an_answer_the_kernel_holds_for_a_client_that_never_reads_is_cut_at_the_write_timeout() {
    answer_held_by_the_kernel_is_cut(records_service::http::Limits::default().send_buffer_bytes);
}

/// As above, with the kernel's own send buffer (which grows to megabytes): the queue is
/// watched after enough output even where no write filled it.
#[test]
fn an_answer_held_by_a_default_kernel_send_buffer_is_cut_at_the_write_timeout() {
    answer_held_by_the_kernel_is_cut(0);
}

fn answer_held_by_the_kernel_is_cut(send_buffer_bytes: usize) {
    use std::io::{ErrorKind, Read};
    let server = TestServer::start(config(|c| {
        c.timeouts.write = Duration::from_millis(1000);
        c.timeouts.idle = Duration::from_secs(30);
        c.limits.send_buffer_bytes = send_buffer_bytes;
    }));
    let mut s = connect_with_receive_buffer(server.addr(), 4096);
    s.write_all(b"GET /big?n=262144 HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let sent = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || server.handle.stats().accepted
            == 1),
        "the connection was never accepted"
    );
    assert!(
        eventually(Duration::from_secs(10), || server
            .handle
            .active_connections()
            == 0),
        "the connection is still open, its answer held by the kernel"
    );
    let took = sent.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "cut {took:?} after the request, write timeout 1 s"
    );
    let stats = server.handle.stats();
    let count = |kind: Timeout| stats.timeouts.iter().find(|(k, _)| *k == kind).unwrap().1;
    assert_eq!(count(Timeout::Write), 1, "{stats:?}");
    // A reset, not a close: after a close the kernel would go on delivering the answer.
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = 0usize;
    let mut chunk = [0u8; 64 * 1024];
    let end = loop {
        match s.read(&mut chunk) {
            Ok(0) => break Ok(()),
            Ok(n) => got += n,
            Err(e) => break Err(e),
        }
    };
    match end {
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("not reset: {other:?} after {got} bytes"),
    }
    assert!(got < 262_144, "the whole answer arrived ({got} bytes)");
}

/// A client that reads its answer steadily but slowly (about 130 KB/s through a 4 KiB window)
/// takes longer than the write timeout to receive 256 KiB: the delivery deadline is re-armed as
/// long as the kernel sends something, so it gets the whole answer (a client that reads
/// nothing is cut, above).
#[test]
fn a_slow_but_steadily_reading_client_gets_its_whole_answer() {
    let server = TestServer::start(config(|c| {
        c.timeouts.write = Duration::from_millis(1000);
        c.timeouts.idle = Duration::from_secs(30);
    }));
    let mut s = connect_with_receive_buffer(server.addr(), 4096);
    s.write_all(b"GET /big?n=262144 HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = Instant::now();
    let mut got = 0usize;
    let mut chunk = [0u8; 2048];
    let end = loop {
        // Pacing the reader (a slow link), not synchronisation.
        std::thread::sleep(Duration::from_millis(15));
        match std::io::Read::read(&mut s, &mut chunk) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                got += n;
                if got >= 262_144 {
                    break Ok(());
                }
            }
            Err(e) => break Err(e),
        }
    };
    assert!(
        end.is_ok() && got >= 262_144,
        "cut after {got} bytes, {:?}: {end:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() > Duration::from_millis(1000),
        "the delivery took longer than the write timeout, or the test proves nothing"
    );
}
