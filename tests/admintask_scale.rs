//! A scale smoke run (ignored by default: `cargo test --release --test admintask_scale --
//! --ignored --nocapture`): `ADMIN_SCALE_NODES` simulated nodes (default 2,000, half data,
//! half meta, 100 partitions each) against the fake master with a 1 s heartbeat interval,
//! so the heartbeat rate equals 12,000 nodes at CubeFS's 6 s. It checks every node turns
//! active and stays so for a few rounds (no heartbeat misses the window), and prints the
//! counters; it asserts no timing.

mod admintask_harness;

use std::time::{Duration, Instant};

use admintask_harness::{agent_config, fast_config, wait_for, FakeMaster};
use mast::admintask::proto::op;
use mast::admintask::{AdminTaskConfig, Role};

#[test]
#[ignore]
fn thousands_of_nodes_stay_active() {
    let n: usize = std::env::var("ADMIN_SCALE_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let m = FakeMaster::start(AdminTaskConfig {
        heartbeat_interval_ms: 1_000,
        inactive_after_ms: 3_000,
        sender_tick_ms: 250,
        resend_after_ms: 900,
        ack_timeout_ms: 2_000,
        ..fast_config()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = agent_config(m.http_addr, Role::Data, n / 2, &dir.path().join("d"));
    cfg.preload_partitions = 100;
    let data = mast::agent::start(cfg.clone()).unwrap();
    cfg.role = Role::Meta;
    cfg.data_dir = dir.path().join("m");
    let meta = mast::agent::start(cfg).unwrap();
    let t0 = Instant::now();
    wait_for("registrations", Duration::from_secs(120), || {
        (m.registered().len() == n).then_some(())
    });
    println!("{n} registered in {:?}", t0.elapsed());
    let active = || m.with(|t| t.metrics().nodes_active);
    wait_for("all active", Duration::from_secs(120), || {
        (active() as usize == n).then_some(())
    });
    println!("{n} active after {:?}", t0.elapsed());
    for round in 0..5 {
        std::thread::sleep(Duration::from_secs(1));
        let snap = m.with(|t| t.metrics());
        println!(
            "round {round}: active {} pending {} lag {} ms",
            snap.nodes_active, snap.tasks_pending, snap.heartbeat_lag_ms
        );
        assert_eq!(snap.nodes_active as usize, n);
    }
    for code in [op::DATA_NODE_HEARTBEAT, op::META_NODE_HEARTBEAT] {
        println!(
            "{}: {:?}",
            op::name(code),
            m.with(move |t| t.counters(code))
        );
    }
    let l = m.live(&data.addrs[0]).unwrap();
    assert_eq!(l.data_partition_count, 100);
    let l = m.live(&meta.addrs[0]).unwrap();
    assert_eq!(l.meta_partition_count, 100);
}
