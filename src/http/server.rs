//! Accepting connections, bounding how many are open, and shutting down gracefully.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use may::net::{TcpListener, TcpStream};

use super::response::{write_response, Response};
use super::{conn, HttpConfig, Service};

/// State shared by the accept loop, every connection and the handle.
pub(crate) struct ServerShared {
    pub(crate) config: HttpConfig,
    /// Set once by `ServerHandle::shutdown`; connections read it after each batch and before
    /// each idle wait, and close instead of waiting for another request.
    draining: AtomicBool,
    /// Open connections. Incremented by the accept loop before a connection's coroutine starts,
    /// decremented by that coroutine's guard when it ends, whatever way it ends.
    active: AtomicUsize,
    /// Every open connection, so shutdown can wake the idle ones. Entries are added by the
    /// accept loop and removed by the connection's guard.
    registry: Mutex<HashMap<u64, Arc<ConnEntry>>>,
    listener_fd: i32,
}

impl ServerShared {
    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// What shutdown needs to know of one connection.
pub(crate) struct ConnEntry {
    fd: i32,
    /// True while the connection waits for the first byte of a request. Set before the
    /// connection checks `draining`, and shutdown sets `draining` before it reads this, so
    /// one of the two always sees the other.
    pub(crate) idle: AtomicBool,
}

/// A running server.
pub struct ServerHandle {
    shared: Arc<ServerShared>,
    addr: SocketAddr,
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn active_connections(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }

    pub fn is_draining(&self) -> bool {
        self.shared.draining()
    }

    /// Stops accepting, closes idle connections and lets busy ones finish their current batch
    /// (answered with `Connection: close`). Returns at once; see [`ServerHandle::wait`].
    pub fn shutdown(&self) {
        if self.shared.draining.swap(true, Ordering::SeqCst) {
            return;
        }
        // SAFETY: plain libc calls on descriptors owned by the listener and by live
        // connections (entries leave the registry before their socket is closed).
        unsafe {
            // Wakes the accept loop: accept() fails once the listening socket is shut down.
            libc::shutdown(self.shared.listener_fd, libc::SHUT_RDWR);
        }
        let registry = self
            .shared
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for entry in registry.values() {
            if entry.idle.load(Ordering::SeqCst) {
                unsafe {
                    libc::shutdown(entry.fd, libc::SHUT_RD);
                }
            }
        }
    }

    /// Waits until every connection has closed or `timeout` passed; true if all closed.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.active_connections() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

/// Starts serving `listener` with `service` on the `may` runtime and returns at once.
pub fn serve<S: Service>(
    listener: TcpListener,
    service: Arc<S>,
    config: HttpConfig,
) -> io::Result<ServerHandle> {
    let addr = listener.local_addr()?;
    let shared = Arc::new(ServerShared {
        config,
        draining: AtomicBool::new(false),
        active: AtomicUsize::new(0),
        registry: Mutex::new(HashMap::new()),
        listener_fd: listener.as_raw_fd(),
    });
    let accept_shared = shared.clone();
    // SAFETY: may requires that coroutines do not block their worker thread on non-may
    // primitives for long; the accept loop uses only may I/O and may sleep.
    unsafe {
        may::coroutine::Builder::new()
            .name("http-accept".into())
            .spawn(move || accept_loop(listener, service, accept_shared))?;
    }
    Ok(ServerHandle { shared, addr })
}

fn accept_loop<S: Service>(listener: TcpListener, service: Arc<S>, shared: Arc<ServerShared>) {
    let next_id = AtomicU64::new(1);
    let mut backoff = Duration::ZERO;
    loop {
        let (stream, _) = match listener.accept() {
            Ok(accepted) => {
                backoff = Duration::ZERO;
                accepted
            }
            Err(e) => {
                if shared.draining() {
                    return;
                }
                if is_resource_exhaustion(&e) {
                    // Out of descriptors or memory: spinning would only burn the CPU the open
                    // connections need to finish. Back off, 10 ms doubling to 1 s.
                    backoff =
                        (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    eprintln!("http: accept failed ({e}); retrying in {backoff:?}");
                    may::coroutine::sleep(backoff);
                }
                continue;
            }
        };
        if shared.draining() {
            return;
        }
        if shared.active.load(Ordering::SeqCst) >= shared.config.limits.max_connections {
            refuse_busy(&stream);
            continue;
        }
        shared.active.fetch_add(1, Ordering::SeqCst);
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(ConnEntry {
            fd: stream.as_raw_fd(),
            idle: AtomicBool::new(false),
        });
        shared
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, entry.clone());
        let service = service.clone();
        let conn_shared = shared.clone();
        let guard = ConnGuard {
            shared: shared.clone(),
            id,
        };
        // SAFETY: as above; connection coroutines block only on may I/O and may primitives.
        let spawned = unsafe {
            may::coroutine::spawn(move || {
                let mut stream = stream;
                conn::run(&mut stream, &*service, &conn_shared, &entry, id);
                // Leave the registry before the socket closes: shutdown() signals registered
                // descriptors under the registry lock, and a closed number can be reused at once.
                drop(guard);
                drop(stream);
            })
        };
        drop(spawned);
    }
}

/// Unregisters a connection and releases its slot when its coroutine ends, panicking or not.
struct ConnGuard {
    shared: Arc<ServerShared>,
    id: u64,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shared
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        self.shared.active.fetch_sub(1, Ordering::SeqCst);
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Answers 503 without waiting (a non-blocking send that may write nothing) and closes: a
/// refused connection costs no coroutine, only a short-lived buffer for the answer.
fn refuse_busy(stream: &TcpStream) {
    let mut body = Vec::with_capacity(64);
    let mut out = Vec::with_capacity(256);
    let mut res = Response::new(&mut body);
    res.error(503, "Too many open connections")
        .header("Retry-After", "1");
    write_response(&mut out, &res, false, true);
    // SAFETY: a send on a descriptor we own, from a valid buffer.
    unsafe {
        libc::send(
            stream.as_raw_fd(),
            out.as_ptr().cast(),
            out.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        );
    }
}
