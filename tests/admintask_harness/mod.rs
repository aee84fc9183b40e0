//! A fake CubeFS master for the admin task tests: one monoio runtime on a thread of its own
//! running an `AdminTasks` manager (shard 0 of 1) fed by a test-owned node list, and an
//! HTTP server answering `/admin/getIp`, `/dataNode/add`, `/metaNode/add` (IDs by address,
//! idempotent, as §7 says) and the real `/dataNode/response` / `/metaNode/response`
//! handlers. Tests run closures against the manager on its thread (`with`, `with_async`).
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mast::admintask::http as task_http;
use mast::admintask::{AdminTaskConfig, AdminTasks, ListSource, NodeRef, Role};
use mast_http::{HttpMetrics, Limits, Method, Request, Response, Router, ShutdownSignal};

type Job = Box<dyn FnOnce(Rc<AdminTasks>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// Registrations the fake master accepted: (addr, id, role, zone).
pub type Registry = Arc<Mutex<Vec<(String, u64, Role, String)>>>;

pub struct FakeMaster {
    pub http_addr: SocketAddr,
    pub driving: Arc<AtomicBool>,
    pub registry: Registry,
    jobs: flume::Sender<Job>,
    shutdown: ShutdownSignal,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Fast intervals so the rules play out in seconds.
pub fn fast_config() -> AdminTaskConfig {
    AdminTaskConfig {
        sender_tick_ms: 50,
        heartbeat_interval_ms: 200,
        // Several intervals, so a loaded machine does not make a live node look silent.
        inactive_after_ms: 1_000,
        resend_after_ms: 300,
        sends_max: 3,
        drop_after_ms: 10_000,
        connect_timeout_ms: 1_000,
        write_retry_ms: 100,
        sync_reply_timeout_ms: 1_000,
        ack_timeout_ms: 1_000,
        ..AdminTaskConfig::default()
    }
}

impl FakeMaster {
    pub fn start(config: AdminTaskConfig) -> FakeMaster {
        let driving = Arc::new(AtomicBool::new(true));
        let registry: Registry = Arc::new(Mutex::new(Vec::new()));
        let shutdown = ShutdownSignal::new();
        let (jobs, rx) = flume::unbounded::<Job>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (d, r, s) = (driving.clone(), registry.clone(), shutdown.clone());
        let thread = std::thread::spawn(move || {
            mast::node::runtime::run_on_runtime(move |_| async move {
                let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let mut config = config;
                let addr = listener.local_addr().unwrap();
                config.master_addr = addr.to_string();
                let tasks = AdminTasks::new(config, 0, 1);
                let source = Rc::new(ListSource::default());
                tasks.set_node_source(Rc::new(source.clone()));
                let router = Rc::new(router(tasks.clone(), source, r));
                monoio::spawn(mast_http::serve(
                    listener,
                    router,
                    Limits::default(),
                    Rc::new(HttpMetrics::new()),
                    s.clone(),
                ));
                let stop = Rc::new(std::cell::Cell::new(false));
                let stop2 = stop.clone();
                let t2 = tasks.clone();
                monoio::spawn(async move {
                    t2.run(
                        move || {
                            let d = d.clone();
                            async move { d.load(Ordering::SeqCst) }
                        },
                        move || stop2.get(),
                    )
                    .await
                });
                monoio::spawn(async move {
                    while let Ok(job) = rx.recv_async().await {
                        monoio::spawn(job(tasks.clone()));
                    }
                });
                ready_tx.send(addr).unwrap();
                s.wait().await;
                stop.set(true);
            })
            .unwrap();
        });
        let http_addr = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("fake master started");
        FakeMaster {
            http_addr,
            driving,
            registry,
            jobs,
            shutdown,
            thread: Some(thread),
        }
    }

    /// Runs `f` on the manager's thread and returns its result.
    pub fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Rc<AdminTasks>) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = std::sync::mpsc::channel();
        let job: Job = Box::new(move |t| {
            let r = f(&t);
            let _ = tx.send(r);
            Box::pin(async {})
        });
        self.jobs.send(job).unwrap();
        rx.recv_timeout(Duration::from_secs(30)).expect("job ran")
    }

    /// Runs an async `f` on the manager's thread and returns its result.
    pub fn with_async<R, F, Fut>(&self, f: F) -> R
    where
        R: Send + 'static,
        F: FnOnce(Rc<AdminTasks>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let job: Job = Box::new(move |t| {
            Box::pin(async move {
                let r = f(t).await;
                let _ = tx.send(r);
            })
        });
        self.jobs.send(job).unwrap();
        rx.recv_timeout(Duration::from_secs(60)).expect("job ran")
    }

    pub fn registered(&self) -> Vec<(String, u64, Role, String)> {
        self.registry.lock().unwrap().clone()
    }

    pub fn live(&self, addr: &str) -> Option<mast::admintask::NodeLive> {
        let a = addr.to_string();
        self.with(move |t| t.live(&a))
    }
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn envelope(data: serde_json::Value) -> Response {
    Response::json(
        200,
        &serde_json::json!({"code":0,"msg":"success","data":data}),
    )
}

fn router(tasks: Rc<AdminTasks>, source: Rc<ListSource>, registry: Registry) -> Router {
    let mut router = Router::new().route(Method::GET, "/admin/getIp", |req: Request| {
        let ip = req
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        async move { envelope(serde_json::json!({"Cluster":"test","Ip":ip})) }
    });
    for (path, role) in [("/dataNode/add", Role::Data), ("/metaNode/add", Role::Meta)] {
        let (source, registry) = (source.clone(), registry.clone());
        router = router.route(Method::GET, path, move |req: Request| {
            let addr = req
                .query_param("addr")
                .map(|a| a.into_owned())
                .unwrap_or_default();
            let zone = req
                .query_param("zoneName")
                .map(|a| a.into_owned())
                .filter(|z| !z.is_empty())
                .unwrap_or_else(|| "default".into());
            let mut reg = registry.lock().unwrap();
            let id = match reg.iter().find(|(a, ..)| *a == addr) {
                Some((_, id, ..)) => *id,
                None => {
                    let id = reg.len() as u64 + 1;
                    reg.push((addr.clone(), id, role, zone.clone()));
                    source.nodes.borrow_mut().push(NodeRef {
                        id,
                        addr,
                        role,
                        zone,
                    });
                    id
                }
            };
            async move {
                Response::bytes(
                    200,
                    "application/json",
                    format!(r#"{{"code":0,"msg":"success","data":{id}}}"#)
                        .into_bytes()
                        .into(),
                )
            }
        });
    }
    for (path, role) in [
        ("/dataNode/response", Role::Data),
        ("/metaNode/response", Role::Meta),
    ] {
        let tasks = tasks.clone();
        router = router.route(Method::POST, path, move |req: Request| {
            let r = match task_http::parse(role, req.body()) {
                Ok(t) => task_http::reply(&tasks, t),
                Err(r) => r,
            };
            async move { r }
        });
    }
    router
}

/// Polls `f` until it returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn agent_config(
    master: SocketAddr,
    role: Role,
    simulate: usize,
    dir: &std::path::Path,
) -> mast::agent::AgentConfig {
    mast::agent::AgentConfig {
        role,
        masters: vec![master.to_string()],
        zone: "z1".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        simulate,
        data_dir: dir.to_path_buf(),
        control: None,
        capacity_bytes: 100 << 30,
        preload_partitions: 0,
        register_retry_ms: 100,
        http_timeout_ms: 2_000,
    }
}
