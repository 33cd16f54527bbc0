//! Node's cluster hello-world, done with corral: the primary runs one worker
//! per CPU and replaces any that dies; each worker answers every request
//! with `Hello from worker <id> (pid <pid>)`. Plain hyper, no framework.
//!
//!     cargo run --release --example hello -- --workers 4 --listen 127.0.0.1:3000

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use corral_examples::ExampleArgs;
use http_body_util::Full;
use hyper::Response;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;

fn main() -> Result<(), corral::Error> {
    let args = ExampleArgs::parse();
    args.cluster().run(|mut worker| async move {
        let greeting = Bytes::from(format!(
            "Hello from worker {} (pid {})\n",
            worker.id(),
            std::process::id()
        ));
        let listener = worker.listener()?;
        let graceful = Arc::new(GracefulShutdown::new());
        let stopped = worker.stopped();
        tokio::pin!(stopped);
        loop {
            let (stream, _peer) = tokio::select! {
                accepted = listener.accept_retrying() => accepted,
                _ = &mut stopped => break,
            };
            let greeting = greeting.clone();
            let service = service_fn(move |_request| {
                let response = Response::new(Full::new(greeting.clone()));
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            let connection = graceful.watcher().watch(connection);
            tokio::spawn(connection);
        }
        // Finish the requests in flight before the worker exits.
        if let Ok(graceful) = Arc::try_unwrap(graceful) {
            graceful.shutdown().await;
        }
        Ok(())
    })
}
