//! `mast node`: a storage node agent that answers the master's admin tasks, for tests and
//! scale runs. It registers (`/admin/getIp`, then `/dataNode/add` or `/metaNode/add`,
//! following the leader across masters), listens on its admin task port for AdminTask
//! frames (acks async tasks at once and posts their answers to `/…/response`; answers
//! sync tasks on the connection), and executes tasks against a small durable state of its
//! own (partitions, peers, a fake disk). `--simulate N` runs N such nodes in one process,
//! node i on the listen port + i. Faults are injected through the control endpoint
//! (`--control ADDR`, see [`control`]) or, in-process, through [`AgentHandle::set_fault`].

pub mod client;
pub mod state;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use mast_http::{HttpMetrics, Limits, Method, Request, Response, Router, ShutdownSignal};
use monoio::net::TcpListener;
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::admintask::conn::FramedConn;
use crate::admintask::proto::{
    op, result, AdminTask, PartitionReport, Peer, Role, TaskReply, TaskRequest, TaskResponse,
    ADMIN_FRAME_BYTES_MAX,
};
use state::{NodeState, Partition, PARTITIONS_MAX};

/// Nodes one process simulates at most.
pub const SIMULATE_MAX: usize = 20_000;
/// Inbound admin connections per simulated node; more are closed at once.
pub const CONNECTIONS_PER_NODE_MAX: usize = 16;

/// Flags of `mast node`.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// Node kind: data or meta.
    #[arg(long)]
    pub role: String,
    /// Master HTTP addresses, comma-separated (ip:port,ip:port,...).
    #[arg(long)]
    pub master: String,
    /// Zone to register in.
    #[arg(long, default_value = "default")]
    pub zone: String,
    /// Admin task address of the (first) node; node i of --simulate listens on port + i.
    /// Port 0: any free port (kept across restarts through the state file).
    #[arg(long, default_value = "127.0.0.1:17310")]
    pub listen: SocketAddr,
    /// Nodes to run in this process.
    #[arg(long, default_value_t = 1)]
    pub simulate: usize,
    /// Directory of the nodes' state files (one subdirectory per node).
    #[arg(long, default_value = "./mast-node-data")]
    pub data_dir: PathBuf,
    /// Control endpoint (HTTP): GET /nodes, POST /fault?node=ADDR|all&mute=&no_answer=&fail=&slow_ms=&close=.
    #[arg(long)]
    pub control: Option<SocketAddr>,
    /// Fake capacity per node in GiB (disk for data nodes, memory for meta nodes).
    #[arg(long, default_value_t = 1024)]
    pub capacity_gb: u64,
    /// Partitions each node reports from its first start (for scale runs).
    #[arg(long, default_value_t = 0)]
    pub preload_partitions: usize,
}

/// The agent's settings (from [`NodeArgs`] or built by tests).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub role: Role,
    pub masters: Vec<String>,
    pub zone: String,
    pub listen: SocketAddr,
    pub simulate: usize,
    pub data_dir: PathBuf,
    pub control: Option<SocketAddr>,
    pub capacity_bytes: u64,
    pub preload_partitions: usize,
    /// Pause between registration rounds over all masters.
    pub register_retry_ms: u64,
    /// Deadline of each HTTP call to a master.
    pub http_timeout_ms: u64,
}

impl AgentConfig {
    /// Validates the flags.
    pub fn from_args(a: NodeArgs) -> Result<AgentConfig, String> {
        let role = match a.role.as_str() {
            "data" => Role::Data,
            "meta" => Role::Meta,
            other => return Err(format!("--role must be data or meta, not {other:?}")),
        };
        let masters: Vec<String> = a
            .master
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if masters.is_empty() {
            return Err("--master needs at least one address".into());
        }
        if a.simulate == 0 || a.simulate > SIMULATE_MAX {
            return Err(format!("--simulate must be 1..={SIMULATE_MAX}"));
        }
        if a.listen.port() != 0 && usize::from(a.listen.port()) + a.simulate - 1 > 65_535 {
            return Err("--listen port + --simulate exceeds 65535".into());
        }
        if a.preload_partitions > PARTITIONS_MAX {
            return Err(format!(
                "--preload-partitions must be at most {PARTITIONS_MAX}"
            ));
        }
        Ok(AgentConfig {
            role,
            masters,
            zone: a.zone,
            listen: a.listen,
            simulate: a.simulate,
            data_dir: a.data_dir,
            control: a.control,
            capacity_bytes: a.capacity_gb.saturating_mul(1 << 30),
            preload_partitions: a.preload_partitions,
            register_retry_ms: 2_000,
            http_timeout_ms: 5_000,
        })
    }
}

/// Faults injected into a node (or all nodes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Fault {
    /// Stop answering: frames are read and ignored, nothing is posted.
    pub mute: bool,
    /// The next `fail` tasks fail (sync: an OpErr reply; async: a failed answer).
    pub fail: u32,
    /// Delay before answering each task, in ms.
    pub slow_ms: u64,
    /// The next `close` tasks are not answered: their connection is closed.
    pub close: u32,
    /// Async tasks are acked but their answers never posted (sync ones still answered).
    pub no_answer: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct Decision {
    mute: bool,
    no_answer: bool,
    close: bool,
    fail: bool,
    slow_ms: u64,
}

/// Faults of every node, shared with the control endpoint and the test harness.
#[derive(Debug, Default)]
pub struct Faults {
    per_node: Mutex<HashMap<String, Fault>>,
}

impl Faults {
    pub fn set(&self, addr: &str, fault: Fault) {
        if let Ok(mut m) = self.per_node.lock() {
            m.insert(addr.to_string(), fault);
        }
    }

    pub fn get(&self, addr: &str) -> Fault {
        self.per_node
            .lock()
            .ok()
            .and_then(|m| m.get(addr).copied())
            .unwrap_or_default()
    }

    fn decide(&self, addr: &str) -> Decision {
        let Ok(mut m) = self.per_node.lock() else {
            return Decision::default();
        };
        let Some(f) = m.get_mut(addr) else {
            return Decision::default();
        };
        let mut d = Decision {
            mute: f.mute,
            no_answer: f.no_answer,
            slow_ms: f.slow_ms,
            ..Decision::default()
        };
        if d.mute {
            return d;
        }
        if f.close > 0 {
            f.close -= 1;
            d.close = true;
        } else if f.fail > 0 {
            f.fail -= 1;
            d.fail = true;
        }
        d
    }
}

/// What the harness and the control endpoint see of a node.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct NodeView {
    pub addr: String,
    pub node_id: u64,
    pub partitions: Vec<u64>,
    /// Tasks received (frames), answers posted, answers the master refused or missed.
    pub tasks_received: u64,
    pub answers_posted: u64,
    pub answers_failed: u64,
    pub fault: Fault,
}

type Views = Arc<Mutex<HashMap<String, NodeView>>>;

/// A running agent (its runtime thread).
pub struct AgentHandle {
    pub addrs: Vec<String>,
    faults: Arc<Faults>,
    views: Views,
    shutdown: ShutdownSignal,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AgentHandle {
    pub fn set_fault(&self, addr: &str, fault: Fault) {
        self.faults.set(addr, fault);
    }

    pub fn set_fault_all(&self, fault: Fault) {
        for a in &self.addrs {
            self.faults.set(a, fault);
        }
    }

    pub fn view(&self, addr: &str) -> Option<NodeView> {
        let mut v = self.views.lock().ok()?.get(addr).cloned()?;
        v.fault = self.faults.get(addr);
        Some(v)
    }

    /// Stops every node (their sockets close) and waits for the thread.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.shutdown.trigger();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// Starts the agent on a thread of its own; returns once every node listens.
pub fn start(config: AgentConfig) -> Result<AgentHandle, String> {
    let faults = Arc::new(Faults::default());
    let views: Views = Arc::new(Mutex::new(HashMap::new()));
    let shutdown = ShutdownSignal::new();
    let (tx, rx) = std::sync::mpsc::channel::<Result<Vec<String>, String>>();
    let (f, v, s) = (faults.clone(), views.clone(), shutdown.clone());
    let thread = std::thread::Builder::new()
        .name("mast-node".into())
        .spawn(move || {
            let tx2 = tx.clone();
            let r = crate::node::runtime::run_on_runtime(move |_| run(config, f, v, s, tx));
            if let Err(e) = r {
                let _ = tx2.send(Err(format!("cannot build runtime: {e}")));
            }
        })
        .map_err(|e| format!("cannot spawn the agent thread: {e}"))?;
    let addrs = match rx.recv() {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(e);
        }
        Err(_) => {
            let _ = thread.join();
            return Err("the agent thread stopped".into());
        }
    };
    Ok(AgentHandle {
        addrs,
        faults,
        views,
        shutdown,
        thread: Some(thread),
    })
}

/// `mast node`: runs until SIGINT/SIGTERM. Returns the exit code.
pub fn run_cli(args: NodeArgs) -> i32 {
    let config = match AgentConfig::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mast node: {e}");
            return 2;
        }
    };
    let handle = match start(config) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("mast node: {e}");
            return 1;
        }
    };
    info!(nodes = handle.addrs.len(), first = %handle.addrs.first().map(String::as_str).unwrap_or(""), "mast node running");
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]);
    match signals {
        Ok(mut s) => {
            let _ = s.forever().next();
        }
        Err(e) => {
            eprintln!("mast node: cannot install signal handlers: {e}");
            return 1;
        }
    }
    info!("mast node stopping");
    handle.stop();
    0
}

/// Writes state files on a thread of its own, so thousands of nodes' fsyncs never stall
/// the thread that answers the master.
struct Saver {
    jobs: std::sync::mpsc::Sender<SaveJob>,
}

type SaveJob = (
    PathBuf,
    Vec<u8>,
    futures_channel::oneshot::Sender<Result<(), String>>,
);

impl Saver {
    fn start() -> Result<Saver, String> {
        let (tx, rx) = std::sync::mpsc::channel::<SaveJob>();
        std::thread::Builder::new()
            .name("mast-node-saver".into())
            .spawn(move || {
                for (path, bytes, done) in rx {
                    let _ = done.send(state::write_durably(&path, &bytes));
                }
            })
            .map_err(|e| format!("cannot start the state writer: {e}"))?;
        Ok(Saver { jobs: tx })
    }

    /// Writes `state` to `path` durably; resolves once it is on disk.
    async fn save(&self, path: &std::path::Path, state: &NodeState) -> Result<(), String> {
        let bytes = serde_json::to_vec(state).map_err(|e| format!("encode state: {e}"))?;
        let (tx, rx) = futures_channel::oneshot::channel();
        self.jobs
            .send((path.to_path_buf(), bytes, tx))
            .map_err(|_| "the state writer stopped".to_string())?;
        rx.await
            .map_err(|_| "the state writer stopped".to_string())?
    }
}

struct SimNode {
    cfg: Rc<AgentConfig>,
    saver: Rc<Saver>,
    addr: String,
    state: RefCell<NodeState>,
    path: PathBuf,
    faults: Arc<Faults>,
    views: Views,
    /// The master that last sent a heartbeat (its `MasterAddr`): answers go there first.
    master_hint: RefCell<Option<String>>,
    /// Index in `cfg.masters` of the master that last answered.
    leader: Cell<usize>,
    conns: Cell<usize>,
    http: Rc<client::HttpPool>,
}

async fn run(
    config: AgentConfig,
    faults: Arc<Faults>,
    views: Views,
    shutdown: ShutdownSignal,
    ready: std::sync::mpsc::Sender<Result<Vec<String>, String>>,
) {
    let cfg = Rc::new(config);
    let http = Rc::new(client::HttpPool::default());
    let saver = match Saver::start() {
        Ok(s) => Rc::new(s),
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut nodes = Vec::with_capacity(cfg.simulate);
    let mut listeners = Vec::with_capacity(cfg.simulate);
    for i in 0..cfg.simulate {
        match open_node(&cfg, i, &faults, &views, &http, &saver) {
            Ok((node, l)) => {
                nodes.push(node);
                listeners.push(l);
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        }
    }
    let control = match cfg.control {
        Some(addr) => match TcpListener::bind(addr) {
            Ok(l) => Some(l),
            Err(e) => {
                let _ = ready.send(Err(format!("control endpoint {addr}: {e}")));
                return;
            }
        },
        None => None,
    };
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    for (node, listener) in nodes.into_iter().zip(listeners) {
        monoio::spawn(node.clone().register());
        monoio::spawn(node.accept_loop(listener));
    }
    if let Some(l) = control {
        let router = Rc::new(control::router(faults.clone(), views.clone()));
        monoio::spawn(mast_http::serve(
            l,
            router,
            Limits::default(),
            Rc::new(HttpMetrics::new()),
            shutdown.clone(),
        ));
    }
    let _ = ready.send(Ok(addrs));
    shutdown.wait().await;
}

/// How long a node waits for its address to be free at start: a process killed a moment
/// ago can hold its listeners a little longer while the kernel tears its io_uring down, and
/// a node that moved to another address would be a new node to the master.
const ADDR_FREE_WAIT_MS: u64 = 2_000;

fn bind_patiently(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let deadline = std::time::Instant::now() + Duration::from_millis(ADDR_FREE_WAIT_MS);
    loop {
        match TcpListener::bind(addr) {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

fn open_node(
    cfg: &Rc<AgentConfig>,
    i: usize,
    faults: &Arc<Faults>,
    views: &Views,
    http: &Rc<client::HttpPool>,
    saver: &Rc<Saver>,
) -> Result<(Rc<SimNode>, TcpListener), String> {
    let path = cfg.data_dir.join(format!("node-{i}")).join("state.json");
    let saved = NodeState::load(&path)?;
    let wanted = if cfg.listen.port() == 0 {
        saved
            .as_ref()
            .and_then(|s| s.addr.parse::<SocketAddr>().ok())
    } else {
        let port = u16::try_from(i)
            .ok()
            .and_then(|i| cfg.listen.port().checked_add(i))
            .ok_or_else(|| {
                format!(
                    "node {i}: listen port {} + {i} exceeds 65535",
                    cfg.listen.port()
                )
            })?;
        let mut a = cfg.listen;
        a.set_port(port);
        Some(a)
    };
    let listener = match wanted {
        Some(a) => bind_patiently(a).or_else(|e| {
            if cfg.listen.port() == 0 {
                TcpListener::bind(cfg.listen)
            } else {
                Err(e)
            }
        }),
        None => TcpListener::bind(cfg.listen),
    }
    .map_err(|e| format!("node {i}: cannot listen: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("node {i}: {e}"))?
        .to_string();
    let mut state = match saved {
        Some(s) => {
            if s.addr != addr || s.role != cfg.role.as_str() {
                // A different identity: registering it would duplicate a node.
                info!(node = i, old = %s.addr, new = %addr, "state file of another address or role; starting afresh");
                NodeState::new(
                    addr.clone(),
                    cfg.role.as_str(),
                    &cfg.zone,
                    cfg.capacity_bytes,
                )
            } else {
                s
            }
        }
        None => NodeState::new(
            addr.clone(),
            cfg.role.as_str(),
            &cfg.zone,
            cfg.capacity_bytes,
        ),
    };
    if state.partitions.is_empty() && cfg.preload_partitions > 0 {
        for p in 0..cfg.preload_partitions as u64 {
            let id = (i as u64) << 32 | (p + 1);
            state.partitions.insert(
                id,
                Partition {
                    vol_name: "preload".into(),
                    size: if cfg.role == Role::Data { 1 << 30 } else { 0 },
                    used: 1 << 20,
                    start: 0,
                    end: 0,
                    peers: vec![],
                    is_leader: p % 3 == 0,
                },
            );
        }
    }
    // Nothing to write yet: a fresh or preloaded state is rebuilt identically at the next
    // start until registration or a task changes it (then it is written, durably).
    if let Ok(mut v) = views.lock() {
        v.insert(
            addr.clone(),
            NodeView {
                addr: addr.clone(),
                node_id: state.node_id,
                partitions: state.partitions.keys().copied().collect(),
                ..NodeView::default()
            },
        );
    }
    let node = Rc::new(SimNode {
        cfg: cfg.clone(),
        saver: saver.clone(),
        addr,
        state: RefCell::new(state),
        path,
        faults: faults.clone(),
        views: views.clone(),
        master_hint: RefCell::new(None),
        leader: Cell::new(0),
        conns: Cell::new(0),
        http: http.clone(),
    });
    Ok((node, listener))
}

impl SimNode {
    fn view(&self, f: impl FnOnce(&mut NodeView)) {
        if let Ok(mut v) = self.views.lock() {
            if let Some(v) = v.get_mut(&self.addr) {
                f(v);
            }
        }
    }

    async fn save(&self) -> Result<(), String> {
        let snapshot = self.state.borrow().clone();
        self.saver.save(&self.path, &snapshot).await?;
        let ids: Vec<u64> = snapshot.partitions.keys().copied().collect();
        let node_id = snapshot.node_id;
        self.view(|v| {
            v.partitions = ids;
            v.node_id = node_id;
        });
        Ok(())
    }

    /// Masters in the order to try: the last one that answered first.
    fn masters(&self) -> Vec<(usize, String)> {
        let n = self.cfg.masters.len();
        (0..n)
            .map(|k| {
                let i = (self.leader.get() + k) % n;
                (i, self.cfg.masters[i].clone())
            })
            .collect()
    }

    async fn get(&self, master: &str, target: &str) -> Result<client::Envelope, String> {
        let timeout = Duration::from_millis(self.cfg.http_timeout_ms);
        let r = self.http.call(master, "GET", target, b"", timeout).await?;
        if r.status != 200 {
            return Err(format!(
                "{master}: HTTP {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        serde_json::from_slice(&r.body).map_err(|e| format!("{master}: not an envelope: {e}"))
    }

    /// §7 registration, until a master gives an ID (kept from an earlier run if any: the
    /// master answers the same ID for the same address).
    async fn register(self: Rc<Self>) {
        let (path, zone) = match self.cfg.role {
            Role::Data => ("/dataNode/add", "&mediaType=1"),
            Role::Meta => ("/metaNode/add", ""),
        };
        let target = format!(
            "{path}?addr={}&zoneName={}&heartbeatPort=&replicaPort={zone}&clientIDKey=",
            self.addr,
            self.state.borrow().zone
        );
        loop {
            for (i, master) in self.masters() {
                if let Err(e) = self.get(&master, "/admin/getIp").await {
                    debug!(node = %self.addr, error = %e, "getIp failed; next master");
                    continue;
                }
                match self.get(&master, &target).await {
                    Err(e) => {
                        debug!(node = %self.addr, error = %e, "registration failed; next master");
                        continue;
                    }
                    Ok(env) if env.code == 0 => {
                        let Some(id) = env.data.as_u64() else {
                            warn!(node = %self.addr, data = %env.data, "registration answer is not a bare number");
                            break;
                        };
                        self.leader.set(i);
                        self.state.borrow_mut().node_id = id;
                        if let Err(e) = self.save().await {
                            warn!(node = %self.addr, error = %e, "cannot save state");
                        }
                        info!(node = %self.addr, id, master = %master, "registered");
                        return;
                    }
                    Ok(env) => {
                        warn!(node = %self.addr, code = env.code, msg = %env.msg, "registration refused");
                        break;
                    }
                }
            }
            warn_rarely(&format!(
                "registration: no master of {:?} accepted {} (and maybe other nodes of this process); retrying",
                self.cfg.masters, self.addr
            ));
            monoio::time::sleep(Duration::from_millis(self.cfg.register_retry_ms)).await;
        }
    }

    async fn accept_loop(self: Rc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    if self.conns.get() >= CONNECTIONS_PER_NODE_MAX {
                        drop(stream);
                        continue;
                    }
                    self.conns.set(self.conns.get() + 1);
                    let me = self.clone();
                    monoio::spawn(async move {
                        me.serve_conn(FramedConn::new(stream, ADMIN_FRAME_BYTES_MAX))
                            .await;
                        me.conns.set(me.conns.get() - 1);
                    });
                }
                Err(e) => {
                    warn!(node = %self.addr, error = %e, "accept failed");
                    monoio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn serve_conn(self: &Rc<Self>, mut conn: FramedConn) {
        loop {
            let packet = match conn.read_packet().await {
                Ok(p) => p,
                Err(e) => {
                    debug!(node = %self.addr, error = %e, "admin connection closed");
                    return;
                }
            };
            self.view(|v| v.tasks_received += 1);
            let d = self.faults.decide(&self.addr);
            if d.mute {
                continue;
            }
            if d.close {
                return;
            }
            let mut task = packet.task;
            if let TaskRequest::Heartbeat { master_addr, .. } = &task.request {
                if !master_addr.is_empty() {
                    *self.master_hint.borrow_mut() = Some(master_addr.clone());
                }
            }
            if packet.sync {
                if d.slow_ms > 0 {
                    monoio::time::sleep(Duration::from_millis(d.slow_ms)).await;
                }
                let (code, data) = if d.fail {
                    (result::OP_ERR, "injected failure".to_string())
                } else {
                    let (code, data, _) = self.execute(&task).await;
                    (code, data)
                };
                let reply = TaskReply {
                    req_id: packet.req_id,
                    result_code: code,
                    data,
                };
                if conn.write_reply(&reply).await.is_err() {
                    return;
                }
            } else {
                let ack = TaskReply {
                    req_id: packet.req_id,
                    result_code: result::OP_OK,
                    data: String::new(),
                };
                if conn.write_reply(&ack).await.is_err() {
                    return;
                }
                if d.no_answer {
                    continue;
                }
                let me = self.clone();
                monoio::spawn(async move {
                    if d.slow_ms > 0 {
                        monoio::time::sleep(Duration::from_millis(d.slow_ms)).await;
                    }
                    let response = if d.fail {
                        TaskResponse::Generic {
                            status: 2,
                            result: "injected failure".into(),
                            partition_id: task.partition_id,
                        }
                    } else {
                        me.execute(&task).await.2
                    };
                    task.status = if response.status() == 1 { 1 } else { 2 };
                    task.response = Some(response);
                    me.post_answer(&task).await;
                });
            }
        }
    }

    /// Posts a finished async task to `/dataNode/response` or `/metaNode/response`: the
    /// master that sent the last heartbeat first, then every configured master.
    async fn post_answer(&self, task: &AdminTask) {
        let path = match self.cfg.role {
            Role::Data => "/dataNode/response",
            Role::Meta => "/metaNode/response",
        };
        let body = match crate::admintask::proto::answer_body(task) {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "cannot encode an answer");
                return;
            }
        };
        let timeout = Duration::from_millis(self.cfg.http_timeout_ms);
        let mut candidates: Vec<(Option<usize>, String)> = Vec::new();
        if let Some(h) = self.master_hint.borrow().clone() {
            candidates.push((None, h));
        }
        candidates.extend(self.masters().into_iter().map(|(i, m)| (Some(i), m)));
        for (i, master) in candidates {
            match self.http.call(&master, "POST", path, &body, timeout).await {
                Ok(r) if r.status == 200 => {
                    if let Some(i) = i {
                        self.leader.set(i);
                    }
                    let ok = serde_json::from_slice::<client::Envelope>(&r.body)
                        .map(|e| e.code == 0)
                        .unwrap_or(false);
                    self.view(|v| {
                        if ok {
                            v.answers_posted += 1
                        } else {
                            v.answers_failed += 1
                        }
                    });
                    return;
                }
                Ok(r) => debug!(master = %master, status = r.status, "answer refused; next master"),
                Err(e) => debug!(master = %master, error = %e, "answer not delivered; next master"),
            }
        }
        self.view(|v| v.answers_failed += 1);
    }

    /// Executes a task against the node's state: (result code, reply data, answer).
    async fn execute(&self, task: &AdminTask) -> (u8, String, TaskResponse) {
        let generic = |ok: bool, msg: String, pid: u64| TaskResponse::Generic {
            status: if ok { 1 } else { 2 },
            result: msg,
            partition_id: pid,
        };
        let outcome = |code: u8, msg: String, pid: u64| {
            let ok = code == result::OP_OK;
            (code, msg.clone(), generic(ok, msg, pid))
        };
        let mut changed = false;
        let r = {
            let mut s = self.state.borrow_mut();
            match &task.request {
                TaskRequest::Heartbeat { .. } => {
                    let meta = task.op_code == op::META_NODE_HEARTBEAT;
                    let reports: Vec<PartitionReport> = s
                        .partitions
                        .iter()
                        .map(|(id, p)| PartitionReport {
                            partition_id: *id,
                            vol_name: p.vol_name.clone(),
                            status: 2,
                            total: p.size,
                            used: p.used,
                            is_leader: p.is_leader,
                            end: p.end,
                            max_inode_id: if meta { p.start } else { 0 },
                        })
                        .collect();
                    let used = if meta {
                        (64u64 << 20).saturating_add(s.used_bytes())
                    } else {
                        s.used_bytes()
                    };
                    let available = s
                        .capacity_bytes
                        .saturating_sub(s.reserved_bytes().max(used));
                    (
                        result::OP_OK,
                        String::new(),
                        TaskResponse::Heartbeat {
                            status: 1,
                            result: String::new(),
                            total: s.capacity_bytes,
                            used,
                            available,
                            zone_name: s.zone.clone(),
                            partition_count: reports.len() as u64,
                            reports,
                        },
                    )
                }
                TaskRequest::CreatePartition {
                    partition_id,
                    vol_name,
                    partition_size,
                    start,
                    end,
                    members,
                } => {
                    if let Some(p) = s.partitions.get(partition_id) {
                        if &p.vol_name == vol_name {
                            outcome(result::OP_OK, disk_path(task), *partition_id)
                        } else {
                            outcome(
                                result::OP_EXIST_ERR,
                                format!("partition {partition_id} exists in vol {}", p.vol_name),
                                *partition_id,
                            )
                        }
                    } else if s.partitions.len() >= PARTITIONS_MAX
                        || s.reserved_bytes().saturating_add(*partition_size) > s.capacity_bytes
                    {
                        outcome(
                            result::OP_DISK_NO_SPACE_ERR,
                            "no space left on device".into(),
                            *partition_id,
                        )
                    } else {
                        let is_leader = members.first().is_some_and(|m| m.addr == s.addr);
                        s.partitions.insert(
                            *partition_id,
                            Partition {
                                vol_name: vol_name.clone(),
                                size: *partition_size,
                                used: 0,
                                start: *start,
                                end: *end,
                                peers: members.clone(),
                                is_leader,
                            },
                        );
                        changed = true;
                        outcome(result::OP_OK, disk_path(task), *partition_id)
                    }
                }
                TaskRequest::DeletePartition { partition_id } => {
                    changed = s.partitions.remove(partition_id).is_some();
                    outcome(result::OP_OK, String::new(), *partition_id)
                }
                TaskRequest::LoadPartition { partition_id } => match s.partitions.get(partition_id)
                {
                    Some(p) => outcome(
                        result::OP_OK,
                        serde_json::json!({"PartitionID": partition_id, "Used": p.used,
                            "VolName": p.vol_name})
                        .to_string(),
                        *partition_id,
                    ),
                    None => outcome(
                        result::OP_NOT_EXIST_ERR,
                        format!("partition {partition_id} not exists"),
                        *partition_id,
                    ),
                },
                TaskRequest::UpdateMetaPartition {
                    partition_id, end, ..
                } => match s.partitions.get_mut(partition_id) {
                    Some(p) => {
                        p.end = *end;
                        changed = true;
                        outcome(result::OP_OK, String::new(), *partition_id)
                    }
                    None => outcome(
                        result::OP_NOT_EXIST_ERR,
                        format!("partition {partition_id} not exists"),
                        *partition_id,
                    ),
                },
                TaskRequest::AddRaftMember { partition_id, peer }
                | TaskRequest::RemoveRaftMember { partition_id, peer } => {
                    let add = matches!(task.request, TaskRequest::AddRaftMember { .. });
                    match s.partitions.get_mut(partition_id) {
                        Some(p) => {
                            if add {
                                if !p.peers.iter().any(|x| x.addr == peer.addr) {
                                    p.peers.push(peer.clone());
                                }
                            } else {
                                p.peers.retain(|x| x.addr != peer.addr);
                            }
                            changed = true;
                            outcome(result::OP_OK, String::new(), *partition_id)
                        }
                        None => outcome(
                            result::OP_NOT_EXIST_ERR,
                            format!("partition {partition_id} not exists"),
                            *partition_id,
                        ),
                    }
                }
                TaskRequest::TryToLeader { partition_id } => {
                    match s.partitions.get_mut(partition_id) {
                        Some(p) => {
                            p.is_leader = true;
                            changed = true;
                            outcome(result::OP_OK, String::new(), *partition_id)
                        }
                        None => outcome(
                            result::OP_NOT_EXIST_ERR,
                            format!("partition {partition_id} not exists"),
                            *partition_id,
                        ),
                    }
                }
                TaskRequest::Json(_) => outcome(result::OP_OK, String::new(), task.partition_id),
            }
        };
        if changed {
            if let Err(e) = self.save().await {
                // Not durable: the master must not believe it happened.
                warn!(node = %self.addr, error = %e, "cannot save state");
                return outcome(
                    result::OP_ERR,
                    format!("cannot save state: {e}"),
                    task.partition_id,
                );
            }
        }
        r
    }
}

/// Logs a warning at most every 10 s per process: thousands of simulated nodes failing
/// the same way must not flood the log.
fn warn_rarely(msg: &str) {
    thread_local! {
        static LAST: Cell<Option<std::time::Instant>> = const { Cell::new(None) };
    }
    LAST.with(|last| {
        if last
            .get()
            .map_or(true, |t| t.elapsed() >= Duration::from_secs(10))
        {
            last.set(Some(std::time::Instant::now()));
            warn!("{msg}");
        }
    });
}

fn disk_path(task: &AdminTask) -> String {
    if task.op_code == op::CREATE_DATA_PARTITION {
        "/data/disk1".into()
    } else {
        String::new()
    }
}

/// A peer entry for tests.
pub fn peer(id: u64, addr: &str) -> Peer {
    Peer {
        id,
        addr: addr.to_string(),
    }
}

/// The control endpoint: `GET /nodes` (every node's [`NodeView`]) and
/// `POST /fault?node=ADDR|all&mute=true|false&no_answer=true|false&fail=N&slow_ms=N&close=N` (replaces that
/// node's fault; absent values are 0/false, so `POST /fault?node=all` clears everything).
pub mod control {
    use super::*;

    fn parse_fault(req: &Request) -> Result<Fault, String> {
        let num = |k: &str| -> Result<u64, String> {
            match req.query_param(k) {
                None => Ok(0),
                Some(v) if v.is_empty() => Ok(0),
                Some(v) => v.parse().map_err(|_| format!("{k}={v} is not a number")),
            }
        };
        let flag = |k: &str| -> Result<bool, String> {
            match req.query_param(k).as_deref() {
                None | Some("") | Some("false") | Some("0") => Ok(false),
                Some("true") | Some("1") => Ok(true),
                Some(v) => Err(format!("{k}={v} is not a boolean")),
            }
        };
        Ok(Fault {
            mute: flag("mute")?,
            no_answer: flag("no_answer")?,
            fail: u32::try_from(num("fail")?).map_err(|_| "fail is too large")?,
            slow_ms: num("slow_ms")?,
            close: u32::try_from(num("close")?).map_err(|_| "close is too large")?,
        })
    }

    pub fn router(faults: Arc<Faults>, views: Views) -> Router {
        let (f2, v2) = (faults.clone(), views.clone());
        Router::new()
            .route(Method::GET, "/nodes", move |_req: Request| {
                let mut list: Vec<NodeView> = v2
                    .lock()
                    .map(|m| m.values().cloned().collect())
                    .unwrap_or_default();
                for v in &mut list {
                    v.fault = f2.get(&v.addr);
                }
                list.sort_by(|a, b| a.addr.cmp(&b.addr));
                async move { Response::json(200, &list) }
            })
            .route(Method::POST, "/fault", move |req: Request| {
                let r = match parse_fault(&req) {
                    Err(e) => Response::error(400, "bad_request", &e),
                    Ok(fault) => {
                        let node = req.query_param("node").map(|n| n.into_owned());
                        let all: Vec<String> = views
                            .lock()
                            .map(|m| m.keys().cloned().collect())
                            .unwrap_or_default();
                        match node.as_deref() {
                            None | Some("all") => {
                                for a in &all {
                                    faults.set(a, fault);
                                }
                                Response::json(200, &serde_json::json!({"nodes": all.len()}))
                            }
                            Some(n) if all.iter().any(|a| a == n) => {
                                faults.set(n, fault);
                                Response::json(200, &serde_json::json!({"nodes": 1}))
                            }
                            Some(n) => Response::error(404, "not_found", &format!("no node {n}")),
                        }
                    }
                };
                async move { r }
            })
    }
}
