//! mast: the metadata master of a distributed storage cluster.
//! See ARCHITECTURE.md for the map of the code. The layers, bottom up:
//! - [`replica`]: one shard's raft replica (driver, log, transport, leader calls), knowing no
//!   domain: it applies committed commands to a [`replica::StateMachine`];
//! - [`meta`]: the meta table, that state machine, one module per domain (kv, global, …);
//! - [`services`]: leader-only services (TSO, ID allocator) on group 0's leader;
//! - [`cubefs`]: the CubeFS master's HTTP dialect and routes over the `meta::cubefs` registry;
//! - [`admintask`]: the CubeFS master's admin task manager (heartbeats, liveness, tasks to
//!   storage nodes); [`agent`]: `mast node`, the storage node side;
//! - [`node`]: the process: config, runtime, start-up, the shard context, admin endpoints;
//! - [`ctl`]: `mast ctl`, the operator's command-line client.

pub mod admintask;
pub mod agent;
pub mod codec;
pub mod ctl;
pub mod cubefs;
pub mod meta;
pub mod milvus;
pub mod node;
pub mod placement;
pub mod replica;
pub mod services;
