//! On-disk record codec: `[len u32][crc u32][index u64][term u64][payload]`, zero-padded to
//! a multiple of 8 bytes. All integers are little-endian. The CRC (CRC-32/IEEE) covers the
//! length field, the index, the term and the payload, so a torn header is caught as surely as
//! a torn payload.
//!
//! A record with index 0 is padding (O_DIRECT batches are padded to a block boundary with
//! one); 24 zero bytes where a header should be mark the end of the written part of a
//! segment, which is why real entries never use index 0.

/// Bytes of the fixed record header.
pub const HEADER_BYTES: usize = 24;
/// Records start and end on this alignment.
pub const RECORD_ALIGN_BYTES: usize = 8;

/// Total on-disk size of a record whose payload is `payload_len` bytes.
pub fn record_bytes(payload_len: usize) -> usize {
    align_up(HEADER_BYTES + payload_len, RECORD_ALIGN_BYTES)
}

pub(crate) fn align_up(n: usize, align: usize) -> usize {
    n.div_ceil(align) * align
}

fn checksum(len: u32, index: u64, term: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&index.to_le_bytes());
    h.update(&term.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Appends one encoded record (header, payload, zero padding) to `out`.
///
/// The caller guarantees `payload.len() <= u32::MAX`; the log enforces a much smaller
/// per-entry limit before it gets here.
pub fn encode_record(out: &mut impl RecordSink, index: u64, term: u64, payload: &[u8]) {
    let len = payload.len() as u32;
    let crc = checksum(len, index, term, payload);
    let mut header = [0u8; HEADER_BYTES];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[4..8].copy_from_slice(&crc.to_le_bytes());
    header[8..16].copy_from_slice(&index.to_le_bytes());
    header[16..24].copy_from_slice(&term.to_le_bytes());
    out.put(&header);
    out.put(payload);
    let pad = record_bytes(payload.len()) - HEADER_BYTES - payload.len();
    out.put_zeros(pad);
}

/// Something records can be encoded into (a `Vec<u8>` or the log's aligned write buffer).
pub trait RecordSink {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
    /// Appends `n` zero bytes.
    fn put_zeros(&mut self, n: usize);
}

impl RecordSink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn put_zeros(&mut self, n: usize) {
        self.resize(self.len() + n, 0);
    }
}

/// A decoded record borrowing its payload from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Raft index; 0 means a padding record.
    pub index: u64,
    /// Raft term.
    pub term: u64,
    /// The opaque payload bytes.
    pub payload: &'a [u8],
}

/// Why bytes at some offset are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes remain than the header needs.
    #[error("truncated header: {available} bytes left, {HEADER_BYTES} needed")]
    ShortHeader {
        /// Bytes available.
        available: usize,
    },
    /// The length field points past the end of the buffer (or past `payload_bytes_max`).
    #[error("record length {len} does not fit ({available} bytes left)")]
    BadLength {
        /// The length field as read.
        len: u32,
        /// Bytes available after the header.
        available: usize,
    },
    /// The alignment padding after the payload is not zero.
    #[error("non-zero alignment padding")]
    BadPadding,
    /// The checksum does not match the contents.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadChecksum {
        /// CRC stored in the header.
        stored: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
}

/// Outcome of decoding at one position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid record and the number of bytes it occupies (padding included).
    Record(RecordView<'a>, usize),
    /// An all-zero header: the written part of the segment ends here.
    End,
}

/// Decodes the record at the start of `buf`. Never panics, whatever the input.
///
/// `payload_bytes_max` bounds the length field so a corrupt header cannot make the caller
/// trust a huge length.
pub fn decode_record(buf: &[u8], payload_bytes_max: usize) -> Result<Decoded<'_>, DecodeError> {
    let Some(header) = buf.get(..HEADER_BYTES) else {
        if buf.iter().all(|&b| b == 0) {
            return Ok(Decoded::End);
        }
        return Err(DecodeError::ShortHeader {
            available: buf.len(),
        });
    };
    if header.iter().all(|&b| b == 0) {
        return Ok(Decoded::End);
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let stored = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let mut word = [0u8; 8];
    word.copy_from_slice(&header[8..16]);
    let index = u64::from_le_bytes(word);
    word.copy_from_slice(&header[16..24]);
    let term = u64::from_le_bytes(word);
    let available = buf.len() - HEADER_BYTES;
    let len_usize = len as usize;
    if len_usize > payload_bytes_max || len_usize > available {
        return Err(DecodeError::BadLength { len, available });
    }
    let payload = &buf[HEADER_BYTES..HEADER_BYTES + len_usize];
    let computed = checksum(len, index, term, payload);
    if computed != stored {
        return Err(DecodeError::BadChecksum { stored, computed });
    }
    // The padding after the payload may run past the buffer only at the very end of a file
    // whose size is not a multiple of 8; count what is there. It must be zeros, so every
    // accepted record re-encodes to exactly the bytes it came from.
    let size = record_bytes(len_usize).min(buf.len());
    if buf[HEADER_BYTES + len_usize..size].iter().any(|&b| b != 0) {
        return Err(DecodeError::BadPadding);
    }
    Ok(Decoded::Record(
        RecordView {
            index,
            term,
            payload,
        },
        size,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_alignment() {
        for len in [0usize, 1, 7, 8, 9, 100] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
            let mut buf = Vec::new();
            encode_record(&mut buf, 42, 7, &payload);
            assert_eq!(buf.len() % 8, 0);
            assert_eq!(buf.len(), record_bytes(len));
            match decode_record(&buf, 1 << 20).unwrap() {
                Decoded::Record(v, n) => {
                    assert_eq!((v.index, v.term, v.payload), (42, 7, &payload[..]));
                    assert_eq!(n, buf.len());
                }
                Decoded::End => panic!("expected a record"),
            }
        }
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 3, 1, b"hello world");
        let data_end = HEADER_BYTES + 11;
        for byte in 0..data_end {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[byte] ^= 1 << bit;
                assert!(
                    decode_record(&b, 1 << 20).is_err(),
                    "flip at {byte}:{bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn zeros_are_end_and_short_garbage_is_error() {
        assert_eq!(decode_record(&[0u8; 64], 100), Ok(Decoded::End));
        assert_eq!(decode_record(&[0u8; 5], 100), Ok(Decoded::End));
        assert!(matches!(
            decode_record(&[1u8; 5], 100),
            Err(DecodeError::ShortHeader { available: 5 })
        ));
        let mut buf = Vec::new();
        encode_record(&mut buf, 3, 1, &[9u8; 50]);
        assert!(matches!(
            decode_record(&buf, 10),
            Err(DecodeError::BadLength { len: 50, .. })
        ));
        assert!(matches!(
            decode_record(&buf[..40], 100),
            Err(DecodeError::BadLength { .. })
        ));
    }

    proptest::proptest! {
        /// Same property as the fuzz target, on random and on mutated valid input.
        #[test]
        fn accepted_records_reencode_exactly(
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100),
            flip in 0usize..200,
            use_raw in proptest::prelude::any::<bool>(),
        ) {
            let input = if use_raw {
                raw
            } else {
                let mut b = Vec::new();
                encode_record(&mut b, 9, 2, &payload);
                if flip < b.len() {
                    b[flip] ^= 1;
                }
                b
            };
            match decode_record(&input, 1000) {
                Ok(Decoded::Record(v, n)) => {
                    let mut again = Vec::new();
                    encode_record(&mut again, v.index, v.term, v.payload);
                    proptest::prop_assert_eq!(&again[..n], &input[..n]);
                    proptest::prop_assert!(use_raw || flip >= input.len());
                }
                Ok(Decoded::End) => proptest::prop_assert!(input.iter().take(HEADER_BYTES).all(|&b| b == 0)),
                Err(_) => {}
            }
        }
    }
}
