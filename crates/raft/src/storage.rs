//! The stable-log interface the core reads from, and an in-memory implementation.

use crate::types::{ConfChange, ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta};

/// Why storage could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The requested index is below the first index (covered by a snapshot).
    #[error("log compacted: requested index is covered by a snapshot")]
    Compacted,
    /// The requested index is beyond the last index.
    #[error("log entries unavailable: requested index is beyond the last index")]
    Unavailable,
    /// A snapshot is being produced; ask again later.
    #[error("snapshot temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    /// Anything else (I/O, corruption), with a description.
    #[error("storage failure: {0}")]
    Other(String),
}

/// The durable log as the raft core sees it. Reads only: the application writes what each
/// `Ready` hands it, through its own storage type, before calling `advance`.
///
/// Index 0 never holds an entry. `first_index() - 1` is the snapshot's index and
/// `term(first_index() - 1)` its term.
pub trait Storage {
    /// Hard state and the configuration as of the snapshot (`first_index() - 1`). The core
    /// replays conf-change entries after it to learn the current configuration.
    fn initial_state(&self) -> Result<(HardState, ConfState), StorageError>;
    /// Entries in `[lo, hi)`, stopping once `max_bytes` is exceeded but always returning at
    /// least one entry when the range is non-empty.
    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, StorageError>;
    /// Term of the entry at `idx` (valid from `first_index() - 1` to `last_index()`).
    fn term(&self, idx: u64) -> Result<u64, StorageError>;
    /// Index of the first entry still held.
    fn first_index(&self) -> Result<u64, StorageError>;
    /// Index of the last entry (the snapshot's index when the log is empty).
    fn last_index(&self) -> Result<u64, StorageError>;
    /// The latest snapshot, used to catch up a follower that needs compacted entries.
    fn snapshot(&self) -> Result<Snapshot, StorageError>;
}

/// An in-memory [`Storage`] for tests and the simulator. Cloning it is how the simulator
/// models "what survived a crash".
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    hard_state: HardState,
    snapshot: Snapshot,
    /// Index of `entries[0]`; `offset - 1` is the compaction point.
    offset: u64,
    /// Term of the entry at `offset - 1`.
    offset_term: u64,
    /// Configuration as of `offset - 1`.
    offset_conf: ConfState,
    entries: Vec<Entry>,
}

impl MemStorage {
    /// An empty storage: a node that will join an existing cluster and be caught up by the
    /// leader (it has no configuration, so it never campaigns on its own).
    pub fn new() -> Self {
        MemStorage {
            offset: 1,
            ..Default::default()
        }
    }

    /// Bootstrap storage for an initial member: a snapshot at index 1, term 1 holding the
    /// initial configuration. Every initial member must start from the same one.
    pub fn new_with_conf_state(conf_state: ConfState) -> Self {
        MemStorage {
            hard_state: HardState {
                term: 1,
                vote: 0,
                commit: 1,
            },
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: 1,
                    term: 1,
                    conf_state: conf_state.clone(),
                },
                data: Vec::new(),
            },
            offset: 2,
            offset_term: 1,
            offset_conf: conf_state,
            entries: Vec::new(),
        }
    }

    /// Replaces the hard state.
    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// The persisted hard state.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    fn last(&self) -> u64 {
        self.offset + self.entries.len() as u64 - 1
    }

    /// Appends entries, replacing any existing suffix they conflict with. The entries must
    /// be contiguous and start at most one past the last index.
    pub fn append(&mut self, ents: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = ents.first() else {
            return Ok(());
        };
        if first.index > self.last() + 1 {
            return Err(StorageError::Other(format!(
                "append at {} leaves a gap after last index {}",
                first.index,
                self.last()
            )));
        }
        // Entries already covered by the compaction point are skipped: a follower may get
        // them in the same Ready as a snapshot that subsumes them.
        let skip = self.offset.saturating_sub(first.index) as usize;
        let Some(ents) = ents.get(skip..) else {
            return Ok(());
        };
        let Some(first) = ents.first() else {
            return Ok(());
        };
        let keep = (first.index - self.offset) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(ents);
        Ok(())
    }

    /// Like [`MemStorage::append`], taking ownership to avoid copying the payloads.
    pub fn append_owned(&mut self, ents: Vec<Entry>) -> Result<(), StorageError> {
        let Some(first) = ents.first() else {
            return Ok(());
        };
        if first.index < self.offset || first.index > self.last() + 1 {
            return self.append(&ents);
        }
        self.entries.truncate((first.index - self.offset) as usize);
        self.entries.extend(ents);
        Ok(())
    }

    /// Installs a snapshot received from the leader, discarding the entries it covers (and
    /// the rest of the log unless it agrees with the snapshot).
    pub fn apply_snapshot(&mut self, snap: Snapshot) -> Result<(), StorageError> {
        if snap.meta.index < self.snapshot.meta.index {
            return Err(StorageError::Other(
                "snapshot older than the current one".into(),
            ));
        }
        let idx = snap.meta.index;
        let keep_tail = idx >= self.offset && self.term(idx).ok() == Some(snap.meta.term);
        if keep_tail {
            let drop = (idx + 1 - self.offset) as usize;
            self.entries.drain(..drop.min(self.entries.len()));
        } else {
            self.entries.clear();
        }
        self.offset = idx + 1;
        self.offset_term = snap.meta.term;
        self.offset_conf = snap.meta.conf_state.clone();
        self.hard_state.commit = self.hard_state.commit.max(idx);
        self.snapshot = snap;
        Ok(())
    }

    /// Records a snapshot of the application state at `index` (which must be in the log),
    /// keeping the entries; [`MemStorage::compact`] discards them.
    pub fn create_snapshot(
        &mut self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
    ) -> Result<&Snapshot, StorageError> {
        if index <= self.snapshot.meta.index {
            return Err(StorageError::Compacted);
        }
        if index > self.last() {
            return Err(StorageError::Unavailable);
        }
        let term = self.term(index)?;
        self.snapshot = Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                conf_state,
            },
            data,
        };
        Ok(&self.snapshot)
    }

    /// Discards entries up to and including `index`, which must not be beyond the latest
    /// snapshot (followers needing them are then sent the snapshot).
    pub fn compact(&mut self, index: u64) -> Result<(), StorageError> {
        if index < self.offset {
            return Ok(());
        }
        if index > self.snapshot.meta.index {
            return Err(StorageError::Other(format!(
                "compact to {index} beyond snapshot at {}",
                self.snapshot.meta.index
            )));
        }
        let n = (index + 1 - self.offset) as usize;
        for e in self.entries.drain(..n) {
            if e.kind == EntryKind::ConfChange {
                if let Ok(cc) = ConfChange::decode(&e.data) {
                    self.offset_conf = self.offset_conf.applied(&cc);
                }
            }
            self.offset_term = e.term;
        }
        self.offset = index + 1;
        Ok(())
    }

    /// All entries held (for simulator checks).
    pub fn all_entries(&self) -> &[Entry] {
        &self.entries
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<(HardState, ConfState), StorageError> {
        Ok((self.hard_state, self.offset_conf.clone()))
    }

    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if lo < self.offset {
            return Err(StorageError::Compacted);
        }
        if hi > self.last() + 1 || lo > hi {
            return Err(StorageError::Unavailable);
        }
        let slice = &self.entries[(lo - self.offset) as usize..(hi - self.offset) as usize];
        Ok(crate::log::limit_size(slice, max_bytes).to_vec())
    }

    fn term(&self, idx: u64) -> Result<u64, StorageError> {
        if idx + 1 < self.offset {
            return Err(StorageError::Compacted);
        }
        if idx + 1 == self.offset {
            return Ok(self.offset_term);
        }
        self.entries
            .get((idx - self.offset) as usize)
            .map(|e| e.term)
            .ok_or(StorageError::Unavailable)
    }

    fn first_index(&self) -> Result<u64, StorageError> {
        Ok(self.offset)
    }

    fn last_index(&self) -> Result<u64, StorageError> {
        Ok(self.last())
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8],
            ..Default::default()
        }
    }

    #[test]
    fn append_replaces_conflicting_suffix_and_refuses_gaps() {
        let mut st = MemStorage::new_with_conf_state(ConfState::with_voters([1]));
        st.append(&[ent(2, 1), ent(3, 1), ent(4, 1)]).unwrap();
        st.append_owned(vec![ent(3, 2)]).unwrap();
        assert_eq!(st.last_index().unwrap(), 3);
        assert_eq!(st.term(3).unwrap(), 2);
        assert!(matches!(
            st.append(&[ent(9, 2)]),
            Err(StorageError::Other(_))
        ));
        assert_eq!(st.term(1).unwrap(), 1);
        assert_eq!(st.term(0), Err(StorageError::Compacted));
        assert_eq!(st.term(4), Err(StorageError::Unavailable));
    }

    #[test]
    fn compact_keeps_term_and_configuration_of_the_compaction_point() {
        let mut st = MemStorage::new_with_conf_state(ConfState::with_voters([1]));
        let cc = ConfChange {
            kind: crate::ConfChangeKind::AddVoter,
            node_id: 2,
            context: Vec::new(),
        };
        let mut e3 = ent(3, 2);
        e3.kind = EntryKind::ConfChange;
        e3.data = cc.encode();
        st.append(&[ent(2, 1), e3, ent(4, 2), ent(5, 3)]).unwrap();
        assert!(st.compact(4).is_err(), "cannot compact past the snapshot");
        st.create_snapshot(4, ConfState::with_voters([1, 2]), b"s".to_vec())
            .unwrap();
        st.compact(4).unwrap();
        assert_eq!(st.first_index().unwrap(), 5);
        assert_eq!(st.term(4).unwrap(), 2);
        assert_eq!(st.entries(4, 6, u64::MAX), Err(StorageError::Compacted));
        assert_eq!(st.entries(5, 6, 0).unwrap(), vec![ent(5, 3)]);
        assert_eq!(st.initial_state().unwrap().1.voters, vec![1, 2]);
    }

    #[test]
    fn entries_respect_the_byte_limit_but_return_at_least_one() {
        let mut st = MemStorage::new();
        st.append(&[ent(1, 1), ent(2, 1), ent(3, 1)]).unwrap();
        assert_eq!(st.entries(1, 4, 0).unwrap().len(), 1);
        let one = ent(1, 1).size_bytes();
        assert_eq!(st.entries(1, 4, 2 * one).unwrap().len(), 2);
        assert_eq!(st.entries(1, 4, u64::MAX).unwrap().len(), 3);
    }

    #[test]
    fn apply_snapshot_drops_a_disagreeing_log() {
        let mut st = MemStorage::new();
        st.append(&[ent(1, 1), ent(2, 1), ent(3, 1)]).unwrap();
        let snap = Snapshot {
            meta: SnapshotMeta {
                index: 5,
                term: 4,
                conf_state: ConfState::with_voters([1]),
            },
            data: Vec::new(),
        };
        st.apply_snapshot(snap).unwrap();
        assert_eq!(st.first_index().unwrap(), 6);
        assert_eq!(st.last_index().unwrap(), 5);
        assert_eq!(st.hard_state().commit, 5);
    }
}
