//! Workloads: what each connection sends next and how it judges the answers.
//!
//! Every workload implements [`Workload`] (one instance per connection, owned by that
//! connection's thread) and is built by a [`WorkloadFactory`] shared by all threads: KV
//! ([`KvWorkloadSpec`]), any templated request ([`TemplateWorkloadSpec`]), and batches of
//! timestamps or ids ([`BatchWorkloadSpec`]). Later issues add DDL, volume creation and node
//! heartbeats as more implementations.

use std::collections::HashMap;
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::api::{status_outcome, KvApi};
use crate::http::{RequestTemplate, Response, TemplateVars};
use crate::stats::{ErrorKind, OpKind, Outcome};

/// Largest value a KV workload writes, in bytes.
pub const VALUE_BYTES_MAX: usize = 16 << 20;

/// Largest key space a CAS workload tracks revisions for.
pub const CAS_KEYS_MAX: u64 = 1 << 20;

/// Who a workload instance is for.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// Global index of the connection, `0..count`.
    pub index: usize,
    /// Number of connections in the run.
    pub count: usize,
    /// Seed for this connection's random choices (derived from the run's seed).
    pub seed: u64,
}

/// One operation in flight, handed back with its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    /// What it was.
    pub kind: OpKind,
    /// The key id it used (0 for keyless requests).
    pub key: u64,
}

/// A connection's request stream.
pub trait Workload {
    /// Appends the next request to `out` and describes it, or returns `None` when this
    /// connection has nothing more to send. `host` is the current target (`ip:port`).
    fn next_request(&mut self, host: &str, out: &mut Vec<u8>) -> Option<Op>;
    /// Judges the response to `op` (responses arrive in request order).
    fn on_response(&mut self, op: Op, response: &Response<'_>) -> Outcome;
}

/// Builds one [`Workload`] per connection; shared by every client thread.
pub trait WorkloadFactory: Send + Sync {
    /// A workload for one connection.
    fn build(&self, conn: ConnInfo) -> Box<dyn Workload>;
    /// A short description for reports.
    fn describe(&self) -> String;
}

/// How keys are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyChoice {
    /// Every request a new key, distinct across connections (`id = seq * conns + conn`).
    Distinct,
    /// Uniform over `0..keys`, except that a `hot_fraction` of requests go to `0..hot_keys`.
    Set {
        /// Size of the whole (cold) key set.
        keys: u64,
        /// Size of the hot subset (0 = none).
        hot_keys: u64,
        /// Share of requests sent to the hot subset, 0..=1.
        hot_fraction: f64,
    },
}

impl KeyChoice {
    fn validate(&self) -> Result<(), String> {
        match *self {
            KeyChoice::Distinct => Ok(()),
            KeyChoice::Set {
                keys,
                hot_keys,
                hot_fraction,
            } => {
                if keys == 0 {
                    return Err("the key set must not be empty".into());
                }
                if hot_keys > keys {
                    return Err("hot keys must be a subset of the keys".into());
                }
                if !(0.0..=1.0).contains(&hot_fraction) {
                    return Err("hot fraction must be within 0..=1".into());
                }
                Ok(())
            }
        }
    }

    fn pick(&self, rng: &mut SmallRng, conn: &ConnInfo, seq: u64) -> u64 {
        match *self {
            KeyChoice::Distinct => seq
                .saturating_mul(conn.count as u64)
                .saturating_add(conn.index as u64),
            KeyChoice::Set {
                keys,
                hot_keys,
                hot_fraction,
            } => {
                if hot_keys > 0 && rng.gen::<f64>() < hot_fraction {
                    rng.gen_range(0..hot_keys)
                } else {
                    rng.gen_range(0..keys)
                }
            }
        }
    }
}

/// The shape of a run's requests.
#[derive(Debug, Clone, PartialEq)]
pub enum Mix {
    /// Writes only.
    Put,
    /// Reads only.
    Get,
    /// Reads with probability `read_ratio`, writes otherwise.
    Mixed {
        /// Share of reads, 0..=1.
        read_ratio: f64,
    },
    /// Compare-and-swap: read a key's revision, then write it conditionally; a lost race is a
    /// `conflict`. Few keys give high contention.
    Cas,
    /// Writes keys `0..keys` once, split over the connections (for loading data before a run).
    Preload {
        /// Number of keys to write.
        keys: u64,
    },
}

/// A KV workload over any [`KvApi`] dialect.
#[derive(Clone)]
pub struct KvWorkloadSpec {
    /// The server's dialect.
    pub api: Arc<dyn KvApi>,
    /// What to send.
    pub mix: Mix,
    /// How keys are drawn (ignored by `Preload`).
    pub keys: KeyChoice,
    /// Value size in bytes.
    pub value_bytes: usize,
    /// Prefix of every key (URL-safe characters only).
    pub key_prefix: String,
    /// Seed of the run's random choices.
    pub seed: u64,
}

impl KvWorkloadSpec {
    /// Checks limits and ranges.
    pub fn validate(&self) -> Result<(), String> {
        self.keys.validate()?;
        if self.value_bytes > VALUE_BYTES_MAX {
            return Err(format!("value size above {VALUE_BYTES_MAX} bytes"));
        }
        if !self
            .key_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
        {
            return Err("key prefix must be URL-safe (A-Z a-z 0-9 - _ . ~)".into());
        }
        match self.mix {
            Mix::Mixed { read_ratio } if !(0.0..=1.0).contains(&read_ratio) => {
                Err("read ratio must be within 0..=1".into())
            }
            Mix::Cas => match self.keys {
                KeyChoice::Set { keys, .. } if keys <= CAS_KEYS_MAX => Ok(()),
                _ => Err(format!(
                    "kv-cas needs a key set of at most {CAS_KEYS_MAX} keys"
                )),
            },
            _ => Ok(()),
        }
    }
}

impl WorkloadFactory for KvWorkloadSpec {
    fn build(&self, conn: ConnInfo) -> Box<dyn Workload> {
        let mut rng = SmallRng::seed_from_u64(self.seed ^ conn.seed);
        // Printable values so they read well in logs and survive any body handling.
        let value = (0..self.value_bytes)
            .map(|_| b'a' + rng.gen_range(0..26u8))
            .collect();
        Box::new(KvWorkload {
            spec: self.clone(),
            conn,
            rng,
            seq: 0,
            value,
            key_buf: Vec::with_capacity(self.key_prefix.len() + 20),
            revisions: HashMap::new(),
        })
    }

    fn describe(&self) -> String {
        let keys = match self.keys {
            KeyChoice::Distinct => "distinct keys".to_string(),
            KeyChoice::Set {
                keys,
                hot_keys,
                hot_fraction,
            } if hot_keys > 0 => {
                format!("{keys} keys, {hot_fraction} of requests on {hot_keys} hot keys")
            }
            KeyChoice::Set { keys, .. } => format!("{keys} keys"),
        };
        let mix = match self.mix {
            Mix::Put => "kv-put".to_string(),
            Mix::Get => "kv-get".to_string(),
            Mix::Mixed { read_ratio } => format!("kv-mixed read_ratio={read_ratio}"),
            Mix::Cas => "kv-cas".to_string(),
            Mix::Preload { keys } => format!("preload {keys} keys"),
        };
        format!("{mix}, {keys}, {} B values", self.value_bytes)
    }
}

struct KvWorkload {
    spec: KvWorkloadSpec,
    conn: ConnInfo,
    rng: SmallRng,
    seq: u64,
    value: Vec<u8>,
    key_buf: Vec<u8>,
    /// Last known revision per key (CAS only; bounded by the validated key set size).
    revisions: HashMap<u64, u64>,
}

impl KvWorkload {
    fn key_bytes(&mut self, id: u64) {
        self.key_buf.clear();
        self.key_buf
            .extend_from_slice(self.spec.key_prefix.as_bytes());
        self.key_buf.extend_from_slice(id.to_string().as_bytes());
    }
}

impl Workload for KvWorkload {
    fn next_request(&mut self, host: &str, out: &mut Vec<u8>) -> Option<Op> {
        let seq = self.seq;
        let op = match self.spec.mix {
            Mix::Preload { keys } => {
                let id = seq
                    .checked_mul(self.conn.count as u64)?
                    .checked_add(self.conn.index as u64)?;
                if id >= keys {
                    return None;
                }
                Op {
                    kind: OpKind::Put,
                    key: id,
                }
            }
            Mix::Put => Op {
                kind: OpKind::Put,
                key: self.spec.keys.pick(&mut self.rng, &self.conn, seq),
            },
            Mix::Get => Op {
                kind: OpKind::Get,
                key: self.spec.keys.pick(&mut self.rng, &self.conn, seq),
            },
            Mix::Mixed { read_ratio } => {
                let read = self.rng.gen::<f64>() < read_ratio;
                Op {
                    kind: if read { OpKind::Get } else { OpKind::Put },
                    key: self.spec.keys.pick(&mut self.rng, &self.conn, seq),
                }
            }
            Mix::Cas => {
                let key = self.spec.keys.pick(&mut self.rng, &self.conn, seq);
                let kind = if self.revisions.contains_key(&key) {
                    OpKind::CasWrite
                } else {
                    OpKind::CasRead
                };
                Op { kind, key }
            }
        };
        self.seq += 1;
        self.key_bytes(op.key);
        let api = &self.spec.api;
        match op.kind {
            OpKind::Get | OpKind::CasRead => api.get(host, &self.key_buf, out),
            OpKind::CasWrite => {
                let rev = self.revisions.get(&op.key).copied();
                api.put(host, &self.key_buf, &self.value, rev, out);
            }
            OpKind::Put | OpKind::Request | OpKind::Tso | OpKind::Ids => {
                api.put(host, &self.key_buf, &self.value, None, out)
            }
        }
        Some(op)
    }

    fn on_response(&mut self, op: Op, response: &Response<'_>) -> Outcome {
        let api = &self.spec.api;
        match op.kind {
            OpKind::Get => api.get_reply(response).outcome,
            OpKind::Put | OpKind::Request | OpKind::Tso | OpKind::Ids => {
                api.put_reply(response, false).outcome
            }
            OpKind::CasRead => {
                let reply = api.get_reply(response);
                match (reply.outcome, reply.revision) {
                    (Outcome::Ok, Some(rev)) => {
                        self.revisions.insert(op.key, rev);
                        Outcome::Ok
                    }
                    // Without a revision the CAS cannot proceed: the API is not usable for it.
                    (Outcome::Ok, None) => Outcome::Error(ErrorKind::BadBody),
                    // Revision 0 means "does not exist" to etcd's compare; mast is asked the same.
                    (Outcome::NotFound, _) => {
                        self.revisions.insert(op.key, 0);
                        Outcome::NotFound
                    }
                    (other, _) => other,
                }
            }
            OpKind::CasWrite => {
                let reply = api.put_reply(response, true);
                match (reply.outcome, reply.revision) {
                    (Outcome::Ok | Outcome::Conflict, Some(rev)) => {
                        self.revisions.insert(op.key, rev);
                    }
                    _ => {
                        // Lost, failed, or no new revision told: read it again next time.
                        self.revisions.remove(&op.key);
                    }
                }
                reply.outcome
            }
        }
    }
}

/// Any request built from a [`RequestTemplate`]; `{key}` follows `keys`. Every 2xx is `Ok`.
#[derive(Debug, Clone)]
pub struct TemplateWorkloadSpec {
    /// The request.
    pub template: RequestTemplate,
    /// How `{key}` is drawn.
    pub keys: KeyChoice,
    /// Size of `{value}` in bytes.
    pub value_bytes: usize,
    /// Prefix of `{key}`.
    pub key_prefix: String,
    /// Seed of the run's random choices.
    pub seed: u64,
}

impl WorkloadFactory for TemplateWorkloadSpec {
    fn build(&self, conn: ConnInfo) -> Box<dyn Workload> {
        let mut rng = SmallRng::seed_from_u64(self.seed ^ conn.seed);
        let value = (0..self.value_bytes.min(VALUE_BYTES_MAX))
            .map(|_| b'a' + rng.gen_range(0..26u8))
            .collect();
        Box::new(TemplateWorkload {
            spec: self.clone(),
            conn,
            rng,
            seq: 0,
            value,
            key_buf: Vec::new(),
            scratch: Vec::new(),
        })
    }

    fn describe(&self) -> String {
        format!("http template ({:?})", self.keys)
    }
}

struct TemplateWorkload {
    spec: TemplateWorkloadSpec,
    conn: ConnInfo,
    rng: SmallRng,
    seq: u64,
    value: Vec<u8>,
    key_buf: Vec<u8>,
    scratch: Vec<u8>,
}

impl Workload for TemplateWorkload {
    fn next_request(&mut self, host: &str, out: &mut Vec<u8>) -> Option<Op> {
        let key = self.spec.keys.pick(&mut self.rng, &self.conn, self.seq);
        self.key_buf.clear();
        self.key_buf
            .extend_from_slice(self.spec.key_prefix.as_bytes());
        self.key_buf.extend_from_slice(key.to_string().as_bytes());
        let vars = TemplateVars {
            host,
            key: &self.key_buf,
            value: &self.value,
            seq: self.seq,
            conn: self.conn.index,
        };
        self.spec.template.render(&vars, out, &mut self.scratch);
        self.seq += 1;
        Some(Op {
            kind: OpKind::Request,
            key,
        })
    }

    fn on_response(&mut self, _op: Op, response: &Response<'_>) -> Outcome {
        status_outcome(response.status)
    }
}

/// What a [`BatchWorkloadSpec`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    /// `POST /tso?count=N` → `200 {"timestamp":T,"count":N}`: `[T, T+N)` is the caller's.
    Tso,
    /// `POST /ids?count=N` → `200 {"id":FIRST,"count":N}`: `[FIRST, FIRST+N)` is the caller's.
    Ids,
}

impl BatchKind {
    /// Request path without the query.
    pub fn path(self) -> &'static str {
        match self {
            BatchKind::Tso => "/tso",
            BatchKind::Ids => "/ids",
        }
    }

    /// Name of the reply's field holding the first value.
    pub fn field(self) -> &'static str {
        match self {
            BatchKind::Tso => "timestamp",
            BatchKind::Ids => "id",
        }
    }

    /// What one unit of `count` is, plural, for reports.
    pub fn unit(self) -> &'static str {
        match self {
            BatchKind::Tso => "timestamps",
            BatchKind::Ids => "ids",
        }
    }

    /// Largest `count` the server accepts (2^18 logical values per millisecond; 1,000,000 ids).
    pub fn count_max(self) -> u64 {
        match self {
            BatchKind::Tso => 1 << 18,
            BatchKind::Ids => 1_000_000,
        }
    }

    /// The operation kind its requests are counted under.
    pub fn op_kind(self) -> OpKind {
        match self {
            BatchKind::Tso => OpKind::Tso,
            BatchKind::Ids => OpKind::Ids,
        }
    }
}

/// Batches of timestamps or ids: every request asks for `count`; a reply is `Ok` only if it
/// is a 200 whose JSON body names the first value and exactly `count`. With `check_order`
/// (sound only without pipelining, where each request leaves after the previous reply came
/// back), a batch that does not start at or after the end of the connection's previous one is
/// a `bad_body` too: the server handed out something twice or went backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchWorkloadSpec {
    /// Timestamps or ids.
    pub kind: BatchKind,
    /// Values per request, `1..=kind.count_max()`.
    pub count: u64,
    /// Check that each connection's batches strictly increase.
    pub check_order: bool,
}

impl BatchWorkloadSpec {
    /// Checks the count.
    pub fn validate(&self) -> Result<(), String> {
        let max = self.kind.count_max();
        if self.count == 0 || self.count > max {
            return Err(format!(
                "--count must be within 1..={max} for {}",
                self.kind.unit()
            ));
        }
        Ok(())
    }

    /// Appends the request for one batch.
    pub fn render(&self, host: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(b"POST ");
        out.extend_from_slice(self.kind.path().as_bytes());
        out.extend_from_slice(b"?count=");
        out.extend_from_slice(self.count.to_string().as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    }

    /// Reads `(first, count)` from a reply body, `None` if it is not the expected JSON.
    pub fn parse_reply(&self, body: &[u8]) -> Option<(u64, u64)> {
        #[derive(serde::Deserialize)]
        struct Reply {
            timestamp: Option<u64>,
            id: Option<u64>,
            count: Option<u64>,
        }
        let r: Reply = serde_json::from_slice(body).ok()?;
        let first = match self.kind {
            BatchKind::Tso => r.timestamp?,
            BatchKind::Ids => r.id?,
        };
        Some((first, r.count?))
    }

    /// Values handed out by `ok` successful requests.
    pub fn items(&self, ok: u64) -> u64 {
        ok.saturating_mul(self.count)
    }
}

impl WorkloadFactory for BatchWorkloadSpec {
    fn build(&self, _conn: ConnInfo) -> Box<dyn Workload> {
        Box::new(BatchWorkload {
            spec: *self,
            next_min: 0,
        })
    }

    fn describe(&self) -> String {
        format!(
            "{} count={} (POST {}?count={})",
            match self.kind {
                BatchKind::Tso => "tso",
                BatchKind::Ids => "ids",
            },
            self.count,
            self.kind.path(),
            self.count
        )
    }
}

struct BatchWorkload {
    spec: BatchWorkloadSpec,
    /// End of the connection's last batch: the next one must start at or above it.
    next_min: u64,
}

impl Workload for BatchWorkload {
    fn next_request(&mut self, host: &str, out: &mut Vec<u8>) -> Option<Op> {
        self.spec.render(host, out);
        Some(Op {
            kind: self.spec.kind.op_kind(),
            key: 0,
        })
    }

    fn on_response(&mut self, _op: Op, response: &Response<'_>) -> Outcome {
        match response.status {
            200 => {}
            // Any other success status is not what the API promises.
            201..=299 => return Outcome::Error(ErrorKind::BadBody),
            s => return status_outcome(s),
        }
        let Some((first, count)) = self.spec.parse_reply(&response.body) else {
            return Outcome::Error(ErrorKind::BadBody);
        };
        if count != self.spec.count {
            return Outcome::Error(ErrorKind::BadBody);
        }
        if self.spec.check_order {
            if first < self.next_min {
                return Outcome::Error(ErrorKind::BadBody);
            }
            self.next_min = first.saturating_add(count);
        }
        Outcome::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MastApi;
    use std::borrow::Cow;

    fn spec(mix: Mix, keys: KeyChoice) -> KvWorkloadSpec {
        KvWorkloadSpec {
            api: Arc::new(MastApi),
            mix,
            keys,
            value_bytes: 4,
            key_prefix: "k".into(),
            seed: 1,
        }
    }

    fn conn(index: usize, count: usize) -> ConnInfo {
        ConnInfo {
            index,
            count,
            seed: index as u64,
        }
    }

    fn response(status: u16, etag: Option<&'static [u8]>) -> Response<'static> {
        Response {
            status,
            etag,
            location: None,
            body: Cow::Borrowed(b""),
            close: false,
        }
    }

    #[test]
    fn distinct_puts_never_collide_across_connections() {
        let s = spec(Mix::Put, KeyChoice::Distinct);
        let mut seen = std::collections::HashSet::new();
        for c in 0..3 {
            let mut w = s.build(conn(c, 3));
            for _ in 0..50 {
                let mut out = Vec::new();
                let op = w.next_request("h", &mut out).unwrap();
                assert!(seen.insert(op.key), "key {} repeated", op.key);
                let text = String::from_utf8(out).unwrap();
                assert!(text.starts_with(&format!("PUT /kv/k{} HTTP/1.1", op.key)));
            }
        }
    }

    #[test]
    fn preload_covers_each_key_once() {
        let s = spec(Mix::Preload { keys: 10 }, KeyChoice::Distinct);
        let mut keys = Vec::new();
        for c in 0..3 {
            let mut w = s.build(conn(c, 3));
            while let Some(op) = w.next_request("h", &mut Vec::new()) {
                keys.push(op.key);
                assert!(keys.len() <= 10);
            }
        }
        keys.sort();
        assert_eq!(keys, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn hot_set_gets_its_share() {
        let keys = KeyChoice::Set {
            keys: 1000,
            hot_keys: 10,
            hot_fraction: 0.9,
        };
        let mut w = spec(Mix::Get, keys).build(conn(0, 1));
        let mut hot = 0;
        for _ in 0..2000 {
            if w.next_request("h", &mut Vec::new()).unwrap().key < 10 {
                hot += 1;
            }
        }
        // 90% targeted + ~1% of the cold draws; far from both 0.5 and 1.
        assert!((1700..1900).contains(&hot), "hot = {hot}");
    }

    #[test]
    fn cas_reads_then_writes_with_revision() {
        let keys = KeyChoice::Set {
            keys: 1,
            hot_keys: 0,
            hot_fraction: 0.0,
        };
        let mut w = spec(Mix::Cas, keys).build(conn(0, 1));
        let mut out = Vec::new();
        let read = w.next_request("h", &mut out).unwrap();
        assert_eq!(read.kind, OpKind::CasRead);
        assert_eq!(
            w.on_response(read, &response(200, Some(b"\"7\""))),
            Outcome::Ok
        );
        out.clear();
        let write = w.next_request("h", &mut out).unwrap();
        assert_eq!(write.kind, OpKind::CasWrite);
        assert!(String::from_utf8_lossy(&out).contains("If-Match: \"7\"\r\n"));
        assert_eq!(
            w.on_response(write, &response(412, None)),
            Outcome::Conflict
        );
        // A lost race without the current revision forgets it: the next op reads again.
        assert_eq!(
            w.next_request("h", &mut Vec::new()).unwrap().kind,
            OpKind::CasRead
        );
        // One that tells the current revision (mast's 412 carries it) retries with it directly.
        let write = Op {
            kind: OpKind::CasWrite,
            key: 0,
        };
        assert_eq!(
            w.on_response(write, &response(412, Some(b"\"9\""))),
            Outcome::Conflict
        );
        out.clear();
        assert_eq!(
            w.next_request("h", &mut out).unwrap().kind,
            OpKind::CasWrite
        );
        assert!(String::from_utf8_lossy(&out).contains("If-Match: \"9\"\r\n"));
    }

    #[test]
    fn validation_rejects_bad_specs() {
        let bad_hot = KeyChoice::Set {
            keys: 5,
            hot_keys: 6,
            hot_fraction: 0.5,
        };
        assert!(spec(Mix::Get, bad_hot).validate().is_err());
        assert!(spec(Mix::Cas, KeyChoice::Distinct).validate().is_err());
        assert!(spec(Mix::Mixed { read_ratio: 1.5 }, KeyChoice::Distinct)
            .validate()
            .is_err());
        let mut s = spec(Mix::Put, KeyChoice::Distinct);
        s.key_prefix = "a/b".into();
        assert!(s.validate().is_err());
    }

    fn batch(kind: BatchKind, count: u64, check_order: bool) -> BatchWorkloadSpec {
        BatchWorkloadSpec {
            kind,
            count,
            check_order,
        }
    }

    fn json(status: u16, body: &'static str) -> Response<'static> {
        Response {
            status,
            etag: None,
            location: None,
            body: Cow::Borrowed(body.as_bytes()),
            close: false,
        }
    }

    #[test]
    fn batch_requests_are_rendered() {
        let mut out = Vec::new();
        let mut w = batch(BatchKind::Tso, 1000, false).build(conn(0, 1));
        let op = w.next_request("127.0.0.1:80", &mut out).unwrap();
        assert_eq!(op.kind, OpKind::Tso);
        assert_eq!(
            out,
            b"POST /tso?count=1000 HTTP/1.1\r\nHost: 127.0.0.1:80\r\nContent-Length: 0\r\n\r\n"
        );
        out.clear();
        let mut w = batch(BatchKind::Ids, 1, false).build(conn(0, 1));
        assert_eq!(w.next_request("h", &mut out).unwrap().kind, OpKind::Ids);
        assert_eq!(
            out,
            b"POST /ids?count=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
        );
        // Requests parse as HTTP/1.1 with an empty body.
        let mut headers = [httparse::EMPTY_HEADER; 4];
        let mut req = httparse::Request::new(&mut headers);
        assert_eq!(
            req.parse(&out).unwrap(),
            httparse::Status::Complete(out.len())
        );
        assert_eq!(req.path, Some("/ids?count=1"));
    }

    #[test]
    fn batch_replies_are_judged() {
        let op = Op {
            kind: OpKind::Tso,
            key: 0,
        };
        let mut w = batch(BatchKind::Tso, 3, false).build(conn(0, 1));
        let ok = json(200, r#"{"timestamp":446744073709551,"count":3}"#);
        assert_eq!(w.on_response(op, &ok), Outcome::Ok);
        // Field order and whitespace do not matter; extra fields are ignored.
        let ok2 = json(200, r#" { "count" : 3, "timestamp" : 5, "leader": 1 } "#);
        assert_eq!(w.on_response(op, &ok2), Outcome::Ok);
        let bad = |body| w_outcome(BatchKind::Tso, 3, json(200, body));
        assert_eq!(
            bad(r#"{"timestamp":5,"count":2}"#),
            Outcome::Error(ErrorKind::BadBody)
        );
        assert_eq!(
            bad(r#"{"id":5,"count":3}"#),
            Outcome::Error(ErrorKind::BadBody)
        );
        assert_eq!(
            bad(r#"{"timestamp":-5,"count":3}"#),
            Outcome::Error(ErrorKind::BadBody)
        );
        assert_eq!(bad("not json"), Outcome::Error(ErrorKind::BadBody));
        assert_eq!(bad(""), Outcome::Error(ErrorKind::BadBody));
        // Any status but 200 is an error.
        let st = |status| w_outcome(BatchKind::Ids, 1, json(status, r#"{"id":1,"count":1}"#));
        assert_eq!(st(200), Outcome::Ok);
        assert_eq!(st(201), Outcome::Error(ErrorKind::BadBody));
        assert_eq!(st(204), Outcome::Error(ErrorKind::BadBody));
        assert_eq!(st(400), Outcome::Error(ErrorKind::Status4xx));
        assert_eq!(st(503), Outcome::Error(ErrorKind::Unavailable));
        assert_eq!(st(500), Outcome::Error(ErrorKind::Status5xx));
        assert_eq!(st(307), Outcome::Redirect);
        // The ids dialect wants "id".
        assert_eq!(
            w_outcome(BatchKind::Ids, 1, json(200, r#"{"timestamp":1,"count":1}"#)),
            Outcome::Error(ErrorKind::BadBody)
        );
    }

    fn w_outcome(kind: BatchKind, count: u64, r: Response<'static>) -> Outcome {
        let op = Op {
            kind: kind.op_kind(),
            key: 0,
        };
        batch(kind, count, false)
            .build(conn(0, 1))
            .on_response(op, &r)
    }

    #[test]
    fn batch_order_check_catches_reissue() {
        let op = Op {
            kind: OpKind::Ids,
            key: 0,
        };
        let mut w = batch(BatchKind::Ids, 10, true).build(conn(0, 1));
        assert_eq!(
            w.on_response(op, &json(200, r#"{"id":1000,"count":10}"#)),
            Outcome::Ok
        );
        assert_eq!(
            w.on_response(op, &json(200, r#"{"id":1010,"count":10}"#)),
            Outcome::Ok
        );
        // Overlaps the previous batch.
        assert_eq!(
            w.on_response(op, &json(200, r#"{"id":1015,"count":10}"#)),
            Outcome::Error(ErrorKind::BadBody)
        );
        // Without the check (pipelining), the same replies pass.
        let mut w = batch(BatchKind::Ids, 10, false).build(conn(0, 1));
        assert_eq!(
            w.on_response(op, &json(200, r#"{"id":1010,"count":10}"#)),
            Outcome::Ok
        );
        assert_eq!(
            w.on_response(op, &json(200, r#"{"id":1000,"count":10}"#)),
            Outcome::Ok
        );
    }

    #[test]
    fn batch_counts_are_validated() {
        assert!(batch(BatchKind::Tso, 0, false).validate().is_err());
        assert!(batch(BatchKind::Tso, 1, false).validate().is_ok());
        assert!(batch(BatchKind::Tso, 262_144, false).validate().is_ok());
        assert!(batch(BatchKind::Tso, 262_145, false).validate().is_err());
        assert!(batch(BatchKind::Ids, 1_000_000, false).validate().is_ok());
        assert!(batch(BatchKind::Ids, 1_000_001, false).validate().is_err());
        assert_eq!(batch(BatchKind::Tso, 1000, false).items(7), 7000);
        assert_eq!(BatchKind::Tso.unit(), "timestamps");
    }
}
