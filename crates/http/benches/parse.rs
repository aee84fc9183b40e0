//! Hot-path benchmarks: decoding request heads and encoding responses.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use mast_http::bytes::BytesMut;
use mast_http::{encode_response, ConnectionHeader, Decoded, Limits, RequestDecoder, Response};

const HEALTHZ: &[u8] =
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n";

const BROWSERISH: &[u8] = b"GET /api/v1/collections/db1/coll-42/partitions?limit=100&offset=0 HTTP/1.1\r\n\
Host: mast.example.internal:17010\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\n\
Accept: application/json, text/plain, */*\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl\r\n\
Cache-Control: no-cache\r\n\
Connection: keep-alive\r\n\
X-Request-Id: 5f1c1b52-8a0e-4c1e-9d55-2b7f0f3b8e11\r\n\r\n";

fn decode_one(decoder: &mut RequestDecoder, buf: &mut BytesMut) {
    match decoder.decode(buf) {
        Decoded::Request(r) => {
            black_box(r);
        }
        other => panic!("bench input did not decode: {other:?}"),
    }
}

fn bench_decode(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("decode_head");
    for (name, input) in [("healthz", HEALTHZ), ("browserish", BROWSERISH)] {
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function(name, |b| {
            let mut decoder = RequestDecoder::new(&limits);
            let mut buf = BytesMut::with_capacity(64 * 1024);
            b.iter(|| {
                buf.extend_from_slice(input);
                decode_one(&mut decoder, &mut buf);
            })
        });
    }
    // 32 pipelined heads decoded from one buffer, as after one large read.
    g.throughput(Throughput::Elements(32));
    g.bench_function("healthz_pipelined_x32", |b| {
        let mut decoder = RequestDecoder::new(&limits);
        let batch: Vec<u8> = HEALTHZ.repeat(32);
        b.iter_batched_ref(
            || BytesMut::from(&batch[..]),
            |buf| {
                for _ in 0..32 {
                    decode_one(&mut decoder, buf);
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut out = BytesMut::with_capacity(64 * 1024);
    c.bench_function("encode_response/text_ok", |b| {
        b.iter(|| {
            out.clear();
            let resp = Response::text(200, "ok");
            encode_response(
                &mut out,
                black_box(&resp),
                false,
                ConnectionHeader::KeepAlive,
            );
        })
    });
    c.bench_function("encode_response/json_error", |b| {
        b.iter(|| {
            out.clear();
            let resp = Response::error(404, "not_found", "no route for this path");
            encode_response(
                &mut out,
                black_box(&resp),
                false,
                ConnectionHeader::KeepAlive,
            );
        })
    });
}

criterion_group!(benches, bench_decode, bench_encode);
criterion_main!(benches);
