//! The Milvus tables (root coordinator metadata, reference §2.4): databases, collections with
//! their schema and fields, partitions, aliases, index metadata, load state and properties.
//!
//! Placement: a database and everything in it live on `owner_shard(db name)`, so DDL in
//! different databases runs on different shards (cores) in parallel, and every check that
//! involves one database (existence, idempotency, per-database limits, aliases) is exact
//! because it runs inside one apply. The `default` database (ID 1) exists in every shard's
//! table from the start; only its owner shard's copy is ever addressed.
//!
//! Every DDL is one command carrying its TSO timestamp and the IDs it creates, chosen before
//! proposing. Apply refuses a command whose timestamp is not above the shard's last DDL
//! timestamp (`Outcome::Stale`; the proposer retries with a fresh one), so a shard's DDLs
//! apply in strictly increasing timestamp order whatever order their proposals raced in.
//! One DDL is one raft entry, applied atomically: the intermediate states Milvus keeps in
//! etcd (`Creating`, `Dropping`) are never observable, so objects are stored `Created` and
//! removed when dropped.

use std::collections::BTreeMap;

pub mod history;
pub mod signal;

use serde::{Deserialize, Serialize};

use crate::codec;

pub mod coord;

/// The default database: its name and its fixed ID (Milvus: `util.DefaultDBID`).
pub const DEFAULT_DB: &str = "default";
pub const DEFAULT_DB_ID: u64 = 1;
pub const DEFAULT_PARTITION: &str = "_default";
/// `quotaAndLimits.limits.maxCollectionNumPerDB` (a database property overrides it).
pub const COLLECTIONS_PER_DB_MAX: usize = 65_536;
/// `rootCoord.maxPartitionNum`.
pub const PARTITIONS_PER_COLLECTION_MAX: usize = 1024;
/// `proxy.maxFieldNum`: user fields per collection (checked again when a field is added).
pub const FIELDS_PER_COLLECTION_MAX: usize = 64;
/// The database property that overrides the per-database collection cap.
pub const DB_MAX_COLLECTIONS_PROPERTY: &str = "database.max.collections";
/// DDL events each shard keeps for the DD channel by default (oldest dropped first; the
/// node's `milvus_dd_history_entries_max`, see `history`).
pub const DD_EVENTS_MAX: usize = history::DD_HISTORY_ENTRIES_MAX_DEFAULT;

/// Milvus error codes used by apply (`pkg/util/merr`).
pub mod code {
    pub const COLLECTION_NOT_FOUND: i32 = 100;
    pub const COLLECTIONS_EXCEEDED: i32 = 102;
    pub const PARTITION_NOT_FOUND: i32 = 200;
    pub const INDEX_NOT_FOUND: i32 = 700;
    pub const INDEX_DUPLICATE: i32 = 702;
    pub const DATABASE_NOT_FOUND: i32 = 800;
    pub const INVALID_PARAMETER: i32 = 1100;
    pub const ALIAS_NOT_FOUND: i32 = 1600;
    pub const ALIAS_COLLECTION_CONFLICT: i32 = 1601;
    pub const ALIAS_EXISTS: i32 = 1602;
    pub const FIELD_NOT_FOUND: i32 = 1700;
}

/// Key/value pairs in the order the client gave them (Milvus keeps lists, not maps).
pub type Kvs = Vec<(String, String)>;

macro_rules! stored {
    ($($item:item)*) => {$(
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize,
            rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
        $item
    )*};
}

stored! {
    /// One field of a schema (`schemapb.FieldSchema`).
    pub struct Field {
        pub id: i64,
        pub name: String,
        /// The proto enum name (`Int64`, `FloatVector`, ...).
        pub data_type: String,
        /// For `Array`: the element type's enum name; otherwise empty.
        pub element_type: String,
        pub primary: bool,
        pub partition_key: bool,
        pub clustering_key: bool,
        pub auto_id: bool,
        pub nullable: bool,
        /// The hidden `$meta` field of dynamic collections.
        pub dynamic: bool,
        pub description: String,
        /// The default value as JSON text.
        pub default_value: Option<String>,
        pub type_params: Kvs,
        pub function_output: bool,
    }

    /// What a client asked for when creating a collection: two creates with equal specs are
    /// the same request (idempotency, reference §1.6).
    pub struct CollectionSpec {
        pub name: String,
        pub description: String,
        /// User fields, IDs from 100 in declaration order.
        pub fields: Vec<Field>,
        pub enable_dynamic: bool,
        pub shards_num: u32,
        /// Partitions created for a partition key (`_default_0..N-1`); 0 without one.
        pub partition_key_partitions: u32,
        pub consistency_level: String,
        pub properties: Kvs,
    }

    /// An index as a client describes it (`indexParams[]`).
    pub struct IndexSpec {
        pub name: String,
        pub field_name: String,
        pub index_type: String,
        pub metric_type: String,
        pub params: Kvs,
    }

    pub struct Index {
        pub id: u64,
        pub field_id: i64,
        pub spec: IndexSpec,
        pub properties: Kvs,
        pub created_ts: u64,
    }

    pub struct Partition {
        pub id: u64,
        pub name: String,
        pub created_ts: u64,
        pub loaded: bool,
    }

    pub struct Collection {
        pub id: u64,
        pub spec: CollectionSpec,
        /// `RowID`(0), `Timestamp`(1), and `$meta` when dynamic fields are on.
        pub system_fields: Vec<Field>,
        pub partitions: Vec<Partition>,
        pub indexes: Vec<Index>,
        /// Whether a load was requested (the state is only recorded: mast loads nothing).
        pub loaded: bool,
        pub properties: Kvs,
        pub created_ts: u64,
        pub updated_ts: u64,
    }

    pub struct Database {
        pub id: u64,
        pub name: String,
        pub properties: Kvs,
        pub created_ts: u64,
        pub collections: BTreeMap<String, Collection>,
        /// Alias → collection ID.
        pub aliases: BTreeMap<String, u64>,
    }

    /// One DDL as the DD channel streams it (design §10.2's messages).
    pub struct DdEvent {
        pub ts: u64,
        /// `CreateCollection`, `DropCollection`, `CreatePartition`, ... (message type names).
        pub kind: String,
        pub db_name: String,
        pub db_id: u64,
        pub collection_name: String,
        pub collection_id: u64,
        pub partition_name: String,
        pub partition_id: u64,
        pub field_id: i64,
        pub index_name: String,
        pub params: Kvs,
    }

    /// A DDL, with everything chosen at propose time (timestamp, IDs).
    pub enum Command {
        CreateDatabase { ts: u64, name: String, id: u64, properties: Kvs },
        DropDatabase { ts: u64, name: String },
        AlterDatabase { ts: u64, name: String, set: Kvs, delete: Vec<String> },
        CreateCollection {
            ts: u64,
            db: String,
            id: u64,
            /// One per partition to create (`_default`, or the partition-key partitions).
            partition_ids: Vec<u64>,
            spec: CollectionSpec,
            indexes: Vec<IndexSpec>,
            index_ids: Vec<u64>,
            load: bool,
        },
        DropCollection { ts: u64, db: String, name: String },
        RenameCollection { ts: u64, db: String, name: String, new_name: String },
        AlterCollection { ts: u64, db: String, name: String, set: Kvs, delete: Vec<String> },
        CreatePartition { ts: u64, db: String, collection: String, name: String, id: u64 },
        DropPartition { ts: u64, db: String, collection: String, name: String },
        CreateIndexes {
            ts: u64,
            db: String,
            collection: String,
            indexes: Vec<IndexSpec>,
            ids: Vec<u64>,
        },
        DropIndex { ts: u64, db: String, collection: String, name: String },
        AlterIndex {
            ts: u64,
            db: String,
            collection: String,
            name: String,
            set: Kvs,
            delete: Vec<String>,
        },
        /// `alter` moves an existing alias; otherwise the alias must be new (or already point
        /// at this collection).
        CreateAlias { ts: u64, db: String, alias: String, collection: String, alter: bool },
        DropAlias { ts: u64, db: String, alias: String },
        /// Records a load/release request for the whole collection (`partitions` empty) or
        /// for some partitions.
        SetLoad { ts: u64, db: String, collection: String, partitions: Vec<String>, load: bool },
        /// A time tick of the DD channel: no DDL at or below `ts` applies on this shard after
        /// it (proposed by DD watchers, `crate::milvus::dd`).
        Tick { ts: u64 },
        /// Sessions and durable time-tick barriers (issue #12, `coord`), applied by the
        /// meta table to its `milvus_coord` table on group 0; carries no DDL timestamp.
        Coord(Box<coord::CoordCommand>),
        /// `collections/fields/add`: a new (nullable, scalar) field; apply gives it the next
        /// field ID.
        AddField { ts: u64, db: String, collection: String, field: Field },
        /// `collections/fields/alter_properties`: sets type params of a field.
        AlterField { ts: u64, db: String, collection: String, name: String, set: Kvs },
    }
}

/// What applying a DDL did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// The request was already in effect (an idempotent repeat); nothing changed.
    Unchanged,
    /// The command's timestamp is not above the shard's last DDL's: refused so DDLs apply in
    /// timestamp order; the proposer retries with a new timestamp.
    Stale {
        last_ts: u64,
    },
    /// Refused with a Milvus error code and message; nothing changed.
    Error {
        code: i32,
        message: String,
    },
}

fn err(code: i32, message: impl Into<String>) -> Outcome {
    Outcome::Error {
        code,
        message: message.into(),
    }
}

pub fn db_not_found(db: &str) -> Outcome {
    err(
        code::DATABASE_NOT_FOUND,
        format!("database not found[database={db}]"),
    )
}

pub fn collection_not_found(db: &str, name: &str) -> Outcome {
    err(
        code::COLLECTION_NOT_FOUND,
        format!("collection not found[database={db}][collection={name}]"),
    )
}

fn invalid(message: impl std::fmt::Display) -> Outcome {
    err(
        code::INVALID_PARAMETER,
        format!("{message}: invalid parameter"),
    )
}

fn set_kvs(target: &mut Kvs, set: &Kvs, delete: &[String]) {
    for (k, v) in set {
        match target.iter_mut().find(|(tk, _)| tk == k) {
            Some(slot) => slot.1 = v.clone(),
            None => target.push((k.clone(), v.clone())),
        }
    }
    target.retain(|(k, _)| !delete.contains(k));
}

/// One shard's Milvus tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MilvusState {
    pub databases: BTreeMap<String, Database>,
    /// The last applied DDL's timestamp: a command must carry a larger one.
    pub last_ts: u64,
    /// The most recent DDL events, oldest first (within `history_limits`).
    pub events: std::collections::VecDeque<DdEvent>,
    /// Timestamp of the newest event dropped from `events` (0: none dropped yet).
    pub events_dropped_ts: u64,
    /// This node's bounds on `events` (configuration, not replicated: see `history`).
    pub history_limits: history::HistoryLimits,
}

stored! {
    struct SnapshotData {
        databases: Vec<Database>,
        last_ts: u64,
        events: Vec<DdEvent>,
        events_dropped_ts: u64,
    }
}

impl Default for MilvusState {
    fn default() -> Self {
        let mut databases = BTreeMap::new();
        databases.insert(DEFAULT_DB.to_string(), default_database());
        MilvusState {
            databases,
            last_ts: 0,
            events: Default::default(),
            events_dropped_ts: 0,
            history_limits: history::configured(),
        }
    }
}

fn default_database() -> Database {
    Database {
        id: DEFAULT_DB_ID,
        name: DEFAULT_DB.into(),
        properties: Vec::new(),
        created_ts: 0,
        collections: BTreeMap::new(),
        aliases: BTreeMap::new(),
    }
}

/// Collection counts this shard holds, for the cluster-wide limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub databases_non_default: usize,
    pub collections: usize,
    /// Σ shards × partitions (`rootCoord.maxGeneralCapacity`).
    pub capacity: u64,
}

impl MilvusState {
    pub fn db(&self, name: &str) -> Option<&Database> {
        self.databases.get(name)
    }

    /// Cheap measure of the state's size, for snapshot scheduling.
    pub fn cost(&self) -> u64 {
        self.databases
            .values()
            .map(|d| 1 + d.collections.len() as u64)
            .sum::<u64>()
            + self.events.len() as u64
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for d in self.databases.values() {
            if d.name != DEFAULT_DB {
                t.databases_non_default += 1;
            }
            for c in d.collections.values() {
                t.collections += 1;
                t.capacity += u64::from(c.spec.shards_num) * c.partitions.len() as u64;
            }
        }
        t
    }

    /// Finds a collection by ID in this shard's tables: (database, collection).
    pub fn collection_by_id(&self, id: u64) -> Option<(&Database, &Collection)> {
        self.databases
            .values()
            .find_map(|d| d.collections.values().find(|c| c.id == id).map(|c| (d, c)))
    }

    /// Finds a partition by ID: (database, collection, partition).
    pub fn partition_by_id(&self, id: u64) -> Option<(&Database, &Collection, &Partition)> {
        self.databases.values().find_map(|d| {
            d.collections
                .values()
                .find_map(|c| c.partitions.iter().find(|p| p.id == id).map(|p| (d, c, p)))
        })
    }

    /// Events with a timestamp above `since`, oldest first; when events above `since` were
    /// already dropped from the bounded history, the smallest `since` still served.
    pub fn events_since(&self, since: u64) -> Result<Vec<DdEvent>, u64> {
        if since < self.events_dropped_ts {
            return Err(self.events_dropped_ts);
        }
        Ok(self
            .events
            .iter()
            .filter(|e| e.ts > since)
            .cloned()
            .collect())
    }

    fn record(&mut self, event: DdEvent) {
        self.events.push_back(event);
    }

    /// Drops the events beyond the count bound, and those past the time bound as of `now_ts`
    /// (the applying command's timestamp, so replicas agree).
    fn trim_history(&mut self, now_ts: u64) {
        let limits = self.history_limits;
        while let Some(old) = self.events.front() {
            if self.events.len() <= limits.entries_max && !limits.expired(old.ts, now_ts) {
                break;
            }
            self.events_dropped_ts = old.ts;
            self.events.pop_front();
        }
    }

    pub fn apply(&mut self, cmd: &Command) -> Outcome {
        let ts = cmd.ts();
        if ts <= self.last_ts {
            return Outcome::Stale {
                last_ts: self.last_ts,
            };
        }
        let mut events = Vec::new();
        let outcome = self.apply_at(ts, cmd, &mut events);
        // A refused command does not advance the clock: it changed nothing, and advancing
        // would only refuse more proposals in flight.
        if matches!(outcome, Outcome::Done) {
            self.last_ts = ts;
            // Tells this node's DD watchers and tick loop to look again (no state effect).
            if !events.is_empty() {
                signal::DDL_APPLIED.raise();
            }
            for e in events {
                self.record(e);
            }
            self.trim_history(ts);
            signal::CLOCK_ADVANCED.raise();
        }
        outcome
    }

    fn apply_at(&mut self, ts: u64, cmd: &Command, events: &mut Vec<DdEvent>) -> Outcome {
        let event = |kind: &str, db: &Database| DdEvent {
            ts,
            kind: kind.into(),
            db_name: db.name.clone(),
            db_id: db.id,
            collection_name: String::new(),
            collection_id: 0,
            partition_name: String::new(),
            partition_id: 0,
            field_id: 0,
            index_name: String::new(),
            params: Vec::new(),
        };
        match cmd {
            Command::Tick { .. } => Outcome::Done,
            Command::Coord(_) => invalid("a coordinator command reached the DDL tables"),
            Command::CreateDatabase {
                name,
                id,
                properties,
                ..
            } => {
                if self.databases.contains_key(name) {
                    return invalid(format!("database already exist: {name}"));
                }
                let db = Database {
                    id: *id,
                    name: name.clone(),
                    properties: properties.clone(),
                    created_ts: ts,
                    collections: BTreeMap::new(),
                    aliases: BTreeMap::new(),
                };
                events.push(event("CreateDatabase", &db));
                self.databases.insert(name.clone(), db);
                Outcome::Done
            }
            Command::DropDatabase { name, .. } => {
                if name == DEFAULT_DB {
                    return invalid("can not drop default database");
                }
                let Some(db) = self.databases.get(name) else {
                    return Outcome::Unchanged;
                };
                if !db.collections.is_empty() {
                    return invalid(format!(
                        "database:{name} not empty, must drop all collections before drop database"
                    ));
                }
                events.push(event("DropDatabase", db));
                self.databases.remove(name);
                Outcome::Done
            }
            Command::AlterDatabase {
                name, set, delete, ..
            } => {
                let Some(db) = self.databases.get_mut(name) else {
                    return db_not_found(name);
                };
                set_kvs(&mut db.properties, set, delete);
                events.push(event("AlterDatabase", db));
                Outcome::Done
            }
            Command::CreateCollection {
                db: db_name,
                id,
                partition_ids,
                spec,
                indexes,
                index_ids,
                load,
                ..
            } => {
                let Some(db) = self.databases.get_mut(db_name) else {
                    return db_not_found(db_name);
                };
                if let Some(existing) = db.collections.get(&spec.name) {
                    if existing.spec == *spec {
                        return Outcome::Unchanged;
                    }
                    return invalid(format!(
                        "create duplicate collection with different parameters, collection: {}",
                        spec.name
                    ));
                }
                if db.aliases.contains_key(&spec.name) {
                    return err(
                        code::ALIAS_COLLECTION_CONFLICT,
                        format!(
                            "collection name [{}] conflicts with an existing alias, please choose a unique name: alias and collection name conflict",
                            spec.name
                        ),
                    );
                }
                let cap = db
                    .properties
                    .iter()
                    .find(|(k, _)| k == DB_MAX_COLLECTIONS_PROPERTY)
                    .and_then(|(_, v)| v.parse::<usize>().ok())
                    .unwrap_or(COLLECTIONS_PER_DB_MAX);
                if db.collections.len() >= cap {
                    return err(
                        code::COLLECTIONS_EXCEEDED,
                        format!("exceeded the limit number of collections[dbName={db_name}][limit={cap}]"),
                    );
                }
                let wanted = if spec.partition_key_partitions > 0 {
                    spec.partition_key_partitions as usize
                } else {
                    1
                };
                if partition_ids.len() != wanted || index_ids.len() != indexes.len() {
                    return invalid("command carries the wrong number of IDs");
                }
                let partitions = partition_ids
                    .iter()
                    .enumerate()
                    .map(|(i, pid)| Partition {
                        id: *pid,
                        name: if spec.partition_key_partitions > 0 {
                            format!("{DEFAULT_PARTITION}_{i}")
                        } else {
                            DEFAULT_PARTITION.to_string()
                        },
                        created_ts: ts,
                        loaded: *load,
                    })
                    .collect();
                let mut c = Collection {
                    id: *id,
                    spec: spec.clone(),
                    system_fields: system_fields(spec),
                    partitions,
                    indexes: Vec::new(),
                    loaded: *load,
                    properties: spec.properties.clone(),
                    created_ts: ts,
                    updated_ts: ts,
                };
                let mut index_events = Vec::new();
                for (ix, iid) in indexes.iter().zip(index_ids) {
                    match add_index(&mut c, ix, *iid, ts) {
                        Ok(Some(field_id)) => index_events.push((field_id, ix)),
                        Ok(None) => {}
                        Err(e) => return e,
                    }
                }
                let mut e = event("CreateCollection", db);
                e.collection_name = c.spec.name.clone();
                e.collection_id = c.id;
                e.params = vec![("schema".into(), schema_summary(&c.spec))];
                events.push(e);
                for p in &c.partitions {
                    let mut e = event("CreatePartition", db);
                    e.collection_name = c.spec.name.clone();
                    e.collection_id = c.id;
                    e.partition_name = p.name.clone();
                    e.partition_id = p.id;
                    events.push(e);
                }
                for (field_id, ix) in index_events {
                    events.push(index_event(event("CreateIndex", db), &c, field_id, ix));
                }
                db.collections.insert(spec.name.clone(), c);
                Outcome::Done
            }
            Command::DropCollection {
                db: db_name, name, ..
            } => {
                let Some(db) = self.databases.get_mut(db_name) else {
                    return db_not_found(db_name);
                };
                let Some(c) = db.collections.get(name) else {
                    if db.aliases.contains_key(name) {
                        return invalid(format!("cannot drop the collection via alias = {name}"));
                    }
                    return Outcome::Unchanged;
                };
                let mut e = event("DropCollection", db);
                e.collection_name = name.clone();
                e.collection_id = c.id;
                let cid = c.id;
                events.push(e);
                db.aliases.retain(|_, target| *target != cid);
                db.collections.remove(name);
                Outcome::Done
            }
            Command::RenameCollection {
                db: db_name,
                name,
                new_name,
                ..
            } => {
                let Some(db) = self.databases.get_mut(db_name) else {
                    return db_not_found(db_name);
                };
                if !db.collections.contains_key(name) {
                    return collection_not_found(db_name, name);
                }
                if db.collections.contains_key(new_name) {
                    return invalid(format!("duplicated new collection name {new_name} in database {db_name} with other collection name or alias"));
                }
                if db.aliases.contains_key(new_name) {
                    return err(
                        code::ALIAS_COLLECTION_CONFLICT,
                        format!("cannot rename collection to an existing alias: {new_name}: alias and collection name conflict"),
                    );
                }
                let Some(mut c) = db.collections.remove(name) else {
                    return collection_not_found(db_name, name);
                };
                c.spec.name = new_name.clone();
                c.updated_ts = ts;
                let mut e = event("AlterCollection", db);
                e.collection_name = new_name.clone();
                e.collection_id = c.id;
                e.params = vec![("renamedFrom".into(), name.clone())];
                events.push(e);
                db.collections.insert(new_name.clone(), c);
                Outcome::Done
            }
            Command::AlterCollection {
                db: db_name,
                name,
                set,
                delete,
                ..
            } => {
                let Some(db) = self.databases.get_mut(db_name) else {
                    return db_not_found(db_name);
                };
                let Some(c) = resolve_mut(db, name) else {
                    return collection_not_found(db_name, name);
                };
                set_kvs(&mut c.properties, set, delete);
                c.updated_ts = ts;
                let (cname, cid) = (c.spec.name.clone(), c.id);
                let mut e = event("AlterCollection", db);
                e.collection_name = cname;
                e.collection_id = cid;
                events.push(e);
                Outcome::Done
            }
            Command::AddField {
                db: db_name,
                collection,
                field,
                ..
            } => {
                let Some(db) = self.databases.get_mut(db_name) else {
                    return db_not_found(db_name);
                };
                let Some(c) = resolve_mut(db, collection) else {
                    return collection_not_found(db_name, collection);
                };
                if c.spec.fields.iter().any(|f| f.name == field.name)
                    || c.system_fields.iter().any(|f| f.name == field.name)
                {
                    return invalid(format!("duplicate field name: {}", field.name));
                }
                if c.spec.fields.len() >= FIELDS_PER_COLLECTION_MAX {
                    return invalid(format!(
                        "maximum field's number should be limited to {FIELDS_PER_COLLECTION_MAX}"
                    ));
                }
                if field.clustering_key && c.spec.fields.iter().any(|f| f.clustering_key) {
                    return invalid("there are more than one clustering key");
                }
                let mut f = field.clone();
                f.id = c.spec.fields.iter().map(|f| f.id).max().unwrap_or(99) + 1;
                let fid = f.id;
                let params = vec![
                    ("fieldName".to_string(), f.name.clone()),
                    ("dataType".to_string(), f.data_type.clone()),
                ];
                c.spec.fields.push(f);
                c.updated_ts = ts;
                let (cname, cid) = (c.spec.name.clone(), c.id);
                let mut e = event("AddCollectionField", db);
                e.collection_name = cname;
                e.collection_id = cid;
                e.field_id = fid;
                e.params = params;
                events.push(e);
                Outcome::Done
            }
            Command::AlterField {
                db: db_name,
                collection,
                name,
                set,
                ..
            } => {
                let Some(db) = self.databases.get_mut(db_name) else {
                    return db_not_found(db_name);
                };
                let Some(c) = resolve_mut(db, collection) else {
                    return collection_not_found(db_name, collection);
                };
                let Some(f) = c.spec.fields.iter_mut().find(|f| f.name == *name) else {
                    return err(
                        code::FIELD_NOT_FOUND,
                        format!("field not found[field={name}]"),
                    );
                };
                for (k, _) in set {
                    let applies = match k.as_str() {
                        "max_length" => {
                            f.data_type == "VarChar"
                                || (f.data_type == "Array" && f.element_type == "VarChar")
                        }
                        "max_capacity" => f.data_type == "Array",
                        _ => true,
                    };
                    if !applies {
                        return invalid(format!(
                            "{k} is not a type param of field {name} of type {}",
                            f.data_type
                        ));
                    }
                }
                set_kvs(&mut f.type_params, set, &[]);
                let fid = f.id;
                c.updated_ts = ts;
                let (cname, cid) = (c.spec.name.clone(), c.id);
                let mut e = event("AlterCollectionField", db);
                e.collection_name = cname;
                e.collection_id = cid;
                e.field_id = fid;
                e.params = set.clone();
                events.push(e);
                Outcome::Done
            }
            Command::CreatePartition {
                db: db_name,
                collection,
                name,
                id,
                ..
            } => {
                let Some(db) = self.databases.get_mut(db_name) else {
                    return db_not_found(db_name);
                };
                let Some(c) = resolve_mut(db, collection) else {
                    return collection_not_found(db_name, collection);
                };
                if c.spec.partition_key_partitions > 0 {
                    return invalid("disable create partition if partition key mode is used");
                }
                if c.partitions.iter().any(|p| p.name == *name) {
                    return Outcome::Unchanged;
                }
                if c.partitions.len() >= PARTITIONS_PER_COLLECTION_MAX {
                    return invalid(format!(
                        "partition number ({}) exceeds max configuration ({PARTITIONS_PER_COLLECTION_MAX}), collection: {}",
                        c.partitions.len(),
                        c.spec.name
                    ));
                }
                c.partitions.push(Partition {
                    id: *id,
                    name: name.clone(),
                    created_ts: ts,
                    loaded: false,
                });
                c.updated_ts = ts;
                let (cname, cid) = (c.spec.name.clone(), c.id);
                let mut e = event("CreatePartition", db);
                e.collection_name = cname;
                e.collection_id = cid;
                e.partition_name = name.clone();
                e.partition_id = *id;
                events.push(e);
                Outcome::Done
            }
            Command::DropPartition {
                db: db_name,
                collection,
                name,
                ..
            } => {
                let Some(db) = self.databases.get_mut(db_name) else {
                    return db_not_found(db_name);
                };
                let Some(c) = resolve_mut(db, collection) else {
                    return collection_not_found(db_name, collection);
                };
                if c.spec.partition_key_partitions > 0 {
                    return invalid("disable drop partition if partition key mode is used");
                }
                if name == DEFAULT_PARTITION {
                    return invalid("default partition cannot be deleted");
                }
                let Some(pos) = c.partitions.iter().position(|p| p.name == *name) else {
                    return Outcome::Unchanged;
                };
                if c.partitions[pos].loaded {
                    return invalid(format!(
                        "partition cannot be dropped, partition is loaded, please release it first[partition={name}]"
                    ));
                }
                let p = c.partitions.remove(pos);
                c.updated_ts = ts;
                let (cname, cid) = (c.spec.name.clone(), c.id);
                let mut e = event("DropPartition", db);
                e.collection_name = cname;
                e.collection_id = cid;
                e.partition_name = p.name;
                e.partition_id = p.id;
                events.push(e);
                Outcome::Done
            }
            Command::CreateIndexes {
                db: db_name,
                collection,
                indexes,
                ids,
                ..
            } => {
                let Some(db) = self.databases.get_mut(db_name) else {
                    return db_not_found(db_name);
                };
                let Some(c) = resolve_mut(db, collection) else {
                    return collection_not_found(db_name, collection);
                };
                if ids.len() != indexes.len() {
                    return invalid("command carries the wrong number of IDs");
                }
                // All or nothing: check on a copy.
                let mut copy = c.clone();
                let mut created = Vec::new();
                for (ix, id) in indexes.iter().zip(ids) {
                    match add_index(&mut copy, ix, *id, ts) {
                        Ok(Some(field_id)) => created.push((field_id, ix)),
                        Ok(None) => {}
                        Err(e) => return e,
                    }
                }
                if created.is_empty() {
                    return Outcome::Unchanged;
                }
                copy.updated_ts = ts;
                *c = copy;
                let c = c.clone();
                for (field_id, ix) in created {
                    events.push(index_event(event("CreateIndex", db), &c, field_id, ix));
                }
                Outcome::Done
            }
            Command::DropIndex {
                db: db_name,
                collection,
                name,
                ..
            } => {
                let Some(db) = self.databases.get_mut(db_name) else {
                    return db_not_found(db_name);
                };
                let Some(c) = resolve_mut(db, collection) else {
                    return collection_not_found(db_name, collection);
                };
                let Some(pos) = c.indexes.iter().position(|i| i.spec.name == *name) else {
                    return err(
                        code::INDEX_NOT_FOUND,
                        format!("index not found[indexName={name}]"),
                    );
                };
                if c.loaded {
                    return invalid(format!(
                        "index cannot be dropped, collection is loaded, please release it first[indexName={name}]"
                    ));
                }
                let ix = c.indexes.remove(pos);
                c.updated_ts = ts;
                let c = c.clone();
                events.push(index_event(
                    event("DropIndex", db),
                    &c,
                    ix.field_id,
                    &ix.spec,
                ));
                Outcome::Done
            }
            Command::AlterIndex {
                db: db_name,
                collection,
                name,
                set,
                delete,
                ..
            } => {
                let Some(db) = self.databases.get_mut(db_name) else {
                    return db_not_found(db_name);
                };
                let Some(c) = resolve_mut(db, collection) else {
                    return collection_not_found(db_name, collection);
                };
                let Some(ix) = c.indexes.iter_mut().find(|i| i.spec.name == *name) else {
                    return err(
                        code::INDEX_NOT_FOUND,
                        format!("index not found[indexName={name}]"),
                    );
                };
                set_kvs(&mut ix.properties, set, delete);
                let (field_id, spec) = (ix.field_id, ix.spec.clone());
                c.updated_ts = ts;
                let c = c.clone();
                let mut e = index_event(event("AlterIndex", db), &c, field_id, &spec);
                e.params = c
                    .indexes
                    .iter()
                    .find(|i| i.spec.name == *name)
                    .map(|i| i.properties.clone())
                    .unwrap_or_default();
                events.push(e);
                Outcome::Done
            }
            Command::CreateAlias {
                db: db_name,
                alias,
                collection,
                alter,
                ..
            } => {
                let Some(db) = self.databases.get_mut(db_name) else {
                    return db_not_found(db_name);
                };
                if db.collections.contains_key(alias) {
                    return err(
                        code::ALIAS_COLLECTION_CONFLICT,
                        format!("aliased name [{alias}] conflicts with an existing collection name: alias and collection name conflict"),
                    );
                }
                let Some(c) = db.collections.get(collection) else {
                    return collection_not_found(db_name, collection);
                };
                let target = c.id;
                match (db.aliases.get(alias), alter) {
                    (Some(&cur), _) if cur == target => return Outcome::Unchanged,
                    (Some(_), false) => {
                        return err(
                            code::ALIAS_EXISTS,
                            format!("alias already exist[database={db_name}][alias={alias}]"),
                        )
                    }
                    (None, true) => {
                        return err(
                            code::ALIAS_NOT_FOUND,
                            format!("alias not found[database={db_name}][alias={alias}]"),
                        )
                    }
                    _ => {}
                }
                db.aliases.insert(alias.clone(), target);
                let mut e = event("AlterAlias", db);
                e.collection_name = collection.clone();
                e.collection_id = target;
                e.params = vec![("alias".into(), alias.clone())];
                events.push(e);
                Outcome::Done
            }
            Command::DropAlias {
                db: db_name, alias, ..
            } => {
                let Some(db) = self.databases.get_mut(db_name) else {
                    return db_not_found(db_name);
                };
                let Some(target) = db.aliases.remove(alias) else {
                    return Outcome::Unchanged;
                };
                let mut e = event("DropAlias", db);
                e.collection_id = target;
                e.params = vec![("alias".into(), alias.clone())];
                events.push(e);
                Outcome::Done
            }
            Command::SetLoad {
                db: db_name,
                collection,
                partitions,
                load,
                ..
            } => {
                let Some(db) = self.databases.get_mut(db_name) else {
                    return db_not_found(db_name);
                };
                let Some(c) = resolve_mut(db, collection) else {
                    return collection_not_found(db_name, collection);
                };
                if let Some(missing) = partitions
                    .iter()
                    .find(|n| !c.partitions.iter().any(|p| &p.name == *n))
                {
                    return err(
                        code::PARTITION_NOT_FOUND,
                        format!("partition not found[partition={missing}]"),
                    );
                }
                if *load && c.indexes.is_empty() {
                    return err(
                        code::INDEX_NOT_FOUND,
                        format!(
                            "index not found[collection={}]: there is no index on the collection, please create index first",
                            c.spec.name
                        ),
                    );
                }
                let before = c.clone();
                for p in c.partitions.iter_mut() {
                    if partitions.is_empty() || partitions.contains(&p.name) {
                        p.loaded = *load;
                    }
                }
                c.loaded = c.partitions.iter().any(|p| p.loaded);
                if *c == before {
                    return Outcome::Unchanged;
                }
                let (cname, cid) = (c.spec.name.clone(), c.id);
                let mut e = event(
                    if *load {
                        "LoadCollection"
                    } else {
                        "ReleaseCollection"
                    },
                    db,
                );
                e.collection_name = cname;
                e.collection_id = cid;
                e.params = partitions
                    .iter()
                    .map(|p| ("partition".to_string(), p.clone()))
                    .collect();
                events.push(e);
                Outcome::Done
            }
        }
    }

    pub fn snapshot(&self) -> Vec<u8> {
        codec::encode(&SnapshotData {
            databases: self.databases.values().cloned().collect(),
            last_ts: self.last_ts,
            events: self.events.iter().cloned().collect(),
            events_dropped_ts: self.events_dropped_ts,
        })
    }

    pub fn restore(bytes: &[u8]) -> Result<Self, String> {
        let data =
            codec::decode::<SnapshotData>(bytes).map_err(|e| format!("milvus table: {e}"))?;
        let mut databases = BTreeMap::new();
        for d in data.databases {
            if databases.contains_key(&d.name) {
                return Err(format!("milvus table: database {:?} appears twice", d.name));
            }
            databases.insert(d.name.clone(), d);
        }
        if data.events.len() > history::DD_HISTORY_ENTRIES_LIMIT {
            return Err(format!(
                "milvus table: {} DD events, more than {}",
                data.events.len(),
                history::DD_HISTORY_ENTRIES_LIMIT
            ));
        }
        let mut state = MilvusState {
            databases,
            last_ts: data.last_ts,
            events: data.events.into(),
            events_dropped_ts: data.events_dropped_ts,
            history_limits: history::configured(),
        };
        // A snapshot from a node that keeps more history than this one.
        state.trim_history(state.last_ts);
        Ok(state)
    }
}

impl Command {
    pub fn ts(&self) -> u64 {
        match self {
            Command::CreateDatabase { ts, .. }
            | Command::DropDatabase { ts, .. }
            | Command::AlterDatabase { ts, .. }
            | Command::CreateCollection { ts, .. }
            | Command::DropCollection { ts, .. }
            | Command::RenameCollection { ts, .. }
            | Command::AlterCollection { ts, .. }
            | Command::CreatePartition { ts, .. }
            | Command::DropPartition { ts, .. }
            | Command::CreateIndexes { ts, .. }
            | Command::DropIndex { ts, .. }
            | Command::AlterIndex { ts, .. }
            | Command::CreateAlias { ts, .. }
            | Command::DropAlias { ts, .. }
            | Command::SetLoad { ts, .. }
            | Command::Tick { ts }
            | Command::AddField { ts, .. }
            | Command::AlterField { ts, .. } => *ts,
            Command::Coord(_) => 0,
        }
    }

    /// The same command with another timestamp (a retry after `Outcome::Stale`).
    pub fn with_ts(mut self, new: u64) -> Command {
        match &mut self {
            Command::CreateDatabase { ts, .. }
            | Command::DropDatabase { ts, .. }
            | Command::AlterDatabase { ts, .. }
            | Command::CreateCollection { ts, .. }
            | Command::DropCollection { ts, .. }
            | Command::RenameCollection { ts, .. }
            | Command::AlterCollection { ts, .. }
            | Command::CreatePartition { ts, .. }
            | Command::DropPartition { ts, .. }
            | Command::CreateIndexes { ts, .. }
            | Command::DropIndex { ts, .. }
            | Command::AlterIndex { ts, .. }
            | Command::CreateAlias { ts, .. }
            | Command::DropAlias { ts, .. }
            | Command::SetLoad { ts, .. }
            | Command::Tick { ts }
            | Command::AddField { ts, .. }
            | Command::AlterField { ts, .. } => *ts = new,
            Command::Coord(_) => {}
        }
        self
    }
}

/// A collection by name, or through an alias.
pub fn resolve<'a>(db: &'a Database, name: &str) -> Option<&'a Collection> {
    db.collections.get(name).or_else(|| {
        let id = *db.aliases.get(name)?;
        db.collections.values().find(|c| c.id == id)
    })
}

fn resolve_mut<'a>(db: &'a mut Database, name: &str) -> Option<&'a mut Collection> {
    let real = if db.collections.contains_key(name) {
        name.to_string()
    } else {
        let id = *db.aliases.get(name)?;
        db.collections
            .values()
            .find(|c| c.id == id)?
            .spec
            .name
            .clone()
    };
    db.collections.get_mut(&real)
}

/// Adds an index; `Ok(None)` when an equal one exists. Returns the indexed field's ID.
fn add_index(c: &mut Collection, ix: &IndexSpec, id: u64, ts: u64) -> Result<Option<i64>, Outcome> {
    let Some(field) = c.spec.fields.iter().find(|f| f.name == ix.field_name) else {
        return Err(err(
            code::FIELD_NOT_FOUND,
            format!("field not found[field={}]", ix.field_name),
        ));
    };
    let field_id = field.id;
    if let Some(existing) = c.indexes.iter().find(|i| i.spec.name == ix.name) {
        if existing.spec == *ix {
            return Ok(None);
        }
        return Err(err(
            code::INDEX_DUPLICATE,
            format!(
                "index duplicates[indexName={}]: at most one distinct index is allowed per field",
                ix.name
            ),
        ));
    }
    if c.indexes.iter().any(|i| i.field_id == field_id) {
        return Err(err(
            code::INDEX_DUPLICATE,
            format!(
                "index duplicates[indexName={}]: at most one distinct index is allowed per field",
                ix.name
            ),
        ));
    }
    c.indexes.push(Index {
        id,
        field_id,
        spec: ix.clone(),
        properties: Vec::new(),
        created_ts: ts,
    });
    Ok(Some(field_id))
}

fn index_event(mut e: DdEvent, c: &Collection, field_id: i64, ix: &IndexSpec) -> DdEvent {
    e.collection_name = c.spec.name.clone();
    e.collection_id = c.id;
    e.field_id = field_id;
    e.index_name = ix.name.clone();
    e.params = ix.params.clone();
    if !ix.index_type.is_empty() {
        e.params.push(("index_type".into(), ix.index_type.clone()));
    }
    if !ix.metric_type.is_empty() {
        e.params
            .push(("metric_type".into(), ix.metric_type.clone()));
    }
    e
}

/// The schema as the DD channel carries it: JSON of the user fields.
fn schema_summary(spec: &CollectionSpec) -> String {
    serde_json::to_string(spec).unwrap_or_default()
}

fn system_field(id: i64, name: &str, data_type: &str) -> Field {
    Field {
        id,
        name: name.into(),
        data_type: data_type.into(),
        element_type: String::new(),
        primary: false,
        partition_key: false,
        clustering_key: false,
        auto_id: false,
        nullable: false,
        dynamic: false,
        description: String::new(),
        default_value: None,
        type_params: Vec::new(),
        function_output: false,
    }
}

/// The fields the coordinator adds: `RowID`(0), `Timestamp`(1), and `$meta` (the next user
/// field ID) when dynamic fields are on.
pub fn system_fields(spec: &CollectionSpec) -> Vec<Field> {
    let mut out = vec![
        system_field(0, "RowID", "Int64"),
        system_field(1, "Timestamp", "Int64"),
    ];
    if spec.enable_dynamic {
        let next = spec.fields.iter().map(|f| f.id).max().unwrap_or(99) + 1;
        let mut meta = system_field(next, "$meta", "JSON");
        meta.dynamic = true;
        out.push(meta);
    }
    out
}

#[cfg(test)]
mod tests;
