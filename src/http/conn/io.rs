//! A connection's reads and writes on its non-blocking socket: one read under a deadline the
//! watchdog keeps (waiting for readiness first when the caller says the socket was emptied),
//! and a write of a whole batch that goes through may's blocking write only when the socket is
//! full.
//!
//! Must never block the worker thread (only may's `wait_io` and may's write wait), never wait
//! on a may timer for a read (its restarts would let a client hold a read open past any
//! timeout), and never wait for readiness when the last read may have left data whose event
//! was already consumed.

use std::io::{ErrorKind, Write};
use std::sync::atomic::Ordering;
use std::time::Instant;

use may::net::TcpStream;

use crate::http::buffer::InBuf;
use crate::http::shared::{ConnEntry, ServerShared};

/// One read into `input`, or `TimedOut` at `deadline`.
///
/// The socket is read directly (it is non-blocking) and, when empty, waited on with may's
/// `wait_io`; the deadline is the watchdog's, which wakes the connection when it passes. A
/// blocking may read with a timeout is not used: its timer restarts whenever the socket is
/// woken without data to read (an urgent byte, for one), so a client could hold a read open
/// past any timeout; and registering and cancelling a timer on every read measurably
/// lengthened the latency tail of every request.
///
/// `wait_first` (the caller's choice: only between requests, and by default only while the
/// client is slower than the server, see `Conn::read`): the previous read emptied the socket,
/// so there is nothing to read until a readiness event says so; waiting before the first read
/// saves the read that would fail with `WouldBlock` (one system call of the three or four a
/// keep-alive request costs). may
/// keeps each event in the socket's flag until `wait_io` consumes it, so an event that came
/// before this call returns at once. Only a read that came back short may set it: a read that
/// filled the room may have left bytes whose event was consumed already.
///
/// `notes` says what else the read learned.
pub(super) fn read_until(
    stream: &mut TcpStream,
    input: &mut InBuf,
    entry: &ConnEntry,
    shared: &ServerShared,
    deadline: Instant,
    wait_first: bool,
    notes: &mut ReadNotes,
) -> std::io::Result<usize> {
    const HANGUP: usize = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as usize;
    entry
        .read_deadline
        .store(shared.clock_ms_at(deadline), Ordering::Release);
    if wait_first {
        notes.hangup |= may::io::WaitIo::wait_io(&*stream) & HANGUP != 0;
    }
    let mut first = true;
    let result = loop {
        match input.read_from(stream.inner_mut()) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                notes.was_empty |= first;
                if Instant::now() >= deadline {
                    break Err(ErrorKind::TimedOut.into());
                }
                notes.hangup |= may::io::WaitIo::wait_io(&*stream) & HANGUP != 0;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            other => break other,
        }
        first = false;
    };
    entry.read_deadline.store(0, Ordering::Release);
    result
}

/// What a read learned besides its bytes.
#[derive(Default)]
pub(super) struct ReadNotes {
    /// An event it consumed reported the peer's close or an error (EPOLLRDHUP, EPOLLHUP,
    /// EPOLLERR).
    pub(super) hangup: bool,
    /// Its first try found the socket empty.
    pub(super) was_empty: bool,
}

/// Writes all of `data`: straight to the non-blocking socket while it takes the bytes, then,
/// when it is full, through may's blocking write (which waits under the write timeout).
/// Returns whether the socket was full on the way.
///
/// may's write clears the socket's readiness flag before it tries, which can swallow a read
/// event that came in meanwhile (a pipelined request): once it is used, `drained` is cleared
/// so the next read tries the socket before it waits (see [`read_until`]).
pub(super) fn write_all(
    stream: &mut TcpStream,
    mut data: &[u8],
    drained: &mut bool,
) -> std::io::Result<bool> {
    while !data.is_empty() {
        match stream.inner_mut().write(data) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                *drained = false;
                return stream.write_all(data).map(|()| true);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}
