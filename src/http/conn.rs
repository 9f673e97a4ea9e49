//! One connection's loop: read, answer every complete request in what was read (in order, up
//! to a batch limit), write all the answers in one go, repeat.
//!
//! Backpressure falls out of the shape: nothing more is read from a client until the answers to
//! what it already sent have been written, so a pipelining client that never reads holds at most
//! one batch of output (bounded by `max_pipelined` and `max_output_bytes`) and one read buffer.

use std::io::{ErrorKind, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use httparse::Header;
use may::net::TcpStream;

use super::chunked::{self, Chunked};
use super::head::{parse_head, BodyFraming, HeadError};
use super::response::{write_error, write_response, Response};
use super::server::{ConnEntry, ServerShared};
use super::{Request, Service};

/// Smallest free space offered to a read.
const READ_CHUNK: usize = 8 * 1024;

/// What handling the request at the front of the buffer came to.
enum Step {
    /// Answered; `consumed` bytes of input belonged to it.
    Answered { consumed: usize, close: bool },
    /// The request is not all here yet. `needed`: the input length that completes it, when
    /// the framing says (Content-Length); `expect_continue`: its head asked for `100 Continue`.
    NeedMore {
        in_body: bool,
        needed: Option<usize>,
        expect_continue: bool,
    },
    /// Refused before reaching the handler; the connection closes after the answer.
    Refused { status: u16, detail: &'static str },
}

/// Per-connection buffers, reused across requests.
struct Buffers {
    out: Vec<u8>,
    body: Vec<u8>,
    chunked: Vec<u8>,
    headers: Vec<Header<'static>>,
}

pub(crate) fn run<S: Service>(
    stream: &mut TcpStream,
    service: &S,
    shared: &ServerShared,
    entry: &ConnEntry,
    conn_id: u64,
) {
    let limits = &shared.config.limits;
    let timeouts = &shared.config.timeouts;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(timeouts.write));

    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut bufs = Buffers {
        out: Vec::with_capacity(READ_CHUNK),
        body: Vec::with_capacity(1024),
        chunked: Vec::new(),
        headers: vec![httparse::EMPTY_HEADER; limits.max_headers],
    };
    let mut read_timeout: Option<Duration> = None;
    // When the first byte of the request at the front of `input` arrived.
    let mut request_start: Option<Instant> = None;
    // When that request's head was complete, if it is waiting for its body.
    let mut body_start: Option<Instant> = None;
    let mut continue_sent = false;
    let mut served_any = false;
    // How much of `input` is known to hold no complete head (so it is not searched again).
    let mut scanned = 0usize;
    // While waiting for a body: when to try again.
    let mut body_wait = BodyWait {
        needed: None,
        attempted: 0,
    };

    loop {
        let mut answered = 0;
        let mut close = false;
        // Whether what is buffered ends in an incomplete request, so reading is the only way on.
        let mut need_more = false;
        while !input.is_empty()
            && answered < limits.max_pipelined
            && bufs.out.len() < limits.max_output_bytes
        {
            if body_start.is_some() && !body_may_be_complete(&input, &body_wait) {
                // Parsing the head and decoding the body again per read would let a client
                // that trickles its body burn CPU: wait until it can be complete.
                need_more = true;
                break;
            }
            if body_start.is_none() && !head_may_be_complete(&input, &mut scanned) {
                if input.len() > limits.max_head_bytes {
                    write_error(
                        &mut bufs.out,
                        &mut bufs.body,
                        431,
                        "Request header too large",
                    );
                    close = true;
                }
                need_more = true;
                break;
            }
            match step(&input, service, shared, &mut bufs, conn_id) {
                Step::Answered { consumed, close: c } => {
                    input.advance(consumed);
                    scanned = 0;
                    request_start = None;
                    body_start = None;
                    continue_sent = false;
                    served_any = true;
                    answered += 1;
                    if c {
                        close = true;
                        break;
                    }
                }
                Step::NeedMore {
                    in_body,
                    needed,
                    expect_continue,
                } => {
                    body_wait = BodyWait {
                        needed,
                        attempted: input.len(),
                    };
                    if in_body && body_start.is_none() {
                        body_start = Some(Instant::now());
                        if expect_continue && !continue_sent {
                            bufs.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                            continue_sent = true;
                        }
                    }
                    if !in_body {
                        scanned = input.len();
                    }
                    need_more = true;
                    break;
                }
                Step::Refused { status, detail } => {
                    write_error(&mut bufs.out, &mut bufs.body, status, detail);
                    close = true;
                    break;
                }
            }
        }

        if !bufs.out.is_empty() {
            if stream.write_all(&bufs.out).is_err() {
                return;
            }
            bufs.out.clear();
        }
        bufs.give_back_memory(&mut input, limits.max_output_bytes);
        if close {
            let _ = stream.flush();
            return;
        }
        if !need_more && !input.is_empty() {
            // The batch ended on its request or output limit: what is left may already hold
            // complete requests. Answer those before reading more, or a client waiting for
            // them stalls, and the input buffer grows with whatever else it sends.
            continue;
        }

        // Read more, under the deadline that applies to where we are.
        let now = Instant::now();
        let idle = input.is_empty();
        let wait = if idle {
            entry.idle.store(true, Ordering::SeqCst);
            if shared.draining() {
                return;
            }
            if served_any {
                timeouts.idle
            } else {
                timeouts.header
            }
        } else {
            let (start, limit) = match body_start {
                Some(t) => (t, timeouts.body),
                None => (*request_start.get_or_insert(now), timeouts.header),
            };
            let left = (start + limit).saturating_duration_since(now);
            if left.is_zero() {
                write_timeout_and_close(stream, &mut bufs);
                return;
            }
            left
        };
        if read_timeout != Some(wait) {
            let _ = stream.set_read_timeout(Some(wait));
            read_timeout = Some(wait);
        }
        let len = input.len();
        if input.capacity() - len < READ_CHUNK {
            input.reserve(READ_CHUNK);
        }
        let room = input.capacity() - len;
        input.resize(len + room, 0);
        let result = stream.read(&mut input[len..]);
        entry.idle.store(false, Ordering::SeqCst);
        match result {
            Ok(0) => return,
            Ok(n) => {
                input.truncate(len + n);
                if idle {
                    request_start = Some(Instant::now());
                }
            }
            Err(e) => {
                input.truncate(len);
                if !idle && matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) {
                    write_timeout_and_close(stream, &mut bufs);
                }
                return;
            }
        }
    }
}

/// Where a connection waiting for a request body stands.
struct BodyWait {
    /// The input length that completes the request (Content-Length framing).
    needed: Option<usize>,
    /// The input length at the last attempt to decode it.
    attempted: usize,
}

/// Whether the body may be complete now. Content-Length: when the input is long enough.
/// Chunked: when the new bytes hold a blank line (every chunked body ends in one: the last
/// chunk, then the trailer section's end) or the input grew by half since the last attempt,
/// so a trickled body costs a logarithmic number of decodes, not one per read.
fn body_may_be_complete(input: &[u8], wait: &BodyWait) -> bool {
    match wait.needed {
        Some(needed) => input.len() >= needed,
        None => {
            let from = wait.attempted.saturating_sub(3).min(input.len());
            input.len() >= wait.attempted + (wait.attempted / 2).max(4096)
                || input[from..].windows(4).any(|w| w == b"\r\n\r\n")
        }
    }
}

impl Buffers {
    /// Returns memory a large request or answer took, once the connection is between requests,
    /// so a long-lived keep-alive connection holds only small buffers.
    fn give_back_memory(&mut self, input: &mut BytesMut, max_output: usize) {
        const KEEP: usize = 64 * 1024;
        if self.out.capacity() > max_output.max(KEEP) {
            self.out = Vec::with_capacity(READ_CHUNK);
        }
        if self.body.capacity() > KEEP {
            self.body = Vec::with_capacity(1024);
        }
        if self.chunked.capacity() > KEEP {
            self.chunked = Vec::new();
        }
        if input.is_empty() && input.capacity() > KEEP {
            *input = BytesMut::with_capacity(READ_CHUNK);
        }
    }
}

fn write_timeout_and_close(stream: &mut TcpStream, bufs: &mut Buffers) {
    bufs.out.clear();
    write_error(&mut bufs.out, &mut bufs.body, 408, "Request timeout");
    let _ = stream.write_all(&bufs.out);
}

/// Whether `input` may hold a complete head: looks for the blank line only in bytes not searched
/// before, so a head trickled in byte by byte costs linear time, not quadratic.
fn head_may_be_complete(input: &[u8], scanned: &mut usize) -> bool {
    let from = scanned.saturating_sub(3);
    let found = input[from..]
        .windows(2)
        .any(|w| w == b"\n\n" || w == b"\n\r");
    if !found {
        *scanned = input.len();
    }
    found
}

/// Reuses a header array's allocation for a new borrow (in-place collect: no allocation).
fn recycle<'a>(headers: Vec<Header<'_>>) -> Vec<Header<'a>> {
    headers
        .into_iter()
        .map(|_| httparse::EMPTY_HEADER)
        .collect()
}

fn step<S: Service>(
    input: &[u8],
    service: &S,
    shared: &ServerShared,
    bufs: &mut Buffers,
    conn_id: u64,
) -> Step {
    let limits = &shared.config.limits;
    let mut headers = recycle(std::mem::take(&mut bufs.headers));
    let result = match parse_head(input, &mut headers, limits) {
        Err(HeadError::Incomplete) => Step::NeedMore {
            in_body: false,
            needed: None,
            expect_continue: false,
        },
        Err(HeadError::TooLarge) => Step::Refused {
            status: 431,
            detail: "Request header too large",
        },
        Err(HeadError::Bad(detail)) => Step::Refused {
            status: 400,
            detail,
        },
        Err(HeadError::NotImplemented) => Step::Refused {
            status: 501,
            detail: "Transfer coding not implemented",
        },
        Ok((info, req)) => {
            let body: Option<(&[u8], usize)> = match info.framing {
                BodyFraming::None => Some((&[][..], info.len)),
                BodyFraming::Length(n) if n > limits.max_body_bytes as u64 => {
                    return finish(
                        bufs,
                        headers,
                        Step::Refused {
                            status: 413,
                            detail: "Request body too large",
                        },
                    )
                }
                BodyFraming::Length(n) => {
                    let end = info.len + n as usize;
                    (input.len() >= end).then(|| (&input[info.len..end], end))
                }
                BodyFraming::Chunked => {
                    match chunked::decode(
                        &input[info.len..],
                        &mut bufs.chunked,
                        limits.max_body_bytes,
                        limits.max_head_bytes,
                    ) {
                        Chunked::Complete { consumed } => {
                            Some((&bufs.chunked[..], info.len + consumed))
                        }
                        Chunked::Incomplete => {
                            if input.len() > limits.max_head_bytes * 2 + limits.max_body_bytes * 2 {
                                return finish(
                                    bufs,
                                    headers,
                                    Step::Refused {
                                        status: 413,
                                        detail: "Request body too large",
                                    },
                                );
                            }
                            None
                        }
                        Chunked::TooLarge => {
                            return finish(
                                bufs,
                                headers,
                                Step::Refused {
                                    status: 413,
                                    detail: "Request body too large",
                                },
                            )
                        }
                        Chunked::Bad => {
                            return finish(
                                bufs,
                                headers,
                                Step::Refused {
                                    status: 400,
                                    detail: "Malformed chunked body",
                                },
                            )
                        }
                    }
                }
            };
            match body {
                None => Step::NeedMore {
                    in_body: true,
                    needed: match info.framing {
                        BodyFraming::Length(n) => Some(info.len + n as usize),
                        _ => None,
                    },
                    expect_continue: info.expect_continue,
                },
                Some((body, consumed)) => {
                    let method = req.method.unwrap_or("GET");
                    let request = Request {
                        method,
                        target: req.path.unwrap_or("/"),
                        headers: req.headers,
                        body,
                        conn_id,
                    };
                    let mut res = Response::new(&mut bufs.body);
                    let outcome =
                        catch_unwind(AssertUnwindSafe(|| service.call(&request, &mut res)));
                    if outcome.is_err() {
                        res.reset();
                        res.error(500, "Internal Server Error");
                        res.close = true;
                    }
                    // Draining is read after the handler, so a request that was in the handler
                    // when shutdown began is answered with `Connection: close`.
                    let close = !info.keep_alive || res.close || shared.draining();
                    if !info.http11 && !close {
                        // HTTP/1.0 closes by default: say that this connection stays open.
                        res.header("Connection", "keep-alive");
                    }
                    write_response(&mut bufs.out, &res, method == "HEAD", close);
                    Step::Answered { consumed, close }
                }
            }
        }
    };
    finish(bufs, headers, result)
}

fn finish(bufs: &mut Buffers, headers: Vec<Header<'_>>, step: Step) -> Step {
    bufs.headers = recycle(headers);
    step
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_body_is_retried_only_when_it_may_be_complete() {
        let cl = BodyWait {
            needed: Some(100),
            attempted: 40,
        };
        assert!(!body_may_be_complete(&[b'x'; 99], &cl));
        assert!(body_may_be_complete(&[b'x'; 100], &cl));

        let mut input =
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel".to_vec();
        let chunked = BodyWait {
            needed: None,
            attempted: input.len(),
        };
        input.extend_from_slice(b"l");
        assert!(
            !body_may_be_complete(&input, &chunked),
            "one more byte: wait"
        );
        input.extend_from_slice(b"o\r\n0\r\n\r\n");
        assert!(
            body_may_be_complete(&input, &chunked),
            "the terminating blank line arrived"
        );
        let grown = vec![b'x'; chunked.attempted + 4096];
        assert!(body_may_be_complete(&grown, &chunked), "grew by 4 KiB");
        // A blank line split across the previous attempt and the new bytes still counts.
        let mut split = b"xx\r\n\r".to_vec();
        let wait = BodyWait {
            needed: None,
            attempted: split.len(),
        };
        split.push(b'\n');
        assert!(body_may_be_complete(&split, &wait));
    }
}
