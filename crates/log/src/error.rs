//! Error type of the log.

use std::io;
use std::path::PathBuf;

/// Result alias for log operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A durability failure (a write or fsync of log data, hard state or a new segment
    /// failed). The log has stopped accepting work; the owning shard must abort, because the
    /// page cache may have dropped data it will never write (retrying would be a lie).
    #[error("fatal durability failure: {0}")]
    Fatal(String),
    /// An I/O error outside the durability path (opening, reading, listing files).
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path involved.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The files on disk are damaged or inconsistent; the log refuses to start (or a read
    /// found a record that no longer matches its checksum).
    #[error("corrupt log: {file}: offset {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset inside it.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The requested index is below the first index still kept.
    #[error("index {index} is compacted (first available is {first_index})")]
    Compacted {
        /// The requested index.
        index: u64,
        /// The first index still available.
        first_index: u64,
    },
    /// The requested index is beyond the last index.
    #[error("index {index} is not in the log (last index is {last_index})")]
    Unavailable {
        /// The requested index.
        index: u64,
        /// The last index present.
        last_index: u64,
    },
    /// The caller broke a precondition (discontinuous append, bad range, bad option).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Too many bytes are waiting to be written; the caller must bound its inflight appends.
    #[error("log overloaded: {pending_bytes} bytes pending, limit {pending_bytes_max}")]
    Overloaded {
        /// Bytes queued now.
        pending_bytes: usize,
        /// The configured limit.
        pending_bytes_max: usize,
    },
    /// O_DIRECT was requested but the filesystem refused it (tmpfs, some overlay setups).
    #[error("O_DIRECT is not supported for {path}: {source}")]
    DirectIoUnsupported {
        /// The file that could not be opened with O_DIRECT.
        path: PathBuf,
        /// The error from open(2).
        #[source]
        source: io::Error,
    },
    /// The log was closed.
    #[error("log is closed")]
    Closed,
}

impl Error {
    /// True when the shard owning this log must stop (a durability failure).
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::Fatal(_))
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
