//! etcd raftexample's KV API over HTTP, made durable and linearizable.
//!
//! The key is the percent-decoded rest of the path after `/kv/`; its owner shard is
//! `fnv1a(key) % shards`. The request is served by the owner shard's replica (through a
//! cross-shard call when the connection landed elsewhere). On a follower, writes go to the
//! leader as raft proposals and reads use ReadIndex through the leader, so any node answers
//! any request with the same linearizable result; `--redirect` answers 307 to the leader
//! instead. A write is answered only after its entry is committed (durable on a quorum) and
//! applied on the answering node.

use std::rc::Rc;

use mast_http::{Method, Request, Response, Router};
use serde::Serialize;

use crate::meta::kv::{Command, Cond, Outcome};
use crate::meta::{MetaCommand, MetaOutcome, MetaTable};
use crate::node::errors::error_response;
use crate::node::shard::Shard;
use crate::placement::owner_shard;
use crate::replica::{Group, GroupError};

/// Keys longer than this answer 414.
pub const KEY_BYTES_MAX: usize = 4096;
/// Values larger than this answer 413.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;
/// Default and maximum `limit` of a key listing.
pub const LIST_LIMIT_DEFAULT: usize = 1000;
pub const LIST_LIMIT_MAX: usize = 10_000;

/// What the owner shard answers; `Send` so it can cross back to the accepting shard.
#[derive(Debug)]
enum KvReply {
    Written { revision: u64 },
    Deleted,
    Value { value: Vec<u8>, revision: u64 },
    NotFound,
    PreconditionFailed { current: Option<u64> },
    Keys(Vec<(String, u64)>),
    NotLeader { leader_http: Option<String> },
    Failed(GroupError),
}

/// Runs `f` against the group of `shard`, locally or through the mesh.
async fn on_shard<F, Fut>(me: &Rc<Shard>, shard: usize, f: F) -> KvReply
where
    F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = KvReply> + 'static,
{
    me.run_on(shard, f)
        .await
        .unwrap_or(KvReply::Failed(GroupError::Overloaded))
}

/// With `--redirect`, a node that does not lead the group names the leader instead.
fn redirect_target(shard: &Shard, group: &Group<MetaTable>) -> Option<KvReply> {
    if !shard.node.redirect || group.is_leader() {
        return None;
    }
    let leader = group.leader();
    if leader == 0 {
        return Some(KvReply::Failed(GroupError::NoLeader { leader_hint: 0 }));
    }
    let leader_http = group.members().get(&leader).map(|m| m.http_addr.clone());
    Some(KvReply::NotLeader { leader_http })
}

fn etag(revision: u64) -> String {
    format!("\"{revision}\"")
}

fn reply_response(req: &Request, reply: KvReply) -> Response {
    match reply {
        KvReply::Written { revision } => Response::empty(204).with_header("etag", etag(revision)),
        KvReply::Deleted => Response::empty(204),
        KvReply::Value { value, revision } => {
            Response::bytes(200, "application/octet-stream", value.into())
                .with_header("etag", etag(revision))
        }
        KvReply::NotFound => Response::error(404, "key_not_found", "no such key"),
        KvReply::PreconditionFailed { current } => {
            let r = Response::error(
                412,
                "precondition_failed",
                "the key's current revision does not match the precondition",
            );
            match current {
                Some(rev) => r.with_header("etag", etag(rev)),
                None => r,
            }
        }
        KvReply::Keys(keys) => {
            #[derive(Serialize)]
            struct Key {
                key: String,
                revision: u64,
            }
            #[derive(Serialize)]
            struct Listing {
                keys: Vec<Key>,
                truncated: bool,
            }
            let limit = list_limit(req).unwrap_or(LIST_LIMIT_DEFAULT);
            let truncated = keys.len() > limit;
            let keys = keys
                .into_iter()
                .take(limit)
                .map(|(key, revision)| Key { key, revision })
                .collect();
            Response::json(200, &Listing { keys, truncated })
        }
        KvReply::NotLeader {
            leader_http: Some(addr),
        } => {
            let target = match req.query() {
                Some(q) => format!("http://{addr}{}?{q}", req.path()),
                None => format!("http://{addr}{}", req.path()),
            };
            Response::error(307, "not_leader", "this node does not lead the key's shard")
                .with_header("location", target)
        }
        KvReply::NotLeader { leader_http: None } => {
            error_response(&GroupError::NoLeader { leader_hint: 0 })
        }
        KvReply::Failed(e) => error_response(&e),
    }
}

fn list_limit(req: &Request) -> Result<usize, Response> {
    match req.query_param("limit") {
        None => Ok(LIST_LIMIT_DEFAULT),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if n > 0 && n <= LIST_LIMIT_MAX => Ok(n),
            _ => Err(Response::error(
                400,
                "bad_limit",
                &format!("limit must be an integer in 1..={LIST_LIMIT_MAX}"),
            )),
        },
    }
}

fn flag(req: &Request, name: &str) -> bool {
    matches!(req.query_param(name).as_deref(), Some("true") | Some("1"))
}

/// The key from the path, or the response that refuses it.
fn key_of(req: &Request) -> Result<String, Response> {
    let key = req.param_decoded("key").map_err(|m| {
        Response::error(
            400,
            "bad_key",
            &format!("{m}: keys are percent-encoded UTF-8"),
        )
    })?;
    if key.len() > KEY_BYTES_MAX {
        return Err(Response::error(
            414,
            "key_too_long",
            &format!("keys are limited to {KEY_BYTES_MAX} bytes"),
        ));
    }
    Ok(key.into_owned())
}

/// `If-Match` / `If-None-Match` as a write precondition.
fn condition(req: &Request) -> Result<Cond, Response> {
    let bad = |m: &str| Err(Response::error(400, "bad_precondition", m));
    match (req.header_str("if-match"), req.header_str("if-none-match")) {
        (Some(_), Some(_)) => bad("If-Match and If-None-Match cannot be combined"),
        (None, None) => Ok(Cond::Always),
        (None, Some(v)) if v.trim() == "*" => Ok(Cond::Absent),
        (None, Some(_)) => bad("only If-None-Match: * is supported"),
        (Some(v), None) => {
            let v = v.trim();
            if v == "*" {
                return Ok(Cond::Present);
            }
            match v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .map(str::parse::<u64>)
            {
                Some(Ok(rev)) => Ok(Cond::RevisionIs(rev)),
                _ => bad("If-Match takes a quoted revision, e.g. If-Match: \"42\", or *"),
            }
        }
    }
}

async fn write(me: Rc<Shard>, req: Request, delete: bool) -> Response {
    let key = match key_of(&req) {
        Ok(k) if !k.is_empty() => k,
        Ok(_) => return Response::error(400, "bad_key", "the key must not be empty"),
        Err(r) => return r,
    };
    let cond = match condition(&req) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !delete && req.body().len() > VALUE_BYTES_MAX {
        return Response::error(
            413,
            "value_too_large",
            &format!("values are limited to {VALUE_BYTES_MAX} bytes"),
        );
    }
    let command = if delete {
        Command::Delete {
            key: key.clone(),
            cond,
        }
    } else {
        Command::Put {
            key: key.clone(),
            value: req.body().to_vec(),
            cond,
        }
    };
    let owner = owner_shard(&key, me.mesh.shards());
    let reply = on_shard(&me, owner, move |shard: Rc<Shard>| async move {
        if let Some(r) = redirect_target(&shard, &shard.group) {
            return r;
        }
        match shard.group.propose(&MetaCommand::Kv(command)).await {
            Ok(MetaOutcome::Kv(Outcome::Done { .. })) if delete => KvReply::Deleted,
            Ok(MetaOutcome::Kv(Outcome::Done { revision })) => KvReply::Written { revision },
            Ok(MetaOutcome::Kv(Outcome::NotFound)) => KvReply::Deleted,
            Ok(MetaOutcome::Kv(Outcome::PreconditionFailed { current })) => {
                KvReply::PreconditionFailed { current }
            }
            // Only a bug makes a KV command apply as something else: answer, never hang.
            Ok(other) => {
                KvReply::Failed(GroupError::Refused(format!("unexpected outcome {other:?}")))
            }
            Err(e) => KvReply::Failed(e),
        }
    })
    .await;
    reply_response(&req, reply)
}

async fn read(me: Rc<Shard>, req: Request) -> Response {
    let key = match key_of(&req) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let stale = flag(&req, "stale") || me.node.follower_read;
    if key.is_empty() {
        return list(me, req, stale).await;
    }
    let owner = owner_shard(&key, me.mesh.shards());
    let reply = on_shard(&me, owner, move |shard: Rc<Shard>| async move {
        if !stale {
            if let Some(r) = redirect_target(&shard, &shard.group) {
                return r;
            }
            if let Err(e) = shard.group.read_barrier().await {
                return KvReply::Failed(e);
            }
        }
        match shard.group.state().kv.get(&key) {
            Some(item) => KvReply::Value {
                value: item.value.clone(),
                revision: item.revision,
            },
            None => KvReply::NotFound,
        }
    })
    .await;
    reply_response(&req, reply)
}

async fn list(me: Rc<Shard>, req: Request, stale: bool) -> Response {
    let limit = match list_limit(&req) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let prefix = req
        .query_param("prefix")
        .map(|p| p.into_owned())
        .unwrap_or_default();
    let mut all: Vec<(String, u64)> = Vec::new();
    for s in 0..me.mesh.shards() {
        let prefix = prefix.clone();
        // One more than asked, so the merged listing can say whether it was truncated.
        let reply = on_shard(&me, s, move |shard: Rc<Shard>| async move {
            if !stale {
                if let Err(e) = shard.group.read_barrier().await {
                    return KvReply::Failed(e);
                }
            }
            KvReply::Keys(shard.group.state().kv.list(&prefix, limit + 1))
        })
        .await;
        match reply {
            KvReply::Keys(keys) => all.extend(keys),
            other => return reply_response(&req, other),
        }
    }
    all.sort_unstable();
    all.truncate(limit + 1);
    reply_response(&req, KvReply::Keys(all))
}

/// Adds the KV and cluster routes.
pub fn routes(router: Router, shard: Rc<Shard>) -> Router {
    let (s1, s2, s3) = (shard.clone(), shard.clone(), shard);
    router
        .route(Method::PUT, "/kv/*key", move |req: Request| {
            write(s1.clone(), req, false)
        })
        .route(Method::DELETE, "/kv/*key", move |req: Request| {
            write(s2.clone(), req, true)
        })
        .route(Method::GET, "/kv/*key", move |req: Request| {
            read(s3.clone(), req)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preconditions_parse() {
        let req = |h: &[(&str, &str)]| {
            Request::new(Method::PUT, "/kv/a", h, bytes::Bytes::new()).unwrap()
        };
        assert_eq!(condition(&req(&[])).unwrap(), Cond::Always);
        assert_eq!(
            condition(&req(&[("if-match", "\"42\"")])).unwrap(),
            Cond::RevisionIs(42)
        );
        assert_eq!(
            condition(&req(&[("if-match", "*")])).unwrap(),
            Cond::Present
        );
        assert_eq!(
            condition(&req(&[("if-none-match", "*")])).unwrap(),
            Cond::Absent
        );
        for bad in [
            &[("if-match", "42")][..],
            &[("if-match", "\"x\"")],
            &[("if-none-match", "\"1\"")],
            &[("if-match", "*"), ("if-none-match", "*")],
        ] {
            assert_eq!(condition(&req(bad)).unwrap_err().status, 400);
        }
    }
}
