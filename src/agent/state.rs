//! A simulated node's durable state: the partitions it holds, their peers, and a fake disk.
//! One JSON file per node, replaced atomically (write a temp file, fsync, rename, fsync
//! the directory), so a crash leaves the old or the new state, never a torn one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::admintask::proto::Peer;

/// Largest state file read back (a node with 100k partitions is about 20 MiB).
pub const STATE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Partitions one simulated node holds at most; creating more fails with "no space".
pub const PARTITIONS_MAX: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partition {
    pub vol_name: String,
    /// Bytes reserved (data) / 0 (meta).
    pub size: u64,
    /// Bytes used: grows a little with every heartbeat, as a live partition would.
    pub used: u64,
    pub start: u64,
    pub end: u64,
    pub peers: Vec<Peer>,
    pub is_leader: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    /// Address this node listens and registered on.
    pub addr: String,
    /// ID the master gave at registration; 0 until registered.
    pub node_id: u64,
    pub role: String,
    pub zone: String,
    /// Data nodes: disk bytes. Meta nodes: memory bytes.
    pub capacity_bytes: u64,
    pub partitions: BTreeMap<u64, Partition>,
}

impl NodeState {
    pub fn new(addr: String, role: &str, zone: &str, capacity_bytes: u64) -> NodeState {
        NodeState {
            addr,
            node_id: 0,
            role: role.to_string(),
            zone: zone.to_string(),
            capacity_bytes,
            partitions: BTreeMap::new(),
        }
    }

    /// Sum of the partitions' reserved sizes.
    pub fn reserved_bytes(&self) -> u64 {
        self.partitions
            .values()
            .fold(0u64, |a, p| a.saturating_add(p.size))
    }

    pub fn used_bytes(&self) -> u64 {
        self.partitions
            .values()
            .fold(0u64, |a, p| a.saturating_add(p.used))
    }

    /// Loads the state file, or `None` when there is none yet.
    pub fn load(path: &Path) -> Result<Option<NodeState>, String> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        if meta.len() > STATE_BYTES_MAX {
            return Err(format!(
                "{}: {} bytes exceeds the limit of {STATE_BYTES_MAX} bytes",
                path.display(),
                meta.len()
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: not a node state file: {e}", path.display()))
    }

    /// Writes the state durably (see the module doc).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let bytes = serde_json::to_vec(self).map_err(|e| format!("encode state: {e}"))?;
        write_durably(path, &bytes)
    }
}

/// Replaces `path` with `bytes`: temp file, fsync, rename, fsync of the directory.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), String> {
    {
        let fail = |what: &str, e: std::io::Error| format!("{}: {what}: {e}", path.display());
        let dir: PathBuf = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        std::fs::create_dir_all(&dir).map_err(|e| fail("create directory", e))?;
        let tmp = path.with_extension("json.tmp");
        {
            let mut f = std::fs::File::create(&tmp).map_err(|e| fail("create", e))?;
            f.write_all(bytes).map_err(|e| fail("write", e))?;
            f.sync_all().map_err(|e| fail("fsync", e))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| fail("rename", e))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| fail("fsync directory", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n/state.json");
        assert_eq!(NodeState::load(&path).unwrap(), None);
        let mut s = NodeState::new("127.0.0.1:1".into(), "data", "z", 100);
        s.node_id = 7;
        s.partitions.insert(
            3,
            Partition {
                vol_name: "v".into(),
                size: 10,
                used: 1,
                start: 0,
                end: 0,
                peers: vec![Peer {
                    id: 7,
                    addr: "127.0.0.1:1".into(),
                }],
                is_leader: true,
            },
        );
        s.save(&path).unwrap();
        assert_eq!(NodeState::load(&path).unwrap(), Some(s));
        std::fs::write(&path, b"{garbage").unwrap();
        assert!(NodeState::load(&path).is_err());
    }
}
