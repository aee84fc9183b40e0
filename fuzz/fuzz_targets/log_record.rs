//! Log record decoding on arbitrary input, walked the way recovery walks a segment: must
//! never panic, must never read past the input, and every record it accepts must re-encode
//! to exactly the bytes it was decoded from (so no two byte strings decode to the same
//! record and nothing outside the checksum is trusted).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mast_log::record::{decode_record, encode_record, record_bytes, Decoded};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the payload limit so the length check is exercised too.
    let Some((&limit_sel, input)) = data.split_first() else {
        return;
    };
    let payload_max = (limit_sel as usize) * 64;
    let mut pos = 0usize;
    while pos < input.len() {
        match decode_record(&input[pos..], payload_max) {
            Ok(Decoded::Record(v, n)) => {
                assert!(n > 0 && pos + n <= input.len());
                assert!(v.payload.len() <= payload_max);
                assert_eq!(n, record_bytes(v.payload.len()).min(input.len() - pos));
                let mut again = Vec::new();
                encode_record(&mut again, v.index, v.term, v.payload);
                assert_eq!(&again[..n], &input[pos..pos + n]);
                pos += n;
            }
            Ok(Decoded::End) => {
                let rest = &input[pos..];
                assert!(rest.iter().take(24).all(|&b| b == 0));
                break;
            }
            Err(_) => break,
        }
    }
});
