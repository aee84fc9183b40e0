//! `mast-load`: an HTTP/1.1 load generator built on monoio, thread per core.
//!
//! It drives any HTTP server (mast, etcd's JSON gateway, nginx) with many connections, an
//! optional pipeline depth, in closed loop (as fast as responses come back) or open loop (a
//! constant request rate with latency measured from the *intended* send time, so coordinated
//! omission is corrected). Workloads sit behind the [`workload::Workload`] trait; results are
//! HdrHistograms that [`report`] turns into a summary, JSON, an interval log and PNG plots.

pub mod api;
pub mod client;
pub mod cubefs;
pub mod http;
pub mod milvus;
pub mod plot;
pub mod report;
pub mod stats;
pub mod workload;

mod notify;
