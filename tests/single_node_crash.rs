//! A single node under write load is SIGKILLed at a random moment and restarted, repeatedly;
//! after every restart each acknowledged write must be there with its value and revision
//! (a write whose answer was lost in the crash may be there or not, but nothing else may be).
//!
//! `MAST_CRASH_ROUNDS` sets the rounds (default 5; 20 for a longer run), `MAST_CRASH_SEED`
//! replays the kill schedule (the seed is printed).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::kv::{self, KeyLedger, KeyPattern, Writers};
use support::{Cluster, ClusterOptions};

const WRITERS: usize = 4;
/// Keys per writer: few, so keys are overwritten many times across rounds.
const KEYS_PER_WRITER: usize = 25;
/// The kill comes after this many acknowledged writes at most (at least 1).
const KILL_AFTER_ACKS_MAX: usize = 400;
const TIMEOUT: Duration = Duration::from_secs(30);

/// Folds one round's ledger into the running one: a key acknowledged this round starts over;
/// otherwise this round's unanswered writes join the key's uncertain ones.
fn merge(total: &mut BTreeMap<String, KeyLedger>, round: BTreeMap<String, KeyLedger>) {
    for (key, entry) in round {
        let t = total.entry(key).or_default();
        if entry.acked.is_some() {
            *t = entry;
        } else {
            t.uncertain.extend(entry.uncertain);
        }
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let rounds: usize = std::env::var("MAST_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let seed = std::env::var("MAST_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen::<u64>());
    eprintln!("single-node crash: {rounds} rounds, seed {seed}");
    support::print_replay(
        "single_node_crash",
        "acknowledged_writes_survive_sigkill",
        &format!("MAST_CRASH_SEED={seed} MAST_CRASH_ROUNDS={rounds} "),
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cluster =
        Cluster::start(ClusterOptions::new(1, 2)).unwrap_or_else(|e| panic!("start: {e}"));
    let mut total: BTreeMap<String, KeyLedger> = BTreeMap::new();
    let mut acked_total = 0;

    for round in 0..rounds {
        cluster
            .wait_for_leaders(TIMEOUT)
            .unwrap_or_else(|e| panic!("round {round}: leaders: {e}"));
        let writers = Writers::start(
            WRITERS,
            vec![cluster.http_addr(1)],
            "crash/",
            KeyPattern::Cycle(KEYS_PER_WRITER),
            seed.wrapping_add(round as u64 + 1),
        );
        let kill_after = rng.gen_range(1..=KILL_AFTER_ACKS_MAX);
        writers
            .wait_for_more_acks(kill_after, TIMEOUT)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        cluster.kill(1);
        let (ledger, stats) = writers.finish();
        eprintln!(
            "round {round}: killed after {kill_after}+ acks: {} acknowledged, {} unknown, {} refused; samples {:?}",
            stats.acked, stats.unknown, stats.refused, stats.samples
        );
        acked_total += stats.acked;
        merge(&mut total, ledger);

        cluster
            .restart(1)
            .unwrap_or_else(|e| panic!("round {round}: restart: {e}"));
        let mut c = cluster.client(1);
        for stale in [false, true] {
            let problems = kv::verify_ledger(&mut c, &total, stale, TIMEOUT);
            assert!(
                problems.is_empty(),
                "round {round} (seed {seed}), reads with stale={stale}: {} problems:\n{}",
                problems.len(),
                problems.join("\n")
            );
        }
    }
    assert!(
        acked_total >= rounds,
        "too few writes were acknowledged to judge"
    );
    eprintln!(
        "{acked_total} acknowledged writes over {rounds} rounds, all present after every restart"
    );
}

/// True while a process with this id exists (and is not a zombie awaiting its parent).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[test]
fn harness_pauses_resumes_and_leaves_no_process_behind() {
    support::print_replay(
        "single_node_crash",
        "harness_pauses_resumes_and_leaves_no_process_behind",
        "",
    );
    let mut cluster =
        Cluster::start(ClusterOptions::new(1, 1)).unwrap_or_else(|e| panic!("start: {e}"));
    let pid = cluster.pid(1).expect("a running node has a pid");
    assert!(process_alive(pid));

    // Paused: the kernel still accepts the connection, but nothing answers.
    cluster.pause(1);
    // pause returns only once the kernel has stopped every thread, not when kill(2) returned.
    let threads = support::proc::thread_states(pid as i32).expect("a paused process exists");
    assert!(
        threads.iter().all(|(_, s)| *s == 'T'),
        "pause returned before every thread stopped: {threads:?}"
    );
    let mut c = support::HttpClient::new(cluster.http_addr(1), Duration::from_millis(500));
    let paused = c.get("/healthz");
    assert!(
        matches!(&paused, Err(e) if e.may_have_been_applied()),
        "a SIGSTOPped node answered: {paused:?}"
    );
    cluster.resume(1);
    let mut c = support::HttpClient::new(cluster.http_addr(1), Duration::from_secs(10));
    let r = c.get("/healthz").expect("healthz after SIGCONT");
    assert_eq!(r.status, 200, "{r}");

    // A restart is a new process on the same data; Drop ends it, paused or not. (The client's
    // connection is closed first: restart_succeeds_while_clients_still_hold_connections covers
    // the other case.)
    drop(c);
    cluster
        .restart(1)
        .unwrap_or_else(|e| panic!("restart: {e}"));
    let pid2 = cluster.pid(1).expect("restarted node has a pid");
    assert_ne!(pid, pid2);
    assert!(
        !process_alive(pid),
        "the killed process {pid} is still there"
    );
    cluster.pause(1);
    drop(cluster);
    assert!(!process_alive(pid2), "process {pid2} outlived its Cluster");
}

/// After a crash, clients often still hold keep-alive connections to the dead process; their
/// server-side sockets linger (FIN_WAIT2, up to a minute) on the HTTP port. The restarted node
/// must still start: a node that could not bind for that minute would be down for it.
#[test]
fn restart_succeeds_while_clients_still_hold_connections() {
    support::print_replay(
        "single_node_crash",
        "restart_succeeds_while_clients_still_hold_connections",
        "",
    );
    let mut cluster =
        Cluster::start(ClusterOptions::new(1, 1)).unwrap_or_else(|e| panic!("start: {e}"));
    let mut idle: Vec<support::HttpClient> = (0..4).map(|_| cluster.client(1)).collect();
    for c in &mut idle {
        let r = c.get("/healthz").expect("healthz");
        assert_eq!(r.status, 200, "{r}");
    }
    cluster.kill(1);
    // The idle clients have not read since the kill: their connections stay half-closed.
    let restarted = cluster.restart(1);
    drop(idle);
    restarted.unwrap_or_else(|e| {
        panic!("restart with clients still connected to the dead process: {e}")
    });
    let r = cluster
        .client(1)
        .get("/healthz")
        .expect("healthz after restart");
    assert_eq!(r.status, 200, "{r}");
}
