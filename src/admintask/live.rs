//! Per-node liveness and usage in leader memory: a pure core with an explicit clock.
//!
//! Rules (reference §7):
//! - a node the master starts driving in steady state starts inactive, until its first
//!   successful heartbeat answer;
//! - a successful answer (`Status` 1) makes it active and updates its usage, zone and
//!   partition reports; a failed one changes nothing (the node is not healthy);
//! - at each heartbeat round a node whose last successful answer is older than
//!   `inactive_after_ms` becomes inactive;
//! - when this node *takes over* (becomes the driving master: leader change or start) every
//!   known node keeps its state and its silence is counted from the takeover, so it gets a
//!   whole `inactive_after_ms` before being judged; a node first seen during a takeover
//!   round starts active (the previous leader judged it; mast does not replicate liveness).

use std::collections::HashMap;

use super::proto::{PartitionReport, Role, TaskResponse};

/// What the registry's routes display about a node (`/dataNode/get`, `/metaNode/get`,
/// `/admin/getCluster` …). Leader memory, not replicated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeLive {
    pub addr: String,
    pub id: u64,
    pub role: Option<Role>,
    pub is_active: bool,
    /// Unix seconds of the last successful heartbeat answer; 0 = never.
    pub report_time_unix_s: i64,
    /// Data nodes: disk bytes. Meta nodes: memory bytes.
    pub total: u64,
    pub used: u64,
    pub available: u64,
    pub data_partition_count: u64,
    pub meta_partition_count: u64,
    /// The last answer's partition reports (at most `PARTITION_REPORTS_MAX`).
    pub partition_reports: Vec<PartitionReport>,
    /// The zone the node reported in its last answer ("" before any).
    pub zone_reported: String,
    /// The zone the registry has the node in ("" if the source does not say).
    pub zone_registered: String,
    /// Successful heartbeat answers received since this node started driving it.
    pub heartbeats_answered: u64,
}

impl NodeLive {
    /// `Used / Total`, 0 when the total is unknown.
    pub fn usage_ratio(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.used as f64 / self.total as f64
        }
    }
}

#[derive(Debug, Clone)]
struct Tracked {
    live: NodeLive,
    /// Monotonic ms of the last successful answer or of the takeover, whichever is later.
    heard_ms: u64,
    /// Monotonic ms of the last successful answer; 0 = none since this node started driving.
    answered_ms: u64,
}

/// The liveness table of one shard (the nodes whose addresses hash to it).
#[derive(Debug, Clone, Default)]
pub struct LiveTable {
    nodes: HashMap<String, Tracked>,
    /// Nodes whose `is_active` is true, kept so `/metrics` does not walk the table.
    active: usize,
    /// The longest wait between two successful answers of one node since the last
    /// [`LiveTable::take_gap_max_ms`]: what "every heartbeat applied within its interval"
    /// is judged by.
    gap_max_ms: u64,
    /// Counts every change of a node's `is_active` and every node added or removed: what a
    /// cached listing of nodes depends on besides the registry.
    changes: u64,
}

impl LiveTable {
    pub fn new() -> Self {
        LiveTable::default()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// How many times a node turned active or inactive, joined or left (see `changes`).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Nodes judged active.
    pub fn active_count(&self) -> usize {
        self.active
    }

    /// The longest gap between two successful answers of one node seen since the last
    /// call, and starts a new window.
    pub fn take_gap_max_ms(&mut self) -> u64 {
        std::mem::take(&mut self.gap_max_ms)
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn get(&self, addr: &str) -> Option<&NodeLive> {
        self.nodes.get(addr).map(|t| &t.live)
    }

    pub fn addrs(&self) -> impl Iterator<Item = &String> {
        self.nodes.keys()
    }

    pub fn all(&self) -> impl Iterator<Item = &NodeLive> {
        self.nodes.values().map(|t| &t.live)
    }

    /// Makes the table follow the registry: adds nodes it lacks (inactive, or active when
    /// `takeover` — see the module rules), removes nodes no longer listed. Returns the
    /// addresses removed.
    pub fn sync(
        &mut self,
        nodes: &[(String, u64, Role, String)],
        now_ms: u64,
        takeover: bool,
    ) -> Vec<String> {
        let listed: std::collections::HashSet<&str> =
            nodes.iter().map(|(a, ..)| a.as_str()).collect();
        let removed: Vec<String> = self
            .nodes
            .keys()
            .filter(|a| !listed.contains(a.as_str()))
            .cloned()
            .collect();
        for a in &removed {
            if self.nodes.remove(a).is_some_and(|t| t.live.is_active) {
                self.active -= 1;
            }
            self.changes += 1;
        }
        for (addr, id, role, zone) in nodes {
            let t = match self.nodes.get_mut(addr.as_str()) {
                Some(t) => t,
                None => {
                    self.active += usize::from(takeover);
                    self.changes += 1;
                    self.nodes.entry(addr.clone()).or_insert(Tracked {
                        live: NodeLive {
                            addr: addr.clone(),
                            is_active: takeover,
                            ..NodeLive::default()
                        },
                        heard_ms: now_ms,
                        answered_ms: 0,
                    })
                }
            };
            t.live.id = *id;
            t.live.role = Some(*role);
            if t.live.zone_registered != *zone {
                t.live.zone_registered = zone.clone();
            }
        }
        removed
    }

    /// Records the zone the registry now has the node in (after a move was proposed), so
    /// the next answers do not ask for the same move again.
    pub fn set_zone_registered(&mut self, addr: &str, zone: &str) {
        if let Some(t) = self.nodes.get_mut(addr) {
            t.live.zone_registered = zone.to_string();
        }
    }

    /// A takeover at `now_ms`: every node's silence counts from now.
    pub fn takeover(&mut self, now_ms: u64) {
        for t in self.nodes.values_mut() {
            t.heard_ms = t.heard_ms.max(now_ms);
            // A gap spanning the time this node did not drive is not a late heartbeat.
            t.answered_ms = 0;
        }
    }

    /// Marks inactive every node silent for `inactive_after_ms` or more. Returns the
    /// addresses that went inactive now.
    pub fn judge(&mut self, now_ms: u64, inactive_after_ms: u64) -> Vec<String> {
        let mut gone = Vec::new();
        for (addr, t) in &mut self.nodes {
            if t.live.is_active && now_ms.saturating_sub(t.heard_ms) >= inactive_after_ms {
                t.live.is_active = false;
                self.active -= 1;
                self.changes += 1;
                gone.push(addr.clone());
            }
        }
        gone
    }

    /// Applies a heartbeat answer. Returns false when the node is not in the table (not
    /// registered, or on another shard) or the answer is a failure. The partition reports
    /// are moved out of `response` into the table (a heartbeat carries a hundred of them,
    /// and 1,666 heartbeats a second arrive at 10,000 nodes: no copies).
    pub fn apply_heartbeat(
        &mut self,
        addr: &str,
        response: &mut TaskResponse,
        now_ms: u64,
        now_unix_s: i64,
    ) -> bool {
        let Some(t) = self.nodes.get_mut(addr) else {
            return false;
        };
        let TaskResponse::Heartbeat {
            status,
            total,
            used,
            available,
            zone_name,
            partition_count,
            reports,
            ..
        } = response
        else {
            return false;
        };
        if *status != 1 {
            return false;
        }
        if t.answered_ms != 0 {
            self.gap_max_ms = self.gap_max_ms.max(now_ms.saturating_sub(t.answered_ms));
        }
        t.answered_ms = now_ms;
        let l = &mut t.live;
        if !l.is_active {
            self.active += 1;
            self.changes += 1;
        }
        l.is_active = true;
        l.report_time_unix_s = now_unix_s;
        l.total = *total;
        l.used = *used;
        l.available = *available;
        match l.role {
            Some(Role::Meta) => l.meta_partition_count = *partition_count,
            _ => l.data_partition_count = *partition_count,
        }
        l.partition_reports = std::mem::take(reports);
        if l.zone_reported != *zone_name {
            l.zone_reported = zone_name.clone();
        }
        l.heartbeats_answered += 1;
        t.heard_ms = t.heard_ms.max(now_ms);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INACTIVE_MS: u64 = 18_000;

    fn ok(total: u64, used: u64) -> TaskResponse {
        TaskResponse::Heartbeat {
            status: 1,
            result: String::new(),
            total,
            used,
            available: total - used,
            zone_name: "z".into(),
            partition_count: 2,
            reports: vec![PartitionReport::default(); 2],
        }
    }

    fn table(now: u64, takeover: bool) -> LiveTable {
        let mut t = LiveTable::new();
        t.sync(&[("a:1".into(), 1, Role::Data, "z".into())], now, takeover);
        t
    }

    #[test]
    fn a_new_node_is_inactive_until_it_answers() {
        let mut t = table(0, false);
        assert!(!t.get("a:1").unwrap().is_active);
        assert!(t.apply_heartbeat("a:1", &mut ok(100, 30), 1_000, 77));
        let l = t.get("a:1").unwrap();
        assert!(l.is_active);
        assert_eq!((l.total, l.used, l.available), (100, 30, 70));
        assert_eq!(l.report_time_unix_s, 77);
        assert_eq!(l.data_partition_count, 2);
        assert_eq!(l.zone_reported, "z");
    }

    #[test]
    fn inactive_after_three_missed_intervals_then_reactivated() {
        let mut t = table(0, false);
        t.apply_heartbeat("a:1", &mut ok(1, 0), 0, 1);
        assert!(t.judge(6_000, INACTIVE_MS).is_empty());
        assert!(t.judge(12_000, INACTIVE_MS).is_empty());
        assert!(t.judge(17_999, INACTIVE_MS).is_empty());
        assert_eq!(t.judge(18_000, INACTIVE_MS), vec!["a:1".to_string()]);
        assert!(!t.get("a:1").unwrap().is_active);
        assert!(t.apply_heartbeat("a:1", &mut ok(1, 0), 19_000, 2));
        assert!(t.get("a:1").unwrap().is_active);
        assert!(t.judge(36_999, INACTIVE_MS).is_empty());
    }

    #[test]
    fn a_failed_answer_keeps_the_node_silent() {
        let mut t = table(0, false);
        let mut failed = TaskResponse::Heartbeat {
            status: 2,
            result: "disk error".into(),
            total: 5,
            used: 5,
            available: 0,
            zone_name: String::new(),
            partition_count: 0,
            reports: vec![],
        };
        assert!(!t.apply_heartbeat("a:1", &mut failed, 1, 1));
        assert!(!t.get("a:1").unwrap().is_active);
        assert_eq!(t.get("a:1").unwrap().total, 0);
        assert!(
            !t.apply_heartbeat("nope:1", &mut ok(1, 0), 1, 1),
            "unknown node"
        );
    }

    #[test]
    fn a_takeover_gives_every_node_a_full_window() {
        let mut t = table(0, false);
        t.apply_heartbeat("a:1", &mut ok(1, 0), 0, 1);
        // Silent for 17 s, then this node takes over: judged from the takeover.
        t.takeover(17_000);
        assert!(t.judge(18_000, INACTIVE_MS).is_empty());
        assert!(t.judge(34_999, INACTIVE_MS).is_empty());
        assert_eq!(t.judge(35_000, INACTIVE_MS).len(), 1);
    }

    #[test]
    fn nodes_first_seen_at_a_takeover_start_active() {
        let mut t = table(5_000, true);
        assert!(t.get("a:1").unwrap().is_active);
        assert!(t.judge(22_999, INACTIVE_MS).is_empty());
        assert_eq!(t.judge(23_000, INACTIVE_MS).len(), 1);
    }

    #[test]
    fn sync_follows_the_registry() {
        let mut t = table(0, false);
        let removed = t.sync(&[("b:2".into(), 2, Role::Meta, "z2".into())], 1, false);
        assert_eq!(removed, vec!["a:1".to_string()]);
        assert!(t.get("a:1").is_none());
        assert_eq!(t.get("b:2").unwrap().role, Some(Role::Meta));
        assert_eq!(t.get("b:2").unwrap().zone_registered, "z2");
        t.set_zone_registered("b:2", "z3");
        assert_eq!(t.get("b:2").unwrap().zone_registered, "z3");
        t.apply_heartbeat("b:2", &mut ok(10, 1), 2, 2);
        assert_eq!(t.get("b:2").unwrap().meta_partition_count, 2);
    }

    #[test]
    fn active_count_changes_and_gaps_follow_the_answers() {
        let mut t = table(0, false);
        assert_eq!((t.active_count(), t.changes()), (0, 1));
        t.apply_heartbeat("a:1", &mut ok(1, 0), 1_000, 1);
        assert_eq!((t.active_count(), t.changes()), (1, 2));
        // Another answer changes usage only: no change a node listing shows.
        t.apply_heartbeat("a:1", &mut ok(1, 0), 7_200, 1);
        assert_eq!(t.changes(), 2);
        assert_eq!(t.take_gap_max_ms(), 6_200);
        assert_eq!(t.take_gap_max_ms(), 0, "a new window");
        t.judge(30_000, INACTIVE_MS);
        assert_eq!((t.active_count(), t.changes()), (0, 3));
        // Silence across a takeover is not a late heartbeat.
        t.takeover(40_000);
        t.apply_heartbeat("a:1", &mut ok(1, 0), 41_000, 1);
        assert_eq!(t.take_gap_max_ms(), 0);
        t.sync(&[], 42_000, false);
        assert_eq!((t.active_count(), t.changes()), (0, 5));
    }
}
