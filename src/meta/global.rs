//! The global table: what the cluster-wide leader services must never forget, replicated on
//! group 0. Only upper bounds live here (the TSO window and the ID high-water mark); the
//! position inside a window is leader memory (`crate::services`), so a steady stream of
//! requests touches no disk.
//!
//! Apply takes the maximum: a bound never moves down, whichever leader proposed it and in
//! whatever order replays arrive, so every replica holds the same values.

use crate::codec::{self, CodecError};

/// A change to the global table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum GlobalCommand {
    /// No timestamp with a physical part at or above `bound_ms` has been handed out.
    ExtendTsoWindow { bound_ms: u64 },
    /// No id at or above `high_water` has been handed out.
    ExtendIdBlock { high_water: u64 },
}

/// What applying a global command left in place: the value now in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalOutcome {
    TsoBound { bound_ms: u64 },
    IdHighWater { high_water: u64 },
}

#[derive(
    Debug, Default, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct GlobalState {
    /// Exclusive upper bound of every timestamp's physical part handed out so far.
    pub tso_bound_ms: u64,
    /// Exclusive upper bound of every id handed out so far.
    pub id_high_water: u64,
}

impl GlobalState {
    pub fn apply(&mut self, cmd: &GlobalCommand) -> GlobalOutcome {
        match *cmd {
            GlobalCommand::ExtendTsoWindow { bound_ms } => {
                self.tso_bound_ms = self.tso_bound_ms.max(bound_ms);
                GlobalOutcome::TsoBound {
                    bound_ms: self.tso_bound_ms,
                }
            }
            GlobalCommand::ExtendIdBlock { high_water } => {
                self.id_high_water = self.id_high_water.max(high_water);
                GlobalOutcome::IdHighWater {
                    high_water: self.id_high_water,
                }
            }
        }
    }

    pub fn snapshot(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn restore(bytes: &[u8]) -> Result<Self, CodecError> {
        codec::decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_only_grow() {
        let mut g = GlobalState::default();
        g.apply(&GlobalCommand::ExtendTsoWindow { bound_ms: 10 });
        assert_eq!(
            g.apply(&GlobalCommand::ExtendTsoWindow { bound_ms: 5 }),
            GlobalOutcome::TsoBound { bound_ms: 10 }
        );
        g.apply(&GlobalCommand::ExtendIdBlock { high_water: 7 });
        g.apply(&GlobalCommand::ExtendIdBlock { high_water: 3 });
        assert_eq!((g.tso_bound_ms, g.id_high_water), (10, 7));
        assert_eq!(GlobalState::restore(&g.snapshot()).unwrap(), g);
        assert!(GlobalState::restore(b"garbage!").is_err());
    }
}
