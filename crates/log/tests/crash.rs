//! Crash test with real processes: a child appends under load and prints every durable
//! index; the parent SIGKILLs it at random moments, reopens the log and checks that every
//! reported entry is back with the right bytes and that nothing else shows up as valid
//! garbage. The child is this test binary re-executed with `CHILD_DIR_ENV` set.
//!
//! `MAST_LOG_CRASH_ITERS` (default 20) sets the number of kills, `MAST_LOG_CRASH_SEED` the
//! seed (printed, so a failure can be replayed).

mod common;

use common::*;
use mast_log::{EntryRecord, HardState, Log, LogOptions};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CHILD_DIR_ENV: &str = "MAST_LOG_CRASH_CHILD_DIR";
const CHILD_SEED_ENV: &str = "MAST_LOG_CRASH_CHILD_SEED";
const CHILD_APPENDERS: usize = 8;
const CHILD_ENTRIES_MAX: u64 = 200_000;
const CHILD_RUN_SECS_MAX: u64 = 20;

const CHILD_DIRECT_ENV: &str = "MAST_LOG_CRASH_CHILD_DIRECT";
const CHILD_WRITE_THROUGH_ENV: &str = "MAST_LOG_CRASH_CHILD_WRITE_THROUGH";

fn opts() -> LogOptions {
    LogOptions {
        segment_bytes: 256 << 10,
        // The child switches between buffered and O_DIRECT, and between write + fdatasync
        // and O_DSYNC writes, from run to run, so recovery also sees logs whose mode changed
        // across a crash.
        direct_io: std::env::var(CHILD_DIRECT_ENV).is_ok_and(|v| v == "1"),
        write_through: std::env::var(CHILD_WRITE_THROUGH_ENV).is_ok_and(|v| v == "1"),
        batch_bytes_max: 32 << 10,
        tail_cache_bytes_max: 16 << 10,
        ..LogOptions::default()
    }
}

/// Payload length is a function of (index, term) so the parent can check every byte.
fn expected_entry(index: u64, term: u64) -> EntryRecord {
    let len = (index.wrapping_mul(31).wrapping_add(term.wrapping_mul(17)) % 1500) as usize;
    entry(index, term, len)
}

/// Entry point of the child process; a no-op in a normal test run.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let seed: u64 = std::env::var(CHILD_SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    block_on(child_main(Path::new(&dir), seed));
}

async fn child_main(dir: &Path, seed: u64) {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let (log, rec) = Log::open(dir, opts()).expect("child open");
    let last = log.last_index();
    let last_term = if last >= log.first_index() {
        log.term(last).unwrap().unwrap_or(0)
    } else {
        0
    };
    if last >= log.first_index() && rng.gen_bool(0.4) {
        // Never at or below a saved commit index: the log refuses to lose committed entries.
        let from = last
            .saturating_sub(rng.gen_range(0..6))
            .max(log.first_index())
            .max(rec.hard_state.commit + 1);
        // Announce before doing it: once the line is out, the parent no longer requires them.
        println!("truncating {from}");
        log.truncate_suffix(from).unwrap().await.unwrap();
    }
    let term = last_term + 1;
    println!("ready {term} {}", log.last_index() + 1);
    let log = std::rc::Rc::new(log);
    let deadline = Instant::now() + Duration::from_secs(CHILD_RUN_SECS_MAX);
    let mut tasks = Vec::new();
    for t in 0..CHILD_APPENDERS {
        let log = log.clone();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed ^ ((t as u64 + 1) * 0x9E37));
        tasks.push(monoio::spawn(async move {
            let mut appended = 0u64;
            while appended < CHILD_ENTRIES_MAX / CHILD_APPENDERS as u64 && Instant::now() < deadline
            {
                let start = log.last_index() + 1;
                let n = rng.gen_range(1..=4u64);
                let es: Vec<_> = (start..start + n)
                    .map(|i| expected_entry(i, term))
                    .collect();
                let durable = log.append(&es).expect("append");
                durable.await.expect("durable");
                println!("durable {} {term}", start + n - 1);
                appended += n;
                if rng.gen_ratio(1, 16) {
                    let commit = log.durable_index();
                    log.save_hard_state(HardState {
                        term,
                        vote: 1,
                        commit,
                    })
                    .unwrap()
                    .await
                    .unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await;
    }
}

/// Checks the recovered log against what the parent knows; returns index -> term of every
/// entry now in the log (all of them become required from here on).
fn verify(
    dir: &Path,
    required: &BTreeMap<u64, u64>,
    run_term: Option<u64>,
    max_reported: u64,
    seed: u64,
    iter: u32,
) -> BTreeMap<u64, u64> {
    let ctx = format!("seed {seed} iteration {iter}");
    let (log, rec) = Log::open(dir, opts()).unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
    if std::env::var("MAST_LOG_CRASH_VERBOSE").is_ok() {
        println!(
            "  recovered last {} truncated {:?}",
            rec.last_index, rec.truncated_tail
        );
    }
    let mut now = BTreeMap::new();
    let lo = log.first_index();
    let hi = log.last_index() + 1;
    let mut prev_term = 0;
    let mut next = lo;
    while next < hi {
        let es = log
            .entries(next, hi, 1 << 20)
            .unwrap_or_else(|e| panic!("{ctx}: read failed: {e}"));
        for e in es {
            assert_eq!(
                e,
                expected_entry(e.index, e.term),
                "{ctx}: entry {} has wrong bytes",
                e.index
            );
            assert!(e.term >= prev_term, "{ctx}: term goes down at {}", e.index);
            prev_term = e.term;
            now.insert(e.index, e.term);
            next = e.index + 1;
        }
    }
    for (&i, &t) in required {
        assert_eq!(
            now.get(&i),
            Some(&t),
            "{ctx}: previously recovered entry {i} (term {t}) lost; recovered {rec:?}"
        );
    }
    if let Some(term) = run_term {
        for i in 1..=max_reported {
            if !required.contains_key(&i) {
                assert_eq!(
                    now.get(&i),
                    Some(&term),
                    "{ctx}: reported durable entry {i} missing; recovered {rec:?}"
                );
            }
        }
    }
    now
}

#[test]
fn sigkill_never_loses_acknowledged_entries() {
    let iters: u32 = std::env::var("MAST_LOG_CRASH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("MAST_LOG_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("crash test seed {seed} ({iters} kills); replay with MAST_LOG_CRASH_SEED={seed}");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut required: BTreeMap<u64, u64> = BTreeMap::new();
    let mut total_reported = 0u64;
    for iter in 0..iters {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_SEED_ENV, rng.gen::<u64>().to_string())
            .env(CHILD_DIRECT_ENV, if rng.gen_bool(0.5) { "1" } else { "0" })
            .env(
                CHILD_WRITE_THROUGH_ENV,
                if rng.gen_bool(0.5) { "1" } else { "0" },
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let kill_after_lines = rng.gen_range(0..400u32);
        let deadline = Instant::now() + Duration::from_millis(rng.gen_range(50..3000));
        let mut lines = Vec::new();
        let mut durable_lines = 0;
        while durable_lines < kill_after_lines {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => {
                    durable_lines += l.contains("durable ") as u32;
                    lines.push(l);
                }
                Err(_) => break,
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // Lines already in the pipe were printed after their fsync: they count.
        lines.extend(rx.iter());
        reader.join().unwrap();
        let mut run_term = None;
        let mut max_reported = 0;
        for l in &lines {
            // The test harness may print its own text before ours on the same line.
            let parts: Vec<&str> = l.split_whitespace().collect();
            let start = parts
                .iter()
                .position(|p| matches!(*p, "truncating" | "ready" | "durable"))
                .unwrap_or(parts.len());
            match &parts[start..] {
                ["truncating", from] => {
                    let from: u64 = from.parse().unwrap();
                    required.retain(|&i, _| i < from);
                }
                ["ready", term, _] => run_term = Some(term.parse().unwrap()),
                ["durable", idx, _] => {
                    max_reported = max_reported.max(idx.parse().unwrap());
                    total_reported += 1;
                }
                _ => {}
            }
        }
        if std::env::var("MAST_LOG_CRASH_VERBOSE").is_ok() {
            let interesting: Vec<&String> =
                lines.iter().filter(|l| !l.starts_with("durable")).collect();
            println!("iter {iter}: {interesting:?} max_reported {max_reported}");
        }
        required = verify(dir.path(), &required, run_term, max_reported, seed, iter);
    }
    println!(
        "crash test: {iters} kills, {total_reported} durable reports, {} entries at the end",
        required.len()
    );
    assert!(
        total_reported > 0,
        "the child never reported a durable append"
    );
}
