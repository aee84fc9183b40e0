//! Driving CubeFS's own `cfs-cli` (`../shared/tools/cfs-cli`) from tests: its envelope,
//! running it with a scratch HOME, stdin closed and a deadline, and reading its output.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::HttpClient;

/// How long `call` retries a route (a leader election included).
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// cfs-cli's own per-request timeout is 10 s in the config written here; a run gets this.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(90);

pub fn cfs_cli() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/cfs-cli")
}

/// `{"code","msg","data"}` of a 200 reply, or why not.
pub fn envelope(r: &super::Response) -> Result<(i64, String, Value), String> {
    if r.status != 200 {
        return Err(format!("status {}: {}", r.status, r.body_text()));
    }
    let v = r.json()?;
    let code = v.get("code").and_then(Value::as_i64).ok_or("no code")?;
    let msg = v
        .get("msg")
        .and_then(Value::as_str)
        .ok_or("no msg")?
        .to_string();
    let data = v.get("data").cloned().ok_or("no data")?;
    Ok((code, msg, data))
}

/// GET `path` on `client`, retried while the cluster settles (400 no leader / transport
/// errors), until a 200 envelope or the deadline.
pub fn call(client: &mut HttpClient, path: &str) -> (i64, String, Value) {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    loop {
        let last = match client.get(path) {
            Ok(r) => match envelope(&r) {
                Ok(e) => return e,
                Err(e) => e,
            },
            Err(e) => e.to_string(),
        };
        assert!(Instant::now() < deadline, "GET {path}: {last}");
        thread::sleep(Duration::from_millis(100));
    }
}

pub fn ok_data(client: &mut HttpClient, path: &str) -> Value {
    let (code, msg, data) = call(client, path);
    assert_eq!(code, 0, "GET {path}: code {code} msg {msg}");
    data
}

pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs cfs-cli with HOME at `home`, stdin closed, under [`CLI_TIMEOUT`].
pub fn cli(home: &Path, args: &[&str]) -> CliOutput {
    let mut child = Command::new(cfs_cli())
        .args(args)
        .env("HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cfs-cli starts");
    // Drain both pipes on threads so a large output cannot block the child.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + CLI_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait cfs-cli") {
            break st;
        }
        if Instant::now() >= deadline {
            let reaped = super::proc::kill_and_reap(&mut child, super::proc::REAP_TIMEOUT);
            panic!("cfs-cli {args:?} did not finish within {CLI_TIMEOUT:?} (killed: {reaped:?})");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let o = CliOutput {
        code: status.code().unwrap_or(-1),
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    };
    println!(
        "$ cfs-cli {}\n[exit {}]\n{}{}",
        args.join(" "),
        o.code,
        o.stdout,
        o.stderr
    );
    o
}

/// Runs a command that must succeed and print every one of `expect`.
pub fn cli_ok(home: &Path, args: &[&str], expect: &[&str]) -> String {
    let o = cli(home, args);
    assert_eq!(
        o.code, 0,
        "cfs-cli {args:?} failed: {}{}",
        o.stdout, o.stderr
    );
    for e in expect {
        assert!(
            o.stdout.contains(e),
            "cfs-cli {args:?}: output lacks {e:?}:\n{}",
            o.stdout
        );
    }
    o.stdout
}

pub fn write_cli_config(home: &Path, masters: &[String]) {
    let cfg = serde_json::json!({"masterAddr": masters, "timeout": 10});
    std::fs::write(home.join(".cfs-cli.json"), cfg.to_string()).expect("cfs-cli config");
}

/// A line of `text` that starts (after spaces) with `label` and contains `value`.
pub fn has_field(text: &str, label: &str, value: &str) -> bool {
    text.lines()
        .any(|l| l.trim_start().starts_with(label) && l.contains(value))
}
