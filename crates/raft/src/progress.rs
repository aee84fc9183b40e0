//! The leader's view of each follower's replication.

use std::collections::VecDeque;

/// How the leader is currently sending to a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    /// One append at a time until the follower's match index is known.
    Probe,
    /// Streaming optimistically within the inflight window.
    Replicate,
    /// A snapshot is on its way; appends are paused.
    Snapshot,
}

/// Appends sent and not yet acknowledged, bounded in count and bytes.
#[derive(Debug, Clone)]
pub(crate) struct Inflights {
    /// (last index of the message, its bytes)
    buf: VecDeque<(u64, u64)>,
    bytes: u64,
    max_msgs: usize,
    max_bytes: u64,
}

impl Inflights {
    pub fn new(max_msgs: usize, max_bytes: u64) -> Self {
        Inflights {
            buf: VecDeque::new(),
            bytes: 0,
            max_msgs,
            max_bytes,
        }
    }
    pub fn full(&self) -> bool {
        self.buf.len() >= self.max_msgs || self.bytes >= self.max_bytes
    }
    pub fn add(&mut self, last: u64, bytes: u64) {
        self.buf.push_back((last, bytes));
        self.bytes += bytes;
    }
    /// Frees every message whose last index is <= `to`.
    pub fn free_to(&mut self, to: u64) {
        while let Some(&(idx, b)) = self.buf.front() {
            if idx > to {
                break;
            }
            self.bytes -= b;
            self.buf.pop_front();
        }
    }
    pub fn free_first_one(&mut self) {
        if let Some((_, b)) = self.buf.pop_front() {
            self.bytes -= b;
        }
    }
    pub fn reset(&mut self) {
        self.buf.clear();
        self.bytes = 0;
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Progress {
    pub matched: u64,
    pub next: u64,
    pub state: ProgressState,
    /// In Probe: an append is outstanding, wait for its answer (or a heartbeat reply).
    pub probe_sent: bool,
    pub pending_snapshot: u64,
    /// Leader tick when the snapshot was sent (to give up on a lost one).
    pub snapshot_sent_tick: u64,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// Highest leader tick echoed back by this follower's heartbeat responses (the lease).
    pub lease_tick: u64,
    pub inflights: Inflights,
}

impl Progress {
    pub fn new(next: u64, max_msgs: usize, max_bytes: u64) -> Self {
        Progress {
            matched: 0,
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            pending_snapshot: 0,
            snapshot_sent_tick: 0,
            recent_active: false,
            lease_tick: 0,
            inflights: Inflights::new(max_msgs, max_bytes),
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.pending_snapshot = 0;
        self.state = state;
        self.inflights.reset();
    }

    pub fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            let pending = self.pending_snapshot;
            self.reset_state(ProgressState::Probe);
            self.next = (self.matched + 1).max(pending + 1);
        } else {
            self.reset_state(ProgressState::Probe);
            self.next = self.matched + 1;
        }
    }

    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next = self.matched + 1;
    }

    pub fn become_snapshot(&mut self, index: u64, tick: u64) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = index;
        self.snapshot_sent_tick = tick;
    }

    /// A successful append response up to `n`. Returns whether match advanced.
    pub fn maybe_update(&mut self, n: u64) -> bool {
        let updated = self.matched < n;
        if updated {
            self.matched = n;
            self.probe_sent = false;
        }
        self.next = self.next.max(n.saturating_add(1));
        updated
    }

    /// A rejection of the append at `rejected`; `hint` is where to probe next. Returns
    /// false for a stale rejection.
    pub fn maybe_decr_to(&mut self, rejected: u64, hint: u64) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false;
            }
            self.next = self.matched + 1;
            return true;
        }
        if self.next == 0 || self.next - 1 != rejected {
            return false;
        }
        self.next = rejected.min(hint.saturating_add(1)).max(self.matched + 1);
        self.probe_sent = false;
        true
    }

    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot => true,
        }
    }
}
