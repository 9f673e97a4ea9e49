//! Micro-benchmarks of the request hot path: parsing a request head, decoding a row, encoding
//! a record as JSON. `cargo bench --bench hot_path` (criterion); each group reports time per
//! operation, to compare before and after a change on the same machine.

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use postgres_protocol::message::backend::Message;
use records_service::http::{parse_head, Limits};
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

criterion_group!(benches, parse_request, decode_row, encode_json);
criterion_main!(benches);
