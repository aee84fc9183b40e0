//! The HTTP rules of issue #2, checked against the real `mast server` binary over raw TCP:
//! keep-alive, pipelining, chunked bodies, `Expect: 100-continue`, HEAD, HTTP/1.0, every
//! limit with its status, request smuggling, slow and non-reading clients, seeded garbage,
//! graceful shutdown on SIGTERM, and bad command-line flags.
//!
//! Every test runs its own server (own ports, own data directory), killed on drop.
//! Run: `cargo test --release -p mast --test http_binary` (about 11 s, bounded by the
//! server's 10 s head timeout). Reproduce the garbage test with
//! `MAST_HTTP_GARBAGE_SEED=<seed printed by the test>`.

mod http_support;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use http_support::{
    free_port, free_port_run, request_bytes, run_mast, server_args, Conn, Resp, Server, SHARDS,
};
use rand::{Rng, SeedableRng};

/// A liveness bound for "another client is still served", not a performance target.
const LIVENESS_BOUND: Duration = Duration::from_secs(2);
/// The server's default `body_bytes_max`.
const BODY_BYTES_MAX: usize = 4 * 1024 * 1024;
/// The KV API's value limit.
const VALUE_BYTES_MAX: usize = 1024 * 1024;
/// How long a process with bad flags gets to exit.
const BAD_FLAGS_EXIT_TIMEOUT: Duration = Duration::from_secs(15);

fn put(path: &str, body: &[u8]) -> Vec<u8> {
    request_bytes("PUT", path, &[], body)
}

fn get(path: &str) -> Vec<u8> {
    request_bytes("GET", path, &[], b"")
}

fn expect_response(c: &mut Conn, srv: &Server, what: &str) -> Resp {
    c.response()
        .unwrap_or_else(|e| panic!("{what}: {e}\n{}", srv.log_tail()))
}

/// The value of one sample (exact series name and labels) in Prometheus text.
fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|v| v.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

fn revision(r: &Resp) -> u64 {
    let etag = r
        .header("etag")
        .unwrap_or_else(|| panic!("no ETag in {r:?}"));
    etag.trim_matches('"')
        .parse()
        .unwrap_or_else(|_| panic!("ETag {etag:?} is not a quoted revision"))
}

/// `GET /kv/{key}` on a fresh connection is 404 `key_not_found`.
fn assert_absent(srv: &Server, key: &str, why: &str) {
    let r = srv.request("GET", &format!("/kv/{key}"), b"");
    assert_eq!(r.status, 404, "{key} exists ({why}): {:?}", r.text());
    assert_eq!(r.error_kind(), "key_not_found");
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let srv = Server::start();
    let mut c = srv.connect();
    let mut last_rev = 0;
    for i in 0..40 {
        let value = format!("value-{i}");
        c.send(&put("/kv/ka", value.as_bytes()));
        let w = expect_response(&mut c, &srv, "keep-alive PUT");
        assert_eq!(w.status, 204, "PUT #{i}: {:?}", w.text());
        assert!(!w.closes(), "PUT #{i} closed a keep-alive connection");
        let rev = revision(&w);
        assert!(rev > last_rev, "revision {rev} after {last_rev}");
        last_rev = rev;
        c.send(&get("/kv/ka"));
        let r = expect_response(&mut c, &srv, "keep-alive GET");
        assert_eq!((r.status, r.text()), (200, value));
        assert_eq!(revision(&r), rev);
        assert!(!r.closes());
    }
    // Every acknowledged PUT went through the log, and every batch was made durable once.
    let metrics = srv.request("GET", "/metrics", b"").text();
    let sum = |name: &str| -> u64 {
        (0..SHARDS)
            .map(|s| metric(&metrics, &format!("{name}{{shard=\"{s}\"}}")).unwrap_or(0))
            .sum()
    };
    let (entries, batches) = (sum("mast_log_entries_total"), sum("mast_log_batches_total"));
    assert!(entries >= 40, "log entries {entries} < 40 PUTs:\n{metrics}");
    assert!(
        (1..=entries).contains(&batches),
        "log batches {batches}:\n{metrics}"
    );
    assert_eq!(sum("mast_log_syncs_total"), batches, "{metrics}");
    // `Connection: close` is honoured, and a request pipelined after it never runs.
    let mut bytes = request_bytes("GET", "/healthz", &["Connection: close"], b"");
    bytes.extend_from_slice(&put("/kv/after-close", b"x"));
    c.send(&bytes);
    let r = expect_response(&mut c, &srv, "GET with Connection: close");
    assert_eq!(r.status, 200);
    assert!(r.closes());
    assert!(c.closed(), "connection left open after Connection: close");
    assert_absent(&srv, "after-close", "it followed Connection: close");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let srv = Server::start();
    let mut c = srv.connect();
    // Several keys so that both shards own some (cross-shard calls in the middle of a
    // pipeline must not reorder responses).
    let keys: Vec<String> = (0..8).map(|i| format!("pipe-{i}")).collect();
    let owners: std::collections::BTreeSet<usize> = keys
        .iter()
        .map(|k| mast::placement::owner_shard(k, SHARDS as usize))
        .collect();
    assert_eq!(
        owners.len(),
        SHARDS as usize,
        "pick keys owned by every shard"
    );
    let mut batch = Vec::new();
    let mut expected: Vec<(u16, Option<String>)> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let path = format!("/kv/{key}");
        batch.extend_from_slice(&get("/healthz"));
        expected.push((200, Some("ok\n".into())));
        batch.extend_from_slice(&put(&path, format!("v1-{i}").as_bytes()));
        expected.push((204, None));
        batch.extend_from_slice(&get(&path));
        expected.push((200, Some(format!("v1-{i}"))));
        batch.extend_from_slice(&put(&path, format!("v2-{i}").as_bytes()));
        expected.push((204, None));
        batch.extend_from_slice(&get(&path));
        expected.push((200, Some(format!("v2-{i}"))));
        batch.extend_from_slice(&request_bytes("DELETE", &path, &[], b""));
        expected.push((204, None));
        batch.extend_from_slice(&get(&path));
        expected.push((404, None));
    }
    // More than pipeline_depth_max (64) requests in one write.
    for _ in 0..100 {
        batch.extend_from_slice(&get("/healthz"));
        expected.push((200, Some("ok\n".into())));
    }
    batch.extend_from_slice(&put("/kv/a", b"last"));
    expected.push((204, None));
    batch.extend_from_slice(&get("/kv/a"));
    expected.push((200, Some("last".into())));
    c.send(&batch);
    for (i, (status, body)) in expected.iter().enumerate() {
        let r = expect_response(&mut c, &srv, &format!("pipelined response {i}"));
        assert_eq!(r.status, *status, "pipelined response {i}: {:?}", r.text());
        if let Some(body) = body {
            assert_eq!(&r.text(), body, "pipelined response {i} out of order");
        }
        assert!(!r.closes());
    }
    assert!(c.buffered().is_empty(), "more responses than requests");
}

#[test]
fn chunked_bodies_with_extensions_and_trailers_are_decoded() {
    let srv = Server::start();
    let mut c = srv.connect();
    let parts: [&[u8]; 7] = [
        b"PUT /kv/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"5;name=val\r\nhel",
        b"lo\r\n",
        b"6;a=b;c=\"q r\"\r\n world\r\n",
        b"A\r\n, chunked!\r\n",
        b"0\r\nX-Trailer: yes\r\nX-Other: ",
        b"2\r\n\r\n",
    ];
    for p in parts {
        c.send(p);
        // Give the server a chance to see each part as its own read.
        std::thread::sleep(Duration::from_millis(5));
    }
    let w = expect_response(&mut c, &srv, "chunked PUT");
    assert_eq!(w.status, 204, "{:?}", w.text());
    assert!(!w.closes(), "a chunked request closed the connection");
    c.send(&get("/kv/x"));
    let r = expect_response(&mut c, &srv, "GET after chunked PUT");
    assert_eq!(
        (r.status, r.text()),
        (200, "hello world, chunked!".to_string())
    );

    // A larger value in many chunks, dribbled a byte at a time across a chunk boundary.
    let value: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut body =
        b"PUT /kv/x-big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for chunk in value.chunks(7_001) {
        body.extend_from_slice(format!("{:x};i=1\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let split = body.len() / 2;
    c.send(&body[..split]);
    for b in &body[split..split + 20] {
        c.send(std::slice::from_ref(b));
    }
    c.send(&body[split + 20..]);
    let w = expect_response(&mut c, &srv, "large chunked PUT");
    assert_eq!(w.status, 204, "{:?}", w.text());
    c.send(&get("/kv/x-big"));
    let r = expect_response(&mut c, &srv, "GET large chunked value");
    assert_eq!(r.status, 200);
    assert!(
        r.body == value,
        "decoded chunked value differs ({} bytes)",
        r.body.len()
    );
}

#[test]
fn expect_100_continue_and_the_413_paths() {
    let srv = Server::start();
    // Interim 100, then the final response once the body is sent.
    let mut c = srv.connect();
    c.send(b"PUT /kv/exp HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    let interim = expect_response(&mut c, &srv, "interim response");
    assert_eq!(interim.status, 100, "{interim:?}");
    c.send(b"hello");
    let w = expect_response(&mut c, &srv, "final response after 100");
    assert_eq!(w.status, 204, "{:?}", w.text());
    c.send(&get("/kv/exp"));
    let r = expect_response(&mut c, &srv, "GET after 100-continue");
    assert_eq!((r.status, r.text()), (200, "hello".to_string()));

    // Over the server's body limit: 413 at once, no 100, the body is never read (it is never
    // sent), and the connection is closed.
    let mut c = srv.connect();
    let head = format!(
        "PUT /kv/exp-huge HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        BODY_BYTES_MAX + 1
    );
    c.send(head.as_bytes());
    let r = expect_response(&mut c, &srv, "413 before the body");
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.error_kind(), "body_too_large");
    assert!(r.closes());
    assert!(c.closed(), "connection left open after 413");
    // The same without Expect: still answered before any body byte arrives.
    let mut c = srv.connect();
    c.send(
        format!(
            "PUT /kv/exp-huge HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            BODY_BYTES_MAX * 4
        )
        .as_bytes(),
    );
    let r = expect_response(&mut c, &srv, "413 without Expect");
    assert_eq!(
        (r.status, r.error_kind()),
        (413, "body_too_large".to_string())
    );
    assert!(c.closed());

    // Under the body limit but over the KV value limit: the decoder accepts the framing (and
    // sends 100), the KV handler refuses the value with value_too_large.
    let mut c = srv.connect();
    let len = VALUE_BYTES_MAX + 1;
    c.send(format!(
        "PUT /kv/exp-big HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: {len}\r\n\r\n"
    )
    .as_bytes());
    let interim = expect_response(&mut c, &srv, "interim response for a 1 MiB+1 value");
    assert_eq!(interim.status, 100, "{interim:?}");
    c.send(&vec![b'v'; len]);
    let r = expect_response(&mut c, &srv, "413 value_too_large");
    assert_eq!(
        (r.status, r.error_kind()),
        (413, "value_too_large".to_string())
    );
    // The body was read in full, so the connection stays usable.
    c.send(&get("/kv/exp-big"));
    let r = expect_response(&mut c, &srv, "GET after value_too_large");
    assert_eq!(r.status, 404);
    assert_absent(&srv, "exp-huge", "its PUT was refused with 413");
}

#[test]
fn head_and_http10() {
    let srv = Server::start();
    assert_eq!(srv.request("PUT", "/kv/h", b"12345").status, 204);
    // HEAD: the GET's length, no body. The pipelined GET after each HEAD would not parse as a
    // response if a body had been sent.
    let mut c = srv.connect();
    for (path, status, len) in [("/healthz", 200, "3"), ("/kv/h", 200, "5")] {
        let mut bytes = request_bytes("HEAD", path, &[], b"");
        bytes.extend_from_slice(&get("/healthz"));
        c.send(&bytes);
        let h = c.response_to(true).expect("HEAD response");
        assert_eq!(h.status, status, "HEAD {path}");
        assert_eq!(h.header("content-length"), Some(len), "HEAD {path}");
        let g = expect_response(&mut c, &srv, "GET after HEAD");
        assert_eq!(
            (g.status, g.text()),
            (200, "ok\n".to_string()),
            "after HEAD {path}"
        );
    }
    let mut bytes = request_bytes("HEAD", "/kv/no-such-key", &[], b"");
    bytes.extend_from_slice(&get("/kv/h"));
    c.send(&bytes);
    let h = c.response_to(true).expect("HEAD 404");
    assert_eq!(h.status, 404);
    let g = expect_response(&mut c, &srv, "GET after HEAD 404");
    assert_eq!((g.status, g.text()), (200, "12345".to_string()));

    // HTTP/1.0 without keep-alive: answered, then closed; a request after it never runs.
    let mut c = srv.connect();
    c.send(b"GET /kv/h HTTP/1.0\r\n\r\nPUT /kv/after-10 HTTP/1.0\r\nContent-Length: 1\r\n\r\nx");
    let r = expect_response(&mut c, &srv, "HTTP/1.0 GET");
    assert_eq!((r.status, r.text()), (200, "12345".to_string()));
    assert!(
        r.closes(),
        "HTTP/1.0 response without connection: close: {r:?}"
    );
    assert!(c.closed(), "HTTP/1.0 connection left open");
    assert_absent(
        &srv,
        "after-10",
        "it followed an HTTP/1.0 request without keep-alive",
    );

    // HTTP/1.0 with keep-alive: the connection stays open and says so.
    let mut c = srv.connect();
    c.send(b"PUT /kv/h10 HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nten");
    let w = expect_response(&mut c, &srv, "HTTP/1.0 keep-alive PUT");
    assert_eq!(w.status, 204, "{:?}", w.text());
    assert_eq!(
        w.header("connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("keep-alive")
    );
    c.send(b"GET /kv/h10 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = expect_response(&mut c, &srv, "HTTP/1.0 keep-alive GET");
    assert_eq!((r.status, r.text()), (200, "ten".to_string()));
    // Expect: 100-continue is not an HTTP/1.0 mechanism: no interim response.
    c.send(b"PUT /kv/h10 HTTP/1.0\r\nConnection: keep-alive\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nnew");
    let w = expect_response(&mut c, &srv, "HTTP/1.0 PUT with Expect");
    assert_eq!(w.status, 204, "{:?}", w.text());
}

/// A PUT that must never run because it is hidden after a refused request.
fn smuggled(n: usize) -> Vec<u8> {
    put(&format!("/kv/smuggled-{n}"), b"x")
}

#[test]
fn every_limit_answers_its_status_closes_and_nothing_after_it_runs() {
    let srv = Server::start();
    let chunked = "PUT /kv/c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    let cases: Vec<(&str, Vec<u8>, u16, &[&str])> = vec![
        (
            "head over 16 KiB",
            format!("GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "v".repeat(17_000))
                .into_bytes(),
            431,
            &["header_too_large"],
        ),
        (
            "over 100 headers",
            format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{}\r\n", "X-N: v\r\n".repeat(120))
                .into_bytes(),
            431,
            &["too_many_headers"],
        ),
        (
            "absolute-form with an empty authority",
            b"GET http:///healthz HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            400,
            &["bad_target"],
        ),
        (
            "absolute-form with an unclosed IP literal",
            b"GET http://[::1/healthz HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            400,
            &["bad_target"],
        ),
        (
            "a fragment in the target",
            b"GET /healthz#x HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            400,
            &["bad_target"],
        ),
        (
            "target over 8 KiB",
            format!("GET /kv/{} HTTP/1.1\r\nHost: t\r\n\r\n", "u".repeat(9_000)).into_bytes(),
            414,
            &["uri_too_long"],
        ),
        (
            "declared body over 4 MiB",
            format!(
                "PUT /kv/b HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
                BODY_BYTES_MAX + 1
            )
            .into_bytes(),
            413,
            &["body_too_large"],
        ),
        (
            "chunked body over 4 MiB",
            format!("{chunked}{:x}\r\n", BODY_BYTES_MAX + 1).into_bytes(),
            413,
            &["body_too_large"],
        ),
        (
            "trailers over 16 KiB",
            format!("{chunked}1\r\nx\r\n0\r\nX-T: {}\r\n\r\n", "t".repeat(17_000)).into_bytes(),
            431,
            &["header_too_large"],
        ),
        (
            "Transfer-Encoding gzip",
            b"PUT /kv/c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
            501,
            &["unsupported_transfer_encoding"],
        ),
        (
            "Transfer-Encoding gzip, chunked",
            b"PUT /kv/c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec(),
            501,
            &["unsupported_transfer_encoding"],
        ),
        (
            "CL.TE: Content-Length and Transfer-Encoding",
            b"PUT /kv/c HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            400,
            &["conflicting_framing"],
        ),
        (
            "TE.CL: Transfer-Encoding first",
            b"PUT /kv/c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n0\r\n\r\n".to_vec(),
            400,
            &["conflicting_framing"],
        ),
        (
            "two Content-Lengths",
            b"PUT /kv/c HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx".to_vec(),
            400,
            &["conflicting_framing", "bad_content_length"],
        ),
        (
            "Content-Length list",
            b"PUT /kv/c HTTP/1.1\r\nHost: t\r\nContent-Length: 1, 1\r\n\r\nx".to_vec(),
            400,
            &["bad_content_length", "conflicting_framing"],
        ),
        (
            "signed Content-Length",
            b"PUT /kv/c HTTP/1.1\r\nHost: t\r\nContent-Length: +1\r\n\r\nx".to_vec(),
            400,
            &["bad_content_length"],
        ),
        (
            "two Transfer-Encodings",
            format!("{}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", &chunked[..chunked.len() - 2])
                .into_bytes(),
            400,
            &["conflicting_framing", "unsupported_transfer_encoding"],
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            b"PUT /kv/c HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            400,
            &["conflicting_framing", "bad_header"],
        ),
        (
            "bad chunk size",
            format!("{chunked}zz\r\nhello\r\n0\r\n\r\n").into_bytes(),
            400,
            &["bad_chunk"],
        ),
        (
            "chunk without its CRLF",
            format!("{chunked}5\r\nhelloXX0\r\n\r\n").into_bytes(),
            400,
            &["bad_chunk"],
        ),
        (
            "negative chunk size",
            format!("{chunked}-5\r\nhello\r\n0\r\n\r\n").into_bytes(),
            400,
            &["bad_chunk"],
        ),
        (
            "obs-fold in the head",
            b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\r\n  folded\r\n\r\n".to_vec(),
            400,
            &["obs_fold"],
        ),
        (
            "obs-fold in the trailers",
            format!("{chunked}1\r\nx\r\n0\r\nX-T: a\r\n\tb\r\n\r\n").into_bytes(),
            400,
            &["obs_fold"],
        ),
        (
            "space before the colon",
            b"PUT /kv/c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n".to_vec(),
            400,
            &["bad_header"],
        ),
        (
            "missing Host",
            b"GET /healthz HTTP/1.1\r\n\r\n".to_vec(),
            400,
            &["missing_host"],
        ),
        (
            "two Hosts",
            b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
            400,
            &["missing_host", "bad_header"],
        ),
        (
            "HTTP/2.0",
            b"GET /healthz HTTP/2.0\r\nHost: t\r\n\r\n".to_vec(),
            505,
            &["http_version_not_supported"],
        ),
        (
            "HTTP/1.2",
            b"GET /healthz HTTP/1.2\r\nHost: t\r\n\r\n".to_vec(),
            505,
            &["http_version_not_supported"],
        ),
        (
            "unknown method",
            b"BREW /healthz HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            501,
            &["method_not_implemented"],
        ),
        (
            "unknown expectation",
            b"PUT /kv/c HTTP/1.1\r\nHost: t\r\nExpect: tea\r\nContent-Length: 1\r\n\r\nx".to_vec(),
            417,
            &["expectation_failed"],
        ),
    ];
    let mut n = 0;
    let mut refusals: BTreeMap<String, u64> = BTreeMap::new();
    for (what, prefix, status, kinds) in &cases {
        // Alone, and behind a valid request on the same connection.
        for behind_valid in [false, true] {
            n += 1;
            let mut c = srv.connect();
            let mut bytes = Vec::new();
            if behind_valid {
                bytes.extend_from_slice(&get("/healthz"));
            }
            bytes.extend_from_slice(prefix);
            bytes.extend_from_slice(&smuggled(n));
            // The server may close before reading all of it; what it answered is what counts.
            let _ = c.try_send(&bytes);
            if behind_valid {
                let ok = c
                    .response()
                    .unwrap_or_else(|e| panic!("{what}: valid request before it: {e}"));
                assert_eq!(ok.status, 200, "{what}: valid request before it");
            }
            let r = c
                .response()
                .unwrap_or_else(|e| panic!("{what}: {e}\n{}", srv.log_tail()));
            assert_eq!(r.status, *status, "{what}: {:?}", r.text());
            let kind = r.error_kind();
            assert!(
                kinds.contains(&kind.as_str()),
                "{what}: kind {kind}, expected one of {kinds:?}"
            );
            assert!(r.closes(), "{what}: no connection: close");
            assert!(c.closed(), "{what}: connection left open after {status}");
            *refusals.entry(kind).or_default() += 1;
        }
    }
    // The binary counts every refusal once, by kind, over all shards.
    let metrics = srv.request("GET", "/metrics", b"").text();
    for (kind, count) in &refusals {
        let series = format!("mast_http_parse_errors_total{{kind=\"{kind}\"}}");
        assert_eq!(
            metric(&metrics, &series),
            Some(*count),
            "{series} in /metrics:\n{metrics}"
        );
    }
    // Control: the same smuggled PUT behind a valid request does run, so the 404s below
    // are evidence, not an artefact of the key.
    let mut c = srv.connect();
    let mut bytes = get("/healthz");
    bytes.extend_from_slice(&smuggled(0));
    c.send(&bytes);
    assert_eq!(expect_response(&mut c, &srv, "control GET").status, 200);
    assert_eq!(expect_response(&mut c, &srv, "control PUT").status, 204);
    assert_eq!(srv.request("GET", "/kv/smuggled-0", b"").status, 200);
    for i in 1..=n {
        assert_absent(
            &srv,
            &format!("smuggled-{i}"),
            "it was hidden after a refused request",
        );
    }
    srv.assert_healthy(http_support::IO_TIMEOUT, "after every refusal");
}

#[test]
fn a_slow_client_does_not_block_other_clients() {
    let srv = Server::start();
    let addr = srv.http_addr;
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: {}\r\n\r\n",
        "s".repeat(40)
    );
    // Several dribblers, so that every shard very likely has one (the kernel spreads
    // connections over the shards' listeners).
    let dribblers: Vec<_> = (0..4)
        .map(|_| {
            let head = head.clone();
            std::thread::spawn(move || -> Result<Resp, String> {
                let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
                let mut c = Conn::new(stream);
                for b in head.as_bytes() {
                    c.try_send(std::slice::from_ref(b))
                        .map_err(|e| e.to_string())?;
                    std::thread::sleep(Duration::from_millis(15));
                }
                c.response()
            })
        })
        .collect();
    // While heads are being dribbled (about 1.3 s each), other clients are served.
    let mut served = 0;
    while dribblers.iter().any(|d| !d.is_finished()) {
        srv.assert_healthy(LIVENESS_BOUND, "while slow clients dribble their heads");
        let mut c = srv.connect();
        c.set_timeout(LIVENESS_BOUND);
        c.send(&put("/kv/slow-other", b"v"));
        assert_eq!(
            expect_response(&mut c, &srv, "PUT beside slow clients").status,
            204
        );
        served += 1;
        assert!(served < 10_000, "dribblers never finished");
    }
    assert!(
        served >= 3,
        "only {served} checks ran while the slow clients were active"
    );
    // Heads completed within head_read_timeout are served normally.
    for d in dribblers {
        let r = d
            .join()
            .expect("dribbler thread")
            .expect("dribbled request answered");
        assert_eq!(r.status, 200);
    }
}

#[test]
fn a_head_dribbled_past_the_head_timeout_gets_408_and_is_closed() {
    // The server's default head_read_timeout_ms: the whole head must arrive within this
    // from its first byte, however steadily bytes keep coming.
    const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
    const SLACK: Duration = Duration::from_secs(5);
    let srv = Server::start();
    let mut c = srv.connect();
    c.set_timeout(HEAD_TIMEOUT + SLACK);
    c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n");
    let t0 = Instant::now();
    let mut writer = c.stream.try_clone().expect("clone stream");
    let dribbler = std::thread::spawn(move || {
        // One header byte every 200 ms: never idle long, never complete. Stops when the
        // server has closed (the write fails) or after a bound.
        let mut sent = 0u32;
        while sent < 200 && writer.write_all(b"x").is_ok() {
            sent += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
        sent
    });
    let r = c
        .response()
        .unwrap_or_else(|e| panic!("no 408 for a dribbled head: {e}\n{}", srv.log_tail()));
    let elapsed = t0.elapsed();
    assert_eq!(
        (r.status, r.error_kind()),
        (408, "request_timeout".to_string())
    );
    assert!(r.closes());
    assert!(c.closed(), "connection left open after 408");
    assert!(elapsed < HEAD_TIMEOUT + SLACK, "408 only after {elapsed:?}");
    let sent = dribbler.join().expect("dribbler thread");
    assert!(sent >= 10, "the head was dribbled for only {sent} bytes");
    let metrics = srv.request("GET", "/metrics", b"").text();
    assert!(
        metric(&metrics, "mast_http_timeouts_total{kind=\"head\"}") >= Some(1),
        "head timeout not counted:\n{metrics}"
    );
}

#[test]
fn a_client_that_never_reads_does_not_stop_others() {
    let srv = Server::start();
    assert_eq!(
        srv.request("PUT", "/kv/big", &vec![b'b'; 512 * 1024])
            .status,
        204
    );
    let addr = srv.http_addr;
    // Thousands of pipelined GETs whose responses (512 KiB each) are never read: the server's
    // writes to these connections stall.
    let stallers: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut c = Conn::new(TcpStream::connect(addr).expect("connect"));
            c.set_timeout(Duration::from_millis(500));
            let batch = get("/kv/big").repeat(5_000);
            // Stops when the server stops reading (the kernel buffers are full).
            let _ = c.try_send(&batch);
            c.stream
        })
        .collect();
    for i in 0..10 {
        srv.assert_healthy(
            LIVENESS_BOUND,
            &format!("beside non-reading clients (#{i})"),
        );
        let mut c = srv.connect();
        c.set_timeout(LIVENESS_BOUND);
        c.send(&get("/kv/big"));
        let r = expect_response(&mut c, &srv, "GET beside non-reading clients");
        assert_eq!((r.status, r.body.len()), (200, 512 * 1024));
    }
    drop(stallers);
    srv.assert_healthy(LIVENESS_BOUND, "after the non-reading clients left");
}

/// Valid requests the garbage is made from.
const GARBAGE_TEMPLATES: &[&[u8]] = &[
    b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
    b"PUT /kv/g HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    b"PUT /kv/g HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n",
    b"GET /kv/g?x=1 HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\r\n",
    b"HEAD /kv/g HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"DELETE /kv/g HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"PUT /kv/g%20h HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
];
const GARBAGE_BYTES: &[u8] = b"\r\n\0 :\t;,=\"0123456789abcdefABCDEF-+/%?\x7f\xff";

fn garbage(rng: &mut rand::rngs::StdRng) -> Vec<u8> {
    if rng.gen_ratio(1, 5) {
        let len = rng.gen_range(0..4096);
        return (0..len).map(|_| rng.gen()).collect();
    }
    let mut v = Vec::new();
    for _ in 0..rng.gen_range(1..=4) {
        v.extend_from_slice(GARBAGE_TEMPLATES[rng.gen_range(0..GARBAGE_TEMPLATES.len())]);
    }
    for _ in 0..rng.gen_range(1..=8) {
        let at = rng.gen_range(0..=v.len());
        match rng.gen_range(0..6) {
            0 if at < v.len() => v[at] = rng.gen(),
            1 => v.insert(at, GARBAGE_BYTES[rng.gen_range(0..GARBAGE_BYTES.len())]),
            2 if at < v.len() => {
                v.remove(at);
            }
            3 => {
                let end = rng.gen_range(at..=v.len().min(at + 64));
                let dup = v[at..end].to_vec();
                v.splice(at..at, dup);
            }
            4 => v.truncate(at),
            _ => {
                let run = vec![
                    GARBAGE_BYTES[rng.gen_range(0..GARBAGE_BYTES.len())];
                    rng.gen_range(1..20_000)
                ];
                v.splice(at..at, run);
            }
        }
    }
    v
}

#[test]
fn seeded_garbage_never_hurts_the_server() {
    let seed = match std::env::var("MAST_HTTP_GARBAGE_SEED") {
        Ok(s) => s.parse().expect("MAST_HTTP_GARBAGE_SEED must be a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    };
    println!("garbage seed {seed}; reproduce with MAST_HTTP_GARBAGE_SEED={seed}");
    let srv = Server::start();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for case in 0..250 {
        let input = garbage(&mut rng);
        let mut c = srv.connect();
        // The server may refuse and close before reading everything; that is fine.
        let _ = c.try_send(&input);
        c.half_close();
        let out = c.read_to_end();
        if !out.is_empty() {
            let ok = out.starts_with(b"HTTP/1.1 ")
                && out.len() >= 12
                && out[9..12].iter().all(u8::is_ascii_digit);
            assert!(
                ok,
                "case {case} (seed {seed}): malformed response {:?} to {:?}",
                String::from_utf8_lossy(&out[..out.len().min(200)]),
                String::from_utf8_lossy(&input[..input.len().min(200)])
            );
        }
        srv.assert_healthy(
            http_support::IO_TIMEOUT,
            &format!("after garbage case {case} (seed {seed})"),
        );
    }
}

#[test]
fn sigterm_finishes_in_flight_requests_refuses_new_ones_and_exits_zero() {
    use nix::sys::signal::Signal;
    let srv = Server::start();
    // One key per shard, so that a request crossing to a shard that is itself draining is
    // covered whichever shard accepted the connection.
    let keys: Vec<String> = (0..SHARDS as usize)
        .map(|s| {
            (0..1000)
                .map(|i| format!("drain-{i}"))
                .find(|k| mast::placement::owner_shard(k, SHARDS as usize) == s)
                .expect("a key for every shard")
        })
        .collect();
    let mut conns = Vec::new();
    for key in keys.iter().chain(keys.iter()) {
        let mut c = srv.connect();
        // The interim 100 proves the server has decoded the head and is reading the body:
        // the request is in flight when the signal arrives.
        c.send(format!(
            "PUT /kv/{key} HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n"
        )
        .as_bytes());
        let interim = expect_response(&mut c, &srv, "interim response before SIGTERM");
        assert_eq!(interim.status, 100);
        c.send(b"01234");
        conns.push((key.clone(), c));
    }
    // An idle keep-alive connection is closed by the drain.
    let mut idle = srv.connect();
    idle.send(&get("/healthz"));
    assert_eq!(
        expect_response(&mut idle, &srv, "idle connection").status,
        200
    );

    srv.signal(Signal::SIGTERM);
    let t0 = Instant::now();
    // New connections are refused once every shard has closed its listener. This must happen
    // well within the drain grace period (5 s), while the requests above are still open.
    loop {
        match TcpStream::connect_timeout(&srv.http_addr, Duration::from_millis(500)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => break,
            _ => {}
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "new connections still accepted {:?} after SIGTERM\n{}",
            t0.elapsed(),
            srv.log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        idle.closed(),
        "idle keep-alive connection not closed by the drain"
    );
    for (i, (key, c)) in conns.iter_mut().enumerate() {
        // The rest of the body, and a request pipelined behind it that must not run: the
        // server is draining, so the in-flight response closes the connection.
        let mut rest = b"56789".to_vec();
        rest.extend_from_slice(&put(&format!("/kv/after-drain-{i}"), b"x"));
        c.send(&rest);
        let r = c.response().unwrap_or_else(|e| {
            panic!(
                "in-flight PUT {key} lost at shutdown: {e}\n{}",
                srv.log_tail()
            )
        });
        assert_eq!(r.status, 204, "in-flight PUT {key}: {:?}", r.text());
        assert!(
            r.closes(),
            "a response during the drain must close the connection"
        );
        assert!(c.closed(), "connection left open after the drain response");
    }
    let mut srv = srv;
    let status = srv.wait_exit(Duration::from_secs(15)).unwrap_or_else(|| {
        panic!(
            "mast did not exit within 15 s of SIGTERM\n{}",
            srv.log_tail()
        )
    });
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM\n{}",
        srv.log_tail()
    );
    // What was acknowledged during the drain is durable.
    let (tmp, data_dir) = srv.into_data();
    let srv = Server::start_in(tmp, data_dir);
    for key in &keys {
        let r = srv.request("GET", &format!("/kv/{key}"), b"");
        assert_eq!(
            (r.status, r.text()),
            (200, "0123456789".to_string()),
            "{key} after restart"
        );
    }
    for i in 0..conns.len() {
        assert_absent(
            &srv,
            &format!("after-drain-{i}"),
            "it was pipelined behind a drain response",
        );
    }
}

fn assert_refused_start(args: &[String], log: &std::path::Path, mentions: &[&str]) {
    let (status, output) = run_mast(args, log, BAD_FLAGS_EXIT_TIMEOUT);
    let status = status.unwrap_or_else(|| {
        panic!("mast {args:?} still running after {BAD_FLAGS_EXIT_TIMEOUT:?}:\n{output}")
    });
    assert!(
        !status.success(),
        "mast {args:?} exited with {status}:\n{output}"
    );
    for m in mentions {
        assert!(
            output.contains(m),
            "mast {args:?}: stderr does not mention {m:?}:\n{output}"
        );
    }
}

#[test]
fn bad_flags_exit_non_zero_naming_the_problem() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = |name: &str| tmp.path().join(name);
    let log = |name: &str| tmp.path().join(format!("{name}.log"));
    let args = |d: &str| server_args(&dir(d), free_port(), free_port_run(SHARDS));
    let with = |mut a: Vec<String>, flag: &str, value: &str| {
        let i = a.iter().position(|x| x == flag).expect("flag present");
        a[i + 1] = value.to_string();
        a
    };

    assert_refused_start(
        &with(args("a"), "--shards", "0"),
        &log("shards"),
        &["shards", "0"],
    );
    assert_refused_start(
        &with(args("b"), "--http-addr", "nope"),
        &log("addr"),
        &["http_addr", "nope"],
    );
    assert_refused_start(
        &with(args("b"), "--peer-addr", "127.0.0.1"),
        &log("peer"),
        &["peer_addr"],
    );
    assert_refused_start(&with(args("b"), "--id", "0"), &log("id"), &["id"]);

    // An HTTP port another process holds.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = holder.local_addr().expect("addr").port();
    let a = with(args("c"), "--http-addr", &format!("127.0.0.1:{port}"));
    assert_refused_start(&a, &log("http-port"), &[&port.to_string(), "in use"]);
    // A peer port another process holds (shard 1's port; shard 0's was free a moment ago).
    let (first, peer_holder) = (0..100)
        .find_map(|_| {
            let p = free_port_run(SHARDS);
            std::net::TcpListener::bind(("127.0.0.1", p + 1))
                .ok()
                .map(|l| (p, l))
        })
        .expect("a pair of free ports");
    let a = with(args("d"), "--peer-addr", &format!("127.0.0.1:{first}"));
    let held = (first + 1).to_string();
    assert_refused_start(&a, &log("peer-port"), &[&held, "in use"]);
    drop((holder, peer_holder));

    // A data directory locked by a running server.
    let running = Server::start();
    let a = server_args(&running.data_dir, free_port(), free_port_run(SHARDS));
    assert_refused_start(&a, &log("locked"), &["data directory", "in use"]);
    running.assert_healthy(
        LIVENESS_BOUND,
        "after a second server was refused its data dir",
    );
}
