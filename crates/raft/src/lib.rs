//! mast's raft consensus core: a pure, deterministic state machine.
//!
//! No I/O, no clock, no hidden randomness: the caller feeds [`RawNode::tick`],
//! [`RawNode::step`] and proposals, then drains a [`Ready`], persists and sends what it
//! says in the documented order, and calls [`RawNode::advance`]. Election jitter comes from
//! an RNG seeded by the caller. See the crate README for the ordering contract and the
//! membership-change design (single-server changes, effective when appended).
//!
//! [`pipeline`] holds the driver's rules on top of that contract (which `Ready` may be
//! handed off with `advance_unpersisted`, the drain before one handled whole, the in-flight
//! bound, read batching, the snapshot schedule), shared by the server and the simulator.

mod log;
pub mod pipeline;
mod progress;
mod raw_node;
mod storage;
mod types;

pub use progress::ProgressState;
pub use raw_node::{ProgressStatus, RawNode, Ready, Status, Unpersisted};
pub use storage::{MemStorage, Storage, StorageError};
pub use types::{
    ArchivedConfChange, ArchivedEntry, ArchivedMessage, ArchivedSnapshot, ConfChange,
    ConfChangeKind, ConfState, Entry, EntryKind, HardState, Message, MessageKind, ReadState, Role,
    Snapshot, SnapshotMeta, SoftState, ENTRY_OVERHEAD_BYTES,
};

/// How linearizable reads are confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadOnlyOption {
    /// ReadIndex: the leader confirms it still leads with a heartbeat round.
    #[default]
    Safe,
    /// The leader answers from its lease (a quorum acknowledged it within the last election
    /// timeout, and followers refuse to vote during that time). Requires `check_quorum`
    /// and clocks that tick at the same rate on every node.
    LeaseBased,
}

/// Planted bugs the simulator must catch (feature `mutants` only).
#[cfg(feature = "mutants")]
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mutant {
    #[default]
    None,
    /// Commit an entry of an earlier term by counting its replicas (raft §5.4.2, figure 8).
    CommitPriorTermByCount,
    /// Grant votes without the log up-to-date check (§5.4.1).
    VoteWithoutLogCheck,
    /// Answer ReadIndex without confirming leadership with a heartbeat round.
    ReadIndexWithoutQuorum,
    /// Count the leader's own entries towards a quorum before they are durable.
    CountUndurableSelf,
    /// Treat entries handed off by `advance_unpersisted` as durable at once.
    PersistOnHandOff,
    /// `pipeline`: count a ticket finished when the completer picks it up, before its
    /// durability (the bug fixed by 53f32cb): a Whole step may then run ahead of it.
    DrainOnDequeue,
    /// A pre-candidate whose pre-vote round failed never starts another one (it waits for
    /// someone else's election): the stuck pre-candidate of a starved cluster.
    PreCandidateNeverRetries,
}

/// Configuration of one replica.
#[derive(Debug, Clone)]
pub struct Config {
    /// This replica's id (non-zero).
    pub id: u64,
    /// Base election timeout; the actual one is drawn from `[t, 2t)` by the seeded RNG.
    pub election_timeout_ticks: u64,
    /// Interval between leader heartbeats; must be less than the election timeout.
    pub heartbeat_interval_ticks: u64,
    /// Upper bound on the entry bytes of one append message (at least one entry is sent).
    pub max_msg_bytes: u64,
    /// Appends in flight to one follower in Replicate state.
    pub max_inflight_msgs: usize,
    /// Entry bytes in flight to one follower in Replicate state.
    pub max_inflight_bytes: u64,
    /// Proposals are refused while the leader's uncommitted entries exceed this.
    pub max_uncommitted_bytes: u64,
    /// Committed-entry bytes handed out in one `Ready` (at least one entry).
    pub max_apply_bytes: u64,
    /// Pending ReadIndex requests on a leader.
    pub max_pending_reads: usize,
    /// A leader without a quorum for an election timeout steps down; followers that heard
    /// from a leader within the timeout ignore vote requests.
    pub check_quorum: bool,
    /// Campaign with a pre-vote round first so a partitioned node cannot disrupt.
    pub pre_vote: bool,
    pub read_only: ReadOnlyOption,
    /// Followers forward proposals to the leader; otherwise they refuse with a hint.
    pub proposal_forwarding: bool,
    /// Last index the application has applied (its state machine is at this index).
    pub applied: u64,
    #[cfg(feature = "mutants")]
    #[doc(hidden)]
    pub mutant: Mutant,
}

impl Config {
    /// Defaults suitable for a LAN with a 100 ms tick.
    pub fn new(id: u64) -> Self {
        Config {
            id,
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 1,
            max_msg_bytes: 1 << 20,
            max_inflight_msgs: 256,
            max_inflight_bytes: 32 << 20,
            max_uncommitted_bytes: 64 << 20,
            max_apply_bytes: 64 << 20,
            max_pending_reads: 65536,
            check_quorum: true,
            pre_vote: true,
            read_only: ReadOnlyOption::Safe,
            proposal_forwarding: true,
            applied: 0,
            #[cfg(feature = "mutants")]
            mutant: Mutant::None,
        }
    }

    /// Checks the configuration, naming the offending field.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |s: &str| Err(Error::Config(s.to_string()));
        if self.id == 0 {
            return bad("id must be non-zero");
        }
        if self.heartbeat_interval_ticks == 0 {
            return bad("heartbeat_interval_ticks must be positive");
        }
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks {
            return bad("election_timeout_ticks must be greater than heartbeat_interval_ticks");
        }
        if self.election_timeout_ticks > 1 << 32 {
            return bad("election_timeout_ticks is unreasonably large");
        }
        if self.max_msg_bytes == 0 {
            return bad("max_msg_bytes must be positive");
        }
        if self.max_inflight_msgs == 0 {
            return bad("max_inflight_msgs must be positive");
        }
        if self.max_inflight_bytes < self.max_msg_bytes {
            return bad("max_inflight_bytes must be at least max_msg_bytes");
        }
        if self.max_uncommitted_bytes == 0 {
            return bad("max_uncommitted_bytes must be positive");
        }
        if self.max_apply_bytes == 0 {
            return bad("max_apply_bytes must be positive");
        }
        if self.max_pending_reads == 0 {
            return bad("max_pending_reads must be positive");
        }
        if self.read_only == ReadOnlyOption::LeaseBased && !self.check_quorum {
            return bad("read_only LeaseBased requires check_quorum");
        }
        Ok(())
    }
}

/// Errors from the raft core. Proposal errors tell the caller what to do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid config: {0}")]
    Config(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("no leader is known; retry later")]
    NoLeader,
    #[error("not the leader; the leader is node {leader}")]
    NotLeader { leader: u64 },
    #[error("leadership is being transferred to node {to}; retry later")]
    TransferInProgress { to: u64 },
    #[error("uncommitted entries exceed max_uncommitted_bytes; retry later")]
    UncommittedBytesExceeded,
    #[error("a configuration change is still uncommitted; one change at a time")]
    ConfChangePending,
    #[error("the leader has not committed an entry in its term yet; retry later")]
    LeaderNotReady,
    #[error("invalid configuration change: {0}")]
    InvalidConfChange(&'static str),
    #[error("corrupt configuration change entry")]
    CorruptConfChange,
    #[error("too many pending reads (max_pending_reads)")]
    TooManyPendingReads,
    #[error("invalid message: {0}")]
    InvalidMessage(&'static str),
    #[error("leader sent entries conflicting with committed index {0}")]
    CommittedConflict(u64),
    #[error("inconsistent persisted state: {0}")]
    CorruptState(String),
    #[error("node {0} is not a voter and cannot become leader")]
    InvalidTransferTarget(u64),
    #[error("ready() called again before advance()")]
    ReadyOutstanding,
}
