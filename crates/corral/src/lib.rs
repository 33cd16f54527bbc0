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
//! The module [`env`] documents what a worker receives; [`message`] documents
//! the channel protocol for workers in other languages.

mod address;
mod backoff;
mod balance;
mod bind;
mod channel;
mod cluster;
mod connection;
pub mod env;
mod error;
mod event;
mod handoff;
mod incoming;
mod listener;
mod mailbox;
pub mod message;
mod primary;
mod readiness;
mod ready;
mod requests;
mod sys;
mod worker;

pub use address::ListenAddr;
pub use backoff::BackoffPolicy;
pub use balance::Policy;
pub use channel::DEFAULT_MAX_LINE;
pub use cluster::{
    Cluster, DEFAULT_BACKLOG, DEFAULT_GRACE, MAX_WORKERS, default_workers, is_worker,
};
pub use connection::Connection;
pub use error::Error;
pub use event::Event;
pub use listener::Listener;
pub use mailbox::{Messages, Origin, Received, WorkerSender};
pub use primary::{MessagePolicy, Primary, SendError, WorkerInfo, WorkerState};
pub use ready::ReadyMode;
pub use requests::RequestCounter;
pub use worker::Worker;
