//! What a run records: latency histograms (corrected and uncorrected), counts per operation
//! kind and outcome, errors by kind, and per-interval snapshots for the time series.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency a histogram records, in nanoseconds; larger values are clamped to it.
pub const LATENCY_NS_MAX: u64 = 600_000_000_000;

/// Significant decimal digits kept by every histogram.
pub const HISTOGRAM_SIGFIG: u8 = 3;

/// A fresh latency histogram (nanoseconds, 1 ns .. [`LATENCY_NS_MAX`]).
pub fn new_histogram() -> Histogram<u64> {
    // Constant, valid bounds: construction cannot fail.
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, HISTOGRAM_SIGFIG)
        .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"))
}

/// Why a request did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The TCP connection could not be opened in time.
    Connect,
    /// No response within the response timeout.
    Timeout,
    /// The connection closed or failed with the request outstanding.
    Closed,
    /// The response was not valid HTTP/1.1 (or exceeded the size limit).
    Parse,
    /// The body was not what the dialect expects (e.g. not JSON for etcd).
    BadBody,
    /// A 3xx other than a followed redirect.
    Status3xx,
    /// A 4xx the workload did not expect.
    Status4xx,
    /// A 5xx other than 503.
    Status5xx,
    /// 503: no leader (or overloaded).
    Unavailable,
    /// A 307/308 leader hint.
    Redirect,
    /// Open loop: scheduled before the end but never sent, because the server (or the
    /// connection) fell behind the rate.
    Unsent,
}

impl ErrorKind {
    /// Every kind, in reporting order.
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Closed,
        ErrorKind::Parse,
        ErrorKind::BadBody,
        ErrorKind::Status3xx,
        ErrorKind::Status4xx,
        ErrorKind::Status5xx,
        ErrorKind::Unavailable,
        ErrorKind::Redirect,
        ErrorKind::Unsent,
    ];

    /// Stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Closed => "closed",
            ErrorKind::Parse => "parse",
            ErrorKind::BadBody => "bad_body",
            ErrorKind::Status3xx => "status_3xx",
            ErrorKind::Status4xx => "status_4xx",
            ErrorKind::Status5xx => "status_5xx",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Redirect => "redirect",
            ErrorKind::Unsent => "unsent",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done as asked.
    Ok,
    /// A read of a key that does not exist (a completed operation).
    NotFound,
    /// A compare-and-swap that lost (a completed operation).
    Conflict,
    /// A leader hint (307/308); counted as an error of kind `redirect`.
    Redirect,
    /// Failed.
    Error(ErrorKind),
}

impl Outcome {
    /// Whether the operation completed (its latency goes into the histograms).
    pub fn completed(self) -> bool {
        matches!(self, Outcome::Ok | Outcome::NotFound | Outcome::Conflict)
    }

    fn class(self) -> usize {
        match self {
            Outcome::Ok => 0,
            Outcome::NotFound => 1,
            Outcome::Conflict => 2,
            Outcome::Redirect | Outcome::Error(_) => 3,
        }
    }
}

/// The kind of an operation, for the per-kind breakdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// A plain templated request.
    Request,
    /// A KV write.
    Put,
    /// A KV read.
    Get,
    /// The read half of a compare-and-swap.
    CasRead,
    /// The conditional write of a compare-and-swap.
    CasWrite,
    /// A batch of timestamps from the timestamp oracle (`POST /tso?count=N`).
    Tso,
    /// A batch of unique ids (`POST /ids?count=N`).
    Ids,
}

impl OpKind {
    /// Every kind, in reporting order.
    pub const ALL: [OpKind; 7] = [
        OpKind::Request,
        OpKind::Put,
        OpKind::Get,
        OpKind::CasRead,
        OpKind::CasWrite,
        OpKind::Tso,
        OpKind::Ids,
    ];

    /// Stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Request => "request",
            OpKind::Put => "put",
            OpKind::Get => "get",
            OpKind::CasRead => "cas_read",
            OpKind::CasWrite => "cas_write",
            OpKind::Tso => "tso",
            OpKind::Ids => "ids",
        }
    }
}

/// Counts of one operation kind by outcome class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OpCounts {
    /// Completed as asked.
    pub ok: u64,
    /// Completed: key absent.
    pub not_found: u64,
    /// Completed: compare-and-swap lost.
    pub conflict: u64,
    /// Failed (see the error counts).
    pub error: u64,
}

impl OpCounts {
    fn add(&mut self, other: &OpCounts) {
        self.ok += other.ok;
        self.not_found += other.not_found;
        self.conflict += other.conflict;
        self.error += other.error;
    }

    /// Operations that completed.
    pub fn completed(&self) -> u64 {
        self.ok + self.not_found + self.conflict
    }
}

/// Histograms and counters for one phase of a run (or one interval of it).
#[derive(Debug, Clone)]
pub struct Recorder {
    /// Latency from the intended send time (coordinated omission corrected), ns.
    pub latency: Histogram<u64>,
    /// Latency from the actual send time (what a naive client reports), ns.
    pub service: Histogram<u64>,
    /// How late requests left the client relative to their intended time, ns (open loop).
    pub send_lag: Histogram<u64>,
    /// Counts per operation kind, indexed like [`OpKind::ALL`].
    pub ops: [OpCounts; OpKind::ALL.len()],
    /// Errors per kind, indexed like [`ErrorKind::ALL`].
    pub errors: [u64; 11],
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self {
            latency: new_histogram(),
            service: new_histogram(),
            send_lag: new_histogram(),
            ops: [OpCounts::default(); OpKind::ALL.len()],
            errors: [0; 11],
        }
    }

    /// Records one finished request. Latencies are only recorded for completed operations, so
    /// fast failures (e.g. 503) cannot flatter the percentiles.
    pub fn record(
        &mut self,
        op: OpKind,
        outcome: Outcome,
        corrected: Duration,
        service: Duration,
        lag: Duration,
    ) {
        let counts = &mut self.ops[op as usize];
        match outcome.class() {
            0 => counts.ok += 1,
            1 => counts.not_found += 1,
            2 => counts.conflict += 1,
            _ => counts.error += 1,
        }
        match outcome {
            Outcome::Redirect => self.record_error(ErrorKind::Redirect),
            Outcome::Error(kind) => self.record_error(kind),
            _ => {
                self.latency.saturating_record(duration_ns(corrected));
                self.service.saturating_record(duration_ns(service));
                self.send_lag.saturating_record(duration_ns(lag));
            }
        }
    }

    /// Counts an error that is not tied to a request (e.g. a failed connect).
    pub fn record_error(&mut self, kind: ErrorKind) {
        self.record_errors(kind, 1);
    }

    /// Counts `n` errors of one kind at once.
    pub fn record_errors(&mut self, kind: ErrorKind, n: u64) {
        self.errors[kind.index()] = self.errors[kind.index()].saturating_add(n);
    }

    /// Adds everything `other` recorded.
    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.service.add(&other.service);
        let _ = self.send_lag.add(&other.send_lag);
        for (a, b) in self.ops.iter_mut().zip(other.ops.iter()) {
            a.add(b);
        }
        for (a, b) in self.errors.iter_mut().zip(other.errors.iter()) {
            *a += b;
        }
    }

    /// Completed operations of every kind.
    pub fn completed(&self) -> u64 {
        self.ops.iter().map(OpCounts::completed).sum()
    }

    /// Errors of every kind.
    pub fn error_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// Errors of one kind.
    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        self.errors[kind.index()]
    }

    /// Counts of one operation kind.
    pub fn ops_of(&self, kind: OpKind) -> OpCounts {
        self.ops[kind as usize]
    }
}

/// Nanoseconds, saturating.
pub fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One interval of the time series (by default one second).
#[derive(Debug, Clone)]
pub struct IntervalStats {
    /// Interval number since the run started (warm-up included).
    pub index: u64,
    /// Start, relative to the run's start.
    pub start: Duration,
    /// Length.
    pub length: Duration,
    /// Whether the interval lies (at least partly) in the warm-up.
    pub warmup: bool,
    /// What completed within it.
    pub recorder: Recorder,
}

impl IntervalStats {
    /// Completed operations per second in this interval.
    pub fn rate(&self) -> f64 {
        let secs = self.length.as_secs_f64();
        if secs > 0.0 {
            self.recorder.completed() as f64 / secs
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_and_merge() {
        let ms = Duration::from_millis;
        let mut a = Recorder::new();
        a.record(OpKind::Put, Outcome::Ok, ms(5), ms(1), ms(4));
        a.record(OpKind::Get, Outcome::NotFound, ms(2), ms(2), ms(0));
        a.record(
            OpKind::Put,
            Outcome::Error(ErrorKind::Timeout),
            ms(9),
            ms(9),
            ms(0),
        );
        let mut b = Recorder::new();
        b.record(OpKind::CasWrite, Outcome::Conflict, ms(3), ms(3), ms(0));
        b.record(OpKind::Put, Outcome::Redirect, ms(1), ms(1), ms(0));
        b.record_error(ErrorKind::Connect);
        a.merge(&b);
        assert_eq!(a.completed(), 3);
        assert_eq!(a.latency.len(), 3);
        assert_eq!(a.error_total(), 3);
        assert_eq!(a.errors_of(ErrorKind::Redirect), 1);
        assert_eq!(a.ops_of(OpKind::Put).error, 2);
        assert_eq!(a.ops_of(OpKind::CasWrite).conflict, 1);
        // The corrected 5 ms and the uncorrected 1 ms of the first put are kept apart.
        assert!(a.latency.max() >= duration_ns(ms(5)) * 99 / 100);
        assert!(a.service.max() < duration_ns(ms(4)));
    }
}
