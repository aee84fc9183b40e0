//! The seam to the admin task manager (`crate::admintask`): create a partition on a node
//! with a sync task and wait for its answer; delete one with an async task (§8).
//!
//! Replica creations and removals are bracketed by marks in the table
//! ([`VolCommand::IntendCreate`] before create tasks go out; a removed host becomes a pending
//! delete in the same entry that drops it), and [`marks_step`], run by whichever node leads
//! group 0, turns a dead leader's intents into deletes and sends every pending delete until
//! its node confirms. So nothing a killed leader was creating or removing stays on a node.

use std::rc::Rc;

use super::api::{propose0, read0};
use crate::admintask::{self, proto::op, AdminTask, TaskRequest};
use crate::meta::cubefs::volumes::{
    Intent, Peer, ReplicaRef, VolCommand, REPLICAS_PER_COMMAND_MAX,
};
use crate::meta::cubefs::{CubefsCommand, CubefsOutcome, NodeRole};
use crate::node::shard::Shard;

/// Pending deletes sent per loop round (sync tasks, all at once): bounds the round's work.
const DELETES_PER_ROUND_MAX: usize = 64;
/// An intent of the current leader's own term this old is abandoned too: the route that made
/// it failed to record or roll it back (no creation takes minutes; sync tasks time out).
const INTENT_TTL_MS: u64 = 300_000;

/// A partition to create on one node.
#[derive(Debug, Clone)]
pub struct CreateOnNode {
    pub role: NodeRole,
    pub addr: String,
    pub partition_id: u64,
    pub vol: String,
    /// Data partitions: bytes. Meta partitions: 0.
    pub size_bytes: u64,
    /// Meta partitions: the inode range.
    pub start: u64,
    pub end: u64,
    pub members: Vec<Peer>,
}

fn now_unix_s() -> i64 {
    i64::try_from(super::dialect::now_ms() / 1000).unwrap_or(i64::MAX)
}

fn task_peers(p: &[Peer]) -> Vec<admintask::proto::Peer> {
    p.iter()
        .map(|p| admintask::proto::Peer {
            id: p.id,
            addr: p.addr.clone(),
        })
        .collect()
}

fn delete_op(role: NodeRole) -> u8 {
    match role {
        NodeRole::Data => op::DELETE_DATA_PARTITION,
        NodeRole::Meta => op::DELETE_META_PARTITION,
    }
}

/// Is a delete of the partition still queued for the node? (A create sent meanwhile would be
/// undone when the delete goes out.) Unknown (shard unreachable) counts as pending.
pub async fn delete_pending(me: &Rc<Shard>, role: NodeRole, addr: &str, partition_id: u64) -> bool {
    let id = admintask::proto::task_id(addr, delete_op(role), Some(partition_id));
    let owner = crate::placement::owner_shard(addr, me.mesh.shards());
    let addr = addr.to_string();
    me.run_on(owner, move |s: Rc<Shard>| async move {
        s.admin_tasks.is_queued(&addr, &id)
    })
    .await
    .unwrap_or(true)
}

/// Sends a sync create task to the node and waits for its result.
pub async fn create_on_node(me: &Rc<Shard>, c: CreateOnNode) -> Result<(), String> {
    if delete_pending(me, c.role, &c.addr, c.partition_id).await {
        return Err(format!(
            "a delete of partition {} on {} is still pending",
            c.partition_id, c.addr
        ));
    }
    let op_code = match c.role {
        NodeRole::Data => op::CREATE_DATA_PARTITION,
        NodeRole::Meta => op::CREATE_META_PARTITION,
    };
    let task = AdminTask::new(
        op_code,
        &c.addr,
        Some(c.partition_id),
        TaskRequest::CreatePartition {
            partition_id: c.partition_id,
            vol_name: c.vol,
            partition_size: c.size_bytes,
            start: c.start,
            end: c.end,
            members: task_peers(&c.members),
        },
        now_unix_s(),
    );
    admintask::send_sync_from(me, task)
        .await
        .map(|_| ())
        .map_err(|e| format!("create partition {} on {}: {e}", c.partition_id, c.addr))
}

/// Partitions whose creates run at once (each a sync task per replica).
const CREATES_IN_FLIGHT_MAX: usize = 32;

/// Creates the partition on every host at once, after recording the intent; on any failure
/// the intent is abandoned (the loop deletes what did land) and the first error returned.
pub async fn create_on_all(me: &Rc<Shard>, creates: Vec<CreateOnNode>) -> Result<(), String> {
    create_batch(me, vec![creates])
        .await?
        .into_iter()
        .next()
        .unwrap_or(Ok(()))
}

/// Creates several partitions (each a list of creates, one per replica) under one recorded
/// intent: one raft commit for the batch, then the creates, up to [`CREATES_IN_FLIGHT_MAX`]
/// partitions at a time. Each partition's result comes back in order; a failed partition's
/// replicas are abandoned (deleted by the loop). Err when the intent could not be recorded
/// (nothing was sent then).
pub async fn create_batch(
    me: &Rc<Shard>,
    parts: Vec<Vec<CreateOnNode>>,
) -> Result<Vec<Result<(), String>>, String> {
    let replicas: Vec<ReplicaRef> = parts
        .iter()
        .flatten()
        .map(|c| ReplicaRef {
            role: c.role,
            id: c.partition_id,
            addr: c.addr.clone(),
        })
        .collect();
    if replicas.is_empty() {
        return Ok(parts.iter().map(|_| Ok(())).collect());
    }
    for chunk in replicas.chunks(REPLICAS_PER_COMMAND_MAX) {
        intend(me, chunk.to_vec()).await?;
    }
    let mut results = Vec::with_capacity(parts.len());
    let mut failed = Vec::new();
    let mut parts = parts.into_iter().peekable();
    while parts.peek().is_some() {
        let mut handles = Vec::new();
        for creates in parts.by_ref().take(CREATES_IN_FLIGHT_MAX) {
            let mine: Vec<ReplicaRef> = creates
                .iter()
                .map(|c| ReplicaRef {
                    role: c.role,
                    id: c.partition_id,
                    addr: c.addr.clone(),
                })
                .collect();
            let per_host: Vec<_> = creates
                .into_iter()
                .map(|c| {
                    let me2 = me.clone();
                    monoio::spawn(async move { create_on_node(&me2, c).await })
                })
                .collect();
            handles.push((mine, per_host));
        }
        for (mine, per_host) in handles {
            let mut first_err = None;
            for h in per_host {
                if let Err(e) = h.await {
                    first_err.get_or_insert(e);
                }
            }
            match first_err {
                None => results.push(Ok(())),
                Some(e) => {
                    failed.extend(mine);
                    results.push(Err(e));
                }
            }
        }
    }
    if !failed.is_empty() {
        abandon(me, failed).await;
    }
    Ok(results)
}

/// Sends a sync raft member change (add when `add`, else remove `peer`) for a partition to
/// the replica at `leader_addr` and waits for its result.
pub async fn member_change(
    me: &Rc<Shard>,
    role: NodeRole,
    leader_addr: &str,
    partition_id: u64,
    peer: Peer,
    add: bool,
) -> Result<(), String> {
    let op_code = match (role, add) {
        (NodeRole::Data, true) => op::ADD_DATA_PARTITION_RAFT_MEMBER,
        (NodeRole::Data, false) => op::REMOVE_DATA_PARTITION_RAFT_MEMBER,
        (NodeRole::Meta, true) => op::ADD_META_PARTITION_RAFT_MEMBER,
        (NodeRole::Meta, false) => op::REMOVE_META_PARTITION_RAFT_MEMBER,
    };
    let peer = admintask::proto::Peer {
        id: peer.id,
        addr: peer.addr,
    };
    let request = if add {
        TaskRequest::AddRaftMember { partition_id, peer }
    } else {
        TaskRequest::RemoveRaftMember { partition_id, peer }
    };
    let task = AdminTask::new(
        op_code,
        leader_addr,
        Some(partition_id),
        request,
        now_unix_s(),
    );
    admintask::send_sync_from(me, task)
        .await
        .map(|_| ())
        .map_err(|e| format!("member change of partition {partition_id} on {leader_addr}: {e}"))
}

/// The term group 0's leader on this node leads (with an entry of it applied), if it does.
pub async fn leader_term(me: &Rc<Shard>) -> Option<u64> {
    me.run_on(0, |s: Rc<Shard>| async move { s.group.leader_ready_term() })
        .await
        .ok()
        .flatten()
}

/// Records that `replicas` are about to be created (before any create task goes out).
pub async fn intend(me: &Rc<Shard>, replicas: Vec<ReplicaRef>) -> Result<(), String> {
    let term = leader_term(me)
        .await
        .ok_or_else(|| "this node does not lead group 0".to_string())?;
    let cmd = CubefsCommand::vol(VolCommand::IntendCreate {
        replicas,
        intent: Intent {
            term,
            since_ms: super::dialect::now_ms(),
        },
    });
    match propose0(me, cmd).await {
        Ok(CubefsOutcome::Refused { msg, .. }) => Err(msg),
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// The intended creations did not land: they become pending deletes. A failure here is
/// logged only; [`marks_step`] abandons the intents later.
pub async fn abandon(me: &Rc<Shard>, replicas: Vec<ReplicaRef>) {
    for chunk in replicas.chunks(REPLICAS_PER_COMMAND_MAX) {
        let cmd = CubefsCommand::vol(VolCommand::AbandonCreate {
            replicas: chunk.to_vec(),
        });
        if let Err(e) = propose0(me, cmd).await {
            tracing::warn!(error = %e, "abandoning creation intents failed; the loop retries");
        }
    }
}

/// The replicas of a partition placed on `hosts`.
pub fn replicas_of(role: NodeRole, id: u64, hosts: &[String]) -> Vec<ReplicaRef> {
    hosts
        .iter()
        .map(|h| ReplicaRef {
            role,
            id,
            addr: h.clone(),
        })
        .collect()
}

/// Sends a delete task for `r` and waits for the node's result.
async fn delete_sync(me: &Rc<Shard>, r: &ReplicaRef) -> Result<(), String> {
    let task = AdminTask::new(
        delete_op(r.role),
        &r.addr,
        Some(r.id),
        TaskRequest::DeletePartition { partition_id: r.id },
        now_unix_s(),
    );
    admintask::send_sync_from(me, task)
        .await
        .map(|_| ())
        .map_err(|e| format!("delete partition {} on {}: {e}", r.id, r.addr))
}

/// Sends the pending delete of `r` and clears its mark once the node confirms; a failure
/// leaves the mark to [`marks_step`].
pub async fn delete_now(me: &Rc<Shard>, r: ReplicaRef) {
    match delete_sync(me, &r).await {
        Ok(()) => {
            let cmd = CubefsCommand::vol(VolCommand::DeleteDone { replicas: vec![r] });
            let _ = propose0(me, cmd).await;
        }
        Err(e) => tracing::warn!(error = %e, "pending delete failed; the loop retries"),
    }
}

/// One round of the replica marks (group 0's leader): intents of an earlier term (or stale)
/// become pending deletes; up to [`DELETES_PER_ROUND_MAX`] pending deletes on active nodes
/// are sent as sync tasks, and the confirmed ones, with those of unregistered nodes, are
/// cleared. An inactive node keeps its marks until it is back.
pub async fn marks_step(me: &Rc<Shard>) {
    let Some(term) = leader_term(me).await else {
        return;
    };
    let now = super::dialect::now_ms();
    let scan = read0(me, move |s| {
        if s.vt.creating.is_empty() && s.vt.deleting.is_empty() {
            return None;
        }
        let stale: Vec<ReplicaRef> =
            s.vt.creating
                .iter()
                .filter(|(_, i)| i.term < term || now.saturating_sub(i.since_ms) > INTENT_TTL_MS)
                .map(|(r, _)| r.clone())
                .take(REPLICAS_PER_COMMAND_MAX)
                .collect();
        let (known, gone): (Vec<ReplicaRef>, Vec<ReplicaRef>) =
            s.vt.deleting
                .iter()
                .take(REPLICAS_PER_COMMAND_MAX)
                .cloned()
                .partition(|r| s.node(r.role, &r.addr).is_some());
        Some((stale, known, gone))
    })
    .await;
    let Ok(Some((stale, known, mut done))) = scan else {
        return;
    };
    if !stale.is_empty() {
        tracing::info!(
            replicas = stale.len(),
            "abandoning creation intents of an earlier leader"
        );
        abandon(me, stale).await;
    }
    let nodes: Vec<(NodeRole, String)> = known
        .iter()
        .map(|r| (r.role, r.addr.clone()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let live = super::live::gather(me, nodes).await;
    let mut handles = Vec::new();
    for r in known
        .into_iter()
        .filter(|r| {
            live.get(&(r.role, r.addr.clone()))
                .is_some_and(|l| l.is_active)
        })
        .take(DELETES_PER_ROUND_MAX)
    {
        let me2 = me.clone();
        handles.push(monoio::spawn(async move {
            let res = delete_sync(&me2, &r).await;
            (r, res)
        }));
    }
    for h in handles {
        match h.await {
            (r, Ok(())) => done.push(r),
            (r, Err(e)) => {
                tracing::warn!(partition = r.id, node = %r.addr, error = %e, "pending delete failed; retried next round")
            }
        }
    }
    if !done.is_empty() {
        let _ = propose0(
            me,
            CubefsCommand::vol(VolCommand::DeleteDone { replicas: done }),
        )
        .await;
    }
}

/// Sets the end of a meta partition's inode range on one of its replicas (sync task).
pub async fn update_mp_end(
    me: &Rc<Shard>,
    addr: &str,
    partition_id: u64,
    vol: &str,
    start: u64,
    end: u64,
) -> Result<(), String> {
    let task = AdminTask::new(
        op::UPDATE_META_PARTITION,
        addr,
        Some(partition_id),
        TaskRequest::UpdateMetaPartition {
            partition_id,
            vol_name: vol.to_string(),
            start,
            end,
        },
        now_unix_s(),
    );
    admintask::send_sync_from(me, task)
        .await
        .map(|_| ())
        .map_err(|e| format!("update meta partition {partition_id} on {addr}: {e}"))
}
