//! The DD channel (design §10.2, `GetDdChannel`): every DDL event, merged across shards into
//! one stream in strictly increasing timestamp order, with time ticks in between.
//!
//! Each shard keeps a bounded history of its DDL events in its replicated table. A watcher
//! polls every shard by proposing a `Tick` carrying a fresh TSO timestamp: once a tick `T`
//! applied, no DDL at or below `T` applies on that shard (apply refuses it as stale), so the
//! events and the shard's clock (`last_ts`) read from the replica right after hold every
//! event of that shard at or below the clock. Ticks are proposed only while someone watches. The minimum `W`
//! of the shards' clocks is therefore a point below which the stream is complete: the watcher
//! sends the events in `(since, W]` in timestamp order (one line per DDL), then the tick `W`,
//! and continues from `W`. Everything it reads is replicated state, so a client that
//! reconnects with the last timestamp it saw (on any node, across leader changes) gets no gap
//! and no duplicate.
//!
//! A watcher polls every `DD_POLL_INTERVAL_MS`, and at once when a DDL is acknowledged on
//! this node (`wake_watchers`): that changes only when polls happen, not what one reads, so
//! the argument above holds; DDLs acknowledged on other nodes are seen at the next interval.
//!
//! Lines (NDJSON): `{"type":"ddl","ts":T,"events":[…]}`, `{"type":"tick","ts":W}`, and a
//! last `{"type":"error","code":N,"message":…}` when the stream ends for a reason.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;
use mast_http::{body_channel, Request, Response, SendError};
use serde_json::{json, Value};

use super::body::*;
use crate::meta::milvus::{Command, DdEvent};
use crate::meta::MetaCommand;
use crate::node::shard::Shard;
use crate::services::ServiceCall;

/// Pause between a watcher's polls of the shards (each poll ticks every shard: two raft
/// round trips, so a watcher sees a tick at least every ~this plus those).
pub const DD_POLL_INTERVAL_MS: u64 = 50;
/// Bytes a watcher may have sent that its client has not taken: past this the watcher is
/// closed with a reason instead of buffering more.
pub const DD_WATCHER_BUFFER_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Watchers one shard serves at once.
pub const DD_WATCHERS_PER_SHARD_MAX: usize = 64;
/// The channel's name, as `GetDdChannel` returned one.
pub const DD_CHANNEL_NAME: &str = "mast-rootcoord-dd";

/// Watchers in this process (every shard of every node in it), so a DDL skips the mesh
/// round of wakeups when nobody watches; over-counting only costs a useless wakeup.
static WATCHERS_IN_PROCESS: AtomicUsize = AtomicUsize::new(0);

/// One shard's pending watcher wakeups. A watcher leaves a sender here before each poll, so
/// a DDL acknowledged while it polls makes it poll again at once instead of being missed.
#[derive(Default)]
pub struct DdWakers(RefCell<Vec<oneshot::Sender<()>>>);

impl DdWakers {
    fn register(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut list = self.0.borrow_mut();
        // A watcher that woke by its timer (or ended) dropped its receiver: forgetting those
        // keeps the list at one entry per live watcher.
        list.retain(|t| !t.is_canceled());
        list.push(tx);
        rx
    }

    fn wake(&self) {
        let list = std::mem::take(&mut *self.0.borrow_mut());
        for tx in list {
            let _ = tx.send(());
        }
    }
}

/// A DDL was acknowledged on this node: wakes the DD watchers of every shard of this node so
/// they poll now rather than at their next interval (issue #11's 10 ms goal). In the
/// background: the DDL's reply does not wait for the mesh round.
pub fn wake_watchers(me: &Rc<Shard>) {
    if WATCHERS_IN_PROCESS.load(Ordering::Relaxed) == 0 {
        return;
    }
    let me = me.clone();
    monoio::spawn(async move {
        for k in 0..me.mesh.shards() {
            let _ = me
                .run_on(k, |s: Rc<Shard>| async move { s.milvus_dd_wakers.wake() })
                .await;
        }
    });
}

/// What one shard says at one read: its events above `since` and its clock.
struct ShardView {
    events: Vec<DdEvent>,
    clock: u64,
}

/// Reads every shard (through its read barrier): the events above `since` up to the merged
/// clock `W`, grouped by timestamp in increasing order, and `W`. `Err` names the smallest
/// `since` still served when history above `since` was dropped. `since: None` reads only
/// the clocks (a watch from now).
async fn poll(me: &Rc<Shard>, since: Option<u64>) -> Result<(Vec<(u64, Vec<DdEvent>)>, u64), MErr> {
    // All shards at once (each view is taken after its own tick, which is all the argument
    // needs), so a poll costs one shard's round trips rather than their sum.
    let reads: Vec<_> = (0..me.mesh.shards())
        .map(|k| {
            let me = me.clone();
            monoio::spawn(async move {
                me.run_on(k, move |s: Rc<Shard>| async move {
                    // The tick: once applied here, no DDL at or below it applies on this
                    // shard, and this replica holds every one below it. A stale tick means a
                    // later DDL or tick applied first, which serves as well.
                    let ts = crate::services::api::call(s.clone(), ServiceCall::Tso { count: 1 })
                        .await
                        .map_err(super::service_err)?
                        .first;
                    match s
                        .group
                        .propose(&MetaCommand::Milvus(Command::Tick { ts }))
                        .await
                    {
                        Ok(_) => {}
                        Err(e) => return Err(super::group_err(e)),
                    }
                    let st = s.group.state();
                    let clock = st.milvus.last_ts;
                    match since.map(|t| st.milvus.events_since(t)) {
                        None => Ok(ShardView {
                            events: Vec::new(),
                            clock,
                        }),
                        Some(Ok(events)) => Ok(ShardView { events, clock }),
                        Some(Err(oldest)) => Err(too_old(since.unwrap_or(0), oldest)),
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
    let floor = since.unwrap_or(0);
    let w = views.iter().map(|v| v.clock).min().unwrap_or(floor);
    let mut events: Vec<DdEvent> = views
        .into_iter()
        .flat_map(|v| v.events.into_iter().filter(|e| e.ts <= w))
        .collect();
    // Stable: events of one DDL keep their order.
    events.sort_by_key(|e| e.ts);
    let mut grouped: Vec<(u64, Vec<DdEvent>)> = Vec::new();
    for e in events {
        match grouped.last_mut() {
            Some((ts, list)) if *ts == e.ts => list.push(e),
            _ => grouped.push((e.ts, vec![e])),
        }
    }
    Ok((grouped, w.max(floor)))
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
    if e.kind.ends_with("Index") {
        v["fieldID"] = json!(e.field_id);
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
    let mut wake = me.milvus_dd_wakers.register();
    // The first poll answers errors (too old, no leader) as a plain reply, not a stream.
    let first = match poll(&me, since).await {
        Ok(first) => first,
        Err(e) => return e.response(),
    };
    let (tx, body) = body_channel(DD_WATCHER_BUFFER_BYTES_MAX);
    let watcher = me.clone();
    me.milvus_dd_watchers.set(me.milvus_dd_watchers.get() + 1);
    WATCHERS_IN_PROCESS.fetch_add(1, Ordering::Relaxed);
    monoio::spawn(async move {
        let (mut batch, mut w) = first;
        let end = |reason: MErr| {
            tx.finish_with(line(
                &json!({"type": "error", "code": reason.code, "message": reason.message}),
            ));
        };
        loop {
            let mut full = false;
            for (ts, events) in &batch {
                let v = json!({"type": "ddl", "ts": ts,
                               "events": events.iter().map(event_json).collect::<Vec<_>>()});
                match tx.send(line(&v)) {
                    Ok(()) => {}
                    Err(SendError::Full) => full = true,
                    Err(SendError::Closed) => break,
                }
            }
            if !full {
                match tx.send(line(&json!({"type": "tick", "ts": w}))) {
                    Ok(()) => {}
                    Err(SendError::Full) => full = true,
                    Err(SendError::Closed) => break,
                }
            }
            if full {
                end(MErr::new(
                    CODE_UNEXPECTED,
                    format!("watcher fell more than {DD_WATCHER_BUFFER_BYTES_MAX} bytes behind and was closed; resume with sinceTimestamp set to the last timestamp received"),
                ));
                break;
            }
            if tx.is_closed() {
                break;
            }
            // Woken by a DDL acknowledged here, or by the interval (the fallback that keeps
            // ticks flowing and sees DDLs acknowledged on other nodes). A timer or another
            // task's send wakes us: never this task itself (monoio 0.2.4 starves others then).
            let interval = Duration::from_millis(DD_POLL_INTERVAL_MS);
            let _ = monoio::time::timeout(interval, wake).await;
            wake = watcher.milvus_dd_wakers.register();
            match poll(&watcher, Some(w)).await {
                Ok((b, nw)) => {
                    batch = b;
                    w = nw;
                }
                // No leader for a while: keep the stream and try again (no tick meanwhile).
                Err(e) if e.code == CODE_NOT_READY || e.code == CODE_TIMEOUT => {
                    batch = Vec::new();
                    if tx.is_closed() {
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    end(e);
                    break;
                }
            }
        }
        watcher
            .milvus_dd_watchers
            .set(watcher.milvus_dd_watchers.get().saturating_sub(1));
        WATCHERS_IN_PROCESS.fetch_sub(1, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakers_fire_once_and_forget_dropped_receivers() {
        let wakers = DdWakers::default();
        let mut a = wakers.register();
        let b = wakers.register();
        drop(b);
        // `b`'s sender is forgotten at the next registration: one entry per live watcher.
        let mut c = wakers.register();
        assert_eq!(wakers.0.borrow().len(), 2);
        assert_eq!(a.try_recv(), Ok(None));
        wakers.wake();
        assert_eq!(a.try_recv(), Ok(Some(())));
        assert_eq!(c.try_recv(), Ok(Some(())));
        assert!(wakers.0.borrow().is_empty());
        // A wake with nobody registered is not remembered for a later registration.
        wakers.wake();
        let mut d = wakers.register();
        assert_eq!(d.try_recv(), Ok(None));
    }
}
