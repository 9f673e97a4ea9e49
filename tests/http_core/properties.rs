//! Property: the same bytes, split anyhow, give the same answers, and smuggled requests in
//! them never reach the handler.

use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;

use crate::support::{without_dates, TestServer};

fn prop_server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(TestServer::default_config)
}

/// A valid pipelined stream ending with `Connection: close`, and invalid streams: a valid
/// request, then one that must be refused, then one that must never be answered.
const STREAMS: &[&[u8]] = &[
    b"GET /p1?a=1 HTTP/1.1\r\nHost: a\r\n\r\n\
      POST /p2 HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world\
      POST /p3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n0\r\nT: 1\r\n\r\n\
      HEAD /p4 HTTP/1.1\r\nHost: a\r\n\r\n\
      POST /ignore-body HTTP/1.1\r\nHost: a\r\nContent-Length: 33\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n\
      GET /p5 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n\
      POST /bad HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
      GET /never HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n\
      POST /bad HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n\
      GET /never HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n\x16\x03\x01\x00\xa5garbage\r\n\r\n\
      GET /never HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n\
      GET /bad HTTP/1.1\r\nHost: a\r\nX-Fold: a\r\n b\r\n\r\n\
      GET /never HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n\
      POST /bad HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd\
      GET /never HTTP/1.1\r\nHost: a\r\n\r\n",
];

/// Sends `stream` cut at `cuts` (one write per piece) and returns everything answered until
/// the server closed, Dates blanked.
fn exchange(stream: &[u8], cuts: &[usize]) -> String {
    let mut c = prop_server().client();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        if cut <= start {
            continue;
        }
        if c.try_send(&stream[start..cut]).is_err() {
            break;
        }
        start = cut;
        // Pacing (input), so the pieces tend to arrive in separate reads.
        std::thread::sleep(Duration::from_micros(300));
    }
    without_dates(&c.read_to_close())
}

/// The answers to each stream sent in one write, checked once by hand.
fn reference(i: usize) -> &'static str {
    static REFS: OnceLock<Vec<String>> = OnceLock::new();
    &REFS.get_or_init(|| {
        let refs: Vec<String> = STREAMS.iter().map(|s| exchange(s, &[])).collect();
        let statuses = |text: &str| -> Vec<String> {
            text.match_indices("HTTP/1.1 ")
                .map(|(at, _)| text[at + 9..at + 12].to_string())
                .collect()
        };
        assert_eq!(statuses(&refs[0]), ["200"; 6], "{}", refs[0]);
        assert!(refs[0].contains("\"body\":\"hello world\""));
        assert!(refs[0].contains("\"body\":\"abc\""));
        for r in &refs[1..] {
            assert_eq!(statuses(r), ["200", "400"], "{r}");
            assert!(r.trim_end().ends_with('}'), "{r}");
        }
        refs
    })[i]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_split_of_a_stream_gets_the_same_answers(
        which in 0..STREAMS.len(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let stream = STREAMS[which];
        let mut cuts: Vec<usize> = cuts.iter().map(|ix| ix.index(stream.len())).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let got = exchange(stream, &cuts);
        prop_assert_eq!(got.as_str(), reference(which), "stream {} cut at {:?}", which, cuts);
    }
}

#[test]
fn smuggled_requests_in_the_property_streams_never_reach_the_handler() {
    for i in 0..STREAMS.len() {
        reference(i);
    }
    let seen = prop_server().seen();
    assert!(
        !seen
            .iter()
            .any(|p| p == "/smuggled" || p == "/never" || p == "/bad"),
        "{seen:?}"
    );
}
