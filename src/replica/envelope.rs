//! The proposal envelope: who waits on an entry. It belongs to the replica, not to a domain:
//! only the proposing process (node id and boot nonce both match) completes a waiter, so an
//! entry replayed after a restart, or proposed by another node, never answers a request it
//! did not carry.
//!
//! ```text
//! version u8 (1) | 7 zero bytes | proposer u64 | boot u64 | request_id u64 | command…
//! ```
//! Little-endian, 32 bytes, so the command that follows starts 8-aligned. The command is the
//! state machine's (for the meta table: a domain tag, a version and the domain's bytes).

pub const VERSION: u8 = 1;
pub const HEADER_BYTES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    pub proposer: u64,
    pub boot: u64,
    pub request_id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("entry of {0} bytes is shorter than the envelope")]
    Short(usize),
    /// Written by a newer mast: applying it without understanding it would fork the state.
    #[error("entry envelope version {0} is unknown to this version of mast")]
    UnknownVersion(u8),
}

impl Envelope {
    pub fn encode(&self, command: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + command.len());
        out.push(VERSION);
        out.extend_from_slice(&[0u8; 7]);
        out.extend_from_slice(&self.proposer.to_le_bytes());
        out.extend_from_slice(&self.boot.to_le_bytes());
        out.extend_from_slice(&self.request_id.to_le_bytes());
        out.extend_from_slice(command);
        out
    }

    /// The envelope and the command bytes after it.
    pub fn decode(bytes: &[u8]) -> Result<(Envelope, &[u8]), EnvelopeError> {
        if bytes.len() < HEADER_BYTES {
            return Err(EnvelopeError::Short(bytes.len()));
        }
        if bytes[0] != VERSION {
            return Err(EnvelopeError::UnknownVersion(bytes[0]));
        }
        let word = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&bytes[i..i + 8]);
            u64::from_le_bytes(a)
        };
        Ok((
            Envelope {
                proposer: word(8),
                boot: word(16),
                request_id: word(24),
            },
            &bytes[HEADER_BYTES..],
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(p in any::<u64>(), b in any::<u64>(), r in any::<u64>(), cmd in prop::collection::vec(any::<u8>(), 0..64)) {
            let e = Envelope { proposer: p, boot: b, request_id: r };
            let bytes = e.encode(&cmd);
            let (d, rest) = Envelope::decode(&bytes).unwrap();
            prop_assert_eq!(d, e);
            prop_assert_eq!(rest, &cmd[..]);
        }

        #[test]
        fn garbage_is_an_error_not_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Envelope::decode(&bytes);
        }
    }

    #[test]
    fn newer_versions_are_named() {
        let mut b = Envelope {
            proposer: 1,
            boot: 2,
            request_id: 3,
        }
        .encode(b"x");
        b[0] = 9;
        assert_eq!(Envelope::decode(&b), Err(EnvelopeError::UnknownVersion(9)));
        assert_eq!(Envelope::decode(b"short"), Err(EnvelopeError::Short(5)));
    }
}
