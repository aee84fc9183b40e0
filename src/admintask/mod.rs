//! The CubeFS master's admin task manager ("communication module", reference §7–§8):
//! heartbeats, per-node liveness and usage, and the sync and async paths that carry admin
//! tasks to data and meta nodes as rkyv frames over io_uring sockets.
//!
//! - [`proto`]: the AdminTask (rkyv + CubeFS's JSON form), opcodes, statuses, frames;
//! - [`taskmap`]: the per-node async task map (pure, explicit clock);
//! - [`live`]: liveness and usage in leader memory (pure, explicit clock);
//! - [`conn`]: framed connections, the idle pool, the send path;
//! - [`metrics`]: per-opcode counters rendered for `/metrics`;
//! - [`http`]: `/dataNode/response` and `/metaNode/response`.
//!
//! **Where it runs.** Every shard has one [`AdminTasks`]. A node's liveness, usage and task
//! map live on the shard its address hashes to (`crate::placement::owner_shard(addr)`),
//! so heartbeat work spreads over all shards. Only the **master** drives: the node that
//! leads raft group 0 (the cluster-wide leader, which leader affinity also makes the leader
//! of every other group in steady state). Each shard asks shard 0 at every tick whether
//! this node leads group 0; when it starts driving (a leader change, or start-up) every
//! node it knows keeps its state and gets a whole `inactive_after_ms` before being judged.
//! The set of nodes comes from a caller-supplied [`NodeSource`] (the replicated registry).

pub mod conn;
pub mod http;
pub mod live;
pub mod metrics;
pub mod proto;
pub mod taskmap;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

pub use conn::TaskError;
pub use live::{LiveTable, NodeLive};
pub use metrics::{MetricsSnapshot, OpCounters};
pub use proto::{AdminTask, Answer, JsonAdminTask, Role, TaskRequest, TaskResponse};
pub use taskmap::Pushed;

use conn::{ConnPool, SendOptions};
use proto::{op, TaskPacket};
use taskmap::{TaskMap, TaskMapLimits};

/// Bumped whenever any shard's liveness table changes in a way a node listing shows (a node
/// turning active or inactive, joining or leaving): part of the key of the cached listings
/// (`crate::cubefs::cache`). Process-wide; servers sharing a process only rebuild more often.
static LIVE_EPOCH: AtomicU64 = AtomicU64::new(0);

/// The current liveness epoch (see [`LIVE_EPOCH`]).
pub fn live_epoch() -> u64 {
    LIVE_EPOCH.load(Ordering::SeqCst)
}

/// Every interval and limit of the manager. Defaults are CubeFS's (reference §4).
#[derive(Debug, Clone)]
pub struct AdminTaskConfig {
    /// How often each node's async map is drained.
    pub sender_tick_ms: u64,
    /// How often every node gets a heartbeat task.
    pub heartbeat_interval_ms: u64,
    /// A round's heartbeats go out in slices this far apart, spread over the first
    /// `heartbeat_spread_percent` of the interval, so answers arrive as a steady stream and
    /// the routes sharing the shard never queue behind thousands of them.
    pub heartbeat_slice_ms: u64,
    pub heartbeat_spread_percent: u64,
    /// A node silent this long is inactive (3 heartbeat intervals).
    pub inactive_after_ms: u64,
    /// Async tasks sent per node per tick.
    pub tasks_per_tick_max: usize,
    /// An unanswered async task is sent again after this long.
    pub resend_after_ms: u64,
    /// Sends of an async task before it is dropped.
    pub sends_max: u8,
    /// An async task unanswered this long after queueing is dropped.
    pub drop_after_ms: u64,
    /// Async tasks waiting per node; further ones are refused (counted dropped).
    pub tasks_per_node_max: usize,
    pub connect_timeout_ms: u64,
    /// Attempts to write a task, `write_retry_ms` apart.
    pub write_attempts: u32,
    pub write_retry_ms: u64,
    /// How long a sync task waits for the node's result.
    pub sync_reply_timeout_ms: u64,
    /// How long an async send waits for the node's ack.
    pub ack_timeout_ms: u64,
    /// Idle pooled connections are closed after this long.
    pub idle_conn_timeout_ms: u64,
    pub idle_conns_per_node_max: usize,
    /// Nodes being sent to at once per shard; the others wait for the next tick.
    pub senders_in_flight_max: usize,
    /// Largest admin frame either way, header included.
    pub frame_bytes_max: usize,
    /// The master's HTTP address put in heartbeat requests (`MasterAddr`): where nodes
    /// post their answers.
    pub master_addr: String,
}

impl Default for AdminTaskConfig {
    fn default() -> Self {
        AdminTaskConfig {
            sender_tick_ms: 2_000,
            heartbeat_interval_ms: 6_000,
            heartbeat_slice_ms: 20,
            heartbeat_spread_percent: 80,
            inactive_after_ms: 18_000,
            tasks_per_tick_max: 30,
            resend_after_ms: 5_000,
            sends_max: 5,
            drop_after_ms: 100_000,
            tasks_per_node_max: 1_024,
            connect_timeout_ms: 10_000,
            write_attempts: 3,
            write_retry_ms: 100,
            sync_reply_timeout_ms: 30_000,
            ack_timeout_ms: 5_000,
            idle_conn_timeout_ms: 90_000,
            idle_conns_per_node_max: 1,
            senders_in_flight_max: 8_192,
            frame_bytes_max: proto::ADMIN_FRAME_BYTES_MAX,
            master_addr: String::new(),
        }
    }
}

impl AdminTaskConfig {
    /// The server's config: defaults, with the master's HTTP address as `MasterAddr`.
    pub fn for_master(http_addr: std::net::SocketAddr) -> AdminTaskConfig {
        AdminTaskConfig {
            master_addr: http_addr.to_string(),
            ..AdminTaskConfig::default()
        }
    }

    /// Every interval and limit with its name, for `/metrics`.
    pub fn named_limits(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("sender_tick_ms", self.sender_tick_ms),
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("heartbeat_slice_ms", self.heartbeat_slice_ms),
            ("heartbeat_spread_percent", self.heartbeat_spread_percent),
            ("inactive_after_ms", self.inactive_after_ms),
            ("tasks_per_tick_max", self.tasks_per_tick_max as u64),
            ("resend_after_ms", self.resend_after_ms),
            ("sends_max", u64::from(self.sends_max)),
            ("drop_after_ms", self.drop_after_ms),
            ("tasks_per_node_max", self.tasks_per_node_max as u64),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("write_attempts", u64::from(self.write_attempts)),
            ("write_retry_ms", self.write_retry_ms),
            ("sync_reply_timeout_ms", self.sync_reply_timeout_ms),
            ("ack_timeout_ms", self.ack_timeout_ms),
            ("idle_conn_timeout_ms", self.idle_conn_timeout_ms),
            (
                "idle_conns_per_node_max",
                self.idle_conns_per_node_max as u64,
            ),
            ("senders_in_flight_max", self.senders_in_flight_max as u64),
            ("frame_bytes_max", self.frame_bytes_max as u64),
        ]
    }

    fn limits(&self) -> TaskMapLimits {
        TaskMapLimits {
            tasks_per_tick_max: self.tasks_per_tick_max,
            resend_after_ms: self.resend_after_ms,
            sends_max: self.sends_max,
            drop_after_ms: self.drop_after_ms,
            tasks_per_node_max: self.tasks_per_node_max,
        }
    }

    fn send_options(&self, sync: bool) -> SendOptions {
        SendOptions {
            connect_timeout_ms: self.connect_timeout_ms,
            write_attempts: self.write_attempts,
            write_retry_ms: self.write_retry_ms,
            reply_timeout_ms: if sync {
                self.sync_reply_timeout_ms
            } else {
                self.ack_timeout_ms
            },
            frame_bytes_max: self.frame_bytes_max,
        }
    }
}

/// A registered node as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRef {
    pub id: u64,
    /// `ip:port` of the node's admin task port (the address it registered).
    pub addr: String,
    pub role: Role,
    /// The zone the registry has it in ("" if unknown).
    pub zone: String,
}

/// Boxed future of a [`NodeSource`]: the nodes, or why they could not be listed (the
/// manager then keeps driving the nodes it knows).
pub type NodesFuture = Pin<Box<dyn Future<Output = Result<Vec<NodeRef>, String>>>>;

/// Where the manager learns which nodes exist: called once per heartbeat round on each
/// driving shard; may list every node (each shard keeps only the ones it owns).
pub trait NodeSource {
    fn nodes(&self) -> NodesFuture;
}

impl<F: Fn() -> NodesFuture> NodeSource for F {
    fn nodes(&self) -> NodesFuture {
        self()
    }
}

/// A node source holding a list the owner sets (tests, tools).
#[derive(Default)]
pub struct ListSource {
    pub nodes: RefCell<Vec<NodeRef>>,
}

impl NodeSource for Rc<ListSource> {
    fn nodes(&self) -> NodesFuture {
        let list = self.nodes.borrow().clone();
        Box::pin(async move { Ok(list) })
    }
}

/// Called with every task answer received, after liveness is updated (so the partition
/// logic can apply load/delete/update results). A heartbeat's partition reports have been
/// moved into the liveness table by then: read them there ([`AdminTasks::with_live`]).
pub type ResponseHook = Rc<dyn Fn(&Answer)>;

/// What `/…/response` made of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered {
    /// Applied; `was_queued` says whether the task was still in the node's map.
    Applied { was_queued: bool },
    /// This shard is not driving: the sender should try the master.
    NotMaster,
}

/// How many of a round's `total` heartbeats, `left` of them not sent yet, go out now,
/// `elapsed_ms` into a round spread over `spread_ms`: enough that the round has sent its
/// share of the time elapsed, so a late wake-up catches up and the last one is out by the
/// end of the spread.
fn slice_len(total: usize, left: usize, elapsed_ms: u64, spread_ms: u64) -> usize {
    let spread_ms = spread_ms.max(1);
    let elapsed = elapsed_ms.min(spread_ms);
    let should_be_sent = (total as u64 * elapsed).div_ceil(spread_ms) as usize;
    let sent = total.saturating_sub(left);
    should_be_sent
        .saturating_sub(sent)
        .max(HEARTBEAT_SLICE_MIN)
        .min(left)
}

/// The fewest heartbeats a slice sends (while any are left). Pacing is for thousands of
/// nodes; a small cluster's round goes out at once instead of one node every second, so a node
/// that just registered is heard from (and placeable) within one slice, not seconds later.
/// Below the pace of a large round (~21 per 20 ms slice for 5,000 nodes over 4.8 s), so it
/// does not bunch large rounds up.
const HEARTBEAT_SLICE_MIN: usize = 16;

/// One shard's admin task manager.
pub struct AdminTasks {
    pub config: AdminTaskConfig,
    shard: usize,
    shards: usize,
    epoch: Instant,
    live: RefCell<LiveTable>,
    tasks: RefCell<HashMap<String, TaskMap<AdminTask>>>,
    sending: RefCell<std::collections::HashSet<String>>,
    counters: RefCell<BTreeMap<u8, OpCounters>>,
    pool: ConnPool,
    source: RefCell<Option<Rc<dyn NodeSource>>>,
    hook: RefCell<Option<ResponseHook>>,
    driving: Cell<bool>,
    next_heartbeat_ms: Cell<u64>,
    heartbeat_rounds: Cell<u64>,
    heartbeat_lag_ms: Cell<u64>,
    heartbeat_gap_max_ms: Cell<u64>,
    /// The current round's nodes whose heartbeat is not queued yet, in send order.
    round: RefCell<Round>,
    /// `LiveTable::changes` when last published to [`LIVE_EPOCH`].
    published_changes: Cell<u64>,
}

/// A heartbeat round being paced out (see `heartbeat_slice_ms`).
#[derive(Default)]
struct Round {
    start_ms: u64,
    nodes: std::collections::VecDeque<(String, Role)>,
    total: usize,
}

fn unix_now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl AdminTasks {
    /// The manager of shard `shard` of `shards`.
    pub fn new(config: AdminTaskConfig, shard: usize, shards: usize) -> Rc<AdminTasks> {
        let pool = ConnPool::new(config.idle_conns_per_node_max, config.idle_conn_timeout_ms);
        Rc::new(AdminTasks {
            config,
            shard,
            shards: shards.max(1),
            epoch: Instant::now(),
            live: RefCell::new(LiveTable::new()),
            tasks: RefCell::new(HashMap::new()),
            sending: RefCell::new(Default::default()),
            counters: RefCell::new(BTreeMap::new()),
            pool,
            source: RefCell::new(None),
            hook: RefCell::new(None),
            driving: Cell::new(false),
            next_heartbeat_ms: Cell::new(0),
            heartbeat_rounds: Cell::new(0),
            heartbeat_lag_ms: Cell::new(0),
            heartbeat_gap_max_ms: Cell::new(0),
            round: RefCell::new(Round::default()),
            published_changes: Cell::new(0),
        })
    }

    /// Sets where the registered nodes come from.
    pub fn set_node_source(&self, source: Rc<dyn NodeSource>) {
        *self.source.borrow_mut() = Some(source);
    }

    /// Sets the hook every answer is passed to.
    pub fn set_response_hook(&self, hook: ResponseHook) {
        *self.hook.borrow_mut() = Some(hook);
    }

    /// True when `addr`'s liveness and tasks live on this shard.
    pub fn owns(&self, addr: &str) -> bool {
        crate::placement::owner_shard(addr, self.shards) == self.shard
    }

    /// Publishes a change of the liveness table to [`LIVE_EPOCH`].
    fn publish_changes(&self) {
        let changes = self.live.borrow().changes();
        if self.published_changes.replace(changes) != changes {
            LIVE_EPOCH.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn is_driving(&self) -> bool {
        self.driving.get()
    }

    /// A node's liveness and usage (this shard must own `addr`).
    pub fn live(&self, addr: &str) -> Option<NodeLive> {
        self.live.borrow().get(addr).cloned()
    }

    /// Reads a node's liveness in place: the registry's routes list thousands of nodes, and
    /// cloning each one's partition reports would dominate them.
    pub fn with_live<R>(&self, addr: &str, f: impl FnOnce(&NodeLive) -> R) -> Option<R> {
        self.live.borrow().get(addr).map(f)
    }

    /// Every node this shard keeps.
    pub fn all_live(&self) -> Vec<NodeLive> {
        self.live.borrow().all().cloned().collect()
    }

    /// Async tasks waiting for `addr`.
    pub fn pending(&self, addr: &str) -> usize {
        self.tasks.borrow().get(addr).map_or(0, |m| m.len())
    }

    /// Whether a task ID is queued.
    pub fn is_queued(&self, addr: &str, id: &str) -> bool {
        self.tasks
            .borrow()
            .get(addr)
            .is_some_and(|m| m.contains(id))
    }

    fn count(&self, op_code: u8, f: impl FnOnce(&mut OpCounters)) {
        f(self.counters.borrow_mut().entry(op_code).or_default());
    }

    pub fn counters(&self, op_code: u8) -> OpCounters {
        self.counters
            .borrow()
            .get(&op_code)
            .copied()
            .unwrap_or_default()
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        let live = self.live.borrow();
        MetricsSnapshot {
            per_op: self.counters.borrow().clone(),
            nodes_tracked: live.len() as u64,
            nodes_active: live.active_count() as u64,
            tasks_pending: self.tasks.borrow().values().map(|m| m.len() as u64).sum(),
            driving: self.driving.get(),
            heartbeat_rounds: self.heartbeat_rounds.get(),
            heartbeat_lag_ms: self.heartbeat_lag_ms.get(),
            heartbeat_gap_max_ms: self.heartbeat_gap_max_ms.get(),
        }
    }

    /// Queues an async task for `task.operator_addr` (deduplicated by ID). The task is sent
    /// at the next tick and its answer arrives through `/…/response`.
    pub fn queue(&self, task: AdminTask) -> Pushed {
        if !self.driving.get() {
            return Pushed::NotMaster;
        }
        let op_code = task.op_code;
        let now = self.now_ms();
        let limits = self.config.limits();
        let pushed = self
            .tasks
            .borrow_mut()
            .entry(task.operator_addr.clone())
            .or_insert_with(|| TaskMap::new(limits))
            .push(&task.id.clone(), op_code, task, now);
        match pushed {
            Pushed::Queued => self.count(op_code, |c| c.queued += 1),
            Pushed::Full => self.count(op_code, |c| c.dropped += 1),
            Pushed::Duplicate | Pushed::NotMaster => {}
        }
        pushed
    }

    /// Sends a task and waits for the node's result (CubeFS's `syncSendAdminTask`): the
    /// reply's data on OpOk, else the error.
    pub async fn send_sync(&self, task: AdminTask) -> Result<String, TaskError> {
        let op_code = task.op_code;
        self.count(op_code, |c| c.queued += 1);
        let addr = task.operator_addr.clone();
        let packet = TaskPacket {
            req_id: 0,
            sync: true,
            task,
        };
        match self
            .pool
            .send(&addr, packet, self.config.send_options(true))
            .await
        {
            Ok(reply) => {
                self.count(op_code, |c| {
                    c.sent += 1;
                    c.acked += 1;
                });
                Ok(reply.data)
            }
            Err(e) => {
                self.count(op_code, |c| {
                    if matches!(e, TaskError::Failed { .. }) {
                        c.sent += 1;
                    }
                    c.failed += 1;
                });
                Err(e)
            }
        }
    }

    /// Applies a node's answer (the JSON AdminTask it posted, decoded).
    pub fn answer(&self, mut task: Answer) -> Answered {
        if !self.driving.get() {
            return Answered::NotMaster;
        }
        let was_queued = self
            .tasks
            .borrow_mut()
            .get_mut(&task.operator_addr)
            .and_then(|m| m.complete(&task.id))
            .is_some();
        if op::is_heartbeat(task.op_code) {
            self.live.borrow_mut().apply_heartbeat(
                &task.operator_addr,
                &mut task.response,
                self.now_ms(),
                unix_now_s(),
            );
            self.publish_changes();
        }
        self.count(task.op_code, |c| {
            if task.response.status() == 1 {
                c.acked += 1;
            } else {
                c.failed += 1;
            }
        });
        let hook = self.hook.borrow().clone();
        if let Some(hook) = hook {
            hook(&task);
        }
        Answered::Applied { was_queued }
    }

    /// One tick: follow driving changes, run a heartbeat round when due, hand out due
    /// tasks. `driving` says whether this node is the master now.
    pub async fn tick(self: &Rc<Self>, driving: bool) {
        let now = self.now_ms();
        if !driving {
            if self.driving.replace(false) {
                info!(
                    shard = self.shard,
                    "admin tasks: no longer the master; async tasks discarded"
                );
                let mut tasks = self.tasks.borrow_mut();
                for m in tasks.values_mut() {
                    let plan = m.tick(u64::MAX);
                    for (_, code) in plan.dropped {
                        self.count(code, |c| c.dropped += 1);
                    }
                }
                tasks.clear();
                *self.round.borrow_mut() = Round::default();
                LIVE_EPOCH.fetch_add(1, Ordering::SeqCst);
            }
            return;
        }
        let takeover = !self.driving.replace(true);
        if takeover {
            info!(
                shard = self.shard,
                "admin tasks: this node is the master; driving heartbeats"
            );
            self.live.borrow_mut().takeover(now);
            self.next_heartbeat_ms.set(now);
            LIVE_EPOCH.fetch_add(1, Ordering::SeqCst);
        }
        let due_ms = self.next_heartbeat_ms.get();
        if now >= due_ms {
            self.heartbeat_lag_ms.set(now - due_ms);
            // Rounds keep their cadence (a node's heartbeats stay one interval apart) unless
            // this one is a whole interval late.
            let next = due_ms + self.config.heartbeat_interval_ms;
            self.next_heartbeat_ms.set(if next > now {
                next
            } else {
                now + self.config.heartbeat_interval_ms
            });
            self.heartbeat_round(now, takeover).await;
        }
        self.send_due();
        self.pool.sweep(|_| true);
    }

    async fn heartbeat_round(self: &Rc<Self>, now: u64, takeover: bool) {
        let source = self.source.borrow().clone();
        let listed = match source {
            Some(s) => s.nodes().await,
            None => Ok(Vec::new()),
        };
        // The source may have taken a while: judge with the time now.
        let now = now.max(self.now_ms());
        let mine: Vec<(String, u64, Role, String)> = match listed {
            Ok(nodes) => {
                let mine: Vec<_> = nodes
                    .into_iter()
                    .filter(|n| self.owns(&n.addr))
                    .map(|n| (n.addr, n.id, n.role, n.zone))
                    .collect();
                let removed = self.live.borrow_mut().sync(&mine, now, takeover);
                for addr in removed {
                    if let Some(mut m) = self.tasks.borrow_mut().remove(&addr) {
                        for (_, code) in m.tick(u64::MAX).dropped {
                            self.count(code, |c| c.dropped += 1);
                        }
                    }
                }
                mine
            }
            Err(e) => {
                warn!(shard = self.shard, error = %e, "cannot list the registered nodes; heartbeating the known ones");
                self.live
                    .borrow()
                    .all()
                    .filter_map(|l| {
                        Some((l.addr.clone(), l.id, l.role?, l.zone_registered.clone()))
                    })
                    .collect()
            }
        };
        let gone = self
            .live
            .borrow_mut()
            .judge(now, self.config.inactive_after_ms);
        for addr in gone {
            warn!(shard = self.shard, node = %addr, "node inactive: no heartbeat answer");
        }
        self.publish_changes();
        let left = self.round.borrow().nodes.len();
        if left > 0 {
            // The previous round could not go out in time: those nodes are in this one.
            warn!(
                shard = self.shard,
                nodes = left,
                "heartbeat round started before the previous one was sent"
            );
        }
        self.heartbeat_gap_max_ms
            .set(self.live.borrow_mut().take_gap_max_ms());
        let total = mine.len();
        *self.round.borrow_mut() = Round {
            start_ms: now,
            nodes: mine.into_iter().map(|(a, _, r, _)| (a, r)).collect(),
            total,
        };
        self.heartbeat_rounds.set(self.heartbeat_rounds.get() + 1);
        debug!(shard = self.shard, nodes = total, "heartbeat round");
        self.heartbeat_slice();
    }

    /// Queues and sends the heartbeats of the round that are due by now: the round's nodes
    /// in proportion to the time elapsed of its spread (a late wake-up catches up).
    fn heartbeat_slice(self: &Rc<Self>) {
        if !self.driving.get() {
            return;
        }
        let now = self.now_ms();
        let spread_ms = (self.config.heartbeat_interval_ms
            * self.config.heartbeat_spread_percent.clamp(1, 100)
            / 100)
            .max(1);
        let due: Vec<(String, Role)> = {
            let mut round = self.round.borrow_mut();
            let n = slice_len(
                round.total,
                round.nodes.len(),
                now.saturating_sub(round.start_ms),
                spread_ms,
            );
            round.nodes.drain(..n).collect()
        };
        if due.is_empty() {
            return;
        }
        let unix = unix_now_s();
        for (addr, role) in &due {
            let task = AdminTask::new(
                role.heartbeat_op(),
                addr,
                None,
                TaskRequest::Heartbeat {
                    curr_time: unix,
                    master_addr: self.config.master_addr.clone(),
                },
                unix,
            );
            self.queue(task);
        }
        self.send_due_of(due.iter().map(|(a, _)| a.as_str()));
    }

    fn send_due(self: &Rc<Self>) {
        let addrs: Vec<String> = self.tasks.borrow().keys().cloned().collect();
        self.send_due_of(addrs.iter().map(String::as_str));
        self.tasks.borrow_mut().retain(|_, m| !m.is_empty());
    }

    /// Hands out the due tasks of `addrs` (one sender per node at a time).
    fn send_due_of<'a>(self: &Rc<Self>, addrs: impl Iterator<Item = &'a str>) {
        let now = self.now_ms();
        let mut batches = Vec::new();
        {
            let mut tasks = self.tasks.borrow_mut();
            let mut sending = self.sending.borrow_mut();
            for addr in addrs {
                if sending.len() >= self.config.senders_in_flight_max {
                    break;
                }
                if sending.contains(addr) {
                    continue;
                }
                let Some(m) = tasks.get_mut(addr) else {
                    continue;
                };
                let plan = m.tick(now);
                for (id, code) in plan.dropped {
                    debug!(node = %addr, task = %id, "admin task dropped unanswered");
                    self.count(code, |c| c.dropped += 1);
                }
                if !plan.send.is_empty() {
                    sending.insert(addr.to_string());
                    batches.push((addr.to_string(), plan.send));
                }
            }
        }
        for (addr, due) in batches {
            let me = self.clone();
            monoio::spawn(async move {
                me.send_batch(&addr, due).await;
                me.sending.borrow_mut().remove(&addr);
            });
        }
    }

    async fn send_batch(&self, addr: &str, due: Vec<taskmap::Due<AdminTask>>) {
        let opts = self.config.send_options(false);
        let mut due = due.into_iter();
        while let Some(d) = due.next() {
            let mut task = d.task.clone();
            task.send_count = d.sends.saturating_add(1);
            task.send_time = unix_now_s();
            let op_code = task.op_code;
            let packet = TaskPacket {
                req_id: 0,
                sync: false,
                task,
            };
            match self.pool.send(addr, packet, opts).await {
                Ok(_) => self.count(op_code, |c| c.sent += 1),
                Err(e) => {
                    self.count(op_code, |c| c.failed += 1);
                    debug!(node = %addr, error = %e, "admin task send failed");
                    if matches!(e, TaskError::Failed { .. }) {
                        continue;
                    }
                    // The node is unreachable: the rest of the batch would fail the same
                    // way after as many timeouts. It did not go out, so it is not a send.
                    if let Some(m) = self.tasks.borrow_mut().get_mut(addr) {
                        for rest in due.by_ref() {
                            m.unsend(&rest);
                        }
                    }
                    return;
                }
            }
        }
    }

    /// Runs ticks forever (until `stop` says so), asking `driving` before each.
    pub async fn run<D, Fut>(self: Rc<Self>, mut driving: D, stop: impl Fn() -> bool)
    where
        D: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let tick_ms = self.config.sender_tick_ms.max(1);
        let slice_ms = self.config.heartbeat_slice_ms.clamp(1, tick_ms);
        let mut next_tick_ms = 0;
        loop {
            if stop() {
                return;
            }
            let now = self.now_ms();
            // A heartbeat round starts when due, not at the next sender tick: a node's
            // heartbeats would otherwise drift up to a tick apart from one interval.
            let round_due = self.driving.get() && now >= self.next_heartbeat_ms.get();
            if now >= next_tick_ms || round_due {
                let d = driving().await;
                self.tick(d).await;
                next_tick_ms = self.now_ms() + tick_ms;
            }
            self.heartbeat_slice();
            let wait_ms = next_tick_ms
                .saturating_sub(self.now_ms())
                .clamp(1, slice_ms);
            monoio::time::sleep(Duration::from_millis(wait_ms)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Glue to the server's shards.

use crate::node::shard::Shard;

/// The shard's tick loop: this node drives when it leads group 0. Runs until the shard's
/// group closes.
pub async fn run_shard(shard: Rc<Shard>) {
    let tasks = shard.admin_tasks.clone();
    let me = shard.clone();
    let closed = shard.clone();
    tasks
        .run(
            move || {
                let me = me.clone();
                async move {
                    me.run_on(0, |s: Rc<Shard>| async move { s.group.is_leader() })
                        .await
                        .unwrap_or(false)
                }
            },
            move || closed.group.is_closed(),
        )
        .await;
}

/// Connects this shard's manager to the CubeFS registry (`crate::cubefs`): the registered
/// nodes this shard owns are its node source, and a heartbeat reporting another zone than
/// the registry's moves the node there (§7). Holds the shard weakly (the shard owns the
/// manager).
pub fn wire_registry(shard: &Rc<Shard>) {
    use crate::meta::cubefs::NodeRole;
    let weak = Rc::downgrade(shard);
    let source = move || -> NodesFuture {
        let weak = weak.clone();
        Box::pin(async move {
            let me = weak.upgrade().ok_or_else(|| "shard stopped".to_string())?;
            let nodes = crate::cubefs::live::registered_nodes(&me, Some(me.id))
                .await
                .map_err(|e| e.to_string())?;
            Ok(nodes
                .into_iter()
                .map(|n| NodeRef {
                    id: n.id,
                    addr: n.addr,
                    role: match n.role {
                        NodeRole::Data => Role::Data,
                        NodeRole::Meta => Role::Meta,
                    },
                    zone: n.zone,
                })
                .collect())
        })
    };
    shard.admin_tasks.set_node_source(Rc::new(source));
    let weak = Rc::downgrade(shard);
    shard
        .admin_tasks
        .set_response_hook(Rc::new(move |task: &Answer| {
            let TaskResponse::Heartbeat {
                status: 1,
                zone_name,
                ..
            } = &task.response
            else {
                return;
            };
            let Some(me) = weak.upgrade() else { return };
            let addr = task.operator_addr.clone();
            // Only what the check needs: cloning the node's partition reports on every
            // heartbeat would cost more than the rest of the answer.
            let Some((registered, role)) = me.admin_tasks.with_live(&addr, |l| {
                (
                    (!zone_name.is_empty()
                        && !l.zone_registered.is_empty()
                        && l.zone_registered != *zone_name)
                        .then(|| l.zone_registered.clone()),
                    l.role,
                )
            }) else {
                return;
            };
            let Some(registered) = registered else {
                return;
            };
            let role = match role {
                Some(Role::Meta) => NodeRole::Meta,
                _ => NodeRole::Data,
            };
            // Asked once: the next listing says whether it took.
            me.admin_tasks
                .live
                .borrow_mut()
                .set_zone_registered(&addr, zone_name);
            let zone = zone_name.clone();
            info!(node = %addr, from = %registered, to = %zone, "node reports another zone; moving it");
            monoio::spawn(async move {
                match crate::cubefs::live::move_node_zone(&me, role, &addr, &zone).await {
                    Ok(outcome) => debug!(node = %addr, ?outcome, "zone move"),
                    Err(e) => warn!(node = %addr, error = %e, "zone move failed"),
                }
            });
        }));
}

/// A node's liveness from any shard: hops to the shard owning `addr`.
pub async fn live_of(shard: &Rc<Shard>, addr: &str) -> Option<NodeLive> {
    let owner = crate::placement::owner_shard(addr, shard.mesh.shards());
    let addr = addr.to_string();
    shard
        .run_on(owner, move |s: Rc<Shard>| async move {
            s.admin_tasks.live(&addr)
        })
        .await
        .ok()
        .flatten()
}

/// Queues an async task from any shard: hops to the shard owning its node's address.
pub async fn queue_from(shard: &Rc<Shard>, task: AdminTask) -> Pushed {
    let owner = crate::placement::owner_shard(&task.operator_addr, shard.mesh.shards());
    shard
        .run_on(owner, move |s: Rc<Shard>| async move {
            s.admin_tasks.queue(task)
        })
        .await
        .unwrap_or(Pushed::NotMaster)
}

/// Sends a sync task from any shard (on the shard owning its node's address, whose
/// connection pool it uses) and waits for the node's result.
pub async fn send_sync_from(shard: &Rc<Shard>, task: AdminTask) -> Result<String, TaskError> {
    let owner = crate::placement::owner_shard(&task.operator_addr, shard.mesh.shards());
    let addr = task.operator_addr.clone();
    shard
        .run_on(owner, move |s: Rc<Shard>| async move {
            s.admin_tasks.send_sync(task).await
        })
        .await
        .unwrap_or_else(|e| {
            Err(TaskError::Write {
                addr,
                attempts: 0,
                reason: format!("shard {owner} unavailable: {e}"),
            })
        })
}

/// `/metrics` text of every shard's admin task counters. Call from the node's metrics
/// handler and append to its output.
pub async fn metrics_text(shard: &Rc<Shard>) -> String {
    let mut snaps = Vec::new();
    for k in 0..shard.mesh.shards() {
        if let Ok(m) = shard
            .run_on(k, |s: Rc<Shard>| async move { s.admin_tasks.metrics() })
            .await
        {
            snaps.push(m);
        }
    }
    metrics::render(&snaps, &shard.admin_tasks.config.named_limits())
}

#[cfg(test)]
mod tests {
    use super::slice_len;

    #[test]
    fn a_round_is_spread_over_its_window_and_catches_up() {
        // 5,000 nodes over 4,800 ms in 20 ms wake-ups: ~21 per wake-up, all out by the end.
        let (total, spread) = (5_000, 4_800);
        let mut left = total;
        let mut most = 0;
        for t in (0..=spread).step_by(20) {
            let n = slice_len(total, left, t, spread);
            most = most.max(n);
            left -= n;
        }
        assert_eq!(left, 0);
        assert!(most <= 21, "{most} in one wake-up");
        // The floor at the start, then a late wake-up sends the whole backlog at once.
        assert_eq!(slice_len(total, total, 0, spread), 16);
        assert_eq!(slice_len(total, total, 2_400, spread), 2_500);
        assert_eq!(slice_len(total, 10, 9_999, spread), 10);
        assert_eq!(slice_len(0, 0, 100, spread), 0);
        assert_eq!(slice_len(3, 3, 1, 0), 3, "a zero spread sends at once");
        // A small cluster's round goes out in its first slice.
        assert_eq!(slice_len(12, 12, 0, spread), 12);
    }
}
