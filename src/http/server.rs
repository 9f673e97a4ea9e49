//! Accepting connections, bounding how many are open, and shutting down gracefully.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use may::net::{TcpListener, TcpStream};

use super::buffer::{Budget, InBuf};
use super::response::write_error;
use super::shared::{ConnEntry, IdleQueue, ServerShared};
use super::stats::{Refused, ServerStats, Stats};
use super::{conn, HttpConfig, Service, Status};

/// Refused connections (at the connection cap) that may linger at once; past it a refusal
/// closes at once. Each costs a coroutine for at most the linger time.
const MAX_LINGERING_REFUSALS: usize = 64;
/// Buffer a lingering refusal reads into.
const REFUSAL_LINGER_BUFFER: usize = 4 * 1024;
/// How often the watchdog looks for connections past their write deadline, at most.
const WATCHDOG_TICK_MAX: Duration = Duration::from_millis(100);

/// A running server. Clones are handles to the same server.
#[derive(Clone)]
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

    /// Bytes of the buffered-request budget in use now, across all connections.
    pub fn buffered_bytes(&self) -> usize {
        self.shared.budget.used()
    }

    /// The connection core's counters now (see [`ServerStats`]).
    pub fn stats(&self) -> ServerStats {
        self.shared.stats.snapshot(self.active_connections())
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
        // SAFETY: a plain libc call on a descriptor this server owns.
        unsafe {
            // Wakes the accept loop: accept() fails once the listening socket is shut down.
            libc::shutdown(self.shared.listener.as_raw_fd(), libc::SHUT_RDWR);
        }
        let registry = self.shared.registry();
        for entry in registry.values() {
            if entry.idle.load(Ordering::SeqCst) {
                // SAFETY: the descriptor is open: entries leave the registry (under this
                // lock) before their socket is closed.
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

/// Listen backlog: connections the kernel queues before they are accepted (may's own bind uses
/// the same).
const BACKLOG: libc::c_int = 1024;

/// A listening socket for [`serve`] at `addr`. Unlike `may::net::TcpListener::bind`, it does
/// not set `SO_REUSEPORT`: with it, a second process (or a second server in one process, even
/// one bound to port 0) could bind the same port and the kernel would silently split the
/// connections between the two. Here that is an error ("Address already in use"), as it should
/// be. (`SO_REUSEADDR` is set, as std does, so a restart does not wait for TIME_WAIT.)
pub fn bind<A: std::net::ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
    use std::os::fd::IntoRawFd;
    let std_listener = std::net::TcpListener::bind(addr)?;
    // SAFETY: listen on a socket we own; calling it again on a listening socket only changes
    // its backlog.
    if unsafe { libc::listen(std_listener.as_raw_fd(), BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = std_listener.into_raw_fd();
    // SAFETY: `fd` is a listening TCP socket whose ownership passes to the may listener.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// Starts serving `listener` with `service` on the `may` runtime and returns at once.
pub fn serve<S: Service>(
    listener: TcpListener,
    service: Arc<S>,
    config: HttpConfig,
) -> io::Result<ServerHandle> {
    let addr = listener.local_addr()?;
    let shared = Arc::new(ServerShared {
        budget: Budget::new(config.limits.max_buffered_bytes),
        config,
        draining: AtomicBool::new(false),
        active: AtomicUsize::new(0),
        registry: Mutex::new(HashMap::new()),
        idle_queue: IdleQueue::new(may::config().get_workers() + 2),
        listener: OwnedFd::from(listener.inner().try_clone()?),
        lingering_refusals: AtomicUsize::new(0),
        epoch: Instant::now(),
        stats: Stats::new(may::config().get_workers() + 2),
        id_prefix: super::request_id::process_prefix(),
    });
    let accept_shared = shared.clone();
    let watchdog_shared = shared.clone();
    // SAFETY: may requires that coroutines do not block their worker thread on non-may
    // primitives for long; the accept loop and the watchdog use only may I/O, may sleep and
    // short critical sections.
    unsafe {
        may::coroutine::Builder::new()
            .name("http-accept".into())
            .spawn(move || accept_loop(listener, service, accept_shared))?;
        may::coroutine::Builder::new()
            .name("http-watchdog".into())
            .spawn(move || watchdog(&watchdog_shared))?;
    }
    Ok(ServerHandle { shared, addr })
}

/// Enforces write deadlines (may's I/O timer restarts whenever a socket turns readable, so a
/// client that never reads but keeps sending could hold a write open for ever) and read
/// deadlines (connections wait for input without a may timer: the watchdog wakes them).
/// Runs until the server has drained.
fn watchdog(shared: &ServerShared) {
    let t = &shared.config.timeouts;
    // A quarter of the shortest deadline it keeps, so each is kept within 25% (or 100 ms).
    let shortest = [t.write, t.idle, t.header, t.body, t.linger_read]
        .into_iter()
        .min()
        .unwrap_or(WATCHDOG_TICK_MAX);
    let tick = (shortest / 4).clamp(Duration::from_millis(1), WATCHDOG_TICK_MAX);
    loop {
        may::coroutine::sleep(tick);
        if shared.draining() && shared.active.load(Ordering::SeqCst) == 0 {
            return;
        }
        shared.cut_late_connections();
    }
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
                    tracing::warn!(
                        event = "accept_failed",
                        error = %e,
                        retry_ms = backoff.as_millis() as u64,
                        "http: accept failed ({e}); retrying in {backoff:?}"
                    );
                    may::coroutine::sleep(backoff);
                }
                continue;
            }
        };
        if shared.draining() {
            shared.stats.refused(Refused::Shutdown);
            return;
        }
        // At the cap, an idle keep-alive connection makes room (oldest first); the new one is
        // admitted while the evicted one closes, so the count may pass the cap by the
        // connections closing at that moment.
        if shared.active.load(Ordering::SeqCst) >= shared.config.limits.max_connections
            && !shared.evict_oldest_idle()
        {
            refuse_busy(stream, &shared);
            continue;
        }
        shared.active.fetch_add(1, Ordering::SeqCst);
        shared.stats.accepted();
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let entry = ConnEntry::new(stream.as_raw_fd(), may::io::WaitIo::waker(&stream));
        shared.registry().insert(id, entry.clone());
        let service = service.clone();
        let conn_shared = shared.clone();
        let guard = ConnGuard {
            shared: shared.clone(),
            id,
        };
        let entry_fd = stream.as_raw_fd() as usize;
        let run = move || {
            let mut stream = stream;
            // Declared after the stream, so dropped before it even when `run` panics: the
            // registry is left before the socket closes (shutdown() signals registered
            // descriptors under the registry lock, and a closed number can be reused at once).
            let guard = guard;
            conn::run(&mut stream, &*service, &conn_shared, &entry, id);
            drop(guard);
            drop(stream);
        };
        if let Err(why) = spawn_guarded_on(run, Some(entry_fd)) {
            // The closure (stream and guard) was dropped: the connection is closed and its
            // slot freed. Accepting goes on.
            shared.stats.refused(Refused::Spawn);
            tracing::error!(
                event = "connection_refused",
                reason = "spawn",
                error = %why,
                "http: connection refused: cannot start its coroutine ({why})"
            );
        }
    }
}

/// Spawns a coroutine; may panics when a stack cannot be mapped (memory, `vm.max_map_count`):
/// that is caught and reported, so the accept loop survives it.
fn spawn_guarded(f: impl FnOnce() + Send + 'static) -> Result<(), String> {
    spawn_guarded_on(f, None)
}

/// As [`spawn_guarded`], first scheduled on the worker `id` selects (`None`: may's choice).
fn spawn_guarded_on(f: impl FnOnce() + Send + 'static, id: Option<usize>) -> Result<(), String> {
    let builder = match id {
        Some(id) => may::coroutine::Builder::new().id(id),
        None => may::coroutine::Builder::new(),
    };
    // SAFETY: coroutines spawned here block only on may I/O and may primitives.
    let spawned = catch_unwind(AssertUnwindSafe(|| unsafe { builder.spawn(f) }));
    match spawned {
        Ok(Ok(handle)) => {
            drop(handle);
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "spawn panicked".into())),
    }
}

/// Unregisters a connection and releases its slot when its coroutine ends, panicking or not.
struct ConnGuard {
    shared: Arc<ServerShared>,
    id: u64,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut registry = self.shared.registry();
        // Its idle mark is cleared with it, under the registry lock, before the socket closes:
        // the idle queue may still refer to the entry, and a mark left set (a connection that
        // ended while idle) would let the accept loop signal a descriptor number since reused.
        if let Some(entry) = registry.remove(&self.id) {
            entry.idle_since.store(0, Ordering::SeqCst);
        }
        drop(registry);
        self.shared.active.fetch_sub(1, Ordering::SeqCst);
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Answers 503 without waiting (a non-blocking send that may write nothing) and closes. A
/// refused connection costs no connection coroutine; while few are lingering, it lingers in a
/// small one of its own (so a request already sent does not turn the answer into a reset),
/// otherwise it closes at once.
fn refuse_busy(stream: TcpStream, shared: &Arc<ServerShared>) {
    let mut out = Vec::with_capacity(256);
    let mut scratch = Vec::with_capacity(64);
    let status = Status::SERVICE_UNAVAILABLE;
    write_error(
        &mut out,
        &mut scratch,
        status,
        "Too many open connections",
        false,
        true,
    );
    shared.stats.refused(Refused::Cap);
    shared.stats.core_response(status);
    // SAFETY: a send on a descriptor we own, from a valid buffer.
    let sent = unsafe {
        libc::send(
            stream.as_raw_fd(),
            out.as_ptr().cast(),
            out.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    shared.stats.sent(usize::try_from(sent).unwrap_or(0));
    let lingering = &shared.lingering_refusals;
    if lingering.fetch_add(1, Ordering::SeqCst) >= MAX_LINGERING_REFUSALS {
        lingering.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    conn::urgent_data_inline(&stream);
    let linger_shared = shared.clone();
    let linger = move || {
        let mut stream = stream;
        let mut scratch = InBuf::with_capacity(REFUSAL_LINGER_BUFFER);
        conn::linger(&mut stream, &linger_shared, &mut scratch, None);
        linger_shared
            .lingering_refusals
            .fetch_sub(1, Ordering::SeqCst);
    };
    if spawn_guarded(linger).is_err() {
        shared.lingering_refusals.fetch_sub(1, Ordering::SeqCst);
    }
}
