//! The write deadline: a batch of answers must be sent within the write timeout whatever the
//! client sends meanwhile (may's I/O timer restarts whenever the socket turns readable, so a
//! client that never reads but sends a byte now and then used to hold a write open).

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

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
    assert!(
        eventually(Duration::from_secs(10), || server
            .handle
            .active_connections()
            == 0),
        "the connection was not cut"
    );
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "cut after {took:?}, write timeout 1 s"
    );
    drop(s);
    pacer.join().unwrap();
}
