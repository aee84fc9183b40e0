//! The meta table: one shard's partition of everything mast stores, as one replicated state
//! machine with one section per domain. The replica (`crate::replica`) knows none of them.
//!
//! - `kv`: etcd raftexample's keyspace (keys placed by `fnv1a(key) % shards`).
//! - `global`: the bounds behind the cluster-wide TSO and ID allocator (group 0 only).
//! - later: `milvus` and `cubefs`, each with its own tag, commands and snapshot section.
//!
//! Formats that can grow: a command is `domain u8 | version u8 | 6 zero bytes | body`, the
//! body being the domain's rkyv archive of that version; a snapshot is one section per table
//! (`crate::replica::snapshot`). A domain that changes its command or section layout bumps its
//! version and keeps decoding the older ones; a table added later starts empty when a
//! snapshot has no section for it. The fixtures in `src/meta/testdata/` were written by this
//! code and must keep decoding.

pub mod cubefs;
pub mod global;
pub mod kv;
pub mod milvus;

use crate::codec;
use crate::replica::{Section, StateMachine};
use cubefs::{CubefsCommand, CubefsOutcome, CubefsState};
use global::{GlobalCommand, GlobalOutcome, GlobalState};
use kv::{KvCommand, KvState};

/// Domain tags of commands. Fixed forever.
pub const DOMAIN_KV: u8 = 1;
pub const DOMAIN_GLOBAL: u8 = 2;
/// Reserved for the domains being built: Milvus's root coordinator and CubeFS's master.
pub const DOMAIN_MILVUS: u8 = 3;
pub const DOMAIN_CUBEFS: u8 = 4;
/// Versions of each domain's command body written today.
pub const KV_COMMAND_VERSION: u8 = 1;
pub const GLOBAL_COMMAND_VERSION: u8 = 1;
pub const CUBEFS_COMMAND_VERSION: u8 = 1;
pub const MILVUS_COMMAND_VERSION: u8 = 1;
const COMMAND_HEADER_BYTES: usize = 8;

/// Snapshot section tags (0 is the replica's). Fixed forever.
pub const TAG_META: u16 = 1;
pub const TAG_KV: u16 = 2;
pub const TAG_GLOBAL: u16 = 3;
pub const TAG_MILVUS: u16 = 4;
pub const TAG_CUBEFS: u16 = 5;
/// The Milvus coordinator's sessions and time-tick marks (issue #12).
pub const TAG_MILVUS_COORD: u16 = 12;
const SECTION_VERSION: u16 = 1;

/// A change to one table of the meta table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaCommand {
    Kv(KvCommand),
    Global(GlobalCommand),
    Cubefs(CubefsCommand),
    Milvus(milvus::Command),
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaOutcome {
    Kv(kv::Outcome),
    Global(GlobalOutcome),
    Cubefs(CubefsOutcome),
    Milvus(milvus::Outcome),
    /// The bytes were not a command this version understands; nothing changed (every replica
    /// refuses the same bytes, so they stay equal).
    Refused(String),
}

impl MetaCommand {
    pub fn encode(&self) -> Vec<u8> {
        let (domain, version, body) = match self {
            MetaCommand::Kv(c) => (DOMAIN_KV, KV_COMMAND_VERSION, codec::encode(c)),
            MetaCommand::Global(c) => (DOMAIN_GLOBAL, GLOBAL_COMMAND_VERSION, codec::encode(c)),
            MetaCommand::Cubefs(c) => (DOMAIN_CUBEFS, CUBEFS_COMMAND_VERSION, codec::encode(c)),
            MetaCommand::Milvus(c) => (DOMAIN_MILVUS, MILVUS_COMMAND_VERSION, codec::encode(c)),
        };
        let mut out = Vec::with_capacity(COMMAND_HEADER_BYTES + body.len());
        out.extend_from_slice(&[domain, version, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&body);
        out
    }

    /// Decodes and validates command bytes (from the log or from peers: never a panic).
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < COMMAND_HEADER_BYTES {
            return Err(format!("command of {} bytes has no header", bytes.len()));
        }
        let (domain, version, body) = (bytes[0], bytes[1], &bytes[COMMAND_HEADER_BYTES..]);
        match (domain, version) {
            (DOMAIN_KV, 1) => codec::decode(body)
                .map(MetaCommand::Kv)
                .map_err(|e| format!("kv command: {e}")),
            (DOMAIN_GLOBAL, 1) => codec::decode(body)
                .map(MetaCommand::Global)
                .map_err(|e| format!("global command: {e}")),
            (DOMAIN_CUBEFS, 1) => codec::decode(body)
                .map(MetaCommand::Cubefs)
                .map_err(|e| format!("cubefs command: {e}")),
            (DOMAIN_MILVUS, 1) => codec::decode(body)
                .map(MetaCommand::Milvus)
                .map_err(|e| format!("milvus command: {e}")),
            (d, v) => Err(format!("unknown command domain {d} version {v}")),
        }
    }
}

/// One shard's partition of the meta table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MetaTable {
    applied: u64,
    pub kv: KvState,
    pub global: GlobalState,
    pub cubefs: CubefsState,
    pub milvus: milvus::MilvusState,
    pub milvus_coord: milvus::coord::CoordState,
}

impl StateMachine for MetaTable {
    type Command = MetaCommand;
    type Outcome = MetaOutcome;

    fn empty() -> Self {
        MetaTable::default()
    }

    fn encode_command(command: &MetaCommand) -> Vec<u8> {
        command.encode()
    }

    fn apply(&mut self, index: u64, command: &[u8]) -> MetaOutcome {
        debug_assert!(
            index > self.applied,
            "apply {index} at applied {}",
            self.applied
        );
        self.applied = index;
        match MetaCommand::decode(command) {
            Ok(MetaCommand::Kv(c)) => MetaOutcome::Kv(self.kv.apply(index, &c)),
            Ok(MetaCommand::Global(c)) => MetaOutcome::Global(self.global.apply(&c)),
            Ok(MetaCommand::Cubefs(c)) => MetaOutcome::Cubefs(self.cubefs.apply(&c)),
            Ok(MetaCommand::Milvus(milvus::Command::Coord(c))) => {
                MetaOutcome::Milvus(self.milvus_coord.apply(&c))
            }
            Ok(MetaCommand::Milvus(c)) => MetaOutcome::Milvus(self.milvus.apply(&c)),
            Err(e) => MetaOutcome::Refused(e),
        }
    }

    fn skip(&mut self, index: u64) {
        self.applied = self.applied.max(index);
    }

    fn applied(&self) -> u64 {
        self.applied
    }

    fn snapshot(&self) -> Vec<Section> {
        vec![
            Section {
                tag: TAG_META,
                version: SECTION_VERSION,
                bytes: self.applied.to_le_bytes().to_vec(),
            },
            Section {
                tag: TAG_KV,
                version: SECTION_VERSION,
                bytes: self.kv.snapshot(),
            },
            Section {
                tag: TAG_GLOBAL,
                version: SECTION_VERSION,
                bytes: self.global.snapshot(),
            },
            Section {
                tag: TAG_CUBEFS,
                version: cubefs::SECTION_VERSION,
                bytes: self.cubefs.snapshot(),
            },
            Section {
                tag: TAG_MILVUS,
                version: SECTION_VERSION,
                bytes: self.milvus.snapshot(),
            },
            Section {
                tag: TAG_MILVUS_COORD,
                version: milvus::coord::SECTION_VERSION,
                bytes: self.milvus_coord.snapshot(),
            },
        ]
    }

    fn restore(sections: Vec<Section>) -> Result<Self, String> {
        let mut t = MetaTable::default();
        let mut applied = None;
        for s in sections {
            match (s.tag, s.version) {
                (TAG_META, 1) => {
                    let b: [u8; 8] = s.bytes[..]
                        .try_into()
                        .map_err(|_| "meta section is not 8 bytes".to_string())?;
                    applied = Some(u64::from_le_bytes(b));
                }
                (TAG_KV, 1) => t.kv = KvState::restore(&s.bytes).map_err(|e| e.to_string())?,
                (TAG_GLOBAL, 1) => {
                    t.global =
                        GlobalState::restore(&s.bytes).map_err(|e| format!("global table: {e}"))?
                }
                (TAG_CUBEFS, v @ 1..=cubefs::SECTION_VERSION) => {
                    t.cubefs = CubefsState::restore_version(v, &s.bytes)
                        .map_err(|e| format!("cubefs table: {e}"))?
                }
                (TAG_MILVUS, 1) => t.milvus = milvus::MilvusState::restore(&s.bytes)?,
                (TAG_MILVUS_COORD, v @ 1..=milvus::coord::SECTION_VERSION) => {
                    t.milvus_coord = milvus::coord::CoordState::restore_version(v, &s.bytes)?
                }
                (tag, version) => {
                    return Err(format!(
                    "snapshot section {tag} version {version} is unknown to this version of mast"
                ))
                }
            }
        }
        t.applied = applied.ok_or("snapshot has no meta section")?;
        if t.kv.applied() > t.applied {
            return Err(format!(
                "kv table applied {} is above the snapshot's {}",
                t.kv.applied(),
                t.applied
            ));
        }
        Ok(t)
    }

    fn snapshot_cost(&self) -> u64 {
        (self.kv.len() + self.cubefs.len()) as u64 + self.milvus.cost() + self.milvus_coord.cost()
    }
}

#[cfg(test)]
mod tests;
