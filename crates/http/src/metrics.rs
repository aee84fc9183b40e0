//! Per-shard HTTP metrics: plain cells on the hot path, merged across shards at scrape time.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::Duration;

use crate::router::{Router, SLOT_INVALID, SLOT_UNMATCHED};

/// Upper bounds (seconds) of the request latency histogram buckets; `+Inf` is implied.
pub const LATENCY_BUCKETS_SECONDS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];
const LATENCY_BUCKETS_MICROS: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];

/// Kinds of timeouts the connection layer enforces (metrics label values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// A request head did not arrive in time (slowloris).
    Head,
    /// A keep-alive connection stayed idle too long.
    Idle,
    /// A body did not arrive in time.
    Body,
    /// A write made no progress in time (client not reading).
    Write,
}

impl TimeoutKind {
    const ALL: [TimeoutKind; 4] = [
        TimeoutKind::Head,
        TimeoutKind::Idle,
        TimeoutKind::Body,
        TimeoutKind::Write,
    ];

    fn label(self) -> &'static str {
        match self {
            TimeoutKind::Head => "head",
            TimeoutKind::Idle => "idle",
            TimeoutKind::Body => "body",
            TimeoutKind::Write => "write",
        }
    }
}

/// Distinct statuses kept per route; more collapse into the last slot seen (bounded memory
/// even if handlers return arbitrary codes).
const STATUSES_PER_ROUTE_MAX: usize = 32;
/// Distinct parse error kinds kept (the decoder has fewer).
const PARSE_ERROR_KINDS_MAX: usize = 64;

/// Requests of one route label slot: (label once known, [(status, count)]).
type RouteCounts = (Option<Rc<str>>, Vec<(u16, u64)>);

/// One shard's HTTP counters. Not thread-safe by design (one per shard); read it through
/// [`HttpMetrics::snapshot`] and merge the snapshots.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    connections_accepted: Cell<u64>,
    connections_active: Cell<u64>,
    connections_rejected: Cell<u64>,
    /// Indexed by route slot: (label, [(status, count)]).
    requests: RefCell<Vec<RouteCounts>>,
    parse_errors: RefCell<Vec<(&'static str, u64)>>,
    timeouts: [Cell<u64>; 4],
    latency_buckets: [Cell<u64>; 17],
    latency_sum_micros: Cell<u64>,
    latency_count: Cell<u64>,
    handler_panics: Cell<u64>,
}

impl HttpMetrics {
    /// Fresh counters.
    pub fn new() -> HttpMetrics {
        HttpMetrics::default()
    }

    pub(crate) fn connection_accepted(&self) {
        bump(&self.connections_accepted);
    }

    pub(crate) fn connection_opened(&self) {
        bump(&self.connections_active);
    }

    pub(crate) fn connection_closed(&self) {
        let c = &self.connections_active;
        c.set(c.get().saturating_sub(1));
    }

    pub(crate) fn connection_rejected(&self) {
        bump(&self.connections_rejected);
    }

    pub(crate) fn timeout(&self, kind: TimeoutKind) {
        let i = TimeoutKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0);
        if let Some(c) = self.timeouts.get(i) {
            bump(c);
        }
    }

    pub(crate) fn handler_panic(&self) {
        bump(&self.handler_panics);
    }

    pub(crate) fn parse_error(&self, kind: &'static str) {
        let mut errs = self.parse_errors.borrow_mut();
        if let Some(e) = errs.iter_mut().find(|(k, _)| *k == kind) {
            e.1 += 1;
        } else if errs.len() < PARSE_ERROR_KINDS_MAX {
            errs.push((kind, 1));
        }
    }

    /// Counts one answered request under its route label and status, and its latency when
    /// it reached a handler or the router (decoder refusals have none worth recording).
    pub(crate) fn request(
        &self,
        router: &Router,
        slot: usize,
        status: u16,
        latency: Option<Duration>,
    ) {
        {
            let mut reqs = self.requests.borrow_mut();
            if reqs.len() <= slot {
                reqs.resize_with(slot + 1, || (None, Vec::new()));
            }
            if let Some((label, statuses)) = reqs.get_mut(slot) {
                if label.is_none() {
                    *label = Some(match slot {
                        SLOT_UNMATCHED => Rc::from("unmatched"),
                        SLOT_INVALID => Rc::from("invalid"),
                        _ => router
                            .route_name(slot)
                            .cloned()
                            .unwrap_or_else(|| Rc::from("unknown")),
                    });
                }
                if let Some(s) = statuses.iter_mut().find(|(s, _)| *s == status) {
                    s.1 += 1;
                } else if statuses.len() < STATUSES_PER_ROUTE_MAX {
                    statuses.push((status, 1));
                } else if let Some(last) = statuses.last_mut() {
                    last.1 += 1;
                }
            }
        }
        let Some(latency) = latency else { return };
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_MICROS
            .iter()
            .position(|&b| micros <= b)
            .unwrap_or(LATENCY_BUCKETS_MICROS.len());
        if let Some(c) = self.latency_buckets.get(bucket) {
            bump(c);
        }
        self.latency_sum_micros
            .set(self.latency_sum_micros.get().saturating_add(micros));
        bump(&self.latency_count);
    }

    /// A copy of the counters that can cross threads.
    pub fn snapshot(&self) -> HttpMetricsSnapshot {
        let mut requests = BTreeMap::new();
        for (label, statuses) in self.requests.borrow().iter() {
            let Some(label) = label else { continue };
            for (status, n) in statuses {
                *requests.entry((label.to_string(), *status)).or_insert(0) += n;
            }
        }
        let parse_errors = self
            .parse_errors
            .borrow()
            .iter()
            .map(|(k, n)| (k.to_string(), *n))
            .collect();
        let timeouts = TimeoutKind::ALL
            .iter()
            .zip(self.timeouts.iter())
            .map(|(k, c)| (k.label().to_string(), c.get()))
            .collect();
        HttpMetricsSnapshot {
            connections_accepted: self.connections_accepted.get(),
            connections_active: self.connections_active.get(),
            connections_rejected: self.connections_rejected.get(),
            requests,
            parse_errors,
            timeouts,
            latency_buckets: self.latency_buckets.iter().map(Cell::get).collect(),
            latency_sum_micros: self.latency_sum_micros.get(),
            latency_count: self.latency_count.get(),
            handler_panics: self.handler_panics.get(),
        }
    }
}

fn bump(c: &Cell<u64>) {
    c.set(c.get().wrapping_add(1));
}

/// Counters of one or more shards; `Send + Clone`, mergeable, renderable as Prometheus text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpMetricsSnapshot {
    /// Connections accepted (including rejected ones).
    pub connections_accepted: u64,
    /// Connections open now.
    pub connections_active: u64,
    /// Connections refused because `connections_max` was reached.
    pub connections_rejected: u64,
    /// Answered requests by (route label, status). Route labels are patterns, plus
    /// `unmatched` (404/405) and `invalid` (refused by the decoder).
    pub requests: BTreeMap<(String, u16), u64>,
    /// Requests refused by the decoder, by error kind.
    pub parse_errors: BTreeMap<String, u64>,
    /// Timeouts by kind (`head`, `idle`, `body`, `write`).
    pub timeouts: BTreeMap<String, u64>,
    /// Non-cumulative counts per bucket of [`LATENCY_BUCKETS_SECONDS`], then `+Inf`.
    pub latency_buckets: Vec<u64>,
    /// Sum of request latencies in microseconds.
    pub latency_sum_micros: u64,
    /// Number of latency observations.
    pub latency_count: u64,
    /// Handlers that panicked (each answered 500; see [`crate::panic`]).
    pub handler_panics: u64,
}

impl HttpMetricsSnapshot {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &HttpMetricsSnapshot) {
        self.connections_accepted += other.connections_accepted;
        self.connections_active += other.connections_active;
        self.connections_rejected += other.connections_rejected;
        for (k, v) in &other.requests {
            *self.requests.entry(k.clone()).or_insert(0) += v;
        }
        for (k, v) in &other.parse_errors {
            *self.parse_errors.entry(k.clone()).or_insert(0) += v;
        }
        for (k, v) in &other.timeouts {
            *self.timeouts.entry(k.clone()).or_insert(0) += v;
        }
        if self.latency_buckets.len() < other.latency_buckets.len() {
            self.latency_buckets.resize(other.latency_buckets.len(), 0);
        }
        for (a, b) in self.latency_buckets.iter_mut().zip(&other.latency_buckets) {
            *a += b;
        }
        self.latency_sum_micros += other.latency_sum_micros;
        self.latency_count += other.latency_count;
        self.handler_panics += other.handler_panics;
    }

    /// Appends the Prometheus text exposition of these counters (`mast_http_*`).
    pub fn render_prometheus(&self, out: &mut String) {
        let simple = [
            (
                "mast_http_connections_accepted_total",
                "counter",
                "Connections accepted.",
                self.connections_accepted,
            ),
            (
                "mast_http_connections_active",
                "gauge",
                "Connections open now.",
                self.connections_active,
            ),
            (
                "mast_http_connections_rejected_total",
                "counter",
                "Connections refused because connections_max was reached.",
                self.connections_rejected,
            ),
            (
                "mast_http_handler_panics_total",
                "counter",
                "Handlers that panicked; each was answered 500 and its shard kept serving.",
                self.handler_panics,
            ),
        ];
        for (name, kind, help, v) in simple {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP mast_http_requests_total Requests answered, by route and status.\n# TYPE mast_http_requests_total counter"
        );
        for ((route, status), n) in &self.requests {
            let _ = writeln!(
                out,
                "mast_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                escape_label(route)
            );
        }
        let _ = writeln!(
            out,
            "# HELP mast_http_parse_errors_total Requests refused by the decoder, by kind.\n# TYPE mast_http_parse_errors_total counter"
        );
        for (kind, n) in &self.parse_errors {
            let _ = writeln!(
                out,
                "mast_http_parse_errors_total{{kind=\"{}\"}} {n}",
                escape_label(kind)
            );
        }
        let _ = writeln!(
            out,
            "# HELP mast_http_timeouts_total Connections closed by a timeout, by kind.\n# TYPE mast_http_timeouts_total counter"
        );
        for (kind, n) in &self.timeouts {
            let _ = writeln!(
                out,
                "mast_http_timeouts_total{{kind=\"{}\"}} {n}",
                escape_label(kind)
            );
        }
        let name = "mast_http_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from a complete request to its encoded response.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0u64;
        for (i, le) in LATENCY_BUCKETS_SECONDS.iter().enumerate() {
            cumulative += self.latency_buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.latency_count);
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.latency_sum_micros as f64 / 1_000_000.0
        );
        let _ = writeln!(out, "{name}_count {}", self.latency_count);
    }
}

fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Method;
    use crate::response::Response;
    use crate::router::ROUTE_SLOT_BASE;

    #[test]
    fn merge_and_render() {
        let router = Router::new().route(Method::GET, "/a/{x}", |_| async { Response::empty(200) });
        let m1 = HttpMetrics::new();
        m1.request(
            &router,
            ROUTE_SLOT_BASE,
            200,
            Some(Duration::from_micros(70)),
        );
        m1.request(&router, SLOT_UNMATCHED, 404, Some(Duration::from_millis(2)));
        m1.request(&router, SLOT_INVALID, 400, None);
        m1.parse_error("bad_chunk");
        m1.timeout(TimeoutKind::Head);
        m1.connection_accepted();
        let m2 = HttpMetrics::new();
        m2.request(&router, ROUTE_SLOT_BASE, 200, Some(Duration::from_secs(20)));
        m2.connection_accepted();
        let mut s = m1.snapshot();
        s.merge(&m2.snapshot());
        assert_eq!(s.requests.get(&("/a/{x}".to_string(), 200)), Some(&2));
        assert_eq!(s.connections_accepted, 2);
        assert_eq!(s.latency_count, 3);
        let mut text = String::new();
        s.render_prometheus(&mut text);
        assert!(text.contains("mast_http_requests_total{route=\"/a/{x}\",status=\"200\"} 2"));
        assert!(text.contains("mast_http_requests_total{route=\"unmatched\",status=\"404\"} 1"));
        assert!(text.contains("mast_http_parse_errors_total{kind=\"bad_chunk\"} 1"));
        assert!(text.contains("mast_http_requests_total{route=\"invalid\",status=\"400\"} 1"));
        assert!(text.contains("mast_http_timeouts_total{kind=\"head\"} 1"));
        assert!(text.contains("mast_http_request_duration_seconds_bucket{le=\"0.0001\"} 1"));
        assert!(text.contains("mast_http_request_duration_seconds_bucket{le=\"10\"} 2"));
        assert!(text.contains("mast_http_request_duration_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("mast_http_request_duration_seconds_count 3"));
    }
}
