//! Lingering close (RFC 9112 9.6): when a connection closes with input it has not read (a
//! refused body, requests pipelined after `Connection: close`), the answer is sent, the write
//! side shut, and input read and discarded for a bounded time and amount before the socket
//! closes, so the client's kernel does not turn the unread bytes into a reset that destroys the
//! answer before the client reads it. Also used for a connection refused at the cap. Not used
//! for a client that never completed a request head: it is owed no answer worth protecting.
//!
//! Must never read without a bound: each read waits at most `linger_read`, the whole at most
//! `linger`, and at most `max_linger_bytes` are discarded.

use std::net::Shutdown;
use std::time::Instant;

use may::net::TcpStream;

use super::budget::BASE_INPUT;
use super::io::{read_until, ReadNotes};
use super::{Conn, Reading};
use crate::http::buffer::InBuf;
use crate::http::shared::{ConnEntry, ServerShared};

impl Conn<'_> {
    /// Closes after the last answer. If input may still be on its way (a request was being
    /// received, or more was pipelined behind the last answer), closes lingering, unless the
    /// refusal said not to ([`Conn::refuse`]).
    #[inline(never)]
    pub(super) fn close(&mut self, stream: &mut TcpStream) {
        let unread = !self.input.is_empty() || !matches!(self.reading, Reading::Idle);
        if unread && self.linger_on_close {
            self.release_input();
            linger(stream, self.shared, &mut self.input, Some(self.entry));
        }
    }
}

/// Lingering close (RFC 9112 9.6; nginx's `lingering_close`): shut the write side so the
/// client sees the end of the answers, then read and discard what it still sends, until it
/// closes, or `linger_read` passes without input, or `linger` in all, or `max_linger_bytes`.
/// `entry`: the connection's registry entry, whose watchdog-kept deadline bounds each read;
/// without one (a refusal at the connection cap) may's read timeout does.
pub(crate) fn linger(
    stream: &mut TcpStream,
    shared: &ServerShared,
    scratch: &mut InBuf,
    entry: Option<&ConnEntry>,
) {
    let timeouts = &shared.config.timeouts;
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + timeouts.linger;
    let mut discarded = 0usize;
    while discarded < shared.config.limits.max_linger_bytes {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let wait = left.min(timeouts.linger_read);
        // Discarded in reads of up to the base size (a connection's input starts smaller).
        scratch.clear_and_shrink(BASE_INPUT);
        scratch.grow_to(BASE_INPUT);
        let read = match entry {
            Some(entry) => {
                let deadline = Instant::now() + wait;
                let mut notes = ReadNotes::default();
                read_until(stream, scratch, entry, shared, deadline, false, &mut notes)
            }
            None => {
                let _ = stream.set_read_timeout(Some(wait));
                scratch.read_from(stream)
            }
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                shared.stats.received(n);
                discarded += n;
            }
        }
    }
}

/// Urgent (out-of-band) bytes are delivered in line, as ordinary input. Otherwise a byte sent
/// with `MSG_OOB` wakes a waiting read that then finds nothing to read: harmless for
/// [`read_until`], which checks its deadline on every wake, but a may read with a timeout (the
/// lingering of a refused connection) re-arms its timer for the full timeout each time.
pub(crate) fn urgent_data_inline(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, with a valid pointer and length.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_OOBINLINE,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
