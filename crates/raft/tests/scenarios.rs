//! Scenario tests: the raft paper's rules (each test names the section it checks) and the
//! notable etcd cases, on a synchronous in-memory network.

use std::collections::{BTreeMap, BTreeSet};

use mast_raft::{
    ConfChange, ConfChangeKind, ConfState, Config, Entry, EntryKind, Error, HardState, MemStorage,
    Message, MessageKind, ProgressState, RawNode, ReadOnlyOption, Role, Storage,
};

/// Bound on delivery rounds: every scenario here settles in far fewer.
const MAX_ROUNDS: usize = 200;

struct Net {
    nodes: BTreeMap<u64, RawNode<MemStorage>>,
    /// Dropped links (from, to).
    cut: BTreeSet<(u64, u64)>,
    /// Entries each node applied, in order.
    applied: BTreeMap<u64, Vec<Entry>>,
    /// Every message delivered (for assertions on traffic).
    delivered: Vec<Message>,
}

fn cfg(id: u64) -> Config {
    let mut c = Config::new(id);
    c.pre_vote = false;
    c.check_quorum = false;
    c
}

impl Net {
    fn new(n: u64) -> Net {
        Self::with(n, cfg)
    }

    fn with(n: u64, f: impl Fn(u64) -> Config) -> Net {
        let conf = ConfState::with_voters(1..=n);
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let st = MemStorage::new_with_conf_state(conf.clone());
            nodes.insert(id, RawNode::new(&f(id), st, id).expect("valid node"));
        }
        Net {
            nodes,
            cut: BTreeSet::new(),
            applied: BTreeMap::new(),
            delivered: Vec::new(),
        }
    }

    fn from_storages(storages: Vec<(u64, MemStorage)>, f: impl Fn(u64) -> Config) -> Net {
        let mut nodes = BTreeMap::new();
        for (id, st) in storages {
            nodes.insert(id, RawNode::new(&f(id), st, id).expect("valid node"));
        }
        Net {
            nodes,
            cut: BTreeSet::new(),
            applied: BTreeMap::new(),
            delivered: Vec::new(),
        }
    }

    fn node(&mut self, id: u64) -> &mut RawNode<MemStorage> {
        self.nodes.get_mut(&id).expect("node exists")
    }

    /// Handles one node's Ready as the contract says; returns its outgoing messages.
    fn ready(&mut self, id: u64) -> Vec<Message> {
        let raw = self.nodes.get_mut(&id).expect("node exists");
        if !raw.has_ready() {
            return Vec::new();
        }
        let mut rd = raw.ready();
        let st = raw.storage_mut();
        if let Some(s) = &rd.snapshot {
            st.apply_snapshot(s.clone()).expect("apply snapshot");
        }
        st.append(&rd.entries).expect("append");
        if let Some(hs) = rd.hard_state {
            st.set_hard_state(hs);
        }
        let mut out = std::mem::take(&mut rd.messages);
        out.append(&mut rd.persisted_messages);
        let applied = self.applied.entry(id).or_default();
        for e in &rd.committed_entries {
            if e.kind == EntryKind::ConfChange {
                let cc = ConfChange::decode(&e.data).expect("conf change");
                raw.apply_conf_change(&cc);
            }
            applied.push(e.clone());
        }
        raw.advance(rd);
        out
    }

    /// Delivers messages until the network is quiet.
    fn settle(&mut self) {
        for _ in 0..MAX_ROUNDS {
            let ids: Vec<u64> = self.nodes.keys().copied().collect();
            let mut msgs = Vec::new();
            for id in ids {
                msgs.extend(self.ready(id));
            }
            if msgs.is_empty() {
                return;
            }
            for m in msgs {
                self.deliver(m);
            }
        }
        panic!("network did not settle within {MAX_ROUNDS} rounds");
    }

    fn deliver(&mut self, m: Message) {
        if self.cut.contains(&(m.from, m.to)) {
            return;
        }
        if let Some(raw) = self.nodes.get_mut(&m.to) {
            self.delivered.push(m.clone());
            raw.step(m).expect("step");
        }
    }

    fn isolate(&mut self, id: u64) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for o in ids {
            if o != id {
                self.cut.insert((id, o));
                self.cut.insert((o, id));
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    fn tick_all(&mut self, n: u64) {
        for _ in 0..n {
            for raw in self.nodes.values_mut() {
                raw.tick();
            }
            self.settle();
        }
    }

    fn elect(&mut self, id: u64) {
        self.node(id).campaign();
        self.settle();
        assert_eq!(
            self.node(id).role(),
            Role::Leader,
            "node {id} should have won"
        );
    }

    fn leaders(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, r)| r.role() == Role::Leader)
            .map(|(id, _)| *id)
            .collect()
    }

    fn log_terms(&self, id: u64) -> Vec<u64> {
        let raw = &self.nodes[&id];
        (2..=raw.last_index())
            .map(|i| raw.term_at(i).unwrap_or(0))
            .collect()
    }

    fn applied_data(&self, id: u64) -> Vec<Vec<u8>> {
        self.applied
            .get(&id)
            .map(|v| {
                v.iter()
                    .filter(|e| e.kind == EntryKind::Normal && !e.data.is_empty())
                    .map(|e| e.data.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Storage for a member whose log after the bootstrap entry has the given terms.
fn storage_with_terms(voters: &[u64], terms: &[u64], hs_term: u64) -> MemStorage {
    let mut st = MemStorage::new_with_conf_state(ConfState::with_voters(voters.iter().copied()));
    let ents: Vec<Entry> = terms
        .iter()
        .enumerate()
        .map(|(i, &t)| Entry {
            term: t,
            index: i as u64 + 2,
            kind: EntryKind::Normal,
            data: format!("{i}@{t}").into_bytes(),
        })
        .collect();
    st.append(&ents).expect("append");
    st.set_hard_state(HardState {
        term: hs_term,
        vote: 0,
        commit: 1,
    });
    st
}

// ------------------------------------------------------------------- §5.2 leader election

#[test]
fn s5_2_candidate_with_majority_becomes_leader_and_others_follow() {
    let mut net = Net::new(3);
    net.elect(1);
    assert_eq!(net.leaders(), vec![1]);
    for id in [2, 3] {
        assert_eq!(net.node(id).role(), Role::Follower);
        assert_eq!(net.node(id).leader(), 1);
        assert_eq!(net.node(id).term(), net.node(1).term());
    }
}

#[test]
fn s5_2_candidate_without_majority_does_not_win() {
    let mut net = Net::new(5);
    for id in [3, 4, 5] {
        net.isolate(id);
    }
    net.node(1).campaign();
    net.settle();
    assert_eq!(net.node(1).role(), Role::Candidate);
    assert!(net.leaders().is_empty());
}

#[test]
fn s5_2_each_node_votes_at_most_once_per_term() {
    let mut net = Net::new(3);
    net.isolate(1);
    net.isolate(2);
    // Node 3 hears a vote request from 1 at term 2, then one from 2 at term 2.
    let req = |from| Message {
        kind: MessageKind::Vote,
        to: 3,
        from,
        term: 2,
        log_term: 1,
        index: 1,
        ..Default::default()
    };
    net.node(3).step(req(1)).expect("step");
    net.node(3).step(req(2)).expect("step");
    let out = net.ready(3);
    let grants: Vec<(u64, bool)> = out
        .iter()
        .filter(|m| m.kind == MessageKind::VoteResp)
        .map(|m| (m.to, m.reject))
        .collect();
    assert_eq!(grants, vec![(1, false), (2, true)]);
}

#[test]
fn s5_2_follower_times_out_within_randomized_window() {
    // Election timeouts are drawn from [t, 2t) by the seeded RNG; different seeds differ.
    let mut seen = BTreeSet::new();
    for seed in 0..20u64 {
        let st = MemStorage::new_with_conf_state(ConfState::with_voters([1, 2, 3]));
        let mut raw = RawNode::new(&cfg(1), st, seed).expect("node");
        let mut ticks = 0;
        while raw.role() == Role::Follower && ticks < 100 {
            raw.tick();
            ticks += 1;
        }
        assert!((10..20).contains(&ticks), "timed out after {ticks} ticks");
        seen.insert(ticks);
    }
    assert!(seen.len() > 1, "timeouts are not randomized: {seen:?}");
}

// ------------------------------------------------------------------- §5.3 replication

#[test]
fn s5_3_leader_replicates_and_commits_then_all_apply_in_order() {
    let mut net = Net::new(3);
    net.elect(1);
    for i in 0..10u8 {
        net.node(1).propose(vec![i]).expect("propose");
    }
    net.settle();
    // Followers learn the final commit index with the next heartbeat.
    net.tick_all(1);
    let want: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i]).collect();
    for id in 1..=3 {
        assert_eq!(net.applied_data(id), want, "node {id}");
        assert_eq!(net.node(id).commit(), net.node(1).last_index());
    }
}

/// Figure 7: whatever a follower's log looks like, the leader's log overwrites it.
#[test]
fn s5_3_figure7_leader_forces_follower_logs_to_match() {
    let leader = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let followers: [&[u64]; 6] = [
        &[1, 1, 1, 4, 4, 5, 5, 6, 6],          // (a) missing one
        &[1, 1, 1, 4],                         // (b) missing many
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],    // (c) extra uncommitted entry
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], // (d) extra entries of a later term
        &[1, 1, 1, 4, 4, 4, 4],                // (e) missing and extra
        &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],    // (f) diverged since index 4
    ];
    for (case, f) in followers.iter().enumerate() {
        let voters = [1, 2, 3];
        // Node 3 holds the leader's log so the leader can win without the follower's vote.
        let mut net = Net::from_storages(
            vec![
                (1, storage_with_terms(&voters, &leader, 7)),
                (2, storage_with_terms(&voters, f, 7)),
                (3, storage_with_terms(&voters, &leader, 7)),
            ],
            cfg,
        );
        net.elect(1);
        net.tick_all(2);
        assert_eq!(net.node(1).term(), 8, "case {case}");
        let mut want = leader.to_vec();
        want.push(8); // the new leader's no-op
        assert_eq!(net.log_terms(2), want, "case {case}: follower log");
        assert_eq!(net.log_terms(1), want, "case {case}: leader log");
        assert_eq!(
            net.applied_data(2),
            net.applied_data(1),
            "case {case}: applied"
        );
    }
}

#[test]
fn s5_3_fast_backtracking_needs_few_rounds() {
    // The follower has 200 entries of a stale term after a short common prefix; with the
    // conflict hint the leader finds the match point in a couple of probes, not 200.
    let voters = [1, 2, 3];
    let mut stale = vec![1u64; 3];
    stale.extend(std::iter::repeat_n(2, 200));
    let mut good = vec![1u64; 3];
    good.extend(std::iter::repeat_n(3, 5));
    let mut net = Net::from_storages(
        vec![
            (1, storage_with_terms(&voters, &good, 3)),
            (2, storage_with_terms(&voters, &stale, 3)),
            (3, storage_with_terms(&voters, &good, 3)),
        ],
        cfg,
    );
    net.elect(1);
    net.tick_all(1);
    let rejects = net
        .delivered
        .iter()
        .filter(|m| m.kind == MessageKind::AppendResp && m.reject && m.from == 2)
        .count();
    assert!(
        rejects <= 3,
        "took {rejects} rejections to find the match point"
    );
    assert_eq!(net.log_terms(2), net.log_terms(1));
}

#[test]
fn s5_3_inflight_window_and_message_size_are_bounded() {
    let mut net = Net::with(3, |id| {
        let mut c = cfg(id);
        c.max_inflight_msgs = 3;
        c.max_msg_bytes = 100;
        c.max_inflight_bytes = 300;
        c
    });
    net.elect(1);
    net.tick_all(1);
    // Cut the followers' answers: the leader may only have 3 appends in flight to each.
    net.cut.insert((2, 1));
    net.cut.insert((3, 1));
    net.delivered.clear();
    for i in 0..50u8 {
        net.node(1).propose(vec![i; 40]).expect("propose");
    }
    net.settle();
    for to in [2, 3] {
        let appends: Vec<&Message> = net
            .delivered
            .iter()
            .filter(|m| m.kind == MessageKind::Append && m.to == to && !m.entries.is_empty())
            .collect();
        let idx: Vec<(u64, usize)> = appends.iter().map(|m| (m.index, m.entries.len())).collect();
        assert_eq!(appends.len(), 3, "to {to}: {idx:?}");
        for m in appends {
            let bytes: u64 = m.entries.iter().map(Entry::size_bytes).sum();
            assert!(
                bytes <= 100 || m.entries.len() == 1,
                "message of {bytes} bytes"
            );
        }
    }
    net.heal();
    net.tick_all(3);
    assert_eq!(net.applied_data(2).len(), 50);
}

// ------------------------------------------------------------------- §5.4 safety

#[test]
fn s5_4_1_voter_rejects_candidate_with_stale_log() {
    let voters = [1, 2, 3];
    let mut net = Net::from_storages(
        vec![
            (1, storage_with_terms(&voters, &[1], 2)),
            (2, storage_with_terms(&voters, &[1, 2], 2)),
            (3, storage_with_terms(&voters, &[1, 2], 2)),
        ],
        cfg,
    );
    net.node(1).campaign();
    net.settle();
    assert_ne!(net.node(1).role(), Role::Leader);
    let rejected = net
        .delivered
        .iter()
        .filter(|m| m.kind == MessageKind::VoteResp && m.to == 1 && m.reject)
        .count();
    assert_eq!(rejected, 2);
}

/// §5.4.2 and figure 8: a leader never commits an entry of an earlier term by counting
/// replicas; it commits once an entry of its own term is replicated.
#[test]
fn s5_4_2_figure8_old_term_entries_commit_only_with_current_term_entry() {
    let voters = [1, 2, 3];
    let mut net = Net::from_storages(
        vec![
            (1, storage_with_terms(&voters, &[2, 2], 2)),
            (2, storage_with_terms(&voters, &[2], 2)),
            (3, storage_with_terms(&voters, &[], 2)),
        ],
        cfg,
    );
    // Elect 1 at term 3 without letting it replicate yet.
    net.cut.insert((1, 2));
    net.cut.insert((1, 3));
    net.node(1).campaign();
    for m in net.ready(1) {
        net.node(m.to).step(m).expect("step");
    }
    for id in [2, 3] {
        for m in net.ready(id) {
            net.deliver(m);
        }
    }
    assert_eq!(net.node(1).role(), Role::Leader);
    net.ready(1); // persist the no-op at index 4
                  // Node 2 acknowledges the term-2 entries (index 3) but not the no-op.
    let ack = |index| Message {
        kind: MessageKind::AppendResp,
        to: 1,
        from: 2,
        term: 3,
        index,
        ..Default::default()
    };
    net.node(1).step(ack(3)).expect("step");
    net.ready(1);
    assert_eq!(
        net.node(1).commit(),
        1,
        "replicas of a term-2 entry must not commit it"
    );
    net.node(1).step(ack(4)).expect("step");
    net.ready(1);
    assert_eq!(
        net.node(1).commit(),
        4,
        "the term-3 no-op commits everything before it"
    );
}

#[test]
fn s5_5_restart_keeps_term_vote_and_log() {
    let mut net = Net::new(3);
    net.elect(1);
    net.node(1).propose(b"x".to_vec()).expect("propose");
    net.settle();
    net.tick_all(1);
    let before = (
        net.node(2).term(),
        net.node(2).last_index(),
        net.node(2).commit(),
    );
    let raw = net.nodes.remove(&2).expect("node 2");
    let st = raw.into_storage();
    let restarted = RawNode::new(&cfg(2), st, 99).expect("restart");
    assert_eq!(
        (restarted.term(), restarted.last_index(), restarted.commit()),
        before
    );
    assert_eq!(restarted.status().vote, 1);
}

// ------------------------------------------------------------------- etcd cases

#[test]
fn prevote_partitioned_node_rejoins_without_disrupting_the_leader() {
    let mut net = Net::with(3, |id| {
        let mut c = cfg(id);
        c.pre_vote = true;
        c.check_quorum = true;
        c
    });
    net.elect(1);
    let term = net.node(1).term();
    net.isolate(3);
    net.tick_all(60);
    assert_eq!(
        net.node(3).term(),
        term,
        "pre-vote keeps the isolated node's term"
    );
    assert_ne!(net.node(3).role(), Role::Leader);
    net.heal();
    net.tick_all(30);
    assert_eq!(net.leaders(), vec![1], "the leader was not disrupted");
    assert_eq!(net.node(1).term(), term);
    assert_eq!(net.node(3).leader(), 1);
}

#[test]
fn without_prevote_a_rejoining_node_bumps_the_term() {
    let mut net = Net::new(3);
    net.elect(1);
    let term = net.node(1).term();
    net.isolate(3);
    net.tick_all(60);
    assert!(
        net.node(3).term() > term,
        "the isolated node campaigned at higher terms"
    );
}

#[test]
fn check_quorum_isolated_leader_steps_down() {
    let mut net = Net::with(3, |id| {
        let mut c = cfg(id);
        c.check_quorum = true;
        c
    });
    net.elect(1);
    net.isolate(1);
    net.tick_all(25);
    assert_ne!(net.node(1).role(), Role::Leader);
    // Meanwhile the majority elected a new leader.
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0], 1);
}

#[test]
fn check_quorum_followers_ignore_votes_while_leader_is_alive() {
    let mut net = Net::with(3, |id| {
        let mut c = cfg(id);
        c.check_quorum = true;
        c
    });
    net.elect(1);
    let term = net.node(1).term();
    // Node 3 campaigns although the leader is healthy: nobody listens.
    net.node(3).campaign();
    net.settle();
    assert_eq!(net.node(2).leader(), 1);
    assert_eq!(net.node(2).term(), term);
    assert_ne!(net.node(3).role(), Role::Leader);
}

#[test]
fn leadership_transfer_hands_over_and_refuses_proposals_meanwhile() {
    let mut net = Net::new(3);
    net.elect(1);
    net.isolate(3);
    net.node(1).propose(b"a".to_vec()).expect("propose");
    net.settle();
    // Node 3 is behind: the transfer waits for it to catch up.
    net.node(1).transfer_leader(3).expect("transfer");
    assert_eq!(
        net.node(1).propose(b"b".to_vec()),
        Err(Error::TransferInProgress { to: 3 })
    );
    net.heal();
    net.tick_all(2);
    assert_eq!(net.leaders(), vec![3]);
    assert_eq!(net.node(1).leader(), 3);
}

#[test]
fn transfer_to_a_non_voter_is_refused() {
    let mut net = Net::new(3);
    net.elect(1);
    assert_eq!(
        net.node(1).transfer_leader(9),
        Err(Error::InvalidTransferTarget(9))
    );
}

#[test]
fn followers_forward_proposals_or_refuse_with_a_hint() {
    let mut net = Net::new(3);
    net.elect(1);
    net.node(2).propose(b"fwd".to_vec()).expect("forwarded");
    net.settle();
    net.tick_all(1);
    assert_eq!(net.applied_data(3), vec![b"fwd".to_vec()]);

    let mut net = Net::with(3, |id| {
        let mut c = cfg(id);
        c.proposal_forwarding = false;
        c
    });
    net.elect(1);
    assert_eq!(
        net.node(2).propose(b"x".to_vec()),
        Err(Error::NotLeader { leader: 1 })
    );
}

#[test]
fn proposals_beyond_uncommitted_limit_are_refused() {
    let mut net = Net::with(3, |id| {
        let mut c = cfg(id);
        c.max_uncommitted_bytes = 1000;
        c
    });
    net.elect(1);
    net.settle();
    net.isolate(1);
    let mut refused = None;
    for i in 0..100 {
        if let Err(e) = net.node(1).propose(vec![0; 100]) {
            refused = Some((i, e));
            break;
        }
    }
    let (i, e) = refused.expect("the limit must bite");
    assert_eq!(e, Error::UncommittedBytesExceeded);
    assert!(
        i < 10,
        "accepted {i} proposals of 124 bytes under a 1000-byte limit"
    );
}

#[test]
fn learner_receives_log_without_voting_then_promotion_makes_it_count() {
    let conf = ConfState::with_voters([1, 2, 3]);
    let mut storages: Vec<(u64, MemStorage)> = (1..=3)
        .map(|id| (id, MemStorage::new_with_conf_state(conf.clone())))
        .collect();
    storages.push((4, MemStorage::new()));
    let mut net = Net::from_storages(storages, cfg);
    net.elect(1);
    net.node(1)
        .propose_conf_change(ConfChange {
            kind: ConfChangeKind::AddLearner,
            node_id: 4,
            context: b"10.0.0.4:7000".to_vec(),
        })
        .expect("add learner");
    net.settle();
    net.tick_all(2);
    assert_eq!(net.node(1).conf_state().learners, vec![4]);
    net.node(1).propose(b"hello".to_vec()).expect("propose");
    net.tick_all(2);
    assert_eq!(
        net.applied_data(4),
        vec![b"hello".to_vec()],
        "the learner gets the log"
    );
    assert_eq!(net.node(4).conf_state().learners, vec![4]);
    // A learner never campaigns.
    net.tick_all(40);
    assert_ne!(net.node(4).role(), Role::Candidate);

    // With 2 and 3 down, 1 alone cannot commit; a learner does not count.
    net.isolate(2);
    net.isolate(3);
    net.node(1).propose(b"stuck".to_vec()).expect("propose");
    net.settle();
    let commit = net.node(1).commit();
    assert!(net.node(1).last_index() > commit);
    net.heal();
    net.tick_all(2);
    net.node(1)
        .propose_conf_change(ConfChange {
            kind: ConfChangeKind::PromoteLearner,
            node_id: 4,
            context: Vec::new(),
        })
        .expect("promote");
    net.tick_all(2);
    assert_eq!(net.node(1).conf_state().voters, vec![1, 2, 3, 4]);
    // Now 1 and 4 plus one more are needed, and 4 counts towards that majority.
    net.isolate(2);
    net.node(1).propose(b"after".to_vec()).expect("propose");
    net.tick_all(2);
    assert!(net.applied_data(4).contains(&b"after".to_vec()));
}

#[test]
fn one_conf_change_at_a_time() {
    let mut net = Net::new(3);
    net.elect(1);
    net.isolate(1);
    let cc = |id| ConfChange {
        kind: ConfChangeKind::AddLearner,
        node_id: id,
        context: vec![],
    };
    net.node(1)
        .propose_conf_change(cc(4))
        .expect("first change");
    assert_eq!(
        net.node(1).propose_conf_change(cc(5)),
        Err(Error::ConfChangePending)
    );
    assert!(matches!(
        net.node(1).propose_conf_change(ConfChange {
            kind: ConfChangeKind::RemoveNode,
            node_id: 9,
            context: vec![]
        }),
        Err(Error::ConfChangePending) | Err(Error::InvalidConfChange(_))
    ));
}

#[test]
fn removed_leader_steps_down_once_its_removal_commits() {
    let mut net = Net::new(3);
    net.elect(1);
    net.node(1)
        .propose_conf_change(ConfChange {
            kind: ConfChangeKind::RemoveNode,
            node_id: 1,
            context: vec![],
        })
        .expect("remove self");
    net.settle();
    assert_ne!(net.node(1).role(), Role::Leader);
    assert_eq!(net.node(2).conf_state().voters, vec![2, 3]);
    net.nodes.remove(&1);
    net.tick_all(40);
    assert_eq!(net.leaders().len(), 1);
}

#[test]
fn snapshot_catches_up_a_lagging_follower() {
    let mut net = Net::new(3);
    net.elect(1);
    net.isolate(3);
    for i in 0..20u8 {
        net.node(1).propose(vec![i]).expect("propose");
    }
    net.settle();
    // The application snapshots and compacts the leader's log past what 3 has.
    let applied = net.node(1).status().applied;
    let conf = net.node(1).applied_conf_state().clone();
    let st = net.node(1).storage_mut();
    st.create_snapshot(applied, conf, b"state".to_vec())
        .expect("snapshot");
    st.compact(applied).expect("compact");
    net.heal();
    net.delivered.clear();
    net.tick_all(3);
    assert!(net
        .delivered
        .iter()
        .any(|m| m.kind == MessageKind::Snapshot && m.to == 3));
    let st3 = net.node(3).storage();
    assert_eq!(st3.snapshot().expect("snapshot").data, b"state".to_vec());
    assert_eq!(net.node(3).commit(), net.node(1).commit());
    let pr = net.node(1).status().progress;
    let p3 = pr.iter().find(|p| p.id == 3).expect("progress of 3");
    assert_eq!(p3.state, ProgressState::Replicate);
    assert_eq!(p3.matched, net.node(1).last_index());
}

#[test]
fn read_index_needs_a_heartbeat_round() {
    let mut net = Net::new(3);
    net.elect(1);
    net.settle();
    net.isolate(1);
    net.node(1).read_index(b"r1".to_vec()).expect("read");
    let out = net.ready(1);
    assert!(out
        .iter()
        .any(|m| m.kind == MessageKind::Heartbeat && m.context == b"r1"));
    let rd = net.node(1).has_ready();
    assert!(!rd, "no read state without a quorum");
    // Deliver the heartbeat round: now the read is answered.
    net.heal();
    for m in out {
        net.deliver(m);
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        for id in [2, 3] {
            for m in net.ready(id) {
                net.deliver(m);
            }
        }
        let raw = net.node(1);
        if raw.has_ready() {
            let rd = raw.ready();
            got.extend(rd.read_states.iter().cloned());
            raw.advance(rd);
        }
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].request_ctx, b"r1".to_vec());
    assert_eq!(got[0].index, net.node(1).commit());
}

#[test]
fn follower_read_index_is_answered_by_the_leader() {
    let mut net = Net::new(3);
    net.elect(1);
    net.settle();
    net.node(2).read_index(b"f".to_vec()).expect("read");
    for _ in 0..10 {
        let ids = [1, 3];
        for id in ids {
            for m in net.ready(id) {
                net.deliver(m);
            }
        }
        let raw = net.node(2);
        if raw.has_ready() {
            let mut rd = raw.ready();
            let rs = std::mem::take(&mut rd.read_states);
            let mut msgs = std::mem::take(&mut rd.messages);
            msgs.append(&mut rd.persisted_messages);
            raw.advance(rd);
            if let Some(r) = rs.first() {
                assert_eq!(r.request_ctx, b"f".to_vec());
                assert_eq!(r.index, net.node(1).commit());
                return;
            }
            for m in msgs {
                net.deliver(m);
            }
        }
    }
    panic!("follower read was not answered");
}

#[test]
fn lease_read_is_answered_without_a_round_trip() {
    let mut net = Net::with(3, |id| {
        let mut c = cfg(id);
        c.check_quorum = true;
        c.read_only = ReadOnlyOption::LeaseBased;
        c
    });
    net.elect(1);
    net.tick_all(2);
    net.isolate(1);
    net.node(1).read_index(b"lease".to_vec()).expect("read");
    let rd = net.node(1).ready();
    assert_eq!(rd.read_states.len(), 1, "answered from the lease");
    net.node(1).advance(rd);
    // Once the lease runs out, reads need a round again (and the isolated leader has none).
    for _ in 0..12 {
        net.node(1).tick();
        net.ready(1);
    }
    let _ = net.node(1).read_index(b"late".to_vec());
    if net.node(1).has_ready() {
        let rd = net.node(1).ready();
        assert!(rd.read_states.is_empty(), "lease must have expired");
        net.node(1).advance(rd);
    }
}

#[test]
fn config_validation_names_the_problem() {
    let mut c = Config::new(0);
    assert!(matches!(c.validate(), Err(Error::Config(m)) if m.contains("id")));
    c.id = 1;
    c.heartbeat_interval_ticks = 10;
    assert!(matches!(c.validate(), Err(Error::Config(m)) if m.contains("election_timeout")));
    let mut c = Config::new(1);
    c.read_only = ReadOnlyOption::LeaseBased;
    c.check_quorum = false;
    assert!(matches!(c.validate(), Err(Error::Config(m)) if m.contains("check_quorum")));
    let st = MemStorage::new();
    assert!(RawNode::new(&c, st, 0).is_err());
}

#[test]
fn malformed_messages_are_errors_not_panics() {
    let mut net = Net::new(3);
    net.elect(1);
    let raw = net.node(2);
    let bad = [
        Message {
            kind: MessageKind::Append,
            to: 2,
            from: 0,
            term: 9,
            ..Default::default()
        },
        Message {
            kind: MessageKind::Append,
            to: 7,
            from: 1,
            term: 9,
            ..Default::default()
        },
        Message {
            kind: MessageKind::Snapshot,
            to: 2,
            from: 1,
            term: 9,
            ..Default::default()
        },
        Message {
            kind: MessageKind::Append,
            to: 2,
            from: 1,
            term: 9,
            index: 1,
            log_term: 1,
            entries: vec![Entry {
                index: 5,
                term: 9,
                ..Default::default()
            }],
            ..Default::default()
        },
    ];
    for m in bad {
        assert!(raw.step(m).is_err());
    }
    assert!(ConfChange::decode(&[7]).is_err());
    assert!(ConfChange::decode(&[]).is_err());
}

#[test]
fn messages_round_trip_through_rkyv() {
    let m = Message {
        kind: MessageKind::Append,
        to: 2,
        from: 1,
        term: 3,
        log_term: 2,
        index: 7,
        entries: vec![Entry {
            term: 3,
            index: 8,
            kind: EntryKind::Normal,
            data: b"x".to_vec(),
        }],
        commit: 6,
        ..Default::default()
    };
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&m).expect("serialize");
    let archived =
        rkyv::access::<mast_raft::ArchivedMessage, rkyv::rancor::Error>(&bytes).expect("valid");
    assert_eq!(archived.entries.len(), 1);
    let back: Message =
        rkyv::deserialize::<Message, rkyv::rancor::Error>(archived).expect("deserialize");
    assert_eq!(back, m);
    // Truncated input is rejected by validation, not trusted.
    let short = &bytes[..bytes.len() / 2];
    assert!(rkyv::access::<mast_raft::ArchivedMessage, rkyv::rancor::Error>(short).is_err());
}

#[test]
fn ready_separates_messages_that_need_durable_state() {
    let mut net = Net::new(3);
    // A candidate's vote requests wait for its new term and self-vote to be durable.
    net.node(1).campaign();
    let rd = net.node(1).ready();
    assert!(rd.hard_state.is_some());
    assert!(rd.messages.is_empty());
    assert!(rd
        .persisted_messages
        .iter()
        .all(|m| m.kind == MessageKind::Vote));
    assert_eq!(rd.persisted_messages.len(), 2);
    for m in rd.persisted_messages.clone() {
        net.deliver(m);
    }
    net.node(1).advance(rd);
    // Vote grants are sent only once the vote is durable.
    let rd2 = net.node(2).ready();
    assert!(rd2.messages.is_empty());
    assert_eq!(rd2.persisted_messages[0].kind, MessageKind::VoteResp);
    assert_eq!(rd2.hard_state.map(|h| h.vote), Some(1));
    for m in rd2.persisted_messages.clone() {
        net.deliver(m);
    }
    net.node(2).advance(rd2);
    // The new leader's appends may go out while its own no-op is being written.
    assert_eq!(net.node(1).role(), Role::Leader);
    let rd = net.node(1).ready();
    assert_eq!(rd.entries.len(), 1);
    assert!(rd.messages.iter().any(|m| m.kind == MessageKind::Append));
    assert!(
        rd.committed_entries.is_empty(),
        "not durable on any quorum yet"
    );
    net.node(1).advance(rd);
}

#[test]
fn single_voter_commits_only_what_it_has_persisted() {
    let conf = ConfState::with_voters([1]);
    let mut net = Net::from_storages(
        vec![
            (1, MemStorage::new_with_conf_state(conf)),
            (2, MemStorage::new()),
        ],
        cfg,
    );
    net.node(1).campaign();
    assert_eq!(net.node(1).role(), Role::Leader);
    let rd = net.node(1).ready();
    // Elected within one step: its term is not durable, so nothing may be sent yet, and
    // its no-op is not committed until written.
    assert!(rd.messages.is_empty());
    assert!(rd.committed_entries.is_empty());
    assert_eq!(rd.entries.len(), 1);
    let st = net.node(1).storage_mut();
    st.append(&rd.entries).expect("append");
    st.set_hard_state(rd.hard_state.expect("hard state"));
    net.node(1).advance(rd);
    let rd = net.node(1).ready();
    assert_eq!(rd.committed_entries.len(), 1, "committed once durable");
    net.node(1).advance(rd);
}
