//! Snapshot files: `<index:020>.snap`, each `[magic u32][version u32][crc u32][0 u32]
//! [index u64][term u64][extra_len u32][0 u32][data_len u64]` followed by `extra` (opaque
//! metadata such as the membership) and the data. The CRC covers everything after itself.
//! Written to a temporary name, fsynced, renamed into place, and the directory fsynced, so
//! a snapshot file either is complete or does not exist under its final name.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::error::{Error, Result};

/// Describes a snapshot: the log prefix it replaces.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotMeta {
    /// Index of the last entry the snapshot covers.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// Opaque extra metadata stored with it (e.g. the encoded membership).
    pub extra: Vec<u8>,
}

const MAGIC: u32 = 0x504e_534d; // "MSNP"
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 48;
const SUFFIX: &str = ".snap";

pub(crate) fn file_name(index: u64) -> String {
    format!("{index:020}{SUFFIX}")
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Snapshot files in `dir`, newest (highest index) first.
pub(crate) fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let rd = fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        if let Some(idx) = ent.file_name().to_str().and_then(parse_name) {
            out.push((idx, ent.path()));
        }
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.0));
    Ok(out)
}

fn header(meta: &SnapshotMeta, data_len: u64) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_BYTES];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&meta.index.to_le_bytes());
    h[24..32].copy_from_slice(&meta.term.to_le_bytes());
    h[32..36].copy_from_slice(&(meta.extra.len() as u32).to_le_bytes());
    h[40..48].copy_from_slice(&data_len.to_le_bytes());
    h
}

fn crc_of(head_tail: &[u8], extra: &[u8], data: &[u8]) -> u32 {
    let mut c = crc32fast::Hasher::new();
    c.update(head_tail);
    c.update(extra);
    c.update(data);
    c.finalize()
}

/// Writes a snapshot durably; returns its final path.
pub(crate) async fn write(
    dir: &Path,
    tmp_id: u64,
    meta: &SnapshotMeta,
    data: Bytes,
) -> Result<PathBuf> {
    if meta.extra.len() > u32::MAX as usize {
        return Err(Error::InvalidArgument(
            "snapshot extra metadata too large".into(),
        ));
    }
    let final_path = dir.join(file_name(meta.index));
    let tmp = dir.join(format!("{}.{tmp_id}.tmp", file_name(meta.index)));
    let mut head = header(meta, data.len() as u64);
    let crc = crc_of(&head[12..], &meta.extra, &data);
    head[8..12].copy_from_slice(&crc.to_le_bytes());
    head.extend_from_slice(&meta.extra);
    let head_len = head.len() as u64;
    let std_file =
        fs::File::create(&tmp).map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
    let f = monoio::fs::File::from_std(std_file)
        .map_err(|e| Error::io(format!("registering {}", tmp.display()), e))?;
    let result = async {
        let (r, _) = f.write_all_at(head, 0).await;
        r.map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        let (r, _) = f.write_all_at(data, head_len).await;
        r.map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        f.sync_all()
            .await
            .map_err(|e| Error::io(format!("fsync {}", tmp.display()), e))
    }
    .await;
    if let Err(e) = result {
        // The temp file is never adopted, so a failed snapshot write is not a durability
        // failure of acknowledged state: report it and clean up.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    drop(f);
    fs::rename(&tmp, &final_path)
        .map_err(|e| Error::io(format!("renaming {}", tmp.display()), e))?;
    crate::fsutil::sync_dir_async(dir).await?;
    Ok(final_path)
}

/// Reads and fully verifies one snapshot file.
pub(crate) fn read(path: &Path, bytes_max: u64) -> Result<(SnapshotMeta, Vec<u8>)> {
    let corrupt = |offset: u64, reason: String| Error::Corrupt {
        file: path.to_path_buf(),
        offset,
        reason,
    };
    let mut f =
        fs::File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let len = f
        .metadata()
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
        .len();
    if len > bytes_max {
        return Err(corrupt(
            0,
            format!("snapshot of {len} bytes exceeds snapshot_bytes_max {bytes_max}"),
        ));
    }
    if len < HEADER_BYTES as u64 {
        return Err(corrupt(
            0,
            format!("file of {len} bytes is shorter than the header"),
        ));
    }
    let mut buf = Vec::with_capacity(len as usize);
    f.read_to_end(&mut buf)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let word32 = |o: usize| u32::from_le_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
    let word64 = |o: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&buf[o..o + 8]);
        u64::from_le_bytes(w)
    };
    if buf.len() < HEADER_BYTES {
        return Err(corrupt(0, "file shrank while reading".into()));
    }
    if word32(0) != MAGIC || word32(4) != VERSION {
        return Err(corrupt(0, "bad magic or version".into()));
    }
    let extra_len = word32(32) as u64;
    let data_len = word64(40);
    let expect = (HEADER_BYTES as u64)
        .checked_add(extra_len)
        .and_then(|n| n.checked_add(data_len));
    if expect != Some(buf.len() as u64) {
        return Err(corrupt(
            32,
            format!(
                "lengths (extra {extra_len}, data {data_len}) do not match the file size {}",
                buf.len()
            ),
        ));
    }
    let extra_end = HEADER_BYTES + extra_len as usize;
    let crc = crc_of(
        &buf[12..HEADER_BYTES],
        &buf[HEADER_BYTES..extra_end],
        &buf[extra_end..],
    );
    if crc != word32(8) {
        return Err(corrupt(8, "checksum mismatch".into()));
    }
    let meta = SnapshotMeta {
        index: word64(16),
        term: word64(24),
        extra: buf[HEADER_BYTES..extra_end].to_vec(),
    };
    if path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_name)
        != Some(meta.index)
    {
        return Err(corrupt(
            16,
            format!("file name does not match its index {}", meta.index),
        ));
    }
    let data = buf.split_off(extra_end);
    Ok((meta, data))
}

/// The newest snapshot that verifies, skipping (and logging) damaged newer ones.
pub(crate) fn newest_valid(
    dir: &Path,
    bytes_max: u64,
) -> Result<Option<(SnapshotMeta, Vec<u8>, PathBuf)>> {
    for (_, path) in list(dir)? {
        match read(&path, bytes_max) {
            Ok((meta, data)) => return Ok(Some((meta, data, path))),
            Err(e @ Error::Corrupt { .. }) => {
                tracing::warn!("skipping damaged snapshot: {e}");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}
