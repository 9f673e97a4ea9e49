//! Metrics that the hot path can afford, and their Prometheus exposition.
//!
//! Recording: [`Striped`] counters, one cache line set per thread (a thread's index modulo the
//! shard count), so workers never write the same line; a scrape sums the shards. No lock, no
//! allocation, one uncontended atomic add per cell touched. [`Histogram`] lays a histogram's
//! buckets and sum out in such cells.
//!
//! Exposition: [`Exposition`] writes families through the Prometheus project's
//! `prometheus-client` encoder (OpenMetrics text: `# HELP`, `# TYPE`, `# UNIT`, label escaping,
//! `_total`, cumulative buckets ending in `+Inf`, `# EOF`). The [`process`] module reads the
//! standard `process_*` values from `/proc`.
//!
//! Knows nothing of HTTP, PostgreSQL or records: each layer keeps its own [`Striped`] cells and
//! says what they mean.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeLabelValue, LabelValueEncoder, MetricEncoder,
    NoLabelSet,
};
use prometheus_client::metrics::MetricType;
pub use prometheus_client::registry::Unit;

/// An exposition format, chosen by the scraper's `Accept` header as Prometheus' own client
/// libraries choose: OpenMetrics when asked for (Prometheus asks), else the classic text format
/// 0.0.4 (curl, `promtool check metrics`, older scrapers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Text,
}

impl Format {
    pub fn negotiate(accept: Option<&[u8]>) -> Format {
        let asks = |a: &[u8]| {
            a.windows(b"application/openmetrics-text".len())
                .any(|w| w.eq_ignore_ascii_case(b"application/openmetrics-text"))
        };
        match accept {
            Some(a) if asks(a) => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// Latency buckets, in seconds: 100 µs to 10 s.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Cells per cache line (64 bytes of `u64`s).
const LINE: usize = 8;

#[repr(align(64))]
struct Line([AtomicU64; LINE]);

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's index among the threads that ever recorded a metric.
    static THREAD_INDEX: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

/// `width` counters, striped over `shards` copies. A thread adds to the copy its index selects;
/// threads that share a copy (more threads than shards) still count exactly (the adds are
/// atomic), they only share its cache lines.
pub struct Striped {
    lines: Box<[Line]>,
    lines_per_shard: usize,
    shards: usize,
    width: usize,
}

impl Striped {
    /// `width` counters for about `threads` recording threads (rounded up to a power of two,
    /// at most 64 copies).
    pub fn new(width: usize, threads: usize) -> Striped {
        let shards = threads.clamp(1, 64).next_power_of_two();
        let lines_per_shard = width.div_ceil(LINE).max(1);
        let lines = (0..shards * lines_per_shard)
            .map(|_| Line(std::array::from_fn(|_| AtomicU64::new(0))))
            .collect();
        Striped {
            lines,
            lines_per_shard,
            shards,
            width,
        }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    fn cell(&self, shard: usize, i: usize) -> &AtomicU64 {
        &self.lines[shard * self.lines_per_shard + i / LINE].0[i % LINE]
    }

    /// Adds `v` to counter `i` (out of range: ignored, debug builds assert).
    #[inline]
    pub fn add(&self, i: usize, v: u64) {
        debug_assert!(i < self.width, "counter {i} of {}", self.width);
        if i >= self.width {
            return;
        }
        let shard = THREAD_INDEX.with(|t| *t) & (self.shards - 1);
        self.cell(shard, i).fetch_add(v, Ordering::Relaxed);
    }

    #[inline]
    pub fn inc(&self, i: usize) {
        self.add(i, 1);
    }

    /// Counter `i`, summed over the shards. Monotonic while only [`Striped::add`] writes it.
    pub fn sum(&self, i: usize) -> u64 {
        (0..self.shards).fold(0u64, |acc, s| {
            acc.wrapping_add(self.cell(s, i).load(Ordering::Relaxed))
        })
    }
}

/// A histogram laid out in [`Striped`] cells from `base`: one cell per bucket (not cumulative;
/// the last is `+Inf`), then the sum in nanoseconds.
#[derive(Clone, Copy)]
pub struct Histogram {
    pub base: usize,
    pub bounds: &'static [f64],
}

impl Histogram {
    /// Cells a histogram with `bounds` takes.
    pub const fn cells(bounds: &[f64]) -> usize {
        bounds.len() + 2
    }

    /// Records a duration.
    #[inline]
    pub fn observe(&self, cells: &Striped, d: Duration) {
        let secs = d.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(self.bounds.len());
        cells.inc(self.base + bucket);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        cells.add(self.base + self.bounds.len() + 1, nanos);
    }

    /// Records a count (queries per write, ...); the sum is kept as is.
    #[inline]
    pub fn observe_count(&self, cells: &Striped, n: u64) {
        let bucket = self
            .bounds
            .iter()
            .position(|&b| n as f64 <= b)
            .unwrap_or(self.bounds.len());
        cells.inc(self.base + bucket);
        cells.add(self.base + self.bounds.len() + 1, n);
    }

    /// The buckets and the sum (seconds for durations, the plain sum for counts).
    pub fn snapshot(&self, cells: &Striped, sum_scale: f64) -> HistogramSnapshot {
        let buckets = (0..=self.bounds.len())
            .map(|b| {
                let upper = self.bounds.get(b).copied().unwrap_or(f64::MAX);
                (upper, cells.sum(self.base + b))
            })
            .collect();
        HistogramSnapshot {
            buckets,
            sum: cells.sum(self.base + self.bounds.len() + 1) as f64 * sum_scale,
        }
    }
}

/// Scale of a duration histogram's sum (nanoseconds) to seconds.
pub const NANOS: f64 = 1e-9;

/// A histogram read at one scrape: (upper bound, count) per bucket, not cumulative, the last
/// bound `f64::MAX` (written `+Inf`).
#[derive(Debug, Clone, Default)]
pub struct HistogramSnapshot {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|(_, n)| n).sum()
    }

    /// Adds `other`'s counts (same bounds) to these.
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        if self.buckets.is_empty() {
            self.buckets = other.buckets.clone();
        } else {
            for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
                mine.1 += theirs.1;
            }
        }
        self.sum += other.sum;
    }
}

/// Labels of one series: (name, value) pairs.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// A label value escaped as the exposition formats require (backslash, double quote and line
/// feed as `\\`, `\"` and `\n`). `prometheus-client` 0.24 writes label values verbatim, so a
/// value holding a quote would end the label early (the unit test below shows it).
struct Escaped<'a>(&'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        use std::fmt::Write as _;
        let mut rest = self.0;
        while let Some(i) = rest.find(['\\', '"', '\n']) {
            encoder.write_str(&rest[..i])?;
            encoder.write_str(match rest.as_bytes()[i] {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                _ => "\\n",
            })?;
            rest = &rest[i + 1..];
        }
        encoder.write_str(rest)
    }
}

fn escaped<'a>(labels: Labels<'a>) -> Vec<(&'a str, Escaped<'a>)> {
    labels.iter().map(|&(k, v)| (k, Escaped(v))).collect()
}

/// Something that writes metric families at each scrape (a layer's counters, `/proc`...).
pub trait Source: Send + Sync + 'static {
    fn collect(&self, out: &mut Exposition<'_>);
}

/// The sources of one `/metrics` answer, written in the order they were added.
#[derive(Default)]
pub struct Registry {
    inner: prometheus_client::registry::Registry,
}

impl Registry {
    pub fn add(&mut self, source: impl Source) {
        self.inner
            .register_collector(Box::new(SourceCollector(Box::new(source))));
    }

    /// The exposition text in `format`.
    pub fn render(&self, format: Format) -> String {
        let mut text = String::with_capacity(32 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.inner);
        match format {
            Format::OpenMetrics => text,
            Format::Text => to_classic_text(&text),
        }
    }
}

/// OpenMetrics text as the classic text format 0.0.4: the same samples; a counter family is
/// named with its `_total` (OpenMetrics names the family without it), and `# UNIT` and `# EOF`
/// are left out.
fn to_classic_text(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match descriptor {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

struct SourceCollector(Box<dyn Source>);

impl std::fmt::Debug for SourceCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SourceCollector")
    }
}

impl prometheus_client::collector::Collector for SourceCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut out = Exposition {
            encoder,
            result: Ok(()),
        };
        self.0.collect(&mut out);
        out.result
    }
}

/// Families being written by `prometheus-client`'s encoder.
pub struct Exposition<'a> {
    encoder: DescriptorEncoder<'a>,
    result: std::fmt::Result,
}

impl Exposition<'_> {
    /// A family of counters. `name` without the unit (appended) and without `_total`
    /// (appended to each sample).
    pub fn counters<'l, V: EncodeCounterValue>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        series: impl IntoIterator<Item = (Labels<'l>, V)>,
    ) {
        self.family(name, help, unit, MetricType::Counter, |m| {
            for (labels, v) in series {
                if labels.is_empty() {
                    m.encode_counter::<NoLabelSet, V, u64>(&v, None)?;
                } else {
                    m.encode_family(&escaped(labels))?
                        .encode_counter::<NoLabelSet, V, u64>(&v, None)?;
                }
            }
            Ok(())
        });
    }

    /// A family of gauges.
    pub fn gauges<'l>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        series: impl IntoIterator<Item = (Labels<'l>, f64)>,
    ) {
        self.family(name, help, unit, MetricType::Gauge, |m| {
            for (labels, v) in series {
                if labels.is_empty() {
                    m.encode_gauge(&v)?;
                } else {
                    m.encode_family(&escaped(labels))?.encode_gauge(&v)?;
                }
            }
            Ok(())
        });
    }

    /// A family of histograms.
    pub fn histograms<'l>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        series: impl IntoIterator<Item = (Labels<'l>, HistogramSnapshot)>,
    ) {
        self.family(name, help, unit, MetricType::Histogram, |m| {
            for (labels, h) in series {
                let count = h.count();
                if labels.is_empty() {
                    m.encode_histogram::<NoLabelSet>(h.sum, count, &h.buckets, None)?;
                } else {
                    m.encode_family(&escaped(labels))?
                        .encode_histogram::<NoLabelSet>(h.sum, count, &h.buckets, None)?;
                }
            }
            Ok(())
        });
    }

    fn family(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        kind: MetricType,
        body: impl FnOnce(&mut MetricEncoder<'_>) -> std::fmt::Result,
    ) {
        if self.result.is_err() {
            return;
        }
        self.result = self
            .encoder
            .encode_descriptor(name, help, unit.as_ref(), kind)
            .and_then(|mut m| body(&mut m));
    }
}

/// Standard `process_*` metrics of this process, read from `/proc` at each scrape (Linux;
/// where `/proc` cannot be read the families are left out).
pub mod process {
    use super::{Exposition, Source, Unit};

    pub struct Process;

    impl Source for Process {
        fn collect(&self, out: &mut Exposition<'_>) {
            let Some(p) = read() else { return };
            let none: &[(&str, &str)] = &[];
            out.counters(
                "process_cpu",
                "Total user and system CPU time spent in seconds.",
                Some(Unit::Seconds),
                [(none, p.cpu_seconds)],
            );
            out.gauges(
                "process_resident_memory",
                "Resident memory size in bytes.",
                Some(Unit::Bytes),
                [(none, p.resident_bytes)],
            );
            out.gauges(
                "process_virtual_memory",
                "Virtual memory size in bytes.",
                Some(Unit::Bytes),
                [(none, p.virtual_bytes)],
            );
            out.gauges(
                "process_open_fds",
                "Number of open file descriptors.",
                None,
                [(none, p.open_fds)],
            );
            out.gauges(
                "process_max_fds",
                "Maximum number of open file descriptors.",
                None,
                [(none, p.max_fds)],
            );
            out.gauges(
                "process_start_time",
                "Start time of the process since unix epoch in seconds.",
                Some(Unit::Seconds),
                [(none, p.start_time_seconds)],
            );
        }
    }

    /// What `/proc/self` says of this process.
    #[derive(Debug, Clone, Copy)]
    pub struct Stat {
        pub cpu_seconds: f64,
        pub resident_bytes: f64,
        pub virtual_bytes: f64,
        pub start_time_seconds: f64,
        pub open_fds: f64,
        pub max_fds: f64,
    }

    pub fn read() -> Option<Stat> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) is in parentheses and may hold spaces and parentheses:
        // fields 3 onwards follow the last ')'.
        let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| -> Option<f64> { rest.get(n - 3)?.parse().ok() };
        // SAFETY: sysconf and getrlimit only read process state into the values given.
        let (ticks, page, max_fds) = unsafe {
            let mut limit = std::mem::zeroed::<libc::rlimit>();
            let max_fds = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                limit.rlim_cur as f64
            } else {
                f64::NAN
            };
            (
                libc::sysconf(libc::_SC_CLK_TCK) as f64,
                libc::sysconf(libc::_SC_PAGESIZE) as f64,
                max_fds,
            )
        };
        // The boot time does not change: read once.
        static BOOT: std::sync::OnceLock<Option<f64>> = std::sync::OnceLock::new();
        let boot = (*BOOT.get_or_init(|| {
            std::fs::read_to_string("/proc/stat")
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("btime "))?
                .trim()
                .parse()
                .ok()
        }))?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
        Some(Stat {
            cpu_seconds: (field(14)? + field(15)?) / ticks,
            start_time_seconds: boot + field(22)? / ticks,
            virtual_bytes: field(23)?,
            resident_bytes: field(24)? * page,
            open_fds,
            max_fds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn striped_counters_sum_what_every_thread_added() {
        let cells = std::sync::Arc::new(Striped::new(3, 4));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let cells = cells.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        cells.inc(0);
                        cells.add(2, 3);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(cells.sum(0), 8000);
        assert_eq!(cells.sum(1), 0);
        assert_eq!(cells.sum(2), 24000);
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_in_inf() {
        let h = Histogram {
            base: 1,
            bounds: &[0.001, 0.01],
        };
        let cells = Striped::new(1 + Histogram::cells(h.bounds), 1);
        for ms in [0.5, 1.0, 5.0, 50.0, 50.0] {
            h.observe(&cells, Duration::from_secs_f64(ms / 1000.0));
        }
        let snap = h.snapshot(&cells, NANOS);
        assert_eq!(snap.count(), 5);
        let mut registry = Registry::default();
        struct One(HistogramSnapshot);
        impl Source for One {
            fn collect(&self, out: &mut Exposition<'_>) {
                out.histograms(
                    "t_latency",
                    "Test.",
                    Some(Unit::Seconds),
                    [(&[("route", "/a\"b")][..], self.0.clone())],
                );
            }
        }
        registry.add(One(snap));
        let text = registry.render(Format::OpenMetrics);
        let buckets: Vec<(&str, u64)> = text
            .lines()
            .filter(|l| l.starts_with("t_latency_seconds_bucket"))
            .map(|l| {
                let le = l.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
                (le, l.rsplit(' ').next().unwrap().parse().unwrap())
            })
            .collect();
        assert_eq!(
            buckets,
            [("0.001", 2), ("0.01", 3), ("+Inf", 5)],
            "cumulative, ending in +Inf:\n{text}"
        );
        assert!(
            text.contains("t_latency_seconds_count{route=\"/a\\\"b\"} 5"),
            "{text}"
        );
        let sum: f64 = text
            .lines()
            .find(|l| l.starts_with("t_latency_seconds_sum"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap();
        assert!((sum - 0.1065).abs() < 1e-9, "{sum}");
        assert!(
            text.contains("# TYPE t_latency_seconds histogram"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn counters_get_total_and_units_and_escaped_labels() {
        struct C;
        impl Source for C {
            fn collect(&self, out: &mut Exposition<'_>) {
                out.counters(
                    "t_sent",
                    "Bytes.",
                    Some(Unit::Bytes),
                    [
                        (&[("peer", "a\nb\\")][..], 7u64),
                        (&[("peer", "x")][..], 1u64),
                    ],
                );
            }
        }
        let mut registry = Registry::default();
        registry.add(C);
        let text = registry.render(Format::OpenMetrics);
        assert!(text.contains("# TYPE t_sent_bytes counter"), "{text}");
        assert!(
            text.contains("t_sent_bytes_total{peer=\"a\\nb\\\\\"} 7"),
            "newline and backslash escaped:\n{text}"
        );
        assert!(text.contains("t_sent_bytes_total{peer=\"x\"} 1"), "{text}");
    }

    #[test]
    fn the_classic_text_format_names_counters_with_total() {
        struct C;
        impl Source for C {
            fn collect(&self, out: &mut Exposition<'_>) {
                out.counters(
                    "t_sent",
                    "Bytes sent.",
                    Some(Unit::Bytes),
                    [(&[][..], 7u64)],
                );
                out.gauges("t_open", "Open.", None, [(&[][..], 2.0)]);
            }
        }
        let mut registry = Registry::default();
        registry.add(C);
        assert_eq!(
            registry.render(Format::Text),
            "# HELP t_sent_bytes_total Bytes sent.\n# TYPE t_sent_bytes_total counter\n\
             t_sent_bytes_total 7\n# HELP t_open Open.\n# TYPE t_open gauge\nt_open 2.0\n"
        );
        assert_eq!(Format::negotiate(None), Format::Text);
        let prometheus = b"application/openmetrics-text;version=1.0.0;q=0.5,text/plain;q=0.4";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some(b"text/plain")), Format::Text);
    }

    #[test]
    fn process_values_are_read_from_proc() {
        let p = process::read().expect("/proc/self is readable on Linux");
        assert!(p.resident_bytes > 1e5, "{p:?}");
        assert!(p.open_fds >= 3.0 && p.open_fds <= p.max_fds, "{p:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            p.start_time_seconds <= now + 1.0 && p.start_time_seconds > now - 86_400.0 * 365.0,
            "{p:?}"
        );
    }
}
