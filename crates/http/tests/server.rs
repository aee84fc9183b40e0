//! Raw-socket integration tests of the HTTP server: one rule of the spec per test.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{test_limits, Client, TestServer};

fn req(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let srv = TestServer::start(test_limits());
    let mut c = Client::new(srv.connect());
    for i in 0..20 {
        let body = format!("body-{i}");
        c.send(&req("POST", "/echo", body.as_bytes()));
        let r = c.response().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, body.as_bytes());
        assert!(!r.closes());
    }
    assert_eq!(srv.hits(), 20);
}

#[test]
fn pipelined_requests_are_answered_in_order_in_few_writes() {
    let srv = TestServer::start(test_limits());
    let mut c = Client::new(srv.connect());
    let mut all = Vec::new();
    let n = 30;
    for i in 0..n {
        if i % 3 == 0 {
            all.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
        } else {
            all.extend_from_slice(&req("PUT", "/echo", format!("#{i}").as_bytes()));
        }
    }
    c.send(&all);
    for i in 0..n {
        let r = c.response().unwrap();
        assert_eq!(r.status, 200);
        if i % 3 == 0 {
            assert_eq!(r.body, b"ok");
        } else {
            assert_eq!(
                r.body,
                format!("#{i}").as_bytes(),
                "response {i} out of order"
            );
        }
    }
}

#[test]
fn chunked_body_with_extensions_and_trailers_split_across_writes() {
    let srv = TestServer::start(test_limits());
    let mut c = Client::new(srv.connect());
    let parts: [&[u8]; 6] = [
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"5;name=val\r\nhel",
        b"lo\r\n",
        b"6\r\n world\r\n",
        b"0\r\nX-Trailer: yes\r\n",
        b"\r\n",
    ];
    for p in parts {
        c.send(p);
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = c.response().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello world");
    // The connection is still usable after a chunked request.
    c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().unwrap().body, b"ok");
}

#[test]
fn expect_100_continue_gets_an_interim_response_before_the_body() {
    let srv = TestServer::start(test_limits());
    let mut c = Client::new(srv.connect());
    c.send(b"PUT /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    let interim = c.response().unwrap();
    assert_eq!(interim.status, 100);
    c.send(b"data");
    let r = c.response().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"data");
}

#[test]
fn expect_100_continue_with_an_oversized_body_gets_413_without_100() {
    let srv = TestServer::start(test_limits());
    let mut c = Client::new(srv.connect());
    c.send(
        b"PUT /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 999999\r\n\r\n",
    );
    let r = c.response().unwrap();
    assert_eq!(r.status, 413);
    assert!(r.closes());
    assert!(c.closed());
    assert_eq!(srv.hits(), 0);
}

#[test]
fn head_advertises_length_but_sends_no_body() {
    let srv = TestServer::start(test_limits());
    let mut c = Client::new(srv.connect());
    c.send(b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = c.response_to(true).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("2"));
    // Had the HEAD response carried a body, this would not parse as a status line.
    let get = c.response().unwrap();
    assert_eq!(get.status, 200);
    assert_eq!(get.body, b"ok");
}

#[test]
fn http10_closes_unless_keep_alive_is_asked_for() {
    let srv = TestServer::start(test_limits());
    let mut c = Client::new(srv.connect());
    c.send(b"GET /healthz HTTP/1.0\r\n\r\n");
    let r = c.response().unwrap();
    assert_eq!(r.status, 200);
    assert!(r.closes());
    assert!(c.closed());

    let mut c = Client::new(srv.connect());
    for _ in 0..3 {
        c.send(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = c.response().unwrap();
        assert_eq!(r.status, 200);
        // A 1.0 client assumes close unless told otherwise.
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }
}

#[test]
fn connection_close_is_honoured_and_later_pipelined_requests_do_not_run() {
    let srv = TestServer::start(test_limits());
    let mut c = Client::new(srv.connect());
    c.send(b"GET /hit HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /hit HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response().unwrap();
    assert!(r.closes());
    assert!(c.closed());
    assert_eq!(srv.hits(), 1);
}

/// Sends `input` on a fresh connection and expects one error response with `status`, then
/// a closed connection, and no handler invocation at all.
fn expect_refused(srv: &TestServer, input: &[u8], status: u16) {
    let before = srv.hits();
    let mut c = Client::new(srv.connect());
    c.send(input);
    let r = c
        .response()
        .unwrap_or_else(|e| panic!("{e} for {:?}", String::from_utf8_lossy(input)));
    assert_eq!(r.status, status, "for {:?}", String::from_utf8_lossy(input));
    assert!(r.closes());
    let err = r.json();
    assert_eq!(err["error"]["status"], status);
    assert!(err["error"]["kind"].is_string() && err["error"]["message"].is_string());
    assert!(c.closed(), "connection left open after {status}");
    assert_eq!(srv.hits(), before, "a request after a rejected one ran");
}

#[test]
fn every_limit_answers_with_its_status_and_closes() {
    let srv = TestServer::start(test_limits());
    let big_header = format!(
        "GET /hit HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n",
        "v".repeat(3000)
    );
    expect_refused(&srv, big_header.as_bytes(), 431);
    let many = format!(
        "GET /hit HTTP/1.1\r\nHost: t\r\n{}\r\n",
        "A: b\r\n".repeat(20)
    );
    expect_refused(&srv, many.as_bytes(), 431);
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "u".repeat(400));
    expect_refused(&srv, long_uri.as_bytes(), 414);
    // 413 arrives although the body is never sent.
    expect_refused(
        &srv,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 70000\r\n\r\n",
        413,
    );
    let chunked_big =
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10001\r\n";
    expect_refused(&srv, chunked_big, 413);
    expect_refused(
        &srv,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
        501,
    );
    expect_refused(&srv, b"GET /hit HTTP/2.0\r\nHost: t\r\n\r\n", 505);
    expect_refused(
        &srv,
        b"GET /hit HTTP/1.1\r\nHost: t\r\nX: a\r\n folded\r\n\r\n",
        400,
    );
    expect_refused(&srv, b"GET /hit HTTP/1.1\r\n\r\n", 400);
    expect_refused(&srv, b"FROB /hit HTTP/1.1\r\nHost: t\r\n\r\n", 501);
    assert!(srv.metric("mast_http_parse_errors_total{kind=\"obs_fold\"}") >= 1);
    assert!(srv.metric("mast_http_parse_errors_total{kind=\"uri_too_long\"}") >= 1);
}

#[test]
fn smuggling_attempts_are_refused_and_nothing_after_them_runs() {
    let srv = TestServer::start(test_limits());
    let smuggled = "GET /hit HTTP/1.1\r\nHost: t\r\n\r\n";
    let cases: Vec<(String, u16)> = vec![
        // CL.TE
        (format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"), 400),
        // TE.CL
        (format!("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n{smuggled}"), 400),
        // Two Content-Lengths, equal and different.
        (format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n{smuggled}"), 400),
        (format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\n{smuggled}"), 400),
        // Obfuscated Transfer-Encoding.
        (format!("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}"), 501),
        (format!("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"), 501),
        (format!("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{smuggled}"), 400),
        (format!("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n{smuggled}"), 400),
        (format!("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"), 400),
        (format!("POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"), 400),
        // Malformed Content-Length.
        (format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n{smuggled}"), 400),
        (format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1 0\r\n\r\n{smuggled}"), 400),
        (format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0x10\r\n\r\n{smuggled}"), 400),
        // Bad chunk sizes and chunk framing.
        (format!("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n{smuggled}"), 400),
        (format!("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n{smuggled}"), 400),
        (format!("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n{smuggled}"), 400),
        (format!("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n{smuggled}"), 400),
        (format!("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3;a=\"x\ny\"\r\nabc\r\n0\r\n\r\n{smuggled}"), 400),
        (format!("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n folded: trailer\r\n\r\n{smuggled}"), 400),
        // A request line hidden in a header value / bare CR.
        (format!("GET /hit HTTP/1.1\r\nHost: t\r\nX: a\rGET /hit HTTP/1.1\r\n\r\n{smuggled}"), 400),
    ];
    for (input, status) in &cases {
        expect_refused(&srv, input.as_bytes(), *status);
    }
    // The server is healthy afterwards and /hit still works when asked for properly.
    assert_eq!(srv.get("/hit").status, 200);
    assert_eq!(srv.hits(), 1);
}

#[test]
fn slowloris_head_gets_408_and_close() {
    let srv = TestServer::start(test_limits());
    let mut c = Client::new(srv.connect());
    let start = Instant::now();
    // Trickle bytes faster than any per-read timeout would notice, never finishing the head.
    for b in b"GET /hit HTTP/1.1\r\nHost: t\r\nX-Slow: ".iter() {
        if c.stream.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        if start.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let r = c.response().unwrap();
    assert_eq!(r.status, 408);
    assert!(c.closed());
    assert_eq!(srv.hits(), 0);
    assert!(srv.metric("mast_http_timeouts_total{kind=\"head\"}") >= 1);
}

#[test]
fn stalled_body_gets_408_and_close() {
    let srv = TestServer::start(test_limits());
    let mut c = Client::new(srv.connect());
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc");
    let r = c.response().unwrap();
    assert_eq!(r.status, 408);
    assert!(c.closed());
    assert_eq!(srv.hits(), 0);
    assert!(srv.metric("mast_http_timeouts_total{kind=\"body\"}") >= 1);
}

#[test]
fn idle_keep_alive_connection_is_closed() {
    let srv = TestServer::start(test_limits());
    let mut c = Client::new(srv.connect());
    c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().unwrap().status, 200);
    // The idle timeout (400 ms) is well under the client read timeout (5 s).
    assert!(c.closed());
    assert!(srv.metric("mast_http_timeouts_total{kind=\"idle\"}") >= 1);
}

#[test]
fn a_client_that_never_reads_does_not_slow_others_and_is_dropped() {
    let srv = TestServer::start(test_limits());
    // Ask for far more response bytes than socket buffers hold, and never read them.
    let mut stuck = srv.connect();
    let mut reqs = Vec::new();
    for _ in 0..8 {
        reqs.extend_from_slice(b"GET /big/4000000 HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    stuck.write_all(&reqs).unwrap();
    let mut c = Client::new(srv.connect());
    for i in 0..50 {
        c.send(&req("POST", "/echo", format!("{i}").as_bytes()));
        let r = c.response().unwrap();
        assert_eq!(r.body, format!("{i}").as_bytes());
    }
    srv.wait_for("write stall timeout", |s| {
        s.metric("mast_http_timeouts_total{kind=\"write\"}") >= 1
    });
    drop(stuck);
}

#[test]
fn connections_over_the_cap_get_503_and_the_cap_frees_up() {
    let mut limits = test_limits();
    limits.connections_max = 3;
    limits.idle_timeout_ms = 10_000;
    let srv = TestServer::start(limits);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = Client::new(srv.connect());
        c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(c.response().unwrap().status, 200);
        held.push(c);
    }
    let mut over = Client::new(srv.connect());
    let r = over.response().unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["kind"], "overloaded");
    assert!(over.closed());
    held.pop();
    srv.wait_for("a free connection slot", |s| {
        let mut c = Client::new(s.connect());
        c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        c.response().map(|r| r.status == 200).unwrap_or(false)
    });
    // The scrape itself needs a slot, which the lingering close above may still hold briefly.
    srv.wait_for("the rejection to be counted", |s| {
        s.metric("mast_http_connections_rejected_total") >= 1
    });
}

#[test]
fn router_404_405_params_and_head_fallback() {
    let srv = TestServer::start(test_limits());
    let r = srv.get("/nope");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["kind"], "not_found");

    let mut c = Client::new(srv.connect());
    c.send(b"DELETE /echo HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response().unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST, PUT"));
    assert_eq!(r.json()["error"]["status"], 405);

    let r = srv.get("/kv/a%2Fb/c%20d?q=x+y%21");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["key"], "a/b/c d");
    assert_eq!(v["q"], "x y!");

    let r = srv.get("/kv/%ff");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["kind"], "bad_key");

    let mut c = Client::new(srv.connect());
    c.send(b"HEAD /kv/k HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response_to(true).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("content-length").is_some());

    let metrics = srv.metrics();
    assert!(
        metrics.contains("mast_http_requests_total{route=\"/kv/*key\",status=\"200\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mast_http_requests_total{route=\"unmatched\",status=\"404\"} 1"),
        "{metrics}"
    );
}

#[test]
fn graceful_shutdown_finishes_in_flight_requests_and_closes_idle_ones() {
    let srv = TestServer::start(test_limits());
    let mut idle = Client::new(srv.connect());
    idle.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(idle.response().unwrap().status, 200);
    let mut busy = Client::new(srv.connect());
    busy.send(b"GET /sleep/300 HTTP/1.1\r\nHost: t\r\n\r\n");
    srv.wait_for("the sleep handler to start", |s| s.hits() >= 2);
    let addr = srv.addr;
    let waiter = std::thread::spawn(move || srv.stop());
    let r = busy.response().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"slept");
    assert!(r.closes(), "in-flight response during drain must close");
    assert!(idle.closed());
    waiter.join().unwrap();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "listener still open after serve returned"
    );
}

#[test]
fn shutdown_grace_expiry_closes_stuck_requests() {
    let mut limits = test_limits();
    limits.shutdown_grace_ms = 100;
    let srv = TestServer::start(limits);
    let mut busy = Client::new(srv.connect());
    busy.send(b"GET /sleep/3000 HTTP/1.1\r\nHost: t\r\n\r\n");
    srv.wait_for("the sleep handler to start", |s| s.hits() >= 1);
    srv.stop();
    // Cut before the 3 s handler could answer: no response, just a closed connection.
    assert!(
        busy.response().is_err(),
        "the stuck request was allowed to finish"
    );
}

#[test]
fn a_client_pipelining_without_pause_does_not_starve_others_on_epoll() {
    let srv = TestServer::start_epoll(test_limits());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hog = srv.connect();
    let mut hog_reader = hog.try_clone().unwrap();
    let mut hog_writer = hog;
    let batch = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n".repeat(256);
    let s1 = stop.clone();
    let writer = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !s1.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
            if hog_writer.write_all(&batch).is_err() {
                break;
            }
        }
    });
    let s2 = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut sink = vec![0u8; 1 << 16];
        let mut total = 0usize;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !s2.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
            match std::io::Read::read(&mut hog_reader, &mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        total
    });
    // Let the hog get going before measuring anyone else.
    srv.wait_for("the hog to be served", |s| s.hits() > 1_000);
    let mut c = Client::new(srv.connect());
    for i in 0..20 {
        c.send(&req("POST", "/echo", format!("{i}").as_bytes()));
        let r = c
            .response()
            .unwrap_or_else(|e| panic!("starved at request {i}: {e}"));
        assert_eq!(r.body, format!("{i}").as_bytes());
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    drop(c);
    let _ = srv.stop();
    writer.join().unwrap();
    assert!(reader.join().unwrap() > 0);
}

#[test]
fn streamed_bodies_are_chunked_and_end_the_connection() {
    let srv = TestServer::start(test_limits());
    let mut c = Client::new(srv.connect());
    c.send(b"GET /stream/5 HTTP/1.1\r\nHost: t\r\n\r\n");
    let raw = String::from_utf8(c.read_to_end()).expect("utf-8");
    let (head, body) = raw.split_once("\r\n\r\n").expect("head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    let mut expected = String::new();
    for i in 0..5 {
        let line = format!("chunk {i}\n");
        expected.push_str(&format!("{:x}\r\n{line}\r\n", line.len()));
    }
    expected.push_str("0\r\n\r\n");
    assert_eq!(body, expected);
}

#[test]
fn a_client_that_leaves_stops_the_stream_producer() {
    let srv = TestServer::start(test_limits());
    let before = common::STREAM_PRODUCERS_STOPPED.load(std::sync::atomic::Ordering::SeqCst);
    let mut c = Client::new(srv.connect());
    c.send(b"GET /forever HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response_to(true).expect("head");
    assert_eq!(r.status, 200);
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::STREAM_PRODUCERS_STOPPED.load(std::sync::atomic::Ordering::SeqCst) == before {
        assert!(
            Instant::now() < deadline,
            "the producer never noticed the client left"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_panicking_handler_answers_500_and_the_server_keeps_serving() {
    for epoll in [false, true] {
        let srv = if epoll {
            TestServer::start_epoll(test_limits())
        } else {
            TestServer::start(test_limits())
        };
        let mut c = Client::new(srv.connect());
        for (i, when) in ["now", "later", "now"].iter().enumerate() {
            c.send(format!("GET /panic/{when} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
            let r = c.response().unwrap();
            assert_eq!(r.status, 500, "{when}");
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(body["error"]["kind"], "internal_error", "{body}");
            assert_eq!(body["error"]["status"], 500, "{body}");
            // The same keep-alive connection goes on: the panic cost one request.
            assert!(!r.closes(), "request {i}");
            c.send(&req("POST", "/echo", b"after"));
            let r = c.response().unwrap();
            assert_eq!((r.status, &r.body[..]), (200, &b"after"[..]));
        }
        assert_eq!(srv.get("/healthz").status, 200);
        assert_eq!(srv.metric("mast_http_handler_panics_total"), 3);
        assert!(srv
            .metrics()
            .contains("mast_http_requests_total{route=\"/panic/{when}\",status=\"500\"} 3"));
        srv.stop();
    }
}
