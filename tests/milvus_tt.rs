//! Milvus sessions and time tick barriers (issue #12) on three real `mast server` processes.
//!
//! - `sessions_ticks_and_expiry`: register, keep-alive (through a follower: relayed), both
//!   barriers follow the producers' minimum, a backwards report is refused, a producer that
//!   stops keeping its session alive is removed and stops holding the hard barrier.
//! - `barriers_never_go_back_across_a_leader_kill`: simulated proxies report ticks through
//!   every node while group 0's leader is killed; linearizable reads of both barriers never
//!   decrease, a watcher on a surviving node sees a strictly increasing hard stream, and the
//!   barriers advance again after the takeover.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{retry, Cluster, ClusterOptions, HttpClient};

const LEADER_TIMEOUT: Duration = Duration::from_secs(60);
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// POSTs and returns `(code, data-or-message)`.
fn call(c: &mut HttpClient, path: &str, body: Value) -> Result<(i64, Value), String> {
    let r = c
        .post_json(path, &body)
        .map_err(|e| format!("{path}: {e:?}"))?;
    let v = r.json()?;
    let code = v["code"]
        .as_i64()
        .ok_or(format!("{path}: no code in {v}"))?;
    if code == 0 {
        Ok((0, v["data"].clone()))
    } else {
        Ok((code, v["message"].clone()))
    }
}

/// POSTs until it answers code 0.
fn ok(c: &mut HttpClient, path: &str, body: Value) -> Value {
    retry(STEP_TIMEOUT, || match call(c, path, body.clone())? {
        (0, d) => Ok(d),
        (code, m) => Err(format!("{path}: code {code}: {m}")),
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn tick(source: i64, channels: &[&str], ts: u64) -> Value {
    json!({
        "base": {"msgType": "TimeTick", "sourceID": source},
        "channelNames": channels,
        "timestamps": channels.iter().map(|_| ts).collect::<Vec<_>>(),
        "defaultTimestamp": ts,
    })
}

fn barriers(c: &mut HttpClient, channel: &str) -> Result<(u64, u64), String> {
    match call(
        c,
        "/v2/rootcoord/time_tick/get",
        json!({"channelName": channel}),
    )? {
        (0, d) => Ok((
            d["soft"].as_u64().unwrap_or(0),
            d["hard"].as_u64().unwrap_or(0),
        )),
        (code, m) => Err(format!("get: {code} {m}")),
    }
}

fn wait_barriers(c: &mut HttpClient, channel: &str, soft: u64, hard: u64) {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let got = barriers(c, channel);
        if got == Ok((soft, hard)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "barriers of {channel} never became ({soft}, {hard}); last {got:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn leader0(cluster: &Cluster) -> u64 {
    cluster.wait_for_leaders(LEADER_TIMEOUT).expect("leaders")[0]
}

#[test]
fn sessions_ticks_and_expiry() {
    let cluster = Cluster::start(ClusterOptions::new(3, 1)).expect("cluster");
    let leader = leader0(&cluster);
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|&i| i != leader)
        .unwrap();
    let mut l = cluster.client(leader);
    let mut f = cluster.client(follower);

    for (id, ttl) in [(11, 30), (12, 2)] {
        ok(
            &mut f,
            "/v2/rootcoord/sessions/register",
            json!({"serverID": id, "role": "proxy", "address": format!("127.0.0.1:{id}"),
                   "channelNames": ["rc-dml_0"], "ttlSeconds": ttl}),
        );
    }
    ok(
        &mut f,
        "/v2/rootcoord/sessions/register",
        json!({"serverID": 7, "role": "tenant", "channelNames": ["ins"],
               "queryChannelName": "q", "numQueryNodes": 2}),
    );
    let listed = ok(
        &mut l,
        "/v2/rootcoord/sessions/list",
        json!({"role": "proxy"}),
    );
    let ids: Vec<i64> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["serverID"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![11, 12]);
    // A second role under an existing ID is refused.
    let (code, _) = call(
        &mut l,
        "/v2/rootcoord/sessions/register",
        json!({"serverID": 11, "role": "datanode"}),
    )
    .unwrap();
    assert_eq!(code, 1100);

    // Keep-alive through the follower is relayed to the leader's memory.
    let ka = ok(
        &mut f,
        "/v2/rootcoord/sessions/keep_alive",
        json!({"serverID": 11}),
    );
    assert!(ka["ttlRemainingMs"].as_u64().unwrap() > 25_000, "{ka}");
    let (code, msg) = call(
        &mut f,
        "/v2/rootcoord/sessions/keep_alive",
        json!({"serverID": 99}),
    )
    .unwrap();
    assert_eq!(code, 1100, "{msg}");

    let ch = "rc-dml_0";
    ok(
        &mut f,
        "/v2/rootcoord/update_channel_time_tick",
        tick(11, &[ch], 1000),
    );
    // Only 11 reported: soft moves, hard waits for 12.
    wait_barriers(&mut l, ch, 1000, 0);
    ok(
        &mut l,
        "/v2/rootcoord/update_channel_time_tick",
        tick(12, &[ch], 400),
    );
    wait_barriers(&mut l, ch, 1000, 400);
    ok(
        &mut l,
        "/v2/rootcoord/update_channel_time_tick",
        tick(12, &[ch], 700),
    );
    wait_barriers(&mut f, ch, 1000, 700);

    // Backwards: refused with a clear error, nothing changes.
    let (code, msg) = call(
        &mut l,
        "/v2/rootcoord/update_channel_time_tick",
        tick(12, &[ch], 600),
    )
    .unwrap();
    assert_eq!(code, 1100);
    assert!(msg.as_str().unwrap().contains("backwards"), "{msg}");
    // Not a producer (a tenant) and not registered at all.
    for source in [7, 99] {
        let (code, _) = call(
            &mut l,
            "/v2/rootcoord/update_channel_time_tick",
            tick(source, &[ch], 5000),
        )
        .unwrap();
        assert_eq!(code, 1100);
    }
    let (code, _) = call(
        &mut l,
        "/v2/rootcoord/update_channel_time_tick",
        json!({"base": {"msgType": "Insert", "sourceID": 11}, "channelNames": [],
               "timestamps": [], "defaultTimestamp": 1}),
    )
    .unwrap();
    assert_eq!(code, 1100);

    // 12 (TTL 2 s) goes silent while 11 keeps alive and moves on: 12 expires, is removed,
    // and the hard barrier follows 11 alone.
    ok(
        &mut l,
        "/v2/rootcoord/update_channel_time_tick",
        tick(11, &[ch], 2000),
    );
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        ok(
            &mut f,
            "/v2/rootcoord/sessions/keep_alive",
            json!({"serverID": 11}),
        );
        if barriers(&mut l, ch) == Ok((2000, 2000)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "12 never expired: {:?}",
            barriers(&mut l, ch)
        );
        thread::sleep(Duration::from_millis(200));
    }
    let listed = ok(&mut l, "/v2/rootcoord/sessions/list", json!({}));
    assert_eq!(listed["expiredTotal"], 1);
    let ids: Vec<i64> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["serverID"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![7, 11], "the tenant has the default 15 s TTL");
    let stats = ok(&mut f, "/v2/rootcoord/time_tick/stats", json!({}));
    assert_eq!(stats["expiredTotal"], 1, "{stats}");
    assert_eq!(stats["producers"], 1, "{stats}");

    // Leaving removes at once.
    // Leaving removes it (through a follower: the leader's memory follows within its sync
    // interval).
    ok(
        &mut f,
        "/v2/rootcoord/sessions/leave",
        json!({"serverID": 11}),
    );
    retry(STEP_TIMEOUT, || {
        match call(
            &mut l,
            "/v2/rootcoord/update_channel_time_tick",
            tick(11, &[ch], 3000),
        )? {
            (1100, _) => Ok(()),
            other => Err(format!("a report of a session that left: {other:?}")),
        }
    })
    .unwrap();
}

/// Reads the NDJSON lines of a `time_tick/watch` stream (chunked).
struct Watch {
    stream: TcpStream,
    raw: Vec<u8>,
    body: Vec<u8>,
    head_done: bool,
}

impl Watch {
    fn open(addr: SocketAddr, channel: &str, barrier: &str) -> Watch {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let body = json!({"channelName": channel, "barrier": barrier}).to_string();
        let req = format!(
            "POST /v2/rootcoord/time_tick/watch HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(req.as_bytes()).unwrap();
        Watch {
            stream,
            raw: Vec::new(),
            body: Vec::new(),
            head_done: false,
        }
    }

    /// Lines available now (waits at most the read timeout).
    fn lines(&mut self) -> Vec<Value> {
        let mut buf = [0u8; 16 * 1024];
        match self.stream.read(&mut buf) {
            Ok(0) => panic!("watch stream ended"),
            Ok(n) => self.raw.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if !self.head_done {
            let Some(i) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                return Vec::new();
            };
            let head = String::from_utf8_lossy(&self.raw[..i]).to_string();
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            self.raw.drain(..i + 4);
            self.head_done = true;
        }
        // Dechunk.
        while let Some(i) = self.raw.windows(2).position(|w| w == b"\r\n") {
            let size =
                usize::from_str_radix(std::str::from_utf8(&self.raw[..i]).unwrap(), 16).unwrap();
            if self.raw.len() < i + 2 + size + 2 {
                break;
            }
            assert!(size > 0, "watch stream ended");
            self.body.extend_from_slice(&self.raw[i + 2..i + 2 + size]);
            self.raw.drain(..i + 2 + size + 2);
        }
        let mut out = Vec::new();
        while let Some(i) = self.body.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.body.drain(..=i).collect();
            out.push(serde_json::from_slice(&line).unwrap());
        }
        out
    }
}

#[test]
fn barriers_never_go_back_across_a_leader_kill() {
    const PRODUCERS: i64 = 20;
    const CHANNELS: [&str; 4] = ["dml_0", "dml_1", "dml_2", "dml_3"];
    let mut cluster = Cluster::start(ClusterOptions::new(3, 1)).expect("cluster");
    let leader = leader0(&cluster);
    let mut c = cluster.client(leader);
    for id in 1..=PRODUCERS {
        ok(
            &mut c,
            "/v2/rootcoord/sessions/register",
            json!({"serverID": id, "role": "proxy", "address": format!("127.0.0.1:{id}")}),
        );
    }
    let addrs: Vec<SocketAddr> = cluster
        .node_ids()
        .into_iter()
        .map(|i| cluster.http_addr(i))
        .collect();
    let survivor = cluster
        .node_ids()
        .into_iter()
        .find(|&i| i != leader)
        .unwrap();
    let mut watch = Watch::open(cluster.http_addr(survivor), CHANNELS[0], "hard");

    // Producers: each reports its own clock every 20 ms through some node (any node that
    // answers), keeping its session alive; a report refused or lost is retried next round
    // with a larger value, as a proxy does.
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for group in 0..4 {
        let (stop, refused, addrs) = (stop.clone(), refused.clone(), addrs.clone());
        threads.push(thread::spawn(move || {
            let mut clients: Vec<HttpClient> = addrs
                .iter()
                .map(|a| HttpClient::new(*a, Duration::from_secs(2)))
                .collect();
            let mut clock = 1_000u64;
            let mut round = 0usize;
            while !stop.load(Ordering::Relaxed) {
                clock += 10;
                for id in (1..=PRODUCERS).filter(|id| id % 4 == group) {
                    let ts = clock + id as u64;
                    let c = &mut clients[(round + id as usize) % addrs.len()];
                    match call(
                        c,
                        "/v2/rootcoord/update_channel_time_tick",
                        tick(id, &CHANNELS, ts),
                    ) {
                        Ok((0, _)) => {}
                        Ok((1100, m)) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            eprintln!("refused: {m}");
                        }
                        _ => {}
                    }
                    let _ = call(
                        c,
                        "/v2/rootcoord/sessions/keep_alive",
                        json!({"serverID": id}),
                    );
                }
                round += 1;
                thread::sleep(Duration::from_millis(20));
            }
        }));
    }
    // Readers: linearizable reads through every node never see a barrier go back.
    let seen = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
    let reader = {
        let (stop, seen, addrs) = (stop.clone(), seen.clone(), addrs.clone());
        thread::spawn(move || {
            let mut clients: Vec<HttpClient> = addrs
                .iter()
                .map(|a| HttpClient::new(*a, Duration::from_secs(2)))
                .collect();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                if let Ok(v) = barriers(&mut clients[i % addrs.len()], CHANNELS[1]) {
                    seen.lock().unwrap().push(v);
                }
                thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let mut hard_stream = Vec::new();
    let mut drain_watch = |until: Instant, hard_stream: &mut Vec<u64>| {
        while Instant::now() < until {
            for l in watch.lines() {
                assert_eq!(l["type"], "hard", "{l}");
                hard_stream.push(l["ts"].as_u64().unwrap());
            }
        }
    };
    drain_watch(Instant::now() + Duration::from_secs(3), &mut hard_stream);
    let before_kill = barriers(&mut cluster.client(survivor), CHANNELS[1]).unwrap();
    assert!(
        before_kill.1 > 1_000,
        "hard barrier never advanced: {before_kill:?}"
    );
    cluster.kill(leader);
    drain_watch(Instant::now() + Duration::from_secs(8), &mut hard_stream);
    let after = barriers(&mut cluster.client(survivor), CHANNELS[1]).unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    reader.join().unwrap();

    assert!(
        after.0 > before_kill.0 && after.1 > before_kill.1,
        "barriers did not advance after the takeover: before {before_kill:?}, after {after:?}"
    );
    let seen = seen.lock().unwrap();
    assert!(seen.len() > 100, "too few reads: {}", seen.len());
    for w in seen.windows(2) {
        assert!(
            w[1].0 >= w[0].0 && w[1].1 >= w[0].1,
            "a barrier went back: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    assert!(hard_stream.len() > 10, "watcher saw {hard_stream:?}");
    assert!(
        hard_stream.windows(2).all(|w| w[0] < w[1]),
        "hard stream not strictly increasing: {hard_stream:?}"
    );
    assert!(
        *hard_stream.last().unwrap() > before_kill.1,
        "the watcher on a surviving node saw no value after the takeover"
    );
    assert_eq!(refused.load(Ordering::Relaxed), 0, "a report was refused");
}
