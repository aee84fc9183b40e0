//! Which cluster this data directory belongs to, persisted in `DATA/CLUSTER` at first start.
//!
//! A node started with `--members` bootstraps: the cluster id is derived from the member list
//! and every member starts as a voter. A node started with `--join ADDR` asks that member for
//! the cluster id and members (`GET /members`), asks it to add this node (`POST /members`),
//! and starts with no vote until the leader has caught it up and promoted it. Restarts read
//! the file and never join or bootstrap again; a data directory of another node id is refused.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::node::config::{Member, ServerConfig};

const FILE_NAME: &str = "CLUSTER";
/// How long `--join` keeps trying the member it was pointed at.
const JOIN_DEADLINE_MS: u64 = 30_000;
const JOIN_RESPONSE_BYTES_MAX: usize = 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberRecord {
    pub id: u64,
    pub peer_addr: String,
    pub http_addr: String,
}

/// The persisted identity of this node's cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterIdentity {
    pub cluster_id: u64,
    pub node_id: u64,
    /// True when the node started with the members as voters (not by joining).
    pub bootstrap: bool,
    /// Shards per node. Keys are placed by `hash % shards`, so every node of a cluster must
    /// have the same count, forever.
    pub shards: usize,
    /// Members known at first start (later changes live in the raft log).
    pub members: Vec<MemberRecord>,
}

pub fn record(m: &Member) -> MemberRecord {
    MemberRecord {
        id: m.id,
        peer_addr: m.peer_addr.to_string(),
        http_addr: m.http_addr.to_string(),
    }
}

/// Derives a cluster id from the initial member list, so nodes bootstrapped with the same
/// `--members` agree without talking, and a node of another cluster is refused at handshake.
pub fn cluster_id_of(members: &[Member], shards: usize) -> u64 {
    let mut sorted: Vec<_> = members
        .iter()
        .map(|m| format!("{}={}/{}", m.id, m.peer_addr, m.http_addr))
        .collect();
    sorted.sort();
    sorted.push(format!("shards={shards}"));
    crate::placement::fnv1a(sorted.join(",").as_bytes()).max(1)
}

/// Reads `DATA/CLUSTER`, or creates it by bootstrapping or joining.
pub fn load_or_create(data_dir: &Path, config: &ServerConfig) -> Result<ClusterIdentity, String> {
    let path = data_dir.join(FILE_NAME);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let id: ClusterIdentity = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: unreadable: {e}", path.display()))?;
            if id.node_id != config.id {
                return Err(format!(
                    "{} belongs to node {}, not node {}",
                    data_dir.display(),
                    id.node_id,
                    config.id
                ));
            }
            check_shards(id.shards, config.shards)?;
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = match config.join {
                Some(addr) => join(addr, config)?,
                None => ClusterIdentity {
                    cluster_id: cluster_id_of(&config.members, config.shards),
                    node_id: config.id,
                    bootstrap: true,
                    shards: config.shards,
                    members: config.members.iter().map(record).collect(),
                },
            };
            write_durably(data_dir, &path, &id)?;
            Ok(id)
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn check_shards(cluster: usize, mine: usize) -> Result<(), String> {
    if cluster != mine {
        return Err(format!(
            "the cluster has {cluster} shards per node but this node was started with --shards {mine}: \
             keys are placed by shard, so every node must use --shards {cluster}"
        ));
    }
    Ok(())
}

/// Writes `DATA/CLUSTER` (for `mast restore`, which seeds a data directory).
pub fn write_identity(data_dir: &Path, id: &ClusterIdentity) -> Result<(), String> {
    write_durably(data_dir, &data_dir.join(FILE_NAME), id)
}

fn write_durably(dir: &Path, path: &Path, id: &ClusterIdentity) -> Result<(), String> {
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let body = serde_json::to_vec_pretty(id).map_err(|e| e.to_string())?;
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&body).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

#[derive(Deserialize)]
struct MembersReply {
    cluster_id: u64,
    shards: usize,
    members: Vec<MemberRecord>,
}

fn join(addr: SocketAddr, config: &ServerConfig) -> Result<ClusterIdentity, String> {
    let deadline = Instant::now() + Duration::from_millis(JOIN_DEADLINE_MS);
    let me = MemberRecord {
        id: config.id,
        peer_addr: config.peer_addr.to_string(),
        http_addr: config.http_addr.to_string(),
    };
    // With authentication on, a joining node asks with its own file's first admin token
    // (every member is expected to hold the same token file).
    let token = crate::node::auth::own_admin_token(config.auth_token_file.as_deref())?;
    let mut last_err = String::new();
    while Instant::now() < deadline {
        match try_join(addr, &me, config.shards, token.as_deref()) {
            Ok(id) => return Ok(id),
            Err(JoinError::Fatal(e)) => return Err(e),
            Err(JoinError::Retry(e)) => {
                tracing::warn!(%addr, error = %e, "join attempt failed; retrying");
                last_err = e;
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    Err(format!("could not join through {addr}: {last_err}"))
}

/// A failed join attempt: worth retrying, or not (a configuration mismatch).
enum JoinError {
    Retry(String),
    Fatal(String),
}

impl From<String> for JoinError {
    fn from(s: String) -> Self {
        JoinError::Retry(s)
    }
}

fn try_join(
    addr: SocketAddr,
    me: &MemberRecord,
    shards: usize,
    token: Option<&str>,
) -> Result<ClusterIdentity, JoinError> {
    let (status, body) = http_call(addr, "GET", "/members", b"", token)?;
    if status != 200 {
        return Err(format!(
            "GET /members answered {status}: {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    let reply: MembersReply =
        serde_json::from_slice(&body).map_err(|e| format!("GET /members: {e}"))?;
    check_shards(reply.shards, shards).map_err(JoinError::Fatal)?;
    let mut members = reply.members;
    // Always asked, even when shard 0 already lists this node: adding is idempotent, and an
    // earlier attempt may have stopped after some shards.
    let payload = serde_json::to_vec(me).map_err(|e| e.to_string())?;
    let (status, body) = http_call(addr, "POST", "/members", &payload, token)?;
    if status != 200 {
        return Err(format!(
            "POST /members answered {status}: {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    if !members.iter().any(|m| m.id == me.id) {
        members.push(me.clone());
    }
    Ok(ClusterIdentity {
        cluster_id: reply.cluster_id,
        node_id: me.id,
        bootstrap: false,
        shards,
        members,
    })
}

/// A minimal blocking HTTP/1.1 call for start-up, before any runtime exists.
fn http_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    token: Option<&str>,
) -> Result<(u16, Vec<u8>), String> {
    let timeout = Duration::from_secs(10);
    let mut s =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let authorization = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{authorization}connection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.take(JOIN_RESPONSE_BYTES_MAX as u64)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("response without a complete head")?;
    let head = std::str::from_utf8(&buf[..split]).map_err(|_| "response head is not UTF-8")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("response without a status code")?;
    Ok((status, buf[split + 4..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::config::{ServerArgs, ServerConfig};

    fn config(dir: &Path, id: u64) -> ServerConfig {
        ServerConfig::resolve(ServerArgs {
            id: Some(id),
            data_dir: Some(dir.to_path_buf()),
            shards: Some(1),
            members: Some(format!(
                "{id}=127.0.0.1:17110/127.0.0.1:17010,9=127.0.0.1:1/127.0.0.1:2"
            )),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn identity_is_created_once_and_guards_the_node_id() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path(), &config(dir.path(), 1)).unwrap();
        assert!(first.bootstrap);
        assert_eq!(first.members.len(), 2);
        assert_eq!(
            load_or_create(dir.path(), &config(dir.path(), 1)).unwrap(),
            first
        );
        let err = load_or_create(dir.path(), &config(dir.path(), 2)).unwrap_err();
        assert!(err.contains("belongs to node 1"), "{err}");
        let mut other_shards = config(dir.path(), 1);
        other_shards.shards = 3;
        let err = load_or_create(dir.path(), &other_shards).unwrap_err();
        assert!(err.contains("--shards 1"), "{err}");
        std::fs::write(dir.path().join(FILE_NAME), b"{garbage").unwrap();
        assert!(load_or_create(dir.path(), &config(dir.path(), 1))
            .unwrap_err()
            .contains("unreadable"));
    }

    #[test]
    fn same_members_same_cluster_id() {
        let a = crate::node::config::parse_members(
            "1=127.0.0.1:1/127.0.0.1:2,2=127.0.0.1:3/127.0.0.1:4",
        )
        .unwrap();
        let b = crate::node::config::parse_members(
            "2=127.0.0.1:3/127.0.0.1:4,1=127.0.0.1:1/127.0.0.1:2",
        )
        .unwrap();
        let c = crate::node::config::parse_members("1=127.0.0.1:1/127.0.0.1:2").unwrap();
        assert_eq!(cluster_id_of(&a, 2), cluster_id_of(&b, 2));
        assert_ne!(cluster_id_of(&a, 2), cluster_id_of(&c, 2));
        assert_ne!(cluster_id_of(&a, 2), cluster_id_of(&a, 3));
    }
}
