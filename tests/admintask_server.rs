//! `/dataNode/response` and `/metaNode/response` on real `mast server` processes: the
//! master (the node leading group 0) answers CubeFS's envelope with `data` "200" and
//! applies the answer on the shard owning the node's address; a node that is not the master
//! answers 400 `no leader` so the storage node tries the next master; malformed bodies and
//! answers on the wrong route are refused in the envelope, never with a 5xx.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Cluster, ClusterOptions};

const WAIT: Duration = Duration::from_secs(30);
const OK_BODY: &str = r#"{"code":0,"msg":"success","data":"200"}"#;

fn heartbeat_answer(addr: &str, op: u8) -> serde_json::Value {
    json!({
        "ID": format!("addr[{addr}]_op[{op}]"), "OpCode": op, "OperatorAddr": addr,
        "Status": 1, "PartitionID": 0, "SendTime": 0, "CreateTime": 0, "SendCount": 1,
        "Request": {}, "RequestID": "",
        "Response": {"Status": 1, "Total": 100, "Used": 10, "Available": 90,
            "ZoneName": "z", "CreatedPartitionCnt": 0, "PartitionReports": []}
    })
}

#[test]
fn response_routes_on_master_and_followers() {
    let cluster = Cluster::start(ClusterOptions::new(3, 2)).unwrap();
    let leaders = cluster.wait_for_leaders(WAIT).unwrap();
    let master = leaders[0];
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|&id| id != master)
        .unwrap();

    // The master starts driving within a tick of leading group 0. Answers for nodes on
    // either shard are accepted (they hop to the owning shard).
    let deadline = Instant::now() + WAIT;
    let mut c = cluster.client(master);
    for addr in ["127.0.0.1:17310", "127.0.0.2:17310", "10.0.0.9:1"] {
        loop {
            let r = c
                .post_json("/dataNode/response", &heartbeat_answer(addr, 0x63))
                .unwrap();
            if r.status == 200 && r.body_text() == OK_BODY {
                break;
            }
            assert!(Instant::now() < deadline, "{} {}", r.status, r.body_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let r = c
        .post_json(
            "/metaNode/response",
            &heartbeat_answer("127.0.0.1:17210", 0x41),
        )
        .unwrap();
    assert_eq!((r.status, r.body_text().as_str()), (200, OK_BODY));

    // Refusals stay in the envelope.
    let r = c
        .request("POST", "/dataNode/response", &[], b"{not json")
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json().unwrap()["code"], 6);
    let r = c
        .post_json(
            "/dataNode/response",
            &heartbeat_answer("127.0.0.1:17210", 0x41),
        )
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json().unwrap()["code"],
        2,
        "a meta task on the data route"
    );
    let r = c
        .post_json("/dataNode/response", &json!({"OpCode": 99}))
        .unwrap();
    assert_eq!(r.json().unwrap()["code"], 6, "no OperatorAddr");

    // A follower is not the master.
    let r = cluster
        .client(follower)
        .post_json(
            "/dataNode/response",
            &heartbeat_answer("127.0.0.1:17310", 0x63),
        )
        .unwrap();
    assert_eq!((r.status, r.body_text().as_str()), (400, "no leader"));
}
