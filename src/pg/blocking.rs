//! Work that would block a may worker thread, run on a short-lived thread of its own while the
//! calling coroutine waits: getaddrinfo, certificate and key files, SCRAM's key derivation. A
//! worker runs every coroutine assigned to it, so one blocking call there stalls them all.
//!
//! Must never be used on the request path: each call starts a thread.

use std::time::Instant;

/// Runs `work` on a short-lived thread named `name` while this coroutine waits on a may
/// channel, so that the worker serves its other coroutines meanwhile: for work that blocks its
/// thread (getaddrinfo, file reads) or keeps the CPU for milliseconds (PBKDF2). `None` if the
/// thread could not start or `deadline` passed first; the thread then finishes on its own and
/// its answer is dropped, so a stalled resolver or disk does not hold the supervisor.
pub(super) fn off_worker<T: Send + 'static>(
    name: &str,
    deadline: Instant,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = may::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .ok()?;
    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .ok()
}

/// Where each piece of blocking startup work ran: its name, and whether on a coroutine (so on
/// a may worker, stalling every other coroutine there). For the tests that keep it off.
#[cfg(test)]
pub(crate) mod ran_on {
    use std::sync::{Mutex, PoisonError};

    static LOG: Mutex<Vec<(String, bool)>> = Mutex::new(Vec::new());

    pub(crate) fn note(what: impl Into<String>) {
        LOG.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((what.into(), may::coroutine::is_coroutine()));
    }

    /// For each time `what` ran: whether on a coroutine.
    pub(crate) fn of(what: &str) -> Vec<bool> {
        LOG.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(w, _)| w == what)
            .map(|(_, on_coroutine)| *on_coroutine)
            .collect()
    }
}
