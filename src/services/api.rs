//! `POST /tso?count=N` → `{"timestamp": T, "count": N}` and `POST /ids?count=N` →
//! `{"id": FIRST, "count": N}`, from any node: the request crosses to shard 0, which serves it
//! as group 0's leader or relays it there.

use std::rc::Rc;

use mast_http::{Method, Request, Response, Router};
use serde::Serialize;

use super::{ids, tso, Range, ServiceCall, ServiceError};
use crate::node::errors::error_response;
use crate::node::shard::Shard;
use crate::replica::GroupError;

/// The `count` parameter: absent means 1; anything but an integer in `1..=max` is refused.
pub fn parse_count(req: &Request, max: u64) -> Result<u64, Response> {
    match req.query_param("count") {
        None => Ok(1),
        Some(s) => match s.parse::<u64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(Response::error(
                400,
                "bad_count",
                &format!("count must be an integer in 1..={max}"),
            )),
        },
    }
}

/// Calls the cluster's TSO or ID allocator from any shard of any node (domains stamp their
/// commands with it before proposing).
pub async fn call(me: Rc<Shard>, call: ServiceCall) -> Result<Range, ServiceError> {
    me.run_on(0, move |s0: Rc<Shard>| async move {
        s0.services.serve(&s0.group, call).await
    })
    .await
    .unwrap_or(Err(ServiceError::Group(GroupError::Overloaded)))
}

fn failure(e: &ServiceError) -> Response {
    match e {
        ServiceError::BadRequest(m) => Response::error(400, "bad_request", m),
        ServiceError::Group(e) => error_response(e),
    }
}

#[derive(Serialize)]
struct Timestamps {
    timestamp: u64,
    count: u64,
}

#[derive(Serialize)]
struct Ids {
    id: u64,
    count: u64,
}

pub fn routes(router: Router, shard: Rc<Shard>) -> Router {
    let s1 = shard.clone();
    router
        .route(Method::POST, "/tso", move |req: Request| {
            let me = s1.clone();
            async move {
                let count = match parse_count(&req, tso::COUNT_MAX) {
                    Ok(c) => c,
                    Err(r) => return r,
                };
                match call(me, ServiceCall::Tso { count }).await {
                    Ok(r) => Response::json(
                        200,
                        &Timestamps {
                            timestamp: r.first,
                            count: r.count,
                        },
                    ),
                    Err(e) => failure(&e),
                }
            }
        })
        .route(Method::POST, "/ids", move |req: Request| {
            let me = shard.clone();
            async move {
                let count = match parse_count(&req, ids::COUNT_MAX) {
                    Ok(c) => c,
                    Err(r) => return r,
                };
                match call(me, ServiceCall::Ids { count }).await {
                    Ok(r) => Response::json(
                        200,
                        &Ids {
                            id: r.first,
                            count: r.count,
                        },
                    ),
                    Err(e) => failure(&e),
                }
            }
        })
}
