//! Test harness: a real server on a background monoio runtime, and a raw HTTP client.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mast_http::{serve, HttpMetrics, Limits, Method, Request, Response, Router, ShutdownSignal};

/// Upper bound for any single client read in tests.
pub const CLIENT_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Limits small enough that every limit and timeout is reached quickly.
/// Producers of `/forever` that saw their connection go.
pub static STREAM_PRODUCERS_STOPPED: AtomicU64 = AtomicU64::new(0);

pub fn test_limits() -> Limits {
    Limits {
        header_bytes_max: 2048,
        header_count_max: 16,
        uri_bytes_max: 256,
        body_bytes_max: 64 * 1024,
        connections_max: 64,
        head_read_timeout_ms: 300,
        idle_timeout_ms: 400,
        body_read_timeout_ms: 300,
        write_stall_timeout_ms: 300,
        pipeline_depth_max: 8,
        output_buffer_bytes_max: 16 * 1024,
        shutdown_grace_ms: 2_000,
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub shutdown: ShutdownSignal,
    /// Handler invocations of every route except /metrics.
    pub hits: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

fn router(hits: Arc<AtomicU64>) -> (Router, Rc<HttpMetrics>) {
    let metrics = Rc::new(HttpMetrics::new());
    let h = move || {
        let hits = hits.clone();
        move || {
            hits.fetch_add(1, Ordering::SeqCst);
        }
    };
    let (h1, h2, h3, h4, h5, h6, h7) = (h(), h(), h(), h(), h(), h(), h());
    let m = metrics.clone();
    let r = Router::new()
        .route(Method::GET, "/healthz", move |_req: Request| {
            h1();
            async { Response::text(200, "ok") }
        })
        .route(Method::POST, "/echo", move |req: Request| {
            h2();
            async move { Response::bytes(200, "application/octet-stream", req.body().clone()) }
        })
        .route(Method::PUT, "/echo", move |req: Request| {
            h3();
            async move { Response::bytes(200, "application/octet-stream", req.body().clone()) }
        })
        .route(Method::GET, "/hit", move |_req: Request| {
            h4();
            async { Response::text(200, "hit") }
        })
        .route(Method::GET, "/sleep/{ms}", move |req: Request| {
            h5();
            let ms: u64 = req.param("ms").and_then(|v| v.parse().ok()).unwrap_or(0);
            async move {
                monoio::time::sleep(Duration::from_millis(ms.min(3_000))).await;
                Response::text(200, "slept")
            }
        })
        .route(Method::GET, "/kv/*key", move |req: Request| {
            h6();
            let key = req.param_decoded("key").map(|k| k.into_owned());
            let q = req.query_param("q").map(|v| v.into_owned());
            async move {
                match key {
                    Ok(k) => Response::json(200, &serde_json::json!({"key": k, "q": q})),
                    Err(e) => Response::error(400, "bad_key", &e),
                }
            }
        })
        .route(Method::GET, "/big/{n}", move |req: Request| {
            h7();
            let n: usize = req.param("n").and_then(|v| v.parse().ok()).unwrap_or(0);
            async move {
                Response::bytes(
                    200,
                    "application/octet-stream",
                    vec![b'x'; n.min(4 << 20)].into(),
                )
            }
        })
        // n chunks "chunk i\n", 2 ms apart, then the end of the body.
        .route(Method::GET, "/stream/{n}", move |req: Request| {
            let n: usize = req.param("n").and_then(|v| v.parse().ok()).unwrap_or(0);
            let (tx, body) = mast_http::body_channel(1024);
            monoio::spawn(async move {
                for i in 0..n.min(100) {
                    if tx.send(format!("chunk {i}\n").into()).is_err() {
                        return;
                    }
                    monoio::time::sleep(Duration::from_millis(2)).await;
                }
            });
            async move { Response::streamed(200, "text/plain", body) }
        })
        // Sends until the connection is gone, then records that the producer noticed.
        .route(Method::GET, "/forever", move |_req: Request| {
            let (tx, body) = mast_http::body_channel(1024);
            monoio::spawn(async move {
                while tx.send("tick\n".into()).is_ok() {
                    monoio::time::sleep(Duration::from_millis(5)).await;
                }
                STREAM_PRODUCERS_STOPPED.fetch_add(1, Ordering::SeqCst);
            });
            async move { Response::streamed(200, "text/plain", body) }
        })
        // Panics: `now` while building the handler's future, `later` on a poll after a sleep.
        .route(Method::GET, "/panic/{when}", move |req: Request| {
            let later = req.param("when") == Some("later");
            if !later {
                panic!("test handler panicked at once");
            }
            async move {
                monoio::time::sleep(Duration::from_millis(2)).await;
                panic!("test handler panicked on a later poll");
                #[allow(unreachable_code)]
                Response::text(200, "unreachable")
            }
        })
        .route(Method::GET, "/metrics", move |_req: Request| {
            let mut text = String::new();
            m.snapshot().render_prometheus(&mut text);
            async move { Response::text(200, text) }
        });
    (r, metrics)
}

impl TestServer {
    /// A server on the default driver (io_uring, epoll fallback).
    pub fn start(limits: Limits) -> TestServer {
        TestServer::start_on(limits, false)
    }

    /// A server on the epoll driver, whose I/O can complete without suspending.
    pub fn start_epoll(limits: Limits) -> TestServer {
        TestServer::start_on(limits, true)
    }

    fn start_on(limits: Limits, epoll: bool) -> TestServer {
        let hits = Arc::new(AtomicU64::new(0));
        let shutdown = ShutdownSignal::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let (hits2, sd) = (hits.clone(), shutdown.clone());
        let thread = std::thread::spawn(move || {
            let run = async move {
                let listener = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                tx.send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                let (router, metrics) = router(hits2);
                serve(listener, Rc::new(router), limits, metrics, sd).await;
            };
            if epoll {
                monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                    .enable_timer()
                    .build()
                    .expect("runtime")
                    .block_on(run);
            } else {
                monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                    .enable_timer()
                    .build()
                    .expect("runtime")
                    .block_on(run);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server address");
        TestServer {
            addr,
            shutdown,
            hits,
            thread: Some(thread),
        }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(CLIENT_READ_TIMEOUT))
            .expect("timeout");
        s.set_nodelay(true).expect("nodelay");
        s
    }

    /// One request on a fresh connection.
    pub fn get(&self, path: &str) -> Resp {
        let mut s = self.connect();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .expect("write");
        Client::new(s).response().expect("response")
    }

    pub fn metrics(&self) -> String {
        String::from_utf8_lossy(&self.get("/metrics").body).into_owned()
    }

    /// Value of one Prometheus sample line (exact series name + labels).
    pub fn metric(&self, series: &str) -> u64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0)
    }

    /// Waits (bounded) until `cond` holds.
    pub fn wait_for(&self, what: &str, mut cond: impl FnMut(&TestServer) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if cond(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("timed out waiting for {what}");
    }

    /// Triggers shutdown and joins the server thread, failing if it does not return in time.
    pub fn stop(mut self) -> Duration {
        let t0 = Instant::now();
        self.shutdown.trigger();
        let handle = self.thread.take().expect("thread");
        while !handle.is_finished() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "serve did not return after shutdown"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        handle.join().expect("server thread panicked");
        t0.elapsed()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

/// Raw HTTP/1.1 client reading responses off one connection.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn new(stream: TcpStream) -> Client {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads one response; `head_only` for HEAD requests (no body despite content-length).
    pub fn response_to(&mut self, head_only: bool) -> Result<Resp, String> {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match self.fill() {
                Ok(0) => {
                    return Err(format!(
                        "eof before response head ({} bytes)",
                        self.buf.len()
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err(format!("read error: {e}")),
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        if parts.next() != Some("HTTP/1.1") {
            return Err(format!("bad status line {status_line:?}"));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or("bad status")?;
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| {
                l.split_once(':')
                    .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            })
            .collect();
        self.buf.drain(..head_end);
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let len = if head_only || status == 100 { 0 } else { len };
        while self.buf.len() < len {
            match self.fill() {
                Ok(0) => return Err("eof in body".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("read error in body: {e}")),
            }
        }
        let body = self.buf.drain(..len).collect();
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    pub fn response(&mut self) -> Result<Resp, String> {
        self.response_to(false)
    }

    /// True when the server closes the connection (EOF or reset) with no further bytes
    /// before the client read timeout.
    pub fn closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        match self.fill() {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }

    /// Reads until EOF or error, returning everything received.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + CLIENT_READ_TIMEOUT;
        while Instant::now() < deadline {
            match self.fill() {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        std::mem::take(&mut self.buf)
    }

    pub fn half_close(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}
