//! Backup and restore: `GET /backup` (served), `mast ctl backup --out FILE` (fetched),
//! `mast restore FILE --data-dir DIR --id N --members ...` (a new cluster seeded from it).
//!
//! The file, all integers little-endian:
//! ```text
//! header   "MASTBKUP" | format u32 | shards u32 | cluster_id u64 | created_unix_ms u64
//! shard*   "MASTSHRD" | shard u32 | 0 u32 | applied u64 | len u64 | crc32 u32 | 0 u32 | bytes
//! trailer  "MASTEND\0" | crc32 u32 of every byte before the trailer | 0 u32
//! ```
//! A shard's bytes are its meta table's snapshot sections (`replica::snapshot` framing) as
//! of a linearizable read point of that shard: the leader confirmed its leadership after the
//! request arrived and the state was read once applied up to that point, so every write
//! acknowledged before the backup started is in it. Shards are read one after another (no
//! cross-shard point in time: mast has no cross-shard transaction, so none is needed). The
//! replica's member section is left out: a restore starts a new cluster with new members,
//! as etcdutl's snapshot restore does.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use mast_http::{body_channel, Method, Request, Response, Router, SendError};

use crate::meta::MetaTable;
use crate::node::shard::Shard;
use crate::replica::snapshot as snapfile;
use crate::replica::{MemberAddrs, StateMachine};

const MAGIC: &[u8; 8] = b"MASTBKUP";
const SHARD_MAGIC: &[u8; 8] = b"MASTSHRD";
const END_MAGIC: &[u8; 8] = b"MASTEND\0";
pub const FORMAT: u32 = 1;
const HEADER_BYTES: usize = 32;
const SHARD_HEAD_BYTES: usize = 40;
const TRAILER_BYTES: usize = 16;
/// A shard section larger than this is refused (as the log refuses larger snapshots).
pub const SHARD_BYTES_MAX: u64 = 1 << 30;
/// Bytes queued between the producer and the connection.
const STREAM_BUFFER_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Bytes per streamed chunk.
const CHUNK_BYTES: usize = 1024 * 1024;
/// A client that takes nothing for this long ends the backup.
const STALL_TIMEOUT_MS: u64 = 30_000;

/// One shard's part of a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPart {
    pub shard: u32,
    pub applied: u64,
    /// `replica::snapshot` framing of the meta table's sections.
    pub bytes: Vec<u8>,
}

/// A decoded, verified backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub cluster_id: u64,
    pub created_unix_ms: u64,
    pub shards: Vec<ShardPart>,
    /// The trailer's checksum (a fingerprint of the whole file).
    pub crc: u32,
}

pub fn header(shards: u32, cluster_id: u64, created_unix_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&shards.to_le_bytes());
    out.extend_from_slice(&cluster_id.to_le_bytes());
    out.extend_from_slice(&created_unix_ms.to_le_bytes());
    out
}

pub fn shard_head(part_shard: u32, applied: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SHARD_HEAD_BYTES);
    out.extend_from_slice(SHARD_MAGIC);
    out.extend_from_slice(&part_shard.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&applied.to_le_bytes());
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(bytes).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out
}

pub fn trailer(crc_of_everything_before: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(TRAILER_BYTES);
    out.extend_from_slice(END_MAGIC);
    out.extend_from_slice(&crc_of_everything_before.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out
}

/// Encodes a whole backup (tests, and the reference for the streamed form).
pub fn encode(b: &Backup) -> Vec<u8> {
    let mut out = header(b.shards.len() as u32, b.cluster_id, b.created_unix_ms);
    for p in &b.shards {
        out.extend_from_slice(&shard_head(p.shard, p.applied, &p.bytes));
        out.extend_from_slice(&p.bytes);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&trailer(crc));
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "truncated at offset {}: {what} needs {n} bytes, {} left",
                    self.at,
                    self.bytes.len() - self.at
                )
            })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_le_bytes(a))
    }
    /// Reserved bytes must be zero, so that no byte of the file goes unchecked.
    fn zero_padding(&mut self) -> Result<(), String> {
        let at = self.at;
        match self.u32("padding")? {
            0 => Ok(()),
            _ => Err(format!(
                "offset {at}: reserved bytes are not zero (damaged)"
            )),
        }
    }
    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(a))
    }
}

/// Decodes and verifies a backup: framing, every checksum, and that each shard's sections
/// restore into a meta table at the recorded index. Errors name the byte offset.
pub fn decode(bytes: &[u8]) -> Result<Backup, String> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(8, "the magic")? != MAGIC {
        return Err("offset 0: not a mast backup (bad magic)".into());
    }
    let format = r.u32("the format")?;
    if format != FORMAT {
        return Err(format!(
            "offset 8: backup format {format} is not {FORMAT} (another version of mast)"
        ));
    }
    let shards = r.u32("the shard count")?;
    if shards == 0 || shards as usize > crate::node::config::SHARDS_MAX {
        return Err(format!("offset 12: {shards} shards is not a valid count"));
    }
    let cluster_id = r.u64("the cluster id")?;
    let created_unix_ms = r.u64("the creation time")?;
    let mut parts = Vec::with_capacity(shards as usize);
    for i in 0..shards {
        let at = r.at;
        if r.take(8, "a shard section")? != SHARD_MAGIC {
            return Err(format!("offset {at}: shard section {i} has a bad magic"));
        }
        let shard = r.u32("the shard number")?;
        if shard != i {
            return Err(format!(
                "offset {at}: shard section {i} says it is shard {shard}"
            ));
        }
        r.zero_padding()?;
        let applied = r.u64("the applied index")?;
        let len = r.u64("the section length")?;
        if len > SHARD_BYTES_MAX {
            return Err(format!("offset {at}: shard {i} claims {len} bytes"));
        }
        let crc = r.u32("the section checksum")?;
        r.zero_padding()?;
        let data_at = r.at;
        let data = r.take(len as usize, "the shard's data")?;
        if crc32fast::hash(data) != crc {
            return Err(format!(
                "offset {data_at}: shard {i}'s {len} bytes do not match their checksum (damaged)"
            ));
        }
        let sections =
            snapfile::decode(data).map_err(|e| format!("offset {data_at}: shard {i}: {e}"))?;
        let table = MetaTable::restore(sections)
            .map_err(|e| format!("offset {data_at}: shard {i}: {e}"))?;
        if table.applied() != applied {
            return Err(format!(
                "offset {at}: shard {i} is at index {} but says {applied}",
                table.applied()
            ));
        }
        parts.push(ShardPart {
            shard,
            applied,
            bytes: data.to_vec(),
        });
    }
    let end_at = r.at;
    if r.take(8, "the trailer")? != END_MAGIC {
        return Err(format!("offset {end_at}: bad trailer magic"));
    }
    let crc = r.u32("the file checksum")?;
    r.zero_padding()?;
    if crc32fast::hash(&bytes[..end_at]) != crc {
        return Err(format!(
            "offset 0..{end_at}: the file does not match its checksum (damaged)"
        ));
    }
    if r.at != bytes.len() {
        return Err(format!(
            "offset {}: {} bytes after the trailer",
            r.at,
            bytes.len() - r.at
        ));
    }
    Ok(Backup {
        cluster_id,
        created_unix_ms,
        shards: parts,
        crc,
    })
}

// ---------------------------------------------------------------- serving `GET /backup`

/// Registers `GET /backup`.
pub fn routes(router: Router, shard: Rc<Shard>) -> Router {
    router.route(Method::GET, "/backup", move |_req: Request| {
        serve(shard.clone())
    })
}

/// One shard's state at a linearizable read point, serialized on that shard.
async fn read_shard(me: &Rc<Shard>, k: usize) -> Result<(u64, Vec<u8>), String> {
    me.run_on(k, move |s: Rc<Shard>| async move {
        s.group
            .read_barrier()
            .await
            .map_err(|e| format!("shard {k}: {e}"))?;
        let state = s.group.state();
        Ok((state.applied(), snapfile::encode(&state.snapshot())))
    })
    .await
    .map_err(|e| format!("shard {k}: {e}"))?
}

async fn serve(me: Rc<Shard>) -> Response {
    // Shard 0 is read before answering, so a cluster without a leader answers 503 instead
    // of a 200 that breaks off.
    let first = match read_shard(&me, 0).await {
        Ok(p) => p,
        Err(e) => {
            return Response::error(503, "no_leader", &format!("backup: {e}"))
                .with_header("retry-after", "1")
        }
    };
    let (tx, body) = body_channel(STREAM_BUFFER_BYTES_MAX);
    let shards = me.mesh.shards();
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    monoio::spawn(async move {
        let mut crc = crc32fast::Hasher::new();
        let head = header(shards as u32, me.node.cluster.cluster_id, created);
        crc.update(&head);
        if send_all(&tx, head).await.is_err() {
            return;
        }
        let mut next = Some(first);
        for k in 0..shards {
            let (applied, bytes) = match next.take() {
                Some(p) => p,
                None => match read_shard(&me, k).await {
                    Ok(p) => p,
                    Err(e) => {
                        // Ends the body early: the client sees a truncated file and refuses it.
                        tracing::warn!(error = %e, "backup stopped");
                        return;
                    }
                },
            };
            let head = shard_head(k as u32, applied, &bytes);
            crc.update(&head);
            crc.update(&bytes);
            if send_all(&tx, head).await.is_err() || send_all(&tx, bytes).await.is_err() {
                return;
            }
        }
        let _ = send_all(&tx, trailer(crc.finalize())).await;
    });
    Response::streamed(200, "application/octet-stream", body)
}

/// Sends `bytes` in chunks, waiting (bounded) while the client catches up.
async fn send_all(tx: &mast_http::BodySender, bytes: Vec<u8>) -> Result<(), ()> {
    let bytes = Bytes::from(bytes);
    let mut at = 0;
    let mut stalled_ms = 0u64;
    while at < bytes.len() {
        let end = (at + CHUNK_BYTES).min(bytes.len());
        match tx.send(bytes.slice(at..end)) {
            Ok(()) => {
                at = end;
                stalled_ms = 0;
            }
            Err(SendError::Full) if stalled_ms < STALL_TIMEOUT_MS => {
                monoio::time::sleep(Duration::from_millis(5)).await;
                stalled_ms += 5;
            }
            Err(_) => return Err(()),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- `mast ctl backup`

/// Streams `GET /backup` into `out` (through a temporary file beside it, verified before it
/// is renamed into place, so a failed backup never leaves a file that looks whole).
pub fn fetch(client: &super::client::Client, out: &Path) -> Result<Backup, String> {
    let tmp = tmp_path(out);
    let deadline = std::time::Instant::now() + client.deadline;
    let mut last = String::new();
    loop {
        for ep in &client.endpoints {
            match fetch_one(client, ep, &tmp) {
                Ok(Some(())) => {
                    let bytes =
                        std::fs::read(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
                    let b = match decode(&bytes) {
                        Ok(b) => b,
                        Err(e) => {
                            let _ = std::fs::remove_file(&tmp);
                            return Err(format!("{ep} sent a backup that does not verify: {e}"));
                        }
                    };
                    std::fs::rename(&tmp, out).map_err(|e| format!("{}: {e}", out.display()))?;
                    return Ok(b);
                }
                Ok(None) => last = format!("{ep}: 503 (no leader yet)"),
                Err(e) => last = format!("{ep}: {e}"),
            }
        }
        let _ = std::fs::remove_file(&tmp);
        if std::time::Instant::now() >= deadline {
            return Err(format!("no backup by the deadline (last: {last})"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn tmp_path(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    out.with_file_name(name)
}

/// One attempt; Ok(None) on 503.
fn fetch_one(client: &super::client::Client, ep: &str, tmp: &Path) -> Result<Option<()>, String> {
    let mut stream = client.connect(ep)?;
    let auth = client
        .token
        .as_ref()
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "GET /backup HTTP/1.1\r\nhost: {ep}\r\nuser-agent: mast-ctl\r\n{auth}connection: close\r\n\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut file = std::fs::File::create(tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let mut status_ok = None;
    let mut io_err = None;
    let reply = super::client::read_reply(&mut stream, |chunk, body| {
        // The status is known before any body byte: keep error bodies in memory.
        if status_ok.is_none() {
            status_ok = Some(false);
        }
        if body.len() < 64 * 1024 {
            body.extend_from_slice(&chunk[..chunk.len().min(64 * 1024)]);
        }
        if let Err(e) = file.write_all(chunk) {
            io_err.get_or_insert(e.to_string());
        }
        Ok(())
    })?;
    if let Some(e) = io_err {
        return Err(format!("{}: {e}", tmp.display()));
    }
    file.sync_all()
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    match reply.status {
        200 => Ok(Some(())),
        503 => Ok(None),
        _ => Err(super::client::Reply {
            from: ep.into(),
            ..reply
        }
        .message()),
    }
}

// ---------------------------------------------------------------- `mast restore`

/// Flags of `mast restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file (`mast ctl backup --out FILE`).
    pub file: PathBuf,
    /// The new node's data directory; must not hold a cluster yet.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The new node's id (among --members).
    #[arg(long)]
    pub id: u64,
    /// The new cluster's members, as for `mast server --members` ("1=PEER/HTTP,...").
    #[arg(long)]
    pub members: String,
}

/// Runs `mast restore`; returns the exit code.
pub fn restore_cli(args: RestoreArgs) -> i32 {
    match restore(&args) {
        Ok(msg) => {
            println!("{msg}");
            0
        }
        Err(e) => {
            eprintln!("mast restore: {e}");
            1
        }
    }
}

/// Seeds `args.data_dir` from the backup: per shard a snapshot at the backup's index whose
/// configuration is the new members (all voters), and the cluster identity file. Every node
/// of the new cluster is restored from the same file with the same `--members`, so they all
/// derive the same new cluster id (members, shards and the backup's checksum).
pub fn restore(args: &RestoreArgs) -> Result<String, String> {
    let bytes = std::fs::read(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let backup = decode(&bytes).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let members = crate::node::config::parse_members(&args.members).map_err(|e| e.to_string())?;
    if !members.iter().any(|m| m.id == args.id) {
        return Err(format!("node {} is not among --members", args.id));
    }
    let dir = &args.data_dir;
    if dir.join("CLUSTER").exists() || dir.join("shard-0").exists() {
        return Err(format!(
            "{} already holds a node: restore only into a new data directory",
            dir.display()
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let shards = backup.shards.len();
    let book: Vec<(u64, MemberAddrs)> = members
        .iter()
        .map(|m| {
            (
                m.id,
                MemberAddrs {
                    peer_addr: m.peer_addr.to_string(),
                    http_addr: m.http_addr.to_string(),
                },
            )
        })
        .collect();
    let conf = mast_raft::ConfState {
        voters: {
            let mut v: Vec<u64> = members.iter().map(|m| m.id).collect();
            v.sort_unstable();
            v
        },
        learners: vec![],
    };
    for part in &backup.shards {
        let mut sections = snapfile::decode(&part.bytes)?;
        sections.insert(
            0,
            crate::replica::Section {
                tag: snapfile::TAG_MEMBERS,
                version: 1,
                bytes: crate::codec::encode(&book),
            },
        );
        let data = snapfile::encode(&sections);
        let shard_dir = dir.join(format!("shard-{}", part.shard));
        seed_shard(&shard_dir, part.applied, &conf, data)?;
    }
    let cluster_id =
        crate::node::cluster::cluster_id_of(&members, shards) ^ u64::from(backup.crc) << 16;
    let identity = crate::node::cluster::ClusterIdentity {
        cluster_id: cluster_id.max(1),
        node_id: args.id,
        bootstrap: true,
        shards,
        members: members.iter().map(crate::node::cluster::record).collect(),
    };
    crate::node::cluster::write_identity(dir, &identity)?;
    Ok(format!(
        "restored {shards} shards (indexes {}) into {} as node {} of cluster {}; start it with \
         mast server --id {} --shards {shards} --members {} --data-dir {}",
        backup
            .shards
            .iter()
            .map(|p| p.applied.to_string())
            .collect::<Vec<_>>()
            .join(","),
        dir.display(),
        args.id,
        identity.cluster_id,
        args.id,
        args.members,
        dir.display()
    ))
}

/// Writes one shard's snapshot, an empty log starting after it, and a hard state that
/// commits it, through the log crate (the same files a running node writes).
fn seed_shard(
    dir: &Path,
    index: u64,
    conf: &mast_raft::ConfState,
    data: Vec<u8>,
) -> Result<(), String> {
    // Term 1 like a bootstrapped log; the new cluster's first election moves past it.
    let term = 1;
    let meta = mast_log::SnapshotMeta {
        index,
        term,
        extra: crate::codec::encode(conf),
    };
    let dir = dir.to_path_buf();
    let run = crate::node::runtime::run_on_runtime(move |_| async move {
        let (log, _) = mast_log::Log::open(&dir, mast_log::LogOptions::default())
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        log.save_snapshot(meta, Bytes::from(data))
            .await
            .map_err(|e| format!("snapshot: {e}"))?;
        log.reset(index, term)
            .map_err(|e| format!("log reset: {e}"))?
            .await
            .map_err(|e| format!("log reset: {e}"))?;
        log.save_hard_state(mast_log::HardState {
            term,
            vote: 0,
            commit: index,
        })
        .map_err(|e| format!("hard state: {e}"))?
        .await
        .map_err(|e| format!("hard state: {e}"))?;
        log.close().await.map_err(|e| format!("close: {e}"))
    });
    run.map_err(|e| format!("runtime: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{MetaCommand, MetaTable};
    use proptest::prelude::*;

    fn table_bytes(keys: &[(String, Vec<u8>)]) -> (u64, Vec<u8>) {
        let mut t = MetaTable::empty();
        let mut index = 0;
        for (k, v) in keys {
            index += 1;
            let cmd = MetaCommand::Kv(crate::meta::kv::Command::Put {
                key: k.clone(),
                value: v.clone(),
                cond: crate::meta::kv::Cond::Always,
            });
            t.apply(index, &MetaTable::encode_command(&cmd));
        }
        (t.applied(), snapfile::encode(&t.snapshot()))
    }

    fn sample() -> Backup {
        let (a0, b0) = table_bytes(&[("a".into(), b"1".to_vec())]);
        let (a1, b1) = table_bytes(&[("b".into(), b"2".to_vec()), ("c".into(), vec![])]);
        Backup {
            cluster_id: 7,
            created_unix_ms: 1,
            shards: vec![
                ShardPart {
                    shard: 0,
                    applied: a0,
                    bytes: b0,
                },
                ShardPart {
                    shard: 1,
                    applied: a1,
                    bytes: b1,
                },
            ],
            crc: 0,
        }
    }

    #[test]
    fn round_trip_and_every_truncation_is_refused_with_an_offset() {
        let b = sample();
        let bytes = encode(&b);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.shards, b.shards);
        for cut in 0..bytes.len() {
            let e = decode(&bytes[..cut]).unwrap_err();
            assert!(e.contains("offset"), "cut {cut}: {e}");
        }
    }

    proptest! {
        #[test]
        fn any_flipped_byte_is_refused(at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let bytes = encode(&sample());
            let mut bad = bytes.clone();
            let i = at.index(bad.len());
            bad[i] ^= 1 << bit;
            let e = decode(&bad).unwrap_err();
            prop_assert!(e.contains("offset"), "{}", e);
        }
    }
}
