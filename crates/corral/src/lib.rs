//! corral runs a server as a cluster of worker processes that share its
//! listening ports, as Node's `cluster` module does, with the supervision a
//! production process manager adds: restarts with backoff, graceful drains,
//! signals, lifecycle events.
//!
//! It has three faces: this library, the `corral` command (package
//! `corral-cli`), and a primary for unmodified Node programs.
//!
//! # The library
//!
//! A Rust server hands corral its worker body; the same executable is
//! re-executed as each worker. The body returns a [`WorkerResult`]: its `?`
//! takes any error, and it ends in a plain `Ok(())`. With the `axum`
//! feature (off by default), a [`Listener`] serves axum directly:
//!
//! ```no_run
//! # #[cfg(feature = "axum")]
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
//!             Ok(())
//!         })
//! }
//! # #[cfg(not(feature = "axum"))]
//! # fn main() {}
//! ```
//!
//! Without a framework, a worker accepts from its [`Listener`] itself (the
//! `hello` example serves hyper that way). The module [`env`](mod@env)
//! documents what a worker receives; docs/protocols.md's "message channel"
//! section documents the channel protocol for workers in other languages.
//!
//! # The command line
//!
//! `corral run` clusters a server written in any language: its workers
//! receive the listening sockets by systemd's socket-activation protocol
//! (`LISTEN_FDS`). `corral status`, `reload`, `scale` and `top` steer a
//! running cluster over its control socket:
//!
//! ```text
//! corral run -w 4 -l 0.0.0.0:8000 -- python3 app.py
//! corral status
//! corral reload        # rolling, zero-downtime
//! ```
//!
//! # Node programs
//!
//! Under `corral run`, an unmodified Node program that uses `cluster` (or a
//! plain `app.listen(3000)`) gets corral as its primary: corral answers
//! Node's cluster protocol, so `cluster.fork()`, `process.send` and the
//! workers' `listen` calls work as under Node's own primary:
//!
//! ```text
//! corral run -w 4 -- node app.js
//! ```
//!
//! # Layout
//!
//! Each folder's job in one line; each file says at its top what it is and
//! why. Imports go down this list, never back up.
//!
//! * `cluster.rs`: the front door, [`Cluster`], a builder over the settings
//!   that makes the process the primary or, re-executed as a worker, runs
//!   the worker body.
//! * `settings/`: every setting once: the model a reload may change and
//!   what it may not, their defaults, checks and printout, and the public
//!   setting types ([`ReadyMode`], [`NodeMode`], [`BackoffPolicy`],
//!   [`MessagePolicy`], the program to run, `--user`).
//! * `primary/`: the supervisor. `mod.rs` is its loop and periodic checks,
//!   `workers.rs` each worker's life (start, the one lifecycle transition,
//!   exit, stops), `steering.rs` what it is asked (status, stop, scale,
//!   reload), `slot.rs` a slot and its processes.
//!   * `primary/rules/`: its decisions as plain, unit-tested functions: the
//!     lifecycle, what an exit means, backoff and crash loops, the ready
//!     plan, the reload plan, the restart record.
//!   * `primary/io/`: its traffic with workers: spawning, the outbox to and
//!     the messages from each, their output, the inbox of notices, the live
//!     table behind the [`Primary`] handle; what Node libraries' primary
//!     code would do: the socket.io cluster-adapter relay (`socketio.rs`)
//!     and prom-client's metrics requests (`app_metrics.rs`).
//!   * `primary/os/`: what it asks of the OS: signals, reaping strays,
//!     systemd's notifications, /proc reads (memory, sockets bound alone),
//!     the file watcher of `--watch`.
//!   * `primary/event/`: the one event vocabulary ([`Event`]), its text and
//!     its log and journal records.
//!   * `primary/node/`: corral as primary of Node `cluster` programs.
//! * `worker/`: what runs in a library worker: the [`Worker`] handed to the
//!   body, its [`Listener`]s and [`Connection`]s, the hand-off receiver
//!   (`incoming.rs`), the drain order on stop, messages, request counting.
//! * `protocol/`: what a worker in any language implements: the
//!   environment ([`env`](mod@env)), the message channel (`message.rs`,
//!   framing in `lines.rs`), the hand-off channel (`handoff.rs`), Node's
//!   dialect.
//! * `balance/`: how connections reach workers: one file per [`Policy`];
//!   `hand_off.rs` is the primary's accept-and-hand-off task for
//!   round-robin, least-connections and sticky, with `stall.rs` and
//!   `congestion.rs`; `sticky.rs` is sticky's lookup table (shared with
//!   the Node dispatcher).
//! * `control/`: the control socket: its protocol, server, client, status
//!   and journal, and the commands that steer the supervisor.
//! * `metrics/`: the Prometheus and health endpoint (`--metrics`): the
//!   exposition of a status snapshot, the probes' rules, the HTTP server,
//!   which connections it admits (`admission.rs`) and its write timeout;
//!   a Node app's prom-client metrics, read and merged (`app_families.rs`).
//! * `log/`: corral's own log lines (text or JSON, never blocking).
//! * `sys.rs`: the only `unsafe` code. `error.rs`: [`Error`].
//!   `worker_key.rs`: the key of one worker process. `config_file.rs`:
//!   reading a configuration file safely. `limits.rs`: the bounds of every
//!   setting.
//! * `cli_support`: what only the `corral` command uses (see below).
//!
//! # Glossary
//!
//! * **Slot**: a numbered place in the cluster (`CORRAL_WORKER_ID`, 1-based)
//!   that one worker serves at a time; it outlives its workers.
//! * **Generation**: how many times a slot was started; a replacement keeps
//!   the slot and gets the next generation (`CORRAL_GENERATION`).
//! * **WorkerKey**: slot and generation: the one name of a worker process
//!   inside the primary, so a late notice about a replaced process finds
//!   nothing.
//! * **Successor** / **retired**: during a rolling reload, the replacement
//!   started beside a slot's worker; the old worker, draining once the
//!   successor is promoted.
//! * **Notice**: what a worker's tasks and the timers tell the supervisor
//!   loop (a control word, an exit, a timeout).
//! * **Command**: what steers the supervisor, whoever asks (a signal, the
//!   control socket, the [`Primary`] handle): status, stop, scale, reload.
//! * **Lifecycle**: where a worker process is in its life (starting,
//!   ready, draining, terminating); the live table, the balancer and the
//!   events follow it.
//! * **Event**: what happened ([`Event`], after Node's cluster events: fork,
//!   online, ready, disconnect, exit; and corral's own: reloads, scaling,
//!   stopping, watchdog kills…), one vocabulary for the library, the JSON
//!   log and `corral events` (docs/events.md).
//! * **Message**: a JSON line on a worker's channel: to the primary
//!   (`ToPrimary`, read once without building a tree: the **envelope**,
//!   `protocol/envelope.rs`) or to a worker (`ToWorker`).
//! * **Control**: corral's own words on that channel (`{"corral":"ready"}`,
//!   heartbeats, stop), kept apart from the user's messages.
//! * **Hand-off**: under round-robin, least-connections and sticky, the primary
//!   accepts and passes connections to workers over a second channel.
//! * **Policy** / **balancer**: how connections reach workers, and its
//!   implementation in the primary.

#![deny(unsafe_code)]

mod address;
mod balance;
mod cluster;
mod config_file;
mod control;
mod error;
mod limits;
mod log;
mod metrics;
mod primary;
mod protocol;
mod settings;
// The one module allowed `unsafe` (each block with its `// SAFETY:`).
#[allow(unsafe_code)]
mod sys;
mod worker;
mod worker_key;

pub use protocol::env;

pub use address::ListenAddr;
pub use balance::{Policy, Steering};
pub use cluster::{Cluster, is_worker};
pub use control::ControlSocket;
pub use control::status::{
    AGENT_LATENCY_BUCKETS, AgentMetrics, Draining, EnvironmentStatus, LatencyHistogram,
    ListenerStatus, ReloadOutcome, ReloadResult, ReloadStats, RestartReason, Status, WorkerState,
    WorkerStatus,
};
pub use error::{BoxError, Error, WorkerResult};
pub use limits::MAX_WORKERS;
// For lines logged before `Cluster::run`, which installs it otherwise.
pub use log::{LogFormat, install as install_log};
pub use primary::event::{Event, RecycleLimit, ReloadKind};
pub use primary::{EventAs, Primary, SendError, WorkerInfo};
pub use protocol::lines::DEFAULT_MAX_LINE;
pub use settings::{BackoffPolicy, MessagePolicy, NodeMode, ReadyMode};
pub use settings::{DEFAULT_BACKLOG, DEFAULT_GRACE, default_workers};
pub use worker::Worker;
pub use worker::connection::Connection;
pub use worker::listener::Listener;
pub use worker::mailbox::{Messages, Origin, Received, ReceivedAs, WorkerSender};
pub use worker::requests::RequestCounter;

/// What the `corral` command needs from this crate and a library user does
/// not: the control socket's client and protocol, corral's log setup, the
/// bounds the command line checks its flags against, configuration files.
///
/// **Not public API**: hidden from the documentation and outside semver;
/// it changes with the command, in any release. None of it appears in the
/// documented API, so what `cargo doc` shows is the whole supported API.
#[doc(hidden)]
pub mod cli_support {
    pub use crate::config_file::{MAX_CONFIG_SIZE, read_config_file};
    pub use crate::control::{client, path, protocol};
    pub use crate::limits::{MAX_DURATION, MAX_MESSAGE_SIZE, MAX_REQUESTS, MIN_MESSAGE_SIZE};
    pub use crate::log::file::numbered as numbered_log;
    pub use crate::log::{escape_untrusted, fatal as log_fatal, flush as flush_log};
    pub use crate::protocol::env::check_variable as check_env_variable;
    pub use crate::settings::{Configuration, Fixed, Reloadable, activated_addresses};

    /// Checks a `--reload-at` cron expression: `Err` is the message.
    pub fn check_cron(expression: &str) -> Result<(), String> {
        crate::settings::schedule::Schedule::read(expression).map(drop)
    }
    pub use crate::sys::new_session;
    pub use crate::worker::worker_runtime;
}
