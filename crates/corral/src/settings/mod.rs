//! A cluster's settings, each held once: its field here, its default in
//! the `Default` impls below, its bounds in `check.rs`, its printout
//! (`corral check`) by its serialized name, which is its flag's name.
//!
//! They are split by what a rolling reload may do with them: a reload
//! (`Cluster::on_reload`, `corral run --config`) takes the [`Reloadable`]
//! ones whole for every worker started from then on; a change of a
//! [`Fixed`] one waits for a restart.

mod backoff_policy;
mod check;
mod describe;
pub(crate) mod env_file;
mod launcher;
mod message_policy;
pub(crate) mod name;
mod node_mode;
pub(crate) mod program;
mod program_name;
pub(crate) mod ready_mode;
pub(crate) mod run_as;
pub(crate) mod schedule;

pub use backoff_policy::BackoffPolicy;
pub use message_policy::MessagePolicy;
pub use node_mode::NodeMode;
pub(crate) use program::Program;
pub use ready_mode::ReadyMode;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::balance::Policy;
use crate::control::ControlSocket;
use crate::error::Error;
use crate::protocol::lines::DEFAULT_MAX_LINE;

/// The default drain time for a stopping worker.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// The default listen backlog of each socket.
pub const DEFAULT_BACKLOG: u32 = 1024;
/// The size at which the log file is rotated by default: 10 MiB.
pub const DEFAULT_LOG_MAX_SIZE: u64 = 10 << 20;
/// How many rotated log files are kept by default.
pub const DEFAULT_LOG_KEEP: u32 = 5;
/// Over how long a draining Node worker's WebSockets are closed: short,
/// so a reload ends soon, and not zero, so the clients do not all
/// reconnect at the same instant.
pub const DEFAULT_WEBSOCKET_CLOSE_AFTER: Duration = Duration::from_secs(1);
/// How long corral's Node agent waits for a WebSocket client to answer
/// its close before it destroys the connection (`WS_CLOSE_WAIT_MS` in
/// agent.js).
pub const WEBSOCKET_CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How long a worker that must say it is ready may take to say so.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Every setting of a cluster, as given (not yet resolved nor checked).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Configuration {
    #[serde(flatten)]
    pub reloadable: Reloadable,
    #[serde(flatten)]
    pub fixed: Fixed,
    /// The program a reload's workers run (`Cluster::command`), if given.
    #[serde(skip)]
    pub command: Option<(OsString, Vec<OsString>)>,
}

/// What a reload applies to every worker started from then on.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Reloadable {
    pub workers: usize,
    #[serde(serialize_with = "describe::seconds")]
    pub grace: Duration,
    /// How restarts are spaced out (`--stable-after`,
    /// `--max-restart-delay`).
    #[serde(flatten, serialize_with = "describe::backoff")]
    pub backoff: BackoffPolicy,
    #[serde(serialize_with = "describe::seconds")]
    pub ready_timeout: Duration,
    /// Kill a worker whose heartbeats stop for this long (`--timeout`).
    #[serde(rename = "timeout", serialize_with = "describe::optional_seconds")]
    pub watchdog: Option<Duration>,
    #[serde(serialize_with = "describe::display")]
    pub ready: ReadyMode,
    /// Recycle a worker whose resident memory grows past this many bytes.
    pub max_memory: Option<u64>,
    /// Recycle a worker after it served this many requests, plus up to
    /// `max_requests_jitter` more (chosen per worker).
    pub max_requests: Option<u64>,
    pub max_requests_jitter: u64,
    /// Replacements a rolling reload runs at once.
    pub max_surge: usize,
    /// Variables added to every worker's environment.
    #[serde(serialize_with = "describe::variables")]
    pub env: Vec<(OsString, OsString)>,
    /// Files of `NAME=value` lines (dotenv syntax) read at start and at
    /// each reload, below [`Reloadable::env`] (`--env-file`).
    pub env_file: Vec<PathBuf>,
    /// The name of the environment profile in force (`--env-name`), shown
    /// by `corral status`; the variables it selects are in `env`.
    pub env_name: Option<String>,
    /// On a stop, `/readyz` fails at once and the workers keep serving
    /// this long before they drain (`--drain-delay`).
    #[serde(serialize_with = "describe::seconds")]
    pub drain_delay: Duration,
    /// A draining Node worker's WebSockets are closed with 1001 (going
    /// away) over this long from the drain's start, spread evenly, by
    /// corral's Node agent (`--ws-close-after`).
    #[serde(serialize_with = "describe::seconds")]
    pub ws_close_after: Duration,
}

impl Default for Reloadable {
    fn default() -> Self {
        Reloadable {
            workers: default_workers(),
            grace: DEFAULT_GRACE,
            backoff: BackoffPolicy::default(),
            ready_timeout: DEFAULT_READY_TIMEOUT,
            watchdog: None,
            ready: ReadyMode::Auto,
            max_memory: None,
            max_requests: None,
            max_requests_jitter: 0,
            max_surge: 1,
            env: Vec::new(),
            env_file: Vec::new(),
            env_name: None,
            drain_delay: Duration::ZERO,
            ws_close_after: DEFAULT_WEBSOCKET_CLOSE_AFTER,
        }
    }
}

/// What a running cluster keeps until it is restarted.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Fixed {
    pub listen: Vec<String>,
    #[serde(serialize_with = "describe::display")]
    pub policy: Policy,
    /// Serve `round-robin`, `least-connections` and `sticky` with the kernel program
    /// where it can load (`--kernel-steering`); off: always the hand-off.
    #[serde(serialize_with = "describe::on_off")]
    pub kernel_steering: bool,
    /// The name in logs and of the control socket (default: the
    /// program's file name).
    pub name: Option<String>,
    #[serde(rename = "on-message", serialize_with = "describe::messages")]
    pub messages: MessagePolicy,
    pub max_message_size: usize,
    /// Threads of a library worker's runtime (default: a current-thread
    /// runtime).
    #[serde(serialize_with = "describe::threads")]
    pub worker_threads: Option<usize>,
    /// Workers run as this `USER[:GROUP]`.
    pub user: Option<String>,
    pub allow_worker_binds: Vec<String>,
    pub metrics: Option<String>,
    pub backlog: u32,
    #[serde(serialize_with = "describe::display")]
    pub node: NodeMode,
    /// Load corral's Node agent into Node workers (`--node-agent`): their
    /// HTTP servers drain keep-alive connections without dropping requests.
    #[serde(serialize_with = "describe::on_off")]
    pub node_agent: bool,
    #[serde(serialize_with = "describe::control")]
    pub control: ControlSocket,
    /// A cron expression (UTC): a rolling reload starts at each time it
    /// names (`--reload-at`).
    pub reload_at: Option<String>,
    /// A copy of everything the primary prints (its lines and the
    /// workers' output), with timestamps, in this file.
    pub log_file: Option<std::path::PathBuf>,
    /// The log file is rotated once it holds this many bytes.
    pub log_max_size: u64,
    /// Rotated log files kept (`PATH.1` … `PATH.N`).
    pub log_keep: u32,
    /// Files and directories whose changes start a rolling reload
    /// (`--watch`); none: off.
    #[serde(serialize_with = "describe::paths")]
    pub watch: Vec<PathBuf>,
}

impl Default for Fixed {
    fn default() -> Self {
        Fixed {
            listen: Vec::new(),
            policy: Policy::default(),
            kernel_steering: true,
            name: None,
            messages: MessagePolicy::default(),
            max_message_size: DEFAULT_MAX_LINE,
            worker_threads: None,
            user: None,
            allow_worker_binds: Vec::new(),
            metrics: None,
            backlog: DEFAULT_BACKLOG,
            node: NodeMode::Auto,
            node_agent: true,
            control: ControlSocket::Default,
            reload_at: None,
            log_file: None,
            log_max_size: DEFAULT_LOG_MAX_SIZE,
            log_keep: DEFAULT_LOG_KEEP,
            watch: Vec::new(),
        }
    }
}

impl Configuration {
    /// The cluster's name: as given, else the program's.
    pub(crate) fn name_for(&self, program: &Program) -> String {
        self.fixed
            .name
            .clone()
            .unwrap_or_else(|| program.display_name())
    }

    /// The program [`Configuration::command`] names, a launcher looked
    /// through (`launcher.rs`).
    pub(crate) fn configured_command(&self) -> Result<Option<Program>, Error> {
        let Some((program, args)) = self.command.clone() else {
            return Ok(None);
        };
        Program::command(program, args, self.fixed.node).map(Some)
    }
}

/// One worker per CPU this process may run on.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |count| count.get())
}

/// The addresses of the listening sockets systemd passed this process
/// (`LISTEN_FDS`, with `LISTEN_PID` its pid), in order; empty when it was
/// not socket-activated. A cluster with no `listen` address serves them all.
pub fn activated_addresses() -> Vec<std::net::SocketAddr> {
    crate::balance::activation::activated()
        .iter()
        .map(|socket| socket.address)
        .collect()
}
