//! Milvus's system configuration (issue #12 item 5, design §10.8, reference §6): a
//! `milvus.yaml` given with `--milvus-config` is normalised the way Milvus does (lowercase,
//! dotted; nested maps dotted; lists comma-joined) and replicated in the coordinator table
//! (`CoordCommand::SetConfig`) so every node answers `SysConfig.Get` / `GetByPrefix` /
//! `ShowConfigurations` the same. mast's own Milvus defaults are read from these keys.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use std::rc::Rc;

use serde_json::{json, Value as Json};
use serde_yaml::Value;

use super::body::{required, Body, MErr, MResult, CODE_INVALID};
use super::{group_err, mesh_failed};
use crate::node::shard::Shard;

/// Keys one configuration may hold (Milvus's default file has about 700).
pub const KEYS_MAX: usize = 10_000;
/// Longest normalised key.
pub const KEY_BYTES_MAX: usize = 1024;
/// Longest value.
pub const VALUE_BYTES_MAX: usize = 64 * 1024;
/// Nesting depth of the YAML maps.
pub const DEPTH_MAX: usize = 32;

/// Key prefixes the root coordinator's `ShowConfigurations` returns (reference §6).
pub const SHOW_PREFIXES: [&str; 14] = [
    "metastore",
    "localstorage",
    "etcd",
    "tikv",
    "minio",
    "pulsar",
    "kafka",
    "rocksmq",
    "log",
    "grpc",
    "common",
    "quotaandlimits",
    "trace",
    "rootcoord.",
];

/// Normalised keys mast reads, and the check each value must pass at startup.
const CHECKED: [(&str, Check); 4] = [
    ("datacoord.segment.maxsize", Check::PositiveInt),
    ("datacoord.segment.assignmentexpiration", Check::PositiveInt),
    ("datacoord.segment.sealproportion", Check::Fraction),
    ("common.session.ttl", Check::PositiveInt),
];

#[derive(Clone, Copy)]
enum Check {
    PositiveInt,
    Fraction,
}

/// Lowercases a key and turns `/` paths (the 2.0 design's `/pulsar/ip`) into dotted ones.
pub fn normalise_key(key: &str) -> String {
    key.trim_matches('/').replace('/', ".").to_lowercase()
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some(String::new()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Tagged(t) => scalar(&t.value),
        Value::Sequence(_) | Value::Mapping(_) => None,
    }
}

fn flatten(
    prefix: &str,
    v: &Value,
    depth: usize,
    out: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    if depth > DEPTH_MAX {
        return Err(format!("{prefix}: nested deeper than {DEPTH_MAX} maps"));
    }
    match v {
        Value::Mapping(m) => {
            for (k, child) in m {
                let Some(k) = scalar(k).filter(|k| !k.is_empty()) else {
                    return Err(format!("{prefix}: a map key is not a plain scalar"));
                };
                let key = if prefix.is_empty() {
                    k.to_lowercase()
                } else {
                    format!("{prefix}.{}", k.to_lowercase())
                };
                flatten(&key, child, depth + 1, out)?;
            }
            Ok(())
        }
        Value::Sequence(items) => {
            let parts: Option<Vec<String>> = items.iter().map(scalar).collect();
            let Some(parts) = parts else {
                return Err(format!("{prefix}: a list holds a map or list"));
            };
            insert(prefix, parts.join(","), out)
        }
        other => match scalar(other) {
            Some(s) => insert(prefix, s, out),
            None => Err(format!("{prefix}: unsupported value")),
        },
    }
}

fn insert(key: &str, value: String, out: &mut BTreeMap<String, String>) -> Result<(), String> {
    if key.is_empty() {
        return Err("the document is a scalar, not a map of keys".into());
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(format!("{key}: key longer than {KEY_BYTES_MAX} bytes"));
    }
    if value.len() > VALUE_BYTES_MAX {
        return Err(format!("{key}: value longer than {VALUE_BYTES_MAX} bytes"));
    }
    if out.insert(key.to_string(), value).is_some() {
        return Err(format!("{key}: appears twice (keys ignore case)"));
    }
    if out.len() > KEYS_MAX {
        return Err(format!("more than {KEYS_MAX} keys"));
    }
    Ok(())
}

/// Parses a `milvus.yaml` into normalised `key → value` pairs, checking the values mast uses;
/// an error names the offending key.
pub fn parse(yaml: &str) -> Result<BTreeMap<String, String>, String> {
    let doc: Value = serde_yaml::from_str(yaml).map_err(|e| format!("not YAML: {e}"))?;
    let mut out = BTreeMap::new();
    if !matches!(doc, Value::Null) {
        flatten("", &doc, 0, &mut out)?;
    }
    for (key, check) in CHECKED {
        let Some(v) = out.get(key) else { continue };
        let good = match check {
            Check::PositiveInt => v.trim().parse::<u64>().is_ok_and(|n| n > 0),
            Check::Fraction => v.trim().parse::<f64>().is_ok_and(|f| f > 0.0 && f <= 1.0),
        };
        if !good {
            let want = match check {
                Check::PositiveInt => "a positive integer",
                Check::Fraction => "a number in (0, 1]",
            };
            return Err(format!("{key}: {v:?} is not {want}"));
        }
    }
    Ok(out)
}

/// `ShowConfigurations(pattern)`: the pairs under the root coordinator's prefixes whose key
/// contains `pattern`, ignoring case.
pub fn show<'a>(
    entries: &'a BTreeMap<String, String>,
    pattern: &str,
) -> Vec<(&'a String, &'a String)> {
    let pattern = pattern.to_lowercase();
    entries
        .iter()
        .filter(|(k, _)| SHOW_PREFIXES.iter().any(|p| k.starts_with(p)))
        .filter(|(k, _)| k.contains(&pattern))
        .collect()
}

/// `GetByPrefix(prefix)`: the pairs whose normalised key starts with the normalised prefix.
pub fn by_prefix<'a>(
    entries: &'a BTreeMap<String, String>,
    prefix: &str,
) -> Vec<(&'a String, &'a String)> {
    let prefix = normalise_key(prefix);
    entries
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .collect()
}

/// A `u64` setting from the replicated configuration, or `default` when absent or bad (the
/// startup check refuses bad values of the keys mast reads; this covers a config proposed by
/// an older or other node).
pub fn u64_or(entries: &BTreeMap<String, String>, key: &str, default: u64) -> u64 {
    entries
        .get(key)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

static LOADED: OnceLock<BTreeMap<String, String>> = OnceLock::new();

/// Records the configuration `--milvus-config` loaded; the group 0 leader proposes it.
pub fn configure(entries: BTreeMap<String, String>) {
    let _ = LOADED.set(entries);
}

/// The configuration this process loaded, if any.
pub fn loaded() -> Option<&'static BTreeMap<String, String>> {
    LOADED.get()
}

/// Keys one `sysconfig/get` may name.
pub const GET_KEYS_MAX: usize = 1024;

/// Runs `f` on the replicated configuration after a linearizable read on group 0.
async fn read<T: Send + 'static>(
    me: &Rc<Shard>,
    f: impl FnOnce(&BTreeMap<String, String>) -> MResult<T> + Send + 'static,
) -> MResult<T> {
    me.run_on(0, move |s0: Rc<Shard>| async move {
        s0.group.read_barrier().await.map_err(group_err)?;
        let st = s0.group.state();
        f(&st.milvus_coord.config.entries)
    })
    .await
    .map_err(|_| mesh_failed())?
}

fn pairs(found: Vec<(&String, &String)>) -> Json {
    let (keys, values): (Vec<_>, Vec<_>) = found.into_iter().unzip();
    json!({"keys": keys, "values": values})
}

/// `sysconfig/get`: `{keys}` → `{keys, values}` in the order asked (`SysConfig.Get`). As
/// Milvus's multi-load, a key that is not set fails the call, naming every such key.
pub async fn get(me: Rc<Shard>, b: Body) -> MResult<Json> {
    let keys = b.strings_opt("keys")?.ok_or_else(|| required("keys"))?;
    if keys.len() > GET_KEYS_MAX {
        return Err(MErr::invalid(format!(
            "{} keys, more than {GET_KEYS_MAX}",
            keys.len()
        )));
    }
    read(&me, move |m| {
        let mut values = Vec::with_capacity(keys.len());
        let mut invalid = Vec::new();
        for k in &keys {
            match m.get(&normalise_key(k)) {
                Some(v) => values.push(v.clone()),
                None => invalid.push(k.clone()),
            }
        }
        if !invalid.is_empty() {
            return Err(MErr::new(
                CODE_INVALID,
                format!("there are invalid keys: {invalid:?}"),
            ));
        }
        Ok(json!({"keys": keys, "values": values}))
    })
    .await
}

/// `sysconfig/get_by_prefix`: `{prefix}` → `{keys, values}` (`SysConfig.GetByPrefix`).
pub async fn get_by_prefix(me: Rc<Shard>, b: Body) -> MResult<Json> {
    let prefix = b.str_or_empty("prefix")?;
    read(&me, move |m| Ok(pairs(by_prefix(m, &prefix)))).await
}

/// `show_configurations`: `{pattern}` → `{configuations: [{key, value}]}`, the field name
/// spelled as in Milvus's `ShowConfigurationsResponse`.
pub async fn show_configurations(me: Rc<Shard>, b: Body) -> MResult<Json> {
    let pattern = b.str_or_empty("pattern")?;
    read(&me, move |m| {
        let list: Vec<Json> = show(m, &pattern)
            .into_iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        Ok(json!({"configuations": list}))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_maps_dot_lists_join_and_keys_lowercase() {
        let m = parse(
            "etcd:\n  endpoints:\n    - localhost:2379\n    - other:2379\n  rootPath: by-dev\n\
             dataCoord:\n  segment:\n    maxSize: 512\n    sealProportion: 0.25\n\
             common:\n  security:\n    authorizationEnabled: false\n  empty:\n",
        )
        .unwrap();
        assert_eq!(m["etcd.endpoints"], "localhost:2379,other:2379");
        assert_eq!(m["etcd.rootpath"], "by-dev");
        assert_eq!(m["datacoord.segment.maxsize"], "512");
        assert_eq!(m["datacoord.segment.sealproportion"], "0.25");
        assert_eq!(m["common.security.authorizationenabled"], "false");
        assert_eq!(m["common.empty"], "");
        assert_eq!(m.len(), 6);
    }

    #[test]
    fn bad_input_names_the_key() {
        let e = parse("dataCoord:\n  segment:\n    maxSize: big\n").unwrap_err();
        assert!(e.contains("datacoord.segment.maxsize"), "{e}");
        let e = parse("common:\n  session:\n    ttl: 0\n").unwrap_err();
        assert!(e.contains("common.session.ttl"), "{e}");
        let e = parse("a:\n  B: 1\n  b: 2\n").unwrap_err();
        assert!(e.contains("a.b"), "{e}");
        let e = parse("a: [b: 1]\n").unwrap_err();
        assert!(e.starts_with("a:"), "{e}");
        assert!(parse("a: [1\n").unwrap_err().starts_with("not YAML"));
        assert!(parse("just a string").is_err());
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn lookups_match_milvus() {
        let m = parse("rootCoord:\n  dmlChannelNum: 16\nproxy:\n  port: 19530\nrootCoordX: 1\netcd:\n  rootPath: x\n").unwrap();
        let keys: Vec<_> = show(&m, "DML")
            .into_iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["rootcoord.dmlchannelnum"]);
        // The proxy's keys are not the root coordinator's; `rootcoordx` lacks the dot.
        let all: Vec<_> = show(&m, "").into_iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(all, ["etcd.rootpath", "rootcoord.dmlchannelnum"]);
        let p: Vec<_> = by_prefix(&m, "/rootCoord")
            .into_iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(p, ["rootcoord.dmlchannelnum", "rootcoordx"]);
        assert_eq!(normalise_key("/Proxy/Port"), "proxy.port");
        assert_eq!(u64_or(&m, "proxy.port", 1), 19530);
        assert_eq!(u64_or(&m, "proxy.missing", 7), 7);
    }
}
