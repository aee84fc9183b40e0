//! The panic boundary around request handlers.
//!
//! A handler that panics must cost one request, not its shard: the connection layer (and
//! [`crate::Router::dispatch`]) run every handler inside [`CatchUnwind`], answer
//! [`panic_response`] (500 in the error format), count it and log it with the request line.
//!
//! Everything else (the raft driver, the log, the accept loop) is not behind this boundary: a
//! process that wants those panics fatal installs a panic hook that ends the process unless
//! [`panic_is_contained`] says the panic is a handler's (mast's server does). A handler can
//! itself enter code whose panic must stay fatal (state shared beyond the request, such as a
//! raft core) by holding a [`FatalSection`] around it.

use std::any::Any;
use std::cell::Cell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::Response;

thread_local! {
    /// Handlers being polled on this thread (nested when a handler dispatches another).
    static HANDLER_DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Fatal sections entered on this thread.
    static FATAL_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// True when a panic raised now on this thread would be caught at a handler boundary and
/// answered 500: inside a handler and outside any [`FatalSection`].
pub fn panic_is_contained() -> bool {
    HANDLER_DEPTH.with(Cell::get) > 0 && FATAL_DEPTH.with(Cell::get) == 0
}

struct DepthGuard(&'static std::thread::LocalKey<Cell<u32>>);

impl DepthGuard {
    fn enter(key: &'static std::thread::LocalKey<Cell<u32>>) -> DepthGuard {
        key.with(|d| d.set(d.get().saturating_add(1)));
        DepthGuard(key)
    }
}

impl Drop for DepthGuard {
    // Runs during unwinding too, so the depth is right again once the panic is caught.
    fn drop(&mut self) {
        self.0.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// While alive, a panic on this thread is not contained by a handler boundary (see the
/// module docs). Not `Send`: it belongs to the thread that entered it.
pub struct FatalSection {
    _guard: DepthGuard,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl FatalSection {
    /// Enters a fatal section until the returned value is dropped.
    pub fn enter() -> FatalSection {
        FatalSection {
            _guard: DepthGuard::enter(&FATAL_DEPTH),
            _not_send: std::marker::PhantomData,
        }
    }
}

/// A future that catches a panic of the future it wraps, on every poll, and yields it as
/// `Err(payload)`. After a panic the inner future is dropped and never polled again.
/// `Unpin` (a handler's future is already boxed), so wrapping costs no allocation.
pub struct CatchUnwind<F> {
    inner: Option<F>,
}

impl<F: Future + Unpin> CatchUnwind<F> {
    /// Wraps `fut`.
    pub fn new(fut: F) -> CatchUnwind<F> {
        CatchUnwind { inner: Some(fut) }
    }
}

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(inner) = self.inner.as_mut() else {
            // Polled after completion: say so instead of panicking again.
            return Poll::Ready(Err(Box::new("CatchUnwind polled after completion")));
        };
        // The handler's state is discarded after a panic (inner is dropped below), so a
        // broken invariant inside it is never observed again.
        let polled = {
            let _depth = DepthGuard::enter(&HANDLER_DEPTH);
            catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx)))
        };
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => {
                self.inner = None;
                Poll::Ready(Ok(v))
            }
            Err(payload) => {
                self.inner = None;
                Poll::Ready(Err(payload))
            }
        }
    }
}

/// Runs `make` (which builds a handler's future) and then the future, both behind the
/// boundary.
pub(crate) async fn run_contained<F, Fut>(make: F) -> Result<Fut::Output, Box<dyn Any + Send>>
where
    F: FnOnce() -> Fut,
    Fut: Future + Unpin,
{
    let fut = {
        let _depth = DepthGuard::enter(&HANDLER_DEPTH);
        catch_unwind(AssertUnwindSafe(make))?
    };
    CatchUnwind::new(fut).await
}

/// The text of a panic payload (`panic!` with a message gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(a panic payload that is not a string)"
    }
}

/// What a client hears when its handler panicked: 500 in the error format. The details go
/// to the server log, not to the client.
pub fn panic_response() -> Response {
    Response::error(
        500,
        "internal_error",
        "the request's handler failed; the server log has the details",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: Future>(f: F) -> F::Output {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime");
        rt.block_on(f)
    }

    #[test]
    fn a_panic_on_a_later_poll_is_caught_and_the_depth_restored() {
        let r = block_on(CatchUnwind::new(Box::pin(async {
            assert!(panic_is_contained());
            monoio::time::sleep(std::time::Duration::from_millis(1)).await;
            if HANDLER_DEPTH.with(Cell::get) > 0 {
                panic!("boom {}", 7);
            }
            1
        })));
        let payload = r.expect_err("the panic is caught");
        assert_eq!(panic_message(payload.as_ref()), "boom 7");
        assert!(!panic_is_contained());
        assert_eq!(HANDLER_DEPTH.with(Cell::get), 0);
    }

    #[test]
    fn a_fatal_section_inside_a_handler_is_not_contained() {
        let r = block_on(run_contained(|| {
            Box::pin(async {
                let before = panic_is_contained();
                let during = {
                    let _f = FatalSection::enter();
                    panic_is_contained()
                };
                (before, during, panic_is_contained())
            })
        }));
        assert_eq!(r.ok(), Some((true, false, true)));
        assert_eq!(FATAL_DEPTH.with(Cell::get), 0);
    }

    #[test]
    fn a_panic_while_building_the_future_is_caught() {
        let r = block_on(run_contained(|| -> std::future::Ready<u8> {
            panic!("in the constructor")
        }));
        assert_eq!(
            panic_message(r.expect_err("caught").as_ref()),
            "in the constructor"
        );
    }
}
