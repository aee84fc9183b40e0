//! Thread-per-core runtime: one OS thread per shard, pinned to one CPU, each running its own
//! monoio executor; shards share nothing mutable and talk through [`Mesh::submit_to`].
//!
//! A cross-shard call is a `Send` closure shipped over a bounded channel to the target
//! shard, where it builds a (non-`Send`) future against that shard's context; the reply comes
//! back over a oneshot. A full queue makes the caller wait (backpressure) or, with
//! [`Mesh::try_submit_to`], fail at once: nothing is ever buffered without bound.

use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use tracing::{info, warn};

/// Cross-shard jobs one shard runs per wake-up before it yields to its driver. Without the
/// bound a busy sender on another core could keep the job loop ready forever and starve the
/// shard's own connections (monoio 0.2.4 has no fair yield; see ARCHITECTURE.md).
const JOBS_PER_WAKEUP_MAX: usize = 64;

type Job<C> = Box<dyn FnOnce(&Rc<C>) + Send>;

/// What travels over a shard's inbound queue. `Stop` is ordered after every job queued
/// before it, so a stopping shard still answers the calls it already accepted.
enum Msg<C> {
    Run(Job<C>),
    Stop,
}

/// Why a cross-shard call did not produce a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum XShardError {
    #[error("no such shard")]
    NoSuchShard,
    #[error("target shard's queue is full")]
    QueueFull,
    #[error("target shard has stopped")]
    Stopped,
}

/// Counters for one shard's inbound queue, readable from any thread.
#[derive(Debug, Default)]
pub struct QueueStats {
    pub submitted: AtomicU64,
    pub rejected_full: AtomicU64,
}

/// The set of shards and the bounded queues between them. Shared by all shard threads.
pub struct Mesh<C> {
    senders: Vec<flume::Sender<Msg<C>>>,
    receivers: Mutex<Vec<Option<flume::Receiver<Msg<C>>>>>,
    stats: Vec<QueueStats>,
}

impl<C: 'static> Mesh<C> {
    /// A mesh of `shards` shards, each with an inbound queue of `queue_len` jobs.
    pub fn new(shards: usize, queue_len: usize) -> Arc<Self> {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..shards)
            .map(|_| flume::bounded(queue_len.max(1)))
            .map(|(s, r)| (s, Some(r)))
            .unzip();
        Arc::new(Mesh {
            senders,
            receivers: Mutex::new(receivers),
            stats: (0..shards).map(|_| QueueStats::default()).collect(),
        })
    }

    pub fn shards(&self) -> usize {
        self.senders.len()
    }

    /// Jobs waiting in `shard`'s inbound queue.
    pub fn queue_depth(&self, shard: usize) -> usize {
        self.senders.get(shard).map_or(0, |s| s.len())
    }

    pub fn queue_stats(&self, shard: usize) -> Option<&QueueStats> {
        self.stats.get(shard)
    }

    /// Runs `f` on `shard` against its context and returns what its future yields. Waits for
    /// room when the target's queue is full.
    pub async fn submit_to<R, F, Fut>(&self, shard: usize, f: F) -> Result<R, XShardError>
    where
        F: FnOnce(Rc<C>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        let sender = self.senders.get(shard).ok_or(XShardError::NoSuchShard)?;
        let (job, reply) = make_job(f);
        sender
            .send_async(Msg::Run(job))
            .await
            .map_err(|_| XShardError::Stopped)?;
        self.stats[shard].submitted.fetch_add(1, Ordering::Relaxed);
        reply.await.map_err(|_| XShardError::Stopped)
    }

    /// Like [`Mesh::submit_to`] but fails with [`XShardError::QueueFull`] instead of waiting.
    pub fn try_submit_to<R, F, Fut>(
        &self,
        shard: usize,
        f: F,
    ) -> Result<impl Future<Output = Result<R, XShardError>>, XShardError>
    where
        F: FnOnce(Rc<C>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        let sender = self.senders.get(shard).ok_or(XShardError::NoSuchShard)?;
        let (job, reply) = make_job(f);
        match sender.try_send(Msg::Run(job)) {
            Ok(()) => {
                self.stats[shard].submitted.fetch_add(1, Ordering::Relaxed);
                Ok(async move { reply.await.map_err(|_| XShardError::Stopped) })
            }
            Err(flume::TrySendError::Full(_)) => {
                self.stats[shard]
                    .rejected_full
                    .fetch_add(1, Ordering::Relaxed);
                Err(XShardError::QueueFull)
            }
            Err(flume::TrySendError::Disconnected(_)) => Err(XShardError::Stopped),
        }
    }

    /// Asks every shard's job loop to return once it has run what is already queued.
    pub async fn stop_all(&self) {
        for sender in &self.senders {
            let _ = sender.send_async(Msg::Stop).await;
        }
    }

    /// [`Mesh::stop_all`] for a thread outside any runtime (the main thread at shutdown).
    pub fn stop_all_blocking(&self) {
        for sender in &self.senders {
            let _ = sender.send(Msg::Stop);
        }
    }

    /// Serves `shard`'s inbound queue against `ctx` until [`Mesh::stop_all`]. Call once per
    /// shard, from that shard's thread; a second call returns at once.
    pub async fn serve_jobs(&self, shard: usize, ctx: Rc<C>) {
        let receiver = match self.receivers.lock() {
            Ok(mut r) => r.get_mut(shard).and_then(Option::take),
            Err(_) => None,
        };
        let Some(receiver) = receiver else { return };
        while let Ok(msg) = receiver.recv_async().await {
            let Msg::Run(job) = msg else { return };
            job(&ctx);
            let mut ran = 1;
            while ran < JOBS_PER_WAKEUP_MAX {
                match receiver.try_recv() {
                    Ok(Msg::Run(job)) => {
                        job(&ctx);
                        ran += 1;
                    }
                    Ok(Msg::Stop) => return,
                    Err(_) => break,
                }
            }
            if ran == JOBS_PER_WAKEUP_MAX {
                yield_to_driver().await;
            }
        }
    }
}

fn make_job<C, R, F, Fut>(f: F) -> (Job<C>, futures_channel::oneshot::Receiver<R>)
where
    C: 'static,
    F: FnOnce(Rc<C>) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
    R: Send + 'static,
{
    let (tx, rx) = futures_channel::oneshot::channel();
    let job: Job<C> = Box::new(move |ctx: &Rc<C>| {
        let fut = f(ctx.clone());
        monoio::spawn(async move {
            // The caller may have given up (dropped its future); that is not an error here.
            let _ = tx.send(fut.await);
        });
    });
    (job, rx)
}

/// Gives every other task on this thread a turn. A timer, unlike a self-wake, is fired by the
/// driver only after the ready queue has drained, so this is fair on monoio 0.2.4.
pub async fn yield_to_driver() {
    monoio::time::sleep(Duration::ZERO).await;
}

/// Which I/O driver a shard's runtime got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    Epoll,
}

impl Driver {
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        }
    }
}

static EPOLL_FALLBACK_LOGGED: Once = Once::new();

/// Builds a shard runtime (io_uring, or epoll where io_uring is unavailable) and runs
/// `main` on it to completion.
pub fn run_on_runtime<F, Fut>(main: F) -> std::io::Result<Fut::Output>
where
    F: FnOnce(Driver) -> Fut,
    Fut: Future,
{
    let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()?;
    match rt {
        monoio::FusionRuntime::Uring(mut rt) => Ok(rt.block_on(main(Driver::IoUring))),
        monoio::FusionRuntime::Legacy(mut rt) => {
            EPOLL_FALLBACK_LOGGED.call_once(|| {
                warn!("io_uring is unavailable (kernel, seccomp or RLIMIT_MEMLOCK); shards fall back to epoll")
            });
            Ok(rt.block_on(main(Driver::Epoll)))
        }
    }
}

/// Pins the calling thread to `cpu`. Failure is logged, not fatal: a shard still works
/// unpinned (for example in a container whose CPU set changed under it).
pub fn pin_current_thread(cpu: usize) -> bool {
    let mut set = nix::sched::CpuSet::new();
    let pinned = set.set(cpu).is_ok()
        && nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_ok();
    if pinned {
        info!(cpu, "pinned shard thread");
    } else {
        warn!(cpu, "could not pin shard thread; running unpinned");
    }
    pinned
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    struct Ctx {
        shard: usize,
        hits: Cell<u64>,
    }

    fn start(mesh: &Arc<Mesh<Ctx>>, shard: usize) -> std::thread::JoinHandle<u64> {
        let mesh = mesh.clone();
        std::thread::spawn(move || {
            run_on_runtime(|_| async move {
                let ctx = Rc::new(Ctx {
                    shard,
                    hits: Cell::new(0),
                });
                mesh.serve_jobs(shard, ctx.clone()).await;
                ctx.hits.get()
            })
            .unwrap()
        })
    }

    #[test]
    fn calls_run_on_the_target_shard_and_reply() {
        let mesh = Mesh::<Ctx>::new(2, 8);
        let workers: Vec<_> = (0..2).map(|s| start(&mesh, s)).collect();
        let m = mesh.clone();
        let replies = run_on_runtime(|_| async move {
            let mut out = Vec::new();
            for i in 0..100u64 {
                let r = m
                    .submit_to((i % 2) as usize, move |ctx: Rc<Ctx>| async move {
                        ctx.hits.set(ctx.hits.get() + 1);
                        (ctx.shard, i * 2)
                    })
                    .await
                    .unwrap();
                out.push(r);
            }
            assert_eq!(
                m.submit_to(5, |_c: Rc<Ctx>| async {}).await,
                Err(XShardError::NoSuchShard)
            );
            m.stop_all().await;
            out
        })
        .unwrap();
        for (i, (shard, v)) in replies.into_iter().enumerate() {
            assert_eq!(shard, i % 2);
            assert_eq!(v, i as u64 * 2);
        }
        let hits: Vec<u64> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        assert_eq!(hits, vec![50, 50]);
    }

    #[test]
    fn a_full_queue_refuses_instead_of_buffering() {
        // No shard serves this mesh, so nothing drains the queue of length 2.
        let mesh = Mesh::<Ctx>::new(1, 2);
        let mut pending = Vec::new();
        for _ in 0..2 {
            pending.push(mesh.try_submit_to(0, |_c: Rc<Ctx>| async {}).map(|_| ()));
        }
        assert!(pending.iter().all(Result::is_ok));
        assert_eq!(
            mesh.try_submit_to(0, |_c: Rc<Ctx>| async {}).err(),
            Some(XShardError::QueueFull)
        );
        assert_eq!(mesh.queue_depth(0), 2);
        assert_eq!(
            mesh.queue_stats(0)
                .unwrap()
                .rejected_full
                .load(Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn a_busy_job_queue_does_not_starve_other_tasks() {
        // Each job enqueues its successor before it returns, so the shard's queue is never
        // empty. The shard's own timer task must still get its turns during that flood.
        struct Flood {
            mesh: std::sync::Weak<Mesh<Flood>>,
            jobs_run: Cell<u64>,
            local_done: Cell<bool>,
            jobs_when_local_done: Cell<u64>,
        }
        const CHAIN_JOBS_MAX: u64 = 2_000_000;
        fn chain(ctx: Rc<Flood>) -> std::future::Ready<()> {
            ctx.jobs_run.set(ctx.jobs_run.get() + 1);
            let mesh = ctx.mesh.upgrade().unwrap();
            if ctx.jobs_run.get() < CHAIN_JOBS_MAX && !ctx.local_done.get() {
                let _ = mesh.try_submit_to(0, chain);
            } else {
                mesh.try_submit_to(0, |_c: Rc<Flood>| async {}).ok();
            }
            std::future::ready(())
        }
        let mesh = Mesh::<Flood>::new(1, 16);
        let ctx = Rc::new(Flood {
            mesh: Arc::downgrade(&mesh),
            jobs_run: Cell::new(0),
            local_done: Cell::new(false),
            jobs_when_local_done: Cell::new(0),
        });
        let c = ctx.clone();
        run_on_runtime(|_| async move {
            let local = c.clone();
            monoio::spawn(async move {
                for _ in 0..3 {
                    monoio::time::sleep(Duration::from_millis(1)).await;
                }
                local.local_done.set(true);
                local.jobs_when_local_done.set(local.jobs_run.get());
                local.mesh.upgrade().unwrap().stop_all().await;
            });
            let _ = mesh.try_submit_to(0, chain);
            mesh.serve_jobs(0, c).await;
        })
        .unwrap();
        assert!(ctx.local_done.get(), "the local task never ran");
        assert!(
            ctx.jobs_when_local_done.get() < CHAIN_JOBS_MAX,
            "the local task only ran after the flood of {CHAIN_JOBS_MAX} jobs ended"
        );
    }
}
