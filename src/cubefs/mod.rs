//! The CubeFS master on mast's HTTP port (`../shared/reference/cubefs-master-api.md`): the
//! dialect (`dialect`), the reply shapes (`views`), the follower's relay to the leader
//! (`proxy`), the seam to heartbeat liveness (`live`), and the routes (`api`).
//!
//! The CubeFS "master leader" is group 0's leader: the registry is group 0's partition of the
//! meta table (`crate::meta::cubefs`), and leader affinity puts every shard's leadership on
//! that node. Leader behaviour (§3): `/admin/getIp` and `/master/changeleader` are answered by
//! any node; every other route is relayed by a follower to the leader (its replies show the
//! leader's memory: liveness and usage), answered 400 `no leader` when group 0 has none.

pub mod api;
pub mod cache;
pub mod dialect;
pub mod live;
pub mod md5;
pub mod partition_api;
pub mod placement;
pub mod proxy;
pub mod tasks;
pub mod views;
pub mod vol_api;
pub mod vol_views;

/// Every CubeFS route: the registry's (`api`) and the volumes' (`vol_api`).
pub fn routes(
    router: mast_http::Router,
    shard: std::rc::Rc<crate::node::shard::Shard>,
) -> mast_http::Router {
    let r = vol_api::routes(api::routes(router, shard.clone()), shard.clone());
    partition_api::routes(r, shard)
}
pub use live::{registered_nodes, LiveInfo, LiveView, NeverHeard, RegisteredNode};
