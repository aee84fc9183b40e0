//! A single-waiter wake-up flag for tasks on one monoio thread, and a wait that also ends at a
//! deadline. Waiting parks the task on its waker; nothing ever wakes itself to yield.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::{Poll, Waker};
use std::time::Instant;

/// One task waits, any task on the same thread notifies. A notification sent while nobody
/// waits is kept until the next wait.
#[derive(Default)]
pub(crate) struct Notify {
    notified: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    pub(crate) fn notify(&self) {
        self.notified.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Resolves once notified.
    pub(crate) fn notified(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(move |cx| {
            if self.notified.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }

    /// Waits until notified (true) or until `deadline` (false), on `timer` if given, else on
    /// monoio's millisecond timer.
    pub(crate) async fn notified_or(
        &self,
        deadline: Instant,
        timer: Option<&PreciseTimer>,
    ) -> bool {
        let mut sleep: std::pin::Pin<Box<dyn Future<Output = ()> + '_>> = match timer {
            Some(t) => Box::pin(t.sleep_until(deadline)),
            None => Box::pin(monoio::time::sleep_until(monoio::time::Instant::from_std(
                deadline,
            ))),
        };
        let mut notified = pin!(self.notified());
        poll_fn(|cx| {
            if notified.as_mut().poll(cx).is_ready() {
                return Poll::Ready(true);
            }
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            Poll::Pending
        })
        .await
    }
}

/// Most pending registrations a [`PreciseTimer`] keeps; past it, waits fall back to monoio's
/// millisecond timer.
const PRECISE_ENTRIES_MAX: usize = 1 << 20;

/// A timer with microsecond-scale precision for the open-loop schedule.
///
/// monoio's timer wheel has millisecond resolution (it rounds every sleep up to the next
/// millisecond), which would make every open-loop request leave up to a millisecond late and
/// charge that to the server. This timer is a helper thread (same CPU affinity as its creator)
/// sleeping on a condition variable with 1 µs timer slack, waking the registered tasks through
/// their (cross-thread) wakers once their deadline has passed — never before it.
pub(crate) struct PreciseTimer {
    shared: std::sync::Arc<PreciseShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct PreciseShared {
    state: std::sync::Mutex<PreciseState>,
    cv: std::sync::Condvar,
}

#[derive(Default)]
struct PreciseState {
    heap: std::collections::BinaryHeap<std::cmp::Reverse<Entry>>,
    seq: u64,
    stop: bool,
}

struct Entry {
    due: Instant,
    seq: u64,
    waker: Waker,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

impl PreciseTimer {
    pub(crate) fn start() -> std::io::Result<Self> {
        let shared = std::sync::Arc::new(PreciseShared {
            state: std::sync::Mutex::new(PreciseState::default()),
            cv: std::sync::Condvar::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("mast-load-timer".into())
            .spawn(move || precise_loop(&s))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Registers `waker` to be woken at or after `due`; false if the timer is full.
    fn register(&self, due: Instant, waker: Waker) -> bool {
        let Ok(mut st) = self.shared.state.lock() else {
            return false;
        };
        if st.heap.len() >= PRECISE_ENTRIES_MAX {
            return false;
        }
        st.seq += 1;
        let seq = st.seq;
        let earliest = st.heap.peek().map_or(true, |e| due < e.0.due);
        st.heap.push(std::cmp::Reverse(Entry { due, seq, waker }));
        drop(st);
        if earliest {
            self.shared.cv.notify_one();
        }
        true
    }

    /// Resolves at or after `deadline`.
    pub(crate) fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + '_ {
        let mut fallback: Option<std::pin::Pin<Box<monoio::time::Sleep>>> = None;
        poll_fn(move |cx| {
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
            if let Some(s) = fallback.as_mut() {
                return s.as_mut().poll(cx);
            }
            // Every pending poll registers again: a stale entry only causes one spurious
            // wake-up, after which the task re-checks the clock.
            if !self.register(deadline, cx.waker().clone()) {
                let mut s = Box::pin(monoio::time::sleep_until(monoio::time::Instant::from_std(
                    deadline,
                )));
                let r = s.as_mut().poll(cx);
                fallback = Some(s);
                return r;
            }
            Poll::Pending
        })
    }
}

impl Drop for PreciseTimer {
    fn drop(&mut self) {
        if let Ok(mut st) = self.shared.state.lock() {
            st.stop = true;
        }
        self.shared.cv.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The timer thread shares its CPU with the runtime thread it wakes. Under EEVDF (Linux 6.6+)
/// a waking thread with the default slice (~3 ms) waits for the busy runtime thread's slice to
/// run out, so every open-loop send could leave milliseconds late. Asking for a short slice
/// (Linux 6.12+, `PREEMPT_SHORT`) lets the timer preempt at once; it runs for microseconds and
/// sleeps again, so it takes nothing from the runtime thread. Older kernels ignore the request
/// or refuse it, and the timer then works as before.
const TIMER_SLICE_NS: u64 = 100_000;

fn request_short_slice() {
    // sched_setattr sets the nice value too: keep the one inherited (e.g. from `nice -n -15`).
    // SAFETY: getpriority has no memory effects; on Linux, `who` 0 means the calling thread.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let attr = libc::sched_attr {
        size: std::mem::size_of::<libc::sched_attr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_flags: 0,
        sched_nice: nice,
        sched_priority: 0,
        sched_runtime: TIMER_SLICE_NS,
        sched_deadline: 0,
        sched_period: 0,
    };
    // SAFETY: sched_setattr(0, ..) reads `attr` (a valid, correctly sized struct) and changes
    // only this thread's scheduling parameters.
    let _ = unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            0,
            &attr as *const libc::sched_attr,
            0,
        )
    };
}

fn precise_loop(shared: &PreciseShared) {
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0);
    }
    request_short_slice();
    let Ok(mut st) = shared.state.lock() else {
        return;
    };
    let mut due_wakers = Vec::new();
    loop {
        if st.stop {
            return;
        }
        let now = Instant::now();
        while st.heap.peek().is_some_and(|e| e.0.due <= now) {
            if let Some(std::cmp::Reverse(e)) = st.heap.pop() {
                due_wakers.push(e.waker);
            }
        }
        if !due_wakers.is_empty() {
            drop(st);
            for w in due_wakers.drain(..) {
                w.wake();
            }
            st = match shared.state.lock() {
                Ok(s) => s,
                Err(_) => return,
            };
            continue;
        }
        let wait = st
            .heap
            .peek()
            .map(|e| e.0.due.saturating_duration_since(now));
        st = match wait {
            None => match shared.cv.wait(st) {
                Ok(s) => s,
                Err(_) => return,
            },
            Some(d) => match shared.cv.wait_timeout(st, d) {
                Ok((s, _)) => s,
                Err(_) => return,
            },
        };
    }
}
