//! Fault injection for tests, compiled only with the `fault-injection` feature (never in a
//! default build, so no production binary carries a route that panics on request).
//!
//! `POST /debug/panic/{at}` with `at` one of:
//! - `handler`: this request's handler panics (contained: 500, the shard goes on);
//! - `driver`: the next turn of this shard's raft driver panics (fatal for the process);
//! - `log`: the next append to this shard's raft log panics (fatal for the process).

use std::cell::Cell;
use std::rc::Rc;

use mast_http::{Method, Request, Response, Router};

use super::shard::Shard;

/// Where an armed panic fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanicAt {
    Driver,
    Log,
}

thread_local! {
    // Per shard thread: only the shard whose route was called is affected.
    static ARMED: Cell<Option<PanicAt>> = const { Cell::new(None) };
}

/// Panics if a panic at `at` was armed on this thread (and disarms it).
pub fn fire(at: PanicAt) {
    if ARMED.with(|a| a.get()) == Some(at) {
        ARMED.with(|a| a.set(None));
        panic!("injected panic: {at:?}");
    }
}

/// Adds the fault routes.
pub fn routes(router: Router, shard: Rc<Shard>) -> Router {
    router.route(Method::POST, "/debug/panic/{at}", move |req: Request| {
        let shard = shard.clone();
        let at = req.param("at").unwrap_or_default().to_string();
        async move {
            match at.as_str() {
                "handler" => panic!("injected panic in a request handler"),
                "driver" | "log" => {
                    let which = if at == "driver" {
                        PanicAt::Driver
                    } else {
                        PanicAt::Log
                    };
                    ARMED.with(|a| a.set(Some(which)));
                    Response::text(202, format!("armed {which:?} on shard {}\n", shard.id))
                }
                _ => Response::error(400, "bad_request", "at must be handler, driver or log"),
            }
        }
    })
}
