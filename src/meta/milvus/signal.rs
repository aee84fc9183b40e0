//! Node-wide notice that the Milvus tables moved, raised by apply on any shard's thread and
//! awaited by the DD channel's tasks on any other (`crate::milvus::dd`).
//!
//! Raising it has no effect on the state, so apply stays deterministic; it only tells
//! waiters to look again. It is process-wide because one process is one node (every shard's
//! replica of this node applies into it). A notice is a generation counter, so a waiter that
//! read the state at generation `g` and then waits for "after `g`" cannot miss a change made
//! in between.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

/// Raised when any DDL or tick applies on this node (a shard's DD clock advanced).
pub static CLOCK_ADVANCED: Signal = Signal::new();
/// Raised when a DDL that recorded DD events applies on this node.
pub static DDL_APPLIED: Signal = Signal::new();

/// A generation counter with waiters that may live on other threads (monoio's `sync`
/// feature makes its wakers wake across threads).
pub struct Signal {
    generation: AtomicU64,
    waiters: Mutex<Vec<Waker>>,
}

impl Signal {
    pub const fn new() -> Signal {
        Signal {
            generation: AtomicU64::new(0),
            waiters: Mutex::new(Vec::new()),
        }
    }

    /// The current generation: read it before looking at the state.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn raise(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let waiters = match self.waiters.lock() {
            Ok(mut w) => std::mem::take(&mut *w),
            // A waiter list is only ever pushed to or taken: a poisoned one is still whole.
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        for w in waiters {
            w.wake();
        }
    }

    /// Resolves once the generation differs from `seen`.
    pub fn changed(&'static self, seen: u64) -> Changed {
        Changed { signal: self, seen }
    }

    fn register(&self, waker: &Waker) {
        let mut list = match self.waiters.lock() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        };
        // Waiters that gave up (a timeout fired first) leave wakers behind; one per task is
        // enough, so the list stays as long as the number of waiting tasks.
        if !list.iter().any(|w| w.will_wake(waker)) {
            list.push(waker.clone());
        }
    }
}

impl Default for Signal {
    fn default() -> Self {
        Signal::new()
    }
}

/// See [`Signal::changed`].
pub struct Changed {
    signal: &'static Signal,
    seen: u64,
}

impl Future for Changed {
    type Output = u64;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u64> {
        let g = self.signal.generation();
        if g != self.seen {
            return Poll::Ready(g);
        }
        self.signal.register(cx.waker());
        // A raise between the first look and the registration took the list before we were
        // on it: look again.
        let g = self.signal.generation();
        if g != self.seen {
            return Poll::Ready(g);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicU64);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_waiter_is_woken_once_per_raise_and_never_misses_one() {
        static S: Signal = Signal::new();
        let count = Arc::new(Count(AtomicU64::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let seen = S.generation();
        let mut f = S.changed(seen);
        assert_eq!(Pin::new(&mut f).poll(&mut cx), Poll::Pending);
        // Polled again by the same task: still one registration.
        assert_eq!(Pin::new(&mut f).poll(&mut cx), Poll::Pending);
        assert_eq!(S.waiters.lock().map(|w| w.len()).unwrap_or(0), 1);
        S.raise();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(Pin::new(&mut f).poll(&mut cx), Poll::Ready(seen + 1));
        // A raise before the wait starts is seen at once.
        S.raise();
        let mut g = S.changed(seen + 1);
        assert_eq!(Pin::new(&mut g).poll(&mut cx), Poll::Ready(seen + 2));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }
}
