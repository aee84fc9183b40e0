//! Milvus's root coordinator over its REST v2 API (`POST /v2/vectordb/...`, reference §1):
//! databases, collections, partitions, indexes and aliases, stored in the meta table's Milvus
//! tables (`crate::meta::milvus`), plus `POST /v2/rootcoord/component_states` and a lookup by
//! collection or partition ID.
//!
//! A DDL (design §10.3's task) runs on the shard that owns its database: it takes a TSO
//! timestamp, proposes one command carrying it (and the IDs it creates, from the cluster's ID
//! allocator), and answers once the entry is applied here and durable on a quorum
//! (`WaitToFinish`). Apply refuses a timestamp at or below the shard's last DDL's, so a
//! shard's DDLs apply in timestamp order; the task then retries with a fresh timestamp.
//! DDLs of different databases run on different shards and never wait for each other.
//! Reads (describe, list, has) pass the owner shard's read barrier first: linearizable.

pub mod body;
pub mod coord;
pub mod dd;
pub mod schema;
pub mod segment;
pub mod session;
pub mod sysconfig;
pub mod timetick;

use std::rc::Rc;
use std::time::Duration;

use mast_http::{Method, Request, Response, Router};
use serde::Serialize;
use serde_json::{json, Value};

use crate::meta::milvus::{
    self as tables, resolve, Collection, Command, Database, MilvusState, Outcome, Totals,
    DEFAULT_DB,
};
use crate::meta::{MetaCommand, MetaOutcome};
use crate::node::shard::Shard;
use crate::placement::owner_shard;
use crate::replica::GroupError;
use crate::services::{ServiceCall, ServiceError};
use body::*;
use schema::*;

/// `proxy.http.requestTimeoutMs`: used when the request has no `Request-Timeout`.
pub const REQUEST_TIMEOUT_DEFAULT_S: u64 = 30;
/// The longest `Request-Timeout` honoured.
pub const REQUEST_TIMEOUT_MAX_S: u64 = 3600;
/// How many fresh timestamps a DDL tries before giving up (each refusal means another DDL
/// of the same database applied with a later timestamp in between).
pub const DDL_ATTEMPTS_MAX: usize = 16;
/// Partition names one load/release may list.
pub const PARTITION_NAMES_MAX: usize = 1024;
/// Index entries one `indexes/create` may carry.
pub const INDEX_PARAMS_MAX: usize = 64;

pub(crate) fn group_err(e: GroupError) -> MErr {
    match e {
        GroupError::NoLeader { .. } | GroupError::NotLeader { .. } => MErr::new(
            CODE_NOT_READY,
            "service not ready[state code: Initializing]: no leader is known for the database's shard; retry",
        ),
        GroupError::Overloaded => MErr::new(
            CODE_NOT_READY,
            "service not ready: too many requests are waiting on the shard; retry",
        ),
        GroupError::Timeout => MErr {
            code: CODE_TIMEOUT,
            message: "request timeout: waiting for consensus; the DDL may or may not have taken effect"
                .into(),
            http: 408,
        },
        GroupError::Refused(m) => MErr::new(CODE_INTERNAL, format!("{m}: service internal error")),
        GroupError::Removed => MErr::new(
            CODE_NOT_READY,
            "service not ready: this node has been removed from the cluster",
        ),
    }
}

pub(crate) fn service_err(e: ServiceError) -> MErr {
    match e {
        ServiceError::Group(g) => group_err(g),
        ServiceError::BadRequest(m) => MErr::new(
            CODE_INTERNAL,
            format!("can not get timestamp: {m}: service internal error"),
        ),
    }
}

pub(crate) fn mesh_failed() -> MErr {
    group_err(GroupError::Overloaded)
}

/// Runs a linearizable read of `db`'s tables on its owner shard.
async fn read<R, F>(me: &Rc<Shard>, db: &str, f: F) -> MResult<R>
where
    R: Send + 'static,
    F: FnOnce(&MilvusState) -> MResult<R> + Send + 'static,
{
    let owner = owner_shard(db, me.mesh.shards());
    me.run_on(owner, move |s: Rc<Shard>| async move {
        s.group.read_barrier().await.map_err(group_err)?;
        let state = s.group.state();
        f(&state.milvus)
    })
    .await
    .unwrap_or_else(|_| Err(mesh_failed()))
}

/// Reads `db`'s database record, or 800.
async fn read_db<R, F>(me: &Rc<Shard>, db: &str, f: F) -> MResult<R>
where
    R: Send + 'static,
    F: FnOnce(&Database) -> MResult<R> + Send + 'static,
{
    let name = db.to_string();
    read(me, db, move |s| match s.db(&name) {
        Some(d) => f(d),
        None => Err(outcome_err(tables::db_not_found(&name))),
    })
    .await
}

/// Reads a collection (by name or alias), or 800/100.
async fn read_coll<R, F>(me: &Rc<Shard>, db: &str, coll: &str, f: F) -> MResult<R>
where
    R: Send + 'static,
    F: FnOnce(&Database, &Collection) -> MResult<R> + Send + 'static,
{
    let (dbn, cn) = (db.to_string(), coll.to_string());
    read_db(me, db, move |d| match resolve(d, &cn) {
        Some(c) => f(d, c),
        None => Err(outcome_err(tables::collection_not_found(&dbn, &cn))),
    })
    .await
}

fn outcome_err(o: Outcome) -> MErr {
    match o {
        Outcome::Error { code, message } => MErr::new(code, message),
        other => MErr::new(CODE_UNEXPECTED, format!("unexpected outcome {other:?}")),
    }
}

/// Runs one DDL on its database's shard: a TSO timestamp, one proposal, applied here and
/// durable on a quorum before it answers.
async fn ddl(me: &Rc<Shard>, db: &str, cmd: Command) -> MResult<Outcome> {
    let owner = owner_shard(db, me.mesh.shards());
    me.run_on(owner, move |s: Rc<Shard>| async move {
        if s.group.leader() == 0 {
            return Err(group_err(GroupError::NoLeader { leader_hint: 0 }));
        }
        // The TSO lives on group 0's leader.
        require_leader(&s, 0).await?;
        let mut cmd = cmd;
        for _ in 0..DDL_ATTEMPTS_MAX {
            let ts = crate::services::api::call(s.clone(), ServiceCall::Tso { count: 1 })
                .await
                .map_err(service_err)?
                .first;
            cmd = cmd.with_ts(ts);
            dd::tick_beside_ddl(&s, ts);
            match s.group.propose(&MetaCommand::Milvus(cmd.clone())).await {
                Ok(MetaOutcome::Milvus(Outcome::Stale { .. })) => continue,
                Ok(MetaOutcome::Milvus(Outcome::Error { code, message })) => {
                    return Err(MErr::new(code, message))
                }
                Ok(MetaOutcome::Milvus(o)) => return Ok(o),
                Ok(other) => {
                    return Err(MErr::new(
                        CODE_UNEXPECTED,
                        format!("unexpected outcome {other:?}"),
                    ))
                }
                Err(e) => return Err(group_err(e)),
            }
        }
        Err(MErr::new(
            CODE_INTERNAL,
            "DDL kept losing the race for its database's next timestamp; retry: service internal error",
        ))
    })
    .await
    .unwrap_or_else(|_| Err(mesh_failed()))
}

/// Code 1 "service not ready" when shard `k`'s group knows no leader (Milvus answers so while
/// its coordinator is not Healthy), instead of waiting for a proposal to time out.
async fn require_leader(me: &Rc<Shard>, k: usize) -> MResult<()> {
    let leader = me
        .run_on(k, |s: Rc<Shard>| async move { s.group.leader() })
        .await
        .map_err(|_| mesh_failed())?;
    if leader == 0 {
        return Err(group_err(GroupError::NoLeader { leader_hint: 0 }));
    }
    Ok(())
}

/// `count` fresh IDs from the cluster's allocator; the first of them.
async fn ids(me: &Rc<Shard>, count: u64) -> MResult<u64> {
    // The allocator lives on group 0's leader.
    require_leader(me, 0).await?;
    crate::services::api::call(me.clone(), ServiceCall::Ids { count })
        .await
        .map(|r| r.first)
        .map_err(service_err)
}

/// The cluster-wide counts behind the limits that span databases, summed over every shard's
/// applied state (not through a barrier: the limits are checked before proposing, so two
/// racing creates may both pass; the per-database limits in apply are exact).
async fn totals(me: &Rc<Shard>) -> MResult<Totals> {
    let mut t = Totals::default();
    for k in 0..me.mesh.shards() {
        let part = me
            .run_on(
                k,
                |s: Rc<Shard>| async move { s.group.state().milvus.totals() },
            )
            .await
            .map_err(|_| mesh_failed())?;
        // `default` exists in every shard's table; count it nowhere.
        t.databases_non_default += part.databases_non_default;
        t.collections += part.collections;
        t.capacity += part.capacity;
    }
    Ok(t)
}

fn db_of(body: &Body, header_db: &Option<String>) -> MResult<String> {
    if let Some(db) = body.str_opt("dbName")?.filter(|s| !s.is_empty()) {
        return Ok(db);
    }
    Ok(header_db
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_DB.to_string()))
}

/// The `(set, delete)` of an `alter_properties` (`properties{}`; `databases/alter` too) or a
/// `drop_properties` (`propertyKeys[]`), alike for databases, collections and indexes.
fn property_change(body: &Body, action: &str) -> MResult<(tables::Kvs, Vec<String>)> {
    if action == "drop_properties" {
        Ok((
            Vec::new(),
            body.strings_opt("propertyKeys")?.unwrap_or_default(),
        ))
    } else {
        Ok((body.kvs_opt("properties")?.unwrap_or_default(), Vec::new()))
    }
}

fn done(_: Outcome) -> Response {
    ok(json!({}))
}

/// `{"has": …}` of `collections/has`.
#[derive(Serialize)]
struct Has {
    has: bool,
}

fn load_state(c: &Collection) -> &'static str {
    if c.loaded {
        "LoadStateLoaded"
    } else {
        "LoadStateNotLoad"
    }
}

/// `[{"key":k,"value":v}]` without building a `Value`.
#[derive(Serialize)]
struct KvView<'a> {
    key: &'a str,
    value: &'a str,
}

fn kv_views(kvs: &[(String, String)]) -> Vec<KvView<'_>> {
    kvs.iter()
        .map(|(k, v)| KvView { key: k, value: v })
        .collect()
}

/// One entry of `fields[]` in `collections/describe` (reference §1.8). Typed and borrowed:
/// describe is the hottest read, and a `serde_json::Value` tree cost it half its rate.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FieldView<'a> {
    name: &'a str,
    id: i64,
    #[serde(rename = "type")]
    data_type: &'a str,
    primary_key: bool,
    partition_key: bool,
    clustering_key: bool,
    auto_id: bool,
    description: &'a str,
    nullable: bool,
    params: Vec<KvView<'a>>,
    #[serde(skip_serializing_if = "str::is_empty")]
    element_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    default_value: Option<Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    is_function_output: bool,
}

impl<'a> FieldView<'a> {
    fn of(f: &'a tables::Field) -> FieldView<'a> {
        FieldView {
            name: &f.name,
            id: f.id,
            data_type: &f.data_type,
            primary_key: f.primary,
            partition_key: f.partition_key,
            clustering_key: f.clustering_key,
            auto_id: f.auto_id,
            description: &f.description,
            nullable: f.nullable,
            params: kv_views(&f.type_params),
            element_type: &f.element_type,
            // Stored as the JSON text the client gave, which was valid when it was stored.
            default_value: f
                .default_value
                .as_ref()
                .map(|d| serde_json::from_str(d).unwrap_or(Value::Null)),
            is_function_output: f.function_output,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexBrief<'a> {
    field_name: &'a str,
    index_name: &'a str,
    metric_type: &'a str,
}

/// `collections/describe` data (reference §1.8).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DescribeView<'a> {
    collection_name: &'a str,
    #[serde(rename = "collectionID")]
    collection_id: u64,
    description: &'a str,
    auto_id: bool,
    fields: Vec<FieldView<'a>>,
    struct_fields: [(); 0],
    functions: [(); 0],
    aliases: Vec<&'a str>,
    indexes: Vec<IndexBrief<'a>>,
    load: &'static str,
    shards_num: u32,
    partitions_num: usize,
    consistency_level: &'a str,
    enable_dynamic_field: bool,
    properties: Vec<KvView<'a>>,
    db_name: &'a str,
    #[serde(rename = "dbID")]
    db_id: u64,
}

impl<'a> DescribeView<'a> {
    fn of(d: &'a Database, c: &'a Collection) -> DescribeView<'a> {
        DescribeView {
            collection_name: &c.spec.name,
            collection_id: c.id,
            description: &c.spec.description,
            auto_id: c.spec.fields.iter().any(|f| f.primary && f.auto_id),
            fields: c.spec.fields.iter().map(FieldView::of).collect(),
            struct_fields: [],
            functions: [],
            aliases: d
                .aliases
                .iter()
                .filter(|(_, id)| **id == c.id)
                .map(|(a, _)| a.as_str())
                .collect(),
            indexes: c
                .indexes
                .iter()
                .map(|i| IndexBrief {
                    field_name: &i.spec.field_name,
                    index_name: &i.spec.name,
                    metric_type: &i.spec.metric_type,
                })
                .collect(),
            load: load_state(c),
            shards_num: c.spec.shards_num,
            partitions_num: c.partitions.len(),
            consistency_level: &c.spec.consistency_level,
            enable_dynamic_field: c.spec.enable_dynamic,
            properties: kv_views(&c.properties),
            db_name: &d.name,
            db_id: d.id,
        }
    }
}

fn index_json(c: &Collection, i: &tables::Index) -> Value {
    let mut params = i.spec.params.clone();
    params.push(("index_type".into(), i.spec.index_type.clone()));
    if !i.spec.metric_type.is_empty() {
        params.push(("metric_type".into(), i.spec.metric_type.clone()));
    }
    let prop = |k: &str, default: &str| {
        i.properties
            .iter()
            .find(|(pk, _)| pk == k)
            .map_or(default.to_string(), |(_, v)| v.clone())
    };
    json!({
        "indexName": i.spec.name,
        "fieldName": i.spec.field_name,
        "indexType": i.spec.index_type,
        "metricType": i.spec.metric_type,
        "indexID": i.id,
        "collectionID": c.id,
        "mmap.enabled": prop("mmap.enabled", "false"),
        "indexoffsetcache.enabled": prop("indexoffsetcache.enabled", "false"),
        "warmup": prop("warmup", ""),
        "totalRows": 0,
        "pendingRows": 0,
        "indexedRows": 0,
        "indexState": "Finished",
        "failReason": "",
        "minIndexVersion": 0,
        "maxIndexVersion": 0,
        "indexParams": kv_list(&params),
    })
}

/// Every `/v2/vectordb/` path this server answers.
const PATHS: &[&str] = &[
    "databases/create",
    "databases/drop",
    "databases/list",
    "databases/describe",
    "databases/alter",
    "databases/alter_properties",
    "databases/drop_properties",
    "collections/create",
    "collections/describe",
    "collections/list",
    "collections/has",
    "collections/drop",
    "collections/rename",
    "collections/get_stats",
    "collections/alter_properties",
    "collections/drop_properties",
    "collections/load",
    "collections/release",
    "collections/get_load_state",
    "collections/fields/add",
    "collections/fields/alter_properties",
    "partitions/create",
    "partitions/drop",
    "partitions/has",
    "partitions/list",
    "partitions/get_stats",
    "partitions/load",
    "partitions/release",
    "indexes/create",
    "indexes/describe",
    "indexes/list",
    "indexes/drop",
    "indexes/alter_properties",
    "indexes/drop_properties",
    "aliases/create",
    "aliases/alter",
    "aliases/drop",
    "aliases/describe",
    "aliases/list",
];

/// Gin's reply to an unknown path.
fn not_found() -> Response {
    Response::text(404, "404 page not found")
}

fn method_not_allowed() -> Response {
    Response::text(405, "405 method not allowed").with_header("allow", "POST")
}

/// `Request-Timeout` in seconds, or 1100 when it does not parse.
fn request_timeout(req: &Request) -> MResult<Duration> {
    match req.header_str("request-timeout") {
        None => Ok(Duration::from_secs(REQUEST_TIMEOUT_DEFAULT_S)),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(s) if s > 0 => Ok(Duration::from_secs(s.min(REQUEST_TIMEOUT_MAX_S))),
            _ => Err(MErr::invalid(format!(
                "Request-Timeout should be a positive integer of seconds, got {v}"
            ))),
        },
    }
}

async fn vectordb(me: Rc<Shard>, req: Request) -> Response {
    let path = req
        .param("path")
        .unwrap_or("")
        .trim_matches('/')
        .to_string();
    if !PATHS.contains(&path.as_str()) {
        return not_found();
    }
    let timeout = match request_timeout(&req) {
        Ok(t) => t,
        Err(e) => return e.response(),
    };
    let body = match Body::parse(req.body()) {
        Ok(b) => b,
        Err(e) => return e.response(),
    };
    let header_db = req.header_str("db-name").map(|s| s.trim().to_string());
    match monoio::time::timeout(timeout, handle(&me, &path, body, header_db)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => e.response(),
        Err(_) => MErr {
            code: CODE_TIMEOUT,
            message: "request timeout".into(),
            http: 408,
        }
        .response(),
    }
}

/// One `/v2/vectordb/<path>` request.
pub async fn handle(
    me: &Rc<Shard>,
    path: &str,
    body: Body,
    header_db: Option<String>,
) -> MResult<Response> {
    let (group, action) = path.split_once('/').unwrap_or((path, ""));
    match group {
        "databases" => databases(me, action, body).await,
        "collections" => collections(me, action, body, header_db).await,
        "partitions" => partitions(me, action, body, header_db).await,
        "indexes" => indexes(me, action, body, header_db).await,
        "aliases" => aliases(me, action, body, header_db).await,
        _ => Ok(not_found()),
    }
}

async fn databases(me: &Rc<Shard>, action: &str, body: Body) -> MResult<Response> {
    if action == "list" {
        let mut names = std::collections::BTreeSet::new();
        for k in 0..me.mesh.shards() {
            let part = me
                .run_on(k, |s: Rc<Shard>| async move {
                    s.group.read_barrier().await.map_err(group_err)?;
                    Ok::<_, MErr>(
                        s.group
                            .state()
                            .milvus
                            .databases
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>(),
                    )
                })
                .await
                .map_err(|_| mesh_failed())??;
            names.extend(part);
        }
        // `default` is first, as Milvus lists it.
        let mut out = vec![DEFAULT_DB.to_string()];
        out.extend(names.into_iter().filter(|n| n != DEFAULT_DB));
        return Ok(ok(json!(out)));
    }
    let name = body.str_req("dbName")?;
    check_db_name(&name)?;
    match action {
        "create" => {
            let properties = body.kvs_opt("properties")?.unwrap_or_default();
            if totals(me).await?.databases_non_default >= DATABASES_MAX {
                return Err(MErr::new(
                    CODE_DATABASES_EXCEEDED,
                    format!("exceeded the limit number of database[limit={DATABASES_MAX}]"),
                ));
            }
            let id = ids(me, 1).await?;
            let cmd = Command::CreateDatabase {
                ts: 0,
                name: name.clone(),
                id,
                properties,
            };
            ddl(me, &name, cmd).await.map(done)
        }
        "drop" => {
            let cmd = Command::DropDatabase {
                ts: 0,
                name: name.clone(),
            };
            ddl(me, &name, cmd).await.map(done)
        }
        "describe" => {
            read_db(me, &name, |d| {
                Ok(ok(json!({"dbName": d.name, "dbID": d.id,
                             "properties": kv_list(&d.properties)})))
            })
            .await
        }
        "alter" | "alter_properties" | "drop_properties" => {
            let (set, delete) = property_change(&body, action)?;
            let cmd = Command::AlterDatabase {
                ts: 0,
                name: name.clone(),
                set,
                delete,
            };
            ddl(me, &name, cmd).await.map(done)
        }
        _ => Ok(not_found()),
    }
}

async fn collections(
    me: &Rc<Shard>,
    action: &str,
    body: Body,
    header_db: Option<String>,
) -> MResult<Response> {
    let db = db_of(&body, &header_db)?;
    if action == "list" {
        return read_db(me, &db, |d| {
            Ok(ok_ser(&d.collections.keys().collect::<Vec<_>>(), None))
        })
        .await;
    }
    if action == "create" {
        let req = parse_create(&body)?;
        let t = totals(me).await?;
        if t.collections >= COLLECTIONS_MAX {
            return Err(MErr::new(
                CODE_COLLECTIONS_EXCEEDED,
                format!("exceeded the limit number of collections[limit={COLLECTIONS_MAX}]"),
            ));
        }
        let parts = req.spec.partition_key_partitions.max(1) as u64;
        if t.capacity + u64::from(req.spec.shards_num) * parts > GENERAL_CAPACITY_MAX {
            return Err(MErr::new(
                CODE_CAPACITY_EXCEEDED,
                format!("general capacity exceeded[limit={GENERAL_CAPACITY_MAX}]: the sum of shards x partitions over collections would pass it"),
            ));
        }
        let n = 1 + parts + req.indexes.len() as u64;
        let first = ids(me, n).await?;
        let cmd = Command::CreateCollection {
            ts: 0,
            db: db.clone(),
            id: first,
            partition_ids: (1..=parts).map(|i| first + i).collect(),
            index_ids: (0..req.indexes.len() as u64)
                .map(|i| first + 1 + parts + i)
                .collect(),
            spec: req.spec,
            indexes: req.indexes,
            load: req.load,
        };
        return ddl(me, &db, cmd).await.map(done);
    }
    let name = body.str_req("collectionName")?;
    match action {
        "describe" => {
            let (dbn, cn) = (db.clone(), name.clone());
            let r = read_db(me, &db, move |d| match resolve(d, &cn) {
                Some(c) => Ok(ok_ser(&DescribeView::of(d, c), Some(""))),
                None => Err(MErr::new(
                    tables::code::COLLECTION_NOT_FOUND,
                    format!("can't find collection[database={dbn}][collection={cn}]"),
                )),
            })
            .await?;
            Ok(r)
        }
        "has" => {
            read_db(me, &db, move |d| {
                Ok(ok_ser(
                    &Has {
                        has: resolve(d, &name).is_some(),
                    },
                    None,
                ))
            })
            .await
        }
        "get_stats" => read_coll(me, &db, &name, |_, _| Ok(ok(json!({"rowCount": 0})))).await,
        "get_load_state" => {
            let parts = body.strings_opt("partitionNames")?.unwrap_or_default();
            read_coll(me, &db, &name, move |_, c| {
                let mut loaded = c.loaded;
                for p in &parts {
                    match c.partitions.iter().find(|q| &q.name == p) {
                        Some(q) => loaded &= q.loaded,
                        None => {
                            return Err(MErr::new(
                                tables::code::PARTITION_NOT_FOUND,
                                format!("partition not found[partition={p}]"),
                            ))
                        }
                    }
                }
                let data = if loaded {
                    json!({"loadState": "LoadStateLoaded", "loadProgress": 100})
                } else {
                    json!({"loadState": "LoadStateNotLoad"})
                };
                Ok(ok_with_message(data, ""))
            })
            .await
        }
        "drop" => {
            let cmd = Command::DropCollection {
                ts: 0,
                db: db.clone(),
                name,
            };
            ddl(me, &db, cmd).await.map(done)
        }
        "rename" => {
            let new_name = body.str_req("newCollectionName")?;
            check_collection_name(&new_name)?;
            let new_db = body
                .str_opt("newDbName")?
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| db.clone());
            if new_db != db {
                return Err(MErr::invalid(format!(
                    "renaming collection {name} into another database ({db} -> {new_db}) is not supported by mast"
                )));
            }
            let cmd = Command::RenameCollection {
                ts: 0,
                db: db.clone(),
                name,
                new_name,
            };
            ddl(me, &db, cmd).await.map(done)
        }
        "alter_properties" | "drop_properties" => {
            let (set, delete) = property_change(&body, action)?;
            let cmd = Command::AlterCollection {
                ts: 0,
                db: db.clone(),
                name,
                set,
                delete,
            };
            ddl(me, &db, cmd).await.map(done)
        }
        "fields/add" => {
            let field = parse_add_field(&body)?;
            let cmd = Command::AddField {
                ts: 0,
                db: db.clone(),
                collection: name,
                field,
            };
            ddl(me, &db, cmd).await.map(done)
        }
        "fields/alter_properties" => {
            let (field, set) = parse_alter_field(&body)?;
            let cmd = Command::AlterField {
                ts: 0,
                db: db.clone(),
                collection: name,
                name: field,
                set,
            };
            ddl(me, &db, cmd).await.map(done)
        }
        "load" | "release" => {
            let cmd = Command::SetLoad {
                ts: 0,
                db: db.clone(),
                collection: name,
                partitions: Vec::new(),
                load: action == "load",
            };
            ddl(me, &db, cmd).await.map(done)
        }
        _ => Ok(not_found()),
    }
}

async fn partitions(
    me: &Rc<Shard>,
    action: &str,
    body: Body,
    header_db: Option<String>,
) -> MResult<Response> {
    let db = db_of(&body, &header_db)?;
    let coll = body.str_req("collectionName")?;
    match action {
        "list" => {
            read_coll(me, &db, &coll, |_, c| {
                Ok(ok(json!(c
                    .partitions
                    .iter()
                    .map(|p| &p.name)
                    .collect::<Vec<_>>())))
            })
            .await
        }
        "load" | "release" => {
            let names = body
                .strings_opt("partitionNames")?
                .filter(|v| !v.is_empty())
                .ok_or_else(|| required("partitionNames"))?;
            if names.len() > PARTITION_NAMES_MAX {
                return Err(MErr::invalid(format!(
                    "at most {PARTITION_NAMES_MAX} partition names per request"
                )));
            }
            let cmd = Command::SetLoad {
                ts: 0,
                db: db.clone(),
                collection: coll,
                partitions: names,
                load: action == "load",
            };
            ddl(me, &db, cmd).await.map(done)
        }
        _ => {
            let name = body.str_req("partitionName")?;
            match action {
                "create" => {
                    check_partition_name(&name)?;
                    let t = totals(me).await?;
                    if t.capacity >= GENERAL_CAPACITY_MAX {
                        return Err(MErr::new(
                            CODE_CAPACITY_EXCEEDED,
                            format!("general capacity exceeded[limit={GENERAL_CAPACITY_MAX}]"),
                        ));
                    }
                    let id = ids(me, 1).await?;
                    let cmd = Command::CreatePartition {
                        ts: 0,
                        db: db.clone(),
                        collection: coll,
                        name: name.trim().to_string(),
                        id,
                    };
                    ddl(me, &db, cmd).await.map(done)
                }
                "drop" => {
                    let cmd = Command::DropPartition {
                        ts: 0,
                        db: db.clone(),
                        collection: coll,
                        name: name.trim().to_string(),
                    };
                    ddl(me, &db, cmd).await.map(done)
                }
                "has" => {
                    let r = read_coll(me, &db, &coll, move |_, c| {
                        Ok(c.partitions.iter().any(|p| p.name == name))
                    })
                    .await?;
                    Ok(ok(json!({ "has": r })))
                }
                "get_stats" => {
                    read_coll(me, &db, &coll, move |_, c| {
                        if c.partitions.iter().any(|p| p.name == name) {
                            Ok(ok(json!({"rowCount": 0})))
                        } else {
                            Err(MErr::new(
                                tables::code::PARTITION_NOT_FOUND,
                                format!("partition not found[partition={name}]"),
                            ))
                        }
                    })
                    .await
                }
                _ => Ok(not_found()),
            }
        }
    }
}

async fn indexes(
    me: &Rc<Shard>,
    action: &str,
    body: Body,
    header_db: Option<String>,
) -> MResult<Response> {
    let db = db_of(&body, &header_db)?;
    let coll = body.str_req("collectionName")?;
    match action {
        "create" => {
            let raw = body
                .array_opt("indexParams")?
                .filter(|v| !v.is_empty())
                .ok_or_else(|| required("indexParams"))?;
            if raw.len() > INDEX_PARAMS_MAX {
                return Err(MErr::invalid(format!(
                    "at most {INDEX_PARAMS_MAX} indexParams per request"
                )));
            }
            let specs = raw
                .into_iter()
                .map(parse_index)
                .collect::<MResult<Vec<_>>>()?;
            let first = ids(me, specs.len() as u64).await?;
            let cmd = Command::CreateIndexes {
                ts: 0,
                db: db.clone(),
                collection: coll,
                ids: (0..specs.len() as u64).map(|i| first + i).collect(),
                indexes: specs,
            };
            ddl(me, &db, cmd).await.map(done)
        }
        "list" => {
            // Milvus turns "index not found" into []; a missing collection is still an error.
            read_coll(me, &db, &coll, |_, c| {
                Ok(ok(json!(c
                    .indexes
                    .iter()
                    .map(|i| &i.spec.name)
                    .collect::<Vec<_>>())))
            })
            .await
        }
        "describe" => {
            let name = body.str_req("indexName")?;
            read_coll(me, &db, &coll, move |_, c| {
                match c.indexes.iter().find(|i| i.spec.name == name) {
                    Some(i) => Ok(ok(json!([index_json(c, i)]))),
                    None => Err(MErr::new(
                        tables::code::INDEX_NOT_FOUND,
                        format!("index not found[indexName={name}]"),
                    )),
                }
            })
            .await
        }
        "drop" => {
            let name = body.str_req("indexName")?;
            let cmd = Command::DropIndex {
                ts: 0,
                db: db.clone(),
                collection: coll,
                name,
            };
            ddl(me, &db, cmd).await.map(done)
        }
        // Index properties (mmap.enabled, warmup, ...) are recorded on the index entry.
        "alter_properties" | "drop_properties" => {
            let name = body.str_req("indexName")?;
            let (set, delete) = property_change(&body, action)?;
            let cmd = Command::AlterIndex {
                ts: 0,
                db: db.clone(),
                collection: coll,
                name,
                set,
                delete,
            };
            ddl(me, &db, cmd).await.map(done)
        }
        _ => Ok(not_found()),
    }
}

async fn aliases(
    me: &Rc<Shard>,
    action: &str,
    body: Body,
    header_db: Option<String>,
) -> MResult<Response> {
    let db = db_of(&body, &header_db)?;
    match action {
        "list" => {
            let filter = body.str_opt("collectionName")?.filter(|s| !s.is_empty());
            let dbn = db.clone();
            read_db(me, &db, move |d| {
                let target = match &filter {
                    None => None,
                    Some(name) => match d.collections.get(name) {
                        Some(c) => Some(c.id),
                        None => return Err(outcome_err(tables::collection_not_found(&dbn, name))),
                    },
                };
                let names: Vec<&String> = d
                    .aliases
                    .iter()
                    .filter(|(_, id)| target.map_or(true, |t| **id == t))
                    .map(|(a, _)| a)
                    .collect();
                Ok(ok(json!(names)))
            })
            .await
        }
        "create" | "alter" => {
            let coll = body.str_req("collectionName")?;
            let alias = body.str_req("aliasName")?;
            check_alias_name(&alias)?;
            let cmd = Command::CreateAlias {
                ts: 0,
                db: db.clone(),
                alias,
                collection: coll,
                alter: action == "alter",
            };
            ddl(me, &db, cmd).await.map(done)
        }
        "drop" => {
            let alias = body.str_req("aliasName")?;
            let cmd = Command::DropAlias {
                ts: 0,
                db: db.clone(),
                alias,
            };
            ddl(me, &db, cmd).await.map(done)
        }
        "describe" => {
            let alias = body.str_req("aliasName")?;
            let dbn = db.clone();
            read_db(me, &db, move |d| {
                let coll = d
                    .aliases
                    .get(&alias)
                    .and_then(|id| d.collections.values().find(|c| c.id == *id));
                match coll {
                    Some(c) => Ok(ok(json!({"dbName": d.name, "collectionName": c.spec.name,
                                            "aliasName": alias}))),
                    None => Err(MErr::new(
                        tables::code::ALIAS_NOT_FOUND,
                        format!("alias not found[database={dbn}][alias={alias}]"),
                    )),
                }
            })
            .await
        }
        _ => Ok(not_found()),
    }
}

/// `ComponentStates` (reference §2.1): `Healthy` when every shard of this node knows its
/// leader, `Initializing` otherwise.
async fn component_states(me: Rc<Shard>) -> Response {
    let mut subs = Vec::new();
    let mut healthy = true;
    for k in 0..me.mesh.shards() {
        let leader = me
            .run_on(k, |s: Rc<Shard>| async move { s.group.leader() })
            .await
            .unwrap_or(0);
        healthy &= leader != 0;
        subs.push(
            json!({"nodeID": me.node.id, "role": format!("rootcoord-shard-{k}"),
                         "stateCode": if leader != 0 { "Healthy" } else { "Initializing" },
                         "extraInfo": [{"key": "leader", "value": leader.to_string()}]}),
        );
    }
    let state = if healthy { "Healthy" } else { "Initializing" };
    ok(json!({
        "state": {"nodeID": me.node.id, "role": "rootcoord", "stateCode": state, "extraInfo": []},
        "subcomponentStates": subs,
        "status": {"code": 0, "reason": ""},
    }))
}

/// Where a collection or partition lives, by ID, from any node: every shard is asked (a
/// database's objects live on its shard, and IDs do not say which).
async fn lookup(me: Rc<Shard>, req: Request) -> Response {
    let r: MResult<Response> = async {
        let body = Body::parse(req.body())?;
        let coll = body.int_opt("collectionID")?;
        let part = body.int_opt("partitionID")?;
        let (id, by_partition) = match (coll, part) {
            (Some(c), None) => (c as u64, false),
            (None, Some(p)) => (p as u64, true),
            _ => return Err(required("collectionID")),
        };
        for k in 0..me.mesh.shards() {
            let found = me
                .run_on(k, move |s: Rc<Shard>| async move {
                    s.group.read_barrier().await.map_err(group_err)?;
                    let st = s.group.state();
                    let hit = if by_partition {
                        st.milvus.partition_by_id(id).map(|(d, c, p)| {
                            json!({"dbName": d.name, "dbID": d.id, "collectionName": c.spec.name,
                                   "collectionID": c.id, "partitionName": p.name, "partitionID": p.id})
                        })
                    } else {
                        st.milvus.collection_by_id(id).map(|(d, c)| {
                            json!({"dbName": d.name, "dbID": d.id, "collectionName": c.spec.name,
                                   "collectionID": c.id})
                        })
                    };
                    Ok::<_, MErr>(hit.map(|v| v.to_string()))
                })
                .await
                .map_err(|_| mesh_failed())??;
            if let Some(text) = found {
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                return Ok(ok(v));
            }
        }
        Err(MErr::new(
            if by_partition { tables::code::PARTITION_NOT_FOUND } else { tables::code::COLLECTION_NOT_FOUND },
            format!("{} not found[id={id}]", if by_partition { "partition" } else { "collection" }),
        ))
    }
    .await;
    r.unwrap_or_else(|e| e.response())
}

/// Adds the Milvus routes.
pub fn routes(router: Router, shard: Rc<Shard>) -> Router {
    let (s1, s2, s3) = (shard.clone(), shard.clone(), shard.clone());
    let (s4, s5) = (shard.clone(), shard);
    let mut router = router.route(Method::POST, "/v2/vectordb/*path", move |req: Request| {
        vectordb(s1.clone(), req)
    });
    for m in [Method::GET, Method::PUT, Method::DELETE, Method::PATCH] {
        router = router.route(m, "/v2/vectordb/*path", |_req: Request| async {
            method_not_allowed()
        });
    }
    router
        .route(
            Method::POST,
            "/v2/rootcoord/component_states",
            move |_req: Request| component_states(s2.clone()),
        )
        .route(Method::POST, "/v2/rootcoord/lookup", move |req: Request| {
            lookup(s3.clone(), req)
        })
        .route(
            Method::POST,
            "/v2/rootcoord/dd/watch",
            move |req: Request| dd::watch(s4.clone(), req),
        )
        .route(
            Method::POST,
            "/v2/rootcoord/dd/channel",
            move |_req: Request| dd::channel(s5.clone()),
        )
}
