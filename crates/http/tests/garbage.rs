//! Seeded random garbage against a live server: every answer must be a well-formed HTTP/1.1
//! response and the server must stay healthy after every case.
//!
//! Change the seed with `MAST_HTTP_GARBAGE_SEED=<u64>`; a failure prints the seed and case.

mod common;

use common::{test_limits, Client, TestServer};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const DEFAULT_SEED: u64 = 0x6d61_7374_6874_7470;
const CASES: usize = 120;

const TEMPLATES: [&[u8]; 5] = [
    b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    b"PUT /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n",
    b"GET /kv/a%20b?q=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"PUT /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
];

const TOKENS: [&[u8]; 12] = [
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b"Content-Length: 3\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"HTTP/1.1",
    b"0\r\n\r\n",
    b"\x00",
    b"ffffffff\r\n",
];

fn garbage(rng: &mut SmallRng) -> Vec<u8> {
    match rng.gen_range(0..3) {
        0 => (0..rng.gen_range(0..600)).map(|_| rng.gen()).collect(),
        1 => {
            let mut v = TEMPLATES[rng.gen_range(0..TEMPLATES.len())].to_vec();
            for _ in 0..rng.gen_range(1..6) {
                let i = rng.gen_range(0..=v.len());
                match rng.gen_range(0..3) {
                    0 if i < v.len() => v[i] = rng.gen(),
                    1 if i < v.len() => {
                        v.remove(i);
                    }
                    _ => {
                        let t = TOKENS[rng.gen_range(0..TOKENS.len())];
                        v.splice(i..i, t.iter().copied());
                    }
                }
            }
            v
        }
        _ => {
            let mut v = Vec::new();
            for _ in 0..rng.gen_range(1..12) {
                if rng.gen_bool(0.5) {
                    v.extend_from_slice(TEMPLATES[rng.gen_range(0..TEMPLATES.len())]);
                } else {
                    v.extend_from_slice(TOKENS[rng.gen_range(0..TOKENS.len())]);
                }
            }
            v
        }
    }
}

/// Every response in `bytes` must start with a valid HTTP/1.1 status line; returns the
/// statuses.
fn responses_well_formed(mut bytes: &[u8]) -> Result<Vec<u16>, String> {
    let mut statuses = Vec::new();
    while !bytes.is_empty() {
        let head_end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("response head without end")?
            + 4;
        let head = std::str::from_utf8(&bytes[..head_end]).map_err(|e| e.to_string())?;
        let status: u16 = head
            .strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map(|v| v.trim().parse().unwrap_or(usize::MAX))
            .unwrap_or(0);
        let len = if status == 100 { 0 } else { len };
        if bytes.len() < head_end + len {
            return Err("truncated response body".into());
        }
        bytes = &bytes[head_end + len..];
        statuses.push(status);
    }
    Ok(statuses)
}

#[test]
fn random_garbage_gets_well_formed_answers_and_the_server_stays_healthy() {
    let seed = std::env::var("MAST_HTTP_GARBAGE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let srv = TestServer::start(test_limits());
    let mut rng = SmallRng::seed_from_u64(seed);
    let (mut ok, mut refused) = (0usize, 0usize);
    for case in 0..CASES {
        let input = garbage(&mut rng);
        let mut c = Client::new(srv.connect());
        // The server may close early (refused request); later writes may then fail.
        let _ = std::io::Write::write_all(&mut c.stream, &input);
        c.half_close();
        let out = c.read_to_end();
        match responses_well_formed(&out) {
            Ok(statuses) => {
                ok += statuses.iter().filter(|s| **s < 300).count();
                refused += statuses.iter().filter(|s| **s >= 400).count();
            }
            Err(e) => panic!(
                "seed {seed} case {case}: {e}\ninput: {:?}\noutput: {:?}\nreproduce: MAST_HTTP_GARBAGE_SEED={seed} cargo test -p mast-http --test garbage",
                String::from_utf8_lossy(&input),
                String::from_utf8_lossy(&out)
            ),
        }
        let health = srv.get("/healthz");
        assert_eq!(
            health.status,
            200,
            "seed {seed} case {case}: server unhealthy after {:?}",
            String::from_utf8_lossy(&input)
        );
    }
    // The generator must exercise both paths, or this test proves nothing.
    assert!(
        ok > 0 && refused > 0,
        "seed {seed}: {ok} accepted, {refused} refused"
    );
    eprintln!("seed {seed}: {CASES} cases, {ok} responses < 300, {refused} refusals");
}
