//! CubeFS volumes, partitions and users against three `mast server` masters, over plain
//! HTTP as CubeFS's SDK sends them: users (`/user/create|info|akInfo|list|delete`),
//! `/admin/createVol` validation and "no room" codes, unknown volumes and partitions, and
//! the mount-time routes that need no volume.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{Cluster, ClusterOptions, HttpClient};

const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
const IO_TIMEOUT: Duration = Duration::from_secs(20);

fn envelope(r: &support::Response) -> Result<(i64, String, Value), String> {
    if r.status != 200 {
        return Err(format!("status {}: {}", r.status, r.body_text()));
    }
    let v = r.json()?;
    let code = v.get("code").and_then(Value::as_i64).ok_or("no code")?;
    let msg = v.get("msg").and_then(Value::as_str).ok_or("no msg")?;
    let data = v.get("data").cloned().ok_or("no data")?;
    Ok((code, msg.to_string(), data))
}

/// `method path` with `body`, retried while the cluster settles (no leader / transport
/// errors), until a 200 envelope or the deadline.
fn call_with(
    client: &mut HttpClient,
    method: &str,
    path: &str,
    body: &[u8],
) -> (i64, String, Value) {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    loop {
        let last = match client.request(method, path, &[], body) {
            Ok(r) => match envelope(&r) {
                Ok(e) => return e,
                Err(e) => e,
            },
            Err(e) => e.to_string(),
        };
        assert!(Instant::now() < deadline, "{method} {path}: {last}");
        thread::sleep(Duration::from_millis(100));
    }
}

fn call(client: &mut HttpClient, path: &str) -> (i64, String, Value) {
    call_with(client, "GET", path, b"")
}

fn ok_data(client: &mut HttpClient, path: &str) -> Value {
    let (code, msg, data) = call(client, path);
    assert_eq!(code, 0, "GET {path}: code {code} msg {msg}");
    data
}

#[test]
fn users_and_volume_validation() {
    let cluster = Cluster::start(ClusterOptions::new(3, 2)).expect("cluster starts");
    let leaders = cluster.wait_for_leaders(LEADER_TIMEOUT).expect("leaders");
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|&id| id != leaders[0])
        .expect("a follower");
    // Everything through a follower: relayed to the leader.
    let mut c = HttpClient::new(cluster.http_addr(follower), IO_TIMEOUT);

    // Users: created from a JSON body, found by id and by access key, listed, deleted.
    let body =
        json!({"id": "carol", "pwd": "", "ak": "", "sk": "", "type": 3, "description": "ops"});
    let (code, msg, u) = call_with(&mut c, "POST", "/user/create", body.to_string().as_bytes());
    assert_eq!(code, 0, "{msg}");
    assert_eq!(u["user_id"], "carol");
    let ak = u["access_key"].as_str().expect("access key").to_string();
    assert_eq!(ak.len(), 16);
    assert_eq!(u["secret_key"].as_str().map(str::len), Some(32));
    assert_eq!(u["policy"]["own_vols"], json!([]));
    let (code, _, _) = call_with(&mut c, "POST", "/user/create", body.to_string().as_bytes());
    assert_eq!(code, 45, "duplicate user id");
    let bad = json!({"id": "9x", "type": 3});
    let (code, _, _) = call_with(&mut c, "POST", "/user/create", bad.to_string().as_bytes());
    assert_eq!(code, 55);
    let (code, _, _) = call_with(&mut c, "POST", "/user/create", b"{not json");
    assert_eq!(code, 47);
    let info = ok_data(&mut c, "/user/info?user=carol");
    assert_eq!(
        (info["user_id"].as_str(), info["description"].as_str()),
        (Some("carol"), Some("ops"))
    );
    let by_ak = ok_data(&mut c, &format!("/user/akInfo?ak={ak}"));
    assert_eq!(by_ak["user_id"], "carol");
    let (code, _, _) = call(&mut c, "/user/akInfo?ak=AAAAAAAAAAAAAAAA");
    assert_eq!(code, 40);
    let list = ok_data(&mut c, "/user/list?keywords=car");
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(
        ok_data(&mut c, "/user/delete?user=carol"),
        json!("delete user[carol] successfully")
    );
    let (code, _, _) = call(&mut c, "/user/info?user=carol");
    assert_eq!(code, 46);

    // createVol: parameter checks, then the zone rules, then "no room".
    let (code, msg, _) = call(&mut c, "/admin/createVol?name=a&owner=alice&capacity=10");
    assert_eq!(
        (code, msg.as_str()),
        (2, "name can only be number and letters")
    );
    let (code, _, _) = call(
        &mut c,
        "/admin/createVol?name=vol1&owner=1alice&capacity=10",
    );
    assert_eq!(code, 2);
    let (code, msg, _) = call(&mut c, "/admin/createVol?name=vol1&owner=alice");
    assert_eq!(code, 2, "{msg}");
    let (code, _, _) = call(
        &mut c,
        "/admin/createVol?name=vol1&owner=alice&capacity=10&dpCount=201",
    );
    assert_eq!(code, 2);
    let (code, _, _) = call(
        &mut c,
        "/admin/createVol?name=vol1&owner=alice&capacity=10&dpSize=5",
    );
    assert_eq!(code, 2);
    let (code, _, _) = call(
        &mut c,
        "/admin/createVol?name=vol1&owner=alice&capacity=10&replicaNum=4",
    );
    assert_eq!(code, 2);
    // No zone "default" yet: code 1 with the reason.
    let (code, msg, _) = call(&mut c, "/admin/createVol?name=vol1&owner=alice&capacity=10");
    assert_eq!((code, msg.as_str()), (1, "zone default not exists"));
    // Registered but never heard from (no heartbeats): no writable node → CubeFS's codes.
    for i in 1..=3 {
        ok_data(&mut c, &format!("/metaNode/add?addr=127.0.0.{i}:17210"));
        ok_data(
            &mut c,
            &format!("/dataNode/add?addr=127.0.0.{i}:17310&mediaType=1"),
        );
    }
    let (code, msg, _) = call(&mut c, "/admin/createVol?name=vol1&owner=alice&capacity=10");
    assert_eq!(code, 24, "no meta node available: {msg}");
    let (code, msg, _) = call(
        &mut c,
        "/admin/createVol?name=vol1&owner=alice&capacity=10&crossZone=true",
    );
    assert_eq!(code, 1, "cross-zone needs two zones: {msg}");
    let (code, _, _) = call(
        &mut c,
        "/admin/createVol?name=vol1&owner=alice&capacity=10&zoneName=nope",
    );
    assert_eq!(code, 1);
    // Nothing was left behind by the refusals.
    assert_eq!(ok_data(&mut c, "/vol/list"), json!([]));
    assert_eq!(ok_data(&mut c, "/user/list"), json!([]));

    // Unknown volumes and partitions.
    for path in [
        "/admin/getVol?name=vol1",
        "/client/volStat?name=vol1",
        "/client/metaPartitions?name=vol1",
        "/client/partitions?name=vol1",
        "/vol/delete?name=vol1&authKey=x",
        "/vol/expand?name=vol1&authKey=x&capacity=20",
    ] {
        let (code, _, _) = call(&mut c, path);
        assert_eq!(code, 7, "{path}");
    }
    let (code, _, _) = call(&mut c, "/dataPartition/get?id=1");
    assert_eq!(code, 11);
    let (code, _, _) = call(&mut c, "/metaPartition/get?id=1");
    assert_eq!(code, 10);
    let (code, _, _) = call(&mut c, "/dataPartition/get");
    assert_eq!(code, 2);

    // Routes a mounting client and cfs-cli ask that need no volume.
    assert_eq!(
        ok_data(&mut c, "/admin/getDiscardDp"),
        json!({"DiscardDps": []})
    );
    assert_eq!(ok_data(&mut c, "/admin/getMonitorPushAddr"), json!(""));
    assert_eq!(
        ok_data(&mut c, "/admin/aclOp?name=vol1&ip=127.0.0.1&op=1")["OK"],
        json!(true)
    );
}
