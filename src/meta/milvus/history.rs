//! How much DD history each shard keeps (`milvus_dd_history_entries_max`,
//! `milvus_dd_history_ms`): node configuration, read when a shard's table is created or
//! restored.
//!
//! Trimming happens in apply, from the applying command's timestamp, so replicas with the
//! same limits keep the same history. Nodes should share the limits; one with other limits
//! keeps a longer or shorter history, which only moves the point below which it answers a
//! resume with "too old" (what it streams is the same either way).

use std::sync::OnceLock;

/// The most events a node may be configured to keep per shard (a restored snapshot with
/// more is refused as corrupt).
pub const DD_HISTORY_ENTRIES_LIMIT: usize = 1_000_000;
pub const DD_HISTORY_ENTRIES_MAX_DEFAULT: usize = 4096;
/// One day.
pub const DD_HISTORY_MS_DEFAULT: u64 = 24 * 3600 * 1000;
/// The TSO's logical bits: a timestamp is `physical_ms << 18 | logical`.
const LOGICAL_BITS: u32 = 18;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Events kept per shard, oldest dropped first.
    pub entries_max: usize,
    /// Events older than this (by their timestamp's physical part, against the newest
    /// applied command's) are dropped.
    pub ms: u64,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            entries_max: DD_HISTORY_ENTRIES_MAX_DEFAULT,
            ms: DD_HISTORY_MS_DEFAULT,
        }
    }
}

impl HistoryLimits {
    /// Whether an event at `event_ts` is past the time bound when a command at `now_ts`
    /// applies.
    pub fn expired(&self, event_ts: u64, now_ts: u64) -> bool {
        (event_ts >> LOGICAL_BITS).saturating_add(self.ms) < (now_ts >> LOGICAL_BITS)
    }
}

static CONFIGURED: OnceLock<HistoryLimits> = OnceLock::new();

/// Sets this node's limits (once, at start, before any shard opens its table); a second call
/// is ignored.
pub fn configure(limits: HistoryLimits) {
    let _ = CONFIGURED.set(limits);
}

/// This node's limits (the defaults until [`configure`] ran).
pub fn configured() -> HistoryLimits {
    CONFIGURED.get().copied().unwrap_or_default()
}
