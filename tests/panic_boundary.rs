//! The panic boundary, process level: a panicking request handler costs one request (500 in
//! the error format, counted in /metrics, logged with the request line) and its shard keeps
//! serving; a panic in the raft driver or on the log append path ends the process.
//!
//! Needs the test-only fault routes: `cargo test --release --features fault-injection --test
//! panic_boundary` (CI runs it; without the feature this file is empty).
#![cfg(feature = "fault-injection")]

mod support;

use std::time::{Duration, Instant};

use support::{Cluster, ClusterOptions};

/// How long a process gets to die after an injected fatal panic.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

fn start() -> Cluster {
    Cluster::start(ClusterOptions::new(1, 2)).unwrap_or_else(|e| panic!("start: {e}"))
}

/// Writes until one succeeds (the groups elect themselves just after start-up).
fn wait_writable(c: &Cluster) {
    let mut client = c.client(1);
    support::retry(Duration::from_secs(30), || {
        match client.put("/kv/ready", b"1") {
            Ok(r) if r.status < 300 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .unwrap_or_else(|e| panic!("not writable: {e}"));
}

#[test]
fn a_panicking_handler_answers_500_and_every_shard_keeps_serving() {
    support::print_replay(
        "panic_boundary",
        "a_panicking_handler_answers_500_and_every_shard_keeps_serving",
        "",
    );
    let mut c = start();
    wait_writable(&c);
    // Fresh connections, so both shards (SO_REUSEPORT) take some of them.
    let panics = 12;
    for i in 0..panics {
        let mut client = c.client(1);
        let r = client
            .request(
                "POST",
                "/debug/panic/handler",
                &[("connection", "close")],
                b"",
            )
            .unwrap_or_else(|e| panic!("panic request {i}: {e}"));
        assert_eq!(r.status, 500, "{r}");
        let body: serde_json::Value = serde_json::from_slice(&r.body).expect("a JSON error");
        assert_eq!(body["error"]["kind"], "internal_error", "{body}");
    }
    let mut client = c.client(1);
    for i in 0..20 {
        let key = format!("/kv/after-{i}");
        let r = client.put(&key, b"v").expect("put after the panics");
        assert!(r.status < 300, "{key}: {r}");
        let r = client.get(&key).expect("get after the panics");
        assert_eq!((r.status, &r.body[..]), (200, &b"v"[..]), "{key}");
    }
    let r = client.get("/metrics").expect("metrics");
    let metrics = String::from_utf8_lossy(&r.body).into_owned();
    assert!(
        metrics
            .lines()
            .any(|l| l == format!("mast_http_handler_panics_total {panics}")),
        "{metrics}"
    );
    assert!(c.wait_exit(1, Duration::ZERO).is_none(), "the node died");
    let log = std::fs::read_to_string(&c.node(1).log_path).expect("the node's log");
    let logged = log
        .lines()
        .filter(|l| {
            l.contains("request handler panicked")
                && l.contains("POST")
                && l.contains("/debug/panic/handler")
        })
        .count();
    assert_eq!(logged, panics, "{log}");
}

/// Arms a fatal panic through the route and waits for the process to die of it.
fn assert_fatal(at: &str, mut provoke: impl FnMut(&Cluster, u32)) {
    let mut c = start();
    wait_writable(&c);
    let mut client = c.client(1);
    let r = client
        .request("POST", &format!("/debug/panic/{at}"), &[], b"")
        .expect("arm");
    assert_eq!(r.status, 202, "{r}");
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let mut round = 0;
    let status = loop {
        if let Some(status) = c.wait_exit(1, Duration::from_millis(50)) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running {EXIT_TIMEOUT:?} after a panic armed at {at}:\n{}",
            c.log_tail(1, 40)
        );
        provoke(&c, round);
        round += 1;
    };
    assert!(status.contains("SIGABRT"), "exited with {status}");
    let log = c.log_tail(1, 80);
    assert!(log.contains("injected panic"), "{log}");
    assert!(
        log.contains("fatal: a panic outside a request handler"),
        "{log}"
    );
}

#[test]
fn a_panic_in_the_raft_driver_ends_the_process() {
    support::print_replay(
        "panic_boundary",
        "a_panic_in_the_raft_driver_ends_the_process",
        "",
    );
    // The driver runs on every tick: nothing to provoke.
    assert_fatal("driver", |_, _| {});
}

#[test]
fn a_panic_on_the_log_append_path_ends_the_process() {
    support::print_replay(
        "panic_boundary",
        "a_panic_on_the_log_append_path_ends_the_process",
        "",
    );
    // Writes to many keys reach the armed shard's log whichever shard that is.
    assert_fatal("log", |c, round| {
        let mut client = support::HttpClient::new(c.http_addr(1), Duration::from_millis(500));
        let _ = client.put(&format!("/kv/provoke-{round}"), b"v");
    });
}
