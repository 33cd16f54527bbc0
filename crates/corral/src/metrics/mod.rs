//! The metrics and health endpoint (`--metrics ADDR`, `Cluster::metrics`):
//! a small HTTP server in the primary, off by default, answering
//!
//! * `GET /metrics`: the Prometheus exposition of a status snapshot taken
//!   at the scrape ([`exposition`]);
//! * `GET /healthz`: 200 while the primary's loop runs (it answers from that
//!   loop's thread, so a frozen primary does not answer);
//! * `GET /readyz`: 200 when at least one worker is ready, `?all` when every
//!   one is, 503 otherwise ([`probes`]).
//!
//! It runs on the primary's runtime and asks the supervisor for the
//! snapshot the same way `corral status` does. Nobody authenticates to it,
//! so no client may hold it down: connections are admitted at once, in
//! capped pools whose oldest make room ([`admission`]), a request head
//! (and the wait for the next one on a kept-alive connection) must come
//! within [`HEADER_TIMEOUT`], a write stalled for [`WRITE_TIMEOUT`] closes
//! the connection ([`write_timeout`]), and each connection buffers at most
//! [`MAX_BUFFER`] bytes of pipelined requests or queued responses (and
//! the kernel [`SEND_BUFFER`] more).
//! `docs/security.md` lists these limits.

mod admission;
mod agent_series;
mod exposition;
mod probes;
mod write_timeout;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{mpsc, oneshot};

use crate::control::command::SupervisorCommand;
use crate::control::status::Status;
use crate::error::Error;
use crate::log::rate::warn_limited;
use admission::{Admissions, Admitted};
use exposition::PrimaryFacts;
use write_timeout::WriteTimeout;

/// How long a client may take to send a request head, counted from when
/// the connection waits for one: also how long a kept-alive connection may
/// stay idle between requests.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a response may wait for the client to read before the
/// connection is closed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// hyper's read and write buffer cap per connection: bounds how many
/// pipelined requests are read ahead and how many responses queue.
const MAX_BUFFER: usize = 64 * 1024;
/// The kernel's send buffer per connection (`SO_SNDBUF`; Linux doubles
/// it). Left to itself it grows to megabytes (`tcp_wmem`) for a client
/// that never reads, which would also put off the write timeout by as
/// many responses.
const SEND_BUFFER: usize = 64 * 1024;
/// Connections the kernel queues before they are accepted. A crowd that
/// reconnects in bursts must not fill the queue: a probe's connection
/// dropped there is retried by its kernel only a second later.
const LISTEN_BACKLOG: i32 = 1024;
/// The OpenMetrics text format, for scrapers that ask for it.
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Prometheus' classic text format, for everyone else (curl, promtool).
const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Messages dropped anywhere in this primary (`corral_messages_dropped_total`).
static MESSAGES_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Counts one dropped message (malformed, oversized, or to a full queue).
pub(crate) fn message_dropped() {
    MESSAGES_DROPPED.fetch_add(1, Ordering::Relaxed);
}

/// Binds `address` now, so a port in use is an error at start.
pub(crate) fn bind(address: SocketAddr) -> Result<std::net::TcpListener, Error> {
    let bound = || -> std::io::Result<std::net::TcpListener> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(address),
            socket2::Type::STREAM,
            None,
        )?;
        socket.set_reuse_address(true)?;
        socket.bind(&address.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        socket.set_nonblocking(true)?;
        Ok(socket.into())
    };
    bound().map_err(|err| Error::bind(address, err))
}

/// Serves the endpoint on `listener` until the runtime ends. Must run in the
/// primary's runtime.
pub(crate) fn serve(
    listener: std::net::TcpListener,
    commands: mpsc::UnboundedSender<SupervisorCommand>,
) -> Result<SocketAddr, Error> {
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(Error::io("cannot set up the metrics socket"))?;
    let address = listener
        .local_addr()
        .map_err(Error::io("cannot read the metrics socket's address"))?;
    let admissions = Arc::new(Admissions::default());
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    warn_limited!("metrics endpoint: cannot accept a connection: {}", err);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let admitted = admissions.admit();
            tokio::spawn(serve_connection(stream, admitted, commands.clone()));
        }
    });
    Ok(address)
}

/// Serves one connection until it ends, fails a limit, or is evicted.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    admitted: Admitted,
    commands: mpsc::UnboundedSender<SupervisorCommand>,
) {
    let admitted = Arc::new(admitted);
    let proof = admitted.clone();
    let service = hyper::service::service_fn(move |request| {
        // hyper calls this once a whole request head is in.
        proof.served();
        let commands = commands.clone();
        async move { Ok::<_, Infallible>(answer(request, &commands).await) }
    });
    if let Err(err) = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER) {
        warn_limited!(
            "metrics endpoint: cannot limit a connection's send buffer: {}",
            err
        );
    }
    let io = TokioIo::new(WriteTimeout::new(stream, WRITE_TIMEOUT));
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true)
        .max_buf_size(MAX_BUFFER)
        // Each response goes out as it is ready, not batched behind
        // the pipelined requests after it.
        .pipeline_flush(false)
        .serve_connection(io, service);
    tokio::select! {
        _ = connection => {}
        // Dropping the connection closes its socket.
        () = admitted.evicted.notified() => {}
    }
}

async fn answer(
    request: Request<Incoming>,
    commands: &mpsc::UnboundedSender<SupervisorCommand>,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    let all = probes::asks_all(request.uri().query());
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match snapshot(commands).await {
            Some(status) if probes::ready(&status, all) => text(StatusCode::OK, "ready\n"),
            Some(_) => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            None => text(StatusCode::SERVICE_UNAVAILABLE, "stopped\n"),
        },
        "/metrics" => match snapshot(commands).await {
            Some(status) => {
                let openmetrics = exposition::render(&status, primary_facts());
                let (body, content_type) = if accepts_openmetrics(&request) {
                    (openmetrics, OPENMETRICS_CONTENT_TYPE)
                } else {
                    (exposition::classic(&openmetrics), CLASSIC_CONTENT_TYPE)
                };
                Response::builder()
                    .header("content-type", content_type)
                    .body(Full::new(Bytes::from(body)))
                    .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "\n"))
            }
            None => text(StatusCode::SERVICE_UNAVAILABLE, "stopped\n"),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: use /metrics, /healthz or /readyz\n",
        ),
    }
}

/// Whether the client asked for OpenMetrics (Prometheus does, by `Accept`).
fn accepts_openmetrics(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("application/openmetrics-text"))
}

/// A status snapshot from the supervisor; `None` once it has stopped.
async fn snapshot(commands: &mpsc::UnboundedSender<SupervisorCommand>) -> Option<Status> {
    let (reply, answer) = oneshot::channel();
    commands.send(SupervisorCommand::Status(reply)).ok()?;
    answer.await.ok()
}

fn primary_facts() -> PrimaryFacts {
    let resident_memory_bytes = procfs::process::Process::myself()
        .and_then(|me| me.stat())
        .ok()
        .map(|stat| stat.rss * procfs::page_size());
    PrimaryFacts {
        resident_memory_bytes,
        messages_dropped: MESSAGES_DROPPED.load(Ordering::Relaxed),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
