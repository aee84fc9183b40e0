//! CubeFS's `cfs-cli` drives volumes against three `mast server` masters and twelve
//! `mast node` agents (6 data, 6 meta; 2 zones; each agent on its own loopback IP, so the
//! "no two replicas on one IP" rule holds), as an operator's script would: `user create|info`,
//! `volume create|info|list|update|expand|shrink|delete`, `datapartition info`,
//! `metapartition info`, checking exit codes and output. Then over HTTP what a mounting
//! client reads (§6), and that every partition's hosts really hold it (the agents' control
//! endpoints list the partitions each node created).
//!
//! Without the cfs-cli binary the test prints a loud SKIPPED line and returns.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::cfs::*;
use support::{Cluster, ClusterOptions, HttpClient};

const IO_TIMEOUT: Duration = Duration::from_secs(20);
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Loopback IPs of the agents: 127.0.0.<BASE + k>.
const IP_BASE: u32 = 131;
const AGENT_IPS: u32 = 6;

struct Agents {
    children: Vec<Child>,
    /// Control endpoints of the data agents.
    data_controls: Vec<SocketAddr>,
    meta_controls: Vec<SocketAddr>,
}

impl Drop for Agents {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_agents(masters: &str, dir: &Path) -> Agents {
    start_agents_at(masters, dir, IP_BASE)
}

fn start_agents_at(masters: &str, dir: &Path, ip_base: u32) -> Agents {
    let mut a = Agents {
        children: vec![],
        data_controls: vec![],
        meta_controls: vec![],
    };
    for k in 0..AGENT_IPS {
        let ip = format!("127.0.0.{}", ip_base + k);
        let zone = if k < AGENT_IPS / 2 { "z1" } else { "z2" };
        for (role, port, control) in [("data", 17310, 17410), ("meta", 17210, 17420)] {
            let control: SocketAddr = format!("{ip}:{control}").parse().expect("addr");
            let child = Command::new(env!("CARGO_BIN_EXE_mast"))
                .args([
                    "node",
                    "--role",
                    role,
                    "--master",
                    masters,
                    "--zone",
                    zone,
                    "--listen",
                    &format!("{ip}:{port}"),
                    "--simulate",
                    "1",
                    // Room for every partition the tests create (120 GB each by default).
                    "--capacity-gb",
                    "20000",
                    "--control",
                    &control.to_string(),
                    "--data-dir",
                    &dir.join(format!("{role}-{k}")).to_string_lossy(),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("mast node starts");
            a.children.push(child);
            if role == "data" {
                a.data_controls.push(control);
            } else {
                a.meta_controls.push(control);
            }
        }
    }
    a
}

/// addr → partitions the agent behind `control` holds.
fn agent_partitions(controls: &[SocketAddr]) -> BTreeMap<String, BTreeSet<u64>> {
    let mut out = BTreeMap::new();
    for c in controls {
        let mut client = HttpClient::new(*c, IO_TIMEOUT);
        let r = client.get("/nodes").expect("agent control");
        let nodes = r.json().expect("agent /nodes json");
        for n in nodes.as_array().expect("node list") {
            let addr = n["addr"].as_str().expect("addr").to_string();
            let parts = n["partitions"]
                .as_array()
                .expect("partitions")
                .iter()
                .filter_map(Value::as_u64)
                .collect();
            out.insert(addr, parts);
        }
    }
    out
}

fn wait_all_active(c: &mut HttpClient) {
    let deadline = Instant::now() + ACTIVE_TIMEOUT;
    loop {
        let d = ok_data(c, "/admin/cluster/getAllDataNodes");
        let m = ok_data(c, "/admin/cluster/getAllMetaNodes");
        let active = |v: &Value| {
            v.as_array().map_or(0, |a| {
                a.iter().filter(|n| n["Status"] == json!(true)).count()
            })
        };
        if active(&d) == AGENT_IPS as usize && active(&m) == AGENT_IPS as usize {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "agents not all active: data {d} meta {m}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn cfs_cli_volumes_on_mast_nodes() {
    if !cfs_cli().exists() {
        eprintln!(
            "\n!!!!!!!! SKIPPED: {} not found; this test did NOT run !!!!!!!!\n",
            cfs_cli().display()
        );
        return;
    }
    let cluster = Cluster::start(ClusterOptions::new(3, 2)).expect("cluster starts");
    cluster.wait_for_leaders(LEADER_TIMEOUT).expect("leaders");
    let masters: Vec<String> = cluster
        .node_ids()
        .into_iter()
        .map(|id| cluster.http_addr(id).to_string())
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let agents = start_agents(&masters.join(","), dir.path());
    let mut c = HttpClient::new(cluster.http_addr(cluster.node_ids()[0]), IO_TIMEOUT);
    wait_all_active(&mut c);
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let cfg = json!({"masterAddr": masters, "timeout": 30});
    std::fs::write(home.join(".cfs-cli.json"), cfg.to_string()).expect("cli config");

    // Users.
    cli_ok(&home, &["user", "create", "bob", "-y"], &[]);
    let out = cli_ok(&home, &["user", "info", "bob"], &["bob"]);
    assert!(out.contains("Access Key"), "{out}");

    // A volume in zone z1: 3 meta partitions, 3 data partitions of 3 replicas.
    cli_ok(
        &home,
        &[
            "volume",
            "create",
            "vol1",
            "alice",
            "--capacity",
            "10",
            "--zone-name",
            "z1",
            "-y",
        ],
        &[],
    );
    let o = cli(
        &home,
        &[
            "volume",
            "create",
            "vol1",
            "alice",
            "--zone-name",
            "z1",
            "-y",
        ],
    );
    assert_ne!(o.code, 0, "duplicate volume must fail");
    assert!(o.stderr.contains("duplicate vol") || o.stdout.contains("duplicate vol"));
    // A cross-zone volume spreads each partition over both zones (2+1).
    cli_ok(
        &home,
        &[
            "volume",
            "create",
            "vol2",
            "alice",
            "--crossZone",
            "true",
            "-y",
        ],
        &[],
    );
    let out = cli_ok(&home, &["volume", "list"], &["vol1", "vol2"]);
    assert!(out.contains("alice"), "{out}");
    let out = cli_ok(&home, &["volume", "info", "vol1"], &["vol1"]);
    assert!(has_field(&out, "Owner", "alice"), "{out}");
    assert!(has_field(&out, "Capacity", "10"), "{out}");

    // Every data partition has 3 distinct hosts that really created it, in the volume's zone.
    let held = agent_partitions(&agents.data_controls);
    let mheld = agent_partitions(&agents.meta_controls);
    for (vol, zones) in [("vol1", vec!["z1"]), ("vol2", vec!["z1", "z2"])] {
        let view = ok_data(&mut c, &format!("/client/partitions?name={vol}"));
        let dps = view["DataPartitions"].as_array().expect("dps");
        assert!(dps.len() >= 3, "{view}");
        for dp in dps {
            let id = dp["PartitionID"].as_u64().expect("id");
            let hosts: BTreeSet<&str> = dp["Hosts"]
                .as_array()
                .expect("hosts")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(hosts.len(), 3, "{dp}");
            for h in &hosts {
                assert!(
                    held.get(*h).is_some_and(|p| p.contains(&id)),
                    "{h} lacks dp {id}"
                );
            }
            let info = ok_data(&mut c, &format!("/dataPartition/get?id={id}&name={vol}"));
            let seen: BTreeSet<&str> = info["Zones"]
                .as_array()
                .expect("zones")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(seen, zones.iter().copied().collect(), "{info}");
            let out = cli_ok(
                &home,
                &["datapartition", "info", &id.to_string()],
                &[&id.to_string()],
            );
            assert!(out.contains(vol), "{out}");
        }
        let mps = ok_data(&mut c, &format!("/client/metaPartitions?name={vol}"));
        let mps = mps.as_array().expect("mps");
        assert_eq!(mps.len(), 3);
        assert_eq!(mps[0]["Start"], json!(0));
        assert_eq!(mps[2]["End"], json!(i64::MAX));
        for mp in mps {
            let id = mp["PartitionID"].as_u64().expect("id");
            for h in mp["Members"].as_array().expect("members") {
                let h = h.as_str().expect("member");
                assert!(
                    mheld.get(h).is_some_and(|p| p.contains(&id)),
                    "{h} lacks mp {id}"
                );
            }
            cli_ok(
                &home,
                &["metapartition", "info", &id.to_string()],
                &[&id.to_string()],
            );
        }
    }

    // Health checks: every node active, nothing short of replicas.
    cli_ok(&home, &["datapartition", "check"], &[]);
    cli_ok(&home, &["metapartition", "check"], &[]);
    let d = ok_data(&mut c, "/dataPartition/diagnose");
    assert_eq!(
        (
            &d["InactiveDataNodes"],
            &d["LackReplicaDataPartitionIDs"],
            &d["CorruptDataPartitionIDs"]
        ),
        (&json!([]), &json!([]), &json!([]))
    );
    let m = ok_data(&mut c, "/metaPartition/diagnose");
    assert_eq!(
        (&m["InactiveMetaNodes"], &m["LackReplicaMetaPartitionIDs"]),
        (&json!([]), &json!([]))
    );

    // What a mounting client reads (§6).
    let auth = "6384e2b2184bcbf58eccf10ca7a6563c"; // md5("alice")
    let v = ok_data(&mut c, "/admin/getVol?name=vol1");
    assert_eq!(
        (v["Name"].as_str(), v["Owner"].as_str()),
        (Some("vol1"), Some("alice"))
    );
    assert_eq!(v["DpReplicaNum"], json!(3));
    let r = c
        .request(
            "POST",
            &format!("/client/vol?name=vol1&authKey={auth}"),
            &[],
            b"",
        )
        .expect("client/vol");
    let (code, _, vv) = envelope(&r).expect("envelope");
    assert_eq!(code, 0);
    assert_eq!(vv["MetaPartitions"].as_array().map(Vec::len), Some(3));
    let (code, _, _) = call(&mut c, "/client/vol?name=vol1&authKey=00");
    assert_eq!(code, 34);
    let st = ok_data(&mut c, "/client/volStat?name=vol1");
    assert_eq!(st["TotalSize"], json!(10u64 << 30));
    ok_data(&mut c, "/multiVer/getAll?name=vol1");

    // Update, expand, shrink: the capacity follows.
    cli_ok(&home, &["volume", "expand", "vol1", "30"], &[]);
    let out = cli_ok(&home, &["volume", "info", "vol1"], &[]);
    assert!(has_field(&out, "Capacity", "30"), "{out}");
    cli_ok(&home, &["volume", "shrink", "vol1", "20"], &[]);
    let o = cli(&home, &["volume", "shrink", "vol1", "40"]);
    assert_ne!(o.code, 0, "shrinking above the capacity must fail");
    cli_ok(
        &home,
        &["volume", "update", "vol1", "--description", "hello", "-y"],
        &[],
    );
    let v = ok_data(&mut c, "/admin/getVol?name=vol1");
    assert_eq!(
        (v["Capacity"].as_u64(), v["Description"].as_str()),
        (Some(20), Some("hello"))
    );

    // Replica moves (§10) on vol2 (cross-zone: any zone may take a new replica).
    let dp_hosts = |c: &mut HttpClient, id: u64| -> Vec<String> {
        let info = ok_data(c, &format!("/dataPartition/get?id={id}"));
        info["Hosts"]
            .as_array()
            .expect("hosts")
            .iter()
            .filter_map(|h| h.as_str().map(String::from))
            .collect()
    };
    let view = ok_data(&mut c, "/client/partitions?name=vol2");
    let dp = view["DataPartitions"][0]["PartitionID"]
        .as_u64()
        .expect("dp id");
    let before = dp_hosts(&mut c, dp);
    let all_data: Vec<String> = agent_partitions(&agents.data_controls)
        .into_keys()
        .collect();
    let ip = |a: &str| a.rsplit_once(':').map_or(a, |(h, _)| h).to_string();
    let spare = all_data
        .iter()
        .find(|a| !before.iter().any(|h| ip(h) == ip(a)))
        .expect("a data node off the partition's IPs")
        .clone();
    cli_ok(
        &home,
        &["datapartition", "add-replica", &spare, &dp.to_string()],
        &[],
    );
    let with = dp_hosts(&mut c, dp);
    assert_eq!(with.len(), 4, "{with:?}");
    assert!(agent_partitions(&agents.data_controls)[&spare].contains(&dp));
    cli_ok(
        &home,
        &["datapartition", "del-replica", &spare, &dp.to_string()],
        &[],
    );
    assert_eq!(dp_hosts(&mut c, dp), before);
    // Decommission: the replica moves to a new host, the partition keeps 3 replicas, and
    // the old host gets its delete task.
    let old = before[1].clone();
    cli_ok(
        &home,
        &["datapartition", "decommission", &old, &dp.to_string()],
        &[],
    );
    let after = dp_hosts(&mut c, dp);
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(!after.contains(&old), "{after:?}");
    let ips: BTreeSet<String> = after.iter().map(|h| ip(h)).collect();
    assert_eq!(ips.len(), 3, "one replica per IP: {after:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held = agent_partitions(&agents.data_controls);
        let moved = after.iter().all(|h| held[h].contains(&dp));
        if moved && !held[&old].contains(&dp) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica not moved off {old}: {held:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    // vol1 lives in z1, whose three data nodes all hold its partitions: no room to move.
    let v1 = ok_data(&mut c, "/client/partitions?name=vol1");
    let dp1 = v1["DataPartitions"][0]["PartitionID"]
        .as_u64()
        .expect("dp id");
    let h1 = dp_hosts(&mut c, dp1);
    let o = cli(
        &home,
        &["datapartition", "decommission", &h1[0], &dp1.to_string()],
    );
    // cfs-cli exits 0 here but prints the master's refusal (code 27).
    assert!(
        o.stdout
            .contains("no zone available for creating a data partition"),
        "no room in z1 must fail: {}",
        o.stdout
    );
    assert_eq!(dp_hosts(&mut c, dp1), h1, "a failed move changes nothing");
    // A meta partition of vol2 moves the same way.
    let mps = ok_data(&mut c, "/client/metaPartitions?name=vol2");
    let mp = mps[0]["PartitionID"].as_u64().expect("mp id");
    let old_m = mps[0]["Members"][0].as_str().expect("member").to_string();
    cli_ok(
        &home,
        &["metapartition", "decommission", &old_m, &mp.to_string()],
        &[],
    );
    let info = ok_data(&mut c, &format!("/metaPartition/get?id={mp}"));
    let members: Vec<&str> = info["Hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(members.len(), 3, "{info}");
    assert!(!members.contains(&old_m.as_str()), "{info}");

    // A data node's decommission: the leader's loop moves every replica off it; no partition
    // drops below 3 replicas, and the node's agent ends up holding none of them.
    let held = agent_partitions(&agents.data_controls);
    let victim = held
        .iter()
        .filter(|(a, _)| ip(a) >= format!("127.0.0.{}", IP_BASE + AGENT_IPS / 2))
        .max_by_key(|(_, p)| p.len())
        .map(|(a, _)| a.clone())
        .expect("a z2 data node");
    cli_ok(&home, &["datanode", "decommission", &victim], &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view = ok_data(&mut c, "/client/partitions?name=vol2");
        let dps = view["DataPartitions"].as_array().expect("dps").clone();
        for dp in &dps {
            let n = dp["Hosts"].as_array().map_or(0, Vec::len);
            assert!(n >= 3, "a partition dropped below its replicas: {dp}");
        }
        let on_victim = dps
            .iter()
            .filter(|dp| {
                dp["Hosts"]
                    .as_array()
                    .is_some_and(|h| h.contains(&json!(victim)))
            })
            .count();
        let still_held = agent_partitions(&agents.data_controls)[&victim].len();
        if on_victim == 0 && still_held == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{victim} still hosts {on_victim} partitions (agent holds {still_held})"
        );
        thread::sleep(Duration::from_millis(300));
    }
    let progress = ok_data(
        &mut c,
        &format!("/dataNode/queryDecommissionProgress?addr={victim}"),
    );
    assert_eq!(progress["StatusMessage"], json!("success"), "{progress}");
    let dn = ok_data(&mut c, &format!("/dataNode/get?addr={victim}"));
    assert_eq!(dn["Addr"], json!(victim));

    // Delete: marked, then the loop sends delete tasks and drops it.
    cli_ok(&home, &["volume", "delete", "vol2", "-y"], &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, _, _) = call(&mut c, "/admin/getVol?name=vol2");
        if code == 7 {
            break;
        }
        assert!(Instant::now() < deadline, "vol2 not dropped");
        thread::sleep(Duration::from_millis(200));
    }
    let out = cli_ok(&home, &["volume", "list"], &["vol1"]);
    assert!(!out.contains("vol2"), "{out}");
    let user = ok_data(&mut c, "/user/info?user=alice");
    assert_eq!(user["policy"]["own_vols"], json!(["vol1"]));
}

/// Hosts of every data partition of `vol`.
fn vol_dp_hosts(c: &mut HttpClient, vol: &str) -> BTreeMap<u64, Vec<String>> {
    let view = ok_data(c, &format!("/client/partitions?name={vol}"));
    view["DataPartitions"]
        .as_array()
        .expect("dps")
        .iter()
        .map(|dp| {
            let hosts = dp["Hosts"]
                .as_array()
                .expect("hosts")
                .iter()
                .filter_map(|h| h.as_str().map(String::from))
                .collect();
            (dp["PartitionID"].as_u64().expect("id"), hosts)
        })
        .collect()
}

/// The master leader is SIGKILLed right after a node's decommission was accepted and while a
/// volume creation is in flight: the new leader finishes the decommission (the mark is in
/// the table), no partition drops below its replicas, and the interrupted volume either
/// exists whole (every partition on hosts that hold it) or not at all.
#[test]
fn leader_killed_mid_decommission_and_creation() {
    let mut cluster = Cluster::start(ClusterOptions::new(3, 2)).expect("cluster starts");
    let leader = cluster.wait_for_leaders(LEADER_TIMEOUT).expect("leaders")[0];
    let masters: Vec<String> = cluster
        .node_ids()
        .into_iter()
        .map(|id| cluster.http_addr(id).to_string())
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let agents = start_agents_at(&masters.join(","), dir.path(), IP_BASE + 10);
    let mut c = HttpClient::new(cluster.http_addr(leader), IO_TIMEOUT);
    wait_all_active(&mut c);
    ok_data(
        &mut c,
        "/admin/createVol?name=vol1&owner=alice&capacity=10&crossZone=true",
    );
    let before = vol_dp_hosts(&mut c, "vol1");
    let held = agent_partitions(&agents.data_controls);
    let victim = held
        .iter()
        .max_by_key(|(_, p)| p.len())
        .map(|(a, _)| a.clone())
        .expect("a data node");
    assert!(before.values().any(|h| h.contains(&victim)));

    let leader_http = cluster.http_addr(leader);
    let creating = thread::spawn(move || {
        let mut c = HttpClient::new(leader_http, IO_TIMEOUT);
        c.get("/admin/createVol?name=vol2&owner=alice&capacity=10&crossZone=true&dpCount=20")
            .map(|r| r.body_text())
    });
    ok_data(&mut c, &format!("/dataNode/decommission?addr={victim}"));
    thread::sleep(Duration::from_millis(30));
    cluster.kill(leader);
    let created = creating.join().expect("creating thread");
    println!("createVol vol2 while the leader died: {created:?}");

    let survivor = cluster
        .node_ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a survivor");
    let mut c = HttpClient::new(cluster.http_addr(survivor), IO_TIMEOUT);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = vol_dp_hosts(&mut c, "vol1");
        assert_eq!(now.len(), before.len(), "partitions came or went");
        for (id, hosts) in &now {
            assert!(hosts.len() >= 3, "dp {id} below its replicas: {hosts:?}");
        }
        let on_victim = now.values().filter(|h| h.contains(&victim)).count();
        let still_held = agent_partitions(&agents.data_controls)[&victim].len();
        if on_victim == 0 && still_held == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new leader did not finish decommissioning {victim}: {on_victim} partitions, agent holds {still_held}"
        );
        thread::sleep(Duration::from_millis(300));
    }
    let held = agent_partitions(&agents.data_controls);
    for (id, hosts) in vol_dp_hosts(&mut c, "vol1") {
        for h in hosts {
            assert!(held[&h].contains(&id), "{h} lacks dp {id}");
        }
    }
    // vol2: whole or absent.
    let (code, _, _) = call(&mut c, "/admin/getVol?name=vol2");
    if code == 0 {
        let dps = vol_dp_hosts(&mut c, "vol2");
        assert!(dps.len() >= 3);
        for (id, hosts) in dps {
            assert_eq!(hosts.len(), 3);
            for h in hosts {
                assert!(held[&h].contains(&id), "{h} lacks dp {id} of vol2");
            }
        }
    } else {
        assert_eq!(code, 7);
    }
}

/// Meta partitions of `vol` as `/client/metaPartitions` lists them: (id, start, end, hosts).
fn vol_mps(c: &mut HttpClient, vol: &str) -> Vec<(u64, u64, u64, Vec<String>)> {
    let view = ok_data(c, &format!("/client/metaPartitions?name={vol}"));
    let mut mps: Vec<_> = view
        .as_array()
        .expect("mps")
        .iter()
        .map(|m| {
            let hosts = m["Members"]
                .as_array()
                .expect("members")
                .iter()
                .filter_map(|h| h.as_str().map(String::from))
                .collect();
            (
                m["PartitionID"].as_u64().expect("id"),
                m["Start"].as_u64().expect("start"),
                m["End"].as_u64().expect("end"),
                hosts,
            )
        })
        .collect();
    mps.sort_by_key(|m| m.1);
    mps
}

/// A new 3-partition volume is topped up to 10 read-write data partitions by the leader's
/// loop (on real hosts that hold them); `/metaPartition/create` cuts the last meta partition
/// and appends new ones that continue the inode ranges; a removed replica is deleted from its
/// node through the table's pending-delete mark.
#[test]
fn partitions_grow_split_and_removed_replicas_go() {
    let opts = ClusterOptions::new(3, 2).arg("--cubefs-dp-growth-interval-ms", 1000);
    let cluster = Cluster::start(opts).expect("cluster starts");
    let leader = cluster.wait_for_leaders(LEADER_TIMEOUT).expect("leaders")[0];
    let masters: Vec<String> = cluster
        .node_ids()
        .into_iter()
        .map(|id| cluster.http_addr(id).to_string())
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let agents = start_agents_at(&masters.join(","), dir.path(), IP_BASE + 20);
    let mut c = HttpClient::new(cluster.http_addr(leader), IO_TIMEOUT);
    wait_all_active(&mut c);
    ok_data(
        &mut c,
        "/admin/createVol?name=grow1&owner=alice&capacity=10&crossZone=true&dpCount=3",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let dps = loop {
        let dps = vol_dp_hosts(&mut c, "grow1");
        assert!(dps.len() <= 10, "grew past 10: {}", dps.len());
        if dps.len() == 10 {
            break dps;
        }
        assert!(
            Instant::now() < deadline,
            "grow1 has {} data partitions, not 10",
            dps.len()
        );
        thread::sleep(Duration::from_millis(200));
    };
    let held = agent_partitions(&agents.data_controls);
    for (id, hosts) in &dps {
        let distinct: BTreeSet<&String> = hosts.iter().collect();
        assert_eq!(distinct.len(), 3, "dp {id} hosts {hosts:?}");
        for h in hosts {
            assert!(held[h].contains(id), "{h} lacks grown dp {id}");
        }
    }

    // Meta partitions: 3 at creation; 2 more cut from the last one.
    let before = vol_mps(&mut c, "grow1");
    assert_eq!(before.len(), 3);
    let (code, _, _) = call(&mut c, "/metaPartition/create?name=grow1&count=11");
    assert_eq!(code, 2, "count over 10 is a parameter error");
    let (code, msg, _) = call(&mut c, "/metaPartition/create?name=grow1&count=2");
    assert_eq!(code, 0, "metaPartition/create: {msg}");
    let after = vol_mps(&mut c, "grow1");
    assert_eq!(after.len(), 5, "{after:?}");
    assert_eq!(after[0].1, 0);
    for w in after.windows(2) {
        assert_eq!(w[1].1, w[0].2 + 1, "ranges do not continue: {after:?}");
    }
    let last = &before[2];
    assert_eq!(after[2].0, last.0);
    assert_eq!(after[2].2, last.1 + (1 << 22), "cut at MaxInodeID + step");
    assert_eq!(after[4].2, u64::MAX >> 1, "the last one is open-ended");
    let held = agent_partitions(&agents.meta_controls);
    for (id, _, _, hosts) in &after[3..] {
        assert_eq!(hosts.len(), 3);
        for h in hosts {
            assert!(held[h].contains(id), "{h} lacks new mp {id}");
        }
    }

    // A replica removed over HTTP leaves its node (the delete is a table mark).
    let (id, hosts) = dps.iter().next().expect("a dp");
    let gone = hosts[0].clone();
    ok_data(&mut c, &format!("/dataReplica/delete?id={id}&addr={gone}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent_partitions(&agents.data_controls)[&gone].contains(id) {
        assert!(
            Instant::now() < deadline,
            "{gone} still holds dp {id} after its removal"
        );
        thread::sleep(Duration::from_millis(200));
    }
    let now = vol_dp_hosts(&mut c, "grow1");
    assert_eq!(now[id].len(), 2);
    assert!(!now[id].contains(&gone));
}
