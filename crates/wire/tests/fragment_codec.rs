//! Property tests of the fragment header codec and of reassembly: round trips through any
//! fragment size and chunking; any reordering, loss or repetition of fragments is either
//! refused or yields nothing, never a wrong message; arbitrary bytes never panic.

use bytes::BytesMut;
use mast_wire::{
    encode_fragments, fragment_plan, FragmentHeader, Frame, FrameDecoder, FrameKind, Reassembler,
    FRAGMENT_HEADER_BYTES, HEADER_BYTES,
};
use proptest::prelude::*;

fn message_kind() -> impl Strategy<Value = FrameKind> {
    proptest::sample::select(
        FrameKind::ALL
            .iter()
            .copied()
            .filter(|k| !k.is_transport_only())
            .collect::<Vec<_>>(),
    )
}

fn decode_all(wire: &mut BytesMut) -> Vec<Frame> {
    let decoder = FrameDecoder::new(1 << 20);
    let mut out = Vec::new();
    while let Some(frame) = decoder.decode(wire).unwrap() {
        out.push(frame);
    }
    assert!(wire.is_empty());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn header_round_trips(
        message_id in any::<u64>(),
        total_bytes in any::<u64>(),
        count in 1u32..,
        index_seed in any::<u32>(),
        kind in message_kind(),
        data in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let head = FragmentHeader { message_id, total_bytes, index: index_seed % count, count, kind };
        let mut bytes = head.to_bytes().to_vec();
        prop_assert_eq!(bytes.len(), FRAGMENT_HEADER_BYTES);
        bytes.extend_from_slice(&data);
        let (parsed, rest) = FragmentHeader::parse(&bytes).unwrap();
        prop_assert_eq!(parsed, head);
        prop_assert_eq!(rest, &data[..]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        if let Ok((head, rest)) = FragmentHeader::parse(&bytes) {
            prop_assert!(head.index < head.count);
            prop_assert!(!head.kind.is_transport_only());
            prop_assert_eq!(rest.len(), bytes.len() - FRAGMENT_HEADER_BYTES);
            prop_assert_eq!(&head.to_bytes()[..], &bytes[..FRAGMENT_HEADER_BYTES]);
        }
    }

    #[test]
    fn split_then_reassemble_is_identity(
        kind in message_kind(),
        payload in proptest::collection::vec(any::<u8>(), 0..4000),
        fragment_bytes in 1usize..700,
        id in any::<u64>(),
    ) {
        let mut wire = BytesMut::new();
        encode_fragments(kind, id, &payload, fragment_bytes, &mut wire).unwrap();
        let (count, wire_bytes) = fragment_plan(payload.len(), fragment_bytes);
        prop_assert_eq!(wire.len(), wire_bytes);
        let frames = decode_all(&mut wire);
        prop_assert_eq!(frames.len(), count);
        let mut r = Reassembler::new(HEADER_BYTES + payload.len());
        let mut done = Vec::new();
        for (i, frame) in frames.into_iter().enumerate() {
            prop_assert_eq!(frame.kind, FrameKind::Fragment);
            prop_assert!(frame.payload.len() <= HEADER_BYTES + FRAGMENT_HEADER_BYTES + fragment_bytes);
            match r.push(frame).unwrap() {
                Some(m) => { prop_assert_eq!(i + 1, count); done.push(m); }
                None => prop_assert!(i + 1 < count),
            }
        }
        prop_assert_eq!(done.len(), 1);
        prop_assert_eq!(done[0].kind, kind);
        prop_assert_eq!(done[0].payload.as_slice(), &payload[..]);
        // One byte less of limit refuses the same message at its first fragment.
        if !payload.is_empty() {
            let mut wire = BytesMut::new();
            encode_fragments(kind, id, &payload, fragment_bytes, &mut wire).unwrap();
            let first = decode_all(&mut wire).swap_remove(0);
            prop_assert!(Reassembler::new(HEADER_BYTES + payload.len() - 1).push(first).is_err());
        }
    }

    /// Any sequence drawn from a message's fragments (reordered, lost, repeated) yields
    /// the message only when it is exactly the original sequence, and never a wrong one.
    #[test]
    fn tampered_sequences_never_yield_a_wrong_message(
        payload in proptest::collection::vec(any::<u8>(), 1..2000),
        fragment_bytes in 1usize..300,
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut wire = BytesMut::new();
        encode_fragments(FrameKind::Raft, 3, &payload, fragment_bytes, &mut wire).unwrap();
        let frames = decode_all(&mut wire);
        let sequence: Vec<usize> = picks.iter().map(|p| p.index(frames.len())).collect();
        let original: Vec<usize> = (0..frames.len()).collect();
        let mut r = Reassembler::new(1 << 20);
        let mut yielded = None;
        for &i in &sequence {
            match r.push(frames[i].clone()) {
                Ok(Some(m)) => { yielded = Some(m); break; }
                Ok(None) => {}
                Err(_) => break,
            }
        }
        if let Some(m) = yielded {
            prop_assert_eq!(m.payload.as_slice(), &payload[..]);
            prop_assert!(sequence.starts_with(&original));
        } else {
            prop_assert!(!sequence.starts_with(&original));
        }
    }
}
