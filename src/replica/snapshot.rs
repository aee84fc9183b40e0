//! A replica's snapshot file: a versioned header and one section per table, so a table added
//! later restores from an older snapshot (its section is absent) and a newer snapshot is
//! refused by an older binary instead of half-read.
//!
//! ```text
//! "MASTSNAP" | format u32 | sections u32 | { tag u16 | version u16 | len u64 | bytes }*
//! ```
//! All integers little-endian. Tag 0 is the replica's own (the member address book); the
//! state machine owns every other tag.

use super::state_machine::Section;

const MAGIC: &[u8; 8] = b"MASTSNAP";
pub const FORMAT: u32 = 1;
/// The replica's member address book.
pub const TAG_MEMBERS: u16 = 0;
/// Sections per snapshot; more is a corrupt file.
const SECTIONS_MAX: u32 = 1024;

pub fn encode(sections: &[Section]) -> Vec<u8> {
    let len = 16 + sections.iter().map(|s| 12 + s.bytes.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    for s in sections {
        out.extend_from_slice(&s.tag.to_le_bytes());
        out.extend_from_slice(&s.version.to_le_bytes());
        out.extend_from_slice(&(s.bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(&s.bytes);
    }
    out
}

/// Splits a snapshot into sections, checking the frame (not the sections' contents).
pub fn decode(bytes: &[u8]) -> Result<Vec<Section>, String> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(8)? != MAGIC {
        return Err("not a mast snapshot (bad magic)".into());
    }
    let format = r.u32()?;
    if format != FORMAT {
        return Err(format!(
            "snapshot format {format} is not {FORMAT}: written by another version of mast"
        ));
    }
    let count = r.u32()?;
    if count > SECTIONS_MAX {
        return Err(format!("{count} sections (at most {SECTIONS_MAX})"));
    }
    let mut sections = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let tag = r.u16()?;
        let version = r.u16()?;
        let len = r.u64()?;
        let len = usize::try_from(len).map_err(|_| format!("section {tag} too long"))?;
        if sections.iter().any(|s: &Section| s.tag == tag) {
            return Err(format!("section {tag} appears twice"));
        }
        sections.push(Section {
            tag,
            version,
            bytes: r.take(len)?.to_vec(),
        });
    }
    if r.at != bytes.len() {
        return Err(format!(
            "{} bytes after the last section",
            bytes.len() - r.at
        ));
    }
    Ok(sections)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("truncated at offset {}", self.at))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn section() -> impl Strategy<Value = Section> {
        (
            any::<u16>(),
            any::<u16>(),
            prop::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(tag, version, bytes)| Section {
                tag,
                version,
                bytes,
            })
    }

    proptest! {
        #[test]
        fn round_trips(mut sections in prop::collection::vec(section(), 0..6)) {
            sections.sort_by_key(|s| s.tag);
            sections.dedup_by_key(|s| s.tag);
            prop_assert_eq!(decode(&encode(&sections)).unwrap(), sections);
        }

        #[test]
        fn truncation_and_garbage_are_errors(sections in prop::collection::vec(section(), 1..4), cut in 1usize..64, junk in prop::collection::vec(any::<u8>(), 0..128)) {
            let mut s = sections;
            s.sort_by_key(|s| s.tag);
            s.dedup_by_key(|s| s.tag);
            let bytes = encode(&s);
            let cut = cut.min(bytes.len());
            prop_assert!(decode(&bytes[..bytes.len() - cut]).is_err());
            let _ = decode(&junk);
        }
    }

    #[test]
    fn other_formats_are_refused() {
        let mut b = encode(&[]);
        b[8] = 2;
        assert!(decode(&b).unwrap_err().contains("another version"));
        assert!(decode(b"MASTSNA").is_err());
    }
}
