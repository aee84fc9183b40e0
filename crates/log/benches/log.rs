//! Criterion benches of the log.
//!
//! - `append/{buffered,direct}/{128B,4KiB}/batch-N`: one `append` of N entries awaited to
//!   durability (one write + one fdatasync), N in 1, 8, 64, 512.
//! - `decode/{128B,4KiB}`: decoding one record.
//! - `recovery/scan`: `Log::open` over a log of `LOG_BENCH_RECOVERY_BYTES` (default 1 GiB),
//!   reported as bytes/s.
//!
//! `LOG_BENCH_DIR` picks the directory (default: the system temp dir); it must be on the
//! disk you want to measure (tmpfs makes fdatasync free).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mast_log::record::{decode_record, encode_record, Decoded};
use mast_log::{EntryRecord, Log, LogOptions};

fn bench_dir() -> PathBuf {
    std::env::var("LOG_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir())
}

fn runtime() -> monoio::FusionRuntime<
    monoio::time::TimeDriver<monoio::IoUringDriver>,
    monoio::time::TimeDriver<monoio::LegacyDriver>,
> {
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("monoio runtime")
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(2));
    for direct in [false, true] {
        for entry_bytes in [128usize, 4096] {
            for batch in [1usize, 8, 64, 512] {
                let mode = if direct { "direct" } else { "buffered" };
                let size = if entry_bytes == 128 { "128B" } else { "4KiB" };
                let dir = tempfile::tempdir_in(bench_dir()).expect("temp dir");
                let opts = LogOptions {
                    direct_io: direct,
                    ..LogOptions::default()
                };
                let (log, _) = match Log::open(dir.path(), opts) {
                    Ok(x) => x,
                    Err(e) => {
                        eprintln!("skipping append/{mode}: {e}");
                        continue;
                    }
                };
                let mut rt = runtime();
                let payload = Bytes::from(vec![0xabu8; entry_bytes]);
                group.throughput(Throughput::Elements(batch as u64));
                group.bench_function(
                    BenchmarkId::new(format!("{mode}/{size}"), format!("batch-{batch}")),
                    |b| {
                        b.iter_custom(|iters| {
                            rt.block_on(async {
                                let start = Instant::now();
                                for _ in 0..iters {
                                    let first = log.last_index() + 1;
                                    let es: Vec<_> = (first..first + batch as u64)
                                        .map(|i| EntryRecord {
                                            index: i,
                                            term: 1,
                                            payload: payload.clone(),
                                        })
                                        .collect();
                                    log.append(&es).expect("append").await.expect("durable");
                                }
                                start.elapsed()
                            })
                        })
                    },
                );
                rt.block_on(async move { log.close().await.expect("close") });
            }
        }
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (name, len) in [("128B", 128usize), ("4KiB", 4096)] {
        let mut buf = Vec::new();
        encode_record(&mut buf, 12345, 7, &vec![0x11u8; len]);
        group.throughput(Throughput::Bytes(buf.len() as u64));
        group.bench_function(name, |b| {
            b.iter(
                || match decode_record(std::hint::black_box(&buf), 1 << 20) {
                    Ok(Decoded::Record(v, n)) => (v.index, n),
                    _ => unreachable!("valid record"),
                },
            )
        });
    }
    group.finish();
}

fn recovery(c: &mut Criterion) {
    let bytes: u64 = std::env::var("LOG_BENCH_RECOVERY_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let dir = tempfile::tempdir_in(bench_dir()).expect("temp dir");
    let opts = LogOptions::default();
    let mut rt = runtime();
    {
        let (log, _) = Log::open(dir.path(), opts.clone()).expect("open");
        let payload = Bytes::from(vec![0x42u8; 4096 - 24]);
        let entries = bytes / 4096;
        rt.block_on(async {
            let mut next = 1u64;
            while next <= entries {
                let n = (entries + 1 - next).min(256);
                let es: Vec<_> = (next..next + n)
                    .map(|i| EntryRecord {
                        index: i,
                        term: 1,
                        payload: payload.clone(),
                    })
                    .collect();
                log.append(&es).expect("append").await.expect("durable");
                next += n;
            }
            log.close().await.expect("close");
        });
    }
    let (_, rec) = Log::open(dir.path(), opts.clone()).expect("reopen");
    let scanned = rec.scanned_bytes;
    let mut group = c.benchmark_group("recovery");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Bytes(scanned));
    group.bench_function(format!("scan-{}MiB", bytes >> 20), |b| {
        b.iter(|| {
            let (log, rec) = Log::open(dir.path(), opts.clone()).expect("reopen");
            assert_eq!(rec.scanned_bytes, scanned);
            drop(log);
        })
    });
    group.finish();
}

criterion_group!(benches, append, decode, recovery);
criterion_main!(benches);
