//! Backup under write load, restore into a fresh three-node cluster, and every write
//! acknowledged before the backup started is there; a damaged or truncated backup is refused
//! with its offset.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::{kv_path, pick_ports, Cluster, ClusterOptions, HttpClient};

const SHARDS: usize = 2;
const DEADLINE: Duration = Duration::from_secs(30);

/// Servers this test starts itself (the harness cannot start from seeded data dirs).
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn restore(
    file: &std::path::Path,
    dir: &std::path::Path,
    id: u64,
    members: &str,
) -> std::process::Output {
    Command::new(support::MAST_BIN)
        .arg("restore")
        .arg(file)
        .arg("--data-dir")
        .arg(dir)
        .args(["--id", &id.to_string(), "--members", members])
        .output()
        .expect("run mast restore")
}

#[test]
fn backup_under_load_restores_every_acknowledged_write() {
    support::print_replay(
        "backup",
        "backup_under_load_restores_every_acknowledged_write",
        "",
    );
    let cluster = Cluster::start(ClusterOptions::new(3, SHARDS)).unwrap_or_else(|e| panic!("{e}"));
    cluster
        .wait_for_leaders(DEADLINE)
        .unwrap_or_else(|e| panic!("{e}"));
    let addrs: Vec<_> = cluster
        .node_ids()
        .iter()
        .map(|&id| cluster.http_addr(id))
        .collect();

    // One writer, round robin over the nodes: (key index, acknowledged at).
    let acked: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, addrs) = (acked.clone(), stop.clone(), addrs.clone());
        thread::spawn(move || {
            let mut clients: Vec<HttpClient> = addrs
                .iter()
                .map(|a| HttpClient::new(*a, Duration::from_secs(10)))
                .collect();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let n = clients.len();
                let c = &mut clients[i as usize % n];
                if let Ok(r) = c.put(&kv_path(&format!("w{i}")), format!("v{i}").as_bytes()) {
                    if r.status == 204 {
                        acked.lock().unwrap().push((i, Instant::now()));
                    }
                }
                i += 1;
            }
        })
    };
    let wait_acks = |n: usize| {
        let until = Instant::now() + DEADLINE;
        while acked.lock().unwrap().len() < n {
            assert!(Instant::now() < until, "fewer than {n} writes acknowledged");
            thread::sleep(Duration::from_millis(10));
        }
    };
    wait_acks(100);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mast.bak");
    let eps = addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let backup_started = Instant::now();
    let out = Command::new(support::MAST_BIN)
        .args(["ctl", "--endpoints", &eps, "backup", "--out"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = acked.lock().unwrap().len();
    wait_acks(before + 20); // the load really ran through the backup
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    drop(cluster);
    let must_have: Vec<u64> = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, at)| *at < backup_started)
        .map(|(i, _)| *i)
        .collect();
    assert!(must_have.len() >= 100);

    // Damaged and truncated copies are refused with an offset and leave no node behind.
    let bytes = std::fs::read(&file).unwrap();
    let mut damaged = bytes.clone();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0x40;
    for (name, b) in [
        ("damaged", damaged),
        ("truncated", bytes[..bytes.len() - 7].to_vec()),
    ] {
        let f = dir.path().join(name);
        std::fs::write(&f, b).unwrap();
        let d = dir.path().join(format!("{name}-dir"));
        let out = restore(&f, &d, 1, "1=127.0.0.1:1/127.0.0.1:2");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains("offset"), "{name}: {err}");
        assert!(!d.join("CLUSTER").exists(), "{name}: a node was seeded");
    }

    // A fresh three-node cluster (new addresses) from the backup.
    let nodes: Vec<(u64, std::net::SocketAddr, std::net::SocketAddr)> = (1..=3)
        .map(|id| (id, pick_ports(1).unwrap(), pick_ports(SHARDS).unwrap()))
        .collect();
    let members = nodes
        .iter()
        .map(|(id, h, p)| format!("{id}={p}/{h}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut procs = Procs(Vec::new());
    for (id, http, peer) in &nodes {
        let d = dir.path().join(format!("restored-{id}"));
        let out = restore(&file, &d, *id, &members);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = std::fs::File::create(dir.path().join(format!("restored-{id}.log"))).unwrap();
        procs.0.push(
            Command::new(support::MAST_BIN)
                .arg("server")
                .args(["--id", &id.to_string(), "--shards", &SHARDS.to_string()])
                .args([
                    "--http-addr",
                    &http.to_string(),
                    "--peer-addr",
                    &peer.to_string(),
                ])
                .args(["--members", &members])
                .arg("--data-dir")
                .arg(&d)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }
    let mut clients: Vec<HttpClient> = nodes
        .iter()
        .map(|(_, h, _)| HttpClient::new(*h, Duration::from_secs(5)))
        .collect();
    let mut checked = 0;
    for i in &must_have {
        let c = &mut clients[*i as usize % 3];
        let got = support::retry(DEADLINE, || {
            let r = c
                .get(&kv_path(&format!("w{i}")))
                .map_err(|e| e.to_string())?;
            match r.status {
                200 => Ok(r.body),
                404 => Err(format!("w{i} is missing")),
                _ => Err(format!("w{i}: {r}")),
            }
        })
        .unwrap_or_else(|e| {
            let log =
                std::fs::read_to_string(dir.path().join("restored-1.log")).unwrap_or_default();
            panic!("{e}\nnode 1 log:\n{log}")
        });
        assert_eq!(got, format!("v{i}").into_bytes());
        checked += 1;
    }
    assert_eq!(checked, must_have.len());
    // The restored cluster takes writes and is a new identity (its own members only).
    let r = clients[0].put(&kv_path("after-restore"), b"x").unwrap();
    assert_eq!(r.status, 204, "{r}");
    let m = clients[1].get("/members").unwrap().json().unwrap();
    let http: Vec<String> = m["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["http_addr"].as_str().unwrap_or("").to_string())
        .collect();
    let want: Vec<String> = nodes.iter().map(|(_, h, _)| h.to_string()).collect();
    assert_eq!(http, want);
}
