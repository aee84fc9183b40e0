//! One shard's raft replica: the pure raft core driven by this shard's event loop, its
//! durable log, its peer transport and a state machine it knows only through
//! [`StateMachine`] (in mast: the shard's partition of the meta table).
//!
//! Tasks on the shard thread (all share the `Group` through `Rc`, none holds a borrow across
//! an await):
//! - the **ticker** ticks the core every `tick_ms`;
//! - the **receiver** steps raft messages from the transport into the core;
//! - the **driver** takes each `Ready`: messages that may go now are sent and entries are
//!   queued to the log (one write per batch for everything queued while the previous batch
//!   was on disk: group commit), then it is let go with `advance_unpersisted` so the next
//!   `Ready` can be queued behind it at once: the disk never waits for this thread.
//!   A `Ready` that installs a snapshot or changes term or vote waits for everything before
//!   it and is handled whole (`advance`).
//! - the **completer** finishes handed-off `Ready`s in order as they become durable:
//!   `on_persisted`, then the messages that needed durability, then apply.
//! - request handlers call [`Group::propose`] and [`Group::read_barrier`] and wait for apply.
//!
//! Nothing is acknowledged before the entry is committed (durable on a quorum) and applied
//! here. A log write or fsync failure aborts the process.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;
use mast_log::{EntryRecord, Log, LogOptions};
use mast_raft::pipeline::{Pipeline, PipelineConfig, ReadBatcher, SnapshotSchedule, Step, Waiter};
use mast_raft::{
    ConfChange, ConfChangeKind, ConfState, Entry, EntryKind, HardState, Message, RawNode,
    ReadState, Ready, Role, Snapshot, SnapshotMeta, Status, Storage, StorageError,
};
use mast_wire::{FrameKind, PeerTransport, SendError, TransportConfig};
use tracing::{error, info, warn};

use crate::codec;

pub mod calls;
pub mod envelope;
pub mod snapshot;
mod state_machine;

pub use calls::{CallHandler, CallResult};
pub use envelope::Envelope;
pub use state_machine::{LeaderEvent, Section, StateMachine};

/// Ticks between checks for learners that can be promoted.
const LEARNER_CHECK_TICKS: u64 = 10;
/// A learner this close to the leader's last index counts as caught up.
const LEARNER_CAUGHT_UP_ENTRIES: u64 = 100;

/// Tunables of a replica; units are in the names.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    pub tick_ms: u64,
    pub election_timeout_ticks: u64,
    pub heartbeat_interval_ticks: u64,
    /// How long a client waits for its write or read before hearing "unknown outcome".
    pub request_timeout_ms: u64,
    /// Applied entries between state machine snapshots, or the number of keys in the last
    /// snapshot if that is larger (then the log is compacted; the log keeps
    /// `log.retained_tail_entries` below the snapshot so a slightly lagging follower catches
    /// up from the log instead of needing the snapshot).
    pub snapshot_every_entries: u64,
    /// Applied entry bytes between snapshots, whichever of the two comes first.
    pub snapshot_every_bytes: u64,
    /// Proposals waiting for their entry to apply, per shard.
    pub pending_proposals_max: usize,
    /// Reads waiting for a read index, per shard.
    pub pending_reads_max: usize,
    /// Calls to the leader (see [`calls`]) waiting for an answer, and calls from other
    /// members being served here, each at most this many.
    pub calls_in_flight_max: usize,
    /// Largest peer frame; raft appends are cut to a quarter of it.
    pub frame_bytes_max: usize,
    /// Largest peer message (a snapshot); the transport sends larger-than-frame messages
    /// as fragments and reassembles them, holding at most this much per connection.
    pub message_bytes_max: usize,
    pub log: LogOptions,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            tick_ms: 10,
            election_timeout_ticks: 20,
            heartbeat_interval_ticks: 2,
            request_timeout_ms: 5_000,
            snapshot_every_entries: 50_000,
            snapshot_every_bytes: 256 * 1024 * 1024,
            pending_proposals_max: 65_536,
            pending_reads_max: 65_536,
            calls_in_flight_max: 4_096,
            frame_bytes_max: 16 * 1024 * 1024,
            message_bytes_max: 1024 * 1024 * 1024,
            log: LogOptions::default(),
        }
    }
}

/// Why a request through the group did not get a definite answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("no leader is known for this shard")]
    NoLeader { leader_hint: u64 },
    #[error("this node is not the leader")]
    NotLeader { leader: u64 },
    #[error("too many requests are waiting on this shard")]
    Overloaded,
    #[error("the request timed out; its outcome is unknown")]
    Timeout,
    #[error("the proposal was refused: {0}")]
    Refused(String),
    #[error("this node has been removed from the cluster")]
    Removed,
}

/// Membership entries carry the new member's addresses in their context.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MemberAddrs {
    pub peer_addr: String,
    pub http_addr: String,
}

/// A shard's snapshot: the member address book (the replica's own section) and the state
/// machine's sections. The addresses travel with the snapshot because the entries that
/// carried them (membership changes) are compacted away, and a node restored from a snapshot
/// must still reach every member.
fn encode_group_snapshot<S: StateMachine>(
    members: &BTreeMap<u64, MemberAddrs>,
    state: &S,
) -> Vec<u8> {
    let members: Vec<(u64, MemberAddrs)> = members.iter().map(|(k, v)| (*k, v.clone())).collect();
    let mut sections = vec![Section {
        tag: snapshot::TAG_MEMBERS,
        version: 1,
        bytes: codec::encode(&members),
    }];
    sections.extend(state.snapshot());
    snapshot::encode(&sections)
}

/// Validates and opens a snapshot payload (from disk or from the leader).
fn decode_group_snapshot<S: StateMachine>(
    bytes: &[u8],
) -> Result<(BTreeMap<u64, MemberAddrs>, S), String> {
    let mut sections = snapshot::decode(bytes)?;
    let pos = sections
        .iter()
        .position(|s| s.tag == snapshot::TAG_MEMBERS && s.version == 1)
        .ok_or("snapshot has no member section")?;
    let members = sections.remove(pos);
    let members = codec::decode::<Vec<(u64, MemberAddrs)>>(&members.bytes)
        .map_err(|e| format!("member section: {e}"))?;
    let state = S::restore(sections)?;
    Ok((members.into_iter().collect(), state))
}

/// A raft [`Storage`] over the shard's durable log. Entry payloads are `[kind u8][data]`;
/// index and term live in the log record header.
pub struct LogStorage {
    log: Rc<Log>,
    hard_state: HardState,
    /// Configuration as of the snapshot (or the bootstrap configuration).
    base_conf: ConfState,
    snapshot: Option<(u64, u64)>,
}

fn entry_to_record(e: &Entry) -> EntryRecord {
    let mut payload = Vec::with_capacity(1 + e.data.len());
    payload.push(match e.kind {
        EntryKind::Normal => 0,
        EntryKind::ConfChange => 1,
    });
    payload.extend_from_slice(&e.data);
    EntryRecord {
        index: e.index,
        term: e.term,
        payload: Bytes::from(payload),
    }
}

fn record_to_entry(r: EntryRecord) -> Result<Entry, StorageError> {
    let (&kind, data) = r
        .payload
        .split_first()
        .ok_or_else(|| StorageError::Other(format!("entry {} has an empty payload", r.index)))?;
    let kind = match kind {
        0 => EntryKind::Normal,
        1 => EntryKind::ConfChange,
        k => {
            return Err(StorageError::Other(format!(
                "entry {} has unknown kind {k}",
                r.index
            )))
        }
    };
    Ok(Entry {
        term: r.term,
        index: r.index,
        kind,
        data: data.to_vec(),
    })
}

fn map_log_err(e: mast_log::Error) -> StorageError {
    match e {
        mast_log::Error::Compacted { .. } => StorageError::Compacted,
        mast_log::Error::Unavailable { .. } => StorageError::Unavailable,
        other => StorageError::Other(other.to_string()),
    }
}

fn encode_conf(cs: &ConfState) -> Vec<u8> {
    codec::encode(cs)
}

fn decode_conf(bytes: &[u8]) -> Option<ConfState> {
    codec::decode(bytes).ok()
}

async fn bootstrap_log(
    log: &Log,
    peers: &BTreeMap<u64, MemberAddrs>,
) -> Result<mast_log::HardState, String> {
    let mut records = Vec::with_capacity(peers.len());
    for (i, (id, addrs)) in peers.iter().enumerate() {
        let context = codec::encode(addrs);
        let cc = ConfChange {
            kind: ConfChangeKind::AddVoter,
            node_id: *id,
            context,
        };
        let entry = Entry {
            term: 1,
            index: i as u64 + 1,
            kind: EntryKind::ConfChange,
            data: cc.encode(),
        };
        records.push(entry_to_record(&entry));
    }
    let hs = mast_log::HardState {
        term: 1,
        vote: 0,
        commit: records.len() as u64,
    };
    log.append(&records)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    log.save_hard_state(hs)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    Ok(hs)
}

impl Storage for LogStorage {
    fn initial_state(&self) -> Result<(HardState, ConfState), StorageError> {
        Ok((self.hard_state, self.base_conf.clone()))
    }

    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        let records = self.log.entries(lo, hi, max_bytes).map_err(map_log_err)?;
        records.into_iter().map(record_to_entry).collect()
    }

    fn term(&self, idx: u64) -> Result<u64, StorageError> {
        if idx == 0 {
            return Ok(0);
        }
        match self.log.term(idx) {
            Ok(Some(t)) => Ok(t),
            Ok(None) if idx + 1 == self.log.first_index() => {
                Ok(self.snapshot.map_or(0, |(_, t)| t))
            }
            Ok(None) => Err(StorageError::Unavailable),
            Err(e) => Err(map_log_err(e)),
        }
    }

    fn first_index(&self) -> Result<u64, StorageError> {
        Ok(self.log.first_index())
    }

    fn last_index(&self) -> Result<u64, StorageError> {
        Ok(self.log.last_index())
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        match self.log.load_latest_snapshot().map_err(map_log_err)? {
            Some((meta, data)) => Ok(Snapshot {
                meta: SnapshotMeta {
                    index: meta.index,
                    term: meta.term,
                    conf_state: decode_conf(&meta.extra).ok_or_else(|| {
                        StorageError::Other("snapshot has an unreadable configuration".into())
                    })?,
                },
                data,
            }),
            None => Err(StorageError::SnapshotTemporarilyUnavailable),
        }
    }
}

/// True when `cs` is a known membership (not the empty one of a node that has not joined
/// yet) without `id`.
fn excludes(cs: &ConfState, id: u64) -> bool {
    let known = !(cs.voters.is_empty() && cs.learners.is_empty());
    known && !cs.voters.contains(&id) && !cs.learners.contains(&id)
}

/// Replication facts for `/status` and `/metrics`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupStatus {
    pub leader: u64,
    pub role: &'static str,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub snapshot_index: u64,
    /// This node was removed from the group: it serves nothing.
    pub removed: bool,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// What the state machine reports as its size (for the meta table: KV keys).
    pub keys: u64,
    pub progress: Vec<ProgressView>,
    /// The log's [`mast_log::LogStats`]: batches (one write each, plus an fdatasync unless
    /// O_DSYNC), entries and bytes in them, and the points where a batch became durable.
    pub log_batches: u64,
    pub log_entries: u64,
    pub log_bytes: u64,
    pub log_syncs: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ProgressView {
    pub id: u64,
    pub matched: u64,
    pub next: u64,
    pub state: String,
    pub lag_entries: u64,
    pub recent_active: bool,
    pub learner: bool,
}

/// A linearizable read waiting for its read index to apply.
struct ReadW(oneshot::Sender<Result<(), GroupError>>);

impl Waiter for ReadW {
    fn is_abandoned(&self) -> bool {
        self.0.is_canceled()
    }
}

/// One shard's replica. See the module docs for the tasks that drive it.
pub struct Group<S: StateMachine> {
    pub shard: usize,
    pub node_id: u64,
    opts: GroupOptions,
    node: RefCell<RawNode<LogStorage>>,
    log: Rc<Log>,
    state: RefCell<S>,
    transport: Rc<PeerTransport>,
    /// Proposals by request id, completed when their entry applies.
    proposals: RefCell<HashMap<u64, oneshot::Sender<S::Outcome>>>,
    next_request_id: Cell<u64>,
    /// Differs on every start of the process; see [`Envelope`].
    boot: u64,
    /// Linearizable reads: batched under one ReadIndex context, then waiting for apply (the
    /// pure rules the simulator drives too).
    reads: RefCell<ReadBatcher<ReadW>>,
    /// Origin of the `now_ms` the read batcher is given.
    started: std::time::Instant,
    /// When to snapshot (the pure rules the simulator drives too; see `maybe_snapshot`).
    snapshots: RefCell<SnapshotSchedule>,
    /// The hard state last queued to disk (see `handle_ready`).
    persisted_hard_state: Cell<mast_log::HardState>,
    leader: Cell<u64>,
    removed: Cell<bool>,
    /// Peer and HTTP addresses of members, from config and membership entries.
    members: RefCell<BTreeMap<u64, MemberAddrs>>,
    kick: flume::Sender<()>,
    kicked: flume::Receiver<()>,
    /// The driver's rules (hand-off or whole, the drain, the in-flight bound): pure, and the
    /// same code the raft simulator drives.
    pipeline: RefCell<Pipeline>,
    /// Log writes of handed-off Readys, by ticket, oldest first, for the completer.
    durables: RefCell<VecDeque<(u64, mast_log::Durable)>>,
    /// Wakes the completer when `in_flight` gains an element.
    in_flight_added: (flume::Sender<()>, flume::Receiver<()>),
    /// Wakes the driver when the completer finished one.
    in_flight_done: (flume::Sender<()>, flume::Receiver<()>),
    /// The term this replica leads with an entry of that term applied.
    leader_ready: Cell<Option<u64>>,
    leader_subscribers: RefCell<Vec<flume::Sender<LeaderEvent>>>,
    call_handler: RefCell<Option<CallHandler>>,
    /// Calls to the leader waiting for answers, by call id.
    calls_pending: RefCell<HashMap<u64, oneshot::Sender<CallResult>>>,
    next_call_id: Cell<u64>,
    /// Calls from other members being served here.
    calls_serving: Cell<usize>,
    /// Queued for the flusher: requests by destination, answers by (caller, caller's boot).
    calls_out: RefCell<BTreeMap<u64, Vec<calls::CallRequest>>>,
    replies_out: RefCell<BTreeMap<(u64, u64), Vec<calls::CallReply>>>,
    calls_kick: (flume::Sender<()>, flume::Receiver<()>),
}

/// Readys handed to the log at once, before the previous ones are durable: enough to keep
/// the disk busy (the log coalesces whatever queues behind a write into one batch).
const IN_FLIGHT_READIES_MAX: usize = 8;

/// A value that differs between starts of the process (time and pid).
fn boot_nonce() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 40)
}

/// Where a replica sits: which shard of which node of which cluster, and where it listens.
#[derive(Debug, Clone)]
pub struct ReplicaId {
    pub shard: usize,
    pub node_id: u64,
    pub cluster_id: u64,
    /// This shard's peer listener.
    pub listen_addr: SocketAddr,
    /// This shard's data directory (log, hard state, snapshots).
    pub dir: std::path::PathBuf,
}

impl<S: StateMachine> Group<S> {
    /// Opens the shard's log, restores the newest snapshot, and builds the raft core.
    /// `peers` are the members known at first start; with `bootstrap_voters` they become the
    /// initial membership when the log is brand new.
    pub async fn open(
        id: ReplicaId,
        peers: &BTreeMap<u64, MemberAddrs>,
        bootstrap_voters: bool,
        opts: GroupOptions,
    ) -> Result<Rc<Group<S>>, String> {
        let ReplicaId {
            shard,
            node_id,
            cluster_id,
            listen_addr,
            dir,
        } = id;
        let dir = dir.as_path();
        let (log, recovered) =
            Log::open(dir, opts.log.clone()).map_err(|e| format!("log {}: {e}", dir.display()))?;
        if let Some(t) = &recovered.truncated_tail {
            warn!(shard, ?t, "cut a torn tail off the log");
        }
        let log = Rc::new(log);
        let mut state = S::empty();
        // Membership lives in the log: a bootstrapping node writes the initial members as
        // conf-change entries 1..=n, identical on every bootstrapping node and committed by
        // construction (as etcd does), so a node that joins later learns them by replication.
        // A joining node starts empty and learns everything from the leader.
        let mut base_conf = ConfState::default();
        let fresh = recovered.last_index == 0
            && recovered.snapshot.is_none()
            && recovered.hard_state == mast_log::HardState::default();
        let mut hs = recovered.hard_state;
        if bootstrap_voters && fresh {
            hs = bootstrap_log(&log, peers).await?;
            info!(
                shard,
                members = peers.len(),
                "bootstrapped the membership into the log"
            );
        }
        let mut snapshot = None;
        let mut peers = peers.clone();
        if let Some((meta, data)) = log
            .load_latest_snapshot()
            .map_err(|e| format!("snapshot: {e}"))?
        {
            let (members, restored) = decode_group_snapshot::<S>(&data)
                .map_err(|e| format!("snapshot at {}: {e}", meta.index))?;
            state = restored;
            peers.extend(members);
            base_conf = decode_conf(&meta.extra)
                .ok_or_else(|| format!("snapshot at {}: unreadable configuration", meta.index))?;
            snapshot = Some((meta.index, meta.term));
            // A crash in the middle of installing a leader's snapshot can leave the snapshot
            // saved but the log not yet reset, or the hard state's commit below it: finish
            // the install. A snapshot only ever covers committed entries.
            hs.commit = hs.commit.max(meta.index);
            let log_matches = log.last_index() >= meta.index
                && log.term(meta.index).ok().flatten() == Some(meta.term);
            if !log_matches {
                warn!(
                    shard,
                    index = meta.index,
                    "finishing an interrupted snapshot install: resetting the log"
                );
                log.reset(meta.index, meta.term)
                    .map_err(|e| format!("log reset: {e}"))?
                    .await
                    .map_err(|e| format!("log reset: {e}"))?;
            }
        }
        let peers = &peers;
        // A snapshot that covers this node's removal replays no RemoveNode entry: the removal
        // is known from the configuration the snapshot carries. (A snapshot received while
        // joining can predate the entry that added this node; replaying that entry from the
        // log clears the flag again, see apply_conf_change.)
        let removed = excludes(&base_conf, node_id);
        if removed {
            warn!(
                shard,
                node_id, "this node is not in the membership of its latest snapshot: removed"
            );
        }
        let hard_state = HardState {
            term: hs.term,
            vote: hs.vote,
            commit: hs.commit,
        };
        let storage = LogStorage {
            log: log.clone(),
            hard_state,
            base_conf,
            snapshot,
        };
        let mut cfg = mast_raft::Config::new(node_id);
        cfg.election_timeout_ticks = opts.election_timeout_ticks;
        cfg.heartbeat_interval_ticks = opts.heartbeat_interval_ticks;
        cfg.applied = state.applied();
        cfg.max_msg_bytes = (opts.frame_bytes_max as u64 / 4).max(1);
        cfg.max_inflight_bytes = cfg.max_msg_bytes * 8;
        // Entropy for election jitter is chosen here, in the I/O layer; the core stays pure.
        let boot = boot_nonce();
        let seed = boot ^ (node_id << 32) ^ shard as u64;
        let node = RawNode::new(&cfg, storage, seed).map_err(|e| format!("raft: {e}"))?;

        let mut tcfg = TransportConfig::new(cluster_id, node_id, shard as u32, listen_addr);
        tcfg.frame_bytes_max = opts.frame_bytes_max;
        tcfg.message_bytes_max = opts.message_bytes_max;
        tcfg.send_queue_bytes_max = tcfg.send_queue_bytes_max.max(opts.frame_bytes_max * 2);
        tcfg.accept_unknown_nodes = true;
        let transport =
            PeerTransport::new(tcfg).map_err(|e| format!("peer listener {listen_addr}: {e}"))?;
        let (kick, kicked) = flume::bounded(1);
        let group = Rc::new(Group {
            shard,
            node_id,
            node: RefCell::new(node),
            log,
            snapshots: RefCell::new(SnapshotSchedule::new(
                opts.snapshot_every_entries,
                opts.snapshot_every_bytes,
                snapshot.map_or(0, |s| s.0),
                state.snapshot_cost(),
            )),
            persisted_hard_state: Cell::new(hs),
            state: RefCell::new(state),
            transport: Rc::new(transport),
            proposals: RefCell::new(HashMap::new()),
            next_request_id: Cell::new(0),
            boot,
            reads: RefCell::new(ReadBatcher::new(node_id, boot, opts.pending_reads_max)),
            started: std::time::Instant::now(),
            leader: Cell::new(0),
            removed: Cell::new(removed),
            members: RefCell::new(peers.clone()),
            kick,
            kicked,
            pipeline: RefCell::new(Pipeline::new(
                PipelineConfig::new(IN_FLIGHT_READIES_MAX),
                hs.term,
                hs.vote,
            )),
            durables: RefCell::new(VecDeque::new()),
            in_flight_added: flume::bounded(1),
            in_flight_done: flume::bounded(1),
            leader_ready: Cell::new(None),
            leader_subscribers: RefCell::new(Vec::new()),
            call_handler: RefCell::new(None),
            calls_pending: RefCell::new(HashMap::new()),
            next_call_id: Cell::new(0),
            calls_serving: Cell::new(0),
            calls_out: RefCell::new(BTreeMap::new()),
            replies_out: RefCell::new(BTreeMap::new()),
            calls_kick: flume::bounded(1),
            opts,
        });
        for (id, m) in peers {
            group.set_peer(*id, m);
        }
        Ok(group)
    }

    fn set_peer(&self, id: u64, m: &MemberAddrs) {
        if id == self.node_id {
            return;
        }
        match m.peer_addr.parse::<SocketAddr>() {
            Ok(mut addr) => {
                addr.set_port(addr.port().saturating_add(self.shard as u16));
                if let Err(e) = self.transport.set_peer(id, addr) {
                    warn!(shard = self.shard, id, %e, "cannot register peer");
                }
            }
            Err(_) => {
                warn!(shard = self.shard, id, addr = %m.peer_addr, "member has an unparsable peer address")
            }
        }
    }

    /// Starts the ticker, receiver and driver tasks on the current (shard) runtime.
    pub fn start(self: &Rc<Self>) {
        let g = self.clone();
        monoio::spawn(async move { g.ticker().await });
        let g = self.clone();
        monoio::spawn(async move { g.receiver().await });
        let g = self.clone();
        monoio::spawn(async move { g.driver().await });
        let g = self.clone();
        monoio::spawn(async move { g.completer().await });
        let g = self.clone();
        monoio::spawn(async move { g.call_flusher().await });
        // A single-member group can elect itself at once instead of waiting a timeout.
        let voters = self.node.borrow().conf_state().voters.clone();
        if voters == [self.node_id] {
            self.node.borrow_mut().campaign();
            self.kick();
        }
    }

    /// Whether a request forwarded by `id` (a proposal, read index or transfer: term 0) is
    /// served. Only forwarded requests are filtered: messages that carry a term are left to
    /// raft (pre-vote and check-quorum keep a removed node from disrupting), because a
    /// member whose log lags may not yet know a newer member and must still hear from it.
    fn serves_requests_from(&self, id: u64) -> bool {
        let node = self.node.borrow();
        let cs = node.conf_state();
        cs.voters.contains(&id) || cs.learners.contains(&id)
    }

    fn kick(&self) {
        let _ = self.kick.try_send(());
    }

    async fn ticker(self: Rc<Self>) {
        let tick = Duration::from_millis(self.opts.tick_ms);
        let mut ticks: u64 = 0;
        loop {
            monoio::time::sleep(tick).await;
            if self.transport.is_closed() {
                return;
            }
            self.node.borrow_mut().tick();
            ticks += 1;
            if ticks % LEARNER_CHECK_TICKS == 0 {
                self.promote_caught_up_learners();
                self.sweep_lost_reads();
            }
            self.kick();
        }
    }

    /// A learner becomes a voter once it is within `LEARNER_CAUGHT_UP_ENTRIES` of the
    /// leader's log, so adding a member never lowers availability while it catches up.
    fn promote_caught_up_learners(&self) {
        let st = self.node.borrow().status();
        if st.role != Role::Leader {
            return;
        }
        for p in st
            .progress
            .iter()
            .filter(|p| p.is_learner && p.recent_active)
        {
            if p.matched + LEARNER_CAUGHT_UP_ENTRIES >= st.last_index {
                let cc = ConfChange {
                    kind: ConfChangeKind::PromoteLearner,
                    node_id: p.id,
                    context: vec![],
                };
                // Refused while another change is pending; the next check retries.
                if self.node.borrow_mut().propose_conf_change(cc).is_ok() {
                    info!(
                        shard = self.shard,
                        node = p.id,
                        "promoting caught-up learner to voter"
                    );
                    break;
                }
            }
        }
    }

    /// Serves a batch of calls from `from` through the registered handler; answers queue for
    /// the flusher as they complete.
    fn on_call_batch(self: &Rc<Self>, from: u64, frame: &mast_wire::Frame) {
        let batch = match frame.decode::<calls::CallBatch>() {
            Ok(b) => b,
            Err(e) => {
                warn!(shard = self.shard, from, %e, "undecodable call batch; dropped");
                return;
            }
        };
        let boot = batch.boot;
        let member = self.serves_requests_from(from);
        let handler = self.call_handler.borrow().clone();
        for call in batch.calls.into_iter().take(calls::CALLS_PER_FRAME_MAX) {
            let refuse = if !member {
                Some(CallResult::Refused("not a member of this cluster".into()))
            } else if self.calls_serving.get() >= self.opts.calls_in_flight_max {
                Some(CallResult::Overloaded)
            } else if handler.is_none() || call.body.len() > calls::CALL_BODY_BYTES_MAX {
                Some(CallResult::Refused(format!(
                    "no service {} here",
                    call.service
                )))
            } else {
                None
            };
            if let Some(result) = refuse {
                self.queue_reply(
                    from,
                    boot,
                    calls::CallReply {
                        id: call.id,
                        result,
                    },
                );
                continue;
            }
            let Some(h) = handler.clone() else { continue };
            let fut = h(call.service, call.body);
            self.calls_serving.set(self.calls_serving.get() + 1);
            let g = self.clone();
            monoio::spawn(async move {
                let result = fut.await;
                g.calls_serving.set(g.calls_serving.get() - 1);
                g.queue_reply(
                    from,
                    boot,
                    calls::CallReply {
                        id: call.id,
                        result,
                    },
                );
            });
        }
    }

    fn queue_reply(&self, to: u64, boot: u64, reply: calls::CallReply) {
        self.replies_out
            .borrow_mut()
            .entry((to, boot))
            .or_default()
            .push(reply);
        let _ = self.calls_kick.0.try_send(());
    }

    fn on_reply_batch(&self, from: u64, frame: &mast_wire::Frame) {
        let batch = match frame.decode::<calls::ReplyBatch>() {
            Ok(b) => b,
            Err(e) => {
                warn!(shard = self.shard, from, %e, "undecodable call replies; dropped");
                return;
            }
        };
        if batch.boot != self.boot {
            return;
        }
        let mut pending = self.calls_pending.borrow_mut();
        for r in batch.replies {
            if let Some(tx) = pending.remove(&r.id) {
                let _ = tx.send(r.result);
            }
        }
    }

    /// Sends whatever calls and answers queued since its last turn, one frame per
    /// destination (and per `CALLS_PER_FRAME_MAX`).
    async fn call_flusher(self: Rc<Self>) {
        while self.calls_kick.1.recv_async().await.is_ok() {
            if self.transport.is_closed() {
                return;
            }
            let out = std::mem::take(&mut *self.calls_out.borrow_mut());
            for (to, reqs) in out {
                for chunk in reqs.chunks(calls::CALLS_PER_FRAME_MAX) {
                    let batch = calls::CallBatch {
                        boot: self.boot,
                        calls: chunk.to_vec(),
                    };
                    if let Err(e) =
                        self.transport
                            .send_message(to, FrameKind::ForwardRequest, &batch)
                    {
                        tracing::debug!(shard = self.shard, to, %e, "calls not sent");
                        let mut pending = self.calls_pending.borrow_mut();
                        for c in chunk {
                            if let Some(tx) = pending.remove(&c.id) {
                                let _ = tx.send(CallResult::NotLeader { leader: 0 });
                            }
                        }
                    }
                }
            }
            let replies = std::mem::take(&mut *self.replies_out.borrow_mut());
            for ((to, boot), replies) in replies {
                for chunk in replies.chunks(calls::CALLS_PER_FRAME_MAX) {
                    let batch = calls::ReplyBatch {
                        boot,
                        replies: chunk.to_vec(),
                    };
                    if let Err(e) =
                        self.transport
                            .send_message(to, FrameKind::ForwardResponse, &batch)
                    {
                        tracing::debug!(shard = self.shard, to, %e, "call answers not sent");
                    }
                }
            }
        }
    }

    /// Registers what serves calls that reach this replica (see [`calls`]).
    pub fn set_call_handler(&self, handler: CallHandler) {
        *self.call_handler.borrow_mut() = Some(handler);
    }

    /// Calls the group's leader, which must be another node (a caller that leads serves
    /// itself). Batched with the calls made meanwhile; bounded; an unanswered call is a
    /// timeout (unknown outcome).
    pub async fn call_leader(&self, service: u16, body: Vec<u8>) -> Result<Vec<u8>, GroupError> {
        self.check_serving()?;
        let leader = self.leader.get();
        if leader == self.node_id {
            return Err(GroupError::NotLeader { leader });
        }
        if self.calls_pending.borrow().len() >= self.opts.calls_in_flight_max {
            return Err(GroupError::Overloaded);
        }
        let id = self.next_call_id.get().wrapping_add(1);
        self.next_call_id.set(id);
        let (tx, rx) = oneshot::channel();
        self.calls_pending.borrow_mut().insert(id, tx);
        self.calls_out
            .borrow_mut()
            .entry(leader)
            .or_default()
            .push(calls::CallRequest { id, service, body });
        let _ = self.calls_kick.0.try_send(());
        let r = self.wait(rx).await;
        self.calls_pending.borrow_mut().remove(&id);
        match r? {
            CallResult::Ok(b) => Ok(b),
            CallResult::NotLeader { leader } => Err(GroupError::NoLeader {
                leader_hint: leader,
            }),
            CallResult::Overloaded => Err(GroupError::Overloaded),
            CallResult::Timeout => Err(GroupError::Timeout),
            CallResult::Refused(m) => Err(GroupError::Refused(m)),
        }
    }

    /// The term this replica leads, once an entry of that term has applied here (so the
    /// state holds everything earlier leaders committed); None otherwise.
    pub fn leader_ready_term(&self) -> Option<u64> {
        let node = self.node.borrow();
        self.leader_ready
            .get()
            .filter(|&t| node.role() == Role::Leader && node.term() == t)
    }

    /// Leadership events from now on (a bounded queue: a subscriber that does not keep up
    /// misses events, and reads [`Group::leader_ready_term`] for the truth).
    pub fn subscribe_leader_events(&self) -> flume::Receiver<LeaderEvent> {
        let (tx, rx) = flume::bounded(64);
        self.leader_subscribers.borrow_mut().push(tx);
        rx
    }

    fn emit_leader_event(&self, ev: LeaderEvent) {
        self.state.borrow_mut().on_leader_event(ev);
        self.leader_subscribers
            .borrow_mut()
            .retain(|tx| !matches!(tx.try_send(ev), Err(flume::TrySendError::Disconnected(_))));
    }

    /// Emits [`LeaderEvent`]s exactly at the edges: ready once per term after an entry of
    /// it applied, stepped down when leadership of that term ends.
    fn check_leadership(&self) {
        let (leads, term, ready) = {
            let node = self.node.borrow();
            let leads = node.role() == Role::Leader;
            let term = node.term();
            let applied = self.state.borrow().applied();
            (leads, term, leads && node.term_at(applied) == Some(term))
        };
        if let Some(t) = self.leader_ready.get() {
            if !leads || t != term {
                self.leader_ready.set(None);
                info!(shard = self.shard, term = t, "leadership ended");
                self.emit_leader_event(LeaderEvent::SteppedDown);
            }
        }
        if ready && self.leader_ready.get().is_none() {
            self.leader_ready.set(Some(term));
            info!(
                shard = self.shard,
                term, "leading, with an entry of this term applied"
            );
            self.emit_leader_event(LeaderEvent::Ready { term });
        }
    }

    async fn receiver(self: Rc<Self>) {
        while let Some((from, frame)) = self.transport.recv().await {
            match frame.kind {
                FrameKind::Raft => {}
                FrameKind::ForwardRequest => {
                    self.on_call_batch(from, &frame);
                    continue;
                }
                FrameKind::ForwardResponse => {
                    self.on_reply_batch(from, &frame);
                    continue;
                }
                kind => {
                    warn!(
                        shard = self.shard,
                        from,
                        ?kind,
                        "unexpected frame kind on the raft transport"
                    );
                    continue;
                }
            }
            match frame.decode::<Message>() {
                Ok(msg)
                    if msg.from == from && msg.term == 0 && !self.serves_requests_from(from) =>
                {
                    // A removed node must not keep serving through us (forwarded proposals,
                    // read indexes). Dropping is always safe in raft: it is a lost message.
                    tracing::debug!(shard = self.shard, from, kind = ?msg.kind, "message from a non-member dropped");
                }
                Ok(msg) if msg.from == from => {
                    if let Err(e) = self.node.borrow_mut().step(msg) {
                        tracing::debug!(shard = self.shard, from, %e, "message not stepped");
                    }
                    self.kick();
                }
                Ok(msg) => warn!(
                    shard = self.shard,
                    from,
                    claimed = msg.from,
                    "raft message claims another sender; dropped"
                ),
                Err(e) => warn!(shard = self.shard, from, %e, "undecodable raft message; dropped"),
            }
        }
    }

    /// Hands each `Ready` to the log and goes on to the next one without waiting for the
    /// disk (the completer finishes them in order once durable), so the next batch is
    /// queued while the previous one is being written and the disk never waits for this
    /// task. A `Ready` that installs a snapshot or changes term or vote is handled whole,
    /// after everything before it is durable.
    async fn driver(self: Rc<Self>) {
        while self.kicked.recv_async().await.is_ok() {
            #[cfg(feature = "fault-injection")]
            crate::node::fault::fire(crate::node::fault::PanicAt::Driver);
            self.issue_reads();
            // Bounded per wake-up: the ticker's next kick resumes any remainder.
            for _ in 0..64 {
                let step = {
                    let mut node = self.node.borrow_mut();
                    self.pipeline.borrow_mut().next(&mut node)
                };
                match step {
                    Some(Step::HandOff {
                        ticket,
                        soft_state,
                        messages,
                        entries,
                    }) => {
                        self.note_soft_state(soft_state.as_ref());
                        self.send_all(messages);
                        let durable = self.write_entries(&entries);
                        self.durables.borrow_mut().push_back((ticket, durable));
                        let _ = self.in_flight_added.0.try_send(());
                    }
                    Some(Step::Whole(rd)) => {
                        self.handle_ready(*rd).await;
                        self.pipeline.borrow_mut().whole_done();
                        self.maybe_snapshot();
                    }
                    None => {
                        // Held back by the in-flight bound or the drain before a whole
                        // Ready: wait for the completer to finish one, then ask again.
                        let blocked = {
                            let p = self.pipeline.borrow();
                            p.unfinished() > 0 && (p.is_holding() || self.node.borrow().has_ready())
                        };
                        if !blocked {
                            break;
                        }
                        let _ = self.in_flight_done.1.recv_async().await;
                    }
                }
            }
        }
    }

    /// Finishes handed-off Readys in order as the log makes them durable.
    async fn completer(self: Rc<Self>) {
        loop {
            let next = self.durables.borrow_mut().pop_front();
            let Some((ticket, durable)) = next else {
                if self.in_flight_added.1.recv_async().await.is_err() {
                    return;
                }
                continue;
            };
            let picked = self.pipeline.borrow_mut().begin_finish();
            assert_eq!(
                picked,
                Some(ticket),
                "completer out of step with the pipeline"
            );
            if let Err(e) = durable.await {
                self.fatal("log fsync", e);
            }
            let f = {
                let mut node = self.node.borrow_mut();
                self.pipeline.borrow_mut().finish(&mut node, ticket)
            };
            // Durability may have moved the commit index: there may be a new Ready. Kicked
            // first so the driver is queued ahead of the replies `apply` wakes.
            self.kick();
            self.send_all(f.persisted_messages);
            self.apply(f.committed_entries);
            self.complete_read_states(f.read_states);
            self.maybe_snapshot();
            let _ = self.in_flight_done.0.try_send(());
        }
    }

    fn send_all(&self, msgs: Vec<Message>) {
        for m in msgs {
            let to = m.to;
            let is_snapshot = m.snapshot.is_some();
            match self.transport.send_message(to, FrameKind::Raft, &m) {
                Ok(()) | Err(SendError::QueueFull { .. }) if !is_snapshot => {}
                Ok(()) => {}
                Err(e) if is_snapshot => {
                    // Let the core fall back to probing instead of waiting on a snapshot that
                    // never left (over `message_bytes_max`, or the peer's queue is full).
                    error!(shard = self.shard, to, %e, "snapshot not sent");
                    self.node.borrow_mut().report_snapshot(to, false);
                }
                Err(SendError::UnknownPeer { .. }) => self.node.borrow_mut().report_unreachable(to),
                Err(e) => warn!(shard = self.shard, to, %e, "raft message not sent"),
            }
        }
    }

    /// A log failure means acknowledged state may not be on disk: crash rather than go on.
    fn fatal(&self, what: &str, e: impl std::fmt::Display) -> ! {
        error!(shard = self.shard, "fatal: {what}: {e}");
        eprintln!("mast: fatal: shard {}: {what}: {e}", self.shard);
        std::process::abort();
    }

    fn note_soft_state(&self, soft_state: Option<&mast_raft::SoftState>) {
        if let Some(ss) = soft_state {
            let was = self.leader.replace(ss.leader);
            if was != ss.leader {
                info!(shard = self.shard, leader = ss.leader, role = ?ss.role, "leader changed");
            }
            self.check_leadership();
        }
    }

    /// Queues `entries` to the log (replacing a conflicting suffix first). The returned
    /// future completes when they are durable; the log keeps truncations and appends in order.
    fn write_entries(&self, entries: &[Entry]) -> mast_log::Durable {
        let Some(first) = entries.first() else {
            return mast_log::Durable::done();
        };
        if first.index <= self.log.last_index() {
            if let Err(e) = self.log.truncate_suffix(first.index) {
                self.fatal("log truncate", e);
            }
        }
        let records: Vec<EntryRecord> = entries.iter().map(entry_to_record).collect();
        #[cfg(feature = "fault-injection")]
        crate::node::fault::fire(crate::node::fault::PanicAt::Log);
        match self.log.append(&records) {
            Ok(d) => d,
            Err(e) => self.fatal("log append", e),
        }
    }

    /// The whole `Ready` contract in one go, for a `Ready` that cannot be handed off.
    async fn handle_ready(&self, mut rd: Ready) {
        self.note_soft_state(rd.soft_state.as_ref());
        self.send_all(std::mem::take(&mut rd.messages));

        if let Some(snap) = rd.snapshot.take() {
            self.install_snapshot(snap).await;
        }
        let mut durable = Vec::with_capacity(2);
        durable.push(self.write_entries(&rd.entries));
        if let Some(hs) = rd.hard_state {
            // Term and vote must be durable before anything is said at that term. The commit
            // index is volatile in raft (a restarted node relearns it from the leader, or as
            // a sole voter by committing an entry of its new term), so a change of commit
            // alone does not cost a second fsync per batch: it is written with the next
            // term or vote change.
            let persisted = self.persisted_hard_state.get();
            if hs.term != persisted.term || hs.vote != persisted.vote {
                let hs = mast_log::HardState {
                    term: hs.term,
                    vote: hs.vote,
                    commit: hs.commit,
                };
                match self.log.save_hard_state(hs) {
                    Ok(d) => durable.push(d),
                    Err(e) => self.fatal("hard state", e),
                }
                self.persisted_hard_state.set(hs);
            }
        }
        for d in durable {
            if let Err(e) = d.await {
                self.fatal("log fsync", e);
            }
        }
        self.send_all(std::mem::take(&mut rd.persisted_messages));
        let committed = std::mem::take(&mut rd.committed_entries);
        let read_states = std::mem::take(&mut rd.read_states);
        self.apply(committed);
        self.complete_read_states(read_states);
        self.node.borrow_mut().advance(rd);
    }

    async fn install_snapshot(&self, snap: Snapshot) {
        let index = snap.meta.index;
        let (members, state) = match decode_group_snapshot::<S>(&snap.data) {
            Ok(decoded) => decoded,
            // The core already counts this snapshot as installed once the Ready is advanced,
            // so carrying on would leave state, log and core disagreeing. The frame was
            // checksummed and validated, so this means a bug or a corrupt leader: stop.
            Err(e) => self.fatal("invalid snapshot from the leader", e),
        };
        let meta = mast_log::SnapshotMeta {
            index,
            term: snap.meta.term,
            extra: encode_conf(&snap.meta.conf_state),
        };
        if let Err(e) = self.log.save_snapshot(meta, Bytes::from(snap.data)).await {
            self.fatal("snapshot save", e);
        }
        match self.log.reset(index, snap.meta.term) {
            Ok(d) => {
                if let Err(e) = d.await {
                    self.fatal("log reset", e);
                }
            }
            Err(e) => self.fatal("log reset", e),
        }
        self.snapshots
            .borrow_mut()
            .installed(index, state.snapshot_cost());
        *self.state.borrow_mut() = state;
        for (id, addrs) in &members {
            self.set_peer(*id, addrs);
        }
        self.members.borrow_mut().extend(members);
        info!(
            shard = self.shard,
            index, "installed snapshot from the leader"
        );
        self.wake_reads_applied();
    }

    fn apply(&self, entries: Vec<Entry>) {
        let bytes: u64 = entries.iter().map(|e| e.data.len() as u64).sum();
        self.snapshots.borrow_mut().applied_bytes(bytes);
        let mut replies = Vec::new();
        for e in entries {
            match e.kind {
                EntryKind::Normal if e.data.is_empty() => self.state.borrow_mut().skip(e.index),
                EntryKind::Normal => match Envelope::decode(&e.data) {
                    Ok((p, command)) => {
                        let outcome = self.state.borrow_mut().apply(e.index, command);
                        if p.proposer == self.node_id && p.boot == self.boot {
                            if let Some(w) = self.proposals.borrow_mut().remove(&p.request_id) {
                                replies.push((w, outcome));
                            }
                        }
                    }
                    // Written by a newer mast: applying around it would fork this replica
                    // from the ones that understand it.
                    Err(err @ envelope::EnvelopeError::UnknownVersion(_)) => {
                        self.fatal(&format!("entry {}", e.index), err)
                    }
                    // Every replica skips the same undecodable entry, so they stay equal.
                    Err(err) => {
                        error!(shard = self.shard, index = e.index, %err, "undecodable entry skipped");
                        self.state.borrow_mut().skip(e.index);
                    }
                },
                EntryKind::ConfChange => {
                    self.state.borrow_mut().skip(e.index);
                    match ConfChange::decode(&e.data) {
                        Ok(cc) => self.apply_conf_change(&cc),
                        Err(err) => {
                            error!(shard = self.shard, index = e.index, %err, "undecodable membership change")
                        }
                    }
                }
            }
        }
        if !replies.is_empty() {
            // Answered from a task queued now rather than inline, so that the driver and the
            // log writer it wakes get the next batch's write onto the ring before these
            // replies' sends, and the disk works while the kernel sends them (monoio submits
            // a turn's operations in the order its tasks queued them).
            monoio::spawn(async move {
                for (w, outcome) in replies {
                    let _ = w.send(outcome);
                }
            });
        }
        self.wake_reads_applied();
        self.check_leadership();
    }

    fn apply_conf_change(&self, cc: &ConfChange) {
        let cs = self.node.borrow_mut().apply_conf_change(cc);
        match cc.kind {
            ConfChangeKind::RemoveNode => {
                self.members.borrow_mut().remove(&cc.node_id);
                if cc.node_id == self.node_id {
                    warn!(shard = self.shard, "this node was removed from the group");
                    self.removed.set(true);
                } else {
                    self.transport.remove_peer(cc.node_id);
                }
            }
            _ => {
                if cc.node_id == self.node_id && self.removed.get() {
                    // Only after a restart on a snapshot that predates this node's addition.
                    info!(shard = self.shard, "this node is a member again");
                    self.removed.set(false);
                }
                if let Ok(addrs) = codec::decode::<MemberAddrs>(&cc.context) {
                    self.set_peer(cc.node_id, &addrs);
                    self.members.borrow_mut().insert(cc.node_id, addrs);
                }
            }
        }
        info!(shard = self.shard, change = ?cc.kind, node = cc.node_id, voters = ?cs.voters, learners = ?cs.learners, "membership changed");
    }

    /// Takes a snapshot when one is due. The state is serialized here, synchronously (the
    /// state machine must not move under it), but written and fsynced by a separate task so
    /// that heartbeats and appends keep flowing while a large snapshot goes to disk; the log
    /// is compacted once the snapshot is durable.
    fn maybe_snapshot(self: &Rc<Self>) {
        let (applied, keys) = {
            let state = self.state.borrow();
            (state.applied(), state.snapshot_cost())
        };
        if !self.snapshots.borrow().due(applied) {
            return;
        }
        let Some(term) = self.node.borrow().term_at(applied) else {
            return;
        };
        let data = encode_group_snapshot(&self.members.borrow(), &*self.state.borrow());
        let conf = self.node.borrow().applied_conf_state().clone();
        let meta = mast_log::SnapshotMeta {
            index: applied,
            term,
            extra: encode_conf(&conf),
        };
        self.snapshots.borrow_mut().started(applied, keys);
        let g = self.clone();
        monoio::spawn(async move {
            if let Err(e) = g.log.save_snapshot(meta, Bytes::from(data)).await {
                g.fatal("snapshot save", e);
            }
            if let Err(e) = g.log.compact(applied) {
                g.fatal("log compact", e);
            }
            g.snapshots.borrow_mut().finished(applied);
            info!(
                shard = g.shard,
                index = applied,
                "snapshot taken, log compacted"
            );
            // One may have come due while this was written (applies went on meanwhile); the
            // next apply would take it, but a group that applies nothing more (a removed
            // node) would otherwise never snapshot its last entries.
            g.maybe_snapshot();
        });
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn issue_reads(&self) {
        // Contexts are node id ‖ boot nonce ‖ counter: the leader matches acknowledgements
        // by context bytes, so they are unique across nodes and restarts.
        let Some(ctx) = self.reads.borrow_mut().issue(self.now_ms()) else {
            return;
        };
        let refused = self.node.borrow_mut().read_index(ctx.clone());
        if let Err(e) = refused {
            let err = match self.leader.get() {
                0 => GroupError::NoLeader { leader_hint: 0 },
                _ => GroupError::Refused(e.to_string()),
            };
            for w in self.reads.borrow_mut().issue_failed(&ctx) {
                let _ = w.0.send(Err(err.clone()));
            }
        }
    }

    fn complete_read_states(&self, states: Vec<ReadState>) {
        self.reads.borrow_mut().on_read_states(&states);
        self.wake_reads_applied();
    }

    /// Drops read batches whose ReadIndex was lost (a leader change, a dropped message): their
    /// clients have timed out already, and nothing else would ever remove them.
    fn sweep_lost_reads(&self) {
        let now = self.now_ms();
        self.reads
            .borrow_mut()
            .sweep(now, self.opts.request_timeout_ms);
    }

    fn wake_reads_applied(&self) {
        let applied = self.state.borrow().applied();
        let ready = self.reads.borrow_mut().applied(applied);
        for w in ready {
            let _ = w.0.send(Ok(()));
        }
    }

    fn check_serving(&self) -> Result<(), GroupError> {
        if self.removed.get() {
            return Err(GroupError::Removed);
        }
        if self.leader.get() == 0 {
            return Err(GroupError::NoLeader { leader_hint: 0 });
        }
        Ok(())
    }

    async fn wait<T>(&self, rx: oneshot::Receiver<T>) -> Result<T, GroupError> {
        match monoio::time::timeout(Duration::from_millis(self.opts.request_timeout_ms), rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) | Err(_) => Err(GroupError::Timeout),
        }
    }

    /// Proposes `command` and waits until it is committed and applied here.
    pub async fn propose(&self, command: &S::Command) -> Result<S::Outcome, GroupError> {
        self.propose_checked(command, None).await
    }

    /// Proposes `command` only if this replica leads `term` (checked in the same turn as the
    /// proposal, so the entry carries that term): for leader services whose commands are
    /// only valid within the leadership that chose them.
    pub async fn propose_as_leader(
        &self,
        command: &S::Command,
        term: u64,
    ) -> Result<S::Outcome, GroupError> {
        self.propose_checked(command, Some(term)).await
    }

    async fn propose_checked(
        &self,
        command: &S::Command,
        term: Option<u64>,
    ) -> Result<S::Outcome, GroupError> {
        self.check_serving()?;
        if term.is_some() && self.leader_ready_term() != term {
            return Err(GroupError::NotLeader {
                leader: self.leader.get(),
            });
        }
        if self.proposals.borrow().len() >= self.opts.pending_proposals_max {
            return Err(GroupError::Overloaded);
        }
        let request_id = self.next_request_id.get().wrapping_add(1);
        self.next_request_id.set(request_id);
        let data = Envelope {
            proposer: self.node_id,
            boot: self.boot,
            request_id,
        }
        .encode(&S::encode_command(command));
        let (tx, rx) = oneshot::channel();
        if let Err(e) = self.with_core(|n| n.propose(data)) {
            return Err(match self.leader.get() {
                0 => GroupError::NoLeader { leader_hint: 0 },
                _ => GroupError::Refused(e.to_string()),
            });
        }
        self.proposals.borrow_mut().insert(request_id, tx);
        self.kick();
        let r = self.wait(rx).await;
        if r.is_err() {
            self.proposals.borrow_mut().remove(&request_id);
        }
        r
    }

    /// Waits until this replica has applied everything committed before the call
    /// (ReadIndex): a read after it is linearizable.
    pub async fn read_barrier(&self) -> Result<(), GroupError> {
        self.check_serving()?;
        if self.sole_voter_has_applied_commit() {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        if self.reads.borrow_mut().push(ReadW(tx)).is_err() {
            return Err(GroupError::Overloaded);
        }
        self.kick();
        self.wait(rx).await?
    }

    /// With this leader as the only voter, no other node can commit, and every write is
    /// acknowledged only after it is applied here; so once everything committed is applied,
    /// local state is linearizable without a ReadIndex round. (Adding a voter takes effect
    /// when its entry is appended here, which turns this off before the voter can vote.)
    fn sole_voter_has_applied_commit(&self) -> bool {
        let node = self.node.borrow();
        node.role() == Role::Leader
            && node.conf_state().voters == [self.node_id]
            // Until an entry of its own term commits, a new leader's commit index may lag
            // entries committed (and acknowledged) before it took office.
            && node.term_at(node.commit()) == Some(node.term())
            && self.state.borrow().applied() >= node.commit()
    }

    /// Proposes a membership change and waits until this replica has applied a
    /// configuration in which it holds. Idempotent: a change that already holds succeeds at
    /// once, so a caller may retry a partly applied multi-shard change.
    pub async fn change_membership(&self, cc: ConfChange) -> Result<(), GroupError> {
        self.check_serving()?;
        let id = cc.node_id;
        let holds = |cs: &ConfState| match cc.kind {
            ConfChangeKind::AddLearner => cs.learners.contains(&id) || cs.voters.contains(&id),
            ConfChangeKind::AddVoter | ConfChangeKind::PromoteLearner => cs.voters.contains(&id),
            ConfChangeKind::RemoveNode => !cs.voters.contains(&id) && !cs.learners.contains(&id),
        };
        if holds(self.node.borrow().applied_conf_state()) {
            return Ok(());
        }
        self.with_core(|n| n.propose_conf_change(cc.clone()))
            .map_err(|e| GroupError::Refused(e.to_string()))?;
        self.kick();
        // A follower forwards the change and never hears if the leader refused it (a
        // transfer in progress, a leader that has not yet committed in its term, a dropped
        // message), so the answer is the applied configuration, and the change is proposed
        // again every election timeout until it holds. Repeats are harmless: the
        // configuration fold is idempotent and the leader allows one pending change at a time.
        let deadline =
            std::time::Instant::now() + Duration::from_millis(self.opts.request_timeout_ms);
        let retry_every =
            Duration::from_millis(self.opts.tick_ms * self.opts.election_timeout_ticks);
        let mut next_retry = std::time::Instant::now() + retry_every;
        while !holds(self.node.borrow().applied_conf_state()) {
            let now = std::time::Instant::now();
            if now > deadline {
                return Err(GroupError::Timeout);
            }
            if now >= next_retry {
                let _ = self.with_core(|n| n.propose_conf_change(cc.clone()));
                self.kick();
                next_retry = now + retry_every;
            }
            monoio::time::sleep(Duration::from_millis(self.opts.tick_ms)).await;
        }
        Ok(())
    }

    /// Runs `f` on the raft core. Request handlers get here too (proposals, membership,
    /// transfers): a panic in the core must stay fatal rather than be answered 500, so the
    /// call is a `FatalSection` (never held across an await).
    fn with_core<R>(&self, f: impl FnOnce(&mut RawNode<LogStorage>) -> R) -> R {
        let _fatal = mast_http::panic::FatalSection::enter();
        f(&mut self.node.borrow_mut())
    }

    pub fn transfer_leader(&self, to: u64) -> Result<(), GroupError> {
        self.with_core(|n| n.transfer_leader(to))
            .map_err(|e| GroupError::Refused(e.to_string()))?;
        self.kick();
        Ok(())
    }

    /// The state machine as applied here (read it after [`Group::read_barrier`] for a
    /// linearizable read).
    pub fn state(&self) -> std::cell::Ref<'_, S> {
        self.state.borrow()
    }

    pub fn leader(&self) -> u64 {
        self.leader.get()
    }

    pub fn request_timeout_ms(&self) -> u64 {
        self.opts.request_timeout_ms
    }

    pub fn is_leader(&self) -> bool {
        self.node.borrow().role() == Role::Leader
    }

    pub fn members(&self) -> BTreeMap<u64, MemberAddrs> {
        self.members.borrow().clone()
    }

    /// Whether this node has been removed from the group (it then refuses every request).
    pub fn is_removed(&self) -> bool {
        self.removed.get()
    }

    pub fn raft_status(&self) -> Status {
        self.node.borrow().status()
    }

    pub fn status(&self) -> GroupStatus {
        let st = self.node.borrow().status();
        let state = self.state.borrow();
        let log = self.log.stats();
        GroupStatus {
            leader: st.leader,
            role: match st.role {
                Role::Leader => "leader",
                Role::Candidate => "candidate",
                Role::PreCandidate => "pre_candidate",
                Role::Follower => "follower",
            },
            term: st.term,
            commit: st.commit,
            applied: state.applied(),
            first_index: st.first_index,
            last_index: st.last_index,
            snapshot_index: self.snapshots.borrow().last_index(),
            removed: self.removed.get(),
            voters: st.conf_state.voters.clone(),
            learners: st.conf_state.learners.clone(),
            keys: state.snapshot_cost(),
            progress: st
                .progress
                .iter()
                .map(|p| ProgressView {
                    id: p.id,
                    matched: p.matched,
                    next: p.next,
                    state: format!("{:?}", p.state).to_lowercase(),
                    lag_entries: st.last_index.saturating_sub(p.matched),
                    recent_active: p.recent_active,
                    learner: p.is_learner,
                })
                .collect(),
            log_batches: log.batches,
            log_entries: log.entries,
            log_bytes: log.bytes,
            log_syncs: log.syncs,
        }
    }

    pub fn transport_stats(&self) -> mast_wire::TransportStats {
        self.transport.stats()
    }

    /// Whether `id` is a voter this leader has heard from recently and that has the whole
    /// log: a transfer to it completes quickly instead of stalling writes.
    pub fn is_healthy_voter(&self, id: u64) -> bool {
        let st = self.node.borrow().status();
        st.conf_state.voters.contains(&id)
            && st
                .progress
                .iter()
                .any(|p| p.id == id && p.recent_active && p.matched >= st.commit)
    }

    pub fn is_closed(&self) -> bool {
        self.transport.is_closed()
    }

    pub fn close(&self) {
        self.transport.close();
    }
}
