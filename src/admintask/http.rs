//! `/dataNode/response` and `/metaNode/response`: a node posts a finished task as JSON
//! (CubeFS's AdminTask form); the master answers at once in CubeFS's envelope
//! (`{"code":0,"msg":"success","data":"200"}`) and applies it on the shard owning the
//! node's address. A node of the wrong kind for the route is refused (code 2).
//!
//! A node that is not the master answers HTTP 400 `no leader` (CubeFS's follower answer
//! without a leader), so the node moves on to the next master, as CubeFS's SDK does.

use std::rc::Rc;

use mast_http::{Method, Request, Response, Router};

use super::proto::{op, Answer};
use super::{AdminTasks, Answered, Role};
use crate::node::shard::Shard;

/// Body of a successful answer.
pub const OK_BODY: &str = r#"{"code":0,"msg":"success","data":"200"}"#;

fn envelope_error(code: i32, msg: &str) -> Response {
    Response::json(
        200,
        &serde_json::json!({"code": code, "msg": msg, "data": null}),
    )
}

fn ok() -> Response {
    Response::bytes(200, "application/json", OK_BODY.as_bytes().to_vec().into())
}

/// Parses a response body and checks it belongs on this route.
pub fn parse(role: Role, body: &[u8]) -> Result<Answer, Response> {
    let task = Answer::parse(body).map_err(|e| envelope_error(6, &e.to_string()))?;
    let expected = match role {
        Role::Data => op::DATA_NODE_HEARTBEAT,
        Role::Meta => op::META_NODE_HEARTBEAT,
    };
    let is_data_op = (0x60..=0x8F).contains(&task.op_code);
    let is_meta_op = (0x40..=0x4F).contains(&task.op_code);
    let wrong = match role {
        Role::Data => is_meta_op,
        Role::Meta => is_data_op,
    };
    if wrong {
        return Err(envelope_error(
            2,
            &format!(
                "opcode {:#x} is not a {} node task (heartbeat is {expected:#x})",
                task.op_code,
                role.as_str()
            ),
        ));
    }
    Ok(task)
}

/// Applies an answer to `tasks` and builds the HTTP reply.
pub fn reply(tasks: &AdminTasks, task: Answer) -> Response {
    match tasks.answer(task) {
        Answered::Applied { .. } => ok(),
        Answered::NotMaster => Response::text(400, "no leader"),
    }
}

async fn handle(shard: Rc<Shard>, role: Role, req: Request) -> Response {
    let task = match parse(role, req.body()) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let owner = crate::placement::owner_shard(&task.operator_addr, shard.mesh.shards());
    match shard
        .run_on(owner, move |s: Rc<Shard>| async move {
            match s.admin_tasks.answer(task) {
                Answered::Applied { .. } => true,
                Answered::NotMaster => false,
            }
        })
        .await
    {
        Ok(true) => ok(),
        Ok(false) => Response::text(400, "no leader"),
        Err(e) => envelope_error(1, &format!("shard {owner} unavailable: {e}")),
    }
}

/// `GET /adminTask/live?addr=ADDR`: what this node's leader memory holds about a storage
/// node (mast's own route, for operators and tests; a follower knows nothing).
async fn live(shard: Rc<Shard>, req: Request) -> Response {
    let Some(addr) = req.query_param("addr").map(|a| a.into_owned()) else {
        return Response::error(400, "bad_request", "addr is required");
    };
    match super::live_of(&shard, &addr).await {
        None => Response::error(
            404,
            "not_found",
            &format!("no node {addr} in this node's memory"),
        ),
        Some(l) => Response::json(
            200,
            &serde_json::json!({
                "addr": l.addr, "id": l.id, "role": l.role.map(Role::as_str),
                "is_active": l.is_active, "report_time_unix_s": l.report_time_unix_s,
                "total": l.total, "used": l.used, "available": l.available,
                "data_partition_count": l.data_partition_count,
                "meta_partition_count": l.meta_partition_count,
                "partition_reports": l.partition_reports.len(),
                "zone_reported": l.zone_reported, "zone_registered": l.zone_registered,
                "heartbeats_answered": l.heartbeats_answered,
            }),
        ),
    }
}

/// Adds both routes (GET and POST, as every CubeFS route), and mast's `GET /adminTask/live`
/// and `GET /adminTask/metrics` (the admin task counters as Prometheus text).
pub fn routes(router: Router, shard: Rc<Shard>) -> Router {
    let mut router = router;
    for (path, role) in [
        ("/dataNode/response", Role::Data),
        ("/metaNode/response", Role::Meta),
    ] {
        for method in [Method::GET, Method::POST] {
            let s = shard.clone();
            router = router.route(method, path, move |req: Request| {
                handle(s.clone(), role, req)
            });
        }
    }
    let s = shard.clone();
    let router = router.route(Method::GET, "/adminTask/live", move |req: Request| {
        live(s.clone(), req)
    });
    router.route(Method::GET, "/adminTask/metrics", move |_req: Request| {
        let s = shard.clone();
        async move {
            let text = super::metrics_text(&s).await;
            Response::bytes(200, "text/plain; version=0.0.4", text.into_bytes().into())
        }
    })
}
