//! Volume, partition and user routes (reference §6, §9).
//!
//! `/admin/createVol` follows §9's order with one difference in where the record lands: the
//! meta partitions are created on their meta nodes (sync tasks), then the data partitions on
//! their data nodes, and only then is the whole volume (record, partitions, owner user)
//! proposed as one command. A failure at any step deletes what was created on the nodes and
//! leaves the table untouched, so a leader that dies midway leaves no half volume behind.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use mast_http::Router;
use rand::Rng;
use serde_json::json;

use super::api::{add, group_fail, outcome, propose0, read0, state_with_live, Ctx};
use super::dialect::{fail, now_ms, ok, param_fail};
use super::live::LiveMap;
use super::md5;
use super::placement::{self, Cand, Cursors, SetInfo, Topology, Want, ZoneInfo};
use super::tasks::{abandon, create_batch, marks_step, replicas_of, update_mp_end, CreateOnNode};
use super::views::{is_writable, live_of};
use super::vol_views as vv;
use crate::meta::cubefs::volumes::{
    is_user_id, is_vol_name, DataPartition, MetaPartition, Peer, User, VolCommand, VolUpdate,
    Volume, CODE_DP_NOT_EXISTS, CODE_DUPLICATE_VOL, CODE_MP_NOT_EXISTS, CODE_USER_NOT_EXISTS,
    CODE_VOL_NOT_EXISTS, MP_CREATE_MAX, PARTITION_READ_WRITE, USER_NORMAL, VOL_MARK_DELETE,
};
use crate::meta::cubefs::{
    CubefsCommand, CubefsOutcome, CubefsState, NodeRole, CODE_INTERNAL, CODE_PARAM, ZONE_DEFAULT,
};
use crate::node::shard::Shard;
use crate::services::{api::call, ServiceCall, ServiceError};

const GB: u64 = 1 << 30;
/// §4 defaults and bounds.
pub const MP_COUNT_DEFAULT: u64 = 3;
pub const MP_COUNT_MAX: u64 = 100;
pub const DP_COUNT_DEFAULT: u64 = 3;
pub const DP_COUNT_MAX: u64 = 200;
pub const DP_SIZE_GB_DEFAULT: u64 = 120;
pub const MP_REPLICAS: usize = 3;
pub const MP_INODE_STEP: u64 = 1 << 22;
/// The last meta partition is open-ended up to this inode.
pub const INODE_MAX: u64 = u64::MAX >> 1;
/// Rounds of data partition creation at volume creation (§9).
const DP_CREATE_ROUNDS: usize = 3;
/// A volume needs at least this many data partitions to be created (§9).
const DP_COUNT_MIN: usize = 3;
/// `/dataPartition/create` count bound per request.
const DP_CREATE_PER_REQUEST_MAX: u64 = 100;
/// CubeFS's code for an authKey mismatch (§2).
const CODE_AUTH_KEY_MISMATCH: i32 = 34;
const CODE_NO_DP: i32 = 18;

thread_local! {
    /// The placement selectors' memory (leader memory on shard 0, where creation runs).
    static CURSORS: RefCell<Cursors> = RefCell::new(Cursors::default());
}

fn allocator_fail(ctx: &Ctx, e: ServiceError) -> mast_http::Response {
    match e {
        ServiceError::Group(g) => group_fail(ctx.enc, &g),
        other => fail(ctx.enc, CODE_INTERNAL, &other.to_string()),
    }
}

/// Placement's view of one role's nodes.
pub(crate) fn topology(
    state: &CubefsState,
    live: &LiveMap,
    role: NodeRole,
    media_type: u32,
) -> Topology {
    let mut t = Topology::default();
    for z in state.zones.values() {
        t.zones.push(ZoneInfo {
            name: z.name.clone(),
            available: z.available,
            nodeset_selector: match role {
                NodeRole::Data => z.data_nodeset_selector.clone(),
                NodeRole::Meta => z.meta_nodeset_selector.clone(),
            },
        });
    }
    for s in state.node_sets.values() {
        t.sets.push(SetInfo {
            id: s.id,
            zone: s.zone.clone(),
            node_selector: match role {
                NodeRole::Data => s.data_node_selector.clone(),
                NodeRole::Meta => s.meta_node_selector.clone(),
            },
        });
    }
    let dp_limit = state
        .settings
        .node_info
        .get("maxDpCntLimit")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|v| *v > 0)
        .unwrap_or(3000);
    for n in state.nodes_of(role) {
        if role == NodeRole::Data && media_type != 0 && n.media_type != media_type {
            continue;
        }
        let l = live_of(live, n);
        let leaving = state.vt.decommissioning.contains(&(role, n.addr.clone()));
        let under_limit = role == NodeRole::Meta || l.partition_count <= dp_limit;
        t.nodes.push(Cand {
            id: n.id,
            addr: n.addr.clone(),
            zone: n.zone.clone(),
            node_set: n.node_set,
            writable: is_writable(state, n, &l) && under_limit && !leaving,
            free_bytes: l.total_bytes.saturating_sub(l.used_bytes),
        });
    }
    t
}

fn place(topo: &Topology, want: &Want) -> Result<Vec<Cand>, placement::PlaceError> {
    CURSORS.with(|c| placement::place(topo, want, &mut c.borrow_mut()))
}

/// `count` new hosts in `zones` (all zones when empty), none of `exclude`.
pub(crate) fn place_for(
    topo: &Topology,
    role: NodeRole,
    count: usize,
    zones: &[String],
    exclude: Vec<String>,
) -> Result<Vec<Cand>, placement::PlaceError> {
    let want = Want {
        role,
        replicas: count,
        zones: zones.to_vec(),
        cross_zone: zones.len() != 1,
        allow_same_ip: false,
        exclude,
    };
    place(topo, &want)
}

/// A placed meta partition: its hosts, the create task for each, its raft peers.
type PlacedMeta = (Vec<Cand>, Vec<CreateOnNode>, Vec<Peer>);

/// One meta partition's replicas placed, with the create task for each and its peers: createVol
/// and `/metaPartition/create` place meta partitions alike.
fn place_meta_partition(
    topo: &Topology,
    zones: &[String],
    cross_zone: bool,
    vol: &str,
    id: u64,
    start: u64,
    end: u64,
) -> Result<PlacedMeta, placement::PlaceError> {
    let want = Want {
        role: NodeRole::Meta,
        replicas: MP_REPLICAS,
        zones: zones.to_vec(),
        cross_zone,
        allow_same_ip: false,
        exclude: vec![],
    };
    let chosen = place(topo, &want)?;
    let peers = to_peers(&chosen);
    let creates = chosen
        .iter()
        .map(|n| CreateOnNode {
            role: NodeRole::Meta,
            addr: n.addr.clone(),
            partition_id: id,
            vol: vol.to_string(),
            size_bytes: 0,
            start,
            end,
            members: peers.clone(),
        })
        .collect();
    Ok((chosen, creates, peers))
}

fn to_peers(c: &[Cand]) -> Vec<Peer> {
    c.iter()
        .map(|n| Peer {
            id: n.id,
            addr: n.addr.clone(),
        })
        .collect()
}

/// Hosts shuffled as CubeFS does (`hosts[0]` leads writes); peers keep selection order.
fn shuffled_hosts(c: &[Cand]) -> Vec<String> {
    let mut hosts: Vec<String> = c.iter().map(|n| n.addr.clone()).collect();
    let mut rng = rand::thread_rng();
    for i in (1..hosts.len()).rev() {
        hosts.swap(i, rng.gen_range(0..=i));
    }
    hosts
}

/// The zone list a new volume uses (§9 step 0), or the reason it is refused (code 1).
fn normalise_zones(
    state: &CubefsState,
    zone_name: Option<&str>,
    cross: bool,
) -> Result<Vec<String>, String> {
    let named: Vec<String> = zone_name
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|z| !z.is_empty())
        .map(String::from)
        .collect();
    for z in &named {
        if !state.zones.contains_key(z) {
            return Err(format!("zone {z} not exists"));
        }
    }
    if !cross {
        if named.len() > 1 {
            return Err("a volume that is not cross-zone names at most one zone".into());
        }
        if named.is_empty() {
            if !state.zones.contains_key(ZONE_DEFAULT) {
                return Err(format!("zone {ZONE_DEFAULT} not exists"));
            }
            return Ok(vec![ZONE_DEFAULT.into()]);
        }
        return Ok(named);
    }
    if state.zones.len() < 2 {
        return Err("cross-zone volumes need more than one zone in the cluster".into());
    }
    if named.len() == 1 {
        return Err("a cross-zone volume names no zone or at least two".into());
    }
    Ok(named)
}

/// Places one data partition: its record and the create task of each replica.
fn plan_dp(
    topo: &Topology,
    vol: &Volume,
    zones: &[String],
    id: u64,
) -> Result<(DataPartition, Vec<CreateOnNode>), (i32, String)> {
    let want = Want {
        role: NodeRole::Data,
        replicas: vol.dp_replica_num as usize,
        zones: zones.to_vec(),
        cross_zone: vol.cross_zone,
        allow_same_ip: false,
        exclude: vec![],
    };
    let chosen = place(topo, &want).map_err(|e| (e.code, e.msg))?;
    let peers = to_peers(&chosen);
    let creates = chosen
        .iter()
        .map(|n| CreateOnNode {
            role: NodeRole::Data,
            addr: n.addr.clone(),
            partition_id: id,
            vol: vol.name.clone(),
            size_bytes: vol.dp_size_gb.saturating_mul(GB),
            start: 0,
            end: 0,
            members: peers.clone(),
        })
        .collect();
    let dp = DataPartition {
        id,
        vol: vol.name.clone(),
        replica_num: vol.dp_replica_num,
        hosts: shuffled_hosts(&chosen),
        peers,
        status: PARTITION_READ_WRITE,
        media_type: vol.media_type,
        created_ms: vol.created_ms,
    };
    Ok((dp, creates))
}

/// Places `want` data partitions with the ids `take_id` hands out and creates them
/// (one intent, creates in parallel); returns the ones that landed and the last error.
/// Placement failing stops early (no room left).
async fn create_dps(
    me: &Rc<Shard>,
    topo: &Topology,
    vol: &Volume,
    zones: &[String],
    want: usize,
    take_id: &mut dyn FnMut() -> u64,
) -> (Vec<DataPartition>, Option<(i32, String)>) {
    let mut planned = Vec::new();
    let mut err = None;
    for _ in 0..want {
        match plan_dp(topo, vol, zones, take_id()) {
            Ok(p) => planned.push(p),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let (records, creates): (Vec<DataPartition>, Vec<Vec<CreateOnNode>>) =
        planned.into_iter().unzip();
    match create_batch(me, creates).await {
        Err(e) => (Vec::new(), Some((CODE_INTERNAL, e))),
        Ok(results) => {
            let mut made = Vec::new();
            for (d, r) in records.into_iter().zip(results) {
                match r {
                    Ok(()) => made.push(d),
                    Err(e) => err = Some((CODE_INTERNAL, e)),
                }
            }
            (made, err)
        }
    }
}

/// Created partitions that will not be recorded: their replicas become pending deletes.
async fn abandon_partitions(me: &Rc<Shard>, mps: &[MetaPartition], dps: &[DataPartition]) {
    let mut replicas = Vec::new();
    for m in mps {
        replicas.extend(replicas_of(NodeRole::Meta, m.id, &m.hosts));
    }
    for d in dps {
        replicas.extend(replicas_of(NodeRole::Data, d.id, &d.hosts));
    }
    abandon(me, replicas).await;
}

fn random_key(len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

fn new_user(id: &str, user_type: u8, description: &str, now: u64) -> User {
    User {
        id: id.to_string(),
        access_key: random_key(16),
        secret_key: random_key(32),
        user_type,
        description: description.to_string(),
        created_ms: now,
        own_vols: vec![],
    }
}

/// `/admin/createVol` (§6, §9).
async fn create_vol(me: Rc<Shard>, ctx: Ctx) -> mast_http::Response {
    let enc = ctx.enc;
    let p = &ctx.params;
    macro_rules! try_param {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => return param_fail(enc, &e),
            }
        };
    }
    let name = try_param!(p.required("name")).to_string();
    if !is_vol_name(&name) {
        return fail(enc, CODE_PARAM, "name can only be number and letters");
    }
    let owner = try_param!(p.required("owner")).to_string();
    if !is_user_id(&owner) {
        return fail(enc, CODE_PARAM, "owner can only be number and letters");
    }
    let capacity = try_param!(p.u64("capacity"));
    let Some(capacity) = capacity.filter(|c| *c > 0) else {
        return fail(
            enc,
            CODE_PARAM,
            "parameter capacity not found or not greater than 0",
        );
    };
    let mp_count = try_param!(p.u64("mpCount"))
        .unwrap_or(MP_COUNT_DEFAULT)
        .clamp(MP_COUNT_DEFAULT, MP_COUNT_MAX);
    let dp_count = try_param!(p.u64("dpCount")).unwrap_or(DP_COUNT_DEFAULT);
    if dp_count > DP_COUNT_MAX {
        return fail(
            enc,
            CODE_PARAM,
            &format!("dpCount {dp_count} is over {DP_COUNT_MAX}"),
        );
    }
    let dp_count = dp_count.max(DP_COUNT_DEFAULT);
    let dp_size = match try_param!(p.u64("dpSize")) {
        None => DP_SIZE_GB_DEFAULT,
        Some(s) if s > 10 => s,
        Some(s) => {
            return fail(
                enc,
                CODE_PARAM,
                &format!("dpSize {s} GB must be greater than 10"),
            )
        }
    };
    let replica_num = match try_param!(p.u64("replicaNum")).unwrap_or(0) {
        0 => 3u8,
        r @ 1..=3 => r as u8,
        r => return fail(enc, CODE_PARAM, &format!("replicaNum {r} is not in 1..3")),
    };
    let cross_zone = try_param!(p.bool("crossZone")).unwrap_or(false);
    // One and two replicas force follower reads (§4).
    let follower_read = try_param!(p.bool("followerRead")).unwrap_or(false) || replica_num < 3;
    let description = p.get("description").unwrap_or("").to_string();
    if description.len() > crate::meta::cubefs::volumes::DESCRIPTION_BYTES_MAX {
        return fail(enc, CODE_PARAM, "description too long");
    }
    let vol_media = try_param!(p.u64("volStorageClass")).unwrap_or(0);
    let mut vol = Volume {
        id: 0,
        name: name.clone(),
        owner: owner.clone(),
        capacity_gb: capacity,
        dp_replica_num: replica_num,
        mp_replica_num: MP_REPLICAS as u8,
        dp_size_gb: dp_size,
        zone_name: String::new(),
        cross_zone,
        follower_read,
        meta_follower_read: try_param!(p.bool("metaFollowerRead")).unwrap_or(false),
        authenticate: try_param!(p.bool("authenticate")).unwrap_or(false),
        enable_quota: try_param!(p.bool("enableQuota")).unwrap_or(false),
        dp_read_only_when_vol_full: try_param!(p.bool("dpReadOnlyWhenVolFull")).unwrap_or(false),
        description,
        delete_lock_time_h: try_param!(p.u64("deleteLockTime")).unwrap_or(0),
        media_type: 0,
        status: 0,
        created_ms: now_ms(),
    };
    let (state, live) = match state_with_live(&me).await {
        Ok(x) => x,
        Err(e) => return group_fail(enc, &e),
    };
    if state.vt.vols.contains_key(&name) {
        return fail(enc, CODE_DUPLICATE_VOL, "duplicate vol");
    }
    let zones = match normalise_zones(&state, p.get("zoneName"), cross_zone) {
        Ok(z) => z,
        Err(e) => return fail(enc, CODE_INTERNAL, &e),
    };
    vol.zone_name = zones.join(",");
    // volStorageClass 0: the fastest class present (SSD if any SSD data node).
    vol.media_type = match vol_media {
        0 => {
            let medias: BTreeSet<u32> = state
                .nodes_of(NodeRole::Data)
                .map(|n| n.media_type)
                .collect();
            match medias.iter().next() {
                Some(m) => *m,
                None => {
                    return fail(
                        enc,
                        placement::CODE_NO_DATA_NODE,
                        "No data node available for creating a data partition",
                    )
                }
            }
        }
        1 | 2 => vol_media as u32,
        m => {
            return fail(
                enc,
                CODE_PARAM,
                &format!("volStorageClass {m} is not 1 (SSD) or 2 (HDD)"),
            )
        }
    };
    let ids_wanted = 1 + mp_count + dp_count * DP_CREATE_ROUNDS as u64;
    let ids = match call(me.clone(), ServiceCall::Ids { count: ids_wanted }).await {
        Ok(r) if r.count == ids_wanted => r,
        Ok(r) => {
            return fail(
                enc,
                CODE_INTERNAL,
                &format!("the allocator gave {} ids, not {ids_wanted}", r.count),
            )
        }
        Err(e) => return allocator_fail(&ctx, e),
    };
    let mut next_id = ids.first;
    let mut take_id = || {
        let id = next_id;
        next_id += 1;
        id
    };
    vol.id = take_id();
    // Meta partitions: each on 3 meta nodes, ranges stepped by the inode step (§4). All of
    // them are placed first and created under one intent (one raft commit).
    let meta_topo = topology(&state, &live, NodeRole::Meta, 0);
    let mut mps: Vec<MetaPartition> = Vec::new();
    let mut mp_creates = Vec::new();
    let mut start = 0u64;
    for i in 0..mp_count {
        let id = take_id();
        let end = if i + 1 == mp_count {
            INODE_MAX
        } else {
            MP_INODE_STEP * (i + 1)
        };
        let (chosen, creates, peers) =
            match place_meta_partition(&meta_topo, &zones, cross_zone, &name, id, start, end) {
                Ok(p) => p,
                Err(e) => return fail(enc, e.code, &e.msg),
            };
        mp_creates.push(creates);
        mps.push(MetaPartition {
            id,
            vol: name.clone(),
            start,
            end,
            hosts: chosen.iter().map(|n| n.addr.clone()).collect(),
            peers,
            status: PARTITION_READ_WRITE,
            created_ms: vol.created_ms,
        });
        start = end.saturating_add(1);
    }
    let mp_results = match create_batch(&me, mp_creates).await {
        Ok(r) => r,
        Err(e) => return fail(enc, CODE_INTERNAL, &format!("create meta partitions: {e}")),
    };
    if let Some((m, e)) = mps
        .iter()
        .zip(&mp_results)
        .find_map(|(m, r)| r.as_ref().err().map(|e| (m, e)))
    {
        // The failed ones are abandoned by create_batch; the others are not recorded either.
        let landed: Vec<MetaPartition> = mps
            .iter()
            .zip(&mp_results)
            .filter(|(_, r)| r.is_ok())
            .map(|(m, _)| m.clone())
            .collect();
        abandon_partitions(&me, &landed, &[]).await;
        return fail(
            enc,
            CODE_INTERNAL,
            &format!("create meta partition {} failed: {e}", m.id),
        );
    }
    // Data partitions: dpCount, up to 3 rounds for the ones that failed.
    let data_topo = topology(&state, &live, NodeRole::Data, vol.media_type);
    let mut dps: Vec<DataPartition> = Vec::new();
    let mut last_err = (placement::CODE_NO_DATA_NODE, String::new());
    for _ in 0..DP_CREATE_ROUNDS {
        let want = (dp_count as usize).saturating_sub(dps.len());
        if want == 0 {
            break;
        }
        let (made, err) = create_dps(&me, &data_topo, &vol, &zones, want, &mut take_id).await;
        dps.extend(made);
        if let Some(e) = err {
            last_err = e;
        }
    }
    if dps.len() < DP_COUNT_MIN {
        abandon_partitions(&me, &mps, &dps).await;
        return fail(enc, last_err.0, &last_err.1);
    }
    let dp_n = dps.len();
    let cmd = CubefsCommand::vol(VolCommand::CreateVol {
        vol,
        meta_partitions: mps.clone(),
        data_partitions: dps.clone(),
        owner: new_user(&owner, USER_NORMAL, "", now_ms()),
    });
    match propose0(&me, cmd).await {
        Ok(CubefsOutcome::Refused { code, msg }) => {
            abandon_partitions(&me, &mps, &dps).await;
            fail(enc, code, &msg)
        }
        Ok(_) => ok(
            enc,
            format!("create vol[{name}] successfully, has allocate [{dp_n}] data partitions"),
        ),
        // Unknown outcome: if the volume was recorded its intents are fulfilled; if not,
        // they stay until a later leader (or their age) abandons them.
        Err(e) => group_fail(enc, &e),
    }
}

/// The volume named by `name`, or the CubeFS error.
fn vol_of<'a>(s: &'a CubefsState, ctx: &Ctx) -> Result<&'a Volume, (i32, String)> {
    let name = ctx.params.required("name").map_err(|e| (CODE_PARAM, e.0))?;
    s.vt.vols
        .get(name)
        .ok_or((CODE_VOL_NOT_EXISTS, "vol not exists".to_string()))
}

/// Reads the table and answers with `f`'s value or CubeFS error.
async fn read_reply<F>(me: Rc<Shard>, ctx: Ctx, f: F) -> mast_http::Response
where
    F: FnOnce(&CubefsState, &Ctx) -> Result<serde_json::Value, (i32, String)> + Send + 'static,
{
    let enc = ctx.enc;
    let r = read0(&me, move |s| f(s, &ctx)).await;
    match r {
        Ok(Ok(v)) => ok(enc, v),
        Ok(Err((code, msg))) => fail(enc, code, &msg),
        Err(e) => group_fail(enc, &e),
    }
}

async fn get_vol(me: Rc<Shard>, ctx: Ctx) -> mast_http::Response {
    read_reply(me, ctx, |s, ctx| {
        vol_of(s, ctx).map(|v| vv::simple_vol_view(s, v))
    })
    .await
}

async fn vol_list(me: Rc<Shard>, ctx: Ctx) -> mast_http::Response {
    read_reply(me, ctx, |s, ctx| {
        let kw = ctx.params.get("keywords").unwrap_or("");
        Ok(serde_json::Value::Array(
            s.vt.vols
                .values()
                .filter(|v| v.name.contains(kw))
                .map(vv::vol_info)
                .collect(),
        ))
    })
    .await
}

/// The authKey check of the owner's routes (code 34 on mismatch).
fn check_auth(v: &Volume, ctx: &Ctx) -> Result<(), (i32, String)> {
    let key = ctx
        .params
        .required("authKey")
        .map_err(|e| (CODE_PARAM, e.0))?;
    if key != md5::hex(&v.owner) {
        return Err((
            CODE_AUTH_KEY_MISMATCH,
            "client and server auth key do not match".into(),
        ));
    }
    Ok(())
}

async fn client_vol(me: Rc<Shard>, ctx: Ctx) -> mast_http::Response {
    read_reply(me, ctx, |s, ctx| {
        let v = vol_of(s, ctx)?;
        if v.status == VOL_MARK_DELETE {
            return Err((
                crate::meta::cubefs::volumes::CODE_VOL_DELETED,
                "vol has been deleted".into(),
            ));
        }
        check_auth(v, ctx)?;
        Ok(vv::vol_view(s, v))
    })
    .await
}

async fn vol_stat(me: Rc<Shard>, ctx: Ctx) -> mast_http::Response {
    read_reply(me, ctx, |s, ctx| vol_of(s, ctx).map(vv::vol_stat)).await
}

async fn client_mps(me: Rc<Shard>, ctx: Ctx) -> mast_http::Response {
    read_reply(me, ctx, |s, ctx| {
        let v = vol_of(s, ctx)?;
        Ok(serde_json::Value::Array(
            s.vt.mps_of(&v.name).map(vv::mp_view).collect(),
        ))
    })
    .await
}

/// Volumes whose `/client/partitions` reply shard 0 keeps rendered at most.
const PARTITIONS_CACHE_VOLS_MAX: usize = 1024;

thread_local! {
    /// Shard 0's rendered `/client/partitions` replies: volume → (the table's applied index
    /// they were rendered at, the reply bytes). Every client polls this route and the table
    /// rarely changes between polls, so a poll is a read barrier and a copy of the bytes.
    static PARTITIONS_CACHE: RefCell<std::collections::HashMap<String, (u64, bytes::Bytes)>> =
        RefCell::default();
}

#[derive(serde::Serialize)]
struct Envelope<'a, T> {
    code: i32,
    msg: &'a str,
    data: T,
}

async fn client_partitions(me: Rc<Shard>, ctx: Ctx) -> mast_http::Response {
    let enc = ctx.enc;
    if enc.gzip {
        return read_reply(me, ctx, |s, ctx| {
            let v = vol_of(s, ctx)?;
            vv::dp_views(s, v).ok_or((CODE_NO_DP, "no available data partition".into()))
        })
        .await;
    }
    let name = match ctx.params.required("name") {
        Ok(n) => n.to_string(),
        Err(e) => return param_fail(enc, &e),
    };
    let r = me
        .run_on(0, move |s0: Rc<Shard>| async move {
            use crate::replica::StateMachine;
            s0.group.read_barrier().await?;
            let st = s0.group.state();
            let at = st.applied();
            let hit = PARTITIONS_CACHE.with(|c| {
                c.borrow()
                    .get(&name)
                    .filter(|(i, _)| *i == at)
                    .map(|(_, b)| b.clone())
            });
            if let Some(b) = hit {
                return Ok(Ok(b));
            }
            let cs = &st.cubefs;
            let Some(v) = cs.vt.vols.get(&name) else {
                return Ok(Err((CODE_VOL_NOT_EXISTS, "vol not exists".to_string())));
            };
            let Some(view) = vv::dp_views(cs, v) else {
                return Ok(Err((CODE_NO_DP, "no available data partition".to_string())));
            };
            let env = Envelope {
                code: 0,
                msg: "success",
                data: view,
            };
            let body = match serde_json::to_vec(&env) {
                Ok(b) => bytes::Bytes::from(b),
                Err(e) => return Ok(Err((CODE_INTERNAL, e.to_string()))),
            };
            PARTITIONS_CACHE.with(|c| {
                let mut c = c.borrow_mut();
                if c.len() >= PARTITIONS_CACHE_VOLS_MAX {
                    c.clear();
                }
                c.insert(name, (at, body.clone()));
            });
            Ok(Ok(body))
        })
        .await
        .unwrap_or(Err(crate::replica::GroupError::Overloaded));
    match r {
        Ok(Ok(body)) => mast_http::Response::bytes(200, "application/json", body),
        Ok(Err((code, msg))) => fail(enc, code, &msg),
        Err(e) => group_fail(enc, &e),
    }
}

fn id_param(ctx: &Ctx) -> Result<u64, (i32, String)> {
    match ctx.params.u64("id") {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err((CODE_PARAM, "parameter id not found".into())),
        Err(e) => Err((CODE_PARAM, e.0)),
    }
}

async fn dp_get(me: Rc<Shard>, ctx: Ctx) -> mast_http::Response {
    read_reply(me, ctx, |s, ctx| {
        let id = id_param(ctx)?;
        let d =
            s.vt.dps
                .get(&id)
                .filter(|d| ctx.params.get("name").map_or(true, |n| n == d.vol))
                .ok_or((CODE_DP_NOT_EXISTS, "data partition not exists".to_string()))?;
        Ok(vv::dp_info(s, d))
    })
    .await
}

async fn mp_get(me: Rc<Shard>, ctx: Ctx) -> mast_http::Response {
    read_reply(me, ctx, |s, ctx| {
        let id = id_param(ctx)?;
        let m =
            s.vt.mps
                .get(&id)
                .ok_or((CODE_MP_NOT_EXISTS, "meta partition not exists".to_string()))?;
        Ok(vv::mp_info(s, m))
    })
    .await
}

/// Reads the volume and checks the owner's authKey; then proposes what `f` makes of it.
async fn owner_update<F>(me: Rc<Shard>, ctx: Ctx, f: F) -> mast_http::Response
where
    F: FnOnce(&Volume, &Ctx) -> Result<(VolCommand, String), (i32, String)> + Send + 'static,
{
    let enc = ctx.enc;
    let r = read0(&me, move |s| {
        let v = vol_of(s, &ctx)?;
        check_auth(v, &ctx)?;
        f(v, &ctx)
    })
    .await;
    let (cmd, reply) = match r {
        Ok(Ok(x)) => x,
        Ok(Err((code, msg))) => return fail(enc, code, &msg),
        Err(e) => return group_fail(enc, &e),
    };
    outcome(
        enc,
        propose0(&me, CubefsCommand::Vol(Box::new(cmd))).await,
        reply,
    )
}

fn update_of(v: &Volume, ctx: &Ctx) -> Result<VolUpdate, (i32, String)> {
    let p = &ctx.params;
    let e = |e: super::dialect::ParamError| (CODE_PARAM, e.0);
    Ok(VolUpdate {
        capacity_gb: p.u64("capacity").map_err(e)?,
        description: p.get("description").map(String::from),
        follower_read: p
            .bool("followerRead")
            .map_err(e)?
            .map(|f| f || v.dp_replica_num < 3),
        meta_follower_read: p.bool("metaFollowerRead").map_err(e)?,
        authenticate: p.bool("authenticate").map_err(e)?,
        enable_quota: p.bool("enableQuota").map_err(e)?,
        dp_read_only_when_vol_full: p.bool("dpReadOnlyWhenVolFull").map_err(e)?,
        delete_lock_time_h: p.u64("deleteLockTime").map_err(e)?,
    })
}

async fn vol_update(me: Rc<Shard>, ctx: Ctx) -> mast_http::Response {
    owner_update(me, ctx, |v, ctx| {
        let update = update_of(v, ctx)?;
        Ok((
            VolCommand::UpdateVol {
                name: v.name.clone(),
                update,
            },
            format!("update vol[{}] successfully", v.name),
        ))
    })
    .await
}

/// `/vol/expand` (grow = true) and `/vol/shrink`: the capacity must move that way.
async fn vol_resize(me: Rc<Shard>, ctx: Ctx, grow: bool) -> mast_http::Response {
    owner_update(me, ctx, move |v, ctx| {
        let cap = match ctx.params.u64("capacity") {
            Ok(Some(c)) if c > 0 => c,
            Ok(_) => return Err((CODE_PARAM, "parameter capacity not found".into())),
            Err(e) => return Err((CODE_PARAM, e.0)),
        };
        if grow && cap <= v.capacity_gb {
            return Err((
                CODE_PARAM,
                format!(
                    "expand capacity[{cap}] must be greater than the current [{}]",
                    v.capacity_gb
                ),
            ));
        }
        if !grow && cap >= v.capacity_gb {
            return Err((
                CODE_PARAM,
                format!(
                    "shrink capacity[{cap}] must be less than the current [{}]",
                    v.capacity_gb
                ),
            ));
        }
        Ok((
            VolCommand::UpdateVol {
                name: v.name.clone(),
                update: VolUpdate {
                    capacity_gb: Some(cap),
                    ..VolUpdate::default()
                },
            },
            format!("update vol[{}] successfully", v.name),
        ))
    })
    .await
}

async fn vol_delete(me: Rc<Shard>, ctx: Ctx) -> mast_http::Response {
    let from = ctx.peer.map(|a| a.to_string()).unwrap_or_default();
    owner_update(me, ctx, move |v, ctx| {
        let delete = ctx
            .params
            .bool("delete")
            .map_err(|e| (CODE_PARAM, e.0))?
            .unwrap_or(true);
        Ok((
            VolCommand::MarkVolDelete {
                name: v.name.clone(),
                delete,
            },
            format!("delete vol[{}] successfully,from[{from}]", v.name),
        ))
    })
    .await
}

/// `/dataPartition/create`: `count` more data partitions for a volume.
async fn dp_create(me: Rc<Shard>, ctx: Ctx) -> mast_http::Response {
    let enc = ctx.enc;
    let count = match ctx.params.u64("count") {
        Ok(Some(c)) if (1..=DP_CREATE_PER_REQUEST_MAX).contains(&c) => c,
        Ok(_) => {
            return fail(
                enc,
                CODE_PARAM,
                &format!("parameter count must be in 1..{DP_CREATE_PER_REQUEST_MAX}"),
            )
        }
        Err(e) => return param_fail(enc, &e),
    };
    let (state, live) = match state_with_live(&me).await {
        Ok(x) => x,
        Err(e) => return group_fail(enc, &e),
    };
    let vol = match vol_of(&state, &ctx) {
        Ok(v) if v.status == VOL_MARK_DELETE => return fail(enc, 8, "vol has been deleted"),
        Ok(v) => v.clone(),
        Err((c, m)) => return fail(enc, c, &m),
    };
    let ids = match call(me.clone(), ServiceCall::Ids { count }).await {
        Ok(r) if r.count == count => r,
        Ok(r) => {
            return fail(
                enc,
                CODE_INTERNAL,
                &format!("the allocator gave {} ids, not {count}", r.count),
            )
        }
        Err(e) => return allocator_fail(&ctx, e),
    };
    let zones: Vec<String> = vol
        .zone_name
        .split(',')
        .filter(|z| !z.is_empty())
        .map(String::from)
        .collect();
    let topo = topology(&state, &live, NodeRole::Data, vol.media_type);
    let mut next = ids.first;
    let mut take_id = || {
        let id = next;
        next += 1;
        id
    };
    let (dps, err) = create_dps(&me, &topo, &vol, &zones, count as usize, &mut take_id).await;
    if dps.is_empty() {
        let (code, msg) = err.unwrap_or((CODE_INTERNAL, "nothing created".into()));
        return fail(enc, code, &msg);
    }
    let n = dps.len();
    let cmd = CubefsCommand::vol(VolCommand::AddDataPartitions {
        vol: vol.name.clone(),
        partitions: dps.clone(),
    });
    match propose0(&me, cmd).await {
        Ok(CubefsOutcome::Refused { code, msg }) => {
            abandon_partitions(&me, &[], &dps).await;
            fail(enc, code, &msg)
        }
        Ok(_) => match err {
            None => ok(enc, format!("create [{n}] data partition successfully")),
            Some((code, msg)) => fail(
                enc,
                code,
                &format!("created {n} of {count} data partitions: {msg}"),
            ),
        },
        Err(e) => group_fail(enc, &e),
    }
}

/// `/metaPartition/create?name=&count=` (§6): the last meta partition is cut at
/// `MaxInodeID + step` and `count` new ones continue the inode space, the last open-ended.
/// The new partitions are created on their nodes (under an intent), then the last one's new
/// end is set on its replicas, then one command records both. mast's meta nodes report no
/// inode usage yet, so `MaxInodeID` is the last partition's start.
async fn mp_create(me: Rc<Shard>, ctx: Ctx) -> mast_http::Response {
    let enc = ctx.enc;
    let count = match ctx.params.u64("count") {
        Ok(Some(c)) if (1..=MP_CREATE_MAX as u64).contains(&c) => c,
        Ok(_) => {
            return fail(
                enc,
                CODE_PARAM,
                &format!("parameter count must be in 1..{MP_CREATE_MAX}"),
            )
        }
        Err(e) => return param_fail(enc, &e),
    };
    let r = read0(&me, move |s| {
        let v = vol_of(s, &ctx)?;
        if v.status == VOL_MARK_DELETE {
            return Err((8, "vol has been deleted".to_string()));
        }
        let last =
            s.vt.mps_of(&v.name)
                .max_by_key(|m| m.start)
                .cloned()
                .ok_or((
                    CODE_MP_NOT_EXISTS,
                    "the volume has no meta partition".to_string(),
                ))?;
        let mut reg = s.registry_clone();
        reg.vt.decommissioning = s.vt.decommissioning.clone();
        Ok((v.clone(), last, reg))
    })
    .await;
    let (vol, last, reg) = match r {
        Ok(Ok(x)) => x,
        Ok(Err((code, msg))) => return fail(enc, code, &msg),
        Err(e) => return group_fail(enc, &e),
    };
    let max_inode = last.start;
    let end = max_inode.saturating_add(MP_INODE_STEP);
    if last.end != INODE_MAX || end >= INODE_MAX {
        return fail(enc, CODE_INTERNAL, "the inode space is used up");
    }
    let live = super::live::gather(&me, reg.nodes.keys().cloned().collect()).await;
    let topo = topology(&reg, &live, NodeRole::Meta, 0);
    let ids = match call(me.clone(), ServiceCall::Ids { count }).await {
        Ok(r) if r.count == count => r,
        Ok(r) => {
            return fail(
                enc,
                CODE_INTERNAL,
                &format!("the allocator gave {} ids, not {count}", r.count),
            )
        }
        Err(ServiceError::Group(g)) => return group_fail(enc, &g),
        Err(other) => return fail(enc, CODE_INTERNAL, &other.to_string()),
    };
    let zones: Vec<String> = vol
        .zone_name
        .split(',')
        .filter(|z| !z.is_empty())
        .map(String::from)
        .collect();
    let mut new = Vec::new();
    let mut creates = Vec::new();
    let mut start = end + 1;
    for (i, id) in (ids.first..ids.first + count).enumerate() {
        let e = if i as u64 + 1 == count {
            INODE_MAX
        } else {
            start.saturating_add(MP_INODE_STEP - 1)
        };
        let placed = place_meta_partition(&topo, &zones, vol.cross_zone, &vol.name, id, start, e);
        let (chosen, on_nodes, peers) = match placed {
            Ok(p) => p,
            Err(err) => return fail(enc, err.code, &err.msg),
        };
        creates.push(on_nodes);
        new.push(MetaPartition {
            id,
            vol: vol.name.clone(),
            start,
            end: e,
            hosts: chosen.iter().map(|n| n.addr.clone()).collect(),
            peers,
            status: PARTITION_READ_WRITE,
            created_ms: now_ms(),
        });
        start = e.saturating_add(1);
    }
    let results = match create_batch(&me, creates).await {
        Ok(r) => r,
        Err(e) => return fail(enc, CODE_INTERNAL, &format!("create meta partitions: {e}")),
    };
    if let Some(e) = results.iter().find_map(|r| r.as_ref().err()) {
        let landed: Vec<MetaPartition> = new
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(m, _)| m.clone())
            .collect();
        abandon_partitions(&me, &landed, &[]).await;
        return fail(enc, CODE_INTERNAL, e);
    }
    // The cut goes to every replica of the last partition before the table records it: a
    // replica that did not get it would keep allocating inodes the new partitions own.
    for h in &last.hosts {
        if let Err(e) = update_mp_end(&me, h, last.id, &vol.name, last.start, end).await {
            for h in &last.hosts {
                let _ = update_mp_end(&me, h, last.id, &vol.name, last.start, INODE_MAX).await;
            }
            abandon_partitions(&me, &new, &[]).await;
            return fail(enc, CODE_INTERNAL, &e);
        }
    }
    let cmd = CubefsCommand::vol(VolCommand::SplitMetaPartition {
        vol: vol.name.clone(),
        last: last.id,
        end,
        new: new.clone(),
    });
    match propose0(&me, cmd).await {
        Ok(CubefsOutcome::Refused { code, msg }) => {
            for h in &last.hosts {
                let _ = update_mp_end(&me, h, last.id, &vol.name, last.start, INODE_MAX).await;
            }
            abandon_partitions(&me, &new, &[]).await;
            fail(enc, code, &msg)
        }
        Ok(_) => ok(enc, "create meta partition successfully".to_string()),
        Err(e) => group_fail(enc, &e),
    }
}

/// `/user/create`: JSON body `{id, pwd, ak, sk, type, description}`.
async fn user_create(me: Rc<Shard>, ctx: Ctx) -> mast_http::Response {
    let enc = ctx.enc;
    let body: serde_json::Value = match serde_json::from_slice(&ctx.body) {
        Ok(v) => v,
        Err(e) => return fail(enc, 47, &format!("read request body failed: {e}")),
    };
    let s = |k: &str| {
        body.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let id = s("id");
    if !is_user_id(&id) {
        return fail(enc, 55, "invalid user ID");
    }
    let user_type = body
        .get("type")
        .and_then(|v| v.as_u64())
        .unwrap_or(USER_NORMAL as u64);
    if !(2..=3).contains(&user_type) {
        return fail(enc, 56, "invalid user type");
    }
    let mut user = new_user(&id, user_type as u8, &s("description"), now_ms());
    let (ak, sk) = (s("ak"), s("sk"));
    if !ak.is_empty() {
        if ak.len() != 16 || !ak.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return fail(enc, 59, "invalid access key");
        }
        user.access_key = ak;
    }
    if !sk.is_empty() {
        if sk.len() != 32 || !sk.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return fail(enc, 60, "invalid secret key");
        }
        user.secret_key = sk;
    }
    let reply = vv::user_info(&user);
    match propose0(&me, CubefsCommand::vol(VolCommand::CreateUser { user })).await {
        Ok(CubefsOutcome::Refused { code, msg }) => fail(enc, code, &msg),
        Ok(_) => ok(enc, reply),
        Err(e) => group_fail(enc, &e),
    }
}

async fn user_info(me: Rc<Shard>, ctx: Ctx) -> mast_http::Response {
    read_reply(me, ctx, |s, ctx| {
        let id = ctx.params.required("user").map_err(|e| (CODE_PARAM, e.0))?;
        s.vt.users
            .get(id)
            .map(vv::user_info)
            .ok_or((CODE_USER_NOT_EXISTS, "user not exists".into()))
    })
    .await
}

async fn user_ak_info(me: Rc<Shard>, ctx: Ctx) -> mast_http::Response {
    read_reply(me, ctx, |s, ctx| {
        let ak = ctx.params.required("ak").map_err(|e| (CODE_PARAM, e.0))?;
        s.vt.users
            .values()
            .find(|u| u.access_key == ak)
            .map(vv::user_info)
            .ok_or((40, "access key not exists".into()))
    })
    .await
}

async fn user_list(me: Rc<Shard>, ctx: Ctx) -> mast_http::Response {
    read_reply(me, ctx, |s, ctx| {
        let kw = ctx.params.get("keywords").unwrap_or("");
        Ok(serde_json::Value::Array(
            s.vt.users
                .values()
                .filter(|u| u.id.contains(kw))
                .map(vv::user_info)
                .collect(),
        ))
    })
    .await
}

async fn user_delete(me: Rc<Shard>, ctx: Ctx) -> mast_http::Response {
    let enc = ctx.enc;
    let id = match ctx.params.required("user") {
        Ok(u) => u.to_string(),
        Err(e) => return param_fail(enc, &e),
    };
    let reply = format!("delete user[{id}] successfully");
    outcome(
        enc,
        propose0(&me, CubefsCommand::vol(VolCommand::DeleteUser { id })).await,
        reply,
    )
}

/// Mount-time routes the client needs answered (§6 mount sequence).
async fn multi_ver(me: Rc<Shard>, ctx: Ctx) -> mast_http::Response {
    read_reply(me, ctx, |s, ctx| {
        vol_of(s, ctx)?;
        Ok(json!({
            "VerList": [{"Ver": 0, "DelTime": 0, "Status": 1}],
            "Strategy": {"KeepVerCnt": 1, "Periodic": 0, "Enable": false},
            "TemporaryVerMap": {},
        }))
    })
    .await
}

async fn monitor_push_addr(_me: Rc<Shard>, ctx: Ctx) -> mast_http::Response {
    ok(ctx.enc, "")
}

async fn acl_op(_me: Rc<Shard>, ctx: Ctx) -> mast_http::Response {
    ok(
        ctx.enc,
        json!({"Info": "", "OK": true, "List": [], "Reserve": ""}),
    )
}

async fn qos_upload(_me: Rc<Shard>, ctx: Ctx) -> mast_http::Response {
    ok(
        ctx.enc,
        json!({"ZoneLimit": {}, "Magnify": 0, "ClientReqPeriod": 0, "ClientHitTriggerCnt": 0}),
    )
}

async fn discard_dp(_me: Rc<Shard>, ctx: Ctx) -> mast_http::Response {
    ok(ctx.enc, json!({"DiscardDps": []}))
}

/// The deletion loop's step (run on group 0's leader): every volume marked deleted is
/// dropped; the drop turns its replicas into pending deletes that [`marks_step`] sends.
pub async fn drop_deleted_vols(me: &Rc<Shard>) {
    let marked = read0(me, |s| {
        s.vt.vols
            .values()
            .filter(|v| v.status == VOL_MARK_DELETE)
            .map(|v| v.name.clone())
            .collect::<Vec<_>>()
    })
    .await;
    let Ok(marked) = marked else { return };
    for name in marked {
        let _ = propose0(me, CubefsCommand::vol(VolCommand::DropVol { name })).await;
    }
}

/// CubeFS's minimum of read-write data partitions a volume is topped up to (§4).
pub const DP_WRITABLE_MIN: usize = 10;
/// Volumes grown per loop round at most (each is a batch of creates and one commit).
const GROW_VOLS_PER_ROUND_MAX: usize = 16;

thread_local! {
    /// When each volume was last grown (leader memory: a new leader may grow a volume a
    /// round early, which only creates what the rule asks for anyway).
    static GROWN_MS: RefCell<std::collections::HashMap<String, u64>> = RefCell::default();
}

/// Automatic data partition growth (§4): unless the cluster is frozen, a volume with fewer
/// than [`DP_WRITABLE_MIN`] read-write data partitions gets the missing ones, at most once
/// per `interval_ms` and not before it is `interval_ms` old (as CubeFS's check, which runs
/// on a timer, does not catch a volume the moment it is created).
pub async fn grow_step(me: &Rc<Shard>, interval_ms: u64) {
    if interval_ms == 0 {
        return;
    }
    let now = now_ms();
    let due = |name: &str| {
        GROWN_MS.with(|g| {
            g.borrow()
                .get(name)
                .map_or(true, |t| now.saturating_sub(*t) >= interval_ms)
        })
    };
    let r = read0(me, move |s| {
        if s.settings.disable_auto_alloc {
            return None;
        }
        let mut rw: std::collections::HashMap<&str, usize> = Default::default();
        for d in s.vt.dps.values() {
            if d.status == PARTITION_READ_WRITE {
                *rw.entry(d.vol.as_str()).or_default() += 1;
            }
        }
        let short: Vec<(Volume, usize)> =
            s.vt.vols
                .values()
                .filter(|v| v.status != VOL_MARK_DELETE)
                .filter(|v| now.saturating_sub(v.created_ms) >= interval_ms)
                .filter_map(|v| {
                    let have = rw.get(v.name.as_str()).copied().unwrap_or(0);
                    (have < DP_WRITABLE_MIN).then(|| (v.clone(), DP_WRITABLE_MIN - have))
                })
                .collect();
        if short.is_empty() {
            return None;
        }
        // The registry and the decommission marks are all placement reads.
        let mut reg = s.registry_clone();
        reg.vt.decommissioning = s.vt.decommissioning.clone();
        Some((reg, short))
    })
    .await;
    let Ok(Some((reg, short))) = r else {
        return;
    };
    let short: Vec<(Volume, usize)> = short
        .into_iter()
        .filter(|(v, _)| due(&v.name))
        .take(GROW_VOLS_PER_ROUND_MAX)
        .collect();
    if short.is_empty() {
        return;
    }
    let live = super::live::gather(me, reg.nodes.keys().cloned().collect()).await;
    for (vol, want) in short {
        GROWN_MS.with(|g| g.borrow_mut().insert(vol.name.clone(), now));
        let Ok(ids) = call(me.clone(), ServiceCall::Ids { count: want as u64 }).await else {
            return;
        };
        if ids.count != want as u64 {
            return;
        }
        let zones: Vec<String> = vol
            .zone_name
            .split(',')
            .filter(|z| !z.is_empty())
            .map(String::from)
            .collect();
        let topo = topology(&reg, &live, NodeRole::Data, vol.media_type);
        let mut next = ids.first;
        let mut take_id = || {
            let id = next;
            next += 1;
            id
        };
        let (dps, err) = create_dps(me, &topo, &vol, &zones, want, &mut take_id).await;
        if let Some((code, msg)) = err {
            tracing::warn!(vol = %vol.name, code, %msg, "data partition growth fell short");
        }
        if dps.is_empty() {
            continue;
        }
        let cmd = CubefsCommand::vol(VolCommand::AddDataPartitions {
            vol: vol.name.clone(),
            partitions: dps.clone(),
        });
        match propose0(me, cmd).await {
            Ok(CubefsOutcome::Refused { .. }) => abandon_partitions(me, &[], &dps).await,
            Ok(_) => tracing::info!(vol = %vol.name, added = dps.len(), "data partitions grown"),
            Err(_) => {}
        }
    }
}

/// The leader's background work, every `interval_ms` while this node leads group 0 (start
/// on shard 0): drops deleted volumes ([`drop_deleted_vols`]), moves replicas off nodes
/// being decommissioned, sends pending deletes ([`marks_step`]) and grows volumes short of
/// data partitions ([`grow_step`], every `growth_interval_ms`, 0 = never). All read their
/// work from the table, so a new leader picks up what its predecessor left.
pub async fn background_loop(me: Rc<Shard>, interval_ms: u64, growth_interval_ms: u64) {
    loop {
        monoio::time::sleep(std::time::Duration::from_millis(interval_ms)).await;
        if me.group.is_leader() {
            drop_deleted_vols(&me).await;
            super::partition_api::decommission_step(&me).await;
            marks_step(&me).await;
            grow_step(&me, growth_interval_ms).await;
        }
    }
}

pub fn routes(r: Router, shard: Rc<Shard>) -> Router {
    let s = &shard;
    let r = add(r, s, "/admin/createVol", false, create_vol);
    let r = add(r, s, "/admin/getVol", true, get_vol);
    let r = add(r, s, "/vol/list", true, vol_list);
    let r = add(r, s, "/vol/update", false, vol_update);
    let r = add(r, s, "/vol/expand", false, |me, ctx| {
        vol_resize(me, ctx, true)
    });
    let r = add(r, s, "/vol/shrink", false, |me, ctx| {
        vol_resize(me, ctx, false)
    });
    let r = add(r, s, "/vol/delete", false, vol_delete);
    let r = add(r, s, "/client/vol", false, client_vol);
    let r = add(r, s, "/client/volStat", true, vol_stat);
    let r = add(r, s, "/client/metaPartitions", true, client_mps);
    let r = add(r, s, "/client/partitions", true, client_partitions);
    let r = add(r, s, "/dataPartition/get", true, dp_get);
    let r = add(r, s, "/metaPartition/get", true, mp_get);
    let r = add(r, s, "/dataPartition/create", false, dp_create);
    let r = add(r, s, "/metaPartition/create", false, mp_create);
    let r = add(r, s, "/user/create", false, user_create);
    let r = add(r, s, "/user/info", true, user_info);
    let r = add(r, s, "/user/akInfo", true, user_ak_info);
    let r = add(r, s, "/user/list", true, user_list);
    let r = add(r, s, "/user/delete", false, user_delete);
    let r = add(r, s, "/multiVer/getAll", true, multi_ver);
    let r = add(r, s, "/admin/getMonitorPushAddr", true, monitor_push_addr);
    let r = add(r, s, "/admin/aclOp", true, acl_op);
    let r = add(r, s, "/admin/qosUpload", false, qos_upload);
    add(r, s, "/admin/getDiscardDp", false, discard_dp)
}
