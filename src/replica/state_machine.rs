//! The seam between replication and state: the replica applies committed commands to a
//! state machine it knows nothing else about.

/// One section of a snapshot: a table's tag, the version of its format, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub tag: u16,
    pub version: u16,
    pub bytes: Vec<u8>,
}

/// Leadership as the domains need it for what is not replicated (the TSO position, node
/// liveness, expiring grants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderEvent {
    /// This replica leads `term`, and an entry of `term` has applied here: everything any
    /// earlier leader committed is in the state.
    Ready { term: u64 },
    /// This replica no longer leads (it did, or was about to).
    SteppedDown,
}

/// A replicated state machine. Apply must be deterministic: anything time-dependent (a
/// timestamp, an expiry) is chosen when proposing and travels in the command.
pub trait StateMachine: Sized + 'static {
    /// A change, as the domain APIs propose it.
    type Command;
    /// What applying a command answers its proposer; crosses threads to the request's shard.
    type Outcome: Send + 'static;

    /// The state of a replica that has applied nothing.
    fn empty() -> Self;
    fn encode_command(command: &Self::Command) -> Vec<u8>;
    /// Applies the command bytes of entry `index` (`index` > `applied()`). Bytes this state
    /// machine cannot decode are an outcome, not a panic: every replica meets the same bytes.
    fn apply(&mut self, index: u64, command: &[u8]) -> Self::Outcome;
    /// Entry `index` changes no table (a no-op or membership entry).
    fn skip(&mut self, index: u64);
    /// Index of the last entry applied.
    fn applied(&self) -> u64;
    /// The state as snapshot sections (at `applied()`).
    fn snapshot(&self) -> Vec<Section>;
    /// Rebuilds the state from sections; a table without a section starts empty (it was
    /// added after the snapshot was written). A section of an unknown table is an error.
    fn restore(sections: Vec<Section>) -> Result<Self, String>;
    /// What a snapshot costs, in entries' worth of work (for the KV: its keys). The next
    /// snapshot waits for at least as many applied entries, so snapshots cost amortized O(1)
    /// per write however large the state grows.
    fn snapshot_cost(&self) -> u64;
    /// Leadership changed (see [`LeaderEvent`]).
    fn on_leader_event(&mut self, _event: LeaderEvent) {}
}
