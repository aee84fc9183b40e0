//! Names, types and schemas checked as Milvus's proxy checks them (reference §1.7, §1.9),
//! and `collections/create` bodies turned into a `CollectionSpec` plus the indexes to create.

use serde_json::Value;

use super::body::*;
use crate::meta::milvus::{CollectionSpec, Field, IndexSpec, Kvs};

/// `proxy.maxNameLength`.
pub const NAME_BYTES_MAX: usize = 255;
/// `proxy.maxCollectionDescriptionLength`.
pub const DESCRIPTION_BYTES_MAX: usize = 1024;
/// `proxy.maxFieldNum`.
pub const FIELDS_MAX: usize = 64;
/// `proxy.maxVectorFieldNum`.
pub const VECTOR_FIELDS_MAX: usize = 10;
/// `proxy.maxDimension`.
pub const DIM_MAX: i64 = 32_768;
pub const DIM_MIN: i64 = 2;
/// `proxy.maxVarCharLength`.
pub const VARCHAR_LENGTH_MAX: i64 = 65_535;
/// `proxy.maxArrayCapacity`.
pub const ARRAY_CAPACITY_MAX: i64 = 4096;
/// `proxy.maxShardNum` (and `rootCoord.dmlChannelNum`).
pub const SHARDS_MAX: i64 = 16;
/// `partitionsNum` with a partition key: default and cap (`rootCoord.maxPartitionNum`).
pub const PARTITION_KEY_PARTITIONS_DEFAULT: i64 = 16;
pub const PARTITION_KEY_PARTITIONS_MAX: i64 = 1024;
/// `rootCoord.maxDatabaseNum` (not counting `default`).
pub const DATABASES_MAX: usize = 64;
/// `quotaAndLimits.limits.maxCollectionNum` (the whole cluster).
pub const COLLECTIONS_MAX: usize = 65_536;
/// `rootCoord.maxGeneralCapacity`: Σ shards × partitions.
pub const GENERAL_CAPACITY_MAX: u64 = 65_536;

const SCALAR_TYPES: &[&str] = &[
    "Bool",
    "Int8",
    "Int16",
    "Int32",
    "Int64",
    "Float",
    "Double",
    "VarChar",
    "Array",
    "JSON",
    "Geometry",
    "Text",
    "Timestamptz",
];
const VECTOR_TYPES: &[&str] = &[
    "BinaryVector",
    "FloatVector",
    "Float16Vector",
    "BFloat16Vector",
    "SparseFloatVector",
    "Int8Vector",
];
const ARRAY_ELEMENT_TYPES: &[&str] = &[
    "Bool", "Int8", "Int16", "Int32", "Int64", "Float", "Double", "VarChar",
];
const CONSISTENCY_LEVELS: &[&str] = &["Strong", "Session", "Bounded", "Eventually", "Customized"];
/// Field names the coordinator reserves or the expression language uses.
const RESERVED_FIELD_NAMES: &[&str] = &[
    "RowID",
    "Timestamp",
    "__virtual_pk__",
    "$meta",
    "like",
    "exists",
    "EXISTS",
    "and",
    "or",
    "not",
    "in",
    "json_contains",
    "array_contains",
    "array_length",
    "text_match",
    "true",
    "false",
];

fn is_vector(t: &str) -> bool {
    VECTOR_TYPES.contains(&t)
}

/// The shared rule of collection, alias, database and index names.
fn check_ident(kind: &str, name: &str) -> Result<(), String> {
    let name_t = name.trim();
    if name_t.is_empty() {
        return Err(format!("{kind} name should not be empty"));
    }
    if name_t.len() > NAME_BYTES_MAX {
        return Err(format!(
            "the length of a {kind} name must be less than {NAME_BYTES_MAX} characters"
        ));
    }
    let first = name_t.as_bytes()[0];
    if first != b'_' && !first.is_ascii_alphabetic() {
        return Err(format!(
            "the first character of a {kind} name must be an underscore or letter"
        ));
    }
    if !name_t
        .bytes()
        .all(|b| b == b'_' || b.is_ascii_alphanumeric())
    {
        return Err(format!(
            "{kind} name can only contain numbers, letters and underscores"
        ));
    }
    Ok(())
}

pub fn check_collection_name(name: &str) -> MResult<()> {
    check_ident("collection", name)
        .map_err(|m| MErr::invalid(format!("Invalid collection name: {name}. {m}")))
}

pub fn check_alias_name(name: &str) -> MResult<()> {
    check_ident("alias", name).map_err(|m| MErr::invalid(format!("Invalid alias: {name}. {m}")))
}

pub fn check_db_name(name: &str) -> MResult<()> {
    check_ident("database", name).map_err(|m| {
        MErr::new(
            CODE_INVALID_DB_NAME,
            format!("invalid database name[database={name}]: {m}"),
        )
    })
}

pub fn check_index_name(name: &str) -> MResult<()> {
    if name.is_empty() {
        return Ok(());
    }
    check_ident("index", name)
        .map_err(|m| MErr::invalid(format!("Invalid index name: {name}. {m}")))
}

pub fn check_field_name(name: &str) -> MResult<()> {
    let bad = |m: String| {
        MErr::new(
            CODE_FIELD_NAME_INVALID,
            format!("field name invalid[field={name}]: {m}"),
        )
    };
    if RESERVED_FIELD_NAMES.contains(&name) {
        return Err(bad(format!("{name} is a reserved word or keyword")));
    }
    check_ident("field", name).map_err(bad)
}

pub fn check_partition_name(name: &str) -> MResult<()> {
    let t = name.trim();
    let bad = |m: &str| MErr::invalid(format!("Invalid partition name: {name}. {m}"));
    if t.is_empty() {
        return Err(bad("Partition name should not be empty"));
    }
    if t.len() > NAME_BYTES_MAX {
        return Err(bad(&format!(
            "The length of a partition name must be less than {NAME_BYTES_MAX} characters"
        )));
    }
    let first = t.as_bytes()[0];
    if first != b'_' && !first.is_ascii_alphanumeric() {
        return Err(bad(
            "The first character of a partition name must be an underscore or letter or number",
        ));
    }
    if !t
        .bytes()
        .all(|b| b == b'_' || b == b'-' || b.is_ascii_alphanumeric())
    {
        return Err(bad(
            "Partition name can only contain numbers, letters, dashes and underscores",
        ));
    }
    Ok(())
}

fn check_type_name(t: &str) -> MResult<()> {
    if t == "String" {
        return Err(MErr::invalid(
            "string data type not supported yet, please use VarChar type instead",
        ));
    }
    if SCALAR_TYPES.contains(&t) || is_vector(t) {
        return Ok(());
    }
    Err(MErr::invalid(format!(
        "data type {t} is invalid(case sensitive)"
    )))
}

fn param<'a>(f: &'a Field, key: &str) -> Option<&'a str> {
    f.type_params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn int_param(f: &Field, key: &str) -> MResult<Option<i64>> {
    match param(f, key) {
        None => Ok(None),
        Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
            MErr::invalid(format!(
                "type param({key}) of field {} should be an integer, got {v}",
                f.name
            ))
        }),
    }
}

/// Every rule of §1.9 on one field.
fn check_field(f: &Field) -> MResult<()> {
    check_field_name(&f.name)?;
    check_type_name(&f.data_type)?;
    if is_vector(&f.data_type) {
        if f.data_type == "SparseFloatVector" {
            if param(f, "dim").is_some() {
                return Err(MErr::invalid(format!(
                    "dim should not be specified for sparse vector field {}",
                    f.name
                )));
            }
        } else {
            let Some(dim) = int_param(f, "dim")? else {
                return Err(MErr::new(
                    CODE_MISSING,
                    format!("dimension is not defined in field type params of field {}, check type param `dim` for vector field: missing parameter", f.name),
                ));
            };
            let max = if f.data_type == "BinaryVector" {
                DIM_MAX * 8
            } else {
                DIM_MAX
            };
            if !(DIM_MIN..=max).contains(&dim) {
                return Err(MErr::invalid(format!(
                    "invalid dimension: {dim} of field {}. should be in range {DIM_MIN} ~ {max}",
                    f.name
                )));
            }
            if f.data_type == "BinaryVector" && dim % 8 != 0 {
                return Err(MErr::invalid(format!(
                    "dimension of binary vector field {} should be multiple of 8, got {dim}",
                    f.name
                )));
            }
        }
        if f.nullable {
            return Err(MErr::invalid(format!(
                "vector type not support null, type:{}, fieldName:{}",
                f.data_type, f.name
            )));
        }
    }
    let check_varchar = |f: &Field| -> MResult<()> {
        let Some(len) = int_param(f, "max_length")? else {
            return Err(MErr::new(
                CODE_MISSING,
                format!(
                    "type param(max_length) should be specified for the field({}) of collection: missing parameter",
                    f.name
                ),
            ));
        };
        if !(1..=VARCHAR_LENGTH_MAX).contains(&len) {
            return Err(MErr::invalid(format!(
                "the maximum length specified for the field({}) should be in (0, {VARCHAR_LENGTH_MAX}], but got {len} instead",
                f.name
            )));
        }
        Ok(())
    };
    if f.data_type == "VarChar" {
        check_varchar(f)?;
    }
    if f.data_type == "Array" {
        if f.element_type.is_empty() {
            return Err(MErr::invalid(format!(
                "element data type None is not valid for field {}",
                f.name
            )));
        }
        if !ARRAY_ELEMENT_TYPES.contains(&f.element_type.as_str()) {
            return Err(MErr::invalid(format!(
                "element type {} is not supported for field {}",
                f.element_type, f.name
            )));
        }
        let Some(cap) = int_param(f, "max_capacity")? else {
            return Err(MErr::new(
                CODE_MISSING,
                format!(
                    "type param(max_capacity) should be specified for array field {}: missing parameter",
                    f.name
                ),
            ));
        };
        if !(1..=ARRAY_CAPACITY_MAX).contains(&cap) {
            return Err(MErr::invalid(format!(
                "the maximum capacity specified for a Array should be in (0, {ARRAY_CAPACITY_MAX}], but got {cap}"
            )));
        }
        if f.element_type == "VarChar" {
            check_varchar(f)?;
        }
    }
    if f.auto_id && !f.primary {
        return Err(MErr::invalid(format!(
            "only primary field can speficy AutoID with true, field name = {}",
            f.name
        )));
    }
    Ok(())
}

/// The whole-schema rules: one primary key of a legal type, 1..=10 vector fields, at most
/// 64 fields, unique names, at most one partition key.
fn check_fields(fields: &[Field]) -> MResult<()> {
    if fields.len() > FIELDS_MAX {
        return Err(MErr::invalid(format!(
            "maximum field's number should be limited to {FIELDS_MAX}"
        )));
    }
    for (i, f) in fields.iter().enumerate() {
        check_field(f)?;
        if fields[..i].iter().any(|g| g.name == f.name) {
            return Err(MErr::invalid(format!(
                "duplicated field name {} found",
                f.name
            )));
        }
    }
    let primaries: Vec<&Field> = fields.iter().filter(|f| f.primary).collect();
    match primaries.as_slice() {
        [] => {
            return Err(MErr::new(
                CODE_MISSING,
                "primary key is not specified: missing parameter",
            ))
        }
        [p] => {
            if p.data_type != "Int64" && p.data_type != "VarChar" {
                return Err(MErr::invalid(format!(
                    "the data type of primary key should be Int64 or VarChar, got {}",
                    p.data_type
                )));
            }
            if p.nullable {
                return Err(MErr::invalid("primary field not support null"));
            }
        }
        _ => {
            return Err(MErr::invalid(
                "there are more than one primary key, field names",
            ))
        }
    }
    let vectors = fields.iter().filter(|f| is_vector(&f.data_type)).count();
    if vectors == 0 {
        return Err(MErr::invalid("schema does not contain vector field"));
    }
    if vectors > VECTOR_FIELDS_MAX {
        return Err(MErr::invalid(format!(
            "maximum vector field's number should be limited to {VECTOR_FIELDS_MAX}"
        )));
    }
    let keys: Vec<&Field> = fields.iter().filter(|f| f.partition_key).collect();
    if keys.len() > 1 {
        return Err(MErr::invalid("there are more than one partition key"));
    }
    if let Some(k) = keys.first() {
        if k.primary {
            return Err(MErr::invalid(
                "the partition key field must not be primary field",
            ));
        }
        if k.data_type != "Int64" && k.data_type != "VarChar" {
            return Err(MErr::invalid(
                "the data type of partition key should be Int64 or VarChar",
            ));
        }
    }
    if fields.iter().filter(|f| f.clustering_key).count() > 1 {
        return Err(MErr::invalid("there are more than one clustering key"));
    }
    Ok(())
}

fn metric_ok(vector_type: &str, metric: &str) -> bool {
    match vector_type {
        "BinaryVector" => matches!(
            metric,
            "HAMMING" | "JACCARD" | "SUBSTRUCTURE" | "SUPERSTRUCTURE" | "MHJACCARD"
        ),
        "SparseFloatVector" => matches!(metric, "IP" | "BM25"),
        _ => matches!(metric, "L2" | "IP" | "COSINE"),
    }
}

fn default_metric(vector_type: &str) -> &'static str {
    match vector_type {
        "BinaryVector" => "HAMMING",
        "SparseFloatVector" => "IP",
        _ => "COSINE",
    }
}

fn new_field(id: i64, name: &str, data_type: &str) -> Field {
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

/// A parsed `collections/create`: the collection and the indexes to create with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    pub spec: CollectionSpec,
    pub indexes: Vec<IndexSpec>,
    /// Quick create and a full create with `indexParams` load the collection.
    pub load: bool,
}

/// Parses and validates a `collections/create` body (reference §1.7, §1.9).
pub fn parse_create(body: &Body) -> MResult<CreateRequest> {
    let name = body.str_req("collectionName")?;
    check_collection_name(&name)?;
    let description = body.str_or_empty("description")?;
    if description.len() > DESCRIPTION_BYTES_MAX {
        return Err(MErr::invalid(format!(
            "the length of the description of collection {name} must be less than {DESCRIPTION_BYTES_MAX} bytes"
        )));
    }
    if body.get("externalSource").is_some() || body.get("externalSpec").is_some() {
        return Err(MErr::invalid("external collections are not supported"));
    }
    let params = body.object_opt("params")?.unwrap_or_default();
    let param_str = |k: &str| -> Option<String> { params.get(k).map(stringify) };
    let param_int = |k: &str| -> MResult<Option<i64>> {
        match param_str(k) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| MErr::invalid(format!("{k} should be an integer, got {v}"))),
        }
    };
    let shards = param_int("shardsNum")?.unwrap_or(1);
    if !(1..=SHARDS_MAX).contains(&shards) {
        return Err(MErr::invalid(format!(
            "maximum shards's number should be limited to {SHARDS_MAX}, got {shards}"
        )));
    }
    let top_level = body.str_opt("consistencyLevel")?;
    let in_params = param_str("consistencyLevel");
    let consistency = match (top_level, in_params) {
        (Some(a), Some(b)) if !a.is_empty() && a != b => {
            return Err(MErr::invalid(format!(
                "consistencyLevel conflicts: {a} at top level, {b} in params"
            )))
        }
        (Some(a), _) if !a.is_empty() => a,
        (_, Some(b)) => b,
        _ => "Bounded".to_string(),
    };
    if !CONSISTENCY_LEVELS.contains(&consistency.as_str()) {
        return Err(MErr::invalid(format!(
            "consistencyLevel can only be [Strong, Session, Bounded, Eventually, Customized], default: Bounded, got {consistency}"
        )));
    }
    let mut properties: Kvs = body.kvs_opt("properties")?.unwrap_or_default();
    if let Some(ttl) = param_str("ttlSeconds") {
        if properties
            .iter()
            .any(|(k, _)| k == "collection.ttl.seconds")
        {
            return Err(MErr::invalid(
                "ttl can only be set once, in params.ttlSeconds or in properties",
            ));
        }
        properties.push(("collection.ttl.seconds".into(), ttl));
    }
    for key in ["mmap.enabled", "partitionkey.isolation"] {
        if let Some(v) = param_str(key) {
            properties.push((key.into(), v));
        }
    }
    if let Some(v) = param_str("partitionKeyIsolation") {
        properties.push(("partitionkey.isolation".into(), v));
    }

    let schema = body.object_opt("schema")?;
    let schema_fields = match &schema {
        Some(s) => s.array_opt("fields")?.unwrap_or_default(),
        None => Vec::new(),
    };
    let (fields, enable_dynamic, indexes, load) = if schema_fields.is_empty() {
        quick_fields(body, &params)?
    } else {
        full_fields(body, schema.clone().unwrap_or_default(), schema_fields)?
    };
    check_fields(&fields)?;
    let partition_key = fields.iter().any(|f| f.partition_key);
    let partitions = if partition_key {
        let n = param_int("partitionsNum")?.unwrap_or(PARTITION_KEY_PARTITIONS_DEFAULT);
        if !(1..=PARTITION_KEY_PARTITIONS_MAX).contains(&n) {
            return Err(MErr::invalid(format!(
                "partition number ({n}) exceeds max configuration ({PARTITION_KEY_PARTITIONS_MAX})"
            )));
        }
        n as u32
    } else {
        0
    };
    Ok(CreateRequest {
        spec: CollectionSpec {
            name,
            description,
            fields,
            enable_dynamic,
            shards_num: shards as u32,
            partition_key_partitions: partitions,
            consistency_level: consistency,
            properties,
        },
        indexes,
        load,
    })
}

type Parsed = (Vec<Field>, bool, Vec<IndexSpec>, bool);

/// Quick create: `id` + `vector` (IDs 100, 101), dynamic fields on, an AUTOINDEX named after
/// the vector field with only the metric set, and a load.
fn quick_fields(body: &Body, params: &Body) -> MResult<Parsed> {
    let vtype = body
        .str_opt("vectorFieldType")?
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "FloatVector".into());
    if !is_vector(&vtype) || vtype == "Int8Vector" {
        return Err(MErr::invalid(format!(
            "vectorFieldType {vtype} is invalid, should be one of FloatVector, BinaryVector, Float16Vector, BFloat16Vector, SparseFloatVector"
        )));
    }
    let dim = body.int_opt("dimension")?;
    let metric = body
        .str_opt("metricType")?
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default_metric(&vtype).into());
    if !metric_ok(&vtype, &metric) {
        return Err(MErr::invalid(format!(
            "metric type {metric} is not valid for vector type {vtype}"
        )));
    }
    let id_type = match body.str_opt("idType")?.as_deref() {
        None | Some("") | Some("Int64") | Some("int64") => "Int64",
        Some("VarChar") | Some("Varchar") => "VarChar",
        Some(other) => {
            return Err(MErr::invalid(format!(
                "idType can only be [Int64, VarChar], default: Int64, got {other}"
            )))
        }
    };
    let pk_name = body
        .str_opt("primaryFieldName")?
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "id".into());
    let vec_name = body
        .str_opt("vectorFieldName")?
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "vector".into());
    let mut pk = new_field(100, &pk_name, id_type);
    pk.primary = true;
    pk.auto_id = body.bool_opt("autoID")?.unwrap_or(false);
    if id_type == "VarChar" {
        if let Some(len) = params.get("max_length") {
            pk.type_params.push(("max_length".into(), stringify(len)));
        }
    }
    let mut v = new_field(101, &vec_name, &vtype);
    if vtype == "SparseFloatVector" {
        if dim.is_some() {
            return Err(MErr::invalid(
                "dimension should not be specified for SparseFloatVector",
            ));
        }
    } else {
        match dim {
            None => return Err(MErr::invalid(
                "dimension is required for quickly create collection(default metric type: COSINE)",
            )),
            Some(d) => v.type_params.push(("dim".into(), d.to_string())),
        }
    }
    let dynamic = match params.get("enableDynamicField") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => stringify(other) != "false",
    };
    let index = IndexSpec {
        name: vec_name.clone(),
        field_name: vec_name,
        index_type: "AUTOINDEX".into(),
        metric_type: metric,
        params: Vec::new(),
    };
    Ok((vec![pk, v], dynamic, vec![index], true))
}

fn full_fields(body: &Body, schema: Body, raw_fields: Vec<Value>) -> MResult<Parsed> {
    let auto_id = schema.bool_opt("autoID")?.unwrap_or(false);
    let dynamic = schema.bool_opt("enableDynamicField")?.unwrap_or(false);
    let mut fields = Vec::with_capacity(raw_fields.len());
    for (i, raw) in raw_fields.into_iter().enumerate() {
        let Value::Object(m) = raw else {
            return Err(MErr::new(
                CODE_BAD_JSON,
                "can only accept json format request, error: json: cannot unmarshal into a field object",
            ));
        };
        let fb = Body::from_map(m);
        let name = fb.str_req("fieldName")?;
        let data_type = fb.str_req("dataType")?;
        let mut f = new_field(100 + i as i64, &name, &data_type);
        f.element_type = fb.str_or_empty("elementDataType")?;
        f.primary = fb.bool_opt("isPrimary")?.unwrap_or(false);
        f.partition_key = fb.bool_opt("isPartitionKey")?.unwrap_or(false);
        f.clustering_key = fb.bool_opt("isClusteringKey")?.unwrap_or(false);
        f.nullable = fb.bool_opt("nullable")?.unwrap_or(false);
        f.description = fb.str_or_empty("description")?;
        f.default_value = fb.get("defaultValue").map(|v| v.to_string());
        f.type_params = fb.kvs_opt("elementTypeParams")?.unwrap_or_default();
        if f.primary {
            f.auto_id = auto_id;
        }
        fields.push(f);
    }
    let mut indexes = Vec::new();
    let raw_indexes = body.array_opt("indexParams")?.unwrap_or_default();
    let load = !raw_indexes.is_empty();
    for raw in raw_indexes {
        let ix = parse_index(raw)?;
        if !fields.iter().any(|f| f.name == ix.field_name) {
            return Err(MErr::new(
                CODE_REQUIRED,
                format!(
                    "missing required parameters, error: `{}` hasn't defined in schema",
                    ix.field_name
                ),
            ));
        }
        indexes.push(ix);
    }
    Ok((fields, dynamic, indexes, load))
}

/// One `indexParams` entry: `index_type` from `indexType` or `params.index_type`,
/// `metric_type` when set, the name defaulting to the field's.
pub fn parse_index(raw: Value) -> MResult<IndexSpec> {
    let Value::Object(m) = raw else {
        return Err(MErr::new(
            CODE_BAD_JSON,
            "can only accept json format request, error: json: cannot unmarshal into an index object",
        ));
    };
    let b = Body::from_map(m);
    let field_name = b.str_req("fieldName")?;
    let mut name = b.str_or_empty("indexName")?;
    if name.is_empty() {
        name = field_name.clone();
    }
    check_index_name(&name)?;
    let mut params = b.kvs_opt("params")?.unwrap_or_default();
    let mut index_type = b.str_or_empty("indexType")?;
    if index_type.is_empty() {
        index_type = params
            .iter()
            .find(|(k, _)| k == "index_type")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "AUTOINDEX".into());
    }
    params.retain(|(k, _)| k != "index_type");
    let metric_type = b.str_or_empty("metricType")?;
    Ok(IndexSpec {
        name,
        field_name,
        index_type,
        metric_type,
        params,
    })
}

/// `collections/fields/add`'s `schema{…}`: one field in the shape of `schema.fields[]`
/// (ID 0: apply gives the next one). Milvus adds only nullable scalar fields that are not
/// a primary or partition key.
pub fn parse_add_field(body: &Body) -> MResult<Field> {
    let fb = body
        .object_opt("schema")?
        .ok_or_else(|| required("schema"))?;
    let name = fb.str_req("fieldName")?;
    let data_type = fb.str_req("dataType")?;
    let mut f = new_field(0, &name, &data_type);
    f.element_type = fb.str_or_empty("elementDataType")?;
    f.primary = fb.bool_opt("isPrimary")?.unwrap_or(false);
    f.partition_key = fb.bool_opt("isPartitionKey")?.unwrap_or(false);
    f.clustering_key = fb.bool_opt("isClusteringKey")?.unwrap_or(false);
    f.nullable = fb.bool_opt("nullable")?.unwrap_or(false);
    f.description = fb.str_or_empty("description")?;
    f.default_value = fb.get("defaultValue").map(|v| v.to_string());
    f.type_params = fb.kvs_opt("elementTypeParams")?.unwrap_or_default();
    if f.primary {
        return Err(MErr::invalid(format!(
            "not support to add pk field, field name = {name}"
        )));
    }
    if f.partition_key {
        return Err(MErr::invalid(format!(
            "not support to add partition key field, field name = {name}"
        )));
    }
    check_type_name(&f.data_type)?;
    if is_vector(&f.data_type) {
        return Err(MErr::invalid(format!(
            "not support to add vector field, field name = {name}"
        )));
    }
    if !f.nullable {
        return Err(MErr::invalid(format!(
            "added field must be nullable, please check it, field name = {name}"
        )));
    }
    check_field(&f)?;
    Ok(f)
}

/// Field type params `collections/fields/alter_properties` may change.
const ALTERABLE_FIELD_PARAMS: &[&str] = &["max_length", "max_capacity", "mmap.enabled"];

/// `collections/fields/alter_properties`: `fieldName*` and `fieldParams{}` (only
/// `max_length`, `max_capacity` and `mmap.enabled`, each checked as at creation).
pub fn parse_alter_field(body: &Body) -> MResult<(String, Vec<(String, String)>)> {
    let name = body.str_req("fieldName")?;
    let params = body
        .kvs_opt("fieldParams")?
        .filter(|p| !p.is_empty())
        .ok_or_else(|| required("fieldParams"))?;
    for (k, v) in &params {
        if !ALTERABLE_FIELD_PARAMS.contains(&k.as_str()) {
            return Err(MErr::invalid(format!(
                "{k} is not allowed to alter for field {name}"
            )));
        }
        let ok = match k.as_str() {
            "max_length" => v
                .parse::<i64>()
                .is_ok_and(|n| (1..=VARCHAR_LENGTH_MAX).contains(&n)),
            "max_capacity" => v
                .parse::<i64>()
                .is_ok_and(|n| (1..=ARRAY_CAPACITY_MAX).contains(&n)),
            _ => matches!(v.as_str(), "true" | "false"),
        };
        if !ok {
            return Err(MErr::invalid(format!(
                "invalid value {v} of {k} for field {name}"
            )));
        }
    }
    Ok((name, params))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// JSON values built from the names and shapes the create body uses, so the generator
    /// reaches deep into the parser instead of failing at the first field.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-4i64..40_000).prop_map(Value::from),
            prop::sample::select(vec![
                "",
                "id",
                "v",
                "Int64",
                "VarChar",
                "FloatVector",
                "Array",
                "BinaryVector",
                "SparseFloatVector",
                "String",
                "COSINE",
                "L2",
                "HAMMING",
                "Strong",
                "x-y",
                "1a",
            ])
            .prop_map(Value::from),
        ];
        let keys = prop::sample::select(vec![
            "collectionName",
            "dimension",
            "schema",
            "fields",
            "fieldName",
            "dataType",
            "isPrimary",
            "isPartitionKey",
            "elementTypeParams",
            "elementDataType",
            "dim",
            "max_length",
            "max_capacity",
            "params",
            "indexParams",
            "metricType",
            "idType",
            "vectorFieldType",
            "consistencyLevel",
            "partitionsNum",
            "shardsNum",
            "autoID",
            "nullable",
            "properties",
            "ttlSeconds",
            "enableDynamicField",
            "description",
        ]);
        leaf.prop_recursive(4, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::vec((keys.clone(), inner), 0..8).prop_map(|kvs| {
                    Value::Object(kvs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                }),
            ]
        })
    }

    proptest! {
        /// Whatever a client sends, parsing answers (a spec or a Milvus error), never panics,
        /// and an accepted spec satisfies the schema rules.
        #[test]
        fn create_bodies_never_panic(v in value()) {
            let bytes = serde_json::to_vec(&v).unwrap_or_default();
            if let Ok(body) = Body::parse(&bytes) {
                if let Ok(req) = parse_create(&body) {
                    prop_assert!(check_fields(&req.spec.fields).is_ok());
                    prop_assert!(req.spec.fields.len() <= FIELDS_MAX);
                    prop_assert!((1..=SHARDS_MAX).contains(&i64::from(req.spec.shards_num)));
                }
            }
        }

        #[test]
        fn garbage_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(body) = Body::parse(&bytes) {
                let _ = parse_create(&body);
            }
        }
    }

    #[test]
    fn quick_create_builds_milvus_schema() {
        let body = Body::parse(br#"{"collectionName":"c","dimension":8,"idType":"VarChar","params":{"max_length":32}}"#)
            .expect("json");
        let req = parse_create(&body).expect("valid");
        let f = &req.spec.fields;
        assert_eq!(
            (f[0].id, f[0].name.as_str(), f[0].data_type.as_str()),
            (100, "id", "VarChar")
        );
        assert_eq!(
            f[0].type_params,
            vec![("max_length".to_string(), "32".to_string())]
        );
        assert_eq!((f[1].id, f[1].name.as_str()), (101, "vector"));
        assert!(req.spec.enable_dynamic && req.load);
        assert_eq!(req.indexes[0].metric_type, "COSINE");
        assert_eq!(req.spec.consistency_level, "Bounded");
    }
}
