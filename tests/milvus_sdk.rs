//! The Node SDK scenario (`tests/milvus_sdk/scenario.js`): `@zilliz/milvus2-sdk-node`'s REST
//! client, from the npm registry and unpatched, runs a DDL scenario against a real
//! `mast server` (one node, two shards). `.ci/run` installs the SDK with `npm ci` from the
//! pinned lockfile into a scratch dir and runs this test with `MILVUS_SDK_DIR` pointing
//! there; without it (a plain `cargo test`) the test says so and passes vacuously.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{Cluster, ClusterOptions};

#[test]
fn node_sdk_scenario() {
    let Some(sdk_dir) = std::env::var_os("MILVUS_SDK_DIR") else {
        eprintln!("MILVUS_SDK_DIR is not set: skipping the Node SDK scenario (.ci/run runs it)");
        return;
    };
    let cluster = Cluster::start(ClusterOptions::new(1, 2)).expect("cluster");
    cluster
        .wait_for_leaders(Duration::from_secs(30))
        .expect("leaders");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/milvus_sdk/scenario.js");
    let endpoint = format!("http://{}", cluster.http_addr(1));
    let out = Command::new("node")
        .arg(script)
        .arg(&endpoint)
        .env("MILVUS_SDK_DIR", &sdk_dir)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the SDK scenario failed: {}",
        out.status
    );
    assert!(stdout.contains("scenario passed"), "no completion line");
}
