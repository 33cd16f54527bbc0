//! The library's front door: a builder for a cluster, and `run`, which makes
//! the process a primary or, when it was started as a worker, runs the worker
//! body. The same `main` runs in both, as Node's `cluster` re-runs the script.

use std::ffi::OsString;
use std::future::Future;
use std::time::Duration;

use crate::balance::Policy;
use crate::control::ControlSocket;
use crate::error::Error;
use crate::error::WorkerResult;
use crate::log::{self, LogFormat};
use crate::primary::event::Event;
use crate::primary::{self, Observer, Primary, PrimaryTask, Reread, Settings};
use crate::protocol::env::WorkerEnvironment;
use crate::settings::Configuration;
use crate::settings::{BackoffPolicy, MessagePolicy, NodeMode, Program, ReadyMode};
use crate::worker::{Worker, run_worker};

/// A cluster of worker processes sharing listening ports.
///
/// ```no_run
/// # #[cfg(feature = "axum")]
/// # fn main() -> Result<(), corral::Error> {
/// corral::Cluster::new()
///     .workers(4)
///     .listen("127.0.0.1:3000")
///     .run(|mut worker| async move {
///         let listener = worker.listener()?;
///         let app = axum::Router::new().route("/", axum::routing::get(|| async { "hi\n" }));
///         axum::serve(listener, app)
///             .with_graceful_shutdown(worker.stopped())
///             .await?;
///         Ok(())
///     })
/// # }
/// # #[cfg(not(feature = "axum"))]
/// # fn main() {}
/// ```
pub struct Cluster {
    configuration: Configuration,
    reread: Option<Reread>,
    observer: Option<Observer>,
    primary_task: Option<PrimaryTask>,
    log_format: Option<LogFormat>,
    nested: bool,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster::new()
    }
}

impl Cluster {
    /// A cluster with one worker per CPU, no listener yet, policy
    /// `reuseport` and a 30 s grace period.
    pub fn new() -> Self {
        Cluster {
            configuration: Configuration::default(),
            reread: None,
            observer: None,
            primary_task: None,
            log_format: None,
            nested: false,
        }
    }

    /// How many worker processes to run (1 to [`MAX_WORKERS`](crate::MAX_WORKERS)).
    pub fn workers(mut self, count: usize) -> Self {
        self.configuration.reloadable.workers = count;
        self
    }

    /// Adds an address to listen on: `HOST:PORT`, `[V6]:PORT` or `PORT`.
    /// Port 0 picks a free port ([`Event::Bound`] tells which).
    pub fn listen(mut self, address: impl Into<String>) -> Self {
        self.configuration.fixed.listen.push(address.into());
        self
    }

    /// How connections are balanced over the workers.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.configuration.fixed.policy = policy;
        self
    }

    /// How long a stopping worker may drain before it is killed.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.configuration.reloadable.grace = grace;
        self
    }

    /// The listen backlog of each socket.
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.configuration.fixed.backlog = backlog;
        self
    }

    /// The cluster's name in logs (default: the program's file name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.configuration.fixed.name = Some(name.into());
        self
    }

    /// How restarts of failing workers are spaced out.
    pub fn restart_backoff(mut self, backoff: BackoffPolicy) -> Self {
        self.configuration.reloadable.backoff = backoff;
        self
    }

    /// How long a worker must run for its exit to end a crash loop
    /// (default 30 s, [`BackoffPolicy::stable_after`]): workers that keep
    /// exiting sooner are restarted later and later and reported as
    /// crash-looping.
    pub fn stable_after(mut self, run: Duration) -> Self {
        self.configuration.reloadable.backoff.stable_after = run;
        self
    }

    /// The longest wait before a crash-looping worker is restarted
    /// (default 10 s, [`BackoffPolicy::cap`]).
    pub fn max_restart_delay(mut self, delay: Duration) -> Self {
        self.configuration.reloadable.backoff.cap = delay;
        self
    }

    /// The largest message accepted on a worker's channel, in bytes.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.configuration.fixed.max_message_size = bytes;
        self
    }

    /// How long a worker that must say it is ready (every worker under a
    /// hand-off policy, and a COMMAND's under `ReadyMode::Message`) may take
    /// to say so before it is replaced, and how long a rolling reload waits
    /// for each replacement; when no worker ever did, the cluster stops
    /// with an error.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.configuration.reloadable.ready_timeout = timeout;
        self
    }

    /// What the primary does with workers' user messages besides handing
    /// them to the [`Cluster::primary`] task: log them, relay them to every
    /// other worker.
    pub fn on_message(mut self, policy: MessagePolicy) -> Self {
        self.configuration.fixed.messages = policy;
        self
    }

    /// Threads of each library worker's tokio runtime. Default: 1, a
    /// current-thread runtime (as a Node worker has one thread): with one
    /// worker process per core the processes are the parallelism, and a
    /// single thread wakes no other thread per connection or message. More
    /// than 1 gives a multi-thread runtime. On a
    /// current-thread runtime a body that blocks its thread also stops the
    /// worker's heartbeats, so the watchdog ([`Cluster::watchdog`]) counts it
    /// hung: run blocking work with `tokio::task::spawn_blocking`.
    pub fn worker_threads(mut self, threads: usize) -> Self {
        self.configuration.fixed.worker_threads = Some(threads);
        self
    }

    /// Replaces a worker gracefully (its replacement ready first) when its
    /// resident memory grows past `bytes`; checked every second.
    pub fn max_memory(mut self, bytes: u64) -> Self {
        self.configuration.reloadable.max_memory = Some(bytes);
        self
    }

    /// Replaces a worker gracefully after it served `max` requests plus up
    /// to `jitter` more (chosen per worker). Workers count requests with
    /// [`crate::Worker::request_counter`] (a COMMAND's workers by sending
    /// `{"corral":{"served":N}}`).
    pub fn max_requests(mut self, max: u64, jitter: u64) -> Self {
        self.configuration.reloadable.max_requests = Some(max);
        self.configuration.reloadable.max_requests_jitter = jitter;
        self
    }

    /// How many replacements a rolling reload (or recycling) runs at once:
    /// extra workers beside the ones serving. Default 1.
    pub fn max_surge(mut self, workers: usize) -> Self {
        self.configuration.reloadable.max_surge = workers;
        self
    }

    /// Runs workers as `USER[:GROUP]` (names or numbers; the group defaults
    /// to the user's), supplementary groups cleared. The primary, which
    /// must be root for this, binds every socket first (ports below 1024
    /// too) and stays root to supervise.
    pub fn user(mut self, spec: impl Into<String>) -> Self {
        self.configuration.fixed.user = Some(spec.into());
        self
    }

    /// Lets Node workers have the primary bind, on their `listen()`, what
    /// they lack the privilege to bind themselves (they run as another
    /// user, see [`Cluster::user`]): a port (`"80"`), a range of ports
    /// (`"1000-1023"`), or a directory (`"/run/app"`) in which the primary
    /// binds their Unix sockets itself. Without it such a `listen()` fails
    /// with `EACCES` in the worker, as it would without corral.
    pub fn allow_worker_binds(mut self, entry: impl Into<String>) -> Self {
        self.configuration
            .fixed
            .allow_worker_binds
            .push(entry.into());
        self
    }

    /// Adds `key=value` to every worker's environment (replacing an
    /// inherited variable of that name). corral's own variables
    /// (`CORRAL_*`, `LISTEN_*`, `NODE_CHANNEL_*`, `NOTIFY_SOCKET`…) cannot be set.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.configuration
            .reloadable
            .env
            .push((key.into(), value.into()));
        self
    }

    /// Adds the variables of a file in dotenv syntax (`NAME=value` lines) to
    /// every worker's environment, below those of [`Cluster::env`]. The
    /// file is read at start and again at each reload (with
    /// [`Cluster::on_reload`]); a file that cannot be read or parsed stops
    /// the start, or aborts that reload, naming the file and line.
    pub fn env_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.configuration.reloadable.env_file.push(path.into());
        self
    }

    /// The name of the environment profile the variables come from, as
    /// `corral status` shows it (a label: the variables are set by
    /// [`Cluster::env`]).
    pub fn env_name(mut self, name: impl Into<String>) -> Self {
        self.configuration.reloadable.env_name = Some(name.into());
        self
    }

    /// On a graceful stop, `/readyz` fails at once but the workers keep
    /// serving for `delay` before they drain (default 0): the time a load
    /// balancer (Kubernetes' endpoints) takes to stop sending new
    /// connections.
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.configuration.reloadable.drain_delay = delay;
        self
    }

    /// Whether `round-robin`, `least-connections` and `sticky` are steered in the
    /// kernel by an `SK_REUSEPORT` program where it can load (default: on;
    /// it needs root or `CAP_BPF` and `CAP_NET_ADMIN`). Off, or where it
    /// cannot load, the primary accepts and hands connections out
    /// (docs/command-line.md, "Kernel steering").
    pub fn kernel_steering(mut self, on: bool) -> Self {
        self.configuration.fixed.kernel_steering = on;
        self
    }

    /// Over how long a draining Node worker's WebSockets are closed with
    /// 1001 (going away), spread evenly from the drain's start (default
    /// 1 s; 0: all at once), by corral's Node agent (docs/node.md). It
    /// should fit in the grace period, with a second for the clients to
    /// answer.
    pub fn ws_close_after(mut self, delay: Duration) -> Self {
        self.configuration.reloadable.ws_close_after = delay;
        self
    }

    /// Whether Node workers load corral's Node agent (default: on), which
    /// drains their HTTP keep-alive connections without dropping requests
    /// (docs/node.md).
    pub fn node_agent(mut self, on: bool) -> Self {
        self.configuration.fixed.node_agent = on;
        self
    }

    /// Starts a rolling reload at each time the cron `expression` names,
    /// in UTC: 5 fields (`MIN HOUR DAY MONTH WEEKDAY`), 6 with seconds
    /// first, or a nickname (`@daily`, `@hourly`).
    pub fn reload_at(mut self, expression: impl Into<String>) -> Self {
        self.configuration.fixed.reload_at = Some(expression.into());
        self
    }

    /// The program each worker runs, for [`Cluster::on_reload`]: a cluster
    /// returned there with a command runs it in the workers started from
    /// then on. (To start a cluster with a command, use
    /// [`Cluster::run_command`].)
    pub fn command<I, S>(mut self, program: impl Into<OsString>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.configuration.command =
            Some((program.into(), args.into_iter().map(Into::into).collect()));
        self
    }

    /// Reads the configuration again at each rolling reload (SIGHUP,
    /// [`Primary::reload`]), before any worker is replaced, as nginx does:
    /// `reread` returns the cluster as it should now be. The command, the
    /// environment ([`Cluster::env`]), the number of workers, the grace
    /// period, recycling, the watchdog, the readiness and surge settings
    /// apply to every worker started from then on; a change of anything
    /// else (listen addresses, policy, backlog, user, name…) is logged and
    /// waits for a restart. An `Err` aborts that reload: it is logged and
    /// the running configuration stays.
    pub fn on_reload(
        mut self,
        reread: impl FnMut() -> Result<Cluster, String> + Send + 'static,
    ) -> Self {
        let mut reread = reread;
        self.reread = Some(Reread::new(Box::new(move || {
            reread().map(|cluster| cluster.configuration)
        })));
        self
    }

    /// Serves Prometheus metrics and health checks over HTTP at `address`
    /// (`HOST:PORT`; keep it on loopback or a private network): `/metrics`,
    /// `/healthz` (200 while the primary runs) and `/readyz` (200 when a
    /// worker is ready; `?all`: when every worker is).
    pub fn metrics(mut self, address: impl Into<String>) -> Self {
        self.configuration.fixed.metrics = Some(address.into());
        self
    }

    /// Where the cluster's control socket is (`corral status`, `reload`,
    /// `top`…): by default `NAME.sock` in the user's directory of control
    /// sockets (see [`crate::control::path`]); [`ControlSocket::Off`] for
    /// none. Starting fails when a cluster of the same name already runs.
    pub fn control(mut self, socket: ControlSocket) -> Self {
        self.configuration.fixed.control = socket;
        self
    }

    /// Also writes everything the primary prints (its own lines and the
    /// workers' output) to `path`, each line with a timestamp; the file is
    /// rotated by size ([`Cluster::log_rotation`]) and reopened on SIGUSR1.
    /// A write that fails (a full disk) drops the line and counts it.
    pub fn log_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.configuration.fixed.log_file = Some(path.into());
        self
    }

    /// Rotates the log file once it holds `max_size` bytes, keeping `keep`
    /// older files (`PATH.1` newest); defaults: 10 MiB, 5.
    pub fn log_rotation(mut self, max_size: u64, keep: u32) -> Self {
        self.configuration.fixed.log_max_size = max_size;
        self.configuration.fixed.log_keep = keep;
        self
    }

    /// Whether `run_command`'s program is run as Node cluster workers, with
    /// corral as their primary (`--node`; default: when it is `node` or a
    /// `#!` script that runs node).
    pub fn node(mut self, mode: NodeMode) -> Self {
        self.configuration.fixed.node = mode;
        self
    }

    /// When a COMMAND worker counts as ready (`--ready`).
    pub fn ready(mut self, mode: ReadyMode) -> Self {
        self.configuration.reloadable.ready = mode;
        self
    }

    /// Kills and replaces a worker whose heartbeats stop for `timeout` (a
    /// hung event loop). Library workers then send a heartbeat every
    /// quarter of it; a COMMAND's workers are watched once they send
    /// `{"corral":"heartbeat"}` themselves.
    pub fn watchdog(mut self, timeout: Duration) -> Self {
        self.configuration.reloadable.watchdog = Some(timeout);
        self
    }

    /// Replaces every worker by a rolling reload when something under
    /// `path` changes (a directory, with its subdirectories, or a file;
    /// repeatable), as `corral run --watch` does: changes are gathered until
    /// none came for 300 ms. `.git`, `node_modules`, `__pycache__`, editors'
    /// temporary files and what `.gitignore` files ignore are not watched.
    /// A change that breaks the program aborts that reload, and the running
    /// workers keep serving. Relative paths are from the current directory;
    /// a path that does not exist is refused at start.
    pub fn watch(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.configuration.fixed.watch.push(path.into());
        self
    }

    /// Runs `task` in the primary, beside the supervisor, with a [`Primary`]
    /// handle: events (lifecycle and messages), the worker table, messages
    /// to workers. Only the primary runs it; workers never do.
    pub fn primary<F, Fut>(mut self, task: F) -> Self
    where
        F: FnOnce(Primary) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.primary_task = Some(Box::new(move |primary| Box::pin(task(primary))));
        self
    }

    /// Calls `observer` in the primary with every lifecycle event.
    pub fn on_event(mut self, observer: impl FnMut(&Event) + Send + 'static) -> Self {
        self.observer = Some(Box::new(observer));
        self
    }

    /// The format of corral's log lines when corral installs its logging
    /// (see [`Cluster::run`]): text (the default) or one JSON object a line.
    /// Without it, `CORRAL_LOG_FORMAT` decides.
    pub fn log_format(mut self, format: LogFormat) -> Self {
        self.log_format = Some(format);
        self
    }

    /// Lets this program run as a new primary when it is started from
    /// inside another cluster's worker (it inherits `CORRAL_WORKER_ID`, but
    /// `LISTEN_PID` names another process), as the `corral` command does.
    /// Without it such a process fails with an error: a library worker
    /// started through a wrapper script that does not `exec` it looks the
    /// same, and must not quietly start a cluster of its own.
    pub fn allow_nested(mut self, allow: bool) -> Self {
        self.nested = allow;
        self
    }

    /// Runs the cluster with this executable as the worker program.
    ///
    /// In the primary, supervises workers until the cluster is stopped
    /// (SIGTERM or SIGINT) and returns `Ok` then. In a worker, runs `body` in
    /// the worker's tokio runtime (current-thread unless
    /// [`Cluster::worker_threads`] asks for more) and returns what it
    /// returns.
    ///
    /// Unless the program installed a `tracing` subscriber first, corral
    /// installs its own: lines to stderr, filtered
    /// by `CORRAL_LOG` (default `info`), never blocking.
    pub fn run<F, Fut>(self, body: F) -> Result<(), Error>
    where
        F: FnOnce(Worker) -> Fut,
        Fut: Future<Output = WorkerResult>,
    {
        log::install(self.log_format);
        let detected = if self.nested && WorkerEnvironment::inherited_from_another_process() {
            Ok(None)
        } else {
            WorkerEnvironment::detect()
        };
        let outcome = match detected {
            Ok(Some(environment)) => run_worker(environment, body),
            Ok(None) => std::env::current_exe()
                .map_err(Error::io("cannot find this executable"))
                .and_then(|path| self.run_primary(Program::CurrentExe { path })),
            Err(err) => Err(err),
        };
        log::flush(log::EXIT_FLUSH);
        outcome
    }

    /// Runs the cluster with another program as the worker, started with
    /// `args`; it receives its sockets by the systemd protocol.
    pub fn run_command<I, S>(self, program: impl Into<OsString>, args: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let program: OsString = program.into();
        let args = args.into_iter().map(Into::into).collect();
        log::install(self.log_format);
        // Fail before binding anything when the command does not exist.
        let outcome = Program::command(program, args, self.configuration.fixed.node)
            .and_then(|program| program.resolve().map(|_| program))
            .and_then(|program| self.run_primary(program));
        log::flush(log::EXIT_FLUSH);
        outcome
    }

    fn run_primary(mut self, program: Program) -> Result<(), Error> {
        let mut settings = self.settings(&program)?;
        settings.reread = self.reread.take().or_else(|| {
            // Env files are read again at each reload even without a
            // configuration to read again: the same configuration, resolved
            // again (off the loop), reads them.
            let configuration = self.configuration.clone();
            (!configuration.reloadable.env_file.is_empty())
                .then(|| Reread::new(Box::new(move || Ok(configuration.clone()))))
        });
        let fixed = &self.configuration.fixed;
        if let Some(path) = &fixed.log_file {
            log::file::open(path, fixed.log_max_size, fixed.log_keep).map_err(|err| {
                Error::Config(format!(
                    "cannot open the log file {}: {err}; give a writable --log-file",
                    path.display()
                ))
            })?;
        }
        match crate::sys::raise_descriptor_limit() {
            Ok(limit) => tracing::debug!("open descriptor limit: {limit:?} (the hard limit)"),
            Err(err) => tracing::warn!("cannot raise the open descriptor limit: {err}"),
        }
        if !program.is_node() {
            schedule_primary_as_batch();
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::io("cannot start the primary's runtime"))?;
        runtime.block_on(primary::run(
            settings,
            program,
            self.observer,
            self.primary_task,
        ))
    }

    /// The settings to start with (or check): resolved, and what they
    /// name there.
    pub(crate) fn settings(&self, program: &Program) -> Result<Settings, Error> {
        let settings = Settings::resolve(&self.configuration, program)?;
        settings.check_watched()?;
        Ok(settings)
    }

    /// Checks every setting as [`Cluster::run`] and [`Cluster::run_command`]
    /// would before starting (the program named by [`Cluster::command`],
    /// if any): what `corral check` reports. Host and user names are
    /// resolved, as at start.
    pub fn check(&self) -> Result<(), Error> {
        let program =
            self.configuration
                .configured_command()?
                .unwrap_or_else(|| Program::CurrentExe {
                    path: std::path::PathBuf::new(),
                });
        self.settings(&program).map(drop)
    }

    /// The program [`Cluster::check`] checks the settings for.
    fn checked_program(&self) -> Program {
        self.configuration
            .configured_command()
            .ok()
            .flatten()
            .unwrap_or_else(|| Program::CurrentExe {
                path: std::path::PathBuf::new(),
            })
    }

    /// Every setting by its flag's name (`--grace` is `grace`), with its
    /// value as text: what `corral check` prints. Not public API.
    #[doc(hidden)]
    pub fn describe(&self) -> Vec<(String, String)> {
        let name = self.configuration.name_for(&self.checked_program());
        self.configuration.describe(&name)
    }
}

/// Whether this process was started by a corral primary as a worker.
pub fn is_worker() -> bool {
    std::env::var_os(crate::protocol::env::WORKER_ID).is_some()
}

/// Set to `0` in the primary's environment, it keeps the primary on the
/// normal scheduling policy instead of `SCHED_BATCH`.
const PRIMARY_BATCH_ENV: &str = "CORRAL_PRIMARY_BATCH";

/// Runs the primary as a batch task (see `sys::schedule_as_batch`), unless
/// [`PRIMARY_BATCH_ENV`] is `0`. A failure only costs that saving. Not for
/// Node programs: a Node worker answers each handed connection with an
/// acknowledgement, and their round-robin measured 10% more CPU per request
/// with the primary waiting for a free moment to read those
/// (`bench/profiles/AFTER.md`).
fn schedule_primary_as_batch() {
    if std::env::var_os(PRIMARY_BATCH_ENV).is_some_and(|value| value == "0") {
        return;
    }
    match crate::sys::schedule_as_batch() {
        Ok(changed) => tracing::debug!("primary scheduled as SCHED_BATCH: {changed}"),
        Err(err) => tracing::warn!("cannot schedule the primary as SCHED_BATCH: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(cluster: Cluster) -> String {
        let program = Program::CurrentExe {
            path: "/bin/true".into(),
        };
        match cluster.settings(&program) {
            Ok(_) => panic!("accepted"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn values_past_the_limits_are_refused_naming_the_setting() {
        let year = crate::limits::MAX_DURATION;
        let past = year + Duration::from_secs(1);
        let base = || Cluster::new().workers(1);
        assert!(refused(base().grace(past)).contains("--grace"));
        assert!(refused(base().watchdog(past)).contains("--timeout"));
        assert!(refused(base().ready_timeout(past)).contains("--ready-timeout"));
        assert!(refused(base().max_message_size(1)).contains("--max-message-size"));
        assert!(refused(base().max_requests(u64::MAX, 0)).contains("--max-requests"));
        let program = Program::CurrentExe {
            path: "/bin/true".into(),
        };
        let largest = base()
            .grace(year)
            .watchdog(year)
            .max_message_size(crate::limits::MAX_MESSAGE_SIZE as usize);
        assert!(largest.settings(&program).is_ok());
    }

    #[test]
    fn what_no_start_could_use_is_refused_by_check() {
        let base = || Cluster::new().workers(1);
        let refused = |cluster: Cluster| cluster.check().unwrap_err().to_string();
        assert!(refused(base().env("APP", "a\0b")).contains("APP contains a NUL byte"));
        assert!(refused(base().env("CORRAL_X", "1")).contains("corral's own"));
        assert!(refused(base().command("s\0h", ["x"])).contains("NUL byte"));
        assert!(refused(base().command("sh", ["-c", "a\0"])).contains("argument 2"));
        assert!(refused(base().name("a\nb")).contains("--name"));
        assert!(refused(base().name("a\u{1b}[2J")).contains("control characters"));
        assert!(refused(base().listen("224.0.0.1:0")).contains("multicast"));
        assert!(refused(base().watch("/no/such/dir")).contains("--watch /no/such/dir"));
        assert!(
            base()
                .command("sh", ["-c", "true"])
                .name("api")
                .check()
                .is_ok()
        );
    }
}
