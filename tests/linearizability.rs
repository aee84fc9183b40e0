//! Linearizability of the replicated KV under faults, checked with `support::linz`, plus the
//! checker's own tests on hand-made histories.
//!
//! `cluster_history_is_linearizable_under_kills_and_pauses`: concurrent clients (threads, each
//! with its own connections to every node) do random put/get/CAS/delete on a few keys while a
//! nemesis kills, pauses and restarts nodes, leaders included; then the history is checked.
//! Seeded: the seed is printed; `MAST_LINZ_SEED=<seed>` replays the same choices (the timing of
//! a real cluster is not replayable, so a replay explores the same schedule, not the same
//! interleaving). `MAST_LINZ_SECS` sets the workload duration (default 15 s, for CI);
//! `MAST_LINZ_EXTRA_ARGS` adds server flags (`--follower-read` must make this test fail).

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::linz::{self, Input, Operation, Output, Verdict};
use support::{kv_path, Cluster, ClusterOptions, HttpClient, NodeState};

// ---------------------------------------------------------------------------------------------
// Checker tests on hand-made histories.

fn op(client: usize, input: Input, output: Output, call: u64, ret: Option<u64>) -> Operation {
    Operation {
        client,
        node: 0,
        key: "k".into(),
        input,
        output,
        call,
        ret,
        revision: None,
    }
}

fn put(v: &str) -> Input {
    Input::Put(v.into())
}

fn read(v: Option<&str>) -> Output {
    Output::Value(v.map(String::from))
}

fn cas(expected: Option<&str>, new: &str) -> Input {
    Input::Cas {
        expected: expected.map(String::from),
        new: new.into(),
    }
}

fn verdict(h: &[Operation]) -> Verdict {
    linz::check(h).expect("well-formed history")
}

fn assert_illegal(h: &[Operation]) {
    match verdict(h) {
        Verdict::Illegal { explanation, .. } => {
            assert!(explanation.contains("could come next"), "{explanation}")
        }
        v => panic!("expected an illegal history, got {v:?}"),
    }
}

#[test]
fn linz_accepts_sequential_and_overlapping_histories() {
    let h = vec![
        op(0, Input::Get, read(None), 0, Some(1)),
        op(0, put("a"), Output::Ok, 2, Some(3)),
        op(1, Input::Get, read(Some("a")), 4, Some(5)),
        op(1, Input::Delete, Output::Ok, 6, Some(7)),
        op(0, Input::Get, read(None), 8, Some(9)),
    ];
    assert_eq!(verdict(&h), Verdict::Linearizable);

    // A read overlapping a write may see either side; two overlapping reads may disagree only
    // in the order the write allows (old then new).
    let h = vec![
        op(0, put("a"), Output::Ok, 0, Some(1)),
        op(1, put("b"), Output::Ok, 10, Some(50)),
        op(2, Input::Get, read(Some("a")), 11, Some(20)),
        op(3, Input::Get, read(Some("b")), 12, Some(30)),
        op(2, Input::Get, read(Some("b")), 21, Some(40)),
    ];
    assert_eq!(verdict(&h), Verdict::Linearizable);
}

#[test]
fn linz_rejects_stale_read() {
    let h = vec![
        op(0, put("a"), Output::Ok, 0, Some(1)),
        op(0, put("b"), Output::Ok, 2, Some(3)),
        op(1, Input::Get, read(Some("a")), 4, Some(5)),
    ];
    assert_illegal(&h);
}

#[test]
fn linz_rejects_non_monotonic_reads_around_a_write() {
    // Both reads overlap the write, but once one read saw the new value, a read that starts
    // after it returned cannot see the old one.
    let h = vec![
        op(0, put("a"), Output::Ok, 0, Some(1)),
        op(1, put("b"), Output::Ok, 10, Some(100)),
        op(2, Input::Get, read(Some("b")), 11, Some(20)),
        op(3, Input::Get, read(Some("a")), 21, Some(30)),
    ];
    assert_illegal(&h);
}

#[test]
fn linz_rejects_lost_update() {
    // An acknowledged write that a later read does not see.
    let h = vec![
        op(0, put("a"), Output::Ok, 0, Some(1)),
        op(1, Input::Get, read(None), 2, Some(3)),
    ];
    assert_illegal(&h);
    // Read-modify-write by CAS: both clients read "a" and both CASes succeed.
    let h = vec![
        op(0, put("a"), Output::Ok, 0, Some(1)),
        op(1, Input::Get, read(Some("a")), 2, Some(3)),
        op(2, Input::Get, read(Some("a")), 2, Some(3)),
        op(1, cas(Some("a"), "b"), Output::CasResult(true), 4, Some(10)),
        op(2, cas(Some("a"), "c"), Output::CasResult(true), 5, Some(11)),
    ];
    assert_illegal(&h);
}

#[test]
fn linz_rejects_two_create_only_winners() {
    let h = vec![
        op(1, cas(None, "b"), Output::CasResult(true), 0, Some(10)),
        op(2, cas(None, "c"), Output::CasResult(true), 1, Some(11)),
    ];
    assert_illegal(&h);
}

#[test]
fn linz_rejects_read_of_a_value_never_written() {
    let h = vec![
        op(0, put("a"), Output::Ok, 0, Some(1)),
        op(1, Input::Get, read(Some("zzz")), 0, Some(5)),
    ];
    assert_illegal(&h);
}

#[test]
fn linz_cas_outcomes_follow_the_register() {
    let ok = vec![
        op(0, put("a"), Output::Ok, 0, Some(1)),
        op(1, cas(Some("x"), "b"), Output::CasResult(false), 2, Some(3)),
        op(1, cas(Some("a"), "c"), Output::CasResult(true), 4, Some(5)),
        op(2, cas(None, "d"), Output::CasResult(false), 6, Some(7)),
        op(2, Input::Get, read(Some("c")), 8, Some(9)),
    ];
    assert_eq!(verdict(&ok), Verdict::Linearizable);
    // A CAS refused although the value matched and nothing ran concurrently.
    let bad = vec![
        op(0, put("a"), Output::Ok, 0, Some(1)),
        op(1, cas(Some("a"), "b"), Output::CasResult(false), 2, Some(3)),
    ];
    assert_illegal(&bad);
}

#[test]
fn linz_unknown_writes_may_apply_late_or_never() {
    // Took effect long after its invocation (after a read that did not see it).
    let late = vec![
        op(0, put("a"), Output::Unknown, 0, None),
        op(1, Input::Get, read(None), 100, Some(110)),
        op(1, Input::Get, read(Some("a")), 200, Some(210)),
    ];
    assert_eq!(verdict(&late), Verdict::Linearizable);
    // Never took effect.
    let never = vec![
        op(0, put("a"), Output::Unknown, 0, None),
        op(1, Input::Get, read(None), 100, Some(110)),
    ];
    assert_eq!(verdict(&never), Verdict::Linearizable);
    // An unknown CAS whose precondition held at some point.
    let cas_late = vec![
        op(0, put("a"), Output::Ok, 0, Some(1)),
        op(1, cas(Some("a"), "b"), Output::Unknown, 2, None),
        op(2, Input::Get, read(Some("b")), 50, Some(60)),
    ];
    assert_eq!(verdict(&cas_late), Verdict::Linearizable);
    // But it takes effect once: seen, then gone without any other write, is illegal.
    let flicker = vec![
        op(0, put("a"), Output::Unknown, 0, None),
        op(1, Input::Get, read(Some("a")), 100, Some(110)),
        op(1, Input::Get, read(None), 200, Some(210)),
    ];
    assert_illegal(&flicker);
    // And an unknown CAS cannot apply if its precondition never held.
    let impossible = vec![
        op(0, put("a"), Output::Ok, 0, Some(1)),
        op(1, cas(Some("x"), "b"), Output::Unknown, 2, None),
        op(2, Input::Get, read(Some("b")), 50, Some(60)),
    ];
    assert_illegal(&impossible);
}

#[test]
fn linz_keys_are_independent() {
    let mut h = vec![
        op(0, put("a"), Output::Ok, 0, Some(1)),
        op(0, Input::Get, read(Some("a")), 2, Some(3)),
    ];
    let mut other = op(1, Input::Get, read(None), 4, Some(5));
    other.key = "other".into();
    h.push(other.clone());
    assert_eq!(verdict(&h), Verdict::Linearizable);
    other.output = read(Some("a"));
    h.push(other);
    match verdict(&h) {
        Verdict::Illegal { key, .. } => assert_eq!(key, "other"),
        v => panic!("expected illegal on key other, got {v:?}"),
    }
}

#[test]
fn linz_rejects_malformed_histories() {
    let dup = vec![
        op(0, put("a"), Output::Ok, 0, Some(1)),
        op(1, put("a"), Output::Ok, 2, Some(3)),
    ];
    assert!(linz::check(&dup).is_err());
    let backwards = vec![op(0, put("a"), Output::Ok, 5, Some(1))];
    assert!(linz::check(&backwards).is_err());
    let unknown_read = vec![op(0, Input::Get, Output::Unknown, 0, None)];
    assert!(linz::check(&unknown_read).is_err());
}

#[test]
fn linz_revision_check_finds_inconsistent_etags() {
    let mut a = op(0, put("a"), Output::Ok, 0, Some(1));
    a.revision = Some(7);
    let mut r = op(1, Input::Get, read(Some("a")), 2, Some(3));
    r.revision = Some(7);
    assert!(linz::check_revisions(&[a.clone(), r.clone()]).is_empty());
    r.revision = Some(8);
    assert_eq!(linz::check_revisions(&[a.clone(), r]).len(), 1);
    let mut b = op(0, put("b"), Output::Ok, 4, Some(5));
    b.revision = Some(7);
    assert_eq!(linz::check_revisions(&[a, b]).len(), 1);
}

/// Builds a random history that is linearizable by construction: each operation takes effect
/// at a point inside its [call, ret] interval on a sequential register, and some writes are
/// recorded as unknown.
fn random_linearizable_history(rng: &mut StdRng, clients: usize, ops: usize) -> Vec<Operation> {
    // (linearization point, client, call, ret)
    let mut slots = Vec::new();
    let mut clock = vec![0u64; clients];
    for i in 0..ops {
        let c = i % clients;
        let call = clock[c] + rng.gen_range(0..20);
        let ret = call + rng.gen_range(1..60);
        let point = rng.gen_range(call..=ret);
        clock[c] = ret + 1;
        slots.push((point, c, call, ret));
    }
    slots.sort();
    let mut state: Option<String> = None;
    let mut out = Vec::new();
    for (n, (_, c, call, ret)) in slots.into_iter().enumerate() {
        let v = format!("v{n}");
        let (input, output) = match rng.gen_range(0..10) {
            0..=3 => (Input::Get, read(state.as_deref())),
            4..=5 => {
                state = Some(v.clone());
                (put(&v), Output::Ok)
            }
            6 => {
                state = None;
                (Input::Delete, Output::Ok)
            }
            _ => {
                // Expect the current value half of the time.
                let expected = if rng.gen_bool(0.5) {
                    state.clone()
                } else {
                    Some(format!("nope{n}"))
                };
                let applies = expected == state;
                if applies {
                    state = Some(v.clone());
                }
                (Input::Cas { expected, new: v }, Output::CasResult(applies))
            }
        };
        let unknown = !matches!(input, Input::Get) && rng.gen_range(0..10) == 0;
        out.push(Operation {
            client: c,
            node: 0,
            key: "k".into(),
            input,
            output: if unknown { Output::Unknown } else { output },
            call,
            ret: if unknown { None } else { Some(ret) },
            revision: None,
        });
    }
    out
}

#[test]
fn linz_accepts_random_linearizable_histories_and_rejects_corrupted_ones() {
    let mut rng = StdRng::seed_from_u64(0x11A2);
    let mut corrupted_rejected = 0;
    for round in 0..60 {
        let h = random_linearizable_history(&mut rng, 4, 60);
        assert_eq!(verdict(&h), Verdict::Linearizable, "round {round}: {h:#?}");
        // A read of a value that was never written is always detected.
        let mut bad = h.clone();
        if let Some(r) = bad.iter_mut().find(|o| o.input == Input::Get) {
            r.output = read(Some("never-written"));
            assert!(
                matches!(verdict(&bad), Verdict::Illegal { .. }),
                "round {round}"
            );
            corrupted_rejected += 1;
        }
    }
    assert!(corrupted_rejected > 50);
}

#[test]
fn linz_gives_up_with_undecided_at_the_step_limit() {
    let mut rng = StdRng::seed_from_u64(7);
    let h = random_linearizable_history(&mut rng, 6, 200);
    assert_eq!(
        linz::check_with_limit(&h, 10).expect("well formed"),
        Verdict::Undecided {
            keys: vec!["k".into()]
        }
    );
}

// ---------------------------------------------------------------------------------------------
// The cluster under a nemesis.

const KEYS: [&str; 4] = ["linz/a", "linz/b", "linz/c", "linz/d"];
const CLIENTS: usize = 5;
/// Per client, so a runaway loop still ends.
const OPS_PER_CLIENT_MAX: usize = 20_000;

/// Counters of what clients saw, for the report.
#[derive(Debug, Default, Clone)]
struct Tally {
    ok: usize,
    unknown: usize,
    /// Definite failures (503, connect errors) dropped from the history.
    dropped: usize,
    statuses: HashMap<u16, usize>,
}

fn client_loop(
    client: usize,
    seed: u64,
    nodes: Vec<(u64, std::net::SocketAddr)>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
) -> (Vec<Operation>, Tally) {
    let mut rng = StdRng::seed_from_u64(seed ^ (client as u64).wrapping_mul(0x9E37_79B9));
    // 8 s: longer than the server's request timeout (5 s), so a stuck request usually comes
    // back as a 504 rather than a client-side timeout.
    let mut conns: Vec<(u64, HttpClient)> = nodes
        .iter()
        .map(|&(id, a)| (id, HttpClient::new(a, Duration::from_secs(8))))
        .collect();
    // What this client last saw per key: Some((value, revision)) or None for absent.
    let mut seen: HashMap<&str, Option<(String, u64)>> = HashMap::new();
    let mut history = Vec::new();
    let mut tally = Tally::default();
    let now = |epoch: Instant| epoch.elapsed().as_nanos() as u64;

    for seq in 0..OPS_PER_CLIENT_MAX {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let key = KEYS[rng.gen_range(0..KEYS.len())];
        let node = rng.gen_range(0..conns.len());
        let (node_id, conn) = &mut conns[node];
        let node_id = *node_id;
        let value = format!("c{client}-{seq}");
        let path = kv_path(key);
        let dice = rng.gen_range(0..100);
        let (input, result) = if dice < 40 {
            let call = now(epoch);
            let r = conn.get(&path);
            (Input::Get, (call, r))
        } else if dice < 90 {
            match (dice < 65, seen.get(key)) {
                (false, Some(Some((v, rev)))) => {
                    let call = now(epoch);
                    let etag = format!("\"{rev}\"");
                    let r = conn.request("PUT", &path, &[("if-match", &etag)], value.as_bytes());
                    (
                        Input::Cas {
                            expected: Some(v.clone()),
                            new: value.clone(),
                        },
                        (call, r),
                    )
                }
                (false, Some(None)) => {
                    let call = now(epoch);
                    let r = conn.request("PUT", &path, &[("if-none-match", "*")], value.as_bytes());
                    (
                        Input::Cas {
                            expected: None,
                            new: value.clone(),
                        },
                        (call, r),
                    )
                }
                _ => {
                    let call = now(epoch);
                    let r = conn.put(&path, value.as_bytes());
                    (Input::Put(value.clone()), (call, r))
                }
            }
        } else {
            let call = now(epoch);
            let r = conn.delete(&path);
            (Input::Delete, (call, r))
        };
        let (call, result) = result;
        let ret = now(epoch);
        let mut record = |output: Output, ret: Option<u64>, revision: Option<u64>| {
            history.push(Operation {
                client,
                node: node_id,
                key: key.to_string(),
                input: input.clone(),
                output,
                call,
                ret,
                revision,
            });
        };
        match result {
            Ok(resp) => {
                *tally.statuses.entry(resp.status).or_default() += 1;
                let rev = resp.etag_revision();
                match (&input, resp.status) {
                    (Input::Get, 200) => {
                        let v = String::from_utf8_lossy(&resp.body).into_owned();
                        if let Some(rev) = rev {
                            seen.insert(key, Some((v.clone(), rev)));
                        }
                        record(Output::Value(Some(v)), Some(ret), rev);
                        tally.ok += 1;
                    }
                    (Input::Get, 404) => {
                        seen.insert(key, None);
                        record(Output::Value(None), Some(ret), None);
                        tally.ok += 1;
                    }
                    (Input::Put(v), 204) => {
                        if let Some(rev) = rev {
                            seen.insert(key, Some((v.clone(), rev)));
                        }
                        record(Output::Ok, Some(ret), rev);
                        tally.ok += 1;
                    }
                    (Input::Cas { new, .. }, 204) => {
                        if let Some(rev) = rev {
                            seen.insert(key, Some((new.clone(), rev)));
                        }
                        record(Output::CasResult(true), Some(ret), rev);
                        tally.ok += 1;
                    }
                    (Input::Cas { .. }, 412) => {
                        // Our view is out of date; the next CAS on this key becomes a put.
                        seen.remove(key);
                        record(Output::CasResult(false), Some(ret), None);
                        tally.ok += 1;
                    }
                    (Input::Delete, 204) => {
                        seen.insert(key, None);
                        record(Output::Ok, Some(ret), None);
                        tally.ok += 1;
                    }
                    // A failed read says nothing; a 503 is a refusal before proposing.
                    (Input::Get, _) | (_, 503) => tally.dropped += 1,
                    // 504 and anything unexpected: the write may or may not have happened.
                    _ => {
                        record(Output::Unknown, None, None);
                        tally.unknown += 1;
                    }
                }
            }
            Err(e) => {
                if !matches!(input, Input::Get) && e.may_have_been_applied() {
                    record(Output::Unknown, None, None);
                    tally.unknown += 1;
                } else {
                    tally.dropped += 1;
                    // The node is down or paused: back off a little instead of spinning on
                    // connection refusals.
                    thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
    (history, tally)
}

#[test]
fn cluster_history_is_linearizable_under_kills_and_pauses() {
    let seed = std::env::var("MAST_LINZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen::<u64>());
    let secs: u64 = std::env::var("MAST_LINZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    eprintln!("linearizability seed {seed}, workload {secs} s");
    support::print_replay(
        "linearizability",
        "cluster_history_is_linearizable_under_kills_and_pauses",
        &format!(
            "MAST_LINZ_SEED={seed} MAST_LINZ_SECS={secs} MAST_LINZ_EXTRA_ARGS='{}' ",
            std::env::var("MAST_LINZ_EXTRA_ARGS").unwrap_or_default()
        ),
    );
    let mut rng = StdRng::seed_from_u64(seed);

    // Extra server flags, e.g. `--follower-read` to see the checker catch stale reads.
    let mut opts = ClusterOptions::new(3, 2);
    if let Ok(extra) = std::env::var("MAST_LINZ_EXTRA_ARGS") {
        opts.extra_args
            .extend(extra.split_whitespace().map(String::from));
    }
    let mut cluster = Cluster::start(opts).expect("start the cluster");
    cluster
        .wait_for_leaders(Duration::from_secs(30))
        .expect("initial leaders");
    let ids = cluster.node_ids();
    let nodes: Vec<_> = ids.iter().map(|&id| (id, cluster.http_addr(id))).collect();

    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let nodes = nodes.clone();
            let stop = stop.clone();
            thread::spawn(move || client_loop(c, seed, nodes, epoch, stop))
        })
        .collect();

    // The nemesis: one fault at a time, each healed before the next.
    let end = Instant::now() + Duration::from_secs(secs);
    let mut events = Vec::new();
    let mut nemesis_error = None;
    while Instant::now() < end {
        thread::sleep(Duration::from_millis(rng.gen_range(500..1500)));
        let leaders = cluster
            .wait_for_leaders(Duration::from_secs(1))
            .unwrap_or_default();
        let victim = match (rng.gen_bool(0.6), leaders.is_empty()) {
            (true, false) => leaders[rng.gen_range(0..leaders.len())],
            _ => ids[rng.gen_range(0..ids.len())],
        };
        let fault_ms = rng.gen_range(300..2500);
        let t = epoch.elapsed().as_millis();
        if rng.gen_bool(0.5) {
            events.push(format!("{t}ms kill node {victim} for {fault_ms}ms"));
            cluster.kill(victim);
            thread::sleep(Duration::from_millis(fault_ms));
            if let Err(e) = cluster.restart(victim) {
                nemesis_error = Some(e);
                break;
            }
        } else {
            events.push(format!("{t}ms pause node {victim} for {fault_ms}ms"));
            cluster.pause(victim);
            thread::sleep(Duration::from_millis(fault_ms));
            cluster.resume(victim);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut history = Vec::new();
    let mut tally = Tally::default();
    for w in workers {
        let (h, t) = w.join().expect("client thread");
        history.extend(h);
        tally.ok += t.ok;
        tally.unknown += t.unknown;
        tally.dropped += t.dropped;
        for (s, n) in t.statuses {
            *tally.statuses.entry(s).or_default() += n;
        }
    }
    eprintln!("nemesis: {events:#?}");
    if let Some(e) = nemesis_error {
        panic!("a node did not come back after a kill: {e}");
    }

    // Healed: final linearizable reads of every key through every node join the history.
    for id in cluster.node_ids() {
        assert_eq!(cluster.node(id).state, NodeState::Running);
    }
    cluster
        .wait_for_leaders(Duration::from_secs(30))
        .expect("leaders after healing");
    for (n, &id) in ids.iter().enumerate() {
        let mut c = cluster.client(id);
        for key in KEYS {
            let path = kv_path(key);
            let (call, resp) = support::retry(Duration::from_secs(20), || {
                let call = epoch.elapsed().as_nanos() as u64;
                match c.get(&path) {
                    Ok(r) if r.status == 200 || r.status == 404 => Ok((call, r)),
                    Ok(r) => Err(format!("GET {path} via node {id}: {r}")),
                    Err(e) => Err(format!("GET {path} via node {id}: {e}")),
                }
            })
            .expect("final read after healing");
            let ret = epoch.elapsed().as_nanos() as u64;
            let value =
                (resp.status == 200).then(|| String::from_utf8_lossy(&resp.body).into_owned());
            history.push(Operation {
                client: CLIENTS + n,
                node: id,
                key: key.to_string(),
                input: Input::Get,
                output: Output::Value(value),
                call,
                ret: Some(ret),
                revision: resp.etag_revision(),
            });
        }
    }

    let writes_ok = history
        .iter()
        .filter(|o| matches!(o.output, Output::Ok | Output::CasResult(true)))
        .count();
    let reads_ok = history.iter().filter(|o| o.input == Input::Get).count();
    eprintln!(
        "history: {} operations ({writes_ok} acknowledged writes, {reads_ok} reads, {} unknown, {} dropped); statuses {:?}",
        history.len(),
        tally.unknown,
        tally.dropped,
        tally.statuses
    );
    // Without enough successful operations the check would prove nothing.
    assert!(
        writes_ok >= 20 && reads_ok >= 20,
        "too few successful operations to judge: {writes_ok} writes, {reads_ok} reads; statuses {:?}",
        tally.statuses
    );

    let problems = linz::check_revisions(&history);
    assert!(
        problems.is_empty(),
        "inconsistent revisions:\n{}",
        problems.join("\n")
    );

    let started = Instant::now();
    let verdict = linz::check(&history).expect("the recorded history is well formed");
    let kind = match &verdict {
        Verdict::Linearizable => "linearizable",
        Verdict::Illegal { .. } => "NOT linearizable",
        Verdict::Undecided { .. } => "undecided",
    };
    eprintln!("checked in {:?}: {kind}", started.elapsed());
    match verdict {
        Verdict::Linearizable => {}
        Verdict::Illegal { key, explanation } => {
            panic!("NOT linearizable on key {key:?} (seed {seed}):\n{explanation}")
        }
        Verdict::Undecided { keys } => panic!(
            "the checker gave up on keys {keys:?} (seed {seed}); shorten MAST_LINZ_SECS or raise the step limit"
        ),
    }
}
