//! Transcript tests of the registry's apply rules (`testdata/*.txt`; rewrite with
//! MAST_REWRITE_TRANSCRIPTS=1) and the snapshot round trip as a property.

use super::*;
use crate::meta::{MetaCommand, MetaOutcome, MetaTable};
use crate::replica::StateMachine;
use proptest::prelude::*;

/// `key=value` words of a line.
fn kv<'a>(words: &[&'a str], key: &str) -> Option<&'a str> {
    words
        .iter()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

fn role(w: &str) -> NodeRole {
    match w {
        "data" => NodeRole::Data,
        "meta" => NodeRole::Meta,
        other => panic!("role {other}"),
    }
}

fn num(words: &[&str], key: &str, default: u64) -> u64 {
    kv(words, key).map_or(default, |v| v.parse().expect("number"))
}

fn opt(words: &[&str], key: &str) -> Option<String> {
    kv(words, key).map(String::from)
}

fn show_state(s: &CubefsState) -> String {
    let mut out = format!(
        "settings frozen={} threshold_ppm={} cap={} created_ms={} info={:?}\n",
        s.settings.disable_auto_alloc,
        s.settings.meta_node_threshold_ppm,
        s.settings.node_set_cap,
        s.settings.created_ms,
        s.settings.node_info
    );
    for z in s.zones.values() {
        out.push_str(&format!(
            "zone {} available={} media={} selectors={}/{}/{}/{}\n",
            z.name,
            z.available,
            z.data_media_type,
            z.data_nodeset_selector,
            z.meta_nodeset_selector,
            z.data_node_selector,
            z.meta_node_selector
        ));
    }
    for set in s.node_sets.values() {
        let (d, m) = s.set_counts(set.id);
        out.push_str(&format!(
            "set {} zone={} cap={} data={d} meta={m} selectors={}/{}\n",
            set.id, set.zone, set.capacity, set.data_node_selector, set.meta_node_selector
        ));
    }
    for n in s.nodes.values() {
        out.push_str(&format!(
            "node {} {} id={} zone={} set={} media={} ports={}/{}\n",
            n.role.name(),
            n.addr,
            n.id,
            n.zone,
            n.node_set,
            n.media_type,
            n.heartbeat_port,
            n.replica_port
        ));
    }
    out
}

/// Runs a transcript through the whole meta table (encode, decode, apply), so the domain's
/// wiring is covered too.
fn run_transcript(script: &str) -> String {
    let mut t = MetaTable::empty();
    let mut out = String::new();
    let apply = |t: &mut MetaTable, cmd: CubefsCommand| -> String {
        let next = t.applied() + 1;
        match t.apply(next, &MetaCommand::Cubefs(cmd).encode()) {
            MetaOutcome::Cubefs(o) => format!("{o:?}"),
            other => format!("unexpected {other:?}"),
        }
    };
    for line in script.lines() {
        if line.starts_with("> ") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.is_empty() || w[0].starts_with('#') {
            continue;
        }
        let now_ms = num(&w, "now", 1_000);
        let result = match w[0] {
            "add" => apply(
                &mut t,
                CubefsCommand::AddNode {
                    role: role(w[1]),
                    addr: w[2].into(),
                    zone: kv(&w, "zone").unwrap_or("").into(),
                    heartbeat_port: kv(&w, "hb").unwrap_or("").into(),
                    replica_port: kv(&w, "rp").unwrap_or("").into(),
                    media_type: num(&w, "media", 0) as u32,
                    node_id: num(&w, "id", 0),
                    new_set_id: num(&w, "set", 0),
                    now_ms,
                },
            ),
            // addmany ROLE COUNT first=N zone=Z: COUNT nodes 10.0.<N/256>.<N%256>:17310 with
            // ids 2N, 2N+1 (node, spare set id) for N = first, first+1, ...
            "addmany" => {
                let count = w[2].parse::<u64>().expect("count");
                let first = num(&w, "first", 1);
                let mut results = Vec::new();
                for i in first..first + count {
                    results.push(apply(
                        &mut t,
                        CubefsCommand::AddNode {
                            role: role(w[1]),
                            addr: format!("10.0.{}.{}:17310", i / 256, i % 256),
                            zone: kv(&w, "zone").unwrap_or("").into(),
                            heartbeat_port: String::new(),
                            replica_port: String::new(),
                            media_type: num(&w, "media", 0) as u32,
                            node_id: 2 * i + 1000,
                            new_set_id: 2 * i + 1001,
                            now_ms,
                        },
                    ));
                }
                results.dedup();
                results.join("\n")
            }
            "move" => apply(
                &mut t,
                CubefsCommand::MoveNode {
                    role: role(w[1]),
                    addr: w[2].into(),
                    zone: kv(&w, "zone").unwrap_or("").into(),
                    new_set_id: num(&w, "set", 0),
                    now_ms,
                },
            ),
            "freeze" => apply(
                &mut t,
                CubefsCommand::Freeze {
                    enable: w[1] == "true",
                    now_ms,
                },
            ),
            "threshold" => apply(
                &mut t,
                CubefsCommand::SetThreshold {
                    ppm: w[1].parse().expect("ppm"),
                    now_ms,
                },
            ),
            "nodeinfo" => apply(
                &mut t,
                CubefsCommand::SetNodeInfo {
                    items: w[1..]
                        .iter()
                        .filter(|x| !x.starts_with("now="))
                        .map(|x| {
                            let (k, v) = x.split_once('=').expect("k=v");
                            (k.to_string(), v.to_string())
                        })
                        .collect(),
                    now_ms,
                },
            ),
            "zone" => apply(
                &mut t,
                CubefsCommand::UpdateZone {
                    name: w[1].into(),
                    enable: kv(&w, "enable").map(|v| v == "true"),
                    data_nodeset_selector: opt(&w, "dns"),
                    meta_nodeset_selector: opt(&w, "mns"),
                    data_node_selector: opt(&w, "dn"),
                    meta_node_selector: opt(&w, "mn"),
                },
            ),
            "nodeset" => apply(
                &mut t,
                CubefsCommand::UpdateNodeSet {
                    id: w[1].parse().expect("id"),
                    data_node_selector: opt(&w, "dn"),
                    meta_node_selector: opt(&w, "mn"),
                },
            ),
            "restore" => {
                let restored = MetaTable::restore(t.snapshot()).expect("own snapshot restores");
                let same = restored == t;
                t = restored;
                format!("restored, equal: {same}")
            }
            "state" => show_state(&t.cubefs).trim_end().to_string(),
            "vols" => show_vols(&t.cubefs).trim_end().to_string(),
            "createvol" => {
                let name = w[1].to_string();
                let mut mps = Vec::new();
                let step = num(&w, "mpstep", 10);
                let mp_specs: Vec<&str> = w.iter().filter_map(|x| x.strip_prefix("mp=")).collect();
                let mut start = num(&w, "mpstart", 0);
                for (i, spec) in mp_specs.iter().enumerate() {
                    let (id, hosts, peers) = partition_spec(&t.cubefs, NodeRole::Meta, spec);
                    let end = if i + 1 == mp_specs.len() {
                        u64::MAX >> 1
                    } else {
                        start + step - 1
                    };
                    mps.push(volumes::MetaPartition {
                        id,
                        vol: name.clone(),
                        start,
                        end,
                        hosts,
                        peers,
                        status: 2,
                        created_ms: now_ms,
                    });
                    start = end.wrapping_add(1);
                }
                let dps = dp_specs(&t.cubefs, &w, &name);
                let owner = kv(&w, "owner").unwrap_or("alice").to_string();
                apply(
                    &mut t,
                    CubefsCommand::vol(VolCommand::CreateVol {
                        vol: volume(&name, &owner, num(&w, "id", 1), now_ms),
                        meta_partitions: mps,
                        data_partitions: dps,
                        owner: user(
                            kv(&w, "ownerid").unwrap_or(&owner),
                            kv(&w, "ak").unwrap_or("AK0000000000000a"),
                            now_ms,
                        ),
                    }),
                )
            }
            "adddps" => {
                let dps = dp_specs(&t.cubefs, &w, w[1]);
                apply(
                    &mut t,
                    CubefsCommand::vol(VolCommand::AddDataPartitions {
                        vol: w[1].into(),
                        partitions: dps,
                    }),
                )
            }
            "updatevol" => apply(
                &mut t,
                CubefsCommand::vol(VolCommand::UpdateVol {
                    name: w[1].into(),
                    update: volumes::VolUpdate {
                        capacity_gb: kv(&w, "cap").map(|v| v.parse().expect("cap")),
                        description: opt(&w, "desc"),
                        follower_read: kv(&w, "fr").map(|v| v == "true"),
                        ..Default::default()
                    },
                }),
            ),
            "markdel" => apply(
                &mut t,
                CubefsCommand::vol(VolCommand::MarkVolDelete {
                    name: w[1].into(),
                    delete: kv(&w, "delete") != Some("false"),
                }),
            ),
            "dropvol" => apply(
                &mut t,
                CubefsCommand::vol(VolCommand::DropVol { name: w[1].into() }),
            ),
            "user" => {
                let mut u = user(w[1], kv(&w, "ak").unwrap_or("AK0000000000000b"), now_ms);
                u.user_type = num(&w, "type", 3) as u8;
                apply(
                    &mut t,
                    CubefsCommand::vol(VolCommand::CreateUser { user: u }),
                )
            }
            "sethosts" => {
                let r = role(w[1]);
                let list = |k: &str| -> Vec<String> {
                    kv(&w, k)
                        .unwrap_or("")
                        .split(',')
                        .filter(|h| !h.is_empty())
                        .map(String::from)
                        .collect()
                };
                let hosts = list("hosts");
                let (_, _, peers) = partition_spec(&t.cubefs, r, &format!("0:{}", hosts.join(",")));
                apply(
                    &mut t,
                    CubefsCommand::vol(VolCommand::SetHosts {
                        role: r,
                        id: w[2].parse().expect("id"),
                        expect_hosts: list("expect"),
                        hosts,
                        peers,
                    }),
                )
            }
            "decom" => apply(
                &mut t,
                CubefsCommand::vol(VolCommand::SetDecommission {
                    role: role(w[1]),
                    addr: w[2].into(),
                    on: kv(&w, "on") == Some("true"),
                }),
            ),
            "decoms" => format!("{:?}", t.cubefs.vt.decommissioning),
            // intend|abandon|deldone ROLE ID:host,host,... [term=T] [now=MS]
            "intend" | "abandon" | "deldone" => {
                let r = role(w[1]);
                let (id, hosts, _) = partition_spec(&t.cubefs, r, w[2]);
                let replicas = hosts
                    .into_iter()
                    .map(|addr| volumes::ReplicaRef { role: r, id, addr })
                    .collect();
                let cmd = match w[0] {
                    "intend" => VolCommand::IntendCreate {
                        replicas,
                        intent: volumes::Intent {
                            term: num(&w, "term", 1),
                            since_ms: now_ms,
                        },
                    },
                    "abandon" => VolCommand::AbandonCreate { replicas },
                    _ => VolCommand::DeleteDone { replicas },
                };
                apply(&mut t, CubefsCommand::vol(cmd))
            }
            "marks" => show_marks(&t.cubefs).trim_end().to_string(),
            // split VOL LAST END mp=ID:hosts... [mpstep=N]: new mps from END+1, N apart.
            "split" => {
                let end: u64 = w[3].parse().expect("end");
                let step = num(&w, "mpstep", 10);
                let specs: Vec<&str> = w.iter().filter_map(|x| x.strip_prefix("mp=")).collect();
                let mut start = end.wrapping_add(1);
                let mut new = Vec::new();
                for (i, spec) in specs.iter().enumerate() {
                    let (id, hosts, peers) = partition_spec(&t.cubefs, NodeRole::Meta, spec);
                    let e = if i + 1 == specs.len() {
                        u64::MAX >> 1
                    } else {
                        start + step - 1
                    };
                    new.push(volumes::MetaPartition {
                        id,
                        vol: w[1].into(),
                        start,
                        end: e,
                        hosts,
                        peers,
                        status: 2,
                        created_ms: now_ms,
                    });
                    start = e.wrapping_add(1);
                }
                apply(
                    &mut t,
                    CubefsCommand::vol(VolCommand::SplitMetaPartition {
                        vol: w[1].into(),
                        last: w[2].parse().expect("last"),
                        end,
                        new,
                    }),
                )
            }
            "deluser" => apply(
                &mut t,
                CubefsCommand::vol(VolCommand::DeleteUser { id: w[1].into() }),
            ),
            other => panic!("unknown transcript command {other}"),
        };
        for l in result.lines() {
            out.push_str("> ");
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// `ID:host,host,...` → (id, hosts, peers with the registry's node ids; 0 if unknown).
fn partition_spec(
    s: &CubefsState,
    role: NodeRole,
    spec: &str,
) -> (u64, Vec<String>, Vec<volumes::Peer>) {
    let (id, hosts) = spec.split_once(':').expect("ID:hosts");
    let hosts: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect();
    let peers = hosts
        .iter()
        .map(|h| volumes::Peer {
            id: s.node(role, h).map_or(0, |n| n.id),
            addr: h.clone(),
        })
        .collect();
    (id.parse().expect("partition id"), hosts, peers)
}

fn dp_specs(s: &CubefsState, w: &[&str], vol: &str) -> Vec<volumes::DataPartition> {
    w.iter()
        .filter_map(|x| x.strip_prefix("dp="))
        .map(|spec| {
            let (id, hosts, peers) = partition_spec(s, NodeRole::Data, spec);
            volumes::DataPartition {
                id,
                vol: vol.to_string(),
                replica_num: num(w, "replicas", hosts.len() as u64) as u8,
                hosts,
                peers,
                status: 2,
                media_type: 1,
                created_ms: num(w, "now", 1_000),
            }
        })
        .collect()
}

fn volume(name: &str, owner: &str, id: u64, now_ms: u64) -> volumes::Volume {
    volumes::Volume {
        id,
        name: name.into(),
        owner: owner.into(),
        capacity_gb: 10,
        dp_replica_num: 3,
        mp_replica_num: 3,
        dp_size_gb: 120,
        zone_name: "default".into(),
        cross_zone: false,
        follower_read: false,
        meta_follower_read: false,
        authenticate: false,
        enable_quota: false,
        dp_read_only_when_vol_full: false,
        description: String::new(),
        delete_lock_time_h: 0,
        media_type: 1,
        status: 0,
        created_ms: now_ms,
    }
}

fn user(id: &str, ak: &str, now_ms: u64) -> volumes::User {
    volumes::User {
        id: id.into(),
        access_key: ak.into(),
        secret_key: "S".repeat(32),
        user_type: 3,
        description: String::new(),
        created_ms: now_ms,
        own_vols: vec![],
    }
}

fn show_vols(s: &CubefsState) -> String {
    let mut out = String::new();
    for v in s.vt.vols.values() {
        out.push_str(&format!(
            "vol {} id={} owner={} cap={} status={} fr={} desc={:?}\n",
            v.name, v.id, v.owner, v.capacity_gb, v.status, v.follower_read, v.description
        ));
    }
    for m in s.vt.mps.values() {
        out.push_str(&format!(
            "mp {} vol={} [{}, {}] hosts={}\n",
            m.id,
            m.vol,
            m.start,
            m.end,
            m.hosts.join(",")
        ));
    }
    for d in s.vt.dps.values() {
        out.push_str(&format!(
            "dp {} vol={} replicas={} hosts={}\n",
            d.id,
            d.vol,
            d.replica_num,
            d.hosts.join(",")
        ));
    }
    for u in s.vt.users.values() {
        out.push_str(&format!(
            "user {} ak={} type={} owns={:?}\n",
            u.id, u.access_key, u.user_type, u.own_vols
        ));
    }
    out
}

fn show_marks(s: &CubefsState) -> String {
    let mut out = String::new();
    for (r, i) in &s.vt.creating {
        out.push_str(&format!(
            "creating {} {} on {} term={} since={}\n",
            r.role.name(),
            r.id,
            r.addr,
            i.term,
            i.since_ms
        ));
    }
    for r in &s.vt.deleting {
        out.push_str(&format!(
            "deleting {} {} on {}\n",
            r.role.name(),
            r.id,
            r.addr
        ));
    }
    if out.is_empty() {
        out.push_str("no marks\n");
    }
    out
}

fn check_transcript(name: &str) {
    let path = format!(
        "{}/src/meta/cubefs/testdata/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let script = std::fs::read_to_string(&path).expect("transcript");
    let got = run_transcript(&script);
    if std::env::var_os("MAST_REWRITE_TRANSCRIPTS").is_some() {
        std::fs::write(&path, &got).expect("rewrite transcript");
        return;
    }
    assert_eq!(
        got, script,
        "transcript {name} differs (MAST_REWRITE_TRANSCRIPTS=1 rewrites)"
    );
}

#[test]
fn registration_transcript() {
    check_transcript("registration.txt");
}

#[test]
fn volumes_transcript() {
    check_transcript("volumes.txt");
}

#[test]
fn replica_marks_transcript() {
    check_transcript("marks.txt");
}

#[test]
fn meta_partition_split_transcript() {
    check_transcript("split.txt");
}

#[test]
fn settings_transcript() {
    check_transcript("settings.txt");
}

fn command() -> impl Strategy<Value = CubefsCommand> {
    let addr = (1u8..6).prop_map(|i| format!("127.0.0.{i}:17310"));
    let zone = prop::sample::select(vec!["", "default", "z1", "z2"]).prop_map(String::from);
    let selector = prop::option::of(
        prop::sample::select(vec!["RoundRobin", "Straw", "bogus"]).prop_map(String::from),
    );
    prop_oneof![
        4 => (
            any::<bool>(),
            addr,
            zone.clone(),
            0u32..3,
            1u64..40,
            1u64..40
        )
            .prop_map(|(data, addr, zone, media_type, node_id, new_set_id)| {
                CubefsCommand::AddNode {
                    role: if data { NodeRole::Data } else { NodeRole::Meta },
                    addr,
                    zone,
                    heartbeat_port: "17330".into(),
                    replica_port: "17340".into(),
                    media_type,
                    node_id,
                    new_set_id,
                    now_ms: 5,
                }
            }),
        2 => (any::<bool>(), (1u8..6).prop_map(|i| format!("127.0.0.{i}:17310")), zone.clone(), 1u64..40)
            .prop_map(|(data, addr, zone, new_set_id)| CubefsCommand::MoveNode {
                role: if data { NodeRole::Data } else { NodeRole::Meta },
                addr,
                zone,
                new_set_id,
                now_ms: 6,
            }),
        1 => any::<bool>().prop_map(|enable| CubefsCommand::Freeze { enable, now_ms: 7 }),
        1 => (0u32..1_200_000).prop_map(|ppm| CubefsCommand::SetThreshold { ppm, now_ms: 8 }),
        1 => (prop::sample::select(vec!["batchCount", "loadFactor", "nope"]), "[0-9x]{0,3}")
            .prop_map(|(k, v)| CubefsCommand::SetNodeInfo {
                items: vec![(k.to_string(), v)],
                now_ms: 9
            }),
        1 => (zone, prop::option::of(any::<bool>()), selector.clone()).prop_map(
            |(name, enable, s)| CubefsCommand::UpdateZone {
                name,
                enable,
                data_nodeset_selector: s.clone(),
                meta_nodeset_selector: None,
                data_node_selector: None,
                meta_node_selector: s,
            }
        ),
        1 => (1u64..40, selector).prop_map(|(id, s)| CubefsCommand::UpdateNodeSet {
            id,
            data_node_selector: s,
            meta_node_selector: None,
        }),
        3 => vol_command(),
    ]
}

fn vol_command() -> impl Strategy<Value = CubefsCommand> {
    let name = prop::sample::select(vec!["vola", "volb", "volc"]).prop_map(String::from);
    let host = (1u8..6).prop_map(|i| format!("127.0.0.{i}:17310"));
    let owner = prop::sample::select(vec!["alice", "bob"]);
    let mark_host = host.clone();
    prop_oneof![
        2 => (240u64..244, prop::collection::vec(mark_host, 1..3), 0u8..3, 1u64..4)
            .prop_map(|(id, hosts, op, term)| {
                let replicas = hosts
                    .into_iter()
                    .map(|addr| volumes::ReplicaRef { role: NodeRole::Data, id, addr })
                    .collect();
                CubefsCommand::vol(match op {
                    0 => VolCommand::IntendCreate { replicas, intent: volumes::Intent { term, since_ms: 13 } },
                    1 => VolCommand::AbandonCreate { replicas },
                    _ => VolCommand::DeleteDone { replicas },
                })
            }),
        3 => (name.clone(), owner, 40u64..60, prop::collection::vec(host.clone(), 1..3), prop::collection::vec(host, 0..4))
            .prop_map(|(name, owner, id, mp_hosts, dp_hosts)| {
                let s = CubefsState::default();
                let mp = format!("{}:{}", id + 100, mp_hosts.join(","));
                let (mid, hosts, peers) = partition_spec(&s, NodeRole::Meta, &mp);
                let dp = format!("dp={}:{}", id + 200, dp_hosts.join(","));
                let dps = if dp_hosts.is_empty() { vec![] } else { dp_specs(&s, &[dp.as_str()], &name) };
                CubefsCommand::vol(VolCommand::CreateVol {
                    vol: volume(&name, owner, id, 11),
                    meta_partitions: vec![volumes::MetaPartition { id: mid, vol: name.clone(), start: 0, end: u64::MAX >> 1, hosts, peers, status: 2, created_ms: 11 }],
                    data_partitions: dps,
                    owner: user(owner, &format!("AK{owner:0>14}"), 11),
                })
            }),
        1 => (name.clone(), any::<bool>()).prop_map(|(name, delete)| CubefsCommand::vol(VolCommand::MarkVolDelete { name, delete })),
        1 => name.clone().prop_map(|name| CubefsCommand::vol(VolCommand::DropVol { name })),
        1 => (name, 0u64..5).prop_map(|(name, c)| CubefsCommand::vol(VolCommand::UpdateVol { name, update: volumes::VolUpdate { capacity_gb: Some(c), ..Default::default() } })),
        1 => prop::sample::select(vec!["alice", "carol"]).prop_map(|id| CubefsCommand::vol(VolCommand::CreateUser { user: user(id, &format!("AK{id:0>14}"), 12) })),
        1 => prop::sample::select(vec!["alice", "carol"]).prop_map(|id| CubefsCommand::vol(VolCommand::DeleteUser { id: id.into() })),
    ]
}

/// Gives a generated command's partition peers the node ids `s` registered for their hosts,
/// so volume commands can succeed (ids are not known when generating).
fn fixup(s: &CubefsState, c: &CubefsCommand) -> CubefsCommand {
    let mut c = c.clone();
    if let CubefsCommand::Vol(v) = &mut c {
        if let VolCommand::CreateVol {
            meta_partitions,
            data_partitions,
            ..
        } = v.as_mut()
        {
            for m in meta_partitions {
                for p in &mut m.peers {
                    p.id = s.node(NodeRole::Meta, &p.addr).map_or(0, |n| n.id);
                }
            }
            for d in data_partitions {
                for p in &mut d.peers {
                    p.id = s.node(NodeRole::Data, &p.addr).map_or(0, |n| n.id);
                }
            }
        }
    }
    c
}

proptest! {
    /// A snapshot taken anywhere restores to an equal registry that then evolves identically
    /// (the derived per-set counts included), and every command survives its encoding.
    #[test]
    fn snapshots_restore_equal_registries(
        cmds in prop::collection::vec(command(), 0..60),
        cut in 0usize..60,
    ) {
        let mut a = CubefsState::default();
        let cut = cut.min(cmds.len());
        for c in &cmds[..cut] {
            let c = &fixup(&a, c);
            let before = a.clone();
            // A refusal changes nothing, whatever it refuses.
            if let CubefsOutcome::Refused { .. } = a.apply(c) {
                prop_assert_eq!(&before, &a);
            }
        }
        let mut b = CubefsState::restore(&a.snapshot()).expect("restores");
        prop_assert_eq!(&a, &b);
        for c in &cmds[cut..] {
            let c = &fixup(&a, c);
            let decoded = MetaCommand::decode(&MetaCommand::Cubefs(c.clone()).encode());
            prop_assert_eq!(decoded, Ok(MetaCommand::Cubefs(c.clone())));
            prop_assert_eq!(a.apply(c), b.apply(c));
        }
        prop_assert_eq!(&a, &b);
        // Invariants: every node's set is in its zone and no set holds more than its capacity.
        for n in a.nodes.values() {
            let set = &a.node_sets[&n.node_set];
            prop_assert_eq!(&set.zone, &n.zone);
            let (d, m) = a.set_counts(set.id);
            prop_assert!(d <= set.capacity && m <= set.capacity);
        }
        // Every partition belongs to a volume and sits on registered nodes.
        prop_assert!(a.check_vol_tables().is_ok());
        // A replica is at most one of: recorded host, being created, pending delete.
        for r in a.vt.creating.keys().chain(a.vt.deleting.iter()) {
            let hosts = match r.role {
                NodeRole::Data => a.vt.dps.get(&r.id).map(|d| &d.hosts),
                NodeRole::Meta => a.vt.mps.get(&r.id).map(|m| &m.hosts),
            };
            prop_assert!(!hosts.is_some_and(|h| h.contains(&r.addr)), "{:?} is marked and recorded", r);
            prop_assert!(!(a.vt.creating.contains_key(r) && a.vt.deleting.contains(r)));
        }
        let created = cmds.iter().filter(|c| matches!(c, CubefsCommand::Vol(v) if matches!(**v, VolCommand::CreateVol { .. }))).count();
        prop_assert!(a.vt.vols.len() <= created);
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = CubefsState::restore(&bytes);
        // As a command body of this domain: refused or applied, never a panic.
        let mut cmd = vec![crate::meta::DOMAIN_CUBEFS, 1, 0, 0, 0, 0, 0, 0];
        cmd.extend_from_slice(&bytes);
        let mut t = MetaTable::empty();
        let _ = t.apply(1, &cmd);
    }

    /// Valid commands with bytes flipped decode to something or are refused; never a panic.
    #[test]
    fn flipped_commands_never_panic(c in command(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = MetaCommand::Cubefs(c).encode();
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let mut t = MetaTable::empty();
        let _ = t.apply(1, &bytes);
    }
}

#[test]
fn corrupt_snapshots_are_refused() {
    let mut s = CubefsState::default();
    s.apply(&CubefsCommand::AddNode {
        role: NodeRole::Meta,
        addr: "127.0.0.1:17210".into(),
        zone: String::new(),
        heartbeat_port: String::new(),
        replica_port: String::new(),
        media_type: 0,
        node_id: 1,
        new_set_id: 2,
        now_ms: 1,
    });
    let snap = s.snapshot();
    assert_eq!(CubefsState::restore(&snap).unwrap(), s);
    assert!(CubefsState::restore(&snap[..snap.len() / 2]).is_err());
    // A node whose set is missing is refused rather than restored half-wired.
    let bad = codec::encode(&SnapshotData {
        settings: Settings::default(),
        zones: vec![],
        node_sets: vec![],
        nodes: s.nodes.values().cloned().collect(),
    });
    assert!(CubefsState::restore_v1(&bad).is_err());
}

/// What the registry fixtures hold; written by this version, they must keep decoding.
fn fixture_commands() -> Vec<CubefsCommand> {
    vec![
        CubefsCommand::AddNode {
            role: NodeRole::Data,
            addr: "192.168.1.1:17310".into(),
            zone: "z1".into(),
            heartbeat_port: "17330".into(),
            replica_port: "17340".into(),
            media_type: 2,
            node_id: 1000,
            new_set_id: 1001,
            now_ms: 1_764_950_400_000,
        },
        CubefsCommand::AddNode {
            role: NodeRole::Meta,
            addr: "192.168.1.1:17210".into(),
            zone: "z1".into(),
            heartbeat_port: String::new(),
            replica_port: String::new(),
            media_type: 0,
            node_id: 1002,
            new_set_id: 1003,
            now_ms: 1_764_950_400_001,
        },
        CubefsCommand::Freeze {
            enable: true,
            now_ms: 1_764_950_400_002,
        },
        CubefsCommand::SetThreshold {
            ppm: 800_000,
            now_ms: 1_764_950_400_003,
        },
        CubefsCommand::SetNodeInfo {
            items: vec![("batchCount".into(), "64".into())],
            now_ms: 1_764_950_400_004,
        },
        CubefsCommand::UpdateZone {
            name: "z1".into(),
            enable: Some(false),
            data_nodeset_selector: Some("Straw".into()),
            meta_nodeset_selector: None,
            data_node_selector: None,
            meta_node_selector: Some("CarryWeight".into()),
        },
        CubefsCommand::UpdateNodeSet {
            id: 1001,
            data_node_selector: Some("AvailableSpaceFirst".into()),
            meta_node_selector: None,
        },
    ]
}

/// `MAST_WRITE_FIXTURES=1` writes them anew (only when a format version is added: the old
/// files must stay and keep passing).
#[test]
fn fixtures_written_by_version_1_still_decode() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/meta/cubefs/testdata");
    let cmds = fixture_commands();
    let mut state = CubefsState::default();
    for c in &cmds {
        state.apply(c);
    }
    let entries: Vec<u8> = {
        // Length-prefixed command encodings, one file for all of them.
        let mut out = Vec::new();
        for c in &cmds {
            let b = MetaCommand::Cubefs(c.clone()).encode();
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(&b);
        }
        out
    };
    if std::env::var_os("MAST_WRITE_FIXTURES").is_some() {
        std::fs::write(dir.join("commands-v1.bin"), &entries).expect("write fixture");
        std::fs::write(
            dir.join("section-v1.bin"),
            codec::encode(&state.registry_data()),
        )
        .expect("write fixture");
    }
    let bytes = std::fs::read(dir.join("commands-v1.bin")).expect("commands fixture");
    let mut at = 0;
    let mut decoded = Vec::new();
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        decoded.push(MetaCommand::decode(&bytes[at + 4..at + 4 + len]).expect("decodes"));
        at += 4 + len;
    }
    let want: Vec<MetaCommand> = cmds.into_iter().map(MetaCommand::Cubefs).collect();
    assert_eq!(decoded, want);
    let section = std::fs::read(dir.join("section-v1.bin")).expect("section fixture");
    assert_eq!(CubefsState::restore_v1(&section).expect("restores"), state);
}

/// Volume commands and a version 2 section, written by this version; they must keep
/// decoding (`MAST_WRITE_FIXTURES=1` writes them anew only when a format version is added).
#[test]
fn fixtures_of_volume_commands_still_decode() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/meta/cubefs/testdata");
    let mut state = CubefsState::default();
    let mut cmds = fixture_commands();
    cmds.push(CubefsCommand::UpdateZone {
        name: "z1".into(),
        enable: Some(true),
        data_nodeset_selector: None,
        meta_nodeset_selector: None,
        data_node_selector: None,
        meta_node_selector: None,
    });
    let peers = |addr: &str, id: u64| {
        vec![volumes::Peer {
            id,
            addr: addr.into(),
        }]
    };
    let vol_cmds = vec![
        CubefsCommand::vol(VolCommand::CreateVol {
            vol: volume("vol1", "alice", 2000, 1_764_950_400_010),
            meta_partitions: vec![volumes::MetaPartition {
                id: 2001,
                vol: "vol1".into(),
                start: 0,
                end: u64::MAX >> 1,
                hosts: vec!["192.168.1.1:17210".into()],
                peers: peers("192.168.1.1:17210", 1002),
                status: 2,
                created_ms: 1_764_950_400_010,
            }],
            data_partitions: vec![volumes::DataPartition {
                id: 2002,
                vol: "vol1".into(),
                replica_num: 1,
                hosts: vec!["192.168.1.1:17310".into()],
                peers: peers("192.168.1.1:17310", 1000),
                status: 2,
                media_type: 2,
                created_ms: 1_764_950_400_010,
            }],
            owner: user("alice", "AK0000000000000a", 1_764_950_400_010),
        }),
        CubefsCommand::vol(VolCommand::UpdateVol {
            name: "vol1".into(),
            update: volumes::VolUpdate {
                capacity_gb: Some(30),
                description: Some("d".into()),
                ..Default::default()
            },
        }),
        CubefsCommand::vol(VolCommand::CreateUser {
            user: user("carol", "AK00000000000ccc", 1_764_950_400_011),
        }),
        CubefsCommand::vol(VolCommand::SetHosts {
            role: NodeRole::Data,
            id: 2002,
            expect_hosts: vec!["192.168.1.1:17310".into()],
            hosts: vec!["192.168.1.1:17310".into()],
            peers: peers("192.168.1.1:17310", 1000),
        }),
        CubefsCommand::vol(VolCommand::SetDecommission {
            role: NodeRole::Meta,
            addr: "192.168.1.1:17210".into(),
            on: true,
        }),
        CubefsCommand::vol(VolCommand::AddDataPartitions {
            vol: "vol1".into(),
            partitions: vec![],
        }),
        CubefsCommand::vol(VolCommand::MarkVolDelete {
            name: "vol1".into(),
            delete: false,
        }),
        CubefsCommand::vol(VolCommand::DeleteUser { id: "carol".into() }),
    ];
    cmds.extend(vol_cmds.iter().cloned());
    for c in &cmds {
        state.apply(c);
    }
    assert_eq!(state.vt.vols["vol1"].capacity_gb, 30);
    let mut entries = Vec::new();
    for c in &vol_cmds {
        let b = MetaCommand::Cubefs(c.clone()).encode();
        entries.extend_from_slice(&(b.len() as u32).to_le_bytes());
        entries.extend_from_slice(&b);
    }
    if std::env::var_os("MAST_WRITE_FIXTURES").is_some() {
        std::fs::write(dir.join("commands-vol-v1.bin"), &entries).expect("write fixture");
        std::fs::write(dir.join("section-v3.bin"), state.snapshot()).expect("write fixture");
    }
    let bytes = std::fs::read(dir.join("commands-vol-v1.bin")).expect("commands fixture");
    let mut at = 0;
    let mut decoded = Vec::new();
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        decoded.push(MetaCommand::decode(&bytes[at + 4..at + 4 + len]).expect("decodes"));
        at += 4 + len;
    }
    let want: Vec<MetaCommand> = vol_cmds.into_iter().map(MetaCommand::Cubefs).collect();
    assert_eq!(decoded, want);
    let section = std::fs::read(dir.join("section-v2.bin")).expect("section fixture");
    assert_eq!(
        CubefsState::restore_version(2, &section).expect("restores"),
        state
    );
    let section = std::fs::read(dir.join("section-v3.bin")).expect("section fixture");
    assert_eq!(
        CubefsState::restore_version(3, &section).expect("restores"),
        state
    );
}
