//! A one-shard server answering `GET /healthz`, for comparing against nginx with wrk:
//! `cargo run --release -p mast-http --example healthz -- 127.0.0.1:8089`.

use std::rc::Rc;

use mast_http::{serve, HttpMetrics, Limits, Method, Response, Router, ShutdownSignal};

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8089".to_string());
    // MAST_HTTP_DRIVER=epoll compares the epoll driver with io_uring.
    if std::env::var("MAST_HTTP_DRIVER").as_deref() == Ok("epoll") {
        match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
        {
            Ok(mut rt) => rt.block_on(run(addr)),
            Err(e) => eprintln!("runtime: {e}"),
        }
        return;
    }
    match monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(mut rt) => rt.block_on(run(addr)),
        Err(e) => eprintln!("runtime: {e}"),
    }
}

async fn run(addr: String) {
    {
        let listener = match monoio::net::TcpListener::bind(&addr) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("bind {addr}: {e}");
                std::process::exit(1);
            }
        };
        let router = Router::new().route(Method::GET, "/healthz", |_req| async {
            Response::text(200, "ok")
        });
        let metrics = Rc::new(HttpMetrics::new());
        serve(
            listener,
            Rc::new(router),
            Limits::default(),
            metrics,
            ShutdownSignal::new(),
        )
        .await;
    }
}
