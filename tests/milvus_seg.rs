//! Milvus segment assignment (issue #12) on a real `mast server`: `assign_segment_id` packs
//! requests into growing segments of the right collection, partition and channel, fails one
//! bad entry without failing the call, and the new segments are replicated
//! (`show_segments`, `describe_segments`). The over-grant rules across expiry and leader
//! changes are checked by the property test in `src/milvus/segment.rs`.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{retry, Cluster, ClusterOptions, HttpClient};

const STEP_TIMEOUT: Duration = Duration::from_secs(30);

fn ok(c: &mut HttpClient, path: &str, body: Value) -> Value {
    retry(STEP_TIMEOUT, || {
        let r = c
            .post_json(path, &body)
            .map_err(|e| format!("{path}: {e:?}"))?;
        let v = r.json()?;
        match v["code"].as_i64() {
            Some(0) => Ok(v["data"].clone()),
            _ => Err(format!("{path}: {v}")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn entries(v: &Value) -> Vec<Value> {
    v["segIDAssignments"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn assign_show_and_describe_segments() {
    let cluster = Cluster::start(ClusterOptions::new(1, 2)).expect("cluster");
    let mut c = cluster.client(1);
    ok(
        &mut c,
        "/v2/vectordb/collections/create",
        json!({"collectionName": "seg1", "dimension": 128}),
    );
    let d = ok(
        &mut c,
        "/v2/vectordb/collections/describe",
        json!({"collectionName": "seg1"}),
    );
    let coll = d["collectionID"].as_u64().expect("collectionID");
    // The `_default` partition's ID is near the collection's (both from the ID allocator).
    let part = (coll.saturating_sub(8)..coll + 8)
        .find(|&p| {
            let r = c
                .post_json("/v2/rootcoord/lookup", &json!({"partitionID": p}))
                .unwrap()
                .json()
                .unwrap();
            r["code"] == 0 && r["data"]["collectionID"] == coll
        })
        .expect("the _default partition");

    let a = ok(
        &mut c,
        "/v2/rootcoord/assign_segment_id",
        json!({"segmentIDRequests": [
            {"count": 1000, "channelName": "dml_0", "collectionID": coll, "partitionID": part},
            {"count": 5, "channelName": "dml_0", "collectionID": 987654321, "partitionID": part},
            {"count": 0, "channelName": "dml_0", "collectionID": coll, "partitionID": part},
            {"count": 5, "channelName": "dml_0", "collectionID": coll, "partitionID": 987654321},
        ]}),
    );
    let e = entries(&a);
    assert_eq!(e.len(), 4, "{a}");
    assert_eq!(e[0]["status"]["code"], 0, "{a}");
    assert_eq!(e[0]["count"], 1000);
    let seg = e[0]["segID"].as_u64().unwrap();
    assert!(seg > 0);
    assert!(e[0]["expireTime"].as_u64().unwrap() > 0);
    assert_eq!(e[1]["status"]["code"], 100, "unknown collection: {a}");
    assert_eq!(e[2]["status"]["code"], 1100, "zero count: {a}");
    assert_eq!(e[3]["status"]["code"], 200, "unknown partition: {a}");

    // The segment is replicated with its maximum.
    let segs = ok(
        &mut c,
        "/v2/rootcoord/describe_segments",
        json!({"segmentIDs": [seg]}),
    );
    let s = &segs["segments"][0];
    assert_eq!(s["state"], "Growing");
    assert_eq!(s["collectionID"], coll);
    assert_eq!(s["channelName"], "dml_0");
    let max = s["maxRows"].as_u64().unwrap();
    assert!(max > 100_000 && max < 10_000_000, "{s}");

    // A small request packs into the same growing segment; another channel never does.
    let a = ok(
        &mut c,
        "/v2/rootcoord/assign_segment_id",
        json!({"segmentIDRequests": [
            {"count": 10, "channelName": "dml_0", "collectionID": coll, "partitionID": part},
            {"count": 10, "channelName": "dml_1", "collectionID": coll, "partitionID": part},
        ]}),
    );
    let e = entries(&a);
    assert_eq!(e[0]["segID"].as_u64(), Some(seg), "{a}");
    assert_ne!(e[1]["segID"].as_u64(), Some(seg), "{a}");

    // Two full segments and a remainder: the counts add up, full ones are new segments.
    let a = ok(
        &mut c,
        "/v2/rootcoord/assign_segment_id",
        json!({"segmentIDRequests": [
            {"count": 2 * max + 7, "channelName": "dml_0", "collectionID": coll, "partitionID": part},
        ]}),
    );
    let e = entries(&a);
    assert_eq!(e.len(), 3, "{a}");
    let counts: Vec<u64> = e.iter().map(|x| x["count"].as_u64().unwrap()).collect();
    assert_eq!(counts, vec![max, max, 7]);
    assert_eq!(
        e[2]["segID"].as_u64(),
        Some(seg),
        "the remainder packs: {a}"
    );

    let shown = ok(
        &mut c,
        "/v2/rootcoord/show_segments",
        json!({"collectionID": coll, "partitionID": part}),
    );
    assert_eq!(
        shown["segmentIDs"].as_array().unwrap().len(),
        4,
        "dml_0: 1 + 2 full, dml_1: 1: {shown}"
    );
    let shown = ok(
        &mut c,
        "/v2/rootcoord/show_segments",
        json!({"collectionID": 987654321}),
    );
    assert_eq!(shown["segmentIDs"], json!([]));

    // A flush report past the seal proportion (0.12 × max, jitter ≥ 0.9) seals the segment;
    // sealed segments take no more grants; a state never moves back.
    let r = ok(
        &mut c,
        "/v2/rootcoord/segment_report",
        json!({"segmentID": seg, "numRows": max / 8, "binlogCount": 1}),
    );
    assert_eq!(r["state"], "Sealed", "{r}");
    assert_eq!(r["sealReason"], "capacity", "{r}");
    let a = ok(
        &mut c,
        "/v2/rootcoord/assign_segment_id",
        json!({"segmentIDRequests": [
            {"count": 10, "channelName": "dml_0", "collectionID": coll, "partitionID": part},
        ]}),
    );
    assert_ne!(entries(&a)[0]["segID"].as_u64(), Some(seg), "{a}");
    let r = c
        .post_json(
            "/v2/rootcoord/segment_report",
            &json!({"segmentID": seg, "numRows": 1, "state": "Growing"}),
        )
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["code"], 1100, "{r}");
    let segs = ok(
        &mut c,
        "/v2/rootcoord/describe_segments",
        json!({"segmentIDs": [seg]}),
    );
    assert_eq!(segs["segments"][0]["numRows"], max / 8);
    assert!(segs["segments"][0]["closeTime"].as_u64().unwrap() > 0);
}
