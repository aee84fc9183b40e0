//! The node: process start and stop, the shard runtime and mesh, configuration, cluster
//! identity, the shard context handlers depend on, and the node-level HTTP endpoints.

pub mod admin;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod errors;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod members_api;
pub mod panics;
pub mod runtime;
pub mod server;
pub mod shard;
pub mod stalls;
