//! The JSON shapes of volumes, partitions and users (reference §5), as CubeFS serializes
//! them: Go field names, lists never `null`, `CreateTime` strings where §5 says so.

use serde_json::{json, Value};

use super::dialect::{go_datetime, rfc3339};
use crate::meta::cubefs::volumes::{DataPartition, MetaPartition, User, Volume, VOL_MARK_DELETE};
use crate::meta::cubefs::CubefsState;

const GB: u64 = 1 << 30;

fn vol_tables(s: &CubefsState) -> &crate::meta::cubefs::VolTables {
    &s.vt
}

/// SimpleVolView (`/admin/getVol`).
pub fn simple_vol_view(s: &CubefsState, v: &Volume) -> Value {
    let t = vol_tables(s);
    let dps: Vec<&DataPartition> = t.dps_of(&v.name).collect();
    let mps: Vec<&MetaPartition> = t.mps_of(&v.name).collect();
    let rw = dps.iter().filter(|d| d.status == 2).count();
    let mut view = json!({
        "ID": v.id,
        "Name": v.name,
        "Owner": v.owner,
        "ZoneName": v.zone_name,
        "DpReplicaNum": v.dp_replica_num,
        "MpReplicaNum": v.mp_replica_num,
        "InodeCount": 0,
        "DentryCount": 0,
        "MaxMetaPartitionID": mps.iter().map(|m| m.id).max().unwrap_or(0),
        "MaxDataPartitionID": dps.iter().map(|d| d.id).max().unwrap_or(0),
        "Status": v.status,
        "Capacity": v.capacity_gb,
        "RwDpCnt": rw,
        "MpCnt": mps.len(),
        "DpCnt": dps.len(),
        "FollowerRead": v.follower_read,
        "MetaFollowerRead": v.meta_follower_read,
        "MaximallyRead": false,
        "NeedToLowerReplica": false,
        "Authenticate": v.authenticate,
        "CrossZone": v.cross_zone,
        "DefaultPriority": false,
        "DomainOn": false,
        "CreateTime": go_datetime(v.created_ms),
        "DeleteLockTime": v.delete_lock_time_h,
    });
    let more = json!({
        "EnablePosixAcl": false,
        "EnableQuota": v.enable_quota,
        "EnableTransaction": "off",
        "TxTimeout": 1,
        "TxConflictRetryNum": 0,
        "TxConflictRetryInterval": 0,
        "TxOpLimit": 0,
        "Description": v.description,
        "DpSelectorName": "",
        "DpSelectorParm": "",
        "DpReadOnlyWhenVolFull": v.dp_read_only_when_vol_full,
        "VolType": 0,
        "ObjBlockSize": 0,
        "CacheCapacity": 0,
        "CacheAction": 0,
        "CacheThreshold": 0,
        "CacheHighWater": 0,
        "CacheLowWater": 0,
        "CacheLRUInterval": 0,
        "CacheTtl": 0,
        "CacheRule": "",
        "PreloadCapacity": 0,
        "Uids": [],
        "TrashInterval": 0,
        "DisableAuditLog": false,
        "LeaderRetryTimeout": 0,
        "Forbidden": false,
        "DeleteExecTime": rfc3339(0),
        "DpRepairBlockSize": 0,
        "EnableAutoDpMetaRepair": false,
        "AccessTimeInterval": 0,
        "EnablePersistAccessTime": false,
        "VolStorageClass": v.media_type,
        "AllowedStorageClass": [v.media_type],
        "CacheDpStorageClass": 0,
        "QuotaOfStorageClass": [],
        "QosInfo": {"QosItems": [], "QosEnable": false},
        "RemoteCacheEnable": false,
    });
    // Two literals: one would pass serde_json's macro recursion limit.
    if let (Value::Object(a), Value::Object(b)) = (&mut view, more) {
        a.extend(b);
    }
    view
}

/// VolInfo (`/vol/list` items).
pub fn vol_info(v: &Volume) -> Value {
    json!({
        "Name": v.name,
        "Owner": v.owner,
        "CreateTime": v.created_ms / 1000,
        "Status": v.status,
        "TotalSize": v.capacity_gb.saturating_mul(GB),
        "UsedSize": 0,
        "DpReadOnlyWhenVolFull": v.dp_read_only_when_vol_full,
    })
}

/// VolStatInfo (`/client/volStat`).
pub fn vol_stat(v: &Volume) -> Value {
    json!({
        "Name": v.name,
        "TotalSize": v.capacity_gb.saturating_mul(GB),
        "UsedSize": 0,
        "UsedRatio": "0.00",
        "CacheTotalSize": 0,
        "CacheUsedSize": 0,
        "CacheUsedRatio": "0.00",
        "EnableToken": false,
        "InodeCount": 0,
        "TxCnt": 0,
        "TxRbInoCnt": 0,
        "TxRbDenCnt": 0,
        "DpReadOnlyWhenVolFull": v.dp_read_only_when_vol_full,
        "TrashInterval": 0,
        "DefaultStorageClass": v.media_type,
        "MetaFollowerRead": v.meta_follower_read,
        "MaximallyRead": false,
        "LeaderRetryTimeOut": 0,
        "StatByStorageClass": [],
        "StatMigrateStorageClass": [],
        "StatByDpMediaType": [],
    })
}

/// MetaPartitionView (`/client/vol`, `/client/metaPartitions`). The leader is the first
/// host until heartbeats report one.
pub fn mp_view(m: &MetaPartition) -> Value {
    json!({
        "PartitionID": m.id,
        "Start": m.start,
        "End": m.end,
        "MaxInodeID": m.start,
        "InodeCount": 0,
        "DentryCount": 0,
        "FreeListLen": 0,
        "TxCnt": 0,
        "TxRbInoCnt": 0,
        "TxRbDenCnt": 0,
        "IsRecover": false,
        "Members": m.hosts,
        "LeaderAddr": m.hosts.first().cloned().unwrap_or_default(),
        "Status": m.status,
        "Freeze": 0,
        "LastDelReplicaTime": 0,
    })
}

/// VolView (`/client/vol`).
pub fn vol_view(s: &CubefsState, v: &Volume) -> Value {
    let mps: Vec<Value> = s.vt.mps_of(&v.name).map(mp_view).collect();
    json!({
        "Name": v.name,
        "Owner": v.owner,
        "Status": v.status,
        "FollowerRead": v.follower_read,
        "MetaFollowerRead": v.meta_follower_read,
        "MetaPartitions": mps,
        "DataPartitions": null,
        "DomainOn": false,
        "OSSSecure": {"AccessKey": "", "SecretKey": ""},
        "OSSBucketPolicy": 0,
        "CreateTime": v.created_ms / 1000,
        "DeleteLockTime": v.delete_lock_time_h,
        "CacheTTL": 0,
        "VolType": 0,
    })
}

/// DataPartitionResponse (`/client/partitions` items).
pub fn dp_response(d: &DataPartition) -> Value {
    json!({
        "PartitionType": 0,
        "PartitionID": d.id,
        "Status": d.status,
        "ReplicaNum": d.replica_num,
        "Hosts": d.hosts,
        "LeaderAddr": d.hosts.first().cloned().unwrap_or_default(),
        "Epoch": 0,
        "IsRecover": false,
        "IsDiscard": false,
        "MediaType": d.media_type,
    })
}

/// DataPartitionsView (`/client/partitions`); `None` when the volume has no partition with
/// hosts (code 18).
pub fn dp_views(s: &CubefsState, v: &Volume) -> Option<Value> {
    let dps: Vec<Value> =
        s.vt.dps_of(&v.name)
            .filter(|d| !d.hosts.is_empty())
            .map(dp_response)
            .collect();
    if dps.is_empty() {
        return None;
    }
    Some(json!({
        "DataPartitions": dps,
        "VolReadOnly": v.status == VOL_MARK_DELETE,
        "StatByClass": [],
    }))
}

fn zones_and_sets(
    s: &CubefsState,
    role: crate::meta::cubefs::NodeRole,
    hosts: &[String],
) -> (Vec<String>, Vec<u64>) {
    hosts
        .iter()
        .map(|h| {
            s.node(role, h)
                .map(|n| (n.zone.clone(), n.node_set))
                .unwrap_or_default()
        })
        .unzip()
}

fn peers(p: &[crate::meta::cubefs::volumes::Peer]) -> Vec<Value> {
    p.iter()
        .map(|p| json!({"id": p.id, "addr": p.addr, "raftHeartbeat": "", "raftReplica": ""}))
        .collect()
}

/// DataPartitionInfo (`/dataPartition/get`).
pub fn dp_info(s: &CubefsState, d: &DataPartition) -> Value {
    let vol_id = s.vt.vols.get(&d.vol).map_or(0, |v| v.id);
    let (zones, sets) = zones_and_sets(s, crate::meta::cubefs::NodeRole::Data, &d.hosts);
    let replicas: Vec<Value> = d
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            json!({
                "Addr": h,
                "DomainAddr": "",
                "ReportTime": 0,
                "FileCount": 0,
                "Status": d.status,
                "HasLoadResponse": false,
                "TotalSize": 0,
                "UsedSize": 0,
                "IsLeader": i == 0,
                "NeedsToCompare": false,
                "DiskPath": "",
                "DecommissionRepairProgress": 0.0,
                "LocalPeers": [],
                "MediaType": d.media_type,
            })
        })
        .collect();
    json!({
        "PartitionID": d.id,
        "PartitionType": 0,
        "LastLoadedTime": 0,
        "ReplicaNum": d.replica_num,
        "Status": d.status,
        "Replicas": replicas,
        "Hosts": d.hosts,
        "Peers": peers(&d.peers),
        "Zones": zones,
        "NodeSets": sets,
        "MissingNodes": {},
        "VolName": d.vol,
        "VolID": vol_id,
        "OfflinePeerID": 0,
        "FileInCoreMap": {},
        "IsRecover": false,
        "FilesWithMissingReplica": {},
        "SingleDecommissionStatus": 0,
        "SingleDecommissionAddr": "",
        "RdOnly": false,
        "IsDiscard": false,
        "Forbidden": false,
        "MediaType": d.media_type,
    })
}

/// MetaPartitionInfo (`/metaPartition/get`).
pub fn mp_info(s: &CubefsState, m: &MetaPartition) -> Value {
    let (zones, sets) = zones_and_sets(s, crate::meta::cubefs::NodeRole::Meta, &m.hosts);
    let replicas: Vec<Value> = m
        .peers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            json!({
                "Addr": p.addr,
                "NodeID": p.id,
                "DomainAddr": "",
                "MaxInodeID": m.start,
                "ReportTime": 0,
                "Status": m.status,
                "IsLeader": i == 0,
                "InodeCount": 0,
                "MaxInode": 0,
                "DentryCount": 0,
                "ReadOnlyReasons": 0,
            })
        })
        .collect();
    json!({
        "PartitionID": m.id,
        "Start": m.start,
        "End": m.end,
        "MaxInodeID": m.start,
        "InodeCount": 0,
        "DentryCount": 0,
        "VolName": m.vol,
        "Replicas": replicas,
        "ReplicaNum": m.hosts.len(),
        "Status": m.status,
        "IsRecover": false,
        "Hosts": m.hosts,
        "Peers": peers(&m.peers),
        "Zones": zones,
        "NodeSets": sets,
        "OfflinePeerID": 0,
        "MissNodes": {},
        "LoadResponse": [],
        "Forbidden": false,
        "Freeze": 0,
    })
}

/// UserInfo (snake_case tags).
pub fn user_info(u: &User) -> Value {
    json!({
        "user_id": u.id,
        "access_key": u.access_key,
        "secret_key": u.secret_key,
        "policy": {"own_vols": u.own_vols, "authorized_vols": {}},
        "user_type": u.user_type,
        "create_time": go_datetime(u.created_ms),
        "description": u.description,
        "EMPTY": false,
    })
}
