//! Plain data types exchanged with storage and the transport. All derive rkyv so the
//! transport can frame and validate them without copying.

use rkyv::{Archive, Deserialize, Serialize};

/// What an entry carries.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EntryKind {
    /// Application command (an empty one is the leader's no-op).
    #[default]
    Normal,
    /// An encoded [`ConfChange`] (see [`ConfChange::encode`]).
    ConfChange,
}

/// One log entry.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    /// Term of the leader that created the entry.
    pub term: u64,
    /// Position in the log (from 1).
    pub index: u64,
    pub kind: EntryKind,
    /// Application payload (an encoded [`ConfChange`] for conf-change entries).
    pub data: Vec<u8>,
}

impl Entry {
    /// Bytes this entry counts for in size limits (payload plus a fixed header).
    pub fn size_bytes(&self) -> u64 {
        self.data.len() as u64 + ENTRY_OVERHEAD_BYTES
    }
}

/// Fixed per-entry cost added to the payload when enforcing byte limits, so that empty
/// entries are not free.
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

/// State that must be durable before messages depending on it are sent.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    /// Latest term seen.
    pub term: u64,
    /// Node voted for in `term` (0 = none).
    pub vote: u64,
    /// Highest index known committed.
    pub commit: u64,
}

/// A cluster configuration: who votes and who only receives the log.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfState {
    /// Sorted, unique.
    pub voters: Vec<u64>,
    /// Sorted, unique, disjoint from `voters`.
    pub learners: Vec<u64>,
}

impl ConfState {
    /// A configuration of the given voters and no learners.
    pub fn with_voters(voters: impl IntoIterator<Item = u64>) -> Self {
        let mut v: Vec<u64> = voters.into_iter().filter(|&id| id != 0).collect();
        v.sort_unstable();
        v.dedup();
        ConfState {
            voters: v,
            learners: Vec::new(),
        }
    }

    /// Whether `id` votes.
    pub fn is_voter(&self, id: u64) -> bool {
        self.voters.binary_search(&id).is_ok()
    }

    /// Whether `id` is a learner.
    pub fn is_learner(&self, id: u64) -> bool {
        self.learners.binary_search(&id).is_ok()
    }

    /// Whether `id` is a member at all.
    pub fn contains(&self, id: u64) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Checks that `cc` is a real change of this configuration (used when proposing).
    pub fn check(&self, cc: &ConfChange) -> Result<(), crate::Error> {
        let id = cc.node_id;
        if id == 0 {
            return Err(crate::Error::InvalidConfChange("node id 0 is reserved"));
        }
        match cc.kind {
            ConfChangeKind::AddVoter if self.is_voter(id) => {
                Err(crate::Error::InvalidConfChange("node is already a voter"))
            }
            ConfChangeKind::AddLearner if self.contains(id) => {
                Err(crate::Error::InvalidConfChange("node is already a member"))
            }
            ConfChangeKind::RemoveNode if !self.contains(id) => {
                Err(crate::Error::InvalidConfChange("node is not a member"))
            }
            ConfChangeKind::RemoveNode if self.voters == [id] => Err(
                crate::Error::InvalidConfChange("cannot remove the last voter"),
            ),
            ConfChangeKind::PromoteLearner if !self.is_learner(id) => {
                Err(crate::Error::InvalidConfChange("node is not a learner"))
            }
            _ => Ok(()),
        }
    }

    /// The configuration after `cc`. Total and deterministic: every replica folds the same
    /// log to the same configuration, even for changes that turn out to be no-ops.
    pub fn applied(&self, cc: &ConfChange) -> ConfState {
        let mut next = self.clone();
        let id = cc.node_id;
        if id == 0 {
            return next;
        }
        next.voters.retain(|&v| v != id);
        next.learners.retain(|&v| v != id);
        match cc.kind {
            ConfChangeKind::AddVoter | ConfChangeKind::PromoteLearner => next.voters.push(id),
            ConfChangeKind::AddLearner => {
                if self.is_voter(id) {
                    // Demotion is not a supported single-step change; keep the voter.
                    next.voters.push(id);
                } else {
                    next.learners.push(id);
                }
            }
            ConfChangeKind::RemoveNode => {
                if self.voters == [id] {
                    // Never fold to an empty voter set.
                    next.voters.push(id);
                }
            }
        }
        next.voters.sort_unstable();
        next.learners.sort_unstable();
        next
    }
}

/// Snapshot metadata: the last index and term it covers and the configuration there.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotMeta {
    /// Last index the snapshot covers.
    pub index: u64,
    /// Term of the entry at `index`.
    pub term: u64,
    /// Configuration as of `index`.
    pub conf_state: ConfState,
}

/// A snapshot of the application state machine.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    /// The application's state machine, opaque to raft.
    pub data: Vec<u8>,
}

/// Message types. Local-only events (tick, campaign, propose) are methods, not messages.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageKind {
    /// Replication: `index`/`log_term` name the entry before `entries`.
    #[default]
    Append,
    /// `index` = last matched index, or (with `reject`) the rejected index with the
    /// follower's conflict hint in `reject_hint`/`log_term`.
    AppendResp,
    /// Vote request: `index`/`log_term` describe the candidate's last entry; `context` is
    /// `b"transfer"` for a leadership-transfer campaign (it overrides leader leases).
    Vote,
    /// Vote answer (`reject` = refused).
    VoteResp,
    /// Pre-vote request for term `term` (the sender's term is not changed).
    PreVote,
    /// Pre-vote answer.
    PreVoteResp,
    /// Carries `snapshot` to a follower that needs compacted entries.
    Snapshot,
    /// `commit` is capped at the follower's match; `index` carries the leader's tick for the
    /// lease; `context` carries a ReadIndex round.
    Heartbeat,
    /// Echoes the heartbeat's `index` and `context`.
    HeartbeatResp,
    /// A proposal forwarded from a follower to the leader (term 0).
    Propose,
    /// A ReadIndex request forwarded to the leader (term 0); `context` is the request id.
    ReadIndex,
    /// The leader's answer: `index` is the read index, `context` the request id.
    ReadIndexResp,
    /// A leadership-transfer request forwarded to the leader (term 0); `index` = target.
    TransferLeader,
    /// Tells the transfer target to campaign now.
    TimeoutNow,
}

/// A raft message between two replicas of one group (the transport adds the group id).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub kind: MessageKind,
    /// Recipient node id.
    pub to: u64,
    /// Sender node id.
    pub from: u64,
    /// Sender's term (0 for requests forwarded to the leader).
    pub term: u64,
    /// Meaning depends on `kind` (see [`MessageKind`]).
    pub log_term: u64,
    /// Meaning depends on `kind` (see [`MessageKind`]).
    pub index: u64,
    pub entries: Vec<Entry>,
    /// Leader's commit index (appends, heartbeats).
    pub commit: u64,
    pub reject: bool,
    pub reject_hint: u64,
    pub snapshot: Option<Snapshot>,
    pub context: Vec<u8>,
}

/// Kinds of single-server membership change.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfChangeKind {
    /// Add a voter (or promote a learner).
    AddVoter,
    /// Add a non-voting member that receives the log.
    AddLearner,
    /// Remove a voter or learner.
    RemoveNode,
    /// Make a learner a voter.
    PromoteLearner,
}

/// A membership change. `context` lets the application carry e.g. the node's address.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ConfChange {
    pub kind: ConfChangeKind,
    /// The node added, removed or promoted.
    pub node_id: u64,
    /// Opaque to raft.
    pub context: Vec<u8>,
}

impl ConfChange {
    /// Encodes as `[kind u8][node_id u64 LE][context]`, the payload of a ConfChange entry.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.context.len());
        out.push(match self.kind {
            ConfChangeKind::AddVoter => 0,
            ConfChangeKind::AddLearner => 1,
            ConfChangeKind::RemoveNode => 2,
            ConfChangeKind::PromoteLearner => 3,
        });
        out.extend_from_slice(&self.node_id.to_le_bytes());
        out.extend_from_slice(&self.context);
        out
    }

    /// Decodes an entry payload written by [`ConfChange::encode`].
    pub fn decode(data: &[u8]) -> Result<ConfChange, crate::Error> {
        let (&kind, rest) = data.split_first().ok_or(crate::Error::CorruptConfChange)?;
        let kind = match kind {
            0 => ConfChangeKind::AddVoter,
            1 => ConfChangeKind::AddLearner,
            2 => ConfChangeKind::RemoveNode,
            3 => ConfChangeKind::PromoteLearner,
            _ => return Err(crate::Error::CorruptConfChange),
        };
        let id_bytes: [u8; 8] = rest
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or(crate::Error::CorruptConfChange)?;
        Ok(ConfChange {
            kind,
            node_id: u64::from_le_bytes(id_bytes),
            context: rest.get(8..).unwrap_or_default().to_vec(),
        })
    }
}

/// The answer to a ReadIndex request: once the application has applied up to `index`, a
/// read issued with `request_ctx` may be served linearizably.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadState {
    /// Serve the read once the applied index reaches this.
    pub index: u64,
    /// The context given to `read_index`.
    pub request_ctx: Vec<u8>,
}

/// A replica's role.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// Volatile state worth telling the application about when it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SoftState {
    /// Known leader (0 = none).
    pub leader: u64,
    pub role: Role,
}
