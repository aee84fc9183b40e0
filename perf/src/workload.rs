//! Workloads: what each connection sends next and how it judges the answers.
//!
//! Every workload implements [`Workload`] (one instance per connection, owned by that
//! connection's thread) and is built by a [`WorkloadFactory`] shared by all threads. Later
//! issues add TSO, DDL, volume creation and node heartbeats as more implementations.

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
            OpKind::Put | OpKind::Request => api.put(host, &self.key_buf, &self.value, None, out),
        }
        Some(op)
    }

    fn on_response(&mut self, op: Op, response: &Response<'_>) -> Outcome {
        let api = &self.spec.api;
        match op.kind {
            OpKind::Get => api.get_reply(response).outcome,
            OpKind::Put | OpKind::Request => api.put_reply(response, false).outcome,
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
}
