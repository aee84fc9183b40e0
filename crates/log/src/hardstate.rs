//! Hard state (term, vote, commit) in a small file of two checksummed slots.
//!
//! Each save writes the slot *not* holding the newest value, with a higher sequence number,
//! then fdatasyncs. A crash in the middle can only damage the slot being written, so the
//! other slot still holds the previous value: a reader gets either the old or the new state.
//! The file is born (atomically, by rename) with slot 0 holding the default state, so even
//! a torn first save leaves a valid older slot.

use std::fs;
use std::io::Write;

use std::path::Path;

use crate::error::{Error, Result};

/// Raft hard state: what must survive a restart for the node to stay safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct HardState {
    /// Current term.
    pub term: u64,
    /// Node voted for in `term` (0 = none).
    pub vote: u64,
    /// Highest index known committed.
    pub commit: u64,
}

pub(crate) const FILE_NAME: &str = "hardstate";
const MAGIC: u32 = 0x3153_484d; // "MHS1"
pub(crate) const SLOT_BYTES: usize = 40;
/// Slots live in separate 4 KiB blocks so a torn write of one never touches the other.
pub(crate) const SLOT_OFFSETS: [u64; 2] = [0, 4096];
const FILE_BYTES: usize = 8192;

pub(crate) fn encode_slot(seq: u64, hs: &HardState) -> Vec<u8> {
    let mut b = vec![0u8; SLOT_BYTES];
    b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    b[8..16].copy_from_slice(&seq.to_le_bytes());
    b[16..24].copy_from_slice(&hs.term.to_le_bytes());
    b[24..32].copy_from_slice(&hs.vote.to_le_bytes());
    b[32..40].copy_from_slice(&hs.commit.to_le_bytes());
    let crc = slot_crc(&b);
    b[4..8].copy_from_slice(&crc.to_le_bytes());
    b
}

fn slot_crc(b: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&b[0..4]);
    h.update(&b[8..SLOT_BYTES]);
    h.finalize()
}

#[derive(Debug, PartialEq, Eq)]
enum Slot {
    Empty,
    Valid(u64, HardState),
    Damaged,
}

fn decode_slot(b: &[u8]) -> Slot {
    if b.len() < SLOT_BYTES {
        return if b.iter().all(|&x| x == 0) {
            Slot::Empty
        } else {
            Slot::Damaged
        };
    }
    let b = &b[..SLOT_BYTES];
    if b.iter().all(|&x| x == 0) {
        return Slot::Empty;
    }
    let word = |r: std::ops::Range<usize>| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[r]);
        u64::from_le_bytes(w)
    };
    let magic = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let crc = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    if magic != MAGIC || crc != slot_crc(b) {
        return Slot::Damaged;
    }
    Slot::Valid(
        word(8..16),
        HardState {
            term: word(16..24),
            vote: word(24..32),
            commit: word(32..40),
        },
    )
}

/// What loading found.
pub(crate) struct Loaded {
    pub state: HardState,
    /// Sequence number of the newest valid slot.
    pub seq: u64,
    /// Slot index the next save goes to.
    pub next_slot: usize,
    /// One slot was damaged and the other (older or only) value was used.
    pub fell_back: bool,
}

/// Loads the hard state, creating the file if the directory has none.
pub(crate) fn load_or_create(dir: &Path) -> Result<Loaded> {
    let path = dir.join(FILE_NAME);
    let data = match fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create(dir)?;
            return Ok(Loaded {
                state: HardState::default(),
                seq: 0,
                next_slot: 1,
                fell_back: false,
            });
        }
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    let slot = |i: usize| {
        let start = SLOT_OFFSETS[i] as usize;
        decode_slot(data.get(start..).unwrap_or(&[]))
    };
    let (a, b) = (slot(0), slot(1));
    let pick = |i: usize, seq: u64, hs: HardState, fell_back: bool| Loaded {
        state: hs,
        seq,
        next_slot: 1 - i,
        fell_back,
    };
    let loaded = match (a, b) {
        (Slot::Valid(sa, ha), Slot::Valid(sb, hb)) => {
            if sa >= sb {
                pick(0, sa, ha, false)
            } else {
                pick(1, sb, hb, false)
            }
        }
        (Slot::Valid(s, h), Slot::Empty) => pick(0, s, h, false),
        (Slot::Empty, Slot::Valid(s, h)) => pick(1, s, h, false),
        (Slot::Valid(s, h), Slot::Damaged) => pick(0, s, h, true),
        (Slot::Damaged, Slot::Valid(s, h)) => pick(1, s, h, true),
        (Slot::Empty, Slot::Empty) => pick(1, 0, HardState::default(), false),
        (x, _) => {
            let offset = if x == Slot::Damaged {
                SLOT_OFFSETS[0]
            } else {
                SLOT_OFFSETS[1]
            };
            return Err(Error::Corrupt {
                file: path,
                offset,
                reason: "hard state file has no valid slot".into(),
            });
        }
    };
    if loaded.fell_back {
        tracing::warn!(
            file = %path.display(),
            "one hard state slot is damaged (torn save or media damage); using the other: {:?}",
            loaded.state
        );
    }
    Ok(loaded)
}

fn create(dir: &Path) -> Result<()> {
    let path = dir.join(FILE_NAME);
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let mut content = vec![0u8; FILE_BYTES];
    content[..SLOT_BYTES].copy_from_slice(&encode_slot(0, &HardState::default()));
    let ctx = |what: &str| format!("{what} {}", tmp.display());
    let mut f = fs::File::create(&tmp).map_err(|e| Error::io(ctx("creating"), e))?;
    f.write_all(&content)
        .map_err(|e| Error::Fatal(format!("writing {}: {e}", tmp.display())))?;
    f.sync_all()
        .map_err(|e| Error::Fatal(format!("fsync {}: {e}", tmp.display())))?;
    fs::rename(&tmp, &path).map_err(|e| Error::io(ctx("renaming"), e))?;
    crate::fsutil::sync_dir(dir)
}

/// Synchronous save, used by tests and tools; the log's writer task saves asynchronously.
#[cfg(test)]
pub(crate) fn write_slot_sync(
    file: &fs::File,
    slot: usize,
    seq: u64,
    hs: &HardState,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(&encode_slot(seq, hs), SLOT_OFFSETS[slot])?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternates_slots_and_picks_newest() {
        let dir = tempfile::tempdir().unwrap();
        let l = load_or_create(dir.path()).unwrap();
        assert_eq!(l.state, HardState::default());
        let f = fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join(FILE_NAME))
            .unwrap();
        let (mut slot, mut seq) = (l.next_slot, l.seq);
        for t in 1..=5u64 {
            seq += 1;
            write_slot_sync(
                &f,
                slot,
                seq,
                &HardState {
                    term: t,
                    vote: 2,
                    commit: t * 10,
                },
            )
            .unwrap();
            slot = 1 - slot;
            let l = load_or_create(dir.path()).unwrap();
            assert_eq!(l.state.term, t);
            assert_eq!(l.next_slot, slot);
            assert!(!l.fell_back);
        }
    }
}
