//! Unique ID allocator core: pure state, no I/O.
//!
//! Same scheme as the timestamp oracle ([`super::tso`]) with a counter instead of a clock: one
//! replicated number, the *high-water mark* (exclusive; the state machine keeps the maximum it
//! has applied), means "ids below it may have been handed out". The leader of group 0 hands
//! out ids only below the largest high-water mark it has seen applied in its own term.
//!
//! A leader of term `T` starts at `max(persisted high-water when T began, FIRST_ID)` (the
//! `floor`) and serves only after a block it proposed in term `T` applied. A block is
//! `next + count + block` when the request does not fit ([`IdError::NeedBlock`], synchronous);
//! when fewer than `block / 2` ids remain after a request, it asks for `next + block` in the
//! background ([`IdAllocation::renew_high_water`]). `block` starts at [`BLOCK`] each term and
//! doubles (to [`BLOCK_MAX`]) whenever a request finds a block of this term used up: a fixed
//! block would cost one synchronous raft commit per `BLOCK` ids under batch demand. Ids are never reissued and strictly
//! increase, across leader changes and restarts.
//!
//! As for the TSO, a call carrying a term above the served one ends it (as
//! [`IdCore::step_down`] does): the caller passes its raft node's current term (or calls
//! `step_down` when the node learns of a higher term) and replies only while it still holds
//! leadership of the term it passed.

/// Ids proposed ahead of need when a term starts.
pub const BLOCK: u64 = 10_000;
/// The block doubles each time demand outruns it (a request finds this term's block used up
/// before its renewal applied), up to this many ids per raft commit.
pub const BLOCK_MAX: u64 = 1 << 24;
/// Largest `count` of one request.
pub const COUNT_MAX: u64 = 1_000_000;
/// Ids below are reserved for fixed objects (e.g. Milvus's default database has id 1).
pub const FIRST_ID: u64 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdError {
    /// Not the leader of this term (or its leadership is not ready yet).
    NotServing,
    /// `count` is 0 or above [`COUNT_MAX`].
    BadCount,
    /// The request does not fit below the applied high-water mark: propose this one, wait for
    /// it to apply, retry.
    NeedBlock { high_water: u64 },
}

impl std::fmt::Display for IdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdError::NotServing => f.write_str("not the serving id leader of this term"),
            IdError::BadCount => write!(f, "count must be between 1 and {COUNT_MAX}"),
            IdError::NeedBlock { high_water } => write!(f, "need ids up to {high_water}"),
        }
    }
}

impl std::error::Error for IdError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdAllocation {
    /// The request owns `[first, first + count)`.
    pub first: u64,
    pub count: u64,
    /// Few ids left: propose this high-water mark in the background (no need to wait).
    pub renew_high_water: Option<u64>,
}

/// See the module documentation.
#[derive(Debug, Default, Clone)]
pub struct IdCore {
    serving: Option<u64>,
    /// Highest term seen in any call; `begin_term` of an older term is ignored.
    max_term: u64,
    /// `max(persisted high-water when the serving term began, FIRST_ID)`.
    floor: u64,
    /// Largest high-water mark applied in the serving term (`== floor` until one applies).
    high_water: u64,
    /// Next id to hand out.
    next: u64,
    /// Renewal asked for and not applied yet: (high-water, `next` when asked).
    pending: Option<(u64, u64)>,
    /// Ids proposed ahead of need (see the module documentation).
    block: u64,
    allocations: u64,
}

impl IdCore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Leadership of `term` is ready (an entry of `term` applied); `persisted_high_water` is
    /// the applied high-water mark now. Idempotent per term; an older term is ignored.
    pub fn begin_term(&mut self, term: u64, persisted_high_water: u64) {
        if self.serving == Some(term) || term < self.max_term {
            return;
        }
        self.max_term = term;
        self.serving = Some(term);
        self.floor = persisted_high_water.max(FIRST_ID);
        self.high_water = self.floor;
        self.next = self.floor;
        self.pending = None;
        self.block = BLOCK;
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

    /// A high-water mark proposed in `term` applied (ignored unless `term` is the serving term
    /// and it is above the floor). Keeps the largest.
    pub fn block_applied(&mut self, term: u64, high_water: u64) {
        self.observe(term);
        if self.serving != Some(term) || high_water <= self.floor {
            return;
        }
        self.high_water = self.high_water.max(high_water);
        if matches!(self.pending, Some((h, _)) if h <= self.high_water) {
            self.pending = None;
        }
    }

    /// Hands out `[first, first + count)`. `term` should be the raft node's current term: a
    /// term above the one being served ends it (`NotServing` from then on).
    pub fn allocate(&mut self, term: u64, count: u64) -> Result<IdAllocation, IdError> {
        self.observe(term);
        if self.serving != Some(term) {
            return Err(IdError::NotServing);
        }
        if count == 0 || count > COUNT_MAX {
            return Err(IdError::BadCount);
        }
        let first = self.next;
        let Some(end) = first
            .checked_add(count)
            .filter(|e| e.checked_add(BLOCK).is_some())
        else {
            // The id space is exhausted (only a corrupt high-water mark gets here).
            return Err(IdError::NotServing);
        };
        if end > self.high_water {
            if self.high_water > self.floor {
                // A block of this term ran out before its renewal applied: demand outruns it.
                self.block = (self.block * 2).min(BLOCK_MAX);
            }
            return Err(IdError::NeedBlock {
                high_water: end + self.block,
            });
        }
        self.next = end;
        self.allocations += 1;

        let mut renew_high_water = None;
        if self.high_water - end < self.block / 2 {
            // Ask again if an earlier renewal seems lost (a quarter of a block later).
            let ask = match self.pending {
                None => true,
                Some((_, asked_at)) => end >= asked_at + self.block / 4,
            };
            if ask {
                let high_water = end + self.block;
                self.pending = Some((high_water, end));
                renew_high_water = Some(high_water);
            }
        }
        Ok(IdAllocation {
            first,
            count,
            renew_high_water,
        })
    }

    /// The high-water mark a ready leader should persist now so that one id can be served
    /// (None when ids remain or `term` is not served): what `allocate(term, 1)` would ask
    /// for, without handing anything out.
    pub fn block_to_reserve(&self, term: u64) -> Option<u64> {
        if self.serving != Some(term) || self.next < self.high_water {
            return None;
        }
        self.next.checked_add(1 + self.block)
    }

    pub fn serving_term(&self) -> Option<u64> {
        self.serving
    }

    /// Largest high-water mark applied in the serving term (the floor until a block applies).
    pub fn high_water(&self) -> u64 {
        self.high_water
    }

    /// The next id this core would hand out.
    pub fn next_id(&self) -> u64 {
        self.next
    }

    /// Successful `allocate` calls since creation.
    pub fn allocations(&self) -> u64 {
        self.allocations
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    /// A leader of `term` ready with a block applied, as the integrator would drive it.
    fn ready(core: &mut IdCore, term: u64, persisted: &mut u64) {
        core.begin_term(term, *persisted);
        let Err(IdError::NeedBlock { high_water }) = core.allocate(term, 1) else {
            panic!("a new term must ask for a block first");
        };
        *persisted = (*persisted).max(high_water);
        core.block_applied(term, high_water);
    }

    #[test]
    fn block_to_reserve_asks_what_allocate_would_and_hands_out_nothing() {
        let mut c = IdCore::new();
        assert_eq!(c.block_to_reserve(1), None);
        c.begin_term(1, 0);
        let want = c.block_to_reserve(1).expect("a new term needs a block");
        assert_eq!(c.block_to_reserve(1), Some(want));
        assert_eq!(c.allocations(), 0);
        assert_eq!(
            c.allocate(1, 1),
            Err(IdError::NeedBlock { high_water: want })
        );
        c.block_applied(1, want);
        assert_eq!(c.block_to_reserve(1), None);
        assert_eq!(c.allocate(1, 1).unwrap().first, FIRST_ID);
        assert_eq!(c.block_to_reserve(2), None);
    }

    #[test]
    fn serves_only_after_term_and_own_block() {
        let mut c = IdCore::new();
        assert_eq!(c.allocate(1, 1), Err(IdError::NotServing));
        c.begin_term(1, 0);
        assert_eq!(c.serving_term(), Some(1));
        assert_eq!(c.next_id(), FIRST_ID);
        assert_eq!(
            c.allocate(1, 5),
            Err(IdError::NeedBlock {
                high_water: FIRST_ID + 5 + BLOCK
            })
        );
        c.block_applied(0, FIRST_ID + 5 + BLOCK);
        c.block_applied(1, FIRST_ID);
        assert!(matches!(c.allocate(1, 5), Err(IdError::NeedBlock { .. })));
        c.block_applied(1, FIRST_ID + 5 + BLOCK);
        assert_eq!(c.high_water(), FIRST_ID + 5 + BLOCK);
        let a = c.allocate(1, 5).unwrap();
        assert_eq!(
            a,
            IdAllocation {
                first: FIRST_ID,
                count: 5,
                renew_high_water: None
            }
        );
        assert_eq!(c.next_id(), FIRST_ID + 5);
        assert_eq!(c.allocate(0, 1), Err(IdError::NotServing));
        assert_eq!(c.allocate(2, 1), Err(IdError::NotServing));
        assert_eq!(c.allocate(1, 1), Err(IdError::NotServing));
        assert_eq!(c.allocations(), 1);
    }

    #[test]
    fn starts_above_the_persisted_high_water_or_first_id() {
        let mut c = IdCore::new();
        c.begin_term(1, 7);
        assert_eq!(c.next_id(), FIRST_ID);
        let mut c = IdCore::new();
        c.begin_term(1, 123_456);
        assert_eq!(c.next_id(), 123_456);
        assert_eq!(
            c.allocate(1, 1),
            Err(IdError::NeedBlock {
                high_water: 123_457 + BLOCK
            })
        );
    }

    #[test]
    fn a_newer_term_ends_the_served_one_without_step_down() {
        let mut c = IdCore::new();
        let mut persisted = 0;
        ready(&mut c, 3, &mut persisted);
        assert!(c.allocate(3, 1).is_ok());
        assert_eq!(c.allocate(4, 1), Err(IdError::NotServing));
        assert_eq!(c.allocate(3, 1), Err(IdError::NotServing));
        ready(&mut c, 5, &mut persisted);
        c.block_applied(6, persisted + 1);
        assert_eq!(c.allocate(5, 1), Err(IdError::NotServing));
        ready(&mut c, 6, &mut persisted);
        assert!(c.allocate(6, 1).is_ok());
        // An exhausted id space is refused, not wrapped.
        let mut c = IdCore::new();
        c.begin_term(1, u64::MAX - 10);
        assert_eq!(c.allocate(1, 5), Err(IdError::NotServing));
    }

    #[test]
    fn count_limits() {
        let mut c = IdCore::new();
        let mut persisted = 0;
        ready(&mut c, 1, &mut persisted);
        assert_eq!(c.allocate(1, 0), Err(IdError::BadCount));
        assert_eq!(c.allocate(1, COUNT_MAX + 1), Err(IdError::BadCount));
        assert_eq!(c.allocate(1, u64::MAX), Err(IdError::BadCount));
        assert_eq!(c.allocate(0, 0), Err(IdError::NotServing));
        // The largest request needs a block of its own, synchronously (and, having used up
        // this term's first block, a bigger one).
        let next = c.next_id();
        assert_eq!(
            c.allocate(1, COUNT_MAX),
            Err(IdError::NeedBlock {
                high_water: next + COUNT_MAX + 2 * BLOCK
            })
        );
        c.block_applied(1, next + COUNT_MAX + 2 * BLOCK);
        let a = c.allocate(1, COUNT_MAX).unwrap();
        assert_eq!(
            (a.first, a.count, a.renew_high_water),
            (next, COUNT_MAX, None)
        );
    }

    #[test]
    fn renewal_races_with_requests() {
        let mut c = IdCore::new();
        let mut persisted = 0;
        ready(&mut c, 1, &mut persisted);
        let hw = c.high_water();
        assert_eq!(hw, FIRST_ID + 1 + BLOCK);
        // Fill up to just above half a block left: no renewal.
        let a = c.allocate(1, hw - FIRST_ID - BLOCK / 2).unwrap();
        assert_eq!(a.renew_high_water, None);
        assert_eq!(c.next_id(), hw - BLOCK / 2);
        // Below half a block left: one renewal, in the background.
        let a = c.allocate(1, 1).unwrap();
        let end = hw - BLOCK / 2 + 1;
        assert_eq!(a.renew_high_water, Some(end + BLOCK));
        // Pending: requests continue from the old block, asking again only once a quarter
        // of a block later (presumed lost), and never past the applied high-water mark.
        let mut asked = vec![];
        let mut last = a.first;
        loop {
            match c.allocate(1, 100) {
                Ok(a) => {
                    assert!(a.first > last && a.first + a.count <= hw);
                    last = a.first;
                    asked.extend(a.renew_high_water);
                }
                Err(e) => {
                    // The renewal did not apply in time: the next block is twice as large.
                    assert_eq!(
                        e,
                        IdError::NeedBlock {
                            high_water: c.next_id() + 100 + 2 * BLOCK
                        }
                    );
                    break;
                }
            }
        }
        assert_eq!(asked.len(), 1, "{asked:?}");
        assert!(c.next_id() + 100 > hw && c.next_id() <= hw);
        // The first renewal applies late: the stream continues.
        c.block_applied(1, end + BLOCK);
        assert_eq!(c.high_water(), end + BLOCK);
        let a = c.allocate(1, 100).unwrap();
        assert!(a.first > last);
        // An older, smaller high-water mark applying late does not shrink it.
        c.block_applied(1, hw);
        assert_eq!(c.high_water(), end + BLOCK);
    }

    #[test]
    fn steady_stream_never_waits() {
        let mut c = IdCore::new();
        let mut persisted = 0;
        ready(&mut c, 1, &mut persisted);
        // Renewals apply 20 requests after they were asked for.
        let mut in_flight: VecDeque<(u64, u64)> = VecDeque::new();
        let mut next = FIRST_ID;
        for i in 0..100_000u64 {
            while in_flight.front().is_some_and(|&(at, _)| at <= i) {
                c.block_applied(1, in_flight.pop_front().unwrap().1);
            }
            let a = c.allocate(1, 1 + i % 64).expect("never waits");
            assert_eq!(a.first, next);
            next += a.count;
            if let Some(h) = a.renew_high_water {
                in_flight.push_back((i + 20, h));
            }
        }
    }

    #[test]
    fn the_block_grows_while_demand_outruns_it_and_restarts_each_term() {
        let mut c = IdCore::new();
        let mut persisted = 0;
        ready(&mut c, 1, &mut persisted);
        // Renewals that never land in time: every exhaustion doubles the block.
        let mut blocks = Vec::new();
        for _ in 0..100 {
            match c.allocate(1, 1_000) {
                Ok(_) => {}
                Err(IdError::NeedBlock { high_water }) => {
                    blocks.push(high_water - c.next_id() - 1_000);
                    c.block_applied(1, high_water);
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(blocks[..3], [2 * BLOCK, 4 * BLOCK, 8 * BLOCK]);
        // Fewer synchronous waits than a fixed block (100k ids / 10k: 9 waits at least).
        assert!(blocks.len() <= 3, "{blocks:?}");
        // Up to the cap, never beyond.
        for _ in 0..40 {
            let need = c.high_water() - c.next_id() + 1;
            let Err(IdError::NeedBlock { high_water }) = c.allocate(1, need.min(COUNT_MAX)) else {
                continue;
            };
            assert!(high_water - c.next_id() - need.min(COUNT_MAX) <= BLOCK_MAX);
            c.block_applied(1, high_water);
        }
        // A new term starts from the initial block again.
        let mut persisted = c.high_water();
        ready(&mut c, 2, &mut persisted);
        assert_eq!(c.high_water(), persisted);
        let a = c.allocate(2, 1).unwrap();
        assert_eq!(c.high_water() - a.first, 1 + BLOCK);
    }

    #[test]
    fn leader_change_and_stale_terms() {
        let mut persisted = 0;
        let mut a = IdCore::new();
        ready(&mut a, 1, &mut persisted);
        let from_a = a.allocate(1, 10).unwrap();
        let a_hw = a.high_water();
        let mut b = IdCore::new();
        b.begin_term(2, persisted);
        a.step_down();
        assert_eq!(a.allocate(1, 1), Err(IdError::NotServing));
        assert_eq!(b.allocate(1, 1), Err(IdError::NotServing));
        // A's block of term 1 applying now does not count for B.
        b.block_applied(1, a_hw + 5 * BLOCK);
        assert_eq!(
            b.allocate(2, 1),
            Err(IdError::NeedBlock {
                high_water: a_hw + 1 + BLOCK
            })
        );
        b.block_applied(2, a_hw + 1 + BLOCK);
        let from_b = b.allocate(2, 1).unwrap();
        assert_eq!(from_b.first, a_hw);
        assert!(from_b.first >= from_a.first + from_a.count);
        // An older term's begin is ignored; the same term's is idempotent.
        b.begin_term(1, 0);
        b.begin_term(2, a_hw + 1 + BLOCK);
        assert_eq!(b.allocate(2, 1).unwrap().first, a_hw + 1);
    }

    #[test]
    fn restart_rebuilds_from_the_persisted_high_water_only() {
        let mut persisted = 0;
        let mut c = IdCore::new();
        ready(&mut c, 3, &mut persisted);
        let mut last = 0;
        for _ in 0..1000 {
            let a = match c.allocate(3, 77) {
                Ok(a) => a,
                Err(IdError::NeedBlock { high_water }) => {
                    persisted = persisted.max(high_water);
                    c.block_applied(3, high_water);
                    c.allocate(3, 77).unwrap()
                }
                Err(e) => panic!("{e}"),
            };
            last = a.first + a.count - 1;
        }
        let mut c = IdCore::new();
        ready(&mut c, 4, &mut persisted);
        let a = c.allocate(4, 1).unwrap();
        assert!(a.first > last);
    }

    // ---- a random schedule across several nodes sharing one replicated high-water mark ----

    #[derive(Debug, Clone)]
    enum Op {
        ///
        /// The old leader learns of the new term either by `step_down` (`by_call == false`) or
        /// only by its next request, which carries the new term (`by_call`).
        Elect {
            node: usize,
            keep_old: bool,
            by_call: bool,
        },
        TermEntry,
        Apply,
        Alloc {
            node: Option<usize>,
            stale: u64,
            count: u64,
        },
        Restart {
            node: usize,
        },
    }

    const NODES: usize = 3;

    fn op() -> impl Strategy<Value = Op> {
        let count = prop_oneof![
            8 => 1..=100u64,
            2 => 1..=COUNT_MAX,
            1 => Just(COUNT_MAX),
            1 => Just(0u64),
            1 => Just(COUNT_MAX + 1),
        ];
        prop_oneof![
            1 => (0..NODES, any::<bool>(), any::<bool>())
                .prop_map(|(node, keep_old, by_call)| Op::Elect { node, keep_old, by_call }),
            3 => Just(Op::TermEntry),
            8 => Just(Op::Apply),
            30 => (prop_oneof![3 => Just(None), 1 => (0..NODES).prop_map(Some)], prop_oneof![4 => Just(0u64), 1 => 1..3u64], count)
                .prop_map(|(node, stale, count)| Op::Alloc { node, stale, count }),
            1 => (0..NODES).prop_map(|node| Op::Restart { node }),
        ]
    }

    #[derive(Debug)]
    struct Sim {
        cores: Vec<IdCore>,
        term: u64,
        leader: Option<usize>,
        ready: bool,
        persisted: u64,
        log: VecDeque<(u64, u64)>,
        floor: u64,
        applied_in_term: u64,
        issued_end: u64,
        successes: u64,
    }

    impl Sim {
        fn apply_front(&mut self) {
            if let Some((t, h)) = self.log.pop_front() {
                self.persisted = self.persisted.max(h);
                for c in &mut self.cores {
                    c.block_applied(t, h);
                }
                if t == self.term {
                    self.applied_in_term = self.applied_in_term.max(h);
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
                            assert!(self.cores[i].allocate(self.term, 1).is_err());
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
                        self.floor = self.persisted.max(FIRST_ID);
                        self.applied_in_term = self.floor;
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
                    match self.cores[node].allocate(term, count) {
                        Ok(a) => {
                            assert!(serving, "served term {term} at node {node}: {self:?}");
                            assert!(
                                a.first >= self.issued_end,
                                "reissued: {a:?} after {}",
                                self.issued_end
                            );
                            assert!(a.first >= self.floor);
                            assert!(
                                a.first + a.count <= self.applied_in_term,
                                "past the applied mark: {a:?} {self:?}"
                            );
                            assert_eq!(a.count, count);
                            self.issued_end = a.first + count;
                            self.successes += 1;
                            if let Some(h) = a.renew_high_water {
                                self.log.push_back((self.term, h));
                            }
                        }
                        Err(IdError::NotServing) => assert!(!serving),
                        Err(IdError::BadCount) => {
                            assert!(serving && (count == 0 || count > COUNT_MAX))
                        }
                        Err(IdError::NeedBlock { high_water }) => {
                            assert!(serving && high_water > self.floor);
                            self.log.push_back((self.term, high_water));
                        }
                    }
                }
                Op::Restart { node } => {
                    self.cores[node] = IdCore::new();
                    if self.leader == Some(node) {
                        self.leader = None;
                        self.ready = false;
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        #[test]
        fn unique_and_increasing_across_leaders_and_restarts(ops in proptest::collection::vec(op(), 1..400)) {
            let mut sim = Sim {
                cores: vec![IdCore::new(); NODES],
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
            if std::env::var_os("ID_SIM_STATS").is_some() {
                eprintln!("term {} successes {} persisted {}", sim.term, sim.successes, sim.persisted);
            }
        }
    }
}
