//! The seam to the admin task manager (`crate::admintask`): create a partition on a node
//! with a sync task and wait for its answer; delete one with an async task (§8).

use std::rc::Rc;

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

/// Sends a sync create task to the node and waits for its result.
pub async fn create_on_node(_me: &Rc<Shard>, c: CreateOnNode) -> Result<(), String> {
    Err(format!(
        "cannot create partition {} on {}: admin tasks are not wired",
        c.partition_id, c.addr
    ))
}

/// Queues an async delete task for a partition replica on a node (fire and forget: the
/// task map retries and the node answers through `/…/response`).
pub async fn delete_on_node(_me: &Rc<Shard>, _role: NodeRole, _addr: &str, _partition_id: u64) {}

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
    _me: &Rc<Shard>,
    _role: NodeRole,
    leader_addr: &str,
    partition_id: u64,
    _peer: Peer,
    _add: bool,
) -> Result<(), String> {
    Err(format!(
        "cannot change members of partition {partition_id} on {leader_addr}: admin tasks are not wired"
    ))
}
