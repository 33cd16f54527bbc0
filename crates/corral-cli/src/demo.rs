//! The built-in demo worker that `corral run` serves when no command is
//! given: a small hyper server answering every request with
//! `Hello from worker <id> (pid <pid>)` and a newline. `GET /sleep/<ms>`
//! answers the same after a pause, to watch a graceful drain.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;

/// The longest pause `/sleep/<ms>` grants.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// The worker body of a demo cluster.
pub async fn serve_worker(mut worker: corral::Worker) -> anyhow::Result<()> {
    let listeners = worker.listeners();
    serve(worker.id(), listeners, worker.stopped()).await
}

/// Serves `listeners` as worker `id` until `stopped` completes, then waits
/// for the requests in flight.
pub async fn serve(
    id: u32,
    listeners: Vec<corral::Listener>,
    stopped: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let greeting = Bytes::from(format!(
        "Hello from worker {id} (pid {})\n",
        std::process::id()
    ));
    let graceful = Arc::new(GracefulShutdown::new());
    let mut accepting = tokio::task::JoinSet::new();
    for listener in listeners {
        let greeting = greeting.clone();
        let graceful = graceful.clone();
        accepting.spawn(async move {
            loop {
                let (stream, _peer) = listener.accept_retrying().await;
                let _ = stream.set_nodelay(true);
                let greeting = greeting.clone();
                let service = service_fn(move |request| answer(request, greeting.clone()));
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watcher().watch(connection);
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
        });
    }
    stopped.await;
    // Stop accepting; close idle keep-alive connections; finish the rest.
    accepting.shutdown().await;
    // The accept tasks held the only other references.
    if let Ok(graceful) = Arc::try_unwrap(graceful) {
        graceful.shutdown().await;
    }
    Ok(())
}

async fn answer(
    request: Request<Incoming>,
    greeting: Bytes,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(pause) = requested_sleep(request.uri().path()) {
        tracing::info!("sleeping {}ms before answering", pause.as_millis());
        tokio::time::sleep(pause).await;
    }
    Ok(Response::builder()
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(greeting))
        .expect("a static response is valid"))
}

fn requested_sleep(path: &str) -> Option<Duration> {
    let millis: u64 = path.strip_prefix("/sleep/")?.parse().ok()?;
    Some(Duration::from_millis(millis).min(MAX_SLEEP))
}

#[cfg(test)]
mod tests {
    use super::requested_sleep;
    use std::time::Duration;

    #[test]
    fn sleep_paths_are_parsed_and_capped() {
        assert_eq!(
            requested_sleep("/sleep/250"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            requested_sleep("/sleep/999999999"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(requested_sleep("/sleep/x"), None);
        assert_eq!(requested_sleep("/"), None);
    }
}
