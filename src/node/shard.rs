//! What a shard's handlers depend on: facts about the node, and one shard's context (its
//! replica, its mesh endpoint, its metrics, the leader services).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use mast_http::HttpMetrics;

use super::cluster::ClusterIdentity;
use super::config::Member;
use super::runtime::{Driver, Mesh, XShardError};
use crate::meta::MetaTable;
use crate::replica::{Group, GroupOptions};
use crate::services::LeaderServices;

/// Facts about this node every shard can read (immutable after start).
#[derive(Debug)]
pub struct NodeInfo {
    pub id: u64,
    pub http_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub data_dir: std::path::PathBuf,
    pub members: Vec<Member>,
    pub started: Instant,
    pub cluster: ClusterIdentity,
    pub redirect: bool,
    pub follower_read: bool,
    pub shard_peer_addrs: Vec<SocketAddr>,
    pub group_options: GroupOptions,
    /// CubeFS volumes' automatic data partition growth period (0 = off).
    pub cubefs_dp_growth_interval_ms: u64,
    /// Admin authentication (`--auth-token-file`), shared by every shard's router guard.
    pub auth: Option<Arc<super::auth::Auth>>,
}

impl NodeInfo {
    /// How the raft log writes, as decided at startup ("direct" or "buffered").
    pub fn log_io(&self) -> &'static str {
        if self.group_options.log.direct_io {
            "direct"
        } else {
            "buffered"
        }
    }
}

/// One shard's context: everything its tasks share. Lives on the shard's thread only.
pub struct Shard {
    pub id: usize,
    pub cpu: usize,
    pub pinned: bool,
    pub driver: Driver,
    pub node: Arc<NodeInfo>,
    pub mesh: Arc<Mesh<Shard>>,
    pub http_metrics: Rc<HttpMetrics>,
    /// This shard's raft replica and its partition of the meta table.
    pub group: Rc<Group<MetaTable>>,
    /// The cluster-wide leader services (TSO, IDs); they run on group 0's replica, so only
    /// shard 0's are ever called.
    pub services: Rc<LeaderServices>,
    /// Heartbeats, liveness and admin tasks of the storage nodes this shard owns.
    pub admin_tasks: Rc<crate::admintask::AdminTasks>,
    /// Cached whole-cluster CubeFS replies (used on shard 0 only).
    pub cubefs_views: crate::cubefs::cache::ViewCache,
    /// DD channel watchers this shard is serving (`crate::milvus::dd`), to bound them.
    pub milvus_dd_watchers: std::cell::Cell<usize>,
    /// How late this shard's event loop runs (`super::stalls`).
    pub loop_stalls: Rc<super::stalls::LoopStalls>,
    /// Shard 0: the Milvus coordinator's leader memory (sessions' liveness, time ticks).
    pub milvus_coord: crate::milvus::coord::CoordMemory,
}

impl Shard {
    /// Runs `f` against shard `shard`'s context: directly when that is this shard (no queue
    /// hop), otherwise through the mesh.
    pub async fn run_on<R, F, Fut>(self: &Rc<Self>, shard: usize, f: F) -> Result<R, XShardError>
    where
        R: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = R> + 'static,
    {
        if shard == self.id {
            return Ok(f(self.clone()).await);
        }
        self.mesh.submit_to(shard, f).await
    }
}
