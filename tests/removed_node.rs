//! A node removed from the cluster knows it, also after a restart on a snapshot that covers
//! its removal (so that no RemoveNode entry is replayed): `/status` says `removed`,
//! `/healthz` answers 503 `removed`, and requests are refused.

mod support;

use std::time::Duration;

use support::{Cluster, ClusterOptions};

const TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn a_removed_node_restarted_on_a_snapshot_covering_its_removal_reports_removed() {
    support::print_replay(
        "removed_node",
        "a_removed_node_restarted_on_a_snapshot_covering_its_removal_reports_removed",
        "",
    );
    // A snapshot after every applied entry, so the one after the removal covers it.
    let opts = ClusterOptions::new(3, 1).arg("--snapshot-every-entries", 1);
    let mut c = Cluster::start(opts).unwrap_or_else(|e| panic!("start: {e}"));
    let leaders = c
        .wait_for_leaders(TIMEOUT)
        .unwrap_or_else(|e| panic!("leaders: {e}"));
    // The leader is removed: it commits and applies its own removal, so it certainly learns
    // of it (a follower may be cut off before it hears the entry is committed).
    let gone = leaders[0];
    let via = c
        .node_ids()
        .into_iter()
        .find(|&id| id != gone)
        .expect("another node");
    // No writes before the removal: the snapshot interval is the larger of the flag and the
    // keys in the last snapshot, and it must stay 1 for the removal to get its snapshot.
    let r = c
        .remove_member(via, gone)
        .unwrap_or_else(|e| panic!("DELETE /members/{gone}: {e}"));
    assert_eq!(r.status, 200, "DELETE /members/{gone}: {r}");

    // It knows, and its latest snapshot covers everything it applied (the removal included).
    support::retry(TIMEOUT, || {
        let st = c.status(gone)?;
        let s = st.shard(0).ok_or("no shard 0")?;
        let removed = st.raw["removed"] == true;
        if removed && s.applied > 0 && s.snapshot_index >= s.applied {
            Ok(())
        } else {
            Err(format!(
                "removed {removed}, applied {}, snapshot {}",
                s.applied, s.snapshot_index
            ))
        }
    })
    .unwrap_or_else(|e| panic!("node {gone} before the restart: {e}"));

    c.restart_unchecked(gone)
        .unwrap_or_else(|e| panic!("restart {gone}: {e}"));
    let health = support::retry(TIMEOUT, || {
        c.client(gone).get("/healthz").map_err(|e| e.to_string())
    })
    .unwrap_or_else(|e| panic!("healthz after the restart: {e}"));
    assert_eq!(health.status, 503, "{health}");
    let body: serde_json::Value = serde_json::from_slice(&health.body).expect("JSON error");
    assert_eq!(body["error"]["kind"], "removed", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("removed from the cluster")),
        "{body}"
    );

    let st = c.status(gone).unwrap_or_else(|e| panic!("status: {e}"));
    assert_eq!(st.raw["removed"], true, "{}", st.raw);
    assert_eq!(st.raw["shards"][0]["raft"]["removed"], true, "{}", st.raw);
    let s = st.shard(0).expect("shard 0");
    assert!(
        !s.voters.contains(&gone) && !s.learners.contains(&gone),
        "{s:?}"
    );

    // It refuses to serve: writes and linearizable reads alike.
    let mut client = c.client(gone);
    for (method, body) in [("PUT", &b"2"[..]), ("GET", &b""[..])] {
        let r = client
            .request(method, "/kv/after", &[], body)
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        assert_eq!(r.status, 503, "{method}: {r}");
        assert!(r.body_text().contains("removed"), "{method}: {r}");
    }
    // The others go on without it.
    let mut client = c.client(via);
    support::retry(TIMEOUT, || match client.put("/kv/after", b"3") {
        Ok(r) if r.status < 300 => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .unwrap_or_else(|e| panic!("write after: {e}"));
}
