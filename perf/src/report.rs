//! Turning a [`RunResult`] into what people and scripts read: a text summary, JSON, and an
//! HdrHistogram interval log (`.hlog`, values in nanoseconds, the Java tools' default unit).

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::{RunConfig, RunResult, TargetMode};
use crate::stats::{ErrorKind, OpCounts, OpKind};

/// The percentiles every report lists.
pub const PERCENTILES: [(&str, f64); 5] = [
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
    ("p99.99", 99.99),
];

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    /// Number of values.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// 50th percentile.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    #[serde(rename = "p99.9")]
    pub p99_9: f64,
    /// 99.99th percentile.
    #[serde(rename = "p99.99")]
    pub p99_99: f64,
    /// Largest value.
    pub max: f64,
}

impl Percentiles {
    /// Reads the percentiles of a nanosecond histogram, converted to microseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        let q = |p: f64| us(h.value_at_percentile(p));
        Self {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: q(50.0),
            p90: q(90.0),
            p99: q(99.0),
            p99_9: q(99.9),
            p99_99: q(99.99),
            max: us(h.max()),
        }
    }
}

/// One interval of the time series in the JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct IntervalSummary {
    /// Start, seconds since the run started (warm-up included).
    pub t_s: f64,
    /// Length in seconds.
    pub length_s: f64,
    /// Part of the warm-up.
    pub warmup: bool,
    /// Completed operations.
    pub completed: u64,
    /// Completed operations per second.
    pub rate: f64,
    /// Errors.
    pub errors: u64,
    /// Corrected median latency, µs.
    pub p50_us: f64,
    /// Corrected 99th percentile, µs.
    pub p99_us: f64,
    /// Corrected max, µs.
    pub max_us: f64,
}

/// What a batch workload (tso, ids) handed out: values, not requests.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ItemsSummary {
    /// What a value is (`timestamps`, `ids`).
    pub unit: String,
    /// Values asked for (and, since a reply with another count is an error, received) per
    /// successful request.
    pub per_request: u64,
    /// Values received in the measured window.
    pub completed: u64,
    /// Values received per second.
    pub throughput: f64,
}

impl ItemsSummary {
    /// Values of the successful requests of `kind`, `per_request` each.
    pub fn of(result: &RunResult, kind: OpKind, unit: &str, per_request: u64) -> Self {
        let completed = result.total.ops_of(kind).ok.saturating_mul(per_request);
        let secs = result.elapsed.as_secs_f64();
        Self {
            unit: unit.to_string(),
            per_request,
            completed,
            throughput: if secs > 0.0 {
                completed as f64 / secs
            } else {
                0.0
            },
        }
    }
}

/// The JSON report of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Workload description.
    pub workload: String,
    /// Target addresses.
    pub targets: Vec<String>,
    /// `spread` or `leader`.
    pub target_mode: String,
    /// `closed` or `open`.
    pub loop_mode: String,
    /// Requested total rate (open loop).
    pub rate: Option<f64>,
    /// Connections.
    pub connections: usize,
    /// Client threads.
    pub threads: usize,
    /// Pipeline depth.
    pub pipeline: usize,
    /// Warm-up, seconds.
    pub warmup_s: f64,
    /// Configured measured time, seconds.
    pub duration_s: f64,
    /// Measured time actually used, seconds.
    pub elapsed_s: f64,
    /// Completed operations in the measured window.
    pub completed: u64,
    /// Completed operations per second.
    pub throughput: f64,
    /// Batch workloads: values handed out (e.g. timestamps per second besides requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<ItemsSummary>,
    /// Errors in the measured window.
    pub error_total: u64,
    /// Errors by kind (non-zero only).
    pub errors: BTreeMap<String, u64>,
    /// Counts per operation kind (non-empty kinds only).
    pub ops: BTreeMap<String, OpCounts>,
    /// Latency from the intended send time (coordinated omission corrected), µs.
    pub latency_us: Percentiles,
    /// Latency from the actual send time (uncorrected), µs.
    pub latency_uncorrected_us: Percentiles,
    /// How late requests left the client relative to their schedule, µs.
    pub send_lag_us: Percentiles,
    /// Requests completed during the warm-up.
    pub warmup_completed: u64,
    /// CPU seconds the client used (whole run, all threads).
    pub client_cpu_s: f64,
    /// Client CPU use as a share of its threads' capacity over the whole run (near 1.0: the
    /// client, not the server, may be the bottleneck).
    pub client_cpu_util: f64,
    /// The time series.
    pub intervals: Vec<IntervalSummary>,
}

/// Builds the JSON report.
pub fn summarize(cfg: &RunConfig, workload: &str, result: &RunResult) -> Summary {
    let total = &result.total;
    let errors = ErrorKind::ALL
        .iter()
        .filter(|k| total.errors_of(**k) > 0)
        .map(|k| (k.name().to_string(), total.errors_of(*k)))
        .collect();
    let ops = OpKind::ALL
        .iter()
        .map(|k| (k.name().to_string(), total.ops_of(*k)))
        .filter(|(_, c)| c.completed() + c.error > 0)
        .collect();
    let intervals = result
        .intervals
        .iter()
        .map(|iv| IntervalSummary {
            t_s: iv.start.as_secs_f64(),
            length_s: iv.length.as_secs_f64(),
            warmup: iv.warmup,
            completed: iv.recorder.completed(),
            rate: iv.rate(),
            errors: iv.recorder.error_total(),
            p50_us: iv.recorder.latency.value_at_percentile(50.0) as f64 / 1000.0,
            p99_us: iv.recorder.latency.value_at_percentile(99.0) as f64 / 1000.0,
            max_us: iv.recorder.latency.max() as f64 / 1000.0,
        })
        .collect();
    Summary {
        workload: workload.to_string(),
        targets: cfg.targets.iter().map(|a| a.to_string()).collect(),
        target_mode: match cfg.target_mode {
            TargetMode::Spread => "spread".into(),
            TargetMode::Leader => "leader".into(),
        },
        loop_mode: if result.open_loop { "open" } else { "closed" }.into(),
        rate: cfg.rate,
        connections: cfg.connections,
        threads: cfg.threads,
        pipeline: cfg.pipeline,
        warmup_s: cfg.warmup.as_secs_f64(),
        duration_s: cfg.duration.as_secs_f64(),
        elapsed_s: result.elapsed.as_secs_f64(),
        completed: total.completed(),
        throughput: result.throughput(),
        items: None,
        error_total: total.error_total(),
        errors,
        ops,
        latency_us: Percentiles::of(&total.latency),
        latency_uncorrected_us: Percentiles::of(&total.service),
        send_lag_us: Percentiles::of(&total.send_lag),
        warmup_completed: result.warmup.completed(),
        client_cpu_s: result.client_cpu.as_secs_f64(),
        client_cpu_util: {
            let capacity = result.wall.as_secs_f64() * cfg.threads as f64;
            if capacity > 0.0 {
                result.client_cpu.as_secs_f64() / capacity
            } else {
                0.0
            }
        },
        intervals,
    }
}

/// Formats microseconds for people: `87µs`, `1.23ms`, `2.50s`.
pub fn human_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1_000_000.0)
    }
}

fn percentile_line(p: &Percentiles) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}",
        human_us(p.p50),
        human_us(p.p90),
        human_us(p.p99),
        human_us(p.p99_9),
        human_us(p.p99_99),
        human_us(p.max)
    )
}

/// The human summary printed at the end of a run.
pub fn render_text(s: &Summary) -> String {
    let mut out = String::new();
    let loop_desc = match (s.loop_mode.as_str(), s.rate) {
        ("open", Some(r)) => format!("open loop at {r:.0} req/s"),
        _ => "closed loop".to_string(),
    };
    out.push_str(&format!(
        "workload: {}\ntargets:  {} ({})\nclient:   {loop_desc}, {} connections, {} threads, pipeline {}\n",
        s.workload,
        s.targets.join(" "),
        s.target_mode,
        s.connections,
        s.threads,
        s.pipeline
    ));
    out.push_str(&format!(
        "measured: {:.2}s after {:.2}s warm-up ({} completed in warm-up)\n",
        s.elapsed_s, s.warmup_s, s.warmup_completed
    ));
    out.push_str(&format!(
        "throughput: {:.1} ops/s ({} completed, {} errors)\n",
        s.throughput, s.completed, s.error_total
    ));
    if let Some(items) = &s.items {
        out.push_str(&format!(
            "{}: {:.1}/s ({} per request, {} in total)\n",
            items.unit, items.throughput, items.per_request, items.completed
        ));
    }
    out.push_str(&format!(
        "latency, from intended send (corrected):  {}\n",
        percentile_line(&s.latency_us)
    ));
    out.push_str(&format!(
        "latency, from actual send (uncorrected):  {}\n",
        percentile_line(&s.latency_uncorrected_us)
    ));
    if s.loop_mode == "open" {
        out.push_str(&format!(
            "send lag behind schedule:                 {}\n",
            percentile_line(&s.send_lag_us)
        ));
    }
    for (kind, c) in &s.ops {
        out.push_str(&format!(
            "ops {kind}: ok {} not_found {} conflict {} error {}\n",
            c.ok, c.not_found, c.conflict, c.error
        ));
    }
    out.push_str(&format!(
        "client cpu: {:.2}s, {:.0}% of {} thread(s)\n",
        s.client_cpu_s,
        100.0 * s.client_cpu_util,
        s.threads
    ));
    if s.errors.is_empty() {
        out.push_str("errors: none\n");
    } else {
        let list: Vec<String> = s.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out.push_str(&format!("errors: {}\n", list.join(", ")));
    }
    out
}

/// Writes the measured intervals as an HdrHistogram interval log: untagged lines hold the
/// corrected latency, `Tag=uncorrected` lines the latency from the actual send. Timestamps are
/// relative to the start of the measured window (given as `StartTime`).
pub fn write_hlog<W: io::Write>(result: &RunResult, comment: &str, out: &mut W) -> io::Result<()> {
    let mut serializer = V2DeflateSerializer::new();
    let mut builder = IntervalLogWriterBuilder::new();
    builder
        .add_comment(comment)
        .add_comment("values in nanoseconds; untagged = corrected latency, Tag=uncorrected = from actual send")
        .with_start_time(result.measure_start)
        .with_base_time(result.measure_start)
        .with_max_value_divisor(1e6);
    let mut log = builder.begin_log_with(out, &mut serializer)?;
    let warmup_len = result
        .intervals
        .iter()
        .filter(|iv| iv.warmup)
        .map(|iv| iv.start + iv.length)
        .max()
        .unwrap_or(Duration::ZERO);
    let uncorrected = Tag::new("uncorrected");
    for iv in result.intervals.iter().filter(|iv| !iv.warmup) {
        let start = iv.start.saturating_sub(warmup_len);
        log.write_histogram(&iv.recorder.latency, start, iv.length, None)
            .map_err(|e| io::Error::other(e.to_string()))?;
        log.write_histogram(&iv.recorder.service, start, iv.length, uncorrected)
            .map_err(|e| io::Error::other(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human_us(87.2), "87µs");
        assert_eq!(human_us(1234.0), "1.23ms");
        assert_eq!(human_us(2_500_000.0), "2.50s");
    }
}
