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
    pub(crate) async fn notified_or(&self, deadline: Instant, timer: Option<&Timer>) -> bool {
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

/// The open-loop schedule's sub-millisecond timer: on the thread's own ring when io_uring is
/// there, else a helper thread.
pub(crate) enum Timer {
    Ring(std::rc::Rc<RingTimer>),
    Thread(PreciseTimer),
}

impl Timer {
    /// The ring timer where io_uring works (its read of a timerfd would block the thread under
    /// the epoll fallback), else the helper thread. Call on the runtime's thread; with the ring
    /// timer, spawn [`RingTimer::run`] and call [`RingTimer::stop`] when done.
    pub(crate) fn start() -> std::io::Result<Self> {
        if monoio::utils::detect_uring() {
            if let Ok(t) = RingTimer::new() {
                return Ok(Timer::Ring(std::rc::Rc::new(t)));
            }
        }
        PreciseTimer::start().map(Timer::Thread)
    }

    fn register(&self, due: Instant, waker: Waker) -> bool {
        match self {
            Timer::Ring(t) => t.register(due, waker),
            Timer::Thread(t) => t.register(due, waker),
        }
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

/// A timer with microsecond precision that lives on the runtime's own thread.
///
/// One task reads a timerfd through io_uring; the fd is armed for the earliest registered
/// deadline, so the read completes on the ring exactly then and the task wakes the due
/// waiters, all on this thread. The helper-thread timer ([`PreciseTimer`]) instead needs the
/// scheduler to run a second thread on the client's CPU and a cross-thread wake per deadline;
/// under load that made open-loop sends leave hundreds of microseconds to milliseconds late
/// (perf/README.md).
pub(crate) struct RingTimer {
    fd: std::os::fd::OwnedFd,
    heap: RefCell<std::collections::BinaryHeap<std::cmp::Reverse<Entry>>>,
    seq: Cell<u64>,
    /// The deadline the timerfd is armed for, if any.
    armed: Cell<Option<Instant>>,
    stopped: Cell<bool>,
    /// The timerfd failed: registrations are refused, so waits fall back.
    broken: Cell<bool>,
    /// The timerfd is not armed before this: one expiry per [`RING_TICK`] at most.
    not_before: Cell<Instant>,
}

/// The shortest gap between two expiries of the ring timer. Each expiry costs a timerfd
/// re-arm and a wake-up of the thread (about as much CPU as a request); at tens of thousands
/// of requests a second with every connection's phase different, one expiry per request made
/// the client itself the bottleneck. Waiters due within one tick leave together, at most this
/// late, and the delay is charged to the measured latency (it is counted from the intended
/// send time), never hidden.
const RING_TICK: std::time::Duration = std::time::Duration::from_micros(50);

impl RingTimer {
    fn new() -> std::io::Result<Self> {
        // SAFETY: timerfd_create returns a new fd (or -1), owned below.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh, valid fd nobody else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(Self {
            fd,
            heap: RefCell::new(std::collections::BinaryHeap::new()),
            seq: Cell::new(0),
            armed: Cell::new(None),
            stopped: Cell::new(false),
            broken: Cell::new(false),
            not_before: Cell::new(Instant::now()),
        })
    }

    /// Arms the timerfd to expire at `due` (at once if it has passed), or one tick after the
    /// previous expiry if that is later.
    fn arm(&self, due: Instant) {
        let due = due.max(self.not_before.get());
        let d = due.saturating_duration_since(Instant::now());
        // A zero it_value disarms: ask for 1 ns instead.
        let d = d.max(std::time::Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: a valid timerfd and a valid itimerspec; the old value is not asked for.
        let rc = unsafe {
            libc::timerfd_settime(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                0,
                &spec,
                std::ptr::null_mut(),
            )
        };
        // Cannot fail for a valid fd and spec; if it did, sends would stall, so say so loudly.
        assert_eq!(
            rc,
            0,
            "timerfd_settime: {}",
            std::io::Error::last_os_error()
        );
        self.armed.set(Some(due));
    }

    fn register(&self, due: Instant, waker: Waker) -> bool {
        let mut heap = self.heap.borrow_mut();
        if heap.len() >= PRECISE_ENTRIES_MAX || self.broken.get() {
            return false;
        }
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        heap.push(std::cmp::Reverse(Entry { due, seq, waker }));
        drop(heap);
        let fires = due.max(self.not_before.get());
        if self.armed.get().map_or(true, |a| fires < a) {
            self.arm(due);
        }
        true
    }

    /// Ends [`RingTimer::run`] (at once: the timerfd fires now).
    pub(crate) fn stop(&self) {
        self.stopped.set(true);
        self.not_before.set(Instant::now());
        self.arm(Instant::now());
    }

    /// The task that reads the timerfd and wakes due waiters; returns after [`RingTimer::stop`].
    pub(crate) async fn run(self: std::rc::Rc<Self>) {
        let file = match self.fd.try_clone() {
            Ok(fd) => monoio::fs::File::from_std(std::fs::File::from(fd)),
            Err(e) => Err(e),
        };
        let Ok(file) = file else {
            self.broken.set(true);
            return;
        };
        let mut buf = vec![0u8; 8];
        let mut due = Vec::new();
        // Bounded: each pass waits for the timerfd, and `stop` makes it fire and end the loop.
        while !self.stopped.get() {
            let (res, b) = file.read_at(buf, 0).await;
            buf = b;
            if let Err(e) = res {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                // Not expected for a timerfd. Every waiter is woken, and from now on waits
                // use monoio's millisecond timer: slower sends, never lost ones.
                self.broken.set(true);
                let waiters = std::mem::take(&mut *self.heap.borrow_mut());
                for e in waiters {
                    e.0.waker.wake();
                }
                return;
            }
            self.armed.set(None);
            let now = Instant::now();
            self.not_before.set(now + RING_TICK);
            {
                let mut heap = self.heap.borrow_mut();
                while heap.peek().is_some_and(|e| e.0.due <= now) {
                    if let Some(std::cmp::Reverse(e)) = heap.pop() {
                        due.push(e.waker);
                    }
                }
                if let Some(next) = heap.peek().map(|e| e.0.due) {
                    drop(heap);
                    self.arm(next);
                }
            }
            for w in due.drain(..) {
                w.wake();
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Waits end in deadline order, never before their deadline, whichever timer the machine
    /// gives (the ring where io_uring works), and stopping ends the timer's task.
    #[test]
    fn timer_wakes_every_waiter_at_or_after_its_deadline_in_order() {
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let timer = std::rc::Rc::new(Timer::start().expect("timer"));
            let ring = match &*timer {
                Timer::Ring(t) => Some((t.clone(), monoio::spawn(t.clone().run()))),
                Timer::Thread(_) => None,
            };
            // Far enough ahead that every waiter registers before the first deadline.
            let start = Instant::now() + Duration::from_millis(20);
            let order = std::rc::Rc::new(RefCell::new(Vec::new()));
            let mut tasks = Vec::new();
            // Registered out of order; 2000 and 2020 µs fall within one tick of each other, so
            // they are only checked for not waking early (order is checked by millisecond).
            for (i, us) in [9000u64, 2000, 5000, 2020, 7000, 1000]
                .into_iter()
                .enumerate()
            {
                let (timer, order) = (timer.clone(), order.clone());
                tasks.push(monoio::spawn(async move {
                    let due = start + Duration::from_micros(us);
                    let n = Notify::default();
                    let notified = n.notified_or(due, Some(&timer)).await;
                    let now = Instant::now();
                    assert!(!notified, "waiter {i} was never notified, only timed");
                    assert!(now >= due, "waiter {i} woke {:?} early", due - now);
                    order.borrow_mut().push(us);
                }));
            }
            for t in tasks {
                t.await;
            }
            let order: Vec<u64> = order.borrow().iter().map(|us| us / 1000).collect();
            assert_eq!(order.len(), 6);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(order, sorted, "waiters woke out of deadline order");
            if let Some((t, task)) = ring {
                t.stop();
                task.await;
            }
        });
    }
}
