//! `mast-log`: the durable, segmented, append-only raft log of one shard.
//!
//! See `README.md` in this crate for the on-disk format, the durability contract and the
//! recovery rules. In short: [`Log::append`] returns a [`Durable`] future that completes
//! only after the fdatasync covering the entries; concurrent appends are group-committed
//! (one write + one fdatasync per batch, through io_uring); recovery truncates a torn tail
//! of the last segment and refuses to start on any other damage, naming file and offset.

mod aligned;
mod error;
mod fsutil;
mod hardstate;
mod log;
mod options;
pub mod record;
mod scan;
mod snapshot;

pub use crate::error::{Error, Result};
pub use crate::hardstate::HardState;
pub use crate::log::{probe_direct_io, Durable, EntryRecord, Log, LogStats, Recovered};
pub use crate::options::{LogOptions, RecoveryMode, DIRECT_IO_ALIGN_BYTES};
pub use crate::scan::TailTruncation;
pub use crate::snapshot::SnapshotMeta;

/// File name of the segment whose first entry is `first_index` (for tools and tests).
pub fn segment_file_name(first_index: u64) -> String {
    scan::segment_file_name(first_index)
}

/// File name of the hard-state file inside a log directory.
pub const HARD_STATE_FILE: &str = hardstate::FILE_NAME;
