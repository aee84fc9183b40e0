//! Small filesystem helpers shared by the modules.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{Error, Result};

/// fsync a directory so entries created, renamed or removed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let d = fs::File::open(dir).map_err(|e| Error::io(format!("opening {}", dir.display()), e))?;
    d.sync_all()
        .map_err(|e| Error::Fatal(format!("fsync of directory {}: {e}", dir.display())))
}

/// Same as [`sync_dir`] but through io_uring, so the shard thread does not block.
pub(crate) async fn sync_dir_async(dir: &Path) -> Result<()> {
    let d = fs::File::open(dir).map_err(|e| Error::io(format!("opening {}", dir.display()), e))?;
    let f = monoio::fs::File::from_std(d)
        .map_err(|e| Error::io(format!("registering {}", dir.display()), e))?;
    f.sync_all()
        .await
        .map_err(|e| Error::Fatal(format!("fsync of directory {}: {e}", dir.display())))
}

/// Reserve `len` bytes of disk for `file` so appends never hit ENOSPC mid-batch and the
/// unwritten part reads as zeros. Falls back to a sparse extension where fallocate is not
/// supported.
pub(crate) fn preallocate(file: &fs::File, len: u64) -> io::Result<()> {
    let Ok(len_off) = libc::off_t::try_from(len) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "length too large",
        ));
    };
    // SAFETY: plain syscall on an owned, open descriptor.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len_off) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => file.set_len(len),
        _ => Err(e),
    }
}

/// Durably zero `[from, to)` of `file`: FALLOC_FL_ZERO_RANGE where supported, else plain
/// writes of zeros. The caller syncs.
pub(crate) fn zero_range(file: &fs::File, from: u64, to: u64) -> io::Result<()> {
    if to <= from {
        return Ok(());
    }
    let (Ok(off), Ok(len)) = (
        libc::off_t::try_from(from),
        libc::off_t::try_from(to - from),
    ) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "range too large",
        ));
    };
    // SAFETY: plain syscall on an owned, open descriptor.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            len,
        )
    };
    if r == 0 {
        return Ok(());
    }
    use std::os::unix::fs::FileExt;
    const CHUNK_BYTES: u64 = 1 << 20;
    let zeros = vec![0u8; CHUNK_BYTES as usize];
    let mut pos = from;
    while pos < to {
        let n = (to - pos).min(CHUNK_BYTES) as usize;
        file.write_all_at(&zeros[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

/// Takes a shared `flock` on a file the writer submits io_uring writes to. The lock lives
/// as long as the open file description, and an in-flight io_uring request keeps that alive
/// even after the process dies, so a later `wait_until_unlocked` cannot return while a
/// killed predecessor's write can still land.
pub(crate) fn lock_shared(file: &fs::File) -> io::Result<()> {
    // SAFETY: plain syscall on an owned, open descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Waits (bounded) until nobody holds a lock on `path`: the writes of a process that held
/// it have all completed.
pub(crate) fn wait_until_unlocked(path: &Path, timeout: std::time::Duration) -> Result<()> {
    let f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
    };
    let deadline = std::time::Instant::now() + timeout;
    loop {
        // SAFETY: plain syscall on an owned, open descriptor; closing `f` releases it.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(Error::io(format!("locking {}", path.display()), e));
        }
        if std::time::Instant::now() >= deadline {
            return Err(Error::io(
                format!(
                    "{} is still held by another writer (a previous process's I/O not yet finished, or a Log not closed)",
                    path.display()
                ),
                e,
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Starts background readahead of a whole file (best effort: errors are ignored, the
/// following read simply does the work itself).
pub(crate) fn advise_willneed(path: &Path) {
    if let Ok(f) = fs::File::open(path) {
        // SAFETY: plain syscall on an owned, open descriptor; the advice survives the close.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED) };
    }
}

/// Position just past the last non-zero byte of `data`, or 0 if it is all zeros.
pub(crate) fn nonzero_end(data: &[u8]) -> usize {
    const CHUNK_BYTES: usize = 4096;
    let mut end = data.len();
    while end > 0 {
        let start = end.saturating_sub(CHUNK_BYTES);
        let chunk = &data[start..end];
        if chunk.iter().fold(0u8, |acc, &b| acc | b) != 0 {
            let last = chunk.iter().rposition(|&b| b != 0).unwrap_or(0);
            return start + last + 1;
        }
        end = start;
    }
    0
}

#[cfg(test)]
mod tests {
    #[test]
    fn nonzero_end_finds_last_byte() {
        let mut v = vec![0u8; 10_000];
        assert_eq!(super::nonzero_end(&v), 0);
        v[5000] = 1;
        assert_eq!(super::nonzero_end(&v), 5001);
        v[9999] = 3;
        assert_eq!(super::nonzero_end(&v), 10_000);
    }
}
