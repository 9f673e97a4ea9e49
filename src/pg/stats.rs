//! A PostgreSQL client's counters, kept across its reconnects: queries queued, socket writes,
//! the pipelining depth achieved, queries re-sent and statements re-prepared. The pipeline
//! adds to them; `/metrics` reads them (`Client::stats`).

use std::sync::atomic::AtomicU64;

use crate::metrics::{Histogram, HistogramSnapshot, Striped};

/// Counters kept across reconnects: how many queries were queued and in how many socket writes
/// they left. Their ratio is the pipelining depth actually achieved.
#[derive(Debug, Default)]
pub struct Stats {
    pub queries: AtomicU64,
    pub writes: AtomicU64,
    /// Queries per write, as a histogram ([`Stats::batches`]). Written by the writer coroutine
    /// only.
    batch: BatchCells,
    /// Shared-Sync queries sent again because another query of their group failed.
    pub resent: AtomicU64,
    /// Statements prepared again after the server found their cached plan stale (0A000).
    pub reprepared: AtomicU64,
}

/// Buckets of [`Stats::batches`]: queries per write.
pub const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

const BATCH: Histogram = Histogram {
    base: 0,
    bounds: BATCH_BUCKETS,
};

struct BatchCells(Striped);

impl Default for BatchCells {
    fn default() -> Self {
        BatchCells(Striped::new(Histogram::cells(BATCH_BUCKETS), 1))
    }
}

impl std::fmt::Debug for BatchCells {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchCells")
    }
}

impl Stats {
    /// Queries per socket write so far: the pipelining depth achieved, as a histogram.
    pub fn batches(&self) -> HistogramSnapshot {
        BATCH.snapshot(&self.batch.0, 1.0)
    }

    /// Counts one socket write that carried `queries` queries.
    pub(super) fn observe_batch(&self, queries: u64) {
        BATCH.observe_count(&self.batch.0, queries);
    }
}
