//! One test per kind of damage, each with its expected outcome.

mod common;

use common::*;
use mast_log::{record::record_bytes, Error, HardState, Log, LogOptions, RecoveryMode};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const PAYLOAD_BYTES: usize = 100;
const ENTRIES: u64 = 1200;

/// 1200 entries of 128-byte records in 64 KiB segments: 1..=512, 513..=1024, 1025..=1200.
fn build(dir: &Path) -> LogOptions {
    let opts = small_opts();
    block_on(async {
        let (log, _) = open(dir, opts.clone());
        let es: Vec<_> = (1..=ENTRIES).map(|i| entry(i, 1, PAYLOAD_BYTES)).collect();
        for c in es.chunks(50) {
            log.append(c).unwrap().await.unwrap();
        }
        log.save_hard_state(HardState {
            term: 1,
            vote: 1,
            commit: 1000,
        })
        .unwrap()
        .await
        .unwrap();
        log.save_hard_state(HardState {
            term: 2,
            vote: 3,
            commit: 1100,
        })
        .unwrap()
        .await
        .unwrap();
        log.close().await.unwrap();
    });
    opts
}

fn seg(dir: &Path, first: u64) -> PathBuf {
    dir.join(mast_log::segment_file_name(first))
}

/// Offset of entry `index` inside its segment.
fn offset_of(index: u64, seg_first: u64) -> u64 {
    (index - seg_first) * record_bytes(PAYLOAD_BYTES) as u64
}

fn flip(path: &Path, offset: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, offset).unwrap();
}

fn strict(opts: &LogOptions) -> LogOptions {
    LogOptions {
        recovery: RecoveryMode::Strict,
        ..opts.clone()
    }
}

fn expect_corrupt(r: mast_log::Result<(Log, mast_log::Recovered)>, file: &Path, offset: u64) {
    match r {
        Err(Error::Corrupt {
            file: f,
            offset: o,
            reason,
        }) => {
            assert_eq!((f.as_path(), o), (file, offset), "reason: {reason}");
        }
        Err(e) => panic!("expected Corrupt at {}:{offset}, got {e}", file.display()),
        Ok((_, rec)) => panic!(
            "expected Corrupt at {}:{offset}, opened with {rec:?}",
            file.display()
        ),
    }
}

#[test]
fn truncated_tail_is_cut_in_tolerate_mode_and_refused_in_strict() {
    let dir = tempfile::tempdir().unwrap();
    let opts = build(dir.path());
    let last = seg(dir.path(), 1025);
    let cut_at = offset_of(ENTRIES, 1025);
    // The file ends in the middle of the last record (a write that never completed).
    let f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    f.set_len(cut_at + 30).unwrap();
    drop(f);
    expect_corrupt(Log::open(dir.path(), strict(&opts)), &last, cut_at);
    let (log, rec) = Log::open(dir.path(), opts.clone()).unwrap();
    let t = rec
        .truncated_tail
        .clone()
        .expect("tail truncation reported");
    assert_eq!((t.file.as_path(), t.offset), (last.as_path(), cut_at));
    assert_eq!(rec.last_index, ENTRIES - 1);
    assert_eq!(
        log.entries(ENTRIES - 1, ENTRIES, u64::MAX).unwrap()[0],
        entry(ENTRIES - 1, 1, PAYLOAD_BYTES)
    );
    drop(log);
    // The repair is durable and clean: a second open finds nothing to cut.
    let (_, rec) = Log::open(dir.path(), strict(&opts)).unwrap();
    assert_eq!(rec.last_index, ENTRIES - 1);
}

#[test]
fn flipped_byte_in_tail_record_is_cut_in_tolerate_mode() {
    let dir = tempfile::tempdir().unwrap();
    let opts = build(dir.path());
    let last = seg(dir.path(), 1025);
    let at = offset_of(ENTRIES, 1025);
    flip(&last, at + 60);
    expect_corrupt(Log::open(dir.path(), strict(&opts)), &last, at);
    let (log, rec) = Log::open(dir.path(), opts).unwrap();
    assert_eq!(rec.truncated_tail.as_ref().map(|t| t.offset), Some(at));
    assert_eq!(rec.last_index, ENTRIES - 1);
    // The log goes on from there.
    block_on(async {
        log.append(&[entry(ENTRIES, 2, 10)]).unwrap().await.unwrap();
        log.close().await.unwrap();
    });
}

#[test]
fn flipped_byte_in_middle_of_a_segment_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let opts = build(dir.path());
    let middle = seg(dir.path(), 513);
    let at = offset_of(700, 513);
    flip(&middle, at + 30);
    expect_corrupt(Log::open(dir.path(), opts.clone()), &middle, at);
    expect_corrupt(Log::open(dir.path(), strict(&opts)), &middle, at);
}

#[test]
fn flipped_byte_far_from_the_end_of_last_segment_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    // Small batches so the damage is further from the end than one write batch.
    let opts = build(dir.path());
    let opts = LogOptions {
        batch_bytes_max: 4096,
        ..opts
    };
    let last = seg(dir.path(), 1025);
    let at = offset_of(1030, 1025);
    flip(&last, at + 30);
    expect_corrupt(Log::open(dir.path(), opts), &last, at);
}

#[test]
fn deleted_middle_segment_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let opts = build(dir.path());
    std::fs::remove_file(seg(dir.path(), 513)).unwrap();
    expect_corrupt(Log::open(dir.path(), opts), &seg(dir.path(), 1025), 0);
}

#[test]
fn deleted_first_segment_without_snapshot_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let opts = build(dir.path());
    std::fs::remove_file(seg(dir.path(), 1)).unwrap();
    expect_corrupt(Log::open(dir.path(), opts), &seg(dir.path(), 513), 0);
}

#[test]
fn deleted_last_segment_is_caught_by_the_commit_index() {
    let dir = tempfile::tempdir().unwrap();
    let opts = build(dir.path());
    std::fs::remove_file(seg(dir.path(), 1025)).unwrap();
    match Log::open(dir.path(), opts) {
        Err(Error::Corrupt { file, .. }) => {
            assert_eq!(file, dir.path().join(mast_log::HARD_STATE_FILE))
        }
        other => panic!(
            "expected Corrupt naming the hard state, got {:?}",
            other.map(|x| x.1)
        ),
    }
}

#[test]
fn damaged_hard_state_falls_back_to_the_other_slot_or_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let opts = build(dir.path());
    let hs = dir.path().join(mast_log::HARD_STATE_FILE);
    // Saves went to slot 1 (term 1) then slot 0 (term 2); damage the newest one.
    flip(&hs, 20);
    let (log, rec) = Log::open(dir.path(), opts.clone()).unwrap();
    assert!(rec.hard_state_fell_back);
    assert_eq!(
        rec.hard_state,
        HardState {
            term: 1,
            vote: 1,
            commit: 1000
        }
    );
    drop(log);
    // Both slots damaged: nothing trustworthy is left, refuse.
    flip(&hs, 4096 + 20);
    expect_corrupt(Log::open(dir.path(), opts), &hs, 0);
}

#[test]
fn damaged_newest_snapshot_falls_back_to_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let opts = build(dir.path());
    block_on(async {
        let (log, _) = Log::open(dir.path(), opts.clone()).unwrap();
        for idx in [100u64, 200] {
            let meta = mast_log::SnapshotMeta {
                index: idx,
                term: 1,
                extra: vec![],
            };
            log.save_snapshot(meta, bytes::Bytes::from(vec![idx as u8; 1000]))
                .await
                .unwrap();
        }
        log.close().await.unwrap();
    });
    flip(&dir.path().join(format!("{:020}.snap", 200)), 500);
    let (log, rec) = Log::open(dir.path(), opts).unwrap();
    assert_eq!(rec.snapshot.map(|m| m.index), Some(100));
    let (meta, data) = log.load_latest_snapshot().unwrap().unwrap();
    assert_eq!((meta.index, data), (100, vec![100u8; 1000]));
}

#[test]
fn recovery_modes_parse_by_name() {
    assert_eq!(
        "tolerate-tail".parse::<RecoveryMode>().unwrap(),
        RecoveryMode::TolerateTail
    );
    assert_eq!(
        "strict".parse::<RecoveryMode>().unwrap(),
        RecoveryMode::Strict
    );
    assert!("lenient".parse::<RecoveryMode>().is_err());
    assert_eq!(RecoveryMode::default(), RecoveryMode::TolerateTail);
}
