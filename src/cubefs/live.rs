//! The seam between the replicated registry (this part) and the nodes' liveness and usage
//! (heartbeats, leader memory, built by the admin task part).
//!
//! Liveness of a node lives on the shard its address hashes to (`crate::placement`), in that
//! shard's leader memory. The routes ask each shard through [`live_view`] for the nodes it
//! owns, from the admin task manager's heartbeat table. A node that never answered a heartbeat
//! is inactive with zero usage, which is what CubeFS shows for a node just registered.
//!
//! The other direction: the heartbeat loop iterates the registered nodes with
//! [`registered_nodes`] (all, or those a shard owns).

use std::collections::HashMap;
use std::rc::Rc;

use crate::meta::cubefs::{CubefsCommand, CubefsOutcome, CubefsState, NodeRole};
use crate::node::shard::Shard;
use crate::placement::owner_shard;
use crate::replica::GroupError;
use crate::services::{api::call, ServiceCall, ServiceError};

/// What the leader knows of a node from its heartbeats.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveInfo {
    pub is_active: bool,
    /// Last heartbeat response (unix ms; 0 = never).
    pub report_time_ms: u64,
    /// Data nodes: disk bytes; meta nodes: memory bytes.
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
    /// Data partitions (data node) or meta partitions (meta node) reported.
    pub partition_count: u64,
    pub cpu_util: f64,
}

/// A shard's view of the liveness of the nodes it owns.
pub trait LiveView {
    fn live(&self, role: NodeRole, addr: &str) -> Option<LiveInfo>;
}

/// The view of a shard that has heard from no node.
pub struct NeverHeard;

impl LiveView for NeverHeard {
    fn live(&self, _role: NodeRole, _addr: &str) -> Option<LiveInfo> {
        None
    }
}

/// Shard `shard`'s live view: the heartbeat state this shard keeps for the nodes it owns
/// (`crate::admintask`); everything else reads through here.
pub fn live_view(shard: &Shard) -> Box<dyn LiveView + '_> {
    Box::new(Heartbeats(&shard.admin_tasks))
}

/// The admin task manager's liveness table, as the registry's routes read it.
struct Heartbeats<'a>(&'a crate::admintask::AdminTasks);

impl LiveView for Heartbeats<'_> {
    fn live(&self, role: NodeRole, addr: &str) -> Option<LiveInfo> {
        self.0.with_live(addr, |n| {
            let (wanted, partitions) = match role {
                NodeRole::Data => (crate::admintask::Role::Data, n.data_partition_count),
                NodeRole::Meta => (crate::admintask::Role::Meta, n.meta_partition_count),
            };
            // One address may in principle be both a data and a meta node; only the role the
            // heartbeats were for counts.
            if n.role.is_some_and(|r| r != wanted) {
                return None;
            }
            Some(LiveInfo {
                is_active: n.is_active,
                report_time_ms: u64::try_from(n.report_time_unix_s)
                    .unwrap_or(0)
                    .saturating_mul(1000),
                total_bytes: n.total,
                used_bytes: n.used,
                available_bytes: n.available,
                partition_count: partitions,
                cpu_util: 0.0,
            })
        })?
    }
}

pub type LiveMap = HashMap<(NodeRole, String), LiveInfo>;

/// Live info of `nodes`, asking each owner shard once. A shard that cannot answer leaves its
/// nodes out (shown as never heard from).
pub async fn gather(me: &Rc<Shard>, nodes: Vec<(NodeRole, String)>) -> LiveMap {
    let shards = me.mesh.shards();
    let mut by_shard: Vec<Vec<(NodeRole, String)>> = vec![Vec::new(); shards];
    for (role, addr) in nodes {
        let k = owner_shard(&addr, shards);
        by_shard[k].push((role, addr));
    }
    let mut out = LiveMap::new();
    for (k, nodes) in by_shard.into_iter().enumerate() {
        if nodes.is_empty() {
            continue;
        }
        let got = me
            .run_on(k, move |s: Rc<Shard>| async move {
                let view = live_view(&s);
                nodes
                    .into_iter()
                    .filter_map(|(role, addr)| {
                        let live = view.live(role, &addr)?;
                        Some(((role, addr), live))
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        if let Ok(got) = got {
            out.extend(got);
        }
    }
    out
}

/// A registered node, as the heartbeat loop needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredNode {
    pub id: u64,
    pub addr: String,
    pub role: NodeRole,
    pub zone: String,
    pub node_set: u64,
}

/// The registered nodes of `state`, those owned by `shard` of `shards` if given.
pub fn registered_in(state: &CubefsState, owner: Option<(usize, usize)>) -> Vec<RegisteredNode> {
    state
        .nodes
        .values()
        .filter(|n| match owner {
            None => true,
            Some((shard, shards)) => owner_shard(&n.addr, shards) == shard,
        })
        .map(|n| RegisteredNode {
            id: n.id,
            addr: n.addr.clone(),
            role: n.role,
            zone: n.zone.clone(),
            node_set: n.node_set,
        })
        .collect()
}

/// The registered nodes whose liveness shard `owner` keeps (all nodes if None), as group 0
/// has applied them on this node (no read barrier: the heartbeat loop runs on the leader,
/// which has applied everything it committed, and a follower's slightly old list is harmless).
pub async fn registered_nodes(
    me: &Rc<Shard>,
    owner: Option<usize>,
) -> Result<Vec<RegisteredNode>, GroupError> {
    let shards = me.mesh.shards();
    me.run_on(0, move |s0: Rc<Shard>| async move {
        registered_in(&s0.group.state().cubefs, owner.map(|k| (k, shards)))
    })
    .await
    .map_err(|_| GroupError::Overloaded)
}

/// Moves a registered node to `zone` (a heartbeat reported another zone, §7): the zone is
/// created if new and the node joins that zone's set with the most free
/// slots, or a new set (its id from the cluster allocator). Same zone: no
/// change. Returns the registry's outcome (`Refused` with code 12/13 for an unknown node).
pub async fn move_node_zone(
    me: &Rc<Shard>,
    role: NodeRole,
    addr: &str,
    zone: &str,
) -> Result<CubefsOutcome, ServiceError> {
    let ids = call(me.clone(), ServiceCall::Ids { count: 1 }).await?;
    let cmd = CubefsCommand::MoveNode {
        role,
        addr: addr.to_string(),
        zone: zone.to_string(),
        new_set_id: ids.first,
        now_ms: super::dialect::now_ms(),
    };
    Ok(super::api::propose0(me, cmd).await?)
}
