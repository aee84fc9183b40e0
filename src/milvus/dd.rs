//! The DD channel (design §10.2, `GetDdChannel`): every DDL event, merged across shards into
//! one stream in strictly increasing timestamp order, with time ticks in between.
//!
//! Each shard keeps a bounded history of its DDL events in its replicated table, and a clock
//! (`last_ts`): the timestamp of the last DDL or `Tick` it applied. Apply refuses a command at
//! or below the clock, and every replica applies the same log in the same order, so **any**
//! replica's applied state (leader or follower, on this node) holds every event of its shard
//! at or below its own clock, and no event at or below it will ever apply later. The minimum
//! `W` of this node's replicas' clocks is therefore a point below which the merged stream is
//! complete: a watcher sends the events in `(since, W]` in timestamp order (one line per DDL),
//! then the tick `W`, and continues from `W`. Reads are local (no raft round, no barrier).
//! Everything read is replicated state, so a client that reconnects with the last timestamp
//! it saw (on any node, across leader changes) gets no gap and no duplicate.
//!
//! What moves clocks is one **tick loop per node** (not per watcher), running while the node
//! has watchers: every `DD_TICK_INTERVAL_MS` it proposes a `Tick` with a fresh TSO timestamp
//! on every shard, and when a DDL applies on any shard of this node (apply raises
//! `signal::DDL_APPLIED`) it ticks at once the shards whose clock is behind the newest one,
//! so the DDL is below `W` one commit later. A DDL proposed on this node does better: it
//! ticks the other shards to its own timestamp beside its own commit (`tick_beside_ddl`). Watchers wait on `signal::CLOCK_ADVANCED`, raised
//! by apply on every shard of this node whoever proposed the entry, so a DDL acknowledged on
//! another node reaches this node's watchers as soon as this node applies it.
//!
//! Lines (NDJSON): `{"type":"ddl","ts":T,"events":[…]}`, `{"type":"tick","ts":W}`, and a
//! last `{"type":"error","code":N,"message":…}` when the stream ends for a reason.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use mast_http::{body_channel, Request, Response, SendError};
use serde_json::{json, Value};

use super::body::*;
use crate::meta::milvus::{signal, Command, DdEvent};
use crate::meta::MetaCommand;
use crate::node::shard::Shard;
use crate::services::ServiceCall;

/// Pause between the tick loop's rounds when no DDL wakes it (ticks every this plus a commit,
/// within the 200 ms the issue allows between ticks).
pub const DD_TICK_INTERVAL_MS: u64 = 100;
/// A watcher with nothing new to send checks this often that its client is still there.
pub const DD_WATCHER_IDLE_CHECK_MS: u64 = 200;
/// Bytes a watcher may have sent that its client has not taken: past this the watcher is
/// closed with a reason instead of buffering more.
pub const DD_WATCHER_BUFFER_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Watchers one shard serves at once.
pub const DD_WATCHERS_PER_SHARD_MAX: usize = 64;
/// The channel's name, as `GetDdChannel` returned one.
pub const DD_CHANNEL_NAME: &str = "mast-rootcoord-dd";

/// Watchers in this process (one process is one node): the tick loop runs while it is not 0.
static WATCHERS_IN_PROCESS: AtomicUsize = AtomicUsize::new(0);
/// Whether this node's tick loop is running (on the shard of the watcher that started it).
static TICK_LOOP_RUNNING: AtomicBool = AtomicBool::new(false);

/// A fresh TSO timestamp (a watch from now starts there; interval ticks carry one).
async fn tso(me: &Rc<Shard>) -> MResult<u64> {
    crate::services::api::call(me.clone(), ServiceCall::Tso { count: 1 })
        .await
        .map(|r| r.first)
        .map_err(super::service_err)
}

/// Proposes `Tick{ts}` on each of `shards`, all at once; once it returns, each of those
/// shards' replica on this node has a clock of at least `ts` (a stale tick means a later DDL
/// or tick applied first). The first failure, if any.
async fn tick(me: &Rc<Shard>, shards: &[usize], ts: u64) -> MResult<()> {
    let proposals: Vec<_> = shards
        .iter()
        .map(|&k| {
            let me = me.clone();
            monoio::spawn(async move {
                me.run_on(k, move |s: Rc<Shard>| async move {
                    s.group
                        .propose(&MetaCommand::Milvus(Command::Tick { ts }))
                        .await
                        .map(|_| ())
                        .map_err(super::group_err)
                })
                .await
            })
        })
        .collect();
    let mut first_err = None;
    for p in proposals {
        if let Err(e) = p.await.unwrap_or_else(|_| Err(super::mesh_failed())) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// A DDL on shard `me` is about to be proposed at `ts`: while this node has watchers, ticks
/// the other shards to `ts` in the background, so their commits run beside the DDL's instead
/// of after it (the tick loop would otherwise start them once the DDL applied). Safe whatever
/// becomes of the DDL: a tick only forbids later DDLs at or below `ts` on those shards, and a
/// DDL refused so retries with a fresh timestamp.
pub fn tick_beside_ddl(me: &Rc<Shard>, ts: u64) {
    let shards = me.mesh.shards();
    if shards < 2
        || WATCHERS_IN_PROCESS.load(Ordering::Acquire) == 0
        || BESIDE_TICKS_IN_FLIGHT.get() >= BESIDE_TICKS_IN_FLIGHT_MAX
    {
        // Past the bound the tick loop still ticks after the DDL applies: one commit later.
        return;
    }
    let others: Vec<usize> = (0..shards).filter(|&k| k != me.id).collect();
    let me = me.clone();
    BESIDE_TICKS_IN_FLIGHT.set(BESIDE_TICKS_IN_FLIGHT.get() + 1);
    monoio::spawn(async move {
        let _ = tick(&me, &others, ts).await;
        BESIDE_TICKS_IN_FLIGHT.set(BESIDE_TICKS_IN_FLIGHT.get().saturating_sub(1));
    });
}

/// Early tick rounds one shard runs at once for its DDLs (`tick_beside_ddl`).
const BESIDE_TICKS_IN_FLIGHT_MAX: usize = 8;

thread_local! {
    /// Per shard thread: the rounds of `tick_beside_ddl` in flight.
    static BESIDE_TICKS_IN_FLIGHT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// This node's replicas' clocks, shard by shard (`None`: the shard did not answer).
async fn clocks(me: &Rc<Shard>) -> Vec<Option<u64>> {
    let mut out = Vec::with_capacity(me.mesh.shards());
    for k in 0..me.mesh.shards() {
        let c = me
            .run_on(
                k,
                |s: Rc<Shard>| async move { s.group.state().milvus.last_ts },
            )
            .await;
        out.push(c.ok());
    }
    out
}

fn ensure_tick_loop(me: &Rc<Shard>) {
    if TICK_LOOP_RUNNING
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        monoio::spawn(tick_loop(me.clone()));
    }
}

/// Tick rounds the loop lets run at once: a DDL's round must not queue behind an interval
/// round already waiting on its commits.
const TICK_ROUNDS_IN_FLIGHT_MAX: usize = 4;

/// The node's one tick loop (see the module comment). Ends when the node has no watcher.
async fn tick_loop(me: Rc<Shard>) {
    let interval = Duration::from_millis(DD_TICK_INTERVAL_MS);
    let all: Vec<usize> = (0..me.mesh.shards()).collect();
    let in_flight = Rc::new(std::cell::Cell::new(0usize));
    let mut seen = signal::DDL_APPLIED.generation();
    loop {
        if WATCHERS_IN_PROCESS.load(Ordering::Acquire) == 0 {
            TICK_LOOP_RUNNING.store(false, Ordering::Release);
            // A watcher that came meanwhile either saw the loop still running (then this
            // loop goes on) or started a new one (then the exchange fails).
            if WATCHERS_IN_PROCESS.load(Ordering::Acquire) == 0
                || TICK_LOOP_RUNNING
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
            {
                return;
            }
        }
        // Woken by a timer or by apply on another task: never by this task itself (monoio
        // 0.2.4 starves the thread's other tasks then).
        let by_ddl = match monoio::time::timeout(interval, signal::DDL_APPLIED.changed(seen)).await
        {
            Ok(g) => {
                seen = g;
                true
            }
            Err(_) => false,
        };
        if in_flight.get() >= TICK_ROUNDS_IN_FLIGHT_MAX {
            continue;
        }
        let (targets, ts) = if by_ddl {
            // Only the shards behind the newest clock hold W back, and ticking them up to
            // that clock is enough to pass the DDL: no TSO round trip on this path. (A tick
            // needs no fresh timestamp: apply's refusal of anything at or below the clock is
            // what makes it a bound.)
            let clocks = clocks(&me).await;
            let newest = clocks.iter().flatten().max().copied().unwrap_or(0);
            let behind: Vec<usize> = all
                .iter()
                .copied()
                .filter(|&k| clocks[k].map_or(true, |c| c < newest))
                .collect();
            (behind, Some(newest))
        } else {
            (all.clone(), None)
        };
        if targets.is_empty() {
            continue;
        }
        in_flight.set(in_flight.get() + 1);
        let (me2, in_flight2) = (me.clone(), in_flight.clone());
        monoio::spawn(async move {
            let ts = match ts {
                Some(ts) => Ok(ts),
                None => tso(&me2).await,
            };
            // A failed round (no leader, timeout) is retried by the next one.
            if let Ok(ts) = ts {
                let _ = tick(&me2, &targets, ts).await;
            }
            in_flight2.set(in_flight2.get().saturating_sub(1));
        });
    }
}

/// What one shard's replica here says at one read: its events above `since` and its clock.
struct ShardView {
    events: Vec<DdEvent>,
    clock: u64,
}

type Batch = Vec<(u64, Vec<DdEvent>)>;

/// Reads this node's replica of every shard (no barrier, see the module comment): the events
/// above `since` up to the merged clock `W`, grouped by timestamp in increasing order, and
/// `max(W, since)`. `Err` names the smallest `since` still served when history above `since`
/// was dropped.
async fn read_local(me: &Rc<Shard>, since: u64) -> MResult<(Batch, u64)> {
    let reads: Vec<_> = (0..me.mesh.shards())
        .map(|k| {
            let me = me.clone();
            monoio::spawn(async move {
                me.run_on(k, move |s: Rc<Shard>| async move {
                    let st = s.group.state();
                    let clock = st.milvus.last_ts;
                    if clock <= since {
                        return Ok(ShardView {
                            events: Vec::new(),
                            clock,
                        });
                    }
                    match st.milvus.events_since(since) {
                        Ok(events) => Ok(ShardView { events, clock }),
                        Err(oldest) => Err(too_old(since, oldest)),
                    }
                })
                .await
            })
        })
        .collect();
    let mut views = Vec::with_capacity(reads.len());
    for read in reads {
        views.push(read.await.map_err(|_| super::mesh_failed())??);
    }
    let w = views.iter().map(|v| v.clock).min().unwrap_or(since);
    let mut events: Vec<DdEvent> = views
        .into_iter()
        .flat_map(|v| v.events.into_iter().filter(|e| e.ts <= w))
        .collect();
    // Stable: events of one DDL keep their order.
    events.sort_by_key(|e| e.ts);
    let mut grouped: Batch = Vec::new();
    for e in events {
        match grouped.last_mut() {
            Some((ts, list)) if *ts == e.ts => list.push(e),
            _ => grouped.push((e.ts, vec![e])),
        }
    }
    Ok((grouped, w.max(since)))
}

fn too_old(since: u64, oldest: u64) -> MErr {
    MErr::invalid(format!(
        "sinceTimestamp {since} is older than the DD history kept; the oldest timestamp still available is {oldest} (resume with sinceTimestamp >= {oldest})"
    ))
}

fn event_json(e: &DdEvent) -> Value {
    let mut v = json!({
        "kind": e.kind,
        "dbName": e.db_name,
        "dbID": e.db_id,
        "collectionName": e.collection_name,
        "collectionID": e.collection_id,
        "partitionName": e.partition_name,
        "partitionID": e.partition_id,
    });
    if e.kind.ends_with("Index") || e.kind.ends_with("Field") {
        v["fieldID"] = json!(e.field_id);
    }
    if e.kind.ends_with("Index") {
        v["indexName"] = json!(e.index_name);
    }
    match e.params.iter().find(|(k, _)| k == "schema") {
        Some((_, schema)) => {
            v["schema"] = serde_json::from_str(schema).unwrap_or(Value::Null);
        }
        None => v["params"] = kv_list(&e.params),
    }
    v
}

fn line(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

/// `POST /v2/rootcoord/dd/watch` `{"sinceTimestamp": T}` (absent: from now).
pub async fn watch(me: Rc<Shard>, req: Request) -> Response {
    let since = match Body::parse(req.body()).and_then(|b| b.int_opt("sinceTimestamp")) {
        Ok(Some(t)) if t >= 0 => Some(t as u64),
        Ok(Some(t)) => return MErr::invalid(format!("sinceTimestamp {t} is negative")).response(),
        Ok(None) => None,
        Err(e) => return e.response(),
    };
    if me.milvus_dd_watchers.get() >= DD_WATCHERS_PER_SHARD_MAX {
        return MErr::new(
            CODE_NOT_READY,
            format!("too many DD watchers on this shard (at most {DD_WATCHERS_PER_SHARD_MAX}); retry later"),
        )
        .response();
    }
    // One round first: "now" for a watch from now, a first tick without waiting for the
    // loop, and errors (no leader) as a plain reply rather than a stream.
    let all: Vec<usize> = (0..me.mesh.shards()).collect();
    let now = match tso(&me).await {
        Ok(ts) => ts,
        Err(e) => return e.response(),
    };
    if let Err(e) = tick(&me, &all, now).await {
        return e.response();
    }
    let since = since.unwrap_or(now);
    let mut seen = signal::CLOCK_ADVANCED.generation();
    let first = match read_local(&me, since).await {
        Ok(first) => first,
        Err(e) => return e.response(),
    };
    let (tx, body) = body_channel(DD_WATCHER_BUFFER_BYTES_MAX);
    let watcher = me.clone();
    me.milvus_dd_watchers.set(me.milvus_dd_watchers.get() + 1);
    WATCHERS_IN_PROCESS.fetch_add(1, Ordering::AcqRel);
    ensure_tick_loop(&me);
    monoio::spawn(async move {
        let (mut batch, mut w) = first;
        // The first line is a tick even if it repeats `since`: the client learns where it is.
        let mut ticked: Option<u64> = None;
        let end = |reason: MErr| {
            tx.finish_with(line(
                &json!({"type": "error", "code": reason.code, "message": reason.message}),
            ));
        };
        let idle = Duration::from_millis(DD_WATCHER_IDLE_CHECK_MS);
        loop {
            let mut full = false;
            let mut closed = false;
            for (ts, events) in &batch {
                let v = json!({"type": "ddl", "ts": ts,
                               "events": events.iter().map(event_json).collect::<Vec<_>>()});
                match tx.send(line(&v)) {
                    Ok(()) => {}
                    Err(SendError::Full) => full = true,
                    Err(SendError::Closed) => closed = true,
                }
            }
            if !full && !closed && ticked.map_or(true, |t| w > t) {
                match tx.send(line(&json!({"type": "tick", "ts": w}))) {
                    Ok(()) => ticked = Some(w),
                    Err(SendError::Full) => full = true,
                    Err(SendError::Closed) => closed = true,
                }
            }
            if full {
                end(MErr::new(
                    CODE_UNEXPECTED,
                    format!("watcher fell more than {DD_WATCHER_BUFFER_BYTES_MAX} bytes behind and was closed; resume with sinceTimestamp set to the last timestamp received"),
                ));
                break;
            }
            if closed || tx.is_closed() {
                break;
            }
            // Woken by apply on any shard of this node, or after `idle` to notice a client
            // that left while nothing happened.
            let _ = monoio::time::timeout(idle, signal::CLOCK_ADVANCED.changed(seen)).await;
            seen = signal::CLOCK_ADVANCED.generation();
            if tx.is_closed() {
                break;
            }
            match read_local(&watcher, w).await {
                Ok((b, nw)) => {
                    batch = b;
                    w = nw;
                }
                // The mesh was full: a later read will do.
                Err(e) if e.code == CODE_NOT_READY => batch = Vec::new(),
                Err(e) => {
                    end(e);
                    break;
                }
            }
        }
        watcher
            .milvus_dd_watchers
            .set(watcher.milvus_dd_watchers.get().saturating_sub(1));
        WATCHERS_IN_PROCESS.fetch_sub(1, Ordering::AcqRel);
    });
    Response::streamed(200, "application/x-ndjson", body)
}

/// `POST /v2/rootcoord/dd/channel`: names the channel, as `GetDdChannel` did, with the range
/// of timestamps a watcher can resume from.
pub async fn channel(me: Rc<Shard>) -> Response {
    let mut oldest = 0u64;
    let mut clock = u64::MAX;
    for k in 0..me.mesh.shards() {
        let r = me
            .run_on(k, |s: Rc<Shard>| async move {
                let st = s.group.state();
                (st.milvus.events_dropped_ts, st.milvus.last_ts)
            })
            .await;
        match r {
            Ok((dropped, last)) => {
                oldest = oldest.max(dropped);
                clock = clock.min(last);
            }
            Err(_) => return super::mesh_failed().response(),
        }
    }
    ok(json!({
        "channelName": DD_CHANNEL_NAME,
        "watchPath": "/v2/rootcoord/dd/watch",
        "oldestResumableTimestamp": oldest,
        "latestTickTimestamp": clock,
    }))
}
