//! One PostgreSQL connection shared by many coroutines, with their queries pipelined.
//!
//! A caller encodes its messages into the shared outbox and queues a reply slot under one lock,
//! so the order of the slots is the order of the bytes on the wire, then wakes the connection's
//! writer coroutine if it sleeps. The writer runs only after the caller yields (it parks on its
//! slot), so every caller that became runnable meanwhile has queued too: under load one `write`
//! carries many callers' queries. The reader matches answers to slots in queue order, so no id
//! travels on the wire.
//!
//! Reads share a Sync. PostgreSQL flushes its output at every Sync, so a Sync per query costs
//! the server a `send` per query and us a wake-up per answer. Read-only queries
//! ([`Isolation::SharedSync`]) are therefore sent as Bind/Execute only, and the writer closes
//! each batch with one Sync: the server answers the whole batch in one flush, as pgbench's
//! pipeline mode does. The price: if one query of such a group fails, the server skips the rest
//! of the group until the Sync. Those were not executed, so they are re-sent, each with a Sync
//! of its own, transparently. Writes and administration ([`Isolation::OwnSync`]) always carry
//! their own Sync and are answered only at `ReadyForQuery`, after the implicit commit, so a
//! failed commit can never be reported as success.
//!
//! Never blocks a caller past its deadline; never leaves a caller waiting on a dead connection.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use bytes::BytesMut;
use may::sync::Blocker;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use crate::sync::lock;

use super::codec::check_frame;
use super::error::{server_error, Error, ErrorKind};
use super::row::Row;
use super::stats::Stats;
use super::transport::{ReadHalf, ShutdownHandle, Stream, WriteHalf};

/// How often the watchdog looks for callers whose deadline has passed: the most a deadline can
/// be overshot.
const WATCHDOG_TICK: std::time::Duration = std::time::Duration::from_millis(25);

/// How long the oldest query may stay unanswered past both its deadline and the statement
/// timeout (counted from when it reached the head of the queue, that is, from when the server
/// could start it) before the connection is declared dead.
const STALL_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// How long past its deadline and the statement timeout a sent write's caller waits for the
/// write's outcome at most, wherever it is in the queue. Beyond it the connection is declared
/// dead (its callers get ConnectionLost: outcome unknown) rather than hold them for as long as
/// a server dripping answers pleases.
const MAX_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// What a pipeline needs to know of its connection's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Entries queued (answers awaited) on this connection; beyond it a query fails at once.
    pub max_in_flight: usize,
    /// The session's statement timeout (zero: none), which bounds how long the server works
    /// on the query at the head of the queue.
    pub statement_timeout: std::time::Duration,
    /// The largest backend message accepted; a longer one ends the connection.
    pub max_message_bytes: usize,
}

/// What a query returns: its rows (as received, not copied) and the affected-row count of its
/// command tag.
#[derive(Debug, Default)]
pub struct Reply {
    pub rows: Vec<Row>,
    pub affected: u64,
}

type Outcome = Result<Reply, Error>;

/// How a query's messages are closed, which decides what else can make it fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Read-only: shares one Sync (one implicit transaction) with the queries sent in the same
    /// write. Must have no side effects: it may be sent a second time (see the module docs).
    SharedSync,
    /// Followed by its own Sync and answered after it: writes, anything with side effects.
    OwnSync,
}

/// What the reader leaves in a slot.
enum Delivery {
    Done(Outcome),
    /// Not executed: another query of its shared group failed first. Send it again.
    Skipped,
}

/// Room for a batch of queries, kept between batches.
const OUTBOX_CAPACITY: usize = 16 * 1024;

/// Where the reader leaves one caller's answer and wakes it.
struct Slot {
    delivery: Mutex<Option<Delivery>>,
    blocker: Blocker,
    /// The caller's deadline. The watchdog wakes the caller once it has passed, so a waiting
    /// caller needs no timer of its own (one per query would cost a timer-thread round trip).
    deadline: Instant,
    /// Set by a write's caller that is past its deadline but whose write was already sent:
    /// it waits for the outcome, and the watchdog stops waking it every tick.
    patient: AtomicBool,
}

impl Slot {
    /// Not inlined into [`Pipeline::submit_once`], whose frame stays on the stack while the
    /// caller waits (the deepest path a request takes, on a small fixed coroutine stack), and
    /// the value is written straight into the allocation: `Arc::new` would assemble it in a
    /// stack frame first, with malloc's frames below that one.
    #[inline(never)]
    fn arc(deadline: Instant) -> Arc<Slot> {
        let mut slot = Arc::<Slot>::new_uninit();
        Arc::get_mut(&mut slot)
            .expect("a new Arc has no other owner")
            .write(Slot {
                delivery: Mutex::new(None),
                blocker: Blocker::new(false),
                deadline,
                patient: AtomicBool::new(false),
            });
        // SAFETY: the value was written just above.
        unsafe { slot.assume_init() }
    }

    fn deliver(&self, delivery: Delivery) {
        *lock(&self.delivery) = Some(delivery);
        self.blocker.unpark();
    }
}

/// One expected answer, in wire order.
enum Entry {
    /// A shared-Sync query: complete at its CommandComplete (or ErrorResponse).
    Shared(Arc<Slot>),
    /// An own-Sync query or a simple Query: complete at ReadyForQuery.
    UntilReady(Arc<Slot>),
    /// The Sync that closes a group of shared queries: its ReadyForQuery carries no answer.
    Sync,
}

struct Outbox {
    /// Encoded messages not yet handed to the socket.
    buf: BytesMut,
    /// One entry per answer expected, in wire order. The reader pops the front.
    queue: VecDeque<Entry>,
    /// Shared queries are in `buf` with no Sync after them yet.
    unsynced: bool,
    /// True while the writer coroutine sleeps with nothing to send; the caller that finds it
    /// so clears it and wakes the writer.
    writer_idle: bool,
    /// Set once the connection has failed: nothing more is queued.
    closed: bool,
    /// The writes (and simple queries) whose bytes are still in `buf`, with their byte ranges
    /// there, in order: a caller whose deadline passes withdraws its write from here, so no
    /// write reaches the server after its caller was told it failed. Cleared when the writer
    /// takes `buf`.
    unsent: Vec<(Arc<Slot>, std::ops::Range<usize>)>,
    /// Since when the entry at the head of `queue` has been there: from then on the server can
    /// be working on it.
    head_since: Instant,
    /// Queries in `queue` (its entries less the Syncs): the in-flight bound counts these.
    queries: usize,
    /// Queries in `buf`: how many the writer's next write carries.
    batched: u64,
    /// The statements (by the caller's bit) prepared again since the last Sync, that is, in
    /// the transaction the next query joins: see
    /// [`Encoding::PerTransaction`](super::codec::Encoding::PerTransaction).
    prepared_in_transaction: u64,
}

impl Outbox {
    /// Closes the open group of shared queries, if any, with a Sync.
    fn sync(&mut self) {
        if self.unsynced {
            frontend::sync(&mut self.buf);
            self.push(Entry::Sync);
            self.unsynced = false;
        }
        self.prepared_in_transaction = 0;
    }

    fn push(&mut self, entry: Entry) {
        if self.queue.is_empty() {
            self.head_since = Instant::now();
        }
        if !matches!(entry, Entry::Sync) {
            self.queries += 1;
            self.batched += 1;
        }
        self.queue.push_back(entry);
    }

    fn pop(&mut self) -> Option<Entry> {
        let entry = self.queue.pop_front();
        self.head_since = Instant::now();
        if let Some(Entry::Shared(_) | Entry::UntilReady(_)) = entry {
            self.queries -= 1;
        }
        entry
    }

    /// Takes a not-yet-sent write out of the outbox: its bytes and its queue entry. False if
    /// its bytes already went to the writer.
    fn withdraw(&mut self, slot: &Arc<Slot>) -> bool {
        let Some(at) = self.unsent.iter().position(|(s, _)| Arc::ptr_eq(s, slot)) else {
            return false;
        };
        let (_, range) = self.unsent.remove(at);
        let len = range.len();
        let tail = self.buf.split_off(range.end);
        self.buf.truncate(range.start);
        self.buf.unsplit(tail);
        for (_, later) in &mut self.unsent[at..] {
            *later = later.start - len..later.end - len;
        }
        if let Some(i) = self.queue.iter().rposition(|e| match e {
            Entry::UntilReady(s) => Arc::ptr_eq(s, slot),
            _ => false,
        }) {
            self.queue.remove(i);
            self.queries -= 1;
            self.batched = self.batched.saturating_sub(1);
        }
        true
    }
}

pub(crate) struct Pipeline {
    outbox: Mutex<Outbox>,
    /// The writer coroutine, to wake when the outbox gets bytes. Set once it has started.
    writer: OnceLock<may::coroutine::Coroutine>,
    limits: Limits,
    broken: AtomicBool,
    /// Set on a connection pinned to one [`Session`](super::client::Session): only there may a
    /// transaction stay open between messages.
    session: AtomicBool,
    /// Shuts the socket down; its own duplicate of the descriptor.
    socket: ShutdownHandle,
    stats: Arc<Stats>,
}

/// Which protocol a submission speaks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// Bind + Execute (the pipeline adds the Sync).
    Extended(Isolation),
    /// One simple `Query` message (it syncs by itself).
    Simple,
}

impl Pipeline {
    /// A pipeline over `stream`'s connection; starts its writer coroutine on a clone of it.
    pub(crate) fn start(
        stream: &Stream,
        limits: Limits,
        stats: Arc<Stats>,
    ) -> std::io::Result<Arc<Pipeline>> {
        let (write_half, socket) = stream.writer()?;
        let pipeline = Arc::new(Pipeline {
            outbox: Mutex::new(Outbox {
                buf: BytesMut::with_capacity(OUTBOX_CAPACITY),
                queue: VecDeque::with_capacity(limits.max_in_flight.min(4096)),
                unsynced: false,
                writer_idle: false,
                closed: false,
                unsent: Vec::new(),
                head_since: Instant::now(),
                queries: 0,
                batched: 0,
                prepared_in_transaction: 0,
            }),
            writer: OnceLock::new(),
            limits,
            broken: AtomicBool::new(false),
            session: AtomicBool::new(false),
            socket,
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
        let p = pipeline.clone();
        // SAFETY: the watchdog blocks only on may sleep.
        let watchdog = unsafe {
            may::coroutine::Builder::new()
                .name("pg-watchdog".into())
                .spawn(move || p.run_watchdog())
        };
        if let Err(e) = watchdog {
            // Do not leave the writer parked forever on a pipeline nobody will use.
            pipeline.fail_all(&Error::new(ErrorKind::ConnectFailed, e.to_string()));
            return Err(e);
        }
        Ok(pipeline)
    }

    /// Wakes every queued caller whose deadline has passed, every tick, until the pipeline
    /// closes. A read's caller then returns `Timeout` and its slot stays queued for the late
    /// answer; a write's caller withdraws its write if it is not sent yet, else waits on.
    ///
    /// It also declares the connection dead when the oldest query is overdue by more than
    /// [`STALL_GRACE`] past both its own deadline and the statement timeout (counted from when
    /// it reached the head of the queue): the server answers in order, so nothing behind it
    /// can be answered either (a silently dead link, a query stuck on a lock with no statement
    /// timeout). Shutting the socket fails every caller and makes the supervisor reconnect.
    fn run_watchdog(&self) {
        loop {
            may::coroutine::sleep(WATCHDOG_TICK);
            let stalled = {
                let outbox = lock(&self.outbox);
                if outbox.closed {
                    return;
                }
                let now = Instant::now();
                let mut oldest: Option<Instant> = None;
                let mut out_of_patience = false;
                let patience = self.limits.statement_timeout + MAX_PATIENCE;
                for entry in &outbox.queue {
                    if let Entry::Shared(slot) | Entry::UntilReady(slot) = entry {
                        oldest.get_or_insert(slot.deadline);
                        if slot.deadline <= now {
                            if !slot.patient.load(Ordering::Acquire) {
                                slot.blocker.unpark();
                            } else if slot.deadline + patience <= now {
                                out_of_patience = true;
                            }
                        }
                    }
                }
                let working_since = outbox.head_since + self.limits.statement_timeout;
                out_of_patience
                    || oldest
                        .is_some_and(|deadline| deadline.max(working_since) + STALL_GRACE <= now)
            };
            if stalled {
                self.shutdown();
            }
        }
    }

    /// Sends one query (whatever `encode` writes) and waits for its answer until `deadline`.
    /// A shared-Sync query skipped because of another's failure is re-sent with its own Sync.
    pub(crate) fn submit(
        &self,
        deadline: Instant,
        protocol: Protocol,
        encode: impl Fn(&mut BytesMut, &mut u64) -> Result<(), Error>,
    ) -> Outcome {
        // A skipped read is sent again in a new shared group (the other reads skipped with it
        // are woken together and join it); skipped a second time, it goes alone.
        let retries = [protocol, Protocol::Extended(Isolation::OwnSync)];
        let mut delivery = self.submit_once(deadline, protocol, &encode)?;
        for retry in retries {
            match delivery {
                Delivery::Done(outcome) => return outcome,
                Delivery::Skipped => {
                    self.stats.resent.fetch_add(1, Ordering::Relaxed);
                    delivery = self.submit_once(deadline, retry, &encode)?;
                }
            }
        }
        match delivery {
            Delivery::Done(outcome) => outcome,
            // An own-Sync query is never skipped; treat it as a broken connection.
            Delivery::Skipped => Err(Error::new(
                ErrorKind::Protocol,
                "a query with its own Sync was skipped",
            )),
        }
    }

    fn submit_once(
        &self,
        deadline: Instant,
        protocol: Protocol,
        encode: &dyn Fn(&mut BytesMut, &mut u64) -> Result<(), Error>,
    ) -> Result<Delivery, Error> {
        // Allocated here rather than in `enqueue`: malloc's own frames then start one frame
        // higher on the stack.
        let slot = Slot::arc(deadline);
        self.enqueue(&slot, protocol, encode)?;
        self.wait(&slot, protocol != Protocol::Extended(Isolation::SharedSync))
    }

    /// Queues one query for the writer and wakes it if it sleeps. Not inlined into
    /// [`Pipeline::submit_once`]: its frame (the outbox lock, the encoding) is gone before the
    /// caller parks, so the stack a waiting caller holds stays within one page: with many
    /// callers parked at once, every page of their stacks they have touched stays resident.
    #[inline(never)]
    fn enqueue(
        &self,
        slot: &Arc<Slot>,
        protocol: Protocol,
        encode: &dyn Fn(&mut BytesMut, &mut u64) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let shared = protocol == Protocol::Extended(Isolation::SharedSync);
        let wake_writer = {
            let mut outbox = lock(&self.outbox);
            if outbox.closed {
                return Err(Error::new(
                    ErrorKind::ConnectionLost,
                    "the PostgreSQL connection was lost",
                ));
            }
            // Counted under the lock, so the bound holds exactly and nobody waits for room:
            // a stalled server makes callers fail fast instead of piling up.
            if outbox.queries >= self.limits.max_in_flight {
                return Err(Error::new(
                    ErrorKind::Overloaded,
                    "too many queries in flight on this connection",
                ));
            }
            if !shared {
                outbox.sync();
            }
            let before = outbox.buf.len();
            let prepared = outbox.prepared_in_transaction;
            let Outbox {
                buf,
                prepared_in_transaction,
                ..
            } = &mut *outbox;
            if let Err(e) = encode(buf, prepared_in_transaction) {
                outbox.buf.truncate(before);
                outbox.prepared_in_transaction = prepared;
                return Err(e);
            }
            if !shared {
                // Its own transaction: the next query starts a new one.
                outbox.prepared_in_transaction = 0;
            }
            match protocol {
                Protocol::Extended(Isolation::SharedSync) => {
                    outbox.push(Entry::Shared(slot.clone()));
                    outbox.unsynced = true;
                }
                Protocol::Extended(Isolation::OwnSync) => {
                    frontend::sync(&mut outbox.buf);
                    outbox.push(Entry::UntilReady(slot.clone()));
                }
                Protocol::Simple => outbox.push(Entry::UntilReady(slot.clone())),
            }
            if !shared {
                let after = outbox.buf.len();
                outbox.unsent.push((slot.clone(), before..after));
            }
            self.stats.queries.fetch_add(1, Ordering::Relaxed);
            std::mem::replace(&mut outbox.writer_idle, false)
        };
        if wake_writer {
            self.wake_writer();
        }
        Ok(())
    }

    /// Lets this connection's server session stay in a transaction between messages: for a
    /// pinned [`Session`](super::client::Session), before anything is sent on it.
    pub(crate) fn pin_to_session(&self) {
        self.session.store(true, Ordering::Relaxed);
    }

    /// Queries queued or sent and not yet answered.
    pub(crate) fn in_flight(&self) -> usize {
        lock(&self.outbox).queries
    }

    fn wake_writer(&self) {
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
    }

    /// The writer coroutine: closes the open group with a Sync and sends whatever the outbox
    /// holds in one write, until the pipeline closes; sleeps while there is nothing to send.
    fn run_writer(&self, mut stream: WriteHalf) {
        // As large as the outbox's: the two are swapped, and a caller that found an empty
        // buffer would grow it while encoding, at the deepest point of its stack.
        let mut bytes = BytesMut::with_capacity(OUTBOX_CAPACITY);
        loop {
            {
                let mut outbox = lock(&self.outbox);
                if outbox.closed {
                    return;
                }
                if outbox.buf.is_empty() {
                    outbox.writer_idle = true;
                } else {
                    outbox.sync();
                    // Swap buffers, keeping both allocations for reuse. From here on these
                    // writes count as sent: their callers wait for their outcome.
                    bytes.clear();
                    std::mem::swap(&mut bytes, &mut outbox.buf);
                    outbox.unsent.clear();
                    let batched = std::mem::take(&mut outbox.batched);
                    if batched > 0 {
                        self.stats.observe_batch(batched);
                    }
                }
            }
            if bytes.is_empty() {
                // TLS records the reader's side made (alerts, key updates) leave from here.
                if stream.flush().is_err() {
                    self.shutdown();
                    return;
                }
                // A wake-up that came before this park is not lost: park returns at once.
                may::coroutine::park();
                // Woken by the first caller of a burst: let the callers that are runnable now
                // queue their queries too, so they leave in this write.
                may::coroutine::yield_now();
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

    /// Waits for the slot's answer. A read gives up at its deadline (the slot stays queued;
    /// the reader drops the late answer). A write (`certain`) gives up at its deadline only if
    /// it can still be withdrawn unsent; once sent, its caller waits for the outcome, so no
    /// caller is told "failed" about a write that then commits. The statement timeout and the
    /// watchdog's stall rule bound that wait.
    fn wait(&self, slot: &Arc<Slot>, certain: bool) -> Result<Delivery, Error> {
        loop {
            if let Some(delivery) = lock(&slot.delivery).take() {
                return Ok(delivery);
            }
            if !slot.patient.load(Ordering::Acquire) && Instant::now() >= slot.deadline {
                if !certain || lock(&self.outbox).withdraw(slot) {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        "no answer from PostgreSQL before the query deadline",
                    ));
                }
                slot.patient.store(true, Ordering::Release);
                continue;
            }
            // No timer: the watchdog wakes us once the deadline has passed.
            let _ = slot.blocker.park(None);
        }
    }

    /// Closes the socket; the reader then fails every waiting caller.
    pub(crate) fn shutdown(&self) {
        if !self.broken.swap(true, Ordering::AcqRel) {
            self.socket.shutdown();
        }
    }

    /// Marks the pipeline closed and fails every queued caller with `error`.
    fn fail_all(&self, error: &Error) {
        let drained: Vec<Entry> = {
            let mut outbox = lock(&self.outbox);
            outbox.closed = true;
            outbox.buf.clear();
            outbox.unsent.clear();
            outbox.queries = 0;
            outbox.batched = 0;
            outbox.queue.drain(..).collect()
        };
        // Let the writer see `closed` and end.
        self.wake_writer();
        for entry in drained {
            if let Entry::Shared(slot) | Entry::UntilReady(slot) = entry {
                self.finish(&slot, Delivery::Done(Err(error.clone())));
            }
        }
    }

    /// A shared connection left in a transaction: the connection must go. A statement that
    /// failed inside the transaction block it opened (`BEGIN; ...; COMMIT` in one Query, status
    /// `E`) has a known outcome, nothing committed: its caller gets the server's error. Every
    /// other caller learns that its outcome is unknown, from `fail_all`.
    #[cold]
    #[inline(never)]
    fn not_idle(&self, status: u8, failure: Option<Error>) -> Error {
        if let (b'E', Some(e)) = (status, failure) {
            let mut outbox = lock(&self.outbox);
            if let Some(Entry::UntilReady(_)) = outbox.queue.front() {
                if let Some(Entry::UntilReady(slot)) = outbox.pop() {
                    drop(outbox);
                    self.finish(&slot, Delivery::Done(Err(e)));
                }
            }
        }
        not_idle(status)
    }

    fn finish(&self, slot: &Slot, delivery: Delivery) {
        slot.deliver(delivery);
    }

    /// Reads answers until the connection fails, handing each to the caller at the head of the
    /// queue. Returns the error that ended the connection, after failing every waiting caller.
    pub(crate) fn run_reader(&self, stream: Stream, mut buf: BytesMut) -> Error {
        let error = self.read_answers(&mut stream.into_reader(), &mut buf);
        self.shutdown();
        // Whatever ended it (a protocol violation included), to the callers the connection is
        // lost: their queries may be retried elsewhere (503), they did not fail on their own.
        self.fail_all(&error.clone().into_connection_lost());
        error
    }

    fn read_answers(&self, stream: &mut ReadHalf, buf: &mut BytesMut) -> Error {
        let mut reply = Reply::default();
        // The error of the UntilReady query being answered, delivered at ReadyForQuery.
        let mut failure: Option<Error> = None;
        // Bytes of rows in `reply` (bounded like one message: rows streaming without end must
        // not grow without end).
        let mut reply_bytes = 0usize;
        loop {
            loop {
                if let Err(e) = check_frame(buf, self.limits.max_message_bytes) {
                    return e;
                }
                let msg = match Message::parse(buf) {
                    Ok(Some(msg)) => msg,
                    Ok(None) => break,
                    Err(e) => return Error::new(ErrorKind::Protocol, format!("bad message: {e}")),
                };
                match msg {
                    Message::DataRow(body) => {
                        if reply.rows.is_empty() {
                            // The first row of a reply: some query must be waiting for it.
                            // Kept, rows meant for nobody grow without bound (no deadline or
                            // stall rule runs on an idle connection) and join the next
                            // reply. Later rows of the reply belong to the same query.
                            if !self.head_awaits_rows() {
                                return unsolicited("a DataRow");
                            }
                            reply_bytes = 0;
                        }
                        // The `Row` kept for it counts too: a zero-column row has no bytes of
                        // its own but costs memory all the same.
                        reply_bytes += body.buffer().len() + ROW_OVERHEAD;
                        if reply_bytes > self.limits.max_message_bytes {
                            return Error::new(
                                ErrorKind::Protocol,
                                format!(
                                    "the server sent a reply of more than {} bytes \
                                     (PG_MAX_MESSAGE_BYTES); closing the connection",
                                    self.limits.max_message_bytes
                                ),
                            );
                        }
                        reply.rows.push(Row::new(body));
                    }
                    Message::CommandComplete(body) => {
                        reply.affected = body
                            .tag()
                            .ok()
                            .and_then(|tag| tag.rsplit(' ').next())
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0);
                        match self.pop_answered() {
                            Head::Shared(slot) => {
                                self.finish(&slot, Delivery::Done(Ok(std::mem::take(&mut reply))))
                            }
                            Head::UntilReady => {}
                            Head::Nobody => return unsolicited("a CommandComplete"),
                        }
                    }
                    Message::EmptyQueryResponse => match self.pop_answered() {
                        Head::Shared(slot) => {
                            self.finish(&slot, Delivery::Done(Ok(std::mem::take(&mut reply))))
                        }
                        Head::UntilReady => {}
                        Head::Nobody => return unsolicited("an EmptyQueryResponse"),
                    },
                    Message::ErrorResponse(body) => {
                        let error = server_error(body);
                        if error.is_fatal() {
                            // FATAL or PANIC (by severity, whatever the SQLSTATE: an idle
                            // session timeout, a recovery conflict, an admin shutdown): the
                            // server is ending this session. Every queued caller gets this
                            // error as a lost connection; nothing is sent again on it.
                            return error.into_connection_lost();
                        }
                        reply = Reply::default();
                        match self.pop_answered() {
                            Head::Shared(slot) => {
                                self.finish(&slot, Delivery::Done(Err(error)));
                                // The server skips the rest of the group until its Sync.
                                while let Some(skipped) = self.pop_shared() {
                                    self.finish(&skipped, Delivery::Skipped);
                                }
                            }
                            Head::UntilReady => failure = Some(error),
                            Head::Nobody => {
                                // Nothing is waiting for an error here (an empty queue, or only
                                // a group's Sync): a buggy proxy. Pinning it on the next query
                                // would report a write as failed that then commits.
                                return Error::new(
                                    ErrorKind::Protocol,
                                    format!(
                                        "an error arrived that no query was waiting for: {error}"
                                    ),
                                );
                            }
                        }
                    }
                    Message::ReadyForQuery(body) => {
                        // Anything but idle on a shared connection: a transaction left open
                        // (`T`) or failed (`E`) would take in the next callers' writes, to
                        // commit or vanish with it. Checked before the entry is popped, so
                        // its caller too learns that the outcome is unknown.
                        if body.status() != b'I' && !self.session.load(Ordering::Relaxed) {
                            return self.not_idle(body.status(), failure.take());
                        }
                        let entry = lock(&self.outbox).pop();
                        match entry {
                            Some(Entry::Sync) => {}
                            Some(Entry::UntilReady(slot)) => {
                                let outcome = match failure.take() {
                                    Some(e) => Err(e),
                                    None => Ok(std::mem::take(&mut reply)),
                                };
                                self.finish(&slot, Delivery::Done(outcome));
                            }
                            Some(Entry::Shared(slot)) => {
                                // Out of step with the server. The slot is off the queue, so
                                // fail_all will not see it: answer it here.
                                let error = Error::new(
                                    ErrorKind::Protocol,
                                    "ReadyForQuery arrived where no query expected one",
                                );
                                self.finish(&slot, Delivery::Done(Err(error.clone())));
                                return error;
                            }
                            None => {
                                return Error::new(
                                    ErrorKind::Protocol,
                                    "ReadyForQuery arrived while no query was waiting",
                                )
                            }
                        }
                        reply = Reply::default();
                        failure = None;
                    }
                    // Execute is always sent without a row limit: a suspended portal means the
                    // server (or a proxy) is not answering what was asked, and its rows would
                    // run into the next query's reply.
                    Message::PortalSuspended => {
                        return Error::new(
                            ErrorKind::Protocol,
                            "PortalSuspended for an Execute without a row limit",
                        )
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
            // Zero (and offer the socket) at most 64 KiB per read, not all the spare capacity:
            // after a long message's header reserved its length, a server dripping bytes
            // would otherwise cost a memset of that length per byte.
            let room = (buf.capacity() - len).min(64 * 1024);
            buf.resize(len + room, 0);
            match stream.read(&mut buf[len..]) {
                Ok(0) => {
                    buf.truncate(len);
                    return Error::new(
                        ErrorKind::ConnectionLost,
                        if self.broken.load(Ordering::Acquire) {
                            // shutdown(): a stall, a caller out of patience, or close().
                            "the connection was shut down by this client (stalled or closing)"
                        } else {
                            "PostgreSQL closed the connection"
                        },
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

    /// Whether the head of the queue is a query (not a group's Sync, not nothing), so a row
    /// now is its own.
    fn head_awaits_rows(&self) -> bool {
        matches!(
            lock(&self.outbox).queue.front(),
            Some(Entry::Shared(_) | Entry::UntilReady(_))
        )
    }

    /// For the end of one statement's answer: pops the head of the queue if it is a
    /// shared-Sync query (answered now); an own-Sync or simple query stays (answered at
    /// ReadyForQuery).
    fn pop_answered(&self) -> Head {
        let mut outbox = lock(&self.outbox);
        match outbox.queue.front() {
            Some(Entry::Shared(_)) => match outbox.pop() {
                Some(Entry::Shared(slot)) => Head::Shared(slot),
                _ => Head::Nobody,
            },
            Some(Entry::UntilReady(_)) => Head::UntilReady,
            Some(Entry::Sync) | None => Head::Nobody,
        }
    }

    /// Pops the head of the queue if it is a shared-Sync query.
    fn pop_shared(&self) -> Option<Arc<Slot>> {
        let mut outbox = lock(&self.outbox);
        match outbox.queue.front() {
            Some(Entry::Shared(_)) => match outbox.pop() {
                Some(Entry::Shared(slot)) => Some(slot),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Who the end of a statement's answer is for; see [`Pipeline::pop_answered`].
enum Head {
    Shared(Arc<Slot>),
    UntilReady,
    /// A group's Sync or an empty queue: nobody. A buggy or hostile proxy.
    Nobody,
}

/// What a reply's rows cost beyond their column bytes, counted toward the reply cap.
const ROW_OVERHEAD: usize = std::mem::size_of::<Row>();

/// Out of line: the reader's loop keeps only the call.
#[cold]
#[inline(never)]
fn unsolicited(what: &str) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("{what} arrived while no query was waiting for one"),
    )
}

#[cold]
#[inline(never)]
fn not_idle(status: u8) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!(
            "ReadyForQuery with transaction status {:?} on a shared connection, which must be \
             idle between queries",
            status as char
        ),
    )
}
