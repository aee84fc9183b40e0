//! Node-level endpoints every shard serves: `/healthz`, `/status`, `/metrics`.
//!
//! `/status` and `/metrics` gather per-shard facts with one cross-shard call per shard, so a
//! scrape sees every shard no matter which one the kernel handed the connection to.

use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use mast_http::{HttpMetricsSnapshot, Method, Request, Response, Router};
use serde::Serialize;

use super::shard::Shard;
use crate::replica::GroupStatus;
use crate::services::ServiceStats;

/// What one shard reports about itself; `Send` so it can cross shards.
#[derive(Debug, Clone, Serialize)]
pub struct ShardFacts {
    pub shard: usize,
    pub cpu: usize,
    pub pinned: bool,
    pub driver: &'static str,
    pub connections_active: u64,
    pub requests_total: u64,
    pub xshard_queue_depth: usize,
    pub xshard_submitted_total: u64,
    pub xshard_rejected_full_total: u64,
    pub raft: GroupStatus,
    pub peers: Vec<PeerView>,
    /// The TSO and ID allocator (shard 0 only: they run on group 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_services: Option<ServiceStats>,
    #[serde(skip)]
    pub http: HttpMetricsSnapshot,
    #[serde(skip)]
    pub loop_stalls: super::stalls::LoopStallsSnapshot,
}

/// The peer transport's view of one other member, per shard.
#[derive(Debug, Clone, Serialize)]
pub struct PeerView {
    pub id: u64,
    pub connected: bool,
    pub frames_sent: u64,
    pub frames_received: u64,
    pub frames_dropped: u64,
}

fn facts(shard: &Shard) -> ShardFacts {
    let http = shard.http_metrics.snapshot();
    let stats = shard.mesh.queue_stats(shard.id);
    ShardFacts {
        shard: shard.id,
        cpu: shard.cpu,
        pinned: shard.pinned,
        driver: shard.driver.as_str(),
        connections_active: http.connections_active,
        requests_total: http.requests.values().sum(),
        xshard_queue_depth: shard.mesh.queue_depth(shard.id),
        xshard_submitted_total: stats.map_or(0, |s| s.submitted.load(Ordering::Relaxed)),
        xshard_rejected_full_total: stats.map_or(0, |s| s.rejected_full.load(Ordering::Relaxed)),
        raft: shard.group.status(),
        peers: shard
            .group
            .transport_stats()
            .peers
            .iter()
            .map(|p| PeerView {
                id: p.node_id,
                connected: p.connected,
                frames_sent: p.frames_sent,
                frames_received: p.frames_received,
                frames_dropped: p.frames_dropped,
            })
            .collect(),
        leader_services: (shard.id == 0).then(|| shard.services.stats(&shard.group)),
        http,
        loop_stalls: shard.loop_stalls.snapshot(),
    }
}

/// Facts from every shard, in shard order. A shard that cannot answer is left out (it is
/// stopping); the caller sees fewer entries than `shards`.
async fn all_facts(me: &Rc<Shard>) -> Vec<ShardFacts> {
    let mut out = Vec::with_capacity(me.mesh.shards());
    for s in 0..me.mesh.shards() {
        if let Ok(f) = me
            .run_on(s, |shard: Rc<Shard>| async move { facts(&shard) })
            .await
        {
            out.push(f);
        }
    }
    out
}

#[derive(Serialize)]
struct MemberView {
    id: u64,
    peer_addr: String,
    http_addr: String,
}

#[derive(Serialize)]
struct Status {
    node_id: u64,
    version: &'static str,
    uptime_ms: u64,
    http_addr: String,
    peer_addr: String,
    data_dir: String,
    log_io: &'static str,
    /// Removed from the group of at least one shard: the node serves nothing there.
    removed: bool,
    members: Vec<MemberView>,
    shards: Vec<ShardFacts>,
}

async fn status(me: Rc<Shard>) -> Response {
    let node = &me.node;
    let body = Status {
        node_id: node.id,
        version: env!("CARGO_PKG_VERSION"),
        uptime_ms: node.started.elapsed().as_millis() as u64,
        http_addr: node.http_addr.to_string(),
        peer_addr: node.peer_addr.to_string(),
        data_dir: node.data_dir.display().to_string(),
        log_io: node.log_io(),
        members: node
            .members
            .iter()
            .map(|m| MemberView {
                id: m.id,
                peer_addr: m.peer_addr.to_string(),
                http_addr: m.http_addr.to_string(),
            })
            .collect(),
        shards: Vec::new(),
        removed: false,
    };
    let shards = all_facts(&me).await;
    let body = Status {
        removed: shards.iter().any(|f| f.raft.removed),
        shards,
        ..body
    };
    Response::json(200, &body)
}

/// 200 while the node may serve; 503 `removed` once it has been removed from the cluster
/// (any shard's group), so a load balancer or operator stops sending it requests.
async fn healthz(me: Rc<Shard>) -> Response {
    let mut removed = Vec::new();
    for s in 0..me.mesh.shards() {
        // A shard that cannot answer is stopping; that is not a removal.
        let r = me
            .run_on(
                s,
                |shard: Rc<Shard>| async move { shard.group.is_removed() },
            )
            .await;
        if matches!(r, Ok(true)) {
            removed.push(s);
        }
    }
    if removed.is_empty() {
        return Response::text(200, "ok\n");
    }
    Response::error(
        503,
        "removed",
        &format!(
            "this node has been removed from the cluster (shards {removed:?}) and serves nothing"
        ),
    )
}

async fn metrics(me: Rc<Shard>) -> Response {
    let shards = all_facts(&me).await;
    let mut http = HttpMetricsSnapshot::default();
    for f in &shards {
        http.merge(&f.http);
    }
    let mut out = String::with_capacity(4096);
    let _ = writeln!(out, "# HELP mast_shards Shards answering in this process.");
    let _ = writeln!(out, "# TYPE mast_shards gauge");
    let _ = writeln!(out, "mast_shards {}", shards.len());
    let _ = writeln!(
        out,
        "# HELP mast_uptime_seconds Seconds since the process started."
    );
    let _ = writeln!(out, "# TYPE mast_uptime_seconds gauge");
    let _ = writeln!(
        out,
        "mast_uptime_seconds {}",
        me.node.started.elapsed().as_secs()
    );
    type Get = fn(&ShardFacts) -> u64;
    let per_shard: [(&str, &str, &str, Get); 15] = [
        (
            "mast_shard_http_connections_active",
            "gauge",
            "Open HTTP connections per shard.",
            |f| f.connections_active,
        ),
        (
            "mast_xshard_queue_depth",
            "gauge",
            "Cross-shard jobs waiting per shard.",
            |f| f.xshard_queue_depth as u64,
        ),
        (
            "mast_xshard_submitted_total",
            "counter",
            "Cross-shard jobs queued to each shard.",
            |f| f.xshard_submitted_total,
        ),
        (
            "mast_xshard_rejected_full_total",
            "counter",
            "Cross-shard jobs refused because the shard's queue was full.",
            |f| f.xshard_rejected_full_total,
        ),
        (
            "mast_raft_leader",
            "gauge",
            "Node id of the shard's leader as this node sees it (0: none).",
            |f| f.raft.leader,
        ),
        (
            "mast_raft_is_leader",
            "gauge",
            "1 when this node leads the shard.",
            |f| u64::from(f.raft.role == "leader"),
        ),
        ("mast_raft_term", "gauge", "Current raft term.", |f| {
            f.raft.term
        }),
        (
            "mast_raft_commit_index",
            "gauge",
            "Highest index known committed.",
            |f| f.raft.commit,
        ),
        (
            "mast_raft_applied_index",
            "gauge",
            "Highest index applied to the state machine.",
            |f| f.raft.applied,
        ),
        (
            "mast_raft_last_index",
            "gauge",
            "Last index in the log.",
            |f| f.raft.last_index,
        ),
        (
            "mast_raft_snapshot_index",
            "gauge",
            "Index of the latest snapshot.",
            |f| f.raft.snapshot_index,
        ),
        (
            "mast_log_batches_total",
            "counter",
            "Group-commit batches written to the raft log (one write each, plus an fdatasync \
             unless the log writes O_DSYNC).",
            |f| f.raft.log_batches,
        ),
        (
            "mast_log_entries_total",
            "counter",
            "Entries written in those batches; divided by batches, the mean batch size.",
            |f| f.raft.log_entries,
        ),
        (
            "mast_log_bytes_total",
            "counter",
            "Bytes written in those batches, padding included.",
            |f| f.raft.log_bytes,
        ),
        (
            "mast_log_syncs_total",
            "counter",
            "Points where a batch became durable (fdatasync calls or O_DSYNC writes).",
            |f| f.raft.log_syncs,
        ),
    ];
    for (name, kind, help, get) in per_shard {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for f in &shards {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", f.shard, get(f));
        }
    }
    render_follower_lag(&shards, &mut out);
    let stalls: Vec<_> = shards
        .iter()
        .map(|f| (f.shard, f.loop_stalls.clone()))
        .collect();
    super::stalls::render(&stalls, &mut out);
    if let Some(svc) = shards.iter().find_map(|f| f.leader_services.as_ref()) {
        render_services(svc, &mut out);
    }
    http.render_prometheus(&mut out);
    // The CubeFS admin task manager's counters (queued, sent, acked, failed, dropped per
    // opcode) and limits.
    out.push_str(&crate::admintask::metrics_text(&me).await);
    if let Some(auth) = &me.node.auth {
        auth.render_metrics(&mut out);
    }
    Response::bytes(200, "text/plain; version=0.0.4; charset=utf-8", out.into())
}

fn render_services(s: &ServiceStats, out: &mut String) {
    let rows: [(&str, &str, &str, u64); 12] = [
        ("mast_tso_serving_term", "gauge", "Group 0 term the TSO serves in on this node (0: not serving).", s.serving_term),
        ("mast_tso_window_bound_ms", "gauge", "Exclusive bound of the physical part this leader may hand out (persisted in its term).", s.tso_window_bound_ms),
        ("mast_tso_last_physical_ms", "gauge", "Physical part of the last timestamp handed out here.", s.tso_last_physical_ms),
        ("mast_tso_persisted_bound_ms", "gauge", "The TSO bound as applied in the global table.", s.tso_persisted_bound_ms),
        ("mast_tso_allocations_total", "counter", "TSO requests served by this node as leader.", s.tso_allocations),
        ("mast_tso_timestamps_total", "counter", "Timestamps handed out by this node as leader.", s.tso_timestamps),
        ("mast_tso_window_extensions_total", "counter", "TSO windows persisted through raft by this node.", s.tso_window_extensions),
        ("mast_ids_high_water", "gauge", "Exclusive bound of ids this leader may hand out (persisted in its term).", s.ids_high_water),
        ("mast_ids_next", "gauge", "Next id this leader hands out.", s.ids_next),
        ("mast_ids_persisted_high_water", "gauge", "The ID high-water mark as applied in the global table.", s.ids_persisted_high_water),
        ("mast_ids_allocations_total", "counter", "ID requests served by this node as leader.", s.ids_allocations),
        ("mast_leader_calls_relayed_total", "counter", "TSO and ID requests this node relayed to group 0's leader.", s.relayed_calls),
    ];
    for (name, kind, help, v) in rows {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {v}");
    }
}

fn render_follower_lag(shards: &[ShardFacts], out: &mut String) {
    let name = "mast_raft_follower_lag_entries";
    let _ = writeln!(
        out,
        "# HELP {name} Leader only: entries each follower is behind the leader's last index."
    );
    let _ = writeln!(out, "# TYPE {name} gauge");
    for f in shards {
        for p in &f.raft.progress {
            let _ = writeln!(
                out,
                "{name}{{shard=\"{}\",follower=\"{}\"}} {}",
                f.shard, p.id, p.lag_entries
            );
        }
    }
}

/// The node-level routes. API modules add theirs to the same router.
pub fn router(shard: Rc<Shard>) -> Router {
    let (s0, s1, s2) = (shard.clone(), shard.clone(), shard);
    Router::new()
        .route(Method::GET, "/healthz", move |_req: Request| {
            healthz(s0.clone())
        })
        .route(Method::GET, "/status", move |_req: Request| {
            status(s1.clone())
        })
        .route(Method::GET, "/metrics", move |_req: Request| {
            metrics(s2.clone())
        })
}
