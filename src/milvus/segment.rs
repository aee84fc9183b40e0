//! Segment assignment (design §10.7, reference §5) as a pure core: the allocation policy,
//! expiring grants, sealing policies and the row-size estimate. No clock: timestamps (TSO
//! values) and random jitter come from the caller.
//!
//! Grants are leader memory. The invariant this core keeps: for every segment,
//! `rows + Σ unexpired grants ≤ max_rows`, where a grant counts whole until it expires (the
//! allocator cannot know how much of it a proxy used). Across a leader change the old
//! leader's grants are unknown, so `take_over` gives every growing segment a grant of all its
//! free rows expiring at `fresh_ts + expiration`: every old grant was issued at a timestamp
//! below `fresh_ts` (the TSO never goes back), so it expired by then. Milvus does the same
//! after a restart by setting each growing segment's last expiry to a fresh timestamp.

use std::collections::BTreeMap;

use crate::meta::milvus::Field;

/// `dataCoord.segment.maxSize` (MB).
pub const SEGMENT_MAX_SIZE_MB: u64 = 1024;
/// `dataCoord.segment.sealProportion`.
pub const SEAL_PROPORTION: f64 = 0.12;
/// `dataCoord.segment.sealProportionJitter`.
pub const SEAL_PROPORTION_JITTER: f64 = 0.1;
/// `dataCoord.segment.assignmentExpiration` (ms).
pub const ASSIGNMENT_EXPIRATION_MS: u64 = 2000;
/// `dataCoord.segment.maxLife` (s).
pub const MAX_LIFE_S: u64 = 86_400;
/// `dataCoord.segment.maxIdleTime` (s).
pub const MAX_IDLE_S: u64 = 600;
/// `dataCoord.segment.minSizeFromIdleToSealed` (MB).
pub const MIN_SIZE_FROM_IDLE_TO_SEALED_MB: u64 = 16;
/// `dataCoord.segment.maxBinlogFileNumber`.
pub const MAX_BINLOG_FILE_NUMBER: u64 = 32;
/// Grants kept per segment: a proxy asks for ≥ 20,000 rows at a time, so a 1 GB segment
/// of small rows sees at most a few hundred grants within one expiration.
pub const GRANTS_PER_SEGMENT_MAX: usize = 4096;
/// TSO: the physical part (ms) is shifted left by this many bits.
pub const TS_LOGICAL_BITS: u32 = 18;

/// Milliseconds as a TSO difference.
pub fn ms_to_ts(ms: u64) -> u64 {
    ms << TS_LOGICAL_BITS
}

/// Bytes per row as `typeutil.EstimateSizePerRecord` counts them, plus the system RowID and
/// Timestamp fields (8 bytes each).
pub fn estimate_row_bytes(fields: &[Field], dynamic: bool) -> u64 {
    let param = |f: &Field, name: &str| -> u64 {
        f.type_params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut total = 16u64;
    for f in fields {
        let dim = param(f, "dim");
        total += match f.data_type.as_str() {
            "Bool" | "Int8" => 1,
            "Int16" => 2,
            "Int32" | "Float" => 4,
            "Int64" | "Double" | "Timestamptz" => 8,
            "VarChar" | "String" => param(f, "max_length").clamp(1, 256),
            "Text" | "JSON" | "Array" | "Geometry" => 512,
            "FloatVector" => dim * 4,
            "Float16Vector" | "BFloat16Vector" => dim * 2,
            "Int8Vector" => dim,
            "BinaryVector" => dim / 8,
            "SparseFloatVector" => 1200,
            _ => 8,
        };
    }
    if dynamic {
        total += 512;
    }
    total
}

/// Max rows of a segment: `maxSize` MB over the estimated row size.
pub fn max_rows(segment_max_size_mb: u64, row_bytes: u64) -> u64 {
    (segment_max_size_mb * 1024 * 1024) / row_bytes.max(1)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SegState {
    Growing,
    Sealed,
    Flushing,
    Flushed,
    Dropped,
}

impl SegState {
    pub fn name(self) -> &'static str {
        match self {
            SegState::Growing => "Growing",
            SegState::Sealed => "Sealed",
            SegState::Flushing => "Flushing",
            SegState::Flushed => "Flushed",
            SegState::Dropped => "Dropped",
        }
    }
}

/// What the allocator knows of a segment (its replicated part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegInfo {
    pub id: u64,
    pub collection: u64,
    pub partition: u64,
    pub channel: String,
    pub max_rows: u64,
    /// Rows the data nodes reported.
    pub rows: u64,
    pub state: SegState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub rows: u64,
    /// TSO timestamp after which the grant is void.
    pub expire: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Seg {
    info: SegInfo,
    grants: Vec<Grant>,
}

impl Seg {
    fn granted(&self) -> u64 {
        self.grants.iter().map(|g| g.rows).sum()
    }

    fn free(&self) -> u64 {
        self.info
            .max_rows
            .saturating_sub(self.info.rows + self.granted())
    }
}

/// One `SegmentIDRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub count: u64,
    pub channel: String,
    pub collection: u64,
    pub partition: u64,
}

/// One grant answered: `count` rows of segment `segment` until `expire`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub segment: u64,
    pub count: u64,
    pub expire: u64,
}

/// The plan for one request: the grants and the new segments they need (to be made durable
/// before the grants are answered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub assignments: Vec<Assignment>,
    pub new_segments: Vec<SegInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocError {
    ZeroCount,
    /// The request would open more segments than `new_ids` supplied.
    OutOfIds,
    TooManyGrants(u64),
}

impl std::fmt::Display for AllocError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AllocError::ZeroCount => write!(f, "count must be positive"),
            AllocError::OutOfIds => write!(f, "not enough segment IDs were allocated"),
            AllocError::TooManyGrants(s) => write!(
                f,
                "segment {s} has {GRANTS_PER_SEGMENT_MAX} unexpired grants; retry after they expire"
            ),
        }
    }
}

/// The segments of every channel and their grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocator {
    segs: BTreeMap<u64, Seg>,
}

impl Allocator {
    /// A new leader's allocator over the replicated segments: every growing segment is
    /// treated as fully granted until `fresh_ts + expiration`.
    pub fn take_over(segments: Vec<SegInfo>, fresh_ts: u64, expiration: u64) -> Allocator {
        let mut segs = BTreeMap::new();
        for info in segments {
            let mut s = Seg {
                info,
                grants: Vec::new(),
            };
            if s.info.state == SegState::Growing && s.free() > 0 {
                s.grants.push(Grant {
                    rows: s.free(),
                    expire: fresh_ts.saturating_add(expiration),
                });
            }
            segs.insert(s.info.id, s);
        }
        Allocator { segs }
    }

    pub fn segment(&self, id: u64) -> Option<&SegInfo> {
        self.segs.get(&id).map(|s| &s.info)
    }

    pub fn granted(&self, id: u64) -> u64 {
        self.segs.get(&id).map_or(0, |s| s.granted())
    }

    pub fn grants(&self, id: u64) -> &[Grant] {
        self.segs.get(&id).map_or(&[], |s| &s.grants)
    }

    pub fn segments(&self) -> impl Iterator<Item = &SegInfo> {
        self.segs.values().map(|s| &s.info)
    }

    /// Plans `req` (policy `AllocatePolicyL1`): each full `max_rows` becomes a grant on a new
    /// segment; the remainder goes to the first growing segment of the same collection,
    /// partition and channel that is at most `seal_proportion` full (rows + granted) and has
    /// room for it, else to a new segment. Nothing changes until `commit`.
    pub fn plan(
        &self,
        req: &Request,
        max_rows: u64,
        seal_proportion: f64,
        expire: u64,
        new_ids: &mut dyn Iterator<Item = u64>,
    ) -> Result<Plan, AllocError> {
        if req.count == 0 {
            return Err(AllocError::ZeroCount);
        }
        let max_rows = max_rows.max(1);
        let mut plan = Plan {
            assignments: Vec::new(),
            new_segments: Vec::new(),
        };
        let mut open = |rows: u64, plan: &mut Plan| -> Result<(), AllocError> {
            let id = new_ids.next().ok_or(AllocError::OutOfIds)?;
            plan.new_segments.push(SegInfo {
                id,
                collection: req.collection,
                partition: req.partition,
                channel: req.channel.clone(),
                max_rows,
                rows: 0,
                state: SegState::Growing,
            });
            plan.assignments.push(Assignment {
                segment: id,
                count: rows,
                expire,
            });
            Ok(())
        };
        for _ in 0..req.count / max_rows {
            open(max_rows, &mut plan)?;
        }
        let rest = req.count % max_rows;
        if rest > 0 {
            let fit = self.segs.values().find(|s| {
                let i = &s.info;
                i.state == SegState::Growing
                    && i.collection == req.collection
                    && i.partition == req.partition
                    && i.channel == req.channel
                    && ((i.rows + s.granted()) as f64) <= i.max_rows as f64 * seal_proportion
                    && s.free() >= rest
            });
            match fit {
                Some(s) if s.grants.len() >= GRANTS_PER_SEGMENT_MAX => {
                    return Err(AllocError::TooManyGrants(s.info.id))
                }
                Some(s) => plan.assignments.push(Assignment {
                    segment: s.info.id,
                    count: rest,
                    expire,
                }),
                None => open(rest, &mut plan)?,
            }
        }
        Ok(plan)
    }

    /// Applies a plan whose new segments are durable.
    pub fn commit(&mut self, plan: &Plan) {
        for info in &plan.new_segments {
            self.segs.entry(info.id).or_insert_with(|| Seg {
                info: info.clone(),
                grants: Vec::new(),
            });
        }
        for a in &plan.assignments {
            if let Some(s) = self.segs.get_mut(&a.segment) {
                s.grants.push(Grant {
                    rows: a.count,
                    expire: a.expire,
                });
            }
        }
    }

    /// Drops every grant of `channel` (every channel: `None`) that expired at `ts`
    /// (`expire ≤ ts`); returns how many rows came back.
    pub fn expire(&mut self, channel: Option<&str>, ts: u64) -> u64 {
        let mut freed = 0;
        for s in self.segs.values_mut() {
            if channel.is_some_and(|c| c != s.info.channel) {
                continue;
            }
            s.grants.retain(|g| {
                let keep = g.expire > ts;
                if !keep {
                    freed += g.rows;
                }
                keep
            });
        }
        freed
    }

    /// The replicated part of a segment changed (flush report, seal, drop, ...).
    pub fn update(&mut self, info: SegInfo) {
        match self.segs.get_mut(&info.id) {
            Some(s) => {
                if info.state == SegState::Dropped {
                    s.grants.clear();
                }
                s.info = info;
            }
            None => {
                self.segs.insert(
                    info.id,
                    Seg {
                        info,
                        grants: Vec::new(),
                    },
                );
            }
        }
    }

    pub fn remove(&mut self, id: u64) {
        self.segs.remove(&id);
    }
}

/// What a segment's sealing policies look at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SealInput {
    pub rows: u64,
    pub max_rows: u64,
    pub binlogs: u64,
    /// Seconds since the segment opened.
    pub age_s: u64,
    /// Seconds since rows last changed.
    pub idle_s: u64,
    pub row_bytes: u64,
    /// A random factor in `[1 − SEAL_PROPORTION_JITTER, 1]`, drawn once per segment.
    pub jitter: f64,
}

/// The first sealing policy that matches (reference §5, per-segment policies, in order).
pub fn seal_reason(s: &SealInput) -> Option<&'static str> {
    if s.binlogs >= MAX_BINLOG_FILE_NUMBER {
        return Some("binlog_number");
    }
    if s.age_s >= MAX_LIFE_S {
        return Some("lifetime");
    }
    if s.rows as f64 >= SEAL_PROPORTION * s.max_rows as f64 * s.jitter && s.rows > 0 {
        return Some("capacity");
    }
    if s.idle_s >= MAX_IDLE_S
        && s.rows.saturating_mul(s.row_bytes) > MIN_SIZE_FROM_IDLE_TO_SEALED_MB * 1024 * 1024
    {
        return Some("idle");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(count: u64, ch: &str) -> Request {
        Request {
            count,
            channel: ch.into(),
            collection: 1,
            partition: 2,
        }
    }

    fn field(t: &str, params: &[(&str, &str)]) -> Field {
        let mut f = crate::meta::milvus::system_fields(&crate::meta::milvus::CollectionSpec {
            name: String::new(),
            description: String::new(),
            fields: Vec::new(),
            enable_dynamic: false,
            shards_num: 1,
            partition_key_partitions: 0,
            consistency_level: String::new(),
            properties: Vec::new(),
        })
        .remove(0);
        f.data_type = t.into();
        f.type_params = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        f
    }

    #[test]
    fn row_size_and_max_rows_follow_the_reference() {
        let fields = vec![
            field("Int64", &[]),
            field("FloatVector", &[("dim", "128")]),
            field("VarChar", &[("max_length", "1000")]),
        ];
        // 16 system + 8 + 512 + min(1000, 256).
        assert_eq!(estimate_row_bytes(&fields, false), 16 + 8 + 512 + 256);
        assert_eq!(estimate_row_bytes(&fields, true), 16 + 8 + 512 + 256 + 512);
        assert_eq!(
            estimate_row_bytes(&[field("BinaryVector", &[("dim", "256")])], false),
            16 + 32
        );
        assert_eq!(max_rows(1024, 792), 1024 * 1024 * 1024 / 792);
    }

    #[test]
    fn policy_splits_full_segments_and_packs_the_remainder() {
        let mut a = Allocator::default();
        let mut ids = 100..;
        let p = a.plan(&req(2500, "c"), 1000, 0.5, 9, &mut ids).unwrap();
        // Two full segments and one for the remainder.
        assert_eq!(
            p.assignments.iter().map(|x| x.count).collect::<Vec<_>>(),
            vec![1000, 1000, 500]
        );
        assert_eq!(p.new_segments.len(), 3);
        a.commit(&p);
        // 300 more: segment 102 is at 500 = 0.5 × 1000 and has 500 free: packed there.
        let p = a.plan(&req(300, "c"), 1000, 0.5, 9, &mut ids).unwrap();
        assert_eq!(p.assignments[0].segment, 102);
        assert!(p.new_segments.is_empty());
        a.commit(&p);
        // Now 102 is past the seal proportion: a new segment.
        let p = a.plan(&req(10, "c"), 1000, 0.5, 9, &mut ids).unwrap();
        assert_eq!(p.new_segments.len(), 1);
        // Another channel never shares.
        let p = a.plan(&req(10, "d"), 1000, 0.5, 9, &mut ids).unwrap();
        assert_eq!(p.new_segments[0].channel, "d");
        assert_eq!(
            a.plan(&req(0, "c"), 1000, 0.5, 9, &mut ids),
            Err(AllocError::ZeroCount)
        );
        assert_eq!(
            a.plan(&req(5000, "c"), 1000, 0.5, 9, &mut (0..2)),
            Err(AllocError::OutOfIds)
        );
    }

    #[test]
    fn grants_expire_at_their_time_and_per_channel() {
        let mut a = Allocator::default();
        let mut ids = 1..;
        for (ch, exp) in [("c", 10), ("c", 20), ("d", 10)] {
            let p = a.plan(&req(100, ch), 1000, 1.0, exp, &mut ids).unwrap();
            a.commit(&p);
        }
        assert_eq!(a.granted(1), 200);
        assert_eq!(a.expire(Some("c"), 9), 0);
        assert_eq!(a.expire(Some("c"), 10), 100);
        assert_eq!(a.granted(1), 100);
        assert_eq!(a.granted(2), 100, "channel d is untouched");
        assert_eq!(a.expire(None, 20), 200);
    }

    #[test]
    fn a_new_leader_treats_growing_segments_as_fully_granted() {
        let info = |id, rows, state| SegInfo {
            id,
            collection: 1,
            partition: 2,
            channel: "c".into(),
            max_rows: 1000,
            rows,
            state,
        };
        let mut a = Allocator::take_over(
            vec![
                info(1, 100, SegState::Growing),
                info(2, 0, SegState::Sealed),
            ],
            50,
            10,
        );
        assert_eq!(a.granted(1), 900);
        assert_eq!(a.granted(2), 0);
        let mut ids = 10..;
        let p = a.plan(&req(5, "c"), 1000, 1.0, 99, &mut ids).unwrap();
        assert_eq!(p.new_segments.len(), 1, "segment 1 is full until ts 60");
        a.expire(None, 60);
        let p = a.plan(&req(5, "c"), 1000, 1.0, 99, &mut ids).unwrap();
        assert_eq!(p.assignments[0].segment, 1);
    }

    #[test]
    fn seal_policies_in_order() {
        let base = SealInput {
            rows: 0,
            max_rows: 1000,
            binlogs: 0,
            age_s: 0,
            idle_s: 0,
            row_bytes: 1024 * 1024,
            jitter: 1.0,
        };
        assert_eq!(seal_reason(&base), None);
        assert_eq!(
            seal_reason(&SealInput {
                binlogs: 32,
                ..base
            }),
            Some("binlog_number")
        );
        assert_eq!(
            seal_reason(&SealInput {
                age_s: MAX_LIFE_S,
                ..base
            }),
            Some("lifetime")
        );
        // 0.12 × 1000 × 0.9 = 108.
        assert_eq!(
            seal_reason(&SealInput {
                rows: 108,
                jitter: 0.9,
                ..base
            }),
            Some("capacity")
        );
        assert_eq!(
            seal_reason(&SealInput {
                rows: 107,
                jitter: 0.9,
                ..base
            }),
            None
        );
        assert_eq!(
            seal_reason(&SealInput {
                rows: 17,
                idle_s: MAX_IDLE_S,
                ..base
            }),
            Some("idle")
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Assign { count: u64, ch: u8 },
        Advance { ms: u64 },
        Expire { ch: u8 },
        Flush { seg: u8, rows: u64 },
        Seal { seg: u8 },
        Drop,
        LeaderChange,
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1u64..2500, 0u8..2).prop_map(|(count, ch)| Op::Assign { count, ch }),
            3 => (1u64..1500).prop_map(|ms| Op::Advance { ms }),
            2 => (0u8..2).prop_map(|ch| Op::Expire { ch }),
            3 => (any::<u8>(), 1u64..800).prop_map(|(seg, rows)| Op::Flush { seg, rows }),
            1 => any::<u8>().prop_map(|seg| Op::Seal { seg }),
            1 => Just(Op::Drop),
            1 => Just(Op::LeaderChange),
        ]
    }

    /// A grant as the proxy holding it sees it: rows it may still write until `expire`.
    #[derive(Debug)]
    struct Held {
        segment: u64,
        left: u64,
        expire: u64,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn never_over_granted_and_no_grant_outlives_its_expiry(ops in prop::collection::vec(arb_op(), 1..120)) {
            const MAX: u64 = 1000;
            let exp = ms_to_ts(ASSIGNMENT_EXPIRATION_MS);
            let mut now = ms_to_ts(1_000_000);
            let mut a = Allocator::default();
            // The replicated segment table and every grant any leader ever issued.
            let mut table: BTreeMap<u64, SegInfo> = BTreeMap::new();
            let mut held: Vec<Held> = Vec::new();
            let mut next_id = 1u64;
            for op in ops {
                match op {
                    Op::Assign { count, ch } => {
                        now += 1; // a fresh TSO value
                        let r = req(count, &format!("ch{ch}"));
                        let mut ids = next_id..;
                        let plan = a.plan(&r, MAX, SEAL_PROPORTION * 4.0, now + exp, &mut ids).unwrap();
                        next_id += plan.new_segments.len() as u64;
                        for s in &plan.new_segments {
                            table.insert(s.id, s.clone());
                        }
                        a.commit(&plan);
                        prop_assert_eq!(plan.assignments.iter().map(|x| x.count).sum::<u64>(), count);
                        for x in plan.assignments {
                            prop_assert_eq!(x.expire, now + exp);
                            held.push(Held { segment: x.segment, left: x.count, expire: x.expire });
                        }
                    }
                    Op::Advance { ms } => now += ms_to_ts(ms),
                    Op::Expire { ch } => {
                        let c = format!("ch{ch}");
                        a.expire(Some(&c), now);
                        for id in table.values().filter(|s| s.channel == c).map(|s| s.id) {
                            prop_assert!(a.grants(id).iter().all(|g| g.expire > now),
                                "a grant of segment {} outlived its expiry", id);
                        }
                    }
                    Op::Flush { seg, rows } => {
                        // A data node flushes rows written under unexpired grants only.
                        let ids: Vec<u64> = table.keys().copied().collect();
                        if ids.is_empty() { continue; }
                        let id = ids[seg as usize % ids.len()];
                        let mut want = rows;
                        let mut written = 0;
                        for h in held.iter_mut().filter(|h| h.segment == id && h.expire > now) {
                            let w = want.min(h.left);
                            h.left -= w;
                            want -= w;
                            written += w;
                        }
                        if let Some(s) = table.get_mut(&id) {
                            if s.state == SegState::Dropped { continue; }
                            s.rows += written;
                            a.update(s.clone());
                        }
                    }
                    Op::Seal { seg } => {
                        let ids: Vec<u64> = table.keys().copied().collect();
                        if ids.is_empty() { continue; }
                        let id = ids[seg as usize % ids.len()];
                        if let Some(s) = table.get_mut(&id) {
                            if s.state == SegState::Growing {
                                s.state = SegState::Sealed;
                                a.update(s.clone());
                            }
                        }
                    }
                    Op::Drop => {
                        for s in table.values_mut() {
                            s.state = SegState::Dropped;
                            a.update(s.clone());
                        }
                        held.clear();
                    }
                    Op::LeaderChange => {
                        // The new leader takes a fresh timestamp (the TSO never goes back).
                        now += 1;
                        a = Allocator::take_over(table.values().cloned().collect(), now, exp);
                    }
                }
                // The invariant: rows that are in a segment or may still be written to it
                // under a live grant (of any leader) never exceed its maximum.
                for s in table.values() {
                    let live: u64 = held
                        .iter()
                        .filter(|h| h.segment == s.id && h.expire > now)
                        .map(|h| h.left)
                        .sum();
                    prop_assert!(s.rows + live <= s.max_rows,
                        "segment {} over-granted: {} rows + {} grantable > {}", s.id, s.rows, live, s.max_rows);
                }
            }
        }
    }
}
