//! The raft state machine and its `Ready`/`advance` interface.

use std::collections::{BTreeMap, VecDeque};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::log::RaftLog;
use crate::progress::{Progress, ProgressState};
use crate::storage::Storage;
use crate::types::{
    ConfChange, ConfState, Entry, EntryKind, HardState, Message, MessageKind, ReadState, Role,
    Snapshot, SoftState,
};
use crate::{Config, Error, ReadOnlyOption};

/// Context of a vote request sent because of a leadership transfer: it overrides the
/// voters' leader lease.
const CAMPAIGN_TRANSFER: &[u8] = b"transfer";

/// Largest index or term accepted from a peer (2^62: ample, and overflow-free).
const MAX_INDEX: u64 = 1 << 62;

/// Work for the application, produced by [`RawNode::ready`]. Handle it in this order:
///
/// 1. Persist `snapshot` (if any), then `entries` (replacing any conflicting suffix), then
///    `hard_state` (if any). `messages` may be sent at once, in parallel with the writes.
/// 2. Once those writes are durable: send `persisted_messages`, apply `snapshot` to the
///    state machine, then apply `committed_entries` in order (calling
///    [`RawNode::apply_conf_change`] for conf-change entries), then serve `read_states`
///    whose index is applied.
/// 3. Call [`RawNode::advance`] with this `Ready`. No new `Ready` is produced before that.
///
/// `committed_entries` may include entries of this same Ready's `entries`, so applying
/// them before the writes are durable is a bug (a crash could lose an entry that was
/// reported committed).
#[derive(Debug, Default)]
pub struct Ready {
    /// Leader or role changed.
    pub soft_state: Option<SoftState>,
    /// Term, vote or commit changed: persist.
    pub hard_state: Option<HardState>,
    /// Entries to append to stable storage.
    pub entries: Vec<Entry>,
    /// Snapshot to persist and then apply.
    pub snapshot: Option<Snapshot>,
    /// Messages that may be sent before this Ready's writes are durable.
    pub messages: Vec<Message>,
    /// Messages that may only be sent after this Ready's writes are durable.
    pub persisted_messages: Vec<Message>,
    /// Committed entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Answers to ReadIndex requests.
    pub read_states: Vec<ReadState>,
    // What `advance` needs, kept apart so the application may move the public fields out.
    last_entry: Option<(u64, u64)>,
    snapshot_meta: Option<(u64, u64, ConfState)>,
    last_committed: Option<u64>,
    term_vote: (u64, u64),
}

/// What [`RawNode::on_persisted`] needs to know about a `Ready` that
/// [`RawNode::advance_unpersisted`] let go before its writes were durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpersisted {
    last_entry: Option<(u64, u64)>,
    term_vote: (u64, u64),
    /// Position among the Readys let go unpersisted (1, 2, ...): durability is reported in
    /// this order, and a reordering is a driver bug the core refuses to absorb silently.
    seq: u64,
}

/// Replication progress of one member, as seen by the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressStatus {
    pub id: u64,
    pub matched: u64,
    pub next: u64,
    pub state: ProgressState,
    /// Heard from during the current check-quorum round.
    pub recent_active: bool,
    pub is_learner: bool,
}

/// A snapshot of a replica's state for monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub id: u64,
    pub term: u64,
    pub vote: u64,
    pub role: Role,
    pub leader: u64,
    pub commit: u64,
    pub applied: u64,
    pub first_index: u64,
    pub last_index: u64,
    /// Current configuration (latest in the log, committed or not).
    pub conf_state: ConfState,
    /// Leader only: every member's progress.
    pub progress: Vec<ProgressStatus>,
}

struct ReadRequest {
    ctx: Vec<u8>,
    index: u64,
    /// Requesting follower, or 0 for a local request.
    from: u64,
    acks: Vec<u64>,
}

enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// One raft replica over storage `S`.
pub struct RawNode<S: Storage> {
    id: u64,
    cfg: Config,
    term: u64,
    vote: u64,
    role: Role,
    leader: u64,
    log: RaftLog<S>,
    rng: SmallRng,
    /// Leader only: progress of every member, including itself.
    prs: BTreeMap<u64, Progress>,
    /// (index, configuration in effect from that index); never empty. The last one is the
    /// current configuration: changes take effect when appended.
    conf_log: Vec<(u64, ConfState)>,
    /// Configuration as of the applied index (folded by `apply_conf_change`).
    applied_conf: ConfState,
    votes: BTreeMap<u64, bool>,
    election_elapsed: u64,
    heartbeat_elapsed: u64,
    randomized_timeout: u64,
    /// Monotonic tick counter (the leader lease is measured in it).
    ticks: u64,
    /// Until an election timeout has passed after boot, behave as if a leader was heard
    /// recently: the lease a crashed voter granted must survive its restart.
    boot_guard: bool,
    lead_transferee: u64,
    /// Set once this leader sent TimeoutNow: the lease no longer holds in this term.
    lease_disabled: bool,
    /// Index of this leader's first entry (its no-op).
    term_start_index: u64,
    uncommitted_bytes: u64,
    /// Entries or commit changed since the last broadcast; flushed when building a Ready.
    pending_bcast: bool,
    last_bcast_commit: u64,
    reads: VecDeque<ReadRequest>,
    read_states: Vec<ReadState>,
    msgs: Vec<Message>,
    msgs_after_persist: Vec<Message>,
    prev_soft: SoftState,
    prev_hard: HardState,
    /// Term and vote known durable: messages at a newer term or vote wait for persistence.
    durable_term_vote: (u64, u64),
    awaiting_advance: bool,
    /// Highest index known durable here. The leader counts itself towards a quorum only
    /// up to it, so a commit index never depends on an entry that exists in memory only.
    persisted: u64,
    quorum_buf: Vec<u64>,
    /// Readys let go by `advance_unpersisted`, and how many of them `on_persisted` reported
    /// durable: equal unless handed-off writes are outstanding.
    handed_seq: u64,
    persisted_seq: u64,
}

impl<S: Storage> RawNode<S> {
    /// Creates a replica from its persisted state. `rng_seed` drives election jitter.
    ///
    /// `cfg.applied` below the storage's compaction point is raised to it: the application
    /// is expected to have restored the snapshot there (for a bootstrap snapshot, the
    /// empty state).
    pub fn new(cfg: &Config, storage: S, rng_seed: u64) -> Result<Self, Error> {
        cfg.validate()?;
        let (hs, base_conf) = storage.initial_state()?;
        let first = storage.first_index()?;
        let last = storage.last_index()?;
        if hs.commit > last {
            return Err(Error::CorruptState(format!(
                "commit {} is beyond the last log index {last}",
                hs.commit
            )));
        }
        if cfg.applied > hs.commit {
            return Err(Error::Config(format!(
                "applied {} is beyond the persisted commit {}",
                cfg.applied, hs.commit
            )));
        }
        let mut conf_log = vec![(first - 1, base_conf)];
        // Changes take effect when appended, so the current configuration is the fold of
        // every conf-change entry in the log, not only the committed ones.
        let mut lo = first;
        while lo <= last {
            let ents = storage.entries(lo, last + 1, 1 << 20)?;
            let Some(tail) = ents.last() else {
                break;
            };
            lo = tail.index + 1;
            for e in ents.iter().filter(|e| e.kind == EntryKind::ConfChange) {
                let cc = ConfChange::decode(&e.data)?;
                let next = conf_log
                    .last()
                    .map(|c| c.1.applied(&cc))
                    .unwrap_or_default();
                conf_log.push((e.index, next));
            }
        }
        let applied_conf = conf_log
            .iter()
            .rev()
            .find(|(i, _)| *i <= cfg.applied.max(first - 1))
            .map(|c| c.1.clone())
            .unwrap_or_default();
        let log = RaftLog::new(storage, hs.commit, cfg.applied.max(first - 1))?;
        let mut node = RawNode {
            id: cfg.id,
            cfg: cfg.clone(),
            term: hs.term,
            vote: hs.vote,
            role: Role::Follower,
            leader: 0,
            log,
            rng: SmallRng::seed_from_u64(rng_seed),
            prs: BTreeMap::new(),
            conf_log,
            applied_conf,
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_timeout: cfg.election_timeout_ticks,
            ticks: 0,
            boot_guard: true,
            lead_transferee: 0,
            lease_disabled: false,
            term_start_index: 0,
            uncommitted_bytes: 0,
            pending_bcast: false,
            last_bcast_commit: 0,
            reads: VecDeque::new(),
            read_states: Vec::new(),
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            prev_soft: SoftState::default(),
            prev_hard: hs,
            durable_term_vote: (hs.term, hs.vote),
            awaiting_advance: false,
            persisted: last,
            quorum_buf: Vec::new(),
            handed_seq: 0,
            persisted_seq: 0,
        };
        node.become_follower(hs.term, 0);
        // Only a term past the bootstrap one can have had a leader whose lease we granted.
        node.boot_guard = hs.term > 1;
        node.prev_soft = node.soft_state();
        Ok(node)
    }

    #[cfg(feature = "mutants")]
    fn mutant(&self, m: crate::Mutant) -> bool {
        self.cfg.mutant == m
    }

    // ---------------------------------------------------------------- accessors

    /// This replica's id.
    pub fn id(&self) -> u64 {
        self.id
    }
    /// Current term.
    pub fn term(&self) -> u64 {
        self.term
    }
    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// Known leader (0 = none).
    pub fn leader(&self) -> u64 {
        self.leader
    }
    /// Commit index.
    pub fn commit(&self) -> u64 {
        self.log.committed
    }
    /// Last log index (durable or not).
    pub fn last_index(&self) -> u64 {
        self.log.last_index()
    }
    /// Term of the entry at `idx`, if it is in the log (durable or not).
    pub fn term_at(&self, idx: u64) -> Option<u64> {
        match self.log.term(idx) {
            Ok(0) if idx > self.log.last_index() => None,
            Ok(t) => Some(t),
            Err(_) => None,
        }
    }
    /// Current configuration (the latest in the log).
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_log[self.conf_log.len() - 1].1
    }
    /// Configuration as of the applied index, for the application's snapshots.
    pub fn applied_conf_state(&self) -> &ConfState {
        &self.applied_conf
    }
    /// The storage (for reads; the application writes through `storage_mut`).
    pub fn storage(&self) -> &S {
        &self.log.storage
    }
    /// The storage, for persisting what a `Ready` hands out.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.log.storage
    }
    /// Consumes the node, returning its storage (the simulator's crash).
    pub fn into_storage(self) -> S {
        self.log.storage
    }

    /// Replica status for monitoring.
    pub fn status(&self) -> Status {
        let conf = self.conf_state();
        Status {
            id: self.id,
            term: self.term,
            vote: self.vote,
            role: self.role,
            leader: self.leader,
            commit: self.log.committed,
            applied: self.log.applied,
            first_index: self.log.first_index(),
            last_index: self.log.last_index(),
            conf_state: conf.clone(),
            progress: self
                .prs
                .iter()
                .map(|(&id, pr)| ProgressStatus {
                    id,
                    matched: pr.matched,
                    next: pr.next,
                    state: pr.state,
                    recent_active: pr.recent_active,
                    is_learner: conf.is_learner(id),
                })
                .collect(),
        }
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            leader: self.leader,
            role: self.role,
        }
    }

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    fn promotable(&self) -> bool {
        self.conf_state().is_voter(self.id)
    }

    fn quorum(&self) -> usize {
        self.conf_state().voters.len() / 2 + 1
    }

    // ---------------------------------------------------------------- sending

    fn send(&mut self, mut m: Message) {
        m.from = self.id;
        // Votes, vote grants and acknowledgements promise durable state; everything else
        // (leader traffic, pre-votes, forwarding) depends on nothing this Ready writes.
        let after_persist = matches!(
            m.kind,
            MessageKind::Vote
                | MessageKind::VoteResp
                | MessageKind::AppendResp
                | MessageKind::HeartbeatResp
        );
        if after_persist {
            self.msgs_after_persist.push(m);
        } else {
            self.msgs.push(m);
        }
    }

    fn msg(&self, kind: MessageKind, to: u64) -> Message {
        Message {
            kind,
            to,
            term: self.term,
            ..Default::default()
        }
    }

    // ---------------------------------------------------------------- role changes

    fn reset(&mut self, term: u64) {
        if self.term != term {
            self.term = term;
            self.vote = 0;
        }
        self.leader = 0;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.randomized_timeout = self
            .rng
            .gen_range(self.cfg.election_timeout_ticks..2 * self.cfg.election_timeout_ticks);
        self.lead_transferee = 0;
        self.votes.clear();
        self.prs.clear();
        self.reads.clear();
        self.pending_bcast = false;
        self.boot_guard = false;
    }

    fn become_follower(&mut self, term: u64, leader: u64) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    fn become_pre_candidate(&mut self) {
        // A pre-candidate keeps its term and vote: losing the pre-vote must change nothing.
        self.votes.clear();
        self.prs.clear();
        self.reads.clear();
        self.role = Role::PreCandidate;
        self.leader = 0;
        self.boot_guard = false;
    }

    fn become_candidate(&mut self) {
        self.reset(self.term + 1);
        self.vote = self.id;
        self.role = Role::Candidate;
    }

    fn become_leader(&mut self) {
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader = self.id;
        self.lease_disabled = false;
        self.uncommitted_bytes = 0;
        let last = self.log.last_index();
        let members: Vec<u64> = {
            let c = self.conf_state();
            c.voters.iter().chain(c.learners.iter()).copied().collect()
        };
        for id in members.into_iter().chain(std::iter::once(self.id)) {
            self.prs.insert(id, self.new_progress(last + 1));
        }
        let persisted = self.persisted.min(last);
        if let Some(me) = self.prs.get_mut(&self.id) {
            me.matched = persisted;
            me.recent_active = true;
        }
        self.last_bcast_commit = 0;
        // The no-op commits everything before it (§5.4.2) and makes the leader ready for
        // reads and configuration changes.
        self.term_start_index = last + 1;
        self.append_leader_entry(Entry {
            kind: EntryKind::Normal,
            ..Default::default()
        });
    }

    fn new_progress(&self, next: u64) -> Progress {
        Progress::new(
            next,
            self.cfg.max_inflight_msgs,
            self.cfg.max_inflight_bytes,
        )
    }

    // ---------------------------------------------------------------- ticks and elections

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        self.ticks += 1;
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.tick_election();
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_timeout_ticks {
            self.boot_guard = false;
        }
        if self.promotable() && self.election_elapsed >= self.randomized_timeout {
            #[cfg(feature = "mutants")]
            if self.role == Role::PreCandidate
                && self.mutant(crate::Mutant::PreCandidateNeverRetries)
            {
                return;
            }
            self.election_elapsed = 0;
            self.hup(false);
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_timeout_ticks {
            self.election_elapsed = 0;
            if self.cfg.check_quorum {
                if !self.quorum_active() {
                    self.become_follower(self.term, 0);
                    return;
                }
                for (&id, pr) in self.prs.iter_mut() {
                    pr.recent_active = id == self.id;
                }
            }
            // A transfer that did not finish within an election timeout is abandoned.
            self.lead_transferee = 0;
        }
        // A snapshot whose outcome was never reported is presumed lost.
        let give_up = 2 * self.cfg.election_timeout_ticks;
        for pr in self.prs.values_mut() {
            if pr.state == ProgressState::Snapshot && self.ticks - pr.snapshot_sent_tick >= give_up
            {
                pr.pending_snapshot = 0;
                pr.become_probe();
            }
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_interval_ticks {
            self.heartbeat_elapsed = 0;
            let ctx = self.reads.back().map(|r| r.ctx.clone()).unwrap_or_default();
            self.bcast_heartbeat(ctx);
        }
    }

    fn quorum_active(&self) -> bool {
        let conf = self.conf_state();
        let active = conf
            .voters
            .iter()
            .filter(|id| **id == self.id || self.prs.get(id).is_some_and(|p| p.recent_active))
            .count();
        active >= self.quorum()
    }

    /// Starts an election now (with a pre-vote round if configured).
    pub fn campaign(&mut self) {
        self.hup(false);
    }

    fn hup(&mut self, transfer: bool) {
        if self.role == Role::Leader || !self.promotable() {
            return;
        }
        if self.cfg.pre_vote && !transfer {
            self.become_pre_candidate();
            self.request_votes(MessageKind::PreVote, self.term + 1, false);
        } else {
            self.become_candidate();
            self.request_votes(MessageKind::Vote, self.term, transfer);
        }
    }

    fn request_votes(&mut self, kind: MessageKind, term: u64, transfer: bool) {
        match self.poll(self.id, true) {
            VoteResult::Won => return self.on_won(kind),
            VoteResult::Lost => return self.become_follower(self.term, 0),
            VoteResult::Pending => {}
        }
        let voters = self.conf_state().voters.clone();
        let (index, log_term) = (self.log.last_index(), self.log.last_term());
        let me = self.id;
        for to in voters.into_iter().filter(|&v| v != me) {
            let mut m = self.msg(kind, to);
            m.term = term;
            m.index = index;
            m.log_term = log_term;
            if transfer {
                m.context = CAMPAIGN_TRANSFER.to_vec();
            }
            self.send(m);
        }
    }

    fn on_won(&mut self, kind: MessageKind) {
        if kind == MessageKind::PreVote {
            self.become_candidate();
            self.request_votes(MessageKind::Vote, self.term, false);
        } else {
            self.become_leader();
        }
    }

    fn poll(&mut self, from: u64, granted: bool) -> VoteResult {
        if !self.conf_state().is_voter(from) {
            return VoteResult::Pending;
        }
        self.votes.entry(from).or_insert(granted);
        let q = self.quorum();
        let yes = self.votes.values().filter(|v| **v).count();
        let no = self.votes.len() - yes;
        if yes >= q {
            VoteResult::Won
        } else if no > self.conf_state().voters.len() - q {
            VoteResult::Lost
        } else {
            VoteResult::Pending
        }
    }

    // ---------------------------------------------------------------- step

    /// Processes a message from a peer. Errors describe malformed or inconsistent input;
    /// the node's state stays valid either way.
    pub fn step(&mut self, m: Message) -> Result<(), Error> {
        if m.from == 0 || m.from == self.id {
            return Err(Error::InvalidMessage("bad sender id"));
        }
        if m.to != self.id {
            return Err(Error::InvalidMessage("message addressed to another node"));
        }
        let snap_index = m
            .snapshot
            .as_ref()
            .map_or(0, |s| s.meta.index.max(s.meta.term));
        let biggest = [
            m.term,
            m.log_term,
            m.index,
            m.commit,
            m.reject_hint,
            snap_index,
        ];
        if biggest.iter().any(|&v| v > MAX_INDEX) {
            // Arithmetic on indexes and terms cannot overflow below this bound.
            return Err(Error::InvalidMessage("index or term out of range"));
        }
        if m.term == 0 {
            return self.step_forwarded(m);
        }
        if m.term > self.term {
            if matches!(m.kind, MessageKind::Vote | MessageKind::PreVote) {
                let force = m.context == CAMPAIGN_TRANSFER;
                let in_lease = self.cfg.check_quorum
                    && (self.leader != 0 || self.boot_guard)
                    && self.election_elapsed < self.cfg.election_timeout_ticks;
                if !force && in_lease {
                    // Heard from a leader recently: a live leader's lease is not broken.
                    return Ok(());
                }
            }
            match m.kind {
                MessageKind::PreVote => {}
                MessageKind::PreVoteResp if !m.reject => {}
                MessageKind::Append | MessageKind::Heartbeat | MessageKind::Snapshot => {
                    self.become_follower(m.term, m.from)
                }
                MessageKind::Vote => {
                    // Only granting a vote restarts the election timer (§5.2): a node with
                    // a stale log must not keep a better candidate from ever timing out.
                    let (elapsed, timeout) = (self.election_elapsed, self.randomized_timeout);
                    self.become_follower(m.term, 0);
                    self.election_elapsed = elapsed;
                    self.randomized_timeout = timeout;
                }
                _ => self.become_follower(m.term, 0),
            }
        } else if m.term < self.term {
            if matches!(m.kind, MessageKind::Append | MessageKind::Heartbeat) {
                // Tell a stale leader the new term (§5.1). Without this, a member whose
                // stale configuration does not include the leader (so it never sends the
                // leader a vote request) would stay unreachable forever.
                let r = self.msg(MessageKind::AppendResp, m.from);
                self.send(r);
            } else if m.kind == MessageKind::PreVote {
                let mut r = self.msg(MessageKind::PreVoteResp, m.from);
                r.reject = true;
                self.send(r);
            }
            return Ok(());
        }
        match m.kind {
            MessageKind::Vote | MessageKind::PreVote => {
                self.handle_vote(m);
                Ok(())
            }
            _ => match self.role {
                Role::Leader => self.step_leader(m),
                Role::Candidate | Role::PreCandidate => self.step_candidate(m),
                Role::Follower => self.step_follower(m),
            },
        }
    }

    fn step_forwarded(&mut self, m: Message) -> Result<(), Error> {
        match m.kind {
            MessageKind::Propose => {
                if self.role == Role::Leader {
                    // The follower cannot be told why a proposal was refused; it retries.
                    let _ = self.propose_entries(m.entries);
                }
                Ok(())
            }
            MessageKind::ReadIndex => {
                if self.role == Role::Leader {
                    let _ = self.leader_read_index(m.from, m.context);
                }
                Ok(())
            }
            MessageKind::TransferLeader => {
                if self.role == Role::Leader {
                    let _ = self.transfer_leader(m.index);
                }
                Ok(())
            }
            _ => Err(Error::InvalidMessage("term 0 on a non-forwarded message")),
        }
    }

    fn handle_vote(&mut self, m: Message) {
        let pre = m.kind == MessageKind::PreVote;
        let can_vote = self.vote == m.from
            || (self.vote == 0 && self.leader == 0)
            || (pre && m.term > self.term);
        #[cfg(feature = "mutants")]
        let up_to_date = self.mutant(crate::Mutant::VoteWithoutLogCheck)
            || self.log.is_up_to_date(m.index, m.log_term);
        #[cfg(not(feature = "mutants"))]
        let up_to_date = self.log.is_up_to_date(m.index, m.log_term);
        let kind = if pre {
            MessageKind::PreVoteResp
        } else {
            MessageKind::VoteResp
        };
        let mut r = self.msg(kind, m.from);
        if can_vote && up_to_date {
            r.term = m.term;
            if !pre {
                self.election_elapsed = 0;
                self.vote = m.from;
            }
        } else {
            r.reject = true;
        }
        self.send(r);
    }

    fn step_candidate(&mut self, m: Message) -> Result<(), Error> {
        match m.kind {
            MessageKind::Append | MessageKind::Heartbeat | MessageKind::Snapshot => {
                self.become_follower(m.term, m.from);
                self.step_follower(m)
            }
            MessageKind::VoteResp | MessageKind::PreVoteResp => {
                let mine = if self.role == Role::PreCandidate {
                    MessageKind::PreVoteResp
                } else {
                    MessageKind::VoteResp
                };
                if m.kind != mine {
                    return Ok(());
                }
                match self.poll(m.from, !m.reject) {
                    VoteResult::Won => {
                        let kind = if self.role == Role::PreCandidate {
                            MessageKind::PreVote
                        } else {
                            MessageKind::Vote
                        };
                        self.on_won(kind);
                    }
                    VoteResult::Lost => self.become_follower(self.term, 0),
                    VoteResult::Pending => {}
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn step_follower(&mut self, m: Message) -> Result<(), Error> {
        match m.kind {
            MessageKind::Append => {
                self.election_elapsed = 0;
                self.leader = m.from;
                self.handle_append(m)
            }
            MessageKind::Heartbeat => {
                self.election_elapsed = 0;
                self.leader = m.from;
                self.log.commit_to(m.commit);
                let mut r = self.msg(MessageKind::HeartbeatResp, m.from);
                r.index = m.index;
                r.context = m.context;
                self.send(r);
                Ok(())
            }
            MessageKind::Snapshot => {
                self.election_elapsed = 0;
                self.leader = m.from;
                self.handle_snapshot(m)
            }
            MessageKind::ReadIndexResp => {
                self.read_states.push(ReadState {
                    index: m.index,
                    request_ctx: m.context,
                });
                Ok(())
            }
            MessageKind::TimeoutNow => {
                self.hup(true);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn handle_append(&mut self, mut m: Message) -> Result<(), Error> {
        if m.entries.len() as u64 > MAX_INDEX {
            return Err(Error::InvalidMessage("too many entries"));
        }
        for (i, e) in m.entries.iter().enumerate() {
            if e.index != m.index + 1 + i as u64 || e.term > m.term {
                return Err(Error::InvalidMessage("append entries are not contiguous"));
            }
        }
        let committed = self.log.committed;
        if m.index < committed {
            let mut r = self.msg(MessageKind::AppendResp, m.from);
            r.index = committed;
            self.send(r);
            return Ok(());
        }
        if !self.log.match_term(m.index, m.log_term) {
            let (hint, hint_term) = self
                .log
                .find_conflict_by_term(m.index.min(self.log.last_index()), m.log_term);
            let mut r = self.msg(MessageKind::AppendResp, m.from);
            r.index = m.index;
            r.reject = true;
            r.reject_hint = hint;
            r.log_term = hint_term;
            self.send(r);
            return Ok(());
        }
        let last_new = m.index + m.entries.len() as u64;
        let conflict = self.log.find_conflict(&m.entries);
        if conflict != 0 {
            if conflict <= committed {
                return Err(Error::CommittedConflict(committed));
            }
            let start = (conflict - m.index - 1) as usize;
            let ents = m.entries.split_off(start);
            self.conf_log.retain(|(i, _)| *i < conflict);
            self.persisted = self.persisted.min(conflict - 1);
            for e in ents.iter().filter(|e| e.kind == EntryKind::ConfChange) {
                // A corrupt change folds to no change on every replica alike.
                let next = match ConfChange::decode(&e.data) {
                    Ok(cc) => self.conf_state().applied(&cc),
                    Err(_) => self.conf_state().clone(),
                };
                self.conf_log.push((e.index, next));
            }
            self.log.append(ents);
        }
        self.log.commit_to(m.commit.min(last_new));
        let mut r = self.msg(MessageKind::AppendResp, m.from);
        r.index = last_new;
        self.send(r);
        Ok(())
    }

    fn handle_snapshot(&mut self, m: Message) -> Result<(), Error> {
        let Some(snap) = m.snapshot else {
            return Err(Error::InvalidMessage("snapshot message without a snapshot"));
        };
        let (idx, term) = (snap.meta.index, snap.meta.term);
        if idx > self.log.committed {
            if self.log.match_term(idx, term) {
                // Our log already has it: the snapshot only tells us it is committed.
                self.log.commit_to(idx);
            } else {
                self.conf_log = vec![(idx, snap.meta.conf_state.clone())];
                // Until this snapshot is durable, nothing stored here is known to agree.
                self.persisted = 0;
                self.log.restore(snap);
            }
        }
        // In every case the log now agrees with the leader's up to the commit index.
        let mut r = self.msg(MessageKind::AppendResp, m.from);
        r.index = self.log.committed;
        self.send(r);
        Ok(())
    }

    // ---------------------------------------------------------------- leader

    fn step_leader(&mut self, m: Message) -> Result<(), Error> {
        match m.kind {
            MessageKind::AppendResp => {
                self.handle_append_resp(m);
                Ok(())
            }
            MessageKind::HeartbeatResp => {
                self.handle_heartbeat_resp(m);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn handle_append_resp(&mut self, m: Message) {
        let first_index = self.log.first_index();
        let last = self.log.last_index();
        let from = m.from;
        let hint = if m.reject && m.log_term > 0 {
            self.log.find_conflict_by_term(m.reject_hint, m.log_term).0
        } else {
            m.reject_hint
        };
        let Some(pr) = self.prs.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if m.reject {
            if pr.maybe_decr_to(m.index, hint) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.send_append(from, false);
            }
            return;
        }
        let was_paused = pr.is_paused();
        if !pr.maybe_update(m.index) {
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot => {
                if pr.matched + 1 >= first_index && pr.matched >= pr.pending_snapshot {
                    pr.become_probe();
                    pr.become_replicate();
                }
            }
            ProgressState::Replicate => pr.inflights.free_to(m.index),
        }
        let matched = pr.matched;
        if self.maybe_commit() {
            self.pending_bcast = true;
        } else if was_paused {
            self.send_append(from, false);
        }
        self.pending_bcast = true;
        if from == self.lead_transferee && matched == last {
            self.send_timeout_now(from);
        }
    }

    fn handle_heartbeat_resp(&mut self, m: Message) {
        let last = self.log.last_index();
        let Some(pr) = self.prs.get_mut(&m.from) else {
            return;
        };
        pr.recent_active = true;
        pr.lease_tick = pr.lease_tick.max(m.index);
        pr.probe_sent = false;
        if pr.state == ProgressState::Replicate && pr.inflights.full() {
            pr.inflights.free_first_one();
        }
        if pr.matched < last {
            // Sent even when empty: if an append was lost, the follower's rejection of
            // this one is what rewinds an optimistic `next`.
            self.send_append(m.from, true);
        }
        if !m.context.is_empty() {
            self.ack_read(m.from, &m.context);
        }
    }

    /// Sends entries (or a snapshot) to `to` if its progress allows. Returns whether a
    /// message was sent.
    fn send_append(&mut self, to: u64, send_if_empty: bool) -> bool {
        let last = self.log.last_index();
        let Some(pr) = self.prs.get(&to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let next = pr.next;
        let prev_term = self.log.term(next - 1);
        let ents = if next > last {
            Ok(Vec::new())
        } else {
            self.log.slice(next, last + 1, self.cfg.max_msg_bytes)
        };
        let (prev_term, ents) = match (prev_term, ents) {
            (Ok(t), Ok(e)) => (t, e),
            _ => return self.send_snapshot(to),
        };
        if ents.is_empty() && !send_if_empty && pr.state == ProgressState::Replicate {
            return false;
        }
        let committed = self.log.committed;
        let mut m = self.msg(MessageKind::Append, to);
        m.index = next - 1;
        m.log_term = prev_term;
        m.commit = committed;
        let Some(pr) = self.prs.get_mut(&to) else {
            return false;
        };
        match pr.state {
            ProgressState::Replicate => {
                if let Some(e) = ents.last() {
                    let bytes = ents.iter().map(Entry::size_bytes).sum();
                    pr.next = e.index + 1;
                    pr.inflights.add(e.index, bytes);
                }
            }
            ProgressState::Probe => pr.probe_sent = true,
            ProgressState::Snapshot => {}
        }
        m.entries = ents;
        self.send(m);
        true
    }

    fn send_snapshot(&mut self, to: u64) -> bool {
        let Some(pr) = self.prs.get(&to) else {
            return false;
        };
        if !pr.recent_active {
            return false;
        }
        let snap = match self.log.snapshot() {
            Ok(s) if s.meta.index > 0 => s,
            // Temporarily unavailable (or nothing yet): try again on the next heartbeat.
            _ => return false,
        };
        let ticks = self.ticks;
        if let Some(pr) = self.prs.get_mut(&to) {
            pr.become_snapshot(snap.meta.index, ticks);
        }
        let mut m = self.msg(MessageKind::Snapshot, to);
        m.snapshot = Some(snap);
        self.send(m);
        true
    }

    fn bcast_heartbeat(&mut self, ctx: Vec<u8>) {
        let ids: Vec<u64> = self
            .prs
            .keys()
            .copied()
            .filter(|&id| id != self.id)
            .collect();
        for to in ids {
            let matched = self.prs.get(&to).map_or(0, |p| p.matched);
            let mut m = self.msg(MessageKind::Heartbeat, to);
            // Never tell a follower to commit entries it may not have.
            m.commit = self.log.committed.min(matched);
            m.index = self.ticks;
            m.context = ctx.clone();
            self.send(m);
        }
    }

    fn send_timeout_now(&mut self, to: u64) {
        self.lease_disabled = true;
        let m = self.msg(MessageKind::TimeoutNow, to);
        self.send(m);
    }

    /// Recomputes the commit index from the voters' match indexes. Returns whether it moved.
    fn maybe_commit(&mut self) -> bool {
        let mut buf = std::mem::take(&mut self.quorum_buf);
        buf.clear();
        let conf = &self.conf_log[self.conf_log.len() - 1].1;
        for id in &conf.voters {
            buf.push(self.prs.get(id).map_or(0, |p| p.matched));
        }
        buf.sort_unstable_by(|a, b| b.cmp(a));
        let q = buf.get(buf.len() / 2).copied().unwrap_or(0);
        self.quorum_buf = buf;
        if q <= self.log.committed {
            return false;
        }
        let same_term = self.log.term(q).ok() == Some(self.term);
        #[cfg(feature = "mutants")]
        let same_term = same_term || self.mutant(crate::Mutant::CommitPriorTermByCount);
        // §5.4.2: only entries of the leader's own term are committed by counting replicas.
        if !same_term || !self.log.commit_to(q) {
            return false;
        }
        let (conf_index, removed) = {
            let (i, c) = &self.conf_log[self.conf_log.len() - 1];
            (*i, !c.is_voter(self.id))
        };
        if removed && self.log.committed >= conf_index {
            // The change removing this leader is committed: hand over by stepping down.
            self.become_follower(self.term, 0);
        }
        true
    }

    fn append_leader_entry(&mut self, mut e: Entry) {
        let idx = self.log.last_index() + 1;
        e.index = idx;
        e.term = self.term;
        self.uncommitted_bytes += e.size_bytes();
        if e.kind == EntryKind::ConfChange {
            let next = match ConfChange::decode(&e.data) {
                Ok(cc) => self.conf_state().applied(&cc),
                Err(_) => self.conf_state().clone(),
            };
            self.conf_log.push((idx, next));
            self.reconfigure_progress(idx);
        }
        self.log.push(e);
        #[cfg(feature = "mutants")]
        let count_now = self.mutant(crate::Mutant::CountUndurableSelf);
        #[cfg(not(feature = "mutants"))]
        let count_now = false;
        if let Some(me) = self.prs.get_mut(&self.id) {
            me.next = idx + 1;
            if count_now {
                me.matched = idx;
            }
        }
        self.pending_bcast = true;
    }

    fn reconfigure_progress(&mut self, last: u64) {
        let conf = self.conf_state().clone();
        self.prs
            .retain(|id, _| *id == self.id || conf.contains(*id));
        for id in conf.voters.iter().chain(conf.learners.iter()) {
            if !self.prs.contains_key(id) {
                let mut pr = self.new_progress(last);
                pr.recent_active = true;
                self.prs.insert(*id, pr);
            }
        }
        if self.lead_transferee != 0 && !conf.is_voter(self.lead_transferee) {
            self.lead_transferee = 0;
        }
    }

    fn flush(&mut self) {
        if self.role != Role::Leader || !self.pending_bcast {
            return;
        }
        self.pending_bcast = false;
        self.maybe_commit();
        if self.role != Role::Leader {
            return;
        }
        let commit_news = self.log.committed > self.last_bcast_commit;
        self.last_bcast_commit = self.log.committed;
        let ids: Vec<u64> = self
            .prs
            .keys()
            .copied()
            .filter(|&id| id != self.id)
            .collect();
        for to in ids {
            let mut sent = self.send_append(to, commit_news);
            let mut n = 1;
            while sent && n < self.cfg.max_inflight_msgs {
                sent = self.send_append(to, false);
                n += 1;
            }
        }
    }

    // ---------------------------------------------------------------- proposals

    /// Proposes one application command.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), Error> {
        self.propose_entries(vec![Entry {
            kind: EntryKind::Normal,
            data,
            ..Default::default()
        }])
    }

    /// Proposes several commands at once (cheaper than one `propose` each).
    pub fn propose_batch(&mut self, data: impl IntoIterator<Item = Vec<u8>>) -> Result<(), Error> {
        let ents = data
            .into_iter()
            .map(|d| Entry {
                kind: EntryKind::Normal,
                data: d,
                ..Default::default()
            })
            .collect();
        self.propose_entries(ents)
    }

    /// Proposes a membership change (one at a time; see the README).
    pub fn propose_conf_change(&mut self, cc: ConfChange) -> Result<(), Error> {
        self.propose_entries(vec![Entry {
            kind: EntryKind::ConfChange,
            data: cc.encode(),
            ..Default::default()
        }])
    }

    fn propose_entries(&mut self, ents: Vec<Entry>) -> Result<(), Error> {
        if ents.is_empty() {
            return Ok(());
        }
        match self.role {
            Role::Leader => {}
            Role::Follower if self.leader != 0 => {
                if !self.cfg.proposal_forwarding {
                    return Err(Error::NotLeader {
                        leader: self.leader,
                    });
                }
                let mut m = self.msg(MessageKind::Propose, self.leader);
                m.term = 0;
                m.entries = ents;
                self.send(m);
                return Ok(());
            }
            _ => return Err(Error::NoLeader),
        }
        if self.lead_transferee != 0 {
            return Err(Error::TransferInProgress {
                to: self.lead_transferee,
            });
        }
        let bytes: u64 = ents.iter().map(Entry::size_bytes).sum();
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes + bytes > self.cfg.max_uncommitted_bytes
        {
            return Err(Error::UncommittedBytesExceeded);
        }
        let ccs = ents
            .iter()
            .filter(|e| e.kind == EntryKind::ConfChange)
            .count();
        if ccs > 0 {
            if ccs > 1 {
                return Err(Error::ConfChangePending);
            }
            if self.conf_log[self.conf_log.len() - 1].0 > self.log.committed {
                return Err(Error::ConfChangePending);
            }
            // Single-server changes are only safe once this leader has committed an entry
            // of its own term (Ongaro, raft-dev 2015).
            if self.log.committed < self.term_start_index {
                return Err(Error::LeaderNotReady);
            }
            for e in ents.iter().filter(|e| e.kind == EntryKind::ConfChange) {
                let cc = ConfChange::decode(&e.data)?;
                self.conf_state().check(&cc)?;
            }
        }
        for e in ents {
            self.append_leader_entry(e);
        }
        Ok(())
    }

    // ---------------------------------------------------------------- reads

    /// Requests a linearizable read. The answer arrives as a [`ReadState`] in a later
    /// `Ready` (`request_ctx` must be unique per request): serve the read once the applied
    /// index reaches its `index`.
    pub fn read_index(&mut self, ctx: Vec<u8>) -> Result<(), Error> {
        match self.role {
            Role::Leader => self.leader_read_index(0, ctx),
            Role::Follower if self.leader != 0 => {
                let mut m = self.msg(MessageKind::ReadIndex, self.leader);
                m.term = 0;
                m.context = ctx;
                self.send(m);
                Ok(())
            }
            _ => Err(Error::NoLeader),
        }
    }

    fn leader_read_index(&mut self, from: u64, ctx: Vec<u8>) -> Result<(), Error> {
        // Until its no-op commits, the leader does not know the true commit index.
        if self.log.committed < self.term_start_index {
            return Err(Error::LeaderNotReady);
        }
        let index = self.log.committed;
        #[cfg(feature = "mutants")]
        let skip_round = self.mutant(crate::Mutant::ReadIndexWithoutQuorum);
        #[cfg(not(feature = "mutants"))]
        let skip_round = false;
        if self.quorum() == 1 && self.promotable() || self.lease_valid() || skip_round {
            self.answer_read(from, ctx, index);
            return Ok(());
        }
        if self.reads.len() >= self.cfg.max_pending_reads {
            return Err(Error::TooManyPendingReads);
        }
        let acks = vec![self.id];
        self.reads.push_back(ReadRequest {
            ctx: ctx.clone(),
            index,
            from,
            acks,
        });
        self.bcast_heartbeat(ctx);
        Ok(())
    }

    fn lease_valid(&mut self) -> bool {
        if self.cfg.read_only != ReadOnlyOption::LeaseBased
            || self.lead_transferee != 0
            || self.lease_disabled
        {
            return false;
        }
        let mut buf = std::mem::take(&mut self.quorum_buf);
        buf.clear();
        for id in &self.conf_log[self.conf_log.len() - 1].1.voters {
            let t = if *id == self.id {
                self.ticks
            } else {
                self.prs.get(id).map_or(0, |p| p.lease_tick)
            };
            buf.push(t);
        }
        buf.sort_unstable_by(|a, b| b.cmp(a));
        let since = buf.get(buf.len() / 2).copied().unwrap_or(0);
        self.quorum_buf = buf;
        // Each voter in the quorum refuses votes for an election timeout after it heard
        // the heartbeat sent at `since`; keep a tick of margin for tick skew.
        since > 0 && self.ticks + 1 < since + self.cfg.election_timeout_ticks
    }

    fn answer_read(&mut self, from: u64, ctx: Vec<u8>, index: u64) {
        if from == 0 || from == self.id {
            self.read_states.push(ReadState {
                index,
                request_ctx: ctx,
            });
        } else {
            let mut m = self.msg(MessageKind::ReadIndexResp, from);
            m.index = index;
            m.context = ctx;
            self.send(m);
        }
    }

    fn ack_read(&mut self, from: u64, ctx: &[u8]) {
        let Some(pos) = self.reads.iter().position(|r| r.ctx == ctx) else {
            return;
        };
        if !self.conf_state().is_voter(from) {
            return;
        }
        let q = self.quorum();
        let voters = &self.conf_log[self.conf_log.len() - 1].1;
        let req = &mut self.reads[pos];
        if !req.acks.contains(&from) {
            req.acks.push(from);
        }
        let acked = req.acks.iter().filter(|id| voters.is_voter(**id)).count();
        if acked < q {
            return;
        }
        // A heartbeat round confirms leadership for every request queued before it.
        for r in self.reads.drain(..=pos).collect::<Vec<_>>() {
            self.answer_read(r.from, r.ctx, r.index);
        }
    }

    // ---------------------------------------------------------------- admin

    /// Asks the leader to hand leadership to `to` (forwarded when called on a follower).
    pub fn transfer_leader(&mut self, to: u64) -> Result<(), Error> {
        match self.role {
            Role::Leader => {}
            Role::Follower if self.leader != 0 => {
                let mut m = self.msg(MessageKind::TransferLeader, self.leader);
                m.term = 0;
                m.index = to;
                self.send(m);
                return Ok(());
            }
            _ => return Err(Error::NoLeader),
        }
        if to == self.id || to == self.lead_transferee {
            return Ok(());
        }
        if !self.conf_state().is_voter(to) {
            return Err(Error::InvalidTransferTarget(to));
        }
        self.lead_transferee = to;
        self.election_elapsed = 0;
        let caught_up = self
            .prs
            .get(&to)
            .is_some_and(|p| p.matched == self.log.last_index());
        if caught_up {
            self.send_timeout_now(to);
        } else {
            self.send_append(to, false);
        }
        Ok(())
    }

    /// Tells the leader a message to `id` could not be delivered: stop streaming to it.
    pub fn report_unreachable(&mut self, id: u64) {
        if let Some(pr) = self.prs.get_mut(&id) {
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
        }
    }

    /// Tells the leader whether the snapshot sent to `id` was delivered.
    pub fn report_snapshot(&mut self, id: u64, ok: bool) {
        if let Some(pr) = self.prs.get_mut(&id) {
            if pr.state != ProgressState::Snapshot {
                return;
            }
            if !ok {
                pr.pending_snapshot = 0;
            }
            pr.become_probe();
            // Wait for the follower's answer (or a heartbeat) before probing.
            pr.probe_sent = true;
        }
    }

    /// Records that the application applied a committed conf-change entry; returns the
    /// configuration as of that entry (for the application's snapshots). Quorums already
    /// use the configuration from the moment the entry was appended.
    pub fn apply_conf_change(&mut self, cc: &ConfChange) -> ConfState {
        self.applied_conf = self.applied_conf.applied(cc);
        self.applied_conf.clone()
    }

    // ---------------------------------------------------------------- ready

    /// Whether [`RawNode::ready`] has anything to hand out.
    pub fn has_ready(&self) -> bool {
        if self.awaiting_advance {
            return false;
        }
        self.soft_state() != self.prev_soft
            || self.hard_state() != self.prev_hard
            || self.pending_bcast
            || self.log.has_unstable()
            || !self.msgs.is_empty()
            || !self.msgs_after_persist.is_empty()
            || !self.read_states.is_empty()
            || self.log.has_next_committed(self.log.applied)
    }

    /// Takes the pending work. Call [`RawNode::advance`] with it once handled; until then
    /// `has_ready` is false and `ready` returns an empty `Ready`.
    pub fn ready(&mut self) -> Ready {
        if self.awaiting_advance {
            return Ready::default();
        }
        self.flush();
        self.awaiting_advance = true;
        let mut rd = Ready::default();
        let soft = self.soft_state();
        if soft != self.prev_soft {
            rd.soft_state = Some(soft);
            self.prev_soft = soft;
        }
        let hard = self.hard_state();
        // A commit index beyond the log would let the application apply entries it does
        // not have (etcd's raft log panics on the same).
        assert!(
            hard.commit <= self.log.last_index(),
            "commit index {} is beyond the last index {}",
            hard.commit,
            self.log.last_index()
        );
        // Term and vote of the previous Ready are durable (it was advanced); if this Ready
        // changes them, nothing may be said at the new term until it is durable too. (A
        // single voter wins its election within one step, before persisting its term.)
        let term_durable = (hard.term, hard.vote) == self.durable_term_vote;
        rd.term_vote = (hard.term, hard.vote);
        if hard != self.prev_hard {
            rd.hard_state = Some(hard);
            self.prev_hard = hard;
        }
        if self.log.unstable.snapshot.is_some() && !self.log.unstable.snapshot_in_progress {
            self.log.unstable.snapshot_in_progress = true;
            rd.snapshot = self.log.unstable.snapshot.clone();
            rd.snapshot_meta = rd
                .snapshot
                .as_ref()
                .map(|s| (s.meta.index, s.meta.term, s.meta.conf_state.clone()));
        }
        rd.entries = self.log.take_unstable_entries();
        rd.last_entry = rd.entries.last().map(|e| (e.index, e.term));
        if self.log.has_next_committed(self.log.applied) {
            let lo = self.log.applied + 1;
            if let Ok(ents) = self
                .log
                .slice(lo, self.log.committed + 1, self.cfg.max_apply_bytes)
            {
                let bytes: u64 = ents.iter().map(Entry::size_bytes).sum();
                self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(bytes);
                rd.last_committed = ents.last().map(|e| e.index);
                rd.committed_entries = ents;
            }
        }
        if term_durable {
            rd.messages = std::mem::take(&mut self.msgs);
            rd.persisted_messages = std::mem::take(&mut self.msgs_after_persist);
        } else {
            rd.persisted_messages = std::mem::take(&mut self.msgs);
            rd.persisted_messages.append(&mut self.msgs_after_persist);
        }
        rd.read_states = std::mem::take(&mut self.read_states);
        rd
    }

    /// Acknowledges that `rd` was handled as the [`Ready`] contract says.
    pub fn advance(&mut self, rd: Ready) {
        // `advance` declares this Ready's writes durable, and with them everything before
        // it: that is only true once every handed-off Ready was reported durable. A driver
        // whose drain passes early (counting a Ready finished when its durability is merely
        // awaited) would otherwise install a snapshot or a new term ahead of older writes.
        assert!(
            self.handed_seq == self.persisted_seq,
            "advance while {} handed-off Ready(s) are not yet on_persisted",
            self.handed_seq - self.persisted_seq
        );
        let p = self.advance_unpersisted(rd);
        self.on_persisted(p);
    }

    /// Pipelined persistence: acknowledges `rd` once its writes were *handed* to storage,
    /// in order and readable through [`Storage`], but before they are durable, so that the
    /// next `Ready` (and the next write) can start while this one is on disk. Call
    /// [`RawNode::on_persisted`] with the result once they are durable, in the order the
    /// `Ready`s were taken; until then this replica does not count those entries towards a
    /// commit and holds back messages at a term or vote not yet durable.
    ///
    /// The rest of the contract is unchanged: `persisted_messages` are sent, and
    /// `committed_entries` and `read_states` handled, only after this `Ready`'s writes are
    /// durable. A `Ready` carrying a snapshot must go through [`RawNode::advance`] after the
    /// snapshot and every earlier write are durable.
    pub fn advance_unpersisted(&mut self, rd: Ready) -> Unpersisted {
        self.awaiting_advance = false;
        if let Some((idx, term, conf)) = &rd.snapshot_meta {
            let (idx, term) = (*idx, *term);
            if self.log.match_term(idx, term) {
                self.persisted = self.persisted.max(idx);
            }
            self.log.stable_snap_to(idx);
            if idx > self.log.applied {
                self.log.applied = idx;
                self.applied_conf = conf.clone();
            }
        }
        if let Some(idx) = rd.last_committed {
            self.log.applied_to(idx);
        }
        if let Some((idx, term)) = rd.last_entry {
            self.log.stable_to(idx, term);
        }
        self.handed_seq += 1;
        #[cfg(feature = "mutants")]
        let rd = if self.mutant(crate::Mutant::PersistOnHandOff) {
            self.mark_persisted(rd.last_entry, rd.term_vote);
            let mut rd = rd;
            rd.last_entry = None;
            rd
        } else {
            rd
        };
        // Keep only the configurations that a truncation could still fall back to.
        let floor = self.log.applied.min(self.log.committed);
        let keep_from = self
            .conf_log
            .iter()
            .rposition(|(i, _)| *i <= floor)
            .unwrap_or(0);
        if keep_from > 0 {
            self.conf_log.drain(..keep_from);
        }
        Unpersisted {
            last_entry: rd.last_entry,
            term_vote: rd.term_vote,
            seq: self.handed_seq,
        }
    }

    /// Reports that the writes of a `Ready` let go by [`RawNode::advance_unpersisted`] (and
    /// of every `Ready` before it) are durable.
    pub fn on_persisted(&mut self, p: Unpersisted) {
        // Durability of a later write says nothing about an earlier one still in flight:
        // out of order, `persisted` would count entries that may yet be lost.
        assert!(
            p.seq == self.persisted_seq + 1,
            "on_persisted out of order: got Ready #{} after #{} (handed off: {})",
            p.seq,
            self.persisted_seq,
            self.handed_seq
        );
        self.persisted_seq = p.seq;
        self.mark_persisted(p.last_entry, p.term_vote);
    }

    fn mark_persisted(&mut self, last_entry: Option<(u64, u64)>, term_vote: (u64, u64)) {
        if let Some((idx, term)) = last_entry {
            // Written entries that were since replaced by a conflicting suffix do not count.
            if self.log.match_term(idx, term) {
                self.persisted = self.persisted.max(idx);
            }
        }
        // Terms never go back, and within a term the vote is only ever set once.
        if term_vote.0 >= self.durable_term_vote.0 {
            self.durable_term_vote = term_vote;
        }
        if self.role == Role::Leader {
            let persisted = self.persisted.min(self.log.last_index());
            if let Some(me) = self.prs.get_mut(&self.id) {
                if persisted > me.matched {
                    me.matched = persisted;
                    self.pending_bcast = true;
                }
            }
        }
    }
}

/// Each broken invariant the core asserts crashes instead of corrupting state.
#[cfg(test)]
mod invariant_tests {
    use super::*;
    use crate::{ConfState, MemStorage};

    /// A sole voter that won its election (term 2) and has `n` handed-off Readys for
    /// proposals outstanding.
    fn leader_with_hand_offs(n: usize) -> (RawNode<MemStorage>, Vec<Unpersisted>) {
        let st = MemStorage::new_with_conf_state(ConfState::with_voters([1]));
        let mut node = RawNode::new(&Config::new(1), st, 1).unwrap();
        node.campaign();
        let rd = node.ready();
        node.storage_mut().append(&rd.entries).unwrap();
        node.advance(rd);
        let mut ups = Vec::new();
        for i in 0..n {
            node.propose(vec![i as u8]).unwrap();
            let rd = node.ready();
            node.storage_mut().append(&rd.entries).unwrap();
            ups.push(node.advance_unpersisted(rd));
        }
        (node, ups)
    }

    #[test]
    fn in_order_on_persisted_is_fine() {
        let (mut node, ups) = leader_with_hand_offs(2);
        for p in ups {
            node.on_persisted(p);
        }
        let rd = node.ready();
        node.advance(rd);
    }

    #[test]
    #[should_panic(expected = "on_persisted out of order")]
    fn on_persisted_out_of_order_panics() {
        let (mut node, ups) = leader_with_hand_offs(2);
        node.on_persisted(ups[1]);
    }

    #[test]
    #[should_panic(expected = "on_persisted out of order")]
    fn on_persisted_twice_panics() {
        let (mut node, ups) = leader_with_hand_offs(1);
        node.on_persisted(ups[0]);
        node.on_persisted(ups[0]);
    }

    #[test]
    #[should_panic(expected = "advance while 1 handed-off")]
    fn advance_with_hand_offs_outstanding_panics() {
        let (mut node, _ups) = leader_with_hand_offs(1);
        node.tick();
        let rd = node.ready();
        node.advance(rd);
    }

    #[test]
    #[should_panic(expected = "beyond the last index")]
    fn commit_beyond_last_index_panics() {
        let (mut node, _) = leader_with_hand_offs(0);
        node.log.committed = node.log.last_index() + 1;
        let _ = node.ready();
    }
}
