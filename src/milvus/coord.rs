//! The root coordinator's data-path services (issue #12): sessions of tenants, proxies, data
//! and query nodes (design §10.4.1) and the per-channel time tick barriers (design §10.5,
//! reference §4), served as `POST /v2/rootcoord/<name>`.
//!
//! Everything lives on group 0. What is where, and why:
//! - **Replicated** (`crate::meta::milvus::coord`): session registrations and removals, and
//!   each channel's durable barrier values.
//! - **Leader memory** (`CoordMemory`, on shard 0 of the node leading group 0): keep-alive
//!   deadlines (`session::Liveness`) and every producer's latest ticks (`timetick::Barriers`).
//!   Ticks arrive at thousands per second; replicating each would make the log the
//!   bottleneck for no gain, since a lost tick is superseded by the next one 200 ms later.
//! - A background loop on the leader (`background_loop`) recomputes the barriers every
//!   `FLUSH_INTERVAL_MS` and proposes what moved as one `Marks` entry; only once it applied
//!   are the values visible (watchers, reads). No one ever sees a value that is not durable,
//!   and a new leader starts every barrier from the durable value, so barriers never go
//!   backwards across leader changes. The price is one raft round of latency per advance.
//! - The same loop syncs the memory with the replicated sessions (a new session gets a full
//!   TTL; a removed producer stops holding the hard barrier), proposes the removal of expired
//!   sessions, and feeds the DDL source: every `DDL_TICK_INTERVAL_MS` it ticks every shard's
//!   DDL clock (as the DD channel does, `crate::milvus::dd`) and reports the minimum `W`;
//!   no DDL at or below `W` can still apply, so the hard barrier never passes an unfinished
//!   DDL.
//! - A new leader (a new term) rebuilds the memory after a read barrier: barriers from the
//!   durable marks, every session a full TTL, every producer "not reported yet" (so the hard
//!   barrier waits for each producer's next report before moving).
//!
//! Requests that need the memory (keep-alive, tick reports, stats) reaching a node that does
//! not lead group 0 are relayed once to the leader's HTTP address.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use mast_http::{body_channel, Method, Request, Response, Router, SendError};
use serde_json::{json, Value};
use tracing::{info, warn};

use super::body::*;
use super::segment::{
    estimate_row_bytes, max_rows, ms_to_ts, Allocator, SegInfo, SegState, ASSIGNMENT_EXPIRATION_MS,
    SEAL_PROPORTION, SEGMENT_MAX_SIZE_MB,
};
use super::session::{Liveness, SESSION_TTL_DEFAULT_MS};
use super::timetick::{Barriers, TickError, REPORT_CHANNELS_MAX};
use super::{group_err, mesh_failed, service_err};
use crate::cubefs::proxy::{relay, Relayed, FORWARDED_HEADER};
use crate::meta::milvus::coord::{
    ChannelMarks, CoordCommand, Mark, SegmentMeta, Session, ROLES, SESSION_TTL_MAX_MS,
};
use crate::meta::milvus::{Command, Outcome};
use crate::meta::{MetaCommand, MetaOutcome};
use crate::node::shard::Shard;
use crate::services::ServiceCall;

/// How often the leader recomputes barriers and persists what moved.
pub const FLUSH_INTERVAL_MS: u64 = 5;
/// How often the leader syncs liveness with the replicated sessions and expires sessions.
pub const SYNC_INTERVAL_MS: u64 = 100;
/// How often the DDL source ticks (Milvus's `proxy.timeTickInterval`, 200 ms).
pub const DDL_TICK_INTERVAL_MS: u64 = 200;
/// A watcher's fallback poll (followers are not woken by the leader's flushes).
pub const WATCH_POLL_INTERVAL_MS: u64 = 20;
/// Barrier watchers one shard serves.
pub const WATCHERS_PER_SHARD_MAX: usize = 256;
/// Bytes a watcher's client may leave unread before the watcher is closed.
pub const WATCHER_BUFFER_BYTES_MAX: usize = 1024 * 1024;
/// The soft barrier's `minTtInterval` (the 2020 master's configuration: 0).
pub const MIN_TT_INTERVAL: u64 = 0;
/// Longest address / channel name a registration may carry.
pub const NAME_BYTES_MAX: usize = 256;
/// Roles that produce time ticks (and so take part in the barriers).
pub const PRODUCER_ROLES: [&str; 2] = ["proxy", "datanode"];

fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

struct Memory {
    /// The term this memory was built in; a new term rebuilds it.
    term: u64,
    barriers: Barriers,
    live: Liveness,
    /// Segment grants (`segment.rs`).
    alloc: Allocator,
    /// (collection, partition) → max rows per segment, once looked up.
    max_rows: HashMap<(u64, u64), u64>,
}

/// Counters of the leader memory (since this process started).
#[derive(Default)]
struct Counters {
    reports: Cell<u64>,
    refused: Cell<u64>,
    expired: Cell<u64>,
    marks: Cell<u64>,
    rebuilds: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// Shard 0's coordinator memory and the barrier watchers' wakeups.
#[derive(Default)]
pub struct CoordMemory {
    mem: RefCell<Option<Memory>>,
    wakers: RefCell<Vec<oneshot::Sender<()>>>,
    /// Barrier watchers this shard serves.
    watchers: Cell<usize>,
    counters: Counters,
}

impl CoordMemory {
    fn register_waker(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut list = self.wakers.borrow_mut();
        list.retain(|t| !t.is_canceled());
        list.push(tx);
        rx
    }

    fn wake(&self) {
        for tx in std::mem::take(&mut *self.wakers.borrow_mut()) {
            let _ = tx.send(());
        }
    }

    fn reset(&self) {
        self.mem.borrow_mut().take();
    }
}

fn not_ready(why: &str) -> MErr {
    MErr::new(
        CODE_NOT_READY,
        format!("service not ready[state code: StandBy]: {why}; retry"),
    )
}

fn is_producer(role: &str) -> bool {
    PRODUCER_ROLES.contains(&role)
}

/// Builds the memory for the current term if it is not (after a read barrier, so the state
/// holds everything earlier leaders committed). Shard 0 only.
async fn ensure_memory(s0: &Rc<Shard>) -> MResult<()> {
    if !s0.group.is_leader() {
        return Err(not_ready("this node does not lead the coordinator group"));
    }
    let term = s0.group.raft_status().term;
    if matches!(&*s0.milvus_coord.mem.borrow(), Some(m) if m.term == term) {
        return Ok(());
    }
    s0.group.read_barrier().await.map_err(group_err)?;
    if !s0.group.is_leader() || s0.group.raft_status().term != term {
        return Err(not_ready("leadership changed"));
    }
    if matches!(&*s0.milvus_coord.mem.borrow(), Some(m) if m.term == term) {
        return Ok(());
    }
    // Every grant an earlier leader issued carries a timestamp below this one.
    let fresh = tso(s0).await?;
    if matches!(&*s0.milvus_coord.mem.borrow(), Some(m) if m.term == term) {
        return Ok(());
    }
    let now = now_ms();
    let mem = {
        let st = s0.group.state();
        let c = &st.milvus_coord;
        let mut barriers = Barriers::new(MIN_TT_INTERVAL);
        barriers.require_ddl();
        for (name, m) in &c.channels {
            barriers.set_floor(name, m.soft, m.hard);
        }
        for s in c.sessions.values().filter(|s| is_producer(&s.role)) {
            barriers.add_producer(s.id);
        }
        let mut live = Liveness::default();
        live.sync(c.sessions.values().map(|s| (s.id, s.ttl_ms)), now);
        let alloc = Allocator::take_over(
            c.segments.values().map(seg_info).collect(),
            fresh,
            ms_to_ts(ASSIGNMENT_EXPIRATION_MS),
        );
        Memory {
            term,
            barriers,
            live,
            alloc,
            max_rows: HashMap::new(),
        }
    };
    info!(
        term,
        sessions = mem.live.len(),
        channels = mem.barriers.channel_count(),
        "milvus coordinator: leader memory rebuilt; every session has a full TTL"
    );
    bump(&s0.milvus_coord.counters.rebuilds);
    *s0.milvus_coord.mem.borrow_mut() = Some(mem);
    Ok(())
}

async fn tso(s: &Rc<Shard>) -> MResult<u64> {
    Ok(
        crate::services::api::call(s.clone(), ServiceCall::Tso { count: 1 })
            .await
            .map_err(service_err)?
            .first,
    )
}

fn seg_state(name: &str) -> SegState {
    match name {
        "Growing" => SegState::Growing,
        "Sealed" => SegState::Sealed,
        "Flushing" => SegState::Flushing,
        "Flushed" => SegState::Flushed,
        _ => SegState::Dropped,
    }
}

fn seg_info(m: &SegmentMeta) -> SegInfo {
    SegInfo {
        id: m.id,
        collection: m.collection,
        partition: m.partition,
        channel: m.channel.clone(),
        max_rows: m.max_rows,
        rows: m.rows,
        state: seg_state(&m.state),
    }
}

async fn propose(s: &Rc<Shard>, cmd: CoordCommand) -> MResult<Outcome> {
    match s
        .group
        .propose(&MetaCommand::Milvus(Command::Coord(Box::new(cmd))))
        .await
    {
        Ok(MetaOutcome::Milvus(Outcome::Error { code, message })) => Err(MErr::new(code, message)),
        Ok(MetaOutcome::Milvus(o)) => Ok(o),
        Ok(other) => Err(MErr::new(
            CODE_UNEXPECTED,
            format!("unexpected outcome {other:?}"),
        )),
        Err(e) => Err(group_err(e)),
    }
}

/// Liveness and producers follow the replicated sessions; expired sessions are removed.
async fn sync_and_expire(s0: &Rc<Shard>) {
    let now = now_ms();
    let expired = {
        let st = s0.group.state();
        let sessions = &st.milvus_coord.sessions;
        let mut slot = s0.milvus_coord.mem.borrow_mut();
        let Some(m) = slot.as_mut() else { return };
        m.live
            .sync(sessions.values().map(|s| (s.id, s.ttl_ms)), now);
        for id in m.barriers.producer_ids() {
            if !sessions.contains_key(&id) {
                m.barriers.remove_producer(id);
            }
        }
        for s in sessions.values().filter(|s| is_producer(&s.role)) {
            m.barriers.add_producer(s.id);
        }
        m.live.expired(now)
    };
    for id in expired {
        match propose(s0, CoordCommand::Remove { id, expired: true }).await {
            Ok(Outcome::Done) => {
                bump(&s0.milvus_coord.counters.expired);
                warn!(
                    id,
                    "milvus coordinator: session expired without a keep-alive; removed (it no longer holds the hard barrier)"
                );
                if let Some(m) = s0.milvus_coord.mem.borrow_mut().as_mut() {
                    m.barriers.remove_producer(id);
                    m.live.forget(id);
                }
            }
            Ok(_) => {}
            Err(e) => {
                warn!(id, code = e.code, %e.message, "milvus coordinator: could not remove an expired session");
                return;
            }
        }
    }
}

/// Recomputes the barriers and makes what moved durable, then wakes the watchers.
async fn flush(s0: &Rc<Shard>) {
    let pending = {
        let mut slot = s0.milvus_coord.mem.borrow_mut();
        let Some(m) = slot.as_mut() else { return };
        m.barriers.advance();
        m.barriers.take_pending()
    };
    if pending.is_empty() {
        return;
    }
    let marks = pending
        .into_iter()
        .map(|p| Mark {
            channel: p.channel,
            soft: p.soft.unwrap_or(0),
            hard: p.hard,
        })
        .collect();
    match propose(s0, CoordCommand::Marks { marks }).await {
        Ok(_) => {
            bump(&s0.milvus_coord.counters.marks);
            s0.milvus_coord.wake();
        }
        Err(e) => {
            // The values never became visible; rebuild from what is durable.
            warn!(code = e.code, %e.message, "milvus coordinator: barrier values not persisted; rebuilding the leader memory");
            s0.milvus_coord.reset();
        }
    }
}

/// The DDL clock: ticks every shard's DDL table with a fresh timestamp and returns the
/// minimum of their clocks, below which no DDL can still apply (`crate::milvus::dd`).
async fn ddl_clock(s0: &Rc<Shard>) -> MResult<u64> {
    let mut w = u64::MAX;
    for k in 0..s0.mesh.shards() {
        let clock = s0
            .run_on(k, |s: Rc<Shard>| async move {
                let ts = crate::services::api::call(s.clone(), ServiceCall::Tso { count: 1 })
                    .await
                    .map_err(service_err)?
                    .first;
                s.group
                    .propose(&MetaCommand::Milvus(Command::Tick { ts }))
                    .await
                    .map_err(group_err)?;
                let clock = s.group.state().milvus.last_ts;
                MResult::Ok(clock)
            })
            .await
            .map_err(|_| mesh_failed())??;
        w = w.min(clock);
    }
    Ok(w)
}

async fn ddl_loop(s0: Rc<Shard>) {
    loop {
        monoio::time::sleep(Duration::from_millis(DDL_TICK_INTERVAL_MS)).await;
        if s0.group.is_closed() {
            return;
        }
        let term = match &*s0.milvus_coord.mem.borrow() {
            Some(m) if m.barriers.producers() > 0 => m.term,
            _ => continue,
        };
        match ddl_clock(&s0).await {
            Ok(w) => {
                if let Some(m) = s0.milvus_coord.mem.borrow_mut().as_mut() {
                    if m.term == term {
                        m.barriers.report_ddl(w);
                    }
                }
            }
            Err(e) => {
                warn!(code = e.code, %e.message, "milvus coordinator: DDL source tick failed")
            }
        }
    }
}

/// Shard 0's coordinator loop (spawned by the server on shard 0 of every node; it acts only
/// while this node leads group 0).
pub async fn background_loop(me: Rc<Shard>) {
    if me.id != 0 {
        return;
    }
    monoio::spawn(ddl_loop(me.clone()));
    let mut last_sync = 0u64;
    let mut config_term = None;
    loop {
        monoio::time::sleep(Duration::from_millis(FLUSH_INTERVAL_MS)).await;
        if me.group.is_closed() {
            return;
        }
        if !me.group.is_leader() {
            me.milvus_coord.reset();
            monoio::time::sleep(Duration::from_millis(SYNC_INTERVAL_MS)).await;
            continue;
        }
        if ensure_memory(&me).await.is_err() {
            continue;
        }
        let term = me.group.raft_status().term;
        if config_term != Some(term) && propose_config(&me).await {
            config_term = Some(term);
        }
        if now_ms().saturating_sub(last_sync) >= SYNC_INTERVAL_MS {
            last_sync = now_ms();
            sync_and_expire(&me).await;
        }
        flush(&me).await;
    }
}

/// Proposes `--milvus-config` when it differs from the replicated one; false: try again.
async fn propose_config(s0: &Rc<Shard>) -> bool {
    let Some(entries) = super::sysconfig::loaded() else {
        return true;
    };
    if let Err(e) = s0.group.read_barrier().await {
        warn!("milvus config: read barrier failed: {e:?}");
        return false;
    }
    let version = {
        let st = s0.group.state();
        if st.milvus_coord.config.entries == *entries {
            return true;
        }
        st.milvus_coord.config.version + 1
    };
    let cmd = CoordCommand::SetConfig {
        version,
        entries: entries
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    match propose(s0, cmd).await {
        Ok(_) => {
            info!(version, keys = entries.len(), "milvus config replicated");
            true
        }
        Err(e) => {
            warn!("milvus config: proposal failed: {}", e.message);
            false
        }
    }
}

/// A `u64` of the replicated Milvus configuration, or `default`.
fn setting(s0: &Rc<Shard>, key: &str, default: u64) -> u64 {
    super::sysconfig::u64_or(&s0.group.state().milvus_coord.config.entries, key, default)
}

/// Where a request needing the leader memory goes.
enum Served {
    Here(MResult<Value>),
    Relay(Option<String>),
}

/// Runs `f` with the leader memory on shard 0 if this node leads group 0; otherwise relays
/// the request (once) to the node that does.
async fn on_leader<F, Fut>(me: Rc<Shard>, req: Request, f: F) -> Response
where
    F: FnOnce(Rc<Shard>, Body) -> Fut + Send + 'static,
    Fut: Future<Output = MResult<Value>> + 'static,
{
    let body = match Body::parse(req.body()) {
        Ok(b) => b,
        Err(e) => return e.response(),
    };
    let forwarded = req.header(FORWARDED_HEADER).is_some();
    let served = me
        .run_on(0, move |s0: Rc<Shard>| async move {
            if s0.group.is_leader() || forwarded {
                if let Err(e) = ensure_memory(&s0).await {
                    return Served::Here(Err(e));
                }
                return Served::Here(f(s0, body).await);
            }
            let leader = s0.group.leader();
            Served::Relay(s0.group.members().get(&leader).map(|m| m.http_addr.clone()))
        })
        .await;
    match served {
        Err(_) => mesh_failed().response(),
        Ok(Served::Here(Ok(v))) => ok(v),
        Ok(Served::Here(Err(e))) => e.response(),
        Ok(Served::Relay(addr)) => {
            let Some(addr) = addr.and_then(|a| a.parse::<SocketAddr>().ok()) else {
                return not_ready("no leader is known for the coordinator group").response();
            };
            match relay(addr, Relayed::of(&req)).await {
                Ok(r) => r,
                Err(e) => not_ready(&format!("relay to the leader failed: {e}")).response(),
            }
        }
    }
}

fn id_req(b: &Body) -> MResult<i64> {
    b.int_opt("serverID")?.ok_or_else(|| required("serverID"))
}

fn u64_of(v: &Value, what: &str) -> MResult<u64> {
    v.as_u64()
        .ok_or_else(|| MErr::invalid(format!("{what} must be a non-negative integer")))
}

fn check_name(what: &str, s: &str) -> MResult<()> {
    if s.len() > NAME_BYTES_MAX {
        return Err(MErr::invalid(format!(
            "{what} is {} bytes, longer than {NAME_BYTES_MAX}",
            s.len()
        )));
    }
    Ok(())
}

/// `sessions/register`: `{serverID, role, address?, channelNames?, queryChannelName?,
/// numQueryNodes?, ttlSeconds?}`.
async fn register(me: Rc<Shard>, req: Request) -> MResult<Value> {
    let b = Body::parse(req.body())?;
    let id = id_req(&b)?;
    let role = b.str_req("role")?.to_lowercase();
    if !ROLES.contains(&role.as_str()) {
        return Err(MErr::invalid(format!(
            "role {role:?} is not one of {ROLES:?}"
        )));
    }
    let address = b.str_or_empty("address")?;
    check_name("address", &address)?;
    let channels = b.strings_opt("channelNames")?.unwrap_or_default();
    if channels.len() > REPORT_CHANNELS_MAX {
        return Err(MErr::invalid(format!(
            "{} channelNames, more than {REPORT_CHANNELS_MAX}",
            channels.len()
        )));
    }
    for c in &channels {
        check_name("a channel name", c)?;
    }
    let query_channel = b.str_or_empty("queryChannelName")?;
    check_name("queryChannelName", &query_channel)?;
    let num_query_nodes = b.int_opt("numQueryNodes")?.unwrap_or(0);
    let ttl_ms = match b.int_opt("ttlSeconds")? {
        None => SESSION_TTL_DEFAULT_MS,
        Some(s) if s >= 1 && (s as u64) * 1000 <= SESSION_TTL_MAX_MS => s as u64 * 1000,
        Some(s) => {
            return Err(MErr::invalid(format!(
                "ttlSeconds {s} is outside 1..={}",
                SESSION_TTL_MAX_MS / 1000
            )))
        }
    };
    let out = me
        .run_on(0, move |s0: Rc<Shard>| async move {
            let ts = crate::services::api::call(s0.clone(), ServiceCall::Tso { count: 1 })
                .await
                .map_err(service_err)?
                .first;
            let session = Session {
                id,
                role,
                address,
                channels,
                query_channel,
                num_query_nodes: num_query_nodes.max(0) as u64,
                ttl_ms,
                registered_ts: ts,
            };
            propose(&s0, CoordCommand::Register { session }).await
        })
        .await
        .map_err(|_| mesh_failed())??;
    Ok(json!({"serverID": id, "ttlMs": ttl_ms, "changed": out == Outcome::Done}))
}

/// `sessions/leave`: `{serverID}`.
async fn leave(me: Rc<Shard>, req: Request) -> MResult<Value> {
    let id = id_req(&Body::parse(req.body())?)?;
    let out = me
        .run_on(0, move |s0: Rc<Shard>| async move {
            let out = propose(&s0, CoordCommand::Remove { id, expired: false }).await?;
            // Stop holding the barriers now rather than at the next sync (when this node
            // leads; otherwise the leader's sync catches up within `SYNC_INTERVAL_MS`).
            if let Some(m) = s0.milvus_coord.mem.borrow_mut().as_mut() {
                m.barriers.remove_producer(id);
                m.live.forget(id);
            }
            MResult::Ok(out)
        })
        .await
        .map_err(|_| mesh_failed())??;
    Ok(json!({"serverID": id, "removed": out == Outcome::Done}))
}

fn session_json(s: &Session) -> Value {
    json!({
        "serverID": s.id,
        "role": s.role,
        "address": s.address,
        "channelNames": s.channels,
        "queryChannelName": s.query_channel,
        "numQueryNodes": s.num_query_nodes,
        "ttlMs": s.ttl_ms,
        "registeredTimestamp": s.registered_ts,
    })
}

/// `sessions/list`: `{role?}`, linearizable.
async fn list(me: Rc<Shard>, req: Request) -> MResult<Value> {
    let role = Body::parse(req.body())?.str_opt("role")?;
    me.run_on(0, move |s0: Rc<Shard>| async move {
        s0.group.read_barrier().await.map_err(group_err)?;
        let st = s0.group.state();
        let sessions: Vec<Value> = st
            .milvus_coord
            .sessions
            .values()
            .filter(|s| {
                role.as_deref()
                    .map_or(true, |r| s.role.eq_ignore_ascii_case(r))
            })
            .map(session_json)
            .collect();
        Ok(json!({"sessions": sessions, "expiredTotal": st.milvus_coord.expired_total}))
    })
    .await
    .map_err(|_| mesh_failed())?
}

/// `sessions/keep_alive`: `{serverID}` (leader memory).
async fn keep_alive(s0: Rc<Shard>, b: Body) -> MResult<Value> {
    let id = id_req(&b)?;
    let now = now_ms();
    let touched = |s0: &Shard| {
        s0.milvus_coord
            .mem
            .borrow_mut()
            .as_mut()
            .and_then(|m| m.live.touch(id, now).then(|| m.live.remaining_ms(id, now)))
            .flatten()
    };
    let mut left = touched(&s0);
    if left.is_none() {
        // Registered since the last sync: look at the replicated sessions now.
        s0.group.read_barrier().await.map_err(group_err)?;
        if s0.group.state().milvus_coord.sessions.contains_key(&id) {
            sync_and_expire(&s0).await;
            left = touched(&s0);
        }
    }
    match left {
        Some(ms) => Ok(json!({"serverID": id, "ttlRemainingMs": ms})),
        None => Err(MErr::invalid(format!(
            "session {id} is not registered (it left or expired); register it again"
        ))),
    }
}

/// `update_channel_time_tick` (`internal.ChannelTimeTickMsg`): `{base?: {msgType,
/// sourceID}, sourceID?, channelNames[], timestamps[], defaultTimestamp}`.
async fn update_tick(s0: Rc<Shard>, b: Body) -> MResult<Value> {
    let base = b.object_opt("base")?;
    if let Some(base) = &base {
        if let Some(t) = base.str_opt("msgType")? {
            if t != "TimeTick" {
                return Err(MErr::invalid(format!(
                    "msgType is {t}, a time tick report must be TimeTick"
                )));
            }
        }
    }
    let source = match b.int_opt("sourceID")? {
        Some(s) => s,
        None => base
            .as_ref()
            .map(|b| b.int_opt("sourceID"))
            .transpose()?
            .flatten()
            .ok_or_else(|| required("sourceID"))?,
    };
    let names = b.strings_opt("channelNames")?.unwrap_or_default();
    let timestamps = b
        .array_opt("timestamps")?
        .unwrap_or_default()
        .iter()
        .map(|v| u64_of(v, "a timestamp"))
        .collect::<MResult<Vec<u64>>>()?;
    let default = match b.get("defaultTimestamp") {
        Some(v) => u64_of(v, "defaultTimestamp")?,
        None => return Err(required("defaultTimestamp")),
    };
    let c = &s0.milvus_coord.counters;
    let report = |s0: &Shard| match s0.milvus_coord.mem.borrow_mut().as_mut() {
        Some(m) => Ok(m.barriers.report(source, &names, &timestamps, default)),
        None => Err(not_ready("the coordinator memory is being rebuilt")),
    };
    let mut r = report(&s0)?;
    if r == Err(TickError::UnknownProducer(source)) {
        // Registered since the last sync: look at the replicated sessions now.
        s0.group.read_barrier().await.map_err(group_err)?;
        let registered = s0
            .group
            .state()
            .milvus_coord
            .sessions
            .get(&source)
            .is_some_and(|s| is_producer(&s.role));
        if registered {
            if let Some(m) = s0.milvus_coord.mem.borrow_mut().as_mut() {
                m.barriers.add_producer(source);
            }
            r = report(&s0)?;
        }
    }
    match r {
        Ok(()) => {
            bump(&c.reports);
            Ok(json!({}))
        }
        Err(e) => {
            bump(&c.refused);
            Err(MErr::invalid(e))
        }
    }
}

/// `time_tick/stats` (leader memory).
async fn stats(s0: Rc<Shard>, _b: Body) -> MResult<Value> {
    let c = &s0.milvus_coord.counters;
    let mem = s0.milvus_coord.mem.borrow();
    let Some(m) = mem.as_ref() else {
        return Err(not_ready("the coordinator memory is being rebuilt"));
    };
    Ok(json!({
        "term": m.term,
        "producers": m.barriers.producers(),
        "sessionsTracked": m.live.len(),
        "channels": m.barriers.channel_count(),
        "reportsTotal": c.reports.get(),
        "refusedTotal": c.refused.get(),
        "expiredTotal": c.expired.get(),
        "marksPersistedTotal": c.marks.get(),
        "rebuildsTotal": c.rebuilds.get(),
        "hardCoalescedTotal": m.barriers.hard_coalesced,
    }))
}

fn channel_req(b: &Body) -> MResult<String> {
    let c = b.str_req("channelName")?;
    check_name("channelName", &c)?;
    Ok(c)
}

/// `time_tick/get`: `{channelName}` → both barriers' durable values, linearizable.
async fn get(me: Rc<Shard>, req: Request) -> MResult<Value> {
    let channel = channel_req(&Body::parse(req.body())?)?;
    me.run_on(0, move |s0: Rc<Shard>| async move {
        s0.group.read_barrier().await.map_err(group_err)?;
        let st = s0.group.state();
        let (soft, hard) = st
            .milvus_coord
            .channels
            .get(&channel)
            .map_or((0, 0), |c| (c.soft, c.hard));
        Ok(json!({"channelName": channel, "soft": soft, "hard": hard}))
    })
    .await
    .map_err(|_| mesh_failed())?
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Soft,
    Hard,
}

/// What a watcher sends next: values above `after`, or how far behind it fell.
fn next_values(c: Option<&ChannelMarks>, which: Which, after: u64) -> Result<Vec<u64>, u64> {
    let Some(c) = c else { return Ok(Vec::new()) };
    match which {
        Which::Soft => Ok(if c.soft > after {
            vec![c.soft]
        } else {
            Vec::new()
        }),
        Which::Hard => {
            if after < c.evicted {
                return Err(c.evicted);
            }
            Ok(c.history.iter().copied().filter(|&h| h > after).collect())
        }
    }
}

fn line(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

/// Reads a channel's next values from shard 0's replica (no read barrier: the values are
/// durable and only grow, so a lagging follower is late, never wrong) and leaves a wakeup.
async fn watch_poll(
    me: &Rc<Shard>,
    channel: String,
    which: Which,
    after: Option<u64>,
) -> Result<(Result<Vec<u64>, u64>, u64, oneshot::Receiver<()>), MErr> {
    me.run_on(0, move |s0: Rc<Shard>| async move {
        let st = s0.group.state();
        let c = st.milvus_coord.channels.get(&channel);
        let current = c.map_or(0, |c| match which {
            Which::Soft => c.soft,
            Which::Hard => c.hard,
        });
        // From now: the current value first.
        let after = after.unwrap_or(current.saturating_sub(1));
        let next = next_values(c, which, after);
        (next, current, s0.milvus_coord.register_waker())
    })
    .await
    .map_err(|_| mesh_failed())
}

/// `time_tick/watch`: `{channelName, barrier: "soft"|"hard", sinceTimestamp?}` → NDJSON
/// lines `{"type":"soft"|"hard","channelName":…,"ts":T}`; soft sends the newest value each
/// time it moves, hard every value in order. A last `{"type":"error",…}` line ends it.
async fn watch(me: Rc<Shard>, req: Request) -> Response {
    let parsed = (|| {
        let b = Body::parse(req.body())?;
        let channel = channel_req(&b)?;
        let which = match b.str_req("barrier")?.to_lowercase().as_str() {
            "soft" => Which::Soft,
            "hard" => Which::Hard,
            other => {
                return Err(MErr::invalid(format!(
                    "barrier {other:?} is neither soft nor hard"
                )))
            }
        };
        let since = match b.int_opt("sinceTimestamp")? {
            Some(t) if t < 0 => return Err(MErr::invalid("sinceTimestamp is negative")),
            t => t.map(|t| t as u64),
        };
        Ok((channel, which, since))
    })();
    let (channel, which, since) = match parsed {
        Ok(p) => p,
        Err(e) => return e.response(),
    };
    if me.milvus_coord.watchers.get() >= WATCHERS_PER_SHARD_MAX {
        return not_ready(&format!(
            "too many barrier watchers on this shard (at most {WATCHERS_PER_SHARD_MAX})"
        ))
        .response();
    }
    let (first, current, mut wake) = match watch_poll(&me, channel.clone(), which, since).await {
        Ok(p) => p,
        Err(e) => return e.response(),
    };
    let mut values = match first {
        Ok(v) => v,
        Err(evicted) => {
            return MErr::invalid(format!(
                "sinceTimestamp {} is older than the hard-barrier history kept; resume with sinceTimestamp >= {evicted}",
                since.unwrap_or(0)
            ))
            .response()
        }
    };
    let (tx, body) = body_channel(WATCHER_BUFFER_BYTES_MAX);
    me.milvus_coord
        .watchers
        .set(me.milvus_coord.watchers.get() + 1);
    let watcher = me.clone();
    let kind = if which == Which::Soft { "soft" } else { "hard" };
    monoio::spawn(async move {
        let mut last = since.unwrap_or(current.saturating_sub(1));
        loop {
            let mut stop = None;
            for v in values.drain(..) {
                match tx.send(line(
                    &json!({"type": kind, "channelName": channel, "ts": v}),
                )) {
                    Ok(()) => last = last.max(v),
                    Err(SendError::Full) => {
                        stop = Some(Some(MErr::new(
                            CODE_UNEXPECTED,
                            format!("watcher fell more than {WATCHER_BUFFER_BYTES_MAX} bytes behind and was closed; resume with sinceTimestamp set to the last value received"),
                        )));
                        break;
                    }
                    Err(SendError::Closed) => {
                        stop = Some(None);
                        break;
                    }
                }
            }
            if stop.is_none() && tx.is_closed() {
                stop = Some(None);
            }
            if let Some(reason) = stop {
                if let Some(e) = reason {
                    tx.finish_with(line(
                        &json!({"type": "error", "code": e.code, "message": e.message}),
                    ));
                }
                break;
            }
            let _ =
                monoio::time::timeout(Duration::from_millis(WATCH_POLL_INTERVAL_MS), wake).await;
            match watch_poll(&watcher, channel.clone(), which, Some(last)).await {
                Ok((Ok(v), _, w)) => {
                    values = v;
                    wake = w;
                }
                Ok((Err(evicted), _, _)) => {
                    tx.finish_with(line(&json!({"type": "error", "code": CODE_UNEXPECTED,
                        "message": format!("watcher fell behind the hard-barrier history (values up to {evicted} were dropped); resume with sinceTimestamp >= {evicted}")})));
                    break;
                }
                Err(_) => {
                    // The mesh is draining: the process is stopping.
                    break;
                }
            }
        }
        watcher
            .milvus_coord
            .watchers
            .set(watcher.milvus_coord.watchers.get().saturating_sub(1));
    });
    Response::streamed(200, "application/x-ndjson", body)
}

/// Requests one `assign_segment_id` may carry.
pub const SEGMENT_REQUESTS_MAX: usize = 1024;
/// Attempts to plan a request whose new segment IDs were taken meanwhile.
const PLAN_ATTEMPTS_MAX: usize = 4;

/// Max rows per segment of a (collection, partition), or why it cannot be served.
async fn lookup_max_rows(s0: &Rc<Shard>, collection: u64, partition: u64) -> MResult<u64> {
    for k in 0..s0.mesh.shards() {
        let found = s0
            .run_on(k, move |s: Rc<Shard>| async move {
                s.group.read_barrier().await.map_err(group_err)?;
                let st = s.group.state();
                MResult::Ok(st.milvus.collection_by_id(collection).map(|(_, c)| {
                    let has_partition = c.partitions.iter().any(|p| p.id == partition);
                    let bytes = estimate_row_bytes(&c.spec.fields, c.spec.enable_dynamic);
                    (has_partition, bytes)
                }))
            })
            .await
            .map_err(|_| mesh_failed())??;
        match found {
            Some((true, bytes)) => {
                let mb = setting(s0, "datacoord.segment.maxsize", SEGMENT_MAX_SIZE_MB);
                return Ok(max_rows(mb, bytes));
            }
            Some((false, _)) => {
                return Err(MErr::new(
                    200,
                    format!("partition not found[partition={partition}]"),
                ))
            }
            None => {}
        }
    }
    Err(MErr::new(
        100,
        format!("collection not found[collection={collection}]"),
    ))
}

struct SegReq {
    count: u64,
    channel: String,
    collection: u64,
    partition: u64,
}

fn seg_req(v: &Value) -> MResult<SegReq> {
    let obj = v
        .as_object()
        .ok_or_else(|| MErr::invalid("a segment ID request must be an object"))?;
    let b = Body::from_map(obj.clone());
    let num = |name: &str| -> MResult<u64> {
        match b.get(name) {
            Some(v) => u64_of(v, name),
            None => Err(required(name)),
        }
    };
    let count = num("count")?;
    if count == 0 || count > u32::MAX as u64 {
        return Err(MErr::invalid(format!(
            "count {count} is outside 1..=2^32-1"
        )));
    }
    let channel = channel_req(&b)?;
    Ok(SegReq {
        count,
        channel,
        collection: num("collectionID")?,
        partition: num("partitionID")?,
    })
}

/// `assign_segment_id` (`AssignSegmentIDRequest`): `{segmentIDRequests: [{count,
/// channelName, collectionID, partitionID}]}` → `{segIDAssignments: [...]}`; a failing
/// request fails only its entry.
async fn assign_segment_id(s0: Rc<Shard>, b: Body) -> MResult<Value> {
    let reqs = b
        .array_opt("segmentIDRequests")?
        .ok_or_else(|| required("segmentIDRequests"))?;
    if reqs.len() > SEGMENT_REQUESTS_MAX {
        return Err(MErr::invalid(format!(
            "{} segment ID requests, more than {SEGMENT_REQUESTS_MAX}",
            reqs.len()
        )));
    }
    let ts = tso(&s0).await?;
    let expiration_ms = setting(
        &s0,
        "datacoord.segment.assignmentexpiration",
        ASSIGNMENT_EXPIRATION_MS,
    );
    let expire = ts.saturating_add(ms_to_ts(expiration_ms));
    let mut out = Vec::with_capacity(reqs.len());
    let mut created: Vec<SegmentMeta> = Vec::new();
    let status = |e: &MErr| json!({"code": e.code, "reason": e.message});
    for v in &reqs {
        let r = match seg_req(v) {
            Ok(r) => r,
            Err(e) => {
                out.push(json!({"segID": 0, "count": 0, "expireTime": 0, "status": status(&e)}));
                continue;
            }
        };
        let entry = |seg: u64, count: u64, st: Value| {
            json!({"segID": seg, "channelName": r.channel, "count": count,
                   "collectionID": r.collection, "partitionID": r.partition,
                   "expireTime": expire, "status": st})
        };
        let key = (r.collection, r.partition);
        let cached = s0
            .milvus_coord
            .mem
            .borrow()
            .as_ref()
            .and_then(|m| m.max_rows.get(&key).copied());
        let rows_max = match cached {
            Some(m) => m,
            None => match lookup_max_rows(&s0, r.collection, r.partition).await {
                Ok(m) => {
                    if let Some(mem) = s0.milvus_coord.mem.borrow_mut().as_mut() {
                        mem.max_rows.insert(key, m);
                    }
                    m
                }
                Err(e) => {
                    out.push(entry(0, 0, status(&e)));
                    continue;
                }
            },
        };
        let request = super::segment::Request {
            count: r.count,
            channel: r.channel.clone(),
            collection: r.collection,
            partition: r.partition,
        };
        let mut result = Err(MErr::new(CODE_INTERNAL, "segment IDs kept running out"));
        for _ in 0..PLAN_ATTEMPTS_MAX {
            // How many new segments it needs, then that many IDs, then the real plan (the
            // memory may have moved while the IDs were fetched).
            let needed = {
                let mut mem = s0.milvus_coord.mem.borrow_mut();
                let Some(m) = mem.as_mut() else {
                    return Err(not_ready("the coordinator memory is being rebuilt"));
                };
                m.alloc.expire(None, ts);
                m.alloc
                    .plan(&request, rows_max, SEAL_PROPORTION, expire, &mut (1u64..))
                    .map(|p| p.new_segments.len() as u64)
            };
            let needed = match needed {
                Ok(n) => n,
                Err(e) => {
                    result = Err(MErr::invalid(e));
                    break;
                }
            };
            let first = if needed > 0 {
                crate::services::api::call(s0.clone(), ServiceCall::Ids { count: needed })
                    .await
                    .map_err(service_err)?
                    .first
            } else {
                0
            };
            let mut mem = s0.milvus_coord.mem.borrow_mut();
            let Some(m) = mem.as_mut() else {
                return Err(not_ready("the coordinator memory is being rebuilt"));
            };
            match m.alloc.plan(
                &request,
                rows_max,
                SEAL_PROPORTION,
                expire,
                &mut (first..first + needed),
            ) {
                Ok(plan) => {
                    // Reserved before the await below, so concurrent requests see it.
                    m.alloc.commit(&plan);
                    created.extend(plan.new_segments.iter().map(|s| SegmentMeta {
                        id: s.id,
                        collection: s.collection,
                        partition: s.partition,
                        channel: s.channel.clone(),
                        max_rows: s.max_rows,
                        rows: 0,
                        state: "Growing".into(),
                        open_ts: ts,
                        close_ts: 0,
                    }));
                    result = Ok(plan.assignments);
                    break;
                }
                Err(super::segment::AllocError::OutOfIds) => continue,
                Err(e) => {
                    result = Err(MErr::invalid(e));
                    break;
                }
            }
        }
        match result {
            Ok(assignments) => {
                for a in assignments {
                    out.push(entry(a.segment, a.count, json!({"code": 0, "reason": ""})));
                }
            }
            Err(e) => out.push(entry(0, 0, status(&e))),
        }
    }
    if !created.is_empty() {
        if let Err(e) = propose(&s0, CoordCommand::Segments { created }).await {
            // The grants were reserved in memory but are not answered; rebuilding treats
            // every growing segment as fully granted until they would have expired.
            s0.milvus_coord.reset();
            return Err(e);
        }
    }
    Ok(json!({"segIDAssignments": out}))
}

/// `segment_report`: `{segmentID, numRows, binlogCount?, state?}` from a data node (its
/// flush report). The leader applies the seal policies to a growing segment (reference §5)
/// and records rows and state; replies `{segmentID, state, sealReason}`.
async fn segment_report(s0: Rc<Shard>, b: Body) -> MResult<Value> {
    let num = |name: &str| -> MResult<u64> {
        match b.get(name) {
            Some(v) => u64_of(v, name),
            None => Err(required(name)),
        }
    };
    let id = num("segmentID")?;
    let rows = num("numRows")?;
    let binlogs = match b.get("binlogCount") {
        Some(v) => u64_of(v, "binlogCount")?,
        None => 0,
    };
    let asked = b.str_opt("state")?;
    let max_size_mb = setting(&s0, "datacoord.segment.maxsize", SEGMENT_MAX_SIZE_MB);
    let Some(seg) = s0.group.state().milvus_coord.segments.get(&id).cloned() else {
        return Err(MErr::invalid(format!("segment {id} not found")));
    };
    let ts = tso(&s0).await?;
    let age_s = (ts.saturating_sub(seg.open_ts) >> super::segment::TS_LOGICAL_BITS) / 1000;
    // The jitter is drawn once per segment: derived from its ID so every evaluation agrees.
    let jitter = 1.0
        - super::segment::SEAL_PROPORTION_JITTER
            * ((id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 53) as f64 / (1u64 << 11) as f64);
    let reason = if seg.state == "Growing" {
        super::segment::seal_reason(&super::segment::SealInput {
            rows,
            max_rows: seg.max_rows,
            binlogs,
            age_s,
            idle_s: 0,
            row_bytes: (max_size_mb * 1024 * 1024) / seg.max_rows.max(1),
            jitter,
        })
    } else {
        None
    };
    let state = match (asked, reason) {
        (Some(s), _) => s,
        (None, Some(_)) => "Sealed".to_string(),
        (None, None) => seg.state.clone(),
    };
    propose(
        &s0,
        CoordCommand::SegmentReport {
            ts,
            id,
            rows,
            state: state.clone(),
        },
    )
    .await?;
    let updated = s0
        .group
        .state()
        .milvus_coord
        .segments
        .get(&id)
        .map(seg_info);
    if let (Some(info), Some(m)) = (updated, s0.milvus_coord.mem.borrow_mut().as_mut()) {
        m.alloc.update(info);
    }
    Ok(json!({"segmentID": id, "state": state, "sealReason": reason.unwrap_or("")}))
}

fn segment_json(s: &SegmentMeta) -> Value {
    json!({
        "segmentID": s.id,
        "collectionID": s.collection,
        "partitionID": s.partition,
        "channelName": s.channel,
        "maxRows": s.max_rows,
        "numRows": s.rows,
        "state": s.state,
        "openTime": s.open_ts,
        "closeTime": s.close_ts,
    })
}

/// `show_segments`: `{collectionID, partitionID?}` → `{segmentIDs}` (linearizable).
/// `describe_segments`: `{collectionID?, segmentIDs?}` → `{segments: [...]}`.
async fn segments_read(me: Rc<Shard>, req: Request, describe: bool) -> MResult<Value> {
    let b = Body::parse(req.body())?;
    let collection = b.int_opt("collectionID")?;
    let partition = b.int_opt("partitionID")?;
    let ids: Option<Vec<u64>> = b
        .array_opt("segmentIDs")?
        .map(|v| v.iter().map(|x| u64_of(x, "a segment ID")).collect())
        .transpose()?;
    if !describe && collection.is_none() {
        return Err(required("collectionID"));
    }
    me.run_on(0, move |s0: Rc<Shard>| async move {
        s0.group.read_barrier().await.map_err(group_err)?;
        let st = s0.group.state();
        let matching: Vec<&SegmentMeta> = st
            .milvus_coord
            .segments
            .values()
            .filter(|s| collection.map_or(true, |c| s.collection as i64 == c))
            .filter(|s| partition.map_or(true, |p| s.partition as i64 == p))
            .filter(|s| ids.as_ref().map_or(true, |ids| ids.contains(&s.id)))
            .collect();
        Ok(if describe {
            json!({"segments": matching.iter().map(|s| segment_json(s)).collect::<Vec<_>>()})
        } else {
            json!({"segmentIDs": matching.iter().map(|s| s.id).collect::<Vec<_>>()})
        })
    })
    .await
    .map_err(|_| mesh_failed())?
}

/// The three SysConfig reads: 0 `Get`, 1 `GetByPrefix`, 2 `ShowConfigurations`.
async fn sysconfig_call(me: Rc<Shard>, req: Request, which: u8) -> MResult<Value> {
    let b = Body::parse(req.body())?;
    match which {
        0 => super::sysconfig::get(me, b).await,
        1 => super::sysconfig::get_by_prefix(me, b).await,
        _ => super::sysconfig::show_configurations(me, b).await,
    }
}

fn reply(r: MResult<Value>) -> Response {
    match r {
        Ok(v) => ok(v),
        Err(e) => e.response(),
    }
}

/// Adds the routes of this module.
pub fn routes(router: Router, shard: Rc<Shard>) -> Router {
    let (i, j, k, l) = (shard.clone(), shard.clone(), shard.clone(), shard.clone());
    let (m, n, o) = (shard.clone(), shard.clone(), shard.clone());
    let s = shard;
    let (a, b, c, d, e, f, g, h) = (
        s.clone(),
        s.clone(),
        s.clone(),
        s.clone(),
        s.clone(),
        s.clone(),
        s.clone(),
        s,
    );
    router
        .route(
            Method::POST,
            "/v2/rootcoord/sessions/register",
            move |req: Request| {
                let a = a.clone();
                async move { reply(register(a, req).await) }
            },
        )
        .route(
            Method::POST,
            "/v2/rootcoord/sessions/keep_alive",
            move |req: Request| on_leader(b.clone(), req, keep_alive),
        )
        .route(
            Method::POST,
            "/v2/rootcoord/sessions/leave",
            move |req: Request| {
                let c = c.clone();
                async move { reply(leave(c, req).await) }
            },
        )
        .route(
            Method::POST,
            "/v2/rootcoord/sessions/list",
            move |req: Request| {
                let d = d.clone();
                async move { reply(list(d, req).await) }
            },
        )
        .route(
            Method::POST,
            "/v2/rootcoord/update_channel_time_tick",
            move |req: Request| on_leader(e.clone(), req, update_tick),
        )
        .route(
            Method::POST,
            "/v2/rootcoord/time_tick/stats",
            move |req: Request| on_leader(f.clone(), req, stats),
        )
        .route(
            Method::POST,
            "/v2/rootcoord/time_tick/get",
            move |req: Request| {
                let g = g.clone();
                async move { reply(get(g, req).await) }
            },
        )
        .route(
            Method::POST,
            "/v2/rootcoord/time_tick/watch",
            move |req: Request| watch(h.clone(), req),
        )
        .route(
            Method::POST,
            "/v2/rootcoord/assign_segment_id",
            move |req: Request| on_leader(i.clone(), req, assign_segment_id),
        )
        .route(
            Method::POST,
            "/v2/rootcoord/segment_report",
            move |req: Request| on_leader(l.clone(), req, segment_report),
        )
        .route(
            Method::POST,
            "/v2/rootcoord/show_segments",
            move |req: Request| {
                let j = j.clone();
                async move { reply(segments_read(j, req, false).await) }
            },
        )
        .route(
            Method::POST,
            "/v2/rootcoord/sysconfig/get",
            move |req: Request| {
                let m = m.clone();
                async move { reply(sysconfig_call(m, req, 0).await) }
            },
        )
        .route(
            Method::POST,
            "/v2/rootcoord/sysconfig/get_by_prefix",
            move |req: Request| {
                let n = n.clone();
                async move { reply(sysconfig_call(n, req, 1).await) }
            },
        )
        .route(
            Method::POST,
            "/v2/rootcoord/show_configurations",
            move |req: Request| {
                let o = o.clone();
                async move { reply(sysconfig_call(o, req, 2).await) }
            },
        )
        .route(
            Method::POST,
            "/v2/rootcoord/describe_segments",
            move |req: Request| {
                let k = k.clone();
                async move { reply(segments_read(k, req, true).await) }
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    #[test]
    fn watcher_values_resume_and_detect_gaps() {
        let c = ChannelMarks {
            soft: 50,
            hard: 40,
            history: VecDeque::from(vec![20, 30, 40]),
            evicted: 10,
        };
        assert_eq!(next_values(Some(&c), Which::Hard, 25), Ok(vec![30, 40]));
        assert_eq!(next_values(Some(&c), Which::Hard, 10), Ok(vec![20, 30, 40]));
        assert_eq!(next_values(Some(&c), Which::Hard, 9), Err(10));
        assert_eq!(next_values(Some(&c), Which::Soft, 49), Ok(vec![50]));
        assert_eq!(next_values(Some(&c), Which::Soft, 50), Ok(vec![]));
        assert_eq!(next_values(None, Which::Hard, 0), Ok(vec![]));
    }
}
