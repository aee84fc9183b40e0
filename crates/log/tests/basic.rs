mod common;

use common::*;
use mast_log::{Error, HardState, Log, LogOptions, SnapshotMeta};

#[test]
fn append_read_reopen_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts();
    let expected: Vec<_> = (1..=600u64)
        .map(|i| entry(i, 1 + i / 100, (i % 300) as usize))
        .collect();
    block_on(async {
        let (log, rec) = open(dir.path(), opts.clone());
        assert_eq!((rec.first_index, rec.last_index), (1, 0));
        for chunk in expected.chunks(7) {
            log.append(chunk).unwrap().await.unwrap();
        }
        assert_eq!(log.durable_index(), 600);
        assert_eq!(all_entries(&log), expected);
        assert_eq!(log.term(0).unwrap(), Some(0));
        assert_eq!(log.term(250).unwrap(), Some(3));
        assert_eq!(log.term(601).unwrap(), None);
        log.close().await.unwrap();
    });
    let segs = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".seg")
        })
        .count();
    assert!(segs > 1, "expected several segments, got {segs}");
    let (log, rec) = open(dir.path(), opts);
    assert_eq!(
        (rec.first_index, rec.last_index, rec.segments),
        (1, 600, segs)
    );
    assert!(rec.truncated_tail.is_none());
    assert_eq!(all_entries(&log), expected);
    assert_eq!(log.term(599).unwrap(), Some(6));
}

#[test]
fn byte_budget_limits_reads_but_returns_at_least_one() {
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let (log, _) = open(dir.path(), small_opts());
        let es: Vec<_> = (1..=50u64).map(|i| entry(i, 1, 100)).collect();
        log.append(&es).unwrap().await.unwrap();
        // Cold path (tail cache is 4 KiB, so early entries come from the file).
        assert_eq!(log.entries(1, 51, 250).unwrap().len(), 2);
        assert_eq!(log.entries(1, 51, 0).unwrap().len(), 1);
        assert_eq!(log.entries(48, 51, 250).unwrap().len(), 2);
        assert_eq!(log.entries(5, 5, 250).unwrap().len(), 0);
        assert!(matches!(
            log.entries(1, 52, 10),
            Err(Error::Unavailable { .. })
        ));
        assert!(matches!(
            log.entries(0, 3, 10),
            Err(Error::Compacted { .. })
        ));
    });
}

#[test]
fn concurrent_appenders_are_group_committed() {
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let (log, _) = open(dir.path(), LogOptions::default());
        let log = std::rc::Rc::new(log);
        let mut handles = Vec::new();
        for i in 1..=200u64 {
            let d = log.append(&[entry(i, 1, 256)]).unwrap();
            handles.push(monoio::spawn(d));
        }
        for h in handles {
            h.await.unwrap();
        }
        let st = log.stats();
        assert_eq!(st.entries, 200);
        assert!(st.batches < 200, "no coalescing: {st:?}");
        assert!(st.batches >= 1);
        assert_eq!(log.durable_index(), 200);
    });
}

#[test]
fn overlapping_or_oversized_appends_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let (log, _) = open(dir.path(), small_opts());
        log.append(&[entry(1, 5, 1)]).unwrap().await.unwrap();
        assert!(matches!(
            log.append(&[entry(2, 4, 1)]),
            Err(Error::InvalidArgument(_))
        ));
        assert!(
            matches!(
                log.append(&[entry(1, 5, 1)]),
                Err(Error::InvalidArgument(_))
            ),
            "overlapping the tail needs a truncate first"
        );
        assert!(matches!(
            log.append(&[entry(2, 5, 1 << 20)]),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(log.last_index(), 1);
    });
}

#[test]
#[should_panic(expected = "leaves a gap")]
fn append_with_a_gap_panics() {
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let (log, _) = open(dir.path(), small_opts());
        let _ = log.append(&[entry(2, 1, 1)]);
    });
}

#[test]
#[should_panic(expected = "not consecutive")]
fn append_with_a_gap_inside_the_batch_panics() {
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let (log, _) = open(dir.path(), small_opts());
        let _ = log.append(&[entry(1, 5, 1), entry(3, 5, 1)]);
    });
}

#[test]
#[should_panic(expected = "below the first index")]
fn append_below_the_first_index_panics() {
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let (log, _) = open(dir.path(), small_opts());
        let es: Vec<_> = (1..=10u64).map(|i| entry(i, 1, 8)).collect();
        log.append(&es).unwrap().await.unwrap();
        // An empty log restarted after index 20 (a follower that installed a snapshot).
        log.reset(20, 1).unwrap().await.unwrap();
        let _ = log.append(&[entry(5, 2, 1)]);
    });
}

#[test]
#[should_panic(expected = "at or below the saved commit index")]
fn truncating_below_the_saved_commit_panics() {
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let (log, _) = open(dir.path(), small_opts());
        let es: Vec<_> = (1..=10u64).map(|i| entry(i, 1, 8)).collect();
        log.append(&es).unwrap().await.unwrap();
        log.save_hard_state(HardState {
            term: 1,
            vote: 1,
            commit: 6,
        })
        .unwrap()
        .await
        .unwrap();
        log.truncate_suffix(7).unwrap().await.unwrap();
        let _ = log.truncate_suffix(6);
    });
}

#[test]
#[should_panic(expected = "at or below the snapshot index")]
fn truncating_below_the_snapshot_panics() {
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let (log, _) = open(dir.path(), small_opts());
        let es: Vec<_> = (1..=10u64).map(|i| entry(i, 1, 8)).collect();
        log.append(&es).unwrap().await.unwrap();
        let meta = SnapshotMeta {
            index: 5,
            term: 1,
            extra: Vec::new(),
        };
        log.save_snapshot(meta, bytes::Bytes::from_static(b"s"))
            .await
            .unwrap();
        let _ = log.truncate_suffix(5);
    });
}

#[test]
#[should_panic(expected = "beyond the last index")]
fn hard_state_commit_beyond_the_log_panics() {
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let (log, _) = open(dir.path(), small_opts());
        log.append(&[entry(1, 1, 1)]).unwrap().await.unwrap();
        let _ = log.save_hard_state(HardState {
            term: 1,
            vote: 1,
            commit: 2,
        });
    });
}

/// After truncating and appending fewer entries, the stale records beyond the new tail
/// must not come back: not in memory, not after a restart, not as valid bytes in the file.
#[test]
fn truncated_records_are_never_resurrected() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts();
    block_on(async {
        let (log, _) = open(dir.path(), opts.clone());
        let es: Vec<_> = (1..=20u64).map(|i| entry(i, 1, 40)).collect();
        log.append(&es).unwrap().await.unwrap();
        log.truncate_suffix(10).unwrap().await.unwrap();
        // New entries are shorter, so old records 12.. sit at offsets a scan could reach.
        log.append(&[entry(10, 2, 8), entry(11, 2, 8)])
            .unwrap()
            .await
            .unwrap();
        assert_eq!(log.last_index(), 11);
        log.close().await.unwrap();
    });
    let (log, rec) = open(dir.path(), opts);
    assert_eq!(rec.last_index, 11);
    assert!(rec.truncated_tail.is_none(), "{:?}", rec.truncated_tail);
    let got = all_entries(&log);
    assert_eq!(got.len(), 11);
    assert_eq!(got[9], entry(10, 2, 8));
    assert_eq!(got[10], entry(11, 2, 8));
    // No decodable record past the tail.
    let data = std::fs::read(dir.path().join(mast_log::segment_file_name(1))).unwrap();
    let mut pos = 0;
    let mut found = 0;
    while pos + 24 <= data.len() {
        if let Ok(mast_log::record::Decoded::Record(v, _)) =
            mast_log::record::decode_record(&data[pos..], 1 << 20)
        {
            if v.index != 0 {
                found += 1;
            }
        }
        pos += 8;
    }
    assert_eq!(found, 11, "stale records still decodable in the segment");
}

#[test]
fn truncate_across_segments_and_keep_appending() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts();
    let mut model: Vec<_> = (1..=500u64).map(|i| entry(i, 1, 200)).collect();
    block_on(async {
        let (log, _) = open(dir.path(), opts.clone());
        log.append(&model).unwrap().await.unwrap();
        log.truncate_suffix(120).unwrap().await.unwrap();
        model.truncate(119);
        let more: Vec<_> = (120..=200u64).map(|i| entry(i, 2, 30)).collect();
        log.append(&more).unwrap().await.unwrap();
        model.extend(more);
        assert_eq!(all_entries(&log), model);
        log.close().await.unwrap();
    });
    let (log, rec) = open(dir.path(), opts);
    assert_eq!(rec.last_index, 200);
    assert_eq!(all_entries(&log), model);
}

#[test]
fn hard_state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let (log, rec) = open(dir.path(), small_opts());
        assert_eq!(rec.hard_state, HardState::default());
        log.append(&[entry(1, 3, 5), entry(2, 3, 5)])
            .unwrap()
            .await
            .unwrap();
        for t in 1..=5 {
            log.save_hard_state(HardState {
                term: t,
                vote: 7,
                commit: 2,
            })
            .unwrap()
            .await
            .unwrap();
        }
        log.close().await.unwrap();
    });
    let (_, rec) = open(dir.path(), small_opts());
    assert_eq!(
        rec.hard_state,
        HardState {
            term: 5,
            vote: 7,
            commit: 2
        }
    );
    assert!(!rec.hard_state_fell_back);
}

#[test]
fn snapshot_compaction_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        retained_tail_entries: 10,
        snapshots_kept: 2,
        ..small_opts()
    };
    block_on(async {
        let (log, _) = open(dir.path(), opts.clone());
        let es: Vec<_> = (1..=1000u64).map(|i| entry(i, 1 + i / 400, 150)).collect();
        log.append(&es).unwrap().await.unwrap();
        for (k, idx) in [300u64, 600, 900].into_iter().enumerate() {
            let meta = SnapshotMeta {
                index: idx,
                term: log.term(idx).unwrap().unwrap(),
                extra: vec![k as u8; 3],
            };
            log.save_snapshot(meta, bytes::Bytes::from(vec![k as u8; 5000]))
                .await
                .unwrap();
            log.compact(idx).unwrap();
            assert_eq!(log.first_index(), idx - 10 + 1);
            assert_eq!(log.term(idx - 10).unwrap(), Some(1 + (idx - 10) / 400));
            assert!(matches!(
                log.entries(1, 5, 100),
                Err(Error::Compacted { .. })
            ));
        }
        let (meta, data) = log.load_latest_snapshot().unwrap().unwrap();
        assert_eq!(
            (meta.index, meta.extra.clone(), data.len()),
            (900, vec![2u8; 3], 5000)
        );
        log.close().await.unwrap();
    });
    let snaps = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".snap")
        })
        .count();
    assert_eq!(snaps, 2);
    let (log, rec) = open(dir.path(), opts);
    assert_eq!(rec.snapshot.as_ref().map(|m| m.index), Some(900));
    assert!(
        rec.first_index <= 891 && rec.first_index > 1,
        "first {}",
        rec.first_index
    );
    assert_eq!(rec.last_index, 1000);
    let got = log.entries(891, 1001, u64::MAX).unwrap();
    assert_eq!(got.len(), 110);
    assert_eq!(got[0], entry(891, 3, 150));
}

#[test]
fn reset_after_snapshot_install() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts();
    block_on(async {
        let (log, _) = open(dir.path(), opts.clone());
        log.append(&(1..=50u64).map(|i| entry(i, 1, 100)).collect::<Vec<_>>())
            .unwrap()
            .await
            .unwrap();
        log.save_snapshot(
            SnapshotMeta {
                index: 5000,
                term: 9,
                extra: vec![],
            },
            bytes::Bytes::from_static(b"state"),
        )
        .await
        .unwrap();
        log.reset(5000, 9).unwrap().await.unwrap();
        assert_eq!((log.first_index(), log.last_index()), (5001, 5000));
        assert_eq!(log.term(5000).unwrap(), Some(9));
        log.append(&[entry(5001, 9, 10)]).unwrap().await.unwrap();
        log.close().await.unwrap();
    });
    let (log, rec) = open(dir.path(), opts);
    assert_eq!((rec.first_index, rec.last_index), (5001, 5001));
    assert_eq!(log.term(5000).unwrap(), Some(9));
    assert_eq!(all_entries(&log), vec![entry(5001, 9, 10)]);
}

#[test]
fn second_open_of_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, _) = open(dir.path(), small_opts());
    assert!(Log::open(dir.path(), small_opts()).is_err());
}

#[test]
fn direct_io_round_trip_or_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        direct_io: true,
        ..small_opts()
    };
    let (log, _) = match Log::open(dir.path(), opts.clone()) {
        Ok(x) => x,
        Err(Error::DirectIoUnsupported { .. }) => return,
        Err(e) => panic!("unexpected error: {e}"),
    };
    let es: Vec<_> = (1..=300u64)
        .map(|i| entry(i, 1, (i * 7 % 500) as usize))
        .collect();
    block_on(async {
        for c in es.chunks(13) {
            log.append(c).unwrap().await.unwrap();
        }
        log.truncate_suffix(250).unwrap().await.unwrap();
        log.append(&[entry(250, 2, 33)]).unwrap().await.unwrap();
        log.close().await.unwrap();
    });
    let (log, rec) = open(dir.path(), opts);
    assert_eq!(rec.last_index, 250);
    let mut want = es[..249].to_vec();
    want.push(entry(250, 2, 33));
    assert_eq!(all_entries(&log), want);
}

#[test]
fn direct_io_on_tmpfs_reports_unsupported() {
    let shm = std::path::Path::new("/dev/shm");
    if !shm.is_dir() {
        return;
    }
    let dir = tempfile::tempdir_in(shm).unwrap();
    let opts = LogOptions {
        direct_io: true,
        ..small_opts()
    };
    match Log::open(dir.path(), opts) {
        // Newer kernels support O_DIRECT on tmpfs; then opening must simply work.
        Ok(_) => {}
        Err(e) => assert!(matches!(e, Error::DirectIoUnsupported { .. }), "{e}"),
    }
}

/// A failed durability operation stops the log for good: the waiting append fails with the
/// fatal error, later appends are refused, nothing is retried.
#[test]
fn failed_segment_creation_is_fatal_and_sticky() {
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let (log, _) = open(dir.path(), small_opts());
        // The segment the next append needs cannot be created (a directory is in the way).
        std::fs::create_dir(dir.path().join(mast_log::segment_file_name(1))).unwrap();
        let err = log.append(&[entry(1, 1, 10)]).unwrap().await.unwrap_err();
        assert!(err.is_fatal(), "{err}");
        assert!(log.fatal_error().is_some());
        let again = log.append(&[entry(2, 1, 10)]).map(|_| ()).unwrap_err();
        assert!(again.is_fatal(), "{again}");
        assert!(log
            .save_hard_state(HardState::default())
            .map(|_| ())
            .unwrap_err()
            .is_fatal());
        assert!(log.close().await.unwrap_err().is_fatal());
    });
}

#[test]
fn failed_hard_state_write_is_fatal() {
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let (log, _) = open(dir.path(), small_opts());
        let hs = dir.path().join(mast_log::HARD_STATE_FILE);
        std::fs::remove_file(&hs).unwrap();
        std::fs::create_dir(&hs).unwrap();
        let err = log
            .save_hard_state(HardState {
                term: 1,
                vote: 1,
                commit: 0,
            })
            .unwrap()
            .await
            .unwrap_err();
        assert!(err.is_fatal(), "{err}");
        assert!(log
            .append(&[entry(1, 1, 1)])
            .map(|_| ())
            .unwrap_err()
            .is_fatal());
    });
}
