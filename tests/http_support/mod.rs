//! Harness for `tests/http_binary.rs`: one real `mast server` process per test, and a raw
//! HTTP/1.1 client over `std::net::TcpStream` that sees exactly the bytes the server sends.
//!
//! No orphans: [`Server`] kills and reaps its process on drop (also during a panic), and the
//! process is started with `PR_SET_PDEATHSIG = SIGKILL`, so the kernel kills it when the test
//! thread that spawned it ends, even if the test binary is killed. Every wait has a deadline.

// Not every test uses every helper.
#![allow(dead_code)]

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

#[path = "../support/proc.rs"]
pub mod proc;

/// Path of the binary under test.
pub const MAST_BIN: &str = env!("CARGO_BIN_EXE_mast");
/// Shards every test server runs with (peer ports p and p + 1).
pub const SHARDS: u16 = 2;
/// How long a fresh server gets to answer `/healthz` and commit `PUT /kv/ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound of any single client read or write.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts at starting a server when a port picked as free was taken meanwhile.
const START_ATTEMPTS_MAX: u32 = 4;
/// Names the log file of each start.
static LOG_SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
/// Bytes of a server's stderr printed when a test fails.
const LOG_TAIL_BYTES: usize = 6_000;

/// A port that was free a moment ago (bind to port 0, read it, release it).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A port `p` such that `p .. p + n` were all free a moment ago.
pub fn free_port_run(n: u16) -> u16 {
    for _ in 0..100 {
        let first = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let p = first.local_addr().expect("local addr").port();
        if u32::from(p) + u32::from(n) > 65_535 {
            continue;
        }
        let rest: Result<Vec<TcpListener>, _> = (1..n)
            .map(|i| TcpListener::bind(("127.0.0.1", p + i)))
            .collect();
        if rest.is_ok() {
            return p;
        }
    }
    panic!("no run of {n} free ports found in 100 attempts");
}

/// Starts `mast` with `args`, stderr (and stdout) into `log`, killed by the kernel if the
/// spawning thread dies first.
pub fn spawn_mast(args: &[String], log: &Path) -> Child {
    let out = File::create(log).expect("create log file");
    let err = out.try_clone().expect("clone log file");
    let mut cmd = Command::new(MAST_BIN);
    cmd.args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().expect("spawn mast")
}

/// Waits (bounded) for `child` to exit.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

/// Runs `mast` with `args` to completion (killed after `timeout`); its exit status (None on
/// timeout) and everything it printed.
pub fn run_mast(args: &[String], log: &Path, timeout: Duration) -> (Option<ExitStatus>, String) {
    let mut child = spawn_mast(args, log);
    let status = wait_exit(&mut child, timeout);
    if status.is_none() {
        if let Err(e) = proc::kill_and_reap(&mut child, proc::REAP_TIMEOUT) {
            panic!("{e}");
        }
    }
    (status, read_log(log))
}

fn read_log(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// `mast server` flags for node 1 with `SHARDS` shards.
pub fn server_args(data_dir: &Path, http_port: u16, peer_port: u16) -> Vec<String> {
    vec![
        "server".into(),
        "--id".into(),
        "1".into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--http-addr".into(),
        format!("127.0.0.1:{http_port}"),
        "--peer-addr".into(),
        format!("127.0.0.1:{peer_port}"),
        "--shards".into(),
        SHARDS.to_string(),
    ]
}

/// One running `mast server` process; killed and reaped on drop.
pub struct Server {
    child: Option<Child>,
    pub http_addr: SocketAddr,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    log: PathBuf,
    /// Removed after the process is gone (fields drop after `Drop::drop`).
    tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// A ready single-node server on fresh ports and a fresh data directory.
    pub fn start() -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        Server::start_in(tmp, data_dir)
    }

    /// A ready server on `data_dir` inside `tmp` (for restarts on the same data).
    pub fn start_in(tmp: tempfile::TempDir, data_dir: PathBuf) -> Server {
        let mut tmp = Some(tmp);
        let mut history = String::new();
        for attempt in 0..START_ATTEMPTS_MAX {
            let http_port = free_port();
            let peer_port = free_port_run(SHARDS);
            let dir = tmp
                .take()
                .expect("tempdir is handed back after each attempt");
            // Numbered per process, so a restart on the same tempdir keeps the earlier log.
            let n = LOG_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let log = dir.path().join(format!("mast-{n}.log"));
            let args = server_args(&data_dir, http_port, peer_port);
            let child = spawn_mast(&args, &log);
            let mut srv = Server {
                child: Some(child),
                http_addr: SocketAddr::from(([127, 0, 0, 1], http_port)),
                peer_port,
                data_dir: data_dir.clone(),
                log,
                tmp: Some(dir),
            };
            match srv.wait_ready() {
                Ok(()) => return srv,
                Err(why) => {
                    srv.kill();
                    let tail = srv.log_tail();
                    history.push_str(&format!("attempt {attempt}: {why}\n{tail}\n"));
                    // Another process may have taken a port between our probe and the bind.
                    if !tail.contains("Address already in use") {
                        break;
                    }
                    tmp = srv.tmp.take();
                }
            }
        }
        panic!("mast server did not become ready:\n{history}");
    }

    /// Polls `GET /healthz`, then `PUT /kv/ready` (the raft groups need a moment to elect
    /// themselves), until both succeed or the deadline passes or the process exits.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut healthy = false;
        let mut last = String::from("nothing tried yet");
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("mast exited during start-up with {status}"));
                }
            }
            let path = if healthy { "/kv/ready" } else { "/healthz" };
            let req = if healthy {
                "PUT /kv/ready HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 1\r\n\r\n1"
                    .to_string()
            } else {
                "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_string()
            };
            match self.try_once(req.as_bytes()) {
                Ok(r) if (healthy && r.status == 204) || (!healthy && r.status == 200) => {
                    if healthy {
                        return Ok(());
                    }
                    healthy = true;
                    continue;
                }
                Ok(r) => last = format!("{path}: status {}", r.status),
                Err(e) => last = format!("{path}: {e}"),
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(format!("not ready within {READY_TIMEOUT:?}; last: {last}"))
    }

    fn try_once(&self, req: &[u8]) -> Result<Resp, String> {
        let stream = TcpStream::connect_timeout(&self.http_addr, IO_TIMEOUT)
            .map_err(|e| format!("connect: {e}"))?;
        let mut c = Conn::new(stream);
        c.try_send(req).map_err(|e| format!("write: {e}"))?;
        c.response()
    }

    /// A new keep-alive connection with bounded reads and writes.
    pub fn connect(&self) -> Conn {
        let stream = TcpStream::connect_timeout(&self.http_addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.http_addr));
        Conn::new(stream)
    }

    /// One request on a fresh connection (closed afterwards).
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> Resp {
        let mut c = self.connect();
        c.send(&request_bytes(method, path, &["Connection: close"], body));
        c.response_to(method == "HEAD")
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log_tail()))
    }

    /// `GET /healthz` on a fresh connection answers 200 within `within`.
    pub fn assert_healthy(&self, within: Duration, context: &str) {
        let t0 = Instant::now();
        let mut c = self.connect();
        c.set_timeout(within);
        c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let r = c.response().unwrap_or_else(|e| {
            panic!(
                "/healthz not answered ({e}) after {:?} {context}\n{}",
                t0.elapsed(),
                self.log_tail()
            )
        });
        assert_eq!(r.status, 200, "/healthz {context}");
    }

    pub fn pid(&self) -> i32 {
        let child = self.child.as_ref().expect("server process");
        i32::try_from(child.id()).expect("pid fits i32")
    }

    /// Sends `sig` to the server process.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("kill(2)");
    }

    /// Waits (bounded) for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("server process");
        let status = wait_exit(child, timeout);
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// The end of what the server printed.
    pub fn log_tail(&self) -> String {
        let log = read_log(&self.log);
        let start = log.len().saturating_sub(LOG_TAIL_BYTES);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        format!(
            "--- mast log tail ({}) ---\n{}",
            self.log.display(),
            &log[start..]
        )
    }

    /// SIGKILLs the process and waits (bounded) until it is reaped. Reports rather than
    /// panics when that fails: it also runs in `Drop`, possibly while unwinding.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Err(e) = proc::kill_and_reap(&mut child, proc::REAP_TIMEOUT) {
                eprintln!("mast server: {e}");
            }
        }
    }

    /// Stops the process (SIGKILL if still running) and hands back its tempdir and data dir
    /// for a restart.
    pub fn into_data(mut self) -> (tempfile::TempDir, PathBuf) {
        self.kill();
        let tmp = self.tmp.take().expect("tempdir");
        (tmp, self.data_dir.clone())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            eprintln!("{}", self.log_tail());
        }
        self.kill();
    }
}

/// A request with `Host` and `Content-Length`, plus `extra` header lines.
pub fn request_bytes(method: &str, path: &str, extra: &[&str], body: &[u8]) -> Vec<u8> {
    let mut v = format!("{method} {path} HTTP/1.1\r\nHost: t\r\n").into_bytes();
    for h in extra {
        v.extend_from_slice(h.as_bytes());
        v.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || method == "PUT" || method == "POST" {
        v.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    v.extend_from_slice(b"\r\n");
    v.extend_from_slice(body);
    v
}

/// One parsed response.
#[derive(Debug, Clone)]
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

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `error.kind` of the error body; panics with the body if it is not the error format.
    pub fn error_kind(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {:?}", self.text()));
        let err = &v["error"];
        assert_eq!(
            err["status"].as_u64(),
            Some(u64::from(self.status)),
            "error.status in {v}"
        );
        assert!(err["message"].is_string(), "error.message in {v}");
        err["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("error.kind missing in {v}"))
            .to_string()
    }
}

/// A raw client connection that parses responses from exactly the bytes received.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("set timeout");
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .expect("set timeout");
        stream.set_nodelay(true).expect("nodelay");
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn set_timeout(&mut self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).expect("set timeout");
        self.stream.set_write_timeout(Some(t)).expect("set timeout");
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).expect("write to server");
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn half_close(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads one response (a HEAD response has no body whatever its content-length).
    pub fn response_to(&mut self, head_only: bool) -> Result<Resp, String> {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match self.fill() {
                Ok(0) => {
                    return Err(format!(
                        "eof before a complete response head (got {:?})",
                        String::from_utf8_lossy(&self.buf)
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err(format!("read error before response head: {e}")),
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if version != "HTTP/1.1" && version != "HTTP/1.0" {
            return Err(format!("bad status line {status_line:?}"));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status in {status_line:?}"))?;
        let mut headers = Vec::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let (n, v) = line
                .split_once(':')
                .ok_or_else(|| format!("bad header line {line:?}"))?;
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
        self.buf.drain(..head_end);
        let mut resp = Resp {
            status,
            headers,
            body: Vec::new(),
        };
        if resp.header("transfer-encoding").is_some() {
            return Err(
                "server sent a chunked response; this client expects content-length".into(),
            );
        }
        let len: usize = match resp.header("content-length") {
            Some(v) => v.parse().map_err(|_| format!("bad content-length {v:?}"))?,
            None => 0,
        };
        let len = if head_only || (100..200).contains(&status) {
            0
        } else {
            len
        };
        while self.buf.len() < len {
            match self.fill() {
                Ok(0) => return Err(format!("eof in body ({} of {len} bytes)", self.buf.len())),
                Ok(_) => {}
                Err(e) => return Err(format!("read error in body: {e}")),
            }
        }
        resp.body = self.buf.drain(..len).collect();
        Ok(resp)
    }

    pub fn response(&mut self) -> Result<Resp, String> {
        self.response_to(false)
    }

    /// Whether the server closes the connection (EOF or reset) without sending anything
    /// more, within the read timeout.
    pub fn closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        match self.fill() {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == ErrorKind::ConnectionReset,
        }
    }

    /// Everything the server sends until it closes (or `IO_TIMEOUT` passes).
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + IO_TIMEOUT;
        while Instant::now() < deadline {
            match self.fill() {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        std::mem::take(&mut self.buf)
    }

    /// Bytes received but not yet parsed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }
}
