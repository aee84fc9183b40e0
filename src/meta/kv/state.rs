//! The KV state machine: the shard's partition of the keyspace, changed only by applying
//! committed raft entries, so every replica that applies the same entries holds the same map.
//!
//! A key's revision is the raft index of the entry that last wrote it: unique and increasing
//! within a shard, so `If-Match: "<rev>"` is a compare-and-set that no two writers can both
//! win. Snapshots are rkyv archives of the whole map, validated (bytecheck) when loaded.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::codec;

/// Precondition of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Cond {
    Always,
    /// Only if the key exists with this revision (`If-Match: "<rev>"`).
    RevisionIs(u64),
    /// Only if the key does not exist (`If-None-Match: *`).
    Absent,
    /// Only if the key exists, whatever its revision (`If-Match: *`).
    Present,
}

/// A change to the keyspace, as proposed through raft.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Command {
    Put {
        key: String,
        value: Vec<u8>,
        cond: Cond,
    },
    Delete {
        key: String,
        cond: Cond,
    },
}

/// What applying a command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Outcome {
    /// Written (put) or removed (delete) at this revision.
    Done { revision: u64 },
    /// The precondition did not hold; nothing changed. `current` is the key's revision, if any.
    PreconditionFailed { current: Option<u64> },
    /// Delete of a key that does not exist (with `Cond::Always`): nothing changed.
    NotFound,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Item {
    pub value: Vec<u8>,
    pub revision: u64,
}

/// The archived form of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SnapshotData {
    applied: u64,
    items: Vec<(String, Item)>,
}

/// A snapshot that failed validation.
#[derive(Debug, thiserror::Error)]
#[error("invalid KV snapshot: {0}")]
pub struct SnapshotError(String);

/// One shard's keyspace.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KvState {
    items: BTreeMap<String, Item>,
    applied: u64,
    bytes: u64,
}

impl KvState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Index of the last entry applied.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes of keys and values held (for snapshot scheduling and /status).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn get(&self, key: &str) -> Option<&Item> {
        self.items.get(key)
    }

    /// Records that entry `index` was applied without changing the keyspace (a no-op or
    /// membership entry), so `applied` never goes backwards or skips.
    pub fn skip(&mut self, index: u64) {
        self.applied = self.applied.max(index);
    }

    /// Applies the command of entry `index`.
    pub fn apply(&mut self, index: u64, command: &Command) -> Outcome {
        self.applied = self.applied.max(index);
        let (key, cond) = match command {
            Command::Put { key, cond, .. } | Command::Delete { key, cond } => (key, *cond),
        };
        let current = self.items.get(key).map(|i| i.revision);
        let holds = match cond {
            Cond::Always => true,
            Cond::RevisionIs(r) => current == Some(r),
            Cond::Absent => current.is_none(),
            Cond::Present => current.is_some(),
        };
        if !holds {
            return Outcome::PreconditionFailed { current };
        }
        match command {
            Command::Put { key, value, .. } => {
                let item = Item {
                    value: value.clone(),
                    revision: index,
                };
                self.bytes += (key.len() + value.len()) as u64;
                if let Some(old) = self.items.insert(key.clone(), item) {
                    self.bytes -= (key.len() + old.value.len()) as u64;
                }
                Outcome::Done { revision: index }
            }
            Command::Delete { key, .. } => match self.items.remove(key) {
                Some(old) => {
                    self.bytes -= (key.len() + old.value.len()) as u64;
                    Outcome::Done { revision: index }
                }
                None => Outcome::NotFound,
            },
        }
    }

    /// Up to `limit` keys starting with `prefix`, in key order, with their revisions.
    pub fn list(&self, prefix: &str, limit: usize) -> Vec<(String, u64)> {
        self.items
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.revision))
            .collect()
    }

    /// The whole state as an rkyv archive.
    pub fn snapshot(&self) -> Vec<u8> {
        let data = SnapshotData {
            applied: self.applied,
            items: self
                .items
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        codec::encode(&data)
    }

    /// Rebuilds the state from [`KvState::snapshot`] bytes, validating them first.
    pub fn restore(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let data =
            codec::decode::<SnapshotData>(bytes).map_err(|e| SnapshotError(e.to_string()))?;
        let mut state = KvState {
            applied: data.applied,
            ..Default::default()
        };
        for (k, v) in data.items {
            if state.items.contains_key(&k) {
                return Err(SnapshotError(format!("key {k:?} appears twice")));
            }
            if v.revision > data.applied {
                return Err(SnapshotError(format!(
                    "key {k:?} has revision {} above applied {}",
                    v.revision, data.applied
                )));
            }
            state.bytes += (k.len() + v.value.len()) as u64;
            state.items.insert(k, v);
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn put(key: &str, value: &[u8], cond: Cond) -> Command {
        Command::Put {
            key: key.into(),
            value: value.into(),
            cond,
        }
    }

    #[test]
    fn compare_and_set_and_create_only() {
        let mut s = KvState::new();
        assert_eq!(
            s.apply(3, &put("a", b"1", Cond::Absent)),
            Outcome::Done { revision: 3 }
        );
        assert_eq!(
            s.apply(4, &put("a", b"2", Cond::Absent)),
            Outcome::PreconditionFailed { current: Some(3) }
        );
        assert_eq!(
            s.apply(5, &put("a", b"2", Cond::RevisionIs(2))),
            Outcome::PreconditionFailed { current: Some(3) }
        );
        assert_eq!(
            s.apply(6, &put("a", b"2", Cond::RevisionIs(3))),
            Outcome::Done { revision: 6 }
        );
        assert_eq!(s.get("a").unwrap().value, b"2");
        assert_eq!(
            s.apply(
                7,
                &Command::Delete {
                    key: "a".into(),
                    cond: Cond::RevisionIs(3)
                }
            ),
            Outcome::PreconditionFailed { current: Some(6) }
        );
        assert_eq!(
            s.apply(
                8,
                &Command::Delete {
                    key: "a".into(),
                    cond: Cond::Always
                }
            ),
            Outcome::Done { revision: 8 }
        );
        assert_eq!(
            s.apply(
                9,
                &Command::Delete {
                    key: "a".into(),
                    cond: Cond::Always
                }
            ),
            Outcome::NotFound
        );
        assert_eq!(
            s.apply(10, &put("a", b"x", Cond::RevisionIs(6))),
            Outcome::PreconditionFailed { current: None }
        );
        assert_eq!((s.applied(), s.bytes()), (10, 0));
    }

    #[test]
    fn list_is_prefix_bounded_and_ordered() {
        let mut s = KvState::new();
        for (i, k) in ["b/2", "a", "b/1", "b", "c", "b/10"].iter().enumerate() {
            s.apply(i as u64 + 1, &put(k, b"v", Cond::Always));
        }
        let keys: Vec<String> = s.list("b/", 10).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["b/1", "b/10", "b/2"]);
        assert_eq!(s.list("b", 2).len(), 2);
        assert_eq!(s.list("", 100).len(), 6);
        assert!(s.list("z", 10).is_empty());
    }

    #[test]
    fn corrupt_snapshots_are_refused() {
        let mut s = KvState::new();
        s.apply(1, &put("k", b"v", Cond::Always));
        let snap = s.snapshot();
        assert_eq!(KvState::restore(&snap).unwrap(), s);
        assert!(KvState::restore(&snap[..snap.len() / 2]).is_err());
        assert!(KvState::restore(b"").is_err());
    }

    fn command() -> impl Strategy<Value = Command> {
        let key = prop::sample::select(vec!["a", "b", "c", "dd"]).prop_map(String::from);
        let cond = prop_oneof![
            Just(Cond::Always),
            Just(Cond::Absent),
            (0u64..12).prop_map(Cond::RevisionIs)
        ];
        prop_oneof![
            (
                key.clone(),
                prop::collection::vec(any::<u8>(), 0..8),
                cond.clone()
            )
                .prop_map(|(key, value, cond)| Command::Put { key, value, cond }),
            (key, cond).prop_map(|(key, cond)| Command::Delete { key, cond }),
        ]
    }

    proptest! {
        /// Replicas that apply the same entries agree, and a snapshot taken anywhere restores
        /// to an equal state that then evolves identically.
        #[test]
        fn snapshots_restore_equal_states(cmds in prop::collection::vec(command(), 0..40), cut in 0usize..40) {
            let mut a = KvState::new();
            let mut b = KvState::new();
            let cut = cut.min(cmds.len());
            for (i, c) in cmds[..cut].iter().enumerate() {
                a.apply(i as u64 + 1, c);
            }
            b = if cut > 0 { KvState::restore(&a.snapshot()).unwrap() } else { std::mem::take(&mut b) };
            prop_assert_eq!(&a, &b);
            for (i, c) in cmds[cut..].iter().enumerate() {
                let idx = (cut + i) as u64 + 1;
                prop_assert_eq!(a.apply(idx, c), b.apply(idx, c));
            }
            prop_assert_eq!(&a, &b);
            let expected: u64 = a.items.iter().map(|(k, v)| (k.len() + v.value.len()) as u64).sum();
            prop_assert_eq!(a.bytes(), expected);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = KvState::restore(&bytes);
        }
    }
}
