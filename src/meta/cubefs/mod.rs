//! The CubeFS master's replicated registry: cluster settings, zones, node sets, data nodes and
//! meta nodes (`../shared/reference/cubefs-master-api.md` §4, §7).
//!
//! Placement: the whole registry lives in group 0's partition of the meta table (the CubeFS
//! "master leader" is group 0's leader, and leader affinity puts every shard's leadership on
//! that node). Other shards hold an empty table. A node's liveness and usage are leader memory
//! kept elsewhere (on the shard its address hashes to), never here.
//!
//! Apply is deterministic and total: IDs and times are chosen when proposing and travel in the
//! command; a command that does not fit the table (a mismatching re-registration, an unknown
//! zone) is refused with CubeFS's error code and changes nothing.

use std::collections::BTreeMap;

use crate::codec::{self, CodecError};

pub mod volumes;
pub use volumes::{VolCommand, VolTables};

/// The version of this table's snapshot section: 1 = registry only, 2 = registry + volumes,
/// 3 = and the replica creation intents and pending deletes.
pub const SECTION_VERSION: u16 = 3;

/// `nodeSetCap` when the cluster sets none: nodes of each type per node set.
pub const NODE_SET_CAP_DEFAULT: u32 = 18;
/// The smallest node set capacity CubeFS accepts.
pub const NODE_SET_CAP_MIN: u32 = 3;
/// The zone a node joins when it names none.
pub const ZONE_DEFAULT: &str = "default";
/// The meta node memory threshold when none was set (parts per million: 0.75).
pub const META_THRESHOLD_PPM_DEFAULT: u32 = 750_000;
/// Registry limits: a command over them is refused (outside input never grows state without
/// bound).
pub const NODES_MAX: usize = 100_000;
pub const ZONES_MAX: usize = 1_000;
pub const NAME_BYTES_MAX: usize = 256;
pub const NODE_INFO_KEYS_MAX: usize = 64;

/// CubeFS error codes (§2) this table answers with.
pub const CODE_INTERNAL: i32 = 1;
pub const CODE_PARAM: i32 = 2;
pub const CODE_DATA_NODE_NOT_EXISTS: i32 = 12;
pub const CODE_META_NODE_NOT_EXISTS: i32 = 13;
pub const CODE_ZONE_NOT_EXISTS: i32 = 52;
pub const CODE_NODE_SET_NOT_EXISTS: i32 = 64;

/// Node set and node selector names CubeFS knows.
pub const SELECTORS: [&str; 4] = ["RoundRobin", "CarryWeight", "AvailableSpaceFirst", "Straw"];
pub const NODESET_SELECTOR_DEFAULT: &str = "RoundRobin";
pub const NODE_SELECTOR_DEFAULT: &str = "CarryWeight";

/// The node info keys `/admin/getNodeInfo` shows, with CubeFS's defaults.
pub const NODE_INFO_DEFAULTS: [(&str, &str); 9] = [
    ("batchCount", "0"),
    ("markDeleteRate", "0"),
    ("deleteWorkerSleepMs", "0"),
    ("autoRepairRate", "0"),
    ("dpMaxRepairErrCnt", "0"),
    ("loadFactor", "0"),
    ("maxDpCntLimit", "3000"),
    ("maxMpCntLimit", "300"),
    // Data partitions moving at once per node set (§10); CubeFS's default.
    ("decommissionLimit", "10"),
];

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub enum NodeRole {
    Data,
    Meta,
}

impl NodeRole {
    pub fn name(self) -> &'static str {
        match self {
            NodeRole::Data => "data",
            NodeRole::Meta => "meta",
        }
    }
}

/// A registered data or meta node.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Node {
    pub id: u64,
    pub addr: String,
    pub role: NodeRole,
    pub zone: String,
    pub node_set: u64,
    pub heartbeat_port: String,
    pub replica_port: String,
    /// 1 SSD, 2 HDD for data nodes; 0 for meta nodes.
    pub media_type: u32,
    pub registered_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Zone {
    pub name: String,
    pub available: bool,
    pub data_nodeset_selector: String,
    pub meta_nodeset_selector: String,
    pub data_node_selector: String,
    pub meta_node_selector: String,
    /// The media type of the data node that created the zone (0 when a meta node did).
    pub data_media_type: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct NodeSet {
    pub id: u64,
    pub zone: String,
    pub capacity: u32,
    pub data_node_selector: String,
    pub meta_node_selector: String,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Settings {
    /// The time of the first command applied (the cluster's CubeFS `CreateTime`).
    pub created_ms: u64,
    /// `/cluster/freeze`: no automatic partition allocation.
    pub disable_auto_alloc: bool,
    pub meta_node_threshold_ppm: u32,
    pub node_set_cap: u32,
    /// `/admin/setNodeInfo` values, validated decimal strings.
    pub node_info: BTreeMap<String, String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            created_ms: 0,
            disable_auto_alloc: false,
            meta_node_threshold_ppm: META_THRESHOLD_PPM_DEFAULT,
            node_set_cap: NODE_SET_CAP_DEFAULT,
            node_info: BTreeMap::new(),
        }
    }
}

/// A change to the registry, as proposed through raft.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum CubefsCommand {
    /// `/dataNode/add`, `/metaNode/add`. `node_id` and `new_set_id` come from the cluster
    /// allocator; the set id is used only when no set of the zone has a free slot.
    AddNode {
        role: NodeRole,
        addr: String,
        zone: String,
        heartbeat_port: String,
        replica_port: String,
        media_type: u32,
        node_id: u64,
        new_set_id: u64,
        now_ms: u64,
    },
    Freeze {
        enable: bool,
        now_ms: u64,
    },
    SetThreshold {
        ppm: u32,
        now_ms: u64,
    },
    /// Only the keys given change.
    SetNodeInfo {
        items: Vec<(String, String)>,
        now_ms: u64,
    },
    UpdateZone {
        name: String,
        enable: Option<bool>,
        data_nodeset_selector: Option<String>,
        meta_nodeset_selector: Option<String>,
        data_node_selector: Option<String>,
        meta_node_selector: Option<String>,
    },
    UpdateNodeSet {
        id: u64,
        data_node_selector: Option<String>,
        meta_node_selector: Option<String>,
    },
    // New variants go last: the archived discriminant is the variant's position.
    /// A heartbeat reported another zone: the node moves to that zone (created if new) and
    /// to its set with the most free slots, or a new set with `new_set_id`.
    MoveNode {
        role: NodeRole,
        addr: String,
        zone: String,
        new_set_id: u64,
        now_ms: u64,
    },
    /// Volumes, partitions and users (`volumes.rs`). Boxed: an archived variant larger than
    /// the largest old one would change the archived enum's size and old entries would no
    /// longer decode.
    Vol(Box<VolCommand>),
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CubefsOutcome {
    /// The node's id; `created` is false when the address was registered already.
    Node {
        id: u64,
        created: bool,
    },
    Done,
    /// Refused with a CubeFS error code; nothing changed.
    Refused {
        code: i32,
        msg: String,
    },
}

impl CubefsCommand {
    pub fn vol(c: VolCommand) -> Self {
        CubefsCommand::Vol(Box::new(c))
    }
}

fn refuse(code: i32, msg: impl Into<String>) -> CubefsOutcome {
    CubefsOutcome::Refused {
        code,
        msg: msg.into(),
    }
}

/// The archived form of a snapshot (the derived indexes are rebuilt on restore).
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SnapshotData {
    settings: Settings,
    zones: Vec<Zone>,
    node_sets: Vec<NodeSet>,
    nodes: Vec<Node>,
}

/// Section version 2: the registry and the volume tables.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SnapshotDataV2 {
    registry: SnapshotData,
    vols: Vec<volumes::Volume>,
    dps: Vec<volumes::DataPartition>,
    mps: Vec<volumes::MetaPartition>,
    users: Vec<volumes::User>,
    decommissioning: Vec<(NodeRole, String)>,
}

/// Section version 3: version 2 and the replica marks.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SnapshotDataV3 {
    v2: SnapshotDataV2,
    creating: Vec<(volumes::ReplicaRef, volumes::Intent)>,
    deleting: Vec<volumes::ReplicaRef>,
}

/// The registry (group 0's partition; empty elsewhere).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CubefsState {
    pub settings: Settings,
    pub zones: BTreeMap<String, Zone>,
    pub node_sets: BTreeMap<u64, NodeSet>,
    /// Keyed by (role, addr): a data node and a meta node may share an address, as in CubeFS.
    pub nodes: BTreeMap<(NodeRole, String), Node>,
    /// Derived: (data, meta) node counts per node set.
    set_counts: BTreeMap<u64, (u32, u32)>,
    /// Volumes, partitions and users.
    pub vt: VolTables,
}

/// Is `s` an `ip:port` address (what CubeFS requires of a node address)?
pub fn is_ip_port(s: &str) -> bool {
    s.parse::<std::net::SocketAddr>().is_ok()
}

/// Is `s` one of CubeFS's selector names?
pub fn is_selector(s: &str) -> bool {
    SELECTORS.contains(&s)
}

impl CubefsState {
    /// The registry without the volume tables: what the node and topology routes read
    /// (cloning 100,000 partitions for a node listing would dominate it).
    pub fn registry_clone(&self) -> CubefsState {
        CubefsState {
            settings: self.settings.clone(),
            zones: self.zones.clone(),
            node_sets: self.node_sets.clone(),
            nodes: self.nodes.clone(),
            set_counts: self.set_counts.clone(),
            vt: VolTables::default(),
        }
    }

    pub fn node(&self, role: NodeRole, addr: &str) -> Option<&Node> {
        self.nodes.get(&(role, addr.to_string()))
    }

    /// Nodes of one role, in address order.
    pub fn nodes_of(&self, role: NodeRole) -> impl Iterator<Item = &Node> {
        self.nodes.values().filter(move |n| n.role == role)
    }

    /// (data, meta) nodes in set `id`.
    pub fn set_counts(&self, id: u64) -> (u32, u32) {
        self.set_counts.get(&id).copied().unwrap_or((0, 0))
    }

    /// The largest id handed to a node or node set (CubeFS's common allocator position).
    pub fn max_common_id(&self) -> u64 {
        let n = self.nodes.values().map(|n| n.id).max().unwrap_or(0);
        let s = self.node_sets.keys().max().copied().unwrap_or(0);
        n.max(s)
    }

    fn touch(&mut self, now_ms: u64) {
        if self.settings.created_ms == 0 {
            self.settings.created_ms = now_ms;
        }
    }

    pub fn apply(&mut self, cmd: &CubefsCommand) -> CubefsOutcome {
        match cmd {
            CubefsCommand::AddNode {
                role,
                addr,
                zone,
                heartbeat_port,
                replica_port,
                media_type,
                node_id,
                new_set_id,
                now_ms,
            } => self.add_node(
                *role,
                addr,
                zone,
                heartbeat_port,
                replica_port,
                *media_type,
                *node_id,
                *new_set_id,
                *now_ms,
            ),
            CubefsCommand::MoveNode {
                role,
                addr,
                zone,
                new_set_id,
                now_ms,
            } => self.move_node(*role, addr, zone, *new_set_id, *now_ms),
            CubefsCommand::Vol(c) => self.apply_vol(c),
            CubefsCommand::Freeze { enable, now_ms } => {
                self.touch(*now_ms);
                self.settings.disable_auto_alloc = *enable;
                CubefsOutcome::Done
            }
            CubefsCommand::SetThreshold { ppm, now_ms } => {
                if *ppm > 1_000_000 {
                    return refuse(CODE_PARAM, "threshold must be in [0, 1]");
                }
                self.touch(*now_ms);
                self.settings.meta_node_threshold_ppm = *ppm;
                CubefsOutcome::Done
            }
            CubefsCommand::SetNodeInfo { items, now_ms } => {
                let known = |k: &str| NODE_INFO_DEFAULTS.iter().any(|(d, _)| *d == k);
                for (k, v) in items {
                    if !known(k) {
                        return refuse(CODE_PARAM, format!("unknown node info key {k}"));
                    }
                    let finite = v.parse::<f64>().is_ok_and(|f| f.is_finite() && f >= 0.0);
                    if v.len() > 20 || !finite {
                        return refuse(CODE_PARAM, format!("{k} {v:?} is not a number >= 0"));
                    }
                }
                self.touch(*now_ms);
                for (k, v) in items {
                    self.settings.node_info.insert(k.clone(), v.clone());
                }
                CubefsOutcome::Done
            }
            CubefsCommand::UpdateZone {
                name,
                enable,
                data_nodeset_selector,
                meta_nodeset_selector,
                data_node_selector,
                meta_node_selector,
            } => {
                let selectors = [
                    data_nodeset_selector,
                    meta_nodeset_selector,
                    data_node_selector,
                    meta_node_selector,
                ];
                if let Some(bad) = selectors
                    .iter()
                    .copied()
                    .flatten()
                    .find(|s| !is_selector(s))
                {
                    return refuse(CODE_PARAM, format!("unknown selector {bad}"));
                }
                let Some(z) = self.zones.get_mut(name) else {
                    return refuse(CODE_ZONE_NOT_EXISTS, format!("zone {name} not exists"));
                };
                if let Some(e) = enable {
                    z.available = *e;
                }
                let fields = [
                    &mut z.data_nodeset_selector,
                    &mut z.meta_nodeset_selector,
                    &mut z.data_node_selector,
                    &mut z.meta_node_selector,
                ];
                for (field, new) in fields.into_iter().zip(selectors) {
                    if let Some(s) = new {
                        *field = s.clone();
                    }
                }
                CubefsOutcome::Done
            }
            CubefsCommand::UpdateNodeSet {
                id,
                data_node_selector,
                meta_node_selector,
            } => {
                let selectors = [data_node_selector, meta_node_selector];
                if let Some(bad) = selectors
                    .iter()
                    .copied()
                    .flatten()
                    .find(|s| !is_selector(s))
                {
                    return refuse(CODE_PARAM, format!("unknown selector {bad}"));
                }
                let Some(set) = self.node_sets.get_mut(id) else {
                    return refuse(
                        CODE_NODE_SET_NOT_EXISTS,
                        format!("node set {id} not exists"),
                    );
                };
                if let Some(s) = data_node_selector {
                    set.data_node_selector = s.clone();
                }
                if let Some(s) = meta_node_selector {
                    set.meta_node_selector = s.clone();
                }
                CubefsOutcome::Done
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add_node(
        &mut self,
        role: NodeRole,
        addr: &str,
        zone: &str,
        heartbeat_port: &str,
        replica_port: &str,
        media_type: u32,
        node_id: u64,
        new_set_id: u64,
        now_ms: u64,
    ) -> CubefsOutcome {
        if !is_ip_port(addr) {
            return refuse(CODE_PARAM, format!("addr {addr:?} is not ip:port"));
        }
        let zone = if zone.is_empty() { ZONE_DEFAULT } else { zone };
        if zone.len() > NAME_BYTES_MAX || heartbeat_port.len() > 16 || replica_port.len() > 16 {
            return refuse(CODE_PARAM, "zone name or port too long");
        }
        if role == NodeRole::Data && !(1..=2).contains(&media_type) {
            return refuse(
                CODE_INTERNAL,
                format!("mediaType {media_type} is not 1 (SSD) or 2 (HDD)"),
            );
        }
        if let Some(n) = self.node(role, addr) {
            if n.zone != zone {
                return refuse(
                    CODE_INTERNAL,
                    format!("{addr} is registered in zone {} not {zone}", n.zone),
                );
            }
            if n.media_type != media_type {
                return refuse(
                    CODE_INTERNAL,
                    format!(
                        "{addr} is registered with mediaType {} not {media_type}",
                        n.media_type
                    ),
                );
            }
            return CubefsOutcome::Node {
                id: n.id,
                created: false,
            };
        }
        if node_id == 0 || new_set_id == 0 || node_id == new_set_id {
            return refuse(
                CODE_INTERNAL,
                "node and node set ids must be distinct and non-zero",
            );
        }
        if self.nodes.values().any(|n| n.id == node_id) || self.node_sets.contains_key(&node_id) {
            return refuse(CODE_INTERNAL, format!("id {node_id} is taken"));
        }
        if self.nodes.len() >= NODES_MAX {
            return refuse(
                CODE_INTERNAL,
                format!("the cluster holds {NODES_MAX} nodes already"),
            );
        }
        let set_id = match self.place(role, zone, media_type, new_set_id) {
            Ok(id) => id,
            Err(refused) => return refused,
        };
        self.touch(now_ms);
        self.nodes.insert(
            (role, addr.to_string()),
            Node {
                id: node_id,
                addr: addr.to_string(),
                role,
                zone: zone.to_string(),
                node_set: set_id,
                heartbeat_port: heartbeat_port.to_string(),
                replica_port: replica_port.to_string(),
                media_type,
                registered_ms: now_ms,
            },
        );
        CubefsOutcome::Node {
            id: node_id,
            created: true,
        }
    }

    /// Takes a slot for a `role` node in `zone`: creates the zone if new, picks the zone's set
    /// with the most free slots or creates set `new_set_id`, and counts the node in it.
    /// Checks everything before changing anything (a refusal leaves the table as it was).
    fn place(
        &mut self,
        role: NodeRole,
        zone: &str,
        media_type: u32,
        new_set_id: u64,
    ) -> Result<u64, CubefsOutcome> {
        if zone.is_empty() || zone.len() > NAME_BYTES_MAX {
            return Err(refuse(CODE_PARAM, "zone name is empty or too long"));
        }
        if !self.zones.contains_key(zone) && self.zones.len() >= ZONES_MAX {
            return Err(refuse(
                CODE_INTERNAL,
                format!("the cluster holds {ZONES_MAX} zones already"),
            ));
        }
        let existing = self.set_with_most_free_slots(zone, role);
        if existing.is_none()
            && (new_set_id == 0
                || self.node_sets.contains_key(&new_set_id)
                || self.nodes.values().any(|n| n.id == new_set_id))
        {
            return Err(refuse(CODE_INTERNAL, format!("id {new_set_id} is taken")));
        }
        self.zones.entry(zone.to_string()).or_insert_with(|| Zone {
            name: zone.to_string(),
            available: true,
            data_nodeset_selector: NODESET_SELECTOR_DEFAULT.into(),
            meta_nodeset_selector: NODESET_SELECTOR_DEFAULT.into(),
            data_node_selector: NODE_SELECTOR_DEFAULT.into(),
            meta_node_selector: NODE_SELECTOR_DEFAULT.into(),
            data_media_type: if role == NodeRole::Data {
                media_type
            } else {
                0
            },
        });
        let set_id = match existing {
            Some(id) => id,
            None => {
                self.node_sets.insert(
                    new_set_id,
                    NodeSet {
                        id: new_set_id,
                        zone: zone.to_string(),
                        capacity: self.settings.node_set_cap,
                        data_node_selector: NODE_SELECTOR_DEFAULT.into(),
                        meta_node_selector: NODE_SELECTOR_DEFAULT.into(),
                    },
                );
                new_set_id
            }
        };
        let counts = self.set_counts.entry(set_id).or_default();
        match role {
            NodeRole::Data => counts.0 += 1,
            NodeRole::Meta => counts.1 += 1,
        }
        Ok(set_id)
    }

    fn move_node(
        &mut self,
        role: NodeRole,
        addr: &str,
        zone: &str,
        new_set_id: u64,
        now_ms: u64,
    ) -> CubefsOutcome {
        let zone = if zone.is_empty() { ZONE_DEFAULT } else { zone };
        let Some(node) = self.node(role, addr) else {
            let code = match role {
                NodeRole::Data => CODE_DATA_NODE_NOT_EXISTS,
                NodeRole::Meta => CODE_META_NODE_NOT_EXISTS,
            };
            return refuse(code, format!("{} node {addr} not exists", role.name()));
        };
        let (id, old_set, media_type) = (node.id, node.node_set, node.media_type);
        if node.zone == zone {
            return CubefsOutcome::Node { id, created: false };
        }
        let set_id = match self.place(role, zone, media_type, new_set_id) {
            Ok(s) => s,
            Err(refused) => return refused,
        };
        if let Some(c) = self.set_counts.get_mut(&old_set) {
            match role {
                NodeRole::Data => c.0 = c.0.saturating_sub(1),
                NodeRole::Meta => c.1 = c.1.saturating_sub(1),
            }
            // The counts are derived: an empty set has no entry, as after a restore.
            if *c == (0, 0) {
                self.set_counts.remove(&old_set);
            }
        }
        self.touch(now_ms);
        if let Some(n) = self.nodes.get_mut(&(role, addr.to_string())) {
            n.zone = zone.to_string();
            n.node_set = set_id;
        }
        CubefsOutcome::Node { id, created: false }
    }

    /// The zone's set with the most free slots for `role` (lowest id on a tie), if any has one.
    fn set_with_most_free_slots(&self, zone: &str, role: NodeRole) -> Option<u64> {
        self.node_sets
            .values()
            .filter(|s| s.zone == zone)
            .filter_map(|s| {
                let (d, m) = self.set_counts(s.id);
                let used = if role == NodeRole::Data { d } else { m };
                let free = s.capacity.saturating_sub(used);
                (free > 0).then_some((free, std::cmp::Reverse(s.id)))
            })
            .max()
            .map(|(_, std::cmp::Reverse(id))| id)
    }

    fn registry_data(&self) -> SnapshotData {
        SnapshotData {
            settings: self.settings.clone(),
            zones: self.zones.values().cloned().collect(),
            node_sets: self.node_sets.values().cloned().collect(),
            nodes: self.nodes.values().cloned().collect(),
        }
    }

    /// The section of [`SECTION_VERSION`].
    pub fn snapshot(&self) -> Vec<u8> {
        codec::encode(&SnapshotDataV3 {
            v2: SnapshotDataV2 {
                registry: self.registry_data(),
                vols: self.vt.vols.values().cloned().collect(),
                dps: self.vt.dps.values().cloned().collect(),
                mps: self.vt.mps.values().cloned().collect(),
                users: self.vt.users.values().cloned().collect(),
                decommissioning: self.vt.decommissioning.iter().cloned().collect(),
            },
            creating: self
                .vt
                .creating
                .iter()
                .map(|(r, i)| (r.clone(), *i))
                .collect(),
            deleting: self.vt.deleting.iter().cloned().collect(),
        })
    }

    /// Restores a section of any version.
    pub fn restore_version(version: u16, bytes: &[u8]) -> Result<Self, String> {
        match version {
            1 => Self::restore_v1(bytes),
            2 => Self::restore_v2(bytes),
            3 => Self::restore(bytes),
            v => Err(format!("cubefs section version {v} is unknown")),
        }
    }

    /// Rebuilds the table from [`CubefsState::snapshot`] bytes (version 3), validating them.
    pub fn restore(bytes: &[u8]) -> Result<Self, String> {
        let data = codec::decode::<SnapshotDataV3>(bytes).map_err(|e: CodecError| e.to_string())?;
        let mut s = Self::from_v2(data.v2)?;
        let n = data.creating.len() + data.deleting.len();
        if n > volumes::REPLICA_MARKS_MAX {
            return Err(format!("{n} replica marks is over the limit"));
        }
        for (r, i) in data.creating {
            if s.vt.creating.insert(r, i).is_some() {
                return Err("a creation intent appears twice".into());
            }
        }
        for r in data.deleting {
            if !s.vt.deleting.insert(r) {
                return Err("a pending delete appears twice".into());
            }
        }
        Ok(s)
    }

    /// A version 2 section: no replica marks.
    pub fn restore_v2(bytes: &[u8]) -> Result<Self, String> {
        let data = codec::decode::<SnapshotDataV2>(bytes).map_err(|e: CodecError| e.to_string())?;
        Self::from_v2(data)
    }

    fn from_v2(data: SnapshotDataV2) -> Result<Self, String> {
        let mut s = Self::restore_registry(data.registry)?;
        for v in data.vols {
            if s.vt.vols.insert(v.name.clone(), v).is_some() {
                return Err("a volume appears twice".into());
            }
        }
        for d in data.dps {
            if s.vt.dps.insert(d.id, d).is_some() {
                return Err("a data partition appears twice".into());
            }
        }
        for m in data.mps {
            if s.vt.mps.insert(m.id, m).is_some() {
                return Err("a meta partition appears twice".into());
            }
        }
        for u in data.users {
            if s.vt.users.insert(u.id.clone(), u).is_some() {
                return Err("a user appears twice".into());
            }
        }
        s.vt.decommissioning = data.decommissioning.into_iter().collect();
        s.check_vol_tables()?;
        Ok(s)
    }

    /// A version 1 section: the registry alone.
    pub fn restore_v1(bytes: &[u8]) -> Result<Self, String> {
        let data = codec::decode::<SnapshotData>(bytes).map_err(|e: CodecError| e.to_string())?;
        Self::restore_registry(data)
    }

    /// Rebuilds the registry, validating it (every node's zone and set exist, nothing
    /// appears twice).
    fn restore_registry(data: SnapshotData) -> Result<Self, String> {
        let mut s = CubefsState {
            settings: data.settings,
            ..Default::default()
        };
        for z in data.zones {
            if s.zones.insert(z.name.clone(), z).is_some() {
                return Err("a zone appears twice".into());
            }
        }
        for set in data.node_sets {
            if !s.zones.contains_key(&set.zone) {
                return Err(format!("node set {} names unknown zone", set.id));
            }
            if s.node_sets.insert(set.id, set).is_some() {
                return Err("a node set appears twice".into());
            }
        }
        for n in data.nodes {
            let Some(set) = s.node_sets.get(&n.node_set) else {
                return Err(format!("node {} names unknown node set", n.addr));
            };
            if set.zone != n.zone {
                return Err(format!("node {} is outside its set's zone", n.addr));
            }
            let counts = s.set_counts.entry(n.node_set).or_default();
            match n.role {
                NodeRole::Data => counts.0 += 1,
                NodeRole::Meta => counts.1 += 1,
            }
            if s.nodes.insert((n.role, n.addr.clone()), n).is_some() {
                return Err("a node appears twice".into());
            }
        }
        // Apply hands every id out once (nodes and sets share the allocator's counter).
        let mut ids = std::collections::HashSet::new();
        let all = s
            .nodes
            .values()
            .map(|n| n.id)
            .chain(s.node_sets.keys().copied());
        for id in all {
            if !ids.insert(id) {
                return Err(format!("id {id} is used twice"));
            }
        }
        Ok(s)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests;
