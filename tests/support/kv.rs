//! KV helpers over the HTTP client: writes and reads that retry through leader changes, and a
//! pool of writer threads that keeps a ledger of what was acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::http::{HttpClient, HttpError, Response};
use super::kv_path;

/// A key's value and revision as the server reported them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub revision: u64,
}

/// What a single write attempt came to.
#[derive(Debug)]
pub enum WriteResult {
    /// 204 with this revision.
    Acked(u64),
    /// Definitely not applied (503, connect refused, request not fully sent, 4xx).
    Refused(String),
    /// May or may not have been applied (504, timeout, connection lost after sending).
    Unknown(String),
}

/// One PUT, classified.
pub fn put_once(client: &mut HttpClient, key: &str, value: &[u8]) -> WriteResult {
    classify_write(client.put(&kv_path(key), value), "PUT", key)
}

fn classify_write(r: Result<Response, HttpError>, method: &str, key: &str) -> WriteResult {
    match r {
        Ok(resp) if resp.status == 204 => match resp.etag_revision() {
            Some(rev) => WriteResult::Acked(rev),
            None => WriteResult::Unknown(format!(
                "{method} {key:?}: 204 without a valid ETag: {resp}"
            )),
        },
        Ok(resp) if resp.status == 503 || (400..500).contains(&resp.status) => {
            WriteResult::Refused(format!("{method} {key:?}: {resp}"))
        }
        Ok(resp) => WriteResult::Unknown(format!("{method} {key:?}: {resp}")),
        Err(e) if e.may_have_been_applied() => {
            WriteResult::Unknown(format!("{method} {key:?}: {e}"))
        }
        Err(e) => WriteResult::Refused(format!("{method} {key:?}: {e}")),
    }
}

/// PUTs until acknowledged (retrying 503s, 504s and connection errors: rewriting the same value
/// is harmless for these tests); returns the revision of the acknowledged write.
pub fn put_retrying(
    client: &mut HttpClient,
    key: &str,
    value: &[u8],
    timeout: Duration,
) -> Result<u64, String> {
    super::retry(timeout, || match put_once(client, key, value) {
        WriteResult::Acked(rev) => Ok(rev),
        WriteResult::Refused(e) | WriteResult::Unknown(e) => {
            Err(format!("{e} (via {})", client.addr()))
        }
    })
}

/// One GET (linearizable, or local with `stale`): `Ok(None)` for 404, `Err` for anything but
/// 200/404.
pub fn get_once(
    client: &mut HttpClient,
    key: &str,
    stale: bool,
) -> Result<Option<Versioned>, String> {
    let path = if stale {
        format!("{}?stale=true", kv_path(key))
    } else {
        kv_path(key)
    };
    let resp = client
        .get(&path)
        .map_err(|e| format!("GET {path} via {}: {e}", client.addr()))?;
    match resp.status {
        200 => {
            let revision = resp.etag_revision().ok_or_else(|| {
                format!(
                    "GET {path} via {}: 200 without a valid ETag: {resp}",
                    client.addr()
                )
            })?;
            Ok(Some(Versioned {
                value: resp.body,
                revision,
            }))
        }
        404 => Ok(None),
        _ => Err(format!("GET {path} via {}: {resp}", client.addr())),
    }
}

/// GETs until the server answers 200 or 404.
pub fn get_retrying(
    client: &mut HttpClient,
    key: &str,
    stale: bool,
    timeout: Duration,
) -> Result<Option<Versioned>, String> {
    super::retry(timeout, || get_once(client, key, stale))
}

/// Per key: the last acknowledged write and the writes after it whose outcome is unknown.
#[derive(Debug, Clone, Default)]
pub struct KeyLedger {
    pub acked: Option<Versioned>,
    /// Values written after `acked` with no definite answer.
    pub uncertain: Vec<Vec<u8>>,
}

impl KeyLedger {
    /// Checks what a read returned against the ledger: the acknowledged write (same value and
    /// revision), or one of the uncertain ones (with a later revision), or absent only when
    /// nothing was acknowledged.
    pub fn verify(&self, key: &str, got: &Option<Versioned>) -> Result<(), String> {
        match (got, &self.acked) {
            (Some(g), Some(a)) if g == a => Ok(()),
            (Some(g), acked) if self.uncertain.contains(&g.value) => match acked {
                Some(a) if g.revision <= a.revision => Err(format!(
                    "key {key:?}: value of an unknown-outcome write {:?} has revision {} <= the acknowledged revision {}",
                    String::from_utf8_lossy(&g.value), g.revision, a.revision
                )),
                _ => Ok(()),
            },
            (None, None) => Ok(()),
            _ => Err(format!(
                "key {key:?}: read {} but the acknowledged write is {} (unknown-outcome values after it: {:?})",
                show(got),
                show(&self.acked),
                self.uncertain.iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect::<Vec<_>>()
            )),
        }
    }
}

fn show(v: &Option<Versioned>) -> String {
    match v {
        Some(v) => format!("{:?} rev {}", String::from_utf8_lossy(&v.value), v.revision),
        None => "absent".into(),
    }
}

/// How writers pick keys.
#[derive(Debug, Clone, Copy)]
pub enum KeyPattern {
    /// A new key for every write: an acknowledged key must exist with exactly that write.
    Unique,
    /// Cycle over this many keys per writer, overwriting. The ledger clears a key's uncertain
    /// writes when a later write is acknowledged, which is right only when an unanswered
    /// request cannot be applied after a later one (one node that was killed in between).
    Cycle(usize),
}

/// Counts of what writers heard.
#[derive(Debug, Clone, Default)]
pub struct WriterStats {
    pub acked: usize,
    pub refused: usize,
    pub unknown: usize,
    /// A few sample error messages (bounded).
    pub samples: Vec<String>,
}

/// Sample errors kept per pool.
const SAMPLES_MAX: usize = 12;
/// Writes per writer thread at most, so a pool always ends.
const WRITES_PER_WRITER_MAX: usize = 1_000_000;

/// Writer threads that PUT through a changeable set of nodes until stopped.
pub struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    targets: Arc<Mutex<Vec<SocketAddr>>>,
    threads: Vec<thread::JoinHandle<(BTreeMap<String, KeyLedger>, WriterStats)>>,
}

impl Writers {
    /// Starts `count` writers over `targets`, keys prefixed with `prefix`.
    pub fn start(
        count: usize,
        targets: Vec<SocketAddr>,
        prefix: &str,
        pattern: KeyPattern,
        seed: u64,
    ) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let targets = Arc::new(Mutex::new(targets));
        let threads = (0..count)
            .map(|w| {
                let (stop, acked, targets) = (stop.clone(), acked.clone(), targets.clone());
                let prefix = prefix.to_string();
                thread::spawn(move || {
                    writer_loop(w, &prefix, pattern, seed, &stop, &acked, &targets)
                })
            })
            .collect();
        Writers {
            stop,
            acked,
            targets,
            threads,
        }
    }

    /// Acknowledged writes so far.
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `n` more writes than now are acknowledged.
    pub fn wait_for_more_acks(&self, n: usize, timeout: Duration) -> Result<(), String> {
        let target = self.acked() + n;
        let deadline = Instant::now() + timeout;
        while self.acked() < target {
            if Instant::now() >= deadline {
                return Err(format!(
                    "writers reached {} acknowledged writes, not {target}, within {timeout:?}",
                    self.acked()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Replaces the nodes writers send to.
    pub fn set_targets(&self, targets: Vec<SocketAddr>) {
        if let Ok(mut t) = self.targets.lock() {
            *t = targets;
        }
    }

    /// Stops the writers and merges their ledgers.
    pub fn finish(mut self) -> (BTreeMap<String, KeyLedger>, WriterStats) {
        self.stop.store(true, Ordering::Relaxed);
        let mut ledger = BTreeMap::new();
        let mut stats = WriterStats::default();
        for t in self.threads.drain(..) {
            match t.join() {
                Ok((l, s)) => {
                    ledger.extend(l);
                    stats.acked += s.acked;
                    stats.refused += s.refused;
                    stats.unknown += s.unknown;
                    for sample in s.samples {
                        if stats.samples.len() < SAMPLES_MAX {
                            stats.samples.push(sample);
                        }
                    }
                }
                Err(_) => stats.samples.push("a writer thread panicked".into()),
            }
        }
        (ledger, stats)
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn writer_loop(
    w: usize,
    prefix: &str,
    pattern: KeyPattern,
    seed: u64,
    stop: &AtomicBool,
    acked: &AtomicUsize,
    targets: &Mutex<Vec<SocketAddr>>,
) -> (BTreeMap<String, KeyLedger>, WriterStats) {
    let mut rng = StdRng::seed_from_u64(seed ^ (w as u64 + 1).wrapping_mul(0x2545_F491));
    let mut clients: HashMap<SocketAddr, HttpClient> = HashMap::new();
    let mut ledger: BTreeMap<String, KeyLedger> = BTreeMap::new();
    let mut stats = WriterStats::default();
    for n in 0..WRITES_PER_WRITER_MAX {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let addr = {
            let t = match targets.lock() {
                Ok(t) => t,
                Err(_) => break,
            };
            if t.is_empty() {
                break;
            }
            t[rng.gen_range(0..t.len())]
        };
        let key = match pattern {
            KeyPattern::Unique => format!("{prefix}{w}/{n:08}"),
            KeyPattern::Cycle(k) => format!("{prefix}{w}/{:04}", n % k.max(1)),
        };
        // Unique across pools too (pools get different seeds), as the ledger needs.
        let value = format!("w{w}-n{n}-s{seed:x}").into_bytes();
        // 8 s: above the server's request timeout, so a stuck write comes back as a 504.
        let client = clients
            .entry(addr)
            .or_insert_with(|| HttpClient::new(addr, Duration::from_secs(8)));
        let entry = ledger.entry(key.clone()).or_default();
        match put_once(client, &key, &value) {
            WriteResult::Acked(revision) => {
                entry.acked = Some(Versioned { value, revision });
                entry.uncertain.clear();
                stats.acked += 1;
                acked.fetch_add(1, Ordering::Relaxed);
            }
            WriteResult::Refused(e) => {
                stats.refused += 1;
                if stats.samples.len() < SAMPLES_MAX {
                    stats.samples.push(format!("refused: {e}"));
                }
                // Nothing answers (killed node, no leader yet): do not spin.
                thread::sleep(Duration::from_millis(20));
            }
            WriteResult::Unknown(e) => {
                entry.uncertain.push(value);
                stats.unknown += 1;
                if stats.samples.len() < SAMPLES_MAX {
                    stats.samples.push(format!("unknown: {e}"));
                }
            }
        }
    }
    (ledger, stats)
}

/// Reads every key of the ledger through `client` and checks it; returns every mismatch.
pub fn verify_ledger(
    client: &mut HttpClient,
    ledger: &BTreeMap<String, KeyLedger>,
    stale: bool,
    timeout_per_key: Duration,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, entry) in ledger {
        match get_retrying(client, key, stale, timeout_per_key) {
            Ok(got) => {
                if let Err(e) = entry.verify(key, &got) {
                    problems.push(e);
                }
            }
            Err(e) => problems.push(e),
        }
        if problems.len() >= 20 {
            problems.push("... stopped after 20 problems".into());
            break;
        }
    }
    problems
}
