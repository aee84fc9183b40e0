//! Cluster administration over HTTP: members and leadership.
//!
//! Membership changes are applied to every shard's group in turn (each group is its own raft
//! group with the same members). A new node is added as a learner; each shard's leader
//! promotes it to voter once it has caught up (see `Group::promote_caught_up_learners`).

use std::rc::Rc;

use mast_http::{Method, Request, Response, Router};
use mast_raft::{ConfChange, ConfChangeKind};
use serde::{Deserialize, Serialize};

use crate::node::shard::Shard;
use crate::replica::{GroupError, MemberAddrs};

#[derive(Serialize)]
struct MemberView {
    id: u64,
    peer_addr: String,
    http_addr: String,
    voter: bool,
}

#[derive(Serialize)]
struct Members {
    cluster_id: u64,
    shards: usize,
    members: Vec<MemberView>,
}

/// Members as shard 0's group knows them (every group has the same members once changes
/// have been applied everywhere).
async fn list(me: Rc<Shard>) -> Response {
    let cluster_id = me.node.cluster.cluster_id;
    let members = me
        .run_on(0, |s: Rc<Shard>| async move {
            let st = s.group.raft_status();
            s.group
                .members()
                .into_iter()
                .filter(|(id, _)| {
                    st.conf_state.voters.contains(id) || st.conf_state.learners.contains(id)
                })
                .map(|(id, m)| MemberView {
                    id,
                    voter: st.conf_state.voters.contains(&id),
                    peer_addr: m.peer_addr,
                    http_addr: m.http_addr,
                })
                .collect::<Vec<_>>()
        })
        .await;
    match members {
        Ok(members) => Response::json(
            200,
            &Members {
                cluster_id,
                shards: me.mesh.shards(),
                members,
            },
        ),
        Err(_) => Response::error(503, "stopping", "shard 0 is not answering"),
    }
}

fn group_error(e: &GroupError) -> Response {
    match e {
        GroupError::NoLeader { .. } => {
            Response::error(503, "no_leader", "a shard has no leader; retry")
                .with_header("retry-after", "1")
        }
        GroupError::Timeout => Response::error(
            504,
            "unknown_outcome",
            "timed out; the change may still take effect",
        ),
        other => Response::error(503, "membership_refused", &other.to_string())
            .with_header("retry-after", "1"),
    }
}

/// Applies `cc` to every shard's group, in shard order, stopping at the first failure.
async fn change_everywhere(me: &Rc<Shard>, cc: ConfChange) -> Result<(), Response> {
    for s in 0..me.mesh.shards() {
        let cc = cc.clone();
        let run = move |shard: Rc<Shard>| async move { shard.group.change_membership(cc).await };
        let r = me
            .run_on(s, run)
            .await
            .unwrap_or(Err(GroupError::Overloaded));
        r.map_err(|e| group_error(&e))?;
    }
    Ok(())
}

async fn add(me: Rc<Shard>, req: Request) -> Response {
    let (id, peer_addr, http_addr) = match parse_new_member(req.body()) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let addrs = MemberAddrs {
        peer_addr,
        http_addr,
    };
    let context = crate::codec::encode(&addrs);
    let cc = ConfChange {
        kind: ConfChangeKind::AddLearner,
        node_id: id,
        context,
    };
    match change_everywhere(&me, cc).await {
        Ok(()) => Response::json(200, &serde_json::json!({"added": id, "as": "learner"})),
        Err(r) => r,
    }
}

async fn remove(me: Rc<Shard>, req: Request) -> Response {
    let Some(id) = req
        .param("id")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&id| id > 0)
    else {
        return Response::error(
            400,
            "bad_member",
            "the member id must be a positive integer",
        );
    };
    let cc = ConfChange {
        kind: ConfChangeKind::RemoveNode,
        node_id: id,
        context: vec![],
    };
    match change_everywhere(&me, cc).await {
        Ok(()) => Response::json(200, &serde_json::json!({"removed": id})),
        Err(r) => r,
    }
}

/// Asks every shard this node leads to hand leadership to `to`.
async fn transfer(me: Rc<Shard>, req: Request) -> Response {
    let Some(to) = req
        .query_param("to")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&id| id > 0)
    else {
        return Response::error(400, "bad_target", "give the new leader as ?to=<node id>");
    };
    #[derive(Serialize)]
    struct ShardResult {
        shard: usize,
        result: String,
    }
    let mut results = Vec::new();
    for s in 0..me.mesh.shards() {
        let run = move |shard: Rc<Shard>| async move {
            if !shard.group.is_leader() {
                return format!("not_leader (leader is {})", shard.group.leader());
            }
            match shard.group.transfer_leader(to) {
                Ok(()) => "transferring".to_string(),
                Err(e) => format!("refused: {e}"),
            }
        };
        let result = me.run_on(s, run).await.unwrap_or_else(|e| e.to_string());
        results.push(ShardResult { shard: s, result });
    }
    Response::json(200, &results)
}

pub fn routes(router: Router, shard: Rc<Shard>) -> Router {
    let (s1, s2, s3, s4) = (shard.clone(), shard.clone(), shard.clone(), shard);
    router
        .route(Method::GET, "/members", move |_req: Request| {
            list(s1.clone())
        })
        .route(Method::POST, "/members", move |req: Request| {
            add(s2.clone(), req)
        })
        .route(Method::DELETE, "/members/{id}", move |req: Request| {
            remove(s3.clone(), req)
        })
        .route(Method::POST, "/leader/transfer", move |req: Request| {
            transfer(s4.clone(), req)
        })
}

#[derive(Deserialize)]
struct NewMember {
    id: u64,
    peer_addr: String,
    http_addr: String,
}

/// Parses the body of `POST /members`.
pub fn parse_new_member(body: &[u8]) -> Result<(u64, String, String), Response> {
    let m: NewMember = serde_json::from_slice(body).map_err(|e| {
        Response::error(
            400,
            "bad_member",
            &format!("expected {{\"id\":N,\"peer_addr\":\"..\",\"http_addr\":\"..\"}}: {e}"),
        )
    })?;
    if m.id == 0 {
        return Err(Response::error(400, "bad_member", "node id 0 is reserved"));
    }
    for (name, a) in [("peer_addr", &m.peer_addr), ("http_addr", &m.http_addr)] {
        if a.parse::<std::net::SocketAddr>().is_err() {
            return Err(Response::error(
                400,
                "bad_member",
                &format!("{name} {a:?} is not IP:port"),
            ));
        }
    }
    Ok((m.id, m.peer_addr, m.http_addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_member_validation() {
        assert!(parse_new_member(
            br#"{"id":4,"peer_addr":"127.0.0.1:1","http_addr":"127.0.0.1:2"}"#
        )
        .is_ok());
        for bad in [
            &br#"{"id":0,"peer_addr":"127.0.0.1:1","http_addr":"127.0.0.1:2"}"#[..],
            br#"{"id":4}"#,
            br#"{"id":4,"peer_addr":"x","http_addr":"127.0.0.1:2"}"#,
            b"nope",
        ] {
            assert_eq!(parse_new_member(bad).unwrap_err().status, 400);
        }
    }
}
