//! mast: the metadata master of a distributed storage cluster.
//! See ARCHITECTURE.md for the map of the code.

pub mod admin;
pub mod cluster;
pub mod cluster_api;
pub mod codec;
pub mod config;
pub mod group;
pub mod kv;
pub mod kv_api;
pub mod runtime;
pub mod server;
