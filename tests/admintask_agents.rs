//! The admin task manager against real `mast node` agents (in-process, over loopback
//! sockets), with a fake master supplying registration and the node list: registration,
//! heartbeats and liveness (inactive after missed heartbeats, reactivation, a leader change
//! keeping nodes active), the sync path (results, node-reported failures, write retries,
//! reply deadline) and the async path (answers, duplicate suppression, resends, drops).

mod admintask_harness;

use std::time::{Duration, Instant};

use admintask_harness::{agent_config, fast_config, wait_for, FakeMaster};
use mast::admintask::proto::op;
use mast::admintask::{AdminTask, Pushed, Role, TaskError, TaskRequest};
use mast::agent::{self, Fault};

const WAIT: Duration = Duration::from_secs(20);

fn all_active(m: &FakeMaster, addrs: &[String]) -> bool {
    addrs.iter().all(|a| m.live(a).is_some_and(|l| l.is_active))
}

fn create_dp(addr: &str, pid: u64) -> AdminTask {
    AdminTask::new(
        op::CREATE_DATA_PARTITION,
        addr,
        Some(pid),
        TaskRequest::CreatePartition {
            partition_id: pid,
            vol_name: "vol1".into(),
            partition_size: 1 << 30,
            start: 0,
            end: 0,
            members: vec![agent::peer(1, addr)],
        },
        0,
    )
}

#[test]
fn agents_register_and_heartbeats_fill_liveness() {
    let m = FakeMaster::start(fast_config());
    let dir = tempfile::tempdir().unwrap();
    let data = agent::start(agent_config(
        m.http_addr,
        Role::Data,
        3,
        &dir.path().join("d"),
    ))
    .unwrap();
    let meta = agent::start(agent_config(
        m.http_addr,
        Role::Meta,
        2,
        &dir.path().join("m"),
    ))
    .unwrap();
    wait_for("5 registrations", WAIT, || {
        (m.registered().len() == 5).then_some(())
    });
    let reg = m.registered();
    assert!(reg.iter().all(|(_, _, _, zone)| zone == "z1"), "{reg:?}");
    let mut all: Vec<String> = data.addrs.clone();
    all.extend(meta.addrs.clone());
    wait_for("every node active", WAIT, || {
        all_active(&m, &all).then_some(())
    });
    let l = m.live(&data.addrs[0]).unwrap();
    assert_eq!(l.total, 100 << 30);
    assert_eq!(l.zone_reported, "z1");
    assert_eq!(l.role, Some(Role::Data));
    assert!(l.report_time_unix_s > 0);
    let lm = m.live(&meta.addrs[0]).unwrap();
    assert_eq!(lm.role, Some(Role::Meta));
    assert!(lm.used > 0 && lm.available == lm.total - lm.used, "{lm:?}");
    // Every node registered once, and each agent knows its ID.
    for (addr, id, ..) in &reg {
        let v = data.view(addr).or_else(|| meta.view(addr)).unwrap();
        assert_eq!(v.node_id, *id);
    }
    let hb = m.with(|t| t.counters(op::DATA_NODE_HEARTBEAT));
    assert!(hb.queued >= 3 && hb.sent >= 3 && hb.acked >= 3, "{hb:?}");
    assert_eq!(hb.failed, 0);
    let text =
        m.with(|t| mast::admintask::metrics::render(&[t.metrics()], &t.config.named_limits()));
    assert!(
        text.contains(
            "mast_admin_tasks_total{op=\"data_node_heartbeat\",opcode=\"99\",event=\"acked\"}"
        ),
        "{text}"
    );
    assert!(
        text.contains("mast_admin_nodes_active{shard=\"0\"} 5"),
        "{text}"
    );
    assert!(
        text.contains("mast_admin_limit{name=\"sends_max\"} 3"),
        "{text}"
    );
}

#[test]
fn restarted_agent_keeps_its_identity_and_partitions() {
    let m = FakeMaster::start(fast_config());
    let dir = tempfile::tempdir().unwrap();
    let cfg = agent_config(m.http_addr, Role::Data, 2, dir.path());
    let a = agent::start(cfg.clone()).unwrap();
    let addrs = a.addrs.clone();
    wait_for("registered", WAIT, || {
        (m.registered().len() == 2).then_some(())
    });
    let addr = addrs[0].clone();
    let t = create_dp(&addr, 7);
    let r = m.with_async(move |tasks| async move { tasks.send_sync(t).await });
    assert_eq!(r, Ok("/data/disk1".to_string()));
    a.stop();
    let a = agent::start(cfg).unwrap();
    assert_eq!(a.addrs, addrs, "same addresses after a restart");
    assert_eq!(a.view(&addr).unwrap().partitions, vec![7]);
    // Re-registration is idempotent: same IDs, no new nodes.
    wait_for("heartbeat reports the partition", WAIT, || {
        m.live(&addr)
            .filter(|l| l.data_partition_count == 1 && l.partition_reports.len() == 1)
            .map(|l| assert_eq!(l.partition_reports[0].partition_id, 7))
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(m.registered().len(), 2);
    assert_eq!(a.view(&addr).unwrap().node_id, m.registered()[0].1);
}

#[test]
fn silent_node_goes_inactive_and_comes_back() {
    // The exact timing (18 s, judged at heartbeat rounds) is pinned by the pure core's
    // tests in src/admintask/live.rs; here the real path: sockets, agents, answers.
    let m = FakeMaster::start(fast_config());
    let dir = tempfile::tempdir().unwrap();
    let a = agent::start(agent_config(m.http_addr, Role::Data, 2, dir.path())).unwrap();
    wait_for("active", WAIT, || all_active(&m, &a.addrs).then_some(()));
    let (quiet, other) = (a.addrs[0].clone(), a.addrs[1].clone());
    a.set_fault(
        &quiet,
        Fault {
            mute: true,
            ..Fault::default()
        },
    );
    wait_for("inactive", WAIT, || {
        m.live(&quiet).filter(|l| !l.is_active).map(|_| ())
    });
    assert!(
        m.live(&other).unwrap().is_active,
        "the other node stays active"
    );
    a.set_fault(&quiet, Fault::default());
    wait_for("reactivated", WAIT, || {
        m.live(&quiet).filter(|l| l.is_active).map(|_| ())
    });
    // A failed heartbeat answer does not count as an answer either.
    a.set_fault(
        &quiet,
        Fault {
            fail: u32::MAX,
            ..Fault::default()
        },
    );
    wait_for("inactive on failed answers", WAIT, || {
        m.live(&quiet).filter(|l| !l.is_active).map(|_| ())
    });
    let c = m.with(|t| t.counters(op::DATA_NODE_HEARTBEAT));
    assert!(c.failed > 0, "{c:?}");
}

#[test]
fn leader_change_keeps_nodes_active_for_a_full_window() {
    let cfg = fast_config();
    let inactive_after = Duration::from_millis(cfg.inactive_after_ms);
    let m = FakeMaster::start(cfg);
    let dir = tempfile::tempdir().unwrap();
    let a = agent::start(agent_config(m.http_addr, Role::Meta, 3, dir.path())).unwrap();
    wait_for("active", WAIT, || all_active(&m, &a.addrs).then_some(()));
    // The nodes go silent and the master loses leadership for longer than the window.
    a.set_fault_all(Fault {
        mute: true,
        ..Fault::default()
    });
    m.driving.store(false, std::sync::atomic::Ordering::SeqCst);
    wait_for("stepped down", WAIT, || {
        (!m.with(|t| t.is_driving())).then_some(())
    });
    std::thread::sleep(inactive_after * 2);
    assert!(
        all_active(&m, &a.addrs),
        "nothing is judged while not driving"
    );
    let t = AdminTask::new(
        op::DELETE_META_PARTITION,
        &a.addrs[0],
        Some(1),
        TaskRequest::DeletePartition { partition_id: 1 },
        0,
    );
    assert_eq!(m.with(move |tasks| tasks.queue(t)), Pushed::NotMaster);
    // The takeover happens after this instant, and nodes may be judged only a whole
    // window after the takeover.
    let before_takeover = Instant::now();
    m.driving.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_for("driving again", WAIT, || {
        m.with(|t| t.is_driving()).then_some(())
    });
    // The takeover's heartbeat round has judged them: silent for over two windows, they
    // are still active.
    assert!(
        all_active(&m, &a.addrs),
        "a new leader gives nodes a full window"
    );
    wait_for("judged after the window", WAIT, || {
        a.addrs
            .iter()
            .all(|x| m.live(x).is_some_and(|l| !l.is_active))
            .then_some(())
    });
    assert!(before_takeover.elapsed() >= inactive_after);
    // Answering again reactivates them under the new leader.
    a.set_fault_all(Fault::default());
    wait_for("active again", WAIT, || {
        all_active(&m, &a.addrs).then_some(())
    });
}

#[test]
fn sync_path_results_failures_retries_and_deadline() {
    let cfg = fast_config();
    let retry = Duration::from_millis(cfg.write_retry_ms);
    let m = FakeMaster::start(cfg);
    let dir = tempfile::tempdir().unwrap();
    let a = agent::start(agent_config(m.http_addr, Role::Data, 1, dir.path())).unwrap();
    let addr = a.addrs[0].clone();
    let send = |t: AdminTask| m.with_async(move |tasks| async move { tasks.send_sync(t).await });

    assert_eq!(send(create_dp(&addr, 1)), Ok("/data/disk1".into()));
    assert_eq!(a.view(&addr).unwrap().partitions, vec![1]);
    // The node reports failure: an error carrying its code and text.
    a.set_fault(
        &addr,
        Fault {
            fail: 1,
            ..Fault::default()
        },
    );
    match send(create_dp(&addr, 2)) {
        Err(TaskError::Failed { code, message }) => {
            assert_eq!(code, mast::admintask::proto::result::OP_ERR);
            assert_eq!(message, "injected failure");
        }
        other => panic!("expected a node failure, got {other:?}"),
    }
    // A task the node refuses on its own terms.
    let load = AdminTask::new(
        op::LOAD_DATA_PARTITION,
        &addr,
        Some(99),
        TaskRequest::LoadPartition { partition_id: 99 },
        0,
    );
    assert!(matches!(
        send(load),
        Err(TaskError::Failed { code: 0xF5, .. })
    ));
    // The node closes the pooled connection on the next task: the write is retried on a
    // new connection and succeeds.
    a.set_fault(
        &addr,
        Fault {
            close: 1,
            ..Fault::default()
        },
    );
    let t0 = Instant::now();
    assert_eq!(send(create_dp(&addr, 3)), Ok("/data/disk1".into()));
    assert!(t0.elapsed() >= retry, "retried after the retry pause");
    assert_eq!(a.view(&addr).unwrap().partitions, vec![1, 3]);
    // A node that stops answering: no reply within the deadline.
    a.set_fault(
        &addr,
        Fault {
            mute: true,
            ..Fault::default()
        },
    );
    assert!(matches!(
        send(create_dp(&addr, 4)),
        Err(TaskError::NoReply { .. })
    ));
    a.set_fault(&addr, Fault::default());
    let c = m.with(|t| t.counters(op::CREATE_DATA_PARTITION));
    assert_eq!((c.queued, c.acked), (4, 2), "{c:?}");
    assert_eq!(c.failed, 2, "{c:?}");
    // A node that is gone (nothing listens on its address): three write attempts, 100 ms
    // apart, then an error.
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let t0 = Instant::now();
    match send(create_dp(&gone.to_string(), 5)) {
        Err(TaskError::Write { attempts, .. }) => assert_eq!(attempts, 3),
        other => panic!("expected a write failure, got {other:?}"),
    }
    assert!(t0.elapsed() >= retry * 2, "{:?}", t0.elapsed());
}

#[test]
fn async_tasks_answered_deduplicated_resent_and_dropped() {
    let cfg = fast_config();
    let sends_max = cfg.sends_max;
    let m = FakeMaster::start(cfg);
    let dir = tempfile::tempdir().unwrap();
    let a = agent::start(agent_config(m.http_addr, Role::Data, 1, dir.path())).unwrap();
    let addr = a.addrs[0].clone();
    wait_for("active", WAIT, || all_active(&m, &a.addrs).then_some(()));
    assert_eq!(
        m.with_async({
            let t = create_dp(&addr, 5);
            move |tasks| async move { tasks.send_sync(t).await }
        }),
        Ok("/data/disk1".into())
    );
    let delete = |pid: u64| {
        AdminTask::new(
            op::DELETE_DATA_PARTITION,
            &addr,
            Some(pid),
            TaskRequest::DeletePartition { partition_id: pid },
            0,
        )
    };
    // Answered: the partition is gone and the task left the map.
    let t = delete(5);
    assert_eq!(m.with(move |tasks| tasks.queue(t)), Pushed::Queued);
    let a2 = addr.clone();
    wait_for("delete answered", WAIT, || {
        let a3 = a2.clone();
        let c = m.with(|t| t.counters(op::DELETE_DATA_PARTITION));
        (c.acked == 1 && m.with(move |t| t.pending(&a3)) == 0).then_some(())
    });
    assert!(a.view(&addr).unwrap().partitions.is_empty());

    // A node that acks but never answers: the task is never queued twice, is resent
    // after the resend time, and dropped after the send limit.
    a.set_fault(
        &addr,
        Fault {
            no_answer: true,
            ..Fault::default()
        },
    );
    let before = a.view(&addr).unwrap().tasks_received;
    let c0 = m.with(|t| t.counters(op::DELETE_DATA_PARTITION));
    let (t1, t2) = (delete(6), delete(6));
    let pushed = m.with(move |tasks| (tasks.queue(t1), tasks.queue(t2)));
    assert_eq!(pushed, (Pushed::Queued, Pushed::Duplicate));
    let id = mast::admintask::proto::task_id(&addr, op::DELETE_DATA_PARTITION, Some(6));
    wait_for("dropped after the send limit", WAIT, || {
        let c = m.with(|t| t.counters(op::DELETE_DATA_PARTITION));
        (c.dropped == 1).then_some(())
    });
    let (a3, id2) = (addr.clone(), id.clone());
    assert!(!m.with(move |t| t.is_queued(&a3, &id2)));
    let c = m.with(|t| t.counters(op::DELETE_DATA_PARTITION));
    assert_eq!(c.queued, 2, "{c:?}");
    // Every send that went out was acked (sent) or timed out (failed); a send that never
    // went out because an earlier task found the node unreachable does not count.
    assert_eq!(
        (c.sent - c0.sent) + (c.failed - c0.failed),
        u64::from(sends_max),
        "resent up to the limit: {c:?}"
    );
    let received = a.view(&addr).unwrap().tasks_received - before;
    // Heartbeats arrive too; at least sends_max copies of the delete did.
    assert!(received >= u64::from(sends_max), "received {received}");

    // A silent node (no acks): sends fail, and the task is dropped by age at the latest.
    a.set_fault(
        &addr,
        Fault {
            mute: true,
            ..Fault::default()
        },
    );
    let t = delete(8);
    assert_eq!(m.with(move |tasks| tasks.queue(t)), Pushed::Queued);
    wait_for("a failed send", WAIT, || {
        let c = m.with(|t| t.counters(op::DELETE_DATA_PARTITION));
        (c.failed >= 1 || c.dropped == 2).then_some(())
    });
}

#[test]
fn control_endpoint_sets_faults() {
    use std::io::{Read, Write};
    let m = FakeMaster::start(fast_config());
    let dir = tempfile::tempdir().unwrap();
    let control = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cfg = agent_config(m.http_addr, Role::Data, 2, dir.path());
    cfg.control = Some(control);
    let a = agent::start(cfg).unwrap();
    let call = |method: &str, target: &str| -> (u16, String) {
        let mut s = std::net::TcpStream::connect(control).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    };
    let target = format!("/fault?node={}&fail=3&slow_ms=5", a.addrs[1]);
    assert_eq!(call("POST", &target).0, 200);
    assert_eq!(
        a.view(&a.addrs[1]).unwrap().fault,
        Fault {
            fail: 3,
            slow_ms: 5,
            ..Fault::default()
        }
    );
    assert_eq!(call("POST", "/fault?node=all&mute=true").0, 200);
    assert!(a.view(&a.addrs[0]).unwrap().fault.mute);
    assert_eq!(call("POST", "/fault?node=1.2.3.4:5").0, 404);
    assert_eq!(call("POST", "/fault?fail=x").0, 400);
    let (status, body) = call("GET", "/nodes");
    assert_eq!(status, 200);
    let nodes: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(nodes.as_array().map(Vec::len), Some(2), "{body}");
}
