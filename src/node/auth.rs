//! Admin authentication: who may call the HTTP API (`--auth-token-file`).
//!
//! The token file holds one `TOKEN ROLE` per line (`#` starts a comment, blank lines are
//! skipped); a role is `admin` (everything) or `read` (only what [`required`] calls a read).
//! When a file is configured every request needs `Authorization: Bearer TOKEN`, except
//! `/healthz` and, unless `--metrics-auth`, `/metrics`. The check is one [`Guard`] at the
//! router boundary (`Auth::guard`), so no handler has to remember it.
//!
//! Tokens are compared in constant time (every configured token is compared in full, whatever
//! matched earlier) and never logged. SIGHUP re-reads the file; a file that no longer parses
//! keeps the previous tokens (a typo must not lock every operator out).
//!
//! What counts as a read is decided by method and path alone ([`required`]):
//! - `GET`/`HEAD` are reads, except CubeFS dialect paths, whose `GET`s often change state
//!   (`/admin/createVol`): there only the paths in [`CUBEFS_READ_PATHS`] are reads, by `GET`
//!   or `POST`, and every other CubeFS path needs `admin`;
//! - other methods need `admin`, except Milvus's REST actions that only look
//!   (`/v2/vectordb/.../list|describe|has|get|get_stats|get_load_state`, and every
//!   `/v2/rootcoord/...`: lookup, component states, the DD channel and its watch);
//! - `POST /tso` and `POST /ids` need `admin`: they allocate (and persist a new bound).

use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use mast_http::{Guard, Method, Request, Response};

/// A token file larger than this is refused (it is read on every SIGHUP).
pub const TOKEN_FILE_BYTES_MAX: usize = 1024 * 1024;
/// Tokens shorter than this are refused: a short bearer token is a guessable password.
pub const TOKEN_BYTES_MIN: usize = 8;
/// Tokens longer than this are refused (they travel in a request header).
pub const TOKEN_BYTES_MAX: usize = 4096;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Admin,
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Open,
    Role(Role),
}

/// CubeFS master paths that only read, whichever method (CubeFS accepts `GET` and `POST` for
/// most of them). Every other CubeFS path needs `admin`.
pub const CUBEFS_READ_PATHS: &[&str] = &[
    "/admin/getCluster",
    "/admin/getIp",
    "/admin/getNodeInfo",
    "/admin/getVol",
    "/admin/getDiscardDp",
    "/admin/getMonitorPushAddr",
    "/admin/getUpgradeCompatibleSettings",
    "/admin/cluster/getAllDataNodes",
    "/admin/cluster/getAllMetaNodes",
    "/client/vol",
    "/client/volStat",
    "/client/partitions",
    "/client/metaPartitions",
    "/cluster/stat",
    "/dataNode/get",
    "/dataNode/queryDecommissionProgress",
    "/metaNode/get",
    "/dataPartition/get",
    "/dataPartition/diagnose",
    "/metaPartition/get",
    "/metaPartition/diagnose",
    "/get/raftStatus",
    "/multiVer/getAll",
    "/nodeSet/get",
    "/nodeSet/list",
    "/topo/get",
    "/user/akInfo",
    "/user/info",
    "/user/list",
    "/vol/list",
    "/zone/list",
];

/// First path segments of the CubeFS master's dialect.
const CUBEFS_PREFIXES: &[&str] = &[
    "/admin/",
    "/client/",
    "/cluster/",
    "/dataNode/",
    "/metaNode/",
    "/dataPartition/",
    "/metaPartition/",
    "/dataReplica/",
    "/metaReplica/",
    "/raftNode/",
    "/nodeSet/",
    "/zone/",
    "/vol/",
    "/user/",
    "/topo/",
    "/get/",
    "/multiVer/",
    "/threshold/",
    "/master/",
];

/// Milvus REST v2 actions (the last path segment) that only read.
const MILVUS_READ_ACTIONS: &[&str] = &[
    "list",
    "describe",
    "has",
    "get",
    "get_stats",
    "get_load_state",
];

/// What `method path` needs; see the module comment for the rules.
pub fn required(method: Method, path: &str, metrics_auth: bool) -> Need {
    if path == "/healthz" {
        return Need::Open;
    }
    if path == "/metrics" && !metrics_auth {
        return Need::Open;
    }
    // A backup is every key of every table at once: an operator's act, not a read.
    if path == "/backup" {
        return Need::Role(Role::Admin);
    }
    let read = Need::Role(Role::Read);
    let admin = Need::Role(Role::Admin);
    if CUBEFS_PREFIXES.iter().any(|p| path.starts_with(p)) {
        return if CUBEFS_READ_PATHS.contains(&path) {
            read
        } else {
            admin
        };
    }
    if matches!(method, Method::GET | Method::HEAD) {
        return read;
    }
    if method == Method::POST {
        // lookup, component_states, dd/channel and dd/watch all only look (a watcher's
        // time ticks are bookkeeping of the stream, not a change a reader asked for).
        if path.starts_with("/v2/rootcoord/") {
            return read;
        }
        if let Some(rest) = path.strip_prefix("/v2/vectordb/") {
            let action = rest.rsplit('/').next().unwrap_or("");
            if MILVUS_READ_ACTIONS.contains(&action) {
                return read;
            }
        }
    }
    admin
}

/// One configured token.
#[derive(Clone)]
struct Token {
    secret: Box<[u8]>,
    role: Role,
}

/// Parses a token file's text. Errors name the line, never its token.
pub fn parse_tokens(text: &str) -> Result<Vec<(Vec<u8>, Role)>, String> {
    let mut out: Vec<(Vec<u8>, Role)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(token), Some(role), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(format!("line {n}: expected `TOKEN ROLE`"));
        };
        let role = match role {
            "admin" => Role::Admin,
            "read" => Role::Read,
            other => return Err(format!("line {n}: role {other:?} is not admin or read")),
        };
        if token.len() < TOKEN_BYTES_MIN || token.len() > TOKEN_BYTES_MAX {
            return Err(format!(
                "line {n}: a token must have {TOKEN_BYTES_MIN}..={TOKEN_BYTES_MAX} bytes"
            ));
        }
        if out.iter().any(|(t, _)| t.as_slice() == token.as_bytes()) {
            return Err(format!("line {n}: the token of an earlier line again"));
        }
        out.push((token.as_bytes().to_vec(), role));
    }
    if out.is_empty() {
        return Err("no tokens (every request would be refused)".into());
    }
    Ok(out)
}

/// Reads and parses a token file.
pub fn load_tokens(path: &Path) -> Result<Vec<(Vec<u8>, Role)>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() > TOKEN_FILE_BYTES_MAX {
        return Err(format!(
            "{}: over {TOKEN_FILE_BYTES_MAX} bytes",
            path.display()
        ));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| format!("{}: not UTF-8", path.display()))?;
    parse_tokens(text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Equality whose time depends on the lengths only, not on where the bytes differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(std::hint::black_box(x ^ y));
    }
    std::hint::black_box(diff) == 0
}

/// The node's authentication state, shared by every shard.
pub struct Auth {
    path: PathBuf,
    metrics_auth: bool,
    tokens: RwLock<Arc<[Token]>>,
    unauthorized: AtomicU64,
    forbidden: AtomicU64,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the tokens.
        f.debug_struct("Auth")
            .field("path", &self.path)
            .field("metrics_auth", &self.metrics_auth)
            .finish_non_exhaustive()
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token, or one that is not configured: 401.
    Unauthorized,
    /// A token whose role is too weak: 403.
    Forbidden,
}

impl Auth {
    /// Loads `path`; an unreadable or invalid file stops the start.
    pub fn load(path: &Path, metrics_auth: bool) -> Result<Auth, String> {
        let tokens = to_tokens(load_tokens(path)?);
        Ok(Auth {
            path: path.to_path_buf(),
            metrics_auth,
            tokens: RwLock::new(tokens),
            unauthorized: AtomicU64::new(0),
            forbidden: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        })
    }

    /// Re-reads the file (SIGHUP). On failure the previous tokens stay. Returns how many
    /// tokens are now configured.
    pub fn reload(&self) -> Result<usize, String> {
        match load_tokens(&self.path) {
            Ok(t) => {
                let t = to_tokens(t);
                let n = t.len();
                match self.tokens.write() {
                    Ok(mut g) => *g = t,
                    Err(poisoned) => *poisoned.into_inner() = t,
                }
                self.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(n)
            }
            Err(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    fn current(&self) -> Arc<[Token]> {
        match self.tokens.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The strongest role among the configured tokens equal to `presented`. Every token is
    /// compared in full so the time does not tell which one (or how much of one) matched.
    fn role_of(&self, presented: &[u8]) -> Option<Role> {
        let mut best: Option<Role> = None;
        for t in self.current().iter() {
            if ct_eq(&t.secret, presented) {
                best = best.max(Some(t.role));
            }
        }
        best
    }

    /// Decides one request: None lets it through.
    pub fn decide(
        &self,
        method: Method,
        path: &str,
        authorization: Option<&[u8]>,
    ) -> Option<Refusal> {
        let Need::Role(need) = required(method, path, self.metrics_auth) else {
            return None;
        };
        let role = authorization.and_then(bearer).and_then(|t| self.role_of(t));
        match role {
            None => Some(Refusal::Unauthorized),
            Some(r) if r < need => Some(Refusal::Forbidden),
            Some(_) => None,
        }
    }

    /// The router guard: refusals answer in the API error format and are counted.
    pub fn guard(self: &Arc<Self>) -> Guard {
        let me = self.clone();
        Rc::new(move |req: &Request| {
            let refusal = me.decide(req.method(), req.path(), req.header("authorization"))?;
            Some(match refusal {
                Refusal::Unauthorized => {
                    me.unauthorized.fetch_add(1, Ordering::Relaxed);
                    Response::error(
                        401,
                        "unauthorized",
                        "this request needs `Authorization: Bearer TOKEN` with a configured token",
                    )
                    .with_header("www-authenticate", "Bearer realm=\"mast\"")
                }
                Refusal::Forbidden => {
                    me.forbidden.fetch_add(1, Ordering::Relaxed);
                    Response::error(
                        403,
                        "forbidden",
                        "this token may only read; this request needs an admin token",
                    )
                }
            })
        })
    }

    /// Prometheus lines for `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP mast_auth_refused_total Requests refused by admin authentication.\n\
             # TYPE mast_auth_refused_total counter\n\
             mast_auth_refused_total{{reason=\"unauthorized\"}} {}\n\
             mast_auth_refused_total{{reason=\"forbidden\"}} {}\n\
             # HELP mast_auth_reloads_total Token file re-reads (SIGHUP), by result.\n\
             # TYPE mast_auth_reloads_total counter\n\
             mast_auth_reloads_total{{result=\"ok\"}} {}\n\
             mast_auth_reloads_total{{result=\"failed\"}} {}",
            self.unauthorized.load(Ordering::Relaxed),
            self.forbidden.load(Ordering::Relaxed),
            self.reloads.load(Ordering::Relaxed),
            self.reload_failures.load(Ordering::Relaxed),
        );
    }
}

fn to_tokens(parsed: Vec<(Vec<u8>, Role)>) -> Arc<[Token]> {
    parsed
        .into_iter()
        .map(|(s, role)| Token {
            secret: s.into_boxed_slice(),
            role,
        })
        .collect()
}

/// The token of an `Authorization: Bearer TOKEN` header (scheme case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at(value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// The first admin token of `path`, for this node's own calls to another member (a joining
/// node's `GET`/`POST /members`), or None without a file.
pub fn own_admin_token(path: Option<&Path>) -> Result<Option<String>, String> {
    let Some(path) = path else { return Ok(None) };
    let tokens = load_tokens(path)?;
    tokens
        .into_iter()
        .find(|(_, r)| *r == Role::Admin)
        .map(|(t, _)| String::from_utf8(t).map_err(|_| "token is not UTF-8".to_string()))
        .transpose()?
        .ok_or_else(|| format!("{}: no admin token to join with", path.display()))
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(text: &str, metrics_auth: bool) -> (tempfile::TempDir, Arc<Auth>) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens");
        std::fs::write(&p, text).unwrap();
        let a = Arc::new(Auth::load(&p, metrics_auth).unwrap());
        (dir, a)
    }

    #[test]
    fn file_format_errors_name_the_line_not_the_token() {
        let e = parse_tokens("adminadmin admin\nsecretvalue owner\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        assert!(!e.contains("secretvalue"), "{e}");
        assert!(parse_tokens("short admin").is_err());
        assert!(parse_tokens("# only a comment\n\n").is_err());
        assert!(parse_tokens("abcdefgh admin\nabcdefgh read").is_err());
        assert!(parse_tokens("abcdefgh admin extra").is_err());
        let ok =
            parse_tokens("# ops\nabcdefgh admin  # rotated 2026-12\nroot:Milvus read\n").unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1], (b"root:Milvus".to_vec(), Role::Read));
    }

    #[test]
    fn roles_and_refusals() {
        let (_d, a) = auth("adminadmin admin\nreadread read\n", false);
        let hdr = |t: &str| format!("Bearer {t}").into_bytes();
        let put = |h: Option<&[u8]>| a.decide(Method::PUT, "/kv/a", h);
        assert_eq!(put(None), Some(Refusal::Unauthorized));
        assert_eq!(put(Some(&hdr("nope-nope"))), Some(Refusal::Unauthorized));
        assert_eq!(put(Some(&hdr("adminadmi"))), Some(Refusal::Unauthorized));
        assert_eq!(put(Some(b"Basic adminadmin")), Some(Refusal::Unauthorized));
        assert_eq!(put(Some(&hdr("readread"))), Some(Refusal::Forbidden));
        assert_eq!(put(Some(&hdr("adminadmin"))), None);
        assert_eq!(put(Some(b"bearer   adminadmin  ")), None);
        let get = |h: Option<&[u8]>| a.decide(Method::GET, "/kv/a", h);
        assert_eq!(get(Some(&hdr("readread"))), None);
        assert_eq!(get(None), Some(Refusal::Unauthorized));
        assert_eq!(a.decide(Method::GET, "/healthz", None), None);
        assert_eq!(a.decide(Method::GET, "/metrics", None), None);
        let (_d, closed) = auth("adminadmin admin\n", true);
        assert_eq!(
            closed.decide(Method::GET, "/metrics", None),
            Some(Refusal::Unauthorized)
        );
    }

    #[test]
    fn what_is_a_read() {
        let r = |m, p| required(m, p, false);
        let read = Need::Role(Role::Read);
        let admin = Need::Role(Role::Admin);
        assert_eq!(r(Method::GET, "/kv/x"), read);
        assert_eq!(r(Method::HEAD, "/members"), read);
        assert_eq!(r(Method::PUT, "/kv/x"), admin);
        assert_eq!(r(Method::DELETE, "/members/3"), admin);
        assert_eq!(r(Method::POST, "/leader/transfer"), admin);
        assert_eq!(r(Method::POST, "/tso"), admin);
        assert_eq!(r(Method::GET, "/admin/createVol"), admin);
        assert_eq!(r(Method::GET, "/vol/delete"), admin);
        assert_eq!(r(Method::GET, "/admin/getCluster"), read);
        assert_eq!(r(Method::POST, "/admin/getCluster"), read);
        assert_eq!(r(Method::GET, "/admin/somethingNew"), admin);
        assert_eq!(r(Method::POST, "/v2/vectordb/collections/describe"), read);
        assert_eq!(r(Method::POST, "/v2/vectordb/collections/list"), read);
        assert_eq!(r(Method::POST, "/v2/vectordb/collections/create"), admin);
        assert_eq!(r(Method::POST, "/v2/vectordb/databases/drop"), admin);
        assert_eq!(r(Method::POST, "/v2/rootcoord/lookup"), read);
        assert_eq!(r(Method::POST, "/v2/rootcoord/dd/watch"), read);
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(!ct_eq(b"", b"a"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn reload_swaps_and_a_bad_file_keeps_the_old_tokens() {
        let (d, a) = auth("oldtoken1 admin\n", false);
        let p = d.path().join("tokens");
        let h = |t: &str| format!("Bearer {t}").into_bytes();
        std::fs::write(&p, "newtoken1 admin\n").unwrap();
        assert_eq!(a.reload(), Ok(1));
        assert_eq!(
            a.decide(Method::PUT, "/kv/a", Some(&h("oldtoken1"))),
            Some(Refusal::Unauthorized)
        );
        assert_eq!(a.decide(Method::PUT, "/kv/a", Some(&h("newtoken1"))), None);
        std::fs::write(&p, "broken\n").unwrap();
        assert!(a.reload().is_err());
        assert_eq!(a.decide(Method::PUT, "/kv/a", Some(&h("newtoken1"))), None);
    }
}
