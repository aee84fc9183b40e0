//! The driver's rules, as pure state machines: how each [`Ready`] is handled (handed off to
//! a pipelined log, or whole after a drain), how reads are batched into ReadIndex requests,
//! and when to snapshot.
//!
//! They live here, not in the server, so that the server and the simulator run the very
//! same rules: a rule the simulator checks is then the rule production runs. Nothing here
//! does I/O or reads a clock; times are passed in by the caller.
//!
//! The handling of Readys is split between two tasks in the server:
//! - the *driver* calls [`Pipeline::next`] and performs the [`Step`] it returns;
//! - the *completer* calls [`Pipeline::begin_finish`] to learn which write to wait for,
//!   waits until it is durable, then calls [`Pipeline::finish`] and performs the
//!   [`Finished`] work.
//!
//! The invariant that matters: a `Ready` that cannot be handed off (it installs a snapshot
//! or changes term or vote) is handled only once every handed-off `Ready` is *finished*
//! (durable and reported with `on_persisted`), not merely picked up by the completer.

use std::collections::{BTreeMap, VecDeque};

use crate::raw_node::{RawNode, Ready, Unpersisted};
use crate::storage::Storage;
use crate::types::{Entry, Message, ReadState, SoftState};

/// Tunables of a [`Pipeline`].
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Readys handed off and not yet finished, at most (>= 1). Enough to keep the disk busy
    /// (the log coalesces whatever queues behind a write into one batch); the server uses 8.
    pub in_flight_readies_max: usize,
    /// Planted bug for the simulator (feature `mutants` only).
    #[cfg(feature = "mutants")]
    #[doc(hidden)]
    pub mutant: crate::Mutant,
}

impl PipelineConfig {
    /// A configuration with `in_flight_readies_max` (raised to 1 if 0).
    pub fn new(in_flight_readies_max: usize) -> Self {
        PipelineConfig {
            in_flight_readies_max: in_flight_readies_max.max(1),
            #[cfg(feature = "mutants")]
            mutant: crate::Mutant::None,
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig::new(8)
    }
}

/// What the driver does with the next Ready.
#[derive(Debug)]
pub enum Step {
    /// Send `messages` now; write `entries` to the log now (truncating a conflicting suffix
    /// first); the core has already been advanced with advance_unpersisted. Call
    /// `Pipeline::finish(ticket)` once the write is durable.
    HandOff {
        ticket: u64,
        soft_state: Option<SoftState>,
        messages: Vec<Message>,
        entries: Vec<Entry>,
    },
    /// Handle the whole Ready (send messages, install snapshot, write entries and hard
    /// state, wait durable, send persisted_messages, apply, then `RawNode::advance(rd)`,
    /// then `Pipeline::whole_done()`). Returned only when nothing handed off is unfinished.
    Whole(Box<Ready>),
}

/// What may happen once a handed-off Ready's write is durable, in this order: send
/// `persisted_messages`, apply `committed_entries`, then serve `read_states` once applied.
#[derive(Debug, Default)]
pub struct Finished {
    pub persisted_messages: Vec<Message>,
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
}

/// A handed-off Ready: what its `finish` needs.
#[derive(Debug)]
struct InFlight {
    ticket: u64,
    unpersisted: Unpersisted,
    finished: Finished,
}

/// Decides, Ready by Ready, between handing off and handling whole, and keeps the handed-off
/// ones in order until they are finished. See the module docs.
#[derive(Debug)]
pub struct Pipeline {
    cfg: PipelineConfig,
    /// Handed off and not finished, oldest first. The first `picked` of them are being
    /// waited on by the completer.
    in_flight: VecDeque<InFlight>,
    picked: usize,
    /// A Ready that cannot be handed off, waiting for the drain (`unfinished() == 0`).
    held: Option<Box<Ready>>,
    /// A Whole step was returned and `whole_done` not yet called.
    whole_outstanding: bool,
    next_ticket: u64,
    /// Term and vote the driver has written (or is writing, for the outstanding Whole): a
    /// Ready that changes them must be handled whole, because nothing may be said at a new
    /// term or vote before it is durable.
    persisted_term: u64,
    persisted_vote: u64,
}

impl Pipeline {
    /// A pipeline for a node whose durable hard state has `persisted_term` and
    /// `persisted_vote` (what the node was booted from).
    pub fn new(cfg: PipelineConfig, persisted_term: u64, persisted_vote: u64) -> Self {
        assert!(
            cfg.in_flight_readies_max >= 1,
            "in_flight_readies_max must be at least 1"
        );
        Pipeline {
            cfg,
            in_flight: VecDeque::new(),
            picked: 0,
            held: None,
            whole_outstanding: false,
            next_ticket: 1,
            persisted_term,
            persisted_vote,
        }
    }

    /// The count the bound and the drain use. Normally every Ready not yet finished; the
    /// planted bug counts only those the completer has not picked up (the bug of 53f32cb).
    fn draining_count(&self) -> usize {
        #[cfg(feature = "mutants")]
        if self.cfg.mutant == crate::Mutant::DrainOnDequeue {
            return self.in_flight.len() - self.picked;
        }
        self.in_flight.len()
    }

    /// Handed off and not finished (queued + being finished).
    pub fn unfinished(&self) -> usize {
        self.draining_count()
    }

    /// Term and vote last handed to the driver for writing.
    /// Whether a Ready that cannot be handed off waits for the drain: the driver then waits
    /// for a completion before asking again.
    pub fn is_holding(&self) -> bool {
        self.held.is_some()
    }

    pub fn persisted_term_vote(&self) -> (u64, u64) {
        (self.persisted_term, self.persisted_vote)
    }

    /// Whether `rd` may go through `advance_unpersisted`: the core requires a snapshot to
    /// go through `advance`, and a term or vote change must be durable before anything else
    /// happens at the new term (the whole path waits for it before sending).
    fn can_hand_off(&self, rd: &Ready) -> bool {
        let same_term_vote = rd
            .hard_state
            .is_none_or(|hs| (hs.term, hs.vote) == (self.persisted_term, self.persisted_vote));
        rd.snapshot.is_none() && same_term_vote
    }

    /// The next step, or None (nothing ready, in-flight bound reached, a Whole held until
    /// the drain completes, or a Whole outstanding). Takes `node.ready()` itself. A Ready
    /// that cannot be handed off is held inside until unfinished()==0.
    pub fn next<S: Storage>(&mut self, node: &mut RawNode<S>) -> Option<Step> {
        if self.whole_outstanding {
            return None;
        }
        if self.held.is_some() {
            return self.release_held();
        }
        if self.draining_count() >= self.cfg.in_flight_readies_max || !node.has_ready() {
            return None;
        }
        let mut rd = node.ready();
        if !self.can_hand_off(&rd) {
            self.held = Some(Box::new(rd));
            return self.release_held();
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let soft_state = rd.soft_state;
        let messages = std::mem::take(&mut rd.messages);
        let entries = std::mem::take(&mut rd.entries);
        // The write of the commit index alone is skipped: it is volatile in raft (a
        // restarted node relearns it), so a commit change does not cost a hard-state write.
        let finished = Finished {
            persisted_messages: std::mem::take(&mut rd.persisted_messages),
            committed_entries: std::mem::take(&mut rd.committed_entries),
            read_states: std::mem::take(&mut rd.read_states),
        };
        let unpersisted = node.advance_unpersisted(rd);
        self.in_flight.push_back(InFlight {
            ticket,
            unpersisted,
            finished,
        });
        Some(Step::HandOff {
            ticket,
            soft_state,
            messages,
            entries,
        })
    }

    /// Returns the held Ready as a Whole step once everything handed off before it is
    /// finished: its snapshot install or term change must not run ahead of an earlier
    /// write's `on_persisted` or apply.
    fn release_held(&mut self) -> Option<Step> {
        if self.draining_count() > 0 {
            return None;
        }
        let rd = self.held.take()?;
        if let Some(hs) = rd.hard_state {
            // The driver writes it as part of handling the Whole step.
            self.persisted_term = hs.term;
            self.persisted_vote = hs.vote;
        }
        self.whole_outstanding = true;
        Some(Step::Whole(rd))
    }

    /// The completer starts waiting for the oldest handed-off ticket's durability: returns
    /// that ticket (FIFO).
    pub fn begin_finish(&mut self) -> Option<u64> {
        let f = self.in_flight.get(self.picked)?;
        self.picked += 1;
        Some(f.ticket)
    }

    /// The write of `ticket` (which must be the one begin_finish returned, in order) is
    /// durable: calls node.on_persisted and returns what may now happen. Only now does
    /// unfinished() drop.
    pub fn finish<S: Storage>(&mut self, node: &mut RawNode<S>, ticket: u64) -> Finished {
        assert!(
            self.picked > 0,
            "finish({ticket}) without begin_finish: durability is reported in ticket order"
        );
        let f = self
            .in_flight
            .pop_front()
            .expect("picked > 0 implies a ticket in flight");
        assert_eq!(
            f.ticket, ticket,
            "finish out of order: ticket {ticket} finished before ticket {}",
            f.ticket
        );
        self.picked -= 1;
        node.on_persisted(f.unpersisted);
        f.finished
    }

    /// The Whole step returned last has been handled and advanced.
    pub fn whole_done(&mut self) {
        assert!(
            self.whole_outstanding,
            "whole_done without an outstanding Whole step"
        );
        self.whole_outstanding = false;
    }

    /// The work of a handed-off ticket not yet finished, for a test driver that plants the
    /// bug of acting on it early (sending acknowledgements or applying before the write is
    /// durable). A correct driver never calls this.
    #[doc(hidden)]
    pub fn unfinished_work_mut(&mut self, ticket: u64) -> Option<&mut Finished> {
        self.in_flight
            .iter_mut()
            .find(|f| f.ticket == ticket)
            .map(|f| &mut f.finished)
    }
}

/// Something waiting for a read; see [`ReadBatcher`].
pub trait Waiter {
    /// Nobody waits for the answer any more (e.g. a oneshot sender whose receiver is gone).
    fn is_abandoned(&self) -> bool;
}

/// Read batching (ReadIndex): reads that arrive together share one read index request.
///
/// A read goes through three stages: unissued (waiting for the next [`ReadBatcher::issue`]),
/// issued (its batch's read index requested under a context), applying (its read index is
/// known; answered once the applied index reaches it).
#[derive(Debug)]
pub struct ReadBatcher<W> {
    node_id: u64,
    boot: u64,
    max_pending: usize,
    counter: u64,
    unissued: Vec<W>,
    /// By context counter: (issued at, waiters).
    issued: BTreeMap<u64, (u64, Vec<W>)>,
    /// By read index.
    applying: BTreeMap<u64, Vec<W>>,
    len: usize,
}

impl<W: Waiter> ReadBatcher<W> {
    /// `boot` must differ between starts of the process: the leader matches
    /// acknowledgements to requests by context bytes, so contexts must be unique across
    /// nodes and restarts.
    pub fn new(node_id: u64, boot: u64, max_pending: usize) -> Self {
        ReadBatcher {
            node_id,
            boot,
            max_pending,
            counter: 0,
            unissued: Vec::new(),
            issued: BTreeMap::new(),
            applying: BTreeMap::new(),
            len: 0,
        }
    }

    /// Reads waiting, in every stage.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues a read for the next `issue`; gives it back when `max_pending` are waiting.
    pub fn push(&mut self, w: W) -> Result<(), W> {
        if self.len >= self.max_pending {
            return Err(w);
        }
        self.unissued.push(w);
        self.len += 1;
        Ok(())
    }

    fn ctx_bytes(&self, counter: u64) -> Vec<u8> {
        let mut ctx = Vec::with_capacity(24);
        ctx.extend_from_slice(&self.node_id.to_le_bytes());
        ctx.extend_from_slice(&self.boot.to_le_bytes());
        ctx.extend_from_slice(&counter.to_le_bytes());
        ctx
    }

    /// The counter of a context this batcher issued, or None for anyone else's.
    fn own_ctx(&self, bytes: &[u8]) -> Option<u64> {
        let word = |i: usize| {
            bytes
                .get(i * 8..i * 8 + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_le_bytes)
        };
        if bytes.len() != 24 || word(0)? != self.node_id || word(1)? != self.boot {
            return None;
        }
        word(2)
    }

    /// Moves every unissued read under a new context; returns its bytes (node_id ‖ boot ‖
    /// counter, 24 bytes LE) to pass to RawNode::read_index. None if nothing is waiting.
    pub fn issue(&mut self, now_ms: u64) -> Option<Vec<u8>> {
        if self.unissued.is_empty() {
            return None;
        }
        self.counter += 1;
        let batch = std::mem::take(&mut self.unissued);
        self.issued.insert(self.counter, (now_ms, batch));
        Some(self.ctx_bytes(self.counter))
    }

    /// read_index refused the context just issued: its waiters, to be failed.
    pub fn issue_failed(&mut self, ctx: &[u8]) -> Vec<W> {
        let Some(c) = self.own_ctx(ctx) else {
            return Vec::new();
        };
        let ws = self.issued.remove(&c).map(|(_, ws)| ws).unwrap_or_default();
        self.len -= ws.len();
        ws
    }

    /// Read states from a Ready (others' contexts ignored).
    pub fn on_read_states(&mut self, states: &[ReadState]) {
        for rs in states {
            let Some(c) = self.own_ctx(&rs.request_ctx) else {
                continue;
            };
            let Some((_, ws)) = self.issued.remove(&c) else {
                continue;
            };
            self.applying.entry(rs.index).or_default().extend(ws);
        }
    }

    /// Waiters whose read index is <= applied: answer them.
    pub fn applied(&mut self, applied: u64) -> Vec<W> {
        self.applied_with_index(applied)
            .into_iter()
            .map(|(_, w)| w)
            .collect()
    }

    /// Like [`ReadBatcher::applied`], with each waiter's read index (for checkers).
    pub fn applied_with_index(&mut self, applied: u64) -> Vec<(u64, W)> {
        let mut out = Vec::new();
        while let Some(e) = self.applying.first_entry() {
            if *e.key() > applied {
                break;
            }
            let index = *e.key();
            out.extend(e.remove().into_iter().map(|w| (index, w)));
        }
        self.len -= out.len();
        out
    }

    /// Drops issued batches older than timeout_ms (lost ReadIndex: a leader change, a
    /// dropped message; nothing else would ever remove them) and abandoned waiters.
    pub fn sweep(&mut self, now_ms: u64, timeout_ms: u64) {
        self.issued
            .retain(|_, (at, _)| now_ms.saturating_sub(*at) < timeout_ms);
        self.unissued.retain(|w| !w.is_abandoned());
        for (_, ws) in self.issued.values_mut() {
            ws.retain(|w| !w.is_abandoned());
        }
        self.issued.retain(|_, (_, ws)| !ws.is_empty());
        self.applying.retain(|_, ws| {
            ws.retain(|w| !w.is_abandoned());
            !ws.is_empty()
        });
        self.len = self.unissued.len()
            + self.issued.values().map(|(_, ws)| ws.len()).sum::<usize>()
            + self.applying.values().map(Vec::len).sum::<usize>();
    }
}

/// When to snapshot: every `every_entries` applied entries, or after as many entries as the
/// last snapshot's cost (keys) if larger, or every `every_bytes` applied bytes; never while
/// one is being written.
///
/// A snapshot costs O(keys) of the driver's time, so the next one waits for at least as many
/// entries as the last one held keys: amortized O(1) per write however large the state
/// grows (a fixed interval would re-serialize a big state over and over).
#[derive(Debug, Clone)]
pub struct SnapshotSchedule {
    every_entries: u64,
    every_bytes: u64,
    last_index: u64,
    last_cost: u64,
    bytes_since: u64,
    writing: bool,
}

impl SnapshotSchedule {
    /// `last_index` and `last_cost`: the snapshot the node started from.
    pub fn new(every_entries: u64, every_bytes: u64, last_index: u64, last_cost: u64) -> Self {
        SnapshotSchedule {
            every_entries,
            every_bytes,
            last_index,
            last_cost,
            bytes_since: 0,
            writing: false,
        }
    }

    /// Entry bytes were applied.
    pub fn applied_bytes(&mut self, n: u64) {
        self.bytes_since = self.bytes_since.saturating_add(n);
    }

    /// Whether a snapshot at `applied` should be started now.
    pub fn due(&self, applied: u64) -> bool {
        if self.writing || applied <= self.last_index {
            return false;
        }
        let interval = self.every_entries.max(self.last_cost);
        applied >= self.last_index.saturating_add(interval) || self.bytes_since >= self.every_bytes
    }

    /// A snapshot at `index` is being written.
    pub fn started(&mut self, index: u64, cost: u64) {
        assert!(
            !self.writing,
            "snapshot at {index} started while one is written"
        );
        self.writing = true;
        self.last_cost = cost;
        self.bytes_since = 0;
    }

    /// It is durable (last_index = max: a leader's snapshot may have been installed meanwhile).
    pub fn finished(&mut self, index: u64) {
        self.writing = false;
        self.last_index = self.last_index.max(index);
    }

    /// A leader's snapshot was installed: the state restarts from it.
    pub fn installed(&mut self, index: u64, cost: u64) {
        self.last_index = self.last_index.max(index);
        self.last_cost = cost;
        self.bytes_since = 0;
    }

    /// Index of the newest snapshot taken or installed.
    pub fn last_index(&self) -> u64 {
        self.last_index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConfState, Config, MemStorage, MessageKind};

    fn node(id: u64, voters: &[u64]) -> RawNode<MemStorage> {
        let st = MemStorage::new_with_conf_state(ConfState::with_voters(voters.iter().copied()));
        RawNode::new(&Config::new(id), st, 7).unwrap()
    }

    /// Handles a Whole step the way the contract says (no messages are delivered here).
    fn handle_whole(n: &mut RawNode<MemStorage>, p: &mut Pipeline, rd: Box<Ready>) {
        let st = n.storage_mut();
        if let Some(s) = &rd.snapshot {
            st.apply_snapshot(s.clone()).unwrap();
        }
        st.append(&rd.entries).unwrap();
        if let Some(hs) = rd.hard_state {
            st.set_hard_state(hs);
        }
        n.advance(*rd);
        p.whole_done();
    }

    fn expect_hand_off(s: Option<Step>) -> (u64, Vec<Entry>) {
        match s {
            Some(Step::HandOff {
                ticket, entries, ..
            }) => (ticket, entries),
            other => panic!("expected a hand-off, got {other:?}"),
        }
    }

    /// A single voter elected and its first Readys handled: a leader ready for proposals.
    fn leader(max: usize) -> (RawNode<MemStorage>, Pipeline) {
        let mut n = node(1, &[1]);
        let mut p = Pipeline::new(PipelineConfig::new(max), 1, 0);
        n.campaign();
        match p.next(&mut n) {
            // Term 2, vote 1: a term/vote change goes whole.
            Some(Step::Whole(rd)) => {
                assert_eq!(rd.hard_state.map(|h| (h.term, h.vote)), Some((2, 1)));
                handle_whole(&mut n, &mut p, rd);
            }
            other => panic!("expected whole, got {other:?}"),
        }
        assert_eq!(p.persisted_term_vote(), (2, 1));
        // Drain whatever the election left (the no-op entry) through the pipeline.
        while let Some(s) = p.next(&mut n) {
            let (t, ents) = expect_hand_off(Some(s));
            n.storage_mut().append(&ents).unwrap();
            assert_eq!(p.begin_finish(), Some(t));
            p.finish(&mut n, t);
        }
        assert_eq!(p.unfinished(), 0);
        (n, p)
    }

    #[test]
    fn ordinary_readys_are_handed_off_with_fifo_tickets() {
        let (mut n, mut p) = leader(8);
        n.propose(b"a".to_vec()).unwrap();
        let (t1, e1) = expect_hand_off(p.next(&mut n));
        n.storage_mut().append(&e1).unwrap();
        n.propose(b"b".to_vec()).unwrap();
        let (t2, e2) = expect_hand_off(p.next(&mut n));
        n.storage_mut().append(&e2).unwrap();
        assert!(t2 > t1);
        assert_eq!(p.unfinished(), 2);
        assert_eq!(p.begin_finish(), Some(t1));
        assert_eq!(p.begin_finish(), Some(t2));
        assert_eq!(p.begin_finish(), None);
        assert_eq!(p.unfinished(), 2, "picking up is not finishing");
        let f1 = p.finish(&mut n, t1);
        assert_eq!(p.unfinished(), 1);
        // A sole voter commits its entry once durable: applied from a later Ready.
        assert!(f1.committed_entries.is_empty());
        p.finish(&mut n, t2);
        assert_eq!(p.unfinished(), 0);
        // Durable now: the next Ready commits and hands out both entries to apply.
        let (t3, _) = expect_hand_off(p.next(&mut n));
        assert_eq!(n.commit(), e2[0].index);
        assert_eq!(p.begin_finish(), Some(t3));
        let f3 = p.finish(&mut n, t3);
        assert_eq!(f3.committed_entries.len(), 2);
    }

    #[test]
    #[should_panic(expected = "finish out of order")]
    fn finishing_out_of_order_panics() {
        let (mut n, mut p) = leader(8);
        n.propose(b"a".to_vec()).unwrap();
        let (t1, _) = expect_hand_off(p.next(&mut n));
        n.propose(b"b".to_vec()).unwrap();
        let (t2, _) = expect_hand_off(p.next(&mut n));
        assert_eq!(p.begin_finish(), Some(t1));
        p.finish(&mut n, t2);
    }

    #[test]
    #[should_panic(expected = "without begin_finish")]
    fn finishing_without_begin_panics() {
        let (mut n, mut p) = leader(8);
        n.propose(b"a".to_vec()).unwrap();
        let (t1, _) = expect_hand_off(p.next(&mut n));
        p.finish(&mut n, t1);
    }

    #[test]
    fn the_bound_counts_unfinished_not_queued() {
        let (mut n, mut p) = leader(2);
        let mut tickets = Vec::new();
        for d in [b"a", b"b"] {
            n.propose(d.to_vec()).unwrap();
            let (t, e) = expect_hand_off(p.next(&mut n));
            n.storage_mut().append(&e).unwrap();
            tickets.push(t);
        }
        n.propose(b"c".to_vec()).unwrap();
        assert!(p.next(&mut n).is_none(), "bound of 2 reached");
        assert_eq!(p.begin_finish(), Some(tickets[0]));
        assert!(p.next(&mut n).is_none(), "picked up is still unfinished");
        p.finish(&mut n, tickets[0]);
        assert!(matches!(p.next(&mut n), Some(Step::HandOff { .. })));
    }

    /// Follower 1 of {1, 2, 3} with one hand-off in flight, then a leader of a higher term:
    /// the term change must be handled whole, and only after the hand-off finished.
    #[test]
    fn a_term_or_vote_change_waits_for_the_drain() {
        let mut n = node(1, &[1, 2, 3]);
        let mut p = Pipeline::new(PipelineConfig::new(8), 1, 0);
        // Leader 2 at term 1 sends an entry: same term and vote, so handed off.
        let ent = Entry {
            index: 2,
            term: 1,
            data: b"x".to_vec(),
            ..Default::default()
        };
        let mut m = Message {
            kind: MessageKind::Append,
            from: 2,
            to: 1,
            term: 1,
            index: 1,
            log_term: 1,
            commit: 1,
            ..Default::default()
        };
        m.entries = vec![ent];
        n.step(m).unwrap();
        let (t1, e1) = expect_hand_off(p.next(&mut n));
        n.storage_mut().append(&e1).unwrap();
        // A new leader 3 at term 5: the term changes (and the vote resets).
        n.step(Message {
            kind: MessageKind::Heartbeat,
            from: 3,
            to: 1,
            term: 5,
            commit: 1,
            ..Default::default()
        })
        .unwrap();
        assert!(p.next(&mut n).is_none(), "held until the hand-off finishes");
        assert!(p.next(&mut n).is_none());
        assert_eq!(p.begin_finish(), Some(t1));
        assert!(p.next(&mut n).is_none(), "picked up is not finished");
        p.finish(&mut n, t1);
        let rd = match p.next(&mut n) {
            Some(Step::Whole(rd)) => rd,
            other => panic!("expected whole, got {other:?}"),
        };
        assert_eq!(rd.hard_state.map(|h| (h.term, h.vote)), Some((5, 0)));
        // The acknowledgement waits for the new term to be durable.
        assert!(rd.messages.is_empty());
        assert!(rd
            .persisted_messages
            .iter()
            .any(|m| m.kind == MessageKind::HeartbeatResp && m.term == 5));
        assert_eq!(p.persisted_term_vote(), (5, 0));
        assert!(p.next(&mut n).is_none(), "a Whole is outstanding");
        handle_whole(&mut n, &mut p, rd);
        assert!(p.next(&mut n).is_none(), "nothing left");
    }

    #[test]
    fn a_commit_change_alone_is_handed_off() {
        let mut n = node(1, &[1, 2, 3]);
        let mut p = Pipeline::new(PipelineConfig::new(8), 1, 0);
        let ent = Entry {
            index: 2,
            term: 1,
            ..Default::default()
        };
        n.step(Message {
            kind: MessageKind::Append,
            from: 2,
            to: 1,
            term: 1,
            index: 1,
            log_term: 1,
            commit: 2,
            entries: vec![ent],
            ..Default::default()
        })
        .unwrap();
        // Hard state changes (commit 2) with the same term and vote: handed off.
        let (t, _) = expect_hand_off(p.next(&mut n));
        assert_eq!(p.begin_finish(), Some(t));
    }

    #[test]
    fn a_snapshot_waits_for_the_drain() {
        let mut n = node(1, &[1, 2, 3]);
        let mut p = Pipeline::new(PipelineConfig::new(8), 1, 0);
        n.step(Message {
            kind: MessageKind::Append,
            from: 2,
            to: 1,
            term: 1,
            index: 1,
            log_term: 1,
            commit: 1,
            entries: vec![Entry {
                index: 2,
                term: 1,
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap();
        let (t1, e1) = expect_hand_off(p.next(&mut n));
        n.storage_mut().append(&e1).unwrap();
        n.step(Message {
            kind: MessageKind::Snapshot,
            from: 2,
            to: 1,
            term: 1,
            snapshot: Some(crate::Snapshot {
                meta: crate::SnapshotMeta {
                    index: 10,
                    term: 1,
                    conf_state: ConfState::with_voters([1, 2, 3]),
                },
                data: Vec::new(),
            }),
            ..Default::default()
        })
        .unwrap();
        assert!(p.next(&mut n).is_none());
        assert_eq!(p.begin_finish(), Some(t1));
        p.finish(&mut n, t1);
        match p.next(&mut n) {
            Some(Step::Whole(rd)) => {
                assert_eq!(rd.snapshot.as_ref().map(|s| s.meta.index), Some(10));
                handle_whole(&mut n, &mut p, rd);
            }
            other => panic!("expected whole, got {other:?}"),
        }
    }

    /// The planted bug: the drain passes once the completer picked the ticket up.
    #[cfg(feature = "mutants")]
    #[test]
    fn drain_on_dequeue_mutant_releases_early() {
        let (mut n, _) = leader(8);
        let mut cfg = PipelineConfig::new(8);
        cfg.mutant = crate::Mutant::DrainOnDequeue;
        let mut p = Pipeline::new(cfg, 2, 1);
        n.propose(b"a".to_vec()).unwrap();
        let (t1, _) = expect_hand_off(p.next(&mut n));
        assert_eq!(p.begin_finish(), Some(t1));
        assert_eq!(p.unfinished(), 0, "the bug: picked up counts as finished");
    }

    struct W(bool);
    impl Waiter for W {
        fn is_abandoned(&self) -> bool {
            self.0
        }
    }

    fn rs(ctx: Vec<u8>, index: u64) -> ReadState {
        ReadState {
            index,
            request_ctx: ctx,
        }
    }

    #[test]
    fn reads_arriving_together_share_one_context() {
        let mut b = ReadBatcher::new(7, 99, 3);
        assert!(b.is_empty());
        assert!(b.issue(0).is_none(), "nothing waiting");
        assert!(b.push(W(false)).is_ok());
        assert!(b.push(W(false)).is_ok());
        let ctx = b.issue(10).unwrap();
        assert_eq!(ctx.len(), 24);
        assert_eq!(&ctx[..8], &7u64.to_le_bytes());
        assert_eq!(&ctx[8..16], &99u64.to_le_bytes());
        assert_eq!(&ctx[16..], &1u64.to_le_bytes());
        assert!(b.push(W(false)).is_ok());
        assert!(b.push(W(false)).is_err(), "max_pending counts every stage");
        let ctx2 = b.issue(11).unwrap();
        assert_ne!(ctx, ctx2);
        assert_eq!(b.len(), 3);
        // Another node's (or another boot's) context is ignored.
        let mut foreign = ctx.clone();
        foreign[8] ^= 1;
        b.on_read_states(&[rs(foreign, 1)]);
        b.on_read_states(&[rs(ctx, 5), rs(ctx2.clone(), 3)]);
        assert_eq!(b.applied(2).len(), 0);
        assert_eq!(b.applied(4).len(), 1);
        let got = b.applied_with_index(9);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|(i, _)| *i == 5));
        assert!(b.is_empty());
        // A context answered twice (a duplicated message) is ignored the second time.
        b.on_read_states(&[rs(ctx2, 3)]);
        assert!(b.applied(100).is_empty());
    }

    #[test]
    fn a_refused_issue_hands_back_its_waiters() {
        let mut b = ReadBatcher::new(1, 2, 10);
        b.push(W(false)).ok();
        b.push(W(false)).ok();
        let ctx = b.issue(0).unwrap();
        assert_eq!(b.issue_failed(&ctx).len(), 2);
        assert!(b.is_empty());
        assert!(b.issue_failed(&ctx).is_empty());
    }

    #[test]
    fn sweep_drops_lost_batches_and_abandoned_waiters() {
        let mut b = ReadBatcher::new(1, 2, 10);
        b.push(W(false)).ok();
        let old = b.issue(0).unwrap();
        b.push(W(false)).ok();
        b.push(W(true)).ok();
        let young = b.issue(90).unwrap();
        b.push(W(true)).ok();
        b.sweep(100, 50);
        assert_eq!(
            b.len(),
            1,
            "the old batch and both abandoned waiters are gone"
        );
        b.on_read_states(&[rs(old, 1), rs(young, 1)]);
        assert_eq!(b.applied(1).len(), 1);
        assert!(b.is_empty());
    }

    #[test]
    fn snapshot_schedule_by_entries_cost_and_bytes() {
        let mut s = SnapshotSchedule::new(10, 1000, 5, 0);
        assert!(!s.due(14));
        assert!(s.due(15));
        s.started(15, 30);
        assert!(!s.due(100), "never while one is written");
        s.finished(15);
        assert_eq!(s.last_index(), 15);
        // The last snapshot cost 30 keys: wait 30 entries, not 10.
        assert!(!s.due(44));
        assert!(s.due(45));
        s.applied_bytes(999);
        assert!(!s.due(20));
        s.applied_bytes(1);
        assert!(s.due(20), "by bytes");
        assert!(!s.due(15), "nothing applied since the last one");
        s.started(20, 1);
        // A leader's snapshot installed while ours is written: never go backwards.
        s.installed(50, 2);
        s.finished(20);
        assert_eq!(s.last_index(), 50);
        assert!(!s.due(59));
        assert!(s.due(60));
    }
}
