//! Per-opcode task counters and their Prometheus text.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::proto::op;

/// What happened to tasks of one opcode (counters, since start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounters {
    /// Async tasks put in a node's map, and sync tasks started.
    pub queued: u64,
    /// Written to the node and acknowledged on the connection.
    pub sent: u64,
    /// Answered with success (async: `Status` 1 in the response; sync: OpOk).
    pub acked: u64,
    /// A send that failed (connect, write, no ack) or an answer reporting failure.
    pub failed: u64,
    /// Given up: refused by a full map, 5 unanswered sends, 100 s without an answer, or
    /// discarded when this node stopped driving.
    pub dropped: u64,
}

impl OpCounters {
    fn add(&mut self, o: &OpCounters) {
        self.queued += o.queued;
        self.sent += o.sent;
        self.acked += o.acked;
        self.failed += o.failed;
        self.dropped += o.dropped;
    }
}

/// One shard's facts for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    pub per_op: BTreeMap<u8, OpCounters>,
    pub nodes_tracked: u64,
    pub nodes_active: u64,
    pub tasks_pending: u64,
    pub driving: bool,
    pub heartbeat_rounds: u64,
    /// Milliseconds the last heartbeat round started after it was due.
    pub heartbeat_lag_ms: u64,
    /// The longest wait between two successful answers of one node during the last full
    /// heartbeat interval (goal: at most the interval plus the answer's travel).
    pub heartbeat_gap_max_ms: u64,
}

/// Renders the snapshots of every shard as Prometheus text (one series per opcode and
/// event, summed over shards; gauges per shard), and the configured limits.
pub fn render(shards: &[MetricsSnapshot], limits: &[(&str, u64)]) -> String {
    let mut total: BTreeMap<u8, OpCounters> = BTreeMap::new();
    for s in shards {
        for (code, c) in &s.per_op {
            total.entry(*code).or_default().add(c);
        }
    }
    let mut out = String::with_capacity(2048);
    let _ = writeln!(
        out,
        "# HELP mast_admin_tasks_total Admin tasks by opcode and event (queued, sent, acked, failed, dropped)."
    );
    let _ = writeln!(out, "# TYPE mast_admin_tasks_total counter");
    for (code, c) in &total {
        let name = op::name(*code);
        for (event, v) in [
            ("queued", c.queued),
            ("sent", c.sent),
            ("acked", c.acked),
            ("failed", c.failed),
            ("dropped", c.dropped),
        ] {
            let _ = writeln!(
                out,
                "mast_admin_tasks_total{{op=\"{name}\",opcode=\"{code}\",event=\"{event}\"}} {v}"
            );
        }
    }
    type Get = fn(&MetricsSnapshot) -> u64;
    let gauges: [(&str, &str, &str, Get); 7] = [
        (
            "mast_admin_nodes_tracked",
            "gauge",
            "Storage nodes whose liveness this shard keeps.",
            |s| s.nodes_tracked,
        ),
        (
            "mast_admin_nodes_active",
            "gauge",
            "Storage nodes this shard judges active.",
            |s| s.nodes_active,
        ),
        (
            "mast_admin_tasks_pending",
            "gauge",
            "Async admin tasks waiting for an answer.",
            |s| s.tasks_pending,
        ),
        (
            "mast_admin_driving",
            "gauge",
            "1 when this shard sends heartbeats and tasks (this node is the master).",
            |s| u64::from(s.driving),
        ),
        (
            "mast_admin_heartbeat_rounds_total",
            "counter",
            "Heartbeat rounds run.",
            |s| s.heartbeat_rounds,
        ),
        (
            "mast_admin_heartbeat_lag_ms",
            "gauge",
            "How late the last heartbeat round started, in ms.",
            |s| s.heartbeat_lag_ms,
        ),
        (
            "mast_admin_heartbeat_gap_max_ms",
            "gauge",
            "Longest wait between two successful heartbeat answers of one node, over the last heartbeat interval, in ms.",
            |s| s.heartbeat_gap_max_ms,
        ),
    ];
    let _ = writeln!(
        out,
        "# HELP mast_admin_limit Configured intervals and limits of the admin task manager."
    );
    let _ = writeln!(out, "# TYPE mast_admin_limit gauge");
    for (name, v) in limits {
        let _ = writeln!(out, "mast_admin_limit{{name=\"{name}\"}} {v}");
    }
    for (name, kind, help, get) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (i, s) in shards.iter().enumerate() {
            let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {}", get(s));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_summed_counters_per_opcode() {
        let mut a = MetricsSnapshot::default();
        a.per_op.insert(
            op::DATA_NODE_HEARTBEAT,
            OpCounters {
                queued: 2,
                sent: 2,
                acked: 1,
                failed: 1,
                dropped: 0,
            },
        );
        let mut b = a.clone();
        b.driving = true;
        let text = render(&[a, b], &[("resend_after_ms", 5000)]);
        assert!(text.contains("mast_admin_limit{name=\"resend_after_ms\"} 5000"));
        assert!(text.contains(
            "mast_admin_tasks_total{op=\"data_node_heartbeat\",opcode=\"99\",event=\"queued\"} 4"
        ));
        assert!(text.contains("mast_admin_driving{shard=\"1\"} 1"));
        assert!(text.contains("mast_admin_driving{shard=\"0\"} 0"));
    }
}
