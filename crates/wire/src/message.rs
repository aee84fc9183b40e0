//! rkyv payloads: serializing straight into a frame, validated access, and the handshake
//! messages.

use bytes::BytesMut;
use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::ser::{Positional, Writer};
use rkyv::{Archive, Deserialize, Portable, Serialize};

use crate::frame::{begin_frame, finish_frame, FrameError, FrameKind};

/// Version of the handshake and payload schemas, checked by the acceptor. Bump it when an
/// archived message layout changes incompatibly.
pub const PROTOCOL_VERSION: u16 = 1;

/// Why a payload could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// bytecheck refused the payload (truncated, misaligned, out-of-range pointer, bad
    /// enum tag, invalid UTF-8 ...), or serialization failed.
    #[error("invalid rkyv payload: {0}")]
    Rkyv(#[from] rancor::Error),
    /// The serialized message does not fit in a frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// rkyv writer appending to a `BytesMut` with positions relative to where the payload
/// starts, so the archive's alignment holds once the receiver copies the payload into an
/// aligned buffer. Public only because it appears in [`encode_message`]'s bounds.
pub struct PayloadWriter<'o> {
    out: &'o mut BytesMut,
    base: usize,
}

impl Positional for PayloadWriter<'_> {
    fn pos(&self) -> usize {
        self.out.len() - self.base
    }
}

impl<E> Writer<E> for PayloadWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        self.out.extend_from_slice(bytes);
        Ok(())
    }
}

/// Serializes `value` with rkyv directly into a new frame appended to `out` (no
/// intermediate buffer). On error `out` is left as it was.
pub fn encode_message<T>(kind: FrameKind, value: &T, out: &mut BytesMut) -> Result<(), MessageError>
where
    T: for<'o, 'a> Serialize<HighSerializer<PayloadWriter<'o>, ArenaHandle<'a>, rancor::Error>>,
{
    let start = begin_frame(out);
    if let Err(e) = serialize_payload(value, out) {
        out.truncate(start);
        return Err(e);
    }
    finish_frame(out, start, kind)?;
    Ok(())
}

/// Appends `value`'s rkyv archive to `out`, positions relative to where it starts (so it
/// is valid once copied to an aligned buffer). On error, bytes may have been appended.
pub(crate) fn serialize_payload<T>(value: &T, out: &mut BytesMut) -> Result<(), MessageError>
where
    T: for<'o, 'a> Serialize<HighSerializer<PayloadWriter<'o>, ArenaHandle<'a>, rancor::Error>>,
{
    let writer = PayloadWriter {
        base: out.len(),
        out: &mut *out,
    };
    rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, writer)?;
    Ok(())
}

/// Validates `payload` (bytecheck) as an archived `T` and returns a reference into it.
///
/// `payload` must start at a 16-byte aligned address, as [`crate::Frame::payload`] does;
/// a misaligned buffer is reported as an error, never read.
pub fn access_checked<T>(payload: &[u8]) -> Result<&T::Archived, MessageError>
where
    T: Archive,
    T::Archived: Portable + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    Ok(rkyv::access::<T::Archived, rancor::Error>(payload)?)
}

/// Validates `payload` and deserializes it into an owned `T`.
pub fn decode_message<T>(payload: &[u8]) -> Result<T, MessageError>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    Ok(rkyv::from_bytes::<T, rancor::Error>(payload)?)
}

/// Longest [`Handshake::listen_addr`] accepted, in bytes: the longest textual socket
/// address (a scoped IPv6 one) is well under this.
pub const LISTEN_ADDR_BYTES_MAX: usize = 64;

/// First frame on every peer connection, sent by the dialer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// The cluster the dialer belongs to; a mismatch is refused.
    pub cluster_id: u64,
    /// The dialer's node id.
    pub node_id: u64,
    /// The dialer's shard; must equal the acceptor's (shard i talks to shard i).
    pub shard: u32,
    /// The dialer's [`PROTOCOL_VERSION`].
    pub protocol_version: u16,
    /// Where the dialer's own shard listener can be reached, as text (`"10.0.0.4:7100"`,
    /// `"[::1]:7100"`). The acceptor answers over its own outbound connection, so it needs
    /// this to reply to a node it has no address for yet. An unspecified IP (`0.0.0.0`)
    /// means "the IP this connection comes from". Unparseable text, port 0, a multicast or
    /// broadcast IP, or more than [`LISTEN_ADDR_BYTES_MAX`] bytes is refused
    /// ([`RejectReason::BadAddress`]).
    pub listen_addr: String,
}

/// The acceptor's yes. The dialer checks that it reached the node and shard it meant to
/// (an address may have been reused by another node).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeAck {
    /// The acceptor's cluster id.
    pub cluster_id: u64,
    /// The acceptor's node id.
    pub node_id: u64,
    /// The acceptor's shard.
    pub shard: u32,
}

/// Why an acceptor refused a handshake.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The dialer belongs to another cluster.
    ClusterMismatch,
    /// The dialer is another shard than the acceptor.
    ShardMismatch,
    /// The dialer claims the acceptor's own node id.
    SelfConnection,
    /// The dialer is not a known member and the acceptor only talks to members.
    UnknownNode,
    /// The dialer speaks another protocol version.
    ProtocolVersion,
    /// The dialer's advertised listen address is unusable (see [`Handshake::listen_addr`]).
    BadAddress,
}

/// The acceptor's no; it closes the connection after sending it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct HandshakeReject {
    /// Machine-readable reason.
    pub reason: RejectReason,
    /// Human-readable detail for the dialer's log.
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameDecoder;

    #[test]
    fn message_round_trips_through_a_frame() {
        let hs = Handshake {
            cluster_id: 7,
            node_id: 3,
            shard: 2,
            protocol_version: PROTOCOL_VERSION,
            listen_addr: "127.0.0.1:7100".to_string(),
        };
        let mut out = BytesMut::from(&b"junk-before"[..]);
        let junk = out.len();
        encode_message(FrameKind::Handshake, &hs, &mut out).unwrap();
        let _ = out.split_to(junk);
        let frame = FrameDecoder::default().decode(&mut out).unwrap().unwrap();
        assert_eq!(frame.kind, FrameKind::Handshake);
        let archived = frame.access::<Handshake>().unwrap();
        assert_eq!(archived.cluster_id, 7);
        assert_eq!(frame.decode::<Handshake>().unwrap(), hs);
        assert!(out.is_empty());
    }

    #[test]
    fn reject_with_string_round_trips() {
        let rej = HandshakeReject {
            reason: RejectReason::ShardMismatch,
            detail: "shard 1 != 2".to_string(),
        };
        let mut out = BytesMut::new();
        encode_message(FrameKind::HandshakeReject, &rej, &mut out).unwrap();
        let frame = FrameDecoder::default().decode(&mut out).unwrap().unwrap();
        assert_eq!(frame.decode::<HandshakeReject>().unwrap(), rej);
    }

    #[test]
    fn garbage_payload_is_an_error_not_a_panic() {
        let mut payload = rkyv::util::AlignedVec::<16>::new();
        payload.extend_from_slice(&[0xff; 3]);
        assert!(access_checked::<HandshakeReject>(&payload).is_err());
        payload.extend_from_slice(&[0xff; 29]);
        assert!(access_checked::<HandshakeReject>(&payload).is_err());
        assert!(decode_message::<HandshakeReject>(&payload).is_err());
    }
}
