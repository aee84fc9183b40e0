//! Replica moves (reference §10): `/dataReplica/add|delete`, `/metaReplica/add|delete`, and
//! the decommission of one replica (`/dataPartition/decommission`,
//! `/metaPartition/decommission`) as add-then-remove.
//!
//! Each step is a sync admin task to the nodes, then the new host list is proposed as a
//! compare-and-set on the old one ([`VolCommand::SetHosts`]), so two moves racing on one
//! partition cannot both win. A decommission never lets the partition drop below its replica
//! count: the new replica is created and recorded before the old one is removed.

use std::rc::Rc;

use mast_http::{Response, Router};

use super::api::{add, group_fail, propose0, read0, state_with_live, Ctx};
use super::dialect::{fail, ok};
use super::live::LiveMap;
use super::tasks::{abandon, create_on_all, delete_now, member_change, replicas_of, CreateOnNode};
use super::vol_api::{place_for, topology};
use crate::meta::cubefs::volumes::{
    Peer, ReplicaRef, VolCommand, CODE_DP_NOT_EXISTS, CODE_MP_NOT_EXISTS,
};
use crate::meta::cubefs::{
    CubefsCommand, CubefsOutcome, CubefsState, NodeRole, CODE_DATA_NODE_NOT_EXISTS, CODE_INTERNAL,
    CODE_META_NODE_NOT_EXISTS, CODE_PARAM,
};
use crate::node::shard::Shard;

const GB: u64 = 1 << 30;
/// CubeFS's "cannot take the data replica offline" (§2).
const CODE_DP_OFFLINE: i32 = 25;
/// New hosts a decommission tries before giving up.
const DECOMMISSION_TRIES: usize = 3;
/// CubeFS's "no enough replicas".
const CODE_NO_ENOUGH_REPLICAS: i32 = 32;
/// CubeFS's "illegal meta replica".
const CODE_MP_REPLICA: i32 = 31;

/// What a replica move needs to know of a partition.
#[derive(Debug, Clone)]
struct Part {
    role: NodeRole,
    id: u64,
    vol: String,
    hosts: Vec<String>,
    peers: Vec<Peer>,
    replica_num: usize,
    size_bytes: u64,
    start: u64,
    end: u64,
}

fn part_of(s: &CubefsState, role: NodeRole, id: u64) -> Result<Part, (i32, String)> {
    match role {
        NodeRole::Data => {
            let d =
                s.vt.dps
                    .get(&id)
                    .ok_or((CODE_DP_NOT_EXISTS, "data partition not exists".to_string()))?;
            let size =
                s.vt.vols
                    .get(&d.vol)
                    .map_or(0, |v| v.dp_size_gb.saturating_mul(GB));
            Ok(Part {
                role,
                id,
                vol: d.vol.clone(),
                hosts: d.hosts.clone(),
                peers: d.peers.clone(),
                replica_num: d.replica_num as usize,
                size_bytes: size,
                start: 0,
                end: 0,
            })
        }
        NodeRole::Meta => {
            let m =
                s.vt.mps
                    .get(&id)
                    .ok_or((CODE_MP_NOT_EXISTS, "meta partition not exists".to_string()))?;
            Ok(Part {
                role,
                id,
                vol: m.vol.clone(),
                hosts: m.hosts.clone(),
                peers: m.peers.clone(),
                replica_num: m.hosts.len().max(3),
                size_bytes: 0,
                start: m.start,
                end: m.end,
            })
        }
    }
}

fn node_missing(role: NodeRole) -> (i32, String) {
    match role {
        NodeRole::Data => (CODE_DATA_NODE_NOT_EXISTS, "data node not exists".into()),
        NodeRole::Meta => (CODE_META_NODE_NOT_EXISTS, "meta node not exists".into()),
    }
}

fn id_addr(ctx: &Ctx) -> Result<(u64, String), (i32, String)> {
    let id = match ctx.params.u64("id") {
        Ok(Some(id)) => id,
        Ok(None) => return Err((CODE_PARAM, "parameter id not found".into())),
        Err(e) => return Err((CODE_PARAM, e.0)),
    };
    let addr = ctx
        .params
        .required("addr")
        .map_err(|e| (CODE_PARAM, e.0))?
        .to_string();
    Ok((id, addr))
}

/// Adds a replica on `new` (registered node `new_id`): member change on the current leader,
/// create on the new host, then the new host list. Returns the partition as recorded.
async fn add_replica(me: &Rc<Shard>, p: &Part, new: Peer) -> Result<Part, (i32, String)> {
    let leader = p.hosts.first().cloned().unwrap_or_default();
    member_change(me, p.role, &leader, p.id, new.clone(), true)
        .await
        .map_err(|e| (CODE_INTERNAL, e))?;
    let mut peers = p.peers.clone();
    peers.push(new.clone());
    let create = CreateOnNode {
        role: p.role,
        addr: new.addr.clone(),
        partition_id: p.id,
        vol: p.vol.clone(),
        size_bytes: p.size_bytes,
        start: p.start,
        end: p.end,
        members: peers.clone(),
    };
    if let Err(e) = create_on_all(me, vec![create]).await {
        // Undo the member change so the raft group does not wait for a replica that is not.
        let _ = member_change(me, p.role, &leader, p.id, new, false).await;
        return Err((CODE_INTERNAL, e));
    }
    let mut hosts = p.hosts.clone();
    hosts.push(new.addr.clone());
    let cmd = CubefsCommand::vol(VolCommand::SetHosts {
        role: p.role,
        id: p.id,
        expect_hosts: p.hosts.clone(),
        hosts: hosts.clone(),
        peers: peers.clone(),
    });
    match propose0(me, cmd).await {
        Ok(CubefsOutcome::Refused { code, msg }) => {
            abandon(
                me,
                replicas_of(p.role, p.id, std::slice::from_ref(&new.addr)),
            )
            .await;
            Err((code, msg))
        }
        Ok(_) => Ok(Part {
            hosts,
            peers,
            ..p.clone()
        }),
        Err(e) => Err((CODE_INTERNAL, e.to_string())),
    }
}

/// Removes the replica on `addr`: member change on a remaining replica, the new host list
/// (which records the pending delete), then the delete on the removed host.
async fn remove_replica(me: &Rc<Shard>, p: &Part, addr: &str) -> Result<(), (i32, String)> {
    let Some(gone) = p.peers.iter().find(|x| x.addr == addr).cloned() else {
        return Err((
            CODE_PARAM,
            format!("{addr} holds no replica of partition {}", p.id),
        ));
    };
    let Some(leader) = p.hosts.iter().find(|h| h.as_str() != addr).cloned() else {
        return Err((CODE_PARAM, "the last replica cannot be removed".into()));
    };
    member_change(me, p.role, &leader, p.id, gone, false)
        .await
        .map_err(|e| (CODE_INTERNAL, e))?;
    let hosts: Vec<String> = p
        .hosts
        .iter()
        .filter(|h| h.as_str() != addr)
        .cloned()
        .collect();
    let peers: Vec<Peer> = p.peers.iter().filter(|x| x.addr != addr).cloned().collect();
    let cmd = CubefsCommand::vol(VolCommand::SetHosts {
        role: p.role,
        id: p.id,
        expect_hosts: p.hosts.clone(),
        hosts,
        peers,
    });
    match propose0(me, cmd).await {
        Ok(CubefsOutcome::Refused { code, msg }) => Err((code, msg)),
        Ok(_) => {
            // The entry that dropped the host recorded the pending delete; sending it now
            // is only quicker than waiting for the loop, which retries it if this fails.
            let r = ReplicaRef {
                role: p.role,
                id: p.id,
                addr: addr.to_string(),
            };
            delete_now(me, r).await;
            Ok(())
        }
        Err(e) => Err((CODE_INTERNAL, e.to_string())),
    }
}

fn reply(ctx: &Ctx, r: Result<String, (i32, String)>) -> Response {
    match r {
        Ok(msg) => ok(ctx.enc, msg),
        Err((code, msg)) => fail(ctx.enc, code, &msg),
    }
}

async fn replica_add(me: Rc<Shard>, ctx: Ctx, role: NodeRole) -> Response {
    let (id, addr) = match id_addr(&ctx) {
        Ok(x) => x,
        Err((c, m)) => return fail(ctx.enc, c, &m),
    };
    // The nodes' liveness is not needed here: no gather across the shards.
    let state = match read0(&me, |s| s.clone()).await {
        Ok(s) => s,
        Err(e) => return group_fail(ctx.enc, &e),
    };
    let r = async {
        let p = part_of(&state, role, id)?;
        let node = state.node(role, &addr).ok_or_else(|| node_missing(role))?;
        if p.hosts.contains(&addr) {
            return Err((CODE_PARAM, format!("{addr} holds partition {id} already")));
        }
        add_replica(
            &me,
            &p,
            Peer {
                id: node.id,
                addr: addr.clone(),
            },
        )
        .await?;
        Ok(format!(
            "partitionID[{id}] add replica [{addr}] successfully"
        ))
    }
    .await;
    reply(&ctx, r)
}

async fn replica_delete(me: Rc<Shard>, ctx: Ctx, role: NodeRole) -> Response {
    let (id, addr) = match id_addr(&ctx) {
        Ok(x) => x,
        Err((c, m)) => return fail(ctx.enc, c, &m),
    };
    // The nodes' liveness is not needed here: no gather across the shards.
    let state = match read0(&me, |s| s.clone()).await {
        Ok(s) => s,
        Err(e) => return group_fail(ctx.enc, &e),
    };
    let r = async {
        let p = part_of(&state, role, id)?;
        remove_replica(&me, &p, &addr).await?;
        Ok(format!(
            "partitionID[{id}] delete replica [{addr}] successfully"
        ))
    }
    .await;
    reply(&ctx, r)
}

/// Moves the replica on `addr` to a new host chosen by placement (§10): the new host comes
/// from the volume's zones, never one of the current hosts; added first, then the old one
/// removed, so the partition never has fewer replicas than before.
async fn decommission(me: Rc<Shard>, ctx: Ctx, role: NodeRole) -> Response {
    let (id, addr) = match id_addr(&ctx) {
        Ok(x) => x,
        Err((c, m)) => return fail(ctx.enc, c, &m),
    };
    let (state, live) = match state_with_live(&me).await {
        Ok(x) => x,
        Err(e) => return group_fail(ctx.enc, &e),
    };
    let r = move_replica(&me, &state, &live, role, id, &addr).await;
    reply(&ctx, r)
}

/// Moves partition `id`'s replica off `addr` (the core of a decommission).
async fn move_replica(
    me: &Rc<Shard>,
    state: &CubefsState,
    live: &LiveMap,
    role: NodeRole,
    id: u64,
    addr: &str,
) -> Result<String, (i32, String)> {
    let addr = addr.to_string();
    let me = me.clone();
    let r = async {
        let p = part_of(state, role, id)?;
        if !p.hosts.contains(&addr) {
            let code = match role {
                NodeRole::Data => CODE_DP_OFFLINE,
                NodeRole::Meta => CODE_MP_REPLICA,
            };
            return Err((code, format!("{addr} holds no replica of partition {id}")));
        }
        // The seed's precondition: a partition already short of replicas is repaired first,
        // not moved (taking one more copy offline could lose its last good one).
        if p.hosts.len() < p.replica_num {
            return Err((
                CODE_NO_ENOUGH_REPLICAS,
                format!(
                    "partition {id} has {} of {} replicas",
                    p.hosts.len(),
                    p.replica_num
                ),
            ));
        }
        let vol = state.vt.vols.get(&p.vol).ok_or((
            CODE_INTERNAL,
            format!("volume {} of partition {id} is gone", p.vol),
        ))?;
        let media = if role == NodeRole::Data {
            vol.media_type
        } else {
            0
        };
        let topo = topology(state, live, role, media);
        let zones: Vec<String> = vol
            .zone_name
            .split(',')
            .filter(|z| !z.is_empty())
            .map(String::from)
            .collect();
        // One new host, anywhere in the volume's zones, away from the staying hosts' IPs.
        let ip = |a: &str| a.rsplit_once(':').map_or(a, |(h, _)| h).to_string();
        let staying_ips: Vec<String> = p
            .hosts
            .iter()
            .filter(|h| **h != addr)
            .map(|h| ip(h))
            .collect();
        let mut exclude = p.hosts.clone();
        exclude.extend(
            topo.nodes
                .iter()
                .filter(|n| staying_ips.contains(&ip(&n.addr)))
                .map(|n| n.addr.clone()),
        );
        // A new host that fails (down meanwhile, a delete still pending there) is left out
        // and another one tried.
        let mut last = None;
        let mut moved = None;
        for _ in 0..DECOMMISSION_TRIES {
            let chosen =
                place_for(&topo, role, 1, &zones, exclude.clone()).map_err(|e| (e.code, e.msg))?;
            let new = chosen
                .first()
                .map(|c| Peer {
                    id: c.id,
                    addr: c.addr.clone(),
                })
                .ok_or((CODE_INTERNAL, "placement chose no host".to_string()))?;
            match add_replica(&me, &p, new.clone()).await {
                Ok(after) => {
                    moved = Some((new, after));
                    break;
                }
                Err(e) => {
                    exclude.push(new.addr);
                    last = Some(e);
                }
            }
        }
        let Some((new, after_add)) = moved else {
            return Err(last.unwrap_or((CODE_INTERNAL, "no new host".into())));
        };
        remove_replica(&me, &after_add, &addr).await?;
        Ok(format!(
            "decommission partition[{id}] from [{addr}] to [{}] successfully",
            new.addr
        ))
    }
    .await;
    r
}

/// Meta replicas moved per decommissioning meta node per loop round (CubeFS bounds meta
/// node decommission by `count`, not by the node set limit).
const MOVES_PER_NODE_PER_ROUND: usize = 4;

/// `decommissionLimit` when unset or 0 (CubeFS's default parallelism per node set).
pub const DECOMMISSION_LIMIT_DEFAULT: usize = 10;
/// Upper bound on `decommissionLimit`: a round's moves run one after another, so a huge
/// value would only make one round (and the leader's loop) run for a very long time.
pub const DECOMMISSION_LIMIT_MAX: usize = 1000;

/// The node set limit `/admin/setNodeInfo?decommissionLimit=` stored.
pub fn decommission_limit(state: &CubefsState) -> usize {
    state
        .settings
        .node_info
        .get("decommissionLimit")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|v| *v > 0)
        .map_or(DECOMMISSION_LIMIT_DEFAULT, |v| {
            usize::try_from(v).map_or(DECOMMISSION_LIMIT_MAX, |v| v.min(DECOMMISSION_LIMIT_MAX))
        })
}

/// The replica moves of one decommission round, as (role, node, partition id): at most
/// `limit` data partitions per node set (the set of the node they leave, as CubeFS's
/// per-node-set scheduler does), at most [`MOVES_PER_NODE_PER_ROUND`] meta partitions per
/// node. The rest wait for a later round. Pure, so the rule is unit tested.
pub fn decommission_batch(state: &CubefsState, limit: usize) -> Vec<(NodeRole, String, u64)> {
    let mut per_set: std::collections::BTreeMap<u64, usize> = Default::default();
    let mut out = Vec::new();
    for (role, addr) in state.vt.decommissioning.iter() {
        match role {
            NodeRole::Data => {
                // A node the registry lost has no set; its moves share set u64::MAX.
                let set = state.node(*role, addr).map_or(u64::MAX, |n| n.node_set);
                let used = per_set.entry(set).or_insert(0);
                for d in state.vt.dps.values().filter(|d| d.hosts.contains(addr)) {
                    if *used >= limit {
                        break;
                    }
                    *used += 1;
                    out.push((*role, addr.clone(), d.id));
                }
            }
            NodeRole::Meta => out.extend(
                state
                    .vt
                    .mps
                    .values()
                    .filter(|m| m.hosts.contains(addr))
                    .take(MOVES_PER_NODE_PER_ROUND)
                    .map(|m| (*role, addr.clone(), m.id)),
            ),
        }
    }
    out
}

/// `/dataNode/decommission`, `/metaNode/decommission`: marks the node in the table; the
/// leader's loop ([`decommission_step`]) moves its replicas away, resuming after a leader
/// change. The node takes no new replicas from then on.
async fn node_decommission(me: Rc<Shard>, ctx: Ctx, role: NodeRole) -> Response {
    let addr = match ctx.params.required("addr") {
        Ok(a) => a.to_string(),
        Err(e) => return fail(ctx.enc, CODE_PARAM, &e.0),
    };
    let cmd = CubefsCommand::vol(VolCommand::SetDecommission {
        role,
        addr: addr.clone(),
        on: true,
    });
    match propose0(&me, cmd).await {
        Ok(CubefsOutcome::Refused { code, msg }) => fail(ctx.enc, code, &msg),
        Ok(_) => ok(
            ctx.enc,
            format!("decommission node [{addr}] submitted, replicas move in the background"),
        ),
        Err(e) => group_fail(ctx.enc, &e),
    }
}

/// `/dataNode/queryDecommissionProgress`: how many replicas the node still holds.
async fn node_decommission_progress(me: Rc<Shard>, ctx: Ctx) -> Response {
    let addr = match ctx.params.required("addr") {
        Ok(a) => a.to_string(),
        Err(e) => return fail(ctx.enc, CODE_PARAM, &e.0),
    };
    let r = read0(&me, move |s| {
        let role = NodeRole::Data;
        s.node(role, &addr)?;
        let left =
            s.vt.dps
                .values()
                .filter(|d| d.hosts.contains(&addr))
                .count();
        let marked = s.vt.decommissioning.contains(&(role, addr.clone()));
        Some((left, marked))
    })
    .await;
    match r {
        Ok(Some((left, marked))) => ok(
            ctx.enc,
            serde_json::json!({
                "Status": if !marked { 0 } else if left == 0 { 3 } else { 1 },
                "StatusMessage": if !marked { "not decommissioning" } else if left == 0 { "success" } else { "running" },
                "Progress": if left == 0 && marked { "100.00%" } else { "0.00%" },
                "RemainingReplicas": left,
                "FailedDps": [],
                "IgnoreDps": [],
            }),
        ),
        Ok(None) => fail(ctx.enc, CODE_DATA_NODE_NOT_EXISTS, "data node not exists"),
        Err(e) => group_fail(ctx.enc, &e),
    }
}

/// One round of node decommissions: the moves [`decommission_batch`] picks (add on a new
/// host, then remove). A move that fails is retried next round.
pub async fn decommission_step(me: &Rc<Shard>) {
    // Most rounds have nothing to do: do not copy the whole table for them.
    if read0(me, |s| s.vt.decommissioning.is_empty())
        .await
        .unwrap_or(true)
    {
        return;
    }
    let Ok((state, live)) = state_with_live(me).await else {
        return;
    };
    let batch = decommission_batch(&state, decommission_limit(&state));
    for (role, addr, id) in batch {
        if let Err((code, msg)) = move_replica(me, &state, &live, role, id, &addr).await {
            tracing::warn!(partition = id, node = %addr, code, %msg, "decommission move failed; retried next round");
        }
    }
}

/// `/dataPartition/diagnose` and `/metaPartition/diagnose` (`datapartition check`,
/// `metapartition check`): inactive nodes, partitions short of replicas, and partitions
/// whose majority of replicas sit on inactive nodes (corrupt: no quorum).
async fn diagnose(me: Rc<Shard>, ctx: Ctx, role: NodeRole) -> Response {
    let (state, live) = match state_with_live(&me).await {
        Ok(x) => x,
        Err(e) => return group_fail(ctx.enc, &e),
    };
    let inactive: Vec<String> = state
        .nodes_of(role)
        .filter(|n| !super::views::live_of(&live, n).is_active)
        .map(|n| n.addr.clone())
        .collect();
    let parts: Vec<(u64, Vec<String>, usize)> = match role {
        NodeRole::Data => state
            .vt
            .dps
            .values()
            .map(|d| (d.id, d.hosts.clone(), d.replica_num as usize))
            .collect(),
        NodeRole::Meta => state
            .vt
            .mps
            .values()
            .map(|m| (m.id, m.hosts.clone(), 3))
            .collect(),
    };
    let lack: Vec<u64> = parts
        .iter()
        .filter(|(_, h, n)| h.len() < *n)
        .map(|(id, ..)| *id)
        .collect();
    let corrupt: Vec<u64> = parts
        .iter()
        .filter(|(_, h, _)| {
            let down = h.iter().filter(|a| inactive.contains(a)).count();
            down * 2 > h.len()
        })
        .map(|(id, ..)| *id)
        .collect();
    let view = match role {
        NodeRole::Data => serde_json::json!({
            "InactiveDataNodes": inactive,
            "CorruptDataPartitionIDs": corrupt,
            "LackReplicaDataPartitionIDs": lack,
            "BadDataPartitionIDs": [],
            "BadDataPartitionInfos": [],
            "BadReplicaDataPartitionIDs": [],
            "RepFileCountDifferDpIDs": [],
            "RepUsedSizeDifferDpIDs": [],
            "ExcessReplicaDpIDs": [],
            "CorruptDataPartitionIDsAll": [],
            "InactiveDataNodesAll": [],
        }),
        NodeRole::Meta => serde_json::json!({
            "InactiveMetaNodes": inactive,
            "CorruptMetaPartitionIDs": corrupt,
            "LackReplicaMetaPartitionIDs": lack,
            "NoLeaderMetaPartitionIDs": [],
            "BadMetaPartitionIDs": [],
            "BadReplicaMetaPartitionIDs": [],
            "ExcessReplicaMetaPartitionIDs": [],
            "InodeCountNotEqualReplicaMetaPartitionIDs": [],
            "MaxInodeNotEqualReplicaMetaPartitionIDs": [],
            "DentryCountNotEqualReplicaMetaPartitionIDs": [],
        }),
    };
    ok(ctx.enc, view)
}

pub fn routes(r: Router, shard: Rc<Shard>) -> Router {
    let s = &shard;
    let r = add(r, s, "/dataReplica/add", false, |me, ctx| {
        replica_add(me, ctx, NodeRole::Data)
    });
    let r = add(r, s, "/dataReplica/delete", false, |me, ctx| {
        replica_delete(me, ctx, NodeRole::Data)
    });
    let r = add(r, s, "/metaReplica/add", false, |me, ctx| {
        replica_add(me, ctx, NodeRole::Meta)
    });
    let r = add(r, s, "/metaReplica/delete", false, |me, ctx| {
        replica_delete(me, ctx, NodeRole::Meta)
    });
    let r = add(r, s, "/dataPartition/decommission", false, |me, ctx| {
        decommission(me, ctx, NodeRole::Data)
    });
    let r = add(r, s, "/metaPartition/decommission", false, |me, ctx| {
        decommission(me, ctx, NodeRole::Meta)
    });
    let r = add(r, s, "/dataNode/decommission", false, |me, ctx| {
        node_decommission(me, ctx, NodeRole::Data)
    });
    let r = add(r, s, "/metaNode/decommission", false, |me, ctx| {
        node_decommission(me, ctx, NodeRole::Meta)
    });
    let r = add(r, s, "/dataPartition/diagnose", false, |me, ctx| {
        diagnose(me, ctx, NodeRole::Data)
    });
    let r = add(r, s, "/metaPartition/diagnose", false, |me, ctx| {
        diagnose(me, ctx, NodeRole::Meta)
    });
    add(
        r,
        s,
        "/dataNode/queryDecommissionProgress",
        false,
        node_decommission_progress,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::cubefs::volumes::DataPartition;
    use crate::meta::cubefs::Node;

    fn node(addr: &str, set: u64) -> Node {
        Node {
            id: set * 100,
            addr: addr.to_string(),
            role: NodeRole::Data,
            zone: "z".into(),
            node_set: set,
            heartbeat_port: String::new(),
            replica_port: String::new(),
            media_type: 1,
            registered_ms: 0,
        }
    }

    /// Nodes a1, a2 in set 1 and b1 in set 2, each hosting 6 dps; a1, a2, b1 leaving.
    fn state() -> CubefsState {
        let mut s = CubefsState::default();
        let mut id = 0;
        for (addr, set) in [("10.0.0.1:1", 1), ("10.0.0.2:1", 1), ("10.0.0.3:1", 2)] {
            s.nodes
                .insert((NodeRole::Data, addr.to_string()), node(addr, set));
            s.vt.decommissioning
                .insert((NodeRole::Data, addr.to_string()));
            for _ in 0..6 {
                id += 1;
                s.vt.dps.insert(
                    id,
                    DataPartition {
                        id,
                        vol: "v".into(),
                        replica_num: 3,
                        hosts: vec![addr.to_string()],
                        peers: vec![],
                        status: 2,
                        media_type: 1,
                        created_ms: 0,
                    },
                );
            }
        }
        s
    }

    fn per_set(s: &CubefsState, batch: &[(NodeRole, String, u64)]) -> (usize, usize) {
        let set1 = batch
            .iter()
            .filter(|(_, a, _)| s.node(NodeRole::Data, a).map(|n| n.node_set) == Some(1))
            .count();
        (set1, batch.len() - set1)
    }

    #[test]
    fn limit_bounds_each_node_set_and_the_rest_wait() {
        let s = state();
        let b = decommission_batch(&s, 4);
        // Set 1 has 12 leaving dps over two nodes but moves 4; set 2 moves 4 of its 6.
        assert_eq!(per_set(&s, &b), (4, 4));
        let b = decommission_batch(&s, 7);
        assert_eq!(per_set(&s, &b), (7, 6));
        let b = decommission_batch(&s, 100);
        assert_eq!(b.len(), 18);
        let b = decommission_batch(&s, 0);
        assert!(b.is_empty());
    }

    #[test]
    fn limit_setting_defaults_and_caps() {
        let mut s = state();
        assert_eq!(decommission_limit(&s), DECOMMISSION_LIMIT_DEFAULT);
        for (v, want) in [
            ("3", 3),
            ("0", DECOMMISSION_LIMIT_DEFAULT),
            ("2.5", DECOMMISSION_LIMIT_DEFAULT),
            ("99999999", DECOMMISSION_LIMIT_MAX),
        ] {
            s.settings
                .node_info
                .insert("decommissionLimit".into(), v.into());
            assert_eq!(decommission_limit(&s), want, "{v}");
        }
    }
}
