//! What the accept loop, the watchdog, every connection and the server's handle share: the
//! settings, the drain flag, the registry of open connections (each one's [`ConnEntry`]: its
//! idle mark and deadlines), the queue of idle keep-alive connections, the memory budget, the
//! counters and the server's clocks; and what acts on the registry as a whole (evicting the
//! oldest idle connection, cutting late ones).
//!
//! Knows nothing of how connections are accepted or served: the accept loop fills the registry
//! and the connections keep their entries. Must never signal a descriptor outside the registry
//! lock: an entry leaves the registry (under that lock) before its socket closes, which is what
//! makes the number it holds still that connection's.

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use may::io::WaitIoWaker;

use super::buffer::Budget;
use super::socket::{cut_with_reset, unsent_bytes};
use super::stats::{Stats, Timeout};
use super::HttpConfig;

/// State shared by the accept loop, every connection and the handle.
pub(crate) struct ServerShared {
    pub(crate) config: HttpConfig,
    /// Set once by `ServerHandle::shutdown`; connections read it after each batch and before
    /// each idle wait, and close instead of waiting for another request.
    pub(super) draining: AtomicBool,
    /// Open connections. Incremented by the accept loop before a connection's coroutine starts,
    /// decremented by that coroutine's guard when it ends, whatever way it ends.
    pub(super) active: AtomicUsize,
    /// Every open connection, so shutdown can wake the idle ones. Entries are added by the
    /// accept loop and removed by the connection's guard.
    pub(super) registry: Mutex<HashMap<u64, Arc<ConnEntry>>>,
    /// The idle keep-alive connections, longest idle first, so that the accept loop at the cap
    /// finds the one to evict without looking at every connection. Filed by each connection as
    /// it goes idle; emptied lazily by the accept loop and by the filing itself.
    pub(super) idle_queue: IdleQueue,
    /// A duplicate of the listening socket's descriptor, owned here so that shutdown acts on
    /// this socket and never on a descriptor number since closed and reused.
    pub(super) listener: OwnedFd,
    /// Memory for buffered request heads and bodies, beyond each connection's base buffer.
    pub(crate) budget: Budget,
    /// Refused connections lingering now.
    pub(super) lingering_refusals: AtomicUsize,
    pub(super) epoch: Instant,
    pub(crate) stats: Stats,
    /// The random prefix of the request ids this server makes.
    pub(crate) id_prefix: u32,
}

impl ServerShared {
    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Milliseconds since the server started, plus one (so 0 can mean "none").
    pub(crate) fn clock_ms(&self) -> u64 {
        self.clock_ms_at(Instant::now())
    }

    /// [`ServerShared::clock_ms`] at `at`.
    pub(crate) fn clock_ms_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX - 1)
            + 1
    }

    /// Nanoseconds from the server's start to `at`, plus one (so 0 can mean "none"): fine
    /// enough to order connections that went idle within the same millisecond.
    pub(crate) fn clock_ns(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
            + 1
    }

    pub(super) fn registry(&self) -> MutexGuard<'_, HashMap<u64, Arc<ConnEntry>>> {
        crate::sync::lock(&self.registry)
    }

    /// Marks `entry` an idle keep-alive connection since `since` ([`ServerShared::clock_ns`])
    /// and files it for eviction. On every keep-alive request, so it takes only this thread's
    /// stripe of the queue, which only the evicting accept loop contends (see [`IdleQueue`]).
    pub(crate) fn went_idle(&self, entry: &ConnEntry, since: u64) {
        // Marked before it is filed: the queue takes an entry whose mark differs for one that
        // woke, and drops it.
        entry.idle_since.store(since, Ordering::SeqCst);
        self.idle_queue.push(since, entry);
    }

    /// Closes the keep-alive connection that has been idle longest, if there is one, to make
    /// room for a new connection. Its read returns at once and it closes; the race with a
    /// request arriving just then is the usual keep-alive race that clients retry.
    pub(super) fn evict_oldest_idle(&self) -> bool {
        // Held while claiming and signalling: a connection's guard clears its mark and leaves
        // the registry under this lock before its socket closes, so a claim that succeeds is on
        // a descriptor that is still the connection's.
        let _registry = self.registry();
        let Some(entry) = self.idle_queue.claim_oldest() else {
            return false;
        };
        // SAFETY: the descriptor is open: the claim cleared a mark that the connection's guard
        // clears (under the lock held here) before its socket is closed. `server.rs` upholds
        // it: a connection's `ConnGuard` is declared after its stream, so it drops first.
        unsafe {
            libc::shutdown(entry.fd, libc::SHUT_RD);
        }
        self.stats.evicted();
        true
    }

    /// Cuts connections whose answers were not sent by their write deadline (written into the
    /// kernel is not sent: a connection whose kernel send queue has not drained by then is late
    /// too), and wakes those waiting for input past their read deadline.
    pub(super) fn cut_late_connections(&self) {
        let now = self.clock_ms();
        for entry in self.registry().values() {
            let read = entry.read_deadline.load(Ordering::Acquire);
            if read != 0 && read <= now {
                // The connection sees its deadline passed and answers 408 or closes.
                entry.waker.wakeup();
            }
            let deadline = entry.write_deadline.load(Ordering::Acquire);
            // Cleared by compare-and-swap: a connection that finished this write and began
            // the next one in the meantime has a new deadline, which is not cut.
            if deadline == 0 || deadline > now {
                continue;
            }
            // A write still in progress at its deadline is late. A delivery deadline (answers
            // written, the kernel still holding some) is late only if the kernel sent nothing
            // since it was armed: a client that reads, however slowly, gets another write
            // timeout from now (as nginx's send_timeout runs between two writes). The queue is
            // looked at only once a deadline passed, never per request.
            let watched = entry.delivery_unsent.load(Ordering::Acquire);
            let next = if watched == 0 {
                None
            } else {
                let unsent = unsent_bytes(entry.fd) as u64;
                if unsent == 0 {
                    Some(0)
                } else if unsent < watched {
                    entry.delivery_unsent.store(unsent, Ordering::Release);
                    Some(now.saturating_add(
                        u64::try_from(self.config.timeouts.write.as_millis()).unwrap_or(u64::MAX),
                    ))
                } else {
                    None
                }
            };
            let cleared = entry
                .write_deadline
                .compare_exchange(
                    deadline,
                    next.unwrap_or(0),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok();
            if cleared && next.is_none() {
                self.stats.timed_out(Timeout::Write);
                cut_with_reset(entry.fd);
            }
        }
    }
}

/// Stripes of the idle queue at most, whatever the number of threads.
const MAX_STRIPES: usize = 64;

/// Items a stripe may hold beyond twice the connections it held at its last compaction, so
/// that a handful of connections does not compact every few requests; small enough to cost
/// nothing (a few hundred bytes a stripe).
const COMPACT_SLACK: usize = 32;

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's index among the threads that ever filed an idle connection: its stripe.
    static THREAD_INDEX: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

/// The idle keep-alive connections, longest idle first: each stripe holds `(idle since,
/// connection)` items in the order of their times, one item per idle period.
///
/// Filing happens on every keep-alive request, so it takes no shared lock: each thread files
/// into its own stripe (a mutex that only the evicting accept loop ever contends, one cache
/// line), and the connection, which cannot still be idle from an earlier period, leaves its
/// earlier items behind instead of unlinking them. An item is current while its connection's
/// `idle_since` still equals its time: the connection clears the mark when it wakes and sets a
/// new time when it next goes idle, and its guard clears it when it closes, so an item that
/// stops being current never becomes current again.
///
/// Bounds: a stripe at its limit keeps only its current items (at most one per open
/// connection, since a connection has one mark) and sets its limit to twice those plus
/// [`COMPACT_SLACK`]. So a stripe never holds more than twice the connections open at its last
/// compaction plus the slack (the items of connections closed since hold only their entry's
/// allocation, not its socket), however many requests those connections serve. A compaction
/// looks at `limit` items and comes at least `limit / 2` filings after the last one (which
/// left at most `(limit - slack) / 2`), so filing is O(1) amortised. Claiming looks at the
/// front of every stripe (a constant: the threads, at most [`MAX_STRIPES`]) and drops the
/// stale items it meets there, each once: O(1) amortised in the number of connections.
pub(crate) struct IdleQueue {
    stripes: Box<[Stripe]>,
}

/// One thread's share of the [`IdleQueue`], on its own cache line.
#[repr(align(64))]
struct Stripe(Mutex<Items>);

struct Items {
    /// By time, oldest first.
    queue: VecDeque<(u64, Weak<ConnEntry>)>,
    /// Compacts when the queue reaches this length.
    limit: usize,
}

/// The connection of `item`, if the item is its present idle period.
fn current((since, entry): &(u64, Weak<ConnEntry>)) -> Option<Arc<ConnEntry>> {
    entry
        .upgrade()
        .filter(|e| e.idle_since.load(Ordering::SeqCst) == *since)
}

impl IdleQueue {
    /// A queue for about `threads` filing threads (rounded up to a power of two, at most
    /// [`MAX_STRIPES`] stripes; threads beyond share them).
    pub(crate) fn new(threads: usize) -> IdleQueue {
        let stripes = threads.clamp(1, MAX_STRIPES).next_power_of_two();
        IdleQueue {
            stripes: (0..stripes)
                .map(|_| {
                    Stripe(Mutex::new(Items {
                        queue: VecDeque::new(),
                        limit: COMPACT_SLACK,
                    }))
                })
                .collect(),
        }
    }

    /// Files `entry`, whose `idle_since` was just set to `since`.
    fn push(&self, since: u64, entry: &ConnEntry) {
        let stripe = THREAD_INDEX.with(|i| *i) & (self.stripes.len() - 1);
        let mut items = crate::sync::lock(&self.stripes[stripe].0);
        if items.queue.len() >= items.limit {
            items.queue.retain(|item| current(item).is_some());
            items.limit = 2 * items.queue.len() + COMPACT_SLACK;
        }
        let item = (since, entry.me.clone());
        match items.queue.back() {
            // A thread reads the clock just before it files, so its times come in order; only
            // threads sharing a stripe (more threads than stripes) can file a little out of it.
            Some((last, _)) if *last > since => {
                let at = items.queue.partition_point(|(t, _)| *t <= since);
                items.queue.insert(at, item);
            }
            _ => items.queue.push_back(item),
        }
    }

    /// Claims the connection idle longest, if any is: clears its mark, which tells it (when it
    /// wakes) that it was claimed, and which it cannot have cleared first (the
    /// compare-and-swap decides between the two).
    fn claim_oldest(&self) -> Option<Arc<ConnEntry>> {
        loop {
            let mut oldest: Option<(u64, Arc<ConnEntry>)> = None;
            for stripe in self.stripes.iter() {
                let mut items = crate::sync::lock(&stripe.0);
                // Stale items at the front go; the first current one is the stripe's oldest.
                while let Some(item) = items.queue.front() {
                    if let Some(entry) = current(item) {
                        let since = item.0;
                        if oldest.as_ref().is_none_or(|(t, _)| since < *t) {
                            oldest = Some((since, entry));
                        }
                        break;
                    }
                    items.queue.pop_front();
                }
            }
            let (since, entry) = oldest?;
            if entry
                .idle_since
                .compare_exchange(since, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                // Its item is stale now and goes when next met.
                return Some(entry);
            }
            // It woke since (its item is stale now): look again.
        }
    }

    /// Items held, current or not.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| crate::sync::lock(&s.0).queue.len())
            .sum()
    }
}

/// What shutdown needs to know of one connection.
pub(crate) struct ConnEntry {
    /// This entry, for the idle queue to refer to it without keeping it alive (a connection
    /// holds only a reference to its entry).
    me: Weak<ConnEntry>,
    pub(super) fd: i32,
    /// True while the connection waits for the first byte of a request. Set before the
    /// connection checks `draining`, and shutdown sets `draining` before it reads this, so
    /// one of the two always sees the other.
    pub(crate) idle: AtomicBool,
    /// When this connection, having answered a request, began waiting for the next
    /// ([`ServerShared::clock_ns`]); 0 when it is not an idle keep-alive connection.
    pub(crate) idle_since: AtomicU64,
    /// When the answers being written must be sent by; 0 when not writing.
    pub(crate) write_deadline: AtomicU64,
    /// Not 0 while `write_deadline` is a delivery deadline (no write in progress; the kernel
    /// still held this many unsent bytes when last looked at), 0 while it bounds a write.
    pub(crate) delivery_unsent: AtomicU64,
    /// When the input being waited for must have arrived by ([`ServerShared::clock_ms`]); 0
    /// when not reading.
    pub(crate) read_deadline: AtomicU64,
    /// Wakes the connection's coroutine from `wait_io` (at its read deadline).
    pub(crate) waker: WaitIoWaker,
}

impl ConnEntry {
    pub(super) fn new(fd: i32, waker: WaitIoWaker) -> Arc<ConnEntry> {
        Arc::new_cyclic(|me| ConnEntry {
            me: me.clone(),
            fd,
            idle: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            write_deadline: AtomicU64::new(0),
            delivery_unsent: AtomicU64::new(0),
            read_deadline: AtomicU64::new(0),
            waker,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use may::io::WaitIo;
    use may::os::unix::net::UnixDatagram;

    use super::*;

    /// An entry with a waker of its own (never woken here): the socket stays with the caller.
    fn entry() -> (Arc<ConnEntry>, UnixDatagram) {
        let socket = UnixDatagram::unbound().expect("a socket for the waker");
        (ConnEntry::new(socket.as_raw_fd(), socket.waker()), socket)
    }

    /// What a connection does when it begins to wait for its next request.
    fn went_idle(queue: &IdleQueue, entry: &ConnEntry, since: u64) {
        entry.idle_since.store(since, Ordering::SeqCst);
        queue.push(since, entry);
    }

    fn claim_all(queue: &IdleQueue) -> Vec<*const ConnEntry> {
        std::iter::from_fn(|| queue.claim_oldest().map(|e| Arc::as_ptr(&e))).collect()
    }

    #[test]
    fn the_longest_idle_is_claimed_first_and_one_that_woke_or_closed_never() {
        let queue = IdleQueue::new(4);
        let entries: Vec<_> = (0..400).map(|_| entry()).collect();
        // Distinct times in no order (7919 is prime to 1000); four threads, so four stripes,
        // each filing its share in an order of its own (not the order of the times).
        let first = |i: usize| ((i * 7919) % 1000 + 1) as u64;
        std::thread::scope(|s| {
            for t in 0..4 {
                let (queue, entries) = (&queue, &entries);
                s.spawn(move || {
                    for i in (t..entries.len()).step_by(4).rev() {
                        went_idle(queue, &entries[i].0, first(i));
                    }
                });
            }
        });
        let mut expected: Vec<(u64, *const ConnEntry)> = Vec::new();
        let mut entries: Vec<_> = entries.into_iter().map(Some).collect();
        for (i, slot) in entries.iter_mut().enumerate() {
            let e = &slot.as_ref().expect("not closed yet").0;
            match i % 5 {
                // Got a request: no longer idle.
                0 => e.idle_since.store(0, Ordering::SeqCst),
                // Served, and idle again later than every first time.
                1 => {
                    e.idle_since.store(0, Ordering::SeqCst);
                    went_idle(&queue, e, 10_000 + i as u64);
                    expected.push((10_000 + i as u64, Arc::as_ptr(e)));
                }
                // Closed: its guard cleared the mark, and the entry is gone.
                2 => {
                    e.idle_since.store(0, Ordering::SeqCst);
                    *slot = None;
                }
                // Closed with its mark left (a panic): the entry is gone all the same.
                3 => *slot = None,
                _ => expected.push((first(i), Arc::as_ptr(e))),
            }
        }
        expected.sort_unstable();
        let expected: Vec<_> = expected.into_iter().map(|(_, e)| e).collect();
        assert_eq!(claim_all(&queue), expected, "oldest first, each once");
        for (e, _) in entries.iter().flatten() {
            assert_eq!(e.idle_since.load(Ordering::SeqCst), 0, "claimed or woke");
        }
    }

    #[test]
    fn a_connection_claimed_while_it_wakes_is_not_claimed_twice() {
        let queue = IdleQueue::new(1);
        let (a, _sa) = entry();
        let (b, _sb) = entry();
        went_idle(&queue, &a, 5);
        went_idle(&queue, &b, 7);
        // `a` wakes (its swap to 0) and goes idle again before anyone looks.
        assert_eq!(a.idle_since.swap(0, Ordering::SeqCst), 5);
        went_idle(&queue, &a, 9);
        assert_eq!(claim_all(&queue), [Arc::as_ptr(&b), Arc::as_ptr(&a)]);
        assert!(queue.claim_oldest().is_none());
    }

    #[test]
    fn many_requests_on_a_few_connections_leave_the_queue_bounded() {
        let queue = IdleQueue::new(1);
        let entries: Vec<_> = (0..3).map(|_| entry()).collect();
        let mut since = 0;
        let mut longest = 0;
        for round in 0..99_999usize {
            // A request arrives on one connection, which then waits for the next.
            let e = &entries[round % 3].0;
            e.idle_since.store(0, Ordering::SeqCst);
            since += 1;
            went_idle(&queue, e, since);
            longest = longest.max(queue.len());
        }
        assert!(
            longest <= 2 * 3 + COMPACT_SLACK,
            "{longest} items for 3 connections"
        );
        // The last three rounds were on the connections in order: the first is idle longest.
        let order: Vec<_> = entries.iter().map(|(e, _)| Arc::as_ptr(e)).collect();
        assert_eq!(claim_all(&queue), order);
    }
}
