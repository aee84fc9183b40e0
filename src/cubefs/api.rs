//! The CubeFS routes of this part: cluster, topology, data/meta node registry, raft.
//!
//! Every handler runs in the same frame: the leader check (§3, [`guarded`]) relays the
//! request to group 0's leader when this node does not lead (one hop), then the handler reads
//! the registry on shard 0 after a read barrier, or proposes a registry command there, and
//! fills the liveness columns from each node's owner shard ([`live::gather`]).

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;

use mast_http::{Method, Request, Response, Router};
use mast_raft::{ConfChange, ConfChangeKind, Role};
use serde_json::json;

use super::cache::{Lookup, Parts};
use super::dialect::{fail, go_datetime, no_leader, now_ms, ok, param_fail, Encoding, Params};
use super::live::{self, LiveMap};
use super::proxy::{self, Relayed, FORWARDED_HEADER};
use super::views;
use crate::meta::cubefs::{
    CubefsCommand, CubefsOutcome, CubefsState, NodeRole, CODE_DATA_NODE_NOT_EXISTS, CODE_INTERNAL,
    CODE_META_NODE_NOT_EXISTS, CODE_NODE_SET_NOT_EXISTS, CODE_PARAM, CODE_ZONE_NOT_EXISTS,
    NODE_INFO_DEFAULTS,
};
use crate::meta::{MetaCommand, MetaOutcome};
use crate::node::shard::Shard;
use crate::replica::{GroupError, MemberAddrs, StateMachine};
use crate::services::{api::call, ServiceCall, ServiceError};

/// CubeFS's code for a failed raft persistence (§2).
const CODE_RAFT: i32 = 4;
/// The directory children limit CubeFS reports by default.
const DIR_CHILDREN_NUM_LIMIT: u64 = 20_000_000;

/// What a handler gets from its request; `Send`.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub params: Params,
    pub enc: Encoding,
    pub peer: Option<SocketAddr>,
    /// The request body (only `/user/create` and a few others carry one, §1).
    pub body: bytes::Bytes,
}

/// Group 0 as the CubeFS master sees it.
#[derive(Debug, Clone)]
struct Masters {
    leader: u64,
    is_leader: bool,
    leader_http: Option<String>,
    /// (id, http address), voters and learners.
    members: Vec<(u64, String)>,
    applied: u64,
}

async fn masters(me: &Rc<Shard>) -> Result<Masters, GroupError> {
    me.run_on(0, |s0: Rc<Shard>| async move {
        let g = &s0.group;
        let st = g.raft_status();
        let members = g
            .members()
            .into_iter()
            .filter(|(id, _)| {
                st.conf_state.voters.contains(id) || st.conf_state.learners.contains(id)
            })
            .map(|(id, m)| (id, m.http_addr))
            .collect::<Vec<_>>();
        let leader = g.leader();
        Masters {
            leader,
            is_leader: g.is_leader(),
            leader_http: members
                .iter()
                .find(|(id, _)| *id == leader)
                .map(|(_, a)| a.clone()),
            members,
            applied: st.applied,
        }
    })
    .await
    .map_err(|_| GroupError::Overloaded)
}

/// How a replica failure reads in the dialect: no leader is the bare 400 the SDK moves on
/// from; anything else is an envelope error.
pub(crate) fn group_fail(enc: Encoding, e: &GroupError) -> Response {
    match e {
        GroupError::NoLeader { .. } | GroupError::NotLeader { .. } => no_leader(),
        other => fail(enc, CODE_RAFT, &other.to_string()),
    }
}

/// Runs `f` on the registry after a read barrier on group 0.
pub(crate) async fn read0<R, F>(me: &Rc<Shard>, f: F) -> Result<R, GroupError>
where
    R: Send + 'static,
    F: FnOnce(&CubefsState) -> R + Send + 'static,
{
    me.run_on(0, move |s0: Rc<Shard>| async move {
        s0.group.read_barrier().await?;
        let st = s0.group.state();
        Ok(f(&st.cubefs))
    })
    .await
    .unwrap_or(Err(GroupError::Overloaded))
}

/// Proposes `cmd` to group 0 and returns the registry's outcome.
pub(crate) async fn propose0(
    me: &Rc<Shard>,
    cmd: CubefsCommand,
) -> Result<CubefsOutcome, GroupError> {
    me.run_on(0, move |s0: Rc<Shard>| async move {
        match s0.group.propose(&MetaCommand::Cubefs(cmd)).await? {
            MetaOutcome::Cubefs(o) => Ok(o),
            other => Err(GroupError::Refused(format!("unexpected outcome {other:?}"))),
        }
    })
    .await
    .unwrap_or(Err(GroupError::Overloaded))
}

/// A snapshot of the registry plus the live info of every node in it.
pub(crate) async fn registry_with_live(
    me: &Rc<Shard>,
) -> Result<(CubefsState, LiveMap), GroupError> {
    let state = read0(me, |s| s.registry_clone()).await?;
    let keys = state.nodes.keys().cloned().collect();
    let live = live::gather(me, keys).await;
    Ok((state, live))
}

/// The whole table (volumes and partitions too) plus the live info of every node.
pub(crate) async fn state_with_live(me: &Rc<Shard>) -> Result<(CubefsState, LiveMap), GroupError> {
    let state = read0(me, |s| s.clone()).await?;
    let keys = state.nodes.keys().cloned().collect();
    let live = live::gather(me, keys).await;
    Ok((state, live))
}

/// Answers a proposal's outcome: `data` on success, the refusal's code otherwise.
pub(crate) fn outcome(
    enc: Encoding,
    r: Result<CubefsOutcome, GroupError>,
    data: String,
) -> Response {
    match r {
        Ok(CubefsOutcome::Refused { code, msg }) => fail(enc, code, &msg),
        Ok(_) => ok(enc, data),
        Err(e) => group_fail(enc, &e),
    }
}

/// The leader check of §3, then the handler.
pub(crate) async fn guarded<F, Fut>(me: Rc<Shard>, req: Request, h: F) -> Response
where
    F: FnOnce(Rc<Shard>, Ctx) -> Fut,
    Fut: Future<Output = Response>,
{
    let ctx = Ctx {
        params: Params::of(&req),
        enc: Encoding::of(&req),
        peer: req.peer_addr(),
        body: req.body().clone(),
    };
    let forwarded = req.header(FORWARDED_HEADER).is_some();
    let m = match masters(&me).await {
        Ok(m) => m,
        Err(e) => return group_fail(ctx.enc, &e),
    };
    if m.leader == 0 {
        return no_leader();
    }
    if !m.is_leader && !forwarded {
        let Some(target) = m
            .leader_http
            .as_deref()
            .and_then(|a| a.parse::<SocketAddr>().ok())
        else {
            return no_leader();
        };
        return match proxy::relay(target, Relayed::of(&req)).await {
            Ok(r) => r,
            // Not 403 (the SDK would loop): any other non-200 moves the SDK on.
            Err(e) => Response::text(502, e),
        };
    }
    h(me, ctx).await
}

fn cluster_name(me: &Shard) -> String {
    format!("mast-{:016x}", me.node.cluster.cluster_id)
}

async fn get_ip(me: Rc<Shard>, req: Request) -> Response {
    let enc = Encoding::of(&req);
    let ip = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    ok(
        enc,
        json!({
            "Cluster": cluster_name(&me),
            "Ip": ip,
            "DirChildrenNumLimit": DIR_CHILDREN_NUM_LIMIT,
            "EbsAddr": "",
            "ServicePath": "",
            "ClusterUuid": "",
            "ClusterUuidEnable": false,
            "ClusterEnableSnapshot": false,
            "RaftPartitionCanUsingDifferentPort": false,
            "MetaNodeDeleteBatchCount": 0,
            "MetaNodeDeleteWorkerSleepMs": 0,
            "DataNodeDeleteLimitRate": 0,
            "DataNodeAutoRepairLimitRate": 0,
        }),
    )
}

async fn upgrade_settings(_me: Rc<Shard>, ctx: Ctx) -> Response {
    ok(
        ctx.enc,
        json!({
            "VolsForbidWriteOpOfProtoVer0": [],
            "ClusterForbidWriteOpOfProtoVer0": false,
            "LegacyDataMediaType": false,
            "DataMediaTypeVaild": true,
        }),
    )
}

/// Serves `route` from shard 0's cache of whole-cluster replies (`super::cache`: valid
/// while the registry and the nodes' liveness are unchanged), building it with `build` when
/// there is none; `Err` replies are never kept.
async fn cached<F, Fut>(me: Rc<Shard>, ctx: Ctx, route: &'static str, build: F) -> Response
where
    F: Fn(Rc<Shard>, Encoding) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = Result<Response, Response>> + 'static,
{
    let enc = ctx.enc;
    let slot = (route, enc.gzip);
    let got = me
        .run_on(0, move |s0: Rc<Shard>| async move {
            if let Err(e) = s0.group.read_barrier().await {
                return Parts::of(group_fail(enc, &e));
            }
            // Read after the barrier: a body built from this key is as recent as a build
            // started now would be.
            let key = (s0.group.state().applied(), crate::admintask::live_epoch());
            match s0.cubefs_views.lookup(slot, key) {
                Lookup::Fresh(parts) => parts,
                Lookup::Stale { parts, refresh } => {
                    if refresh {
                        let s = s0.clone();
                        monoio::spawn(async move {
                            match build_off_shard0(&s, enc, build).await {
                                Ok(p) => s.cubefs_views.store(slot, key, p),
                                Err(_) => s.cubefs_views.refresh_failed(slot),
                            }
                        });
                    }
                    parts
                }
                Lookup::Miss => match build_off_shard0(&s0, enc, build).await {
                    Ok(parts) => {
                        s0.cubefs_views.store(slot, key, parts.clone());
                        parts
                    }
                    Err(parts) => parts,
                },
            }
        })
        .await;
    match got {
        Ok(parts) => parts.into_response(),
        Err(e) => fail(enc, CODE_INTERNAL, &format!("shard 0 unavailable: {e}")),
    }
}

/// Runs a whole-cluster build on the last shard: shard 0 holds the registry every
/// request reads, and a megabyte of JSON built there would stall them all.
async fn build_off_shard0<F, Fut>(s0: &Rc<Shard>, enc: Encoding, build: F) -> Result<Parts, Parts>
where
    F: Fn(Rc<Shard>, Encoding) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = Result<Response, Response>> + 'static,
{
    let k = s0.mesh.shards().saturating_sub(1);
    s0.run_on(k, move |sk: Rc<Shard>| async move {
        build(sk, enc).await.map(Parts::of).map_err(Parts::of)
    })
    .await
    .unwrap_or_else(|e| {
        Err(Parts::of(fail(
            enc,
            CODE_INTERNAL,
            &format!("shard {k} unavailable: {e}"),
        )))
    })
}

async fn get_cluster(me: Rc<Shard>, ctx: Ctx) -> Response {
    cached(me, ctx, "/admin/getCluster", build_cluster).await
}

async fn build_cluster(me: Rc<Shard>, enc: Encoding) -> Result<Response, Response> {
    let m = masters(&me).await.map_err(|e| group_fail(enc, &e))?;
    let (state, live) = registry_with_live(&me)
        .await
        .map_err(|e| group_fail(enc, &e))?;
    let nodes = |role| {
        state
            .nodes_of(role)
            .map(|n| views::node_view(&state, &live, n))
            .collect::<Vec<_>>()
    };
    let masters = m
        .members
        .iter()
        .map(|(id, addr)| views::NodeView {
            Addr: addr.clone(),
            Status: true,
            DomainAddr: String::new(),
            ID: *id,
            IsWritable: false,
            MediaType: 0,
            ForbidWriteOpOfProtoVer0: false,
        })
        .collect();
    let created = match state.settings.created_ms {
        0 => now_ms(),
        t => t,
    };
    let view = views::ClusterView {
        Name: cluster_name(&me),
        CreateTime: go_datetime(created),
        LeaderAddr: m.leader_http.unwrap_or_default(),
        DisableAutoAlloc: state.settings.disable_auto_alloc,
        ForbidMpDecommission: false,
        MetaNodeThreshold: state.settings.meta_node_threshold_ppm as f64 / 1e6,
        Applied: m.applied,
        MaxDataPartitionID: 0,
        MaxMetaNodeID: state.max_common_id(),
        MaxMetaPartitionID: 0,
        VolDeletionDelayTimeHour: 0,
        MetaNodeGOGC: 0,
        DataNodeGOGC: 0,
        DataNodeStatInfo: views::node_stat_info(&state, &live, NodeRole::Data),
        MetaNodeStatInfo: views::node_stat_info(&state, &live, NodeRole::Meta),
        VolStatInfo: Vec::new(),
        BadPartitionIDs: Vec::new(),
        BadMetaPartitionIDs: Vec::new(),
        MigratedDataPartitions: Vec::new(),
        MigratedMetaPartitions: Vec::new(),
        DataNodeBadDisks: Vec::new(),
        MasterNodes: masters,
        MetaNodes: nodes(NodeRole::Meta),
        DataNodes: nodes(NodeRole::Data),
        FlashNodes: Vec::new(),
        StatOfStorageClass: Vec::new(),
        StatMigrateStorageClass: Vec::new(),
        DpRepairTimeout: "2h0m0s",
        DpBackupTimeout: "168h0m0s",
        DpTimeout: "5m0s",
        MpTimeout: "1m0s",
        AutoDecommissionDiskInterval: "10s",
        MaxDpCntLimit: views_limit(&state, "maxDpCntLimit"),
        MaxMpCntLimit: views_limit(&state, "maxMpCntLimit"),
    };
    Ok(ok(enc, view))
}

fn views_limit(state: &CubefsState, key: &str) -> u64 {
    node_info_map(state)
        .get(key)
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |f| f as u64)
}

async fn cluster_stat(me: Rc<Shard>, ctx: Ctx) -> Response {
    cached(me, ctx, "/cluster/stat", |me, enc| async move {
        match registry_with_live(&me).await {
            Ok((state, live)) => Ok(ok(enc, views::cluster_stat(&state, &live))),
            Err(e) => Err(group_fail(enc, &e)),
        }
    })
    .await
}

async fn all_nodes(me: Rc<Shard>, ctx: Ctx, role: NodeRole) -> Response {
    let route = match role {
        NodeRole::Data => "/admin/cluster/getAllDataNodes",
        NodeRole::Meta => "/admin/cluster/getAllMetaNodes",
    };
    cached(me, ctx, route, move |me, enc| async move {
        match registry_with_live(&me).await {
            Ok((state, live)) => Ok(ok(
                enc,
                state
                    .nodes_of(role)
                    .map(|n| views::node_view(&state, &live, n))
                    .collect::<Vec<_>>(),
            )),
            Err(e) => Err(group_fail(enc, &e)),
        }
    })
    .await
}

async fn get_node(me: Rc<Shard>, ctx: Ctx, role: NodeRole) -> Response {
    let addr = match ctx.params.required("addr") {
        Ok(a) => a.to_string(),
        Err(e) => return param_fail(ctx.enc, &e),
    };
    let key = addr.clone();
    // Only the node and the settings its view needs cross back, not the whole registry.
    let got = read0(&me, move |s| {
        s.node(role, &key).cloned().map(|n| {
            let mut small = CubefsState::default();
            small.settings = s.settings.clone();
            small.nodes.insert((role, n.addr.clone()), n.clone());
            (small, n)
        })
    })
    .await;
    match got {
        Ok(Some((state, n))) => {
            let live = live::gather(&me, vec![(role, n.addr.clone())]).await;
            match role {
                NodeRole::Data => ok(ctx.enc, views::data_node_info(&state, &live, &n)),
                NodeRole::Meta => ok(ctx.enc, views::meta_node_info(&state, &live, &n)),
            }
        }
        Ok(None) => match role {
            NodeRole::Data => fail(ctx.enc, CODE_DATA_NODE_NOT_EXISTS, "data node not exists"),
            NodeRole::Meta => fail(ctx.enc, CODE_META_NODE_NOT_EXISTS, "meta node not exists"),
        },
        Err(e) => group_fail(ctx.enc, &e),
    }
}

/// `/dataNode/add`, `/metaNode/add` (§7): idempotent per address, IDs from the cluster
/// allocator, the reply a bare number.
async fn add_node(me: Rc<Shard>, ctx: Ctx, role: NodeRole) -> Response {
    let enc = ctx.enc;
    let p = &ctx.params;
    let what = match role {
        NodeRole::Data => "datanode",
        NodeRole::Meta => "metanode",
    };
    // CubeFS's data node exits on this hint; every refusal of the add logic carries it.
    let add_failed = |reason: &str| match role {
        NodeRole::Data => fail(
            enc,
            CODE_INTERNAL,
            &format!("add datanode failed, err {reason}, hint DataNode mediaType not match"),
        ),
        NodeRole::Meta => fail(
            enc,
            CODE_INTERNAL,
            &format!("add metanode failed, err {reason}"),
        ),
    };
    let addr = match p.required("addr") {
        Ok(a) if crate::meta::cubefs::is_ip_port(a) => a.to_string(),
        Ok(a) => {
            return fail(
                enc,
                CODE_PARAM,
                &format!("parameter addr {a:?} is not ip:port"),
            )
        }
        Err(e) => return param_fail(enc, &e),
    };
    let zone = p
        .get("zoneName")
        .unwrap_or(crate::meta::cubefs::ZONE_DEFAULT)
        .to_string();
    let media_type = match (role, p.u64("mediaType")) {
        (NodeRole::Meta, _) => 0,
        (NodeRole::Data, Ok(m)) => m.unwrap_or(0).min(u32::MAX as u64) as u32,
        (NodeRole::Data, Err(e)) => return param_fail(enc, &e),
    };
    let heartbeat_port = p.get("heartbeatPort").unwrap_or("").to_string();
    let replica_port = p.get("replicaPort").unwrap_or("").to_string();
    // A node that registered already gets its id without spending allocator ids.
    let key = addr.clone();
    let existing = read0(&me, move |s| {
        s.node(role, &key)
            .map(|n| (n.id, n.zone.clone(), n.media_type))
    })
    .await;
    match existing {
        Ok(Some((id, z, m))) if z == zone && m == media_type => return ok(enc, id),
        Ok(_) => {}
        Err(e) => return group_fail(enc, &e),
    }
    let ids = match call(me.clone(), ServiceCall::Ids { count: 2 }).await {
        Ok(r) if r.count == 2 => r,
        Ok(r) => {
            return fail(
                enc,
                CODE_INTERNAL,
                &format!("the allocator gave {} ids, not 2", r.count),
            )
        }
        Err(ServiceError::Group(e)) => return group_fail(enc, &e),
        Err(e) => return fail(enc, CODE_INTERNAL, &e.to_string()),
    };
    let cmd = CubefsCommand::AddNode {
        role,
        addr,
        zone,
        heartbeat_port,
        replica_port,
        media_type,
        node_id: ids.first,
        new_set_id: ids.first + 1,
        now_ms: now_ms(),
    };
    match propose0(&me, cmd).await {
        Ok(CubefsOutcome::Node { id, .. }) => ok(enc, id),
        Ok(CubefsOutcome::Refused {
            code: CODE_PARAM,
            msg,
        }) => fail(enc, CODE_PARAM, &msg),
        Ok(CubefsOutcome::Refused { msg, .. }) => add_failed(&msg),
        Ok(CubefsOutcome::Done) => add_failed(&format!("{what} was not added")),
        Err(e) => group_fail(enc, &e),
    }
}

fn node_info_map(state: &CubefsState) -> std::collections::BTreeMap<String, String> {
    NODE_INFO_DEFAULTS
        .iter()
        .map(|(k, d)| {
            let v = state.settings.node_info.get(*k).cloned();
            (k.to_string(), v.unwrap_or_else(|| d.to_string()))
        })
        .collect()
}

async fn get_node_info(me: Rc<Shard>, ctx: Ctx) -> Response {
    match read0(&me, node_info_map).await {
        Ok(m) => ok(ctx.enc, m),
        Err(e) => group_fail(ctx.enc, &e),
    }
}

/// Keys `/admin/setNodeInfo` accepts without storing them (cfs-cli sends them; empty means
/// unchanged, a value is refused rather than silently dropped).
const NODE_INFO_IGNORED: [&str; 1] = ["clientIDKey"];

async fn set_node_info(me: Rc<Shard>, ctx: Ctx) -> Response {
    let mut items = Vec::new();
    for (k, v) in ctx.params.present() {
        if NODE_INFO_IGNORED.contains(&k) {
            continue;
        }
        if !NODE_INFO_DEFAULTS.iter().any(|(d, _)| *d == k) {
            return fail(
                ctx.enc,
                CODE_PARAM,
                &format!("parameter {k} is not supported by mast"),
            );
        }
        items.push((k.to_string(), v.to_string()));
    }
    if items.len() > crate::meta::cubefs::NODE_INFO_KEYS_MAX {
        return fail(ctx.enc, CODE_PARAM, "parameter count not match");
    }
    let msg = format!("set nodeinfo params {items:?} successfully");
    let r = propose0(
        &me,
        CubefsCommand::SetNodeInfo {
            items,
            now_ms: now_ms(),
        },
    )
    .await;
    outcome(ctx.enc, r, msg)
}

async fn freeze(me: Rc<Shard>, ctx: Ctx) -> Response {
    let enable = match ctx.params.bool("enable") {
        Ok(Some(b)) => b,
        Ok(None) => return fail(ctx.enc, CODE_PARAM, "parameter enable not found"),
        Err(e) => return param_fail(ctx.enc, &e),
    };
    let r = propose0(
        &me,
        CubefsCommand::Freeze {
            enable,
            now_ms: now_ms(),
        },
    )
    .await;
    outcome(
        ctx.enc,
        r,
        format!("set DisableAutoAllocate to {enable} successfully"),
    )
}

async fn set_threshold(me: Rc<Shard>, ctx: Ctx) -> Response {
    let t = match ctx.params.f64("threshold") {
        Ok(Some(t)) if (0.0..=1.0).contains(&t) => t,
        Ok(Some(t)) => {
            return fail(
                ctx.enc,
                CODE_PARAM,
                &format!("threshold {t} is not in [0, 1]"),
            )
        }
        Ok(None) => return fail(ctx.enc, CODE_PARAM, "parameter threshold not found"),
        Err(e) => return param_fail(ctx.enc, &e),
    };
    let ppm = (t * 1e6).round() as u32;
    let r = propose0(
        &me,
        CubefsCommand::SetThreshold {
            ppm,
            now_ms: now_ms(),
        },
    )
    .await;
    outcome(ctx.enc, r, format!("set threshold to {t} successfully"))
}

async fn zone_list(me: Rc<Shard>, ctx: Ctx) -> Response {
    match read0(&me, |s| {
        let live = LiveMap::new();
        s.zones
            .values()
            .map(|z| serde_json::to_value(views::zone_view(s, &live, None, z)).unwrap_or_default())
            .collect::<Vec<_>>()
    })
    .await
    {
        Ok(v) => ok(ctx.enc, v),
        Err(e) => group_fail(ctx.enc, &e),
    }
}

async fn topo_get(me: Rc<Shard>, ctx: Ctx) -> Response {
    match registry_with_live(&me).await {
        Ok((state, live)) => {
            let members = views::SetMembers::of(&state);
            let zones: Vec<_> = state
                .zones
                .values()
                .map(|z| views::zone_view(&state, &live, Some(&members), z))
                .collect();
            ok(ctx.enc, json!({ "Zones": zones }))
        }
        Err(e) => group_fail(ctx.enc, &e),
    }
}

/// An optional selector parameter (checked by apply).
fn selector(p: &Params, name: &str) -> Option<String> {
    p.get(name).map(String::from)
}

async fn zone_update(me: Rc<Shard>, ctx: Ctx) -> Response {
    let p = &ctx.params;
    let name = match p.required("name") {
        Ok(n) => n.to_string(),
        Err(e) => return param_fail(ctx.enc, &e),
    };
    let enable = match p.bool("enable") {
        Ok(e) => e,
        Err(e) => return param_fail(ctx.enc, &e),
    };
    let cmd = CubefsCommand::UpdateZone {
        name: name.clone(),
        enable,
        data_nodeset_selector: selector(p, "dataNodesetSelector"),
        meta_nodeset_selector: selector(p, "metaNodesetSelector"),
        data_node_selector: selector(p, "dataNodeSelector"),
        meta_node_selector: selector(p, "metaNodeSelector"),
    };
    let r = propose0(&me, cmd).await;
    outcome(
        ctx.enc,
        r,
        format!("update zone status to [{name}] successfully"),
    )
}

async fn node_set_list(me: Rc<Shard>, ctx: Ctx) -> Response {
    let zone = ctx.params.get("zoneName").map(String::from);
    let (state, live) = match registry_with_live(&me).await {
        Ok(x) => x,
        Err(e) => return group_fail(ctx.enc, &e),
    };
    if let Some(z) = &zone {
        if !state.zones.contains_key(z) {
            return fail(ctx.enc, CODE_ZONE_NOT_EXISTS, "zone not exists");
        }
    }
    let members = views::SetMembers::of(&state);
    let sets: Vec<_> = state
        .node_sets
        .values()
        .filter(|s| match &zone {
            None => true,
            Some(z) => *z == s.zone,
        })
        .map(|s| views::node_set_stat(&state, &live, &members, s))
        .collect();
    ok(ctx.enc, sets)
}

fn node_set_id(ctx: &Ctx) -> Result<u64, Response> {
    match ctx.params.u64("nodesetId") {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(fail(ctx.enc, CODE_PARAM, "parameter nodesetId not found")),
        Err(e) => Err(param_fail(ctx.enc, &e)),
    }
}

async fn node_set_get(me: Rc<Shard>, ctx: Ctx) -> Response {
    let id = match node_set_id(&ctx) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let (state, live) = match registry_with_live(&me).await {
        Ok(x) => x,
        Err(e) => return group_fail(ctx.enc, &e),
    };
    match state.node_sets.get(&id) {
        Some(set) => {
            let members = views::SetMembers::of(&state);
            ok(ctx.enc, views::node_set_info(&state, &live, &members, set))
        }
        None => fail(ctx.enc, CODE_NODE_SET_NOT_EXISTS, "node set not exists"),
    }
}

async fn node_set_update(me: Rc<Shard>, ctx: Ctx) -> Response {
    let id = match node_set_id(&ctx) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let cmd = CubefsCommand::UpdateNodeSet {
        id,
        data_node_selector: selector(&ctx.params, "dataNodeSelector"),
        meta_node_selector: selector(&ctx.params, "metaNodeSelector"),
    };
    let r = propose0(&me, cmd).await;
    outcome(ctx.enc, r, format!("update node set [{id}] successfully"))
}

async fn raft_status(me: Rc<Shard>, ctx: Ctx) -> Response {
    let got = me
        .run_on(0, |s0: Rc<Shard>| async move {
            let st = s0.group.raft_status();
            let state = match st.role {
                Role::Leader => "StateLeader",
                Role::Candidate | Role::PreCandidate => "StateCandidate",
                Role::Follower => "StateFollower",
            };
            let replicas: serde_json::Map<String, serde_json::Value> = st
                .progress
                .iter()
                .map(|p| {
                    (
                        p.id.to_string(),
                        json!({"match": p.matched, "commit": p.matched, "next": p.next,
                               "state": format!("{:?}", p.state), "active": p.recent_active,
                               "learner": p.is_learner}),
                    )
                })
                .collect();
            json!({
                "id": 0, "nodeID": st.id, "leader": st.leader, "term": st.term,
                "index": st.last_index, "commit": st.commit, "applied": st.applied,
                "vote": st.vote, "pendQueue": 0, "recvQueue": 0, "appQueue": 0,
                "stopped": false, "restoringSnapshot": false, "state": state,
                "replicas": replicas,
            })
        })
        .await;
    match got {
        Ok(v) => ok(ctx.enc, v),
        Err(e) => fail(ctx.enc, CODE_INTERNAL, &e.to_string()),
    }
}

/// Applies `cc` to every shard's group in shard order (membership is the same everywhere).
async fn change_everywhere(me: &Rc<Shard>, cc: ConfChange) -> Result<(), GroupError> {
    for s in 0..me.mesh.shards() {
        let cc = cc.clone();
        me.run_on(s, move |shard: Rc<Shard>| async move {
            shard.group.change_membership(cc).await
        })
        .await
        .unwrap_or(Err(GroupError::Overloaded))?;
    }
    Ok(())
}

/// `/raftNode/add?id=&addr=` (addr = the new master's HTTP address). mast's peers also need
/// the peer address: `peerAddr`, required (CubeFS has one address per master).
async fn raft_node_add(me: Rc<Shard>, ctx: Ctx) -> Response {
    let p = &ctx.params;
    let id = match p.u64("id") {
        Ok(Some(id)) if id > 0 => id,
        Ok(_) => return fail(ctx.enc, CODE_PARAM, "parameter id not found"),
        Err(e) => return param_fail(ctx.enc, &e),
    };
    let mut addrs = Vec::new();
    for name in ["addr", "peerAddr"] {
        match p.required(name) {
            Ok(a) if crate::meta::cubefs::is_ip_port(a) => addrs.push(a.to_string()),
            Ok(a) => {
                return fail(
                    ctx.enc,
                    CODE_PARAM,
                    &format!("parameter {name} {a:?} is not ip:port"),
                )
            }
            Err(e) => return param_fail(ctx.enc, &e),
        }
    }
    let context = crate::codec::encode(&MemberAddrs {
        http_addr: addrs[0].clone(),
        peer_addr: addrs[1].clone(),
    });
    let cc = ConfChange {
        kind: ConfChangeKind::AddLearner,
        node_id: id,
        context,
    };
    match change_everywhere(&me, cc).await {
        Ok(()) => ok(
            ctx.enc,
            format!("add raft node id :{id}, addr:{} successfully", addrs[0]),
        ),
        Err(e) => group_fail(ctx.enc, &e),
    }
}

async fn raft_node_remove(me: Rc<Shard>, ctx: Ctx) -> Response {
    let id = match ctx.params.u64("id") {
        Ok(Some(id)) if id > 0 => id,
        Ok(_) => return fail(ctx.enc, CODE_PARAM, "parameter id not found"),
        Err(e) => return param_fail(ctx.enc, &e),
    };
    let cc = ConfChange {
        kind: ConfChangeKind::RemoveNode,
        node_id: id,
        context: vec![],
    };
    match change_everywhere(&me, cc).await {
        Ok(()) => ok(ctx.enc, format!("remove raft node id :{id} successfully")),
        Err(e) => group_fail(ctx.enc, &e),
    }
}

/// `/master/changeleader`: this master asks to lead (every shard, so leader affinity keeps
/// one node leading everything). Answered locally, never relayed.
async fn change_leader(me: Rc<Shard>, req: Request) -> Response {
    let enc = Encoding::of(&req);
    let to = me.node.id;
    let mut refused = Vec::new();
    for s in 0..me.mesh.shards() {
        let r = me
            .run_on(s, move |shard: Rc<Shard>| async move {
                if shard.group.is_leader() {
                    return Ok(());
                }
                shard.group.transfer_leader(to)
            })
            .await
            .unwrap_or(Err(GroupError::Overloaded));
        if let Err(e) = r {
            refused.push(format!("shard {s}: {e}"));
        }
    }
    if refused.is_empty() {
        ok(enc, format!("change leader to {to} successfully"))
    } else if refused.iter().any(|r| r.contains("no leader")) {
        no_leader()
    } else {
        fail(enc, CODE_INTERNAL, &refused.join("; "))
    }
}

/// Adds a route for GET, and for POST too unless CubeFS serves it GET only.
pub(crate) fn add<F, Fut>(
    router: Router,
    shard: &Rc<Shard>,
    path: &str,
    get_only: bool,
    h: F,
) -> Router
where
    F: Fn(Rc<Shard>, Ctx) -> Fut + Copy + 'static,
    Fut: Future<Output = Response> + 'static,
{
    let methods: &[Method] = if get_only {
        &[Method::GET]
    } else {
        &[Method::GET, Method::POST]
    };
    let mut router = router;
    for &m in methods {
        let s = shard.clone();
        router = router.route(m, path, move |req: Request| guarded(s.clone(), req, h));
    }
    router
}

pub fn routes(router: Router, shard: Rc<Shard>) -> Router {
    let s = &shard;
    let a = shard.clone();
    let mut r = router.route(Method::GET, "/admin/getIp", move |req: Request| {
        get_ip(a.clone(), req)
    });
    for m in [Method::GET, Method::POST] {
        let c = shard.clone();
        r = r.route(m, "/master/changeleader", move |req: Request| {
            change_leader(c.clone(), req)
        });
    }
    let r = add(r, s, "/admin/getCluster", true, get_cluster);
    let r = add(
        r,
        s,
        "/admin/getUpgradeCompatibleSettings",
        false,
        upgrade_settings,
    );
    let r = add(r, s, "/admin/getNodeInfo", false, get_node_info);
    let r = add(r, s, "/admin/setNodeInfo", false, set_node_info);
    let r = add(r, s, "/cluster/stat", true, cluster_stat);
    let r = add(r, s, "/cluster/freeze", false, freeze);
    let r = add(r, s, "/threshold/set", false, set_threshold);
    let r = add(r, s, "/admin/cluster/getAllDataNodes", true, |me, ctx| {
        all_nodes(me, ctx, NodeRole::Data)
    });
    let r = add(r, s, "/admin/cluster/getAllMetaNodes", true, |me, ctx| {
        all_nodes(me, ctx, NodeRole::Meta)
    });
    let r = add(r, s, "/dataNode/add", false, |me, ctx| {
        add_node(me, ctx, NodeRole::Data)
    });
    let r = add(r, s, "/metaNode/add", false, |me, ctx| {
        add_node(me, ctx, NodeRole::Meta)
    });
    let r = add(r, s, "/dataNode/get", true, |me, ctx| {
        get_node(me, ctx, NodeRole::Data)
    });
    let r = add(r, s, "/metaNode/get", true, |me, ctx| {
        get_node(me, ctx, NodeRole::Meta)
    });
    let r = add(r, s, "/zone/list", true, zone_list);
    let r = add(r, s, "/zone/update", false, zone_update);
    let r = add(r, s, "/topo/get", true, topo_get);
    let r = add(r, s, "/nodeSet/list", true, node_set_list);
    let r = add(r, s, "/nodeSet/get", true, node_set_get);
    let r = add(r, s, "/nodeSet/update", false, node_set_update);
    let r = add(r, s, "/get/raftStatus", false, raft_status);
    let r = add(r, s, "/raftNode/add", false, raft_node_add);
    add(r, s, "/raftNode/remove", false, raft_node_remove)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_info_shows_defaults_and_set_values() {
        let mut s = CubefsState::default();
        s.settings.node_info.insert("batchCount".into(), "9".into());
        let m = node_info_map(&s);
        assert_eq!(m.len(), NODE_INFO_DEFAULTS.len());
        assert_eq!(m["batchCount"], "9");
        assert_eq!(m["maxDpCntLimit"], "3000");
    }
}
