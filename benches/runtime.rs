//! Hot paths of the server package: a cross-shard call round trip, an HTTP request round
//! trip through one shard, and the KV state machine's apply and entry decoding.
//!
//! `cargo bench --bench runtime`

use std::io::{Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use mast::meta::kv::{Command, Cond, KvState};
use mast::meta::MetaCommand;
use mast::node::runtime::{run_on_runtime, Mesh};
use mast::replica::Envelope;
use mast_http::{HttpMetrics, Limits, Method, Request, Response, Router, ShutdownSignal};

struct Ctx;

fn xshard(c: &mut Criterion) {
    let mesh = Mesh::<Ctx>::new(2, 1024);
    let worker = {
        let mesh = mesh.clone();
        std::thread::spawn(move || {
            run_on_runtime(|_| async move { mesh.serve_jobs(1, Rc::new(Ctx)).await }).unwrap();
        })
    };
    c.bench_function("xshard/submit_to round trip", |b| {
        b.iter_custom(|iters| {
            let mesh = mesh.clone();
            run_on_runtime(|_| async move {
                let start = Instant::now();
                for i in 0..iters {
                    let r = mesh
                        .submit_to(1, move |_c: Rc<Ctx>| async move { i + 1 })
                        .await;
                    assert_eq!(r, Ok(i + 1));
                }
                start.elapsed()
            })
            .unwrap()
        })
    });
    mesh.stop_all_blocking();
    worker.join().unwrap();
}

fn http_round_trip(c: &mut Criterion) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = ShutdownSignal::new();
    let server = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || {
            run_on_runtime(|_| async move {
                let listener = monoio::net::TcpListener::from_std(listener).unwrap();
                let router = Router::new().route(Method::GET, "/healthz", |_r: Request| async {
                    Response::text(200, "ok\n")
                });
                mast_http::serve(
                    listener,
                    Rc::new(router),
                    Limits::default(),
                    Rc::new(HttpMetrics::new()),
                    shutdown,
                )
                .await;
            })
            .unwrap();
        })
    };
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_nodelay(true).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nhost: bench\r\n\r\n";
    let mut buf = [0u8; 512];
    c.bench_function("http/GET /healthz round trip (keep-alive)", |b| {
        b.iter(|| {
            conn.write_all(request).unwrap();
            // The response is small and arrives in one segment on loopback; read until the
            // body's last byte.
            let mut got = 0;
            while !buf[..got].ends_with(b"ok\n") {
                let n = conn.read(&mut buf[got..]).unwrap();
                assert!(n > 0, "server closed the connection");
                got += n;
            }
        })
    });
    drop(conn);
    shutdown.trigger();
    server.join().unwrap();
}

fn kv(c: &mut Criterion) {
    let value = vec![7u8; 256];
    let mut state = KvState::new();
    for i in 0..10_000u64 {
        state.apply(
            i + 1,
            &Command::Put {
                key: format!("key-{i}"),
                value: value.clone(),
                cond: Cond::Always,
            },
        );
    }
    let keys: Vec<String> = (0..10_000).map(|i| format!("key-{i}")).collect();
    let mut index = 10_000u64;
    c.bench_function(
        "kv/apply put (256 B value, overwrite among 10k keys)",
        |b| {
            b.iter(|| {
                index += 1;
                let key = keys[(index % 10_000) as usize].clone();
                state.apply(
                    index,
                    &Command::Put {
                        key,
                        value: value.clone(),
                        cond: Cond::Always,
                    },
                )
            })
        },
    );
    let entry = Envelope {
        proposer: 1,
        boot: 7,
        request_id: 42,
    }
    .encode(
        &MetaCommand::Kv(Command::Put {
            key: "some/key".into(),
            value: value.clone(),
            cond: Cond::RevisionIs(9),
        })
        .encode(),
    );
    c.bench_function("kv/decode a 256 B put entry (validated)", |b| {
        b.iter(|| {
            let (_, cmd) = Envelope::decode(&entry).unwrap();
            MetaCommand::decode(cmd).unwrap()
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = xshard, http_round_trip, kv
}
criterion_main!(benches);
