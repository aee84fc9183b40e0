//! Command line and config file for `mast server`.
//!
//! Precedence: a flag on the command line wins over the same key in `--config FILE`, which
//! wins over the built-in default. Every value is validated before anything starts, and a bad
//! value stops the start with a message naming the key and the problem.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

/// Shards above this are refused: each one is a pinned thread plus a peer port.
pub const SHARDS_MAX: usize = 256;

#[derive(Debug, Parser)]
#[command(
    name = "mast",
    version,
    about = "Metadata master of a distributed storage cluster"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a mast server (a single-node cluster unless --members names more).
    Server(ServerArgs),
    /// Run storage node agents (CubeFS data/meta nodes) that answer a master's admin tasks.
    Node(crate::agent::NodeArgs),
    /// Operate a running cluster: status, members, leadership, keys (etcdctl's habits).
    Ctl(crate::ctl::CtlArgs),
    /// Seed a new node's data directory from a backup (`mast ctl backup`).
    Restore(crate::ctl::backup::RestoreArgs),
}

/// Flags of `mast server`. Every field is optional so that a missing flag can fall back to the
/// config file; defaults are applied in [`ServerConfig::resolve`].
#[derive(Debug, Default, Args)]
pub struct ServerArgs {
    /// This node's id (a positive integer, unique in the cluster). Default 1.
    #[arg(long)]
    pub id: Option<u64>,
    /// Directory for logs, snapshots and hard state. Default ./mast-data.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Admin/API HTTP address shared by all shards (SO_REUSEPORT). Default 127.0.0.1:17010.
    #[arg(long)]
    pub http_addr: Option<String>,
    /// Peer address of shard 0; shard i listens on port + i. Default 127.0.0.1:17110.
    #[arg(long)]
    pub peer_addr: Option<String>,
    /// Cluster members: "1=PEER/HTTP,2=PEER/HTTP,...". Without it, a single-node cluster.
    #[arg(long)]
    pub members: Option<String>,
    /// Number of shards (pinned threads). Default: the CPUs this process may run on.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Join an existing cluster through this member's HTTP address (instead of --members).
    #[arg(long)]
    pub join: Option<String>,
    /// Answer 307 with the leader's address instead of serving through the leader.
    #[arg(long)]
    pub redirect: bool,
    /// Serve reads from local state without a ReadIndex round (may be stale).
    #[arg(long)]
    pub follower_read: bool,
    /// Applied entries between state machine snapshots (and log compactions), at least the
    /// number of keys at the last snapshot, so a large state is not re-serialized too often.
    /// Default 50000.
    #[arg(long)]
    pub snapshot_every_entries: Option<u64>,
    /// CubeFS: how often, and how long after its creation, a volume short of 10 read-write
    /// data partitions is topped up to 10; 0 turns the growth off. Default 60000.
    #[arg(long)]
    pub cubefs_dp_growth_interval_ms: Option<u64>,
    /// How the raft log writes: "direct" (O_DIRECT | O_DSYNC: one write per batch, durable
    /// when it returns), "buffered" (page cache write, then fdatasync), or "auto" (direct
    /// where the data directory's filesystem allows it). Default auto.
    #[arg(long)]
    pub log_io: Option<String>,
    /// Milvus DD events each shard keeps for resuming watchers (oldest dropped first).
    /// Default 4096, at most 1000000.
    #[arg(long)]
    pub milvus_dd_history_entries_max: Option<usize>,
    /// Milvus DD events older than this (ms, against the newest DDL or tick) are dropped.
    /// Default 86400000 (a day).
    #[arg(long)]
    pub milvus_dd_history_ms: Option<u64>,
    /// A `milvus.yaml` whose keys the group 0 leader replicates as Milvus's system
    /// configuration (SysConfig routes; mast's Milvus defaults read them).
    #[arg(long)]
    pub milvus_config: Option<PathBuf>,
    /// File of `TOKEN ROLE` lines (role admin or read): every request then needs
    /// `Authorization: Bearer TOKEN` (except /healthz and /metrics). Re-read on SIGHUP.
    #[arg(long)]
    pub auth_token_file: Option<PathBuf>,
    /// With --auth-token-file, /metrics needs a token too (any role).
    #[arg(long)]
    pub metrics_auth: bool,
    /// TOML file with the same keys as the flags (snake_case: data_dir, http_addr, ...).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// The config file: the same keys as the flags. Unknown keys are an error so that a typo
/// does not silently fall back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub id: Option<u64>,
    pub data_dir: Option<PathBuf>,
    pub http_addr: Option<String>,
    pub peer_addr: Option<String>,
    pub members: Option<String>,
    pub shards: Option<usize>,
    pub join: Option<String>,
    pub redirect: Option<bool>,
    pub follower_read: Option<bool>,
    pub snapshot_every_entries: Option<u64>,
    pub log_io: Option<String>,
    pub cubefs_dp_growth_interval_ms: Option<u64>,
    pub milvus_dd_history_entries_max: Option<usize>,
    pub milvus_dd_history_ms: Option<u64>,
    pub milvus_config: Option<PathBuf>,
    pub auth_token_file: Option<PathBuf>,
    pub metrics_auth: Option<bool>,
}

/// How the raft log gets entries onto the disk; both are durable before acknowledging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogIo {
    /// Direct where the filesystem supports O_DIRECT, else buffered.
    Auto,
    /// O_DIRECT | O_DSYNC: one write per batch, no page cache, no separate fdatasync.
    Direct,
    /// Through the page cache, then one fdatasync per batch.
    Buffered,
}

impl LogIo {
    fn parse(s: &str) -> Result<Self, ConfigError> {
        match s.trim() {
            "auto" => Ok(LogIo::Auto),
            "direct" => Ok(LogIo::Direct),
            "buffered" => Ok(LogIo::Buffered),
            other => Err(err(
                "log_io",
                format!("{other:?} is not one of auto, direct, buffered"),
            )),
        }
    }
}

/// One member of the cluster as named by `--members`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// Peer address of the member's shard 0 (shard i is at port + i).
    pub peer_addr: SocketAddr,
    pub http_addr: SocketAddr,
}

/// The validated configuration a server runs with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub id: u64,
    pub data_dir: PathBuf,
    pub http_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub members: Vec<Member>,
    pub shards: usize,
    /// HTTP address of a member to join through; `members` is then this node alone.
    pub join: Option<SocketAddr>,
    pub redirect: bool,
    pub follower_read: bool,
    pub snapshot_every_entries: u64,
    pub log_io: LogIo,
    pub cubefs_dp_growth_interval_ms: u64,
    /// Bounds of each shard's Milvus DD history.
    pub milvus_dd_history: crate::meta::milvus::history::HistoryLimits,
    /// Normalised pairs of `--milvus-config` (`crate::milvus::sysconfig`).
    pub milvus_config: Option<std::collections::BTreeMap<String, String>>,
    /// Admin authentication's token file (`crate::node::auth`); None: no authentication.
    pub auth_token_file: Option<PathBuf>,
    pub metrics_auth: bool,
}

/// A configuration problem, naming the key that is wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub key: &'static str,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.key, self.problem)
    }
}

impl std::error::Error for ConfigError {}

fn err(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key,
        problem: problem.into(),
    }
}

fn parse_addr(key: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.trim().parse().map_err(|_| {
        err(
            key,
            format!("{s:?} is not an IP:port address (e.g. 127.0.0.1:17010)"),
        )
    })
}

/// Parses `"1=PEER/HTTP,2=PEER/HTTP"`.
pub fn parse_members(s: &str) -> Result<Vec<Member>, ConfigError> {
    let mut members: Vec<Member> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addrs) = part
            .split_once('=')
            .ok_or_else(|| err("members", format!("{part:?} is not ID=PEER_ADDR/HTTP_ADDR")))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| err("members", format!("{id:?} in {part:?} is not a node id")))?;
        if id == 0 {
            return Err(err("members", "node id 0 is reserved (ids start at 1)"));
        }
        let (peer, http) = addrs
            .split_once('/')
            .ok_or_else(|| err("members", format!("{part:?} is not ID=PEER_ADDR/HTTP_ADDR")))?;
        let member = Member {
            id,
            peer_addr: parse_addr("members", peer)?,
            http_addr: parse_addr("members", http)?,
        };
        if members.iter().any(|m| m.id == id) {
            return Err(err("members", format!("node id {id} appears twice")));
        }
        members.push(member);
    }
    if members.is_empty() {
        return Err(err("members", "no members given"));
    }
    Ok(members)
}

/// The CPUs this process may run on, in ascending order.
pub fn allowed_cpus() -> Vec<usize> {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1))
            .collect(),
    }
}

impl ServerConfig {
    /// Merges flags over the config file over defaults and validates the result.
    pub fn resolve(args: ServerArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let id = args.id.or(file.id).unwrap_or(1);
        if id == 0 {
            return Err(err("id", "node id 0 is reserved (ids start at 1)"));
        }
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./mast-data"));
        if data_dir.as_os_str().is_empty() {
            return Err(err("data_dir", "must not be empty"));
        }
        let http_addr = parse_addr(
            "http_addr",
            args.http_addr
                .or(file.http_addr)
                .as_deref()
                .unwrap_or("127.0.0.1:17010"),
        )?;
        let peer_addr = parse_addr(
            "peer_addr",
            args.peer_addr
                .or(file.peer_addr)
                .as_deref()
                .unwrap_or("127.0.0.1:17110"),
        )?;
        let shards = match args.shards.or(file.shards) {
            Some(n) => n,
            None => allowed_cpus().len().max(1),
        };
        if shards == 0 || shards > SHARDS_MAX {
            return Err(err(
                "shards",
                format!("{shards} is outside 1..={SHARDS_MAX}"),
            ));
        }
        if peer_addr.port() as usize + shards - 1 > u16::MAX as usize {
            return Err(err(
                "peer_addr",
                format!(
                    "port {} + {shards} shards runs past port 65535",
                    peer_addr.port()
                ),
            ));
        }
        let join = match args.join.or(file.join) {
            Some(j) => Some(parse_addr("join", &j)?),
            None => None,
        };
        let snapshot_every_entries = args
            .snapshot_every_entries
            .or(file.snapshot_every_entries)
            .unwrap_or(50_000);
        if snapshot_every_entries == 0 {
            return Err(err("snapshot_every_entries", "must be at least 1"));
        }
        let cubefs_dp_growth_interval_ms = args
            .cubefs_dp_growth_interval_ms
            .or(file.cubefs_dp_growth_interval_ms)
            .unwrap_or(60_000);
        let milvus_dd_history = {
            use crate::meta::milvus::history::*;
            let entries_max = args
                .milvus_dd_history_entries_max
                .or(file.milvus_dd_history_entries_max)
                .unwrap_or(DD_HISTORY_ENTRIES_MAX_DEFAULT);
            if entries_max == 0 || entries_max > DD_HISTORY_ENTRIES_LIMIT {
                return Err(err(
                    "milvus_dd_history_entries_max",
                    format!("must be between 1 and {DD_HISTORY_ENTRIES_LIMIT}"),
                ));
            }
            let ms = args
                .milvus_dd_history_ms
                .or(file.milvus_dd_history_ms)
                .unwrap_or(DD_HISTORY_MS_DEFAULT);
            if ms == 0 {
                return Err(err("milvus_dd_history_ms", "must be at least 1"));
            }
            HistoryLimits { entries_max, ms }
        };
        let log_io = match args.log_io.or(file.log_io) {
            Some(s) => LogIo::parse(&s)?,
            None => LogIo::Auto,
        };
        let redirect = args.redirect || file.redirect.unwrap_or(false);
        let follower_read = args.follower_read || file.follower_read.unwrap_or(false);
        let auth_token_file = args.auth_token_file.or(file.auth_token_file);
        let milvus_config = match args.milvus_config.or(file.milvus_config) {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    err(
                        "milvus_config",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let entries = crate::milvus::sysconfig::parse(&text)
                    .map_err(|e| err("milvus_config", format!("{}: {e}", path.display())))?;
                Some(entries)
            }
        };
        let metrics_auth = args.metrics_auth || file.metrics_auth.unwrap_or(false);
        if metrics_auth && auth_token_file.is_none() {
            return Err(err(
                "metrics_auth",
                "needs auth_token_file (there are no tokens to check)",
            ));
        }
        if let Some(path) = &auth_token_file {
            crate::node::auth::load_tokens(path).map_err(|e| err("auth_token_file", e))?;
        }
        let members_arg = args.members.or(file.members);
        if join.is_some() && members_arg.is_some() {
            return Err(err(
                "join",
                "--join and --members are exclusive: a joining node learns the members",
            ));
        }
        let members = match members_arg {
            Some(s) => {
                let members = parse_members(&s)?;
                let me = members.iter().find(|m| m.id == id).ok_or_else(|| {
                    err(
                        "members",
                        format!("this node's id {id} is not among the members"),
                    )
                })?;
                if me.peer_addr != peer_addr || me.http_addr != http_addr {
                    return Err(err(
                        "members",
                        format!(
                            "member {id} is {}/{} but this node listens on {peer_addr}/{http_addr}",
                            me.peer_addr, me.http_addr
                        ),
                    ));
                }
                members
            }
            None => vec![Member {
                id,
                peer_addr,
                http_addr,
            }],
        };
        Ok(ServerConfig {
            id,
            data_dir,
            http_addr,
            peer_addr,
            members,
            shards,
            join,
            redirect,
            follower_read,
            snapshot_every_entries,
            log_io,
            cubefs_dp_growth_interval_ms,
            milvus_dd_history,
            milvus_config,
            auth_token_file,
            metrics_auth,
        })
    }

    /// Peer address of shard `shard` of this node.
    pub fn shard_peer_addr(&self, shard: usize) -> SocketAddr {
        let mut a = self.peer_addr;
        // resolve() checked that port + shards - 1 fits in a u16.
        a.set_port(self.peer_addr.port() + shard as u16);
        a
    }
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err("config", format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| err("config", format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServerArgs {
        ServerArgs {
            shards: Some(2),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_make_a_single_node_cluster() {
        let c = ServerConfig::resolve(args()).unwrap();
        assert_eq!(c.id, 1);
        assert_eq!(
            c.http_addr,
            "127.0.0.1:17010".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(c.members.len(), 1);
        assert_eq!(c.members[0].peer_addr, c.peer_addr);
        assert_eq!(c.shard_peer_addr(1).port(), 17111);
        assert_eq!(c.log_io, LogIo::Auto);
        let c = ServerConfig::resolve(ServerArgs {
            log_io: Some("buffered".into()),
            ..args()
        })
        .unwrap();
        assert_eq!(c.log_io, LogIo::Buffered);
    }

    #[test]
    fn members_parse_and_must_include_self() {
        let m = parse_members("1=127.0.0.1:1/127.0.0.1:2, 2=127.0.0.1:3/127.0.0.1:4").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].http_addr.port(), 4);
        let e = ServerConfig::resolve(ServerArgs {
            id: Some(3),
            members: Some("1=127.0.0.1:1/127.0.0.1:2".into()),
            ..args()
        })
        .unwrap_err();
        assert_eq!(e.key, "members");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (a, key) in [
            (
                ServerArgs {
                    id: Some(0),
                    ..args()
                },
                "id",
            ),
            (
                ServerArgs {
                    shards: Some(0),
                    ..Default::default()
                },
                "shards",
            ),
            (
                ServerArgs {
                    http_addr: Some("nope".into()),
                    ..args()
                },
                "http_addr",
            ),
            (
                ServerArgs {
                    peer_addr: Some("127.0.0.1:65535".into()),
                    ..args()
                },
                "peer_addr",
            ),
            (
                ServerArgs {
                    members: Some("1=a/b".into()),
                    ..args()
                },
                "members",
            ),
            (
                ServerArgs {
                    members: Some("1=127.0.0.1:1/127.0.0.1:2,1=127.0.0.1:1/127.0.0.1:2".into()),
                    ..args()
                },
                "members",
            ),
            (
                ServerArgs {
                    log_io: Some("fast".into()),
                    ..args()
                },
                "log_io",
            ),
            (
                ServerArgs {
                    milvus_dd_history_entries_max: Some(0),
                    ..args()
                },
                "milvus_dd_history_entries_max",
            ),
            (
                ServerArgs {
                    milvus_dd_history_entries_max: Some(1_000_001),
                    ..args()
                },
                "milvus_dd_history_entries_max",
            ),
            (
                ServerArgs {
                    milvus_dd_history_ms: Some(0),
                    ..args()
                },
                "milvus_dd_history_ms",
            ),
            (
                ServerArgs {
                    config: Some("/nonexistent/mast.toml".into()),
                    ..args()
                },
                "config",
            ),
        ] {
            assert_eq!(ServerConfig::resolve(a).unwrap_err().key, key);
        }
    }

    #[test]
    fn flags_win_over_file_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mast.toml");
        std::fs::write(
            &path,
            "id = 7\nshards = 3\nhttp_addr = \"127.0.0.1:9000\"\nmilvus_dd_history_ms = 60000\n",
        )
        .unwrap();
        let c = ServerConfig::resolve(ServerArgs {
            config: Some(path.clone()),
            shards: Some(1),
            milvus_dd_history_entries_max: Some(10),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((c.id, c.shards, c.http_addr.port()), (7, 1, 9000));
        assert_eq!(
            (c.milvus_dd_history.entries_max, c.milvus_dd_history.ms),
            (10, 60_000)
        );
        std::fs::write(&path, "shard = 3\n").unwrap();
        let e = ServerConfig::resolve(ServerArgs {
            config: Some(path),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.key, "config");
        assert!(e.problem.contains("shard"), "{e}");
    }

    #[test]
    fn the_shipped_config_file_parses_and_names_every_key() {
        let text = include_str!("../../dist/mast.toml");
        let file: FileConfig = toml::from_str(text).unwrap();
        assert_eq!(file.snapshot_every_entries, Some(50_000));
        for key in [
            "id",
            "data_dir",
            "http_addr",
            "peer_addr",
            "members",
            "shards",
            "join",
            "redirect",
            "follower_read",
            "snapshot_every_entries",
            "log_io",
            "auth_token_file",
            "metrics_auth",
        ] {
            assert!(
                text.contains(&format!("{key} = ")),
                "dist/mast.toml does not document {key}"
            );
        }
    }
}
