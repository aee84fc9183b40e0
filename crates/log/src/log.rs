//! The per-shard log: in-memory index and tail cache, the queue of durable operations, and
//! the writer task that turns that queue into io_uring writes and fdatasyncs.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::aligned::AlignedBuf;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::hardstate::{self, HardState};
use crate::options::{LogOptions, DIRECT_IO_ALIGN_BYTES};
use crate::record::{decode_record, encode_record, record_bytes, Decoded, HEADER_BYTES};
use crate::scan::{self, TailTruncation};
use crate::snapshot::{self, SnapshotMeta};

/// How long `open` waits for a previous writer's in-flight I/O to finish.
const PREDECESSOR_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// One log entry as the raft core hands it over: its position and opaque payload (the
/// rkyv-encoded entry, stored byte for byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    /// Raft index (starts at 1).
    pub index: u64,
    /// Raft term.
    pub term: u64,
    /// Opaque payload.
    pub payload: Bytes,
}

/// Counters of the work the writer did (for benchmarks and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Batches written (each one write + one fdatasync, or one O_DSYNC write).
    pub batches: u64,
    /// Entries written in those batches.
    pub entries: u64,
    /// Bytes written in those batches (padding included).
    pub bytes: u64,
    /// Points where a batch became durable: fdatasync calls, or O_DSYNC writes with
    /// `write_through` (segment creation, truncation and hard-state syncs are not counted).
    pub syncs: u64,
}

/// What [`Log::open`] found on disk.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The persisted hard state (default if none was ever saved).
    pub hard_state: HardState,
    /// One hard-state slot was damaged and the other one was used.
    pub hard_state_fell_back: bool,
    /// First index available in the log.
    pub first_index: u64,
    /// Last index in the log (`first_index - 1` when empty).
    pub last_index: u64,
    /// Set when a damaged tail was cut off.
    pub truncated_tail: Option<TailTruncation>,
    /// Metadata of the newest valid snapshot.
    pub snapshot: Option<SnapshotMeta>,
    /// Segment files found.
    pub segments: usize,
    /// Bytes read by the recovery scan.
    pub scanned_bytes: u64,
}

/// The durable log of one shard. Single-threaded: owned by the shard's monoio thread.
///
/// Methods that queue disk work (`append`, `truncate_suffix`, `compact`, `reset`,
/// `save_hard_state`) must run inside a monoio runtime: the first one spawns the writer task.
/// Reads (`entries`, `term`, ...) are synchronous and work anywhere.
pub struct Log {
    sh: Rc<Shared>,
}

struct Shared {
    dir: PathBuf,
    opts: LogOptions,
    st: RefCell<State>,
    completed_seq: Cell<u64>,
    fatal: RefCell<Option<String>>,
    closed: Cell<bool>,
    writer_started: Cell<bool>,
    writer_exited: Cell<bool>,
    writer_waker: RefCell<Option<Waker>>,
    waiters: RefCell<Vec<(u64, Waker)>>,
    exit_waiters: RefCell<Vec<Waker>>,
    snapshot_tmp_id: Cell<u64>,
    stats: Cell<LogStats>,
    /// Keeps the directory lock (flock) for the life of the log.
    _lock: fs::File,
}

struct Seg {
    first: u64,
    path: PathBuf,
    offsets: Vec<u32>,
    /// Allocation pointer: where the next record goes (queued records included).
    end: u64,
    capacity: u64,
    /// No more records go here (it was rolled over, or an O_DIRECT truncation left the end
    /// unaligned).
    full: bool,
    read_fd: RefCell<Option<Rc<fs::File>>>,
}

impl Seg {
    fn reader(&self) -> Result<Rc<fs::File>> {
        if let Some(f) = self.read_fd.borrow().as_ref() {
            return Ok(f.clone());
        }
        let f = fs::File::open(&self.path)
            .map_err(|e| Error::io(format!("opening {}", self.path.display()), e))?;
        let f = Rc::new(f);
        *self.read_fd.borrow_mut() = Some(f.clone());
        Ok(f)
    }
}

struct Batch {
    seq: u64,
    seg_first: u64,
    path: PathBuf,
    create: bool,
    capacity: u64,
    offset: u64,
    buf: AlignedBuf,
    last_index: u64,
    entries: usize,
}

enum Op {
    Batch(Batch),
    /// Zero `[from, to)` of a segment so stale records past a truncation point can never be
    /// read back as part of the log.
    Zero {
        seq: u64,
        seg_first: u64,
        path: PathBuf,
        from: u64,
        to: u64,
        from_index: u64,
    },
    /// Remove whole segment files (newest first), then fsync the directory.
    Delete {
        seq: u64,
        paths: Vec<(u64, PathBuf)>,
        /// Set by `reset`: entries from here on in batches ahead of this op are stale.
        stale_from: Option<u64>,
    },
    HardState {
        seq: u64,
        hs: HardState,
    },
}

impl Op {
    fn seq(&self) -> u64 {
        match self {
            Op::Batch(b) => b.seq,
            Op::Zero { seq, .. } | Op::Delete { seq, .. } | Op::HardState { seq, .. } => *seq,
        }
    }
}

struct State {
    dir: PathBuf,
    segs: BTreeMap<u64, Seg>,
    first_index: u64,
    last_index: u64,
    /// Term of entry `first_index - 1`, when known.
    base_term: Option<u64>,
    /// (start index, term) runs covering `[first_index, last_index]`.
    terms: Vec<(u64, u64)>,
    cache: VecDeque<EntryRecord>,
    cache_bytes: usize,
    /// Entries up to here can be read from the files.
    written_index: u64,
    durable_index: u64,
    queue: VecDeque<Op>,
    /// The batch at the back of the queue still takes records.
    back_open: bool,
    pending_bytes: usize,
    next_seq: u64,
    snapshot_index: u64,
    /// Highest commit index of a hard state saved (or recovered): entries up to it are
    /// committed, so raft never truncates them.
    hs_commit: u64,
    hs_next_slot: usize,
    hs_seq: u64,
    free_bufs: Vec<AlignedBuf>,
}

/// Completes when the operation it was returned for is durable (or the log failed).
/// Dropping it does not cancel the write.
#[must_use = "a Durable future does nothing unless awaited; drop it explicitly if durability is not needed"]
pub struct Durable {
    sh: Option<Rc<Shared>>,
    seq: u64,
}

impl Durable {
    /// A future that is already complete: nothing was queued.
    pub fn done() -> Durable {
        Durable { sh: None, seq: 0 }
    }
}

impl Future for Durable {
    type Output = Result<()>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let Some(sh) = self.sh.as_ref() else {
            return Poll::Ready(Ok(()));
        };
        if sh.completed_seq.get() >= self.seq {
            return Poll::Ready(Ok(()));
        }
        if let Some(msg) = sh.fatal.borrow().as_ref() {
            return Poll::Ready(Err(Error::Fatal(msg.clone())));
        }
        if sh.writer_exited.get() {
            return Poll::Ready(Err(Error::Closed));
        }
        let mut w = sh.waiters.borrow_mut();
        if !w
            .iter()
            .any(|(s, wk)| *s == self.seq && wk.will_wake(cx.waker()))
        {
            w.push((self.seq, cx.waker().clone()));
        }
        Poll::Pending
    }
}

fn direct_pad_bytes(end: u64) -> u64 {
    let align = DIRECT_IO_ALIGN_BYTES as u64;
    let gap = end.div_ceil(align) * align - end;
    if gap == 0 {
        0
    } else if gap >= HEADER_BYTES as u64 {
        gap
    } else {
        gap + align
    }
}

impl Log {
    /// Opens (creating if needed) the log in `dir` and runs recovery. Refuses to start on
    /// damage other than a torn tail (see [`crate::RecoveryMode`]), naming file and offset.
    pub fn open(dir: impl AsRef<Path>, opts: LogOptions) -> Result<(Log, Recovered)> {
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let lock = lock_dir(&dir)?;
        remove_temp_files(&dir)?;
        // Writes a killed predecessor left in flight must land before we look.
        for (_, path) in scan::list_segments(&dir)? {
            fsutil::wait_until_unlocked(&path, PREDECESSOR_WAIT)?;
        }
        fsutil::wait_until_unlocked(&dir.join(hardstate::FILE_NAME), PREDECESSOR_WAIT)?;
        if opts.direct_io {
            probe_direct_io(&dir)?;
        }
        let hs = hardstate::load_or_create(&dir)?;
        let snap = snapshot::newest_valid(&dir, opts.snapshot_bytes_max)?;
        let snap_meta = snap.map(|(m, _, _)| m);
        let snap_index = snap_meta.as_ref().map_or(0, |m| m.index);
        let scan = scan::scan(&dir, &opts)?;

        let first_index = match scan.segments.first() {
            Some(s) => s.first,
            None => snap_index + 1,
        };
        let last_index = scan.last_index.unwrap_or(first_index - 1);
        if let Some(s) = scan.segments.first() {
            if s.first > snap_index + 1 {
                let why = match &snap_meta {
                    Some(m) => format!(
                        "log starts at index {} but the newest valid snapshot ends at {}: entries in between are missing",
                        s.first, m.index
                    ),
                    None => format!(
                        "log starts at index {} but there is no snapshot: earlier segments are missing",
                        s.first
                    ),
                };
                return Err(Error::Corrupt {
                    file: s.path.clone(),
                    offset: 0,
                    reason: why,
                });
            }
        }
        let durable_last = last_index.max(snap_index);
        if hs.state.commit > durable_last {
            return Err(Error::Corrupt {
                file: dir.join(hardstate::FILE_NAME),
                offset: 0,
                reason: format!(
                    "commit index {} is beyond the last entry on disk ({durable_last}): acknowledged entries are missing (lost last segment?)",
                    hs.state.commit
                ),
            });
        }
        // The term just before the first entry must be known (raft's prev-log-term check).
        // When neither index 0 nor the snapshot gives it, the first entry on disk serves as
        // that anchor and the log starts one entry later.
        let (first_index, base_term) = match &snap_meta {
            Some(m) if m.index + 1 == first_index => (first_index, Some(m.term)),
            _ if first_index == 1 => (first_index, Some(0)),
            _ => match scan.terms.first() {
                Some(&(start, term)) if start == first_index && last_index >= first_index => {
                    (first_index + 1, Some(term))
                }
                _ => (first_index, None),
            },
        };

        let segment_count = scan.segments.len();
        let mut segs = BTreeMap::new();
        for (k, s) in scan.segments.into_iter().enumerate() {
            let is_last = k + 1 == segment_count;
            let mut capacity = s.file_len;
            if is_last && s.file_len < opts.segment_bytes {
                // A crash while creating the segment can leave it short; restore its size.
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(&s.path)
                    .map_err(|e| Error::io(format!("opening {}", s.path.display()), e))?;
                fsutil::preallocate(&f, opts.segment_bytes)
                    .and_then(|_| f.sync_all())
                    .map_err(|e| Error::io(format!("preallocating {}", s.path.display()), e))?;
                capacity = opts.segment_bytes;
            }
            let mut end = s.end;
            let mut full = !is_last;
            if opts.direct_io && !end.is_multiple_of(DIRECT_IO_ALIGN_BYTES as u64) {
                // O_DIRECT writes must start on a block boundary; continue in a new segment
                // rather than rewrite acknowledged bytes.
                full = true;
                end = capacity;
            }
            segs.insert(
                s.first,
                Seg {
                    first: s.first,
                    path: s.path,
                    offsets: s.offsets,
                    end,
                    capacity,
                    full,
                    read_fd: RefCell::new(None),
                },
            );
        }
        fsutil::sync_dir(&dir)?;

        let terms = scan.terms;
        let recovered = Recovered {
            hard_state: hs.state,
            hard_state_fell_back: hs.fell_back,
            first_index,
            last_index,
            truncated_tail: scan.truncated,
            snapshot: snap_meta,
            segments: segment_count,
            scanned_bytes: scan.scanned_bytes,
        };
        let state = State {
            dir: dir.clone(),
            segs,
            first_index,
            last_index,
            base_term,
            terms,
            cache: VecDeque::new(),
            cache_bytes: 0,
            written_index: last_index,
            durable_index: last_index,
            queue: VecDeque::new(),
            back_open: false,
            pending_bytes: 0,
            next_seq: 1,
            snapshot_index: snap_index,
            hs_commit: hs.state.commit,
            hs_next_slot: hs.next_slot,
            hs_seq: hs.seq,
            free_bufs: Vec::new(),
        };
        let sh = Rc::new(Shared {
            dir,
            opts,
            st: RefCell::new(state),
            completed_seq: Cell::new(0),
            fatal: RefCell::new(None),
            closed: Cell::new(false),
            writer_started: Cell::new(false),
            writer_exited: Cell::new(false),
            writer_waker: RefCell::new(None),
            waiters: RefCell::new(Vec::new()),
            exit_waiters: RefCell::new(Vec::new()),
            snapshot_tmp_id: Cell::new(0),
            stats: Cell::new(LogStats::default()),
            _lock: lock,
        });
        Ok((Log { sh }, recovered))
    }

    /// The directory this log lives in.
    pub fn dir(&self) -> &Path {
        &self.sh.dir
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &LogOptions {
        &self.sh.opts
    }

    /// First index available (entries below it were compacted).
    pub fn first_index(&self) -> u64 {
        self.sh.st.borrow().first_index
    }

    /// Last index appended (durable or not); `first_index() - 1` when empty.
    pub fn last_index(&self) -> u64 {
        self.sh.st.borrow().last_index
    }

    /// Highest index known to be on disk (fdatasync completed).
    pub fn durable_index(&self) -> u64 {
        self.sh.st.borrow().durable_index
    }

    /// Index of the newest snapshot saved or found at open (0 if none).
    pub fn snapshot_index(&self) -> u64 {
        self.sh.st.borrow().snapshot_index
    }

    /// Counters of the writer's work since open.
    pub fn stats(&self) -> LogStats {
        self.sh.stats.get()
    }

    /// The error that stopped the log, if a durability failure happened.
    pub fn fatal_error(&self) -> Option<Error> {
        self.sh
            .fatal
            .borrow()
            .as_ref()
            .map(|m| Error::Fatal(m.clone()))
    }

    fn check_usable(&self) -> Result<()> {
        if let Some(e) = self.fatal_error() {
            return Err(e);
        }
        if self.sh.closed.get() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn ensure_writer(&self) {
        if !self.sh.writer_started.get() {
            self.sh.writer_started.set(true);
            monoio::spawn(writer_task(self.sh.clone()));
        }
    }

    fn wake_writer(&self) {
        if let Some(w) = self.sh.writer_waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Appends entries after the last index. They are visible to reads at once; the returned
    /// future completes when they are durable. Appends made while a write is in flight are
    /// coalesced into the next batch (one write + one fdatasync).
    ///
    /// The entries must continue the log (`entries[0].index == last_index() + 1`, consecutive
    /// indexes, terms never decreasing).
    pub fn append(&self, entries: &[EntryRecord]) -> Result<Durable> {
        self.check_usable()?;
        let Some(first) = entries.first() else {
            return Ok(Durable::done());
        };
        let sh = &self.sh;
        let opts = &sh.opts;
        let payload_max = opts.entry_payload_bytes_max();
        let st = sh.st.borrow_mut();
        // A hole in the log, or entries below what was compacted away, can only come from a
        // caller that lost track of the log: crash rather than write it (etcd's raft log
        // panics on the same). Overlapping the tail without truncating first is refused.
        assert!(
            first.index <= st.last_index + 1,
            "append at index {} leaves a gap after the last index {}",
            first.index,
            st.last_index
        );
        assert!(
            first.index >= st.first_index,
            "append at index {} is below the first index {}",
            first.index,
            st.first_index
        );
        if first.index != st.last_index + 1 {
            return Err(Error::InvalidArgument(format!(
                "append at index {} but the last index is {}",
                first.index, st.last_index
            )));
        }
        let mut prev_term = st.terms.last().map(|t| t.1).or(st.base_term).unwrap_or(0);
        let mut bytes = 0usize;
        for (i, e) in entries.iter().enumerate() {
            assert!(
                e.index == first.index + i as u64,
                "appended entry indexes are not consecutive at {}",
                e.index
            );
            if e.term < prev_term {
                return Err(Error::InvalidArgument(format!(
                    "entry {} has term {} below the previous term {prev_term}",
                    e.index, e.term
                )));
            }
            if e.payload.len() > payload_max {
                return Err(Error::InvalidArgument(format!(
                    "entry {} payload of {} bytes exceeds the limit of {payload_max}",
                    e.index,
                    e.payload.len()
                )));
            }
            prev_term = e.term;
            bytes += record_bytes(e.payload.len());
        }
        if st.pending_bytes + bytes > opts.pending_bytes_max {
            return Err(Error::Overloaded {
                pending_bytes: st.pending_bytes,
                pending_bytes_max: opts.pending_bytes_max,
            });
        }
        drop(st);
        self.ensure_writer();
        let mut st = sh.st.borrow_mut();
        let mut seq = 0;
        for e in entries {
            seq = st.push_record(opts, e);
            match st.terms.last() {
                Some(&(_, t)) if t == e.term => {}
                _ => st.terms.push((e.index, e.term)),
            }
            st.cache_bytes += e.payload.len();
            st.cache.push_back(e.clone());
            st.last_index = e.index;
        }
        st.pending_bytes += bytes;
        drop(st);
        self.wake_writer();
        Ok(Durable {
            sh: Some(sh.clone()),
            seq,
        })
    }

    /// Removes every entry from `from_index` on (a follower replacing entries that conflict
    /// with the leader's). Takes effect in memory at once; on disk the stale records are
    /// deleted/zeroed (and synced) before any later append is written, so they can never be
    /// recovered as part of the log. The returned future completes when that is durable.
    pub fn truncate_suffix(&self, from_index: u64) -> Result<Durable> {
        self.check_usable()?;
        let sh = &self.sh;
        let st = sh.st.borrow_mut();
        if from_index > st.last_index {
            return Ok(Durable::done());
        }
        if from_index < st.first_index {
            return Err(Error::InvalidArgument(format!(
                "cannot truncate from {from_index}: below the first index {}",
                st.first_index
            )));
        }
        // Raft truncates only a follower's uncommitted suffix. A snapshot covers applied,
        // hence committed, entries, and a saved hard state's commit index is committed too.
        assert!(
            from_index > st.snapshot_index,
            "truncate from {from_index} at or below the snapshot index {}",
            st.snapshot_index
        );
        assert!(
            from_index > st.hs_commit,
            "truncate from {from_index} at or below the saved commit index {}",
            st.hs_commit
        );
        drop(st);
        self.ensure_writer();
        let mut st = sh.st.borrow_mut();
        st.close_back(&sh.opts);
        let doomed: Vec<u64> = st.segs.range(from_index + 1..).map(|(k, _)| *k).collect();
        let mut paths = Vec::new();
        for k in doomed.into_iter().rev() {
            if let Some(s) = st.segs.remove(&k) {
                paths.push((s.first, s.path));
            }
        }
        let mut last_seq = 0;
        if !paths.is_empty() {
            let seq = st.take_seq();
            st.queue.push_back(Op::Delete {
                seq,
                paths,
                stale_from: None,
            });
            last_seq = seq;
        }
        let direct = sh.opts.direct_io;
        let zero = st
            .segs
            .range_mut(..=from_index)
            .next_back()
            .and_then(|(_, seg)| {
                let keep = (from_index - seg.first) as usize;
                let from_off = seg.offsets.get(keep).map(|&o| o as u64)?;
                let to = seg.end;
                seg.offsets.truncate(keep);
                seg.end = from_off;
                seg.full = false;
                if direct && !from_off.is_multiple_of(DIRECT_IO_ALIGN_BYTES as u64) {
                    seg.full = true;
                    seg.end = seg.capacity;
                }
                Some((seg.first, seg.path.clone(), from_off, to))
            });
        if let Some((seg_first, path, from, to)) = zero {
            let seq = st.take_seq();
            st.queue.push_back(Op::Zero {
                seq,
                seg_first,
                path,
                from,
                to,
                from_index,
            });
            last_seq = seq;
        }
        st.last_index = from_index - 1;
        st.written_index = st.written_index.min(from_index - 1);
        st.durable_index = st.durable_index.min(from_index - 1);
        while st.terms.last().is_some_and(|t| t.0 >= from_index) {
            st.terms.pop();
        }
        while st.cache.back().is_some_and(|e| e.index >= from_index) {
            if let Some(e) = st.cache.pop_back() {
                st.cache_bytes -= e.payload.len();
            }
        }
        drop(st);
        self.wake_writer();
        Ok(Durable {
            sh: Some(sh.clone()),
            seq: last_seq,
        })
    }

    /// Discards entries up to `upto_index` (after a snapshot covering them), keeping
    /// `retained_tail_entries` of them readable for slow followers. Whole segments below the
    /// new first index are deleted, but only those the newest saved snapshot covers, so a
    /// restart always finds snapshot + log contiguous.
    pub fn compact(&self, upto_index: u64) -> Result<()> {
        self.check_usable()?;
        let sh = &self.sh;
        let mut st = sh.st.borrow_mut();
        if upto_index > st.last_index {
            return Err(Error::InvalidArgument(format!(
                "cannot compact to {upto_index}: beyond the last index {}",
                st.last_index
            )));
        }
        let new_first = upto_index
            .saturating_sub(sh.opts.retained_tail_entries)
            .saturating_add(1)
            .max(st.first_index);
        if new_first > st.first_index {
            let base = st.term_in_range(new_first - 1);
            st.base_term = base;
            st.first_index = new_first;
            let keep_from = st.terms.iter().rposition(|t| t.0 <= new_first).unwrap_or(0);
            st.terms.drain(..keep_from);
            if let Some(t) = st.terms.first_mut() {
                t.0 = t.0.max(new_first);
            }
            while st.cache.front().is_some_and(|e| e.index < new_first) {
                if let Some(e) = st.cache.pop_front() {
                    st.cache_bytes -= e.payload.len();
                }
            }
        }
        // Delete segments wholly below both the first index and the snapshot; never the
        // last segment (it is where appends go).
        // Keep the entry at first_index - 1 on disk too, so its term is still known after a
        // restart.
        let limit = st.first_index.saturating_sub(2).min(st.snapshot_index);
        let keys: Vec<u64> = st.segs.keys().copied().collect();
        let mut paths = Vec::new();
        for w in keys.windows(2) {
            let seg_last = w[1] - 1;
            if seg_last > limit {
                break;
            }
            if let Some(s) = st.segs.remove(&w[0]) {
                paths.push((s.first, s.path));
            }
        }
        if paths.is_empty() {
            return Ok(());
        }
        drop(st);
        self.ensure_writer();
        let mut st = sh.st.borrow_mut();
        st.close_back(&sh.opts);
        let seq = st.take_seq();
        st.queue.push_back(Op::Delete {
            seq,
            paths,
            stale_from: None,
        });
        drop(st);
        self.wake_writer();
        Ok(())
    }

    /// Drops the whole log and restarts it empty after `index` (a follower that installed a
    /// snapshot beyond its log). Save that snapshot first: recovery needs snapshot + log to
    /// be contiguous.
    pub fn reset(&self, index: u64, term: u64) -> Result<Durable> {
        self.check_usable()?;
        self.ensure_writer();
        let sh = &self.sh;
        let mut st = sh.st.borrow_mut();
        st.close_back(&sh.opts);
        let segs = std::mem::take(&mut st.segs);
        let paths: Vec<(u64, PathBuf)> = segs
            .into_values()
            .rev()
            .map(|s| (s.first, s.path))
            .collect();
        st.first_index = index + 1;
        st.last_index = index;
        st.base_term = Some(term);
        st.terms.clear();
        st.cache.clear();
        st.cache_bytes = 0;
        st.written_index = index;
        st.durable_index = index;
        let seq = st.take_seq();
        st.queue.push_back(Op::Delete {
            seq,
            paths,
            stale_from: Some(index + 1),
        });
        drop(st);
        self.wake_writer();
        Ok(Durable {
            sh: Some(sh.clone()),
            seq,
        })
    }

    /// Persists the hard state. It is written after everything queued before it (so a
    /// persisted commit index never runs ahead of the entries appended before the call) and
    /// in a way that a crash leaves either the old or the new value. Consecutive calls
    /// coalesce.
    pub fn save_hard_state(&self, hs: HardState) -> Result<Durable> {
        self.check_usable()?;
        self.ensure_writer();
        let sh = &self.sh;
        let mut st = sh.st.borrow_mut();
        // A commit index beyond the log claims entries this log does not have.
        assert!(
            hs.commit <= st.last_index,
            "hard state commit {} is beyond the last index {}",
            hs.commit,
            st.last_index
        );
        st.hs_commit = hs.commit;
        let seq = match st.queue.back_mut() {
            Some(Op::HardState { seq, hs: pending }) => {
                *pending = hs;
                *seq
            }
            _ => {
                st.close_back(&sh.opts);
                let seq = st.take_seq();
                st.queue.push_back(Op::HardState { seq, hs });
                seq
            }
        };
        drop(st);
        self.wake_writer();
        Ok(Durable {
            sh: Some(sh.clone()),
            seq,
        })
    }

    /// Term of the entry at `index`: `Ok(None)` past the end (or just before the first index
    /// when that term is unknown), [`Error::Compacted`] further below.
    pub fn term(&self, index: u64) -> Result<Option<u64>> {
        let st = self.sh.st.borrow();
        if index + 1 == st.first_index {
            return Ok(st.base_term);
        }
        if index < st.first_index {
            return Err(Error::Compacted {
                index,
                first_index: st.first_index,
            });
        }
        Ok(st.term_in_range(index))
    }

    /// Entries in `[lo, hi)`, stopping once their payloads exceed `max_bytes` (at least one
    /// entry is returned when the range is not empty). Recent entries come from memory,
    /// older ones from the segment files (checksums verified).
    pub fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<EntryRecord>> {
        let st = self.sh.st.borrow();
        if lo < st.first_index {
            return Err(Error::Compacted {
                index: lo,
                first_index: st.first_index,
            });
        }
        if hi > st.last_index + 1 {
            return Err(Error::Unavailable {
                index: hi - 1,
                last_index: st.last_index,
            });
        }
        let mut out = Vec::new();
        if lo >= hi {
            return Ok(out);
        }
        let cache_first = st.cache.front().map_or(st.last_index + 1, |e| e.index);
        let mut total = 0u64;
        let mut next = lo;
        if next < cache_first {
            let disk_hi = hi.min(cache_first);
            st.read_from_disk(next, disk_hi, max_bytes, &mut out, &mut total)?;
            next = out.last().map_or(next, |e| e.index + 1);
            if next < disk_hi {
                return Ok(out);
            }
        }
        while next < hi {
            let Some(e) = st.cache.get((next - cache_first) as usize) else {
                break;
            };
            let size = e.payload.len() as u64;
            if !out.is_empty() && total + size > max_bytes {
                break;
            }
            total += size;
            out.push(e.clone());
            next += 1;
        }
        Ok(out)
    }

    /// Saves a snapshot durably (temp file, fsync, rename, directory fsync) and keeps only
    /// the newest `snapshots_kept`. Does not compact: call [`Log::compact`] afterwards.
    pub async fn save_snapshot(&self, meta: SnapshotMeta, data: Bytes) -> Result<()> {
        self.check_usable()?;
        let id = self.sh.snapshot_tmp_id.get() + 1;
        self.sh.snapshot_tmp_id.set(id);
        let r = snapshot::write(&self.sh.dir, id, &meta, data).await;
        if let Err(Error::Fatal(m)) = &r {
            self.sh.set_fatal(m.clone());
        }
        r?;
        {
            let mut st = self.sh.st.borrow_mut();
            st.snapshot_index = st.snapshot_index.max(meta.index);
        }
        let all = snapshot::list(&self.sh.dir)?;
        for (_, path) in all.into_iter().skip(self.sh.opts.snapshots_kept) {
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!("removing old snapshot {}: {e}", path.display());
            }
        }
        Ok(())
    }

    /// The newest snapshot whose checksum verifies (damaged newer ones are skipped and
    /// logged), with its data.
    pub fn load_latest_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>> {
        Ok(
            snapshot::newest_valid(&self.sh.dir, self.sh.opts.snapshot_bytes_max)?
                .map(|(m, d, _)| (m, d)),
        )
    }

    /// Waits until everything queued is on disk, stops the writer and closes the log.
    /// Returns the fatal error if the log had failed.
    pub async fn close(self) -> Result<()> {
        let sh = self.sh.clone();
        drop(self);
        if sh.writer_started.get() {
            std::future::poll_fn(|cx| {
                if sh.writer_exited.get() {
                    Poll::Ready(())
                } else {
                    sh.exit_waiters.borrow_mut().push(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
        }
        let fatal = sh.fatal.borrow().clone();
        match fatal {
            Some(m) => Err(Error::Fatal(m)),
            None => Ok(()),
        }
    }
}

impl Drop for Log {
    /// The writer task drains what is queued, then exits.
    fn drop(&mut self) {
        self.sh.closed.set(true);
        if let Some(w) = self.sh.writer_waker.borrow_mut().take() {
            w.wake();
        }
    }
}

impl State {
    fn take_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    fn term_in_range(&self, index: u64) -> Option<u64> {
        if index < self.first_index || index > self.last_index {
            return if index + 1 == self.first_index {
                self.base_term
            } else {
                None
            };
        }
        let k = self.terms.partition_point(|t| t.0 <= index);
        k.checked_sub(1)
            .and_then(|k| self.terms.get(k))
            .map(|t| t.1)
    }

    /// Ends the open batch at the back of the queue (padding it to a block in O_DIRECT
    /// mode) so nothing more joins it.
    fn close_back(&mut self, opts: &LogOptions) {
        if !self.back_open {
            return;
        }
        self.back_open = false;
        let Some(Op::Batch(b)) = self.queue.back_mut() else {
            return;
        };
        if !opts.direct_io {
            return;
        }
        let Some(seg) = self.segs.get_mut(&b.seg_first) else {
            return;
        };
        let pad = direct_pad_bytes(seg.end);
        if pad > 0 {
            let payload = vec![0u8; pad as usize - HEADER_BYTES];
            encode_record(&mut b.buf, 0, 0, &payload);
            seg.end += pad;
            self.pending_bytes += pad as usize;
        }
    }

    /// Places one record: into the open batch if it fits there and in its segment, else a
    /// new batch, rolling to a new segment when the current one is full. Returns the seq of
    /// the batch that holds it.
    fn push_record(&mut self, opts: &LogOptions, e: &EntryRecord) -> u64 {
        let rec = record_bytes(e.payload.len()) as u64;
        let reserve = if opts.direct_io {
            (DIRECT_IO_ALIGN_BYTES + HEADER_BYTES) as u64
        } else {
            0
        };
        let fits_seg = |seg: &Seg| !seg.full && seg.end + rec + reserve <= seg.capacity;
        let tail_key = self.segs.keys().next_back().copied();
        let joinable = self.back_open
            && match (self.queue.back(), tail_key.and_then(|k| self.segs.get(&k))) {
                (Some(Op::Batch(b)), Some(seg)) => {
                    b.seg_first == seg.first
                        && fits_seg(seg)
                        && b.buf.len() + rec as usize <= opts.batch_bytes_max
                        && b.entries < opts.batch_entries_max
                }
                _ => false,
            };
        if !joinable {
            self.close_back(opts);
            let tail_fits = tail_key
                .and_then(|k| self.segs.get(&k))
                .is_some_and(fits_seg);
            let create = !tail_fits;
            if create {
                if let Some(seg) = tail_key.and_then(|k| self.segs.get_mut(&k)) {
                    seg.full = true;
                }
                let path = self.dir.join(scan::segment_file_name(e.index));
                self.segs.insert(
                    e.index,
                    Seg {
                        first: e.index,
                        path,
                        offsets: Vec::new(),
                        end: 0,
                        capacity: opts.segment_bytes,
                        full: false,
                        read_fd: RefCell::new(None),
                    },
                );
            }
            let seg_first = self.segs.keys().next_back().copied().unwrap_or(e.index);
            let (path, offset, capacity) = match self.segs.get(&seg_first) {
                Some(s) => (s.path.clone(), s.end, s.capacity),
                None => (PathBuf::new(), 0, opts.segment_bytes),
            };
            let buf = self
                .free_bufs
                .pop()
                .unwrap_or_else(|| AlignedBuf::with_capacity(opts.batch_bytes_max.min(1 << 20)));
            let seq = self.take_seq();
            self.queue.push_back(Op::Batch(Batch {
                seq,
                seg_first,
                path,
                create,
                capacity,
                offset,
                buf,
                last_index: e.index,
                entries: 0,
            }));
            self.back_open = true;
        }
        let Some(Op::Batch(b)) = self.queue.back_mut() else {
            return 0;
        };
        if let Some(seg) = self.segs.get_mut(&b.seg_first) {
            // Segment offsets are bounded by segment_bytes (at most 2 GiB, validated).
            seg.offsets.push(seg.end as u32);
            seg.end += rec;
        }
        encode_record(&mut b.buf, e.index, e.term, &e.payload);
        b.entries += 1;
        b.last_index = e.index;
        b.seq
    }

    fn read_from_disk(
        &self,
        lo: u64,
        hi: u64,
        max_bytes: u64,
        out: &mut Vec<EntryRecord>,
        total: &mut u64,
    ) -> Result<()> {
        let mut next = lo;
        while next < hi {
            let unavailable = Error::Unavailable {
                index: next,
                last_index: self.last_index,
            };
            let Some((_, seg)) = self.segs.range(..=next).next_back() else {
                return Err(unavailable);
            };
            let Some(&start) = seg.offsets.get((next - seg.first) as usize) else {
                return Err(unavailable);
            };
            let start = start as u64;
            let f = seg.reader()?;
            // A record cannot be larger than its segment.
            let payload_max = usize::try_from(seg.capacity).unwrap_or(usize::MAX);
            // One pread for a run of records, sized from the offsets, up to the budget.
            let seg_hi = hi.min(seg.first + seg.offsets.len() as u64);
            let mut j = next;
            let mut est = 0u64;
            let mut end = start;
            while j < seg_hi {
                let idx = (j - seg.first) as usize;
                let rec_start = seg.offsets.get(idx).map_or(end, |&o| o as u64);
                let rec_end = match seg.offsets.get(idx + 1) {
                    Some(&o) => o as u64,
                    None => rec_start + record_len_at(&f, &seg.path, rec_start, payload_max)?,
                };
                let payload_est = (rec_end - rec_start).saturating_sub(HEADER_BYTES as u64);
                if j > next && *total + est + payload_est > max_bytes {
                    break;
                }
                est += payload_est;
                end = rec_end;
                j += 1;
            }
            let mut buf = vec![0u8; (end - start) as usize];
            f.read_exact_at(&mut buf, start)
                .map_err(|e| Error::io(format!("reading {} at {start}", seg.path.display()), e))?;
            let mut pos = 0usize;
            while next < j {
                let corrupt = |pos: usize, reason: String| Error::Corrupt {
                    file: seg.path.clone(),
                    offset: start + pos as u64,
                    reason,
                };
                match decode_record(buf.get(pos..).unwrap_or(&[]), payload_max) {
                    Ok(Decoded::Record(v, n)) if v.index == 0 => pos += n,
                    Ok(Decoded::Record(v, n)) => {
                        if v.index != next {
                            return Err(corrupt(
                                pos,
                                format!("found index {} reading {next}", v.index),
                            ));
                        }
                        let size = v.payload.len() as u64;
                        if !out.is_empty() && *total + size > max_bytes {
                            return Ok(());
                        }
                        *total += size;
                        out.push(EntryRecord {
                            index: v.index,
                            term: v.term,
                            payload: Bytes::copy_from_slice(v.payload),
                        });
                        next += 1;
                        pos += n;
                    }
                    Ok(Decoded::End) => {
                        return Err(corrupt(pos, format!("end of data reading {next}")))
                    }
                    Err(e) => return Err(corrupt(pos, e.to_string())),
                }
            }
            if j < seg_hi {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// On-disk size of the record starting at `off`, from its header.
fn record_len_at(f: &fs::File, path: &Path, off: u64, payload_max: usize) -> Result<u64> {
    let mut h = [0u8; HEADER_BYTES];
    f.read_exact_at(&mut h, off)
        .map_err(|e| Error::io(format!("reading {} at {off}", path.display()), e))?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    if len > payload_max {
        return Err(Error::Corrupt {
            file: path.to_path_buf(),
            offset: off,
            reason: format!("record length {len} exceeds the limit"),
        });
    }
    Ok(record_bytes(len) as u64)
}

impl Shared {
    fn set_fatal(&self, msg: String) {
        tracing::error!(dir = %self.dir.display(), "log stopped by a durability failure: {msg}");
        let mut f = self.fatal.borrow_mut();
        if f.is_none() {
            *f = Some(msg);
        }
    }

    fn wake_waiters(&self) {
        let done = self.completed_seq.get();
        let failed = self.fatal.borrow().is_some() || self.writer_exited.get();
        let woken: Vec<Waker> = {
            let mut w = self.waiters.borrow_mut();
            if failed {
                w.drain(..).map(|(_, wk)| wk).collect()
            } else {
                let mut out = Vec::new();
                w.retain(|(s, wk)| {
                    if *s <= done {
                        out.push(wk.clone());
                        false
                    } else {
                        true
                    }
                });
                out
            }
        };
        for wk in woken {
            wk.wake();
        }
    }

    /// Next queued operation, or `None` once closed and drained.
    fn next_op(&self) -> impl Future<Output = Option<Op>> + '_ {
        std::future::poll_fn(move |cx| {
            let mut st = self.st.borrow_mut();
            if !st.queue.is_empty() {
                if st.queue.len() == 1 {
                    st.close_back(&self.opts);
                }
                let op = st.queue.pop_front();
                if let Some(Op::Batch(b)) = &op {
                    st.pending_bytes = st.pending_bytes.saturating_sub(b.buf.len());
                }
                return Poll::Ready(op);
            }
            if self.closed.get() {
                return Poll::Ready(None);
            }
            *self.writer_waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
    }
}

/// Handles for the files the writer writes to.
struct WriterFiles {
    segs: HashMap<u64, Rc<monoio::fs::File>>,
    hardstate: Option<monoio::fs::File>,
}

async fn writer_task(sh: Rc<Shared>) {
    let mut files = WriterFiles {
        segs: HashMap::new(),
        hardstate: None,
    };
    while let Some(op) = sh.next_op().await {
        let seq = op.seq();
        let result = run_op(&sh, &mut files, op).await;
        match result {
            Ok(()) => {
                sh.completed_seq.set(seq);
                sh.wake_waiters();
            }
            Err(e) => {
                let msg = match e {
                    Error::Fatal(m) => m,
                    other => other.to_string(),
                };
                sh.set_fatal(msg);
                break;
            }
        }
    }
    // Close explicitly so the files (and their locks) are released before `close()`
    // returns, not whenever the runtime gets to a background close.
    for (_, f) in files.segs.drain() {
        if let Ok(f) = Rc::try_unwrap(f) {
            let _ = f.close().await;
        }
    }
    if let Some(f) = files.hardstate.take() {
        let _ = f.close().await;
    }
    sh.writer_exited.set(true);
    sh.wake_waiters();
    for w in sh.exit_waiters.borrow_mut().drain(..) {
        w.wake();
    }
}

fn open_segment_for_write(
    sh: &Shared,
    path: &Path,
    create: bool,
    capacity: u64,
) -> Result<fs::File> {
    let mut oo = fs::OpenOptions::new();
    oo.read(true).write(true);
    if create {
        oo.create(true).truncate(true);
    }
    let mut flags = 0;
    if sh.opts.direct_io {
        flags |= libc::O_DIRECT;
    }
    if sh.opts.write_through {
        flags |= libc::O_DSYNC;
    }
    oo.custom_flags(flags);
    let f = oo.open(path).map_err(|e| {
        if sh.opts.direct_io && e.raw_os_error() == Some(libc::EINVAL) {
            Error::DirectIoUnsupported {
                path: path.to_path_buf(),
                source: e,
            }
        } else {
            Error::Fatal(format!("opening segment {}: {e}", path.display()))
        }
    })?;
    if create {
        fsutil::preallocate(&f, capacity)
            .map_err(|e| Error::Fatal(format!("preallocating {}: {e}", path.display())))?;
    }
    fsutil::lock_shared(&f)
        .map_err(|e| Error::Fatal(format!("locking {}: {e}", path.display())))?;
    Ok(f)
}

async fn run_op(sh: &Shared, files: &mut WriterFiles, op: Op) -> Result<()> {
    match op {
        Op::Batch(b) => {
            if b.create {
                files.segs.remove(&b.seg_first);
                let f = open_segment_for_write(sh, &b.path, true, b.capacity)?;
                let f = monoio::fs::File::from_std(f)
                    .map_err(|e| Error::Fatal(format!("registering {}: {e}", b.path.display())))?;
                // The new file's size and its directory entry must be durable before any
                // entry in it is acknowledged.
                f.sync_all().await.map_err(|e| {
                    Error::Fatal(format!("fsync of new segment {}: {e}", b.path.display()))
                })?;
                fsutil::sync_dir_async(&sh.dir).await?;
                files.segs.insert(b.seg_first, Rc::new(f));
            }
            let file = match files.segs.get(&b.seg_first) {
                Some(f) => f.clone(),
                None => {
                    let f = open_segment_for_write(sh, &b.path, false, b.capacity)?;
                    let f = Rc::new(monoio::fs::File::from_std(f).map_err(|e| {
                        Error::Fatal(format!("registering {}: {e}", b.path.display()))
                    })?);
                    files.segs.insert(b.seg_first, f.clone());
                    f
                }
            };
            let (res, mut buf) = file.write_all_at(b.buf, b.offset).await;
            res.map_err(|e| {
                Error::Fatal(format!(
                    "write to {} at {}: {e}",
                    b.path.display(),
                    b.offset
                ))
            })?;
            let written = {
                let st = sh.st.borrow();
                // Entries of this batch cut off by a truncation queued behind it are stale.
                let mut valid = b.last_index.min(st.last_index);
                for op in &st.queue {
                    match op {
                        Op::Zero { from_index, .. }
                        | Op::Delete {
                            stale_from: Some(from_index),
                            ..
                        } => valid = valid.min(from_index - 1),
                        _ => {}
                    }
                }
                valid
            };
            {
                let mut st = sh.st.borrow_mut();
                st.written_index = st.written_index.max(written);
                st.evict_cache(sh.opts.tail_cache_bytes_max);
            }
            // An O_DSYNC write returned only once its data was durable.
            if !sh.opts.write_through {
                file.sync_data()
                    .await
                    .map_err(|e| Error::Fatal(format!("fdatasync of {}: {e}", b.path.display())))?;
            }
            let mut stats = sh.stats.get();
            stats.batches += 1;
            stats.entries += b.entries as u64;
            stats.bytes += buf.len() as u64;
            stats.syncs += 1;
            sh.stats.set(stats);
            let mut st = sh.st.borrow_mut();
            st.durable_index = st.durable_index.max(written.min(st.written_index));
            buf.clear();
            if st.free_bufs.len() < 2 {
                st.free_bufs.push(buf);
            }
            Ok(())
        }
        Op::Zero {
            seg_first,
            path,
            from,
            to,
            ..
        } => {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::Fatal(format!("opening {}: {e}", path.display())))?;
            fsutil::zero_range(&f, from, to).map_err(|e| {
                Error::Fatal(format!("zeroing {} [{from}, {to}): {e}", path.display()))
            })?;
            let f = monoio::fs::File::from_std(f)
                .map_err(|e| Error::Fatal(format!("registering {}: {e}", path.display())))?;
            f.sync_data()
                .await
                .map_err(|e| Error::Fatal(format!("fdatasync of {}: {e}", path.display())))?;
            let _ = seg_first;
            Ok(())
        }
        Op::Delete { paths, .. } => {
            for (first, path) in &paths {
                if let Some(f) = files.segs.remove(first) {
                    if let Ok(f) = Rc::try_unwrap(f) {
                        let _ = f.close().await;
                    }
                }
                match fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(Error::Fatal(format!("removing {}: {e}", path.display())))
                    }
                }
            }
            if !paths.is_empty() {
                fsutil::sync_dir_async(&sh.dir).await?;
            }
            Ok(())
        }
        Op::HardState { hs, .. } => {
            if files.hardstate.is_none() {
                let path = sh.dir.join(hardstate::FILE_NAME);
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| Error::Fatal(format!("opening {}: {e}", path.display())))?;
                fsutil::lock_shared(&f)
                    .map_err(|e| Error::Fatal(format!("locking {}: {e}", path.display())))?;
                files.hardstate =
                    Some(monoio::fs::File::from_std(f).map_err(|e| {
                        Error::Fatal(format!("registering {}: {e}", path.display()))
                    })?);
            }
            let (slot, seq) = {
                let st = sh.st.borrow();
                (st.hs_next_slot, st.hs_seq + 1)
            };
            let Some(file) = files.hardstate.as_ref() else {
                return Err(Error::Fatal("hard state file not open".into()));
            };
            let bytes = hardstate::encode_slot(seq, &hs);
            let (res, _) = file
                .write_all_at(bytes, hardstate::SLOT_OFFSETS[slot])
                .await;
            res.map_err(|e| Error::Fatal(format!("writing hard state: {e}")))?;
            file.sync_data()
                .await
                .map_err(|e| Error::Fatal(format!("fdatasync of hard state: {e}")))?;
            let mut st = sh.st.borrow_mut();
            st.hs_next_slot = 1 - slot;
            st.hs_seq = seq;
            Ok(())
        }
    }
}

impl State {
    fn evict_cache(&mut self, bytes_max: usize) {
        while self.cache_bytes > bytes_max {
            match self.cache.front() {
                Some(e) if e.index <= self.written_index => {
                    if let Some(e) = self.cache.pop_front() {
                        self.cache_bytes -= e.payload.len();
                    }
                }
                _ => break,
            }
        }
    }
}

fn lock_dir(dir: &Path) -> Result<fs::File> {
    let path = dir.join("LOCK");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    // SAFETY: plain syscall on an owned, open descriptor.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        return Err(Error::io(
            format!(
                "locking {} (is another process using this log?)",
                path.display()
            ),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(f)
}

fn remove_temp_files(dir: &Path) -> Result<()> {
    let rd = fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    for ent in rd.flatten() {
        let name = ent.file_name();
        if name.to_str().is_some_and(|n| n.ends_with(".tmp")) {
            if let Err(e) = fs::remove_file(ent.path()) {
                tracing::warn!("removing leftover {}: {e}", ent.path().display());
            }
        }
    }
    Ok(())
}

/// Whether files in `dir` can be opened with O_DIRECT (tmpfs before Linux 6.6 and some
/// overlay setups refuse it). `dir` must exist.
pub fn probe_direct_io(dir: &Path) -> Result<()> {
    let path = dir.join("direct-io-probe.tmp");
    let r = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path);
    let _ = fs::remove_file(&path);
    match r {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::DirectIoUnsupported { path, source: e }),
    }
}
