//! The frame codec: pure, no I/O.
//!
//! A frame is a 16-byte little-endian header followed by the payload:
//!
//! ```text
//! offset  size  field
//!      0     4  magic    MAGIC (the bytes "MAST" on the wire)
//!      4     2  version  VERSION
//!      6     2  kind     FrameKind
//!      8     4  len      payload length in bytes
//!     12     4  crc      crc32 over header bytes 0..12, then the payload
//! ```
//!
//! The checksum covers the kind and the length as well as the payload, so a bit flip in the
//! header cannot turn one valid frame into a different valid one (another kind, or a frame
//! that swallows the start of the next one).

use bytes::{Buf, BufMut, BytesMut};
use rkyv::util::AlignedVec;

/// First four bytes of every frame: `b"MAST"` read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"MAST");
/// Frame format version; a frame with any other version is refused.
pub const VERSION: u16 = 1;
/// Length of the fixed header in bytes.
pub const HEADER_BYTES: usize = 16;
/// Default limit on a whole frame (header + payload).
pub const FRAME_BYTES_MAX_DEFAULT: usize = 16 * 1024 * 1024;
/// Alignment of the payload buffer handed out by the decoder; enough for every rkyv archive.
pub const PAYLOAD_ALIGN: usize = 16;

/// What a frame carries. The numeric values are the wire format: never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum FrameKind {
    /// Dialer → acceptor: [`crate::Handshake`].
    Handshake = 1,
    /// Acceptor → dialer: [`crate::HandshakeAck`].
    HandshakeAck = 2,
    /// Acceptor → dialer: [`crate::HandshakeReject`]; the acceptor closes afterwards.
    HandshakeReject = 3,
    /// One piece of a message too large for a single frame; the payload starts with a
    /// [`crate::FragmentHeader`]. Sent and consumed by the transport only.
    Fragment = 4,
    /// A raft message between replicas of one group.
    Raft = 16,
    /// A client request forwarded to the leader.
    ForwardRequest = 17,
    /// The leader's answer to a forwarded request.
    ForwardResponse = 18,
    /// An admin task for a storage node.
    AdminTask = 32,
    /// A storage node's answer to an admin task.
    AdminTaskReply = 33,
}

impl FrameKind {
    /// Every kind, for tests and tools.
    pub const ALL: [FrameKind; 9] = [
        FrameKind::Handshake,
        FrameKind::HandshakeAck,
        FrameKind::HandshakeReject,
        FrameKind::Fragment,
        FrameKind::Raft,
        FrameKind::ForwardRequest,
        FrameKind::ForwardResponse,
        FrameKind::AdminTask,
        FrameKind::AdminTaskReply,
    ];

    /// The wire value.
    pub const fn as_u16(self) -> u16 {
        self as u16
    }

    /// Parses a wire value; `None` for a kind this build does not know.
    pub const fn from_u16(value: u16) -> Option<FrameKind> {
        Some(match value {
            1 => FrameKind::Handshake,
            2 => FrameKind::HandshakeAck,
            3 => FrameKind::HandshakeReject,
            4 => FrameKind::Fragment,
            16 => FrameKind::Raft,
            17 => FrameKind::ForwardRequest,
            18 => FrameKind::ForwardResponse,
            32 => FrameKind::AdminTask,
            33 => FrameKind::AdminTaskReply,
            _ => return None,
        })
    }

    /// True for the kinds only the transport itself may send (connection setup).
    pub const fn is_handshake(self) -> bool {
        matches!(
            self,
            FrameKind::Handshake | FrameKind::HandshakeAck | FrameKind::HandshakeReject
        )
    }
}

impl FrameKind {
    /// True for the kinds only the transport itself may send: connection setup and
    /// fragments (users send the whole message; the transport splits it).
    pub const fn is_transport_only(self) -> bool {
        self.is_handshake() || matches!(self, FrameKind::Fragment)
    }
}

impl TryFrom<u16> for FrameKind {
    type Error = FrameError;

    fn try_from(value: u16) -> Result<Self, Self::Error> {
        FrameKind::from_u16(value).ok_or(FrameError::UnknownKind { kind: value })
    }
}

/// Why bytes are not a valid frame. After any of these the byte stream cannot be
/// resynchronised: the connection carrying it must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The first four bytes are not [`MAGIC`]: not a mast peer, or a desynchronised stream.
    #[error("bad frame magic {found:#010x} (expected {MAGIC:#010x})")]
    BadMagic {
        /// The value found.
        found: u32,
    },
    /// A frame format version this build does not speak.
    #[error("unsupported frame version {found} (this build speaks {VERSION})")]
    UnsupportedVersion {
        /// The version found.
        found: u16,
    },
    /// Header plus payload exceed the configured maximum; detected from the header, before
    /// any payload is buffered.
    #[error("frame of {frame_bytes} bytes exceeds the limit of {frame_bytes_max} bytes")]
    TooLarge {
        /// Header plus payload length announced (or, when encoding, requested).
        frame_bytes: u64,
        /// The limit.
        frame_bytes_max: u64,
    },
    /// The checksum does not match header and payload.
    #[error("frame checksum mismatch: header says {expected:#010x}, computed {computed:#010x}")]
    BadChecksum {
        /// The crc in the header.
        expected: u32,
        /// The crc computed over the received bytes.
        computed: u32,
    },
    /// The frame is intact but its kind is not one this build knows.
    #[error("unknown frame kind {kind}")]
    UnknownKind {
        /// The wire value found.
        kind: u16,
    },
}

/// A decoded, checksum-verified frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// What the payload is.
    pub kind: FrameKind,
    /// The payload, 16-byte aligned so that `rkyv::access` can validate it in place.
    pub payload: AlignedVec<PAYLOAD_ALIGN>,
}

impl PartialEq for Frame {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.payload.as_slice() == other.payload.as_slice()
    }
}

impl Eq for Frame {}

impl Frame {
    /// Validates the payload as an archived `T` and returns a reference into it.
    pub fn access<T>(&self) -> Result<&T::Archived, crate::MessageError>
    where
        T: rkyv::Archive,
        T::Archived: rkyv::Portable
            + for<'a> rkyv::bytecheck::CheckBytes<
                rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>,
            >,
    {
        crate::access_checked::<T>(&self.payload)
    }

    /// Validates and deserializes the payload into an owned `T`.
    pub fn decode<T>(&self) -> Result<T, crate::MessageError>
    where
        T: rkyv::Archive,
        T::Archived: for<'a> rkyv::bytecheck::CheckBytes<
                rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>,
            > + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
    {
        crate::decode_message::<T>(&self.payload)
    }
}

/// Total bytes a frame with a payload of `payload_bytes` occupies on the wire.
pub const fn frame_bytes(payload_bytes: usize) -> usize {
    HEADER_BYTES + payload_bytes
}

/// Appends one frame carrying `payload` to `out`.
///
/// Fails only if the payload length does not fit the 32-bit length field.
pub fn encode_frame(kind: FrameKind, payload: &[u8], out: &mut BytesMut) -> Result<(), FrameError> {
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge {
        frame_bytes: frame_bytes(payload.len()) as u64,
        frame_bytes_max: frame_bytes(u32::MAX as usize) as u64,
    })?;
    out.reserve(HEADER_BYTES + payload.len());
    let start = out.len();
    put_header_prefix(out, kind, len);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[start..start + 12]);
    crc.update(payload);
    out.put_u32_le(crc.finalize());
    out.put_slice(payload);
    Ok(())
}

/// Appends one frame whose payload is the concatenation of `parts`, without first
/// gathering them in one buffer (the fragment header and a slice of the message).
pub(crate) fn encode_frame_parts(
    kind: FrameKind,
    parts: &[&[u8]],
    out: &mut BytesMut,
) -> Result<(), FrameError> {
    let payload_bytes = parts.iter().fold(0usize, |n, p| n.saturating_add(p.len()));
    let len = u32::try_from(payload_bytes).map_err(|_| FrameError::TooLarge {
        frame_bytes: frame_bytes(payload_bytes) as u64,
        frame_bytes_max: frame_bytes(u32::MAX as usize) as u64,
    })?;
    out.reserve(HEADER_BYTES + payload_bytes);
    let start = out.len();
    put_header_prefix(out, kind, len);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[start..start + 12]);
    for part in parts {
        crc.update(part);
    }
    out.put_u32_le(crc.finalize());
    for part in parts {
        out.put_slice(part);
    }
    Ok(())
}

fn put_header_prefix(out: &mut BytesMut, kind: FrameKind, len: u32) {
    out.put_u32_le(MAGIC);
    out.put_u16_le(VERSION);
    out.put_u16_le(kind.as_u16());
    out.put_u32_le(len);
}

/// Reserves a header at the end of `out` for a payload the caller appends next; finish
/// with [`finish_frame`]. Lets a payload be serialized in place without a copy.
pub(crate) fn begin_frame(out: &mut BytesMut) -> usize {
    let start = out.len();
    out.put_bytes(0, HEADER_BYTES);
    start
}

/// Fills the header reserved by [`begin_frame`] at `start` once the payload follows it.
pub(crate) fn finish_frame(
    out: &mut BytesMut,
    start: usize,
    kind: FrameKind,
) -> Result<(), FrameError> {
    let payload_bytes = out.len() - start - HEADER_BYTES;
    let len = match u32::try_from(payload_bytes) {
        Ok(len) => len,
        Err(_) => {
            out.truncate(start);
            return Err(FrameError::TooLarge {
                frame_bytes: frame_bytes(payload_bytes) as u64,
                frame_bytes_max: frame_bytes(u32::MAX as usize) as u64,
            });
        }
    };
    let header = &mut out[start..start + HEADER_BYTES];
    header[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    header[4..6].copy_from_slice(&VERSION.to_le_bytes());
    header[6..8].copy_from_slice(&kind.as_u16().to_le_bytes());
    header[8..12].copy_from_slice(&len.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[start..start + 12]);
    crc.update(&out[start + HEADER_BYTES..]);
    let crc = crc.finalize();
    out[start + 12..start + HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Incremental frame decoder: feed it a buffer that grows as bytes arrive.
///
/// It keeps no state between calls besides its limit, so it can be dropped and recreated
/// at a frame boundary (the transport uses a small limit for the handshake, then the
/// configured one).
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    /// Largest frame (header + payload) accepted, in bytes.
    pub frame_bytes_max: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder {
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
        }
    }
}

impl FrameDecoder {
    /// A decoder refusing frames larger than `frame_bytes_max` (header included).
    pub const fn new(frame_bytes_max: usize) -> Self {
        FrameDecoder { frame_bytes_max }
    }

    /// Takes one complete frame off the front of `buf`.
    ///
    /// `Ok(None)`: more bytes are needed (nothing consumed). Header fields are checked as
    /// soon as they have arrived, so garbage and oversized frames are refused before
    /// their payload is buffered. On error nothing is consumed and the stream is dead.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(payload_bytes) = self.check_header(buf)? else {
            return Ok(None);
        };
        let total = HEADER_BYTES + payload_bytes;
        let Some(frame) = buf.get(..total) else {
            return Ok(None);
        };
        let (header, payload) = frame.split_at(HEADER_BYTES);
        let expected = read_u32(header, 12);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header[..12]);
        crc.update(payload);
        let computed = crc.finalize();
        if computed != expected {
            return Err(FrameError::BadChecksum { expected, computed });
        }
        let kind = FrameKind::try_from(read_u16(header, 6))?;
        let mut aligned = AlignedVec::<PAYLOAD_ALIGN>::with_capacity(payload.len());
        aligned.extend_from_slice(payload);
        buf.advance(total);
        Ok(Some(Frame {
            kind,
            payload: aligned,
        }))
    }

    /// How many more bytes `buf` needs before [`FrameDecoder::decode`] can return a frame
    /// (counting only the header while it is incomplete); lets a reader size its next read.
    /// Does not validate: call `decode` for that.
    pub fn bytes_missing(&self, buf: &[u8]) -> usize {
        if buf.len() < HEADER_BYTES {
            return HEADER_BYTES - buf.len();
        }
        let payload_bytes = read_u32(buf, 8) as usize;
        (HEADER_BYTES + payload_bytes).saturating_sub(buf.len())
    }

    /// Checks whatever header fields have arrived; returns the payload length once the
    /// whole header is there.
    fn check_header(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        if buf.len() >= 4 {
            let magic = read_u32(buf, 0);
            if magic != MAGIC {
                return Err(FrameError::BadMagic { found: magic });
            }
        }
        if buf.len() >= 6 {
            let version = read_u16(buf, 4);
            if version != VERSION {
                return Err(FrameError::UnsupportedVersion { found: version });
            }
        }
        if buf.len() < HEADER_BYTES {
            return Ok(None);
        }
        let payload_bytes = read_u32(buf, 8) as u64;
        let total = HEADER_BYTES as u64 + payload_bytes;
        if total > self.frame_bytes_max as u64 {
            return Err(FrameError::TooLarge {
                frame_bytes: total,
                frame_bytes_max: self.frame_bytes_max as u64,
            });
        }
        // total <= frame_bytes_max, a usize, so the cast is lossless.
        Ok(Some(payload_bytes as usize))
    }
}

/// Reads a little-endian u32 at `at`; callers have checked the length, and a short slice
/// reads as zeros rather than panicking.
fn read_u32(buf: &[u8], at: usize) -> u32 {
    let mut bytes = [0u8; 4];
    if let Some(src) = buf.get(at..at + 4) {
        bytes.copy_from_slice(src);
    }
    u32::from_le_bytes(bytes)
}

fn read_u16(buf: &[u8], at: usize) -> u16 {
    let mut bytes = [0u8; 2];
    if let Some(src) = buf.get(at..at + 2) {
        bytes.copy_from_slice(src);
    }
    u16::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_reads_as_mast_on_the_wire() {
        let mut out = BytesMut::new();
        encode_frame(FrameKind::Raft, b"x", &mut out).unwrap();
        assert_eq!(&out[..4], b"MAST");
        assert_eq!(out.len(), HEADER_BYTES + 1);
    }

    #[test]
    fn kinds_round_trip_through_u16() {
        for kind in FrameKind::ALL {
            assert_eq!(FrameKind::from_u16(kind.as_u16()), Some(kind));
        }
        assert_eq!(FrameKind::from_u16(0), None);
        assert_eq!(
            FrameKind::try_from(999),
            Err(FrameError::UnknownKind { kind: 999 })
        );
    }

    #[test]
    fn in_place_frame_matches_encode_frame() {
        let mut a = BytesMut::new();
        encode_frame(FrameKind::AdminTask, b"hello", &mut a).unwrap();
        let mut b = BytesMut::from(&b"prefix"[..]);
        let start = begin_frame(&mut b);
        b.extend_from_slice(b"hello");
        finish_frame(&mut b, start, FrameKind::AdminTask).unwrap();
        assert_eq!(&b[6..], &a[..]);
    }

    #[test]
    fn bytes_missing_counts_header_then_payload() {
        let d = FrameDecoder::default();
        let mut out = BytesMut::new();
        encode_frame(FrameKind::Raft, &[7u8; 100], &mut out).unwrap();
        assert_eq!(d.bytes_missing(&out[..3]), 13);
        assert_eq!(d.bytes_missing(&out[..20]), 96);
        assert_eq!(d.bytes_missing(&out), 0);
    }
}
