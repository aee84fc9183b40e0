//! Transcript tests of the meta table (a script of commands and the state they must leave,
//! as etcd's raft testdata does), format fixtures written by this version, and property
//! tests of snapshots.

use super::*;
use crate::replica::{snapshot, Envelope};
use proptest::prelude::*;

/// Runs a transcript: each command line applies at the next index (or inspects), and the
/// `> ` lines after it are what it must print. Returns the transcript with the actual
/// output, so a mismatch shows as a diff.
fn run_transcript(script: &str) -> String {
    let mut t = MetaTable::empty();
    let mut out = String::new();
    for line in script.lines() {
        if line.starts_with("> ") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() || words[0].starts_with('#') {
            continue;
        }
        let next = t.applied() + 1;
        let cond = |w: Option<&&str>| match w.copied() {
            None => kv::Cond::Always,
            Some("if=absent") => kv::Cond::Absent,
            Some("if=present") => kv::Cond::Present,
            Some(w) => kv::Cond::RevisionIs(w.trim_start_matches("if=").parse().expect("revision")),
        };
        let result = match words[0] {
            "put" => {
                let cmd = MetaCommand::Kv(kv::Command::Put {
                    key: words[1].into(),
                    value: words[2].as_bytes().to_vec(),
                    cond: cond(words.get(3)),
                });
                format!("{:?}", t.apply(next, &cmd.encode()))
            }
            "del" => {
                let cmd = MetaCommand::Kv(kv::Command::Delete {
                    key: words[1].into(),
                    cond: cond(words.get(2)),
                });
                format!("{:?}", t.apply(next, &cmd.encode()))
            }
            "tso" => {
                let bound_ms = words[1].parse().expect("bound");
                let cmd = MetaCommand::Global(GlobalCommand::ExtendTsoWindow { bound_ms });
                format!("{:?}", t.apply(next, &cmd.encode()))
            }
            "ids" => {
                let high_water = words[1].parse().expect("high water");
                let cmd = MetaCommand::Global(GlobalCommand::ExtendIdBlock { high_water });
                format!("{:?}", t.apply(next, &cmd.encode()))
            }
            "raw" => {
                let bytes: Vec<u8> = words[1..]
                    .iter()
                    .map(|w| u8::from_str_radix(w, 16).expect("hex byte"))
                    .collect();
                format!("{:?}", t.apply(next, &bytes))
            }
            "skip" => {
                t.skip(next);
                format!("applied {}", t.applied())
            }
            "restore" => {
                let restored = MetaTable::restore(t.snapshot()).expect("own snapshot restores");
                let same = restored == t;
                t = restored;
                format!("restored, equal: {same}")
            }
            "state" => {
                let keys: Vec<String> =
                    t.kv.list("", 100)
                        .into_iter()
                        .map(|(k, rev)| {
                            let v =
                                t.kv.get(&k)
                                    .map(|i| String::from_utf8_lossy(&i.value).into_owned());
                            format!("{k}={}@{rev}", v.unwrap_or_default())
                        })
                        .collect();
                format!(
                    "applied {} kv [{}] tso_bound {} id_high_water {}",
                    t.applied(),
                    keys.join(" "),
                    t.global.tso_bound_ms,
                    t.global.id_high_water
                )
            }
            other => panic!("unknown transcript command {other:?}"),
        };
        out.push_str("> ");
        out.push_str(&result);
        out.push('\n');
    }
    out
}

#[test]
fn transcripts() {
    for (name, script) in [
        ("kv.txt", include_str!("testdata/kv.txt")),
        ("global.txt", include_str!("testdata/global.txt")),
    ] {
        let got = run_transcript(script);
        if std::env::var_os("MAST_REWRITE_TRANSCRIPTS").is_some() {
            let path = format!("{}/src/meta/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
            std::fs::write(path, &got).expect("rewrite transcript");
            continue;
        }
        assert_eq!(
            got, script,
            "transcript {name} differs (MAST_REWRITE_TRANSCRIPTS=1 rewrites it; review the diff)"
        );
    }
}

/// What the fixtures hold; they were written by this function's output and must keep
/// decoding to exactly this after any later change of the formats.
fn fixture_table() -> MetaTable {
    let mut t = MetaTable::empty();
    let cmds = [
        MetaCommand::Kv(kv::Command::Put {
            key: "greeting".into(),
            value: b"hello".to_vec(),
            cond: kv::Cond::Always,
        }),
        MetaCommand::Global(GlobalCommand::ExtendTsoWindow {
            bound_ms: 1_764_950_400_000,
        }),
        MetaCommand::Global(GlobalCommand::ExtendIdBlock { high_water: 11_000 }),
        MetaCommand::Kv(kv::Command::Put {
            key: "b".into(),
            value: vec![0, 1, 2],
            cond: kv::Cond::Absent,
        }),
    ];
    for (i, c) in cmds.iter().enumerate() {
        t.apply(i as u64 + 1, &c.encode());
    }
    t.skip(5);
    t
}

fn fixture_entries() -> Vec<(String, Vec<u8>)> {
    let env = Envelope {
        proposer: 3,
        boot: 0x0123_4567_89ab_cdef,
        request_id: 42,
    };
    vec![
        (
            "entry-kv-put-v1.bin".into(),
            env.encode(
                &MetaCommand::Kv(kv::Command::Put {
                    key: "k".into(),
                    value: b"v".to_vec(),
                    cond: kv::Cond::RevisionIs(7),
                })
                .encode(),
            ),
        ),
        (
            "entry-kv-delete-v1.bin".into(),
            env.encode(
                &MetaCommand::Kv(kv::Command::Delete {
                    key: "k".into(),
                    cond: kv::Cond::Present,
                })
                .encode(),
            ),
        ),
        (
            "entry-global-tso-v1.bin".into(),
            env.encode(
                &MetaCommand::Global(GlobalCommand::ExtendTsoWindow { bound_ms: 99 }).encode(),
            ),
        ),
        (
            "entry-global-ids-v1.bin".into(),
            env.encode(
                &MetaCommand::Global(GlobalCommand::ExtendIdBlock { high_water: 77 }).encode(),
            ),
        ),
    ]
}

fn testdata(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/meta/testdata")
        .join(name)
}

/// `MAST_WRITE_FIXTURES=1` writes the fixtures anew (only when a format version is added:
/// the old files must stay and keep passing).
#[test]
fn fixtures_written_by_format_1_still_decode() {
    let snap = snapshot::encode(&fixture_table().snapshot());
    let mut files = fixture_entries();
    files.push(("snapshot-meta-v1.bin".into(), snap));
    if std::env::var_os("MAST_WRITE_FIXTURES").is_some() {
        for (name, bytes) in &files {
            std::fs::write(testdata(name), bytes).expect("write fixture");
        }
    }
    let read = |name: &str| {
        std::fs::read(testdata(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
    };
    // Entries: the envelope and the command decode to what was written.
    let expect = [
        MetaCommand::Kv(kv::Command::Put {
            key: "k".into(),
            value: b"v".to_vec(),
            cond: kv::Cond::RevisionIs(7),
        }),
        MetaCommand::Kv(kv::Command::Delete {
            key: "k".into(),
            cond: kv::Cond::Present,
        }),
        MetaCommand::Global(GlobalCommand::ExtendTsoWindow { bound_ms: 99 }),
        MetaCommand::Global(GlobalCommand::ExtendIdBlock { high_water: 77 }),
    ];
    for ((name, _), want) in fixture_entries().iter().zip(expect) {
        let bytes = read(name);
        let (env, cmd) = Envelope::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            (env.proposer, env.boot, env.request_id),
            (3, 0x0123_4567_89ab_cdef, 42),
            "{name}"
        );
        assert_eq!(
            MetaCommand::decode(cmd).unwrap_or_else(|e| panic!("{name}: {e}")),
            want,
            "{name}"
        );
    }
    // The snapshot restores to the same table.
    let sections = snapshot::decode(&read("snapshot-meta-v1.bin")).expect("snapshot frame");
    assert_eq!(
        MetaTable::restore(sections).expect("snapshot restores"),
        fixture_table()
    );
}

#[test]
fn a_table_added_later_starts_empty_and_unknown_tables_are_refused() {
    let t = fixture_table();
    // An older snapshot: written before the global table existed.
    let older: Vec<Section> = t
        .snapshot()
        .into_iter()
        .filter(|s| s.tag != TAG_GLOBAL)
        .collect();
    let r = MetaTable::restore(older).expect("older snapshot restores");
    assert_eq!((r.kv.clone(), r.applied()), (t.kv.clone(), t.applied()));
    assert_eq!(r.global, GlobalState::default());
    // A newer snapshot: a table this version does not know.
    let mut newer = t.snapshot();
    newer.push(Section {
        tag: 200,
        version: 1,
        bytes: vec![1, 2, 3],
    });
    assert!(MetaTable::restore(newer).unwrap_err().contains("unknown"));
    // A newer version of a known table.
    let mut newer = t.snapshot();
    newer[1].version = 2;
    assert!(MetaTable::restore(newer).is_err());
}

#[test]
fn unknown_commands_are_refused_alike_everywhere() {
    let mut a = MetaTable::empty();
    let mut b = MetaTable::empty();
    for bytes in [
        &[9u8, 1, 0, 0, 0, 0, 0, 0][..],
        &[1, 9, 0, 0, 0, 0, 0, 0],
        b"short",
        &[1, 1, 0, 0, 0, 0, 0, 0, 0xff],
    ] {
        let (x, y) = (a.applied() + 1, b.applied() + 1);
        assert!(matches!(a.apply(x, bytes), MetaOutcome::Refused(_)));
        assert!(matches!(b.apply(y, bytes), MetaOutcome::Refused(_)));
    }
    assert_eq!(a, b);
    assert_eq!(a.applied(), 4);
}

fn command() -> impl Strategy<Value = MetaCommand> {
    let key = prop::sample::select(vec!["a", "b", "c", "dd"]).prop_map(String::from);
    let cond = prop_oneof![
        Just(kv::Cond::Always),
        Just(kv::Cond::Absent),
        Just(kv::Cond::Present),
        (0u64..12).prop_map(kv::Cond::RevisionIs)
    ];
    prop_oneof![
        (
            key.clone(),
            prop::collection::vec(any::<u8>(), 0..8),
            cond.clone()
        )
            .prop_map(|(key, value, cond)| MetaCommand::Kv(kv::Command::Put {
                key,
                value,
                cond
            })),
        (key, cond).prop_map(|(key, cond)| MetaCommand::Kv(kv::Command::Delete { key, cond })),
        any::<u64>()
            .prop_map(|bound_ms| MetaCommand::Global(GlobalCommand::ExtendTsoWindow { bound_ms })),
        any::<u64>().prop_map(
            |high_water| MetaCommand::Global(GlobalCommand::ExtendIdBlock { high_water })
        ),
    ]
}

proptest! {
    /// A snapshot taken anywhere restores to an equal table that then evolves identically.
    #[test]
    fn snapshots_round_trip(cmds in prop::collection::vec(command(), 0..40), cut in 0usize..40) {
        let mut a = MetaTable::empty();
        let cut = cut.min(cmds.len());
        for (i, c) in cmds[..cut].iter().enumerate() {
            a.apply(i as u64 + 1, &c.encode());
        }
        let bytes = snapshot::encode(&a.snapshot());
        let mut b = MetaTable::restore(snapshot::decode(&bytes).unwrap()).unwrap();
        prop_assert_eq!(&a, &b);
        for (i, c) in cmds[cut..].iter().enumerate() {
            let idx = (cut + i) as u64 + 1;
            prop_assert_eq!(a.apply(idx, &c.encode()), b.apply(idx, &c.encode()));
        }
        prop_assert_eq!(&a, &b);
    }

    #[test]
    fn commands_round_trip(c in command()) {
        prop_assert_eq!(MetaCommand::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = MetaCommand::decode(&bytes);
        let _ = snapshot::decode(&bytes).map(MetaTable::restore);
        let mut t = MetaTable::empty();
        let _ = t.apply(1, &bytes);
    }
}
