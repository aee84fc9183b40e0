//! Event-loop stalls per shard: how late a shard's runtime gets back to a timer.
//!
//! A shard is one thread running one monoio runtime, so anything that holds the thread (a
//! large snapshot serialized inline, a long apply batch, CPU starvation) delays every other
//! task on it. A probe task sleeps `PROBE_INTERVAL_MS` in a loop and records how much later
//! than asked it woke: a stall of length D shows as a lateness of at least D minus one
//! interval. `/metrics` renders the histogram per shard (`mast_shard_loop_stall_seconds`)
//! with the longest stall seen (`mast_shard_loop_stall_max_seconds`).

use std::cell::Cell;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The probe's sleep. Short enough to see stalls of a few milliseconds, long enough to cost
/// nothing measurable (500 timer wake-ups a second per shard).
pub const PROBE_INTERVAL_MS: u64 = 2;
/// Upper bounds (microseconds) of the lateness buckets; `+Inf` is implied.
pub const STALL_BUCKETS_MICROS: [u64; 12] = [
    500, 1_000, 2_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    5_000_000,
];

/// One shard's stall counters (not thread-safe: one per shard, read through a snapshot).
#[derive(Debug, Default)]
pub struct LoopStalls {
    buckets: [Cell<u64>; 13],
    sum_micros: Cell<u64>,
    count: Cell<u64>,
    max_micros: Cell<u64>,
}

/// A `Send` copy of one shard's counters.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LoopStallsSnapshot {
    /// Non-cumulative counts per bucket of [`STALL_BUCKETS_MICROS`], then `+Inf`.
    pub buckets: Vec<u64>,
    pub sum_micros: u64,
    pub count: u64,
    pub max_micros: u64,
}

impl LoopStalls {
    pub fn record(&self, late: Duration) {
        let micros = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
        let i = STALL_BUCKETS_MICROS
            .iter()
            .position(|&b| micros <= b)
            .unwrap_or(STALL_BUCKETS_MICROS.len());
        if let Some(c) = self.buckets.get(i) {
            c.set(c.get().saturating_add(1));
        }
        self.sum_micros
            .set(self.sum_micros.get().saturating_add(micros));
        self.count.set(self.count.get().saturating_add(1));
        self.max_micros.set(self.max_micros.get().max(micros));
    }

    pub fn snapshot(&self) -> LoopStallsSnapshot {
        LoopStallsSnapshot {
            buckets: self.buckets.iter().map(Cell::get).collect(),
            sum_micros: self.sum_micros.get(),
            count: self.count.get(),
            max_micros: self.max_micros.get(),
        }
    }
}

/// The probe; runs until `stop()` says so.
pub async fn probe(stalls: Rc<LoopStalls>, stop: impl Fn() -> bool) {
    let interval = Duration::from_millis(PROBE_INTERVAL_MS);
    while !stop() {
        let asked = Instant::now() + interval;
        monoio::time::sleep(interval).await;
        stalls.record(Instant::now().saturating_duration_since(asked));
    }
}

/// Appends the per-shard histogram and maximum in Prometheus text.
pub fn render(shards: &[(usize, LoopStallsSnapshot)], out: &mut String) {
    let name = "mast_shard_loop_stall_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} How much later than asked a shard's event loop woke a {PROBE_INTERVAL_MS} ms \
         probe timer: time the thread was held by other work.\n# TYPE {name} histogram"
    );
    for (shard, s) in shards {
        let mut cumulative = 0u64;
        for (i, le) in STALL_BUCKETS_MICROS.iter().enumerate() {
            cumulative += s.buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "{name}_bucket{{shard=\"{shard}\",le=\"{}\"}} {cumulative}",
                *le as f64 / 1e6
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{shard=\"{shard}\",le=\"+Inf\"}} {}",
            s.count
        );
        let _ = writeln!(
            out,
            "{name}_sum{{shard=\"{shard}\"}} {}",
            s.sum_micros as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{shard=\"{shard}\"}} {}", s.count);
    }
    let max = "mast_shard_loop_stall_max_seconds";
    let _ = writeln!(
        out,
        "# HELP {max} The longest event-loop stall seen on the shard since start.\n# TYPE {max} gauge"
    );
    for (shard, s) in shards {
        let _ = writeln!(
            out,
            "{max}{{shard=\"{shard}\"}} {}",
            s.max_micros as f64 / 1e6
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_lands_in_its_bucket_and_renders_cumulatively() {
        let s = LoopStalls::default();
        s.record(Duration::from_micros(100));
        s.record(Duration::from_millis(7));
        s.record(Duration::from_secs(9));
        let snap = s.snapshot();
        assert_eq!(snap.count, 3);
        assert_eq!(snap.max_micros, 9_000_000);
        let mut out = String::new();
        render(&[(1, snap)], &mut out);
        assert!(
            out.contains("mast_shard_loop_stall_seconds_bucket{shard=\"1\",le=\"0.0005\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("mast_shard_loop_stall_seconds_bucket{shard=\"1\",le=\"0.01\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("mast_shard_loop_stall_seconds_bucket{shard=\"1\",le=\"5\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("mast_shard_loop_stall_seconds_bucket{shard=\"1\",le=\"+Inf\"} 3"),
            "{out}"
        );
        assert!(
            out.contains("mast_shard_loop_stall_max_seconds{shard=\"1\"} 9"),
            "{out}"
        );
    }
}
