//! Which panics end the process.
//!
//! A request handler's panic is contained at the HTTP boundary (`mast_http::panic`): the
//! client hears 500 and the shard goes on. Any other panic (the raft driver, the log, the
//! mesh, a shard's start-up) may leave replicated or durable state half-changed, and the
//! safe reaction is the one a crash already is: end the process and let raft recover it on
//! restart. Without this hook such a panic would end only its shard thread and leave a
//! process that answers on the other shards while one is gone.

use std::sync::Once;

/// Installs (once per process) the hook that aborts on every panic not contained by a
/// request handler. The default hook still prints such a panic first; a contained one is
/// logged as one line with its location.
pub fn install_fatal_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if mast_http::panic::panic_is_contained() {
                // The boundary logs it with the request line; add where, without the
                // backtrace a client could otherwise make the server print at will.
                let at = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                tracing::warn!(at, "request handler panicked");
                return;
            }
            default(info);
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("unnamed");
            tracing::error!(thread = name, %info, "fatal: a panic outside a request handler");
            eprintln!("mast: fatal: a panic outside a request handler (thread {name}); aborting");
            std::process::abort();
        }));
    });
}
