//! One process-level regression test per bug found in review (fixed in the server): each
//! would fail against the server before its fix.
//!
//! 1. a node started with another `--shards` than its cluster is refused (join and restart);
//! 2. member addresses survive snapshots (a restarted node still reaches a member that joined
//!    before its snapshot);
//! 3. a lagging member catches up from a leader that joined while it was away;
//! 4. membership changes are idempotent and acknowledged only once applied on the node that
//!    answered;
//! 5. a node restarts right after SIGKILL (its own listeners are still being torn down).
//!
//! Every test prints the command that replays it; on failure every node's log tail is printed
//! (`MAST_TEST_KEEP=1` keeps the data dirs and full logs).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use support::kv;
use support::{Cluster, ClusterOptions, Status};

const SHARDS: usize = 2;
/// Generous: two cores are shared by several test processes.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
const OP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a refused start may take to exit (a join retries transient errors for longer).
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(20);

/// These tests start 3-4 server processes each and time leader elections; run in parallel on
/// a 2-core machine they starve each other's processes into election churn. One at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    // A test that panicked while holding the lock poisons it; the next test still runs.
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn replay(test: &str) {
    support::print_replay("regressions", test, "");
}

fn start(opts: ClusterOptions, test: &str) -> Cluster {
    replay(test);
    let cluster = Cluster::start(opts).unwrap_or_else(|e| panic!("start the cluster: {e}"));
    cluster
        .wait_for_leaders(LEADER_TIMEOUT)
        .unwrap_or_else(|e| panic!("initial leaders: {e}"));
    cluster
}

fn ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// `GET /members` through `via`, parsed.
fn members(cluster: &Cluster, via: u64) -> serde_json::Value {
    let r = ok(cluster
        .client(via)
        .get("/members")
        .map_err(|e| format!("GET /members via {via}: {e}")));
    assert_eq!(r.status, 200, "GET /members via {via}: {r}");
    ok(r.json())
}

fn member_ids(cluster: &Cluster, via: u64) -> BTreeSet<u64> {
    members(cluster, via)
        .get("members")
        .and_then(|m| m.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|m| m.get("id").and_then(|i| i.as_u64()))
                .collect()
        })
        .unwrap_or_default()
}

/// Moves every shard's leadership to `to` (asking each current leader) and waits for it.
fn transfer_all_to(cluster: &Cluster, to: u64) -> Result<(), String> {
    support::retry(LEADER_TIMEOUT, || {
        let leaders = cluster.wait_for_leaders(LEADER_TIMEOUT)?;
        if leaders.iter().all(|&l| l == to) {
            return Ok(());
        }
        for &l in leaders.iter().collect::<BTreeSet<_>>() {
            if l != to {
                let r = cluster
                    .client(l)
                    .request("POST", &format!("/leader/transfer?to={to}"), &[], b"")
                    .map_err(|e| format!("POST /leader/transfer?to={to} via {l}: {e}"))?;
                if r.status != 200 {
                    return Err(format!("POST /leader/transfer?to={to} via {l}: {r}"));
                }
            }
        }
        Err(format!("leaders are {leaders:?}, waiting for {to}"))
    })
}

/// Waits until `id` is a voter of every shard, as each shard's leader sees it.
fn wait_voter_everywhere(cluster: &Cluster, id: u64) {
    ok(support::retry(Duration::from_secs(60), || {
        let leaders = cluster.wait_for_leaders(LEADER_TIMEOUT)?;
        for (shard, &l) in leaders.iter().enumerate() {
            let st = cluster.status(l)?;
            let s = st.shard(shard).ok_or("no shard")?;
            if !s.voters.contains(&id) {
                return Err(format!(
                    "shard {shard}: voters {:?} learners {:?} on leader {l}",
                    s.voters, s.learners
                ));
            }
        }
        Ok(())
    }));
}

/// Each shard's (voters, learners) as node `id` sees them, sorted.
fn confs(st: &Status) -> Vec<(Vec<u64>, Vec<u64>)> {
    st.shards
        .iter()
        .map(|s| {
            let mut v = s.voters.clone();
            let mut l = s.learners.clone();
            v.sort_unstable();
            l.sort_unstable();
            (v, l)
        })
        .collect()
}

/// `--flag value` replaced in a node's argument list.
fn with_flag(args: &[String], flag: &str, value: &str) -> Vec<String> {
    let mut out = args.to_vec();
    match out.iter().position(|a| a == flag) {
        Some(i) if i + 1 < out.len() => out[i + 1] = value.to_string(),
        _ => {
            out.push(flag.to_string());
            out.push(value.to_string());
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 1. Shard count mismatch
// ---------------------------------------------------------------------------------------------

#[test]
fn joiner_with_another_shard_count_is_refused() {
    let _serial = serial();
    let cluster = start(
        ClusterOptions::new(3, SHARDS),
        "joiner_with_another_shard_count_is_refused",
    );

    // (a) A joiner with one shard is refused before it is added.
    let root = cluster.root_dir();
    let http = ok(support::pick_ports(1));
    let peer = ok(support::pick_ports(1));
    let join_args: Vec<String> = [
        "--id",
        "4",
        "--data-dir",
        &root.join("node-4-one-shard").display().to_string(),
        "--http-addr",
        &http.to_string(),
        "--peer-addr",
        &peer.to_string(),
        "--shards",
        "1",
        "--join",
        &cluster.http_addr(1).to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (status, output) =
        ok(cluster.run_until_exit("join-one-shard", &join_args, REFUSAL_TIMEOUT));
    assert!(
        !status.success(),
        "a joiner with --shards 1 must exit with an error, got {status}; output:\n{output}"
    );
    assert!(
        output.contains(&format!("--shards {SHARDS}")),
        "the refusal must tell to use --shards {SHARDS}; output:\n{output}"
    );
    assert_eq!(
        member_ids(&cluster, 1),
        BTreeSet::from([1, 2, 3]),
        "the refused joiner must not have been added"
    );
    for id in 1..=3 {
        for s in &ok(cluster.status(id)).shards {
            assert!(
                !s.voters.contains(&4) && !s.learners.contains(&4),
                "node {id} shard {}: refused joiner in voters {:?} learners {:?}",
                s.shard,
                s.voters,
                s.learners
            );
        }
    }
}

#[test]
fn restart_with_another_shard_count_is_refused() {
    let _serial = serial();
    let mut cluster = start(
        ClusterOptions::new(3, SHARDS),
        "restart_with_another_shard_count_is_refused",
    );
    // (b) An existing node restarted on its data dir with another shard count is refused.
    cluster.kill(3);
    let args = with_flag(&cluster.node(3).args, "--shards", "1");
    let (status, output) = ok(cluster.run_until_exit("restart-one-shard", &args, REFUSAL_TIMEOUT));
    assert!(
        !status.success(),
        "node 3 restarted with --shards 1 must exit with an error, got {status}; output:\n{output}"
    );
    assert!(
        output.contains("--shards 1") && output.contains(&format!("--shards {SHARDS}")),
        "the refusal must name the mismatch (--shards 1 vs --shards {SHARDS}); output:\n{output}"
    );

    // (c) The cluster tells its shard count.
    let m = members(&cluster, 2);
    assert_eq!(
        m.get("shards").and_then(|s| s.as_u64()),
        Some(SHARDS as u64),
        "GET /members must report \"shards\":{SHARDS}: {m}"
    );

    // The refusal left the data dir usable with the right count.
    ok(cluster.restart(3));
    ok(cluster.wait_caught_up(3, OP_TIMEOUT));
    let mut c = cluster.client(3);
    let rev = ok(kv::put_retrying(&mut c, "shards/after", b"v", OP_TIMEOUT));
    let got = ok(kv::get_retrying(&mut c, "shards/after", false, OP_TIMEOUT));
    assert_eq!(got.map(|v| v.revision), Some(rev));
}

// ---------------------------------------------------------------------------------------------
// 2. Member addresses survive snapshots
// ---------------------------------------------------------------------------------------------

const SNAPSHOT_EVERY_ENTRIES: u64 = 20;
/// Writes at most, to push every shard's snapshot past the join.
const SNAPSHOT_WRITES_MAX: usize = 2_000;

#[test]
fn member_addresses_survive_snapshots() {
    let _serial = serial();
    let mut cluster = start(
        ClusterOptions::new(3, SHARDS).arg("--snapshot-every-entries", SNAPSHOT_EVERY_ENTRIES),
        "member_addresses_survive_snapshots",
    );
    ok(cluster.start_joining_node(4, 1));
    wait_voter_everywhere(&cluster, 4);
    // Every entry of the join (learner, promotion) is at or below each leader's commit now.
    let leaders = ok(cluster.wait_for_leaders(LEADER_TIMEOUT));
    let mut join_index = Vec::new();
    for (shard, &l) in leaders.iter().enumerate() {
        let st = ok(cluster.status(l));
        join_index.push(st.shard(shard).map(|s| s.commit).unwrap_or(u64::MAX));
    }
    eprintln!("node 4 joined at or below indexes {join_index:?}");

    // Write until node 1 (the one to restart) has snapshotted every shard past the join.
    let mut c = cluster.client(1);
    let mut last = String::new();
    let mut written = 0;
    let mut done = false;
    while written < SNAPSHOT_WRITES_MAX {
        for _ in 0..10 {
            let key = format!("snap/{written:05}");
            ok(kv::put_retrying(&mut c, &key, key.as_bytes(), OP_TIMEOUT));
            written += 1;
        }
        let st = ok(cluster.status(1));
        let behind: Vec<String> = (0..SHARDS)
            .filter_map(|shard| {
                let snap = st.shard(shard).map(|s| s.snapshot_index).unwrap_or(0);
                (snap <= join_index[shard]).then(|| {
                    format!(
                        "shard {shard}: snapshot_index {snap} <= {}",
                        join_index[shard]
                    )
                })
            })
            .collect();
        if behind.is_empty() {
            done = true;
            break;
        }
        last = behind.join(", ");
    }
    assert!(
        done,
        "node 1 did not snapshot past the join after {written} writes: {last}"
    );

    ok(cluster.restart(1));
    ok(transfer_all_to(&cluster, 4));

    // Node 1 forwards to leader 4: it must know node 4's address although the entries that
    // carried it are inside its snapshot.
    let mut c = cluster.client(1);
    for i in 0..4 {
        let key = format!("after-restart/{i}");
        let rev = kv::put_retrying(&mut c, &key, b"x", OP_TIMEOUT).unwrap_or_else(|e| {
            panic!("write through restarted node 1 with every shard led by node 4: {e}")
        });
        let got = ok(kv::get_retrying(&mut c, &key, false, OP_TIMEOUT));
        assert_eq!(got.map(|v| v.revision), Some(rev), "GET {key} via node 1");
    }
    assert_eq!(
        member_ids(&cluster, 1),
        BTreeSet::from([1, 2, 3, 4]),
        "GET /members on restarted node 1"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. A lagging member rejoins after a new member joined
// ---------------------------------------------------------------------------------------------

/// How the lagging node is taken away and brought back.
#[derive(Debug, Clone, Copy)]
enum Away {
    /// It leads every shard, then is SIGSTOPped and later SIGCONTed: nothing the others
    /// send while it is away reaches it (a leader gets no appends).
    PausedLeader,
    /// It follows, then is SIGKILLed and later restarted on its data dir.
    KilledFollower,
}

/// 3 nodes; node 3 goes away; node 4 joins, is promoted and takes every shard's leadership;
/// node 3 comes back and must catch up from node 4, which it only learns about from entries
/// it has yet to receive.
fn lagging_member_catches_up(test: &str, away: Away) {
    let mut cluster = start(ClusterOptions::new(3, SHARDS), test);
    let mut c1 = cluster.client(1);
    ok(kv::put_retrying(
        &mut c1,
        "lag/before",
        b"before",
        OP_TIMEOUT,
    ));
    ok(cluster.wait_caught_up(3, OP_TIMEOUT));
    match away {
        Away::PausedLeader => {
            ok(transfer_all_to(&cluster, 3));
            cluster.pause(3);
        }
        Away::KilledFollower => {
            ok(transfer_all_to(&cluster, 1));
            cluster.kill(3);
        }
    }

    ok(cluster.start_joining_node(4, 1));
    wait_voter_everywhere(&cluster, 4);
    ok(transfer_all_to(&cluster, 4));
    let mut written = BTreeMap::new();
    for i in 0..8 {
        let key = format!("lag/away/{i}");
        let value = format!("written while node 3 was away {i}").into_bytes();
        let rev = ok(kv::put_retrying(&mut c1, &key, &value, OP_TIMEOUT));
        written.insert(
            key,
            kv::Versioned {
                value,
                revision: rev,
            },
        );
    }

    match away {
        Away::PausedLeader => cluster.resume(3),
        Away::KilledFollower => ok(cluster.restart(3)),
    }
    ok(cluster
        .wait_caught_up(3, Duration::from_secs(20))
        .map_err(|e| format!("{away:?}: {e}")));
    let leaders = ok(cluster.wait_for_leaders(LEADER_TIMEOUT));
    assert!(
        leaders.iter().all(|&l| l == 4),
        "leaders after node 3 came back: {leaders:?}"
    );
    let st = ok(cluster.status(3));
    for s in &st.shards {
        assert!(
            s.voters.contains(&4),
            "node 3 shard {}: voters {:?} lack node 4",
            s.shard,
            s.voters
        );
    }
    let mut c3 = cluster.client(3);
    for (key, want) in &written {
        let got = ok(kv::get_retrying(&mut c3, key, false, OP_TIMEOUT));
        assert_eq!(
            got.as_ref(),
            Some(want),
            "linearizable GET {key} via node 3"
        );
        let got = ok(kv::get_retrying(&mut c3, key, true, OP_TIMEOUT));
        assert_eq!(got.as_ref(), Some(want), "local GET {key} via node 3");
    }
}

#[test]
fn lagging_leader_catches_up_from_a_newer_leader() {
    let _serial = serial();
    lagging_member_catches_up(
        "lagging_leader_catches_up_from_a_newer_leader",
        Away::PausedLeader,
    );
}

#[test]
fn lagging_follower_catches_up_from_a_newer_leader() {
    let _serial = serial();
    lagging_member_catches_up(
        "lagging_follower_catches_up_from_a_newer_leader",
        Away::KilledFollower,
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Membership changes: idempotent, acknowledged when applied
// ---------------------------------------------------------------------------------------------

#[test]
fn membership_changes_are_idempotent_and_acknowledged_when_applied() {
    let _serial = serial();
    let cluster = start(
        ClusterOptions::new(3, SHARDS),
        "membership_changes_are_idempotent_and_acknowledged_when_applied",
    );
    // Node 1 leads everything, so 2 and 3 are followers of every shard.
    ok(transfer_all_to(&cluster, 1));
    let before: BTreeMap<u64, _> = (1..=3)
        .map(|id| (id, confs(&ok(cluster.status(id)))))
        .collect();
    let leader_last: Vec<u64> = ok(cluster.status(1))
        .shards
        .iter()
        .map(|s| s.last_index)
        .collect();

    // Re-adding an existing voter through a follower: 200, nothing proposed, nothing changed.
    let r = ok(cluster.add_member(2, 3));
    assert_eq!(
        r.status, 200,
        "POST /members for existing node 3 via follower 2: {r}"
    );
    // Removing a node that never was a member: 200 (already not a member).
    let r = ok(cluster.remove_member(3, 77));
    assert_eq!(
        r.status, 200,
        "DELETE /members/77 (never added) via follower 3: {r}"
    );
    for id in 1..=3 {
        assert_eq!(
            confs(&ok(cluster.status(id))),
            before[&id],
            "node {id}: configuration changed by no-op membership requests"
        );
    }
    let after_last: Vec<u64> = ok(cluster.status(1))
        .shards
        .iter()
        .map(|s| s.last_index)
        .collect();
    assert_eq!(
        after_last, leader_last,
        "leader 1's last_index per shard: no-op membership requests appended entries"
    );

    // A new member (never started) through a follower: the 200 means this follower has
    // applied it, on every shard.
    let new_id = 5;
    let peer = ok(support::pick_ports(SHARDS));
    let http = ok(support::pick_ports(1));
    let body = serde_json::json!({
        "id": new_id,
        "peer_addr": peer.to_string(),
        "http_addr": http.to_string(),
    });
    let r = ok(cluster
        .client(2)
        .post_json("/members", &body)
        .map_err(|e| format!("POST /members {body} via 2: {e}")));
    assert_eq!(r.status, 200, "POST /members {body} via follower 2: {r}");
    let st = ok(cluster.status(2));
    for s in &st.shards {
        assert!(
            s.learners.contains(&new_id) || s.voters.contains(&new_id),
            "right after the 200, node 2 shard {} does not list node {new_id}: voters {:?} learners {:?}",
            s.shard,
            s.voters,
            s.learners
        );
    }
    assert!(
        member_ids(&cluster, 2).contains(&new_id),
        "GET /members via 2 after adding {new_id}"
    );

    // And removed through the other follower: gone there right after the 200.
    let r = ok(cluster.remove_member(3, new_id));
    assert_eq!(
        r.status, 200,
        "DELETE /members/{new_id} via follower 3: {r}"
    );
    let st = ok(cluster.status(3));
    for s in &st.shards {
        assert!(
            !s.learners.contains(&new_id) && !s.voters.contains(&new_id),
            "right after the 200, node 3 shard {} still lists node {new_id}: voters {:?} learners {:?}",
            s.shard,
            s.voters,
            s.learners
        );
    }
    // Removing it again is a no-op success.
    let r = ok(cluster.remove_member(2, new_id));
    assert_eq!(
        r.status, 200,
        "second DELETE /members/{new_id} via follower 2: {r}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Restart right after SIGKILL
// ---------------------------------------------------------------------------------------------

/// Kill-and-restart rounds: the port race is a window of milliseconds, so several tries.
const QUICK_RESTART_ROUNDS: usize = 5;

#[test]
fn node_restarts_right_after_sigkill() {
    let _serial = serial();
    let mut cluster = start(
        ClusterOptions::new(1, SHARDS),
        "node_restarts_right_after_sigkill",
    );
    let mut want = BTreeMap::new();
    for round in 0..QUICK_RESTART_ROUNDS {
        let mut c = cluster.client(1);
        for i in 0..4 {
            let key = format!("quick/{round}/{i}");
            let rev = ok(kv::put_retrying(&mut c, &key, key.as_bytes(), OP_TIMEOUT));
            want.insert(
                key.clone(),
                kv::Versioned {
                    value: key.into_bytes(),
                    revision: rev,
                },
            );
        }
        let started = Instant::now();
        cluster
            .kill_and_restart_at_once(1)
            .unwrap_or_else(|e| panic!("round {round}: restart right after SIGKILL: {e}"));
        eprintln!(
            "round {round}: healthy {:?} after the kill",
            started.elapsed()
        );
        ok(cluster.wait_for_leaders(LEADER_TIMEOUT));
        let mut c = cluster.client(1);
        for (key, v) in &want {
            let got = ok(kv::get_retrying(&mut c, key, false, OP_TIMEOUT));
            assert_eq!(
                got.as_ref(),
                Some(v),
                "round {round}: GET {key} after the restart"
            );
        }
    }
}
