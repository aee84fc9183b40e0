//! The load generator: thread per core, each thread one monoio runtime driving its share of the
//! connections.
//!
//! Per connection, a writer task sends requests (pipelined up to `pipeline` in flight) and a
//! reader task parses responses in order. In closed loop the writer sends as soon as a slot is
//! free; in open loop it follows a schedule of intended send times (`rate / connections` per
//! connection, phases spread), and latency is measured from the intended time, so a stalled
//! server is charged for every request it delayed (coordinated omission corrected, as wrk2 does).
//! A per-thread housekeeping task cuts interval snapshots and enforces timeouts by shutting the
//! socket down, which wakes both tasks without cancelling any in-flight io_uring operation.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;

use crate::http::{location_authority, parse_response};
use crate::notify::{Notify, Timer};
use crate::stats::{ErrorKind, IntervalStats, OpKind, Outcome, Recorder};
use crate::workload::{ConnInfo, Op, Workload, WorkloadFactory};

/// Most connections one run may open.
pub const CONNECTIONS_MAX: usize = 100_000;
/// Most client threads.
pub const THREADS_MAX: usize = 1024;
/// Deepest pipeline per connection.
pub const PIPELINE_MAX: usize = 4096;
/// Initial read buffer per connection; it grows up to `response_bytes_max`.
const READ_BUF_BYTES: usize = 16 << 10;
/// How often the housekeeping task checks timeouts.
const HOUSEKEEPING_PERIOD: Duration = Duration::from_millis(5);
/// Longest pause between reconnect attempts.
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_millis(100);
/// Delay between `run` being called and the first request, so every thread is up.
const START_DELAY: Duration = Duration::from_millis(50);

/// Which target each connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetMode {
    /// Connection `i` uses target `i % targets`.
    Spread,
    /// Every connection starts at the first target and follows 307/308 leader hints.
    Leader,
}

/// Everything about a run except the workload.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Server addresses.
    pub targets: Vec<SocketAddr>,
    /// How connections pick their target.
    pub target_mode: TargetMode,
    /// Number of connections.
    pub connections: usize,
    /// Number of client threads (each a monoio runtime); connections are dealt round-robin.
    pub threads: usize,
    /// CPUs to pin thread `t` to (`cpus[t % len]`); empty = no pinning.
    pub cpus: Vec<usize>,
    /// Requests in flight per connection (1 = no pipelining).
    pub pipeline: usize,
    /// Open loop at this many requests per second in total; `None` = closed loop.
    pub rate: Option<f64>,
    /// Time before measuring (requests run but are reported apart).
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
    /// Stop after this many requests in total (split over the connections).
    pub requests_max: Option<u64>,
    /// Limit on opening a connection.
    pub connect_timeout: Duration,
    /// Limit on waiting for a response (from its actual send).
    pub response_timeout: Duration,
    /// Length of one time-series interval.
    pub interval: Duration,
    /// Largest response accepted, head and body, in bytes.
    pub response_bytes_max: usize,
    /// Seed for the workloads' random choices.
    pub seed: u64,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            target_mode: TargetMode::Spread,
            connections: 64,
            threads: 1,
            cpus: Vec::new(),
            pipeline: 1,
            rate: None,
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(10),
            requests_max: None,
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
            interval: Duration::from_secs(1),
            response_bytes_max: 4 << 20,
            seed: 0x6d61_7374,
        }
    }
}

impl RunConfig {
    /// Checks every limit; the message names the offending setting.
    pub fn validate(&self) -> Result<(), RunError> {
        let bad = |m: &str| Err(RunError::Config(m.to_string()));
        if self.targets.is_empty() {
            return bad("at least one target is needed");
        }
        if self.connections == 0 || self.connections > CONNECTIONS_MAX {
            return bad("connections must be within 1..=100000");
        }
        if self.threads == 0 || self.threads > THREADS_MAX {
            return bad("threads must be within 1..=1024");
        }
        if self.pipeline == 0 || self.pipeline > PIPELINE_MAX {
            return bad("pipeline must be within 1..=4096");
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return bad("rate must be a positive number of requests per second");
            }
            if self.connections as f64 / rate > 3600.0 {
                return bad("rate too low: each connection would wait over an hour");
            }
            if rate / self.connections as f64 > 1e9 {
                return bad("rate too high for the number of connections");
            }
        }
        if self.duration.is_zero() {
            return bad("duration must be positive");
        }
        if self.interval < Duration::from_millis(10) {
            return bad("interval must be at least 10ms");
        }
        if self.connect_timeout.is_zero() || self.response_timeout.is_zero() {
            return bad("timeouts must be positive");
        }
        if self.response_bytes_max < 1024 {
            return bad("response size limit must be at least 1024 bytes");
        }
        Ok(())
    }
}

/// Why a run could not happen.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A client thread could not be set up (runtime, pinning).
    #[error("client thread {thread}: {message}")]
    Thread {
        /// Thread index.
        thread: usize,
        /// What failed.
        message: String,
    },
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Requests whose intended send time fell in the measured window.
    pub total: Recorder,
    /// Requests of the warm-up.
    pub warmup: Recorder,
    /// Time series, warm-up included, in order.
    pub intervals: Vec<IntervalStats>,
    /// Length of the measured window actually used (shorter than configured when the
    /// workload or the request budget ran out first).
    pub elapsed: Duration,
    /// Wall-clock time at which the measured window began.
    pub measure_start: SystemTime,
    /// Whether it was an open-loop run.
    pub open_loop: bool,
    /// CPU time the client process used during the run (all threads, warm-up included).
    pub client_cpu: Duration,
    /// Wall-clock time of the whole run (warm-up and drain included).
    pub wall: Duration,
}

impl RunResult {
    /// Completed operations per second over the measured window.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.total.completed() as f64 / secs
        } else {
            0.0
        }
    }
}

/// Runs `factory`'s workload against `cfg.targets`, calling `on_interval` from the calling
/// thread each time every client thread has reported an interval. Blocks until done; every
/// run ends by itself (duration plus at most one response timeout to drain).
pub fn run(
    cfg: &RunConfig,
    factory: Arc<dyn WorkloadFactory>,
    on_interval: &mut dyn FnMut(&IntervalStats),
) -> Result<RunResult, RunError> {
    cfg.validate()?;
    let cfg = Arc::new(cfg.clone());
    let cpu_before = process_cpu_time();
    let wall_start = Instant::now();
    let start = wall_start + START_DELAY;
    let measure_start_wall = SystemTime::now() + START_DELAY + cfg.warmup;
    let (tx, rx) = mpsc::channel::<IntervalStats>();
    let mut handles = Vec::with_capacity(cfg.threads);
    for t in 0..cfg.threads {
        let cfg = cfg.clone();
        let factory = factory.clone();
        let tx = tx.clone();
        let h = std::thread::Builder::new()
            .name(format!("mast-load-{t}"))
            .spawn(move || thread_main(t, cfg, factory, start, tx))
            .map_err(|e| RunError::Thread {
                thread: t,
                message: e.to_string(),
            })?;
        handles.push(h);
    }
    drop(tx);
    let mut pending: BTreeMap<u64, (usize, IntervalStats)> = BTreeMap::new();
    let mut intervals = Vec::new();
    // Ends when every thread has dropped its sender, i.e. finished.
    for iv in rx {
        let slot = pending.entry(iv.index).or_insert_with(|| {
            (
                0,
                IntervalStats {
                    index: iv.index,
                    start: iv.start,
                    length: iv.length,
                    warmup: iv.warmup,
                    recorder: Recorder::new(),
                },
            )
        });
        slot.0 += 1;
        slot.1.recorder.merge(&iv.recorder);
        slot.1.length = slot.1.length.max(iv.length);
        if slot.0 == cfg.threads {
            if let Some((_, done)) = pending.remove(&iv.index) {
                on_interval(&done);
                intervals.push(done);
            }
        }
    }
    // Threads that ended early leave partial slots behind.
    intervals.extend(pending.into_values().map(|(_, iv)| iv));
    intervals.sort_by_key(|iv| iv.index);
    let mut total = Recorder::new();
    let mut warmup = Recorder::new();
    let mut last_response: Option<Instant> = None;
    for (t, h) in handles.into_iter().enumerate() {
        let out = h.join().map_err(|_| RunError::Thread {
            thread: t,
            message: "panicked".into(),
        })??;
        total.merge(&out.total);
        warmup.merge(&out.warmup);
        last_response = last_response.max(out.last_measured_response);
    }
    let measure_start = start + cfg.warmup;
    let end = measure_start + cfg.duration;
    let elapsed = last_response
        .map(|t| t.min(end).saturating_duration_since(measure_start))
        .unwrap_or(Duration::ZERO);
    Ok(RunResult {
        total,
        warmup,
        intervals,
        elapsed,
        measure_start: measure_start_wall,
        open_loop: cfg.rate.is_some(),
        client_cpu: process_cpu_time().saturating_sub(cpu_before),
        wall: wall_start.elapsed(),
    })
}

/// User plus system CPU time of this process so far.
fn process_cpu_time() -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given; nothing else is touched.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut u) != 0 {
            return Duration::ZERO;
        }
        u
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

struct ThreadOutput {
    total: Recorder,
    warmup: Recorder,
    last_measured_response: Option<Instant>,
}

fn pin_to_cpu(cpu: usize) -> Result<(), String> {
    // SAFETY: cpu_set_t is plain data; CPU_SET checks nothing, so bound `cpu` first.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
            return Err(format!("cpu {cpu} out of range"));
        }
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "pinning to cpu {cpu}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn thread_main(
    t: usize,
    cfg: Arc<RunConfig>,
    factory: Arc<dyn WorkloadFactory>,
    start: Instant,
    tx: mpsc::Sender<IntervalStats>,
) -> Result<ThreadOutput, RunError> {
    let err = |message: String| RunError::Thread { thread: t, message };
    if !cfg.cpus.is_empty() {
        pin_to_cpu(cfg.cpus[t % cfg.cpus.len()]).map_err(err)?;
    }
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .map_err(|e| err(format!("runtime: {e}")))?;
    Ok(rt.block_on(thread_run(t, cfg, factory, start, tx)))
}

/// Per-thread state shared by its tasks.
struct ThreadCtx {
    cfg: Arc<RunConfig>,
    start: Instant,
    measure_start: Instant,
    end: Instant,
    stats: RefCell<ThreadStats>,
    conns: RefCell<Vec<Rc<ConnShared>>>,
    /// Sub-millisecond timer for the open-loop schedule (`None` in closed loop).
    timer: Option<Timer>,
}

struct ThreadStats {
    total: Recorder,
    warmup: Recorder,
    interval: Recorder,
    last_measured_response: Option<Instant>,
}

impl ThreadCtx {
    fn record(&self, op: OpKind, outcome: Outcome, req: &InFlight, now: Instant) {
        let corrected = now.saturating_duration_since(req.intended);
        let service = now.saturating_duration_since(req.sent);
        let lag = req.sent.saturating_duration_since(req.intended);
        let mut s = self.stats.borrow_mut();
        s.interval.record(op, outcome, corrected, service, lag);
        if req.intended < self.measure_start {
            s.warmup.record(op, outcome, corrected, service, lag);
        } else {
            s.total.record(op, outcome, corrected, service, lag);
            s.last_measured_response = Some(now);
        }
    }

    /// Counts the open-loop slots `next + k * period` in `[next, end)` that were never sent,
    /// split between warm-up and the measured window by their intended time.
    fn record_unsent(&self, schedule: &Schedule) {
        let Schedule::Open { next, period } = *schedule else {
            return;
        };
        let slots_before = |t: Instant| -> u64 {
            // Slots k >= 0 with next + k * period < t.
            if t <= next {
                return 0;
            }
            let span = t.duration_since(next).as_nanos();
            let p = period.as_nanos().max(1);
            u64::try_from(span.div_ceil(p)).unwrap_or(u64::MAX)
        };
        let in_warmup = slots_before(self.measure_start.min(self.end));
        let all = slots_before(self.end);
        let mut s = self.stats.borrow_mut();
        s.interval.record_errors(ErrorKind::Unsent, all);
        s.warmup.record_errors(ErrorKind::Unsent, in_warmup);
        s.total.record_errors(ErrorKind::Unsent, all - in_warmup);
    }

    fn record_error(&self, kind: ErrorKind, now: Instant) {
        let mut s = self.stats.borrow_mut();
        s.interval.record_error(kind);
        if now < self.measure_start {
            s.warmup.record_error(kind);
        } else {
            s.total.record_error(kind);
        }
    }
}

async fn thread_run(
    t: usize,
    cfg: Arc<RunConfig>,
    factory: Arc<dyn WorkloadFactory>,
    start: Instant,
    tx: mpsc::Sender<IntervalStats>,
) -> ThreadOutput {
    let measure_start = start + cfg.warmup;
    // Without the precise timer an open-loop run still works, with millisecond send jitter.
    let timer = cfg.rate.and_then(|_| Timer::start().ok());
    let ring = match &timer {
        Some(Timer::Ring(t)) => Some(t.clone()),
        _ => None,
    };
    let ring_task = ring.clone().map(|t| monoio::spawn(t.run()));
    let ctx = Rc::new(ThreadCtx {
        cfg: cfg.clone(),
        start,
        measure_start,
        end: measure_start + cfg.duration,
        stats: RefCell::new(ThreadStats {
            total: Recorder::new(),
            warmup: Recorder::new(),
            interval: Recorder::new(),
            last_measured_response: None,
        }),
        conns: RefCell::new(Vec::new()),
        timer,
    });
    let mut tasks = Vec::new();
    for index in (t..cfg.connections).step_by(cfg.threads) {
        let conn = ConnInfo {
            index,
            count: cfg.connections,
            seed: (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        };
        let workload = factory.build(conn);
        let shared = Rc::new(ConnShared::default());
        ctx.conns.borrow_mut().push(shared.clone());
        tasks.push(monoio::spawn(connection(
            ctx.clone(),
            shared,
            conn,
            workload,
        )));
    }
    let done = Rc::new(Cell::new(false));
    let housekeeping = monoio::spawn(housekeeping(ctx.clone(), done.clone(), tx));
    for task in tasks {
        task.await;
    }
    if let (Some(t), Some(task)) = (ring, ring_task) {
        t.stop();
        task.await;
    }
    done.set(true);
    housekeeping.await;
    let s = ctx.stats.borrow();
    ThreadOutput {
        total: s.total.clone(),
        warmup: s.warmup.clone(),
        last_measured_response: s.last_measured_response,
    }
}

/// Cuts interval snapshots and enforces response timeouts and the end of the drain.
async fn housekeeping(ctx: Rc<ThreadCtx>, done: Rc<Cell<bool>>, tx: mpsc::Sender<IntervalStats>) {
    let cfg = &ctx.cfg;
    let drain_end = ctx.end + cfg.response_timeout;
    let mut index: u64 = 0;
    let mut interval_start = ctx.start;
    let send = |ctx: &ThreadCtx, index: u64, from: Instant, to: Instant| {
        let recorder = std::mem::take(&mut ctx.stats.borrow_mut().interval);
        let start = from.saturating_duration_since(ctx.start);
        // The receiver only goes away if the caller stopped listening; nothing to do then.
        let _ = tx.send(IntervalStats {
            index,
            start,
            length: to.saturating_duration_since(from),
            warmup: from < ctx.measure_start,
            recorder,
        });
    };
    monoio::time::sleep_until(monoio::time::Instant::from_std(ctx.start)).await;
    // Bounded: every pass sleeps, and the connections all end by `drain_end` (the loop below
    // shuts their sockets down), after which `done` is set.
    loop {
        let now = Instant::now();
        if done.get() {
            let empty = {
                let s = ctx.stats.borrow();
                s.interval.completed() == 0 && s.interval.error_total() == 0
            };
            if !empty {
                send(&ctx, index, interval_start, now.max(interval_start));
            }
            return;
        }
        while now >= interval_start + cfg.interval {
            let to = interval_start + cfg.interval;
            send(&ctx, index, interval_start, to);
            index += 1;
            interval_start = to;
        }
        for c in ctx.conns.borrow().iter() {
            let fd = c.fd.get();
            if fd < 0 {
                continue;
            }
            let overdue = c
                .inflight
                .borrow()
                .front()
                .is_some_and(|r| now.saturating_duration_since(r.sent) > cfg.response_timeout);
            if overdue || now >= drain_end {
                c.timed_out.set(true);
                shutdown(fd);
            }
        }
        monoio::time::sleep(HOUSEKEEPING_PERIOD).await;
    }
}

fn shutdown(fd: RawFd) {
    // SAFETY: `fd` is a socket this thread owns: ConnShared::fd is cleared before the socket is
    // dropped, and all of it happens on this one thread.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

struct InFlight {
    op: Op,
    intended: Instant,
    sent: Instant,
}

#[derive(Default)]
struct ConnShared {
    inflight: RefCell<VecDeque<InFlight>>,
    /// Wakes the writer: a slot freed, the session broke, or a redirect arrived.
    wake_writer: Notify,
    /// The open socket's fd, -1 between sessions.
    fd: Cell<RawFd>,
    timed_out: Cell<bool>,
    broken: Cell<bool>,
    writer_done: Cell<bool>,
    redirect: Cell<Option<SocketAddr>>,
}

/// When the next request is due.
enum Schedule {
    Closed,
    Open { next: Instant, period: Duration },
}

impl Schedule {
    fn due(&self, now: Instant) -> Instant {
        match self {
            Schedule::Closed => now,
            Schedule::Open { next, .. } => *next,
        }
    }

    fn advance(&mut self) {
        if let Schedule::Open { next, period } = self {
            *next += *period;
        }
    }
}

/// How a session (one TCP connection) ended.
enum SessionEnd {
    /// Nothing more to send (time over, budget spent or workload exhausted).
    Finished,
    /// Failed; reconnect and go on.
    Broken,
    /// Leader hint: reconnect there.
    Redirect(SocketAddr),
}

struct Budget {
    left: Option<u64>,
}

async fn connection(
    ctx: Rc<ThreadCtx>,
    shared: Rc<ConnShared>,
    conn: ConnInfo,
    workload: Box<dyn Workload>,
) {
    let cfg = ctx.cfg.clone();
    let workload = Rc::new(RefCell::new(workload));
    let mut addr = match cfg.target_mode {
        TargetMode::Spread => cfg.targets[conn.index % cfg.targets.len()],
        TargetMode::Leader => cfg.targets[0],
    };
    let schedule = Rc::new(RefCell::new(match cfg.rate {
        None => Schedule::Closed,
        Some(rate) => {
            let period = Duration::from_secs_f64(cfg.connections as f64 / rate);
            // Spread the connections' phases over one period so they do not send in bursts.
            let phase = period.mul_f64(conn.index as f64 / cfg.connections as f64);
            Schedule::Open {
                next: ctx.start + phase,
                period,
            }
        }
    }));
    let budget = Rc::new(RefCell::new(Budget {
        left: cfg.requests_max.map(|n| {
            let per = n / cfg.connections as u64;
            per + u64::from((conn.index as u64) < n % cfg.connections as u64)
        }),
    }));
    monoio::time::sleep_until(monoio::time::Instant::from_std(ctx.start)).await;
    let mut backoff = Duration::from_millis(1);
    // Bounded by time: every iteration either finishes, or waits (connect timeout, backoff,
    // or a session that the housekeeping task ends by the drain deadline).
    loop {
        let now = Instant::now();
        if now >= ctx.end || budget.borrow().left == Some(0) {
            if budget.borrow().left != Some(0) {
                ctx.record_unsent(&schedule.borrow());
            }
            return;
        }
        let connected =
            monoio::time::timeout(cfg.connect_timeout, TcpStream::connect_addr(addr)).await;
        let stream = match connected {
            Ok(Ok(s)) => s,
            _ => {
                ctx.record_error(ErrorKind::Connect, Instant::now());
                let wake = (Instant::now() + backoff).min(ctx.end);
                monoio::time::sleep_until(monoio::time::Instant::from_std(wake)).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                continue;
            }
        };
        backoff = Duration::from_millis(1);
        // Nagle would hold back small pipelined writes; failure only costs latency.
        let _ = stream.set_nodelay(true);
        let host = addr.to_string();
        match session(&ctx, &shared, &workload, &schedule, &budget, stream, host).await {
            SessionEnd::Finished => {
                if budget.borrow().left != Some(0) {
                    ctx.record_unsent(&schedule.borrow());
                }
                return;
            }
            SessionEnd::Broken => {}
            SessionEnd::Redirect(to) => addr = to,
        }
    }
}

async fn session(
    ctx: &Rc<ThreadCtx>,
    shared: &Rc<ConnShared>,
    workload: &Rc<RefCell<Box<dyn Workload>>>,
    schedule: &Rc<RefCell<Schedule>>,
    budget: &Rc<RefCell<Budget>>,
    stream: TcpStream,
    host: String,
) -> SessionEnd {
    shared.fd.set(stream.as_raw_fd());
    shared.timed_out.set(false);
    shared.broken.set(false);
    shared.writer_done.set(false);
    shared.redirect.set(None);
    let (rd, wr) = stream.into_split();
    let writer = monoio::spawn(writer_loop(
        ctx.clone(),
        shared.clone(),
        workload.clone(),
        schedule.clone(),
        budget.clone(),
        wr,
        host,
    ));
    let (reader_end, rd) = reader_loop(ctx, shared, workload, rd).await;
    shared.broken.set(true);
    shared.wake_writer.notify();
    let (writer_finished, wr) = writer.await;
    // Clear the fd before the socket closes so housekeeping never shuts down a reused number.
    shared.fd.set(-1);
    drop(rd);
    drop(wr);
    // Requests written after the reader stopped never got an answer.
    let now = Instant::now();
    let kind = if shared.timed_out.get() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Closed
    };
    for req in shared.inflight.borrow_mut().drain(..) {
        ctx.record(req.op.kind, Outcome::Error(kind), &req, now);
    }
    match reader_end {
        SessionEnd::Finished if !writer_finished => SessionEnd::Broken,
        other => other,
    }
}

/// Returns whether the writer ran out of requests (as opposed to stopping because the session
/// broke), and the write half so the caller controls when the socket closes.
async fn writer_loop(
    ctx: Rc<ThreadCtx>,
    shared: Rc<ConnShared>,
    workload: Rc<RefCell<Box<dyn Workload>>>,
    schedule: Rc<RefCell<Schedule>>,
    budget: Rc<RefCell<Budget>>,
    mut wr: OwnedWriteHalf<TcpStream>,
    host: String,
) -> (bool, OwnedWriteHalf<TcpStream>) {
    let depth = ctx.cfg.pipeline;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let finish = |shared: &ConnShared| {
        shared.writer_done.set(true);
        if shared.inflight.borrow().is_empty() {
            // Nothing to wait for: wake the reader with EOF.
            shutdown(shared.fd.get());
        }
    };
    // Bounded by time: the schedule ends at `ctx.end`, and a broken session wakes us.
    loop {
        if shared.broken.get() {
            return (false, wr);
        }
        if shared.redirect.get().is_some() {
            finish(&shared);
            return (true, wr);
        }
        let free = depth.saturating_sub(shared.inflight.borrow().len());
        if free == 0 {
            shared.wake_writer.notified().await;
            continue;
        }
        let now = Instant::now();
        let due = schedule.borrow().due(now);
        // Open loop: requests scheduled before the end are still sent after it (late, and
        // charged for it) until the drain deadline; what is left then is counted as unsent.
        let drain_end = ctx.end + ctx.cfg.response_timeout;
        if due >= ctx.end || now >= drain_end || budget.borrow().left == Some(0) {
            finish(&shared);
            return (true, wr);
        }
        if due > now {
            shared
                .wake_writer
                .notified_or(due, ctx.timer.as_ref())
                .await;
            continue;
        }
        buf.clear();
        let mut exhausted = false;
        {
            let mut sched = schedule.borrow_mut();
            let mut inflight = shared.inflight.borrow_mut();
            let mut wl = workload.borrow_mut();
            let mut budget = budget.borrow_mut();
            for _ in 0..free {
                let intended = sched.due(now);
                if intended > now || intended >= ctx.end || budget.left == Some(0) {
                    break;
                }
                let Some(op) = wl.next_request(&host, &mut buf) else {
                    exhausted = true;
                    break;
                };
                inflight.push_back(InFlight {
                    op,
                    intended,
                    sent: now,
                });
                sched.advance();
                if let Some(left) = budget.left.as_mut() {
                    *left -= 1;
                }
            }
        }
        if !buf.is_empty() {
            let (res, b) = wr.write_all(buf).await;
            buf = b;
            if res.is_err() {
                return (false, wr);
            }
        }
        if exhausted {
            finish(&shared);
            return (true, wr);
        }
    }
}

async fn reader_loop(
    ctx: &ThreadCtx,
    shared: &ConnShared,
    workload: &RefCell<Box<dyn Workload>>,
    mut rd: OwnedReadHalf<TcpStream>,
) -> (SessionEnd, OwnedReadHalf<TcpStream>) {
    let cfg = &ctx.cfg;
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BUF_BYTES);
    // Bounded: every read either returns data, EOF or an error; housekeeping shuts the socket
    // down at the latest by the drain deadline.
    loop {
        if buf.len() == buf.capacity() {
            if buf.capacity() >= cfg.response_bytes_max {
                fail_front(ctx, shared, ErrorKind::Parse);
                return (SessionEnd::Broken, rd);
            }
            buf.reserve(buf.capacity().min(cfg.response_bytes_max - buf.capacity()));
        }
        let len = buf.len();
        let cap = buf.capacity();
        let (res, slice) = rd.read(buf.slice_mut(len..cap)).await;
        buf = slice.into_inner();
        // An error ends the session exactly like EOF.
        let n: usize = res.unwrap_or_default();
        if n == 0 {
            if shared.writer_done.get() && shared.inflight.borrow().is_empty() {
                if let Some(to) = shared.redirect.get() {
                    return (SessionEnd::Redirect(to), rd);
                }
                return (SessionEnd::Finished, rd);
            }
            let kind = if shared.timed_out.get() {
                ErrorKind::Timeout
            } else {
                ErrorKind::Closed
            };
            fail_front(ctx, shared, kind);
            return (SessionEnd::Broken, rd);
        }
        let now = Instant::now();
        let mut pos = 0usize;
        let mut closing = false;
        loop {
            let rest = buf.get(pos..).unwrap_or(&[]);
            match parse_response(rest, cfg.response_bytes_max) {
                Ok(None) => break,
                Err(_) => {
                    fail_front(ctx, shared, ErrorKind::Parse);
                    return (SessionEnd::Broken, rd);
                }
                Ok(Some((resp, used))) => {
                    let Some(req) = shared.inflight.borrow_mut().pop_front() else {
                        // A response nobody asked for: the stream is out of step.
                        ctx.record_error(ErrorKind::Parse, now);
                        return (SessionEnd::Broken, rd);
                    };
                    let outcome = workload.borrow_mut().on_response(req.op, &resp);
                    ctx.record(req.op.kind, outcome, &req, now);
                    if outcome == Outcome::Redirect && cfg.target_mode == TargetMode::Leader {
                        if let Some(to) = resp
                            .location
                            .and_then(location_authority)
                            .and_then(|a| a.parse::<SocketAddr>().ok())
                        {
                            shared.redirect.set(Some(to));
                        }
                    }
                    pos += used;
                    if resp.close {
                        closing = true;
                        break;
                    }
                }
            }
        }
        buf.drain(..pos);
        shared.wake_writer.notify();
        if closing {
            return (SessionEnd::Broken, rd);
        }
        if shared.inflight.borrow().is_empty() {
            if let Some(to) = shared.redirect.get() {
                return (SessionEnd::Redirect(to), rd);
            }
            if shared.writer_done.get() {
                return (SessionEnd::Finished, rd);
            }
        }
    }
}

/// The oldest request failed with `kind`; the rest are left for the session to count as
/// closed (or timed out).
fn fail_front(ctx: &ThreadCtx, shared: &ConnShared, kind: ErrorKind) {
    let req = shared.inflight.borrow_mut().pop_front();
    let now = Instant::now();
    match req {
        Some(req) => ctx.record(req.op.kind, Outcome::Error(kind), &req, now),
        None => ctx.record_error(kind, now),
    }
}
