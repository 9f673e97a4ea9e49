//! Who a request's client is, and how many requests a second each client may make.
//!
//! [`TrustedProxies`] (`TRUSTED_PROXIES`) says which peers may vouch for another address, and
//! [`TrustedProxies::client`] finds a request's client from its peer and `X-Forwarded-For`.
//! [`RateLimiter`] (`RATE_LIMIT_PER_CLIENT`, `RATE_LIMIT_MAX_CLIENTS`) counts each client's
//! requests, in memory bounded however many clients appear.
//!
//! Knows nothing of HTTP, records or PostgreSQL: it takes addresses and header values. Must
//! never let a client choose its identity (only what trusted proxies appended is believed), and
//! never grow with the number of clients seen.

mod client;
mod limiter;
mod network;

pub use client::bucket;
pub use limiter::{RateLimiter, EXHAUSTED, RETRY_AFTER};
pub use network::TrustedProxies;

/// The rate limit's settings (`RATE_LIMIT_PER_CLIENT`, `RATE_LIMIT_MAX_CLIENTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Requests a second per client, and the burst; 0: no limit.
    pub per_client: u32,
    /// Clients tracked at once, at most.
    pub max_clients: usize,
}

impl RateLimitConfig {
    /// The limiter, or `None` when the limit is off.
    pub fn limiter(&self) -> Option<RateLimiter> {
        std::num::NonZeroU32::new(self.per_client)
            .map(|rate| RateLimiter::new(rate, self.max_clients))
    }
}
