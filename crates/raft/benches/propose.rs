//! Proposals per second through a leader replicating to two followers, all in memory:
//! propose a batch, then run Ready/step rounds until every node has applied it.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use mast_raft::{ConfState, Config, MemStorage, Message, RawNode, Role, Storage};

struct Cluster {
    nodes: Vec<RawNode<MemStorage>>,
    inbox: Vec<Message>,
    applied: Vec<u64>,
}

impl Cluster {
    fn new() -> Cluster {
        let conf = ConfState::with_voters([1, 2, 3]);
        let nodes = (1..=3)
            .map(|id| {
                let mut cfg = Config::new(id);
                cfg.max_msg_bytes = 1 << 20;
                cfg.max_inflight_msgs = 1024;
                cfg.max_uncommitted_bytes = 1 << 30;
                RawNode::new(&cfg, MemStorage::new_with_conf_state(conf.clone()), id).expect("node")
            })
            .collect();
        let mut c = Cluster {
            nodes,
            inbox: Vec::new(),
            applied: vec![0; 3],
        };
        c.nodes[0].campaign();
        c.pump();
        assert_eq!(c.nodes[0].role(), Role::Leader);
        c
    }

    /// Runs Ready rounds until no node has work; bounded so a bug cannot hang the bench.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut any = false;
            for i in 0..self.nodes.len() {
                let raw = &mut self.nodes[i];
                if !raw.has_ready() {
                    continue;
                }
                any = true;
                let mut rd = raw.ready();
                let st = raw.storage_mut();
                if let Some(s) = rd.snapshot.take() {
                    st.apply_snapshot(s).expect("snapshot");
                }
                st.append_owned(std::mem::take(&mut rd.entries))
                    .expect("append");
                if let Some(hs) = rd.hard_state {
                    st.set_hard_state(hs);
                }
                self.inbox.append(&mut rd.messages);
                self.inbox.append(&mut rd.persisted_messages);
                if let Some(e) = rd.committed_entries.last() {
                    self.applied[i] = e.index;
                }
                raw.advance(rd);
            }
            for m in self.inbox.drain(..) {
                let to = (m.to - 1) as usize;
                self.nodes[to].step(m).expect("step");
            }
            if !any {
                return;
            }
        }
        panic!("cluster did not go quiet");
    }

    /// Keeps memory flat across iterations, as an application compacting would.
    fn compact(&mut self) {
        for (i, raw) in self.nodes.iter_mut().enumerate() {
            let applied = self.applied[i];
            let conf = raw.applied_conf_state().clone();
            let st = raw.storage_mut();
            if applied > st.first_index().unwrap_or(0) + 100_000 {
                st.create_snapshot(applied, conf, Vec::new())
                    .expect("snapshot");
                st.compact(applied).expect("compact");
            }
        }
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("propose_3_nodes");
    for batch in [1usize, 64, 1024] {
        g.throughput(Throughput::Elements(batch as u64));
        let mut cluster = Cluster::new();
        g.bench_function(format!("batch_{batch}_x_16B"), |b| {
            b.iter_batched(
                || {
                    (0..batch)
                        .map(|i| (i as u128).to_le_bytes().to_vec())
                        .collect::<Vec<_>>()
                },
                |data| {
                    cluster.nodes[0].propose_batch(data).expect("propose");
                    cluster.pump();
                    cluster.compact();
                },
                BatchSize::SmallInput,
            )
        });
        let leader_last = cluster.nodes[0].last_index();
        assert!(
            cluster.applied.iter().all(|&a| a == leader_last),
            "every node applied all"
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
