//! corral runs a server as a cluster of worker processes that share its
//! listening ports, as Node's `cluster` module does, with the supervision a
//! production process manager adds: restarts with backoff, graceful drains,
//! signals, lifecycle events.
//!
//! A Rust server hands corral its worker body; the same executable is
//! re-executed as each worker:
//!
//! ```no_run
//! fn main() -> Result<(), corral::Error> {
//!     corral::Cluster::new()
//!         .workers(2)
//!         .listen("127.0.0.1:3000")
//!         .run(|mut worker| async move {
//!             let listener = worker.listener()?;
//!             let app = axum::Router::new()
//!                 .route("/", axum::routing::get(|| async { "hello\n" }));
//!             axum::serve(listener, app)
//!                 .with_graceful_shutdown(worker.stopped())
//!                 .await?;
//!             Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//!         })
//! }
//! ```
//!
//! The module [`env`] documents what a worker receives; the README's
//! "message channel" section documents the channel protocol for workers in
//! other languages.

#![deny(unsafe_code)]

mod address;
mod balance;
mod cluster;
mod error;
pub mod log;
mod primary;
mod protocol;
// The one module allowed `unsafe` (each block with its `// SAFETY:`).
#[allow(unsafe_code)]
mod sys;
mod worker;
mod worker_key;

pub use protocol::env;

pub use address::ListenAddr;
pub use balance::Policy;
pub use cluster::{
    Cluster, DEFAULT_BACKLOG, DEFAULT_GRACE, MAX_WORKERS, activated_addresses, default_workers,
    is_worker,
};
pub use error::Error;
pub use log::LogFormat;
pub use primary::backoff::BackoffPolicy;
pub use primary::event::Event;
pub use primary::node::NodeMode;
pub use primary::ready_mode::ReadyMode;
pub use primary::{MessagePolicy, Primary, SendError, WorkerInfo, WorkerState};
pub use protocol::lines::DEFAULT_MAX_LINE;
pub use worker::Worker;
pub use worker::connection::Connection;
pub use worker::listener::Listener;
pub use worker::mailbox::{Messages, Origin, Received, WorkerSender};
pub use worker::requests::RequestCounter;
