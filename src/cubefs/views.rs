//! The JSON shapes of `data` (reference §5), field names and types exactly as CubeFS
//! serializes them: Go field names unless a tag renames them, lists `[]` never `null`,
//! objects the CLI dereferences never `null`, `time.Time` as RFC 3339.

#![allow(non_snake_case)]

use std::collections::BTreeMap;

use serde::Serialize;

use super::dialect::rfc3339;
use super::live::{LiveInfo, LiveMap};
use crate::meta::cubefs::{CubefsState, Node, NodeRole, NodeSet, Zone};

const GB: u64 = 1 << 30;
/// A data node is writable with more than this available (§4).
const DATA_NODE_RESERVED_BYTES: u64 = 10 * GB;
/// A meta node is writable with more than this free memory (§4 `metaNodeReservedMem`).
const META_NODE_RESERVED_BYTES: u64 = GB;
/// Meta partitions a writable meta node holds fewer than (§4).
const META_NODE_PARTITIONS_MAX: u64 = 10_000;

fn never_heard(n: &Node) -> LiveInfo {
    LiveInfo {
        report_time_ms: n.registered_ms,
        ..LiveInfo::default()
    }
}

pub fn live_of(live: &LiveMap, n: &Node) -> LiveInfo {
    live.get(&(n.role, n.addr.clone()))
        .cloned()
        .unwrap_or_else(|| never_heard(n))
}

/// CubeFS's writability rules (§4), from the registry and the live info.
pub fn is_writable(state: &CubefsState, n: &Node, l: &LiveInfo) -> bool {
    if !l.is_active {
        return false;
    }
    match n.role {
        NodeRole::Data => {
            l.available_bytes > DATA_NODE_RESERVED_BYTES
                && l.total_bytes.saturating_sub(l.used_bytes) > DATA_NODE_RESERVED_BYTES
        }
        NodeRole::Meta => {
            let threshold = state.settings.meta_node_threshold_ppm as f64 / 1e6;
            l.total_bytes.saturating_sub(l.used_bytes) > META_NODE_RESERVED_BYTES
                && l.total_bytes > 0
                && (l.used_bytes as f64 / l.total_bytes as f64) <= threshold
                && l.partition_count < META_NODE_PARTITIONS_MAX
        }
    }
}

fn ratio(used: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        used as f64 / total as f64
    }
}

#[derive(Serialize, Clone)]
pub struct NodeView {
    pub Addr: String,
    pub Status: bool,
    pub DomainAddr: String,
    pub ID: u64,
    pub IsWritable: bool,
    pub MediaType: u32,
    pub ForbidWriteOpOfProtoVer0: bool,
}

pub fn node_view(state: &CubefsState, live: &LiveMap, n: &Node) -> NodeView {
    let l = live_of(live, n);
    NodeView {
        Addr: n.addr.clone(),
        Status: l.is_active,
        DomainAddr: String::new(),
        ID: n.id,
        IsWritable: is_writable(state, n, &l),
        MediaType: n.media_type,
        ForbidWriteOpOfProtoVer0: false,
    }
}

/// `/admin/getCluster` (ClusterView). The lists CubeFS's clients walk are `[]`, never null;
/// the stat objects are always present (cfs-cli dereferences them).
#[derive(Serialize)]
pub struct ClusterView {
    pub Name: String,
    pub CreateTime: String,
    pub LeaderAddr: String,
    pub DisableAutoAlloc: bool,
    pub ForbidMpDecommission: bool,
    pub MetaNodeThreshold: f64,
    pub Applied: u64,
    pub MaxDataPartitionID: u64,
    pub MaxMetaNodeID: u64,
    pub MaxMetaPartitionID: u64,
    pub VolDeletionDelayTimeHour: i64,
    pub MetaNodeGOGC: i64,
    pub DataNodeGOGC: i64,
    pub DataNodeStatInfo: NodeStatInfo,
    pub MetaNodeStatInfo: NodeStatInfo,
    pub VolStatInfo: Vec<serde_json::Value>,
    pub BadPartitionIDs: Vec<serde_json::Value>,
    pub BadMetaPartitionIDs: Vec<serde_json::Value>,
    pub MigratedDataPartitions: Vec<serde_json::Value>,
    pub MigratedMetaPartitions: Vec<serde_json::Value>,
    pub DataNodeBadDisks: Vec<serde_json::Value>,
    pub MasterNodes: Vec<NodeView>,
    pub MetaNodes: Vec<NodeView>,
    pub DataNodes: Vec<NodeView>,
    pub FlashNodes: Vec<NodeView>,
    pub StatOfStorageClass: Vec<serde_json::Value>,
    pub StatMigrateStorageClass: Vec<serde_json::Value>,
    pub DpRepairTimeout: &'static str,
    pub DpBackupTimeout: &'static str,
    pub DpTimeout: &'static str,
    pub MpTimeout: &'static str,
    pub AutoDecommissionDiskInterval: &'static str,
    pub MaxDpCntLimit: u64,
    pub MaxMpCntLimit: u64,
}

#[derive(Serialize, Default, Clone)]
pub struct NodeStatInfo {
    pub TotalGB: u64,
    pub UsedGB: u64,
    pub IncreasedGB: i64,
    pub UsedRatio: String,
    pub AvailGB: u64,
}

pub fn node_stat_info(state: &CubefsState, live: &LiveMap, role: NodeRole) -> NodeStatInfo {
    let (mut total, mut used) = (0u64, 0u64);
    for n in state.nodes_of(role) {
        let l = live_of(live, n);
        total = total.saturating_add(l.total_bytes);
        used = used.saturating_add(l.used_bytes);
    }
    NodeStatInfo {
        TotalGB: total / GB,
        UsedGB: used / GB,
        IncreasedGB: 0,
        UsedRatio: format!("{:.3}", ratio(used, total)),
        AvailGB: total.saturating_sub(used) / GB,
    }
}

#[derive(Serialize)]
pub struct ZoneNodesStat {
    pub TotalGB: f64,
    pub UsedGB: f64,
    pub AvailGB: f64,
    pub UsedRatio: f64,
    pub TotalNodes: u64,
    pub WritableNodes: u64,
}

#[derive(Serialize)]
pub struct ZoneStat {
    pub DataNodeStat: ZoneNodesStat,
    pub MetaNodeStat: ZoneNodesStat,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn zone_nodes_stat(
    state: &CubefsState,
    live: &LiveMap,
    zone: &str,
    role: NodeRole,
) -> ZoneNodesStat {
    let (mut total, mut used, mut nodes, mut writable) = (0u64, 0u64, 0u64, 0u64);
    for n in state.nodes_of(role).filter(|n| n.zone == zone) {
        let l = live_of(live, n);
        total = total.saturating_add(l.total_bytes);
        used = used.saturating_add(l.used_bytes);
        nodes += 1;
        writable += u64::from(is_writable(state, n, &l));
    }
    ZoneNodesStat {
        TotalGB: round2(total as f64 / GB as f64),
        UsedGB: round2(used as f64 / GB as f64),
        AvailGB: round2(total.saturating_sub(used) as f64 / GB as f64),
        UsedRatio: round2(ratio(used, total)),
        TotalNodes: nodes,
        WritableNodes: writable,
    }
}

#[derive(Serialize)]
pub struct ClusterStatInfo {
    pub DataNodeStatInfo: NodeStatInfo,
    pub MetaNodeStatInfo: NodeStatInfo,
    pub ZoneStatInfo: BTreeMap<String, ZoneStat>,
}

pub fn cluster_stat(state: &CubefsState, live: &LiveMap) -> ClusterStatInfo {
    ClusterStatInfo {
        DataNodeStatInfo: node_stat_info(state, live, NodeRole::Data),
        MetaNodeStatInfo: node_stat_info(state, live, NodeRole::Meta),
        ZoneStatInfo: state
            .zones
            .keys()
            .map(|z| {
                (
                    z.clone(),
                    ZoneStat {
                        DataNodeStat: zone_nodes_stat(state, live, z, NodeRole::Data),
                        MetaNodeStat: zone_nodes_stat(state, live, z, NodeRole::Meta),
                    },
                )
            })
            .collect(),
    }
}

#[derive(Serialize)]
pub struct DataNodeInfo {
    pub TotalWeight: u64,
    pub UsedWeight: u64,
    pub AvailableSpace: u64,
    pub ID: u64,
    pub ZoneName: String,
    pub Addr: String,
    pub RaftHeartbeatPort: String,
    pub RaftReplicaPort: String,
    pub DomainAddr: String,
    pub ReportTime: String,
    pub IsActive: bool,
    pub ToBeOffline: bool,
    pub IsWriteAble: bool,
    pub UsageRatio: f64,
    pub SelectedTimes: u64,
    pub DataPartitionReports: Vec<serde_json::Value>,
    pub DataPartitionCount: u64,
    pub NodeSetID: u64,
    pub PersistenceDataPartitions: Vec<u64>,
    pub BadDisks: Vec<String>,
    pub AllDisks: Vec<String>,
    pub LostDisks: Vec<String>,
    pub DecommissionedDisk: Vec<String>,
    pub BadDiskStats: Vec<serde_json::Value>,
    pub DiskStats: Vec<serde_json::Value>,
    pub RdOnly: bool,
    pub CanAllocPartition: bool,
    pub MaxDpCntLimit: u64,
    pub CpuUtil: f64,
    pub IoUtils: BTreeMap<String, f64>,
    pub MediaType: u32,
    pub DecommissionStatus: u32,
    pub DiskOpLogs: Vec<serde_json::Value>,
    pub DpOpLogs: Vec<serde_json::Value>,
}

/// Serialized with CubeFS's renames (`Total→TotalWeight` etc. are already the field names;
/// the lower-case tags are applied here).
pub fn data_node_info(state: &CubefsState, live: &LiveMap, n: &Node) -> serde_json::Value {
    let l = live_of(live, n);
    let writable = is_writable(state, n, &l);
    let info = DataNodeInfo {
        TotalWeight: l.total_bytes,
        UsedWeight: l.used_bytes,
        AvailableSpace: l.available_bytes,
        ID: n.id,
        ZoneName: n.zone.clone(),
        Addr: n.addr.clone(),
        RaftHeartbeatPort: n.heartbeat_port.clone(),
        RaftReplicaPort: n.replica_port.clone(),
        DomainAddr: String::new(),
        ReportTime: rfc3339(l.report_time_ms),
        IsActive: l.is_active,
        ToBeOffline: false,
        IsWriteAble: writable,
        UsageRatio: ratio(l.used_bytes, l.total_bytes),
        SelectedTimes: 0,
        DataPartitionReports: Vec::new(),
        DataPartitionCount: l.partition_count,
        NodeSetID: n.node_set,
        PersistenceDataPartitions: Vec::new(),
        BadDisks: Vec::new(),
        AllDisks: Vec::new(),
        LostDisks: Vec::new(),
        DecommissionedDisk: Vec::new(),
        BadDiskStats: Vec::new(),
        DiskStats: Vec::new(),
        RdOnly: false,
        CanAllocPartition: writable,
        MaxDpCntLimit: max_cnt_limit(state, "maxDpCntLimit"),
        CpuUtil: l.cpu_util,
        IoUtils: BTreeMap::new(),
        MediaType: n.media_type,
        DecommissionStatus: 0,
        DiskOpLogs: Vec::new(),
        DpOpLogs: Vec::new(),
    };
    rename(
        serde_json::to_value(info).unwrap_or_default(),
        &[
            ("ZoneName", "Zone"),
            ("MaxDpCntLimit", "maxDpCntLimit"),
            ("CpuUtil", "cpuUtil"),
            ("IoUtils", "ioUtil"),
        ],
    )
}

fn max_cnt_limit(state: &CubefsState, key: &str) -> u64 {
    state
        .settings
        .node_info
        .get(key)
        .and_then(|v| v.parse::<f64>().ok())
        .map(|f| f as u64)
        .unwrap_or_else(|| if key == "maxDpCntLimit" { 3000 } else { 300 })
}

/// Renames top-level keys (Go struct tags).
fn rename(mut v: serde_json::Value, renames: &[(&str, &str)]) -> serde_json::Value {
    if let Some(m) = v.as_object_mut() {
        for (from, to) in renames {
            if let Some(x) = m.remove(*from) {
                m.insert(to.to_string(), x);
            }
        }
    }
    v
}

#[derive(Serialize)]
pub struct MetaNodeInfo {
    pub ID: u64,
    pub Addr: String,
    pub RaftHeartbeatPort: String,
    pub RaftReplicaPort: String,
    pub DomainAddr: String,
    pub IsActive: bool,
    pub IsWriteAble: bool,
    pub ZoneName: String,
    pub MaxMemAvailWeight: u64,
    pub TotalWeight: u64,
    pub UsedWeight: u64,
    pub Ratio: f64,
    pub SelectCount: u64,
    pub Threshold: f64,
    pub ReportTime: String,
    pub MetaPartitionCount: u64,
    pub NodeSetID: u64,
    pub PersistenceMetaPartitions: Vec<u64>,
    pub RdOnly: bool,
    pub CanAllowPartition: bool,
    pub MaxMpCntLimit: u64,
    pub CpuUtil: f64,
}

pub fn meta_node_info(state: &CubefsState, live: &LiveMap, n: &Node) -> serde_json::Value {
    let l = live_of(live, n);
    let writable = is_writable(state, n, &l);
    let info = MetaNodeInfo {
        ID: n.id,
        Addr: n.addr.clone(),
        RaftHeartbeatPort: n.heartbeat_port.clone(),
        RaftReplicaPort: n.replica_port.clone(),
        DomainAddr: String::new(),
        IsActive: l.is_active,
        IsWriteAble: writable,
        ZoneName: n.zone.clone(),
        MaxMemAvailWeight: l.total_bytes.saturating_sub(l.used_bytes),
        TotalWeight: l.total_bytes,
        UsedWeight: l.used_bytes,
        Ratio: ratio(l.used_bytes, l.total_bytes),
        SelectCount: 0,
        Threshold: state.settings.meta_node_threshold_ppm as f64 / 1e6,
        ReportTime: rfc3339(l.report_time_ms),
        MetaPartitionCount: l.partition_count,
        NodeSetID: n.node_set,
        PersistenceMetaPartitions: Vec::new(),
        RdOnly: false,
        CanAllowPartition: writable,
        MaxMpCntLimit: max_cnt_limit(state, "maxMpCntLimit"),
        CpuUtil: l.cpu_util,
    };
    rename(
        serde_json::to_value(info).unwrap_or_default(),
        &[
            ("ZoneName", "Zone"),
            ("MaxMpCntLimit", "maxMpCntLimit"),
            ("CpuUtil", "cpuUtil"),
        ],
    )
}

#[derive(Serialize)]
pub struct NodeSetView {
    pub DataNodeLen: u64,
    pub MetaNodeLen: u64,
    pub MetaNodes: Vec<NodeView>,
    pub DataNodes: Vec<NodeView>,
}

#[derive(Serialize)]
pub struct ZoneView {
    pub Name: String,
    pub Status: &'static str,
    pub DataNodesetSelector: String,
    pub MetaNodesetSelector: String,
    pub NodeSet: BTreeMap<String, NodeSetView>,
    pub DataMediaType: &'static str,
}

fn media_name(m: u32) -> &'static str {
    match m {
        1 => "SSD",
        2 => "HDD",
        _ => "",
    }
}

/// Nodes grouped by node set, built once per request (views of many sets stay O(nodes)).
pub struct SetMembers<'a> {
    by_set: BTreeMap<u64, (Vec<&'a Node>, Vec<&'a Node>)>,
}

impl<'a> SetMembers<'a> {
    pub fn of(state: &'a CubefsState) -> SetMembers<'a> {
        let mut by_set: BTreeMap<u64, (Vec<&'a Node>, Vec<&'a Node>)> = BTreeMap::new();
        for n in state.nodes.values() {
            let e = by_set.entry(n.node_set).or_default();
            match n.role {
                NodeRole::Data => e.0.push(n),
                NodeRole::Meta => e.1.push(n),
            }
        }
        SetMembers { by_set }
    }

    fn of_set(&self, id: u64, role: NodeRole) -> &[&'a Node] {
        match (self.by_set.get(&id), role) {
            (Some(e), NodeRole::Data) => &e.0,
            (Some(e), NodeRole::Meta) => &e.1,
            (None, _) => &[],
        }
    }
}

/// A zone; with its node sets for `/topo/get`, without (`{}` and no media type) for
/// `/zone/list`.
pub fn zone_view(
    state: &CubefsState,
    live: &LiveMap,
    members: Option<&SetMembers>,
    z: &Zone,
) -> ZoneView {
    let mut sets = BTreeMap::new();
    if let Some(members) = members {
        for set in state.node_sets.values().filter(|s| s.zone == z.name) {
            let views = |role| {
                members
                    .of_set(set.id, role)
                    .iter()
                    .map(|n| node_view(state, live, n))
                    .collect::<Vec<_>>()
            };
            let (data, meta) = (views(NodeRole::Data), views(NodeRole::Meta));
            sets.insert(
                set.id.to_string(),
                NodeSetView {
                    DataNodeLen: data.len() as u64,
                    MetaNodeLen: meta.len() as u64,
                    MetaNodes: meta,
                    DataNodes: data,
                },
            );
        }
    }
    ZoneView {
        Name: z.name.clone(),
        Status: if z.available {
            "available"
        } else {
            "unavailable"
        },
        DataNodesetSelector: z.data_nodeset_selector.clone(),
        MetaNodesetSelector: z.meta_nodeset_selector.clone(),
        NodeSet: sets,
        DataMediaType: if members.is_some() {
            media_name(z.data_media_type)
        } else {
            ""
        },
    }
}

#[derive(Serialize)]
pub struct NodeSetStat {
    pub ID: u64,
    pub Capacity: u32,
    pub Zone: String,
    pub CanAllocMetaNodeCnt: u64,
    pub CanAllocDataNodeCnt: u64,
    pub MetaNodeNum: u64,
    pub DataNodeNum: u64,
}

fn writable_in(
    state: &CubefsState,
    live: &LiveMap,
    members: &SetMembers,
    set: &NodeSet,
    role: NodeRole,
) -> u64 {
    members
        .of_set(set.id, role)
        .iter()
        .filter(|n| is_writable(state, n, &live_of(live, n)))
        .count() as u64
}

pub fn node_set_stat(
    state: &CubefsState,
    live: &LiveMap,
    members: &SetMembers,
    set: &NodeSet,
) -> NodeSetStat {
    let (d, m) = state.set_counts(set.id);
    NodeSetStat {
        ID: set.id,
        Capacity: set.capacity,
        Zone: set.zone.clone(),
        CanAllocMetaNodeCnt: writable_in(state, live, members, set, NodeRole::Meta),
        CanAllocDataNodeCnt: writable_in(state, live, members, set, NodeRole::Data),
        MetaNodeNum: m.into(),
        DataNodeNum: d.into(),
    }
}

#[derive(Serialize)]
pub struct NodeStatView {
    pub Addr: String,
    pub Status: bool,
    pub DomainAddr: String,
    pub ID: u64,
    pub IsWritable: bool,
    pub Total: u64,
    pub Used: u64,
    pub Avail: u64,
}

#[derive(Serialize)]
pub struct NodeSetStatInfo {
    pub ID: u64,
    pub Capacity: u32,
    pub Zone: String,
    pub CanAllocMetaNodeCnt: u64,
    pub CanAllocDataNodeCnt: u64,
    pub MetaNodes: Vec<NodeStatView>,
    pub DataNodes: Vec<NodeStatView>,
    pub DataNodeSelector: String,
    pub MetaNodeSelector: String,
}

pub fn node_set_info(
    state: &CubefsState,
    live: &LiveMap,
    members: &SetMembers,
    set: &NodeSet,
) -> NodeSetStatInfo {
    let views = |role| {
        members
            .of_set(set.id, role)
            .iter()
            .map(|n| {
                let l = live_of(live, n);
                NodeStatView {
                    Addr: n.addr.clone(),
                    Status: l.is_active,
                    DomainAddr: String::new(),
                    ID: n.id,
                    IsWritable: is_writable(state, n, &l),
                    Total: l.total_bytes,
                    Used: l.used_bytes,
                    Avail: l.total_bytes.saturating_sub(l.used_bytes),
                }
            })
            .collect::<Vec<_>>()
    };
    NodeSetStatInfo {
        ID: set.id,
        Capacity: set.capacity,
        Zone: set.zone.clone(),
        CanAllocMetaNodeCnt: writable_in(state, live, members, set, NodeRole::Meta),
        CanAllocDataNodeCnt: writable_in(state, live, members, set, NodeRole::Data),
        MetaNodes: views(NodeRole::Meta),
        DataNodes: views(NodeRole::Data),
        DataNodeSelector: set.data_node_selector.clone(),
        MetaNodeSelector: set.meta_node_selector.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::cubefs::CubefsCommand;

    fn registry() -> CubefsState {
        let mut s = CubefsState::default();
        for (role, addr, id) in [
            (NodeRole::Data, "10.0.0.1:17310", 1),
            (NodeRole::Meta, "10.0.0.1:17210", 3),
        ] {
            s.apply(&CubefsCommand::AddNode {
                role,
                addr: addr.into(),
                zone: String::new(),
                heartbeat_port: "1".into(),
                replica_port: "2".into(),
                media_type: if role == NodeRole::Data { 1 } else { 0 },
                node_id: id,
                new_set_id: id + 1,
                now_ms: 1_000,
            });
        }
        s
    }

    /// The keys CubeFS's Go structs are tagged with (renames included), and the live columns
    /// filled from the seam.
    #[test]
    fn node_infos_use_cubefs_keys() {
        let s = registry();
        let mut live = LiveMap::new();
        live.insert(
            (NodeRole::Data, "10.0.0.1:17310".into()),
            LiveInfo {
                is_active: true,
                report_time_ms: 2_000,
                total_bytes: 100 * GB,
                used_bytes: 10 * GB,
                available_bytes: 90 * GB,
                partition_count: 7,
                cpu_util: 0.5,
            },
        );
        let d = s.node(NodeRole::Data, "10.0.0.1:17310").unwrap();
        let v = data_node_info(&s, &live, d);
        for key in [
            "Zone",
            "maxDpCntLimit",
            "cpuUtil",
            "ioUtil",
            "TotalWeight",
            "UsedWeight",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
        for gone in ["ZoneName", "MaxDpCntLimit", "CpuUtil", "IoUtils"] {
            assert!(v.get(gone).is_none(), "{gone} should be renamed");
        }
        assert_eq!(v["IsActive"], true);
        assert_eq!(v["IsWriteAble"], true);
        assert_eq!(v["DataPartitionCount"], 7);
        assert_eq!(v["ReportTime"], "1970-01-01T00:00:02Z");
        let m = s.node(NodeRole::Meta, "10.0.0.1:17210").unwrap();
        let v = meta_node_info(&s, &live, m);
        for key in [
            "Zone",
            "maxMpCntLimit",
            "cpuUtil",
            "MaxMemAvailWeight",
            "Threshold",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
        // Never heard from: inactive, zero usage, reported at registration.
        assert_eq!(
            (v["IsActive"].as_bool(), v["TotalWeight"].as_u64()),
            (Some(false), Some(0))
        );
        assert_eq!(v["ReportTime"], "1970-01-01T00:00:01Z");
        let stat = serde_json::to_value(cluster_stat(&s, &live)).unwrap();
        assert_eq!(stat["DataNodeStatInfo"]["TotalGB"], 100);
        assert_eq!(stat["DataNodeStatInfo"]["UsedRatio"], "0.100");
        assert_eq!(
            stat["ZoneStatInfo"]["default"]["DataNodeStat"]["WritableNodes"],
            1
        );
        assert_eq!(
            stat["ZoneStatInfo"]["default"]["MetaNodeStat"]["TotalNodes"],
            1
        );
    }
}
