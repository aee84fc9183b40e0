//! `mast node` as a process: flag validation, registration that follows the leader across
//! masters (a master answering 400 `no leader` and a dead one are skipped), heartbeats
//! answered, the control endpoint, a clean stop on SIGTERM and the identity kept across a
//! restart.

mod admintask_harness;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use admintask_harness::{fast_config, wait_for, FakeMaster};

const WAIT: Duration = Duration::from_secs(30);

fn mast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mast"))
}

/// A "master" that answers every request `400 no leader`, as a CubeFS follower without a
/// leader does.
fn no_leader_master() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 9\r\nConnection: close\r\n\r\nno leader",
            );
        }
    });
    addr
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn get(addr: SocketAddr, target: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split("\r\n\r\n").nth(1).map(String::from)
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stop(p: &mut Proc) -> i32 {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(p.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_for("exit", WAIT, || p.0.try_wait().unwrap());
    status.code().unwrap_or(-1)
}

#[test]
fn bad_flags_exit_2() {
    for args in [
        vec!["node", "--role", "disk", "--master", "127.0.0.1:1"],
        vec!["node", "--role", "data", "--master", ""],
        vec![
            "node",
            "--role",
            "data",
            "--master",
            "a:1",
            "--simulate",
            "0",
        ],
    ] {
        let out = mast().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("mast node:"));
    }
}

#[test]
fn registers_through_the_leader_answers_heartbeats_and_restarts() {
    let m = FakeMaster::start(fast_config());
    let masters = format!("{},{},{}", free_addr(), no_leader_master(), m.http_addr);
    let dir = tempfile::tempdir().unwrap();
    let control = free_addr();
    let spawn = || {
        Proc(
            mast()
                .args([
                    "node", "--role", "meta", "--master", &masters, "--zone", "zz",
                ])
                .args(["--listen", "127.0.0.1:0", "--simulate", "3"])
                .arg("--data-dir")
                .arg(dir.path())
                .args(["--control", &control.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut p = spawn();
    let reg = wait_for("3 registrations", WAIT, || {
        let r = m.registered();
        (r.len() == 3).then_some(r)
    });
    assert!(reg.iter().all(|(_, _, _, zone)| zone == "zz"), "{reg:?}");
    for (addr, ..) in &reg {
        let a = addr.clone();
        wait_for("active", WAIT, || {
            m.live(&a).filter(|l| l.is_active).map(|_| ())
        });
    }
    let nodes = wait_for("control endpoint", WAIT, || get(control, "/nodes"));
    let nodes: serde_json::Value = serde_json::from_str(&nodes).unwrap();
    let ids: Vec<u64> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|&id| id > 0), "{ids:?}");
    assert_eq!(stop(&mut p), 0);

    // Restarted: same addresses (kept in the state files), no new registrations.
    let mut p = spawn();
    std::thread::sleep(Duration::from_millis(500));
    let again = wait_for("control endpoint", WAIT, || get(control, "/nodes"));
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    let addrs = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|n| n["addr"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(addrs(&again), addrs(&nodes));
    assert_eq!(m.registered().len(), 3);
    assert_eq!(stop(&mut p), 0);
}
