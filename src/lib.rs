//! mast: the metadata master of a distributed storage cluster.
//! See ARCHITECTURE.md for the map of the code.

pub mod admin;
pub mod config;
pub mod runtime;
pub mod server;
