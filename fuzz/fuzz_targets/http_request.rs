//! Fuzzes the HTTP/1.1 request decoder: arbitrary bytes, fed in pieces whose sizes come from
//! the input itself, must never panic, never loop, and never hand out a request that breaks
//! the limits, never hand on a malformed request target.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mast_http::bytes::BytesMut;
use mast_http::{Decoded, Limits, Method, RequestDecoder};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        header_bytes_max: 1024,
        header_count_max: 16,
        uri_bytes_max: 256,
        body_bytes_max: 4096,
        ..Limits::default()
    };
    let piece = usize::from(split).max(1);
    let mut decoder = RequestDecoder::new(&limits);
    let mut buf = BytesMut::new();
    for chunk in rest.chunks(piece) {
        buf.extend_from_slice(chunk);
        // Each request consumes bytes, so this is bounded by the input length.
        for _ in 0..=rest.len() {
            match decoder.decode(&mut buf) {
                Decoded::Request(req) => {
                    assert!(req.body().len() <= limits.body_bytes_max);
                    let _ = (req.path(), req.query(), req.query_pairs());
                    // Whatever form the target had, what is handed on is an absolute path
                    // (or OPTIONS's `*`) without a fragment: a malformed target is a 400.
                    let path = req.path();
                    assert!(
                        path.starts_with('/') || (path == "*" && req.method() == Method::OPTIONS)
                    );
                    assert!(!path.contains('#') && !req.query().unwrap_or("").contains('#'));
                    for (name, _) in req.headers() {
                        assert!(req.header(name).is_some());
                    }
                }
                Decoded::ExpectContinue => {}
                Decoded::NeedMore => break,
                Decoded::Error(e) => {
                    assert!(e.close && (400..600).contains(&e.status));
                    return;
                }
            }
        }
    }
});
