//! The one way tests wait for something to happen: a bounded poll, never a bare sleep.

#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Polls `cond` every 20 ms until it holds or `within` passes; true if it held.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
