//! CubeFS's own `cfs-cli` (`../shared/tools/cfs-cli`) against three `mast server` masters,
//! as an operator's script would drive it: `cluster info|stat|freeze|set`,
//! `datanode list|info`, `metanode list|info`, `zone list|info`, `nodeset list|info`, checking
//! exit codes and output. The main scenario registers nodes over HTTP exactly as CubeFS's data
//! and meta nodes do (`/dataNode/add`, `/metaNode/add`); a second one runs real `mast node`
//! agents and checks cfs-cli sees them active with the capacity their heartbeats report.
//!
//! Also here, over plain HTTP: the envelope and bare-number replies, idempotent and
//! mismatching registration, node sets filling up, gzip on request, a follower relaying to the
//! leader, and 400 `no leader` (with `/admin/getIp` still answered) once a quorum is gone.
//!
//! Without the cfs-cli binary the CLI test prints a loud SKIPPED line and returns.

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::cfs::*;
use support::{Cluster, ClusterOptions, HttpClient};

const NODES: u64 = 3;
const SHARDS: usize = 2;
const IO_TIMEOUT: Duration = Duration::from_secs(20);

struct Registered {
    data: Vec<(String, u64)>,
    meta: Vec<(String, u64)>,
}

/// Registers nodes through `client` as CubeFS nodes do and checks the §7 rules on the way.
fn register(client: &mut HttpClient) -> Registered {
    let mut data = Vec::new();
    for i in 1..=3 {
        let addr = format!("127.0.0.{i}:17310");
        let path = format!(
            "/dataNode/add?addr={addr}&heartbeatPort=17330&replicaPort=17340&zoneName=&mediaType=1&clientIDKey="
        );
        let r = client.get(&path).expect("dataNode/add");
        // The reply must be a bare number (a data node parses the raw JSON as an integer).
        let body = r.body_text();
        let (code, _, id) = envelope(&r).expect("envelope");
        assert_eq!(code, 0, "{body}");
        let id = id
            .as_u64()
            .unwrap_or_else(|| panic!("id is not a bare number: {body}"));
        assert!(body.contains(&format!("\"data\":{id}")), "{body}");
        data.push((addr, id));
    }
    // A node in a second zone creates that zone.
    let addr = "127.0.0.4:17310".to_string();
    let id = ok_data(
        client,
        &format!("/dataNode/add?addr={addr}&zoneName=z2&mediaType=2"),
    );
    data.push((addr, id.as_u64().expect("id")));
    // Idempotent: the same address gets the same id; another zone or media type is refused
    // with the hint CubeFS's data node reacts to.
    let again = ok_data(
        client,
        "/dataNode/add?addr=127.0.0.1:17310&heartbeatPort=17330&replicaPort=17340&mediaType=1",
    );
    assert_eq!(again.as_u64(), Some(data[0].1));
    let (code, msg, d) = call(
        client,
        "/dataNode/add?addr=127.0.0.1:17310&zoneName=z2&mediaType=1",
    );
    assert_eq!((code, d), (1, Value::Null));
    assert!(
        msg.starts_with("add datanode failed, err ")
            && msg.contains("hint DataNode mediaType not match"),
        "{msg}"
    );
    let (code, msg, _) = call(client, "/dataNode/add?addr=127.0.0.9:17310");
    assert_eq!(code, 1, "{msg}");
    let (code, msg, _) = call(client, "/dataNode/add?zoneName=x");
    assert_eq!((code, msg.as_str()), (2, "parameter addr not found"));
    let (code, _, _) = call(client, "/dataNode/add?addr=nohost&mediaType=1");
    assert_eq!(code, 2);

    let mut meta = Vec::new();
    for i in 1..=3 {
        let addr = format!("127.0.0.{i}:17210");
        let id = ok_data(
            client,
            &format!("/metaNode/add?addr={addr}&heartbeatPort=17230&replicaPort=17250&zoneName=&clientIDKey="),
        );
        meta.push((addr, id.as_u64().expect("meta id")));
    }
    let mut ids: Vec<u64> = data.iter().chain(&meta).map(|(_, id)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 7, "node ids are unique: {ids:?}");
    Registered { data, meta }
}

#[test]
fn cfs_cli_drives_three_masters() {
    let cli_path = cfs_cli();
    let have_cli = cli_path.exists();
    if !have_cli {
        eprintln!(
            "\n!!!!!!!! SKIPPED: {} not found; the cfs-cli part of this test did NOT run !!!!!!!!\n",
            cli_path.display()
        );
    }
    let mut cluster = Cluster::start(ClusterOptions::new(NODES, SHARDS)).expect("cluster starts");
    let leaders = cluster.wait_for_leaders(LEADER_TIMEOUT).expect("leaders");
    let leader = leaders[0];
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    let leader_http = cluster.http_addr(leader).to_string();

    // Registration through a follower: relayed to the leader, replicated through raft.
    let mut fc = HttpClient::new(cluster.http_addr(follower), IO_TIMEOUT);
    let reg = register(&mut fc);

    // Every master shows the same registry; getIp is answered by whichever is asked.
    for id in cluster.node_ids() {
        let mut c = HttpClient::new(cluster.http_addr(id), IO_TIMEOUT);
        let view = ok_data(&mut c, "/admin/getCluster");
        assert_eq!(view["LeaderAddr"], Value::String(leader_http.clone()));
        assert_eq!(view["DataNodes"].as_array().map(Vec::len), Some(4));
        assert_eq!(view["MetaNodes"].as_array().map(Vec::len), Some(3));
        assert_eq!(view["MasterNodes"].as_array().map(Vec::len), Some(3));
        assert!(view["DataNodeStatInfo"].is_object() && view["MetaNodeStatInfo"].is_object());
        assert_eq!(view["VolStatInfo"], serde_json::json!([]));
        let ip = ok_data(&mut c, "/admin/getIp");
        assert_eq!(ip["Ip"], Value::String("127.0.0.1".into()));
        assert_eq!(ip["Cluster"], view["Name"]);
    }

    // Never-heard-from nodes are inactive with zero usage and RFC 3339 report times.
    let dn = ok_data(&mut fc, "/dataNode/get?addr=127.0.0.1:17310");
    assert_eq!(dn["ID"].as_u64(), Some(reg.data[0].1));
    assert_eq!(
        (dn["IsActive"].as_bool(), dn["Zone"].as_str()),
        (Some(false), Some("default"))
    );
    assert_eq!(dn["RaftHeartbeatPort"].as_str(), Some("17330"));
    assert!(dn["ReportTime"]
        .as_str()
        .is_some_and(|t| t.len() == 20 && t.ends_with('Z')));
    assert_eq!(dn["DataPartitionReports"], serde_json::json!([]));
    let (code, _, _) = call(&mut fc, "/dataNode/get?addr=127.0.0.99:1");
    assert_eq!(code, 12);
    let (code, _, _) = call(&mut fc, "/metaNode/get?addr=127.0.0.99:1");
    assert_eq!(code, 13);
    let (code, _, _) = call(&mut fc, "/nodeSet/get?nodesetId=999999");
    assert_eq!(code, 64);
    let (code, _, _) = call(&mut fc, "/nodeSet/list?zoneName=nope");
    assert_eq!(code, 52);

    // What a data node asks before registering, and the settings routes.
    let up = ok_data(&mut fc, "/admin/getUpgradeCompatibleSettings");
    assert_eq!(up["VolsForbidWriteOpOfProtoVer0"], serde_json::json!([]));
    assert_eq!(up["LegacyDataMediaType"], Value::Bool(false));
    let info = ok_data(&mut fc, "/admin/getNodeInfo");
    assert_eq!(info["maxDpCntLimit"], Value::String("3000".into()));
    assert_eq!(info["batchCount"], Value::String("0".into()));
    // Parameters travel in the query string on POST too.
    let r = fc
        .request("POST", "/threshold/set?threshold=0.8", &[], b"")
        .expect("POST threshold");
    assert_eq!(envelope(&r).expect("envelope").0, 0);
    let (code, _, _) = call(&mut fc, "/threshold/set?threshold=1.5");
    assert_eq!(code, 2);
    let (code, msg, _) = call(&mut fc, "/cluster/freeze?enable=");
    assert_eq!((code, msg.as_str()), (2, "parameter enable not found"));
    let (code, _, _) = call(&mut fc, "/cluster/freeze?enable=maybe");
    assert_eq!(code, 2);
    let mn = ok_data(&mut fc, "/metaNode/get?addr=127.0.0.2:17210");
    assert_eq!(mn["Threshold"].as_f64(), Some(0.8));
    let all = ok_data(&mut fc, "/admin/cluster/getAllMetaNodes");
    assert_eq!(all.as_array().map(Vec::len), Some(3));
    assert_eq!(all[0]["Status"], Value::Bool(false));
    // GET-only routes refuse POST as CubeFS's router does (405), never 403.
    let r = fc
        .request("POST", "/admin/getCluster", &[], b"")
        .expect("POST getCluster");
    assert_eq!(r.status, 405);

    // gzip on request: the whole body, marked with CubeFS's header.
    let r = fc
        .request(
            "GET",
            "/zone/list",
            &[("x-cfs-Accept-Encoding", "gzip")],
            b"",
        )
        .expect("gzip request");
    assert_eq!(r.header("x-cfs-content-encoding"), Some("gzip"));
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_string(&mut unzipped)
        .expect("gunzip");
    let zones: Value = serde_json::from_str(&unzipped).expect("json");
    assert_eq!(zones["data"].as_array().map(Vec::len), Some(2));

    // Node sets fill up to nodeSetCap (18) data nodes; the 19th in a zone opens another set.
    for i in 1..=19 {
        ok_data(
            &mut fc,
            &format!("/dataNode/add?addr=127.0.1.{i}:17310&zoneName=big&mediaType=1"),
        );
    }
    let sets = ok_data(&mut fc, "/nodeSet/list?zoneName=big");
    let mut nums: Vec<u64> = sets
        .as_array()
        .expect("sets")
        .iter()
        .map(|s| s["DataNodeNum"].as_u64().expect("DataNodeNum"))
        .collect();
    nums.sort_unstable();
    assert_eq!(nums, vec![1, 18]);

    // Raft: the leader's status names every member.
    let rs = ok_data(&mut fc, "/get/raftStatus");
    assert_eq!(rs["state"].as_str(), Some("StateLeader"));
    assert_eq!(rs["leader"].as_u64(), Some(leader));
    assert_eq!(rs["replicas"].as_object().map(|m| m.len()), Some(3));

    if have_cli {
        run_cli_scenario(&cluster, leader, follower, &reg);
    }

    concurrent_registrations_agree(&cluster);
    raft_routes(&cluster, leader, follower);

    // Without a quorum: 400 "no leader" (the SDK moves on), getIp still answered.
    let others: Vec<u64> = cluster
        .node_ids()
        .into_iter()
        .filter(|&id| id != follower)
        .collect();
    for id in others {
        cluster.kill(id);
    }
    let deadline = Instant::now() + LEADER_TIMEOUT;
    loop {
        match fc.get("/admin/getCluster") {
            Ok(r) if r.status == 400 => {
                assert_eq!(r.body_text(), "no leader");
                break;
            }
            Ok(r) => assert_ne!(r.status, 403, "never 403"),
            Err(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "no 400 no leader after losing the quorum"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let (code, _, ip) = call(&mut fc, "/admin/getIp");
    assert_eq!((code, ip["Ip"].as_str()), (0, Some("127.0.0.1")));
}

fn run_cli_scenario(cluster: &Cluster, leader: u64, follower: u64, reg: &Registered) {
    let home = tempfile::tempdir().expect("scratch HOME");
    let masters: Vec<String> = cluster
        .node_ids()
        .into_iter()
        .map(|id| cluster.http_addr(id).to_string())
        .collect();
    write_cli_config(home.path(), &masters);
    let h = home.path();
    let leader_http = cluster.http_addr(leader).to_string();

    let info = cli_ok(h, &["cluster", "info"], &[]);
    assert!(has_field(&info, "Master leader", &leader_http), "{info}");
    assert!(
        has_field(&info, "DataNode count (active/total)", "0/23"),
        "{info}"
    );
    assert!(
        has_field(&info, "MetaNode count (active/total)", "0/3"),
        "{info}"
    );
    assert!(has_field(&info, "Auto allocate", "Enabled"), "{info}");
    for m in &masters {
        assert!(info.contains(m.as_str()), "{info} lacks master {m}");
    }

    cli_ok(h, &["cluster", "freeze", "true"], &["successful"]);
    cli_ok(
        h,
        &[
            "cluster",
            "set",
            "--batchCount",
            "64",
            "--maxDpCntLimit",
            "2000",
        ],
        &["success"],
    );
    let info = cli_ok(h, &["cluster", "info"], &[]);
    assert!(has_field(&info, "Auto allocate", "Disabled"), "{info}");
    assert!(has_field(&info, "BatchCount", "64"), "{info}");
    assert!(has_field(&info, "MaxDpCntLimit", "2000"), "{info}");
    cli_ok(h, &["cluster", "freeze", "false"], &["successful"]);
    let info = cli_ok(h, &["cluster", "info"], &[]);
    assert!(has_field(&info, "Auto allocate", "Enabled"), "{info}");
    // A key mast does not keep is refused, not silently dropped.
    let o = cli(h, &["cluster", "set", "--dpRepairTimeout", "1h"]);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("not supported by mast"), "{}", o.stderr);

    let stat = cli_ok(
        h,
        &["cluster", "stat"],
        &["DataNode Status", "MetaNode Status", "default", "z2", "big"],
    );
    assert!(
        stat.contains("DATANODE") && stat.contains("METANODE"),
        "{stat}"
    );

    let list = cli_ok(h, &["datanode", "list"], &[]);
    for (addr, id) in &reg.data {
        assert!(
            list.lines().any(|l| l.contains(addr.as_str())
                && l.contains(&id.to_string())
                && l.contains("Inactive")),
            "datanode list lacks {addr} {id}:\n{list}"
        );
    }
    let (addr, id) = &reg.data[3];
    let info = cli_ok(h, &["datanode", "info", addr], &[]);
    assert!(has_field(&info, "ID", &id.to_string()), "{info}");
    assert!(has_field(&info, "Zone", "z2"), "{info}");
    assert!(has_field(&info, "MediaType", "HDD"), "{info}");
    assert!(has_field(&info, "Status", "Inactive"), "{info}");
    assert!(has_field(&info, "Max partition count", "2000"), "{info}");
    let o = cli(h, &["datanode", "info", "127.0.0.99:17310"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("data node not exists"), "{}", o.stderr);

    let list = cli_ok(h, &["metanode", "list"], &[]);
    for (addr, id) in &reg.meta {
        assert!(
            list.lines()
                .any(|l| l.contains(addr.as_str()) && l.contains(&id.to_string())),
            "metanode list lacks {addr} {id}:\n{list}"
        );
    }
    let (addr, id) = &reg.meta[0];
    let info = cli_ok(h, &["metanode", "info", addr], &[]);
    assert!(has_field(&info, "ID", &id.to_string()), "{info}");
    assert!(has_field(&info, "RaftHeartbeatPort", "17230"), "{info}");
    assert!(has_field(&info, "Threshold", "0.8"), "{info}");
    let o = cli(h, &["metanode", "info", "127.0.0.99:17210"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("meta node not exists"), "{}", o.stderr);

    let zones = cli_ok(h, &["zone", "list"], &[]);
    for z in ["default", "z2", "big"] {
        assert!(
            zones
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == [z, "available"]),
            "zone list lacks {z}:\n{zones}"
        );
    }
    let z2 = cli_ok(
        h,
        &["zone", "info", "z2"],
        &["Zone Name:        z2", "127.0.0.4:17310", "HDD"],
    );
    assert!(!z2.contains("127.0.0.1:17310"), "{z2}");
    // Disabling a zone through the HTTP route shows in the CLI.
    let mut c = HttpClient::new(cluster.http_addr(follower), IO_TIMEOUT);
    ok_data(
        &mut c,
        "/zone/update?name=z2&enable=false&dataNodesetSelector=CarryWeight",
    );
    let zones = cli_ok(h, &["zone", "list"], &[]);
    assert!(
        zones
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["z2", "unavailable"]),
        "{zones}"
    );
    let (code, _, _) = call(&mut c, "/zone/update?name=z2&dataNodesetSelector=Nope");
    assert_eq!(code, 2);

    let sets = cli_ok(h, &["nodeset", "list"], &[]);
    let big_sets: Vec<&str> = sets.lines().filter(|l| l.contains(" big ")).collect();
    assert_eq!(big_sets.len(), 2, "{sets}");
    let default_set = sets
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some("default"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no default node set:\n{sets}"))
        .to_string();
    let info = cli_ok(
        h,
        &["nodeset", "info", &default_set],
        &["Capacity:         18", "Zone:             default"],
    );
    for (addr, _) in reg.data.iter().take(3).chain(&reg.meta) {
        assert!(
            info.contains(addr.as_str()),
            "nodeset info lacks {addr}:\n{info}"
        );
    }
    let mut c = HttpClient::new(cluster.http_addr(leader), IO_TIMEOUT);
    ok_data(
        &mut c,
        &format!("/nodeSet/update?nodesetId={default_set}&dataNodeSelector=Straw"),
    );
    cli_ok(
        h,
        &["nodeset", "info", &default_set],
        &["DataNodeSelector: Straw"],
    );
    let o = cli(h, &["nodeset", "info", "999999"]);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);

    // A CLI that knows only a follower gets the leader's answers through it.
    let home2 = tempfile::tempdir().expect("scratch HOME");
    write_cli_config(home2.path(), &[cluster.http_addr(follower).to_string()]);
    let info = cli_ok(home2.path(), &["cluster", "info"], &[]);
    assert!(has_field(&info, "Master leader", &leader_http), "{info}");
    cli_ok(home2.path(), &["datanode", "list"], &["127.0.0.4:17310"]);
}

/// Registrations of the same addresses racing through every master get one id per address.
fn concurrent_registrations_agree(cluster: &Cluster) {
    let addrs: Vec<String> = (1..=5).map(|i| format!("127.0.2.{i}:17310")).collect();
    let threads: Vec<_> = cluster
        .node_ids()
        .into_iter()
        .flat_map(|id| [id, id])
        .map(|id| {
            let http = cluster.http_addr(id);
            let addrs = addrs.clone();
            thread::spawn(move || {
                let mut c = HttpClient::new(http, IO_TIMEOUT);
                addrs
                    .iter()
                    .map(|a| {
                        let id = ok_data(
                            &mut c,
                            &format!("/dataNode/add?addr={a}&zoneName=race&mediaType=1"),
                        );
                        id.as_u64().expect("bare id")
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let results: Vec<Vec<u64>> = threads
        .into_iter()
        .map(|t| t.join().expect("registrar"))
        .collect();
    for r in &results {
        assert_eq!(r, &results[0], "racing registrations disagree: {results:?}");
    }
    let mut c = HttpClient::new(cluster.http_addr(cluster.node_ids()[0]), IO_TIMEOUT);
    for (a, id) in addrs.iter().zip(&results[0]) {
        let dn = ok_data(&mut c, &format!("/dataNode/get?addr={a}"));
        assert_eq!(dn["ID"].as_u64(), Some(*id));
    }
    let sets = ok_data(&mut c, "/nodeSet/list?zoneName=race");
    assert_eq!(sets.as_array().map(Vec::len), Some(1), "{sets}");
    assert_eq!(sets[0]["DataNodeNum"].as_u64(), Some(5));
}

/// Polls `/get/raftStatus` until `check` holds on its data.
fn wait_raft_status(c: &mut HttpClient, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    loop {
        let (code, _, v) = call(c, "/get/raftStatus");
        if code == 0 && check(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: last raft status {v}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// `/raftNode/add|remove` change the membership of every shard; `/master/changeleader` makes
/// the asked master the leader, with the registry intact.
fn raft_routes(cluster: &Cluster, leader: u64, follower: u64) {
    let mut c = HttpClient::new(cluster.http_addr(follower), IO_TIMEOUT);
    let (code, msg, _) = call(&mut c, "/raftNode/add?id=9&addr=127.0.0.1:1");
    assert_eq!((code, msg.as_str()), (2, "parameter peerAddr not found"));
    let (code, _, _) = call(
        &mut c,
        "/raftNode/add?id=9&addr=nohost&peerAddr=127.0.0.1:2",
    );
    assert_eq!(code, 2);
    // A learner that never comes up: the membership has it until it is removed.
    ok_data(
        &mut c,
        "/raftNode/add?id=9&addr=127.0.0.1:1&peerAddr=127.0.0.1:2",
    );
    wait_raft_status(&mut c, "learner 9 added", |v| {
        v["replicas"].get("9").is_some()
    });
    let view = ok_data(&mut c, "/admin/getCluster");
    assert_eq!(
        view["MasterNodes"].as_array().map(Vec::len),
        Some(4),
        "{view}"
    );
    ok_data(&mut c, "/raftNode/remove?id=9&addr=127.0.0.1:1");
    wait_raft_status(&mut c, "learner 9 removed", |v| {
        v["replicas"].as_object().map(|m| m.len()) == Some(3)
    });

    let before = ok_data(&mut c, "/admin/getCluster");
    ok_data(&mut c, "/master/changeleader");
    let want = cluster.http_addr(follower).to_string();
    let deadline = Instant::now() + LEADER_TIMEOUT;
    loop {
        let view = ok_data(&mut c, "/admin/getCluster");
        if view["LeaderAddr"].as_str() == Some(want.as_str()) {
            // The registry is the same; liveness (Status) is each leader's own memory now
            // that heartbeats feed it, so it is left out of the comparison.
            let ids = |v: &Value| -> Vec<(Value, Value)> {
                v.as_array()
                    .map(|a| {
                        a.iter()
                            .map(|n| (n["ID"].clone(), n["Addr"].clone()))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            assert_eq!(ids(&view["DataNodes"]), ids(&before["DataNodes"]));
            assert_eq!(ids(&view["MetaNodes"]), ids(&before["MetaNodes"]));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {follower} did not take over from {leader}: {}",
            view["LeaderAddr"]
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// `mast node` agents register themselves and heartbeat; cfs-cli, as an operator would run
/// it, sees them active with the capacity they report, on every master.
#[test]
fn cfs_cli_sees_mast_node_agents_active() {
    if !cfs_cli().exists() {
        eprintln!("\n!!!!!!!! SKIPPED: cfs-cli not found; this test did NOT run !!!!!!!!\n");
        return;
    }
    let cluster = Cluster::start(ClusterOptions::new(NODES, SHARDS)).expect("cluster starts");
    cluster.wait_for_leaders(LEADER_TIMEOUT).expect("leaders");
    let masters: Vec<String> = cluster
        .node_ids()
        .into_iter()
        .map(|id| cluster.http_addr(id).to_string())
        .collect();
    let dir = tempfile::tempdir().expect("agent dir");
    let agent = |role: &str, n: usize| {
        let child = Command::new(env!("CARGO_BIN_EXE_mast"))
            .args(["node", "--role", role, "--master", &masters.join(",")])
            .args(["--zone", "zagent", "--listen", "127.0.0.1:0"])
            .args(["--simulate", &n.to_string(), "--capacity-gb", "100"])
            .arg("--data-dir")
            .arg(dir.path().join(role))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mast node starts");
        KillOnDrop(child)
    };
    let _data = agent("data", 3);
    let _meta = agent("meta", 2);

    // Heartbeats every 6 s: wait (bounded) until every agent answered one.
    let mut c = HttpClient::new(cluster.http_addr(cluster.node_ids()[0]), IO_TIMEOUT);
    let deadline = Instant::now() + Duration::from_secs(60);
    let view = loop {
        let (code, _, v) = call(&mut c, "/admin/getCluster");
        let active = |k: &str| {
            v[k].as_array().map_or(0, |a| {
                a.iter()
                    .filter(|n| n["Status"] == Value::Bool(true))
                    .count()
            })
        };
        if code == 0 && active("DataNodes") == 3 && active("MetaNodes") == 2 {
            break v;
        }
        assert!(Instant::now() < deadline, "agents not active in 60 s: {v}");
        thread::sleep(Duration::from_millis(250));
    };
    let data_addrs: Vec<String> = view["DataNodes"]
        .as_array()
        .expect("DataNodes")
        .iter()
        .filter_map(|n| n["Addr"].as_str().map(str::to_string))
        .collect();
    assert_eq!(data_addrs.len(), 3, "{view}");

    let home = tempfile::tempdir().expect("scratch HOME");
    write_cli_config(home.path(), &masters);
    let h = home.path();
    let info = cli_ok(h, &["cluster", "info"], &[]);
    assert!(
        has_field(&info, "DataNode count (active/total)", "3/3"),
        "{info}"
    );
    assert!(
        has_field(&info, "MetaNode count (active/total)", "2/2"),
        "{info}"
    );
    let list = cli_ok(h, &["datanode", "list"], &[]);
    for a in &data_addrs {
        assert!(
            list.lines()
                .any(|l| l.contains(a.as_str()) && l.contains("Active") && !l.contains("Inactive")),
            "datanode list: {a} not active:\n{list}"
        );
    }
    let info = cli_ok(h, &["datanode", "info", &data_addrs[0]], &[]);
    assert!(has_field(&info, "Status", "Active"), "{info}");
    assert!(has_field(&info, "Zone", "zagent"), "{info}");
    assert!(has_field(&info, "Total", "100"), "{info}");
    let zones = cli_ok(h, &["zone", "list"], &["zagent"]);
    assert!(zones.contains("zagent"), "{zones}");
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
