//! Fragmentation of messages larger than one frame: pure, no I/O.
//!
//! A message whose payload does not fit one frame travels as `count` frames of kind
//! [`FrameKind::Fragment`], sent back to back on one connection. Each fragment's payload
//! is a 32-byte little-endian [`FragmentHeader`] followed by the next slice of the message:
//!
//! ```text
//! offset  size  field
//!      0     8  message_id   sender's counter, the same for every fragment of a message
//!      8     8  total_bytes  payload bytes of the whole message
//!     16     4  index        0, 1, ... count - 1, in order
//!     20     4  count        number of fragments of the message
//!     24     2  kind         FrameKind of the whole message (never a transport kind)
//!     26     6  reserved     zero
//! ```
//!
//! Every fragment keeps its own frame crc. The [`Reassembler`] (one per inbound
//! connection) accepts exactly one message at a time, strictly in index order; anything
//! else is a protocol error that closes the connection.

use bytes::BytesMut;
use rkyv::util::AlignedVec;

use crate::frame::{encode_frame_parts, Frame, FrameError, FrameKind, HEADER_BYTES, PAYLOAD_ALIGN};

/// Length of the fragment header at the start of every fragment's payload.
pub const FRAGMENT_HEADER_BYTES: usize = 32;

/// The header at the start of a [`FrameKind::Fragment`] frame's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentHeader {
    /// Identifies the message among those sent on the connection (diagnostics and a
    /// consistency check: every fragment of a message carries the same id).
    pub message_id: u64,
    /// Payload bytes of the whole message.
    pub total_bytes: u64,
    /// Position of this fragment, from 0.
    pub index: u32,
    /// Number of fragments of the message.
    pub count: u32,
    /// Kind of the whole message, delivered to `recv` as if it had been one frame.
    pub kind: FrameKind,
}

impl FragmentHeader {
    /// The 32 header bytes.
    pub fn to_bytes(&self) -> [u8; FRAGMENT_HEADER_BYTES] {
        let mut out = [0u8; FRAGMENT_HEADER_BYTES];
        out[0..8].copy_from_slice(&self.message_id.to_le_bytes());
        out[8..16].copy_from_slice(&self.total_bytes.to_le_bytes());
        out[16..20].copy_from_slice(&self.index.to_le_bytes());
        out[20..24].copy_from_slice(&self.count.to_le_bytes());
        out[24..26].copy_from_slice(&self.kind.as_u16().to_le_bytes());
        out
    }

    /// Parses the header at the start of a fragment's payload; returns it and the message
    /// bytes that follow it. Checks only what one fragment can tell: length, known
    /// non-transport kind, zero reserved bytes, `index < count`.
    pub fn parse(payload: &[u8]) -> Result<(FragmentHeader, &[u8]), FragmentError> {
        let Some((head, data)) = payload.split_at_checked(FRAGMENT_HEADER_BYTES) else {
            return Err(FragmentError::Short {
                payload_bytes: payload.len(),
            });
        };
        let mut u64s = [0u64; 2];
        for (i, v) in u64s.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&head[i * 8..i * 8 + 8]);
            *v = u64::from_le_bytes(b);
        }
        let u32_at = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&head[at..at + 4]);
            u32::from_le_bytes(b)
        };
        let raw_kind = u16::from_le_bytes([head[24], head[25]]);
        if head[26..].iter().any(|&b| b != 0) {
            return Err(FragmentError::Reserved);
        }
        let kind = match FrameKind::from_u16(raw_kind) {
            Some(kind) if !kind.is_transport_only() => kind,
            _ => return Err(FragmentError::BadKind { kind: raw_kind }),
        };
        let header = FragmentHeader {
            message_id: u64s[0],
            total_bytes: u64s[1],
            index: u32_at(16),
            count: u32_at(20),
            kind,
        };
        if header.index >= header.count {
            return Err(FragmentError::BadIndex {
                index: header.index,
                expected: header.count.saturating_sub(1),
            });
        }
        Ok((header, data))
    }
}

/// Why a sequence of fragments cannot be reassembled. The connection carrying it is
/// closed: its stream is no longer trustworthy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    /// The fragment payload is shorter than its header.
    #[error(
        "fragment of {payload_bytes} bytes is shorter than its {FRAGMENT_HEADER_BYTES}-byte header"
    )]
    Short {
        /// The payload length found.
        payload_bytes: usize,
    },
    /// Reserved header bytes are not zero.
    #[error("fragment header reserved bytes are not zero")]
    Reserved,
    /// The message kind is unknown or reserved to the transport.
    #[error("fragment carries a message of kind {kind}, which is unknown or reserved")]
    BadKind {
        /// The wire value found.
        kind: u16,
    },
    /// A fragment out of order (or a first fragment whose index is not 0).
    #[error("fragment index {index} where {expected} was expected")]
    BadIndex {
        /// The index found.
        index: u32,
        /// The index expected next.
        expected: u32,
    },
    /// Id, kind, count or total length differ from the message's first fragment.
    #[error("fragment does not belong to the message in reassembly")]
    Mismatch,
    /// The message announced (16-byte header counted, as for a frame) exceeds the limit.
    #[error("message of {message_bytes} bytes exceeds the limit of {message_bytes_max} bytes")]
    TooLarge {
        /// Header plus announced payload.
        message_bytes: u64,
        /// The limit.
        message_bytes_max: u64,
    },
    /// The fragments' data does not add up to the announced length (an empty fragment,
    /// too much data, or too little at the last fragment), or there are more fragments
    /// than data bytes.
    #[error("fragments carry {received_bytes} bytes of a message announced as {total_bytes}")]
    Length {
        /// Bytes received so far, this fragment included.
        received_bytes: u64,
        /// Bytes announced.
        total_bytes: u64,
    },
    /// An ordinary frame arrived while a message was being reassembled; senders never
    /// interleave.
    #[error("a {kind:?} frame arrived in the middle of a fragmented message")]
    Interleaved {
        /// The intruding frame's kind.
        kind: FrameKind,
    },
}

/// How a payload of `payload_bytes` is split with fragments of at most `fragment_bytes`
/// data bytes: `(fragments, wire bytes of all fragment frames)`. `fragment_bytes` must be
/// positive (0 is treated as 1).
pub fn fragment_plan(payload_bytes: usize, fragment_bytes: usize) -> (usize, usize) {
    let count = payload_bytes.div_ceil(fragment_bytes.max(1)).max(1);
    let overhead = count.saturating_mul(HEADER_BYTES + FRAGMENT_HEADER_BYTES);
    (count, payload_bytes.saturating_add(overhead))
}

/// Appends `payload` as fragment frames (see [`fragment_plan`]) carrying a message of
/// `kind` to `out`. On error `out` is left as it was.
pub fn encode_fragments(
    kind: FrameKind,
    message_id: u64,
    payload: &[u8],
    fragment_bytes: usize,
    out: &mut BytesMut,
) -> Result<(), FrameError> {
    let (count, wire_bytes) = fragment_plan(payload.len(), fragment_bytes);
    let too_large = || FrameError::TooLarge {
        frame_bytes: HEADER_BYTES as u64 + payload.len() as u64,
        frame_bytes_max: u32::MAX as u64,
    };
    let count = u32::try_from(count).map_err(|_| too_large())?;
    let start = out.len();
    out.reserve(wire_bytes);
    let mut header = FragmentHeader {
        message_id,
        total_bytes: payload.len() as u64,
        index: 0,
        count,
        kind,
    };
    // An empty payload still travels as one (empty) fragment so every message has one.
    let mut chunks = payload.chunks(fragment_bytes.max(1));
    for index in 0..count {
        header.index = index;
        let chunk = chunks.next().unwrap_or(&[]);
        let head = header.to_bytes();
        if let Err(e) = encode_frame_parts(FrameKind::Fragment, &[&head, chunk], out) {
            out.truncate(start);
            return Err(e);
        }
    }
    Ok(())
}

struct Partial {
    message_id: u64,
    kind: FrameKind,
    count: u32,
    total_bytes: u64,
    next_index: u32,
    payload: AlignedVec<PAYLOAD_ALIGN>,
}

/// Reassembles the fragmented messages of one connection, one at a time.
///
/// Feed it every frame the connection yields, in order; it passes ordinary frames
/// through and returns a fragmented message once its last fragment is in. Memory is
/// bounded by `message_bytes_max` and grows with the data received, not with what a
/// header announces.
pub struct Reassembler {
    message_bytes_max: usize,
    current: Option<Partial>,
}

impl Reassembler {
    /// A reassembler refusing messages larger than `message_bytes_max` (16-byte header
    /// counted, as for [`crate::TransportConfig::frame_bytes_max`]).
    pub fn new(message_bytes_max: usize) -> Self {
        Reassembler {
            message_bytes_max,
            current: None,
        }
    }

    /// Bytes of the message in reassembly so far.
    pub fn pending_bytes(&self) -> usize {
        self.current.as_ref().map_or(0, |p| p.payload.len())
    }

    /// Takes the next frame of the connection. `Ok(Some(frame))`: a frame to deliver (an
    /// ordinary one, or a complete message). `Ok(None)`: a fragment was absorbed. After an
    /// error the reassembler is reset, but the connection should be closed.
    pub fn push(&mut self, frame: Frame) -> Result<Option<Frame>, FragmentError> {
        let res = self.push_inner(frame);
        if res.is_err() {
            self.current = None;
        }
        res
    }

    fn push_inner(&mut self, frame: Frame) -> Result<Option<Frame>, FragmentError> {
        if frame.kind != FrameKind::Fragment {
            if self.current.is_some() {
                return Err(FragmentError::Interleaved { kind: frame.kind });
            }
            return Ok(Some(frame));
        }
        let (head, data) = FragmentHeader::parse(&frame.payload)?;
        let partial = match self.current.as_mut() {
            Some(p) => {
                if head.message_id != p.message_id
                    || head.kind != p.kind
                    || head.count != p.count
                    || head.total_bytes != p.total_bytes
                {
                    return Err(FragmentError::Mismatch);
                }
                if head.index != p.next_index {
                    return Err(FragmentError::BadIndex {
                        index: head.index,
                        expected: p.next_index,
                    });
                }
                p
            }
            None => {
                if head.index != 0 {
                    return Err(FragmentError::BadIndex {
                        index: head.index,
                        expected: 0,
                    });
                }
                let message_bytes = head.total_bytes.saturating_add(HEADER_BYTES as u64);
                if message_bytes > self.message_bytes_max as u64 {
                    return Err(FragmentError::TooLarge {
                        message_bytes,
                        message_bytes_max: self.message_bytes_max as u64,
                    });
                }
                // Every fragment but an empty message's only one carries data, so a
                // count above the length is a lie that would keep the slot busy.
                if u64::from(head.count) > head.total_bytes.max(1) {
                    return Err(FragmentError::Length {
                        received_bytes: 0,
                        total_bytes: head.total_bytes,
                    });
                }
                self.current.insert(Partial {
                    message_id: head.message_id,
                    kind: head.kind,
                    count: head.count,
                    total_bytes: head.total_bytes,
                    next_index: 0,
                    payload: AlignedVec::new(),
                })
            }
        };
        let received = partial.payload.len() as u64 + data.len() as u64;
        let last = head.index + 1 == head.count;
        let bad_length = received > partial.total_bytes
            || (data.is_empty() && partial.total_bytes > 0)
            || (last && received != partial.total_bytes)
            || (!last && received == partial.total_bytes);
        if bad_length {
            return Err(FragmentError::Length {
                received_bytes: received,
                total_bytes: partial.total_bytes,
            });
        }
        // Grow by doubling, capped at the announced total (checked against the limit):
        // amortised copies, and never more than the message needs.
        let needed = partial.payload.len() + data.len();
        if needed > partial.payload.capacity() {
            // total_bytes <= message_bytes_max, a usize, so the cast is lossless.
            let target = needed
                .max(partial.payload.capacity().saturating_mul(2))
                .min(partial.total_bytes as usize);
            partial
                .payload
                .reserve_exact(target - partial.payload.len());
        }
        partial.payload.extend_from_slice(data);
        partial.next_index = head.index + 1;
        if !last {
            return Ok(None);
        }
        let done = self.current.take().map(|p| Frame {
            kind: p.kind,
            payload: p.payload,
        });
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameDecoder;

    fn frames(wire: &mut BytesMut) -> Vec<Frame> {
        let d = FrameDecoder::new(1 << 20);
        let mut out = Vec::new();
        while let Some(f) = d.decode(wire).unwrap() {
            out.push(f);
        }
        out
    }

    #[test]
    fn split_and_reassemble() {
        let payload: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut wire = BytesMut::new();
        encode_fragments(FrameKind::Raft, 9, &payload, 3000, &mut wire).unwrap();
        assert_eq!(fragment_plan(payload.len(), 3000), (4, wire.len()));
        let mut r = Reassembler::new(1 << 20);
        let mut got = Vec::new();
        for f in frames(&mut wire) {
            assert_eq!(f.kind, FrameKind::Fragment);
            if let Some(done) = r.push(f).unwrap() {
                got.push(done);
            }
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kind, FrameKind::Raft);
        assert_eq!(got[0].payload.as_slice(), &payload[..]);
        assert_eq!(got[0].payload.capacity(), payload.len());
        assert_eq!(r.pending_bytes(), 0);
    }

    #[test]
    fn empty_message_is_one_empty_fragment() {
        let mut wire = BytesMut::new();
        encode_fragments(FrameKind::AdminTask, 1, &[], 100, &mut wire).unwrap();
        let fs = frames(&mut wire);
        assert_eq!(fs.len(), 1);
        let mut r = Reassembler::new(1 << 20);
        let done = r.push(fs[0].clone()).unwrap().unwrap();
        assert_eq!((done.kind, done.payload.len()), (FrameKind::AdminTask, 0));
    }

    #[test]
    fn count_larger_than_data_is_refused_at_the_first_fragment() {
        let head = FragmentHeader {
            message_id: 1,
            total_bytes: 3,
            index: 0,
            count: 4,
            kind: FrameKind::Raft,
        };
        let mut payload = AlignedVec::<PAYLOAD_ALIGN>::new();
        payload.extend_from_slice(&head.to_bytes());
        payload.extend_from_slice(b"a");
        let frame = Frame {
            kind: FrameKind::Fragment,
            payload,
        };
        assert!(matches!(
            Reassembler::new(1 << 20).push(frame),
            Err(FragmentError::Length { .. })
        ));
    }
}
