//! Host placement for new partitions (reference §9 `getHostFromNormalZone`), as a pure
//! function of a topology snapshot and the leader's selector cursors.
//!
//! Zones → node sets → nodes: a zone list is normalised at volume creation; the wanted zone
//! count follows `crossZone`; candidate zones must be available and hold enough writable
//! nodes; inside one zone every replica comes from one node set (chosen by the zone's node
//! set selector) and the nodes by the set's node selector; across zones either one host per
//! zone (3+ candidate zones) or "2+1". No two replicas share an IP unless allowed. Failures
//! carry CubeFS's codes (23/26/27/28 data, 24/30/51/29 meta).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::meta::cubefs::NodeRole;

/// CubeFS's "no room" codes (§2), by node role.
pub const CODE_NO_DATA_NODE: i32 = 23;
pub const CODE_NO_META_NODE: i32 = 24;
pub const CODE_NOT_ENOUGH_DATA_NODES: i32 = 26;
pub const CODE_NO_DATA_ZONE: i32 = 27;
pub const CODE_NO_DATA_NODE_SET: i32 = 28;
pub const CODE_NO_META_NODE_SET: i32 = 29;
pub const CODE_NOT_ENOUGH_META_NODES: i32 = 30;
pub const CODE_NO_META_ZONE: i32 = 51;

/// A node as placement sees it: registry facts plus the leader's writability verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Cand {
    pub id: u64,
    pub addr: String,
    pub zone: String,
    pub node_set: u64,
    /// §4's rules (active, free space/memory over the reserve, under the partition limit).
    pub writable: bool,
    pub free_bytes: u64,
}

impl Cand {
    /// The host part of `ip:port`.
    pub fn ip(&self) -> &str {
        self.addr.rsplit_once(':').map_or(&self.addr, |(h, _)| h)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ZoneInfo {
    pub name: String,
    pub available: bool,
    pub nodeset_selector: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SetInfo {
    pub id: u64,
    pub zone: String,
    pub node_selector: String,
}

/// Everything placement reads, for one node role.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    pub zones: Vec<ZoneInfo>,
    pub sets: Vec<SetInfo>,
    pub nodes: Vec<Cand>,
}

/// One placement request.
#[derive(Debug, Clone)]
pub struct Want {
    pub role: NodeRole,
    pub replicas: usize,
    /// The volume's zones (empty only for a cross-zone volume naming none).
    pub zones: Vec<String>,
    pub cross_zone: bool,
    pub allow_same_ip: bool,
    /// Hosts that must not be chosen (a partition's current hosts when adding a replica).
    pub exclude: Vec<String>,
}

/// The leader's selector memory: round-robin positions and CarryWeight carries. Losing it
/// (a leader change) only changes which valid hosts are chosen next.
#[derive(Debug, Clone, Default)]
pub struct Cursors {
    /// Next node set index per (role, zone) for RoundRobin.
    set_rr: HashMap<(NodeRole, String), usize>,
    /// Next node index per set for the RoundRobin node selector.
    node_rr: HashMap<u64, usize>,
    /// CarryWeight's carry per node address.
    carry: HashMap<String, f64>,
    /// Next zone for the cross-zone walk.
    zone_rr: usize,
    /// Straw's round counter (the draw's seed).
    straw_round: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceError {
    pub code: i32,
    pub msg: String,
}

fn err(code: i32, msg: impl Into<String>) -> PlaceError {
    PlaceError {
        code,
        msg: msg.into(),
    }
}

struct Codes {
    no_zone: i32,
    no_set: i32,
    not_enough: i32,
    none: i32,
}

fn codes(role: NodeRole) -> Codes {
    match role {
        NodeRole::Data => Codes {
            no_zone: CODE_NO_DATA_ZONE,
            no_set: CODE_NO_DATA_NODE_SET,
            not_enough: CODE_NOT_ENOUGH_DATA_NODES,
            none: CODE_NO_DATA_NODE,
        },
        NodeRole::Meta => Codes {
            no_zone: CODE_NO_META_ZONE,
            no_set: CODE_NO_META_NODE_SET,
            not_enough: CODE_NOT_ENOUGH_META_NODES,
            none: CODE_NO_META_NODE,
        },
    }
}

/// Chooses `want.replicas` hosts, in selection order (the caller shuffles the host list as
/// CubeFS does and keeps this order for the peers).
pub fn place(topo: &Topology, want: &Want, cur: &mut Cursors) -> Result<Vec<Cand>, PlaceError> {
    let c = codes(want.role);
    let role = want.role.name();
    if want.replicas == 0 {
        return Err(err(2, "replica count must be at least 1"));
    }
    let excluded: BTreeSet<&str> = want.exclude.iter().map(String::as_str).collect();
    let usable: Vec<&Cand> = topo
        .nodes
        .iter()
        .filter(|n| n.writable && !excluded.contains(n.addr.as_str()))
        .collect();
    if usable.is_empty() {
        return Err(err(
            c.none,
            format!("no {role} node available for creating a partition"),
        ));
    }
    // Step 1: the zones to consider.
    let zone_names: Vec<String> = if !want.zones.is_empty() {
        want.zones.clone()
    } else {
        let with_nodes: BTreeSet<&str> = topo.nodes.iter().map(|n| n.zone.as_str()).collect();
        with_nodes.into_iter().map(String::from).collect()
    };
    // Step 2: how many zones the replicas spread over.
    let wanted_zones = if !want.cross_zone {
        1
    } else if want.zones.is_empty() {
        2
    } else {
        want.zones.len().min(3)
    }
    .min(want.replicas);
    // Step 3: candidate zones with enough writable nodes.
    let per_zone_need = if wanted_zones == 1 {
        want.replicas
    } else if want.zones.len() > 1 || want.replicas == 1 {
        1
    } else {
        2
    };
    let writable_in = |zone: &str| usable.iter().filter(|n| n.zone == zone).count();
    let candidates: Vec<&ZoneInfo> = zone_names
        .iter()
        .filter_map(|z| topo.zones.iter().find(|zi| &zi.name == z))
        .filter(|z| z.available && writable_in(&z.name) >= per_zone_need)
        .collect();
    if candidates.is_empty() {
        return Err(err(
            c.no_zone,
            format!(
                "no zone available for creating a {role} partition: none of {zone_names:?} is \
                 available with {per_zone_need} writable {role} nodes"
            ),
        ));
    }
    let mut chosen: Vec<Cand> = Vec::new();
    if wanted_zones == 1 {
        let start = cur.zone_rr % candidates.len();
        cur.zone_rr = cur.zone_rr.wrapping_add(1);
        let zone = candidates[start];
        chosen =
            pick_in_zone(topo, want, &usable, zone, want.replicas, &[], cur).ok_or_else(|| {
                err(
                    c.no_set,
                    format!(
                        "no node set available for creating a {role} partition in zone {}: \
                         none has {} writable {role} nodes on distinct hosts",
                        zone.name, want.replicas
                    ),
                )
            })?;
    } else if candidates.len() >= 3 || want.replicas == 1 {
        // One host per zone, walking the zones round-robin until every replica has a host.
        let n = candidates.len();
        let start = cur.zone_rr % n;
        cur.zone_rr = cur.zone_rr.wrapping_add(1);
        let mut idle_rounds = 0;
        let mut i = 0;
        while chosen.len() < want.replicas && idle_rounds < n {
            let zone = candidates[(start + i) % n];
            i += 1;
            match pick_in_zone(topo, want, &usable, zone, 1, &chosen, cur) {
                Some(mut got) => {
                    idle_rounds = 0;
                    chosen.append(&mut got);
                }
                None => idle_rounds += 1,
            }
        }
    } else {
        // "2+1": of the next two zones, the one with less free space gets one replica.
        let n = candidates.len();
        let start = cur.zone_rr % n;
        cur.zone_rr = cur.zone_rr.wrapping_add(1);
        let a = candidates[start];
        let b = candidates[(start + 1) % n];
        let free = |z: &ZoneInfo| -> u128 {
            usable
                .iter()
                .filter(|n| n.zone == z.name)
                .map(|n| n.free_bytes as u128)
                .sum()
        };
        let (small, big) = if free(a) < free(b) { (a, b) } else { (b, a) };
        let big_part = pick_in_zone(topo, want, &usable, big, want.replicas - 1, &[], cur);
        if let Some(mut got) = big_part {
            chosen.append(&mut got);
            if let Some(mut one) = pick_in_zone(topo, want, &usable, small, 1, &chosen, cur) {
                chosen.append(&mut one);
            }
        }
    }
    if chosen.len() < want.replicas {
        return Err(err(
            c.not_enough,
            format!(
                "no enough {role} nodes for creating a partition: wanted {} got {}",
                want.replicas,
                chosen.len()
            ),
        ));
    }
    Ok(chosen)
}

/// `count` hosts from one node set of `zone` (the zone's node set selector decides which
/// set: the first, from its cursor, holding enough eligible nodes), avoiding the IPs of
/// `taken` unless same-IP replicas are allowed.
fn pick_in_zone(
    topo: &Topology,
    want: &Want,
    usable: &[&Cand],
    zone: &ZoneInfo,
    count: usize,
    taken: &[Cand],
    cur: &mut Cursors,
) -> Option<Vec<Cand>> {
    let mut sets: Vec<&SetInfo> = topo.sets.iter().filter(|s| s.zone == zone.name).collect();
    sets.sort_by_key(|s| s.id);
    if sets.is_empty() {
        return None;
    }
    let taken_ips: BTreeSet<&str> = taken.iter().map(Cand::ip).collect();
    let taken_addrs: BTreeSet<&str> = taken.iter().map(|c| c.addr.as_str()).collect();
    let eligible = |set: u64| -> Vec<&Cand> {
        usable
            .iter()
            .copied()
            .filter(|n| n.node_set == set && n.zone == zone.name)
            .filter(|n| !taken_addrs.contains(n.addr.as_str()))
            .filter(|n| want.allow_same_ip || !taken_ips.contains(n.ip()))
            .collect()
    };
    let distinct_ips = |nodes: &[&Cand]| -> usize {
        if want.allow_same_ip {
            nodes.len()
        } else {
            nodes.iter().map(|n| n.ip()).collect::<BTreeSet<_>>().len()
        }
    };
    let order: Vec<usize> = match zone.nodeset_selector.as_str() {
        // Most free space first (AvailableSpaceFirst, and CarryWeight/Straw at set level,
        // which CubeFS also weighs by free space).
        "AvailableSpaceFirst" | "CarryWeight" | "Straw" => {
            let mut idx: Vec<(u128, usize)> = sets
                .iter()
                .enumerate()
                .map(|(i, s)| (eligible(s.id).iter().map(|n| n.free_bytes as u128).sum(), i))
                .collect();
            idx.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            idx.into_iter().map(|(_, i)| i).collect()
        }
        _ => {
            let key = (want.role, zone.name.clone());
            let start = cur.set_rr.get(&key).copied().unwrap_or(0) % sets.len();
            (0..sets.len()).map(|k| (start + k) % sets.len()).collect()
        }
    };
    for i in order {
        let set = sets[i];
        let nodes = eligible(set.id);
        if distinct_ips(&nodes) < count {
            continue;
        }
        if zone.nodeset_selector != "AvailableSpaceFirst" {
            cur.set_rr
                .insert((want.role, zone.name.clone()), (i + 1) % sets.len());
        }
        return Some(pick_nodes(
            &set.node_selector,
            set.id,
            nodes,
            count,
            want,
            cur,
        ));
    }
    None
}

/// `count` nodes of one set by the set's node selector; callers checked there are enough
/// distinct IPs.
fn pick_nodes(
    selector: &str,
    set: u64,
    mut nodes: Vec<&Cand>,
    count: usize,
    want: &Want,
    cur: &mut Cursors,
) -> Vec<Cand> {
    nodes.sort_by_key(|n| n.id);
    let mut out: Vec<Cand> = Vec::with_capacity(count);
    let mut ips: BTreeSet<String> = BTreeSet::new();
    let fits = |n: &Cand, out: &[Cand], ips: &BTreeSet<String>| {
        !out.iter().any(|o| o.addr == n.addr) && (want.allow_same_ip || !ips.contains(n.ip()))
    };
    match selector {
        "RoundRobin" => {
            let start = cur.node_rr.get(&set).copied().unwrap_or(0) % nodes.len();
            let mut k = 0;
            while out.len() < count && k < nodes.len() {
                let n = nodes[(start + k) % nodes.len()];
                k += 1;
                if fits(n, &out, &ips) {
                    ips.insert(n.ip().to_string());
                    out.push(n.clone());
                }
            }
            cur.node_rr.insert(set, (start + k) % nodes.len());
        }
        "AvailableSpaceFirst" => {
            nodes.sort_by(|a, b| b.free_bytes.cmp(&a.free_bytes).then(a.id.cmp(&b.id)));
            for n in nodes {
                if out.len() < count && fits(n, &out, &ips) {
                    ips.insert(n.ip().to_string());
                    out.push(n.clone());
                }
            }
        }
        "Straw" => {
            // Each node draws straw length u^(1/weight); the longest straws win. The draw is
            // a hash of the node and a per-placement round, so it is reproducible.
            cur.straw_round = cur.straw_round.wrapping_add(1);
            let max_free = nodes.iter().map(|n| n.free_bytes).max().unwrap_or(1).max(1);
            let mut scored: Vec<(f64, &Cand)> = nodes
                .iter()
                .map(|n| {
                    let h = fnv(n.addr.as_bytes(), cur.straw_round);
                    let u = ((h >> 11) as f64 + 1.0) / ((1u64 << 53) as f64 + 1.0);
                    let w = (n.free_bytes as f64 / max_free as f64).max(1e-9);
                    (u.ln() / w, *n)
                })
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.id.cmp(&b.1.id)));
            for (_, n) in scored {
                if out.len() < count && fits(n, &out, &ips) {
                    ips.insert(n.ip().to_string());
                    out.push(n.clone());
                }
            }
        }
        _ => {
            // CarryWeight: every node's carry grows by its weight (free space relative to the
            // roomiest node), the largest carries win and pay 1 back, so less-chosen nodes
            // catch up while roomier nodes are chosen more often.
            let max_free = nodes.iter().map(|n| n.free_bytes).max().unwrap_or(1).max(1);
            for n in &nodes {
                let w = n.free_bytes as f64 / max_free as f64;
                let c = cur.carry.entry(n.addr.clone()).or_insert(0.0);
                *c = (*c + w).min(10.0);
            }
            let mut scored: Vec<(f64, &Cand)> = nodes
                .iter()
                .map(|n| (cur.carry.get(&n.addr).copied().unwrap_or(0.0), *n))
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.id.cmp(&b.1.id)));
            for (_, n) in scored {
                if out.len() < count && fits(n, &out, &ips) {
                    ips.insert(n.ip().to_string());
                    if let Some(c) = cur.carry.get_mut(&n.addr) {
                        *c -= 1.0;
                    }
                    out.push(n.clone());
                }
            }
        }
    }
    out
}

fn fnv(bytes: &[u8], seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    // Finalise so nearby seeds give unrelated draws.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// Zones by name, for callers validating a volume's zone list.
pub fn zone_names(topo: &Topology) -> BTreeMap<&str, &ZoneInfo> {
    topo.zones.iter().map(|z| (z.name.as_str(), z)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GB: u64 = 1 << 30;

    fn topo(spec: &[(&str, u64, &str, u64, bool)]) -> Topology {
        // (zone, set, ip, free GB, writable)
        let mut t = Topology::default();
        for (i, (zone, set, ip, free, writable)) in spec.iter().enumerate() {
            if !t.zones.iter().any(|z| z.name == *zone) {
                t.zones.push(ZoneInfo {
                    name: zone.to_string(),
                    available: true,
                    nodeset_selector: "RoundRobin".into(),
                });
            }
            if !t.sets.iter().any(|s| s.id == *set) {
                t.sets.push(SetInfo {
                    id: *set,
                    zone: zone.to_string(),
                    node_selector: "CarryWeight".into(),
                });
            }
            t.nodes.push(Cand {
                id: 100 + i as u64,
                addr: format!("{ip}:{}", 17310 + i),
                zone: zone.to_string(),
                node_set: *set,
                writable: *writable,
                free_bytes: free * GB,
            });
        }
        t
    }

    fn want(replicas: usize, zones: &[&str], cross: bool) -> Want {
        Want {
            role: NodeRole::Data,
            replicas,
            zones: zones.iter().map(|z| z.to_string()).collect(),
            cross_zone: cross,
            allow_same_ip: false,
            exclude: vec![],
        }
    }

    #[test]
    fn one_zone_takes_one_set_and_distinct_ips() {
        let t = topo(&[
            ("z", 1, "10.0.0.1", 100, true),
            ("z", 1, "10.0.0.1", 100, true),
            ("z", 1, "10.0.0.2", 100, true),
            ("z", 2, "10.0.0.3", 100, true),
            ("z", 2, "10.0.0.4", 100, true),
            ("z", 2, "10.0.0.5", 100, true),
        ]);
        let mut cur = Cursors::default();
        for _ in 0..6 {
            let got = place(&t, &want(3, &["z"], false), &mut cur).unwrap();
            // Set 1 has only two IPs, so every placement lands in set 2.
            assert!(got.iter().all(|n| n.node_set == 2), "{got:?}");
        }
        let mut w = want(3, &["z"], false);
        w.allow_same_ip = true;
        let sets: BTreeSet<u64> = (0..4)
            .map(|_| place(&t, &w, &mut cur).unwrap()[0].node_set)
            .collect();
        assert_eq!(sets.len(), 2, "round robin visits both sets");
    }

    #[test]
    fn no_room_errors_carry_cubefs_codes() {
        let t = topo(&[
            ("z", 1, "10.0.0.1", 100, true),
            ("z", 1, "10.0.0.2", 100, true),
            ("y", 2, "10.0.0.3", 100, false),
        ]);
        let mut cur = Cursors::default();
        let e = place(&t, &want(3, &["z"], false), &mut cur).unwrap_err();
        assert_eq!(e.code, CODE_NO_DATA_ZONE);
        let e = place(&t, &want(1, &["y"], false), &mut cur).unwrap_err();
        assert_eq!(e.code, CODE_NO_DATA_ZONE);
        let t2 = topo(&[
            ("z", 1, "10.0.0.1", 100, true),
            ("z", 1, "10.0.0.2", 100, true),
            ("z", 2, "10.0.0.3", 100, true),
        ]);
        let e = place(&t2, &want(3, &["z"], false), &mut cur).unwrap_err();
        assert_eq!(e.code, CODE_NO_DATA_NODE_SET);
        let dead = topo(&[("z", 1, "10.0.0.1", 100, false)]);
        let e = place(&dead, &want(1, &["z"], false), &mut cur).unwrap_err();
        assert_eq!(e.code, CODE_NO_DATA_NODE);
        let mut w = want(3, &["z"], false);
        w.role = NodeRole::Meta;
        let e = place(&t, &w, &mut cur).unwrap_err();
        assert_eq!(e.code, CODE_NO_META_ZONE);
        // Two zones, 2+1 needs two writable nodes in a zone: only one each → 27.
        let thin = topo(&[
            ("a", 1, "10.0.0.1", 100, true),
            ("b", 2, "10.0.0.2", 100, true),
        ]);
        let e = place(&thin, &want(3, &[], true), &mut cur).unwrap_err();
        assert_eq!(e.code, CODE_NO_DATA_ZONE);
    }

    #[test]
    fn two_zones_place_two_plus_one() {
        let t = topo(&[
            ("a", 1, "10.0.1.1", 500, true),
            ("a", 1, "10.0.1.2", 500, true),
            ("a", 1, "10.0.1.3", 500, true),
            ("b", 2, "10.0.2.1", 100, true),
            ("b", 2, "10.0.2.2", 100, true),
            ("b", 2, "10.0.2.3", 100, true),
        ]);
        let mut cur = Cursors::default();
        let got = place(&t, &want(3, &[], true), &mut cur).unwrap();
        let in_a = got.iter().filter(|n| n.zone == "a").count();
        assert_eq!(in_a, 2, "the roomier zone takes two: {got:?}");
        let got = place(&t, &want(3, &["a", "b"], true), &mut cur).unwrap();
        assert_eq!(got.iter().filter(|n| n.zone == "b").count(), 1);
    }

    #[test]
    fn carry_weight_prefers_free_space() {
        let t = topo(&[
            ("z", 1, "10.0.0.1", 100, true),
            ("z", 1, "10.0.0.2", 100, true),
            ("z", 1, "10.0.0.3", 100, true),
            ("z", 1, "10.0.0.4", 400, true),
        ]);
        let mut cur = Cursors::default();
        let mut counts: HashMap<String, u32> = HashMap::new();
        for _ in 0..100 {
            for n in place(&t, &want(1, &["z"], false), &mut cur).unwrap() {
                *counts.entry(n.addr).or_default() += 1;
            }
        }
        let big = counts["10.0.0.4:17313"];
        assert!(
            counts.values().all(|&c| c <= big),
            "roomiest node chosen most: {counts:?}"
        );
        assert!(counts.len() == 4, "every node gets a turn: {counts:?}");
    }

    fn arb_topo() -> impl Strategy<Value = Topology> {
        let node = (
            0usize..3,
            0u64..3,
            0u8..8,
            0u64..1000,
            prop::bool::weighted(0.8),
        );
        (
            prop::collection::vec(node, 0..30),
            prop::collection::vec(
                prop::sample::select(vec![
                    "RoundRobin",
                    "CarryWeight",
                    "AvailableSpaceFirst",
                    "Straw",
                ]),
                6,
            ),
            prop::collection::vec(any::<bool>(), 3),
        )
            .prop_map(|(nodes, sels, avail)| {
                let mut t = Topology::default();
                for z in 0..3 {
                    t.zones.push(ZoneInfo {
                        name: format!("z{z}"),
                        available: avail[z] || z == 0,
                        nodeset_selector: sels[z].into(),
                    });
                    for s in 0..3u64 {
                        t.sets.push(SetInfo {
                            id: z as u64 * 10 + s,
                            zone: format!("z{z}"),
                            node_selector: sels[3 + z].into(),
                        });
                    }
                }
                for (i, (z, s, ip, free, w)) in nodes.into_iter().enumerate() {
                    t.nodes.push(Cand {
                        id: i as u64 + 1,
                        addr: format!("10.0.0.{ip}:{}", 17000 + i),
                        zone: format!("z{z}"),
                        node_set: z as u64 * 10 + s,
                        writable: w,
                        free_bytes: free * GB,
                    });
                }
                t
            })
    }

    proptest! {
        /// Whatever the topology: a success has exactly `replicas` distinct, writable,
        /// non-excluded hosts on distinct IPs, in the requested zones, all in one node set
        /// when the volume is not cross-zone; a failure has a "no room" code.
        #[test]
        fn placements_obey_the_rules(
            t in arb_topo(),
            replicas in 1usize..4,
            zones in prop::sample::subsequence(vec!["z0", "z1", "z2"], 0..=3),
            cross in any::<bool>(),
            exclude_n in 0usize..3,
            rounds in 1usize..5,
        ) {
            let zones: Vec<&str> = if !cross && zones.is_empty() { vec!["z0"] } else { zones };
            let zones: Vec<&str> = if !cross { zones[..1].to_vec() } else { zones };
            let mut w = want(replicas, &zones, cross);
            w.exclude = t.nodes.iter().take(exclude_n).map(|n| n.addr.clone()).collect();
            let mut cur = Cursors::default();
            for _ in 0..rounds {
                match place(&t, &w, &mut cur) {
                    Ok(got) => {
                        prop_assert_eq!(got.len(), replicas);
                        let addrs: BTreeSet<&str> = got.iter().map(|n| n.addr.as_str()).collect();
                        prop_assert_eq!(addrs.len(), replicas);
                        let ips: BTreeSet<&str> = got.iter().map(Cand::ip).collect();
                        prop_assert_eq!(ips.len(), replicas, "two replicas on one IP");
                        for n in &got {
                            prop_assert!(n.writable, "unwritable node chosen");
                            prop_assert!(!w.exclude.contains(&n.addr), "excluded node chosen");
                            if !zones.is_empty() {
                                prop_assert!(zones.contains(&n.zone.as_str()));
                            }
                            let z = t.zones.iter().find(|z| z.name == n.zone).unwrap();
                            prop_assert!(z.available, "unavailable zone used");
                        }
                        if !cross {
                            let sets: BTreeSet<u64> = got.iter().map(|n| n.node_set).collect();
                            prop_assert_eq!(sets.len(), 1, "one node set per partition");
                        }
                    }
                    Err(e) => {
                        prop_assert!([23, 26, 27, 28].contains(&e.code), "{:?}", e);
                    }
                }
            }
        }
    }
}
