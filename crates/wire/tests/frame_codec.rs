//! Property tests of the frame codec: round trips through arbitrary chunking, and every
//! kind of damage gives the right error, never a panic.

use bytes::BytesMut;
use mast_wire::{
    access_checked, decode_message, encode_frame, encode_message, Frame, FrameDecoder, FrameError,
    FrameKind, Handshake, HandshakeReject, HEADER_BYTES, MAGIC,
};
use proptest::prelude::*;

fn kind_strategy() -> impl Strategy<Value = FrameKind> {
    proptest::sample::select(FrameKind::ALL.to_vec())
}

fn frames_strategy() -> impl Strategy<Value = Vec<(FrameKind, Vec<u8>)>> {
    proptest::collection::vec(
        (
            kind_strategy(),
            proptest::collection::vec(any::<u8>(), 0..600),
        ),
        1..12,
    )
}

fn encode_all(frames: &[(FrameKind, Vec<u8>)]) -> BytesMut {
    let mut out = BytesMut::new();
    for (kind, payload) in frames {
        encode_frame(*kind, payload, &mut out).unwrap();
    }
    out
}

fn one_frame(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(kind, payload, &mut out).unwrap();
    out.to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip_through_random_chunks(
        frames in frames_strategy(),
        cuts in proptest::collection::vec(1usize..97, 0..200),
    ) {
        let wire = encode_all(&frames);
        let decoder = FrameDecoder::new(4096);
        let mut buf = BytesMut::new();
        let mut decoded: Vec<Frame> = Vec::new();
        let mut at = 0;
        let mut cuts = cuts.into_iter();
        while at < wire.len() {
            let step = cuts.next().unwrap_or(wire.len() - at).min(wire.len() - at);
            buf.extend_from_slice(&wire[at..at + step]);
            at += step;
            while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                decoded.push(frame);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded.len(), frames.len());
        for (frame, (kind, payload)) in decoded.iter().zip(frames.iter()) {
            prop_assert_eq!(frame.kind, *kind);
            prop_assert_eq!(frame.payload.as_slice(), payload.as_slice());
            if !payload.is_empty() {
                prop_assert_eq!(frame.payload.as_ptr() as usize % 16, 0);
            }
        }
    }

    #[test]
    fn every_proper_prefix_needs_more(kind in kind_strategy(), payload in proptest::collection::vec(any::<u8>(), 0..300)) {
        let wire = one_frame(kind, &payload);
        let decoder = FrameDecoder::new(4096);
        for len in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..len]);
            prop_assert_eq!(decoder.decode(&mut buf), Ok(None));
            prop_assert_eq!(buf.len(), len, "nothing consumed while incomplete");
        }
    }

    #[test]
    fn a_flipped_bit_is_always_caught(
        kind in kind_strategy(),
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        bit in any::<proptest::sample::Index>(),
    ) {
        let mut wire = one_frame(kind, &payload);
        let bit = bit.index(wire.len() * 8);
        let byte = bit / 8;
        wire[byte] ^= 1 << (bit % 8);
        let decoder = FrameDecoder::new(4096);
        let mut buf = BytesMut::from(&wire[..]);
        let result = decoder.decode(&mut buf);
        match byte {
            0..=3 => prop_assert!(matches!(result, Err(FrameError::BadMagic { .. })), "{:?}", result),
            4..=5 => prop_assert!(matches!(result, Err(FrameError::UnsupportedVersion { .. })), "{:?}", result),
            8..=11 => {
                let announced = u32::from_le_bytes(wire[8..12].try_into().unwrap()) as usize;
                if HEADER_BYTES + announced > 4096 {
                    prop_assert!(matches!(result, Err(FrameError::TooLarge { .. })), "{:?}", result);
                } else if announced > payload.len() {
                    prop_assert_eq!(result, Ok(None));
                } else {
                    prop_assert!(matches!(result, Err(FrameError::BadChecksum { .. })), "{:?}", result);
                }
            }
            _ => prop_assert!(matches!(result, Err(FrameError::BadChecksum { .. })), "{:?}", result),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let decoder = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&bytes[..]);
        // Bounded: each successful decode consumes at least a header.
        for _ in 0..=bytes.len() / HEADER_BYTES {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let _ = access_checked::<HandshakeReject>(&frame.payload);
                }
                Ok(None) | Err(_) => break,
            }
        }
    }

    #[test]
    fn arbitrary_payloads_fail_validation_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut payload = rkyv::util::AlignedVec::<16>::new();
        payload.extend_from_slice(&bytes);
        let _ = access_checked::<HandshakeReject>(&payload);
        let _ = decode_message::<HandshakeReject>(&payload);
        let _ = decode_message::<Handshake>(&payload);
    }

    #[test]
    fn messages_round_trip(cluster_id in any::<u64>(), node_id in any::<u64>(), shard in any::<u32>(), detail in ".{0,40}", listen_addr in ".{0,64}") {
        let hs = Handshake { cluster_id, node_id, shard, protocol_version: 1, listen_addr: listen_addr.clone() };
        let rej = HandshakeReject { reason: mast_wire::RejectReason::UnknownNode, detail };
        let mut out = BytesMut::new();
        encode_message(FrameKind::Handshake, &hs, &mut out).unwrap();
        encode_message(FrameKind::HandshakeReject, &rej, &mut out).unwrap();
        let decoder = FrameDecoder::default();
        let a = decoder.decode(&mut out).unwrap().unwrap();
        let b = decoder.decode(&mut out).unwrap().unwrap();
        prop_assert_eq!(a.decode::<Handshake>().unwrap(), hs);
        prop_assert_eq!(b.decode::<HandshakeReject>().unwrap(), rej);
        prop_assert!(out.is_empty());
    }
}

#[test]
fn oversized_frame_is_refused_from_the_header_alone() {
    let mut header = BytesMut::new();
    header.extend_from_slice(&MAGIC.to_le_bytes());
    header.extend_from_slice(&1u16.to_le_bytes());
    header.extend_from_slice(&FrameKind::Raft.as_u16().to_le_bytes());
    header.extend_from_slice(&(1u32 << 30).to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    let decoder = FrameDecoder::new(1 << 20);
    assert_eq!(
        decoder.decode(&mut header),
        Err(FrameError::TooLarge {
            frame_bytes: (1u64 << 30) + 16,
            frame_bytes_max: 1 << 20,
        })
    );
    assert_eq!(header.len(), HEADER_BYTES, "nothing consumed on error");
}

#[test]
fn frame_exactly_at_the_limit_is_accepted() {
    let decoder = FrameDecoder::new(HEADER_BYTES + 100);
    let mut ok = BytesMut::from(&one_frame(FrameKind::Raft, &[1; 100])[..]);
    assert!(decoder.decode(&mut ok).unwrap().is_some());
    let mut big = BytesMut::from(&one_frame(FrameKind::Raft, &[1; 101])[..]);
    assert!(matches!(
        decoder.decode(&mut big),
        Err(FrameError::TooLarge { .. })
    ));
}

#[test]
fn unknown_kind_with_a_valid_checksum_is_reported() {
    let mut wire = one_frame(FrameKind::Raft, b"abc");
    wire[6..8].copy_from_slice(&999u16.to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&wire[..12]);
    hasher.update(&wire[16..]);
    let crc = hasher.finalize();
    wire[12..16].copy_from_slice(&crc.to_le_bytes());
    let mut buf = BytesMut::from(&wire[..]);
    assert_eq!(
        FrameDecoder::default().decode(&mut buf),
        Err(FrameError::UnknownKind { kind: 999 })
    );
}

#[test]
fn garbage_is_refused_after_four_bytes() {
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..4]);
    assert!(matches!(
        FrameDecoder::default().decode(&mut buf),
        Err(FrameError::BadMagic { .. })
    ));
}

#[test]
fn misaligned_payload_is_an_error() {
    let mut out = BytesMut::new();
    encode_message(
        FrameKind::Handshake,
        &Handshake {
            cluster_id: 1,
            node_id: 2,
            shard: 3,
            protocol_version: 1,
            listen_addr: "127.0.0.1:9".to_string(),
        },
        &mut out,
    )
    .unwrap();
    let frame = FrameDecoder::default().decode(&mut out).unwrap().unwrap();
    let mut shifted = rkyv::util::AlignedVec::<16>::new();
    shifted.push(0);
    shifted.extend_from_slice(&frame.payload);
    assert!(access_checked::<Handshake>(&shifted[1..]).is_err());
}
