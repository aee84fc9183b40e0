//! Milvus's REST v2 data-definition API on a real `mast server` (one node, two shards so
//! databases land on different shards): every validation rule of reference §1.9 and every
//! error code of §1.5 that a DDL path can produce, as a table of (path, headers, body,
//! expected code), then the reply shapes a client reads and the idempotency rules of §1.6.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{Cluster, ClusterOptions, HttpClient};

struct Api {
    c: HttpClient,
}

impl Api {
    fn raw(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Vec<u8>) {
        let r = self
            .c
            .request(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"));
        (r.status, r.body)
    }

    /// POSTs to `/v2/vectordb/<path>` and returns the envelope (asserting HTTP 200).
    fn post_h(&mut self, path: &str, headers: &[(&str, &str)], body: &Value) -> Value {
        let (status, bytes) = self.raw(
            "POST",
            &format!("/v2/vectordb/{path}"),
            headers,
            body.to_string().as_bytes(),
        );
        let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{path}: not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        assert_eq!(status, 200, "{path} {body}: HTTP {status} {v}");
        v
    }

    fn post(&mut self, path: &str, body: Value) -> Value {
        self.post_h(path, &[], &body)
    }

    /// Expects code 0 and returns `data`.
    fn ok(&mut self, path: &str, body: Value) -> Value {
        let v = self.post(path, body.clone());
        assert_eq!(v["code"], 0, "{path} {body}: {v}");
        assert!(v.get("message").map_or(true, |m| m.is_string()));
        v["data"].clone()
    }

    /// Expects error `code` (and no `data`), returns the message.
    fn err(&mut self, path: &str, body: Value, code: i64) -> String {
        let v = self.post(path, body.clone());
        assert_eq!(v["code"], code, "{path} {body}: {v}");
        assert!(
            v.get("data").is_none(),
            "{path}: an error carries no data: {v}"
        );
        v["message"].as_str().unwrap_or_default().to_string()
    }
}

fn fields(list: Vec<Value>) -> Value {
    json!({"fields": list})
}

fn pk() -> Value {
    json!({"fieldName": "id", "dataType": "Int64", "isPrimary": true})
}

fn vecf(name: &str, dim: i64) -> Value {
    json!({"fieldName": name, "dataType": "FloatVector", "elementTypeParams": {"dim": dim}})
}

#[test]
fn every_rule_and_code() {
    let cluster = Cluster::start(ClusterOptions::new(1, 2)).expect("cluster");
    cluster
        .wait_for_leaders(Duration::from_secs(30))
        .expect("leaders");
    let mut api = Api {
        c: cluster.client(1),
    };

    // Transport: unknown path, wrong method.
    assert_eq!(api.raw("POST", "/v2/vectordb/nope/list", &[], b"{}").0, 404);
    assert_eq!(
        api.raw("POST", "/v2/vectordb/collections/nope", &[], b"{}")
            .0,
        404
    );
    assert_eq!(
        api.raw("GET", "/v2/vectordb/collections/list", &[], b"").0,
        405
    );
    assert_eq!(
        api.raw("PUT", "/v2/vectordb/collections/list", &[], b"{}")
            .0,
        405
    );

    // Root coordinator state.
    let (status, body) = api.raw("POST", "/v2/rootcoord/component_states", &[], b"{}");
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!((status, v["code"].clone()), (200, json!(0)), "{v}");
    assert_eq!(v["data"]["state"]["stateCode"], "Healthy", "{v}");
    assert_eq!(v["data"]["state"]["role"], "rootcoord");

    // Body rules (§1.3).
    for bad in [&b""[..], b"   ", b"[1]", b"{", b"\"x\""] {
        let (s, b) = api.raw("POST", "/v2/vectordb/collections/list", &[], bad);
        let v: Value = serde_json::from_slice(&b).expect("json");
        assert_eq!((s, v["code"].clone()), (200, json!(1801)), "{bad:?}: {v}");
    }
    api.err(
        "collections/create",
        json!({"collectionName": "c", "dimension": "4"}),
        1801,
    );
    api.err(
        "collections/create",
        json!({"collectionName": "c", "dimension": 4, "autoID": 1}),
        1801,
    );
    api.err("collections/create", json!({}), 1802);
    api.err("collections/create", json!({"collectionName": ""}), 1802);
    api.err("collections/describe", json!({}), 1802);
    api.err("partitions/create", json!({"collectionName": "c"}), 1802);
    api.err("aliases/create", json!({"collectionName": "c"}), 1802);
    api.err("indexes/create", json!({"collectionName": "c"}), 1802);
    api.err("databases/create", json!({}), 1802);
    // Case-insensitive field names: `COLLECTIONNAME`, `Dimension`.
    assert_eq!(
        api.ok(
            "collections/create",
            json!({"COLLECTIONNAME": "ci", "Dimension": 4})
        ),
        json!({})
    );
    assert_eq!(
        api.ok("collections/has", json!({"collectionname": "ci"})),
        json!({"has": true})
    );
    // Request-Timeout must be an integer of seconds.
    let v = api.post_h(
        "collections/list",
        &[("request-timeout", "abc")],
        &json!({}),
    );
    assert_eq!(v["code"], 1100, "{v}");
    let v = api.post_h("collections/list", &[("request-timeout", "5")], &json!({}));
    assert_eq!(v["code"], 0, "{v}");

    // Names (§1.9).
    let long = "a".repeat(256);
    for bad in ["1c", "c-1", "c c", "", " ", long.as_str()] {
        let code = if bad.is_empty() { 1802 } else { 1100 };
        api.err(
            "collections/create",
            json!({"collectionName": bad, "dimension": 4}),
            code,
        );
    }
    api.ok(
        "collections/create",
        json!({"collectionName": "a".repeat(255), "dimension": 4}),
    );
    api.ok(
        "collections/drop",
        json!({"collectionName": "a".repeat(255)}),
    );
    api.err(
        "collections/create",
        json!({"collectionName": "c", "dimension": 4, "description": "d".repeat(1025)}),
        1100,
    );

    // Quick create rules (§1.7).
    api.err("collections/create", json!({"collectionName": "q"}), 1100);
    for dim in [0, 1, 32_769] {
        api.err(
            "collections/create",
            json!({"collectionName": "q", "dimension": dim}),
            1100,
        );
    }
    api.err(
        "collections/create",
        json!({"collectionName": "q", "dimension": 4, "idType": "Float"}),
        1100,
    );
    api.err(
        "collections/create",
        json!({"collectionName": "q", "dimension": 4, "vectorFieldType": "Bogus"}),
        1100,
    );
    api.err(
        "collections/create",
        json!({"collectionName": "q", "dimension": 4, "metricType": "HAMMING"}),
        1100,
    );
    api.err(
        "collections/create",
        json!({"collectionName": "q", "dimension": 4, "vectorFieldType": "SparseFloatVector"}),
        1100,
    );
    api.err(
        "collections/create",
        json!({"collectionName": "q", "dimension": 4, "params": {"shardsNum": 17}}),
        1100,
    );
    api.err(
        "collections/create",
        json!({"collectionName": "q", "dimension": 4, "consistencyLevel": "Weird"}),
        1100,
    );
    api.err("collections/create", json!({"collectionName": "q", "dimension": 4, "consistencyLevel": "Strong", "params": {"consistencyLevel": "Session"}}), 1100);
    api.err("collections/create", json!({"collectionName": "q", "dimension": 4, "params": {"ttlSeconds": 5}, "properties": {"collection.ttl.seconds": "6"}}), 1100);
    api.err(
        "collections/create",
        json!({"collectionName": "q", "dimension": 4, "externalSource": "s3://x"}),
        1100,
    );

    // Full schema rules (§1.9).
    let full = |schema: Value| json!({"collectionName": "f", "schema": schema});
    let cases: Vec<(Value, i64)> = vec![
        (
            fields(vec![
                pk(),
                json!({"fieldName": "v", "dataType": "FLOATVECTOR", "elementTypeParams": {"dim": 4}}),
            ]),
            1100,
        ),
        (
            fields(vec![
                pk(),
                vecf("v", 4),
                json!({"fieldName": "s", "dataType": "String"}),
            ]),
            1100,
        ),
        (
            fields(vec![
                pk(),
                vecf("v", 4),
                json!({"fieldName": "s", "dataType": "None"}),
            ]),
            1100,
        ),
        (
            fields(vec![pk(), vecf("v", 4), json!({"fieldName": "s"})]),
            1802,
        ),
        (
            fields(vec![pk(), vecf("v", 4), json!({"dataType": "Int8"})]),
            1802,
        ),
        (
            fields(vec![
                pk(),
                vecf("v", 4),
                json!({"fieldName": "s", "dataType": "VarChar"}),
            ]),
            1101,
        ),
        (
            fields(vec![
                pk(),
                vecf("v", 4),
                json!({"fieldName": "s", "dataType": "VarChar", "elementTypeParams": {"max_length": 65_536}}),
            ]),
            1100,
        ),
        (
            fields(vec![
                pk(),
                vecf("v", 4),
                json!({"fieldName": "s", "dataType": "VarChar", "elementTypeParams": {"max_length": 0}}),
            ]),
            1100,
        ),
        (
            fields(vec![
                pk(),
                vecf("v", 4),
                json!({"fieldName": "a", "dataType": "Array", "elementDataType": "Int64"}),
            ]),
            1101,
        ),
        (
            fields(vec![
                pk(),
                vecf("v", 4),
                json!({"fieldName": "a", "dataType": "Array", "elementDataType": "Int64", "elementTypeParams": {"max_capacity": 4097}}),
            ]),
            1100,
        ),
        (
            fields(vec![
                pk(),
                vecf("v", 4),
                json!({"fieldName": "a", "dataType": "Array", "elementTypeParams": {"max_capacity": 4}}),
            ]),
            1100,
        ),
        (
            fields(vec![
                pk(),
                vecf("v", 4),
                json!({"fieldName": "a", "dataType": "Array", "elementDataType": "JSON", "elementTypeParams": {"max_capacity": 4}}),
            ]),
            1100,
        ),
        (
            fields(vec![
                pk(),
                vecf("v", 4),
                json!({"fieldName": "a", "dataType": "Array", "elementDataType": "VarChar", "elementTypeParams": {"max_capacity": 4}}),
            ]),
            1101,
        ),
        (fields(vec![vecf("v", 4)]), 1101),
        (
            fields(vec![
                pk(),
                json!({"fieldName": "id2", "dataType": "Int64", "isPrimary": true}),
                vecf("v", 4),
            ]),
            1100,
        ),
        (
            fields(vec![
                json!({"fieldName": "id", "dataType": "Float", "isPrimary": true}),
                vecf("v", 4),
            ]),
            1100,
        ),
        (
            fields(vec![
                json!({"fieldName": "id", "dataType": "Int64", "isPrimary": true, "nullable": true}),
                vecf("v", 4),
            ]),
            1100,
        ),
        (fields(vec![pk()]), 1100),
        (
            fields(
                std::iter::once(pk())
                    .chain((0..11).map(|i| vecf(&format!("v{i}"), 4)))
                    .collect(),
            ),
            1100,
        ),
        (
            fields(
                std::iter::once(pk())
                    .chain(std::iter::once(vecf("v", 4)))
                    .chain(
                        (0..63).map(|i| json!({"fieldName": format!("s{i}"), "dataType": "Int8"})),
                    )
                    .collect(),
            ),
            1100,
        ),
        (fields(vec![pk(), vecf("v", 1)]), 1100),
        (fields(vec![pk(), vecf("v", 32_769)]), 1100),
        (
            fields(vec![
                pk(),
                json!({"fieldName": "v", "dataType": "FloatVector"}),
            ]),
            1101,
        ),
        (
            fields(vec![
                pk(),
                json!({"fieldName": "b", "dataType": "BinaryVector", "elementTypeParams": {"dim": 12}}),
            ]),
            1100,
        ),
        (
            fields(vec![
                pk(),
                json!({"fieldName": "sp", "dataType": "SparseFloatVector", "elementTypeParams": {"dim": 12}}),
            ]),
            1100,
        ),
        (
            fields(vec![
                pk(),
                json!({"fieldName": "v", "dataType": "FloatVector", "nullable": true, "elementTypeParams": {"dim": 4}}),
            ]),
            1100,
        ),
        (
            fields(vec![
                pk(),
                vecf("v", 4),
                json!({"fieldName": "1x", "dataType": "Int8"}),
            ]),
            1701,
        ),
        (
            fields(vec![
                pk(),
                vecf("v", 4),
                json!({"fieldName": "Timestamp", "dataType": "Int8"}),
            ]),
            1701,
        ),
        (
            fields(vec![
                pk(),
                vecf("v", 4),
                json!({"fieldName": "and", "dataType": "Int8"}),
            ]),
            1701,
        ),
        (
            fields(vec![
                pk(),
                vecf("v", 4),
                json!({"fieldName": "v", "dataType": "Int8"}),
            ]),
            1100,
        ),
        (
            fields(vec![
                pk(),
                vecf("v", 4),
                json!({"fieldName": "k", "dataType": "Float", "isPartitionKey": true}),
            ]),
            1100,
        ),
        (
            fields(vec![
                pk(),
                vecf("v", 4),
                json!({"fieldName": "k", "dataType": "Int64", "isPartitionKey": true}),
                json!({"fieldName": "k2", "dataType": "Int64", "isPartitionKey": true}),
            ]),
            1100,
        ),
    ];
    for (schema, code) in cases {
        api.err("collections/create", full(schema), code);
    }
    let bogus_index = json!({"collectionName": "f", "schema": fields(vec![pk(), vecf("v", 4)]),
                             "indexParams": [{"fieldName": "nope", "metricType": "L2"}]});
    api.err("collections/create", bogus_index, 1802);
    let pk_partitions = json!({"collectionName": "f", "params": {"partitionsNum": 1025},
        "schema": fields(vec![pk(), vecf("v", 4), json!({"fieldName": "k", "dataType": "Int64", "isPartitionKey": true})])});
    api.err("collections/create", pk_partitions, 1100);

    // Quick create: the schema Milvus builds, an index and a load.
    api.ok(
        "collections/create",
        json!({"collectionName": "c1", "dimension": 4}),
    );
    api.ok(
        "collections/create",
        json!({"collectionName": "c1", "dimension": 4}),
    );
    api.err(
        "collections/create",
        json!({"collectionName": "c1", "dimension": 8}),
        1100,
    );
    let d = api.post("collections/describe", json!({"collectionName": "c1"}));
    assert_eq!(d["code"], 0, "{d}");
    assert!(d["message"].is_string(), "{d}");
    let d = d["data"].clone();
    assert!(
        d["collectionID"].as_u64().is_some_and(|id| id >= 1000),
        "{d}"
    );
    assert_eq!(d["fields"][0]["name"], "id");
    assert_eq!(d["fields"][0]["id"], 100);
    assert_eq!(d["fields"][0]["type"], "Int64");
    assert_eq!(d["fields"][0]["primaryKey"], true);
    assert_eq!(d["fields"][1]["name"], "vector");
    assert_eq!(d["fields"][1]["id"], 101);
    assert_eq!(d["fields"][1]["type"], "FloatVector");
    assert_eq!(
        d["fields"][1]["params"],
        json!([{"key": "dim", "value": "4"}])
    );
    assert_eq!(
        d["fields"].as_array().map(Vec::len),
        Some(2),
        "system fields are hidden: {d}"
    );
    assert_eq!(d["load"], "LoadStateLoaded");
    assert_eq!(
        d["indexes"],
        json!([{"fieldName": "vector", "indexName": "vector", "metricType": "COSINE"}])
    );
    assert_eq!(d["partitionsNum"], 1);
    assert_eq!(d["shardsNum"], 1);
    assert_eq!(d["consistencyLevel"], "Bounded");
    assert_eq!(d["enableDynamicField"], true);
    assert_eq!(d["autoId"], false);
    assert_eq!(d["aliases"], json!([]));
    let cid = d["collectionID"].as_u64().unwrap_or(0);
    let msg = api.err(
        "collections/describe",
        json!({"collectionName": "nope"}),
        100,
    );
    assert!(
        msg.contains("can't find collection[database=default][collection=nope]"),
        "{msg}"
    );
    assert_eq!(
        api.ok("collections/has", json!({"collectionName": "nope"})),
        json!({"has": false})
    );
    assert_eq!(api.ok("collections/list", json!({})), json!(["c1", "ci"]));
    assert_eq!(
        api.ok("collections/get_stats", json!({"collectionName": "c1"})),
        json!({"rowCount": 0})
    );
    api.err(
        "collections/get_stats",
        json!({"collectionName": "nope"}),
        100,
    );
    assert_eq!(
        api.ok(
            "collections/get_load_state",
            json!({"collectionName": "c1"})
        )["loadState"],
        "LoadStateLoaded"
    );

    // Full schema with a partition key and an index.
    api.ok("collections/create", json!({"collectionName": "f", "params": {"partitionsNum": 4},
        "schema": {"autoID": true, "fields": [pk(), vecf("v", 8), {"fieldName": "k", "dataType": "VarChar", "isPartitionKey": true, "elementTypeParams": {"max_length": 16}}]},
        "indexParams": [{"fieldName": "v", "indexName": "v_idx", "metricType": "L2", "indexType": "HNSW", "params": {"M": 8}}]}));
    let d = api.ok("collections/describe", json!({"collectionName": "f"}));
    assert_eq!(d["partitionsNum"], 4);
    assert_eq!(d["autoId"], true);
    assert_eq!(d["enableDynamicField"], false);
    assert_eq!(d["load"], "LoadStateLoaded");
    assert_eq!(d["fields"][2]["partitionKey"], true);
    assert_eq!(
        d["fields"][2]["params"],
        json!([{"key": "max_length", "value": "16"}])
    );
    assert_eq!(
        api.ok("partitions/list", json!({"collectionName": "f"})),
        json!(["_default_0", "_default_1", "_default_2", "_default_3"])
    );
    api.err(
        "partitions/create",
        json!({"collectionName": "f", "partitionName": "p"}),
        1100,
    );
    let ix = api.ok(
        "indexes/describe",
        json!({"collectionName": "f", "indexName": "v_idx"}),
    );
    assert_eq!(ix[0]["indexType"], "HNSW", "{ix}");
    assert_eq!(ix[0]["metricType"], "L2");
    assert_eq!(ix[0]["fieldName"], "v");
    assert_eq!(ix[0]["indexState"], "Finished");
    // Without indexParams the full form neither indexes nor loads.
    api.ok(
        "collections/create",
        json!({"collectionName": "plain", "schema": fields(vec![pk(), vecf("v", 4)])}),
    );
    let d = api.ok("collections/describe", json!({"collectionName": "plain"}));
    assert_eq!(
        (d["load"].clone(), d["indexes"].clone()),
        (json!("LoadStateNotLoad"), json!([]))
    );
    api.err("collections/load", json!({"collectionName": "plain"}), 700);

    // Partitions.
    api.ok(
        "partitions/create",
        json!({"collectionName": "c1", "partitionName": "p1"}),
    );
    api.ok(
        "partitions/create",
        json!({"collectionName": "c1", "partitionName": "p1"}),
    );
    api.err(
        "partitions/create",
        json!({"collectionName": "c1", "partitionName": "-p"}),
        1100,
    );
    api.err(
        "partitions/create",
        json!({"collectionName": "c1", "partitionName": "p".repeat(256)}),
        1100,
    );
    api.err(
        "partitions/create",
        json!({"collectionName": "nope", "partitionName": "p"}),
        100,
    );
    assert_eq!(
        api.ok("partitions/list", json!({"collectionName": "c1"})),
        json!(["_default", "p1"])
    );
    assert_eq!(
        api.ok(
            "partitions/has",
            json!({"collectionName": "c1", "partitionName": "p1"})
        ),
        json!({"has": true})
    );
    assert_eq!(
        api.ok(
            "partitions/has",
            json!({"collectionName": "c1", "partitionName": "p9"})
        ),
        json!({"has": false})
    );
    api.err(
        "partitions/get_stats",
        json!({"collectionName": "c1", "partitionName": "p9"}),
        200,
    );
    api.err(
        "partitions/drop",
        json!({"collectionName": "c1", "partitionName": "_default"}),
        1100,
    );
    api.ok(
        "partitions/drop",
        json!({"collectionName": "c1", "partitionName": "p9"}),
    );
    api.ok(
        "partitions/load",
        json!({"collectionName": "c1", "partitionNames": ["p1"]}),
    );
    api.err(
        "partitions/drop",
        json!({"collectionName": "c1", "partitionName": "p1"}),
        1100,
    );
    api.ok(
        "partitions/release",
        json!({"collectionName": "c1", "partitionNames": ["p1"]}),
    );
    api.err(
        "partitions/load",
        json!({"collectionName": "c1", "partitionNames": ["p9"]}),
        200,
    );
    api.err("partitions/load", json!({"collectionName": "c1"}), 1802);
    api.ok(
        "partitions/drop",
        json!({"collectionName": "c1", "partitionName": "p1"}),
    );
    // 1,024 partitions per collection.
    for i in 1..1024 {
        api.ok(
            "partitions/create",
            json!({"collectionName": "plain", "partitionName": format!("p{i}")}),
        );
    }
    api.err(
        "partitions/create",
        json!({"collectionName": "plain", "partitionName": "one_more"}),
        1100,
    );
    assert_eq!(
        api.ok("collections/describe", json!({"collectionName": "plain"}))["partitionsNum"],
        1024
    );

    // Aliases.
    api.ok(
        "aliases/create",
        json!({"collectionName": "c1", "aliasName": "a1"}),
    );
    api.ok(
        "aliases/create",
        json!({"collectionName": "c1", "aliasName": "a1"}),
    );
    api.err(
        "aliases/create",
        json!({"collectionName": "f", "aliasName": "a1"}),
        1602,
    );
    api.err(
        "aliases/create",
        json!({"collectionName": "f", "aliasName": "c1"}),
        1601,
    );
    api.err(
        "collections/create",
        json!({"collectionName": "a1", "dimension": 4}),
        1601,
    );
    api.err(
        "aliases/create",
        json!({"collectionName": "nope", "aliasName": "a2"}),
        100,
    );
    api.err(
        "aliases/create",
        json!({"collectionName": "c1", "aliasName": "2a"}),
        1100,
    );
    assert_eq!(
        api.ok("aliases/describe", json!({"aliasName": "a1"})),
        json!({"dbName": "default", "collectionName": "c1", "aliasName": "a1"})
    );
    api.err("aliases/describe", json!({"aliasName": "a9"}), 1600);
    api.err(
        "aliases/alter",
        json!({"collectionName": "f", "aliasName": "a9"}),
        1600,
    );
    assert_eq!(api.ok("aliases/list", json!({})), json!(["a1"]));
    assert_eq!(
        api.ok("collections/describe", json!({"collectionName": "c1"}))["aliases"],
        json!(["a1"])
    );
    assert_eq!(
        api.ok("collections/describe", json!({"collectionName": "a1"}))["collectionName"],
        "c1"
    );
    api.ok(
        "aliases/alter",
        json!({"collectionName": "f", "aliasName": "a1"}),
    );
    assert_eq!(
        api.ok("aliases/list", json!({"collectionName": "f"})),
        json!(["a1"])
    );
    assert_eq!(
        api.ok("aliases/list", json!({"collectionName": "c1"})),
        json!([])
    );
    api.ok("aliases/drop", json!({"aliasName": "a1"}));
    api.ok("aliases/drop", json!({"aliasName": "a1"}));

    // Indexes.
    assert_eq!(
        api.ok("indexes/list", json!({"collectionName": "c1"})),
        json!(["vector"])
    );
    api.err(
        "indexes/describe",
        json!({"collectionName": "c1", "indexName": "nope"}),
        700,
    );
    api.err(
        "indexes/drop",
        json!({"collectionName": "c1", "indexName": "vector"}),
        1100,
    );
    api.ok("collections/release", json!({"collectionName": "c1"}));
    assert_eq!(
        api.ok(
            "collections/get_load_state",
            json!({"collectionName": "c1"})
        )["loadState"],
        "LoadStateNotLoad"
    );
    api.ok(
        "indexes/drop",
        json!({"collectionName": "c1", "indexName": "vector"}),
    );
    api.err(
        "indexes/drop",
        json!({"collectionName": "c1", "indexName": "vector"}),
        700,
    );
    api.err(
        "indexes/create",
        json!({"collectionName": "c1", "indexParams": [{"fieldName": "nope"}]}),
        1700,
    );
    api.err("indexes/create", json!({"collectionName": "c1", "indexParams": [{"fieldName": "vector", "indexName": "1bad"}]}), 1100);
    api.ok("indexes/create", json!({"collectionName": "c1", "indexParams": [{"fieldName": "vector", "indexName": "vi", "metricType": "IP", "params": {"index_type": "IVF_FLAT", "nlist": 16}}]}));
    api.ok("indexes/create", json!({"collectionName": "c1", "indexParams": [{"fieldName": "vector", "indexName": "vi", "metricType": "IP", "params": {"index_type": "IVF_FLAT", "nlist": 16}}]}));
    api.err("indexes/create", json!({"collectionName": "c1", "indexParams": [{"fieldName": "vector", "indexName": "vj", "metricType": "L2"}]}), 702);
    let ix = api.ok(
        "indexes/describe",
        json!({"collectionName": "c1", "indexName": "vi"}),
    );
    assert_eq!(ix[0]["indexType"], "IVF_FLAT", "{ix}");
    api.ok(
        "indexes/alter_properties",
        json!({"collectionName": "c1", "indexName": "vi", "properties": {"mmap.enabled": true}}),
    );
    let ix = api.ok(
        "indexes/describe",
        json!({"collectionName": "c1", "indexName": "vi"}),
    );
    assert_eq!(ix[0]["mmap.enabled"], "true", "{ix}");
    api.ok(
        "indexes/drop_properties",
        json!({"collectionName": "c1", "indexName": "vi", "propertyKeys": ["mmap.enabled"]}),
    );
    let ix = api.ok(
        "indexes/describe",
        json!({"collectionName": "c1", "indexName": "vi"}),
    );
    assert_eq!(ix[0]["mmap.enabled"], "false", "{ix}");
    api.err(
        "indexes/alter_properties",
        json!({"collectionName": "c1", "indexName": "nope", "properties": {"a": 1}}),
        700,
    );
    api.ok("collections/load", json!({"collectionName": "c1"}));

    // Properties, rename.
    api.ok(
        "collections/alter_properties",
        json!({"collectionName": "c1", "properties": {"collection.ttl.seconds": 60}}),
    );
    assert_eq!(
        api.ok("collections/describe", json!({"collectionName": "c1"}))["properties"],
        json!([{"key": "collection.ttl.seconds", "value": "60"}])
    );
    api.ok(
        "collections/drop_properties",
        json!({"collectionName": "c1", "propertyKeys": ["collection.ttl.seconds"]}),
    );
    api.ok(
        "collections/rename",
        json!({"collectionName": "c1", "newCollectionName": "c2"}),
    );
    api.err(
        "collections/rename",
        json!({"collectionName": "c1", "newCollectionName": "c3"}),
        100,
    );
    api.err(
        "collections/rename",
        json!({"collectionName": "c2", "newCollectionName": "f"}),
        1100,
    );
    api.err(
        "collections/rename",
        json!({"collectionName": "c2", "newCollectionName": "3x"}),
        1100,
    );
    let renamed = api.ok("collections/describe", json!({"collectionName": "c2"}));
    assert_eq!(renamed["collectionID"], cid);

    // Adding a field: nullable scalars only, the next field ID, visible in describe.
    let add = |f: Value| json!({"collectionName": "c2", "schema": f});
    api.err(
        "collections/fields/add",
        json!({"collectionName": "c2"}),
        1802,
    );
    api.err(
        "collections/fields/add",
        add(json!({"fieldName": "n", "dataType": "Int32"})),
        1100,
    );
    api.err(
        "collections/fields/add",
        add(
            json!({"fieldName": "v2", "dataType": "FloatVector", "nullable": true,
                   "elementTypeParams": {"dim": 4}}),
        ),
        1100,
    );
    api.err(
        "collections/fields/add",
        add(json!({"fieldName": "k", "dataType": "Int64", "nullable": true, "isPrimary": true})),
        1100,
    );
    api.err(
        "collections/fields/add",
        add(json!({"fieldName": "s", "dataType": "VarChar", "nullable": true})),
        1101,
    );
    api.err(
        "collections/fields/add",
        add(json!({"fieldName": "n", "dataType": "int32", "nullable": true})),
        1100,
    );
    let before = renamed["fields"].as_array().cloned().unwrap_or_default();
    let next_id = before
        .iter()
        .filter_map(|f| f["id"].as_i64())
        .max()
        .unwrap_or(0)
        + 1;
    api.ok(
        "collections/fields/add",
        add(
            json!({"fieldName": "s", "dataType": "VarChar", "nullable": true,
                   "elementTypeParams": {"max_length": 16}}),
        ),
    );
    api.err(
        "collections/fields/add",
        add(json!({"fieldName": "s", "dataType": "Int8", "nullable": true})),
        1100,
    );
    api.err(
        "collections/fields/add",
        json!({"collectionName": "nope", "schema": {"fieldName": "x", "dataType": "Int8", "nullable": true}}),
        100,
    );
    let d = api.ok("collections/describe", json!({"collectionName": "c2"}));
    let added = d["fields"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["name"] == "s").cloned())
        .unwrap_or_else(|| panic!("no field s in {d}"));
    assert_eq!(added["id"], next_id, "{d}");
    assert_eq!(added["type"], "VarChar", "{added}");
    assert_eq!(added["nullable"], true, "{added}");
    assert_eq!(
        added["params"],
        json!([{"key": "max_length", "value": "16"}])
    );
    // Altering a field's type params.
    let alter = |field: &str, p: Value| json!({"collectionName": "c2", "fieldName": field, "fieldParams": p});
    api.ok(
        "collections/fields/alter_properties",
        alter("s", json!({"max_length": 64, "mmap.enabled": true})),
    );
    api.err(
        "collections/fields/alter_properties",
        alter("s", json!({"dim": 8})),
        1100,
    );
    api.err(
        "collections/fields/alter_properties",
        alter("s", json!({"max_length": 0})),
        1100,
    );
    api.err(
        "collections/fields/alter_properties",
        alter("s", json!({"max_capacity": 8})),
        1100,
    );
    api.err(
        "collections/fields/alter_properties",
        alter("missing", json!({"max_length": 8})),
        1700,
    );
    api.err(
        "collections/fields/alter_properties",
        json!({"collectionName": "c2", "fieldName": "s"}),
        1802,
    );
    let d = api.ok("collections/describe", json!({"collectionName": "c2"}));
    let altered = d["fields"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["name"] == "s").cloned())
        .unwrap_or_else(|| panic!("no field s in {d}"));
    assert_eq!(
        altered["params"],
        json!([{"key": "max_length", "value": "64"}, {"key": "mmap.enabled", "value": "true"}])
    );

    // Lookup by ID from any shard.
    let (_, b) = api.raw(
        "POST",
        "/v2/rootcoord/lookup",
        &[],
        json!({"collectionID": cid}).to_string().as_bytes(),
    );
    let v: Value = serde_json::from_slice(&b).expect("json");
    assert_eq!(v["data"]["collectionName"], "c2", "{v}");
    let (_, b) = api.raw(
        "POST",
        "/v2/rootcoord/lookup",
        &[],
        b"{\"collectionID\": 7}",
    );
    let v: Value = serde_json::from_slice(&b).expect("json");
    assert_eq!(v["code"], 100, "{v}");

    // Databases.
    let d = api.ok("databases/describe", json!({"dbName": "default"}));
    assert_eq!(d, json!({"dbName": "default", "dbID": 1, "properties": []}));
    api.err("databases/drop", json!({"dbName": "default"}), 1100);
    api.err("databases/create", json!({"dbName": "1db"}), 802);
    api.err("databases/create", json!({"dbName": "d-b"}), 802);
    api.ok(
        "databases/create",
        json!({"dbName": "db1", "properties": {"k": "v"}}),
    );
    api.err("databases/create", json!({"dbName": "db1"}), 1100);
    let d = api.ok("databases/describe", json!({"dbName": "db1"}));
    assert!(d["dbID"].as_u64().is_some_and(|id| id >= 1000), "{d}");
    assert_eq!(d["properties"], json!([{"key": "k", "value": "v"}]));
    api.err("databases/describe", json!({"dbName": "nodb"}), 800);
    api.err(
        "collections/create",
        json!({"dbName": "nodb", "collectionName": "x", "dimension": 4}),
        800,
    );
    api.err("collections/list", json!({"dbName": "nodb"}), 800);
    // Database resolution: body, then DB-Name header, then default.
    let v = api.post_h(
        "collections/create",
        &[("DB-Name", "db1")],
        &json!({"collectionName": "in_db1", "dimension": 4}),
    );
    assert_eq!(v["code"], 0, "{v}");
    assert_eq!(
        api.ok("collections/list", json!({"dbName": "db1"})),
        json!(["in_db1"])
    );
    let v = api.post_h(
        "collections/list",
        &[("DB-Name", "db1")],
        &json!({"dbName": "default"}),
    );
    assert_eq!(v["data"], json!(["c2", "ci", "f", "plain"]), "{v}");
    api.err("collections/rename", json!({"dbName": "db1", "collectionName": "in_db1", "newCollectionName": "x", "newDbName": "default"}), 1100);
    api.err("databases/drop", json!({"dbName": "db1"}), 1100);
    api.ok(
        "collections/drop",
        json!({"dbName": "db1", "collectionName": "in_db1"}),
    );
    api.ok(
        "collections/drop",
        json!({"dbName": "db1", "collectionName": "in_db1"}),
    );
    api.ok(
        "databases/alter_properties",
        json!({"dbName": "db1", "properties": {"k2": 2}}),
    );
    api.ok(
        "databases/drop_properties",
        json!({"dbName": "db1", "propertyKeys": ["k"]}),
    );
    assert_eq!(
        api.ok("databases/describe", json!({"dbName": "db1"}))["properties"],
        json!([{"key": "k2", "value": "2"}])
    );
    api.ok("databases/drop", json!({"dbName": "db1"}));
    api.ok("databases/drop", json!({"dbName": "db1"}));
    // 64 databases besides default.
    for i in 0..64 {
        api.ok("databases/create", json!({"dbName": format!("d{i}")}));
    }
    api.err("databases/create", json!({"dbName": "d64"}), 801);
    let list = api.ok("databases/list", json!({}));
    assert_eq!(list.as_array().map(Vec::len), Some(65), "{list}");
    assert_eq!(list[0], "default");
}
