//! Back-pressure on the message channel, both ways: the primary keeps every
//! worker's queue full (the worker never reads its messages, so its inbox,
//! the channel and the primary's 64 MiB queue for it all fill), and each
//! worker starts with a burst of messages to the primary larger than its
//! outgoing queue, and says it is ready in the middle of it. The cluster
//! still serves, corral's own words (ready, heartbeats, stop) still get
//! through, and a stop still stops.
//!
//!     cargo run --release --example flood -- --workers 2 --watchdog 1 --listen 127.0.0.1:3000

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use corral::{Event, Primary, Worker, WorkerResult};
use corral_examples::ExampleArgs;
use http_body_util::Full;
use hyper::Response;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    example: ExampleArgs,
    /// Seconds without a heartbeat before a worker counts as hung
    #[arg(long, default_value_t = 1.0)]
    watchdog: f64,
}

/// The padding that makes each message about a kilobyte.
const PADDING: &str = concat!(
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
);

fn main() -> Result<(), corral::Error> {
    let args = Args::parse();
    args.example
        .cluster()
        .watchdog(Duration::from_secs_f64(args.watchdog))
        .primary(flood_workers)
        .run(serve)
}

/// The primary's task: every few milliseconds, send every worker messages
/// until its queue refuses them; count what workers send.
async fn flood_workers(mut primary: Primary) {
    let message = PADDING.repeat(8);
    let mut received = 0u64;
    let mut refill = tokio::time::interval(Duration::from_millis(5));
    loop {
        tokio::select! {
            event = primary.next_event() => match event {
                None => break,
                Some(Event::Message { .. }) => received += 1,
                Some(_) => {}
            },
            _ = refill.tick() => {
                for worker in primary.workers() {
                    // The task shares the supervisor's thread: yield now and then.
                    while primary.send(worker.id, &message).is_ok() {
                        tokio::task::consume_budget().await;
                    }
                }
            }
        }
    }
    println!("primary: {received} messages received from workers");
}

/// Messages each worker sends at start: ten times its outgoing queue.
const BURST: usize = 10_240;

/// A worker: take the message stream and never read it (its inbox fills),
/// send the primary a burst of messages and say it is ready in the middle
/// of it, serve `Hello from worker <id> (pid <pid>)`.
async fn serve(mut worker: Worker) -> WorkerResult {
    let _unread = worker.messages();
    let sender = worker.sender();
    let message = PADDING.repeat(8);
    // Past its first thousand, each send waits for room: when this loop
    // ends, the outgoing queue is full, and the burst goes on beside.
    for _ in 0..BURST / 4 {
        sender.send(&message).await?;
    }
    tokio::spawn(async move {
        for _ in BURST / 4..BURST {
            if sender.send(&message).await.is_err() {
                break;
            }
        }
    });
    let greeting = Bytes::from(format!(
        "Hello from worker {} (pid {})\n",
        worker.id(),
        std::process::id()
    ));
    let listener = worker.listener()?;
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
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service),
        );
    }
    Ok(())
}
