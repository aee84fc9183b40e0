//! Driver-level proof that the TSO never goes back across leader changes: three replicas of
//! the pure raft core, each with the shipped meta table and the shipped TSO core, driven
//! step by step under seeded partitions, leader isolation and clocks that jump backwards.
//!
//! Checked for every seed:
//! - every timestamp handed out is unique;
//! - real-time order: a timestamp requested after another was answered is larger;
//! - the window rule on its own, without the read barrier: whatever a deposed leader that
//!   has not noticed could still hand out from its window is below every timestamp a newer
//!   leader has handed out.
//!
//! `MAST_TSO_SEEDS=N` runs N seeds (default 60); `MAST_TSO_SEED=s` replays one.

use std::collections::{BTreeMap, BTreeSet};

use mast::meta::global::GlobalCommand;
use mast::meta::{MetaCommand, MetaTable};
use mast::replica::StateMachine;
use mast::services::tso::{self, TsoCore, TsoError};
use mast_raft::{ConfState, Config, EntryKind, MemStorage, Message, RawNode, Role};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const NODES: u64 = 3;
const STEPS: u64 = 4000;
/// Simulated milliseconds per step.
const MS_PER_STEP: u64 = 5;

struct Replica {
    raw: RawNode<MemStorage>,
    table: MetaTable,
    tso: TsoCore,
    /// This node's clock offset from true time (it may jump backwards).
    skew_ms: i64,
    /// Reads issued for TSO requests: context → (request id, step issued).
    reads: BTreeMap<u64, (u64, u64)>,
    /// Reads confirmed, waiting for apply: (read index, request id, step issued).
    confirmed: Vec<(u64, u64, u64)>,
    window_proposed: bool,
}

struct Answer {
    sent: u64,
    received: u64,
    ts: u64,
    node: u64,
    term: u64,
}

struct Sim {
    rng: SmallRng,
    step: u64,
    nodes: BTreeMap<u64, Replica>,
    net: Vec<(u64, Message)>,
    isolated: Option<u64>,
    answers: Vec<Answer>,
    next_ctx: u64,
    /// Highest timestamp handed out by a leader of each term.
    max_by_term: BTreeMap<u64, u64>,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut nodes = BTreeMap::new();
        for id in 1..=NODES {
            let mut cfg = Config::new(id);
            cfg.election_timeout_ticks = 10;
            cfg.heartbeat_interval_ticks = 1;
            let storage = MemStorage::new_with_conf_state(ConfState::with_voters(1..=NODES));
            let raw = RawNode::new(&cfg, storage, seed ^ id).expect("raft node");
            nodes.insert(
                id,
                Replica {
                    raw,
                    table: MetaTable::empty(),
                    tso: TsoCore::new(),
                    skew_ms: rng.gen_range(-50..50),
                    reads: BTreeMap::new(),
                    confirmed: Vec::new(),
                    window_proposed: false,
                },
            );
        }
        Sim {
            rng,
            step: 0,
            nodes,
            net: Vec::new(),
            isolated: None,
            answers: Vec::new(),
            next_ctx: 0,
            max_by_term: BTreeMap::new(),
        }
    }

    fn now_ms(&self, id: u64) -> u64 {
        let t = 1_000_000 + (self.step * MS_PER_STEP) as i64 + self.nodes[&id].skew_ms;
        t.max(0) as u64
    }

    fn cut(&self, a: u64, b: u64) -> bool {
        self.isolated.is_some_and(|i| (i == a) != (i == b))
    }

    fn run(&mut self) -> Result<(), String> {
        for _ in 0..STEPS {
            self.step += 1;
            self.faults();
            self.deliver();
            if self.step % 2 == 0 {
                for n in self.nodes.values_mut() {
                    n.raw.tick();
                }
            }
            self.clients();
            for id in 1..=NODES {
                self.ready(id)?;
            }
            self.check_windows()?;
        }
        self.check_answers()
    }

    fn faults(&mut self) {
        if self.rng.gen_bool(0.004) {
            // Isolate the leader (a deposed leader that does not know it yet) or heal.
            self.isolated = match self.isolated {
                Some(_) => None,
                None => self
                    .nodes
                    .iter()
                    .find(|(_, n)| n.raw.role() == Role::Leader)
                    .map(|(id, _)| *id),
            };
        }
        if self.rng.gen_bool(0.002) {
            // A clock steps backwards by up to 5 s (or forwards a little).
            let id = self.rng.gen_range(1..=NODES);
            let jump = self.rng.gen_range(-5000..500);
            if let Some(n) = self.nodes.get_mut(&id) {
                n.skew_ms += jump;
            }
        }
    }

    fn deliver(&mut self) {
        let now = self.step;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.net)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.net = later;
        for (_, m) in due {
            if self.cut(m.from, m.to) {
                continue;
            }
            if let Some(n) = self.nodes.get_mut(&m.to) {
                let _ = n.raw.step(m);
            }
        }
    }

    fn clients(&mut self) {
        if !self.rng.gen_bool(0.3) {
            return;
        }
        let id = self.rng.gen_range(1..=NODES);
        let n = self.nodes.get_mut(&id).expect("node");
        if n.raw.role() != Role::Leader {
            return;
        }
        self.next_ctx += 1;
        let ctx = self.next_ctx;
        if n.raw.read_index(ctx.to_le_bytes().to_vec()).is_ok() {
            n.reads.insert(ctx, (ctx, self.step));
        }
    }

    fn ready(&mut self, id: u64) -> Result<(), String> {
        let step = self.step;
        let delay = self.rng.gen_range(1..4);
        let n = self.nodes.get_mut(&id).expect("node");
        if !n.raw.has_ready() {
            return self.serve(id);
        }
        let mut rd = n.raw.ready();
        let st = n.raw.storage_mut();
        st.append(&rd.entries).map_err(|e| e.to_string())?;
        if let Some(hs) = rd.hard_state {
            st.set_hard_state(hs);
        }
        let mut out: Vec<Message> = std::mem::take(&mut rd.messages);
        out.extend(std::mem::take(&mut rd.persisted_messages));
        for e in std::mem::take(&mut rd.committed_entries) {
            if e.kind == EntryKind::Normal && !e.data.is_empty() {
                n.table.apply(e.index, &e.data);
                if let Ok(MetaCommand::Global(GlobalCommand::ExtendTsoWindow { bound_ms })) =
                    MetaCommand::decode(&e.data)
                {
                    // Own proposal of the serving term applied: the window may be used.
                    n.tso.window_applied(e.term, bound_ms);
                    n.window_proposed = false;
                }
            } else {
                n.table.skip(e.index);
            }
        }
        for rs in std::mem::take(&mut rd.read_states) {
            let mut b = [0u8; 8];
            b.copy_from_slice(&rs.request_ctx);
            let ctx = u64::from_le_bytes(b);
            if let Some((req, sent)) = n.reads.remove(&ctx) {
                n.confirmed.push((rs.index, req, sent));
            }
        }
        n.raw.advance(rd);
        for m in out {
            self.net.push((step + delay, m));
        }
        self.serve(id)
    }

    /// Leadership bookkeeping and answers for confirmed reads, as the service does.
    fn serve(&mut self, id: u64) -> Result<(), String> {
        let now = self.now_ms(id);
        let step = self.step;
        let n = self.nodes.get_mut(&id).expect("node");
        let term = n.raw.term();
        let ready = n.raw.role() == Role::Leader && n.raw.term_at(n.table.applied()) == Some(term);
        if !ready {
            if n.raw.role() != Role::Leader {
                n.tso.step_down();
                n.confirmed.clear();
                n.reads.clear();
                n.window_proposed = false;
            }
            return Ok(());
        }
        if n.tso.serving_term() != Some(term) {
            n.tso.begin_term(term, n.table.global.tso_bound_ms);
            n.window_proposed = false;
        }
        let applied = n.table.applied();
        let mut keep = Vec::new();
        for (index, req, sent) in std::mem::take(&mut n.confirmed) {
            if index > applied {
                keep.push((index, req, sent));
                continue;
            }
            let count = if req % 5 == 0 { 1000 } else { 1 };
            match n.tso.allocate(term, now, count) {
                Ok(a) => {
                    if let Some(b) = a.renew_bound_ms {
                        if !n.window_proposed
                            && n.raw
                                .propose(
                                    MetaCommand::Global(GlobalCommand::ExtendTsoWindow {
                                        bound_ms: b,
                                    })
                                    .encode(),
                                )
                                .is_ok()
                        {
                            n.window_proposed = true;
                        }
                    }
                    for k in 0..a.count {
                        self.answers.push(Answer {
                            sent,
                            received: step,
                            ts: a.timestamp + k,
                            node: id,
                            term,
                        });
                    }
                    let m = self.max_by_term.entry(term).or_insert(0);
                    *m = (*m).max(a.timestamp + a.count - 1);
                }
                Err(TsoError::NeedWindow { bound_ms }) => {
                    keep.push((index, req, sent));
                    if !n.window_proposed
                        && n.raw
                            .propose(
                                MetaCommand::Global(GlobalCommand::ExtendTsoWindow { bound_ms })
                                    .encode(),
                            )
                            .is_ok()
                    {
                        n.window_proposed = true;
                    }
                }
                Err(e) => return Err(format!("node {id} term {term}: {e:?}")),
            }
        }
        n.confirmed = keep;
        Ok(())
    }

    /// Whatever any node still serving an older term could hand out right now is below
    /// everything a newer term has handed out.
    fn check_windows(&mut self) -> Result<(), String> {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            let now = self.now_ms(id);
            let n = self.nodes.get_mut(&id).expect("node");
            let Some(term) = n.tso.serving_term() else {
                continue;
            };
            let newer_min = self
                .answers
                .iter()
                .filter(|a| a.term > term)
                .map(|a| a.ts)
                .min();
            let Some(newer_min) = newer_min else { continue };
            if let Ok(a) = n.tso.allocate(term, now, 1) {
                if a.timestamp >= newer_min {
                    return Err(format!(
                        "step {}: deposed leader {id} of term {term} could hand out {} (physical {}) after a newer leader handed out {} (physical {})",
                        self.step,
                        a.timestamp,
                        tso::physical_of(a.timestamp),
                        newer_min,
                        tso::physical_of(newer_min)
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_answers(&self) -> Result<(), String> {
        let mut seen = BTreeSet::new();
        for a in &self.answers {
            if !seen.insert(a.ts) {
                return Err(format!(
                    "timestamp {} handed out twice (node {}, term {})",
                    a.ts, a.node, a.term
                ));
            }
        }
        // Real-time order: sweep by send step, keeping the largest timestamp answered
        // strictly before it.
        let mut by_received: Vec<&Answer> = self.answers.iter().collect();
        by_received.sort_by_key(|a| a.received);
        let mut by_sent: Vec<&Answer> = self.answers.iter().collect();
        by_sent.sort_by_key(|a| a.sent);
        let (mut i, mut max_before) = (0, None::<&Answer>);
        for b in by_sent {
            while i < by_received.len() && by_received[i].received < b.sent {
                if max_before.map_or(true, |m| by_received[i].ts > m.ts) {
                    max_before = Some(by_received[i]);
                }
                i += 1;
            }
            if let Some(a) = max_before {
                if b.ts <= a.ts {
                    return Err(format!(
                        "real-time order: {} (node {} term {}, sent at step {}) is not above {} (node {} term {}, answered at step {})",
                        b.ts, b.node, b.term, b.sent, a.ts, a.node, a.term, a.received
                    ));
                }
            }
        }
        if self.max_by_term.len() < 2 && self.answers.len() < 10 {
            return Err(format!(
                "too little happened: {} answers",
                self.answers.len()
            ));
        }
        Ok(())
    }
}

#[test]
fn timestamps_never_go_back_across_leader_changes() {
    let seeds: Vec<u64> = match std::env::var("MAST_TSO_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(s) => vec![s],
        None => {
            let n = std::env::var("MAST_TSO_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(60);
            (0..n).collect()
        }
    };
    let mut terms = 0;
    for seed in seeds {
        let mut sim = Sim::new(seed);
        if let Err(e) = sim.run() {
            panic!("seed {seed}: {e}\nreplay: MAST_TSO_SEED={seed} cargo test --release --test tso_failover");
        }
        terms += sim.max_by_term.len();
    }
    assert!(terms > 0);
    eprintln!("tso_failover: {terms} serving terms in all");
}
