//! The connection's input buffer, and the server-wide budget for what all of them hold.
//!
//! [`InBuf`] keeps how much of its storage is initialised, so a read is offered the spare
//! room without zero-filling it first: bytes are zeroed once, when the buffer grows, never
//! per read. [`Budget`] bounds the memory every connection's buffered request heads and bodies
//! take together beyond each connection's small base buffer: growing past the base takes from
//! the budget, and a request that would exceed it is answered 503 instead of allocating.

use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Input bytes read so far and not yet consumed are `storage[start..end]`; `storage.len()` is
/// the initialised length, and reads go into `storage[end..]`.
pub(crate) struct InBuf {
    storage: Vec<u8>,
    start: usize,
    end: usize,
}

impl InBuf {
    pub(crate) fn with_capacity(capacity: usize) -> InBuf {
        InBuf {
            storage: vec![0; capacity],
            start: 0,
            end: 0,
        }
    }

    pub(crate) fn data(&self) -> &[u8] {
        &self.storage[self.start..self.end]
    }

    pub(crate) fn data_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.end]
    }

    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Bytes of storage: what the buffer holds in memory.
    pub(crate) fn capacity(&self) -> usize {
        self.storage.len()
    }

    /// Drops the first `n` bytes of the data.
    pub(crate) fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start += n.min(self.len());
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Keeps only the first `n` bytes of the data.
    pub(crate) fn truncate(&mut self, n: usize) {
        self.end = self.start + n.min(self.len());
    }

    /// Room for a read without growing: moves the data to the front when less than a quarter
    /// of the storage is free behind it and something was consumed before it. Each byte moves
    /// at most once per request (nothing is consumed until a request is answered).
    pub(crate) fn spare(&mut self) -> usize {
        if self.start > 0 && self.storage.len() - self.end < self.storage.len() / 4 {
            self.storage.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        self.storage.len() - self.end
    }

    /// Grows the storage to `capacity` bytes (zeroing only the new part).
    pub(crate) fn grow_to(&mut self, capacity: usize) {
        if capacity > self.storage.len() {
            self.storage.resize(capacity, 0);
        }
    }

    /// Drops the data, and replaces storage larger than `capacity` by a fresh buffer of that
    /// size.
    pub(crate) fn clear_and_shrink(&mut self, capacity: usize) {
        self.start = 0;
        self.end = 0;
        if self.storage.len() > capacity {
            self.storage = vec![0; capacity];
        }
    }

    /// Moves the data into fresh storage of `capacity` bytes if the storage is larger and the
    /// data fits; true if it did.
    pub(crate) fn shrink_keeping(&mut self, capacity: usize) -> bool {
        if self.storage.len() <= capacity || self.len() > capacity {
            return false;
        }
        let mut storage = vec![0; capacity];
        storage[..self.len()].copy_from_slice(self.data());
        self.end = self.len();
        self.start = 0;
        self.storage = storage;
        true
    }

    /// One read into the spare room (which the caller made non-empty).
    pub(crate) fn read_from(&mut self, r: &mut impl Read) -> io::Result<usize> {
        let n = r.read(&mut self.storage[self.end..])?;
        self.end += n;
        Ok(n)
    }
}

/// Memory for buffered request data shared by all connections.
#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Budget {
        Budget {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Takes `n` bytes if they fit under the limit.
    pub(crate) fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    pub(crate) fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_append_consumption_drops_and_space_is_reused() {
        let mut buf = InBuf::with_capacity(8);
        let mut src: &[u8] = b"abcdefghij";
        assert_eq!(buf.spare(), 8);
        assert_eq!(buf.read_from(&mut src).unwrap(), 8);
        assert_eq!(buf.data(), b"abcdefgh");
        buf.consume(3);
        assert_eq!(buf.spare(), 3, "data moved to the front");
        assert_eq!(buf.read_from(&mut src).unwrap(), 2);
        assert_eq!(buf.data(), b"defghij");
        buf.truncate(2);
        assert_eq!(buf.data(), b"de");
        buf.consume(2);
        assert!(buf.is_empty());
        buf.grow_to(64);
        assert_eq!(buf.capacity(), 64);
        buf.clear_and_shrink(8);
        assert_eq!(buf.capacity(), 8);
        let mut src: &[u8] = b"xyz";
        buf.grow_to(64);
        buf.read_from(&mut src).unwrap();
        assert!(buf.shrink_keeping(8));
        assert_eq!((buf.data(), buf.capacity()), (&b"xyz"[..], 8));
        assert!(!buf.shrink_keeping(2), "the data does not fit");
    }

    #[test]
    fn the_budget_never_goes_over_its_limit() {
        let budget = Budget::new(100);
        assert!(budget.try_take(60));
        assert!(!budget.try_take(41));
        assert!(budget.try_take(40));
        budget.give_back(100);
        assert_eq!(budget.used(), 0);
        assert!(!budget.try_take(usize::MAX));
    }
}
