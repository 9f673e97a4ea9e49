//! One PostgreSQL connection shared by many coroutines, with their queries pipelined.
//!
//! A caller encodes its messages (Bind, Execute, Sync) into the shared outbox and queues a reply
//! slot under one lock, so the order of the slots is the order of the bytes on the wire, then
//! wakes the connection's writer coroutine if it sleeps. The writer runs only after the caller
//! yields (it parks on its slot), so every caller that became runnable meanwhile has queued too:
//! under load one `write` carries many callers' queries. The connection's reader matches each
//! answer (everything up to `ReadyForQuery`) to the slot at the head of the queue, so answers
//! reach callers in order without any id on the wire.
//!
//! Never blocks a caller past its deadline; never leaves a caller waiting on a dead connection.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::BytesMut;
use may::net::TcpStream;
use may::sync::{Blocker, Semphore};
use postgres_protocol::message::backend::Message;

use super::error::{Error, ErrorKind};
use super::row::Row;
use super::startup::server_error;

/// What a query returns: its rows (as received, not copied) and the affected-row count of its
/// command tag.
#[derive(Debug, Default)]
pub struct Reply {
    pub rows: Vec<Row>,
    pub affected: u64,
}

type Outcome = Result<Reply, Error>;

/// Where the reader leaves one caller's answer and wakes it.
struct Slot {
    outcome: Mutex<Option<Outcome>>,
    blocker: Blocker,
}

impl Slot {
    fn deliver(&self, outcome: Outcome) {
        *lock(&self.outcome) = Some(outcome);
        self.blocker.unpark();
    }
}

struct Outbox {
    /// Encoded messages not yet handed to the socket.
    buf: BytesMut,
    /// One slot per query sent or about to be sent, in wire order. The reader pops the front.
    queue: VecDeque<Arc<Slot>>,
    /// True while the writer coroutine sleeps with nothing to send; the caller that finds it
    /// so clears it and wakes the writer.
    writer_idle: bool,
    /// Set once the connection has failed: nothing more is queued.
    closed: bool,
}

/// Counters kept across reconnects: how many queries were queued and in how many socket writes
/// they left. Their ratio is the pipelining depth actually achieved.
#[derive(Debug, Default)]
pub struct Stats {
    pub queries: AtomicU64,
    pub writes: AtomicU64,
}

pub(crate) struct Pipeline {
    outbox: Mutex<Outbox>,
    /// The writer coroutine, to wake when the outbox gets bytes. Set once it has started.
    writer: std::sync::OnceLock<may::coroutine::Coroutine>,
    /// Bounds the queries in flight on this connection: a permit per queued slot, returned by
    /// the reader when it delivers the answer (or fails the slot).
    permits: Semphore,
    broken: AtomicBool,
    fd: i32,
    stats: Arc<Stats>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Pipeline {
    /// A pipeline over `stream`'s connection; starts its writer coroutine on a clone of it.
    pub(crate) fn start(
        stream: &TcpStream,
        max_in_flight: usize,
        stats: Arc<Stats>,
    ) -> std::io::Result<Arc<Pipeline>> {
        let write_half = stream.try_clone()?;
        let pipeline = Arc::new(Pipeline {
            outbox: Mutex::new(Outbox {
                buf: BytesMut::with_capacity(16 * 1024),
                queue: VecDeque::with_capacity(max_in_flight.min(4096)),
                writer_idle: false,
                closed: false,
            }),
            writer: std::sync::OnceLock::new(),
            permits: Semphore::new(max_in_flight),
            broken: AtomicBool::new(false),
            fd: stream.as_raw_fd(),
            stats,
        });
        let p = pipeline.clone();
        // SAFETY: the writer blocks only on may I/O and may park.
        let handle = unsafe {
            may::coroutine::Builder::new()
                .name("pg-writer".into())
                .spawn(move || p.run_writer(write_half))?
        };
        let _ = pipeline.writer.set(handle.coroutine().clone());
        Ok(pipeline)
    }

    /// Sends one query (whatever `encode` writes, ending in a Sync or a simple Query) and waits
    /// for its answer until `deadline`.
    pub(crate) fn submit(
        &self,
        deadline: Instant,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), Error>,
    ) -> Outcome {
        let wait = deadline.saturating_duration_since(Instant::now());
        if !self.permits.wait_timeout(wait) {
            return Err(Error::new(
                ErrorKind::Overloaded,
                "too many queries in flight on this connection",
            ));
        }
        let slot = Arc::new(Slot {
            outcome: Mutex::new(None),
            blocker: Blocker::new(false),
        });
        let wake_writer = {
            let mut outbox = lock(&self.outbox);
            if outbox.closed {
                drop(outbox);
                self.permits.post();
                return Err(Error::new(
                    ErrorKind::ConnectionLost,
                    "the PostgreSQL connection was lost",
                ));
            }
            let before = outbox.buf.len();
            if let Err(e) = encode(&mut outbox.buf) {
                outbox.buf.truncate(before);
                drop(outbox);
                self.permits.post();
                return Err(e);
            }
            outbox.queue.push_back(slot.clone());
            self.stats.queries.fetch_add(1, Ordering::Relaxed);
            std::mem::replace(&mut outbox.writer_idle, false)
        };
        if wake_writer {
            self.wake_writer();
        }
        self.wait(&slot, deadline)
    }

    fn wake_writer(&self) {
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
    }

    /// The writer coroutine: sends whatever the outbox holds, in one write, until the pipeline
    /// closes; sleeps while there is nothing to send.
    fn run_writer(&self, mut stream: TcpStream) {
        let mut bytes = BytesMut::new();
        loop {
            {
                let mut outbox = lock(&self.outbox);
                if outbox.closed {
                    return;
                }
                if outbox.buf.is_empty() {
                    outbox.writer_idle = true;
                } else {
                    // Swap buffers, keeping both allocations for reuse.
                    bytes.clear();
                    std::mem::swap(&mut bytes, &mut outbox.buf);
                }
            }
            if bytes.is_empty() {
                // A wake-up that came before this park is not lost: park returns at once.
                may::coroutine::park();
                continue;
            }
            let result = stream.write_all(&bytes);
            self.stats.writes.fetch_add(1, Ordering::Relaxed);
            bytes.clear();
            if result.is_err() {
                // The reader sees the shut-down socket and fails every queued slot.
                self.shutdown();
                return;
            }
        }
    }

    fn wait(&self, slot: &Slot, deadline: Instant) -> Outcome {
        loop {
            if let Some(outcome) = lock(&slot.outcome).take() {
                return outcome;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // The slot stays queued; the reader drops the late answer.
                return Err(Error::new(
                    ErrorKind::Timeout,
                    "no answer from PostgreSQL before the query deadline",
                ));
            }
            let _ = slot.blocker.park(Some(left));
        }
    }

    /// Closes the socket; the reader then fails every waiting caller.
    pub(crate) fn shutdown(&self) {
        if !self.broken.swap(true, Ordering::AcqRel) {
            // SAFETY: plain libc call on a descriptor this pipeline owns (through `writer`).
            unsafe {
                libc::shutdown(self.fd, libc::SHUT_RDWR);
            }
        }
    }

    /// Marks the pipeline closed and fails every queued caller with `error`.
    fn fail_all(&self, error: &Error) {
        let drained: Vec<Arc<Slot>> = {
            let mut outbox = lock(&self.outbox);
            outbox.closed = true;
            outbox.buf.clear();
            outbox.queue.drain(..).collect()
        };
        // Let the writer see `closed` and end.
        self.wake_writer();
        for slot in drained {
            slot.deliver(Err(error.clone()));
            self.permits.post();
        }
    }

    /// Reads answers until the connection fails, handing each to the caller at the head of the
    /// queue. Returns the error that ended the connection, after failing every waiting caller.
    pub(crate) fn run_reader(&self, mut stream: TcpStream, mut buf: BytesMut) -> Error {
        let error = self.read_answers(&mut stream, &mut buf);
        self.shutdown();
        self.fail_all(&error);
        error
    }

    fn read_answers(&self, stream: &mut TcpStream, buf: &mut BytesMut) -> Error {
        let mut reply = Reply::default();
        let mut failure: Option<Error> = None;
        loop {
            loop {
                let msg = match Message::parse(buf) {
                    Ok(Some(msg)) => msg,
                    Ok(None) => break,
                    Err(e) => return Error::new(ErrorKind::Protocol, format!("bad message: {e}")),
                };
                match msg {
                    Message::DataRow(body) => reply.rows.push(Row::new(body)),
                    Message::CommandComplete(body) => {
                        reply.affected = body
                            .tag()
                            .ok()
                            .and_then(|tag| tag.rsplit(' ').next())
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0);
                    }
                    Message::ErrorResponse(body) => {
                        let error = server_error(body);
                        if error.kind() == ErrorKind::ConnectionLost {
                            // FATAL: the server is ending this session (admin shutdown,
                            // pg_terminate_backend); every queued caller gets this error.
                            return error;
                        }
                        failure = Some(error);
                    }
                    Message::ReadyForQuery(_) => {
                        let slot = lock(&self.outbox).queue.pop_front();
                        let outcome = match failure.take() {
                            Some(e) => Err(e),
                            None => Ok(std::mem::take(&mut reply)),
                        };
                        reply = Reply::default();
                        match slot {
                            Some(slot) => {
                                slot.deliver(outcome);
                                self.permits.post();
                            }
                            None => {
                                return Error::new(
                                    ErrorKind::Protocol,
                                    "an answer arrived that no query asked for",
                                )
                            }
                        }
                    }
                    // ParseComplete, BindComplete, RowDescription, NoData, notices, parameter
                    // status and notifications carry nothing a caller waits for.
                    _ => {}
                }
            }
            if self.broken.load(Ordering::Acquire) {
                return Error::new(ErrorKind::ConnectionLost, "the connection was closed");
            }
            let len = buf.len();
            if buf.capacity() - len < 4096 {
                buf.reserve(32 * 1024);
            }
            let spare = buf.capacity() - len;
            buf.resize(len + spare, 0);
            match stream.read(&mut buf[len..]) {
                Ok(0) => {
                    buf.truncate(len);
                    return Error::new(
                        ErrorKind::ConnectionLost,
                        "PostgreSQL closed the connection",
                    );
                }
                Ok(n) => buf.truncate(len + n),
                Err(e) => {
                    buf.truncate(len);
                    return Error::new(
                        ErrorKind::ConnectionLost,
                        format!("reading from PostgreSQL failed: {e}"),
                    );
                }
            }
        }
    }
}

/// Encodes the messages of one extended-protocol query on a prepared statement.
pub(crate) fn encode_prepared(
    statement: &str,
    params: &[super::Param<'_>],
    buf: &mut BytesMut,
) -> Result<(), Error> {
    use postgres_protocol::message::frontend;
    use postgres_protocol::IsNull;
    frontend::bind(
        "",
        statement,
        Some(1),
        params.iter(),
        |param, buf| {
            use bytes::BufMut;
            match *param {
                super::Param::Int4(v) => buf.put_i32(v),
                super::Param::Int8(v) => buf.put_i64(v),
                super::Param::Text(s) => buf.put_slice(s.as_bytes()),
                super::Param::Null => return Ok(IsNull::Yes),
            }
            Ok(IsNull::No)
        },
        Some(1),
        buf,
    )
    .map_err(|_| Error::new(ErrorKind::Protocol, "cannot encode query parameters"))?;
    frontend::execute("", 0, buf)
        .map_err(|e| Error::new(ErrorKind::Protocol, format!("cannot encode Execute: {e}")))?;
    frontend::sync(buf);
    Ok(())
}
