//! The Milvus DDL path and DD channel on three real `mast server` processes (two shards):
//! client threads run DDL through every node while shard leaders are killed and restarted,
//! and a DD watcher streams `POST /v2/rootcoord/dd/watch`, reconnecting (to another node)
//! with the last timestamp it saw whenever its connection drops, and also every few dozen
//! lines on purpose.
//!
//! Checked afterwards:
//! - the watcher's stream is strictly increasing in timestamp, and after a tick `T` no DDL at
//!   or below `T` follows (across every reconnect: no gap, no duplicate);
//! - every acknowledged create appears in it exactly once, and every acknowledged DDL is
//!   visible on every node;
//! - a fresh watcher from timestamp 0 sees exactly the same DDL sequence.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{Cluster, ClusterOptions, HttpClient};

const NODES: u64 = 3;
const SHARDS: usize = 2;
const DATABASES: usize = 4;
const CLIENTS: usize = 3;
const LEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// DDL attempts per client: few enough that the history (4,096 events per shard) keeps all.
const OPS_PER_CLIENT: usize = 250;
/// Pause between a client's DDLs, so the workload spans the faults.
const OP_PAUSE: Duration = Duration::from_millis(25);
/// Lines a watcher connection reads before it leaves and resumes on another node.
const LINES_PER_CONNECTION: usize = 60;

/// A streaming NDJSON reader of `dd/watch` (chunked).
struct Watch {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Decoded body bytes not yet split into lines.
    body: Vec<u8>,
    head_done: bool,
}

impl Watch {
    fn open(addr: SocketAddr, since: Option<u64>) -> Result<Watch, String> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .map_err(|e| e.to_string())?;
        let body = match since {
            Some(t) => json!({"sinceTimestamp": t}).to_string(),
            None => "{}".to_string(),
        };
        let req = format!(
            "POST /v2/rootcoord/dd/watch HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(req.as_bytes())
            .map_err(|e| format!("send: {e}"))?;
        Ok(Watch {
            stream,
            buf: Vec::new(),
            body: Vec::new(),
            head_done: false,
        })
    }

    /// Moves complete chunks from `buf` to `body`; `Err` on a malformed chunk or the end.
    fn dechunk(&mut self) -> Result<(), String> {
        if !self.head_done {
            let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                return Ok(());
            };
            let head = String::from_utf8_lossy(&self.buf[..i]).to_string();
            if !head.starts_with("HTTP/1.1 200") || !head.contains("transfer-encoding: chunked") {
                let rest = String::from_utf8_lossy(&self.buf[i + 4..]).to_string();
                return Err(format!("not a stream: {head} {rest}"));
            }
            self.buf.drain(..i + 4);
            self.head_done = true;
        }
        loop {
            let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                return Ok(());
            };
            let size = usize::from_str_radix(&String::from_utf8_lossy(&self.buf[..i]), 16)
                .map_err(|e| format!("bad chunk size: {e}"))?;
            if size == 0 {
                return Err("stream ended".into());
            }
            if self.buf.len() < i + 2 + size + 2 {
                return Ok(());
            }
            self.body.extend_from_slice(&self.buf[i + 2..i + 2 + size]);
            self.buf.drain(..i + 2 + size + 2);
        }
    }

    /// The next line, or `Err` when the connection ended (or `deadline` passed).
    fn next(&mut self, deadline: Instant) -> Result<Value, String> {
        loop {
            if let Some(i) = self.body.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.body.drain(..=i).collect();
                return serde_json::from_slice(&line).map_err(|e| format!("bad line: {e}"));
            }
            if Instant::now() >= deadline {
                return Err("deadline".into());
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("eof".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => return Err(format!("read: {e}")),
            }
            self.dechunk()?;
        }
    }
}

/// What the reconnecting watcher saw.
#[derive(Default)]
struct Seen {
    /// (ts, events) of every DDL line, in arrival order.
    ddls: Vec<(u64, Vec<Value>)>,
    /// Highest timestamp received (DDL or tick).
    last: u64,
    reconnects: usize,
    ticks: usize,
    violations: Vec<String>,
}

fn record(seen: &mut Seen, v: &Value) {
    let ts = v["ts"].as_u64().unwrap_or(0);
    match v["type"].as_str() {
        Some("ddl") => {
            if ts <= seen.last {
                seen.violations.push(format!(
                    "DDL at {ts} after {} (duplicate or out of order)",
                    seen.last
                ));
            }
            seen.ddls
                .push((ts, v["events"].as_array().cloned().unwrap_or_default()));
            seen.last = seen.last.max(ts);
        }
        Some("tick") => {
            if ts < seen.last {
                seen.violations
                    .push(format!("tick {ts} below {}", seen.last));
            }
            seen.ticks += 1;
            seen.last = seen.last.max(ts);
        }
        _ => seen.violations.push(format!("unexpected line {v}")),
    }
}

fn post(c: &mut HttpClient, path: &str, body: Value) -> Option<Value> {
    let r = c.post_json(path, &body).ok()?;
    if r.status != 200 {
        return None;
    }
    r.json().ok()
}

#[test]
fn ddl_under_leader_kills_streams_exactly_once_in_order() {
    let mut cluster = Cluster::start(ClusterOptions::new(NODES, SHARDS)).expect("cluster");
    cluster.wait_for_leaders(LEADER_TIMEOUT).expect("leaders");
    let addrs: Vec<SocketAddr> = (1..=NODES).map(|id| cluster.http_addr(id)).collect();

    // Databases spread over both shards, created before the faults.
    let mut c = cluster.client(1);
    for d in 0..DATABASES {
        let v = post(
            &mut c,
            "/v2/vectordb/databases/create",
            json!({"dbName": format!("db{d}")}),
        )
        .expect("create database");
        assert_eq!(v["code"], 0, "{v}");
    }

    // The watcher: from 0, reconnecting round-robin with the last timestamp it saw.
    let stop = Arc::new(AtomicBool::new(false));
    let stop_watcher = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watcher = {
        let (stop, seen, addrs) = (stop_watcher.clone(), seen.clone(), addrs.clone());
        thread::spawn(move || {
            let mut node = 0usize;
            let mut since = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let mut w = match Watch::open(addrs[node % addrs.len()], Some(since)) {
                    Ok(w) => w,
                    Err(_) => {
                        node += 1;
                        thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                };
                // Besides the kills, leave every LINES_PER_CONNECTION lines and resume on the
                // next node, so resuming is exercised whichever node the faults hit.
                for _ in 0..LINES_PER_CONNECTION {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    match w.next(Instant::now() + Duration::from_secs(3)) {
                        Ok(v) => {
                            let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                            record(&mut s, &v);
                            since = s.last;
                        }
                        Err(_) => break,
                    }
                }
                seen.lock().unwrap_or_else(|p| p.into_inner()).reconnects += 1;
                node += 1;
                thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // Clients: create (and drop every third) collections through every node.
    let acked: Arc<Mutex<Vec<(String, String, bool)>>> = Arc::default();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let (stop, acked, addrs) = (stop.clone(), acked.clone(), addrs.clone());
            thread::spawn(move || {
                let mut i = 0usize;
                while !stop.load(Ordering::SeqCst) && i < OPS_PER_CLIENT {
                    i += 1;
                    thread::sleep(OP_PAUSE);
                    let addr = addrs[(t + i) % addrs.len()];
                    let mut c = HttpClient::new(addr, Duration::from_secs(5));
                    let db = format!("db{}", (t + i) % DATABASES);
                    let name = format!("c_{t}_{i}");
                    let body = json!({"dbName": db, "collectionName": name, "dimension": 4});
                    let Some(v) = post(&mut c, "/v2/vectordb/collections/create", body) else {
                        thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    if v["code"] != 0 {
                        thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    let mut dropped = false;
                    if i % 3 == 0 {
                        let body = json!({"dbName": db, "collectionName": name});
                        dropped = post(&mut c, "/v2/vectordb/collections/drop", body)
                            .is_some_and(|v| v["code"] == 0);
                    }
                    acked
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((db, name, dropped));
                }
            })
        })
        .collect();

    // Faults: kill the leader of each shard in turn, restart it.
    thread::sleep(Duration::from_secs(2));
    for shard in 0..SHARDS {
        let victim = cluster.wait_for_leaders(LEADER_TIMEOUT).expect("leaders")[shard];
        cluster.kill(victim);
        thread::sleep(Duration::from_millis(1500));
        cluster.restart(victim).expect("restart");
        cluster
            .wait_for_leaders(LEADER_TIMEOUT)
            .expect("leaders after restart");
        thread::sleep(Duration::from_millis(1000));
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("client thread");
    }

    // Every acknowledged DDL got its timestamp before this one: wait for a tick past it.
    let mut c = cluster.client(1);
    let end_ts = support::retry(Duration::from_secs(30), || {
        let r = c
            .request("POST", "/tso", &[], b"")
            .map_err(|e| format!("{e:?}"))?;
        r.json()?["timestamp"]
            .as_u64()
            .ok_or(format!("no timestamp: {r}"))
    })
    .expect("tso");
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap_or_else(|p| p.into_inner()).last < end_ts {
        assert!(
            Instant::now() < deadline,
            "the watcher never passed {end_ts}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    stop_watcher.store(true, Ordering::SeqCst);
    watcher.join().expect("watcher thread");
    let seen = Arc::try_unwrap(seen)
        .ok()
        .expect("watcher gone")
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let acked = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    println!(
        "acknowledged creates {}, DDL lines {}, ticks {}, reconnects {}",
        acked.len(),
        seen.ddls.len(),
        seen.ticks,
        seen.reconnects
    );
    assert!(seen.violations.is_empty(), "{:?}", seen.violations);
    assert!(
        acked.len() > 10,
        "too few DDLs acknowledged: {}",
        acked.len()
    );
    assert!(
        seen.reconnects >= 3,
        "the watcher resumed only {} times",
        seen.reconnects
    );

    // Exactly once: every acknowledged create appears once as CreateCollection.
    let mut creates: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (_, events) in &seen.ddls {
        for e in events {
            if e["kind"] == "CreateCollection" {
                let key = (
                    e["dbName"].as_str().unwrap_or("").to_string(),
                    e["collectionName"].as_str().unwrap_or("").to_string(),
                );
                *creates.entry(key).or_default() += 1;
            }
        }
    }
    for (db, name, _) in &acked {
        assert_eq!(
            creates.get(&(db.clone(), name.clone())),
            Some(&1),
            "{db}.{name} acknowledged but seen {:?} times",
            creates.get(&(db.clone(), name.clone()))
        );
    }
    assert!(creates.values().all(|n| *n == 1), "a create streamed twice");

    // Visible on every node.
    for id in 1..=NODES {
        let mut c = cluster.client(id);
        for d in 0..DATABASES {
            let db = format!("db{d}");
            let v = support::retry(Duration::from_secs(30), || {
                post(
                    &mut c,
                    "/v2/vectordb/collections/list",
                    json!({"dbName": db}),
                )
                .filter(|v| v["code"] == 0)
                .ok_or_else(|| "not yet".to_string())
            })
            .expect("list");
            let names: Vec<&str> = v["data"]
                .as_array()
                .map(|a| a.iter().filter_map(|n| n.as_str()).collect())
                .unwrap_or_default();
            for (adb, name, dropped) in &acked {
                if *adb == db {
                    assert_eq!(
                        names.contains(&name.as_str()),
                        !dropped,
                        "node {id}: {db}.{name} (dropped: {dropped}) in {names:?}"
                    );
                }
            }
        }
    }

    // A fresh watcher from 0 sees the same DDL sequence.
    let mut w = Watch::open(addrs[2], Some(0)).expect("watch");
    let mut fresh = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = w.next(deadline).expect("fresh stream");
        let ts = v["ts"].as_u64().unwrap_or(0);
        if ts > seen.last {
            break;
        }
        if v["type"] == "ddl" {
            fresh.push(ts);
        }
        if v["type"] == "tick" && ts == seen.last {
            break;
        }
    }
    let reconnecting: Vec<u64> = seen.ddls.iter().map(|(ts, _)| *ts).collect();
    assert_eq!(fresh, reconnecting, "a fresh watcher sees another sequence");
}

/// Without a quorum no shard has a leader: `component_states` stops saying `Healthy` and a
/// DDL answers code 1 "service not ready" (HTTP 200), as Milvus's coordinator does.
#[test]
fn without_leaders_the_coordinator_is_not_ready() {
    let mut cluster = Cluster::start(ClusterOptions::new(NODES, SHARDS)).expect("cluster");
    cluster.wait_for_leaders(LEADER_TIMEOUT).expect("leaders");
    let mut c = cluster.client(1);
    let v = post(&mut c, "/v2/rootcoord/component_states", json!({})).expect("states");
    assert_eq!(v["data"]["state"]["stateCode"], "Healthy", "{v}");
    cluster.kill(2);
    cluster.kill(3);
    let v = support::retry(Duration::from_secs(30), || {
        let v = post(&mut c, "/v2/rootcoord/component_states", json!({})).ok_or("no answer")?;
        // Every shard must have lost its leader (one may still believe in it for an
        // election timeout).
        let subs = v["data"]["subcomponentStates"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if subs.len() != SHARDS || subs.iter().any(|s| s["stateCode"] == "Healthy") {
            return Err(format!("a shard still has a leader: {v}"));
        }
        Ok(v)
    })
    .expect("state leaves Healthy");
    assert_eq!(v["data"]["state"]["stateCode"], "Initializing", "{v}");
    let r = c
        .post_json(
            "/v2/vectordb/collections/create",
            &json!({"collectionName": "c", "dimension": 4}),
        )
        .expect("DDL answer");
    assert_eq!(r.status, 200, "{r}");
    let v = r.json().expect("json");
    assert_eq!(v["code"], 1, "{v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("service not ready")),
        "{v}"
    );
}

/// One node: `dd/channel` names the channel; a watch from 0 replays the history (one line per
/// DDL with the IDs it created) and then ticks; bad resume points are refused plainly.
#[test]
fn dd_channel_replays_history_then_ticks() {
    let cluster = Cluster::start(ClusterOptions::new(1, SHARDS)).expect("cluster");
    cluster.wait_for_leaders(LEADER_TIMEOUT).expect("leaders");
    let mut c = cluster.client(1);
    let ok = |c: &mut HttpClient, path: &str, body: Value| {
        let v = post(c, path, body).expect("answer");
        assert_eq!(v["code"], 0, "{path}: {v}");
        v
    };
    ok(
        &mut c,
        "/v2/vectordb/databases/create",
        json!({"dbName": "dd1"}),
    );
    ok(
        &mut c,
        "/v2/vectordb/collections/create",
        json!({"dbName": "dd1", "collectionName": "c", "dimension": 4}),
    );
    let described = ok(
        &mut c,
        "/v2/vectordb/collections/describe",
        json!({"dbName": "dd1", "collectionName": "c"}),
    );
    let v = ok(&mut c, "/v2/rootcoord/dd/channel", json!({}));
    assert_eq!(v["data"]["channelName"], "mast-rootcoord-dd", "{v}");

    let mut w = Watch::open(cluster.http_addr(1), Some(0)).expect("watch");
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = w.next(deadline).expect("line");
    assert_eq!(first["type"], "ddl", "{first}");
    assert_eq!(first["events"][0]["kind"], "CreateDatabase", "{first}");
    let second = w.next(deadline).expect("line");
    assert!(second["ts"].as_u64() > first["ts"].as_u64(), "{second}");
    let kinds: Vec<&str> = second["events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["kind"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        kinds,
        ["CreateCollection", "CreatePartition", "CreateIndex"],
        "{second}"
    );
    assert_eq!(
        second["events"][0]["collectionID"], described["data"]["collectionID"],
        "{second}"
    );
    assert_eq!(second["events"][0]["dbName"], "dd1");
    assert!(
        second["events"][1]["partitionID"]
            .as_u64()
            .is_some_and(|p| p > 0),
        "{second}"
    );
    assert_eq!(second["events"][2]["fieldID"], 101, "{second}");
    let mut last = second["ts"].as_u64().unwrap_or(0);
    for _ in 0..3 {
        let tick = w.next(deadline).expect("tick");
        assert_eq!(tick["type"], "tick", "{tick}");
        let ts = tick["ts"].as_u64().unwrap_or(0);
        assert!(ts >= last, "{tick} after {last}");
        last = ts;
    }

    let r = c
        .post_json("/v2/rootcoord/dd/watch", &json!({"sinceTimestamp": -1}))
        .expect("answer");
    assert_eq!(r.json().expect("json")["code"], 1100, "{r}");
    let r = c
        .post_json("/v2/rootcoord/dd/watch", &json!({"sinceTimestamp": "x"}))
        .expect("answer");
    assert_eq!(r.json().expect("json")["code"], 1801, "{r}");
}

/// `--milvus-dd-history-entries-max` bounds each shard's history: a resume from below what
/// is kept is refused with the oldest timestamp still available, and a resume from there
/// replays the rest.
#[test]
fn dd_history_bound_is_configurable_and_older_resumes_are_refused() {
    let cluster =
        Cluster::start(ClusterOptions::new(1, 1).arg("--milvus-dd-history-entries-max", 2))
            .expect("cluster");
    cluster.wait_for_leaders(LEADER_TIMEOUT).expect("leaders");
    let mut c = cluster.client(1);
    for name in ["h1", "h2", "h3"] {
        let v = post(
            &mut c,
            "/v2/vectordb/databases/create",
            json!({"dbName": name}),
        )
        .expect("answer");
        assert_eq!(v["code"], 0, "{v}");
    }
    let r = c
        .post_json("/v2/rootcoord/dd/watch", &json!({"sinceTimestamp": 0}))
        .expect("answer");
    let v = r.json().expect("json");
    assert_eq!(v["code"], 1100, "{v}");
    let message = v["message"].as_str().unwrap_or("");
    let oldest: u64 = message
        .split("oldest timestamp still available is ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no oldest timestamp in {v}"));
    let mut w = Watch::open(cluster.http_addr(1), Some(oldest)).expect("watch");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut dbs = Vec::new();
    while dbs.len() < 2 {
        let v = w.next(deadline).expect("line");
        if v["type"] == "ddl" {
            dbs.push(v["events"][0]["dbName"].as_str().unwrap_or("").to_string());
        }
    }
    assert_eq!(dbs, ["h2", "h3"]);
}
