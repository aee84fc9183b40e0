//! Property test: random sequences of append, truncate, compact, snapshot, hard-state saves
//! and restarts, checked against a plain in-memory model after every step.

mod common;

use common::*;
use mast_log::{EntryRecord, HardState, Log, LogOptions, SnapshotMeta};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Append `count` entries of `len` bytes, bumping the term first if `new_term`.
    Append {
        count: u8,
        len: u16,
        new_term: bool,
        concurrent: bool,
    },
    /// Truncate the last `back` entries (clamped to what is above the first index).
    Truncate {
        back: u8,
    },
    /// Snapshot at a fraction of the log and compact to it.
    SnapshotCompact {
        permille: u16,
    },
    HardState {
        vote: u8,
    },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..40, 0u16..700, any::<bool>(), any::<bool>())
            .prop_map(|(count, len, new_term, concurrent)| Op::Append { count, len, new_term, concurrent }),
        2 => (1u8..60).prop_map(|back| Op::Truncate { back }),
        1 => (0u16..1000).prop_map(|permille| Op::SnapshotCompact { permille }),
        1 => any::<u8>().prop_map(|vote| Op::HardState { vote }),
        2 => Just(Op::Restart),
    ]
}

struct Model {
    /// entries[i] has index i + 1 (the full history; compaction does not change them).
    entries: Vec<EntryRecord>,
    first: u64,
    term: u64,
    hs: HardState,
}

fn check(log: &Log, m: &Model) {
    assert_eq!(log.last_index(), m.entries.len() as u64);
    assert!(
        log.first_index() <= m.first,
        "first {} > model {}",
        log.first_index(),
        m.first
    );
    let lo = log.first_index();
    let got = if lo <= log.last_index() {
        log.entries(lo, log.last_index() + 1, u64::MAX).unwrap()
    } else {
        Vec::new()
    };
    assert_eq!(got.as_slice(), &m.entries[(lo - 1) as usize..]);
    for e in got.iter().rev().take(5) {
        assert_eq!(log.term(e.index).unwrap(), Some(e.term));
    }
}

fn run(ops: Vec<Op>, direct_io: bool, write_through: bool) {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        segment_bytes: 64 << 10,
        batch_bytes_max: 8 << 10,
        tail_cache_bytes_max: 2 << 10,
        retained_tail_entries: 3,
        direct_io,
        write_through,
        ..LogOptions::default()
    };
    block_on(async {
        let (mut log, _) = Log::open(dir.path(), opts.clone()).unwrap();
        let mut m = Model {
            entries: Vec::new(),
            first: 1,
            term: 1,
            hs: HardState::default(),
        };
        for op in ops {
            match op {
                Op::Append {
                    count,
                    len,
                    new_term,
                    concurrent,
                } => {
                    if new_term {
                        m.term += 1;
                    }
                    let start = m.entries.len() as u64 + 1;
                    let es: Vec<_> = (start..start + count as u64)
                        .map(|i| entry(i, m.term, len as usize))
                        .collect();
                    if concurrent {
                        // One append per entry, all in flight at once.
                        let ds: Vec<_> = es
                            .iter()
                            .map(|e| log.append(std::slice::from_ref(e)).unwrap())
                            .collect();
                        for d in ds {
                            d.await.unwrap();
                        }
                    } else {
                        log.append(&es).unwrap().await.unwrap();
                    }
                    m.entries.extend(es);
                }
                Op::Truncate { back } => {
                    let last = m.entries.len() as u64;
                    // Raft never truncates committed entries.
                    let from = last
                        .saturating_sub(back as u64)
                        .max(m.first)
                        .max(m.hs.commit)
                        // Nor entries a snapshot covers (they are applied, so committed).
                        .max(log.snapshot_index())
                        + 1;
                    if from <= last {
                        log.truncate_suffix(from).unwrap().await.unwrap();
                        m.entries.truncate(from as usize - 1);
                        // A follower replacing entries takes the new leader's higher term.
                        m.term += 1;
                    }
                }
                Op::SnapshotCompact { permille } => {
                    let last = m.entries.len() as u64;
                    if last >= m.first {
                        let idx = m.first + (last - m.first) * permille as u64 / 1000;
                        let term = m.entries[idx as usize - 1].term;
                        log.save_snapshot(
                            SnapshotMeta {
                                index: idx,
                                term,
                                extra: vec![],
                            },
                            bytes::Bytes::from(vec![1u8; 10]),
                        )
                        .await
                        .unwrap();
                        log.compact(idx).unwrap();
                        m.first = m.first.max(idx.saturating_sub(3) + 1);
                        assert_eq!(log.first_index(), m.first);
                        if m.first >= 2 {
                            assert_eq!(
                                log.term(m.first - 1).unwrap(),
                                Some(m.entries[m.first as usize - 2].term)
                            );
                        }
                    }
                }
                Op::HardState { vote } => {
                    m.hs = HardState {
                        term: m.term,
                        vote: vote as u64,
                        commit: m.entries.len() as u64 / 2,
                    };
                    log.save_hard_state(m.hs).unwrap().await.unwrap();
                }
                Op::Restart => {
                    log.close().await.unwrap();
                    let (l, rec) = Log::open(dir.path(), opts.clone()).unwrap();
                    assert!(rec.truncated_tail.is_none(), "{:?}", rec.truncated_tail);
                    assert_eq!(rec.hard_state, m.hs);
                    log = l;
                    // Recovery exposes whole segments, so it may start below the compaction point.
                    assert!(log.first_index() <= m.first);
                    m.first = log.first_index();
                }
            }
            check(&log, &m);
        }
        log.close().await.unwrap();
    });
}

fn cases() -> u32 {
    std::env::var("LOG_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops, false, false);
    }

    /// O_DSYNC segments: each batch is one write that is durable when it returns.
    #[test]
    fn write_through_log_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops, false, true);
    }

    /// Same with O_DIRECT: block-aligned batches, padding records, truncation that has to
    /// continue in a new segment.
    #[test]
    fn direct_io_log_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops, true, false);
    }

    /// O_DIRECT | O_DSYNC, mast's default where the filesystem allows it.
    #[test]
    fn direct_write_through_log_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops, true, true);
    }
}
