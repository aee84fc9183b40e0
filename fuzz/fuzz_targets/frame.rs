//! Frame decoding and fragment reassembly on arbitrary input: must never panic, must never
//! accept a frame that does not re-encode to exactly the bytes it was decoded from, must
//! never reassemble a message over its limit, and payload validation of whatever it yields
//! must never panic either. The input is also split into fragments and reassembled, which
//! must give it back unchanged.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mast_wire::bytes::BytesMut;
use mast_wire::{
    access_checked, encode_fragments, encode_frame, FrameDecoder, FrameKind, Handshake,
    HandshakeAck, HandshakeReject, Reassembler, HEADER_BYTES,
};

const MESSAGE_BYTES_MAX: usize = 256 * 1024;

fuzz_target!(|data: &[u8]| {
    // The first byte picks how the input is fed (all at once or in small chunks) so
    // incremental decoding is covered too, and the fragment size of the round trip.
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let chunk = if mode == 0 {
        input.len().max(1)
    } else {
        mode as usize
    };
    round_trip_fragments(input, chunk);

    let decoder = FrameDecoder::new(64 * 1024);
    let mut reassembler = Reassembler::new(MESSAGE_BYTES_MAX);
    let mut buf = BytesMut::new();
    let mut consumed = 0usize;
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let used = before - buf.len();
                    assert_eq!(used, HEADER_BYTES + frame.payload.len());
                    let mut again = BytesMut::new();
                    encode_frame(frame.kind, &frame.payload, &mut again).unwrap();
                    assert_eq!(&again[..], &input[consumed..consumed + used]);
                    consumed += used;
                    let was_fragment = frame.kind == FrameKind::Fragment;
                    let frame = match reassembler.push(frame) {
                        Ok(Some(frame)) => frame,
                        Ok(None) => {
                            assert!(was_fragment);
                            assert!(reassembler.pending_bytes() < MESSAGE_BYTES_MAX);
                            continue;
                        }
                        // The transport closes the connection here; so does the fuzzer.
                        Err(_) => return,
                    };
                    assert!(HEADER_BYTES + frame.payload.len() <= MESSAGE_BYTES_MAX);
                    assert!(!frame.kind.is_transport_only() || !was_fragment);
                    let _ = access_checked::<Handshake>(&frame.payload);
                    let _ = access_checked::<HandshakeAck>(&frame.payload);
                    let _ = access_checked::<HandshakeReject>(&frame.payload);
                    let _ = frame.decode::<HandshakeReject>();
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});

fn round_trip_fragments(input: &[u8], fragment_bytes: usize) {
    let mut wire = BytesMut::new();
    encode_fragments(FrameKind::Raft, 1, input, fragment_bytes, &mut wire).unwrap();
    let decoder = FrameDecoder::new(1 << 20);
    let mut reassembler = Reassembler::new(HEADER_BYTES + input.len());
    let mut done = None;
    while let Some(frame) = decoder.decode(&mut wire).unwrap() {
        assert!(done.is_none(), "a fragment after the message was complete");
        done = reassembler.push(frame).unwrap();
    }
    assert!(wire.is_empty());
    let message = done.expect("message reassembled");
    assert_eq!(message.kind, FrameKind::Raft);
    assert_eq!(message.payload.as_slice(), input);
}
