//! The seam to the admin task manager (`crate::admintask`): create a partition on a node
//! with a sync task and wait for its answer; delete one with an async task (§8).

use std::rc::Rc;

use crate::admintask::{self, proto::op, AdminTask, TaskRequest};
use crate::meta::cubefs::volumes::Peer;
use crate::meta::cubefs::NodeRole;
use crate::node::shard::Shard;

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

/// Queues an async delete task for a partition replica on a node (fire and forget: the
/// task map retries and the node answers through `/…/response`).
pub async fn delete_on_node(me: &Rc<Shard>, role: NodeRole, addr: &str, partition_id: u64) {
    let task = AdminTask::new(
        delete_op(role),
        addr,
        Some(partition_id),
        TaskRequest::DeletePartition { partition_id },
        now_unix_s(),
    );
    let _ = admintask::queue_from(me, task).await;
}

/// Creates the partition on every host at once; on any failure, deletes it from the hosts
/// that succeeded and returns the first error.
pub async fn create_on_all(me: &Rc<Shard>, creates: Vec<CreateOnNode>) -> Result<(), String> {
    let mut handles = Vec::with_capacity(creates.len());
    for c in creates {
        let me2 = me.clone();
        let key = (c.role, c.addr.clone(), c.partition_id);
        handles.push((
            key,
            monoio::spawn(async move { create_on_node(&me2, c).await }),
        ));
    }
    let mut done = Vec::new();
    let mut first_err = None;
    for (key, h) in handles {
        match h.await {
            Ok(()) => done.push(key),
            Err(e) => {
                if first_err.is_none() {
                    first_err = Some(e);
                }
            }
        }
    }
    match first_err {
        None => Ok(()),
        Some(e) => {
            for (role, addr, pid) in done {
                delete_on_node(me, role, &addr, pid).await;
            }
            Err(e)
        }
    }
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
