//! Shared test support: a real PostgreSQL, the real service binary, a raw HTTP client, and
//! `wait::eventually`. `http` and `wait` are shared with `tests/http_core` too (by `#[path]`).
pub mod app;
pub mod fakepg;
pub mod http;
pub mod pg;
pub mod pgbouncer;
pub mod wait;

/// Configures the may runtime for in-process clients, once per test binary.
#[allow(dead_code)]
pub fn init_runtime() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        may::config().set_workers(2).set_stack_size(64 * 1024 / 8);
    });
}
