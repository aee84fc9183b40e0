//! Volumes, their data and meta partitions, and users (reference §5, §6, §9).
//!
//! A volume is created by one command carrying the volume record, every partition already
//! created on its nodes, and the owner's user record: the table never holds a volume whose
//! partitions are half made (the route creates the partitions on the nodes first and rolls
//! them back when anything fails, §9). Deletion marks the volume (status 1); a leader loop
//! sends the delete tasks and then drops it with [`VolCommand::DropVol`].

use std::collections::BTreeMap;

use super::{refuse, CubefsOutcome, CubefsState, NodeRole, CODE_PARAM};

/// CubeFS error codes (§2) of this part.
pub const CODE_VOL_NOT_EXISTS: i32 = 7;
pub const CODE_VOL_DELETED: i32 = 8;
pub const CODE_MP_NOT_EXISTS: i32 = 10;
pub const CODE_DP_NOT_EXISTS: i32 = 11;
pub const CODE_DUPLICATE_VOL: i32 = 14;
pub const CODE_DUPLICATE_USER: i32 = 45;
pub const CODE_USER_NOT_EXISTS: i32 = 46;
pub const CODE_DUPLICATE_AK: i32 = 49;
pub const CODE_OWN_VOLS_NOT_EMPTY: i32 = 53;

/// Limits on what one volume and the cluster hold.
pub const VOLS_MAX: usize = 10_000;
pub const PARTITIONS_PER_VOL_MAX: usize = 100_000;
pub const PARTITIONS_MAX: usize = 1_000_000;
pub const USERS_MAX: usize = 10_000;
pub const DESCRIPTION_BYTES_MAX: usize = 1024;

/// Replica marks (`creating` + `deleting`) the table holds at most; an intent over it is
/// refused (a leader whose deletes cannot reach their nodes must not grow the table forever).
pub const REPLICA_MARKS_MAX: usize = 1_000_000;
/// Replicas one intent or completion command names at most.
pub const REPLICAS_PER_COMMAND_MAX: usize = 10_000;

/// Volume status (§4).
pub const VOL_NORMAL: u8 = 0;
pub const VOL_MARK_DELETE: u8 = 1;
/// Partition status (§4).
pub const PARTITION_READ_WRITE: i8 = 2;
pub const PARTITION_READ_ONLY: i8 = 1;

/// User types (§4).
pub const USER_ROOT: u8 = 1;
pub const USER_ADMIN: u8 = 2;
pub const USER_NORMAL: u8 = 3;

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Volume {
    pub id: u64,
    pub name: String,
    pub owner: String,
    pub capacity_gb: u64,
    pub dp_replica_num: u8,
    pub mp_replica_num: u8,
    pub dp_size_gb: u64,
    /// Comma list as given (normalised: `default` when not cross-zone and empty).
    pub zone_name: String,
    pub cross_zone: bool,
    pub follower_read: bool,
    pub meta_follower_read: bool,
    pub authenticate: bool,
    pub enable_quota: bool,
    pub dp_read_only_when_vol_full: bool,
    pub description: String,
    pub delete_lock_time_h: u64,
    /// 1 SSD, 2 HDD: the data nodes' media type the volume's partitions use.
    pub media_type: u32,
    pub status: u8,
    pub created_ms: u64,
}

/// A partition replica's host: the node's registry id and address.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Peer {
    pub id: u64,
    pub addr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct DataPartition {
    pub id: u64,
    pub vol: String,
    pub replica_num: u8,
    /// Hosts in CubeFS's order (`hosts[0]` is the write leader); peers in selection order.
    pub hosts: Vec<String>,
    pub peers: Vec<Peer>,
    pub status: i8,
    pub media_type: u32,
    pub created_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MetaPartition {
    pub id: u64,
    pub vol: String,
    /// The inode range `[start, end]`.
    pub start: u64,
    pub end: u64,
    pub hosts: Vec<String>,
    pub peers: Vec<Peer>,
    pub status: i8,
    pub created_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct User {
    pub id: String,
    pub access_key: String,
    pub secret_key: String,
    pub user_type: u8,
    pub description: String,
    pub created_ms: u64,
    pub own_vols: Vec<String>,
}

/// One replica of a partition on one node: what the creation intents and pending deletes
/// name.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct ReplicaRef {
    pub role: NodeRole,
    pub id: u64,
    pub addr: String,
}

/// Who announced a creation: the leader's term (a later leader abandons every intent of an
/// earlier term: the process that would have finished or rolled it back is gone) and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Intent {
    pub term: u64,
    pub since_ms: u64,
}

/// The volume changes `/vol/update|expand|shrink` make; only the fields given change.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct VolUpdate {
    pub capacity_gb: Option<u64>,
    pub description: Option<String>,
    pub follower_read: Option<bool>,
    pub meta_follower_read: Option<bool>,
    pub authenticate: Option<bool>,
    pub enable_quota: Option<bool>,
    pub dp_read_only_when_vol_full: Option<bool>,
    pub delete_lock_time_h: Option<u64>,
}

/// Volume, partition and user commands (one variant of [`super::CubefsCommand`]).
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum VolCommand {
    /// A volume with its partitions, created on their nodes already. `owner` is the owner's
    /// user record, used only when that user does not exist yet.
    CreateVol {
        vol: Volume,
        meta_partitions: Vec<MetaPartition>,
        data_partitions: Vec<DataPartition>,
        owner: User,
    },
    UpdateVol {
        name: String,
        update: VolUpdate,
    },
    /// `/vol/delete`: status 1, or back to 0 when `delete` is false.
    MarkVolDelete {
        name: String,
        delete: bool,
    },
    /// The deletion loop is done with the volume: it and its partitions go.
    DropVol {
        name: String,
    },
    /// `/dataPartition/create` and the automatic growth: partitions created on their nodes.
    AddDataPartitions {
        vol: String,
        partitions: Vec<DataPartition>,
    },
    CreateUser {
        user: User,
    },
    DeleteUser {
        id: String,
    },
    /// A replica move (§10): the partition's hosts become `hosts`/`peers` if they are still
    /// `expect_hosts` (a concurrent move in between makes this one refuse, not clobber).
    SetHosts {
        role: NodeRole,
        id: u64,
        expect_hosts: Vec<String>,
        hosts: Vec<String>,
        peers: Vec<Peer>,
    },
    /// `/dataNode/decommission`, `/metaNode/decommission`: mark (or, `on` false, unmark).
    SetDecommission {
        role: NodeRole,
        addr: String,
        on: bool,
    },
    /// Before create tasks go out: the replicas about to be created. A leader that dies
    /// before recording or rolling them back leaves these marks, and its successor turns
    /// them into pending deletes ([`VolCommand::AbandonCreate`]). Refused while a delete of
    /// any of them is pending (the delete would undo the create).
    IntendCreate {
        replicas: Vec<ReplicaRef>,
        intent: Intent,
    },
    /// The creations did not land (failed, or their leader is gone): every replica still
    /// only intended becomes a pending delete. Replicas recorded meanwhile are left alone.
    AbandonCreate {
        replicas: Vec<ReplicaRef>,
    },
    /// The nodes confirmed these deletes (or are no longer registered): the marks go.
    DeleteDone {
        replicas: Vec<ReplicaRef>,
    },
    /// `/metaPartition/create` (§6): the volume's last meta partition `last` (open-ended)
    /// now ends at `end`, and `new`, created on their nodes already, continue the inode
    /// ranges from `end + 1`, the last of them open-ended.
    SplitMetaPartition {
        vol: String,
        last: u64,
        end: u64,
        new: Vec<MetaPartition>,
    },
    // New variants go last: the archived discriminant is the variant's position.
}

/// Meta partitions one `/metaPartition/create` adds at most (§4).
pub const MP_CREATE_MAX: usize = 10;
/// The end of the last meta partition's (open) inode range.
pub const INODE_END: u64 = u64::MAX >> 1;

/// Is `name` a volume name CubeFS accepts (`^[a-zA-Z0-9][a-zA-Z0-9_.-]{1,61}[a-zA-Z0-9]$`)?
pub fn is_vol_name(name: &str) -> bool {
    let b = name.as_bytes();
    let alnum = |c: &u8| c.is_ascii_alphanumeric();
    (3..=63).contains(&b.len())
        && alnum(&b[0])
        && alnum(&b[b.len() - 1])
        && b[1..b.len() - 1]
            .iter()
            .all(|c| alnum(c) || matches!(c, b'_' | b'.' | b'-'))
}

/// Is `id` a user id / owner CubeFS accepts (`^[A-Za-z][A-Za-z0-9_]{0,20}$`)?
pub fn is_user_id(id: &str) -> bool {
    let b = id.as_bytes();
    (1..=21).contains(&b.len())
        && b[0].is_ascii_alphabetic()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// The volume and partition tables (group 0's partition of the meta table).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VolTables {
    pub vols: BTreeMap<String, Volume>,
    pub dps: BTreeMap<u64, DataPartition>,
    pub mps: BTreeMap<u64, MetaPartition>,
    pub users: BTreeMap<String, User>,
    /// Nodes being decommissioned (§10): no new replicas go there, and the leader's loop moves
    /// their replicas away. Recorded here so a new leader resumes the work.
    pub decommissioning: std::collections::BTreeSet<(NodeRole, String)>,
    /// Replicas whose create tasks may be on their way to nodes, not yet recorded as hosts.
    pub creating: BTreeMap<ReplicaRef, Intent>,
    /// Replicas the table no longer lists whose nodes may still hold them: the leader's loop
    /// sends the delete tasks and clears each mark once its node confirms. In the table (not
    /// leader memory) so a replica removed just before a leader dies is still deleted.
    pub deleting: std::collections::BTreeSet<ReplicaRef>,
}

impl VolTables {
    pub fn dps_of<'a>(&'a self, vol: &'a str) -> impl Iterator<Item = &'a DataPartition> + 'a {
        self.dps.values().filter(move |d| d.vol == vol)
    }

    pub fn mps_of<'a>(&'a self, vol: &'a str) -> impl Iterator<Item = &'a MetaPartition> + 'a {
        self.mps.values().filter(move |m| m.vol == vol)
    }

    fn partition_ids_free(&self, dps: &[DataPartition], mps: &[MetaPartition]) -> bool {
        let mut seen = std::collections::BTreeSet::new();
        dps.iter()
            .map(|d| d.id)
            .chain(mps.iter().map(|m| m.id))
            .all(|id| id != 0 && seen.insert(id))
            && dps.iter().all(|d| !self.dps.contains_key(&d.id))
            && mps.iter().all(|m| !self.mps.contains_key(&m.id))
    }

    fn marks(&self) -> usize {
        self.creating.len() + self.deleting.len()
    }

    /// Is a delete pending for any of `hosts` of partition `id`? (Recording such a host
    /// would list a replica the loop is about to delete.)
    fn deleting_any(&self, role: NodeRole, id: u64, hosts: &[String]) -> Option<String> {
        hosts
            .iter()
            .find(|h| {
                self.deleting.contains(&ReplicaRef {
                    role,
                    id,
                    addr: (*h).clone(),
                })
            })
            .map(|h| format!("a delete of partition {id} on {h} is pending"))
    }

    /// `hosts` of partition `id` are recorded: their intents are fulfilled.
    fn fulfil(&mut self, role: NodeRole, id: u64, hosts: &[String]) {
        if self.creating.is_empty() {
            return;
        }
        for h in hosts {
            self.creating.remove(&ReplicaRef {
                role,
                id,
                addr: h.clone(),
            });
        }
    }

    /// Every id in use by a volume or partition (checked against the registry's ids).
    pub fn max_id(&self) -> u64 {
        let v = self.vols.values().map(|v| v.id).max().unwrap_or(0);
        let d = self.dps.keys().max().copied().unwrap_or(0);
        let m = self.mps.keys().max().copied().unwrap_or(0);
        v.max(d).max(m)
    }
}

impl CubefsState {
    /// Are `peers` registered nodes of `role` whose addresses match the host list, once each?
    fn peers_ok(&self, role: NodeRole, hosts: &[String], peers: &[Peer]) -> Result<(), String> {
        if hosts.is_empty() || hosts.len() != peers.len() {
            return Err("hosts and peers must be non-empty and of equal length".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in peers {
            if !seen.insert(p.addr.as_str()) {
                return Err(format!("host {} appears twice", p.addr));
            }
            match self.node(role, &p.addr) {
                Some(n) if n.id == p.id => {}
                _ => return Err(format!("{} node {} is not registered", role.name(), p.addr)),
            }
            if !hosts.contains(&p.addr) {
                return Err(format!("peer {} is not among the hosts", p.addr));
            }
        }
        Ok(())
    }

    fn check_dps(&self, vol: &str, dps: &[DataPartition]) -> Result<(), String> {
        for d in dps {
            if d.vol != vol {
                return Err(format!("data partition {} names volume {}", d.id, d.vol));
            }
            if d.hosts.len() != d.replica_num as usize {
                return Err(format!(
                    "data partition {} has {} hosts for {} replicas",
                    d.id,
                    d.hosts.len(),
                    d.replica_num
                ));
            }
            self.peers_ok(NodeRole::Data, &d.hosts, &d.peers)?;
        }
        Ok(())
    }

    pub(super) fn apply_vol(&mut self, cmd: &VolCommand) -> CubefsOutcome {
        match cmd {
            VolCommand::CreateVol {
                vol,
                meta_partitions,
                data_partitions,
                owner,
            } => {
                if !is_vol_name(&vol.name) || !is_user_id(&vol.owner) {
                    return refuse(CODE_PARAM, "invalid volume name or owner");
                }
                if self.vt.vols.contains_key(&vol.name) {
                    return refuse(CODE_DUPLICATE_VOL, "duplicate vol");
                }
                if self.vt.vols.len() >= VOLS_MAX {
                    return refuse(
                        super::CODE_INTERNAL,
                        format!("the cluster holds {VOLS_MAX} volumes already"),
                    );
                }
                let n = meta_partitions.len() + data_partitions.len();
                if n > PARTITIONS_PER_VOL_MAX
                    || self.vt.dps.len() + self.vt.mps.len() + n > PARTITIONS_MAX
                {
                    return refuse(super::CODE_INTERNAL, "too many partitions");
                }
                if meta_partitions.is_empty()
                    || vol.id == 0
                    || vol.description.len() > DESCRIPTION_BYTES_MAX
                {
                    return refuse(
                        CODE_PARAM,
                        "a volume needs an id and at least one meta partition",
                    );
                }
                if !self.vt.partition_ids_free(data_partitions, meta_partitions)
                    || data_partitions.iter().any(|d| d.id == vol.id)
                    || meta_partitions.iter().any(|m| m.id == vol.id)
                {
                    return refuse(super::CODE_INTERNAL, "partition ids are taken or repeated");
                }
                // The meta partitions tile the inode space in order, the last one open-ended.
                let mut next = 0u64;
                for (i, m) in meta_partitions.iter().enumerate() {
                    let last = i + 1 == meta_partitions.len();
                    if m.vol != vol.name
                        || m.start != next
                        || m.end < m.start
                        || (last && m.end != u64::MAX >> 1)
                    {
                        return refuse(
                            super::CODE_INTERNAL,
                            format!("meta partition {} does not continue the inode ranges", m.id),
                        );
                    }
                    if let Err(e) = self.peers_ok(NodeRole::Meta, &m.hosts, &m.peers) {
                        return refuse(super::CODE_INTERNAL, e);
                    }
                    next = m.end.saturating_add(1);
                }
                if let Err(e) = self.check_dps(&vol.name, data_partitions) {
                    return refuse(super::CODE_INTERNAL, e);
                }
                let pending = meta_partitions
                    .iter()
                    .find_map(|m| self.vt.deleting_any(NodeRole::Meta, m.id, &m.hosts))
                    .or_else(|| {
                        data_partitions
                            .iter()
                            .find_map(|d| self.vt.deleting_any(NodeRole::Data, d.id, &d.hosts))
                    });
                if let Some(e) = pending {
                    return refuse(super::CODE_INTERNAL, e);
                }
                let user_exists = self.vt.users.contains_key(&vol.owner);
                if !user_exists {
                    if owner.id != vol.owner {
                        return refuse(super::CODE_INTERNAL, "owner record names another user");
                    }
                    if self
                        .vt
                        .users
                        .values()
                        .any(|u| u.access_key == owner.access_key)
                    {
                        return refuse(CODE_DUPLICATE_AK, "duplicate access key");
                    }
                    if self.vt.users.len() >= USERS_MAX {
                        return refuse(super::CODE_INTERNAL, "too many users");
                    }
                }
                self.touch(vol.created_ms);
                let user = self
                    .vt
                    .users
                    .entry(vol.owner.clone())
                    .or_insert_with(|| User {
                        own_vols: Vec::new(),
                        ..owner.clone()
                    });
                if !user.own_vols.contains(&vol.name) {
                    user.own_vols.push(vol.name.clone());
                }
                for m in meta_partitions {
                    self.vt.fulfil(NodeRole::Meta, m.id, &m.hosts);
                    self.vt.mps.insert(m.id, m.clone());
                }
                for d in data_partitions {
                    self.vt.fulfil(NodeRole::Data, d.id, &d.hosts);
                    self.vt.dps.insert(d.id, d.clone());
                }
                self.vt.vols.insert(vol.name.clone(), vol.clone());
                CubefsOutcome::Done
            }
            VolCommand::UpdateVol { name, update } => {
                let Some(v) = self.vt.vols.get_mut(name) else {
                    return refuse(CODE_VOL_NOT_EXISTS, "vol not exists");
                };
                if v.status == VOL_MARK_DELETE {
                    return refuse(CODE_VOL_DELETED, "vol has been deleted");
                }
                if update.capacity_gb == Some(0) {
                    return refuse(CODE_PARAM, "capacity must be greater than 0");
                }
                if update
                    .description
                    .as_ref()
                    .is_some_and(|d| d.len() > DESCRIPTION_BYTES_MAX)
                {
                    return refuse(CODE_PARAM, "description too long");
                }
                let u = update.clone();
                if let Some(c) = u.capacity_gb {
                    v.capacity_gb = c;
                }
                if let Some(d) = u.description {
                    v.description = d;
                }
                let flags = [
                    (&mut v.follower_read, u.follower_read),
                    (&mut v.meta_follower_read, u.meta_follower_read),
                    (&mut v.authenticate, u.authenticate),
                    (&mut v.enable_quota, u.enable_quota),
                    (
                        &mut v.dp_read_only_when_vol_full,
                        u.dp_read_only_when_vol_full,
                    ),
                ];
                for (field, new) in flags {
                    if let Some(b) = new {
                        *field = b;
                    }
                }
                if let Some(h) = u.delete_lock_time_h {
                    v.delete_lock_time_h = h;
                }
                CubefsOutcome::Done
            }
            VolCommand::MarkVolDelete { name, delete } => {
                let Some(v) = self.vt.vols.get_mut(name) else {
                    return refuse(CODE_VOL_NOT_EXISTS, "vol not exists");
                };
                v.status = if *delete { VOL_MARK_DELETE } else { VOL_NORMAL };
                CubefsOutcome::Done
            }
            VolCommand::DropVol { name } => {
                let Some(v) = self.vt.vols.get(name) else {
                    return refuse(CODE_VOL_NOT_EXISTS, "vol not exists");
                };
                if v.status != VOL_MARK_DELETE {
                    return refuse(9, "vol was not previously deleted or already deleted");
                }
                self.vt.vols.remove(name);
                // Every replica of the volume becomes a pending delete: the loop sends the
                // tasks, whichever leader runs it.
                let vt = &mut self.vt;
                vt.dps.retain(|_, d| {
                    if &d.vol != name {
                        return true;
                    }
                    for h in &d.hosts {
                        vt.deleting.insert(ReplicaRef {
                            role: NodeRole::Data,
                            id: d.id,
                            addr: h.clone(),
                        });
                    }
                    false
                });
                vt.mps.retain(|_, m| {
                    if &m.vol != name {
                        return true;
                    }
                    for h in &m.hosts {
                        vt.deleting.insert(ReplicaRef {
                            role: NodeRole::Meta,
                            id: m.id,
                            addr: h.clone(),
                        });
                    }
                    false
                });
                for u in self.vt.users.values_mut() {
                    u.own_vols.retain(|v| v != name);
                }
                CubefsOutcome::Done
            }
            VolCommand::AddDataPartitions { vol, partitions } => {
                let Some(v) = self.vt.vols.get(vol) else {
                    return refuse(CODE_VOL_NOT_EXISTS, "vol not exists");
                };
                if v.status == VOL_MARK_DELETE {
                    return refuse(CODE_VOL_DELETED, "vol has been deleted");
                }
                let have = self.vt.dps_of(vol).count() + self.vt.mps_of(vol).count();
                if have + partitions.len() > PARTITIONS_PER_VOL_MAX
                    || self.vt.dps.len() + self.vt.mps.len() + partitions.len() > PARTITIONS_MAX
                {
                    return refuse(super::CODE_INTERNAL, "too many partitions");
                }
                if !self.vt.partition_ids_free(partitions, &[])
                    || self
                        .vt
                        .vols
                        .values()
                        .any(|v| partitions.iter().any(|d| d.id == v.id))
                {
                    return refuse(super::CODE_INTERNAL, "partition ids are taken or repeated");
                }
                if let Err(e) = self.check_dps(vol, partitions) {
                    return refuse(super::CODE_INTERNAL, e);
                }
                if let Some(e) = partitions
                    .iter()
                    .find_map(|d| self.vt.deleting_any(NodeRole::Data, d.id, &d.hosts))
                {
                    return refuse(super::CODE_INTERNAL, e);
                }
                for d in partitions {
                    self.vt.fulfil(NodeRole::Data, d.id, &d.hosts);
                    self.vt.dps.insert(d.id, d.clone());
                }
                CubefsOutcome::Done
            }
            VolCommand::CreateUser { user } => {
                if !is_user_id(&user.id) || !(USER_ROOT..=USER_NORMAL).contains(&user.user_type) {
                    return refuse(55, "invalid user ID or type");
                }
                if self.vt.users.contains_key(&user.id) {
                    return refuse(CODE_DUPLICATE_USER, "duplicate user id");
                }
                if user.access_key.is_empty()
                    || self
                        .vt
                        .users
                        .values()
                        .any(|u| u.access_key == user.access_key)
                {
                    return refuse(CODE_DUPLICATE_AK, "duplicate access key");
                }
                if self.vt.users.len() >= USERS_MAX
                    || user.description.len() > DESCRIPTION_BYTES_MAX
                {
                    return refuse(
                        super::CODE_INTERNAL,
                        "too many users or description too long",
                    );
                }
                self.touch(user.created_ms);
                let mut u = user.clone();
                u.own_vols.clear();
                self.vt.users.insert(u.id.clone(), u);
                CubefsOutcome::Done
            }
            VolCommand::SetHosts {
                role,
                id,
                expect_hosts,
                hosts,
                peers,
            } => {
                if let Err(e) = self.peers_ok(*role, hosts, peers) {
                    return refuse(super::CODE_INTERNAL, e);
                }
                if let Some(e) = self.vt.deleting_any(*role, *id, hosts) {
                    return refuse(super::CODE_INTERNAL, e);
                }
                if self.vt.marks() + expect_hosts.len() > REPLICA_MARKS_MAX {
                    return refuse(super::CODE_INTERNAL, "too many pending replica deletes");
                }
                let current = match role {
                    NodeRole::Data => self
                        .vt
                        .dps
                        .get_mut(id)
                        .map(|d| (&mut d.hosts, &mut d.peers)),
                    NodeRole::Meta => self
                        .vt
                        .mps
                        .get_mut(id)
                        .map(|m| (&mut m.hosts, &mut m.peers)),
                };
                let Some((h, p)) = current else {
                    return match role {
                        NodeRole::Data => refuse(CODE_DP_NOT_EXISTS, "data partition not exists"),
                        NodeRole::Meta => refuse(CODE_MP_NOT_EXISTS, "meta partition not exists"),
                    };
                };
                if h != expect_hosts {
                    return refuse(
                        super::CODE_INTERNAL,
                        format!("partition {id} hosts changed meanwhile"),
                    );
                }
                let removed: Vec<String> =
                    h.iter().filter(|x| !hosts.contains(x)).cloned().collect();
                *h = hosts.clone();
                *p = peers.clone();
                self.vt.fulfil(*role, *id, hosts);
                // The removed replicas stay on their nodes until the loop's delete is
                // confirmed: recorded here, in the same entry, so no leader change loses one.
                for addr in removed {
                    self.vt.deleting.insert(ReplicaRef {
                        role: *role,
                        id: *id,
                        addr,
                    });
                }
                CubefsOutcome::Done
            }
            VolCommand::SetDecommission { role, addr, on } => {
                if self.node(*role, addr).is_none() {
                    return match role {
                        NodeRole::Data => {
                            refuse(super::CODE_DATA_NODE_NOT_EXISTS, "data node not exists")
                        }
                        NodeRole::Meta => {
                            refuse(super::CODE_META_NODE_NOT_EXISTS, "meta node not exists")
                        }
                    };
                }
                if *on {
                    self.vt.decommissioning.insert((*role, addr.clone()));
                } else {
                    self.vt.decommissioning.remove(&(*role, addr.clone()));
                }
                CubefsOutcome::Done
            }
            VolCommand::IntendCreate { replicas, intent } => {
                if replicas.is_empty() || replicas.len() > REPLICAS_PER_COMMAND_MAX {
                    return refuse(
                        CODE_PARAM,
                        format!("an intent names 1 to {REPLICAS_PER_COMMAND_MAX} replicas"),
                    );
                }
                if self.vt.marks() + replicas.len() > REPLICA_MARKS_MAX {
                    return refuse(super::CODE_INTERNAL, "too many replica marks");
                }
                let mut seen = std::collections::BTreeSet::new();
                for r in replicas {
                    if self.node(r.role, &r.addr).is_none() {
                        return refuse(
                            super::CODE_INTERNAL,
                            format!("{} node {} is not registered", r.role.name(), r.addr),
                        );
                    }
                    if self.vt.deleting.contains(r) {
                        return refuse(
                            super::CODE_INTERNAL,
                            format!("a delete of partition {} on {} is pending", r.id, r.addr),
                        );
                    }
                    if !seen.insert(r) || self.vt.creating.contains_key(r) {
                        return refuse(
                            super::CODE_INTERNAL,
                            format!("partition {} on {} is being created already", r.id, r.addr),
                        );
                    }
                    let hosts = match r.role {
                        NodeRole::Data => self.vt.dps.get(&r.id).map(|d| &d.hosts),
                        NodeRole::Meta => self.vt.mps.get(&r.id).map(|m| &m.hosts),
                    };
                    if hosts.is_some_and(|h| h.contains(&r.addr)) {
                        return refuse(
                            super::CODE_INTERNAL,
                            format!("{} holds partition {} already", r.addr, r.id),
                        );
                    }
                }
                for r in replicas {
                    self.vt.creating.insert(r.clone(), *intent);
                }
                CubefsOutcome::Done
            }
            VolCommand::AbandonCreate { replicas } => {
                if replicas.len() > REPLICAS_PER_COMMAND_MAX {
                    return refuse(CODE_PARAM, "too many replicas in one command");
                }
                for r in replicas {
                    if self.vt.creating.remove(r).is_some() {
                        self.vt.deleting.insert(r.clone());
                    }
                }
                CubefsOutcome::Done
            }
            VolCommand::DeleteDone { replicas } => {
                if replicas.len() > REPLICAS_PER_COMMAND_MAX {
                    return refuse(CODE_PARAM, "too many replicas in one command");
                }
                for r in replicas {
                    self.vt.deleting.remove(r);
                }
                CubefsOutcome::Done
            }
            VolCommand::SplitMetaPartition {
                vol,
                last,
                end,
                new,
            } => self.split_mp(vol, *last, *end, new),
            VolCommand::DeleteUser { id } => {
                let Some(u) = self.vt.users.get(id) else {
                    return refuse(CODE_USER_NOT_EXISTS, "user not exists");
                };
                if !u.own_vols.is_empty() {
                    return refuse(CODE_OWN_VOLS_NOT_EMPTY, "own vols not empty");
                }
                self.vt.users.remove(id);
                CubefsOutcome::Done
            }
        }
    }

    fn split_mp(&mut self, vol: &str, last: u64, end: u64, new: &[MetaPartition]) -> CubefsOutcome {
        let Some(v) = self.vt.vols.get(vol) else {
            return refuse(CODE_VOL_NOT_EXISTS, "vol not exists");
        };
        if v.status == VOL_MARK_DELETE {
            return refuse(CODE_VOL_DELETED, "vol has been deleted");
        }
        if new.is_empty() || new.len() > MP_CREATE_MAX {
            return refuse(CODE_PARAM, format!("count must be in 1..{MP_CREATE_MAX}"));
        }
        let Some(cur) = self.vt.mps_of(vol).max_by_key(|m| m.start) else {
            return refuse(CODE_MP_NOT_EXISTS, "the volume has no meta partition");
        };
        if cur.id != last || cur.end != INODE_END || end < cur.start || end >= INODE_END {
            return refuse(
                super::CODE_INTERNAL,
                format!("meta partition {last} is not the open last one, or {end} is outside it"),
            );
        }
        let have = self.vt.dps_of(vol).count() + self.vt.mps_of(vol).count();
        if have + new.len() > PARTITIONS_PER_VOL_MAX
            || self.vt.dps.len() + self.vt.mps.len() + new.len() > PARTITIONS_MAX
        {
            return refuse(super::CODE_INTERNAL, "too many partitions");
        }
        if !self.vt.partition_ids_free(&[], new)
            || self
                .vt
                .vols
                .values()
                .any(|v| new.iter().any(|m| m.id == v.id))
        {
            return refuse(super::CODE_INTERNAL, "partition ids are taken or repeated");
        }
        let mut next = end.saturating_add(1);
        for (i, m) in new.iter().enumerate() {
            let is_last = i + 1 == new.len();
            if m.vol != vol || m.start != next || m.end < m.start || is_last != (m.end == INODE_END)
            {
                return refuse(
                    super::CODE_INTERNAL,
                    format!("meta partition {} does not continue the inode ranges", m.id),
                );
            }
            if let Err(e) = self.peers_ok(NodeRole::Meta, &m.hosts, &m.peers) {
                return refuse(super::CODE_INTERNAL, e);
            }
            if let Some(e) = self.vt.deleting_any(NodeRole::Meta, m.id, &m.hosts) {
                return refuse(super::CODE_INTERNAL, e);
            }
            next = m.end.saturating_add(1);
        }
        if let Some(m) = self.vt.mps.get_mut(&last) {
            m.end = end;
        }
        for m in new {
            self.vt.fulfil(NodeRole::Meta, m.id, &m.hosts);
            self.vt.mps.insert(m.id, m.clone());
        }
        CubefsOutcome::Done
    }

    /// Checks a restored volume table against the registry (hosts registered, partitions
    /// of existing volumes, users owning existing volumes).
    pub(super) fn check_vol_tables(&self) -> Result<(), String> {
        for (role, addr) in &self.vt.decommissioning {
            if self.node(*role, addr).is_none() {
                return Err(format!("decommissioning node {addr} is not registered"));
            }
        }
        for (name, v) in &self.vt.vols {
            if name != &v.name {
                return Err(format!("volume {name} is keyed wrongly"));
            }
        }
        for d in self.vt.dps.values() {
            if !self.vt.vols.contains_key(&d.vol) {
                return Err(format!("data partition {} of unknown volume", d.id));
            }
            self.peers_ok(NodeRole::Data, &d.hosts, &d.peers)?;
        }
        for m in self.vt.mps.values() {
            if !self.vt.vols.contains_key(&m.vol) {
                return Err(format!("meta partition {} of unknown volume", m.id));
            }
            self.peers_ok(NodeRole::Meta, &m.hosts, &m.peers)?;
        }
        Ok(())
    }
}
