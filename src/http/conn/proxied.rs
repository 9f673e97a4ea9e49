//! A connection's peer, and the PROXY protocol v2 header a trusted proxy may send before its
//! first request (the parser is `http::proxy`): its source replaces the socket's peer for every
//! request of the connection.
//!
//! Only a connection from a peer the server's `proxy_protocol` accepts is looked at, and only
//! its first bytes: they either start with the signature (a header, read whole, under the head
//! timeout that already runs from the connection's first byte) or not (plain HTTP, mixed
//! freely on the same listener). Must never wait past that timeout for the rest of a header,
//! never hand a header's bytes to the HTTP parser, and never look for one on a connection from
//! any other peer, where the signature is a malformed request like any other.

use std::net::SocketAddr;

use may::net::TcpStream;

use super::{Conn, Reading, Refusal, Step};
use crate::http::head::MALFORMED;
use crate::http::proxy::{self, Header};
use crate::http::shared::ServerShared;
use crate::http::Status;

/// Who is at the other end of a connection.
pub(super) struct Peer {
    /// The socket's peer, or the source a PROXY header gave; `None` if the socket could not
    /// tell.
    pub(super) addr: Option<SocketAddr>,
    /// A header may still come: the peer is a trusted proxy and nothing has been read yet.
    header_expected: bool,
}

impl Peer {
    pub(super) fn of(stream: &TcpStream, shared: &ServerShared) -> Peer {
        let addr = stream.peer_addr().ok();
        let header_expected = match (&shared.config.proxy_protocol, addr) {
            (Some(proxies), Some(peer)) => proxies.accepts(peer.ip()),
            _ => false,
        };
        Peer {
            addr,
            header_expected,
        }
    }
}

impl Conn<'_> {
    /// Before the first request's head is looked at: takes a PROXY header off the front of
    /// the input if one may come. `Some(step)` ends this turn (wait for the rest of the header,
    /// or refuse an invalid one); `None` goes on to HTTP.
    #[inline]
    pub(super) fn proxy_header(&mut self) -> Option<Step> {
        if !self.peer.header_expected || self.input.is_empty() {
            return None;
        }
        self.read_proxy_header()
    }

    #[cold]
    #[inline(never)]
    fn read_proxy_header(&mut self) -> Option<Step> {
        match proxy::parse(self.input.data()) {
            Header::Absent => {
                self.peer.header_expected = false;
                None
            }
            Header::Incomplete => {
                // The head timeout runs from the first byte (header and request head alike).
                if !matches!(self.reading, Reading::Head { .. }) {
                    self.reading = Reading::Head {
                        since: self.last_read,
                        scanned: 0,
                    };
                }
                Some(Step::NeedInput)
            }
            Header::Complete { len, source } => {
                self.peer.header_expected = false;
                self.input.consume(len);
                if source.is_some() {
                    self.peer.addr = source;
                }
                None
            }
            Header::Invalid(why) => {
                tracing::debug!(event = "proxy_header_invalid", why, peer = ?self.peer.addr);
                self.peer.header_expected = false;
                // Refused as a request that never parsed: answered 400 and closed at once.
                Some(Step::Refused(Refusal::new(Status::BAD_REQUEST, MALFORMED)))
            }
        }
    }
}
