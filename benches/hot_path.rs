//! Micro-benchmarks of the request hot path: parsing a request head, decoding a row, encoding
//! a record as JSON, and the whole round trip from request bytes to response bytes without a
//! socket or PostgreSQL. `cargo bench --bench hot_path` (criterion); each group reports time
//! per operation, to compare before and after a change on the same machine.

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use postgres_protocol::message::backend::Message;
use records_service::http::{answer_in_memory, parse_head, Limits, Request, Response, Service};
use records_service::pg::Row;

const REQUEST: &[u8] = b"GET /user/4815162 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: oha/1.16.0\r\nAccept: */*\r\nAccept-Encoding: gzip, br\r\n\r\n";

fn parse_request(c: &mut Criterion) {
    let limits = Limits::default();
    let mut headers = vec![std::mem::MaybeUninit::uninit(); limits.max_headers];
    c.bench_function("parse_head (GET /user/{id}, 4 headers)", |b| {
        b.iter(|| {
            let head = parse_head(black_box(REQUEST), &mut headers, &limits).unwrap();
            black_box((head.info.len, head.target));
        })
    });
}

/// A DataRow message for (4815162, 'user4815162@example.com', 'The quick fox reads 162 rows.').
fn data_row() -> Row {
    let fields: [&[u8]; 3] = [
        &4815162i32.to_be_bytes(),
        b"user4815162@example.com",
        b"The quick fox reads 162 rows.",
    ];
    let mut body = Vec::new();
    body.extend_from_slice(&(fields.len() as u16).to_be_bytes());
    for f in fields {
        body.extend_from_slice(&(f.len() as i32).to_be_bytes());
        body.extend_from_slice(f);
    }
    let mut msg = BytesMut::new();
    msg.extend_from_slice(b"D");
    msg.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    msg.extend_from_slice(&body);
    match Message::parse(&mut msg).unwrap().unwrap() {
        Message::DataRow(body) => Row::from_body(body),
        _ => unreachable!(),
    }
}

fn decode_row(c: &mut Criterion) {
    let row = data_row();
    c.bench_function("decode row (int4, text, text)", |b| {
        b.iter(|| {
            let r = black_box(&row);
            black_box((r.int4(0).unwrap(), r.text(1).unwrap(), r.text(2).unwrap()));
        })
    });
}

#[derive(serde::Serialize)]
struct RecordJson<'a> {
    id: i32,
    email: &'a str,
    text: Option<&'a str>,
}

fn encode_json(c: &mut Criterion) {
    let row = data_row();
    let mut out = Vec::with_capacity(256);
    c.bench_function("encode record JSON (sonic-rs, from the row)", |b| {
        b.iter(|| {
            out.clear();
            let record = RecordJson {
                id: row.int4(0).unwrap().unwrap(),
                email: row.text(1).unwrap().unwrap(),
                text: row.text(2).unwrap(),
            };
            sonic_rs::to_writer(&mut out, black_box(&record)).unwrap();
            black_box(out.len());
        })
    });
}

/// `GET /user/{id}` as the records service answers it once the row is back, the row being a
/// decoded DataRow held in memory: the id parsed from the path, the record encoded as JSON
/// straight into the body.
struct UserFromRow(Row);

impl Service for UserFromRow {
    fn call(&self, req: &Request<'_>, res: &mut Response<'_>) {
        let id: i32 = req
            .path()
            .strip_prefix("/user/")
            .and_then(|id| id.parse().ok())
            .unwrap_or(0);
        let row = &self.0;
        let record = RecordJson {
            id: row.int4(0).unwrap().unwrap_or(id),
            email: row.text(1).unwrap().unwrap(),
            text: row.text(2).unwrap(),
        };
        res.content_type("application/json");
        sonic_rs::to_writer(res.body_mut(), &record).unwrap();
    }
}

/// Times one request through `answer_in_memory`: request bytes in, response bytes out.
fn bench_round_trip(c: &mut Criterion, name: &str, service: &impl Service, request: &[u8]) {
    let limits = Limits::default();
    let mut headers = vec![std::mem::MaybeUninit::uninit(); limits.max_headers];
    let (mut out, mut scratch) = (Vec::with_capacity(1024), Vec::with_capacity(1024));
    c.bench_function(name, |b| {
        b.iter(|| {
            out.clear();
            let used = answer_in_memory(
                service,
                black_box(request),
                &mut headers,
                &limits,
                &mut out,
                &mut scratch,
            )
            .unwrap();
            black_box((used, out.len()));
        })
    });
}

/// The HTTP core's whole per-request path (parse, request id, the handler under its unwind
/// guard, the response with Date and X-Request-Id) around the record's JSON: what a request
/// costs the server in user space, the network and PostgreSQL aside.
fn round_trip(c: &mut Criterion) {
    bench_round_trip(
        c,
        "round trip: request bytes to response bytes (GET /user/{id})",
        &UserFromRow(data_row()),
        REQUEST,
    );
}

/// `examples/hello_core.rs`'s service: a fixed body, so only the core's work is left.
struct Hello;

impl Service for Hello {
    fn call(&self, req: &Request<'_>, res: &mut Response<'_>) {
        if req.path() == "/json" {
            res.content_type("application/json");
            res.body_mut()
                .extend_from_slice(br#"{"message":"Hello, World!"}"#);
        }
    }
}

/// The request `make bench-http` sends (wrk's default headers).
const HELLO_REQUEST: &[u8] = b"GET /json HTTP/1.1\r\nHost: 127.0.0.1:8101\r\n\r\n";

/// The core alone, as `make bench-http` measures it against may_minihttp: a request to
/// `hello_core`'s fixed answer, from request bytes to response bytes.
fn round_trip_core(c: &mut Criterion) {
    bench_round_trip(
        c,
        "round trip, core only: GET /json (hello_core)",
        &Hello,
        HELLO_REQUEST,
    );
}

criterion_group!(
    benches,
    parse_request,
    decode_row,
    encode_json,
    round_trip,
    round_trip_core
);
criterion_main!(benches);
