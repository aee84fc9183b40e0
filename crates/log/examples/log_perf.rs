//! Measures the two headline numbers of the log on this machine's disk.
//!
//! `log_perf group-commit [DIR]`: durable entries/s and p99 append latency with 64
//! concurrent appenders of 256-byte entries, against one entry per fdatasync (one appender
//! waiting for each append) and against the p99 of a bare 256-byte write + fdatasync.
//!
//! `log_perf restart [DIR]`: builds a log of `LOG_PERF_RESTART_BYTES` (default 1 GiB) and
//! times `Log::open` on it (the recovery scan).
//!
//! `LOG_PERF_SECS` (default 5) sets each phase's duration, `LOG_PERF_DIRECT=1` uses O_DIRECT,
//! `LOG_PERF_WRITE_THROUGH=1` O_DSYNC segments (no separate fdatasync).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use mast_log::{EntryRecord, Log, LogOptions};

const APPENDERS: usize = 64;
const ENTRY_BYTES: usize = 256;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("monoio runtime")
        .block_on(f)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn opts() -> LogOptions {
    LogOptions {
        direct_io: env_u64("LOG_PERF_DIRECT", 0) == 1,
        write_through: env_u64("LOG_PERF_WRITE_THROUGH", 0) == 1,
        ..LogOptions::default()
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64
}

struct Phase {
    entries: u64,
    secs: f64,
    lat: Histogram<u64>,
}

/// 256-byte write + fdatasync in a loop. `prezeroed`: the file's blocks were written (with
/// zeros) and synced first, so the loop never converts unwritten extents (no journal work
/// in fdatasync); otherwise the file is preallocated with fallocate like a log segment.
async fn bare_fdatasync(dir: &Path, secs: f64, prezeroed: bool) -> Phase {
    use std::os::fd::AsRawFd;
    let path = dir.join("bare-fdatasync.tmp");
    let std_file = std::fs::File::create(&path).expect("create probe file");
    if prezeroed {
        use std::io::Write;
        let mut w = &std_file;
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            w.write_all(&zeros).expect("prezero");
        }
        std_file.sync_all().expect("sync prezeroed file");
    } else {
        // SAFETY: plain syscall on an open descriptor.
        let r = unsafe { libc::fallocate(std_file.as_raw_fd(), 0, 0, 64 << 20) };
        assert_eq!(r, 0, "fallocate");
        std_file.sync_all().expect("sync preallocated file");
    }
    let f = monoio::fs::File::from_std(std_file).expect("register probe file");
    let mut lat = hist();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        let (r, _) = f
            .write_all_at(vec![7u8; ENTRY_BYTES], n * ENTRY_BYTES as u64 % (64 << 20))
            .await;
        r.expect("write");
        f.sync_data().await.expect("fdatasync");
        lat.record(t.elapsed().as_micros().max(1) as u64).ok();
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    Phase {
        entries: n,
        secs,
        lat,
    }
}

async fn appenders(log: Rc<Log>, count: usize, secs: f64) -> Phase {
    let lat = Rc::new(RefCell::new(hist()));
    let done = Rc::new(RefCell::new(0u64));
    let payload = Bytes::from(vec![0x5au8; ENTRY_BYTES]);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..count {
        let (log, lat, done, payload) = (log.clone(), lat.clone(), done.clone(), payload.clone());
        tasks.push(monoio::spawn(async move {
            while Instant::now() < deadline {
                let t = Instant::now();
                let e = EntryRecord {
                    index: log.last_index() + 1,
                    term: 1,
                    payload: payload.clone(),
                };
                log.append(&[e]).expect("append").await.expect("durable");
                lat.borrow_mut()
                    .record(t.elapsed().as_micros().max(1) as u64)
                    .ok();
                *done.borrow_mut() += 1;
            }
        }));
    }
    for t in tasks {
        t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let entries = *done.borrow();
    let lat = lat.borrow().clone();
    Phase { entries, secs, lat }
}

fn report(name: &str, p: &Phase) {
    println!(
        "{name:<34} {:>10.0} entries/s   p50 {:>8.0} us   p99 {:>8.0} us   p99.9 {:>8.0} us   ({} entries in {:.1} s)",
        p.entries as f64 / p.secs,
        us(&p.lat, 0.50),
        us(&p.lat, 0.99),
        us(&p.lat, 0.999),
        p.entries,
        p.secs
    );
}

fn group_commit(dir: &Path) {
    let secs = env_u64("LOG_PERF_SECS", 5) as f64;
    let o = opts();
    println!(
        "dir {} direct_io {} write_through {} phase {secs} s, {ENTRY_BYTES}-byte entries",
        dir.display(),
        o.direct_io,
        o.write_through
    );
    block_on(async {
        let bare = bare_fdatasync(dir, secs, false).await;
        report("bare 256 B write + fdatasync", &bare);
        let bare_zeroed = bare_fdatasync(dir, secs, true).await;
        report("same, pre-zeroed file", &bare_zeroed);
        let (log, _) = Log::open(dir.join("single"), o.clone()).expect("open log");
        let single = appenders(Rc::new(log), 1, secs).await;
        report("log, 1 appender (1 entry/fsync)", &single);
        let (log, _) = Log::open(dir.join("group"), o.clone()).expect("open log");
        let log = Rc::new(log);
        let group = appenders(log.clone(), APPENDERS, secs).await;
        report("log, 64 concurrent appenders", &group);
        let st = log.stats();
        println!(
            "group commit: {} batches, {:.1} entries/batch",
            st.batches,
            st.entries as f64 / st.batches.max(1) as f64
        );
        let rate_ratio =
            (group.entries as f64 / group.secs) / (single.entries as f64 / single.secs);
        let p99_ratio = us(&group.lat, 0.99) / us(&bare.lat, 0.99);
        println!(
            "RESULT throughput x{rate_ratio:.1} vs one entry per fdatasync (goal >= 20); p99 {:.2}x bare fdatasync p99 (goal < 3)",
            p99_ratio
        );
    });
}

fn restart(dir: &Path) {
    let bytes = env_u64("LOG_PERF_RESTART_BYTES", 1 << 30);
    let o = opts();
    // LOG_PERF_RESTART_DIR keeps the built log for repeated runs.
    let log_dir = std::env::var("LOG_PERF_RESTART_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| dir.join("restart"));
    let entry_bytes = 4096 - 24;
    let entries = bytes / 4096;
    let t = Instant::now();
    block_on(async {
        let (log, _) = Log::open(&log_dir, o.clone()).expect("open log");
        let payload = Bytes::from(vec![0x33u8; entry_bytes]);
        let mut next = log.last_index() + 1;
        let end = entries.max(next - 1) + 1;
        while next < end {
            let n = (end - next).min(256);
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
    println!(
        "log ready: {entries} entries ({} MiB), built or reused in {:.1} s",
        bytes >> 20,
        t.elapsed().as_secs_f64()
    );
    for attempt in 0..4 {
        // Odd attempts start cold: our segment files are dropped from the page cache
        // (POSIX_FADV_DONTNEED on clean pages), without touching anyone else's cache.
        let cold = attempt % 2 == 1;
        if cold {
            drop_from_page_cache(&log_dir);
        }
        let t = Instant::now();
        let (log, rec) = Log::open(&log_dir, o.clone()).expect("reopen");
        let secs = t.elapsed().as_secs_f64();
        println!(
            "RESULT restart {attempt} ({}): ready in {secs:.3} s, scanned {} MiB in {} segments ({:.0} MB/s), last index {}",
            if cold { "cold cache" } else { "warm cache" },
            rec.scanned_bytes >> 20,
            rec.segments,
            rec.scanned_bytes as f64 / 1e6 / secs,
            rec.last_index
        );
        drop(log);
    }
}

fn drop_from_page_cache(dir: &Path) {
    use std::os::fd::AsRawFd;
    for ent in std::fs::read_dir(dir).expect("list log dir").flatten() {
        if let Ok(f) = std::fs::File::open(ent.path()) {
            // SAFETY: plain syscall on an open descriptor.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "group-commit".into());
    let base: PathBuf = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("mast-log-perf")
        .tempdir_in(&base)
        .expect("temp dir");
    match mode.as_str() {
        "group-commit" => group_commit(dir.path()),
        "restart" => restart(dir.path()),
        other => {
            eprintln!("unknown mode {other:?}: use group-commit or restart");
            std::process::exit(2);
        }
    }
}
