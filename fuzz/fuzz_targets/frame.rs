//! Frame decoding on arbitrary input: must never panic, must never accept a frame that
//! does not re-encode to exactly the bytes it was decoded from, and payload validation of
//! whatever it yields must never panic either.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mast_wire::bytes::BytesMut;
use mast_wire::{
    access_checked, encode_frame, FrameDecoder, Handshake, HandshakeAck, HandshakeReject,
    HEADER_BYTES,
};

fuzz_target!(|data: &[u8]| {
    // The first byte picks how the input is fed (all at once or in small chunks) so
    // incremental decoding is covered too.
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let chunk = if mode == 0 {
        input.len().max(1)
    } else {
        mode as usize
    };
    let decoder = FrameDecoder::new(64 * 1024);
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
