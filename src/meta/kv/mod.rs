//! The KV table: etcd raftexample's keyspace, one partition per shard (`state`), and its HTTP
//! API (`api`).

pub mod api;
mod state;

pub use state::{Command, Cond, Item, KvState, Outcome, SnapshotError};

/// The KV table's commands, as the meta table names them.
pub type KvCommand = Command;
