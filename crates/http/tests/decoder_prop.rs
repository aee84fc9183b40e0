//! Property tests of the sans-I/O request decoder.

use bytes::BytesMut;
use mast_http::{Decoded, Limits, Method, Request, RequestDecoder};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Spec {
    method: Method,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    chunks: Option<Vec<usize>>,
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::DELETE),
        Just(Method::PATCH),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        method(),
        prop::collection::vec("[a-zA-Z0-9._~%-]{0,12}", 1..5),
        prop::option::of("[a-z0-9=&%+]{0,20}"),
        prop::collection::vec(("x-[a-z]{1,10}", "[ -~]{0,30}"), 0..6),
        prop::collection::vec(any::<u8>(), 0..300),
        prop::option::of(prop::collection::vec(1usize..64, 1..8)),
    )
        .prop_map(|(method, segs, query, headers, body, chunks)| Spec {
            method,
            path: format!("/{}", segs.join("/")),
            query,
            // Values are trimmed by the parser; keep them trimmed so equality is exact.
            headers: headers
                .into_iter()
                .map(|(n, v)| (n, v.trim().to_string()))
                .collect(),
            body,
            chunks,
        })
}

fn encode(s: &Spec) -> Vec<u8> {
    let mut out = format!("{} {}", s.method.as_str(), s.path);
    if let Some(q) = &s.query {
        out.push('?');
        out.push_str(q);
    }
    out.push_str(" HTTP/1.1\r\nHost: h\r\n");
    for (n, v) in &s.headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    let mut out = out.into_bytes();
    match &s.chunks {
        None => {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", s.body.len()).as_bytes());
            out.extend_from_slice(&s.body);
        }
        Some(sizes) => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let mut rest = &s.body[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                out.extend_from_slice(format!("{n:X};i={i}\r\n").as_bytes());
                out.extend_from_slice(&rest[..n]);
                out.extend_from_slice(b"\r\n");
                rest = &rest[n..];
                i += 1;
            }
            out.extend_from_slice(b"0\r\nx-trailer: t\r\n\r\n");
        }
    }
    out
}

fn limits() -> Limits {
    Limits {
        body_bytes_max: 4096,
        ..Limits::default()
    }
}

/// Feeds `input` in pieces of the given sizes, collecting requests; panics on errors.
fn feed(input: &[u8], cuts: &[usize]) -> Vec<Request> {
    let mut d = RequestDecoder::new(&limits());
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut cut = cuts.iter().cycle();
    while pos < input.len() {
        let n = (*cut.next().unwrap_or(&1)).max(1).min(input.len() - pos);
        buf.extend_from_slice(&input[pos..pos + n]);
        pos += n;
        for _ in 0..1000 {
            match d.decode(&mut buf) {
                Decoded::Request(r) => out.push(r),
                Decoded::ExpectContinue => {}
                Decoded::NeedMore => break,
                Decoded::Error(e) => panic!("unexpected error {e:?}"),
            }
        }
    }
    assert!(buf.is_empty(), "bytes left over: {}", buf.len());
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn pipelined_requests_round_trip_whatever_the_read_boundaries(
        specs in prop::collection::vec(spec(), 1..4),
        cuts in prop::collection::vec(1usize..80, 1..10),
    ) {
        let mut wire = Vec::new();
        for s in &specs {
            wire.extend_from_slice(&encode(s));
        }
        let got = feed(&wire, &cuts);
        prop_assert_eq!(got.len(), specs.len());
        for (r, s) in got.iter().zip(&specs) {
            prop_assert_eq!(r.method(), s.method);
            prop_assert_eq!(r.path(), s.path.as_str());
            prop_assert_eq!(r.query(), s.query.as_deref());
            prop_assert_eq!(&r.body()[..], &s.body[..]);
            for (n, v) in &s.headers {
                // First header of that name wins in lookups.
                let first = s.headers.iter().find(|(m, _)| m.eq_ignore_ascii_case(n)).map(|(_, v)| v);
                prop_assert_eq!(r.header(n), first.map(|v| v.as_bytes()));
                let _ = v;
            }
            prop_assert!(r.keep_alive());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_errors_are_final(
        data in prop::collection::vec(any::<u8>(), 0..2048),
        cuts in prop::collection::vec(1usize..300, 1..6),
    ) {
        let mut d = RequestDecoder::new(&Limits { header_bytes_max: 512, uri_bytes_max: 128, body_bytes_max: 256, ..Limits::default() });
        let mut buf = BytesMut::new();
        let mut pos = 0;
        let mut failed = None;
        let mut cut = cuts.iter().cycle();
        while pos < data.len() {
            let n = (*cut.next().unwrap_or(&1)).min(data.len() - pos);
            buf.extend_from_slice(&data[pos..pos + n]);
            pos += n;
            for _ in 0..1000 {
                let before = buf.len();
                match d.decode(&mut buf) {
                    Decoded::Request(_) => prop_assert!(buf.len() < before),
                    Decoded::ExpectContinue => {}
                    Decoded::NeedMore => break,
                    Decoded::Error(e) => {
                        prop_assert!(e.close);
                        prop_assert!((400..600).contains(&e.status));
                        failed = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = &failed {
                match d.decode(&mut buf) {
                    Decoded::Error(again) => prop_assert_eq!(&again, e),
                    other => prop_assert!(false, "decoder recovered after an error: {:?}", other),
                }
                break;
            }
        }
    }

    #[test]
    fn a_corrupted_request_is_either_refused_or_decoded_within_limits(
        s in spec(),
        pos in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut wire = encode(&s);
        let i = pos.index(wire.len());
        wire[i] = byte;
        let mut d = RequestDecoder::new(&limits());
        let mut buf = BytesMut::from(&wire[..]);
        for _ in 0..10 {
            match d.decode(&mut buf) {
                Decoded::Request(r) => {
                    prop_assert!(r.body().len() <= limits().body_bytes_max);
                    prop_assert!(r.path().starts_with('/') || r.path() == "*");
                }
                Decoded::ExpectContinue => {}
                Decoded::NeedMore | Decoded::Error(_) => break,
            }
        }
    }
}

/// A well-formed absolute-form authority: a host (name, IPv4 or bracketed IPv6) and an
/// optional port.
fn good_authority() -> impl Strategy<Value = String> {
    let host = prop_oneof![
        "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z0-9]{1,6}){0,2}",
        (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        any::<[u16; 8]>().prop_map(|s| format!("[{}]", std::net::Ipv6Addr::from(s))),
    ];
    (host, prop::option::of(any::<u16>()))
        .prop_map(|(h, p)| p.map_or(h.clone(), |p| format!("{h}:{p}")))
}

/// One way of breaking an authority, applied to a good one.
#[derive(Debug, Clone)]
enum Damage {
    Empty,
    Userinfo(String),
    PortNotDigits(String),
    PortTooBig(u32),
    UnclosedBracket,
    BadHostByte(u8),
    BadEscape,
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        Just(Damage::Empty),
        "[a-z]{0,5}".prop_map(Damage::Userinfo),
        "[a-z]{1,5}".prop_map(Damage::PortNotDigits),
        (65_536u32..1_000_000).prop_map(Damage::PortTooBig),
        Just(Damage::UnclosedBracket),
        // Visible ASCII outside reg-name's alphabet that httparse passes in a target.
        prop::sample::select(b"\"<>\\^`{|}[]".to_vec()).prop_map(Damage::BadHostByte),
        Just(Damage::BadEscape),
    ]
}

fn damaged(good: &str, d: &Damage) -> String {
    match d {
        Damage::Empty => String::new(),
        Damage::Userinfo(u) => format!("{u}@{good}"),
        Damage::PortNotDigits(p) => format!("h:{p}"),
        Damage::PortTooBig(p) => format!("h:{p}"),
        Damage::UnclosedBracket => "[::1".to_string(),
        Damage::BadHostByte(b) => format!("a{}b", *b as char),
        Damage::BadEscape => "a%g1".to_string(),
    }
}

fn decode_one(wire: &[u8]) -> Result<Request, u16> {
    let mut d = RequestDecoder::new(&limits());
    let mut buf = BytesMut::from(wire);
    match d.decode(&mut buf) {
        Decoded::Request(r) => Ok(r),
        Decoded::Error(e) => Err(e.status),
        other => panic!("a complete request decoded as {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// Absolute-form targets: a well-formed authority yields the path and query; the same
    /// target with a broken authority (empty, userinfo, bad port, unclosed IP literal, a byte
    /// outside reg-name, a bad escape) is a 400, never a request.
    #[test]
    fn absolute_form_is_accepted_iff_the_authority_is_well_formed(
        auth in good_authority(),
        d in damage(),
        https in any::<bool>(),
        path in "(/[a-z0-9._~-]{0,6}){1,3}",
        query in prop::option::of("[a-z0-9=&]{0,8}"),
    ) {
        let scheme = if https { "https" } else { "http" };
        let q = query.as_ref().map(|q| format!("?{q}")).unwrap_or_default();
        let good = format!("GET {scheme}://{auth}{path}{q} HTTP/1.1\r\nHost: h\r\n\r\n");
        match decode_one(good.as_bytes()) {
            Ok(r) => {
                prop_assert_eq!(r.path(), path.as_str());
                prop_assert_eq!(r.query(), query.as_deref());
            }
            Err(status) => prop_assert!(false, "{} refused with {}", good, status),
        }
        let bad_auth = damaged(&auth, &d);
        let bad = format!("GET {scheme}://{bad_auth}{path}{q} HTTP/1.1\r\nHost: h\r\n\r\n");
        match decode_one(bad.as_bytes()) {
            Ok(r) => prop_assert!(false, "{} accepted as path {}", bad, r.path()),
            Err(status) => prop_assert_eq!(status, 400, "{}", bad),
        }
    }

    /// Origin-form and asterisk-form: a fragment anywhere, or `*` with a method other than
    /// OPTIONS, is a 400.
    #[test]
    fn fragments_and_misplaced_asterisks_are_refused(
        s in spec(),
        frag in "[a-z0-9]{0,6}",
    ) {
        let q = s.query.as_ref().map(|q| format!("?{q}")).unwrap_or_default();
        let wire = format!("GET {}{q}#{frag} HTTP/1.1\r\nHost: h\r\n\r\n", s.path);
        prop_assert_eq!(decode_one(wire.as_bytes()).err(), Some(400));
        let wire = format!("{} * HTTP/1.1\r\nHost: h\r\n\r\n", s.method.as_str());
        prop_assert_eq!(decode_one(wire.as_bytes()).err(), Some(400));
    }
}
