//! The per-client rate limiter: `RATE_LIMIT_PER_CLIENT` requests a second per client, with a
//! burst of as many, in a store that never holds more than `RATE_LIMIT_MAX_CLIENTS` clients.
//!
//! The algorithm is governor's GCRA (the token bucket as one number per client: its
//! theoretical arrival time, updated by compare-and-set semantics under the store's lock; no
//! timer, no background task). governor's own keyed store is a map that keeps every client it
//! has seen until someone purges it, so a client rotating its address (an IPv4 botnet, or
//! anyone behind a trusted proxy that forwards what it is told) would grow it without bound.
//! Here the state lives in quick_cache's sharded cache, bounded by count: at the cap the
//! cache evicts (CLOCK-PRO: an address seen once goes before one that keeps coming back, so a
//! flood of new addresses does not push out the client being limited).
//!
//! The trade-off, accepted: an evicted client comes back with a full burst. A client's state
//! is worth keeping for at most one second after its last request (the window; after that its
//! bucket is full again, which is what a missing entry means), so eviction loses anything only
//! while more than the cap of distinct clients arrive within a second.
//!
//! Must never block a request on anything but one shard's lock for a few instructions, and
//! never allocate per request for a client already tracked.

use std::hash::RandomState;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use governor::clock::MonotonicClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::Quota;
use quick_cache::sync::{Cache, EntryAction, EntryResult};
use quick_cache::{OptionsBuilder, UnitWeighter};

use super::client::bucket;

/// `Retry-After` of a 429: whole seconds, at least 1. One cell comes back every
/// 1/`RATE_LIMIT_PER_CLIENT` of a second, so a limited client may always retry within a
/// second (`the_next_request_is_allowed_within_a_second` checks it for every rate).
pub const RETRY_AFTER: &str = "1";

/// The `RateLimit` field of a 429 (draft-ietf-httpapi-ratelimit-headers): nothing remains,
/// and more is available within a second (`t` is whole seconds, rounded up).
pub const EXHAUSTED: &str = "\"default\";r=0;t=1";

/// Shards the cache may have at most; fewer when the cap is small (each holds a share of it).
const MAX_SHARDS: usize = 64;
/// The fewest clients a shard holds (below it, one shard).
const MIN_SHARD_CLIENTS: usize = 32;

/// A rate limiter keyed by client (see [`bucket`]), shared by every worker.
pub struct RateLimiter {
    limiter: governor::RateLimiter<u128, BoundedStore, MonotonicClock, NoOpMiddleware<Instant>>,
    /// The store's cache, for its count (governor keeps the store to itself).
    clients: Arc<ClientCache>,
    /// The most clients the cache holds.
    capacity: usize,
    /// The `RateLimit-Policy` field: `"default";q=N;w=1`. Made once per limiter (response
    /// headers are `&'static`: one small string a process, never freed).
    policy: &'static str,
    per_second: NonZeroU32,
}

/// The most clients a [`RateLimiter::for_probes`] tracks: those who probe are a few
/// orchestrators and balancers, and a forgotten one only gets its burst back.
pub const PROBE_CLIENTS: usize = 4096;

type ClientCache = Cache<u128, u64, UnitWeighter, RandomState>;

impl RateLimiter {
    /// `per_second` requests a second per client, a burst of as many, at most `max_clients`
    /// clients tracked at once (at least one).
    pub fn new(per_second: NonZeroU32, max_clients: usize) -> RateLimiter {
        let (clients, capacity) = client_cache(max_clients);
        let clients = Arc::new(clients);
        let store = BoundedStore {
            cache: clients.clone(),
        };
        let policy = format!("\"default\";q={per_second};w=1");
        RateLimiter {
            limiter: governor::RateLimiter::new(
                Quota::per_second(per_second),
                store,
                MonotonicClock,
            ),
            clients,
            capacity,
            policy: Box::leak(policy.into_boxed_str()),
            per_second,
        }
    }

    /// Counts a request of `client`: whether it is within the limit.
    #[inline]
    pub fn admit(&self, client: IpAddr) -> bool {
        self.limiter.check_key(&bucket(client)).is_ok()
    }

    /// The `RateLimit-Policy` field's value.
    pub fn policy(&self) -> &'static str {
        self.policy
    }

    /// Clients tracked now (at most [`RateLimiter::max_clients`]).
    pub fn tracked_clients(&self) -> usize {
        self.clients.len()
    }

    /// A limiter of the same rate for another kind of request, with its own buckets, tracking
    /// at most [`PROBE_CLIENTS`] clients (or this one's cap, if lower): what `/readyz` checks
    /// against, so that probes never spend a client's tokens, yet each client's probes cost
    /// at most the rate in database checks.
    pub fn for_probes(&self) -> RateLimiter {
        RateLimiter::new(self.per_second, self.capacity.min(PROBE_CLIENTS))
    }

    /// The most clients it tracks: `RATE_LIMIT_MAX_CLIENTS`, rounded down to a multiple of
    /// the cache's shards (by less than 64).
    pub fn max_clients(&self) -> usize {
        self.capacity
    }
}

/// The cache for at most `max_clients` (at least one), and what it holds at most.
///
/// Sharded (one lock each) in a power of two of shards, at most [`MAX_SHARDS`], each holding
/// at least [`MIN_SHARD_CLIENTS`]; each shard holds `capacity / shards`, so the capacity is
/// the cap rounded down to a multiple of the shards and the shards together never hold more
/// than the cap.
fn client_cache(max_clients: usize) -> (ClientCache, usize) {
    let max_clients = max_clients.max(1);
    let most = (max_clients / MIN_SHARD_CLIENTS).clamp(1, MAX_SHARDS);
    let shards = 1 << most.ilog2();
    let capacity = max_clients / shards * shards;
    let options = OptionsBuilder::new()
        .estimated_items_capacity(capacity)
        .weight_capacity(capacity as u64)
        .shards(shards)
        .build()
        .expect("valid cache options");
    // SipHash with a per-process key: clients choose their addresses, so the hash must not let
    // them choose collisions.
    let cache = Cache::with_options(
        options,
        UnitWeighter,
        RandomState::new(),
        Default::default(),
    );
    (cache, capacity)
}

/// governor's state for each client in the bounded cache: the value is the client's
/// theoretical arrival time in nanoseconds since the limiter was made.
struct BoundedStore {
    cache: Arc<ClientCache>,
}

impl StateStore for BoundedStore {
    type Key = u128;

    fn measure_and_replace<T, F, E>(&self, key: &u128, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        // Under the shard's write lock: the read, the decision and the update are one step.
        let found = self
            .cache
            .entry(key, None, |_, tat| match f(Some(Nanos::from(*tat))) {
                Ok((t, next)) => {
                    *tat = next.into();
                    EntryAction::Retain(Ok(t))
                }
                Err(e) => EntryAction::Retain(Err(e)),
            });
        match found {
            EntryResult::Retained(decision) => decision,
            EntryResult::Vacant(guard) => {
                // A client not tracked (new, or evicted): a full bucket. Another request of
                // the same client meanwhile waits on the guard (a few instructions, no
                // yielding in between) and then finds this.
                let (t, next) = f(None)?;
                let _ = guard.insert(next.into());
                Ok(t)
            }
            // The callback never asks for removal or replacement, and there is no timeout.
            EntryResult::Removed(..) | EntryResult::Replaced(..) | EntryResult::Timeout => {
                unreachable!("entry() without removal, replacement or timeout")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use governor::clock::Clock;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limiter(per_second: u32, max_clients: usize) -> RateLimiter {
        RateLimiter::new(NonZeroU32::new(per_second).unwrap(), max_clients)
    }

    #[test]
    fn a_burst_of_the_rate_then_refused() {
        let l = limiter(5, 100);
        for i in 0..5 {
            assert!(l.admit(ip("192.0.2.1")), "request {i} of the burst");
        }
        assert!(!l.admit(ip("192.0.2.1")), "the sixth");
        assert!(
            l.admit(ip("192.0.2.2")),
            "another client has its own bucket"
        );
        assert_eq!(l.tracked_clients(), 2);
        assert_eq!(l.policy(), "\"default\";q=5;w=1");
    }

    #[test]
    fn the_next_request_is_allowed_within_a_second() {
        // What `RETRY_AFTER` and `EXHAUSTED` promise, for slow and fast rates.
        for rate in [1, 2, 3, 7, 100, 1_000_000] {
            let l = limiter(rate, 10);
            let key = bucket(ip("192.0.2.1"));
            let refused = loop {
                if let Err(not_until) = l.limiter.check_key(&key) {
                    break not_until;
                }
            };
            let wait = refused.wait_time_from(l.limiter.clock().now());
            assert!(wait <= Duration::from_secs(1), "{rate}/s: {wait:?}");
        }
    }

    #[test]
    fn rotating_addresses_never_track_more_than_the_cap() {
        for cap in [1, 5, 31, 32, 100, 1_000, 5_000] {
            let l = limiter(3, cap);
            assert!(
                l.max_clients() <= cap && l.max_clients() + MAX_SHARDS > cap,
                "{cap}"
            );
            for i in 0..(20 * cap as u32).max(500) {
                l.admit(IpAddr::from((0xC000_0000_u32 + i).to_be_bytes()));
                assert!(l.tracked_clients() <= cap, "cap {cap}, after {i}");
            }
            assert!(l.tracked_clients() > 0);
        }
    }

    #[test]
    fn a_client_that_keeps_coming_back_survives_a_flood_of_new_addresses() {
        let l = limiter(2, 1_000);
        let regular = ip("198.51.100.7");
        assert!(l.admit(regular));
        assert!(l.admit(regular));
        for i in 0..50_000u32 {
            l.admit(IpAddr::from((0x0A00_0000_u32 + i).to_be_bytes()));
            if i % 100 == 0 {
                // Still limited: its state was kept through the flood.
                assert!(!l.admit(regular), "evicted after {i} new addresses");
            }
        }
    }

    #[test]
    fn one_ipv6_64_is_one_client() {
        let l = limiter(2, 100);
        assert!(l.admit(ip("2001:db8::1")));
        assert!(l.admit(ip("2001:db8::2")));
        assert!(!l.admit(ip("2001:db8::ffff:3")), "the same /64");
        assert!(l.admit(ip("2001:db8:0:1::1")), "the next /64");
    }

    #[test]
    fn concurrent_requests_of_one_client_get_exactly_the_burst() {
        let l = Arc::new(limiter(1_000, 100));
        let admitted: usize = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    let l = l.clone();
                    s.spawn(move || (0..1_000).filter(|_| l.admit(ip("192.0.2.9"))).count())
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        // The burst, plus what refilled while the 4,000 checks ran (1 a millisecond).
        assert!(admitted >= 1_000, "{admitted}");
        assert!(admitted < 1_500, "{admitted}");
    }
}
