//! mast-http: the HTTP/1.1 server layer every mast API is served through.
//!
//! Two layers:
//! - a sans-I/O [`RequestDecoder`] (bytes in, [`Request`]s or one final [`HttpError`] out) and
//!   a response encoder ([`encode_response`]);
//! - the connection layer, [`serve`], running on one monoio runtime per shard: accept loop
//!   with a connection cap, one task per connection, keep-alive, pipelining with in-order
//!   responses batched into one write, timeouts, backpressure and graceful drain.
//!
//! Handlers are registered on a [`Router`] and return a [`Response`]; errors use the one API
//! error format, `{"error":{"status":..,"kind":"..","message":".."}}` ([`Response::error`]).
//! [`HttpMetrics`] counts per shard; snapshots merge across shards and render as Prometheus
//! text. A panicking handler is answered 500 and counted; it does not end its shard
//! ([`panic`]). See the crate README for the limits and the statuses they produce.

#![warn(missing_docs)]

mod decoder;
mod limits;
mod metrics;
pub mod panic;
mod request;
mod response;
mod router;
mod server;
pub mod stream;

pub use decoder::{Decoded, HttpError, Phase, RequestDecoder, CHUNK_LINE_BYTES_MAX};
pub use limits::{Limits, HEADER_COUNT_CAP};
pub use metrics::{HttpMetrics, HttpMetricsSnapshot, TimeoutKind, LATENCY_BUCKETS_SECONDS};
pub use request::{percent_decode, Method, Request, Version};
pub use response::{
    encode_response, reason_phrase, ConnectionHeader, ErrorBody, ErrorDetail, HeaderName,
    HeaderValue, Response, BODY_COPY_BYTES_MAX,
};
pub use router::{Guard, Handler, HandlerFuture, Router};
pub use server::{serve, ShutdownSignal, ShutdownWait};
pub use stream::{body_channel, BodySender, BodyStream, SendError};

/// The `bytes` crate this API uses (`BytesMut` for the decoder, `Bytes` for bodies).
pub use bytes;
