//! Admin authentication (`--auth-token-file`) against a real `mast server`: requests without a
//! token, with a wrong one and with one too weak; the open endpoints; the refusal counters;
//! token rotation by SIGHUP; a CubeFS request relayed by a follower to the leader.

mod support;

use std::path::Path;
use std::time::Duration;

use support::{kv_path, retry, Cluster, ClusterOptions, HttpClient, Response};

const ADMIN: &str = "admin-token-0123";
const READER: &str = "reader-token-4567";
const DEADLINE: Duration = Duration::from_secs(30);

fn token_file(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("tokens");
    std::fs::write(&p, text).unwrap();
    p
}

fn call(
    c: &mut HttpClient,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    c.request(method, path, &headers, body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn assert_refused(r: &Response, status: u16, kind: &str) {
    assert_eq!(r.status, status, "{r}");
    let v = r.json().unwrap_or_else(|e| panic!("{e}: {r}"));
    assert_eq!(v["error"]["kind"], kind, "{r}");
    assert_eq!(v["error"]["status"], status, "{r}");
    if status == 401 {
        let h = r.header("www-authenticate").unwrap_or("");
        assert!(h.starts_with("Bearer"), "www-authenticate {h:?}");
    }
}

/// The value of a Prometheus sample line `name{labels} value`.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

/// PUTs until the write is acknowledged (a fresh node needs a moment to elect itself).
fn put_ok(c: &mut HttpClient, key: &str, token: &str) {
    retry(DEADLINE, || {
        let r = call(c, "PUT", &kv_path(key), Some(token), b"v");
        if r.status == 204 {
            Ok(())
        } else {
            Err(format!("PUT {key}: {r}"))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn tokens_roles_counters_and_rotation_by_sighup() {
    support::print_replay("auth", "tokens_roles_counters_and_rotation_by_sighup", "");
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(
        dir.path(),
        &format!("# test tokens\n{ADMIN} admin\n{READER} read\n"),
    );
    let cluster =
        Cluster::start(ClusterOptions::new(1, 1).arg("--auth-token-file", file.display()))
            .unwrap_or_else(|e| panic!("{e}"));
    let mut c = cluster.client(1);

    // Open endpoints.
    assert_eq!(call(&mut c, "GET", "/healthz", None, b"").status, 200);
    assert_eq!(call(&mut c, "GET", "/metrics", None, b"").status, 200);

    // Refusals, in the API error format.
    assert_refused(
        &call(&mut c, "PUT", &kv_path("a"), None, b"v"),
        401,
        "unauthorized",
    );
    assert_refused(
        &call(&mut c, "GET", &kv_path("a"), None, b""),
        401,
        "unauthorized",
    );
    assert_refused(
        &call(&mut c, "GET", "/no/such/path", None, b""),
        401,
        "unauthorized",
    );
    assert_refused(
        &call(&mut c, "PUT", &kv_path("a"), Some("admin-token-0124"), b"v"),
        401,
        "unauthorized",
    );
    assert_refused(
        &call(&mut c, "PUT", &kv_path("a"), Some(READER), b"v"),
        403,
        "forbidden",
    );
    assert_refused(
        &call(&mut c, "POST", "/leader/transfer", Some(READER), b"{}"),
        403,
        "forbidden",
    );
    assert_refused(
        &call(
            &mut c,
            "GET",
            "/admin/createVol?name=v&owner=o",
            Some(READER),
            b"",
        ),
        403,
        "forbidden",
    );

    // Allowed: an admin writes, a reader reads.
    put_ok(&mut c, "a", ADMIN);
    let r = call(&mut c, "GET", &kv_path("a"), Some(READER), b"");
    assert_eq!((r.status, r.body.as_slice()), (200, b"v".as_slice()), "{r}");
    assert_eq!(
        call(&mut c, "GET", "/status", Some(READER), b"").status,
        200
    );

    let m = call(&mut c, "GET", "/metrics", None, b"");
    let text = String::from_utf8_lossy(&m.body).to_string();
    assert_eq!(
        metric(&text, "mast_auth_refused_total{reason=\"unauthorized\"}"),
        4
    );
    assert_eq!(
        metric(&text, "mast_auth_refused_total{reason=\"forbidden\"}"),
        3
    );

    // Rotation: the reader becomes an admin, the old admin token goes; a broken file later
    // keeps the tokens that work.
    let pid = cluster.pid(1).expect("node 1 runs");
    token_file(dir.path(), &format!("{READER} admin\n"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    retry(DEADLINE, || {
        let r = call(&mut c, "PUT", &kv_path("b"), Some(ADMIN), b"v");
        if r.status == 401 {
            Ok(())
        } else {
            Err(format!("old admin token still accepted: {r}"))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    put_ok(&mut c, "b", READER);
    token_file(dir.path(), "not a token file at all\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    retry(DEADLINE, || {
        let text =
            String::from_utf8_lossy(&call(&mut c, "GET", "/metrics", None, b"").body).to_string();
        if metric(&text, "mast_auth_reloads_total{result=\"failed\"}") == 1 {
            Ok(())
        } else {
            Err("the broken file was not read yet".into())
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    put_ok(&mut c, "c", READER);
    // The token never reaches the log.
    let log = std::fs::read_to_string(&cluster.node(1).log_path).unwrap();
    assert!(
        !log.contains(READER) && !log.contains(ADMIN),
        "a token is in the log"
    );
}

#[test]
fn metrics_auth_closes_metrics_and_a_bad_file_stops_the_start() {
    support::print_replay(
        "auth",
        "metrics_auth_closes_metrics_and_a_bad_file_stops_the_start",
        "",
    );
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(dir.path(), &format!("{READER} read\n"));
    let cluster = Cluster::start(ClusterOptions {
        extra_args: vec![
            "--auth-token-file".into(),
            file.display().to_string(),
            "--metrics-auth".into(),
        ],
        ..ClusterOptions::new(1, 1)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let mut c = cluster.client(1);
    assert_eq!(call(&mut c, "GET", "/healthz", None, b"").status, 200);
    assert_refused(
        &call(&mut c, "GET", "/metrics", None, b""),
        401,
        "unauthorized",
    );
    assert_eq!(
        call(&mut c, "GET", "/metrics", Some(READER), b"").status,
        200
    );
    drop(cluster);

    let out = std::process::Command::new(support::MAST_BIN)
        .args(["server", "--auth-token-file"])
        .arg(token_file(dir.path(), "short admin\n"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth_token_file") && err.contains("line 1"),
        "{err}"
    );
    assert!(!err.contains("short admin"), "{err}");
}

#[test]
fn a_follower_relays_cubefs_requests_with_the_clients_token() {
    support::print_replay(
        "auth",
        "a_follower_relays_cubefs_requests_with_the_clients_token",
        "",
    );
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(dir.path(), &format!("{ADMIN} admin\n{READER} read\n"));
    let cluster =
        Cluster::start(ClusterOptions::new(3, 1).arg("--auth-token-file", file.display()))
            .unwrap_or_else(|e| panic!("{e}"));
    // Whichever node leads, at least two answer as followers: every node must answer 200
    // with CubeFS code 0 for a reader, and refuse without a token.
    for id in cluster.node_ids() {
        let mut c = cluster.client(id);
        retry(DEADLINE, || {
            let r = call(&mut c, "GET", "/admin/getCluster", Some(READER), b"");
            let v = r.json()?;
            if r.status == 200 && v["code"] == 0 {
                Ok(())
            } else {
                Err(format!("node {id}: {r}"))
            }
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_refused(
            &call(&mut c, "GET", "/admin/getCluster", None, b""),
            401,
            "unauthorized",
        );
        // KV writes through a follower travel over the peer transport (member-authenticated).
        put_ok(&mut c, &format!("k{id}"), ADMIN);
    }
}
