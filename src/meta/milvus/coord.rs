//! The replicated half of the root coordinator's data-path services (issue #12, design §10.4
//! and §10.5): the registered sessions (tenants, proxies, data and query nodes) and each
//! time-tick channel's durable barrier values. Lives on group 0 only.
//!
//! What is deliberately not here (leader memory, `crate::milvus::coord`): session liveness
//! (keep-alive deadlines) and the producers' individual ticks, which arrive far too often to
//! replicate one by one. The barrier values are: the leader emits a value to watchers only
//! after a `Marks` entry carrying it has applied, so no watcher ever saw a value above the
//! durable one, and a new leader starts every barrier from it. Hence barriers never go
//! backwards across leader changes.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::{code, Outcome};
use crate::codec;

/// Sessions the table holds (1,000 proxies is the scale; this leaves room).
pub const SESSIONS_MAX: usize = 100_000;
/// Time-tick channels the table holds (as `crate::milvus::timetick::CHANNELS_MAX`).
pub const CHANNELS_MAX: usize = 4096;
/// Hard-barrier values kept per channel for watchers that resume.
pub const HARD_HISTORY_MAX: usize = 1024;
/// Segment states in the only order they may move.
pub const SEGMENT_STATES: [&str; 5] = ["Growing", "Sealed", "Flushing", "Flushed", "Dropped"];
/// Segments the table holds.
pub const SEGMENTS_MAX: usize = 1_000_000;
/// Longest session TTL a registration may ask for.
pub const SESSION_TTL_MAX_MS: u64 = 3_600_000;
/// Roles a session may have.
pub const ROLES: [&str; 4] = ["tenant", "proxy", "datanode", "querynode"];

macro_rules! stored {
    ($($item:item)*) => {$(
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize,
            rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
        $item
    )*};
}

stored! {
    /// A registered component (design §10.4.1's `TenantMeta` / `ProxyMeta`, and a role for
    /// data and query nodes).
    pub struct Session {
        /// Milvus's server ID (`sourceID` in its messages).
        pub id: i64,
        /// One of `ROLES`.
        pub role: String,
        /// `ProxyMeta.address` (`host:port`), empty for tenants.
        pub address: String,
        /// `ProxyMeta.result_channel_names`, or a tenant's `insert_channel_names`.
        pub channels: Vec<String>,
        /// A tenant's `query_channel_name`.
        pub query_channel: String,
        /// A tenant's `num_query_nodes`.
        pub num_query_nodes: u64,
        /// Time without a keep-alive after which the session is dropped.
        pub ttl_ms: u64,
        /// TSO timestamp of the registration.
        pub registered_ts: u64,
    }

    /// One channel's new durable barrier values.
    pub struct Mark {
        pub channel: String,
        /// The newest soft value (0: unchanged).
        pub soft: u64,
        /// Hard increases, in order.
        pub hard: Vec<u64>,
    }

    /// A change to the coordinator tables; carried as `Command::Coord`.
    pub enum CoordCommand {
        /// Adds a session, or replaces one of the same ID and role.
        Register { session: Session },
        /// Removes a session: it left, or its TTL passed without a keep-alive.
        Remove { id: i64, expired: bool },
        /// Durable barrier values; each never goes backwards (lower values are ignored).
        Marks { marks: Vec<Mark> },
        /// New growing segments, made durable before their grants are answered.
        Segments { created: Vec<SegmentMeta> },
        /// A data node's report on a segment (rows so far) and the state the leader's seal
        /// policies chose; `ts` closes a segment leaving `Growing`.
        SegmentReport { ts: u64, id: u64, rows: u64, state: String },
        /// Replaces the Milvus system configuration (`crate::milvus::sysconfig`): sorted,
        /// normalised pairs; `version` is the stored one plus one, chosen by the proposer.
        SetConfig { version: u64, entries: Vec<(String, String)> },
    }

    /// The replicated Milvus system configuration.
    #[derive(Default)]
    pub struct ConfigTable {
        /// 0: never set; each change adds one.
        pub version: u64,
        pub entries: BTreeMap<String, String>,
    }

    /// Section version 2: version 1's bytes, then the configuration.
    struct SnapshotV2 {
        core: Vec<u8>,
        config: ConfigTable,
    }

    /// A segment (design §10.4.1's `SegmentMeta`).
    pub struct SegmentMeta {
        pub id: u64,
        pub collection: u64,
        pub partition: u64,
        pub channel: String,
        pub max_rows: u64,
        pub rows: u64,
        /// `Growing` `Sealed` `Flushing` `Flushed` `Dropped`.
        pub state: String,
        pub open_ts: u64,
        pub close_ts: u64,
    }

    /// One channel's durable barriers.
    pub struct ChannelMarks {
        pub soft: u64,
        pub hard: u64,
        /// The last hard values, oldest first (at most `HARD_HISTORY_MAX`).
        pub history: VecDeque<u64>,
        /// The newest hard value dropped from `history` (0: none): a watcher that last saw
        /// less than this has missed values.
        pub evicted: u64,
    }

    struct SnapshotData {
        sessions: Vec<Session>,
        channels: Vec<(String, ChannelMarks)>,
        expired_total: u64,
        segments: Vec<SegmentMeta>,
    }
}

/// The coordinator tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoordState {
    pub sessions: BTreeMap<i64, Session>,
    pub channels: BTreeMap<String, ChannelMarks>,
    /// Sessions removed because they expired.
    pub expired_total: u64,
    pub segments: BTreeMap<u64, SegmentMeta>,
    pub config: ConfigTable,
}

/// Snapshot section version written; 1 (no configuration) still restores.
pub const SECTION_VERSION: u16 = 2;

fn refuse(message: impl Into<String>) -> Outcome {
    Outcome::Error {
        code: code::INVALID_PARAMETER,
        message: message.into(),
    }
}

impl CoordState {
    pub fn apply(&mut self, cmd: &CoordCommand) -> Outcome {
        match cmd {
            CoordCommand::Register { session } => {
                if !ROLES.contains(&session.role.as_str()) {
                    return refuse(format!(
                        "role {:?} is not one of {ROLES:?}: invalid parameter",
                        session.role
                    ));
                }
                if session.ttl_ms == 0 || session.ttl_ms > SESSION_TTL_MAX_MS {
                    return refuse(format!(
                        "session TTL {} ms is outside 1..={SESSION_TTL_MAX_MS}: invalid parameter",
                        session.ttl_ms
                    ));
                }
                match self.sessions.get(&session.id) {
                    Some(old) if old.role != session.role => {
                        return refuse(format!(
                            "server ID {} is registered as {}: invalid parameter",
                            session.id, old.role
                        ))
                    }
                    Some(old) if *old == *session => return Outcome::Unchanged,
                    Some(_) => {}
                    None if self.sessions.len() >= SESSIONS_MAX => {
                        return refuse(format!(
                            "{SESSIONS_MAX} sessions are registered, the most mast keeps: invalid parameter"
                        ))
                    }
                    None => {}
                }
                self.sessions.insert(session.id, session.clone());
                Outcome::Done
            }
            CoordCommand::Remove { id, expired } => {
                if self.sessions.remove(id).is_none() {
                    return Outcome::Unchanged;
                }
                if *expired {
                    self.expired_total += 1;
                }
                Outcome::Done
            }
            CoordCommand::Segments { created } => {
                if self.segments.len() + created.len() > SEGMENTS_MAX {
                    return refuse(format!(
                        "{SEGMENTS_MAX} segments are recorded, the most mast keeps: invalid parameter"
                    ));
                }
                for seg in created {
                    self.segments.entry(seg.id).or_insert_with(|| seg.clone());
                }
                Outcome::Done
            }
            CoordCommand::SegmentReport {
                ts,
                id,
                rows,
                state,
            } => {
                let Some(seg) = self.segments.get_mut(id) else {
                    return refuse(format!("segment {id} not found: invalid parameter"));
                };
                let rank = |s: &str| SEGMENT_STATES.iter().position(|x| *x == s);
                match (rank(&seg.state), rank(state)) {
                    (Some(old), Some(new)) if new >= old => {}
                    _ => {
                        return refuse(format!(
                            "segment {id} cannot go from {} to {state}: invalid parameter",
                            seg.state
                        ))
                    }
                }
                if seg.state == "Growing" && state != "Growing" {
                    seg.close_ts = *ts;
                }
                seg.state = state.clone();
                seg.rows = seg.rows.max(*rows);
                Outcome::Done
            }
            CoordCommand::SetConfig { version, entries } => {
                if *version <= self.config.version {
                    return Outcome::Unchanged;
                }
                if entries.len() > crate::milvus::sysconfig::KEYS_MAX
                    || !entries.windows(2).all(|w| w[0].0 < w[1].0)
                {
                    return refuse(format!(
                        "a configuration holds at most {} sorted, distinct keys: invalid parameter",
                        crate::milvus::sysconfig::KEYS_MAX
                    ));
                }
                if entries
                    .iter()
                    .map(|(k, v)| (k, v))
                    .eq(self.config.entries.iter())
                {
                    return Outcome::Unchanged;
                }
                self.config = ConfigTable {
                    version: *version,
                    entries: entries.iter().cloned().collect(),
                };
                Outcome::Done
            }
            CoordCommand::Marks { marks } => {
                for m in marks {
                    if !self.channels.contains_key(&m.channel)
                        && self.channels.len() >= CHANNELS_MAX
                    {
                        // The leader caps channels the same way, so this only drops what a
                        // confused proposer sent; every replica drops the same.
                        continue;
                    }
                    let c =
                        self.channels
                            .entry(m.channel.clone())
                            .or_insert_with(|| ChannelMarks {
                                soft: 0,
                                hard: 0,
                                history: VecDeque::new(),
                                evicted: 0,
                            });
                    c.soft = c.soft.max(m.soft);
                    for &h in &m.hard {
                        if h > c.hard {
                            c.hard = h;
                            if c.history.len() >= HARD_HISTORY_MAX {
                                c.evicted = c.history.pop_front().unwrap_or(c.evicted);
                            }
                            c.history.push_back(h);
                        }
                    }
                }
                Outcome::Done
            }
        }
    }

    pub fn cost(&self) -> u64 {
        (self.sessions.len() + self.channels.len()) as u64
    }

    pub fn snapshot(&self) -> Vec<u8> {
        codec::encode(&SnapshotV2 {
            core: self.snapshot_v1(),
            config: self.config.clone(),
        })
    }

    /// Restores a section of `version` (1 or 2).
    pub fn restore_version(version: u16, bytes: &[u8]) -> Result<Self, String> {
        if version == 1 {
            return Self::restore(bytes);
        }
        let data = codec::decode::<SnapshotV2>(bytes)
            .map_err(|e| format!("milvus coordinator table: {e}"))?;
        if data.config.entries.len() > crate::milvus::sysconfig::KEYS_MAX {
            return Err("milvus coordinator table: too many configuration keys".into());
        }
        let mut st = Self::restore(&data.core)?;
        st.config = data.config;
        Ok(st)
    }

    fn snapshot_v1(&self) -> Vec<u8> {
        codec::encode(&SnapshotData {
            sessions: self.sessions.values().cloned().collect(),
            channels: self
                .channels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            expired_total: self.expired_total,
            segments: self.segments.values().cloned().collect(),
        })
    }

    pub fn restore(bytes: &[u8]) -> Result<Self, String> {
        let data = codec::decode::<SnapshotData>(bytes)
            .map_err(|e| format!("milvus coordinator table: {e}"))?;
        if data.sessions.len() > SESSIONS_MAX || data.channels.len() > CHANNELS_MAX {
            return Err(format!(
                "milvus coordinator table: {} sessions and {} channels exceed the limits",
                data.sessions.len(),
                data.channels.len()
            ));
        }
        let mut st = CoordState {
            expired_total: data.expired_total,
            ..Default::default()
        };
        for s in data.sessions {
            if st.sessions.insert(s.id, s).is_some() {
                return Err("milvus coordinator table: a session appears twice".into());
            }
        }
        if data.segments.len() > SEGMENTS_MAX {
            return Err("milvus coordinator table: too many segments".into());
        }
        for seg in data.segments {
            if st.segments.insert(seg.id, seg).is_some() {
                return Err("milvus coordinator table: a segment appears twice".into());
            }
        }
        for (k, v) in data.channels {
            if v.history.len() > HARD_HISTORY_MAX {
                return Err(format!(
                    "milvus coordinator table: channel {k:?} keeps {} hard values",
                    v.history.len()
                ));
            }
            st.channels.insert(k, v);
        }
        Ok(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn session(id: i64, role: &str) -> Session {
        Session {
            id,
            role: role.into(),
            address: format!("10.0.0.{id}:19530"),
            channels: vec!["rc-0".into()],
            query_channel: String::new(),
            num_query_nodes: 0,
            ttl_ms: 15_000,
            registered_ts: 7,
        }
    }

    #[test]
    fn register_replace_refuse_and_remove() {
        let mut st = CoordState::default();
        let s = session(1, "proxy");
        assert_eq!(
            st.apply(&CoordCommand::Register { session: s.clone() }),
            Outcome::Done
        );
        assert_eq!(
            st.apply(&CoordCommand::Register { session: s.clone() }),
            Outcome::Unchanged
        );
        let mut moved = s.clone();
        moved.address = "10.0.0.9:1".into();
        assert_eq!(
            st.apply(&CoordCommand::Register {
                session: moved.clone()
            }),
            Outcome::Done
        );
        assert_eq!(st.sessions[&1], moved);
        // Another role under the same ID, a bad role, a bad TTL: refused, nothing changes.
        let before = st.clone();
        for bad in [
            session(1, "datanode"),
            session(2, "coordinator"),
            Session {
                ttl_ms: 0,
                ..session(3, "proxy")
            },
        ] {
            assert!(matches!(
                st.apply(&CoordCommand::Register { session: bad }),
                Outcome::Error { .. }
            ));
        }
        assert_eq!(st, before);
        assert_eq!(
            st.apply(&CoordCommand::Remove {
                id: 1,
                expired: true
            }),
            Outcome::Done
        );
        assert_eq!(
            st.apply(&CoordCommand::Remove {
                id: 1,
                expired: true
            }),
            Outcome::Unchanged
        );
        assert_eq!(st.expired_total, 1);
        assert!(st.sessions.is_empty());
    }

    #[test]
    fn marks_never_go_backwards_and_history_is_bounded() {
        let mut st = CoordState::default();
        let mark = |soft, hard: Vec<u64>| CoordCommand::Marks {
            marks: vec![Mark {
                channel: "c".into(),
                soft,
                hard,
            }],
        };
        st.apply(&mark(10, vec![3, 5, 8]));
        st.apply(&mark(4, vec![6, 7, 9]));
        let c = &st.channels["c"];
        assert_eq!((c.soft, c.hard), (10, 9));
        assert_eq!(c.history, VecDeque::from(vec![3, 5, 8, 9]));
        let many: Vec<u64> = (100..100 + HARD_HISTORY_MAX as u64 + 5).collect();
        st.apply(&mark(0, many.clone()));
        let c = &st.channels["c"];
        assert_eq!(c.history.len(), HARD_HISTORY_MAX);
        assert_eq!(c.history.back(), many.last());
        assert_eq!(c.evicted, 104, "3, 5, 8, 9, 100..=104 were evicted");
    }

    fn arb_cmd() -> impl Strategy<Value = CoordCommand> {
        prop_oneof![
            (0i64..20, 0usize..4, 1u64..100_000).prop_map(|(id, r, ttl)| {
                CoordCommand::Register {
                    session: Session {
                        ttl_ms: ttl,
                        ..session(id, ROLES[r])
                    },
                }
            }),
            (0i64..20, any::<bool>())
                .prop_map(|(id, expired)| CoordCommand::Remove { id, expired }),
            prop::collection::vec((0u64..50, 0u64..3, 0u64..1000), 0..4).prop_map(|v| {
                CoordCommand::Segments {
                    created: v
                        .into_iter()
                        .map(|(id, c, rows)| SegmentMeta {
                            id,
                            collection: c,
                            partition: c + 1,
                            channel: format!("ch-{c}"),
                            max_rows: 1000,
                            rows,
                            state: "Growing".into(),
                            open_ts: id,
                            close_ts: 0,
                        })
                        .collect(),
                }
            }),
            prop::collection::vec(
                (0u8..5, 0u64..1000, prop::collection::vec(0u64..1000, 0..5)),
                0..4
            )
            .prop_map(|ms| CoordCommand::Marks {
                marks: ms
                    .into_iter()
                    .map(|(c, soft, hard)| Mark {
                        channel: format!("ch-{c}"),
                        soft,
                        hard,
                    })
                    .collect()
            }),
            (
                0u64..5,
                prop::collection::btree_map("[a-c.]{1,4}", "[0-9]{0,3}", 0..5)
            )
                .prop_map(|(version, m)| CoordCommand::SetConfig {
                    version,
                    entries: m.into_iter().collect(),
                }),
        ]
    }

    #[test]
    fn config_versions_increase_and_same_config_changes_nothing() {
        let mut st = CoordState::default();
        let entries = vec![("a.b".to_string(), "1".to_string())];
        let set = |version, entries: &Vec<(String, String)>| CoordCommand::SetConfig {
            version,
            entries: entries.clone(),
        };
        assert_eq!(st.apply(&set(1, &entries)), Outcome::Done);
        assert_eq!(st.config.version, 1);
        assert_eq!(st.config.entries["a.b"], "1");
        // The same pairs again: nothing to record, the version stays.
        assert_eq!(st.apply(&set(2, &entries)), Outcome::Unchanged);
        assert_eq!(st.config.version, 1);
        // A stale proposal (raced by another leader's) is ignored.
        let other = vec![("a.b".to_string(), "2".to_string())];
        assert_eq!(st.apply(&set(1, &other)), Outcome::Unchanged);
        assert_eq!(st.apply(&set(2, &other)), Outcome::Done);
        assert_eq!(
            (st.config.version, st.config.entries["a.b"].as_str()),
            (2, "2")
        );
        let unsorted = vec![
            ("b".to_string(), String::new()),
            ("a".to_string(), String::new()),
        ];
        assert!(matches!(
            st.apply(&set(3, &unsorted)),
            Outcome::Error { .. }
        ));
        assert_eq!(st.config.version, 2);
        // A version 1 section (before the configuration existed) still restores.
        let v1 = CoordState::restore_version(1, &st.snapshot_v1()).unwrap();
        assert_eq!(v1.config, ConfigTable::default());
        assert_eq!(v1.sessions, st.sessions);
    }

    proptest! {
        #[test]
        fn snapshot_round_trips(cmds in prop::collection::vec(arb_cmd(), 0..60)) {
            let mut st = CoordState::default();
            for c in &cmds {
                // Commands also survive their own encoding (they travel in the log).
                let back: CoordCommand = codec::decode(&codec::encode(c)).unwrap();
                prop_assert_eq!(&back, c);
                st.apply(c);
            }
            let restored = CoordState::restore_version(SECTION_VERSION, &st.snapshot()).unwrap();
            prop_assert_eq!(restored, st);
        }
    }
}
