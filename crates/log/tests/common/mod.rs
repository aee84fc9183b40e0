#![allow(dead_code)]

use bytes::Bytes;
use mast_log::{EntryRecord, Log, LogOptions};
use std::path::Path;

/// Runs `f` on a fresh monoio runtime (io_uring, epoll fallback), as a shard would.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("monoio runtime")
        .block_on(f)
}

/// Payload fully determined by (index, term, len) so readers can check bytes.
pub fn payload(index: u64, term: u64, len: usize) -> Bytes {
    let mut x =
        index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ term.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    let mut v = Vec::with_capacity(len);
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    Bytes::from(v)
}

pub fn entry(index: u64, term: u64, len: usize) -> EntryRecord {
    EntryRecord {
        index,
        term,
        payload: payload(index, term, len),
    }
}

pub fn small_opts() -> LogOptions {
    LogOptions {
        segment_bytes: 64 << 10,
        batch_bytes_max: 16 << 10,
        tail_cache_bytes_max: 4 << 10,
        retained_tail_entries: 0,
        ..LogOptions::default()
    }
}

pub fn open(dir: &Path, opts: LogOptions) -> (Log, mast_log::Recovered) {
    Log::open(dir, opts).expect("open log")
}

pub fn all_entries(log: &Log) -> Vec<EntryRecord> {
    let (lo, hi) = (log.first_index(), log.last_index() + 1);
    let mut out = Vec::new();
    let mut next = lo;
    while next < hi {
        let got = log.entries(next, hi, 1 << 20).expect("read entries");
        assert!(!got.is_empty());
        next = got.last().unwrap().index + 1;
        out.extend(got);
    }
    out
}
