//! The write deadline: a batch of answers must be sent within the write timeout whatever the
//! client sends meanwhile (may's I/O timer restarts whenever the socket turns readable, so a
//! client that never reads but sends a byte now and then used to hold a write open).

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use records_service::http::Timeout;

use crate::support::{config, eventually, TestServer};

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
            // SAFETY: a send on a socket this test owns, from a valid one-byte buffer.
            let sent = unsafe {
                libc::send(
                    fd,
                    b"x".as_ptr().cast(),
                    1,
                    libc::MSG_OOB | libc::MSG_NOSIGNAL,
                )
            };
            if sent < 0 {
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
