//! Process states from /proc, for harnesses that pause (SIGSTOP) and kill test processes.
//!
//! Signals are delivered asynchronously: `kill(2)` returns before the target has stopped, and
//! a multi-threaded server keeps answering from the threads that have not stopped yet. So a
//! pause is only done when every thread shows state `T` in /proc, and a kill only when the
//! process has been reaped. Both wait with a deadline and fail loudly, never silently.

// Each test binary uses a different subset of the harness.
#![allow(dead_code)]

use std::fs;
use std::process::{Child, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

/// How long a SIGSTOPped process may take until every thread is stopped. A thread inside an
/// uninterruptible sleep (an fsync, an io_uring teardown) stops only when it leaves it; on a
/// loaded machine that takes a while, but not this long.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a SIGKILLed process may take until it can be reaped.
pub const REAP_TIMEOUT: Duration = Duration::from_secs(20);
const POLL_INTERVAL: Duration = Duration::from_millis(1);

/// The state letter of `/proc/<pid>/task/<tid>/stat` (or `/proc/<pid>/stat` when `tid` is
/// `None`); `None` when it no longer exists.
fn state_of(pid: i32, tid: Option<&str>) -> Option<char> {
    let path = match tid {
        Some(t) => format!("/proc/{pid}/task/{t}/stat"),
        None => format!("/proc/{pid}/stat"),
    };
    let stat = fs::read_to_string(path).ok()?;
    // The state is the first field after the parenthesised command name (which may itself
    // contain spaces and parentheses, hence the last ')').
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|s| s.chars().next())
}

/// Every thread of `pid` with its state. Threads that vanish while being listed are left out.
pub fn thread_states(pid: i32) -> Option<Vec<(String, char)>> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut out = Vec::new();
    for t in tasks.flatten() {
        let tid = t.file_name().to_string_lossy().into_owned();
        if let Some(s) = state_of(pid, Some(&tid)) {
            out.push((tid, s));
        }
    }
    Some(out)
}

fn is_stopped(state: char) -> bool {
    // `t` is a tracing stop (a debugger attached): stopped all the same.
    matches!(state, 'T' | 't')
}

fn is_gone(state: char) -> bool {
    matches!(state, 'Z' | 'X')
}

/// Waits until every thread of `pid` is stopped. An error (with the states last seen) if the
/// deadline passes first or the process exits.
pub fn wait_stopped(pid: i32, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let main = state_of(pid, None);
        let threads = thread_states(pid);
        match (main, &threads) {
            (None, _) | (_, None) => {
                return Err(format!("process {pid} exited instead of stopping"))
            }
            (Some(m), _) if is_gone(m) => {
                return Err(format!("process {pid} exited instead of stopping"))
            }
            (Some(m), Some(ts))
                if is_stopped(m) && ts.iter().all(|(_, s)| is_stopped(*s) || is_gone(*s)) =>
            {
                return Ok(())
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "process {pid} not stopped {timeout:?} after SIGSTOP: process state {main:?}, \
                 threads {threads:?}"
            ));
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Waits until `pid` is no longer stopped (after SIGCONT): its main thread left state `T`.
pub fn wait_resumed(pid: i32, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        match state_of(pid, None) {
            None => return Err(format!("process {pid} exited instead of resuming")),
            Some(s) if !is_stopped(s) => return Ok(()),
            Some(s) if Instant::now() >= deadline => {
                return Err(format!(
                    "process {pid} still in state {s} {timeout:?} after SIGCONT"
                ))
            }
            Some(_) => thread::sleep(POLL_INTERVAL),
        }
    }
}

/// SIGKILLs `child` (a no-op if it already exited) and waits, bounded, until it is reaped.
pub fn kill_and_reap(child: &mut Child, timeout: Duration) -> Result<ExitStatus, String> {
    // An error here means the process already exited: reaping it below still applies.
    let _ = child.kill();
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL_INTERVAL),
            Ok(None) => {
                let state = i32::try_from(child.id())
                    .ok()
                    .and_then(|pid| state_of(pid, None));
                return Err(format!(
                    "process {} not reaped {timeout:?} after SIGKILL (state {state:?})",
                    child.id()
                ));
            }
            Err(e) => return Err(format!("wait for process {}: {e}", child.id())),
        }
    }
}
