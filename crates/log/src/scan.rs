//! Recovery scan of the segment files of one log directory.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::options::{LogOptions, RecoveryMode};
use crate::record::{decode_record, Decoded};

const SUFFIX: &str = ".seg";
/// Segments read ahead of the one being checked during recovery.
const READAHEAD_SEGMENTS: usize = 3;

pub(crate) fn segment_file_name(first_index: u64) -> String {
    format!("{first_index:020}{SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Segment files in `dir`, sorted by first index.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let rd = fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        if let Some(first) = ent.file_name().to_str().and_then(parse_segment_name) {
            out.push((first, ent.path()));
        }
    }
    out.sort_by_key(|s| s.0);
    Ok(out)
}

fn read_into(path: &Path, buf: &mut Vec<u8>) -> Result<()> {
    use std::io::Read;
    let ctx = |e| Error::io(format!("reading {}", path.display()), e);
    let f = fs::File::open(path).map_err(ctx)?;
    let len = f.metadata().map_err(ctx)?.len();
    let len = usize::try_from(len).map_err(|_| Error::Corrupt {
        file: path.to_path_buf(),
        offset: 0,
        reason: format!("segment of {len} bytes is too large"),
    })?;
    buf.clear();
    buf.reserve(len);
    f.take(len as u64).read_to_end(buf).map_err(ctx)?;
    Ok(())
}

/// One segment as recovery found it.
pub(crate) struct ScannedSegment {
    pub first: u64,
    pub path: PathBuf,
    /// File offset of each entry, entry `first + i` at `offsets[i]`.
    pub offsets: Vec<u32>,
    /// Offset just past the last valid record (padding included).
    pub end: u64,
    pub file_len: u64,
}

/// A damaged tail that recovery cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailTruncation {
    /// The last segment's file.
    pub file: PathBuf,
    /// Offset of the first discarded byte (the end of the last valid record).
    pub offset: u64,
    /// How many bytes (up to the last non-zero one) were discarded.
    pub bytes_discarded: u64,
    /// Why the record at `offset` was rejected.
    pub reason: String,
}

pub(crate) struct ScanResult {
    pub segments: Vec<ScannedSegment>,
    /// (start index, term) runs covering every entry found.
    pub terms: Vec<(u64, u64)>,
    pub last_index: Option<u64>,
    pub truncated: Option<TailTruncation>,
    pub scanned_bytes: u64,
}

/// Scans every segment; applies the recovery rules (see the crate docs). A damaged tail of
/// the last segment that is tolerated is zeroed on disk before returning, so a later crash
/// cannot bring it back between new records.
pub(crate) fn scan(dir: &Path, opts: &LogOptions) -> Result<ScanResult> {
    let files = list_segments(dir)?;
    // Records written under other options may be larger than today's entry limit; the
    // decoder still never trusts a length beyond the bytes actually in the file.
    let payload_max = usize::MAX;
    let mut segments = Vec::with_capacity(files.len());
    let mut terms: Vec<(u64, u64)> = Vec::new();
    let mut last_index: Option<u64> = None;
    let mut last_term = 0u64;
    let mut truncated = None;
    let mut scanned_bytes = 0u64;
    let count = files.len();
    // One buffer for every segment: a fresh 64 MiB allocation per segment costs more in page
    // faults than the checksums do.
    let mut buf: Vec<u8> = Vec::new();
    // Ask the kernel to read the next few segments in the background while this one is
    // checked: on a cold cache the scan is bound by the device, which wants a deep queue.
    let readahead = |k: usize| {
        if let Some((_, p)) = files.get(k) {
            fsutil::advise_willneed(p);
        }
    };
    for k in 0..READAHEAD_SEGMENTS {
        readahead(k);
    }
    for (k, (first, path)) in files.iter().cloned().enumerate() {
        readahead(k + READAHEAD_SEGMENTS);
        let is_last = k + 1 == count;
        let corrupt = |offset: u64, reason: String| Error::Corrupt {
            file: path.clone(),
            offset,
            reason,
        };
        if first == 0 {
            return Err(corrupt(
                0,
                "segment named index 0 (indexes start at 1)".into(),
            ));
        }
        if let Some(prev_last) = last_index {
            if first != prev_last + 1 {
                return Err(corrupt(
                    0,
                    format!(
                        "gap in indexes: segment starts at {first} but the previous one ends at {prev_last} (a segment is missing)"
                    ),
                ));
            }
        }
        read_into(&path, &mut buf)?;
        let data = &buf[..];
        scanned_bytes += data.len() as u64;
        let mut offsets: Vec<u32> = Vec::new();
        let mut pos = 0usize;
        let mut expected = first;
        let mut bad: Option<String> = None;
        while pos < data.len() {
            match decode_record(&data[pos..], payload_max) {
                Ok(Decoded::End) => break,
                Ok(Decoded::Record(v, n)) => {
                    if v.index == 0 {
                        pos += n;
                        continue;
                    }
                    if v.index != expected {
                        bad = Some(format!(
                            "record has index {} where {expected} was expected",
                            v.index
                        ));
                        break;
                    }
                    if v.term < last_term {
                        bad = Some(format!(
                            "term {} goes below the previous term {last_term}",
                            v.term
                        ));
                        break;
                    }
                    let Ok(off) = u32::try_from(pos) else {
                        bad = Some("record offset beyond 4 GiB".into());
                        break;
                    };
                    offsets.push(off);
                    match terms.last() {
                        Some(&(_, t)) if t == v.term => {}
                        _ => terms.push((v.index, v.term)),
                    }
                    last_term = v.term;
                    expected += 1;
                    pos += n;
                }
                Err(e) => {
                    bad = Some(e.to_string());
                    break;
                }
            }
        }
        let end = pos.min(data.len());
        let garbage_end = end + fsutil::nonzero_end(&data[end..]);
        if bad.is_some() || garbage_end > end {
            let reason = bad.unwrap_or_else(|| {
                format!("non-zero bytes up to offset {garbage_end} after the end of the log")
            });
            if !is_last {
                return Err(corrupt(
                    end as u64,
                    format!("{reason} (not the last segment)"),
                ));
            }
            if opts.recovery == RecoveryMode::Strict {
                return Err(corrupt(
                    end as u64,
                    format!("{reason} (strict recovery refuses a damaged tail)"),
                ));
            }
            let window = opts.unsynced_window_bytes();
            if (garbage_end - end) as u64 > window {
                return Err(corrupt(
                    end as u64,
                    format!(
                        "{reason}; data continues to offset {garbage_end}, beyond one write batch ({window} bytes): damage inside acknowledged data, not a torn tail"
                    ),
                ));
            }
            tracing::warn!(
                file = %path.display(),
                offset = end,
                bytes = garbage_end - end,
                "truncating damaged log tail: {reason}"
            );
            let f = fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
            fsutil::zero_range(&f, end as u64, garbage_end as u64)
                .and_then(|_| f.sync_data())
                .map_err(|e| {
                    Error::Fatal(format!("zeroing damaged tail of {}: {e}", path.display()))
                })?;
            truncated = Some(TailTruncation {
                file: path.clone(),
                offset: end as u64,
                bytes_discarded: (garbage_end - end) as u64,
                reason,
            });
        }
        if offsets.is_empty() && !is_last {
            return Err(corrupt(
                0,
                "segment holds no entries but is not the last one".into(),
            ));
        }
        if !offsets.is_empty() {
            last_index = Some(expected - 1);
        } else if last_index.is_none() {
            // An empty first-and-last segment still fixes where the log starts.
            last_index = Some(first - 1);
        }
        segments.push(ScannedSegment {
            first,
            path,
            offsets,
            end: end as u64,
            file_len: data.len() as u64,
        });
    }
    Ok(ScanResult {
        segments,
        terms,
        last_index,
        truncated,
        scanned_bytes,
    })
}
