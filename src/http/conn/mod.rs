//! One connection, as an explicit state machine: read, answer every complete request in what
//! was read (in order, up to a batch limit), write all the answers in one go, repeat.
//!
//! Where the request at the front of the input stands is [`Reading`]: between requests, in a
//! head, or in a body. Each state keeps what was learnt so far (how much of a head was searched
//! for its end, the parsed head of a request whose body is arriving, the chunked decoder's
//! place), so every input byte is examined a constant number of times however a client splits
//! its writes.
//!
//! Backpressure falls out of the shape: nothing more is read from a client until the answers to
//! what it already sent have been written, so a pipelining client that never reads holds at most
//! one batch of output (bounded by `max_pipelined` and `max_output_bytes`) and one read buffer.
//! Buffers beyond a small base are taken from the server-wide [`Budget`](super::buffer::Budget).
//!
//! The connection's parts each have a file: its reads and writes (`io`), its share of the
//! memory budget (`budget`), and lingering close (`linger`).

mod budget;
mod io;
mod linger;
mod proxied;

use std::io::ErrorKind;
use std::mem::MaybeUninit;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use httparse::Header;
use may::net::TcpStream;

use self::budget::BASE_INPUT;
use self::io::{read_until, write_all, ReadNotes};
pub(crate) use self::linger::{linger, urgent_data_inline};
use super::buffer::InBuf;
use super::chunked::{Chunked, Decoder};
use super::dispatch::dispatch;
use super::head::{parse_head, BodyFraming, HeadError, HeadInfo, MALFORMED};
use super::response::write_error;
use super::shared::{ConnEntry, ServerShared};
use super::socket::{set_send_buffer, unsent_bytes};
use super::stats::{Refused, Timeout};
use super::{request_id, NextRead, Request, Service, Status};

/// Input buffer of a new connection: room for a typical request head (a browser's, cookies
/// included), doubled on demand. Resident memory per connection is what the buffers touch,
/// so a connection starts small: an 8 KiB input buffer, zeroed (so resident at once), and an
/// 8 KiB output buffer from the start were most of what a served connection cost
/// (`tests/http_core/cost.rs` bounds that cost; the measurements are in docs/benchmarks.md).
const INITIAL_INPUT: usize = 2 * 1024;
/// Output buffer of a new connection: an ordinary answer fits; a larger one grows it.
const INITIAL_OUTPUT: usize = 1024;
/// Header slots of a new connection: a browser's request fits. A head with more fields grows
/// them to `HTTP_MAX_HEADERS` and is parsed again; the connection keeps them. 100 slots are
/// 3.2 KB, more than the buffers of a connection under load.
const INITIAL_HEADER_SLOTS: usize = 32;
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// Output written since the kernel's send queue was last looked at, past which the next batch
/// looks (one `SIOCOUTQNSD` per this much output, not one per request): what a client that never
/// reads can leave in the kernel unwatched, besides a send queue that filled (always looked at).
const UNWATCHED_OUTPUT: usize = 64 * 1024;

/// Where the request at the front of the input stands.
enum Reading {
    /// Between requests: nothing of the next one has arrived.
    Idle,
    /// A head is arriving: its first byte came at `since`; the first `scanned` bytes are known
    /// to hold no end of head.
    Head { since: Instant, scanned: usize },
    /// The head is parsed (kept as offsets in [`Conn::fields`]); the body is arriving since
    /// `since`.
    Body {
        since: Instant,
        head: StoredHead,
        body: BodyProgress,
    },
}

enum BodyProgress {
    /// The request ends at `end` bytes of input.
    Length { end: usize },
    /// Decoded in place after the head, as it arrives.
    Chunked(Decoder),
}

/// A parsed head, as offsets into the input (which does not move under it: nothing is
/// consumed until the request is answered). Header fields are in [`Conn::fields`].
struct StoredHead {
    info: HeadInfo,
    method: Span,
    /// `None`: the target is `/` (an absolute-form target without a path).
    target: Option<Span>,
}

#[derive(Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    /// Where `part` (a slice of `base`) lies in it.
    fn of(base: &[u8], part: &[u8]) -> Option<Span> {
        let start = (part.as_ptr() as usize).checked_sub(base.as_ptr() as usize)?;
        // Heads are at most `max_head_bytes` (16 MiB at most), so offsets fit in 32 bits.
        (start + part.len() <= base.len()).then_some(Span {
            start: u32::try_from(start).ok()?,
            len: u32::try_from(part.len()).ok()?,
        })
    }

    fn get(self, base: &[u8]) -> &[u8] {
        &base[self.start as usize..(self.start + self.len) as usize]
    }

    fn str(self, base: &[u8]) -> &str {
        std::str::from_utf8(self.get(base)).unwrap_or("")
    }
}

/// What one step on the front request came to.
enum Step {
    /// `head`: the request was a HEAD (a refusal in its place carries no body); `safe`: a
    /// GET or HEAD, whose answer may be replaced by a refusal (the handler changed nothing).
    Answered {
        close: bool,
        head: bool,
        safe: bool,
    },
    NeedInput,
    Refused(Refusal),
}

impl Step {
    /// A request with `method` was answered.
    fn answered(close: bool, method: &str) -> Step {
        Step::Answered {
            close,
            head: method == "HEAD",
            safe: matches!(method, "GET" | "HEAD"),
        }
    }
}

/// An answer the connection gives on its own, after which it closes. (Whether the refused
/// request was a HEAD, so the answer has no body, is read off the front of the input.)
struct Refusal {
    status: Status,
    detail: &'static str,
    retry_after: bool,
}

impl Refusal {
    fn new(status: Status, detail: &'static str) -> Refusal {
        Refusal {
            status,
            detail,
            retry_after: false,
        }
    }

    fn from_head(e: HeadError) -> Refusal {
        Refusal::new(e.status(), e.detail())
    }

    fn too_large() -> Refusal {
        Refusal::new(Status::CONTENT_TOO_LARGE, "Request body too large")
    }

    fn timeout() -> Refusal {
        Refusal::new(Status::REQUEST_TIMEOUT, "Request timeout")
    }

    fn busy() -> Refusal {
        Refusal {
            retry_after: true,
            ..Refusal::new(Status::SERVICE_UNAVAILABLE, "Server busy, retry later")
        }
    }
}

/// What to do after a batch has been answered and written.
enum Next {
    /// Read more input.
    Read,
    /// The batch hit its limits with input left: answer more before reading.
    Answer,
    /// Close the connection.
    Close,
}

enum Input {
    Data,
    /// The client closed, or the connection broke, or it idled out: close without a word.
    Gone,
    /// Answered with the refusal, then closed (a request timeout among them).
    Refused(Refusal),
}

pub(crate) fn run<S: Service>(
    stream: &mut TcpStream,
    service: &S,
    shared: &ServerShared,
    entry: &ConnEntry,
    conn_id: u64,
) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(shared.config.timeouts.write));
    set_send_buffer(stream, shared.config.limits.send_buffer_bytes);
    urgent_data_inline(stream);
    Conn::boxed(stream, shared, entry, conn_id).serve(stream, service);
}

impl<'s> Conn<'s> {
    /// The connection's state lives on the heap, not in the coroutine's stack frame: a request
    /// waiting for the database then holds less than one page of stack (the stack's resident
    /// pages are most of what a connection costs). Not inlined, so the value is not
    /// built in the caller's frame first.
    #[inline(never)]
    fn boxed(
        stream: &TcpStream,
        shared: &'s ServerShared,
        entry: &'s ConnEntry,
        conn_id: u64,
    ) -> Box<Conn<'s>> {
        Box::new(Conn {
            shared,
            entry,
            id: conn_id,
            input: InBuf::with_capacity(INITIAL_INPUT),
            held: 0,
            held_out: 0,
            out: Vec::with_capacity(INITIAL_OUTPUT),
            scratch: Vec::new(),
            headers: header_slots_of(INITIAL_HEADER_SLOTS.min(shared.config.limits.max_headers)),
            fields: Vec::new(),
            reading: Reading::Idle,
            served_any: false,
            linger_on_close: true,
            idle_from: None,
            unwatched: 0,
            queue_watched: false,
            drained: false,
            client_slower: false,
            last_read: Instant::now(),
            requests: 0,
            id_buf: [0; request_id::GENERATED_MAX],
            peer: proxied::Peer::of(stream, shared),
        })
    }
}

struct Conn<'s> {
    shared: &'s ServerShared,
    entry: &'s ConnEntry,
    id: u64,
    input: InBuf,
    /// Bytes of the shared budget this connection holds: its input capacity beyond the base.
    held: usize,
    /// Bytes of the shared budget its output buffers hold: their capacity beyond what a
    /// connection keeps between requests (a large answer waiting for a slow reader).
    held_out: usize,
    out: Vec<u8>,
    /// The response body while a handler writes it.
    scratch: Vec<u8>,
    /// Header slots handed to the parser, reused and never initialised in advance (filling
    /// them with empty headers on every request cost pipelined throughput; docs/benchmarks.md).
    headers: Vec<MaybeUninit<Header<'static>>>,
    /// The header fields of a head waiting for its body, as (name, value) offsets.
    fields: Vec<(Span, Span)>,
    reading: Reading,
    served_any: bool,
    /// Whether closing with unread input lingers (see [`Conn::refuse`]).
    linger_on_close: bool,
    /// When this connection began to wait for its next request, since its last answer: the
    /// idle timeout runs from here, so empty lines between requests (which leave it idle) do
    /// not extend it.
    idle_from: Option<Instant>,
    /// Output written since the kernel's send queue was last looked at.
    unwatched: usize,
    /// The kernel's send queue held answers when last looked at: the write deadline stays
    /// armed until it drains (see [`Conn::watch_send_queue`]).
    queue_watched: bool,
    /// The last read emptied the socket (see [`read_until`]'s `wait_first`); cleared when
    /// may's blocking write was used since (it may have consumed a read event).
    drained: bool,
    /// The last read that tried the socket first found it empty.
    client_slower: bool,
    last_read: Instant,
    /// Requests handed to the service so far on this connection.
    requests: u64,
    /// The id the server made for the request being answered (when the client sent none).
    id_buf: [u8; request_id::GENERATED_MAX],
    peer: proxied::Peer,
}

impl Conn<'_> {
    fn serve<S: Service>(&mut self, stream: &mut TcpStream, service: &S) {
        loop {
            let next = self.answer_buffered(service);
            if !self.flush(stream) {
                return;
            }
            self.give_back_memory();
            match next {
                Next::Answer => continue,
                Next::Close => return self.close(stream),
                Next::Read => {}
            }
            match self.read(stream) {
                Input::Data => {}
                Input::Gone => return,
                Input::Refused(refusal) => {
                    self.refuse(refusal);
                    if self.flush(stream) {
                        self.close(stream);
                    }
                    return;
                }
            }
        }
    }

    /// Answers the complete requests at the front of the input, up to the batch limits.
    fn answer_buffered<S: Service>(&mut self, service: &S) -> Next {
        let limits = &self.shared.config.limits;
        let mut answered = 0;
        loop {
            if answered >= limits.max_pipelined || self.out.len() >= limits.max_output_bytes {
                return if self.input.is_empty() {
                    Next::Read
                } else {
                    Next::Answer
                };
            }
            let mark = self.out.len();
            let step = match self.reading {
                Reading::Idle | Reading::Head { .. } => self.advance_head(service),
                Reading::Body { .. } => self.advance_body(service),
            };
            match step {
                // The answer does not fit the memory budget (a client that never reads could
                // hold it until the write timeout): 503 in its place, and close. Only for GET
                // and HEAD: any other request was acted on, and its client must learn the
                // outcome (that answer is sent uncharged).
                Step::Answered {
                    head, safe: true, ..
                } if !self.charge_output() => {
                    self.out.truncate(mark);
                    self.drop_large_output();
                    self.shared.stats.refused(Refused::Memory);
                    self.shared.stats.core_response(Status::SERVICE_UNAVAILABLE);
                    write_error(
                        &mut self.out,
                        &mut self.scratch,
                        Status::SERVICE_UNAVAILABLE,
                        "Server busy, retry later",
                        head,
                        true,
                    );
                    self.reading = Reading::Idle;
                    return Next::Close;
                }
                Step::Answered { close, .. } => {
                    answered += 1;
                    self.served_any = true;
                    self.idle_from = None;
                    self.reading = Reading::Idle;
                    if close {
                        return Next::Close;
                    }
                }
                Step::NeedInput => return Next::Read,
                Step::Refused(refusal) => {
                    self.refuse(refusal);
                    return Next::Close;
                }
            }
        }
    }

    /// The front request is in its head (or not begun): find the head's end, parse it once,
    /// and answer it if its body is here too.
    fn advance_head<S: Service>(&mut self, service: &S) -> Step {
        if let Some(step) = self.proxy_header() {
            return step;
        }
        let limits = &self.shared.config.limits;
        // Empty lines before a request line are ignored (RFC 9112 2.2), each once, also when
        // they trickle in after the first (re-parsing them would cost quadratic time).
        let blank = leading_empty_lines(self.input.data());
        self.input.consume(blank);
        // Only empty lines after an answered request (also one whose CR and LF came in two
        // reads): still between requests, under the idle timeout. Starting or keeping the
        // header timeout here would end in a 408 nobody asked for, which a pooled client takes
        // for the answer to its next request.
        if self.input.is_empty() && self.served_any {
            self.reading = Reading::Idle;
            return Step::NeedInput;
        }
        let (since, mut scanned) = match self.reading {
            Reading::Head { since, scanned } => (since, scanned.saturating_sub(blank)),
            _ if self.input.is_empty() && blank == 0 => return Step::NeedInput,
            // The header timeout runs from the first byte, blank lines before a connection's
            // first request included (they must not hold a new connection open for ever).
            _ => (self.last_read, 0),
        };
        if self.input.is_empty() {
            self.reading = Reading::Head { since, scanned: 0 };
            return Step::NeedInput;
        }
        // The first look at a head parses it outright (usually it is all here); after that, the
        // parser runs again only once the end of the head may have arrived, so a trickled head
        // costs two parses and one scan.
        let first_look = !matches!(self.reading, Reading::Head { .. });
        if !first_look && !head_may_be_complete(self.input.data(), &mut scanned) {
            self.reading = Reading::Head { since, scanned };
            if self.input.len() > limits.max_head_bytes {
                return Step::Refused(Refusal::from_head(HeadError::TooLarge));
            }
            return Step::NeedInput;
        }
        let data = self.input.data();
        let parsed = loop {
            let can_grow = self.headers.len() < limits.max_headers;
            match parse_head(data, header_slots(&mut self.headers), limits) {
                Err(HeadError::TooManyFields) if can_grow => {
                    grow_header_slots(&mut self.headers, limits.max_headers);
                }
                parsed => break parsed,
            }
        };
        // Input the answered request took, dropped once the header array no longer borrows it.
        let mut consumed = 0;
        let step = match parsed {
            Err(HeadError::Incomplete) => {
                self.reading = Reading::Head {
                    since,
                    scanned: data.len(),
                };
                Step::NeedInput
            }
            Err(e) => Step::Refused(Refusal::from_head(e)),
            Ok(head) => {
                let info = head.info;
                let complete = match info.framing {
                    BodyFraming::None => Some(info.len),
                    BodyFraming::Length(n) if n > limits.max_body_bytes as u64 => {
                        return Step::Refused(Refusal::too_large());
                    }
                    BodyFraming::Length(n) => {
                        let end = info.len + n as usize;
                        (data.len() >= end).then_some(end)
                    }
                    BodyFraming::Chunked => None,
                };
                match complete {
                    Some(end) => {
                        let mut req = Request {
                            method: head.method,
                            target: head.target,
                            headers: head.headers,
                            body: &data[info.len..end],
                            conn_id: self.id,
                            request_id: "",
                            peer: self.peer.addr,
                        };
                        self.requests += 1;
                        req.identify(self.shared.id_prefix, self.requests, &mut self.id_buf);
                        let close = dispatch(
                            service,
                            &req,
                            &info,
                            self.shared,
                            &mut self.out,
                            &mut self.scratch,
                        );
                        consumed = end;
                        Step::answered(close, head.method)
                    }
                    None => {
                        // The body is still arriving: keep the head as offsets, so it is not
                        // parsed again, and wait for the body.
                        self.fields.clear();
                        self.fields.extend(head.headers.iter().filter_map(|h| {
                            Some((Span::of(data, h.name.as_bytes())?, Span::of(data, h.value)?))
                        }));
                        let stored = StoredHead {
                            info,
                            method: Span::of(data, head.method.as_bytes())
                                .expect("the method lies in the input"),
                            target: Span::of(data, head.target.as_bytes()),
                        };
                        let body = match info.framing {
                            BodyFraming::Length(n) => BodyProgress::Length {
                                end: info.len + n as usize,
                            },
                            _ => BodyProgress::Chunked(Decoder::new(
                                limits.max_body_bytes,
                                max_chunked_framing(limits.max_body_bytes, limits.max_head_bytes),
                                limits.max_head_bytes,
                            )),
                        };
                        self.reading = Reading::Body {
                            since: self.last_read,
                            head: stored,
                            body,
                        };
                        Step::NeedInput
                    }
                }
            }
        };
        self.input.consume(consumed);
        match step {
            Step::NeedInput if matches!(self.reading, Reading::Body { .. }) => {
                self.enter_body(service)
            }
            step => step,
        }
    }

    /// A head was just parsed and its body is not all here: decode what arrived of a chunked
    /// body, and send `100 Continue` if it was asked for. Memory for the body is taken as it
    /// arrives (doubling, never past the request's end), not on the head's say-so.
    #[inline(never)]
    fn enter_body<S: Service>(&mut self, service: &S) -> Step {
        let expect_continue = match &self.reading {
            Reading::Body { head, .. } => head.info.expect_continue,
            _ => return Step::NeedInput,
        };
        let step = self.advance_body(service);
        if matches!(step, Step::NeedInput) && expect_continue {
            self.out.extend_from_slice(CONTINUE);
        }
        step
    }

    /// The front request's head is parsed; see whether its body is complete.
    fn advance_body<S: Service>(&mut self, service: &S) -> Step {
        let Reading::Body { head, body, .. } = &mut self.reading else {
            return Step::NeedInput;
        };
        let len = head.info.len;
        let (body_end, consumed) = match body {
            BodyProgress::Length { end } => {
                if self.input.len() < *end {
                    return Step::NeedInput;
                }
                (*end, *end)
            }
            BodyProgress::Chunked(decoder) => match decoder.feed(&mut self.input.data_mut()[len..])
            {
                Chunked::Complete { body_len, consumed } => (len + body_len, len + consumed),
                Chunked::Incomplete { body_len } => {
                    // Everything after the decoded body was framing, checked and no longer
                    // needed: the next read appends right after the body.
                    self.input.truncate(len + body_len);
                    return Step::NeedInput;
                }
                Chunked::TooLarge => return Step::Refused(Refusal::too_large()),
                Chunked::Bad => {
                    return Step::Refused(Refusal::new(
                        Status::BAD_REQUEST,
                        "Malformed chunked body",
                    ))
                }
            },
        };
        let data = self.input.data();
        // Rebuilt from offsets (a request whose body came in later reads: not the hot path).
        let headers: Vec<Header<'_>> = self
            .fields
            .iter()
            .map(|(name, value)| Header {
                name: name.str(data),
                value: value.get(data),
            })
            .collect();
        let mut req = Request {
            method: head.method.str(data),
            target: head.target.map_or("/", |t| t.str(data)),
            headers: &headers,
            body: &data[len..body_end],
            conn_id: self.id,
            request_id: "",
            peer: self.peer.addr,
        };
        self.requests += 1;
        req.identify(self.shared.id_prefix, self.requests, &mut self.id_buf);
        let close = dispatch(
            service,
            &req,
            &head.info,
            self.shared,
            &mut self.out,
            &mut self.scratch,
        );
        let step = Step::answered(close, req.method);
        drop(headers);
        self.input.consume(consumed);
        step
    }

    /// Whether the request at the front is a HEAD (its refusals carry no body).
    fn front_is_head(&self) -> bool {
        match &self.reading {
            Reading::Body { head, .. } => head.method.get(self.input.data()) == b"HEAD",
            _ => self.input.data().starts_with(b"HEAD "),
        }
    }

    /// Answers the request at the front with `refusal` (no body if it is a HEAD).
    #[cold]
    #[inline(never)]
    fn refuse(&mut self, refusal: Refusal) {
        self.shared.stats.core_response(refusal.status);
        // A client whose first request never got a head that parses (a head timeout, a head
        // too large, bytes that are not HTTP) is owed no answer that lingering would protect,
        // and lingering would let a slowloris hold the slot for the whole linger time with a
        // byte now and then: close at once, as nginx does. A head that parsed and was refused
        // (no Host, say) or a refused body (413) may have a body on its way, sent before the
        // client reads: linger, or the answer is lost to a reset.
        let unparsed = matches!(
            refusal.status,
            Status::REQUEST_TIMEOUT | Status::HEADER_FIELDS_TOO_LARGE
        ) || refusal.detail == MALFORMED;
        if !self.served_any && !matches!(self.reading, Reading::Body { .. }) && unparsed {
            self.linger_on_close = false;
        }
        let head_only = self.front_is_head();
        write_error(
            &mut self.out,
            &mut self.scratch,
            refusal.status,
            refusal.detail,
            head_only,
            refusal.retry_after,
        );
    }

    /// Writes the batch's answers, within the write timeout from now: the server's watchdog
    /// cuts the connection at the deadline whatever the client sends meanwhile (may's own I/O
    /// timer restarts whenever the socket turns readable, so it cannot bound a batch).
    fn flush(&mut self, stream: &mut TcpStream) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let deadline = self
            .shared
            .clock_ms()
            .saturating_add(millis(self.shared.config.timeouts.write));
        // A write's deadline, not a delivery deadline: the watchdog cuts it when it passes.
        self.entry.delivery_unsent.store(0, Ordering::Release);
        self.entry.write_deadline.store(deadline, Ordering::Release);
        let result = write_all(stream, &self.out, &mut self.drained);
        // Cleared by compare-and-swap, as the watchdog clears it when it cuts: whoever clears
        // it counts the write timeout, so a cut is counted once.
        let ours = self
            .entry
            .write_deadline
            .compare_exchange(deadline, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        let written = match result {
            Ok(filled) => {
                self.shared.stats.sent(self.out.len());
                self.unwatched += self.out.len();
                if filled || self.queue_watched || self.unwatched >= UNWATCHED_OUTPUT {
                    self.watch_send_queue(stream);
                }
                true
            }
            Err(e) => {
                // may's own write timer (set to the same timeout) fired before the watchdog.
                if ours && e.kind() == ErrorKind::TimedOut {
                    self.shared.stats.timed_out(Timeout::Write);
                }
                false
            }
        };
        self.out.clear();
        written
    }

    /// After a write the kernel took: answers it still holds for the client must be delivered
    /// within the write timeout too (a client that never reads would otherwise pin them, outside
    /// every budget, until the idle timeout). While they are queued the write deadline stays
    /// armed, from the end of this write; the watchdog looks at the queue when it passes, and
    /// cuts the connection if the kernel sent nothing since (a client that reads, however
    /// slowly, gets another write timeout).
    #[cold]
    #[inline(never)]
    fn watch_send_queue(&mut self, stream: &TcpStream) {
        use std::os::fd::AsRawFd;
        self.unwatched = 0;
        let unsent = unsent_bytes(stream.as_raw_fd());
        self.queue_watched = unsent > 0;
        if self.queue_watched {
            self.entry
                .delivery_unsent
                .store(unsent as u64, Ordering::Release);
            let deadline = self
                .shared
                .clock_ms()
                .saturating_add(millis(self.shared.config.timeouts.write));
            self.entry.write_deadline.store(deadline, Ordering::Release);
        }
    }

    /// Waits for more input under the deadline that applies to where the front request stands.
    fn read(&mut self, stream: &mut TcpStream) -> Input {
        let timeouts = &self.shared.config.timeouts;
        let now = Instant::now();
        let idle = matches!(self.reading, Reading::Idle) && self.input.is_empty();
        // Whether this connection offered itself for eviction (see below).
        let mut marked = false;
        let wait = match &self.reading {
            _ if idle => {
                self.entry.idle.store(true, Ordering::SeqCst);
                if self.served_any {
                    self.shared.went_idle(self.entry, self.shared.clock_ns(now));
                    marked = true;
                }
                if self.shared.draining() {
                    return Input::Gone;
                }
                if self.served_any {
                    let from = *self.idle_from.get_or_insert(now);
                    (from + timeouts.idle).saturating_duration_since(now)
                } else {
                    timeouts.header
                }
            }
            Reading::Body { since, .. } => (*since + timeouts.body).saturating_duration_since(now),
            Reading::Head { since, .. } => {
                (*since + timeouts.header).saturating_duration_since(now)
            }
            // Idle with input left that holds no request yet (only empty lines were consumed).
            Reading::Idle => timeouts.header,
        };
        if wait.is_zero() {
            if idle && self.served_any {
                // The idle timeout ran out while empty lines kept arriving.
                self.shared.stats.timed_out(Timeout::Idle);
                return Input::Gone;
            }
            return self.timed_out();
        }
        if let Err(refusal) = self.make_room() {
            self.shared.stats.refused(Refused::Memory);
            return Input::Refused(refusal);
        }
        let room = self.input.spare();
        // Waiting first pays only when the client is slower than we are: a request already in the
        // socket but not yet seen by may's event loop (which a busy worker polls only when its run
        // queue empties) would wait a whole round of the other connections, where a read takes it
        // at once (waiting every time lengthened the keep-alive latency tail in `make bench-http`,
        // a tail that varies widely between runs: docs/benchmarks.md). So a connection waits first
        // only after its last read that tried first found the socket empty, and tries first again
        // after each wait (a probe). Only between requests: a partial request at the front may be
        // one whose read stopped short of bytes already in the socket (at an urgent mark), so it
        // is read at once. One case stays: an urgent byte at the very start of a pipelined request
        // ends the read at a request boundary, and that request waits for the idle deadline (the
        // watchdog's wake-up reads it); only a client that sends urgent data meets it
        // (tests/http_core/deadlines.rs).
        let slower = match self.shared.config.next_read {
            NextRead::Adaptive => self.client_slower,
            NextRead::WaitFirst => true,
        };
        let wait_first = self.drained && slower && idle;
        let mut notes = ReadNotes::default();
        let result = read_until(
            stream,
            &mut self.input,
            self.entry,
            self.shared,
            now + wait,
            wait_first,
            &mut notes,
        );
        self.client_slower = !wait_first && notes.was_empty;
        // A read that left room unfilled emptied the socket (TCP hands over all it holds, up to
        // the room): what arrives later raises a new readiness event, so the next read may wait
        // for it first instead of trying (and failing) at once. Not when the event it consumed
        // said the peer closed or failed: that read took the data and the end together, and no
        // further event will come for the end.
        self.drained = !notes.hangup && matches!(result, Ok(n) if n > 0 && n < room);
        self.entry.idle.store(false, Ordering::SeqCst);
        // The accept loop claims a connection to evict by clearing `idle_since` before it shuts
        // the socket's read side: if this one was claimed, whatever this read brought is the
        // start of a request that cannot be read to its end, and is answered 503 (retry).
        let evicted = marked && self.entry.idle_since.swap(0, Ordering::SeqCst) == 0;
        match result {
            Ok(n) if evicted && n > 0 => {
                self.shared.stats.received(n);
                self.shared.stats.refused(Refused::Cap);
                Input::Refused(Refusal::busy())
            }
            Ok(0) => Input::Gone,
            Ok(n) => {
                self.shared.stats.received(n);
                self.last_read = Instant::now();
                Input::Data
            }
            Err(e) if !idle && e.kind() == ErrorKind::TimedOut => self.timed_out(),
            Err(e) => {
                if e.kind() == ErrorKind::TimedOut {
                    // A connection that never sent a request ran out the header timeout; one
                    // that did, the keep-alive idle timeout.
                    let which = if self.served_any {
                        Timeout::Idle
                    } else {
                        Timeout::Head
                    };
                    self.shared.stats.timed_out(which);
                }
                Input::Gone
            }
        }
    }

    /// The front request's head or body did not arrive in time: 408, counted by which.
    #[cold]
    #[inline(never)]
    fn timed_out(&self) -> Input {
        let which = match self.reading {
            Reading::Body { .. } => Timeout::Body,
            _ => Timeout::Head,
        };
        self.shared.stats.timed_out(which);
        Input::Refused(Refusal::timeout())
    }
}
/// The framing a chunked body may carry besides its data: as much as the body limit (one-byte
/// chunks cost 5 bytes of framing per byte of data; we allow about 1:1) plus a head's worth
/// for extensions and trailers.
fn max_chunked_framing(max_body: usize, max_head: usize) -> usize {
    max_body.max(BASE_INPUT) + max_head
}
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Bytes of empty lines (CRLF or bare LF) at the front of `input`.
fn leading_empty_lines(input: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match input[i..] {
            [b'\r', b'\n', ..] => i += 2,
            [b'\n', ..] => i += 1,
            _ => return i,
        }
    }
}

/// Whether `input` may hold a complete head: looks for the blank line only in bytes not searched
/// before, so a head trickled in byte by byte costs linear time, not quadratic.
fn head_may_be_complete(input: &[u8], scanned: &mut usize) -> bool {
    // The end of a head is `\n\n` or `\n\r\n`: up to 2 bytes of it may precede what is new.
    const OVERLAP: usize = 2;
    let from = scanned.saturating_sub(OVERLAP);
    let found = input[from..]
        .windows(2)
        .any(|w| w == b"\n\n" || w == b"\n\r");
    if !found {
        *scanned = input.len();
    }
    found
}

/// `n` uninitialised header slots, allocated for exactly `n`.
fn header_slots_of(n: usize) -> Vec<MaybeUninit<Header<'static>>> {
    (0..n).map(|_| MaybeUninit::uninit()).collect()
}

/// Grows a connection's header slots to the limit, in one step and to exactly the limit: a head
/// with more fields than the slots is parsed once more, never once per doubling (a hostile head
/// with its bytes in its first fields would make each of those parses read nearly all of it),
/// and the slots hold no more than the limit needs. Their old contents are dead (references
/// into input already answered), so new storage replaces them without copying.
fn grow_header_slots(slots: &mut Vec<MaybeUninit<Header<'static>>>, max: usize) {
    if slots.len() < max {
        *slots = header_slots_of(max);
    }
}

/// The connection's header slots, for headers borrowing a buffer that lives for `'b`.
fn header_slots<'v, 'b>(
    slots: &'v mut [MaybeUninit<Header<'static>>],
) -> &'v mut [MaybeUninit<Header<'b>>] {
    let len = slots.len();
    // SAFETY: `MaybeUninit<Header<'a>>` has the same layout for every lifetime `'a`, and a
    // `MaybeUninit` carries no validity requirement: the parser writes each slot before it is
    // read through the returned borrow, and nothing reads the slots through `slots` (their
    // contents, references into an input buffer, are never looked at again once this borrow
    // ends).
    unsafe { std::slice::from_raw_parts_mut(slots.as_mut_ptr().cast(), len) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_slots_grow_once_to_exactly_the_limit() {
        for max in [33, 64, 100, 10_000] {
            let mut slots = header_slots_of(INITIAL_HEADER_SLOTS);
            grow_header_slots(&mut slots, max);
            assert_eq!(slots.len(), max, "one step reaches the limit");
            assert_eq!(slots.capacity(), max, "no room beyond the limit");
            grow_header_slots(&mut slots, max);
            assert_eq!(slots.len(), max);
        }
    }

    #[test]
    fn the_end_of_a_head_is_found_across_reads_without_rescanning() {
        let mut scanned = 0;
        let mut input = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        assert!(!head_may_be_complete(&input, &mut scanned));
        assert_eq!(scanned, input.len());
        input.extend_from_slice(b"\r");
        assert!(
            head_may_be_complete(&input, &mut scanned),
            "\\n\\r straddles the reads"
        );
    }

    #[test]
    fn empty_lines_before_a_request_are_skipped() {
        assert_eq!(leading_empty_lines(b"\r\n\n\r\nGET"), 5);
        assert_eq!(leading_empty_lines(b"\r"), 0);
        assert_eq!(leading_empty_lines(b"GET"), 0);
    }

    #[test]
    fn spans_locate_slices_of_their_base() {
        let base = b"GET /x HTTP/1.1";
        let span = Span::of(base, &base[4..6]).unwrap();
        assert_eq!(span.str(base), "/x");
        assert!(
            Span::of(base, b"/".as_slice()).is_none(),
            "a slice elsewhere"
        );
    }
}
