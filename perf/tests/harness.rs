//! The harness against tiny HTTP servers on 127.0.0.1:0 (std threads, blocking sockets): request
//! templating, pipelining order, open-loop latency accounting, errors by kind, leader
//! following, and the interval log / JSON / PNG outputs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use mast_load::client::{run, RunConfig, RunResult, TargetMode};
use mast_load::http::{RequestTemplate, Response};
use mast_load::report::{render_text, summarize, write_hlog, ItemsSummary};
use mast_load::stats::{ErrorKind, OpKind, Outcome};
use mast_load::workload::{
    BatchKind, BatchWorkloadSpec, ConnInfo, KeyChoice, Op, TemplateWorkloadSpec, Workload,
    WorkloadFactory,
};

/// Most requests one test server connection handles before it stops.
const SERVER_REQUESTS_MAX: usize = 100_000;
/// How long a test server waits on a silent client before giving up.
const SERVER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct SeenRequest {
    head: String,
    body: Vec<u8>,
}

/// What the server does with each request (`index` counts requests on that connection).
#[derive(Clone, Copy)]
enum Behavior {
    /// 200 with the request's path as body.
    EchoPath,
    /// Wait until `depth` requests are buffered, then answer them in order (echo path).
    Batch { depth: usize },
    /// Sleep this long, then 200 (requests served one at a time).
    Delay(Duration),
    /// Answer `n` requests per connection, then close without saying so.
    CloseAfter(usize),
    /// Never answer.
    Silent,
    /// 307 to another server.
    Redirect(SocketAddr),
    /// 503.
    Unavailable,
    /// A fake timestamp oracle / id allocator: `POST /tso?count=N` → `{"timestamp":T,"count":N}`,
    /// `POST /ids?count=N` → `{"id":FIRST,"count":N}` from one increasing counter (400 for a
    /// bad count); with `wrong_count`, replies claim one value more than asked.
    Allocator { wrong_count: bool },
}

/// The fake allocator's counter (shared by every test server: only ever increases).
static ALLOCATOR_NEXT: AtomicU64 = AtomicU64::new(1_000);

fn allocator_response(req: &SeenRequest, wrong_count: bool) -> Vec<u8> {
    let path = path_of(req);
    let parsed = path.split_once("?count=").and_then(|(p, n)| {
        let field = match p {
            "/tso" => "timestamp",
            "/ids" => "id",
            _ => return None,
        };
        Some((
            field,
            n.parse::<u64>()
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))?,
        ))
    });
    match parsed {
        Some((field, n)) if req.head.starts_with("POST ") => {
            let first = ALLOCATOR_NEXT.fetch_add(n, Ordering::SeqCst);
            let count = n + u64::from(wrong_count);
            ok_response(&format!("{{\"{field}\":{first},\"count\":{count}}}"))
        }
        _ => b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".to_vec(),
    }
}

struct TestServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl TestServer {
    fn start(behavior: Behavior) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (seen, connections, stop) = (seen.clone(), connections.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut workers = Vec::new();
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let (seen, stop) = (seen.clone(), stop.clone());
                    workers.push(std::thread::spawn(move || {
                        serve(stream, behavior, &seen, &stop)
                    }));
                }
                for w in workers {
                    let _ = w.join();
                }
            })
        };
        Self {
            addr,
            seen,
            connections,
            stop,
            accept: Some(accept),
        }
    }

    fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// Splits complete requests off the front of `buf`.
fn take_request(buf: &mut Vec<u8>) -> Option<SeenRequest> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf).ok()? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return None,
    };
    let len = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| {
            std::str::from_utf8(h.value)
                .unwrap()
                .trim()
                .parse::<usize>()
                .unwrap()
        })
        .unwrap_or(0);
    if buf.len() < head_len + len {
        return None;
    }
    let head = String::from_utf8(buf[..head_len].to_vec()).unwrap();
    let body = buf[head_len..head_len + len].to_vec();
    buf.drain(..head_len + len);
    Some(SeenRequest { head, body })
}

fn path_of(req: &SeenRequest) -> &str {
    req.head.split(' ').nth(1).unwrap_or("")
}

fn ok_response(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn serve(
    mut stream: TcpStream,
    behavior: Behavior,
    seen: &Mutex<Vec<SeenRequest>>,
    stop: &AtomicBool,
) {
    stream.set_read_timeout(Some(SERVER_READ_TIMEOUT)).unwrap();
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    let mut pending: Vec<SeenRequest> = Vec::new();
    let mut served = 0usize;
    let mut chunk = [0u8; 16384];
    while served < SERVER_REQUESTS_MAX && !stop.load(Ordering::SeqCst) {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(req) = take_request(&mut buf) {
            seen.lock().unwrap().push(req.clone());
            pending.push(req);
        }
        let ready = match behavior {
            Behavior::Batch { depth } => pending.len() >= depth,
            _ => true,
        };
        if !ready {
            continue;
        }
        for req in std::mem::take(&mut pending) {
            let out = match behavior {
                Behavior::EchoPath | Behavior::Batch { .. } => ok_response(path_of(&req)),
                Behavior::Delay(d) => {
                    std::thread::sleep(d);
                    ok_response("ok")
                }
                Behavior::CloseAfter(n) => {
                    if served >= n {
                        return;
                    }
                    ok_response("ok")
                }
                Behavior::Silent => continue,
                Behavior::Redirect(to) => format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{to}{}\r\nContent-Length: 0\r\n\r\n",
                    path_of(&req)
                )
                .into_bytes(),
                Behavior::Allocator { wrong_count } => allocator_response(&req, wrong_count),
                Behavior::Unavailable => {
                    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n".to_vec()
                }
            };
            if stream.write_all(&out).is_err() {
                return;
            }
            served += 1;
        }
    }
}

fn config(targets: Vec<SocketAddr>) -> RunConfig {
    RunConfig {
        targets,
        connections: 2,
        threads: 1,
        warmup: Duration::ZERO,
        duration: Duration::from_secs(10),
        response_timeout: Duration::from_secs(5),
        interval: Duration::from_millis(100),
        ..RunConfig::default()
    }
}

fn template(method: &str, path: &str, body: Option<&str>) -> Arc<dyn WorkloadFactory> {
    Arc::new(TemplateWorkloadSpec {
        template: RequestTemplate::new(method, path, &["X-Conn: {conn}".into()], body).unwrap(),
        keys: KeyChoice::Distinct,
        value_bytes: 3,
        key_prefix: "key".into(),
        seed: 7,
    })
}

fn run_ok(cfg: &RunConfig, factory: Arc<dyn WorkloadFactory>) -> RunResult {
    run(cfg, factory, &mut |_| {}).unwrap()
}

#[test]
fn templated_requests_reach_the_server_intact() {
    let server = TestServer::start(Behavior::EchoPath);
    let cfg = RunConfig {
        requests_max: Some(20),
        ..config(vec![server.addr])
    };
    let r = run_ok(
        &cfg,
        template("PUT", "/kv/{key}?seq={seq}", Some("v={value}")),
    );
    assert_eq!(r.total.ops_of(OpKind::Request).ok, 20);
    assert_eq!(r.total.error_total(), 0);
    let seen = server.seen();
    assert_eq!(seen.len(), 20);
    let mut keys: Vec<u64> = Vec::new();
    for req in &seen {
        let path = path_of(req);
        let (key, seq) = path
            .strip_prefix("/kv/key")
            .and_then(|p| p.split_once("?seq="))
            .unwrap_or_else(|| panic!("unexpected path {path}"));
        let (key, seq): (u64, u64) = (key.parse().unwrap(), seq.parse().unwrap());
        // Distinct keys: id = seq * connections + conn.
        let conn = req
            .head
            .lines()
            .find_map(|l| l.strip_prefix("X-Conn: "))
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap();
        assert_eq!(key, seq * 2 + conn);
        keys.push(key);
        assert!(req.head.contains(&format!("Host: {}\r\n", server.addr)));
        assert!(req.head.contains("Content-Length: 5\r\n"));
        assert_eq!(req.body.len(), 5);
        assert!(req.body.starts_with(b"v="));
    }
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 20, "keys must be distinct");
}

/// Checks that responses come back in request order: each response body is the request's
/// path, which carries the connection's sequence number.
struct OrderCheck {
    seq: u64,
    expected: std::collections::VecDeque<u64>,
    mismatches: Arc<AtomicUsize>,
}

impl Workload for OrderCheck {
    fn next_request(&mut self, host: &str, out: &mut Vec<u8>) -> Option<Op> {
        out.extend_from_slice(
            format!("GET /{} HTTP/1.1\r\nHost: {host}\r\n\r\n", self.seq).as_bytes(),
        );
        self.expected.push_back(self.seq);
        self.seq += 1;
        Some(Op {
            kind: OpKind::Request,
            key: self.seq - 1,
        })
    }

    fn on_response(&mut self, op: Op, response: &Response<'_>) -> Outcome {
        let want = self.expected.pop_front();
        let got: Option<u64> = std::str::from_utf8(&response.body[1..])
            .ok()
            .and_then(|s| s.parse().ok());
        if want != Some(op.key) || got != Some(op.key) {
            self.mismatches.fetch_add(1, Ordering::SeqCst);
        }
        Outcome::Ok
    }
}

struct OrderFactory(Arc<AtomicUsize>);

impl WorkloadFactory for OrderFactory {
    fn build(&self, _conn: ConnInfo) -> Box<dyn Workload> {
        Box::new(OrderCheck {
            seq: 0,
            expected: Default::default(),
            mismatches: self.0.clone(),
        })
    }
    fn describe(&self) -> String {
        "order check".into()
    }
}

#[test]
fn pipelined_responses_match_requests_in_order() {
    // The server answers only once 8 requests are buffered: a client that did not pipeline
    // would stall until the response timeout and fail with timeouts.
    let server = TestServer::start(Behavior::Batch { depth: 8 });
    let mismatches = Arc::new(AtomicUsize::new(0));
    let cfg = RunConfig {
        connections: 3,
        pipeline: 8,
        requests_max: Some(3 * 8 * 25),
        response_timeout: Duration::from_secs(5),
        ..config(vec![server.addr])
    };
    let r = run_ok(&cfg, Arc::new(OrderFactory(mismatches.clone())));
    assert_eq!(r.total.error_total(), 0, "{:?}", r.total.errors);
    assert_eq!(r.total.completed(), 600);
    assert_eq!(mismatches.load(Ordering::SeqCst), 0);
    assert_eq!(server.seen().len(), 600);
}

#[test]
fn open_loop_charges_the_queue_to_the_server() {
    // One connection, no pipelining, a server taking at least 10 ms per request, and a schedule
    // of one request per millisecond: request k is intended at k ms but cannot leave before the
    // k previous responses, i.e. before k * 10 ms.
    let delay = Duration::from_millis(10);
    let n: u64 = 25;
    let server = TestServer::start(Behavior::Delay(delay));
    let cfg = RunConfig {
        connections: 1,
        pipeline: 1,
        rate: Some(1000.0),
        requests_max: Some(n),
        ..config(vec![server.addr])
    };
    let open = run_ok(&cfg, template("GET", "/", None));
    assert_eq!(open.total.completed(), n);
    assert!(open.open_loop);
    // Lower bounds only (the server's sleeps guarantee them): the last request was intended at
    // (n-1) ms and answered no earlier than n * 10 ms.
    let bound_ns = (n * 10 - (n - 1)) * 1_000_000;
    assert!(
        open.total.latency.max() >= bound_ns * 999 / 1000,
        "corrected max {} < {bound_ns}",
        open.total.latency.max()
    );
    // The client saw the backlog as lateness of its own sends, not as service time.
    assert!(open.total.send_lag.max() >= (n - 1) * 9 * 1_000_000 * 999 / 1000);
    assert!(open.total.latency.max() > open.total.service.max());
    // Every latency the server caused is at least its delay.
    assert!(open.total.service.min() >= 10_000_000 * 999 / 1000);

    // Closed loop: intended == sent, so both histograms hold the same values.
    let closed_cfg = RunConfig { rate: None, ..cfg };
    let closed = run_ok(&closed_cfg, template("GET", "/", None));
    assert_eq!(closed.total.completed(), n);
    assert!(!closed.open_loop);
    assert_eq!(closed.total.latency, closed.total.service);
    assert_eq!(closed.total.send_lag.max(), 0);
}

#[test]
fn open_loop_accounts_for_every_scheduled_request() {
    // A server ten times slower than the schedule: the backlog is still being sent when the
    // drain deadline (end + response timeout) comes, so most slots are never sent. Each slot in
    // the measured window is answered, failed (timed out at the deadline) or unsent; none lost.
    let server = TestServer::start(Behavior::Delay(Duration::from_millis(10)));
    let rate = 1000.0;
    let cfg = RunConfig {
        connections: 1,
        pipeline: 1,
        rate: Some(rate),
        duration: Duration::from_millis(200),
        response_timeout: Duration::from_millis(200),
        ..config(vec![server.addr])
    };
    let r = run_ok(&cfg, template("GET", "/", None));
    let period = Duration::from_secs_f64(1.0 / rate);
    let slots = cfg.duration.as_nanos().div_ceil(period.as_nanos()) as u64;
    let unsent = r.total.errors_of(ErrorKind::Unsent);
    assert!(unsent > 0);
    assert_eq!(r.total.completed() + r.total.error_total(), slots);
    let timeouts = r.total.errors_of(ErrorKind::Timeout);
    assert!(
        timeouts <= 1,
        "at most the one request in flight at the deadline"
    );
    assert_eq!(
        r.total.completed() + unsent + timeouts,
        slots,
        "{:?}",
        r.total.errors
    );
    // The backlog sent after the end was charged from its intended time: at least the 200 ms
    // window minus the time the server needed for the first request.
    assert!(r.total.latency.max() > r.total.service.max());
}

#[test]
fn errors_are_counted_by_kind() {
    // Connection refused: a port that was free a moment ago.
    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let cfg = RunConfig {
        connections: 1,
        duration: Duration::from_millis(200),
        ..config(vec![closed_port])
    };
    let r = run_ok(&cfg, template("GET", "/", None));
    assert!(r.total.errors_of(ErrorKind::Connect) >= 1);
    assert_eq!(r.total.completed(), 0);

    // 503 is "unavailable", and its latency is not recorded.
    let unavailable = TestServer::start(Behavior::Unavailable);
    let cfg = RunConfig {
        requests_max: Some(10),
        ..config(vec![unavailable.addr])
    };
    let r = run_ok(&cfg, template("GET", "/", None));
    assert_eq!(r.total.errors_of(ErrorKind::Unavailable), 10);
    assert!(r.total.latency.is_empty());

    // A server that hangs up after 3 responses: the 4th request of each connection is lost as
    // "closed", the client reconnects and goes on.
    let closer = TestServer::start(Behavior::CloseAfter(3));
    let cfg = RunConfig {
        connections: 1,
        requests_max: Some(12),
        ..config(vec![closer.addr])
    };
    let r = run_ok(&cfg, template("GET", "/", None));
    assert_eq!(r.total.completed(), 9);
    assert_eq!(r.total.errors_of(ErrorKind::Closed), 3);
    assert_eq!(closer.connections.load(Ordering::SeqCst), 3);

    // A silent server: every outstanding request times out.
    let silent = TestServer::start(Behavior::Silent);
    let cfg = RunConfig {
        connections: 2,
        pipeline: 2,
        requests_max: Some(4),
        response_timeout: Duration::from_millis(200),
        ..config(vec![silent.addr])
    };
    let r = run_ok(&cfg, template("GET", "/", None));
    assert_eq!(r.total.errors_of(ErrorKind::Timeout), 4);
    assert_eq!(r.total.completed(), 0);
}

#[test]
fn leader_mode_follows_redirects() {
    let leader = TestServer::start(Behavior::EchoPath);
    let follower = TestServer::start(Behavior::Redirect(leader.addr));
    let cfg = RunConfig {
        connections: 2,
        target_mode: TargetMode::Leader,
        requests_max: Some(20),
        ..config(vec![follower.addr, leader.addr])
    };
    let r = run_ok(&cfg, template("GET", "/x", None));
    // Each connection's first request hits the follower, the rest go to the leader.
    assert_eq!(r.total.errors_of(ErrorKind::Redirect), 2);
    assert_eq!(r.total.completed(), 18);
    assert_eq!(follower.seen().len(), 2);
    assert_eq!(leader.seen().len(), 18);
}

#[test]
fn outputs_round_trip() {
    use base64::Engine as _;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;

    let server = TestServer::start(Behavior::EchoPath);
    let cfg = RunConfig {
        connections: 4,
        warmup: Duration::from_millis(100),
        duration: Duration::from_millis(400),
        interval: Duration::from_millis(100),
        ..config(vec![server.addr])
    };
    let r = run_ok(&cfg, template("GET", "/", None));
    assert!(r.total.completed() > 0);
    assert!(r.warmup.completed() > 0);

    let mut log = Vec::new();
    write_hlog(&r, "test run", &mut log).unwrap();
    let mut corrected_count = 0u64;
    let mut uncorrected_count = 0u64;
    let mut max = 0u64;
    let mut deserializer = Deserializer::new();
    for entry in IntervalLogIterator::new(&log) {
        let LogEntry::Interval(iv) = entry.unwrap() else {
            continue;
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(iv.encoded_histogram())
            .unwrap();
        let h: hdrhistogram::Histogram<u64> =
            deserializer.deserialize(&mut bytes.as_slice()).unwrap();
        match iv.tag().map(|t| t.as_str().to_string()) {
            None => {
                corrected_count += h.len();
                max = max.max(h.max());
            }
            Some(t) if t == "uncorrected" => uncorrected_count += h.len(),
            Some(t) => panic!("unexpected tag {t}"),
        }
    }
    // The measured intervals hold exactly the measured window's completions, give or take the
    // requests intended in the warm-up that completed after it (counted in warm-up totals).
    let measured_in_intervals: u64 = r
        .intervals
        .iter()
        .filter(|iv| !iv.warmup)
        .map(|iv| iv.recorder.completed())
        .sum();
    assert_eq!(corrected_count, measured_in_intervals);
    assert_eq!(uncorrected_count, measured_in_intervals);
    let all: u64 = r.intervals.iter().map(|iv| iv.recorder.completed()).sum();
    assert_eq!(all, r.total.completed() + r.warmup.completed());
    assert!(max > 0);

    let summary = summarize(&cfg, "GET /", &r);
    let json: serde_json::Value = serde_json::to_value(&summary).unwrap();
    assert_eq!(json["completed"].as_u64(), Some(r.total.completed()));
    assert_eq!(json["loop_mode"], "closed");
    assert!(json["latency_us"]["p99.9"].as_f64().unwrap() > 0.0);
    assert!(!json["intervals"].as_array().unwrap().is_empty());

    let dir = tempfile::tempdir().unwrap();
    for with_text in [false, true] {
        if with_text && mast_load::plot::load_font(None).is_none() {
            continue;
        }
        let lat = dir.path().join(format!("lat-{with_text}.png"));
        let thr = dir.path().join(format!("thr-{with_text}.png"));
        mast_load::plot::plot_percentiles(&r, "test", &lat, with_text).unwrap();
        mast_load::plot::plot_throughput(&r, "test", &thr, with_text).unwrap();
        for p in [lat, thr] {
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
                "{p:?} is not a PNG"
            );
        }
    }
}

fn batch(kind: BatchKind, count: u64, check_order: bool) -> BatchWorkloadSpec {
    BatchWorkloadSpec {
        kind,
        count,
        check_order,
    }
}

#[test]
fn tso_batches_count_timestamps() {
    let server = TestServer::start(Behavior::Allocator { wrong_count: false });
    let cfg = RunConfig {
        requests_max: Some(50),
        ..config(vec![server.addr])
    };
    let spec = batch(BatchKind::Tso, 1000, true);
    let r = run_ok(&cfg, Arc::new(spec));
    assert_eq!(r.total.ops_of(OpKind::Tso).ok, 50);
    assert_eq!(r.total.error_total(), 0);
    let seen = server.seen();
    assert_eq!(seen.len(), 50);
    for req in &seen {
        assert!(
            req.head.starts_with("POST /tso?count=1000 HTTP/1.1\r\n"),
            "{}",
            req.head
        );
        assert!(req.body.is_empty());
    }
    let mut summary = summarize(&cfg, &spec.describe(), &r);
    summary.items = Some(ItemsSummary::of(&r, OpKind::Tso, "timestamps", 1000));
    let items = summary.items.as_ref().unwrap();
    assert_eq!(items.completed, 50_000);
    assert!((items.throughput - 1000.0 * summary.throughput).abs() < 1e-6 * items.throughput);
    let json: serde_json::Value = serde_json::to_value(&summary).unwrap();
    assert_eq!(json["items"]["unit"], "timestamps");
    assert_eq!(json["items"]["completed"].as_u64(), Some(50_000));
    assert!(render_text(&summary).contains("timestamps: "));
}

#[test]
fn ids_batches_pipelined() {
    let server = TestServer::start(Behavior::Allocator { wrong_count: false });
    let cfg = RunConfig {
        requests_max: Some(40),
        pipeline: 4,
        ..config(vec![server.addr])
    };
    let r = run_ok(&cfg, Arc::new(batch(BatchKind::Ids, 7, false)));
    assert_eq!(r.total.ops_of(OpKind::Ids).ok, 40);
    assert_eq!(r.total.error_total(), 0);
    assert!(server
        .seen()
        .iter()
        .all(|q| q.head.starts_with("POST /ids?count=7 ")));
}

#[test]
fn batch_replies_with_another_count_or_status_are_errors() {
    let server = TestServer::start(Behavior::Allocator { wrong_count: true });
    let cfg = RunConfig {
        requests_max: Some(10),
        ..config(vec![server.addr])
    };
    let r = run_ok(&cfg, Arc::new(batch(BatchKind::Tso, 5, true)));
    assert_eq!(r.total.ops_of(OpKind::Tso).ok, 0);
    assert_eq!(r.total.errors_of(ErrorKind::BadBody), 10);
    assert_eq!(
        ItemsSummary::of(&r, OpKind::Tso, "timestamps", 5).completed,
        0
    );

    // A server refusing the count (400) and one without a leader (503).
    let server = TestServer::start(Behavior::Unavailable);
    let r = run_ok(
        &RunConfig {
            requests_max: Some(6),
            ..config(vec![server.addr])
        },
        Arc::new(batch(BatchKind::Ids, 1, true)),
    );
    assert_eq!(r.total.errors_of(ErrorKind::Unavailable), 6);
    assert_eq!(r.total.ops_of(OpKind::Ids).error, 6);
}
