//! The HTTP/1.1 core (issue 3) over raw sockets: bytes in, exact statuses, bytes and close
//! behaviour out, against an in-process server started with `serve` on 127.0.0.1:0.
//!
//! Every read has a timeout (`support::READ_TIMEOUT`), so no test can hang; waits for the
//! server are bounded poll loops (`eventually`). A sleep only paces a client's input (a
//! trickle, split writes) or is a measurement window, never synchronisation. Tests that measure
//! the process (memory, CPU, descriptor limit) run in a child process of this test binary (see
//! `memory`), so that other tests running in parallel neither disturb the figure nor feel the
//! limit.
//!
//! Every vector of issue 3 is a test here; none is ignored. One module per area:
//!
//! - `framing`: RFC 9112 framing and header vectors, each refused (or accepted);
//! - `bodies`: chunked bodies, the body limit, unread bodies, `Expect: 100-continue`;
//! - `pipelining`: split and pipelined requests, batch and output limits, garbage;
//! - `limits`: the head limits (request line, field count, head size);
//! - `connections`: keep-alive and close, standard headers, timeouts, the connection cap,
//!   idle connections, a panicking handler;
//! - `shutdown`: graceful shutdown;
//! - `memory`: a client that never reads, and accept out of descriptors (child processes);
//! - `properties`: any split of a stream gets the same answers (proptest).

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
mod shutdown;
