//! Messages between the primary and its workers (Node's `worker.send` /
//! `process.send`, typed). Each worker reports every request it serves; the
//! primary counts them and, every 10 requests, broadcasts a new config
//! version, which every worker logs and then names in its answers.
//!
//!     cargo run --release --example messages -- --workers 2 --listen 127.0.0.1:3000

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::routing::get;
use clap::Parser;
use corral::{EventAs, Primary, Worker, WorkerResult};
use corral_examples::ExampleArgs;
use serde::{Deserialize, Serialize};

/// Worker → primary: requests served since the last report.
#[derive(Debug, Serialize, Deserialize)]
struct Served {
    requests: u64,
}

/// Primary → every worker: the configuration changed.
#[derive(Debug, Serialize, Deserialize)]
struct ConfigChanged {
    version: u64,
}

fn main() -> Result<(), corral::Error> {
    let args = ExampleArgs::parse();
    args.cluster().primary(count_requests).run(serve)
}

/// The primary's task: count what workers report, broadcast every 10.
async fn count_requests(mut primary: Primary) {
    let mut total = 0;
    // Each report is parsed straight into a `Served`: no `Value` built.
    while let Some(event) = primary.next_event_as::<Served>().await {
        let EventAs::Message { id, message } = event else {
            continue;
        };
        let Ok(Served { requests }) = message else {
            tracing::warn!("worker {id} sent something else than a report");
            continue;
        };
        for _ in 0..requests {
            total += 1;
            if total % 10 == 0 {
                let change = ConfigChanged {
                    version: total / 10,
                };
                match primary.broadcast(&change) {
                    Ok(workers) => println!(
                        "primary: {total} requests served; config version {} sent to {workers} workers",
                        change.version
                    ),
                    Err(err) => tracing::warn!("broadcast failed: {err}"),
                }
            }
        }
    }
}

/// A worker: answer requests, report each, follow config changes.
async fn serve(mut worker: Worker) -> WorkerResult {
    let id = worker.id();
    let version = Arc::new(AtomicU64::new(0));
    let mut messages = worker.messages().expect("taken once, here");
    let current = version.clone();
    tokio::spawn(async move {
        while let Some(received) = messages.recv().await {
            if let Ok(change) = received.parse::<ConfigChanged>() {
                // Store first: once the line is out, answers carry the version.
                current.store(change.version, Ordering::Relaxed);
                println!("worker {id}: config changed to version {}", change.version);
            }
        }
    });
    let sender = worker.sender();
    let app = Router::new().route(
        "/",
        get(move || async move {
            let _ = sender.send(&Served { requests: 1 }).await;
            let version = version.load(Ordering::Relaxed);
            format!(
                "Hello from worker {id} (pid {}), config version {version}\n",
                std::process::id()
            )
        }),
    );
    axum::serve(worker.listener()?, app)
        .with_graceful_shutdown(worker.stopped())
        .await?;
    Ok(())
}
