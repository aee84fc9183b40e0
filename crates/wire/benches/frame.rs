//! Frame codec and transport benchmarks.
//!
//! `cargo bench -p mast-wire --bench frame`
//! - codec: encode/decode/access of a raft-sized message (64 entries of 256 bytes);
//! - transport: frames from one transport to another over loopback on one monoio runtime;
//! - fragments: a 64 MiB message cut into 4 MiB fragments and reassembled, in memory and
//!   through the transport (default limits: 16 MiB frames, 32 MiB send queue).

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mast_wire::{
    encode_fragments, encode_frame, encode_message, FrameDecoder, FrameKind, PeerTransport,
    Reassembler, TransportConfig,
};
use rkyv::{Archive, Deserialize, Serialize};

#[derive(Archive, Serialize, Deserialize, Clone)]
struct Entry {
    term: u64,
    index: u64,
    data: Vec<u8>,
}

/// Shaped like a raft append: a header and a run of entries.
#[derive(Archive, Serialize, Deserialize, Clone)]
struct Append {
    group: u32,
    from: u64,
    to: u64,
    term: u64,
    log_term: u64,
    index: u64,
    commit: u64,
    entries: Vec<Entry>,
}

fn raft_message(entries: usize, entry_bytes: usize) -> Append {
    Append {
        group: 3,
        from: 1,
        to: 2,
        term: 7,
        log_term: 7,
        index: 1000,
        commit: 990,
        entries: (0..entries)
            .map(|i| Entry {
                term: 7,
                index: 1001 + i as u64,
                data: vec![(i % 251) as u8; entry_bytes],
            })
            .collect(),
    }
}

fn codec(c: &mut Criterion) {
    let msg = raft_message(64, 256);
    let mut encoded = BytesMut::new();
    encode_message(FrameKind::Raft, &msg, &mut encoded).unwrap();
    let frame_len = encoded.len();
    let decoder = FrameDecoder::default();

    let mut g = c.benchmark_group("codec_raft_64x256");
    g.throughput(Throughput::Bytes(frame_len as u64));
    let mut out = BytesMut::with_capacity(frame_len * 2);
    g.bench_function("encode_message", |b| {
        b.iter(|| {
            out.clear();
            encode_message(FrameKind::Raft, black_box(&msg), &mut out).unwrap();
            black_box(out.len())
        })
    });
    // Includes refilling the buffer (one memcpy, as a socket read would).
    let mut inbuf = BytesMut::with_capacity(frame_len);
    g.bench_function("decode_frame", |b| {
        b.iter(|| {
            inbuf.clear();
            inbuf.extend_from_slice(&encoded);
            black_box(decoder.decode(&mut inbuf).unwrap().unwrap())
        })
    });
    let frame = decoder.decode(&mut encoded.clone()).unwrap().unwrap();
    g.bench_function("access_checked", |b| {
        b.iter(|| {
            let archived = frame.access::<Append>().unwrap();
            black_box(archived.entries.len())
        })
    });
    g.bench_function("encode_decode_access", |b| {
        b.iter(|| {
            out.clear();
            encode_message(FrameKind::Raft, black_box(&msg), &mut out).unwrap();
            let frame = decoder.decode(&mut out).unwrap().unwrap();
            let archived = frame.access::<Append>().unwrap();
            black_box(archived.entries.len())
        })
    });
    let raw = vec![0x5au8; frame_len - mast_wire::HEADER_BYTES];
    g.bench_function("encode_frame_raw_bytes", |b| {
        b.iter(|| {
            out.clear();
            encode_frame(FrameKind::Raft, black_box(&raw), &mut out).unwrap();
            black_box(out.len())
        })
    });
    g.finish();
}

fn transport_case(c: &mut Criterion, name: &str, payload_bytes: usize) {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("monoio runtime");
    let (a, b) = rt.block_on(async {
        let any = "127.0.0.1:0".parse().unwrap();
        let a = PeerTransport::new(TransportConfig::new(1, 1, 0, any)).unwrap();
        let b = PeerTransport::new(TransportConfig::new(1, 2, 0, any)).unwrap();
        a.set_peer(2, b.local_addr()).unwrap();
        b.set_peer(1, a.local_addr()).unwrap();
        (a, b)
    });
    let payload = vec![7u8; payload_bytes];
    let burst = 256u64;
    let mut g = c.benchmark_group("transport");
    g.throughput(Throughput::Bytes(
        mast_wire::frame_bytes(payload_bytes) as u64
    ));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function(name, |bench| {
        bench.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                let mut done = 0;
                while done < iters {
                    let n = burst.min(iters - done);
                    for _ in 0..n {
                        a.send(2, FrameKind::Raft, &payload).unwrap();
                    }
                    for _ in 0..n {
                        black_box(b.recv().await.unwrap());
                    }
                    done += n;
                }
                start.elapsed()
            })
        })
    });
    g.finish();
    rt.block_on(async move {
        a.shutdown().await;
        b.shutdown().await;
    });
}

fn transport(c: &mut Criterion) {
    transport_case(c, "frames_128B_burst256", 128);
    transport_case(c, "frames_16KiB_burst256", 16 * 1024);
}

fn fragments(c: &mut Criterion) {
    let payload = vec![7u8; 64 << 20];
    let mut g = c.benchmark_group("fragments_64MiB");
    g.throughput(Throughput::Bytes(payload.len() as u64));
    g.sample_size(10);
    g.bench_function("encode_decode_reassemble", |bench| {
        let decoder = FrameDecoder::default();
        bench.iter(|| {
            let mut wire = BytesMut::new();
            encode_fragments(FrameKind::Raft, 1, &payload, 4 << 20, &mut wire).unwrap();
            let mut r = Reassembler::new(1 << 30);
            let mut done = None;
            while let Some(frame) = decoder.decode(&mut wire).unwrap() {
                done = r.push(frame).unwrap();
            }
            black_box(done.unwrap())
        })
    });
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("monoio runtime");
    let (a, b) = rt.block_on(async {
        let any = "127.0.0.1:0".parse().unwrap();
        let a = PeerTransport::new(TransportConfig::new(1, 1, 0, any)).unwrap();
        let b = PeerTransport::new(TransportConfig::new(1, 2, 0, any)).unwrap();
        a.set_peer(2, b.local_addr()).unwrap();
        b.set_peer(1, a.local_addr()).unwrap();
        (a, b)
    });
    g.bench_function("transport_one_message", |bench| {
        bench.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    a.send(2, FrameKind::Raft, &payload).unwrap();
                    black_box(b.recv().await.unwrap());
                }
                start.elapsed()
            })
        })
    });
    g.finish();
    rt.block_on(async move {
        a.shutdown().await;
        b.shutdown().await;
    });
}

criterion_group!(benches, codec, transport, fragments);
criterion_main!(benches);
