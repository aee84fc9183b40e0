//! Milvus's system configuration (issue #12 item 5) on a real `mast server`: a milvus.yaml
//! given with `--milvus-config` is replicated and answered by `sysconfig/get`,
//! `sysconfig/get_by_prefix` and `show_configurations` with Milvus's key normalisation; a
//! changed file is replicated again on restart and its `dataCoord.segment.maxSize` sizes new
//! segments; a bad file stops the start with exit code 2, naming the key.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{retry, Cluster, ClusterOptions, HttpClient};

const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const FIXTURE: &str = include_str!("fixtures/milvus.yaml");

fn call(c: &mut HttpClient, path: &str, body: &Value) -> Result<Value, String> {
    let r = c
        .post_json(path, body)
        .map_err(|e| format!("{path}: {e:?}"))?;
    r.json()
}

fn ok(c: &mut HttpClient, path: &str, body: Value) -> Value {
    retry(STEP_TIMEOUT, || {
        let v = call(c, path, &body)?;
        match v["code"].as_i64() {
            Some(0) => Ok(v["data"].clone()),
            _ => Err(format!("{path}: {v}")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `sysconfig/get` of `key` until it reads `want` (the leader proposes after election).
fn wait_value(c: &mut HttpClient, key: &str, want: &str) {
    retry(STEP_TIMEOUT, || {
        let v = call(c, "/v2/rootcoord/sysconfig/get", &json!({"keys": [key]}))?;
        if v["code"] == 0 && v["data"]["values"][0] == want {
            Ok(())
        } else {
            Err(format!("{key}: {v}"))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

fn new_segment_max_rows(c: &mut HttpClient, coll: u64, part: u64, channel: &str) -> u64 {
    let a = ok(
        c,
        "/v2/rootcoord/assign_segment_id",
        json!({"segmentIDRequests": [
            {"count": 1, "channelName": channel, "collectionID": coll, "partitionID": part},
        ]}),
    );
    let e = &a["segIDAssignments"][0];
    assert_eq!(e["status"]["code"], 0, "{a}");
    let seg = e["segID"].as_u64().expect("segID");
    let d = ok(
        c,
        "/v2/rootcoord/describe_segments",
        json!({"segmentIDs": [seg]}),
    );
    d["segments"][0]["maxRows"].as_u64().expect("maxRows")
}

#[test]
fn config_loads_lookups_match_and_max_size_sizes_segments() {
    let opts = ClusterOptions::new(1, 1);
    // The cluster's root exists only once started; the file lives in a directory of its own.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("milvus.yaml");
    std::fs::write(&path, FIXTURE).unwrap();
    let mut cluster = Cluster::start(opts.arg("--milvus-config", path.display())).expect("cluster");
    let mut c = cluster.client(1);
    wait_value(&mut c, "dataCoord.segment.maxSize", "1024");

    let g = ok(
        &mut c,
        "/v2/rootcoord/sysconfig/get",
        json!({"keys": ["etcd.endpoints", "/rootCoord/dmlChannelNum", "COMMON.SESSION.TTL"]}),
    );
    assert_eq!(
        g["values"],
        json!(["localhost:2379,etcd-2:2379", "16", "15"]),
        "{g}"
    );
    let missing = call(
        &mut c,
        "/v2/rootcoord/sysconfig/get",
        &json!({"keys": ["proxy.port", "no.such.key"]}),
    )
    .unwrap();
    assert_ne!(missing["code"], 0, "{missing}");
    assert!(
        missing["message"]
            .as_str()
            .unwrap_or("")
            .contains("no.such.key"),
        "{missing}"
    );

    let p = ok(
        &mut c,
        "/v2/rootcoord/sysconfig/get_by_prefix",
        json!({"prefix": "dataCoord.segment"}),
    );
    assert_eq!(
        p,
        json!({"keys": ["datacoord.segment.assignmentexpiration", "datacoord.segment.maxsize",
                        "datacoord.segment.sealproportion"],
               "values": ["2000", "1024", "0.12"]})
    );

    // Only the root coordinator's prefixes, substring match ignoring case.
    let s = ok(
        &mut c,
        "/v2/rootcoord/show_configurations",
        json!({"pattern": "MAX"}),
    );
    assert_eq!(
        s["configuations"],
        json!([
            {"key": "quotaandlimits.limits.maxcollectionnum", "value": "65536"},
            {"key": "rootcoord.maxpartitionnum", "value": "1024"},
        ]),
        "{s}"
    );

    ok(
        &mut c,
        "/v2/vectordb/collections/create",
        json!({"collectionName": "cfg1", "dimension": 128}),
    );
    let d = ok(
        &mut c,
        "/v2/vectordb/collections/describe",
        json!({"collectionName": "cfg1"}),
    );
    let coll = d["collectionID"].as_u64().expect("collectionID");
    // The `_default` partition's ID is near the collection's (both from the ID allocator).
    let part = (coll.saturating_sub(8)..coll + 8)
        .find(|&p| {
            call(&mut c, "/v2/rootcoord/lookup", &json!({"partitionID": p}))
                .map(|r| r["code"] == 0 && r["data"]["collectionID"] == coll)
                .unwrap_or(false)
        })
        .expect("the _default partition");
    let big = new_segment_max_rows(&mut c, coll, part, "dml_0");

    // A changed file is proposed again when the node leads after its restart.
    std::fs::write(&path, FIXTURE.replace("maxSize: 1024", "maxSize: 256")).unwrap();
    cluster.restart(1).expect("restart");
    let mut c = cluster.client(1);
    wait_value(&mut c, "dataCoord.segment.maxSize", "256");
    let small = new_segment_max_rows(&mut c, coll, part, "dml_1");
    assert!(
        small * 4 <= big + 4 && small * 4 + 4 >= big,
        "maxSize 1024 gave {big} rows, 256 gave {small}"
    );

    // A bad value stops the start before anything runs, naming the key.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "dataCoord:\n  segment:\n    maxSize: huge\n").unwrap();
    let data = dir.path().join("bad-data");
    let (status, out) = cluster
        .run_until_exit(
            "bad-config",
            &[
                "--data-dir".into(),
                data.display().to_string(),
                "--milvus-config".into(),
                bad.display().to_string(),
            ],
            STEP_TIMEOUT,
        )
        .expect("refused start");
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("datacoord.segment.maxsize"), "{out}");
}
