//! The built-in demo worker that `corral run` serves when no command is
//! given: a small hyper server answering every request with
//! `Hello from worker <id> (pid <pid>)` and a newline. `GET /sleep/<ms>`
//! answers the same after a pause, to watch a graceful drain.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The longest pause `/sleep/<ms>` grants.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// The worker body of a demo cluster.
pub async fn serve_worker(mut worker: corral::Worker) -> corral::WorkerResult {
    let listeners = worker.listeners();
    let requests = Some(worker.request_counter());
    Ok(serve(worker.id(), listeners, requests, worker.stopped()).await?)
}

/// Serves `listeners` as worker `id` until `stopped` completes, then waits
/// for the requests in flight.
pub async fn serve(
    id: u32,
    listeners: Vec<corral::Listener>,
    requests: Option<corral::RequestCounter>,
    stopped: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let greeting = Bytes::from(format!(
        "Hello from worker {id} (pid {})\n",
        std::process::id()
    ));
    let (stopping, stop) = watch::channel(false);
    let connections = Arc::new(Mutex::new(JoinSet::new()));
    let mut accepting = JoinSet::new();
    for listener in listeners {
        let greeting = greeting.clone();
        let connections = connections.clone();
        let stop = stop.clone();
        let requests = requests.clone();
        accepting.spawn(async move {
            loop {
                let (stream, _peer) = listener.accept_retrying().await;
                let _ = stream.set_nodelay(true);
                let connection =
                    serve_connection(stream, greeting.clone(), requests.clone(), stop.clone());
                lock(&connections).spawn(connection);
            }
        });
    }
    stopped.await;
    // Stop accepting, then let every connection finish as below.
    accepting.shutdown().await;
    stopping.send_replace(true);
    let mut connections = std::mem::take(&mut *lock(&connections));
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Serves one connection. When the worker stops, a connection that has not
/// carried a request yet gets its first one served (up to `FIRST_REQUEST_GRACE`:
/// a client that connected just before the stop has usually sent it
/// already), then the connection closes after the request in flight.
/// Closing such a connection at once would reset a request the client
/// already sent.
async fn serve_connection(
    stream: corral::Connection,
    greeting: Bytes,
    requests: Option<corral::RequestCounter>,
    mut stop: watch::Receiver<bool>,
) {
    let served = Arc::new(AtomicBool::new(false));
    let counted = served.clone();
    let service = service_fn(move |request| {
        counted.store(true, Ordering::Relaxed);
        if let Some(requests) = &requests {
            requests.served();
        }
        answer(request, greeting.clone())
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = stop.wait_for(|stopping| *stopping) => {}
    }
    let deadline = tokio::time::Instant::now() + FIRST_REQUEST_GRACE;
    while !served.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// How long a connection accepted just before a stop may take to send its
/// first request.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

fn lock(connections: &Mutex<JoinSet<()>>) -> std::sync::MutexGuard<'_, JoinSet<()>> {
    connections
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
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
