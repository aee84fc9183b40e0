//! Method + path routing with path parameters.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use crate::request::{Method, Request};
use crate::response::Response;

/// A boxed handler future (not `Send`: handlers run on their shard's thread).
pub type HandlerFuture = Pin<Box<dyn Future<Output = Response>>>;
/// A stored handler.
pub type Handler = Rc<dyn Fn(Request) -> HandlerFuture>;
/// Runs before every request's handler (matched or not); `Some` answers the request instead
/// (authentication lives here, at one place, rather than in every handler).
pub type Guard = Rc<dyn Fn(&Request) -> Option<Response>>;

/// Path parameters: (name, span in the request head).
type Params = Vec<(Arc<str>, Range<u32>)>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    Param(Arc<str>),
    Rest(Arc<str>),
}

struct Route {
    method: Method,
    name: Rc<str>,
    segments: Vec<Segment>,
    handler: Handler,
}

/// Metrics label slot of requests no route matched (404/405).
pub(crate) const SLOT_UNMATCHED: usize = 0;
/// Metrics label slot of requests refused by the decoder.
pub(crate) const SLOT_INVALID: usize = 1;
/// Label slots of routes start here (slot = index + ROUTE_SLOT_BASE).
pub(crate) const ROUTE_SLOT_BASE: usize = 2;

/// Routes requests to handlers by method and path pattern.
///
/// Patterns start with '/' and are made of segments separated by '/':
/// - a literal segment matches itself (compared raw, not percent-decoded);
/// - `{name}` matches exactly one non-empty segment;
/// - `*name` (last segment only) matches the rest of the path, which may contain '/' and may
///   be empty (`/kv/*key` matches `/kv`, `/kv/` and `/kv/a/b`).
///
/// The first registered route whose pattern and method match wins. `HEAD` falls back to the
/// `GET` route of the same pattern. A path that matches some pattern but not with this method
/// gets 405 with `Allow`; anything else gets 404, both in the API error format.
/// Each route's pattern is its metrics label.
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
    guard: Option<Guard>,
}

/// Outcome of routing one request.
pub(crate) enum Resolved {
    Handler(Handler, usize),
    Response(Response, usize),
}

impl Router {
    /// An empty router (every request gets 404).
    pub fn new() -> Router {
        Router::default()
    }

    /// Sets the guard every request passes before routing's answer (a handler, 404 or 405).
    pub fn with_guard(mut self, guard: Guard) -> Router {
        self.guard = Some(guard);
        self
    }

    /// Adds a route.
    ///
    /// # Panics
    /// When `pattern` is malformed (does not start with '/', has an empty `{}` or `*` name, or
    /// a `*name` that is not the last segment). Patterns are program constants, so this is a
    /// programming error caught at startup.
    pub fn route<F, Fut>(self, method: Method, pattern: &str, handler: F) -> Router
    where
        F: Fn(Request) -> Fut + 'static,
        Fut: Future<Output = Response> + 'static,
    {
        match self.try_route(method, pattern, handler) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    /// Adds a route, returning an error for a malformed pattern instead of panicking.
    pub fn try_route<F, Fut>(
        mut self,
        method: Method,
        pattern: &str,
        handler: F,
    ) -> Result<Router, String>
    where
        F: Fn(Request) -> Fut + 'static,
        Fut: Future<Output = Response> + 'static,
    {
        let segments = parse_pattern(pattern)?;
        let handler: Handler = Rc::new(move |req| Box::pin(handler(req)) as HandlerFuture);
        self.routes.push(Route {
            method,
            name: Rc::from(pattern),
            segments,
            handler,
        });
        Ok(self)
    }

    /// Routes `req` and runs its handler (or answers 404/405) without a connection: for
    /// requests forwarded from other nodes and for testing handlers. A panicking handler is
    /// answered 500 and logged, as on a connection (see [`crate::panic`]).
    pub async fn dispatch(&self, mut req: Request) -> Response {
        match self.resolve(&mut req) {
            Resolved::Handler(h, _) => {
                let line = format!("{} {}", req.method().as_str(), req.path());
                match crate::panic::run_contained(|| h(req)).await {
                    Ok(resp) => resp,
                    Err(payload) => {
                        tracing::error!(
                            request = %line,
                            panic = crate::panic::panic_message(payload.as_ref()),
                            "dispatched request handler panicked; answered 500"
                        );
                        crate::panic::panic_response()
                    }
                }
            }
            Resolved::Response(resp, _) => resp,
        }
    }

    /// Route names (patterns) in metrics slot order, starting at slot `ROUTE_SLOT_BASE`.
    pub(crate) fn route_name(&self, slot: usize) -> Option<&Rc<str>> {
        slot.checked_sub(ROUTE_SLOT_BASE)
            .and_then(|i| self.routes.get(i))
            .map(|r| &r.name)
    }

    /// Picks the handler for `req` and stores its path parameters in it, unless the guard
    /// answers it (under the slot routing chose, so refusals are counted per route).
    pub(crate) fn resolve(&self, req: &mut Request) -> Resolved {
        let resolved = self.resolve_route(req);
        let Some(guard) = &self.guard else {
            return resolved;
        };
        match guard(req) {
            None => resolved,
            Some(refusal) => match resolved {
                Resolved::Handler(_, slot) | Resolved::Response(_, slot) => {
                    Resolved::Response(refusal, slot)
                }
            },
        }
    }

    fn resolve_route(&self, req: &mut Request) -> Resolved {
        let path = req.path();
        let base = req.path.start;
        let mut allowed: Vec<Method> = Vec::new();
        let mut get_fallback: Option<(usize, Params)> = None;
        for (i, route) in self.routes.iter().enumerate() {
            let Some(params) = match_path(&route.segments, path, base) else {
                continue;
            };
            if route.method == req.method {
                req.params = params;
                return Resolved::Handler(route.handler.clone(), i + ROUTE_SLOT_BASE);
            }
            if req.method == Method::HEAD && route.method == Method::GET && get_fallback.is_none() {
                get_fallback = Some((i, params));
            }
            if !allowed.contains(&route.method) {
                allowed.push(route.method);
            }
        }
        if let Some((i, params)) = get_fallback {
            req.params = params;
            if let Some(route) = self.routes.get(i) {
                return Resolved::Handler(route.handler.clone(), i + ROUTE_SLOT_BASE);
            }
        }
        if allowed.is_empty() {
            return Resolved::Response(
                Response::error(404, "not_found", "no route for this path"),
                SLOT_UNMATCHED,
            );
        }
        if allowed.contains(&Method::GET) && !allowed.contains(&Method::HEAD) {
            allowed.push(Method::HEAD);
        }
        let allow = allowed
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        Resolved::Response(
            Response::error(
                405,
                "method_not_allowed",
                "this path does not support the request method",
            )
            .with_header("allow", allow),
            SLOT_UNMATCHED,
        )
    }
}

fn parse_pattern(pattern: &str) -> Result<Vec<Segment>, String> {
    let rest = pattern
        .strip_prefix('/')
        .ok_or_else(|| format!("route pattern {pattern:?} must start with '/'"))?;
    let parts: Vec<&str> = rest.split('/').collect();
    let mut segments = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let seg = if let Some(name) = part.strip_prefix('*') {
            if i + 1 != parts.len() {
                return Err(format!(
                    "route pattern {pattern:?}: *{name} must be the last segment"
                ));
            }
            Segment::Rest(Arc::from(non_empty(name, pattern)?))
        } else if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Segment::Param(Arc::from(non_empty(name, pattern)?))
        } else {
            Segment::Literal(Box::from(*part))
        };
        segments.push(seg);
    }
    Ok(segments)
}

fn non_empty<'a>(name: &'a str, pattern: &str) -> Result<&'a str, String> {
    if name.is_empty() {
        Err(format!(
            "route pattern {pattern:?} has an unnamed parameter"
        ))
    } else {
        Ok(name)
    }
}

/// Matches `path` (which starts at byte `base` of the request head) against `segments`,
/// returning the parameter spans in head coordinates.
fn match_path(segments: &[Segment], path: &str, base: u32) -> Option<Params> {
    let mut rest = path.strip_prefix('/')?;
    let mut offset = 1usize;
    let mut exhausted = false;
    let mut params = Vec::new();
    let at = |from: usize, to: usize| base + from as u32..base + to as u32;
    for seg in segments {
        if let Segment::Rest(name) = seg {
            let start = if exhausted { path.len() } else { offset };
            params.push((name.clone(), at(start, path.len())));
            return Some(params);
        }
        if exhausted {
            return None;
        }
        let (part, next) = match rest.find('/') {
            Some(i) => (rest.get(..i)?, Some(i)),
            None => (rest, None),
        };
        match seg {
            Segment::Literal(l) => {
                if part != &**l {
                    return None;
                }
            }
            Segment::Param(name) => {
                if part.is_empty() {
                    return None;
                }
                params.push((name.clone(), at(offset, offset + part.len())));
            }
            Segment::Rest(_) => {}
        }
        match next {
            Some(i) => {
                rest = rest.get(i + 1..)?;
                offset += i + 1;
            }
            None => exhausted = true,
        }
    }
    exhausted.then_some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, path: &str) -> Option<Vec<(String, String)>> {
        let segs = parse_pattern(pattern).unwrap();
        match_path(&segs, path, 0).map(|ps| {
            ps.into_iter()
                .map(|(n, r)| {
                    (
                        n.to_string(),
                        path[r.start as usize..r.end as usize].to_string(),
                    )
                })
                .collect()
        })
    }

    fn p(pairs: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    #[test]
    fn literals_params_and_rest() {
        assert_eq!(m("/", "/"), p(&[]));
        assert_eq!(m("/healthz", "/healthz"), p(&[]));
        assert_eq!(m("/healthz", "/healthz/"), None);
        assert_eq!(m("/healthz", "/health"), None);
        assert_eq!(m("/a/{id}/c", "/a/42/c"), p(&[("id", "42")]));
        assert_eq!(m("/a/{id}/c", "/a//c"), None);
        assert_eq!(m("/kv/*key", "/kv/x/y"), p(&[("key", "x/y")]));
        assert_eq!(m("/kv/*key", "/kv/"), p(&[("key", "")]));
        assert_eq!(m("/kv/*key", "/kv"), p(&[("key", "")]));
        assert_eq!(m("/kv/*key", "/kvx"), None);
        assert_eq!(m("/v/{a}/*r", "/v/1/2/3"), p(&[("a", "1"), ("r", "2/3")]));
    }

    fn run<F: Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("handler suspended"),
        }
    }

    #[test]
    fn dispatch_without_a_socket() {
        let router = Router::new()
            .route(Method::PUT, "/kv/*key", |req: Request| async move {
                let key = req.param_decoded("key").unwrap_or_default().into_owned();
                Response::text(
                    200,
                    format!("{key}={}", String::from_utf8_lossy(req.body())),
                )
            })
            .route(Method::GET, "/kv/*key", |_req| async {
                Response::empty(204)
            });
        let req = Request::new(Method::PUT, "/kv/a%20b", &[("x", "y")], "v".into()).unwrap();
        let resp = run(router.dispatch(req));
        assert_eq!(resp.status, 200);
        assert_eq!(&resp.body[..], b"a b=v");
        let req = Request::new(Method::HEAD, "/kv/a", &[], bytes::Bytes::new()).unwrap();
        assert_eq!(run(router.dispatch(req)).status, 204);
        let req = Request::new(Method::DELETE, "/kv/a", &[], bytes::Bytes::new()).unwrap();
        let resp = run(router.dispatch(req));
        assert_eq!(resp.status, 405);
        assert!(resp
            .headers
            .iter()
            .any(|(n, v)| n == "allow" && v == "PUT, GET, HEAD"));
        let req = Request::new(Method::GET, "/nope", &[], bytes::Bytes::new()).unwrap();
        assert_eq!(run(router.dispatch(req)).status, 404);
        // Header injection is refused rather than turned into a second request.
        assert!(Request::new(
            Method::GET,
            "/",
            &[("x", "a\r\nGET /x HTTP/1.1")],
            bytes::Bytes::new()
        )
        .is_err());
    }

    #[test]
    fn requests_and_responses_can_cross_shards() {
        fn is_send<T: Send>() {}
        is_send::<Request>();
        is_send::<Response>();
    }

    #[test]
    fn bad_patterns_are_rejected() {
        assert!(parse_pattern("x").is_err());
        assert!(parse_pattern("/*a/b").is_err());
        assert!(parse_pattern("/{}").is_err());
        assert!(parse_pattern("/*").is_err());
    }
}
