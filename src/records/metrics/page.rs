//! The `/metrics` answer, rendered at most once per [`MIN_RENDER_INTERVAL`] per format.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::{Format, Registry};

/// A rendered answer is reused for this long: `/metrics` may be public (the default), and a
/// client asking for it in a loop must not make the server sum every counter, list its open
/// descriptors and lock every PostgreSQL outbox once per request.
pub const MIN_RENDER_INTERVAL: Duration = Duration::from_millis(250);

/// The `/metrics` answer: rendered at most once per [`MIN_RENDER_INTERVAL`] per format, by one
/// caller at a time (the others get the answer rendered last, a few milliseconds old).
pub struct Page {
    registry: Registry,
    /// Per format: when it was rendered last, and the text.
    cache: Mutex<[Option<Rendered>; 2]>,
}

type Rendered = (Instant, Arc<String>);

impl Page {
    pub fn new(registry: Registry) -> Page {
        Page {
            registry,
            cache: Mutex::new([None, None]),
        }
    }

    pub fn render(&self, format: Format) -> Arc<String> {
        let slot = format as usize;
        let mut cache = match self.cache.try_lock() {
            Ok(cache) => cache,
            // A render panicked while holding the lock: its data (a cache) is still good.
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            // Another scrape is rendering: wait for it (a short, bounded wait), then share its
            // result if it rendered this format.
            Err(std::sync::TryLockError::WouldBlock) => crate::sync::lock(&self.cache),
        };
        if let Some((at, text)) = &cache[slot] {
            if at.elapsed() < MIN_RENDER_INTERVAL {
                return text.clone();
            }
        }
        let text = Arc::new(self.registry.render(format));
        cache[slot] = Some((Instant::now(), text.clone()));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Exposition, Source};

    /// A render that panics (a bug in a source) must not leave the page locked for good: the
    /// next scrape, on another thread, gets an answer.
    #[test]
    fn a_panicking_render_does_not_wedge_the_page() {
        struct Flaky(std::sync::atomic::AtomicBool);
        impl Source for Flaky {
            fn collect(&self, out: &mut Exposition<'_>) {
                if !self.0.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    panic!("the first render fails");
                }
                out.gauges("t_ok", "Rendered.", None, [(&[][..], 1.0)]);
            }
        }
        let mut registry = Registry::default();
        registry.add(Flaky(std::sync::atomic::AtomicBool::new(false)));
        let page = Arc::new(Page::new(registry));
        let first =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| page.render(Format::Text)));
        assert!(first.is_err());
        let (tx, rx) = std::sync::mpsc::channel();
        let p = page.clone();
        std::thread::spawn(move || tx.send(p.render(Format::Text)).unwrap());
        let text = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the second scrape hangs on the poisoned lock");
        assert!(text.contains("t_ok 1.0"), "{text}");
    }
}
