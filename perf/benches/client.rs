//! The client's per-request CPU work outside the kernel: rendering a request and parsing a
//! response. Every nanosecond here is load the harness cannot put on the server.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use mast_load::api::{EtcdApi, KvApi, MastApi};
use mast_load::http::{parse_response, RequestTemplate, TemplateVars};

fn parse(c: &mut Criterion) {
    let small = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 23 Nov 2026 10:56:30 GMT\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n";
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n{\"header\":{\"revision\":\"12\"},\"kvs\":[{\"key\":\"aw==\",\"mod_revision\":\"1\"}]}\r\n0\r\n\r\n";
    let mut g = c.benchmark_group("parse_response");
    g.throughput(Throughput::Elements(1));
    g.bench_function("content_length", |b| {
        b.iter(|| parse_response(black_box(small), 1 << 20))
    });
    g.bench_function("chunked", |b| {
        b.iter(|| parse_response(black_box(chunked), 1 << 20))
    });
    g.finish();
}

fn render(c: &mut Criterion) {
    let mut g = c.benchmark_group("render_request");
    g.throughput(Throughput::Elements(1));
    let template = RequestTemplate::new("GET", "/healthz", &[], None).unwrap();
    let vars = TemplateVars {
        host: "127.0.0.1:17010",
        key: b"k123456",
        value: &[b'v'; 64],
        seq: 42,
        conn: 3,
    };
    let (mut out, mut scratch) = (Vec::with_capacity(512), Vec::with_capacity(512));
    g.bench_function("template_get", |b| {
        b.iter(|| {
            out.clear();
            template.render(black_box(&vars), &mut out, &mut scratch);
        })
    });
    g.bench_function("mast_put_64b", |b| {
        b.iter(|| {
            out.clear();
            MastApi.put(vars.host, black_box(vars.key), vars.value, None, &mut out);
        })
    });
    g.bench_function("etcd_put_64b", |b| {
        b.iter(|| {
            out.clear();
            EtcdApi.put(vars.host, black_box(vars.key), vars.value, None, &mut out);
        })
    });
    g.finish();
}

criterion_group!(benches, parse, render);
criterion_main!(benches);
