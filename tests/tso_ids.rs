//! Process level: three nodes, two shards. Clients allocate timestamp and id ranges through
//! every node while group 0's leader is SIGKILLed and restarted, the next leader is
//! SIGSTOPped and resumed, and every node is restarted at once. Every range that was
//! answered must be disjoint from every other, and in real-time order: a range requested
//! after another was answered lies wholly above it. Ambiguous answers (503, 504, a
//! connection error) are allowed and not recorded.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::{Cluster, ClusterOptions, HttpClient};

/// One answered allocation: `[first, first + count)`, between `sent` and `received`.
#[derive(Debug, Clone, Copy)]
struct Got {
    sent: Instant,
    received: Instant,
    first: u64,
    count: u64,
    node: usize,
}

#[derive(Default)]
struct Record {
    tso: Vec<Got>,
    ids: Vec<Got>,
}

const CLIENT_THREADS: usize = 6;
const TEST_BOUND: Duration = Duration::from_secs(120);

fn allocate(c: &mut HttpClient, path: &str, key: &str, count: u64) -> Option<(u64, u64)> {
    let r = c
        .request("POST", &format!("{path}?count={count}"), &[], b"")
        .ok()?;
    if r.status != 200 {
        assert!(
            matches!(r.status, 503 | 504),
            "{path}: unexpected status {}: {}",
            r.status,
            r.body_text()
        );
        return None;
    }
    let v = r.json().ok()?;
    let first = v.get(key)?.as_u64()?;
    let got = v.get("count")?.as_u64()?;
    assert_eq!(got, count, "{path} answered another count: {v}");
    Some((first, got))
}

fn client(
    addrs: Vec<SocketAddr>,
    me: usize,
    stop: Arc<AtomicBool>,
    rec: Arc<Mutex<Record>>,
    ok: Arc<AtomicUsize>,
) {
    let node = me % addrs.len();
    let mut c = HttpClient::new(addrs[node], Duration::from_secs(8));
    let deadline = Instant::now() + TEST_BOUND;
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && i < 200_000 {
        i += 1;
        let count = [1, 1, 3, 100, 1000][(i % 5) as usize];
        let (path, key) = if i % 2 == 0 {
            ("/tso", "timestamp")
        } else {
            ("/ids", "id")
        };
        let sent = Instant::now();
        match allocate(&mut c, path, key, count) {
            Some((first, count)) => {
                let g = Got {
                    sent,
                    received: Instant::now(),
                    first,
                    count,
                    node: node + 1,
                };
                let mut r = rec.lock().unwrap();
                if path == "/tso" {
                    assert!(
                        (first & ((1 << 18) - 1)) + count <= 1 << 18,
                        "timestamp range crosses a millisecond: {g:?}"
                    );
                    r.tso.push(g);
                } else {
                    r.ids.push(g);
                }
                ok.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                thread::sleep(Duration::from_millis(20));
                c = HttpClient::new(addrs[node], Duration::from_secs(8));
            }
        }
    }
}

/// Disjoint, and increasing in real-time order.
fn check(name: &str, all: &[Got]) -> Result<(), String> {
    let mut by_first: Vec<&Got> = all.iter().collect();
    by_first.sort_by_key(|g| g.first);
    for w in by_first.windows(2) {
        if w[0].first + w[0].count > w[1].first {
            return Err(format!(
                "{name}: overlapping ranges {:?} and {:?}",
                w[0], w[1]
            ));
        }
    }
    let mut by_received: Vec<&Got> = all.iter().collect();
    by_received.sort_by_key(|g| g.received);
    let mut by_sent: Vec<&Got> = all.iter().collect();
    by_sent.sort_by_key(|g| g.sent);
    let (mut i, mut max_end, mut witness) = (0, 0u64, None);
    for b in by_sent {
        while i < by_received.len() && by_received[i].received < b.sent {
            let end = by_received[i].first + by_received[i].count;
            if end > max_end {
                max_end = end;
                witness = Some(by_received[i]);
            }
            i += 1;
        }
        if b.first < max_end {
            return Err(format!("{name}: real-time order broken: {b:?} was sent after {witness:?} was answered but is not above it"));
        }
    }
    Ok(())
}

#[test]
fn tso_and_ids_survive_faults() {
    support::print_replay("tso_ids", "tso_and_ids_survive_faults", "");
    let mut cluster =
        Cluster::start(ClusterOptions::new(3, 2)).unwrap_or_else(|e| panic!("start: {e}"));
    let result = run(&mut cluster);
    if let Err(e) = result {
        cluster.dump_logs();
        panic!("{e}");
    }
}

fn wait_ok(ok: &AtomicUsize, more: usize, what: &str) -> Result<(), String> {
    let start = ok.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    while ok.load(Ordering::Relaxed) < start + more {
        if Instant::now() > deadline {
            return Err(format!(
                "fewer than {more} allocations succeeded within 30 s {what}"
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn run(cluster: &mut Cluster) -> Result<(), String> {
    cluster.wait_for_leaders(Duration::from_secs(30))?;
    let addrs: Vec<SocketAddr> = cluster
        .node_ids()
        .iter()
        .map(|&id| cluster.http_addr(id))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let rec = Arc::new(Mutex::new(Record::default()));
    let ok = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..CLIENT_THREADS)
        .map(|me| {
            let (addrs, stop, rec, ok) = (addrs.clone(), stop.clone(), rec.clone(), ok.clone());
            thread::spawn(move || client(addrs, me, stop, rec, ok))
        })
        .collect();
    let faults = (|| -> Result<(), String> {
        wait_ok(&ok, 200, "before any fault")?;
        let leader = cluster.wait_for_leaders(Duration::from_secs(30))?[0];
        cluster.kill(leader);
        wait_ok(&ok, 100, "after killing group 0's leader")?;
        cluster.restart(leader)?;
        let leader = cluster.wait_for_leaders(Duration::from_secs(30))?[0];
        cluster.pause(leader);
        wait_ok(&ok, 100, "while group 0's leader is paused")?;
        cluster.resume(leader);
        wait_ok(&ok, 100, "after resuming the old leader")?;
        let ids = cluster.node_ids();
        for &id in &ids {
            cluster.kill(id);
        }
        for &id in &ids {
            cluster.restart(id)?;
        }
        wait_ok(&ok, 200, "after restarting every node")?;
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join()
            .map_err(|_| "a client thread panicked".to_string())?;
    }
    faults?;
    let rec = rec.lock().unwrap();
    eprintln!(
        "tso_ids: {} timestamp ranges, {} id ranges answered",
        rec.tso.len(),
        rec.ids.len()
    );
    if rec.tso.len() < 100 || rec.ids.len() < 100 {
        return Err("too few answers to judge".into());
    }
    let nodes: std::collections::BTreeSet<usize> = rec.tso.iter().map(|g| g.node).collect();
    if nodes.len() < 3 {
        return Err(format!("timestamps answered through only {nodes:?}"));
    }
    check("tso", &rec.tso)?;
    check("ids", &rec.ids)?;
    // Bad counts are refused the same way on every node.
    for &a in &addrs {
        let mut c = HttpClient::new(a, Duration::from_secs(8));
        for bad in [
            "/tso?count=0",
            "/tso?count=262145",
            "/tso?count=x",
            "/ids?count=0",
            "/ids?count=1000001",
        ] {
            let r = c
                .request("POST", bad, &[], b"")
                .map_err(|e| format!("{bad}: {e:?}"))?;
            if r.status != 400 {
                return Err(format!("{bad} on {a}: {} {}", r.status, r.body_text()));
            }
        }
        let r = c.get("/tso").map_err(|e| format!("GET /tso: {e:?}"))?;
        if r.status != 405 {
            return Err(format!("GET /tso on {a}: {}", r.status));
        }
    }
    Ok(())
}
