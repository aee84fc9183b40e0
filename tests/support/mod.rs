//! Process-level test harness: a [`Cluster`] of real `mast server` processes on 127.0.0.1,
//! a blocking HTTP client ([`http`]) and a linearizability checker ([`linz`]).
//!
//! No orphans: every process is spawned by one long-lived thread of the harness with
//! `PR_SET_PDEATHSIG = SIGKILL`, so the kernel kills it when that thread ends, even if the test
//! binary itself is killed; `Drop` kills and reaps them first in the ordinary case (including
//! a panic). Every wait has a deadline.

// Each test binary uses a different subset of the harness.
#![allow(dead_code)]

pub mod cfs;
pub mod http;
pub mod kv;
pub mod linz;
pub mod proc;

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

pub use http::{encode_key, HttpClient, Response};

/// Path of the binary under test.
pub const MAST_BIN: &str = env!("CARGO_BIN_EXE_mast");

/// Nodes per cluster above this are refused (each is a process with pinned threads).
pub const NODES_MAX: u64 = 9;
/// Attempts at starting a cluster when a port picked as free was taken meanwhile.
const START_ATTEMPTS_MAX: u32 = 3;
/// How long a node gets to answer `/healthz` after it is spawned.
pub const HEALTHY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a killed node's ports may stay bound (see [`Cluster::kill`]).
const PORT_RELEASE_TIMEOUT: Duration = Duration::from_secs(5);
/// Log lines printed per node when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// Where a node's process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Running,
    /// Stopped with SIGSTOP: alive to the kernel (its sockets accept), deaf to everything.
    Paused,
    /// Killed with SIGKILL (or exited); its data dir is kept for a restart.
    Down,
}

/// One node of a cluster.
pub struct Node {
    pub id: u64,
    pub http_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// The flags it was started with (after `mast server`), reused by restarts.
    pub args: Vec<String>,
    child: Option<Child>,
    pub state: NodeState,
    /// Incremented on every (re)start, to name its log files.
    starts: u32,
}

/// Options of [`Cluster::start`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub nodes: u64,
    pub shards: usize,
    /// Extra flags for every node (e.g. `--snapshot-every-entries 50`).
    pub extra_args: Vec<String>,
}

impl ClusterOptions {
    pub fn new(nodes: u64, shards: usize) -> Self {
        ClusterOptions {
            nodes,
            shards,
            extra_args: Vec::new(),
        }
    }

    pub fn arg(mut self, flag: &str, value: impl ToString) -> Self {
        self.extra_args.push(flag.to_string());
        self.extra_args.push(value.to_string());
        self
    }
}

/// A cluster of real `mast server` processes. Dropping it kills them all.
pub struct Cluster {
    dir: Option<tempfile::TempDir>,
    pub shards: usize,
    nodes: BTreeMap<u64, Node>,
    extra_args: Vec<String>,
    spawner: Spawner,
}

impl Cluster {
    /// Starts `opts.nodes` nodes (ids 1..=n) and waits until each answers `/healthz`.
    /// A single node runs without `--members`.
    pub fn start(opts: ClusterOptions) -> Result<Cluster, String> {
        if opts.nodes == 0 || opts.nodes > NODES_MAX {
            return Err(format!("nodes must be 1..={NODES_MAX}"));
        }
        let mut last_err = String::new();
        for attempt in 1..=START_ATTEMPTS_MAX {
            match Self::try_start(&opts) {
                Ok(c) => return Ok(c),
                Err(e) => {
                    eprintln!("cluster start attempt {attempt} failed: {e}");
                    last_err = e;
                }
            }
        }
        Err(last_err)
    }

    fn try_start(opts: &ClusterOptions) -> Result<Cluster, String> {
        let dir = tempfile::Builder::new()
            .prefix("mast-cluster-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let mut addrs = Vec::new();
        for _ in 0..opts.nodes {
            let http = pick_ports(1)?;
            let peer = pick_ports(opts.shards)?;
            addrs.push((http, peer));
        }
        let members = addrs
            .iter()
            .enumerate()
            .map(|(i, (h, p))| format!("{}={}/{}", i + 1, p, h))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            dir: Some(dir),
            shards: opts.shards,
            nodes: BTreeMap::new(),
            extra_args: opts.extra_args.clone(),
            spawner: Spawner::new()?,
        };
        for (i, (http, peer)) in addrs.into_iter().enumerate() {
            let id = i as u64 + 1;
            let mut args = Vec::new();
            if opts.nodes > 1 {
                args.push("--members".to_string());
                args.push(members.clone());
            }
            cluster.add_node_process(id, http, peer, args)?;
        }
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        for id in cluster.node_ids() {
            cluster.wait_healthy(id, deadline)?;
        }
        Ok(cluster)
    }

    fn root(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or_else(|| Path::new("/nonexistent"))
    }

    /// Creates node `id` with these addresses and role flags (`--members ...` or
    /// `--join ...`) and spawns it (without waiting for it to be healthy).
    fn add_node_process(
        &mut self,
        id: u64,
        http_addr: SocketAddr,
        peer_addr: SocketAddr,
        role_args: Vec<String>,
    ) -> Result<(), String> {
        let data_dir = self.root().join(format!("node-{id}"));
        fs::create_dir_all(&data_dir).map_err(|e| format!("create {data_dir:?}: {e}"))?;
        let mut args = vec![
            "--id".to_string(),
            id.to_string(),
            "--data-dir".to_string(),
            data_dir.display().to_string(),
            "--http-addr".to_string(),
            http_addr.to_string(),
            "--peer-addr".to_string(),
            peer_addr.to_string(),
            "--shards".to_string(),
            self.shards.to_string(),
        ];
        args.extend(role_args);
        args.extend(self.extra_args.iter().cloned());
        let node = Node {
            id,
            http_addr,
            peer_addr,
            log_path: self.root().join(format!("node-{id}.log")),
            data_dir,
            args,
            child: None,
            state: NodeState::Down,
            starts: 0,
        };
        self.nodes.insert(id, node);
        self.spawn(id)
    }

    fn spawn(&mut self, id: u64) -> Result<(), String> {
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| format!("no node {id}"))?;
        node.starts += 1;
        // One log file per node, appended across restarts so that a failure shows history.
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .map_err(|e| format!("open {:?}: {e}", node.log_path))?;
        let log2 = log.try_clone().map_err(|e| format!("dup log: {e}"))?;
        {
            use std::io::Write;
            let mut l = &log;
            let _ = writeln!(
                l,
                "===== harness: start #{} of node {id}: {MAST_BIN} server {} =====",
                node.starts,
                node.args.join(" ")
            );
        }
        let mut cmd = Command::new(MAST_BIN);
        cmd.arg("server")
            .args(&node.args)
            .env(
                "RUST_LOG",
                std::env::var("MAST_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        let child = self.spawner.spawn(cmd)?;
        node.child = Some(child);
        node.state = NodeState::Running;
        Ok(())
    }

    pub fn node_ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Nodes that are running (not paused, not down).
    pub fn running_ids(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.state == NodeState::Running)
            .map(|n| n.id)
            .collect()
    }

    pub fn node(&self, id: u64) -> &Node {
        match self.nodes.get(&id) {
            Some(n) => n,
            None => panic!("test bug: no node {id}"),
        }
    }

    /// Process id of node `id`, while it has a process.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.nodes.get(&id)?.child.as_ref().map(|c| c.id())
    }

    pub fn http_addr(&self, id: u64) -> SocketAddr {
        self.node(id).http_addr
    }

    /// Client for node `id`, with a 10 s timeout on every socket operation.
    pub fn client(&self, id: u64) -> HttpClient {
        HttpClient::new(self.http_addr(id), Duration::from_secs(10))
    }

    /// Waits until node `id` answers `GET /healthz` with 200, failing early if it exits.
    pub fn wait_healthy(&mut self, id: u64, deadline: Instant) -> Result<(), String> {
        let addr = self.http_addr(id);
        let mut client = HttpClient::new(addr, Duration::from_secs(2));
        loop {
            if let Some(status) = self.reap(id) {
                return Err(format!(
                    "node {id} exited ({status}) before answering /healthz; log tail:\n{}",
                    self.log_tail(id, LOG_TAIL_LINES)
                ));
            }
            let last = match client.get("/healthz") {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r) => format!("GET /healthz -> {r}"),
                Err(e) => format!("GET /healthz: {e}"),
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "node {id} at {addr} not healthy by the deadline (last: {last}); log tail:\n{}",
                    self.log_tail(id, LOG_TAIL_LINES)
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded) until node `id`'s process exits by itself; how it ended, or `None`
    /// if it still runs at the deadline.
    pub fn wait_exit(&mut self, id: u64, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.reap(id) {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// If node `id`'s process has exited, reaps it, marks it down and says how it ended.
    fn reap(&mut self, id: u64) -> Option<String> {
        let node = self.nodes.get_mut(&id)?;
        let child = node.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                node.child = None;
                node.state = NodeState::Down;
                Some(status.to_string())
            }
            _ => None,
        }
    }

    /// SIGKILLs node `id` (resuming it first is not needed: SIGKILL ends a stopped process)
    /// and waits until its ports can be bound again.
    pub fn kill(&mut self, id: u64) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if let Some(mut child) = node.child.take() {
            if let Err(e) = proc::kill_and_reap(&mut child, proc::REAP_TIMEOUT) {
                panic!("kill node {id}: {e}");
            }
            // io_uring tears a ring down asynchronously after the process is reaped, and the
            // ring's pending accepts keep the listening sockets alive for a few milliseconds
            // more: a restart in that window finds its own ports taken.
            let mut ports = vec![node.http_addr];
            for i in 0..self.shards {
                let port = node.peer_addr.port().saturating_add(i as u16);
                ports.push(SocketAddr::new(node.peer_addr.ip(), port));
            }
            let deadline = Instant::now() + PORT_RELEASE_TIMEOUT;
            while Instant::now() < deadline && !ports.iter().all(|a| TcpListener::bind(a).is_ok()) {
                thread::sleep(Duration::from_millis(5));
            }
        }
        node.state = NodeState::Down;
    }

    /// SIGSTOPs node `id`.
    pub fn pause(&mut self, id: u64) {
        self.signal(id, Signal::SIGSTOP, NodeState::Paused);
    }

    /// SIGCONTs node `id`.
    pub fn resume(&mut self, id: u64) {
        self.signal(id, Signal::SIGCONT, NodeState::Running);
    }

    fn signal(&mut self, id: u64, sig: Signal, new_state: NodeState) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(child) = node.child.as_ref() else {
            return;
        };
        let Ok(pid) = i32::try_from(child.id()) else {
            return;
        };
        if let Err(e) = kill(Pid::from_raw(pid), sig) {
            panic!("{sig} to node {id} (pid {pid}): {e}");
        }
        node.state = new_state;
        // Until the kernel has stopped (or resumed) every thread, the node is neither.
        let waited = if sig == Signal::SIGSTOP {
            proc::wait_stopped(pid, proc::STOP_TIMEOUT)
        } else {
            proc::wait_resumed(pid, proc::STOP_TIMEOUT)
        };
        if let Err(e) = waited {
            panic!("node {id}: {e}");
        }
    }

    /// Kills node `id` if it runs, starts it again with the same data dir and flags, and waits
    /// for `/healthz`.
    pub fn restart(&mut self, id: u64) -> Result<(), String> {
        self.kill(id);
        self.spawn(id)?;
        self.wait_healthy(id, Instant::now() + HEALTHY_TIMEOUT)
    }

    /// Kills node `id` if it runs and starts it again with the same data dir and flags,
    /// without waiting for `/healthz` (for a node that is expected to report itself unfit).
    pub fn restart_unchecked(&mut self, id: u64) -> Result<(), String> {
        self.kill(id);
        self.spawn(id)
    }

    /// Starts a new node that joins through node `via` (`--join`), and waits for `/healthz`.
    /// It does not add it to the membership: see [`Cluster::add_member`].
    pub fn start_joining_node(&mut self, id: u64, via: u64) -> Result<(), String> {
        if self.nodes.contains_key(&id) {
            return Err(format!("node {id} exists"));
        }
        let http = pick_ports(1)?;
        let peer = pick_ports(self.shards)?;
        let join = vec!["--join".to_string(), self.http_addr(via).to_string()];
        self.add_node_process(id, http, peer, join)?;
        self.wait_healthy(id, Instant::now() + HEALTHY_TIMEOUT)
    }

    /// `POST /members` through node `via` for node `id` (which must be known to the harness).
    pub fn add_member(&self, via: u64, id: u64) -> Result<Response, String> {
        let node = self.node(id);
        let body = serde_json::json!({
            "id": id,
            "peer_addr": node.peer_addr.to_string(),
            "http_addr": node.http_addr.to_string(),
        });
        self.client(via)
            .post_json("/members", &body)
            .map_err(|e| format!("POST /members via node {via}: {e}"))
    }

    /// `DELETE /members/{id}` through node `via`.
    pub fn remove_member(&self, via: u64, id: u64) -> Result<Response, String> {
        self.client(via)
            .delete(&format!("/members/{id}"))
            .map_err(|e| format!("DELETE /members/{id} via node {via}: {e}"))
    }

    /// Forgets a node after it was removed from the membership (kills it first).
    pub fn forget(&mut self, id: u64) {
        self.kill(id);
        self.nodes.remove(&id);
    }

    /// `GET /status` of node `id`, parsed.
    pub fn status(&self, id: u64) -> Result<Status, String> {
        let mut c = HttpClient::new(self.http_addr(id), Duration::from_secs(3));
        let r = c
            .get("/status")
            .map_err(|e| format!("GET /status on node {id}: {e}"))?;
        if r.status != 200 {
            return Err(format!("GET /status on node {id}: {r}"));
        }
        Status::parse(&r.json()?).map_err(|e| format!("node {id} /status: {e}"))
    }

    /// Waits until every shard has a leader that all running nodes agree on and that itself
    /// says it leads. Returns the leader of each shard.
    pub fn wait_for_leaders(&self, timeout: Duration) -> Result<Vec<u64>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.agreed_leaders() {
                Ok(leaders) => return Ok(leaders),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!("no agreed leaders within {timeout:?}: {last}"));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn agreed_leaders(&self) -> Result<Vec<u64>, String> {
        let running = self.running_ids();
        let mut statuses = BTreeMap::new();
        for &id in &running {
            statuses.insert(id, self.status(id)?);
        }
        let mut leaders = Vec::with_capacity(self.shards);
        for shard in 0..self.shards {
            let mut seen = HashSet::new();
            for (id, st) in &statuses {
                let s = st
                    .shard(shard)
                    .ok_or_else(|| format!("node {id} reports no shard {shard}"))?;
                seen.insert(s.leader);
            }
            if seen.len() != 1 {
                return Err(format!(
                    "shard {shard}: nodes disagree on the leader {seen:?}"
                ));
            }
            let leader = seen.into_iter().next().unwrap_or(0);
            if leader == 0 {
                return Err(format!("shard {shard}: no leader"));
            }
            let own = statuses
                .get(&leader)
                .ok_or_else(|| format!("shard {shard}: leader {leader} is not a running node"))?;
            if own.shard(shard).map(|s| s.role.as_str()) != Some("leader") {
                return Err(format!(
                    "shard {shard}: node {leader} does not say it leads"
                ));
            }
            leaders.push(leader);
        }
        Ok(leaders)
    }

    /// Waits until node `id` has applied, on every shard, at least what each shard's leader
    /// had committed when this was called.
    pub fn wait_caught_up(&self, id: u64, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let leaders = self.wait_for_leaders(timeout)?;
        let mut targets = Vec::new();
        for (shard, &leader) in leaders.iter().enumerate() {
            let st = self.status(leader)?;
            let s = st
                .shard(shard)
                .ok_or_else(|| format!("leader {leader} reports no shard {shard}"))?;
            targets.push(s.commit);
        }
        loop {
            let last = match self.status(id) {
                Ok(st) => {
                    let behind: Vec<String> = targets
                        .iter()
                        .enumerate()
                        .filter_map(|(shard, &t)| {
                            let applied = st.shard(shard).map(|s| s.applied).unwrap_or(0);
                            (applied < t).then(|| format!("shard {shard}: applied {applied} < {t}"))
                        })
                        .collect();
                    if behind.is_empty() {
                        return Ok(());
                    }
                    behind.join(", ")
                }
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "node {id} did not catch up within {timeout:?}: {last}"
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Directory holding the cluster's data dirs and logs.
    pub fn root_dir(&self) -> PathBuf {
        self.root().to_path_buf()
    }

    /// SIGKILLs node `id`, reaps it and starts it again at once with the same flags, without
    /// waiting for its ports to be released (unlike [`Cluster::restart`]): the server itself
    /// must cope with its own just-closed listeners. Waits for `/healthz`.
    pub fn kill_and_restart_at_once(&mut self, id: u64) -> Result<(), String> {
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| format!("no node {id}"))?;
        if let Some(mut child) = node.child.take() {
            proc::kill_and_reap(&mut child, proc::REAP_TIMEOUT)
                .map_err(|e| format!("kill node {id}: {e}"))?;
        }
        node.state = NodeState::Down;
        self.spawn(id)?;
        self.wait_healthy(id, Instant::now() + HEALTHY_TIMEOUT)
    }

    /// Runs `mast server <args>` as a one-off process that is expected to exit by itself
    /// (a refused start) and returns how it exited and what it printed. It is killed, and an
    /// error returned, if it is still running after `timeout`.
    pub fn run_until_exit(
        &self,
        name: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<(std::process::ExitStatus, String), String> {
        let log_path = self.root().join(format!("{name}.log"));
        let log = File::create(&log_path).map_err(|e| format!("create {log_path:?}: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("dup log: {e}"))?;
        let mut cmd = Command::new(MAST_BIN);
        cmd.arg("server")
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("MAST_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        let mut child = self.spawner.spawn(cmd)?;
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok((status, tail(&log_path, LOG_TAIL_LINES))),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                Ok(None) => {
                    let _ = proc::kill_and_reap(&mut child, proc::REAP_TIMEOUT);
                    return Err(format!(
                        "`mast server {}` still running after {timeout:?}; output tail:\n{}",
                        args.join(" "),
                        tail(&log_path, LOG_TAIL_LINES)
                    ));
                }
                Err(e) => {
                    let _ = proc::kill_and_reap(&mut child, proc::REAP_TIMEOUT);
                    return Err(format!("wait for {name}: {e}"));
                }
            }
        }
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        match self.nodes.get(&id) {
            Some(n) => tail(&n.log_path, lines),
            None => format!("(no node {id})"),
        }
    }

    /// Prints every node's log tail to stderr.
    pub fn dump_logs(&self) {
        for n in self.nodes.values() {
            eprintln!(
                "----- node {} ({:?}, http {}) log tail: {} -----\n{}",
                n.id,
                n.state,
                n.http_addr,
                n.log_path.display(),
                tail(&n.log_path, LOG_TAIL_LINES)
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                // No panic inside Drop (it may run while unwinding); PDEATHSIG is the backstop.
                if let Err(e) = proc::kill_and_reap(&mut child, proc::REAP_TIMEOUT) {
                    eprintln!("node {}: {e}", node.id);
                }
            }
            node.state = NodeState::Down;
        }
        if thread::panicking() {
            self.dump_logs();
            if std::env::var_os("MAST_TEST_KEEP").is_some() {
                if let Some(dir) = self.dir.take() {
                    eprintln!("kept the cluster's files in {}", dir.keep().display());
                }
            } else {
                eprintln!("(set MAST_TEST_KEEP=1 to keep the data dirs and full logs)");
            }
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    // Only the end of the file is read, so a huge log costs nothing.
    const TAIL_BYTES_MAX: u64 = 64 * 1024;
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) => return format!("(cannot open {path:?}: {e})"),
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES_MAX)));
    let mut buf = Vec::new();
    let _ = f.take(TAIL_BYTES_MAX).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Ports handed out by this process, so parallel tests in one binary never share one.
fn used_ports() -> &'static Mutex<HashSet<u16>> {
    static USED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    USED.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Lowest and highest port of the range ports are picked from. It lies below Linux's default
/// ephemeral range (32768..=60999), so outgoing connections do not take a port after it was
/// checked free.
const PORT_LOW: u16 = 20_000;
const PORT_HIGH: u16 = 32_000;
/// Candidate ranges tried before giving up.
const PORT_ATTEMPTS_MAX: u32 = 200;

/// Finds `count` consecutive free ports on 127.0.0.1 and returns the first as an address:
/// random candidates, each checked by binding (then released).
pub fn pick_ports(count: usize) -> Result<SocketAddr, String> {
    use rand::Rng;
    let count = u16::try_from(count.max(1)).map_err(|_| "too many ports".to_string())?;
    let mut rng = rand::thread_rng();
    let mut used = used_ports()
        .lock()
        .map_err(|_| "port registry poisoned".to_string())?;
    for _ in 0..PORT_ATTEMPTS_MAX {
        let base = rng.gen_range(PORT_LOW..PORT_HIGH - count);
        let ports: Vec<u16> = (base..base + count).collect();
        if ports.iter().any(|p| used.contains(p)) {
            continue;
        }
        let free = ports
            .iter()
            .all(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            used.extend(ports);
            return Ok(SocketAddr::from(([127, 0, 0, 1], base)));
        }
    }
    // Fall back to the kernel's choice for a single port.
    if count == 1 {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
        return l.local_addr().map_err(|e| format!("local_addr: {e}"));
    }
    Err(format!("no {count} consecutive free ports found"))
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// The thread that forks every server process. `PR_SET_PDEATHSIG` fires when the *thread*
/// that forked a child ends, so forking from short-lived test threads would kill nodes early;
/// this thread lives exactly as long as the [`Cluster`].
struct Spawner {
    tx: Option<mpsc::Sender<SpawnRequest>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Spawner {
    fn new() -> Result<Spawner, String> {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let thread = thread::Builder::new()
            .name("mast-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    // SAFETY: the closure runs between fork and exec and only makes
                    // async-signal-safe syscalls (prctl, getppid, kill on itself).
                    unsafe {
                        let parent = libc::getpid();
                        cmd.pre_exec(move || {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                            // The parent may have died before prctl took effect.
                            if libc::getppid() != parent {
                                libc::kill(libc::getpid(), libc::SIGKILL);
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(cmd.spawn());
                }
            })
            .map_err(|e| format!("spawn thread: {e}"))?;
        Ok(Spawner {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn spawn(&self, cmd: Command) -> Result<Child, String> {
        let (reply_tx, reply_rx) = mpsc::channel();
        let tx = self.tx.as_ref().ok_or("spawner stopped")?;
        tx.send((cmd, reply_tx))
            .map_err(|_| "spawner thread is gone".to_string())?;
        reply_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|e| format!("spawner did not answer: {e}"))?
            .map_err(|e| format!("spawn {MAST_BIN}: {e}"))
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One shard's raft facts from `/status`.
#[derive(Debug, Clone, Default)]
pub struct ShardStatus {
    pub shard: usize,
    pub leader: u64,
    pub role: String,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub snapshot_index: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub keys: u64,
}

/// A node's `/status`.
#[derive(Debug, Clone)]
pub struct Status {
    pub node_id: u64,
    pub shards: Vec<ShardStatus>,
    pub raw: Value,
}

impl Status {
    /// Reads the fields the tests use; a missing required field is an error naming it.
    pub fn parse(v: &Value) -> Result<Status, String> {
        let node_id = v
            .get("node_id")
            .and_then(Value::as_u64)
            .ok_or("missing node_id")?;
        let list = v
            .get("shards")
            .and_then(Value::as_array)
            .ok_or("missing shards")?;
        let mut shards = Vec::with_capacity(list.len());
        for s in list {
            let shard = s
                .get("shard")
                .and_then(Value::as_u64)
                .ok_or("shard without \"shard\"")? as usize;
            let raft = s
                .get("raft")
                .ok_or_else(|| format!("shard {shard} without \"raft\""))?;
            let num = |name: &str| -> Result<u64, String> {
                raft.get(name)
                    .and_then(Value::as_u64)
                    .ok_or_else(|| format!("shard {shard}: missing raft.{name}"))
            };
            let ids = |name: &str| -> Vec<u64> {
                raft.get(name)
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default()
            };
            shards.push(ShardStatus {
                shard,
                leader: num("leader")?,
                role: raft
                    .get("role")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("shard {shard}: missing raft.role"))?
                    .to_string(),
                term: num("term")?,
                commit: num("commit")?,
                applied: num("applied")?,
                first_index: num("first_index").unwrap_or(0),
                last_index: num("last_index").unwrap_or(0),
                snapshot_index: num("snapshot_index").unwrap_or(0),
                voters: ids("voters"),
                learners: ids("learners"),
                keys: raft
                    .get("keys")
                    .or_else(|| s.get("keys"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
            });
        }
        Ok(Status {
            node_id,
            shards,
            raw: v.clone(),
        })
    }

    pub fn shard(&self, shard: usize) -> Option<&ShardStatus> {
        self.shards.iter().find(|s| s.shard == shard)
    }
}

/// `/kv/{key}` for a key.
pub fn kv_path(key: &str) -> String {
    format!("/kv/{}", encode_key(key))
}

/// Retries `f` until it returns `Ok` or the deadline passes; returns the last error then.
/// For steps that may meet a transient 503 (no leader yet) or a leader change.
pub fn retry<T>(timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("still failing after {timeout:?}: {e}"))
            }
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Prints how to rerun one test, so a failure in CI can be replayed.
pub fn print_replay(test_file: &str, test_name: &str, env: &str) {
    eprintln!(
        "replay: {env}cargo test --release -p mast --test {test_file} -- --exact {test_name} --nocapture"
    );
}
