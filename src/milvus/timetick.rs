//! Time tick barriers (design §10.5, reference §4.3), as a pure core: no clock, no I/O.
//!
//! Producers (proxies, data nodes) report per-channel ticks (`UpdateChannelTimeTick`: listed
//! channels with their values, and a default for every channel not listed). For each channel
//! two barriers are derived:
//! - **soft**: the minimum of the latest ticks of the producers that have reported, emitted
//!   when it has advanced at least `min_tt_interval` above the last emitted value; a reader
//!   wants the newest value only.
//! - **hard**: emits `T` only once every registered producer (and the DDL source, when it
//!   takes part) has reported ≥ `T`; every strict increase is emitted, in order.
//!
//! A producer's ticks never go backwards: a report that would lower any channel's value for
//! that producer is refused whole, so a refused report changes nothing. Barrier values never
//! go backwards either: a floor (the last persisted value) bounds them from below, so a
//! producer registering late with old ticks cannot pull a barrier back.
//!
//! Emission is split from ingest: `report` only records slots; `advance` recomputes every
//! channel and queues what is to be emitted; `take_pending` hands the queue to the caller,
//! which makes it durable before anyone sees it (see `crate::milvus::coord`).

use std::collections::{BTreeMap, HashMap};

/// The DDL source's slot (Milvus's root coordinator uses source ID −1 for its own ticks).
pub const DDL_SOURCE_ID: i64 = -1;
/// Channels one barrier set tracks; a report naming more new channels is refused.
pub const CHANNELS_MAX: usize = 4096;
/// Channels one report may list.
pub const REPORT_CHANNELS_MAX: usize = 1024;
/// Hard-barrier increases queued per channel before the caller takes them; past this,
/// further increases coalesce into the next value (counted in `hard_coalesced`).
pub const HARD_PENDING_MAX: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TickError {
    /// The source is not a registered producer.
    UnknownProducer(i64),
    /// The report would move `channel`'s tick for this producer from `last` to `reported`.
    Backwards {
        channel: String,
        last: u64,
        reported: u64,
    },
    /// `channelNames` and `timestamps` differ in length, or a channel name is empty.
    Malformed(String),
    /// Too many channels.
    TooManyChannels(usize),
}

impl std::fmt::Display for TickError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TickError::UnknownProducer(id) => write!(
                f,
                "source {id} is not a registered session; register it first (sessions/register)"
            ),
            TickError::Backwards {
                channel,
                last,
                reported,
            } => write!(
                f,
                "time tick of channel {channel} would go backwards for this source: last {last}, reported {reported}"
            ),
            TickError::Malformed(m) => write!(f, "{m}"),
            TickError::TooManyChannels(n) => write!(
                f,
                "{n} channels: at most {REPORT_CHANNELS_MAX} per report and {CHANNELS_MAX} in all"
            ),
        }
    }
}

/// One producer's latest report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Slot {
    /// Whether it reported since it was registered (or since this leader took over).
    reported: bool,
    default: u64,
    listed: HashMap<String, u64>,
}

impl Slot {
    fn value(&self, channel: &str) -> u64 {
        self.listed.get(channel).copied().unwrap_or(self.default)
    }
}

/// One channel's barriers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Channel {
    /// Last soft value queued for emission (or the floor).
    pub soft: u64,
    /// Last hard value queued for emission (or the floor).
    pub hard: u64,
    soft_pending: Option<u64>,
    hard_pending: Vec<u64>,
}

/// What a channel has to emit since the last `take_pending`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub channel: String,
    /// The newest soft value, if it moved.
    pub soft: Option<u64>,
    /// Every hard increase, in order.
    pub hard: Vec<u64>,
}

/// The barriers of every channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Barriers {
    min_tt_interval: u64,
    producers: BTreeMap<i64, Slot>,
    /// `Some` once the DDL source takes part: the hard barrier never passes it.
    ddl: Option<u64>,
    channels: BTreeMap<String, Channel>,
    /// Hard increases folded into a later one because the queue was full.
    pub hard_coalesced: u64,
}

impl Barriers {
    /// `min_tt_interval` is in timestamp units (a TSO value's physical part is shifted left
    /// by 18 bits, so 1 ms is `1 << 18`).
    pub fn new(min_tt_interval: u64) -> Barriers {
        Barriers {
            min_tt_interval,
            producers: BTreeMap::new(),
            ddl: None,
            channels: BTreeMap::new(),
            hard_coalesced: 0,
        }
    }

    pub fn add_producer(&mut self, id: i64) {
        self.producers.entry(id).or_default();
    }

    /// Removes a producer (it left or its session expired): it stops holding the hard
    /// barrier back. Whether it was one.
    pub fn remove_producer(&mut self, id: i64) -> bool {
        self.producers.remove(&id).is_some()
    }

    pub fn producers(&self) -> usize {
        self.producers.len()
    }

    pub fn producer_ids(&self) -> Vec<i64> {
        self.producers.keys().copied().collect()
    }

    /// Makes the DDL source take part from now on: until its first report the hard barrier
    /// holds (a leader that just took over does not know which DDLs are unfinished).
    pub fn require_ddl(&mut self) {
        self.ddl.get_or_insert(0);
    }

    pub fn is_producer(&self, id: i64) -> bool {
        self.producers.contains_key(&id)
    }

    /// The DDL source's tick: no DDL at or below it is unfinished. Never moves back.
    pub fn report_ddl(&mut self, ts: u64) {
        self.ddl = Some(self.ddl.map_or(ts, |d| d.max(ts)));
    }

    /// Sets a channel's floor (its last durable values): barriers never go below it.
    pub fn set_floor(&mut self, channel: &str, soft: u64, hard: u64) {
        let c = self.channels.entry(channel.to_string()).or_default();
        c.soft = c.soft.max(soft);
        c.hard = c.hard.max(hard);
    }

    pub fn channel(&self, name: &str) -> Option<&Channel> {
        self.channels.get(name)
    }

    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Records one report of `source`. Refused whole (nothing changes) when any channel's
    /// value for this source would go backwards.
    pub fn report(
        &mut self,
        source: i64,
        names: &[String],
        timestamps: &[u64],
        default: u64,
    ) -> Result<(), TickError> {
        if names.len() != timestamps.len() {
            return Err(TickError::Malformed(format!(
                "channelNames has {} entries but timestamps has {}",
                names.len(),
                timestamps.len()
            )));
        }
        if names.len() > REPORT_CHANNELS_MAX {
            return Err(TickError::TooManyChannels(names.len()));
        }
        if names.iter().any(|n| n.is_empty()) {
            return Err(TickError::Malformed("a channel name is empty".into()));
        }
        let new_channels = names
            .iter()
            .filter(|n| !self.channels.contains_key(*n))
            .count();
        if self.channels.len() + new_channels > CHANNELS_MAX {
            return Err(TickError::TooManyChannels(
                self.channels.len() + new_channels,
            ));
        }
        let slot = self
            .producers
            .get(&source)
            .ok_or(TickError::UnknownProducer(source))?;
        let new_value = |ch: &str| -> u64 {
            names
                .iter()
                .position(|n| n == ch)
                .map_or(default, |i| timestamps[i])
        };
        // Every channel whose value could change for this source: the ones listed before or
        // now; all others move from the old default to the new one.
        if slot.reported {
            let backwards = |ch: &str, last: u64, reported: u64| TickError::Backwards {
                channel: ch.to_string(),
                last,
                reported,
            };
            if default < slot.default {
                return Err(backwards("(default)", slot.default, default));
            }
            for (ch, &last) in &slot.listed {
                let now = new_value(ch);
                if now < last {
                    return Err(backwards(ch, last, now));
                }
            }
            for (ch, &now) in names.iter().zip(timestamps) {
                let last = slot.value(ch);
                if now < last {
                    return Err(backwards(ch, last, now));
                }
            }
        }
        for n in names {
            self.channels.entry(n.clone()).or_default();
        }
        let slot = self.producers.entry(source).or_default();
        slot.reported = true;
        slot.default = default;
        slot.listed = names
            .iter()
            .cloned()
            .zip(timestamps.iter().copied())
            .collect();
        Ok(())
    }

    /// Recomputes every channel's barriers and queues what moved.
    pub fn advance(&mut self) {
        for (name, c) in self.channels.iter_mut() {
            let mut all_reported = true;
            let mut min_reported: Option<u64> = None;
            for slot in self.producers.values() {
                if !slot.reported {
                    all_reported = false;
                    continue;
                }
                let v = slot.value(name);
                min_reported = Some(min_reported.map_or(v, |m| m.min(v)));
            }
            let Some(min) = min_reported else { continue };
            if min > c.soft && (c.soft == 0 || min - c.soft >= self.min_tt_interval) {
                c.soft = min;
                c.soft_pending = Some(min);
            }
            if !all_reported {
                continue;
            }
            let hard = match self.ddl {
                Some(d) => min.min(d),
                None => min,
            };
            if hard > c.hard {
                c.hard = hard;
                if c.hard_pending.len() < HARD_PENDING_MAX {
                    c.hard_pending.push(hard);
                } else if let Some(last) = c.hard_pending.last_mut() {
                    *last = hard;
                    self.hard_coalesced += 1;
                }
            }
        }
    }

    /// Everything queued for emission since the last call, per channel (channels with
    /// nothing new are left out).
    pub fn take_pending(&mut self) -> Vec<Pending> {
        let mut out = Vec::new();
        for (name, c) in self.channels.iter_mut() {
            if c.soft_pending.is_none() && c.hard_pending.is_empty() {
                continue;
            }
            out.push(Pending {
                channel: name.clone(),
                soft: c.soft_pending.take(),
                hard: std::mem::take(&mut c.hard_pending),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Advances and returns (soft, hard) emitted for `ch`.
    fn step(b: &mut Barriers, ch: &str) -> (Option<u64>, Vec<u64>) {
        b.advance();
        b.take_pending()
            .into_iter()
            .find(|p| p.channel == ch)
            .map(|p| (p.soft, p.hard))
            .unwrap_or((None, Vec::new()))
    }

    #[test]
    fn hard_waits_for_every_producer_and_emits_each_increase_in_order() {
        let mut b = Barriers::new(0);
        b.add_producer(1);
        b.add_producer(2);
        b.report(1, &names(&["c"]), &[10], 10).unwrap();
        // Producer 2 has not reported: soft moves, hard does not.
        assert_eq!(step(&mut b, "c"), (Some(10), vec![]));
        b.report(2, &names(&["c"]), &[5], 5).unwrap();
        assert_eq!(step(&mut b, "c"), (None, vec![5]));
        b.report(2, &names(&["c"]), &[7], 7).unwrap();
        b.advance();
        b.report(2, &names(&["c"]), &[9], 9).unwrap();
        b.advance();
        b.report(2, &names(&["c"]), &[20], 20).unwrap();
        b.advance();
        let p = b.take_pending();
        assert_eq!(p.len(), 1);
        // Every strict increase, in order, up to the slower producer (1 at 10).
        assert_eq!(p[0].hard, vec![7, 9, 10]);
        // Soft: only the newest.
        assert_eq!(p[0].soft, None, "soft stayed at 10, already emitted");
    }

    #[test]
    fn soft_returns_the_newest_and_respects_the_interval() {
        let mut b = Barriers::new(100);
        b.add_producer(1);
        b.report(1, &[], &[], 1000).unwrap();
        b.report(1, &names(&["c"]), &[1000], 1000).unwrap();
        assert_eq!(step(&mut b, "c").0, Some(1000));
        b.report(1, &names(&["c"]), &[1050], 1050).unwrap();
        assert_eq!(step(&mut b, "c").0, None, "advanced less than the interval");
        b.report(1, &names(&["c"]), &[1099], 1099).unwrap();
        b.advance();
        b.report(1, &names(&["c"]), &[1200], 1200).unwrap();
        b.advance();
        b.report(1, &names(&["c"]), &[1250], 1250).unwrap();
        b.advance();
        // 1099 is < interval above 1000; 1200 is emitted; 1250 is < interval above 1200.
        let p = b.take_pending();
        assert_eq!(p[0].soft, Some(1200));
        assert_eq!(p[0].hard, vec![1099, 1200, 1250]);
    }

    #[test]
    fn backwards_report_is_refused_whole() {
        let mut b = Barriers::new(0);
        b.add_producer(1);
        b.report(1, &names(&["a", "b"]), &[10, 20], 30).unwrap();
        let before = b.clone();
        // `a` listed lower.
        let e = b.report(1, &names(&["a", "b"]), &[9, 25], 30).unwrap_err();
        assert!(
            matches!(e, TickError::Backwards { ref channel, last: 10, reported: 9 } if channel == "a")
        );
        // `b` was listed at 20, now unlisted and the default 15 would apply.
        let e = b.report(1, &names(&["a"]), &[10], 15).unwrap_err();
        assert!(matches!(e, TickError::Backwards { .. }), "{e:?}");
        // A newly listed channel below the old default it had.
        let e = b
            .report(1, &names(&["a", "b", "z"]), &[10, 20, 29], 30)
            .unwrap_err();
        assert!(
            matches!(e, TickError::Backwards { ref channel, last: 30, reported: 29 } if channel == "z")
        );
        assert_eq!(b, before, "a refused report changes nothing");
        // Equal values are not backwards.
        b.report(1, &names(&["a", "b"]), &[10, 20], 30).unwrap();
    }

    #[test]
    fn malformed_and_unknown_sources_are_refused() {
        let mut b = Barriers::new(0);
        assert_eq!(
            b.report(7, &names(&["c"]), &[1], 1),
            Err(TickError::UnknownProducer(7))
        );
        b.add_producer(7);
        assert!(matches!(
            b.report(7, &names(&["c"]), &[], 1),
            Err(TickError::Malformed(_))
        ));
        assert!(matches!(
            b.report(7, &names(&[""]), &[1], 1),
            Err(TickError::Malformed(_))
        ));
        let many: Vec<String> = (0..=REPORT_CHANNELS_MAX).map(|i| format!("c{i}")).collect();
        let ts = vec![1; many.len()];
        assert!(matches!(
            b.report(7, &many, &ts, 1),
            Err(TickError::TooManyChannels(_))
        ));
    }

    #[test]
    fn removed_producer_stops_holding_the_hard_barrier() {
        let mut b = Barriers::new(0);
        b.add_producer(1);
        b.add_producer(2);
        b.report(1, &names(&["c"]), &[50], 50).unwrap();
        b.report(2, &names(&["c"]), &[10], 10).unwrap();
        assert_eq!(step(&mut b, "c").1, vec![10]);
        assert!(b.remove_producer(2));
        assert!(!b.remove_producer(2));
        assert_eq!(step(&mut b, "c").1, vec![50]);
    }

    #[test]
    fn a_registered_silent_producer_holds_the_hard_barrier() {
        let mut b = Barriers::new(0);
        b.add_producer(1);
        b.report(1, &names(&["c"]), &[50], 50).unwrap();
        assert_eq!(step(&mut b, "c").1, vec![50]);
        b.add_producer(2);
        b.report(1, &names(&["c"]), &[60], 60).unwrap();
        assert_eq!(step(&mut b, "c"), (Some(60), vec![]));
    }

    #[test]
    fn floor_keeps_barriers_from_going_back() {
        let mut b = Barriers::new(0);
        b.set_floor("c", 100, 90);
        b.add_producer(1);
        b.report(1, &names(&["c"]), &[80], 80).unwrap();
        assert_eq!(step(&mut b, "c"), (None, vec![]));
        b.report(1, &names(&["c"]), &[95], 95).unwrap();
        assert_eq!(step(&mut b, "c"), (None, vec![95]));
        let c = b.channel("c").unwrap();
        assert_eq!((c.soft, c.hard), (100, 95));
    }

    #[test]
    fn the_hard_barrier_never_passes_an_unfinished_ddl() {
        let mut b = Barriers::new(0);
        b.add_producer(1);
        b.report_ddl(40);
        b.report(1, &names(&["c"]), &[100], 100).unwrap();
        assert_eq!(step(&mut b, "c"), (Some(100), vec![40]));
        b.report_ddl(30); // never moves back
        b.report_ddl(70);
        assert_eq!(step(&mut b, "c").1, vec![70]);
    }

    #[test]
    fn a_required_ddl_source_holds_the_hard_barrier_until_it_reports() {
        let mut b = Barriers::new(0);
        b.require_ddl();
        b.add_producer(1);
        b.report(1, &names(&["c"]), &[100], 100).unwrap();
        assert_eq!(step(&mut b, "c"), (Some(100), vec![]));
        b.report_ddl(100);
        assert_eq!(step(&mut b, "c").1, vec![100]);
    }

    #[test]
    fn defaults_apply_to_unlisted_channels() {
        let mut b = Barriers::new(0);
        b.add_producer(1);
        b.add_producer(2);
        b.report(1, &names(&["a", "b"]), &[10, 10], 10).unwrap();
        // Producer 2 lists only `a`; `b` takes its default.
        b.report(2, &names(&["a"]), &[5], 12).unwrap();
        b.advance();
        let p = b.take_pending();
        let a = p.iter().find(|p| p.channel == "a").unwrap();
        let bb = p.iter().find(|p| p.channel == "b").unwrap();
        assert_eq!(a.hard, vec![5]);
        assert_eq!(bb.hard, vec![10]);
    }

    #[test]
    fn hard_queue_is_bounded_and_coalesces() {
        let mut b = Barriers::new(0);
        b.add_producer(1);
        for t in 1..=(HARD_PENDING_MAX as u64 + 10) {
            b.report(1, &names(&["c"]), &[t], t).unwrap();
            b.advance();
        }
        let p = b.take_pending();
        assert_eq!(p[0].hard.len(), HARD_PENDING_MAX);
        assert_eq!(*p[0].hard.last().unwrap(), HARD_PENDING_MAX as u64 + 10);
        assert_eq!(b.hard_coalesced, 10);
        assert!(p[0].hard.windows(2).all(|w| w[0] < w[1]));
    }
}
