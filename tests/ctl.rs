//! `mast ctl` against a three-node cluster with authentication on: status, keys, members,
//! leader transfer, JSON output, failures with the server's message, a dead endpoint skipped.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Cluster, ClusterOptions};

const ADMIN: &str = "ctl-admin-token";
const READER: &str = "ctl-reader-token";

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn ctl(endpoints: &str, token: Option<&Path>, args: &[&str]) -> Out {
    let mut cmd = Command::new(support::MAST_BIN);
    cmd.args(["ctl", "--endpoints", endpoints, "--timeout-ms", "20000"]);
    if let Some(t) = token {
        cmd.arg("--token-file").arg(t);
    }
    let out = cmd.args(args).output().expect("run mast ctl");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ctl_ok(endpoints: &str, token: &Path, args: &[&str]) -> String {
    let o = ctl(endpoints, Some(token), args);
    assert_eq!(
        o.code,
        Some(0),
        "mast ctl {args:?}: {}{}",
        o.stdout,
        o.stderr
    );
    o.stdout
}

fn ctl_json(endpoints: &str, token: &Path, args: &[&str]) -> Value {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    let out = ctl_ok(endpoints, token, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// Shard 0's leader as every running node reports it, once they agree.
fn leader0(endpoints: &str, token: &Path) -> Option<u64> {
    let v = ctl_json(endpoints, token, &["status"]);
    let leaders: Vec<u64> = v
        .as_array()?
        .iter()
        .map(|s| {
            s["status"]["shards"][0]["raft"]["leader"]
                .as_u64()
                .unwrap_or(0)
        })
        .collect();
    let first = *leaders.first()?;
    (first != 0 && leaders.iter().all(|&l| l == first)).then_some(first)
}

#[test]
fn ctl_against_three_nodes() {
    support::print_replay("ctl", "ctl_against_three_nodes", "");
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{ADMIN} admin\n{READER} read\n")).unwrap();
    let reader = dir.path().join("reader");
    std::fs::write(&reader, format!("{READER}\n")).unwrap();
    let cluster =
        Cluster::start(ClusterOptions::new(3, 2).arg("--auth-token-file", tokens.display()))
            .unwrap_or_else(|e| panic!("{e}"));
    let all: Vec<String> = cluster
        .node_ids()
        .iter()
        .map(|&id| cluster.http_addr(id).to_string())
        .collect();
    let eps = all.join(",");
    // A member that is not there first: ctl moves on to the next.
    let dead = support::pick_ports(1).unwrap();
    let eps_dead_first = format!("{dead},{eps}");

    // Keys (the first write may wait for the first election: ctl retries 503).
    let out = ctl_ok(&eps_dead_first, &tokens, &["kv", "put", "dir/a b", "v1"]);
    assert!(out.starts_with("OK (revision "), "{out}");
    assert_eq!(ctl_ok(&eps, &tokens, &["kv", "get", "dir/a b"]), "v1\n");
    ctl_ok(&eps, &tokens, &["kv", "put", "dir/c", "v2"]);
    let v = ctl_json(&eps, &reader, &["kv", "list", "--prefix", "dir/"]);
    let keys: Vec<&str> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["key"].as_str())
        .collect();
    assert_eq!(keys, ["dir/a b", "dir/c"]);
    let table = ctl_ok(&eps, &reader, &["kv", "list", "--prefix", "dir/"]);
    assert!(
        table.starts_with("KEY") && table.contains("dir/a b"),
        "{table}"
    );
    ctl_ok(&eps, &tokens, &["kv", "del", "dir/c"]);
    let o = ctl(&eps, Some(&tokens), &["kv", "get", "dir/c"]);
    assert_eq!(o.code, Some(1), "{}", o.stdout);
    assert!(
        o.stderr.contains("404") && o.stderr.contains("no such key"),
        "{}",
        o.stderr
    );

    // The server's refusals come through with a non-zero exit.
    let o = ctl(&eps, None, &["kv", "get", "dir/a b"]);
    assert_eq!(o.code, Some(1));
    assert!(o.stderr.contains("401 unauthorized"), "{}", o.stderr);
    let o = ctl(&eps, Some(&reader), &["kv", "put", "x", "y"]);
    assert_eq!(o.code, Some(1));
    assert!(o.stderr.contains("403 forbidden"), "{}", o.stderr);
    let o = ctl(&eps, Some(&tokens), &["bogus"]);
    assert_eq!(o.code, Some(2), "{}", o.stderr);

    // Status: one row per endpoint and shard.
    let table = ctl_ok(&eps, &reader, &["status"]);
    assert_eq!(table.lines().count(), 1 + 3 * 2, "{table}");
    assert!(table.starts_with("ENDPOINT"), "{table}");

    // Members: list, add a learner, remove it.
    let v = ctl_json(&eps, &reader, &["members", "list"]);
    assert_eq!(v["members"].as_array().map(Vec::len), Some(3), "{v}");
    let spare_http = support::pick_ports(1).unwrap().to_string();
    let spare_peer = support::pick_ports(2).unwrap().to_string();
    ctl_ok(
        &eps,
        &tokens,
        &[
            "members",
            "add",
            "--id",
            "4",
            "--peer-addr",
            &spare_peer,
            "--http-addr",
            &spare_http,
        ],
    );
    let v = ctl_json(&eps, &reader, &["members", "list"]);
    let four = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == 4)
        .cloned();
    assert_eq!(
        four.map(|m| m["voter"].clone()),
        Some(Value::Bool(false)),
        "{v}"
    );
    ctl_ok(&eps, &tokens, &["members", "remove", "4"]);
    let v = ctl_json(&eps, &reader, &["members", "list"]);
    assert_eq!(v["members"].as_array().map(Vec::len), Some(3), "{v}");

    // Leader transfer to a node that does not lead shard 0, then poll until it does.
    let deadline = Instant::now() + Duration::from_secs(30);
    let from = loop {
        if let Some(l) = leader0(&eps, &reader) {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "shard 0 never had an agreed leader"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let to = if from == 1 { 2 } else { 1 };
    let to_s = to.to_string();
    let o = ctl(&eps, Some(&reader), &["leader", "transfer", "--to", &to_s]);
    assert_eq!(
        o.code,
        Some(1),
        "a reader may not move leadership: {}",
        o.stdout
    );
    let out = ctl_ok(&eps, &tokens, &["leader", "transfer", "--to", &to_s]);
    assert!(out.contains(&format!("node {from}")), "{out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while leader0(&eps, &reader) != Some(to) {
        assert!(
            Instant::now() < deadline,
            "node {to} never led shard 0 after the transfer"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(cluster);
}
