//! What the connection core counts: bytes, connections, refusals, timeouts, and the answers it
//! gives without calling the service. Striped per thread ([`crate::metrics::Striped`]): a
//! connection adds to its own thread's cells, never a line another worker writes.

use crate::metrics::Striped;

use super::Status;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// At the connection cap, with no idle connection to close.
    Cap,
    /// The buffered-request memory budget was spent.
    Memory,
    /// No coroutine could be started for it.
    Spawn,
    /// Accepted while shutting down.
    Shutdown,
}

impl Refused {
    pub const ALL: [Refused; 4] = [
        Refused::Cap,
        Refused::Memory,
        Refused::Spawn,
        Refused::Shutdown,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refused::Cap => "cap",
            Refused::Memory => "memory",
            Refused::Spawn => "spawn",
            Refused::Shutdown => "shutdown",
        }
    }
}

/// Which deadline a connection missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    Head,
    Body,
    Idle,
    Write,
}

impl Timeout {
    pub const ALL: [Timeout; 4] = [Timeout::Head, Timeout::Body, Timeout::Idle, Timeout::Write];

    pub fn label(self) -> &'static str {
        match self {
            Timeout::Head => "head",
            Timeout::Body => "body",
            Timeout::Idle => "idle",
            Timeout::Write => "write",
        }
    }
}

const RECEIVED: usize = 0;
const SENT: usize = 1;
const ACCEPTED: usize = 2;
const EVICTED: usize = 3;
const REFUSED: usize = 4;
const TIMEOUTS: usize = REFUSED + Refused::ALL.len();
const CORE: usize = TIMEOUTS + Timeout::ALL.len();
const WIDTH: usize = CORE + Status::NAMED.len() + 1;

pub(crate) struct Stats {
    cells: Striped,
}

impl Stats {
    pub(crate) fn new(threads: usize) -> Stats {
        Stats {
            cells: Striped::new(WIDTH, threads),
        }
    }

    pub(crate) fn received(&self, n: usize) {
        self.cells.add(RECEIVED, n as u64);
    }

    pub(crate) fn sent(&self, n: usize) {
        self.cells.add(SENT, n as u64);
    }

    pub(crate) fn accepted(&self) {
        self.cells.inc(ACCEPTED);
    }

    pub(crate) fn evicted(&self) {
        self.cells.inc(EVICTED);
    }

    pub(crate) fn refused(&self, why: Refused) {
        self.cells.inc(REFUSED + why as usize);
    }

    pub(crate) fn timed_out(&self, which: Timeout) {
        self.cells.inc(TIMEOUTS + which as usize);
    }

    /// An answer the core gave without the service (a refusal, or a panicking handler's 500).
    pub(crate) fn core_response(&self, status: Status) {
        self.cells.inc(CORE + status.ordinal());
    }

    pub(crate) fn snapshot(&self, open: usize) -> ServerStats {
        let c = &self.cells;
        ServerStats {
            open,
            accepted: c.sum(ACCEPTED),
            evicted: c.sum(EVICTED),
            received_bytes: c.sum(RECEIVED),
            sent_bytes: c.sum(SENT),
            refused: Refused::ALL.map(|r| (r, c.sum(REFUSED + r as usize))),
            timeouts: Timeout::ALL.map(|t| (t, c.sum(TIMEOUTS + t as usize))),
            core_responses: (0..=Status::NAMED.len())
                .map(|i| (Status::ordinal_label(i), c.sum(CORE + i)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

/// The core's counters at one moment.
#[derive(Debug, Clone)]
pub struct ServerStats {
    /// Connections open now.
    pub open: usize,
    pub accepted: u64,
    pub evicted: u64,
    pub received_bytes: u64,
    pub sent_bytes: u64,
    pub refused: [(Refused, u64); 4],
    pub timeouts: [(Timeout, u64); 4],
    /// Answers given by the core itself, by status code label; only those given at least once.
    pub core_responses: Vec<(&'static str, u64)>,
}
