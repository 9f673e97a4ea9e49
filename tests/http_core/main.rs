//! The HTTP/1.1 core over raw sockets: bytes in, exact statuses, bytes and close behaviour out,
//! against an in-process server started with `serve` on 127.0.0.1:0.
//!
//! Every read has a timeout (`support::READ_TIMEOUT`), so no test can hang; waits for the
//! server are bounded poll loops (`eventually`). A sleep only paces a client's input (a
//! trickle, split writes) or is a measurement window, never synchronisation. Tests that measure
//! the process (memory, CPU, descriptor limit) run in a child process of this test binary (see
//! `memory`), so that other tests running in parallel neither disturb the figure nor feel the
//! limit.
//!
//! Every attack vector and RFC case the core was specified against is a test here; none is
//! ignored. One module per area:
//!
//! - `framing`: RFC 9112 framing and header vectors, each refused (or accepted);
//! - `conformance`: RFC 9112 beyond framing: request-target forms, Host syntax, protocol
//!   versions, answers without content, chunk extensions and trailers;
//! - `bodies`: chunked bodies, the body limit, unread bodies, `Expect: 100-continue`;
//! - `pipelining`: split and pipelined requests, batch and output limits, garbage;
//! - `limits`: the head limits (request line, field count, head size);
//! - `connections`: keep-alive and close, standard headers, timeouts, the connection cap,
//!   idle connections, a panicking handler;
//! - `capacity`: what the server holds across connections: the connection cap (idle
//!   keep-alive connections make room first) and the budget for buffered request data;
//! - `deadlines`: a batch of answers is written within the write timeout whatever the client
//!   sends meanwhile;
//! - `lingering`: closing with unread input without losing the answer (lingering close);
//! - `cost`: the server's CPU time stays proportional to what clients send (trickled bodies),
//!   and the memory per idle connection (child processes);
//! - `shutdown`: graceful shutdown;
//! - `memory`: a client that never reads, and accept out of descriptors (child processes);
//! - `properties`: any split of a stream gets the same answers (proptest);
//! - `proxy`: the PROXY protocol v2 header from trusted peers (and from others: a bad request);
//! - `support`: the in-process server and raw client these modules share.

mod support;

mod bodies;
mod capacity;
mod conformance;
mod connections;
mod cost;
mod deadlines;
mod framing;
mod limits;
mod lingering;
mod memory;
mod pipelining;
mod properties;
mod proxy;
mod shutdown;
