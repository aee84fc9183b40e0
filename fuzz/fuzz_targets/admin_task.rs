//! Admin task frames on arbitrary input: the frame decoder plus bytecheck validation of a
//! `TaskPacket` / `TaskReply`, and the JSON form of `/dataNode/response` (both decoders),
//! must never panic;
//! a packet that validates must re-encode and decode to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mast::admintask::proto::{
    decode_packet, decode_reply, encode_packet, Answer, JsonAdminTask, ADMIN_FRAME_BYTES_MAX,
};
use mast_wire::bytes::BytesMut;
use mast_wire::FrameDecoder;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = JsonAdminTask::parse(data) {
        let _ = t.typed_response();
    }
    // The decoder `/…/response` uses: one typed pass, the Value path as its fallback.
    let _ = Answer::parse(data);
    let decoder = FrameDecoder::new(ADMIN_FRAME_BYTES_MAX);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        if let Ok(p) = decode_packet(&frame) {
            let mut again = BytesMut::new();
            encode_packet(&p, &mut again).unwrap();
            let f = decoder.decode(&mut again).unwrap().unwrap();
            assert_eq!(decode_packet(&f).unwrap(), p);
        }
        let _ = decode_reply(&frame);
    }
});
