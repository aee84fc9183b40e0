//! `mast node` agents against three real `mast server` processes (the CubeFS registry and
//! the heartbeat side wired together): nodes register (§7), the master's heartbeats reach
//! every node on whichever shard owns it and their answers make them active with their
//! capacity; a node restarted with another zone in its state is moved to that zone by its
//! heartbeat; after the master is killed the new master keeps the nodes active and their
//! answers reach it. Runs at CubeFS's real intervals (6 s heartbeats), so it takes a while.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Cluster, ClusterOptions};

const WAIT: Duration = Duration::from_secs(60);

struct Agent {
    child: Child,
    control: SocketAddr,
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SIGTERM: the agent stops cleanly (a restart then finds its addresses free).
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn agent(role: &str, masters: &str, n: usize, dir: &Path) -> Agent {
    let control = free_addr();
    let child = Command::new(env!("CARGO_BIN_EXE_mast"))
        .args(["node", "--role", role, "--master", masters, "--zone", "z1"])
        .args(["--listen", "127.0.0.1:0", "--simulate", &n.to_string()])
        .args(["--capacity-gb", "64"])
        .arg("--data-dir")
        .arg(dir)
        .args(["--control", &control.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Agent { child, control }
}

fn get_json(addr: SocketAddr, target: &str) -> Option<(u16, Value)> {
    let (status, body) = get_raw(addr, target)?;
    Some((status, serde_json::from_str(&body).ok()?))
}

fn get_text(addr: SocketAddr, target: &str) -> String {
    match get_raw(addr, target) {
        Some((200, body)) => body,
        other => panic!("GET {target}: {other:?}"),
    }
}

fn get_raw(addr: SocketAddr, target: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n")?.1;
    Some((status, body.to_string()))
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The agent's nodes once every one has an ID: (addr, id).
fn registered(a: &Agent, n: usize) -> Vec<(String, u64)> {
    wait_for("registration", || {
        let (_, v) = get_json(a.control, "/nodes")?;
        let nodes: Vec<(String, u64)> = v
            .as_array()?
            .iter()
            .map(|n| {
                (
                    n["addr"].as_str().unwrap_or("").to_string(),
                    n["node_id"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        (nodes.len() == n && nodes.iter().all(|(_, id)| *id > 0)).then_some(nodes)
    })
}

fn live(master: SocketAddr, addr: &str) -> Option<Value> {
    match get_json(master, &format!("/adminTask/live?addr={addr}"))? {
        (200, v) => Some(v),
        _ => None,
    }
}

#[test]
fn agents_heartbeat_with_a_real_cluster_across_a_leader_change() {
    let mut cluster = Cluster::start(ClusterOptions::new(3, 2)).unwrap();
    let leaders = cluster.wait_for_leaders(WAIT).unwrap();
    let masters: Vec<String> = cluster
        .node_ids()
        .iter()
        .map(|&id| cluster.http_addr(id).to_string())
        .collect();
    let masters = masters.join(",");
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut data = agent("data", &masters, 3, &data_dir);
    let meta = agent("meta", &masters, 2, &dir.path().join("meta"));
    let data_nodes = registered(&data, 3);
    let meta_nodes = registered(&meta, 2);

    let master = cluster.http_addr(leaders[0]);
    for (addr, id) in data_nodes.iter().chain(&meta_nodes) {
        // Answered, not only active: a node registered before this master's first round
        // starts active (the takeover rule) before its heartbeat, paced over the interval,
        // has gone out.
        let v = wait_for("active", || {
            live(master, addr)
                .filter(|v| v["is_active"] == true && v["heartbeats_answered"].as_u64() >= Some(1))
        });
        assert_eq!(v["id"], *id);
        assert_eq!(v["total"], 64u64 << 30, "{v}");
        assert_eq!(v["zone_registered"], "z1");
    }
    // The registry's own view (`/dataNode/get`) shows the registration.
    let (_, got) = get_json(master, &format!("/dataNode/get?addr={}", data_nodes[0].0)).unwrap();
    assert_eq!(got["code"], 0, "{got}");
    assert_eq!(got["data"]["Zone"], "z1");
    // ... and the heartbeats' liveness and usage, through the registry's liveness seam.
    assert_eq!(got["data"]["IsActive"], true, "{got}");
    assert_eq!(got["data"]["TotalWeight"], 64u64 << 30, "{got}");
    let (_, got) = get_json(master, &format!("/metaNode/get?addr={}", meta_nodes[0].0)).unwrap();
    assert_eq!(got["data"]["IsActive"], true, "{got}");
    // The node's /metrics carries the admin task counters: heartbeats were sent and acked.
    let metrics = get_text(master, "/metrics");
    let acked: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("mast_admin_tasks_total{") && l.contains("event=\"acked\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(acked >= 5, "heartbeat acks in /metrics: {acked}\n{metrics}");

    // A node restarted with another zone in its state: its heartbeat moves it there.
    drop(data);
    let state_path = data_dir.join("node-0/state.json");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    state["zone"] = Value::from("z2");
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
    let moved = state["addr"].as_str().unwrap().to_string();
    data = agent("data", &masters, 3, &data_dir);
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, v) =
            get_json(master, &format!("/dataNode/get?addr={moved}")).unwrap_or((0, Value::Null));
        if v["data"]["Zone"] == "z2" {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("registry: {v}");
            eprintln!("live: {:?}", live(master, &moved));
            eprintln!("agent: {:?}", get_json(data.control, "/nodes"));
            cluster.dump_logs();
            panic!("timed out waiting for the zone move");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Same address and ID after the restart.
    assert_eq!(registered(&data, 3), data_nodes);

    // The master dies: the new one keeps every node active (a full window before judging)
    // and the nodes' answers reach it.
    cluster.kill(leaders[0]);
    let new_leaders = wait_for("new leaders", || cluster.wait_for_leaders(WAIT).ok());
    let new_master = cluster.http_addr(new_leaders[0]);
    for (addr, _) in data_nodes.iter().chain(&meta_nodes) {
        wait_for("answers reach the new master", || {
            live(new_master, addr)
                .filter(|v| v["is_active"] == true && v["heartbeats_answered"].as_u64() >= Some(1))
        });
    }
    let (_, text) =
        get_json(new_master, "/adminTask/live?addr=1.2.3.4:5").unwrap_or((0, Value::Null));
    assert!(
        text.is_object(),
        "unknown nodes are a 404 in the API error format"
    );
}
