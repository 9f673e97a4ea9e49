//! Structured logs: `tracing` events, written as one JSON object per line (or as text) on
//! stderr by `tracing-subscriber`, through a bounded non-blocking writer.
//!
//! A worker never waits for stderr: events go to a queue of [`QUEUE_LINES`] lines that a
//! thread of its own writes out; when the queue is full (stderr blocked, or a flood of
//! events), lines are dropped and counted ([`dropped_events`], exported as
//! `records_service_log_events_dropped_total`).
//!
//! Every event has a name (`event`), the level, an RFC 3339 timestamp and its fields; events
//! of a request carry its `request_id`. `tracing` spans are not used: a coroutine may move
//! between threads while it waits, and a span entered on one thread would follow the thread,
//! not the request.

use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

/// Lines the log queue holds before it drops.
pub const QUEUE_LINES: usize = 16 * 1024;

/// How much is logged (`LOG_LEVEL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_lowercase().as_str() {
            "error" => Level::Error,
            "warn" | "warning" => Level::Warn,
            "info" => Level::Info,
            "debug" => Level::Debug,
            "trace" => Level::Trace,
            _ => return None,
        })
    }

    fn tracing(self) -> tracing::Level {
        match self {
            Level::Error => tracing::Level::ERROR,
            Level::Warn => tracing::Level::WARN,
            Level::Info => tracing::Level::INFO,
            Level::Debug => tracing::Level::DEBUG,
            Level::Trace => tracing::Level::TRACE,
        }
    }
}

/// Which requests get an access log event (`ACCESS_LOG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    /// Requests answered 5xx.
    Errors,
    All,
}

/// Text from outside (a PostgreSQL server's error message, a client's bytes) for a log field or
/// message: control characters are written escaped (`\n` as `\\n`), so that in the text format
/// a hostile server cannot start a line that looks like another event. (JSON escapes them
/// anyway; `tracing-subscriber`'s text format leaves line feeds as they are.)
pub struct Untrusted<T>(pub T);

impl<T: std::fmt::Display> std::fmt::Display for Untrusted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        struct Escaping<'a, 'b>(&'a mut std::fmt::Formatter<'b>);
        impl std::fmt::Write for Escaping<'_, '_> {
            fn write_str(&mut self, s: &str) -> std::fmt::Result {
                for c in s.chars() {
                    if c.is_control() {
                        write!(self.0, "{}", c.escape_default())?;
                    } else {
                        self.0.write_char(c)?;
                    }
                }
                Ok(())
            }
        }
        use std::fmt::Write as _;
        write!(Escaping(f), "{}", self.0)
    }
}

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Log lines dropped so far because the queue was full.
pub fn dropped_events() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// Installs the process's logger. Keep the guard until exit: dropping it flushes the queue.
/// A second call (tests) leaves the first logger in place.
pub fn init(json: bool, level: Level) -> Option<WorkerGuard> {
    init_with(json, level, std::io::stderr(), QUEUE_LINES)
}

fn init_with<W: std::io::Write + Send + 'static>(
    json: bool,
    level: Level,
    out: W,
    queue: usize,
) -> Option<WorkerGuard> {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(queue)
        .thread_name("log-writer")
        .finish(out);
    let counter = writer.error_counter();
    let builder = tracing_subscriber::fmt()
        .with_max_level(level.tracing())
        .with_writer(writer)
        .with_target(true);
    let installed = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init()
    } else {
        use std::io::IsTerminal;
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
    if installed.is_err() {
        return None;
    }
    let _ = DROPPED.set(counter);
    Some(guard)
}

/// Panics become `error` events (`event: panic`, with where and what) instead of free text on
/// stderr in the middle of the JSON lines. The HTTP core still answers the request 500 and
/// goes on.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(not a string)");
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(event = "panic", at, panic = %Untrusted(what), "a thread panicked");
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_text_cannot_start_a_line() {
        let forged = "lost\n2026-01-01T00:00:00Z  INFO fake: all good\r\u{1b}[2J";
        let shown = Untrusted(forged).to_string();
        assert!(!shown.contains('\n') && !shown.contains('\r') && !shown.contains('\u{1b}'));
        assert_eq!(
            shown,
            "lost\\n2026-01-01T00:00:00Z  INFO fake: all good\\r\\u{1b}[2J"
        );
        assert_eq!(Untrusted("café ok").to_string(), "café ok");
    }
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// A sink that can be held shut, like a stderr pipe nobody reads.
    #[derive(Clone)]
    struct Gate(Arc<Mutex<Vec<u8>>>);

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_with_fields_and_drops_counted_when_the_writer_is_stuck() {
        let sink = Gate(Arc::new(Mutex::new(Vec::new())));
        let shut = sink.0.lock().unwrap();
        let guard = init_with(true, Level::Info, sink.clone(), 4).expect("first logger");
        // The writer thread blocks on the held lock with one line; the queue holds 4; the
        // rest must be dropped, not waited for.
        let started = std::time::Instant::now();
        for i in 0..100 {
            tracing::info!(event = "test_event", n = i, request_id = "abc", "hello");
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "logging waited for a stuck writer"
        );
        assert!(
            dropped_events() >= 90,
            "dropped {} of 100 with a queue of 4",
            dropped_events()
        );
        tracing::debug!(event = "below_the_level");
        drop(shut);
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(!lines.is_empty() && lines.len() <= 10, "{text}");
        for line in lines {
            let v: serde_json::Value = serde_json::from_str(line).expect(line);
            assert_eq!(v["event"], "test_event", "{line}");
            assert_eq!(v["level"], "INFO", "{line}");
            assert_eq!(v["request_id"], "abc", "{line}");
            assert_eq!(v["message"], "hello", "{line}");
            let ts = v["timestamp"].as_str().unwrap();
            assert!(
                ts.len() >= 20 && ts.as_bytes()[10] == b'T' && ts.ends_with('Z'),
                "RFC 3339: {ts}"
            );
        }
        assert!(!text.contains("below_the_level"));
    }
}
