//! Peer frames and the per-shard peer transport of mast.
//!
//! - [`frame`]: the pure codec: 16-byte checksummed header + rkyv payload, incremental
//!   decoding with a size limit checked before the payload is buffered.
//! - [`fragment`]: splitting a message too large for one frame into fragment frames, and
//!   reassembling them (one message at a time per connection, bounded).
//! - [`message`]: serializing rkyv messages straight into frames, validated access, and the
//!   connection handshake messages.
//! - [`transport`]: one [`PeerTransport`] per shard on monoio: lazy dialing with handshake
//!   and jittered backoff, bounded per-peer send queues that drop instead of blocking,
//!   batched writes, and an accept loop whose readers push validated frames into a bounded
//!   inbound queue (TCP backpressure when it is full).
//!
//! See the crate's README.md for the wire layout and the drop/backpressure policy.

#![warn(missing_docs)]

// Re-exported so users (and the fuzz crate) name the same versions as the API.
pub use bytes;
pub use rkyv;

pub mod fragment;
pub mod frame;
pub mod message;
pub mod transport;

pub use fragment::{
    encode_fragments, fragment_plan, FragmentError, FragmentHeader, Reassembler,
    FRAGMENT_HEADER_BYTES,
};
pub use frame::{
    encode_frame, frame_bytes, Frame, FrameDecoder, FrameError, FrameKind, FRAME_BYTES_MAX_DEFAULT,
    HEADER_BYTES, MAGIC, PAYLOAD_ALIGN, VERSION,
};
pub use message::{
    access_checked, decode_message, encode_message, Handshake, HandshakeAck, HandshakeReject,
    MessageError, PayloadWriter, RejectReason, LISTEN_ADDR_BYTES_MAX, PROTOCOL_VERSION,
};
pub use transport::{
    ConfigError, PeerSender, PeerStats, PeerTransport, SendError, TransportConfig, TransportError,
    TransportStats,
};
