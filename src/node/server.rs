//! `mast server`: starts the shards, serves until SIGINT/SIGTERM, drains, exits.
//!
//! Start-up order: validate config → lock the data directory → check the HTTP port is free →
//! start one pinned thread per shard (each binds its own SO_REUSEPORT listener and reports
//! back) → wait for a signal or a shard failure. Shutdown: fire the shared [`ShutdownSignal`]
//! (every shard stops accepting and drains its connections within the grace period); once
//! every shard has drained, close the raft groups (not before: a draining request on one shard
//! may wait on another shard's group) and stop the cross-shard job loops, then join the threads.

use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use mast_http::{HttpMetrics, Limits, ShutdownSignal};
use tracing::{error, info, warn};

use super::admin;
use super::cluster;
use super::config::{allowed_cpus, LogIo, ServerConfig};
use super::runtime::{pin_current_thread, run_on_runtime, Mesh};
use super::shard::{NodeInfo, Shard};
use crate::meta::MetaTable;
use crate::replica::{Group, GroupOptions, MemberAddrs, ReplicaId};
use crate::services::LeaderServices;

/// Inbound cross-shard jobs a shard queues before callers wait (backpressure).
const XSHARD_QUEUE_LEN: usize = 4096;
/// How long shutdown waits for shard threads after the HTTP grace period before giving up on
/// a clean join.
const SHUTDOWN_JOIN_WAIT_MS: u64 = 5_000;

enum Event {
    ShardListening(usize),
    ShardFailed(usize, String),
    HttpDrained(usize),
    Signal(i32),
    Reload,
}

/// A startup or runtime failure, printed as the process's last word.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("data directory {path}: {reason}")]
    DataDir { path: String, reason: String },
    #[error("address {addr} is not available: {reason}")]
    HttpAddr { addr: SocketAddr, reason: String },
    #[error("shard {shard} failed: {reason}")]
    Shard { shard: usize, reason: String },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cluster identity: {0}")]
    Cluster(String),
    #[error("auth_token_file: {0}")]
    Auth(String),
}

/// Runs a server until it is told to stop. Returns Ok after a clean drain.
pub fn run(config: ServerConfig) -> Result<(), ServerError> {
    super::panics::install_fatal_panic_hook();
    let _lock = lock_data_dir(&config.data_dir)?;
    // Before any shard opens its table.
    crate::meta::milvus::history::configure(config.milvus_dd_history);
    if let Some(entries) = config.milvus_config.clone() {
        crate::milvus::sysconfig::configure(entries);
    }
    check_port_free(config.http_addr)?;
    for shard in 0..config.shards {
        check_port_free(config.shard_peer_addr(shard))?;
    }
    let identity =
        cluster::load_or_create(&config.data_dir, &config).map_err(ServerError::Cluster)?;
    info!(
        cluster_id = identity.cluster_id,
        bootstrap = identity.bootstrap,
        "cluster identity"
    );

    let direct = match config.log_io {
        LogIo::Buffered => false,
        LogIo::Direct => {
            mast_log::probe_direct_io(&config.data_dir).map_err(|e| ServerError::DataDir {
                path: config.data_dir.display().to_string(),
                reason: format!("log_io = direct: {e}"),
            })?;
            true
        }
        LogIo::Auto => match mast_log::probe_direct_io(&config.data_dir) {
            Ok(()) => true,
            Err(e) => {
                warn!(%e, "the raft log falls back to buffered writes + fdatasync");
                false
            }
        },
    };
    let mut group_options = GroupOptions {
        snapshot_every_entries: config.snapshot_every_entries,
        ..GroupOptions::default()
    };
    // Direct writes are O_DSYNC too: one write per batch, durable when it completes.
    group_options.log.direct_io = direct;
    group_options.log.write_through = direct;
    let auth = match &config.auth_token_file {
        Some(path) => Some(Arc::new(
            super::auth::Auth::load(path, config.metrics_auth).map_err(ServerError::Auth)?,
        )),
        None => None,
    };
    let node = Arc::new(NodeInfo {
        id: config.id,
        http_addr: config.http_addr,
        peer_addr: config.peer_addr,
        data_dir: config.data_dir.clone(),
        members: config.members.clone(),
        started: Instant::now(),
        cluster: identity,
        redirect: config.redirect,
        follower_read: config.follower_read,
        cubefs_dp_growth_interval_ms: config.cubefs_dp_growth_interval_ms,
        shard_peer_addrs: (0..config.shards)
            .map(|s| config.shard_peer_addr(s))
            .collect(),
        group_options,
        auth,
    });
    let mesh = Mesh::<Shard>::new(config.shards, XSHARD_QUEUE_LEN);
    let shutdown = ShutdownSignal::new();
    // Fired once every shard's HTTP has drained: a request still draining on one shard may
    // be waiting on another shard's group (the key lives there), so no group closes before.
    let groups_close = ShutdownSignal::new();
    let (events_tx, events) = mpsc::channel::<Event>();
    let cpus = allowed_cpus();
    info!(node = config.id, shards = config.shards, http = %config.http_addr, data_dir = %config.data_dir.display(), log_io = node.log_io(), "starting mast");

    let mut threads = Vec::with_capacity(config.shards);
    for shard in 0..config.shards {
        // More shards than CPUs share CPUs round-robin rather than failing.
        let cpu = cpus
            .get(shard % cpus.len().max(1))
            .copied()
            .unwrap_or(shard);
        let (node, mesh, shutdown, groups_close, events_tx) = (
            node.clone(),
            mesh.clone(),
            shutdown.clone(),
            groups_close.clone(),
            events_tx.clone(),
        );
        let handle = std::thread::Builder::new()
            .name(format!("mast-shard-{shard}"))
            .spawn(move || shard_thread(shard, cpu, node, mesh, shutdown, groups_close, events_tx))
            .map_err(|e| ServerError::Shard {
                shard,
                reason: format!("cannot spawn thread: {e}"),
            })?;
        threads.push(handle);
    }
    spawn_signal_thread(events_tx.clone())?;
    drop(events_tx);

    let mut listening = 0;
    let mut drained = 0;
    let mut failure: Option<ServerError> = None;
    let mut stopping = false;
    while drained < config.shards {
        let Ok(event) = events.recv() else { break };
        match event {
            Event::ShardListening(shard) => {
                tracing::debug!(shard, "shard listening");
                listening += 1;
                if listening == config.shards {
                    info!(addr = %config.http_addr, "mast is serving");
                }
            }
            Event::ShardFailed(shard, reason) => {
                error!(shard, %reason, "shard failed; stopping");
                failure.get_or_insert(ServerError::Shard { shard, reason });
                stopping = true;
                shutdown.trigger();
            }
            Event::HttpDrained(shard) => {
                tracing::debug!(shard, "shard drained");
                drained += 1;
            }
            Event::Reload => match &node.auth {
                Some(auth) => match auth.reload() {
                    Ok(n) => info!(tokens = n, "SIGHUP: token file re-read"),
                    Err(e) => {
                        error!(error = %e, "SIGHUP: token file refused; the previous tokens stay")
                    }
                },
                None => info!("SIGHUP: nothing to reload"),
            },
            Event::Signal(sig) => {
                if stopping {
                    warn!(
                        signal = sig,
                        "second signal; exiting without waiting for the drain"
                    );
                    std::process::exit(if failure.is_some() { 1 } else { 0 });
                }
                info!(
                    signal = sig,
                    "stopping: no new connections, draining in-flight requests"
                );
                stopping = true;
                shutdown.trigger();
            }
        }
    }
    groups_close.trigger();
    mesh.stop_all_blocking();
    let deadline = Instant::now() + Duration::from_millis(SHUTDOWN_JOIN_WAIT_MS);
    for t in threads {
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            warn!("a shard thread did not stop in time; exiting anyway");
            break;
        }
    }
    match failure {
        Some(e) => Err(e),
        None => {
            info!("mast stopped cleanly");
            Ok(())
        }
    }
}

fn shard_thread(
    shard: usize,
    cpu: usize,
    node: Arc<NodeInfo>,
    mesh: Arc<Mesh<Shard>>,
    shutdown: ShutdownSignal,
    groups_close: ShutdownSignal,
    events: mpsc::Sender<Event>,
) {
    let pinned = pin_current_thread(cpu);
    let failed = events.clone();
    let result = run_on_runtime(move |driver| async move {
        let listener = match bind_reuseport(node.http_addr) {
            Ok(l) => l,
            Err(e) => {
                let _ = events.send(Event::ShardFailed(
                    shard,
                    format!("bind {}: {e}", node.http_addr),
                ));
                return;
            }
        };
        let group = match open_group(shard, &node).await {
            Ok(g) => g,
            Err(e) => {
                let _ = events.send(Event::ShardFailed(shard, e));
                let _ = events.send(Event::HttpDrained(shard));
                return;
            }
        };
        group.start();
        let services = Rc::new(LeaderServices::new());
        if shard == 0 {
            services.attach(&group);
        }
        let admin_tasks = crate::admintask::AdminTasks::new(
            crate::admintask::AdminTaskConfig::for_master(node.http_addr),
            shard,
            mesh.shards(),
        );
        let ctx = Rc::new(Shard {
            id: shard,
            cpu,
            pinned,
            driver,
            node,
            mesh: mesh.clone(),
            http_metrics: Rc::new(HttpMetrics::new()),
            group,
            services,
            admin_tasks,
            cubefs_views: Default::default(),
            milvus_dd_watchers: Default::default(),
            loop_stalls: Default::default(),
            milvus_coord: Default::default(),
        });
        let jobs = {
            let (mesh, ctx) = (mesh.clone(), ctx.clone());
            monoio::spawn(async move { mesh.serve_jobs(shard, ctx).await })
        };
        let _ = events.send(Event::ShardListening(shard));
        monoio::spawn(leader_affinity(ctx.clone()));
        {
            let (stalls, group) = (ctx.loop_stalls.clone(), ctx.group.clone());
            monoio::spawn(super::stalls::probe(stalls, move || group.is_closed()));
        }
        if shard == 0 {
            let growth_ms = ctx.node.cubefs_dp_growth_interval_ms;
            monoio::spawn(crate::cubefs::vol_api::background_loop(
                ctx.clone(),
                2_000,
                growth_ms,
            ));
            monoio::spawn(crate::milvus::coord::background_loop(ctx.clone()));
        }
        crate::admintask::wire_registry(&ctx);
        monoio::spawn(crate::admintask::run_shard(ctx.clone()));
        let router = admin::router(ctx.clone());
        let router = crate::meta::kv::api::routes(router, ctx.clone());
        let router = crate::services::api::routes(router, ctx.clone());
        let router = crate::cubefs::routes(router, ctx.clone());
        let router = crate::admintask::http::routes(router, ctx.clone());
        let router = crate::milvus::routes(router, ctx.clone());
        #[cfg(feature = "fault-injection")]
        let router = super::fault::routes(router, ctx.clone());
        let router = crate::milvus::coord::routes(router, ctx.clone());
        let router = super::members_api::routes(router, ctx.clone());
        let router = crate::ctl::backup::routes(router, ctx.clone());
        // The one authentication check, ahead of every route (including 404s).
        let router = match &ctx.node.auth {
            Some(auth) => router.with_guard(auth.guard()),
            None => router,
        };
        let router = Rc::new(router);
        mast_http::serve(
            listener,
            router,
            Limits::default(),
            ctx.http_metrics.clone(),
            shutdown,
        )
        .await;
        let _ = events.send(Event::HttpDrained(shard));
        groups_close.wait().await;
        ctx.group.close();
        // Other shards may still be draining and calling into this one; keep serving their
        // jobs until the main thread stops every job loop.
        jobs.await;
    });
    if let Err(e) = result {
        let _ = failed.send(Event::ShardFailed(
            shard,
            format!("cannot build runtime: {e}"),
        ));
        let _ = failed.send(Event::HttpDrained(shard));
    }
}

/// How often a shard's leader checks that it leads where shard 0's leader is.
const LEADER_AFFINITY_CHECK_MS: u64 = 1_000;

/// Leader affinity: in steady state one node leads every shard (the CubeFS "master leader"),
/// so each shard's leader hands over to the node leading shard 0 when that node is a healthy
/// voter of this shard too. Runs until the shard's transport closes.
async fn leader_affinity(me: Rc<Shard>) {
    if me.id == 0 {
        return;
    }
    loop {
        monoio::time::sleep(Duration::from_millis(LEADER_AFFINITY_CHECK_MS)).await;
        if me.group.is_closed() {
            return;
        }
        if !me.group.is_leader() {
            continue;
        }
        let Ok(leader0) = me
            .mesh
            .submit_to(0, |s: Rc<Shard>| async move { s.group.leader() })
            .await
        else {
            return;
        };
        if leader0 != 0 && leader0 != me.node.id && me.group.is_healthy_voter(leader0) {
            info!(
                shard = me.id,
                to = leader0,
                "leader affinity: handing leadership to shard 0's leader"
            );
            let _ = me.group.transfer_leader(leader0);
        }
    }
}

async fn open_group(shard: usize, node: &NodeInfo) -> Result<Rc<Group<MetaTable>>, String> {
    let peers: std::collections::BTreeMap<u64, MemberAddrs> = node
        .cluster
        .members
        .iter()
        .map(|m| {
            (
                m.id,
                MemberAddrs {
                    peer_addr: m.peer_addr.clone(),
                    http_addr: m.http_addr.clone(),
                },
            )
        })
        .collect();
    let dir = node.data_dir.join(format!("shard-{shard}"));
    let id = ReplicaId {
        shard,
        node_id: node.id,
        cluster_id: node.cluster.cluster_id,
        listen_addr: node.shard_peer_addrs[shard],
        dir,
    };
    Group::open(
        id,
        &peers,
        node.cluster.bootstrap,
        node.group_options.clone(),
    )
    .await
}

fn bind_reuseport(addr: SocketAddr) -> std::io::Result<monoio::net::TcpListener> {
    let opts = monoio::net::ListenerOpts::new()
        .reuse_port(true)
        .reuse_addr(true)
        .backlog(4096);
    monoio::net::TcpListener::bind_with_config(addr, &opts)
}

/// How long start-up waits for the HTTP port to become free. A process killed a moment ago
/// can hold its listener for a few milliseconds more while the kernel tears down its
/// io_uring instance, so a supervisor's immediate restart must not fail on that.
const PORT_FREE_WAIT_MS: u64 = 2_000;

/// SO_REUSEPORT would let two servers share a port silently; a plain bind first proves the
/// port is ours.
fn check_port_free(addr: SocketAddr) -> Result<(), ServerError> {
    let deadline = Instant::now() + Duration::from_millis(PORT_FREE_WAIT_MS);
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(ServerError::HttpAddr {
                    addr,
                    reason: e.to_string(),
                })
            }
        }
    }
}

/// Two servers on one data directory would corrupt each other's logs: hold an exclusive
/// flock on `DATA/LOCK` for the life of the process.
fn lock_data_dir(dir: &Path) -> Result<nix::fcntl::Flock<File>, ServerError> {
    let fail = |reason: String| ServerError::DataDir {
        path: dir.display().to_string(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create: {e}")))?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))
        .map_err(|e| fail(format!("cannot open LOCK: {e}")))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            Err(fail("in use by another mast process".into()))
        }
        Err((_, e)) => Err(fail(format!("cannot lock: {e}"))),
    }
}

fn spawn_signal_thread(events: mpsc::Sender<Event>) -> Result<(), ServerError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(ServerError::Signals)?;
    std::thread::Builder::new()
        .name("mast-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let event = if sig == SIGHUP {
                    Event::Reload
                } else {
                    Event::Signal(sig)
                };
                if events.send(event).is_err() {
                    return;
                }
            }
        })
        .map_err(ServerError::Signals)?;
    Ok(())
}
