//! The connection layer: accept loop, per-connection request loop, timeouts, graceful drain.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::{TcpListener, TcpStream};
use monoio::time::Instant;
use tracing::error;

use crate::decoder::{Decoded, HttpError, Phase, RequestDecoder};
use crate::limits::Limits;
use crate::metrics::{HttpMetrics, TimeoutKind};
use crate::panic;
use crate::request::{Method, Version};
use crate::response::{encode_response, ConnectionHeader, Response};
use crate::router::{Resolved, Router, SLOT_INVALID};

/// Read size when nothing better is known; one read usually holds many pipelined heads.
const READ_CHUNK_BYTES: usize = 8 * 1024;
/// An idle connection whose read buffer grew past this (a large body) gets a fresh small
/// one, so thousands of idle keep-alive connections do not each pin megabytes.
const IDLE_READ_BUFFER_BYTES_MAX: usize = 64 * 1024;
/// Largest single read reservation while receiving a big body.
const READ_RESERVE_BYTES_MAX: usize = 1024 * 1024;
/// After answering with `connection: close`, unread client bytes are drained for this long
/// (so the kernel does not reset the connection and destroy the response in flight)...
const LINGER_MS: u64 = 500;
/// ...or until this many bytes were discarded.
const LINGER_BYTES_MAX: usize = 256 * 1024;
/// Connections over `connections_max` that may be waiting for their 503 at once; beyond
/// this they are closed without a response.
const REJECTS_IN_FLIGHT_MAX: usize = 64;
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF_MS: u64 = 10;
/// Request batches a connection may run back to back without any of its I/O having to wait.
/// With the epoll driver, reads and writes on a busy socket complete without suspending, so
/// a client that pipelines without pause would otherwise keep the shard to itself.
const BATCHES_WITHOUT_SUSPEND_MAX: u32 = 16;
/// How such a connection steps aside: a timer wait, woken by the driver. (Waking oneself to
/// yield starves the other tasks under monoio 0.2.4's scheduler.)
const FAIRNESS_PAUSE_MS: u64 = 1;
/// After the grace period, how long `serve` waits for interrupted connections to finish.
const FORCED_CLOSE_WAIT_MS: u64 = 1_000;

/// A shutdown trigger that can be fired from any thread (e.g. a signal-handling thread) and
/// awaited on any number of shard runtimes.
///
/// Cloning shares the trigger. Waiting tasks are woken through their runtime's cross-thread
/// waker (monoio's `sync` feature), so `trigger` works from outside the runtime.
#[derive(Clone, Debug, Default)]
pub struct ShutdownSignal {
    inner: Arc<ShutdownInner>,
}

#[derive(Debug, Default)]
struct ShutdownInner {
    triggered: AtomicBool,
    next_id: AtomicU64,
    waiters: Mutex<Vec<(u64, Waker)>>,
}

impl ShutdownSignal {
    /// A signal that has not fired.
    pub fn new() -> ShutdownSignal {
        ShutdownSignal::default()
    }

    /// Fires the signal and wakes every waiter. Idempotent.
    pub fn trigger(&self) {
        self.inner.triggered.store(true, Ordering::SeqCst);
        let waiters = std::mem::take(&mut *self.lock());
        for (_, w) in waiters {
            w.wake();
        }
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// A future that completes once the signal has fired. Each live `wait` future holds one
    /// waiter slot, released when it completes or is dropped.
    pub fn wait(&self) -> ShutdownWait {
        ShutdownWait {
            inner: self.inner.clone(),
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Waker)>> {
        lock_waiters(&self.inner)
    }
}

fn lock_waiters(inner: &ShutdownInner) -> std::sync::MutexGuard<'_, Vec<(u64, Waker)>> {
    // A panic while holding this lock cannot leave the Vec inconsistent.
    inner.waiters.lock().unwrap_or_else(|e| e.into_inner())
}

/// Future returned by [`ShutdownSignal::wait`].
#[derive(Debug)]
pub struct ShutdownWait {
    inner: Arc<ShutdownInner>,
    id: u64,
}

impl Future for ShutdownWait {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.inner.triggered.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        let mut waiters = lock_waiters(&self.inner);
        match waiters.iter_mut().find(|(id, _)| *id == self.id) {
            Some((_, w)) => {
                if !w.will_wake(cx.waker()) {
                    *w = cx.waker().clone();
                }
            }
            None => waiters.push((self.id, cx.waker().clone())),
        }
        drop(waiters);
        // Re-check: `trigger` may have drained the list just before we registered.
        if self.inner.triggered.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for ShutdownWait {
    fn drop(&mut self) {
        lock_waiters(&self.inner).retain(|(id, _)| *id != self.id);
    }
}

/// Per-connection control block shared with the accept loop, which uses it to interrupt
/// the connection at shutdown.
#[derive(Default)]
struct ConnCtl {
    /// Waiting for the first byte of a new request (safe to close at shutdown).
    idle: Cell<bool>,
    interrupted: Cell<bool>,
    /// Set whenever one of the connection's awaits had to wait (it let other tasks run).
    suspended: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl ConnCtl {
    fn interrupt(&self) {
        self.interrupted.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// Runs `fut` unless the connection is interrupted first (`None`).
async fn interruptible<F: Future>(ctl: &ConnCtl, fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    poll_fn(|cx| {
        if ctl.interrupted.get() {
            return Poll::Ready(None);
        }
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        let mut slot = ctl.waker.borrow_mut();
        match &*slot {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
        ctl.suspended.set(true);
        Poll::Pending
    })
    .await
}

struct ServeState {
    shutting_down: Cell<bool>,
    conns: RefCell<HashMap<u64, Rc<ConnCtl>>>,
    next_conn_id: Cell<u64>,
    rejects_in_flight: Cell<usize>,
    drained: RefCell<Option<Waker>>,
}

struct ConnCtx {
    router: Rc<Router>,
    limits: Limits,
    metrics: Rc<HttpMetrics>,
    state: Rc<ServeState>,
}

enum Either<A, B> {
    Left(A),
    Right(B),
}

async fn race<A: Future, B: Future + Unpin>(a: A, b: &mut B) -> Either<A::Output, B::Output> {
    let mut a = pin!(a);
    poll_fn(|cx| {
        if let Poll::Ready(v) = std::pin::Pin::new(&mut *b).poll(cx) {
            return Poll::Ready(Either::Right(v));
        }
        a.as_mut().poll(cx).map(Either::Left)
    })
    .await
}

/// Serves HTTP/1.1 on `listener` until `shutdown` fires, then drains and returns.
///
/// One task per connection; at most `limits.connections_max` connections (more are answered
/// 503 and closed). On shutdown: the listener is closed, idle keep-alive connections are
/// closed, requests in progress get `limits.shutdown_grace_ms` to finish (their responses say
/// `connection: close`), then every remaining connection is closed and `serve` returns.
///
/// Must run inside a monoio runtime built with `enable_timer()`.
pub async fn serve(
    listener: TcpListener,
    router: Rc<Router>,
    limits: Limits,
    metrics: Rc<HttpMetrics>,
    shutdown: ShutdownSignal,
) {
    let state = Rc::new(ServeState {
        shutting_down: Cell::new(false),
        conns: RefCell::new(HashMap::new()),
        next_conn_id: Cell::new(0),
        rejects_in_flight: Cell::new(0),
        drained: RefCell::new(None),
    });
    let ctx = Rc::new(ConnCtx {
        router,
        limits,
        metrics,
        state: state.clone(),
    });
    let mut stop = shutdown.wait();
    loop {
        match race(listener.accept(), &mut stop).await {
            Either::Right(()) => break,
            Either::Left(Ok((stream, peer))) => accept_one(&ctx, stream, peer),
            Either::Left(Err(e)) => {
                tracing::warn!(error = %e, "accept failed");
                let backoff = monoio::time::sleep(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS));
                if let Either::Right(()) = race(backoff, &mut stop).await {
                    break;
                }
            }
        }
    }
    drop(listener);
    drain(&ctx).await;
}

fn accept_one(ctx: &Rc<ConnCtx>, stream: TcpStream, peer: SocketAddr) {
    let state = &ctx.state;
    ctx.metrics.connection_accepted();
    if state.conns.borrow().len() >= ctx.limits.connections_max {
        ctx.metrics.connection_rejected();
        if state.rejects_in_flight.get() < REJECTS_IN_FLIGHT_MAX {
            state
                .rejects_in_flight
                .set(state.rejects_in_flight.get() + 1);
            let ctx = ctx.clone();
            monoio::spawn(async move {
                reject(stream, ctx.limits.write_stall_timeout_ms).await;
                let n = &ctx.state.rejects_in_flight;
                n.set(n.get().saturating_sub(1));
            });
        }
        return;
    }
    // Small responses must not wait for Nagle; a failure here only costs latency.
    let _ = stream.set_nodelay(true);
    let id = state.next_conn_id.get();
    state.next_conn_id.set(id.wrapping_add(1));
    let ctl = Rc::new(ConnCtl::default());
    state.conns.borrow_mut().insert(id, ctl.clone());
    ctx.metrics.connection_opened();
    let ctx = ctx.clone();
    monoio::spawn(async move {
        connection(stream, peer, &ctx, &ctl).await;
        ctx.metrics.connection_closed();
        let state = &ctx.state;
        state.conns.borrow_mut().remove(&id);
        if state.shutting_down.get() && state.conns.borrow().is_empty() {
            if let Some(w) = state.drained.borrow_mut().take() {
                w.wake();
            }
        }
    });
}

async fn reject(mut stream: TcpStream, stall_ms: u64) {
    let mut out = BytesMut::with_capacity(256);
    let resp = Response::error(503, "overloaded", "too many connections");
    encode_response(&mut out, &resp, false, ConnectionHeader::Close);
    let _ = monoio::time::timeout(Duration::from_millis(stall_ms), stream.write(out)).await;
    let _ = stream.shutdown().await;
}

async fn wait_drained(state: &ServeState, deadline: Instant) -> bool {
    let mut timer = pin!(monoio::time::sleep_until(deadline));
    poll_fn(|cx| {
        if state.conns.borrow().is_empty() {
            return Poll::Ready(true);
        }
        *state.drained.borrow_mut() = Some(cx.waker().clone());
        timer.as_mut().poll(cx).map(|()| false)
    })
    .await
}

async fn drain(ctx: &ConnCtx) {
    let state = &ctx.state;
    state.shutting_down.set(true);
    let idle: Vec<Rc<ConnCtl>> = state
        .conns
        .borrow()
        .values()
        .filter(|c| c.idle.get())
        .cloned()
        .collect();
    for c in idle {
        c.interrupt();
    }
    let grace = Instant::now() + Duration::from_millis(ctx.limits.shutdown_grace_ms);
    if wait_drained(state, grace).await {
        return;
    }
    let all: Vec<Rc<ConnCtl>> = state.conns.borrow().values().cloned().collect();
    for c in all {
        c.interrupt();
    }
    let deadline = Instant::now() + Duration::from_millis(FORCED_CLOSE_WAIT_MS);
    if !wait_drained(state, deadline).await {
        tracing::warn!(
            remaining = state.conns.borrow().len(),
            "connections still open after forced close"
        );
    }
}

/// Writes all of `buf`, giving up when one write makes no progress for `stall_ms` or the
/// connection is interrupted. Returns the buffer on success.
async fn write_fully<T: IoBuf + 'static>(
    stream: &mut TcpStream,
    mut buf: T,
    ctx: &ConnCtx,
    ctl: &ConnCtl,
) -> Option<T> {
    let len = buf.bytes_init();
    let stall = Duration::from_millis(ctx.limits.write_stall_timeout_ms);
    let mut written = 0;
    while written < len {
        let slice = buf.slice(written..len);
        match interruptible(ctl, monoio::time::timeout(stall, stream.write(slice))).await {
            None => return None,
            Some(Err(_)) => {
                ctx.metrics.timeout(TimeoutKind::Write);
                return None;
            }
            Some(Ok((res, slice))) => {
                buf = slice.into_inner();
                match res {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => written += n,
                }
            }
        }
    }
    Some(buf)
}

/// Sends a streamed body as HTTP/1.1 chunks as they come, then the terminating chunk, then
/// closes: the head is already in `out`. The stream is closed whatever ends it (client gone,
/// a stalled write, drain), so its producer stops at its next send.
async fn stream_body(
    mut stream: TcpStream,
    mut out: BytesMut,
    body: crate::stream::BodyStream,
    head_only: bool,
    ctx: &ConnCtx,
    ctl: &ConnCtl,
) {
    let mut ended = head_only;
    loop {
        if !out.is_empty() {
            match write_fully(&mut stream, out, ctx, ctl).await {
                Some(o) => out = o,
                None => break,
            }
            out.clear();
        }
        if ended {
            linger_close(stream, ctl).await;
            break;
        }
        match interruptible(ctl, body.next()).await {
            None => break,
            Some(Some(chunk)) => {
                out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                out.extend_from_slice(&chunk);
                out.extend_from_slice(b"\r\n");
            }
            Some(None) => {
                out.extend_from_slice(b"0\r\n\r\n");
                ended = true;
            }
        }
    }
    body.close();
}

/// Half-closes, then discards what the client still sends for a bounded time, so that the
/// final response is not destroyed by a reset.
async fn linger_close(mut stream: TcpStream, ctl: &ConnCtl) {
    if interruptible(ctl, stream.shutdown()).await.is_none() {
        return;
    }
    let deadline = Instant::now() + Duration::from_millis(LINGER_MS);
    let mut buf = vec![0u8; 4096];
    let mut discarded = 0usize;
    while discarded < LINGER_BYTES_MAX {
        match interruptible(ctl, monoio::time::timeout_at(deadline, stream.read(buf))).await {
            Some(Ok((Ok(n), b))) if n > 0 => {
                discarded += n;
                buf = b;
            }
            _ => return,
        }
    }
}

fn encode_error(out: &mut BytesMut, e: &HttpError) {
    let resp = Response::error(e.status, e.kind, e.message);
    encode_response(out, &resp, false, ConnectionHeader::Close);
}

async fn connection(mut stream: TcpStream, peer: SocketAddr, ctx: &ConnCtx, ctl: &ConnCtl) {
    let limits = &ctx.limits;
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    // Allocated by the first response, then reused.
    let mut out = BytesMut::new();
    let mut decoder = RequestDecoder::new(limits);
    let mut head_started: Option<Instant> = None;
    let mut body_started: Option<Instant> = None;
    let mut batches_without_suspend = 0u32;
    loop {
        let mut close = false;
        let mut more_buffered = false;
        let mut handled = 0usize;
        // Bounded by pipeline_depth_max and output_buffer_bytes_max per pass.
        loop {
            if decoder.phase() == Phase::Head && head_started.is_none() && !rbuf.is_empty() {
                head_started = Some(Instant::now());
            }
            match decoder.decode(&mut rbuf) {
                Decoded::Request(mut req) => {
                    head_started = None;
                    body_started = None;
                    req.peer_addr = Some(peer);
                    let keep_alive = req.keep_alive && !ctx.state.shutting_down.get();
                    let http10 = req.version == Version::Http10;
                    let head_only = req.method == Method::HEAD;
                    let started = std::time::Instant::now();
                    let (resp, slot) = match ctx.router.resolve(&mut req) {
                        Resolved::Handler(h, slot) => {
                            // Kept for the log line should the handler panic (a refcount).
                            let line = (req.method, req.head.clone(), req.path.clone());
                            match interruptible(ctl, panic::run_contained(|| h(req))).await {
                                Some(Ok(resp)) => (resp, slot),
                                Some(Err(payload)) => {
                                    ctx.metrics.handler_panic();
                                    let path =
                                        line.1.get(line.2.start as usize..line.2.end as usize);
                                    error!(
                                        method = line.0.as_str(),
                                        path = %String::from_utf8_lossy(path.unwrap_or_default()),
                                        %peer,
                                        panic = panic::panic_message(payload.as_ref()),
                                        "request handler panicked; answered 500"
                                    );
                                    (panic::panic_response(), slot)
                                }
                                None => return,
                            }
                        }
                        Resolved::Response(resp, slot) => (resp, slot),
                    };
                    let keep_alive = keep_alive && !ctx.state.shutting_down.get();
                    let conn = match (keep_alive, http10) {
                        (false, _) => ConnectionHeader::Close,
                        (true, false) => ConnectionHeader::KeepAlive,
                        (true, true) => ConnectionHeader::KeepAliveAnnounced,
                    };
                    let body_pending = encode_response(&mut out, &resp, head_only, conn);
                    ctx.metrics
                        .request(&ctx.router, slot, resp.status, Some(started.elapsed()));
                    if let Some(body) = resp.stream {
                        stream_body(stream, out, body, head_only, ctx, ctl).await;
                        return;
                    }
                    if body_pending {
                        let Some(o) = write_fully(&mut stream, out, ctx, ctl).await else {
                            return;
                        };
                        out = o;
                        out.clear();
                        if write_fully(&mut stream, resp.body, ctx, ctl)
                            .await
                            .is_none()
                        {
                            return;
                        }
                    }
                    handled += 1;
                    if !keep_alive {
                        close = true;
                        break;
                    }
                    if handled >= limits.pipeline_depth_max
                        || out.len() >= limits.output_buffer_bytes_max
                    {
                        more_buffered = !rbuf.is_empty();
                        break;
                    }
                }
                Decoded::ExpectContinue => {
                    out.put_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                    break;
                }
                Decoded::NeedMore => {
                    if decoder.phase() == Phase::Body && body_started.is_none() {
                        body_started = Some(Instant::now());
                    }
                    break;
                }
                Decoded::Error(e) => {
                    ctx.metrics.parse_error(e.kind);
                    ctx.metrics
                        .request(&ctx.router, SLOT_INVALID, e.status, None);
                    encode_error(&mut out, &e);
                    close = true;
                    break;
                }
            }
        }
        if !out.is_empty() {
            let Some(o) = write_fully(&mut stream, out, ctx, ctl).await else {
                return;
            };
            out = o;
            out.clear();
        }
        if close {
            linger_close(stream, ctl).await;
            return;
        }
        if ctl.suspended.replace(false) {
            batches_without_suspend = 0;
        } else {
            batches_without_suspend += 1;
            if batches_without_suspend >= BATCHES_WITHOUT_SUSPEND_MAX {
                batches_without_suspend = 0;
                let pause = monoio::time::sleep(Duration::from_millis(FAIRNESS_PAUSE_MS));
                if interruptible(ctl, pause).await.is_none() {
                    return;
                }
                ctl.suspended.set(false);
            }
        }
        if more_buffered {
            continue;
        }
        let idle = decoder.phase() == Phase::Head && rbuf.is_empty();
        if idle && ctx.state.shutting_down.get() {
            return;
        }
        if idle && rbuf.capacity() > IDLE_READ_BUFFER_BYTES_MAX {
            rbuf = BytesMut::with_capacity(READ_CHUNK_BYTES);
        }
        if idle
            && out.capacity()
                > limits
                    .output_buffer_bytes_max
                    .max(IDLE_READ_BUFFER_BYTES_MAX)
        {
            out = BytesMut::new();
        }
        let now = Instant::now();
        let (deadline, kind) = match decoder.phase() {
            Phase::Body => (
                body_started.unwrap_or(now) + Duration::from_millis(limits.body_read_timeout_ms),
                TimeoutKind::Body,
            ),
            _ if idle => (
                now + Duration::from_millis(limits.idle_timeout_ms),
                TimeoutKind::Idle,
            ),
            _ => (
                head_started.unwrap_or(now) + Duration::from_millis(limits.head_read_timeout_ms),
                TimeoutKind::Head,
            ),
        };
        let wanted = decoder
            .body_bytes_wanted(rbuf.len())
            .clamp(READ_CHUNK_BYTES, READ_RESERVE_BYTES_MAX);
        if rbuf.capacity() - rbuf.len() < READ_CHUNK_BYTES / 4 || wanted > READ_CHUNK_BYTES {
            rbuf.reserve(wanted);
        }
        let (len, cap) = (rbuf.len(), rbuf.capacity());
        ctl.idle.set(idle);
        let read = monoio::time::timeout_at(deadline, stream.read(rbuf.slice_mut(len..cap)));
        let result = interruptible(ctl, read).await;
        ctl.idle.set(false);
        match result {
            None => return,
            Some(Err(_elapsed)) => {
                ctx.metrics.timeout(kind);
                if kind != TimeoutKind::Idle {
                    let e = HttpError {
                        status: 408,
                        kind: "request_timeout",
                        message: "request was not received in time",
                        close: true,
                    };
                    let mut o = BytesMut::with_capacity(256);
                    encode_error(&mut o, &e);
                    if write_fully(&mut stream, o, ctx, ctl).await.is_some() {
                        linger_close(stream, ctl).await;
                    }
                }
                return;
            }
            Some(Ok((res, slice))) => {
                rbuf = slice.into_inner();
                match res {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        }
    }
}
