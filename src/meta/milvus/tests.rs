//! Transcript tests of the Milvus tables' apply rules (`testdata/*.txt`, rewritten with
//! `MAST_REWRITE_TRANSCRIPTS=1`) and the snapshot round trip as a property test.

use super::*;
use proptest::prelude::*;

fn field(id: i64, name: &str, ty: &str) -> Field {
    let mut f = system_field(id, name, ty);
    if ty == "FloatVector" {
        f.type_params = vec![("dim".into(), "4".into())];
    }
    if ty == "VarChar" {
        f.type_params = vec![("max_length".into(), "64".into())];
    }
    f
}

/// A two-field schema (`id` Int64 primary, `vector` FloatVector dim 4), plus a VarChar
/// partition key `tag` when `pk_partitions > 0`.
fn spec(name: &str, pk_partitions: u32, description: &str) -> CollectionSpec {
    let mut id = field(100, "id", "Int64");
    id.primary = true;
    let mut fields = vec![id, field(101, "vector", "FloatVector")];
    if pk_partitions > 0 {
        let mut tag = field(102, "tag", "VarChar");
        tag.partition_key = true;
        fields.push(tag);
    }
    CollectionSpec {
        name: name.into(),
        description: description.into(),
        fields,
        enable_dynamic: true,
        shards_num: 1,
        partition_key_partitions: pk_partitions,
        consistency_level: "Bounded".into(),
        properties: Vec::new(),
    }
}

fn index(name: &str, field: &str) -> IndexSpec {
    IndexSpec {
        name: name.into(),
        field_name: field.into(),
        index_type: "AUTOINDEX".into(),
        metric_type: if field == "vector" {
            "COSINE".into()
        } else {
            String::new()
        },
        params: Vec::new(),
    }
}

/// Parses one transcript line into a command. Words: `op ts args...`; `key=value` options.
fn command(words: &[&str]) -> Result<Command, String> {
    let arg = |i: usize| -> Result<String, String> {
        words
            .get(i)
            .map(|s| s.to_string())
            .ok_or(format!("missing argument {i}"))
    };
    let num = |i: usize| -> Result<u64, String> {
        arg(i)?
            .parse::<u64>()
            .map_err(|e| format!("argument {i}: {e}"))
    };
    let opt = |key: &str| -> Option<String> {
        words
            .iter()
            .find_map(|w| w.strip_prefix(&format!("{key}=")).map(String::from))
    };
    let flag = |key: &str| words.contains(&key);
    let ts = num(1)?;
    Ok(match words[0] {
        "db+" => Command::CreateDatabase {
            ts,
            name: arg(2)?,
            id: num(3)?,
            properties: opt("max")
                .map(|m| vec![(DB_MAX_COLLECTIONS_PROPERTY.to_string(), m)])
                .unwrap_or_default(),
        },
        "db-" => Command::DropDatabase { ts, name: arg(2)? },
        "db~" => Command::AlterDatabase {
            ts,
            name: arg(2)?,
            set: vec![(arg(3)?, arg(4)?)],
            delete: Vec::new(),
        },
        "coll+" => {
            let pk: u32 = opt("pk").map_or(Ok(0), |v| v.parse().map_err(|e| format!("pk: {e}")))?;
            let id = num(4)?;
            let parts = if pk > 0 { pk as u64 } else { 1 };
            let indexes: Vec<IndexSpec> = opt("index")
                .map(|f| vec![index(&f, &f)])
                .unwrap_or_default();
            Command::CreateCollection {
                ts,
                db: arg(2)?,
                id,
                partition_ids: (1..=parts).map(|i| id + i).collect(),
                index_ids: (0..indexes.len() as u64).map(|i| id + 100 + i).collect(),
                spec: spec(&arg(3)?, pk, &opt("desc").unwrap_or_default()),
                indexes,
                load: flag("load"),
            }
        }
        "coll-" => Command::DropCollection {
            ts,
            db: arg(2)?,
            name: arg(3)?,
        },
        "rename" => Command::RenameCollection {
            ts,
            db: arg(2)?,
            name: arg(3)?,
            new_name: arg(4)?,
        },
        "coll~" => Command::AlterCollection {
            ts,
            db: arg(2)?,
            name: arg(3)?,
            set: vec![(arg(4)?, arg(5)?)],
            delete: Vec::new(),
        },
        "part+" => Command::CreatePartition {
            ts,
            db: arg(2)?,
            collection: arg(3)?,
            name: arg(4)?,
            id: num(5)?,
        },
        "part-" => Command::DropPartition {
            ts,
            db: arg(2)?,
            collection: arg(3)?,
            name: arg(4)?,
        },
        "idx+" => Command::CreateIndexes {
            ts,
            db: arg(2)?,
            collection: arg(3)?,
            indexes: vec![index(&arg(4)?, &arg(5)?)],
            ids: vec![num(6)?],
        },
        "idx-" => Command::DropIndex {
            ts,
            db: arg(2)?,
            collection: arg(3)?,
            name: arg(4)?,
        },
        "idx~" => Command::AlterIndex {
            ts,
            db: arg(2)?,
            collection: arg(3)?,
            name: arg(4)?,
            set: vec![(arg(5)?, arg(6)?)],
            delete: Vec::new(),
        },
        "alias+" | "alias~" => Command::CreateAlias {
            ts,
            db: arg(2)?,
            alias: arg(3)?,
            collection: arg(4)?,
            alter: words[0] == "alias~",
        },
        "alias-" => Command::DropAlias {
            ts,
            db: arg(2)?,
            alias: arg(3)?,
        },
        "tick" => Command::Tick { ts },
        // field+ TS DB COLL NAME TYPE [KEY VALUE]: a nullable field.
        "field+" => {
            let mut field = Field {
                id: 0,
                name: arg(4)?,
                data_type: arg(5)?,
                element_type: String::new(),
                primary: false,
                partition_key: false,
                clustering_key: false,
                auto_id: false,
                nullable: true,
                dynamic: false,
                description: String::new(),
                default_value: None,
                type_params: Vec::new(),
                function_output: false,
            };
            if words.len() > 7 {
                field.type_params.push((arg(6)?, arg(7)?));
            }
            Command::AddField {
                ts,
                db: arg(2)?,
                collection: arg(3)?,
                field,
            }
        }
        "field~" => Command::AlterField {
            ts,
            db: arg(2)?,
            collection: arg(3)?,
            name: arg(4)?,
            set: vec![(arg(5)?, arg(6)?)],
        },
        "load" | "release" => Command::SetLoad {
            ts,
            db: arg(2)?,
            collection: arg(3)?,
            partitions: words[4..].iter().map(|s| s.to_string()).collect(),
            load: words[0] == "load",
        },
        other => return Err(format!("unknown op {other}")),
    })
}

fn show(s: &MilvusState) -> String {
    let mut out = format!("last_ts={}\n", s.last_ts);
    for d in s.databases.values() {
        out.push_str(&format!(
            "db {} id={} created={} props={:?}\n",
            d.name, d.id, d.created_ts, d.properties
        ));
        for c in d.collections.values() {
            let parts: Vec<String> = c
                .partitions
                .iter()
                .map(|p| format!("{}#{}{}", p.name, p.id, if p.loaded { "*" } else { "" }))
                .collect();
            let idx: Vec<String> = c
                .indexes
                .iter()
                .map(|i| format!("{}@{}#{}", i.spec.name, i.field_id, i.id))
                .collect();
            let sys: Vec<String> = c
                .system_fields
                .iter()
                .map(|f| format!("{}:{}", f.name, f.id))
                .collect();
            out.push_str(&format!(
                "  coll {} id={} created={} updated={} loaded={} parts=[{}] indexes=[{}] system=[{}] props={:?}\n",
                c.spec.name,
                c.id,
                c.created_ts,
                c.updated_ts,
                c.loaded,
                parts.join(" "),
                idx.join(" "),
                sys.join(" "),
                c.properties
            ));
        }
        for (a, id) in &d.aliases {
            out.push_str(&format!("  alias {a} -> {id}\n"));
        }
    }
    out
}

fn run_transcript(script: &str) -> String {
    let mut s = MilvusState::default();
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
        let result = match words[0] {
            "show" => show(&s),
            // fields DB COLL: the user fields, `name#id:type params`.
            "fields" => match s
                .db(words.get(1).copied().unwrap_or(""))
                .and_then(|d| d.collections.get(words.get(2).copied().unwrap_or("")))
            {
                Some(c) => c
                    .spec
                    .fields
                    .iter()
                    .map(|f| format!("{}#{}:{} {:?}\n", f.name, f.id, f.data_type, f.type_params))
                    .collect(),
                None => "no such collection\n".to_string(),
            },
            "events" => {
                let since = words.get(1).and_then(|w| w.parse().ok()).unwrap_or(0);
                match s.events_since(since) {
                    Ok(es) => es
                        .iter()
                        .map(|e| {
                            format!(
                                "{} {} db={}#{} coll={}#{} part={}#{} field={} index={} params={:?}\n",
                                e.ts,
                                e.kind,
                                e.db_name,
                                e.db_id,
                                e.collection_name,
                                e.collection_id,
                                e.partition_name,
                                e.partition_id,
                                e.field_id,
                                e.index_name,
                                if e.kind == "CreateCollection" { Vec::new() } else { e.params.clone() }
                            )
                        })
                        .collect(),
                    Err(oldest) => format!("too old, oldest {oldest}\n"),
                }
            }
            _ => match command(&words) {
                Ok(c) => {
                    // Every command must survive the wire: apply the decoded bytes.
                    let bytes = crate::meta::MetaCommand::Milvus(c).encode();
                    match crate::meta::MetaCommand::decode(&bytes) {
                        Ok(crate::meta::MetaCommand::Milvus(c)) => format!("{:?}\n", s.apply(&c)),
                        other => format!("decode failed: {other:?}\n"),
                    }
                }
                Err(e) => format!("bad line: {e}\n"),
            },
        };
        for l in result.lines() {
            out.push_str("> ");
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

#[test]
fn transcripts() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/meta/milvus/testdata");
    let rewrite = std::env::var_os("MAST_REWRITE_TRANSCRIPTS").is_some();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("testdata dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for path in files {
        let script = std::fs::read_to_string(&path).expect("read transcript");
        let got = run_transcript(&script);
        if rewrite {
            std::fs::write(&path, &got).expect("rewrite transcript");
        } else {
            assert_eq!(got, script, "transcript {} differs", path.display());
        }
    }
}

#[test]
fn event_history_is_bounded_and_says_how_old_it_goes() {
    let mut s = MilvusState::default();
    for i in 0..(DD_EVENTS_MAX as u64 + 10) {
        let ts = 10 + i * 2;
        let name = format!("c{i}");
        assert_eq!(
            s.apply(&Command::CreateCollection {
                ts,
                db: DEFAULT_DB.into(),
                id: 1000 + i * 10,
                partition_ids: vec![1001 + i * 10],
                spec: spec(&name, 0, ""),
                indexes: Vec::new(),
                index_ids: Vec::new(),
                load: false,
            }),
            Outcome::Done
        );
        // Keep the collection count low: drop it again.
        assert_eq!(
            s.apply(&Command::DropCollection {
                ts: ts + 1,
                db: DEFAULT_DB.into(),
                name,
            }),
            Outcome::Done
        );
    }
    assert_eq!(s.events.len(), DD_EVENTS_MAX);
    // Resuming is possible from the newest dropped event's timestamp on, not before.
    let dropped = s.events_dropped_ts;
    assert!(dropped > 0 && s.events.front().is_some_and(|e| e.ts >= dropped));
    assert_eq!(s.events_since(0), Err(dropped));
    assert_eq!(s.events_since(dropped - 1), Err(dropped));
    assert!(s.events_since(dropped).is_ok());
    // The last create (two events: collection and partition) and the last drop.
    let recent = s
        .events_since(s.last_ts - 2)
        .expect("recent history is kept");
    assert_eq!(recent.len(), 3);
    assert!(recent.windows(2).all(|w| w[0].ts <= w[1].ts));
}

fn arb_command() -> impl Strategy<Value = Command> {
    let db = prop::sample::select(vec!["default", "d1", "d2"]).prop_map(String::from);
    let coll = prop::sample::select(vec!["a", "b", "c"]).prop_map(String::from);
    let part = prop::sample::select(vec!["_default", "p1", "p2"]).prop_map(String::from);
    let ts = 1u64..200;
    prop_oneof![
        (ts.clone(), db.clone(), 1000u64..1100).prop_map(|(ts, name, id)| {
            Command::CreateDatabase {
                ts,
                name,
                id,
                properties: vec![("k".into(), "v".into())],
            }
        }),
        (ts.clone(), db.clone()).prop_map(|(ts, name)| Command::DropDatabase { ts, name }),
        (
            ts.clone(),
            db.clone(),
            coll.clone(),
            2000u64..3000,
            0u32..3,
            any::<bool>()
        )
            .prop_map(|(ts, db, name, id, pk, load)| {
                let parts = if pk > 0 { u64::from(pk) } else { 1 };
                Command::CreateCollection {
                    ts,
                    db,
                    id,
                    partition_ids: (1..=parts).map(|i| id * 10 + i).collect(),
                    spec: spec(&name, pk, ""),
                    indexes: vec![index("vector", "vector")],
                    index_ids: vec![id * 10],
                    load,
                }
            }),
        (ts.clone(), db.clone(), coll.clone()).prop_map(|(ts, db, name)| Command::DropCollection {
            ts,
            db,
            name
        }),
        (ts.clone(), db.clone(), coll.clone(), coll.clone()).prop_map(
            |(ts, db, name, new_name)| {
                Command::RenameCollection {
                    ts,
                    db,
                    name,
                    new_name,
                }
            }
        ),
        (
            ts.clone(),
            db.clone(),
            coll.clone(),
            part.clone(),
            5000u64..6000
        )
            .prop_map(|(ts, db, collection, name, id)| Command::CreatePartition {
                ts,
                db,
                collection,
                name,
                id
            }),
        (ts.clone(), db.clone(), coll.clone(), part.clone()).prop_map(
            |(ts, db, collection, name)| {
                Command::DropPartition {
                    ts,
                    db,
                    collection,
                    name,
                }
            }
        ),
        (
            ts.clone(),
            db.clone(),
            coll.clone(),
            coll.clone(),
            any::<bool>()
        )
            .prop_map(|(ts, db, alias, collection, alter)| Command::CreateAlias {
                ts,
                db,
                alias: format!("al_{alias}"),
                collection,
                alter
            }),
        (ts.clone(), db.clone(), coll.clone(), any::<bool>()).prop_map(
            |(ts, db, collection, load)| {
                Command::SetLoad {
                    ts,
                    db,
                    collection,
                    partitions: Vec::new(),
                    load,
                }
            }
        ),
        (ts, db, coll).prop_map(|(ts, db, collection)| Command::DropIndex {
            ts,
            db,
            collection,
            name: "vector".into()
        }),
    ]
}

proptest! {
    /// A snapshot taken anywhere restores to an equal state that then evolves identically.
    #[test]
    fn snapshot_round_trip(cmds in prop::collection::vec(arb_command(), 0..60), cut in 0usize..60) {
        let mut a = MilvusState::default();
        let cut = cut.min(cmds.len());
        // Increasing timestamps, so most commands apply (a random one would mostly be stale).
        let cmds: Vec<Command> = cmds.into_iter().enumerate().map(|(i, c)| c.with_ts(i as u64 + 1)).collect();
        for c in &cmds[..cut] {
            a.apply(c);
        }
        let mut b = MilvusState::restore(&a.snapshot()).expect("own snapshot restores");
        prop_assert_eq!(&a, &b);
        for c in &cmds[cut..] {
            prop_assert_eq!(a.apply(c), b.apply(c));
        }
        prop_assert_eq!(&a, &b);
    }

    #[test]
    fn garbage_snapshots_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = MilvusState::restore(&bytes);
    }
}

#[test]
fn event_history_is_bounded_by_time_and_by_the_configured_count() {
    let ms = |physical: u64| physical << 18;
    let mut s = MilvusState {
        history_limits: history::HistoryLimits {
            entries_max: 3,
            ms: 1_000,
        },
        ..MilvusState::default()
    };
    let db = |s: &mut MilvusState, ts: u64, name: &str| {
        s.apply(&Command::CreateDatabase {
            ts,
            name: name.into(),
            id: ts,
            properties: Vec::new(),
        })
    };
    for (i, t) in [100u64, 200, 300, 400].into_iter().enumerate() {
        assert_eq!(db(&mut s, ms(t), &format!("d{i}")), Outcome::Done);
    }
    // Four events, three kept: the count bound dropped the oldest.
    let kept: Vec<u64> = s.events.iter().map(|e| e.ts >> 18).collect();
    assert_eq!(kept, [200, 300, 400]);
    assert_eq!(s.events_dropped_ts, ms(100));
    // A tick 1,250 ms later: events more than 1,000 ms older than it go (200 only).
    assert_eq!(s.apply(&Command::Tick { ts: ms(1_250) }), Outcome::Done);
    let kept: Vec<u64> = s.events.iter().map(|e| e.ts >> 18).collect();
    assert_eq!(kept, [300, 400]);
    assert_eq!(s.events_since(ms(150)), Err(ms(200)));
    assert_eq!(s.events_since(ms(200)).map(|e| e.len()), Ok(2));
    // Exactly at the bound is kept.
    assert_eq!(s.apply(&Command::Tick { ts: ms(1_300) }), Outcome::Done);
    assert_eq!(s.events.len(), 2);
    // A snapshot from a node keeping more is trimmed to this node's count on restore.
    let mut big = MilvusState::default();
    big.history_limits.entries_max = DD_EVENTS_MAX + 10;
    for i in 0..(DD_EVENTS_MAX as u64 / 2 + 5) {
        assert_eq!(db(&mut big, ms(10 + i), &format!("x{i}")), Outcome::Done);
        assert_eq!(
            big.apply(&Command::DropDatabase {
                ts: ms(10 + i) + 1,
                name: format!("x{i}"),
            }),
            Outcome::Done
        );
    }
    assert_eq!(big.events.len(), DD_EVENTS_MAX + 10);
    let restored = MilvusState::restore(&big.snapshot()).expect("restore");
    assert_eq!(restored.events.len(), DD_EVENTS_MAX);
    assert!(restored.events.iter().eq(big.events.iter().skip(10)));
    assert_eq!(restored.events_dropped_ts, big.events[9].ts);
}
