//! Timestamp oracle core: pure state, no I/O, no clock (time is a parameter).
//!
//! A timestamp is `physical_ms << 18 | logical` (18-bit logical counter), as in Milvus / PD.
//!
//! Safety comes from one replicated number, the *bound*: an exclusive upper limit on the
//! physical part of any timestamp handed out. The leader of group 0 proposes bounds through
//! raft (the state machine keeps the maximum it has applied) and never hands out a timestamp
//! whose physical part is `>=` the largest bound it has seen applied *in its own term*.
//!
//! A leader of term `T` starts serving only after
//! 1. an entry of term `T` applied ([`TsoCore::begin_term`]): every entry of earlier terms that
//!    will ever apply has applied by then, so the persisted bound it passes covers every
//!    timestamp any earlier leader handed out; this is the term's `floor`;
//! 2. a window it proposed in term `T` applied ([`TsoCore::window_applied`]).
//!
//! Every timestamp of the term has `physical >= floor`, so it is above everything issued
//! before, whatever the clocks say; a restarted node rebuilds from the persisted bound alone.
//! Within the term, `physical = max(now, floor, last physical)`: a clock that steps back holds
//! the physical part where it is and the logical part keeps counting; a logical overflow moves
//! to the next millisecond without waiting for the clock (as long as the window allows it).
//!
//! The core refuses a term it has not been told it leads ([`TsoError::NotServing`]), and any
//! call carrying a term above the served one (an `allocate` passing the raft node's current
//! term, a `window_applied` of a newer term) ends the served term for good, as
//! [`TsoCore::step_down`] does. It cannot know by itself that a newer leader exists: the caller
//! passes its raft node's *current* term (not the term it remembers leading) or calls
//! `step_down` as soon as the node learns of a higher term. A leader cut off from the others
//! that has not learned of the newer term yet could still serve from its applied window; the
//! caller must only reply while it holds leadership of the term it passed (leader lease or
//! read-index), exactly as for a linearizable read.

/// Bits of the logical counter.
pub const LOGICAL_BITS: u32 = 18;
/// Length of a window proposed ahead of the clock, in milliseconds.
pub const WINDOW_MS: u64 = 3_000;
/// Logical values per millisecond; also the largest `count` of one request.
pub const COUNT_MAX: u64 = 1 << LOGICAL_BITS;

const LOGICAL_MASK: u64 = COUNT_MAX - 1;
/// Physical parts at or above this do not fit in a timestamp.
const PHYSICAL_LIMIT_MS: u64 = 1 << (64 - LOGICAL_BITS);
/// Renew when less than this much of the window is left.
const RENEW_BELOW_MS: u64 = WINDOW_MS / 3;
/// A renewal not applied after the physical part moved this far is presumed lost: ask again.
const RENEW_RETRY_MS: u64 = WINDOW_MS / 6;

/// `physical_ms << 18 | logical`.
#[inline]
pub fn compose(physical_ms: u64, logical: u64) -> u64 {
    debug_assert!(logical < COUNT_MAX, "logical {logical} out of range");
    debug_assert!(
        physical_ms < PHYSICAL_LIMIT_MS,
        "physical {physical_ms} out of range"
    );
    (physical_ms << LOGICAL_BITS) | (logical & LOGICAL_MASK)
}

/// The physical part (milliseconds) of a timestamp.
#[inline]
pub fn physical_of(ts: u64) -> u64 {
    ts >> LOGICAL_BITS
}

/// The logical part of a timestamp.
#[inline]
pub fn logical_of(ts: u64) -> u64 {
    ts & LOGICAL_MASK
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsoError {
    /// Not the leader of this term (or its leadership is not ready yet).
    NotServing,
    /// `count` is 0 or above [`COUNT_MAX`].
    BadCount,
    /// No window covers the next timestamp: propose this bound, wait for it to apply, retry.
    NeedWindow { bound_ms: u64 },
}

impl std::fmt::Display for TsoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TsoError::NotServing => f.write_str("not the serving TSO leader of this term"),
            TsoError::BadCount => write!(f, "count must be between 1 and {COUNT_MAX}"),
            TsoError::NeedWindow { bound_ms } => write!(f, "need a window up to {bound_ms} ms"),
        }
    }
}

impl std::error::Error for TsoError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// First timestamp; the request owns `[timestamp, timestamp + count)`, all in one
    /// physical millisecond.
    pub timestamp: u64,
    pub count: u64,
    /// The window is running out: propose this bound in the background (no need to wait).
    pub renew_bound_ms: Option<u64>,
}

/// See the module documentation.
#[derive(Debug, Default, Clone)]
pub struct TsoCore {
    /// Term being served (leadership ready), if any.
    serving: Option<u64>,
    /// Highest term seen in any call; `begin_term` of an older term is ignored.
    max_term: u64,
    /// Persisted bound when the serving term began: every timestamp of the term is above it.
    floor_ms: u64,
    /// Largest bound applied in the serving term (`== floor_ms` until one applies).
    window_ms: u64,
    /// Physical part of the last timestamp handed out (by this core, any term).
    last_physical: u64,
    /// Next free logical value in `last_physical`.
    next_logical: u64,
    /// Renewal asked for and not applied yet: (bound, physical when asked).
    pending: Option<(u64, u64)>,
    allocations: u64,
    issued: u64,
}

impl TsoCore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Leadership of `term` is ready (an entry of `term` applied); `persisted_bound_ms` is the
    /// applied bound now. Idempotent per term; a term older than one already begun is ignored.
    pub fn begin_term(&mut self, term: u64, persisted_bound_ms: u64) {
        if self.serving == Some(term) || term < self.max_term {
            return;
        }
        self.max_term = term;
        self.serving = Some(term);
        self.floor_ms = persisted_bound_ms;
        self.window_ms = persisted_bound_ms;
        self.pending = None;
    }

    /// No longer leader: every later `allocate` is refused until the next `begin_term`.
    pub fn step_down(&mut self) {
        self.serving = None;
        self.pending = None;
    }

    /// A call carrying a term above every term seen: a newer leader exists (or is coming), so
    /// the term being served is over, even if `step_down` was not called.
    fn observe(&mut self, term: u64) {
        if term > self.max_term {
            self.max_term = term;
            if self.serving.is_some_and(|s| s < term) {
                self.step_down();
            }
        }
    }

    /// A bound proposed in `term` applied (ignored unless `term` is the serving term and it is
    /// above the floor). Keeps the largest.
    pub fn window_applied(&mut self, term: u64, bound_ms: u64) {
        self.observe(term);
        if self.serving != Some(term) || bound_ms <= self.floor_ms {
            return;
        }
        self.window_ms = self.window_ms.max(bound_ms);
        if matches!(self.pending, Some((b, _)) if b <= self.window_ms) {
            self.pending = None;
        }
    }

    /// Hands out `[timestamp, timestamp + count)`. `term` should be the raft node's current
    /// term: a term above the one being served ends it (`NotServing` from then on).
    pub fn allocate(&mut self, term: u64, now_ms: u64, count: u64) -> Result<Allocation, TsoError> {
        self.observe(term);
        if self.serving != Some(term) {
            return Err(TsoError::NotServing);
        }
        if count == 0 || count > COUNT_MAX {
            return Err(TsoError::BadCount);
        }
        let mut physical = now_ms.max(self.floor_ms).max(self.last_physical);
        let mut logical = 0;
        if physical == self.last_physical {
            logical = self.next_logical;
            if logical + count > COUNT_MAX {
                physical += 1;
                logical = 0;
            }
        }
        if physical >= PHYSICAL_LIMIT_MS {
            // A clock past the year 4199 cannot be encoded in 46 bits: refuse rather than wrap.
            return Err(TsoError::NotServing);
        }
        if physical >= self.window_ms {
            // Nothing of this term applied covers it (or no window yet).
            return Err(TsoError::NeedWindow {
                bound_ms: physical + WINDOW_MS,
            });
        }
        self.last_physical = physical;
        self.next_logical = logical + count;
        self.allocations += 1;
        self.issued += count;

        let mut renew_bound_ms = None;
        if self.window_ms - physical < RENEW_BELOW_MS {
            // Ask again if an earlier renewal seems lost.
            let ask = match self.pending {
                None => true,
                Some((_, asked_at)) => physical >= asked_at + RENEW_RETRY_MS,
            };
            if ask {
                let bound = physical + WINDOW_MS;
                self.pending = Some((bound, physical));
                renew_bound_ms = Some(bound);
            }
        }
        Ok(Allocation {
            timestamp: compose(physical, logical),
            count,
            renew_bound_ms,
        })
    }

    /// The bound a ready leader should persist now so that a timestamp at `now_ms` can be
    /// served (None when the window already covers it or `term` is not served): what
    /// `allocate` would ask for, without handing anything out.
    pub fn window_to_open(&self, term: u64, now_ms: u64) -> Option<u64> {
        if self.serving != Some(term) {
            return None;
        }
        let physical = now_ms.max(self.floor_ms).max(self.last_physical);
        (physical >= self.window_ms && physical < PHYSICAL_LIMIT_MS).then_some(physical + WINDOW_MS)
    }

    pub fn serving_term(&self) -> Option<u64> {
        self.serving
    }

    /// Largest bound applied in the serving term (the floor until a window applies).
    pub fn window_bound_ms(&self) -> u64 {
        self.window_ms
    }

    /// Physical part of the last timestamp handed out.
    pub fn last_physical_ms(&self) -> u64 {
        self.last_physical
    }

    /// Successful `allocate` calls since creation.
    pub fn allocations(&self) -> u64 {
        self.allocations
    }

    /// Timestamps handed out since creation (sum of counts).
    pub fn timestamps_issued(&self) -> u64 {
        self.issued
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    const T0: u64 = 1_700_000_000_000;

    /// A leader of `term` ready with a window applied, as the integrator would drive it.
    fn ready(core: &mut TsoCore, term: u64, persisted: &mut u64, now: u64) {
        core.begin_term(term, *persisted);
        let Err(TsoError::NeedWindow { bound_ms }) = core.allocate(term, now, 1) else {
            panic!("a new term must ask for a window first");
        };
        *persisted = (*persisted).max(bound_ms);
        core.window_applied(term, bound_ms);
    }

    #[test]
    fn window_to_open_asks_what_allocate_would_and_hands_out_nothing() {
        let mut c = TsoCore::new();
        assert_eq!(c.window_to_open(1, T0), None);
        c.begin_term(1, 0);
        let want = c.window_to_open(1, T0).expect("a new term needs a window");
        assert_eq!(c.window_to_open(1, T0), Some(want));
        assert_eq!(
            c.allocate(1, T0, 1),
            Err(TsoError::NeedWindow { bound_ms: want })
        );
        c.window_applied(1, want);
        assert_eq!(c.window_to_open(1, T0), None);
        assert_eq!(physical_of(c.allocate(1, T0, 1).unwrap().timestamp), T0);
        // Time past the window asks for a new one.
        assert_eq!(c.window_to_open(1, want), Some(want + WINDOW_MS));
        assert_eq!(c.window_to_open(2, T0), None);
    }

    #[test]
    fn compose_round_trips() {
        let ts = compose(T0, 12345);
        assert_eq!(physical_of(ts), T0);
        assert_eq!(logical_of(ts), 12345);
        assert_eq!(compose(1, 0), 1 << 18);
        assert_eq!(COUNT_MAX, 262_144);
        assert_eq!(logical_of(compose(7, COUNT_MAX - 1)), COUNT_MAX - 1);
    }

    #[test]
    fn serves_only_after_term_and_own_window() {
        let mut c = TsoCore::new();
        assert_eq!(c.allocate(1, T0, 1), Err(TsoError::NotServing));
        c.begin_term(1, 0);
        assert_eq!(c.serving_term(), Some(1));
        assert_eq!(
            c.allocate(1, T0, 1),
            Err(TsoError::NeedWindow {
                bound_ms: T0 + WINDOW_MS
            })
        );
        // A bound of an older term, or not above the floor, does not open the window.
        c.window_applied(0, T0 + WINDOW_MS);
        c.window_applied(1, 0);
        assert!(matches!(
            c.allocate(1, T0, 1),
            Err(TsoError::NeedWindow { .. })
        ));
        c.window_applied(1, T0 + WINDOW_MS);
        assert_eq!(c.window_bound_ms(), T0 + WINDOW_MS);
        let a = c.allocate(1, T0, 1).unwrap();
        assert_eq!(
            a,
            Allocation {
                timestamp: compose(T0, 0),
                count: 1,
                renew_bound_ms: None
            }
        );
        // Another term's request is refused (and, being newer, ends term 1).
        assert_eq!(c.allocate(0, T0, 1), Err(TsoError::NotServing));
        assert_eq!(c.allocate(2, T0, 1), Err(TsoError::NotServing));
        assert_eq!(c.allocate(1, T0, 1), Err(TsoError::NotServing));
        assert_eq!((c.allocations(), c.timestamps_issued()), (1, 1));
    }

    #[test]
    fn begin_term_is_idempotent_and_refuses_older_terms() {
        let mut c = TsoCore::new();
        let mut persisted = 0;
        ready(&mut c, 5, &mut persisted, T0);
        let bound = c.window_bound_ms();
        // Called again for the same term (e.g. with a larger persisted bound: its own window):
        // nothing is reset.
        c.begin_term(5, persisted);
        assert_eq!(c.window_bound_ms(), bound);
        assert!(c.allocate(5, T0, 1).is_ok());
        c.step_down();
        assert_eq!(c.serving_term(), None);
        assert_eq!(c.allocate(5, T0, 1), Err(TsoError::NotServing));
        c.begin_term(4, persisted);
        assert_eq!(c.serving_term(), None);
        c.begin_term(6, persisted);
        assert_eq!(c.serving_term(), Some(6));
        // The new term needs its own window, above the old bound.
        assert_eq!(
            c.allocate(6, T0, 1),
            Err(TsoError::NeedWindow {
                bound_ms: bound + WINDOW_MS
            })
        );
    }

    #[test]
    fn a_newer_term_ends_the_served_one_without_step_down() {
        let mut c = TsoCore::new();
        let mut persisted = 0;
        ready(&mut c, 3, &mut persisted, T0);
        assert!(c.allocate(3, T0, 1).is_ok());
        // The node learned of term 4 (someone else leads it) and passes its current term.
        assert_eq!(c.allocate(4, T0, 1), Err(TsoError::NotServing));
        assert_eq!(c.serving_term(), None);
        // Requests still carrying the old term are refused from then on.
        assert_eq!(c.allocate(3, T0, 1), Err(TsoError::NotServing));
        // An entry of a newer term applying does the same.
        ready(&mut c, 5, &mut persisted, T0);
        c.window_applied(6, persisted + 1);
        assert_eq!(c.allocate(5, T0, 1), Err(TsoError::NotServing));
        // The node may still lead a later term.
        ready(&mut c, 6, &mut persisted, T0);
        assert!(c.allocate(6, T0, 1).is_ok());
    }

    #[test]
    fn clock_beyond_the_encoding_is_refused() {
        let mut c = TsoCore::new();
        let mut persisted = 0;
        ready(&mut c, 1, &mut persisted, T0);
        assert!(c.allocate(1, T0, 1).is_ok());
        assert_eq!(c.allocate(1, u64::MAX, 1), Err(TsoError::NotServing));
        assert_eq!(
            c.allocate(1, PHYSICAL_LIMIT_MS, 1),
            Err(TsoError::NotServing)
        );
        assert_eq!(c.serving_term(), Some(1));
        assert!(c.allocate(1, T0 + 1, 1).is_ok());
    }

    #[test]
    fn clock_backwards_holds_the_physical_part() {
        let mut c = TsoCore::new();
        let mut persisted = 0;
        ready(&mut c, 1, &mut persisted, T0);
        let mut last = 0;
        for now in [
            T0 + 100,
            T0 + 50,
            T0 - 10_000,
            T0 + 100,
            T0 + 101,
            0,
            T0 + 99,
        ] {
            let a = c.allocate(1, now, 3).unwrap();
            assert!(a.timestamp > last, "{now}: {} after {last}", a.timestamp);
            assert!(physical_of(a.timestamp) >= T0 + 100);
            last = a.timestamp + a.count - 1;
        }
        assert_eq!(c.last_physical_ms(), T0 + 101);
        assert_eq!(logical_of(last), 3 * 3 - 1);
    }

    #[test]
    fn frozen_clock_overflow_spills_into_the_next_millisecond() {
        let mut c = TsoCore::new();
        let mut persisted = 0;
        ready(&mut c, 1, &mut persisted, T0);
        let a = c.allocate(1, T0, COUNT_MAX - 10).unwrap();
        assert_eq!(a.timestamp, compose(T0, 0));
        let b = c.allocate(1, T0, 10).unwrap();
        assert_eq!(b.timestamp, compose(T0, COUNT_MAX - 10));
        // Full: the next one moves to T0 + 1 without the clock moving.
        let d = c.allocate(1, T0, 1).unwrap();
        assert_eq!(d.timestamp, compose(T0 + 1, 0));
        // A request that does not fit in what is left of a millisecond starts the next one.
        let e = c.allocate(1, T0, COUNT_MAX).unwrap();
        assert_eq!(e.timestamp, compose(T0 + 2, 0));
        // The clock catches up later: no going back.
        let f = c.allocate(1, T0 + 1, 1).unwrap();
        assert_eq!(f.timestamp, compose(T0 + 3, 0));
        let g = c.allocate(1, T0 + 10, 1).unwrap();
        assert_eq!(g.timestamp, compose(T0 + 10, 0));
        // Spilling cannot leave the window either.
        let mut n = 0;
        let err = loop {
            match c.allocate(1, T0 + 10, COUNT_MAX) {
                Ok(a) => {
                    assert!(physical_of(a.timestamp) < c.window_bound_ms());
                    n += 1;
                }
                Err(e) => break e,
            }
        };
        assert_eq!(c.last_physical_ms(), T0 + WINDOW_MS - 1);
        assert_eq!(n, WINDOW_MS - 11);
        assert_eq!(
            err,
            TsoError::NeedWindow {
                bound_ms: T0 + 2 * WINDOW_MS
            }
        );
    }

    #[test]
    fn count_limits() {
        let mut c = TsoCore::new();
        let mut persisted = 0;
        ready(&mut c, 1, &mut persisted, T0);
        assert_eq!(c.allocate(1, T0, 0), Err(TsoError::BadCount));
        assert_eq!(c.allocate(1, T0, COUNT_MAX + 1), Err(TsoError::BadCount));
        assert_eq!(c.allocate(1, T0, u64::MAX), Err(TsoError::BadCount));
        let a = c.allocate(1, T0, 5).unwrap();
        let b = c.allocate(1, T0, COUNT_MAX).unwrap();
        assert_eq!(b.timestamp, compose(T0 + 1, 0));
        assert_eq!(logical_of(b.timestamp) + b.count, COUNT_MAX);
        assert_eq!(
            physical_of(b.timestamp + b.count - 1),
            physical_of(b.timestamp)
        );
        assert_eq!(a.count + b.count, c.timestamps_issued());
        // Wrong term is reported before a bad count.
        assert_eq!(c.allocate(0, T0, 0), Err(TsoError::NotServing));
    }

    #[test]
    fn renewal_races_with_requests() {
        let mut c = TsoCore::new();
        let mut persisted = 0;
        ready(&mut c, 1, &mut persisted, T0);
        let bound = T0 + WINDOW_MS;
        // Plenty left: no renewal.
        assert_eq!(c.allocate(1, T0 + 1000, 1).unwrap().renew_bound_ms, None);
        assert_eq!(c.allocate(1, T0 + 2000, 1).unwrap().renew_bound_ms, None);
        // Less than a third left: one renewal, proposed in the background.
        let a = c.allocate(1, T0 + 2001, 1).unwrap();
        assert_eq!(a.renew_bound_ms, Some(T0 + 2001 + WINDOW_MS));
        // While it is pending, requests go on from the old window, asking again only once
        // (half a second later: presumed lost)...
        for now in T0 + 2002..bound {
            let a = c.allocate(1, now, 1).unwrap();
            let again = (now == T0 + 2501).then_some(now + WINDOW_MS);
            assert_eq!(a.renew_bound_ms, again, "{now}");
            assert_eq!(physical_of(a.timestamp), now);
        }
        // ...but never past the applied bound.
        assert_eq!(
            c.allocate(1, bound, 1),
            Err(TsoError::NeedWindow {
                bound_ms: bound + WINDOW_MS
            })
        );
        assert_eq!(
            c.allocate(1, bound + 500, 1),
            Err(TsoError::NeedWindow {
                bound_ms: bound + 500 + WINDOW_MS
            })
        );
        // The renewal applies (late): the stream continues.
        c.window_applied(1, T0 + 2001 + WINDOW_MS);
        let a = c.allocate(1, bound, 1).unwrap();
        assert_eq!(physical_of(a.timestamp), bound);
        // An older, smaller bound applying after a larger one does not shrink the window.
        c.window_applied(1, bound);
        assert_eq!(c.window_bound_ms(), T0 + 2001 + WINDOW_MS);
    }

    #[test]
    fn a_lost_renewal_is_asked_again() {
        let mut c = TsoCore::new();
        let mut persisted = 0;
        ready(&mut c, 1, &mut persisted, T0);
        assert_eq!(
            c.allocate(1, T0 + 2001, 1).unwrap().renew_bound_ms,
            Some(T0 + 5001)
        );
        assert_eq!(c.allocate(1, T0 + 2400, 1).unwrap().renew_bound_ms, None);
        // Half a second later it still has not applied: presumed lost, asked again once.
        assert_eq!(
            c.allocate(1, T0 + 2501, 1).unwrap().renew_bound_ms,
            Some(T0 + 5501)
        );
        assert_eq!(c.allocate(1, T0 + 2600, 1).unwrap().renew_bound_ms, None);
        c.window_applied(1, T0 + 5501);
        // The first one applies late: the window does not shrink, nothing is pending.
        c.window_applied(1, T0 + 5001);
        assert_eq!(c.window_bound_ms(), T0 + 5501);
        assert_eq!(c.allocate(1, T0 + 4501, 1).unwrap().renew_bound_ms, None);
        assert_eq!(
            c.allocate(1, T0 + 4502, 1).unwrap().renew_bound_ms,
            Some(T0 + 7502)
        );
    }

    #[test]
    fn steady_stream_never_waits() {
        // One request per ms; every renewal applies 200 ms after it was asked for.
        let mut c = TsoCore::new();
        let mut persisted = 0;
        ready(&mut c, 1, &mut persisted, T0);
        let mut in_flight: VecDeque<(u64, u64)> = VecDeque::new();
        let mut last = 0;
        for now in T0..T0 + 30 * WINDOW_MS {
            while in_flight.front().is_some_and(|&(at, _)| at <= now) {
                let (_, b) = in_flight.pop_front().unwrap();
                c.window_applied(1, b);
            }
            let a = c.allocate(1, now, 1).expect("never waits");
            assert!(a.timestamp > last);
            last = a.timestamp;
            if let Some(b) = a.renew_bound_ms {
                in_flight.push_back((now + 200, b));
            }
        }
    }

    #[test]
    fn leader_change_in_the_middle_of_a_window() {
        let mut persisted = 0;
        let mut a = TsoCore::new();
        ready(&mut a, 1, &mut persisted, T0);
        let from_a = a.allocate(1, T0 + 10, 100).unwrap();
        let a_bound = a.window_bound_ms();
        assert_eq!(persisted, a_bound);
        // B is elected in term 2; its clock is 2 s behind A's.
        let mut b = TsoCore::new();
        b.begin_term(2, persisted);
        assert_eq!(
            b.allocate(2, T0 - 2000, 1),
            Err(TsoError::NeedWindow {
                bound_ms: a_bound + WINDOW_MS
            })
        );
        // A learns of term 2 and steps down; its stale term is refused from then on.
        a.step_down();
        assert_eq!(a.allocate(1, T0 + 20, 1), Err(TsoError::NotServing));
        // A renewal A proposed in term 1 that applies now does not count for B.
        b.window_applied(1, a_bound + 10 * WINDOW_MS);
        assert!(matches!(
            b.allocate(2, T0 - 2000, 1),
            Err(TsoError::NeedWindow { .. })
        ));
        persisted = persisted.max(a_bound + WINDOW_MS);
        b.window_applied(2, a_bound + WINDOW_MS);
        let from_b = b.allocate(2, T0 - 2000, 1).unwrap();
        assert!(from_b.timestamp > from_a.timestamp + from_a.count);
        assert_eq!(physical_of(from_b.timestamp), a_bound);
        // B's later timestamps hold at the floor until its clock passes it.
        let next = b.allocate(2, T0 + 5, 1).unwrap();
        assert_eq!(next.timestamp, from_b.timestamp + 1);
        // A old term at B is refused too.
        assert_eq!(b.allocate(1, T0, 1), Err(TsoError::NotServing));
        // A becomes leader again in term 3: above everything B could have handed out.
        b.step_down();
        ready(&mut a, 3, &mut persisted, T0 + 30);
        let again = a.allocate(3, T0 + 30, 1).unwrap();
        assert!(physical_of(again.timestamp) >= a_bound + WINDOW_MS);
        assert_eq!(a.allocate(1, T0 + 30, 1), Err(TsoError::NotServing));
    }

    #[test]
    fn restart_rebuilds_from_the_persisted_bound_only() {
        let mut persisted = 0;
        let mut c = TsoCore::new();
        ready(&mut c, 7, &mut persisted, T0);
        let mut last = 0;
        for i in 0..1000 {
            let a = c.allocate(7, T0 + i, 1000).unwrap();
            last = a.timestamp + a.count - 1;
            if let Some(b) = a.renew_bound_ms {
                persisted = persisted.max(b);
                c.window_applied(7, b);
            }
        }
        // Snapshot holds `persisted` only; the node restarts with its clock reset to the epoch.
        let mut c = TsoCore::new();
        assert_eq!(c.allocate(7, 0, 1), Err(TsoError::NotServing));
        ready(&mut c, 8, &mut persisted, 0);
        let a = c.allocate(8, 0, 1).unwrap();
        assert!(a.timestamp > last);
        assert!(physical_of(a.timestamp) > T0 + 999);
    }

    // ---- a random schedule across several nodes sharing one replicated bound ----

    #[derive(Debug, Clone)]
    enum Op {
        /// A new term; `node` wins. Entries of the old term still queued either commit before
        /// the new leader's first entry (`keep_old`) or are lost.
        ///
        /// The old leader learns of the new term either by `step_down` (`by_call == false`) or
        /// only by its next request, which carries the new term (`by_call`).
        Elect {
            node: usize,
            keep_old: bool,
            by_call: bool,
        },
        /// The new leader's first entry applies.
        TermEntry,
        /// The oldest proposed bound applies (on every node).
        Apply,
        /// `node` (`None`: the leader, if any) asks for timestamps with the current term, or
        /// with an older one.
        Alloc {
            node: Option<usize>,
            stale: u64,
            count: u64,
        },
        Clock {
            node: usize,
            delta: i64,
        },
        Restart {
            node: usize,
        },
    }

    const NODES: usize = 3;

    fn op() -> impl Strategy<Value = Op> {
        let count = prop_oneof![
            8 => 1..=4u64,
            2 => 1..=COUNT_MAX,
            2 => Just(COUNT_MAX),
            1 => Just(0u64),
            1 => Just(COUNT_MAX + 1),
        ];
        let delta = prop_oneof![
            6 => 0..=50i64,
            2 => -50..=0i64,
            1 => -100_000..=100_000i64,
            1 => Just(WINDOW_MS as i64),
        ];
        prop_oneof![
            1 => (0..NODES, any::<bool>(), any::<bool>())
                .prop_map(|(node, keep_old, by_call)| Op::Elect { node, keep_old, by_call }),
            3 => Just(Op::TermEntry),
            8 => Just(Op::Apply),
            30 => (prop_oneof![3 => Just(None), 1 => (0..NODES).prop_map(Some)], prop_oneof![4 => Just(0u64), 1 => 1..3u64], count)
                .prop_map(|(node, stale, count)| Op::Alloc { node, stale, count }),
            4 => (0..NODES, delta).prop_map(|(node, delta)| Op::Clock { node, delta }),
            1 => (0..NODES).prop_map(|node| Op::Restart { node }),
        ]
    }

    struct Sim {
        cores: Vec<TsoCore>,
        clocks: Vec<u64>,
        term: u64,
        leader: Option<usize>,
        /// The leader's first entry of `term` applied.
        ready: bool,
        /// The replicated bound: the largest applied.
        persisted: u64,
        /// Proposed, not yet applied: (term, bound).
        log: VecDeque<(u64, u64)>,
        /// Floor and largest bound applied in the current term.
        floor: u64,
        applied_in_term: u64,
        /// End (exclusive) of the last successful allocation, in issue order.
        issued_end: u64,
        successes: u64,
    }

    impl Sim {
        fn apply_front(&mut self) {
            if let Some((t, b)) = self.log.pop_front() {
                self.persisted = self.persisted.max(b);
                for c in &mut self.cores {
                    c.window_applied(t, b);
                }
                if t == self.term {
                    self.applied_in_term = self.applied_in_term.max(b);
                }
            }
        }

        fn step(&mut self, op: Op) {
            match op {
                Op::Elect {
                    node,
                    keep_old,
                    by_call,
                } => {
                    if keep_old {
                        while !self.log.is_empty() {
                            self.apply_front();
                        }
                    }
                    self.log.clear();
                    let old = self.leader;
                    self.term += 1;
                    for i in 0..NODES {
                        if by_call && old == Some(i) {
                            // Its next request carries the term its raft node now knows.
                            let now = self.clocks[i];
                            assert!(self.cores[i].allocate(self.term, now, 1).is_err());
                        } else {
                            self.cores[i].step_down();
                        }
                    }
                    self.leader = Some(node);
                    self.ready = false;
                }
                Op::TermEntry => {
                    if let (Some(l), false) = (self.leader, self.ready) {
                        self.cores[l].begin_term(self.term, self.persisted);
                        self.ready = true;
                        self.floor = self.persisted;
                        self.applied_in_term = self.persisted;
                    }
                }
                Op::Apply => {
                    if self.leader.is_some() {
                        self.apply_front();
                    }
                }
                Op::Alloc { node, stale, count } => {
                    let node = node.or(self.leader).unwrap_or(0);
                    let term = self.term.saturating_sub(stale);
                    let serving = self.leader == Some(node) && self.ready && stale == 0;
                    let now = self.clocks[node];
                    match self.cores[node].allocate(term, now, count) {
                        Ok(a) => {
                            assert!(serving, "served term {term} at node {node}: {self:?}");
                            assert!(
                                a.timestamp >= self.issued_end,
                                "not increasing: {a:?} after {}",
                                self.issued_end
                            );
                            assert_eq!(a.count, count);
                            assert!(
                                logical_of(a.timestamp) + count <= COUNT_MAX,
                                "spans two ms: {a:?}"
                            );
                            let p = physical_of(a.timestamp);
                            assert!(p >= self.floor, "below floor {}: {a:?}", self.floor);
                            assert!(
                                p < self.applied_in_term,
                                "past the applied bound {}: {a:?}",
                                self.applied_in_term
                            );
                            self.issued_end = a.timestamp + count;
                            self.successes += 1;
                            if let Some(b) = a.renew_bound_ms {
                                assert!(b > p);
                                self.log.push_back((self.term, b));
                            }
                        }
                        Err(TsoError::NotServing) => assert!(!serving),
                        Err(TsoError::BadCount) => {
                            assert!(serving);
                            assert!(count == 0 || count > COUNT_MAX);
                        }
                        Err(TsoError::NeedWindow { bound_ms }) => {
                            assert!(serving);
                            assert!(bound_ms > self.floor && bound_ms >= now);
                            self.log.push_back((self.term, bound_ms));
                        }
                    }
                }
                Op::Clock { node, delta } => {
                    self.clocks[node] = self.clocks[node].saturating_add_signed(delta);
                }
                Op::Restart { node } => {
                    self.cores[node] = TsoCore::new();
                    if self.leader == Some(node) {
                        // Its proposals may still commit under the next leader (Elect decides).
                        self.leader = None;
                        self.ready = false;
                    }
                }
            }
        }
    }

    impl std::fmt::Debug for Sim {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "term {} leader {:?} ready {} persisted {} floor {} applied {} log {:?}",
                self.term,
                self.leader,
                self.ready,
                self.persisted,
                self.floor,
                self.applied_in_term,
                self.log
            )
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        #[test]
        fn unique_and_increasing_across_leaders_clocks_and_restarts(
            offsets in proptest::collection::vec(-10_000..=10_000i64, NODES),
            ops in proptest::collection::vec(op(), 1..400),
        ) {
            let mut sim = Sim {
                cores: vec![TsoCore::new(); NODES],
                clocks: offsets.iter().map(|o| T0.saturating_add_signed(*o)).collect(),
                term: 0,
                leader: None,
                ready: false,
                persisted: 0,
                log: VecDeque::new(),
                floor: 0,
                applied_in_term: 0,
                issued_end: 0,
                successes: 0,
            };
            for op in ops {
                sim.step(op);
            }
            if std::env::var_os("TSO_SIM_STATS").is_some() {
                eprintln!("term {} successes {} persisted {}", sim.term, sim.successes, sim.persisted);
            }
            let issued: u64 = sim.cores.iter().map(TsoCore::allocations).sum();
            prop_assert!(issued <= sim.successes);
        }
    }
}
