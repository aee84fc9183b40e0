//! The log as the core sees it: stable entries in `Storage` plus entries and a snapshot not
//! yet durable ("unstable"), with the commit and apply cursors.

use crate::storage::{Storage, StorageError};
use crate::types::{Entry, Snapshot};
use crate::Error;

/// The longest prefix of `ents` within `max_bytes`, never shorter than one entry.
pub(crate) fn limit_size(ents: &[Entry], max_bytes: u64) -> &[Entry] {
    let mut total = 0u64;
    for (i, e) in ents.iter().enumerate() {
        total += e.size_bytes();
        if total > max_bytes && i > 0 {
            return &ents[..i];
        }
    }
    ents
}

/// Entries and a snapshot handed (or about to be handed) to the application for persisting.
#[derive(Debug, Default)]
pub(crate) struct Unstable {
    pub snapshot: Option<Snapshot>,
    /// Whether `snapshot` was already handed out in a Ready.
    pub snapshot_in_progress: bool,
    pub entries: Vec<Entry>,
    /// Index of `entries[0]`.
    pub offset: u64,
    /// Entries with index <= this were already handed out in a Ready.
    pub in_progress_to: u64,
}

pub(crate) struct RaftLog<S: Storage> {
    pub storage: S,
    pub unstable: Unstable,
    pub committed: u64,
    /// Highest index handed out to the application for applying.
    pub applied: u64,
}

impl<S: Storage> RaftLog<S> {
    pub fn new(storage: S, committed: u64, applied: u64) -> Result<Self, Error> {
        let last = storage.last_index()?;
        Ok(RaftLog {
            storage,
            unstable: Unstable {
                offset: last + 1,
                in_progress_to: last,
                ..Default::default()
            },
            committed,
            applied,
        })
    }

    pub fn first_index(&self) -> u64 {
        match &self.unstable.snapshot {
            Some(s) => s.meta.index + 1,
            None => self.storage.first_index().unwrap_or(1),
        }
    }

    pub fn last_index(&self) -> u64 {
        if let Some(e) = self.unstable.entries.last() {
            return e.index;
        }
        if let Some(s) = &self.unstable.snapshot {
            return s.meta.index;
        }
        self.storage.last_index().unwrap_or(0)
    }

    /// Term at `idx`: Ok(0) beyond the last index, `Compacted` before the first.
    pub fn term(&self, idx: u64) -> Result<u64, StorageError> {
        if idx > self.last_index() {
            return Ok(0);
        }
        if idx >= self.unstable.offset {
            let pos = (idx - self.unstable.offset) as usize;
            return match self.unstable.entries.get(pos) {
                Some(e) => Ok(e.term),
                // Storage holds more than the core handed out: only a misbehaving
                // application gets here.
                None => Err(StorageError::Unavailable),
            };
        }
        if let Some(s) = &self.unstable.snapshot {
            if idx == s.meta.index {
                return Ok(s.meta.term);
            }
            return Err(StorageError::Compacted);
        }
        if idx + 1 < self.first_index() {
            return Err(StorageError::Compacted);
        }
        self.storage.term(idx)
    }

    pub fn last_term(&self) -> u64 {
        self.term(self.last_index()).unwrap_or(0)
    }

    pub fn match_term(&self, idx: u64, term: u64) -> bool {
        self.term(idx).map(|t| t == term).unwrap_or(false)
    }

    pub fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        let my_term = self.last_term();
        last_term > my_term || (last_term == my_term && last_index >= self.last_index())
    }

    /// Entries in `[lo, hi)` within `max_bytes` (at least one if the range is non-empty).
    pub fn slice(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if lo >= hi {
            return Ok(Vec::new());
        }
        if lo < self.first_index() {
            return Err(StorageError::Compacted);
        }
        if hi > self.last_index() + 1 {
            return Err(StorageError::Unavailable);
        }
        let off = self.unstable.offset;
        let mut out = Vec::new();
        if lo < off {
            out = self.storage.entries(lo, hi.min(off), max_bytes)?;
            let got = out.len() as u64;
            if lo + got < hi.min(off) || hi <= off {
                return Ok(out);
            }
        }
        let mut used: u64 = out.iter().map(Entry::size_bytes).sum();
        let start = (lo.max(off) - off) as usize;
        let end = (hi - off) as usize;
        let Some(tail) = self.unstable.entries.get(start..end) else {
            return Err(StorageError::Unavailable);
        };
        for e in tail {
            let sz = e.size_bytes();
            if !out.is_empty() && used + sz > max_bytes {
                break;
            }
            out.push(e.clone());
            used += sz;
            if used > max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// First index of `ents` that conflicts with (or extends) the log; 0 if all match.
    pub fn find_conflict(&self, ents: &[Entry]) -> u64 {
        for e in ents {
            if !self.match_term(e.index, e.term) {
                return e.index;
            }
        }
        0
    }

    /// The largest index <= `index` whose term is <= `term` (fast backtracking).
    pub fn find_conflict_by_term(&self, index: u64, term: u64) -> (u64, u64) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Ok(t) if t > term && i > 0 => i -= 1,
                Ok(t) => return (i, t),
                Err(_) => return (i, 0),
            }
        }
    }

    /// Appends entries (contiguous, first index <= last + 1), truncating a conflicting
    /// suffix. Returns the new last index.
    pub fn append(&mut self, ents: Vec<Entry>) -> u64 {
        let Some(first) = ents.first() else {
            return self.last_index();
        };
        let after = first.index;
        // Committed entries are never replaced (the caller refuses such an append with
        // `CommittedConflict`), and a log has no holes.
        assert!(
            after > self.committed,
            "append at index {after} is at or below the commit index {}",
            self.committed
        );
        assert!(
            after <= self.last_index() + 1,
            "append at index {after} leaves a gap after the last index {}",
            self.last_index()
        );
        debug_assert!(
            ents.windows(2).all(|w| w[1].index == w[0].index + 1),
            "appended entries are not contiguous"
        );
        let u = &mut self.unstable;
        let end = u.offset + u.entries.len() as u64;
        if after == end {
            u.entries.extend(ents);
        } else if after <= u.offset {
            u.offset = after;
            u.entries = ents;
        } else {
            u.entries.truncate((after - u.offset) as usize);
            u.entries.extend(ents);
        }
        u.in_progress_to = u.in_progress_to.min(after - 1);
        self.last_index()
    }

    /// Appends one entry built by the leader (no conflict possible), avoiding a slice copy.
    pub fn push(&mut self, e: Entry) {
        debug_assert_eq!(e.index, self.last_index() + 1, "leader entry leaves a gap");
        self.unstable.entries.push(e);
    }

    /// The application was handed entries up to `idx` to apply: the applied index only
    /// moves forward, and never past what is committed.
    pub fn applied_to(&mut self, idx: u64) {
        assert!(
            idx > self.applied,
            "applied index moving to {idx}, not above the current {}",
            self.applied
        );
        assert!(
            idx <= self.committed,
            "applied index moving to {idx}, beyond the commit index {}",
            self.committed
        );
        self.applied = idx;
    }

    pub fn commit_to(&mut self, idx: u64) -> bool {
        let idx = idx.min(self.last_index());
        if idx > self.committed {
            self.committed = idx;
            return true;
        }
        false
    }

    /// Replaces the log with a snapshot (the follower's log disagrees with it).
    pub fn restore(&mut self, snap: Snapshot) {
        let idx = snap.meta.index;
        // A snapshot at or below the commit index must not replace the log: it would
        // discard committed entries the caller only needed to keep.
        assert!(
            idx > self.committed,
            "snapshot at {idx} restored at or below the commit index {}",
            self.committed
        );
        self.committed = idx;
        self.unstable.entries.clear();
        self.unstable.offset = idx + 1;
        self.unstable.in_progress_to = idx;
        self.unstable.snapshot = Some(snap);
        self.unstable.snapshot_in_progress = false;
    }

    pub fn has_unstable(&self) -> bool {
        self.unstable.in_progress_to < self.last_index()
            || (self.unstable.snapshot.is_some() && !self.unstable.snapshot_in_progress)
    }

    /// Entries not yet handed out for persisting; marks them handed out.
    pub fn take_unstable_entries(&mut self) -> Vec<Entry> {
        let u = &mut self.unstable;
        let start = (u.in_progress_to + 1).max(u.offset);
        let from = (start - u.offset) as usize;
        let out = u
            .entries
            .get(from..)
            .map(<[Entry]>::to_vec)
            .unwrap_or_default();
        if let Some(e) = u.entries.last() {
            u.in_progress_to = e.index;
        }
        out
    }

    /// Entries up to `index` with `term` are durable: drop them from memory.
    pub fn stable_to(&mut self, index: u64, term: u64) {
        let u = &mut self.unstable;
        if index < u.offset {
            return;
        }
        let pos = (index - u.offset) as usize;
        if u.entries.get(pos).map(|e| e.term) != Some(term) {
            return;
        }
        u.entries.drain(..=pos);
        u.offset = index + 1;
    }

    pub fn stable_snap_to(&mut self, index: u64) {
        if self.unstable.snapshot.as_ref().map(|s| s.meta.index) == Some(index) {
            self.unstable.snapshot = None;
            self.unstable.snapshot_in_progress = false;
        }
    }

    pub fn has_next_committed(&self, applied_from: u64) -> bool {
        self.committed > applied_from && self.unstable.snapshot.is_none()
    }

    /// Snapshot to send to a follower: the pending one if any, else the storage's.
    pub fn snapshot(&self) -> Result<Snapshot, StorageError> {
        if let Some(s) = &self.unstable.snapshot {
            return Ok(s.clone());
        }
        self.storage.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConfState, MemStorage};

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    /// Entries 2..=5 of term 1 after the bootstrap snapshot at 1, committed up to 3.
    fn log() -> RaftLog<MemStorage> {
        let mut st = MemStorage::new_with_conf_state(ConfState::with_voters([1]));
        st.append(&[ent(2, 1), ent(3, 1), ent(4, 1), ent(5, 1)])
            .unwrap();
        let mut l = RaftLog::new(st, 1, 1).unwrap();
        l.commit_to(3);
        l
    }

    #[test]
    fn appends_above_the_commit_index_without_gaps_are_fine() {
        let mut l = log();
        assert_eq!(l.append(vec![ent(4, 2)]), 4);
        assert_eq!(l.append(vec![ent(5, 2), ent(6, 2)]), 6);
        l.applied_to(2);
        l.applied_to(3);
    }

    #[test]
    #[should_panic(expected = "at or below the commit index")]
    fn append_below_the_commit_index_panics() {
        log().append(vec![ent(3, 2)]);
    }

    #[test]
    #[should_panic(expected = "leaves a gap")]
    fn append_with_a_gap_panics() {
        log().append(vec![ent(7, 1)]);
    }

    #[test]
    #[should_panic(expected = "not above the current")]
    fn applied_not_moving_forward_panics() {
        let mut l = log();
        l.applied_to(2);
        l.applied_to(2);
    }

    #[test]
    #[should_panic(expected = "beyond the commit index")]
    fn applied_beyond_commit_panics() {
        log().applied_to(4);
    }

    #[test]
    #[should_panic(expected = "at or below the commit index")]
    fn restoring_a_snapshot_below_commit_panics() {
        let mut l = log();
        l.restore(Snapshot {
            meta: crate::SnapshotMeta {
                index: 3,
                term: 1,
                conf_state: ConfState::with_voters([1]),
            },
            data: Vec::new(),
        });
    }
}
