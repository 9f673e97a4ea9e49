//! What the accept loop, the watchdog, every connection and the server's handle share: the
//! settings, the drain flag, the registry of open connections (each one's [`ConnEntry`]: its
//! idle mark and deadlines), the memory budget, the counters and the server's clocks; and what
//! acts on the registry as a whole (evicting the oldest idle connection, cutting late ones).
//!
//! Knows nothing of how connections are accepted or served: the accept loop fills the registry
//! and the connections keep their entries. Must never signal a descriptor outside the registry
//! lock: an entry leaves the registry (under that lock) before its socket closes, which is what
//! makes the number it holds still that connection's.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use may::io::WaitIoWaker;

use super::buffer::Budget;
use super::socket::{cut_with_reset, unsent_bytes};
use super::stats::{Stats, Timeout};
use super::HttpConfig;

/// State shared by the accept loop, every connection and the handle.
pub(crate) struct ServerShared {
    pub(crate) config: HttpConfig,
    /// Set once by `ServerHandle::shutdown`; connections read it after each batch and before
    /// each idle wait, and close instead of waiting for another request.
    pub(super) draining: AtomicBool,
    /// Open connections. Incremented by the accept loop before a connection's coroutine starts,
    /// decremented by that coroutine's guard when it ends, whatever way it ends.
    pub(super) active: AtomicUsize,
    /// Every open connection, so shutdown can wake the idle ones. Entries are added by the
    /// accept loop and removed by the connection's guard.
    pub(super) registry: Mutex<HashMap<u64, Arc<ConnEntry>>>,
    /// A duplicate of the listening socket's descriptor, owned here so that shutdown acts on
    /// this socket and never on a descriptor number since closed and reused.
    pub(super) listener: OwnedFd,
    /// Memory for buffered request heads and bodies, beyond each connection's base buffer.
    pub(crate) budget: Budget,
    /// Refused connections lingering now.
    pub(super) lingering_refusals: AtomicUsize,
    pub(super) epoch: Instant,
    pub(crate) stats: Stats,
    /// The random prefix of the request ids this server makes.
    pub(crate) id_prefix: u32,
}

impl ServerShared {
    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Milliseconds since the server started, plus one (so 0 can mean "none").
    pub(crate) fn clock_ms(&self) -> u64 {
        self.clock_ms_at(Instant::now())
    }

    /// [`ServerShared::clock_ms`] at `at`.
    pub(crate) fn clock_ms_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX - 1)
            + 1
    }

    /// Nanoseconds from the server's start to `at`, plus one (so 0 can mean "none"): fine
    /// enough to order connections that went idle within the same millisecond.
    pub(crate) fn clock_ns(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
            + 1
    }

    pub(super) fn registry(&self) -> MutexGuard<'_, HashMap<u64, Arc<ConnEntry>>> {
        crate::sync::lock(&self.registry)
    }

    /// Closes the keep-alive connection that has been idle longest, if there is one, to make
    /// room for a new connection. Its read returns at once and it closes; the race with a
    /// request arriving just then is the usual keep-alive race that clients retry.
    pub(super) fn evict_oldest_idle(&self) -> bool {
        let registry = self.registry();
        let oldest = registry
            .values()
            .filter_map(|e| {
                let since = e.idle_since.load(Ordering::SeqCst);
                (since != 0).then_some((since, e))
            })
            .min_by_key(|(since, _)| *since);
        match oldest {
            // Claimed by clearing its mark, so the connection knows it was evicted.
            Some((since, entry))
                if entry
                    .idle_since
                    .compare_exchange(since, 0, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok() =>
            {
                // SAFETY: the descriptor is open: entries leave the registry (under this lock)
                // before their socket is closed. `server.rs` upholds it: a connection's
                // `ConnGuard` is declared after its stream, so it drops (and unregisters) first.
                unsafe {
                    libc::shutdown(entry.fd, libc::SHUT_RD);
                }
                self.stats.evicted();
                true
            }
            _ => false,
        }
    }

    /// Cuts connections whose answers were not sent by their write deadline (written into the
    /// kernel is not sent: a connection whose kernel send queue has not drained by then is late
    /// too), and wakes those waiting for input past their read deadline.
    pub(super) fn cut_late_connections(&self) {
        let now = self.clock_ms();
        for entry in self.registry().values() {
            let read = entry.read_deadline.load(Ordering::Acquire);
            if read != 0 && read <= now {
                // The connection sees its deadline passed and answers 408 or closes.
                entry.waker.wakeup();
            }
            let deadline = entry.write_deadline.load(Ordering::Acquire);
            // Cleared by compare-and-swap: a connection that finished this write and began
            // the next one in the meantime has a new deadline, which is not cut.
            if deadline == 0 || deadline > now {
                continue;
            }
            // A queue that drained in time (the client read its answers) is not late; looked
            // at only once a deadline passed, never per request.
            let late = unsent_bytes(entry.fd) > 0;
            if entry
                .write_deadline
                .compare_exchange(deadline, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
                && late
            {
                self.stats.timed_out(Timeout::Write);
                cut_with_reset(entry.fd);
            }
        }
    }
}

/// What shutdown needs to know of one connection.
pub(crate) struct ConnEntry {
    pub(super) fd: i32,
    /// True while the connection waits for the first byte of a request. Set before the
    /// connection checks `draining`, and shutdown sets `draining` before it reads this, so
    /// one of the two always sees the other.
    pub(crate) idle: AtomicBool,
    /// When this connection, having answered a request, began waiting for the next
    /// ([`ServerShared::clock_ns`]); 0 when it is not an idle keep-alive connection.
    pub(crate) idle_since: AtomicU64,
    /// When the answers being written must be sent by; 0 when not writing.
    pub(crate) write_deadline: AtomicU64,
    /// When the input being waited for must have arrived by ([`ServerShared::clock_ms`]); 0
    /// when not reading.
    pub(crate) read_deadline: AtomicU64,
    /// Wakes the connection's coroutine from `wait_io` (at its read deadline).
    pub(crate) waker: WaitIoWaker,
}
