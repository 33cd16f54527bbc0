//! The command line, as clap parses it. Every flag is documented here:
//! `--help`, the man pages and docs/cli.md (`corral generate reference`)
//! are all generated from these definitions.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// What `--help` says about the signals the primary takes.
const SIGNALS_HELP: &str = "Signals to `corral run`'s primary: HUP reloads every worker, one at \
                            a time (zero downtime); TERM/INT stop gracefully (a second one: at \
                            once); TTIN adds a worker, TTOU removes one.";

#[derive(Debug, Parser)]
#[command(
    name = "corral",
    // The commit comes from build.rs.
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("CORRAL_COMMIT"), ")"),
    about = "Run a server as a cluster of worker processes sharing its listening ports",
    after_help = SIGNALS_HELP
)]
pub struct Cli {
    /// Format of corral's own log lines on stderr: text (with an RFC 3339
    /// timestamp, left out under journald) or json (one object a line)
    #[arg(long, value_enum, global = true, env = "CORRAL_LOG_FORMAT", default_value_t = LogFormatArg::Text)]
    pub log_format: LogFormatArg,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for corral::LogFormat {
    fn from(format: LogFormatArg) -> Self {
        match format {
            LogFormatArg::Text => corral::LogFormat::Text,
            LogFormatArg::Json => corral::LogFormat::Json,
        }
    }
}

/// What `corral start --help` adds.
const START_HELP: &str = "The cluster runs as `corral run` would, in a session of its own with no \
                          terminal; its log (workers' output and corral's lines) is written to \
                          NAME/corral.log under $XDG_STATE_HOME/corral (~/.local/state/corral; \
                          /var/lib/corral for root), unless --log-file says where. `corral stop \
                          NAME` stops it, `corral logs NAME` shows its log, also once stopped.";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a cluster: COMMAND as each worker, or the built-in demo worker.
    #[command(after_help = SIGNALS_HELP)]
    Run(Box<RunArgs>),
    /// Start a cluster in the background (run's flags), its log kept on
    /// disk; return once every worker is ready (exit 0) or it failed (1).
    #[command(after_help = START_HELP)]
    Start(Box<RunArgs>),
    /// Serve the demo worker alone, without a primary, on its own
    /// SO_REUSEPORT socket (several on one port: the no-cluster baseline
    /// for benchmarks).
    DemoWorker(DemoWorkerArgs),
    /// List the running clusters of this user, and the background ones
    /// that stopped or failed.
    Ls(LsArgs),
    /// Forget a stopped background cluster: its record and its log files.
    Delete(DeleteArgs),
    /// Show a cluster and its workers.
    Status(ClusterArgs),
    /// Replace every worker, one at a time, and wait until it is done
    /// (exit code 1 when the reload aborted).
    Reload(ReloadArgs),
    /// Set the number of workers: N, +N or -N.
    #[command(allow_negative_numbers = true)]
    Scale(ScaleArgs),
    /// Stop a cluster (gracefully, or at once with --now) and wait until
    /// its primary exited.
    Stop(StopArgs),
    /// Show the last lines of workers' output and corral's events.
    Logs(LogsArgs),
    /// Print the lifecycle events as JSON lines, live.
    Events(ClusterArgs),
    /// A live view of a cluster: workers, CPU, memory, requests/s, queues.
    Top(ClusterArgs),
    /// Check a configuration file: print the settings it gives `corral run`,
    /// or its first error (file, line, key)
    Check(CheckArgs),
    /// Start a cluster on boot: write a systemd unit that runs it (and a
    /// socket unit holding its ports), enable and start it; or remove it
    #[command(subcommand)]
    Service(ServiceAction),
    /// Read a pm2 ecosystem file (evaluated once with node) and write the
    /// corral.toml it stands for: one [apps.NAME] table per app, and a line
    /// for each key corral has no counterpart for
    Import(ImportArgs),
    /// Write the man pages, or print a shell's completions or the markdown
    /// reference (for packagers and docs/cli.md).
    #[command(hide = true)]
    Generate(GenerateArgs),
}

/// Which cluster a command talks to, and how it prints.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// The cluster's name (optional when exactly one cluster of this user runs)
    #[arg(value_name = "NAME")]
    pub name: Option<String>,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// What every control command takes.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// The cluster's control socket, instead of finding it by NAME
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,

    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The stopped background cluster's name
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Return once the reload is started (or queued), without waiting
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// [NAME] and the worker count: N, +N or -N (as in `corral scale api -1`)
    #[arg(value_name = "[NAME] COUNT", num_args = 1..=2, required = true, allow_negative_numbers = true)]
    pub values: Vec<String>,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Kill the workers at once instead of letting them drain
    #[arg(long)]
    pub now: bool,

    /// Stop every running cluster of this user
    #[arg(long, conflicts_with_all = ["name", "control"])]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Keep printing new lines as they come
    #[arg(short, long)]
    pub follow: bool,

    /// How many of the last lines to print
    #[arg(short = 'n', long, value_name = "N", default_value_t = 100)]
    pub lines: usize,

    /// Only this worker's lines
    #[arg(long, value_name = "ID")]
    pub worker: Option<u32>,
}

/// What `corral scale` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleCount {
    Exactly(usize),
    By(i64),
}

impl ScaleArgs {
    /// The cluster's name (if given) and the count.
    pub fn parse(&self) -> Result<(Option<String>, ScaleCount), String> {
        let (name, count) = match self.values.as_slice() {
            [count] => (None, count),
            [name, count] => (Some(name.clone()), count),
            _ => return Err("give the worker count: N, +N or -N".into()),
        };
        Ok((name, parse_scale_count(count)?))
    }
}

/// `3` is a count, `+1` and `-1` are changes.
pub fn parse_scale_count(text: &str) -> Result<ScaleCount, String> {
    let bad = || format!("{text:?} is not a worker count: use N, +N or -N (as 4, +1, -1)");
    if let Some(more) = text.strip_prefix('+') {
        return more.parse::<i64>().map(ScaleCount::By).map_err(|_| bad());
    }
    if text.starts_with('-') {
        return text.parse::<i64>().map(ScaleCount::By).map_err(|_| bad());
    }
    text.parse::<usize>()
        .map(ScaleCount::Exactly)
        .map_err(|_| bad())
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(subcommand)]
    pub what: GenerateWhat,
}

#[derive(Debug, Subcommand)]
pub enum GenerateWhat {
    /// Write corral.1 and a page per subcommand (corral-run.1, …) into DIR
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print the completion script of SHELL on stdout
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the command-line reference in markdown on stdout (docs/cli.md)
    Reference,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The TOML file, as given to `corral run --config`
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum ServiceAction {
    /// Write and enable a systemd unit running `corral run` with these
    /// flags and COMMAND (or one per app of --config FILE), with every path
    /// resolved now: the corral binary, the program (through PATH, so
    /// node from nvm too), the working directory (this one)
    Install(Box<ServiceInstallArgs>),
    /// Stop, disable and remove the units `install` wrote for NAME
    Remove(ServiceRemoveArgs),
}

/// This process's arguments as corral parses them: with
/// [`service_user_alias`] applied. Every parse of the command line (`main`,
/// and `service install` reading which flags were given) takes these.
pub fn command_line() -> Vec<std::ffi::OsString> {
    service_user_alias(std::env::args_os().collect())
}

/// `corral service install NAME --user -- CMD` (the and systemd's
/// word for a user unit) as `--user-unit`: a `--user` with no value after
/// it (the next argument is `--`, another flag, or none) in `service
/// install`, and any `--user` in `service remove`. `--user USER` with a
/// value stays run's flag (the workers' user).
pub fn service_user_alias(mut argv: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    // The subcommand: the first argument that is neither a global flag
    // nor the value of one (`corral --log-format json service install`).
    let mut service = 1;
    while argv
        .get(service)
        .is_some_and(|arg| arg.as_encoded_bytes().starts_with(b"--log-format"))
    {
        service += if argv[service] == "--log-format" {
            2
        } else {
            1
        };
    }
    if argv.get(service).is_none_or(|arg| arg != "service") {
        return argv;
    }
    let end = argv
        .iter()
        .position(|arg| arg == "--")
        .unwrap_or(argv.len());
    let action = argv
        .get(service + 1)
        .and_then(|arg| arg.to_str())
        .unwrap_or("")
        .to_owned();
    if action != "install" && action != "remove" {
        return argv;
    }
    for at in service + 2..end {
        if argv[at] != "--user" {
            continue;
        }
        let next = argv.get(at + 1).map(|arg| arg.as_encoded_bytes());
        let no_value = at + 1 >= end || next.is_some_and(|next| next.starts_with(b"-"));
        if action == "remove" || no_value {
            argv[at] = "--user-unit".into();
        }
    }
    argv
}

#[derive(Debug, Args)]
pub struct ServiceInstallArgs {
    /// The unit's name: corral-NAME.service, and the cluster's name
    /// [default with --config: the cluster's name, one unit per app]
    #[arg(value_name = "NAME")]
    pub service: Option<String>,

    /// A user unit (~/.config/systemd/user, systemctl --user) instead of a
    /// system one (/etc/systemd/system, needs root); also `--user` with no
    /// value (right before `--` or another flag)
    #[arg(long)]
    pub user_unit: bool,

    /// Also a socket unit holding the --listen addresses, so the port
    /// survives a restart of corral itself (socket activation)
    #[arg(long)]
    pub socket: bool,

    /// Print the units instead of writing them
    #[arg(long)]
    pub dry_run: bool,

    /// Write the units without running systemctl daemon-reload and enable --now
    #[arg(long)]
    pub no_enable: bool,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct ServiceRemoveArgs {
    /// The name given to `corral service install`
    #[arg(value_name = "NAME")]
    pub name: String,

    /// A user unit, as installed with --user-unit (or --user)
    #[arg(long)]
    pub user_unit: bool,

    /// Print what would be removed instead
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// pm2's ecosystem file: ecosystem.config.js, .cjs, .mjs or .json
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Write the configuration into this file instead of printing it
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// With --output: replace the file if it exists
    #[arg(long, requires = "output")]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct DemoWorkerArgs {
    /// Address to listen on (repeatable), with SO_REUSEPORT
    #[arg(short, long = "listen", value_name = "ADDR", required = true, value_parser = parse_listen)]
    pub listen: Vec<String>,

    /// The id this worker names in its answers
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub id: u32,

    /// Threads of its runtime, as `corral run --worker-threads` [default: 1,
    /// a current-thread runtime]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub worker_threads: Option<u32>,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Read settings from this TOML file: every flag as a key of the same
    /// name, plus command, args and [env] (or [apps.NAME] tables of them:
    /// see --app); flags given here override it. Read again at each reload
    /// (HUP)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// With --config: the app to run, when the file has [apps.NAME] tables
    /// (needed when it has more than one); corral start takes a list
    /// (api,jobs), and without --app starts every app
    #[arg(long, value_name = "NAME", requires = "config")]
    pub app: Option<String>,

    /// Change to DIR before starting, as `cd DIR && corral run …` does: the
    /// workers run in DIR and a relative COMMAND is found there (in a file,
    /// a relative DIR is the file's directory's) [default: the current
    /// directory]
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,

    /// Add NAME=VALUE to every worker's environment (repeatable)
    ///
    /// corral's own variables (CORRAL_*, LISTEN_*, NODE_CHANNEL_*,
    /// NOTIFY_SOCKET, WATCHDOG_*) are refused.
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_env)]
    pub env: Vec<String>,

    /// Add the variables of a dotenv file (NAME=value lines) to every
    /// worker's environment (repeatable; read at start and at each reload)
    ///
    /// Precedence, lowest first: --env-file, the config file's [env], its
    /// [env.PROFILE] (--env-name), --env flags.
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,

    /// Use the config file's [env.NAME] profile: its variables override
    /// [env] (shown by `corral status --json`) [default: none]
    #[arg(long, value_name = "NAME", value_parser = parse_env_name)]
    pub env_name: Option<String>,

    /// Number of worker processes, 1 to 1024 [default: number of CPUs]
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=corral::MAX_WORKERS as i64))]
    pub workers: Option<u32>,

    /// Address to listen on: HOST:PORT, [IPV6]:PORT or PORT (repeatable;
    /// port 0 picks a free port, printed at start) [default: 127.0.0.1:8000;
    /// for a Node program: none, its listen() calls are served on demand]
    ///
    /// A bare PORT is 0.0.0.0:PORT. A host name is resolved when the flags
    /// are read; its first address is used. A link-local IPv6 address needs
    /// its interface's index: [fe80::1%2]:8000. systemd:NAME is the socket
    /// systemd passed under that name; socket-activated, the default is
    /// every socket systemd passed.
    #[arg(short, long = "listen", value_name = "ADDR", value_parser = parse_listen)]
    pub listen: Vec<String>,

    /// How connections are balanced over the workers
    #[arg(long, value_enum, default_value_t = fixed().policy.into())]
    pub policy: PolicyArg,

    /// Steer round-robin, least-connections and sticky in the kernel (on, off): an
    /// SK_REUSEPORT program picks each connection's worker and workers
    /// accept on their own sockets, where it can load (root, or CAP_BPF
    /// and CAP_NET_ADMIN); elsewhere, or off, the primary accepts and
    /// hands connections out. `corral status` shows which
    #[arg(long, value_name = "on|off", action = clap::ArgAction::Set, default_value = on_off(fixed().kernel_steering), value_parser = parse_on_off)]
    pub kernel_steering: bool,

    /// Seconds a stopping worker may drain before it is killed (fractions
    /// allowed, e.g. 0.5)
    #[arg(long, value_name = "SECONDS", default_value_t = Seconds(reloadable().grace), value_parser = parse_seconds, allow_negative_numbers = true)]
    pub grace: Seconds,

    /// Name of the cluster in logs, without control characters [default:
    /// the command's file name; a Node program: its script's, without
    /// extension and past node's options (`node -r ./x.js app.js` is app);
    /// `npm start`, `yarn dev`, `pnpm start`: the package's name;
    /// `npx tsx app.ts`, `tsx app.ts`: app; or "demo"]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// When a COMMAND worker counts as ready: auto (when it says so; else on
    /// a first start once it is seen still running 0.1 s after it started,
    /// and after 1 s alive as a reload's replacement; under round-robin,
    /// least-connections and sticky it must say so), message (only when it sends
    /// {"corral":"ready"} or Node's process.send('ready')), delay:SECONDS
    /// (after running that long, or when it says so)
    ///
    /// A command that exits at its start is online but never ready. Library
    /// workers always say so themselves.
    #[arg(long, value_name = "MODE", default_value_t = reloadable().ready, value_parser = parse_ready)]
    pub ready: corral::ReadyMode,

    /// Replacements a rolling reload (or recycling) runs at once, beside the
    /// workers serving
    #[arg(long, value_name = "N", default_value_t = reloadable().max_surge as u32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_surge: u32,

    /// Seconds a worker must run for its exit to end a crash loop: workers
    /// that keep exiting sooner are restarted later and later, and their
    /// slot is reported as crash-looping (at least 1)
    #[arg(long, value_name = "SECONDS", default_value_t = Seconds(reloadable().backoff.stable_after), value_parser = parse_seconds)]
    pub stable_after: Seconds,

    /// The longest wait before a crash-looping worker is restarted, in
    /// seconds (the wait starts at 0.1 and doubles; at least 0.1)
    #[arg(long, value_name = "SECONDS", default_value_t = Seconds(reloadable().backoff.cap), value_parser = parse_seconds)]
    pub max_restart_delay: Seconds,

    /// Seconds a worker that must say it is ready may take: under --ready
    /// message, round-robin, least-connections or sticky it is then replaced (with
    /// no worker ever ready, corral stops with an error); a reload's
    /// replacement not ready by then aborts the reload; a Node worker that
    /// never listens counts as ready after it (--ready auto)
    #[arg(long, value_name = "SECONDS", default_value_t = Seconds(reloadable().ready_timeout), value_parser = parse_seconds, allow_negative_numbers = true)]
    pub ready_timeout: Seconds,

    /// What to do with the JSON messages workers send on their channel:
    /// log them, or log them and relay each to every other worker
    #[arg(long, value_enum, default_value_t = OnMessage::Log)]
    pub on_message: OnMessage,

    /// Largest message accepted on a worker's channel, in bytes (2048 at
    /// least: the protocols' own lines must fit); longer lines are dropped
    /// and logged against the worker
    #[arg(long, value_name = "BYTES", default_value_t = fixed().max_message_size as u64, value_parser = clap::value_parser!(u64).range(corral::cli_support::MIN_MESSAGE_SIZE..=corral::cli_support::MAX_MESSAGE_SIZE))]
    pub max_message_size: u64,

    /// Watchdog: kill and replace a worker whose heartbeats stop for this
    /// many seconds (demo workers send them; a COMMAND's workers are
    /// watched once they send {"corral":"heartbeat"}) [default: off]
    ///
    /// Demo and library workers then heartbeat every quarter of it.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub timeout: Option<Seconds>,

    /// Replace a worker gracefully (its replacement ready first) once its
    /// resident memory exceeds SIZE: bytes, or with K, M, G (KiB, MiB,
    /// GiB) [default: off]
    ///
    /// Checked every second, once the worker has run 1 s.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<u64>,

    /// Replace a worker gracefully after it served N requests (as counted
    /// by the worker: demo and library workers do; corral's Node agent
    /// counts a Node worker's HTTP requests; other COMMANDs' workers send
    /// {"corral":{"served":N}}) [default: off]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=corral::cli_support::MAX_REQUESTS))]
    pub max_requests: Option<u64>,

    /// With --max-requests: up to this many more, chosen per worker, so
    /// workers are not all replaced at once
    #[arg(long, value_name = "J", default_value_t = reloadable().max_requests_jitter, requires = "max_requests", value_parser = clap::value_parser!(u64).range(..=corral::cli_support::MAX_REQUESTS))]
    pub max_requests_jitter: u64,

    /// Threads of each demo worker's runtime [default: 1, a current-thread
    /// runtime, as a Node worker; the worker processes are the parallelism;
    /// more: a multi-thread runtime]; a COMMAND's workers ignore it
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub worker_threads: Option<u32>,

    /// Run workers as USER[:GROUP] (names or numbers; supplementary groups
    /// cleared). corral must be started as root: it binds first (ports
    /// below 1024 too), then starts each worker as that user
    ///
    /// The group defaults to the user's. Started as another user, corral
    /// stops with one error (exit 1). The primary stays root to supervise;
    /// e.g. sudo corral run -l 0.0.0.0:80 --user nobody -- ./server.
    #[arg(long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,

    /// Let Node workers have the primary bind, on their listen(), what
    /// they lack the privilege to bind themselves (with --user): a port
    /// (80), a range (1000-1023) or a directory (/run/app) where the
    /// primary binds their Unix sockets (comma-separated or repeatable)
    /// [default: none: such a listen() fails with EACCES, as without corral]
    #[arg(long, value_name = "PORT|LOW-HIGH|DIR", value_delimiter = ',')]
    pub allow_worker_binds: Vec<String>,

    /// Serve Prometheus metrics and health checks over HTTP on ADDR
    /// (/metrics, /metrics/app, /healthz, /readyz[?all]); keep it on loopback or a
    /// private network [default: off]
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub metrics: Option<String>,

    /// On SIGTERM or `corral stop`, fail /readyz at once but keep serving
    /// for SECONDS before draining: the time a load balancer (Kubernetes'
    /// endpoints) takes to stop sending new connections
    #[arg(long, value_name = "SECONDS", default_value_t = Seconds(reloadable().drain_delay), value_parser = parse_seconds, allow_negative_numbers = true)]
    pub drain_delay: Seconds,

    /// Start a rolling reload at each time of a cron expression, in UTC:
    /// 5 fields "MIN HOUR DAY MONTH WEEKDAY", 6 with seconds first, or
    /// @hourly, @daily, @weekly (pm2's cron_restart, without downtime)
    /// [default: off]
    #[arg(long, value_name = "CRON", value_parser = parse_cron)]
    pub reload_at: Option<String>,

    /// Listen backlog of each socket
    #[arg(long, value_name = "N", default_value_t = fixed().backlog, value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub backlog: u32,

    /// Run the COMMAND as Node cluster workers with corral as their primary:
    /// auto (when it is node, nodejs or a #!…node script), on, off
    ///
    /// auto: when the command is node, nodejs (node20…) or a script whose #!
    /// line runs node; on: for a wrapper that ends up running Node; off: a
    /// Node program gets only LISTEN_FDS and pm2-style messages, as any
    /// COMMAND.
    #[arg(long, value_name = "MODE", default_value_t = fixed().node, value_parser = parse_node)]
    pub node: corral::NodeMode,

    /// Load corral's Node agent into Node workers (on, off): while a
    /// worker drains, its HTTP responses carry `Connection: close` and
    /// idle keep-alive connections are closed between requests, so
    /// keep-alive clients lose no request on a reload (docs/node.md)
    #[arg(long, value_name = "on|off", action = clap::ArgAction::Set, default_value = on_off(fixed().node_agent), value_parser = parse_on_off)]
    pub node_agent: bool,

    /// With the Node agent, close a draining worker's WebSockets with 1001
    /// (going away) over SECONDS from the drain's start, spread evenly (0:
    /// all at once), so clients reconnect to the new workers; each client
    /// then has 1 s to answer. Keep it within --grace
    #[arg(long, value_name = "SECONDS", default_value_t = Seconds(reloadable().ws_close_after), value_parser = parse_seconds, allow_negative_numbers = true)]
    pub ws_close_after: Seconds,
    /// The control socket: a path, or `none` for no control socket
    /// [default: $XDG_RUNTIME_DIR/corral/NAME.sock, /run/corral/NAME.sock
    /// for root, else /tmp/corral-UID/NAME.sock]
    #[arg(long, value_name = "PATH|none")]
    pub control: Option<String>,

    /// Also write everything the primary prints (its lines and the
    /// workers' output) to this file, each line with a timestamp; rotated
    /// by size, reopened on SIGUSR1 [default: off for run; for start:
    /// NAME/corral.log in the state directory]
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,

    /// Rotate the log file once it holds SIZE: bytes, or with K, M, G
    #[arg(long, value_name = "SIZE", default_value_t = fixed().log_max_size, value_parser = parse_size)]
    pub log_max_size: u64,

    /// Rotated log files kept (PATH.1 the newest … PATH.N); 0 keeps none
    #[arg(long, value_name = "N", default_value_t = fixed().log_keep, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub log_keep: u32,

    /// Set by `corral start`: the directory where the exit is recorded
    #[arg(long, value_name = "DIR", hide = true)]
    pub state_dir: Option<PathBuf>,
    /// Reload (rolling) when a file under PATH changes: a directory, with
    /// its subdirectories, or a file (repeatable) [default: off; --watch
    /// alone: the program's directory]
    ///
    /// The program's directory is its script's (node app.js, python3
    /// app.py), else the program's when given as a path (./server), else
    /// the current directory (python3 -m app, the demo worker). A reload
    /// starts once no file changed for 300 ms. Not watched: .git,
    /// node_modules, __pycache__, .venv, editors' temporary files and what
    /// .gitignore files ignore. A change that breaks the program aborts its
    /// reload: the running workers keep serving, and the next change tries
    /// again.
    #[arg(long, value_name = "PATH", num_args = 0..)]
    pub watch: Option<Vec<PathBuf>>,

    /// The program each worker runs, and its arguments (after `--`)
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

impl RunArgs {
    /// The library cluster these flags describe: each flag sets its setting.
    pub fn cluster(&self) -> corral::Cluster {
        let run = self;
        let mut cluster = corral::Cluster::new()
            .policy(run.policy.into())
            .kernel_steering(run.kernel_steering)
            .grace(run.grace.0)
            .backlog(run.backlog)
            .ready_timeout(run.ready_timeout.0)
            .ready(run.ready)
            .node(run.node)
            .node_agent(run.node_agent)
            .ws_close_after(run.ws_close_after.0)
            .max_surge(run.max_surge as usize)
            .stable_after(run.stable_after.0)
            .max_restart_delay(run.max_restart_delay.0)
            .max_message_size(run.max_message_size as usize)
            .drain_delay(run.drain_delay.0)
            .on_message(corral::MessagePolicy {
                log: true,
                rebroadcast: run.on_message == OnMessage::Broadcast,
            })
            // `corral run` inside another cluster's worker is a cluster of its own.
            .allow_nested(true);
        if let Some(workers) = run.workers {
            cluster = cluster.workers(workers as usize);
        }
        if let Some(max) = run.max_requests {
            cluster = cluster.max_requests(max, run.max_requests_jitter);
        }
        if let Some(bytes) = run.max_memory {
            cluster = cluster.max_memory(bytes);
        }
        if let Some(timeout) = run.timeout {
            cluster = cluster.watchdog(timeout.0);
        }
        if let Some(user) = &run.user {
            cluster = cluster.user(user);
        }
        for entry in &run.allow_worker_binds {
            cluster = cluster.allow_worker_binds(entry);
        }
        if let Some(control) = &run.control {
            cluster = cluster.control(corral::ControlSocket::from_arg(control));
        }
        if let Some(path) = &run.log_file {
            cluster = cluster.log_file(path);
        }
        cluster = cluster.log_rotation(run.log_max_size, run.log_keep);
        if let Some(address) = &run.metrics {
            cluster = cluster.metrics(address);
        }
        match run.watch.as_deref() {
            None => {}
            Some([]) => cluster = cluster.watch(program_directory(&run.command)),
            Some(paths) => {
                for path in paths {
                    cluster = cluster.watch(path);
                }
            }
        }
        if let Some(threads) = run.worker_threads {
            cluster = cluster.worker_threads(threads as usize);
        }
        for path in &run.env_file {
            cluster = cluster.env_file(path);
        }
        if let Some(name) = &run.env_name {
            cluster = cluster.env_name(name);
        }
        if let Some(expression) = &run.reload_at {
            cluster = cluster.reload_at(expression);
        }
        for variable in &run.env {
            if let Some((key, value)) = variable.split_once('=') {
                cluster = cluster.env(key, value);
            }
        }
        // Started by systemd with sockets and no --listen: the library serves
        // every socket it was given. A Node program's listen() calls are served
        // on demand: nothing is bound up front unless asked.
        let node = run
            .command
            .first()
            .is_some_and(|program| run.node.applies_to(program));
        if run.listen.is_empty() && corral::cli_support::activated_addresses().is_empty() && !node {
            cluster = cluster.listen("127.0.0.1:8000");
        }
        for address in &run.listen {
            cluster = cluster.listen(address);
        }
        let name = match (&run.name, run.command.is_empty()) {
            (Some(name), _) => Some(name.clone()),
            (None, true) => Some("demo".to_string()),
            (None, false) => None,
        };
        if let Some(name) = name {
            cluster = cluster.name(name);
        }
        cluster
    }
}

/// Programs that run a script named among their arguments: `--watch`
/// watches the script's directory, not theirs (with digits and dots left
/// out: python3.12 is python).
const SCRIPT_RUNNERS: &[&str] = &[
    "node", "nodejs", "python", "pypy", "ruby", "perl", "php", "bun", "deno", "sh", "bash", "dash",
    "zsh",
];

/// What `--watch` alone watches: the directory of the program when it is
/// given as a path and runs no script (`./server`), else of its first
/// argument that is a file (the script: `node app.js`, `python3
/// app.py`), else the current directory.
pub fn program_directory(command: &[OsString]) -> PathBuf {
    let directory = |path: &std::path::Path| match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some((program, args)) = command.split_first() else {
        return PathBuf::from(".");
    };
    let program = std::path::Path::new(program);
    let runs_scripts = program
        .file_name()
        .and_then(|name| name.to_str())
        .map(|name| name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.'))
        .is_some_and(|name| SCRIPT_RUNNERS.contains(&name));
    if !runs_scripts && program.as_os_str().as_encoded_bytes().contains(&b'/') {
        return directory(program);
    }
    args.iter()
        .map(std::path::Path::new)
        .find(|arg| !arg.as_os_str().as_encoded_bytes().starts_with(b"-") && arg.is_file())
        .map_or_else(|| PathBuf::from("."), directory)
}

/// The `--on-message` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnMessage {
    /// Log each message (`message from worker 2: {...}`)
    Log,
    /// Log each message and relay it to every other worker
    Broadcast,
}

/// The `--policy` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyArg {
    /// Every worker accepts on one shared socket (the kernel picks who)
    Shared,
    /// One SO_REUSEPORT socket per worker (the kernel spreads by hash)
    Reuseport,
    /// The primary accepts and hands connections to workers in turn
    RoundRobin,
    /// The primary accepts and hands each connection to the worker with the fewest open
    LeastConnections,
    /// The primary accepts and hands each connection to the worker its client's address picks
    Sticky,
}

impl From<PolicyArg> for corral::Policy {
    fn from(policy: PolicyArg) -> Self {
        match policy {
            PolicyArg::Shared => corral::Policy::Shared,
            PolicyArg::Reuseport => corral::Policy::ReusePort,
            PolicyArg::RoundRobin => corral::Policy::RoundRobin,
            PolicyArg::LeastConnections => corral::Policy::LeastConnections,
            PolicyArg::Sticky => corral::Policy::Sticky,
        }
    }
}

impl From<corral::Policy> for PolicyArg {
    fn from(policy: corral::Policy) -> Self {
        match policy {
            corral::Policy::Shared => PolicyArg::Shared,
            corral::Policy::ReusePort => PolicyArg::Reuseport,
            corral::Policy::RoundRobin => PolicyArg::RoundRobin,
            corral::Policy::LeastConnections => PolicyArg::LeastConnections,
            corral::Policy::Sticky => PolicyArg::Sticky,
        }
    }
}

/// The library's defaults, which the flags' defaults are.
fn reloadable() -> corral::cli_support::Reloadable {
    corral::cli_support::Reloadable::default()
}

fn fixed() -> corral::cli_support::Fixed {
    corral::cli_support::Fixed::default()
}

/// A number of seconds, fractions allowed, printed as given (`30`, `0.5`):
/// the type of the flags that take one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seconds(pub Duration);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.as_secs_f64())
    }
}

impl PartialEq<Duration> for Seconds {
    fn eq(&self, other: &Duration) -> bool {
        self.0 == *other
    }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

fn parse_on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{text:?} is neither on nor off")),
    }
}

fn parse_node(text: &str) -> Result<corral::NodeMode, String> {
    text.parse().map_err(|err: corral::Error| err.to_string())
}

/// Checks a listen address as far as it can be before binding: its form,
/// and that its host resolves (so every bad value is a usage error). A
/// `systemd:NAME` is matched to its socket later, and a worker re-reading
/// its primary's flags resolves nothing.
fn parse_listen(text: &str) -> Result<String, String> {
    let parsed = text
        .parse::<corral::ListenAddr>()
        .map_err(|err| err.to_string())?;
    if text.trim().starts_with("systemd:") || corral::is_worker() {
        return Ok(text.to_string());
    }
    let address = parsed.resolve().map_err(|err| err.to_string())?;
    if let std::net::SocketAddr::V6(v6) = address
        && v6.ip().is_unicast_link_local()
        && v6.scope_id() == 0
    {
        return Err(format!(
            "{text:?} is a link-local IPv6 address without a scope id: add its interface's \
             index, as in [{}%2]:{} (`ip link` lists the indexes)",
            v6.ip(),
            v6.port()
        ));
    }
    Ok(text.to_string())
}

/// An `--env-name`: a TOML table name, as `production`.
fn parse_env_name(text: &str) -> Result<String, String> {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is not a profile name: use letters, digits, - and _ (as production)"
        ))
    }
}

/// A `--reload-at` cron expression, checked by the library's parser.
fn parse_cron(text: &str) -> Result<String, String> {
    corral::cli_support::check_cron(text).map(|()| text.to_string())
}

fn parse_env(text: &str) -> Result<String, String> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(format!("{text:?}: write NAME=VALUE"));
    };
    corral::cli_support::check_env_variable(name.as_ref(), value.as_ref()).map_err(
        |err| match err {
            corral::Error::Config(why) => why,
            other => other.to_string(),
        },
    )?;
    Ok(text.to_string())
}

pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let upper = text.trim().to_ascii_uppercase();
    let digits = upper.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit: u64 = match &upper[digits.len()..] {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => {
            return Err(format!(
                "{text:?}: use a number of bytes, or K, M or G, as 512M"
            ));
        }
    };
    let count: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: use a number of bytes, or K, M or G, as 512M"))?;
    count
        .checked_mul(unit)
        .filter(|&bytes| bytes > 0)
        .ok_or_else(|| format!("{text:?} is not a usable memory size"))
}

fn parse_ready(text: &str) -> Result<corral::ReadyMode, String> {
    let mode = text.parse().map_err(|err: corral::Error| err.to_string())?;
    if let corral::ReadyMode::Delay(delay) = mode {
        within_limits(delay)?;
    }
    Ok(mode)
}

/// Seconds, fractions allowed, from 0 to the library's limit.
fn parse_seconds(text: &str) -> Result<Seconds, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    let duration = Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("{text:?} must be zero or a positive number of seconds"))?;
    within_limits(duration)?;
    Ok(Seconds(duration))
}

fn within_limits(duration: Duration) -> Result<(), String> {
    let max = corral::cli_support::MAX_DURATION;
    if duration > max {
        return Err(format!("at most {} seconds (a year)", max.as_secs()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_every_documented_flag() {
        let cli = Cli::try_parse_from([
            "corral",
            "run",
            "-w",
            "3",
            "-l",
            "127.0.0.1:0",
            "--listen",
            "[::1]:0",
            "--policy",
            "shared",
            "--grace",
            "0.5",
            "--name",
            "api",
            "--backlog",
            "64",
            "--",
            "python3",
            "-m",
            "http.server",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("parsed as run");
        };
        assert_eq!(run.workers, Some(3));
        assert_eq!(run.listen, ["127.0.0.1:0", "[::1]:0"]);
        assert_eq!(run.policy, PolicyArg::Shared);
        assert_eq!(run.grace, Duration::from_millis(500));
        assert_eq!(run.command, ["python3", "-m", "http.server"]);
    }

    #[test]
    fn memory_sizes_parse() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "M", "12Q", "-1M", "0"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scale_counts_are_numbers_and_signed_changes() {
        assert_eq!(parse_scale_count("4"), Ok(ScaleCount::Exactly(4)));
        assert_eq!(parse_scale_count("+2"), Ok(ScaleCount::By(2)));
        assert_eq!(parse_scale_count("-1"), Ok(ScaleCount::By(-1)));
        for bad in ["", "x", "+", "--1", "1.5"] {
            assert!(parse_scale_count(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scale_takes_a_negative_count_as_a_value() {
        let cli = Cli::try_parse_from(["corral", "scale", "api", "-1"]).unwrap();
        let Command::Scale(scale) = cli.command else {
            panic!("parsed as scale");
        };
        assert_eq!(scale.parse(), Ok((Some("api".into()), ScaleCount::By(-1))));
        let cli = Cli::try_parse_from(["corral", "scale", "-1", "--json"]).unwrap();
        let Command::Scale(scale) = cli.command else {
            panic!("parsed as scale");
        };
        assert_eq!(scale.parse(), Ok((None, ScaleCount::By(-1))));
        assert!(scale.common.json);
    }

    #[test]
    fn control_commands_take_a_name_or_a_socket() {
        let cli = Cli::try_parse_from(["corral", "status", "api", "--json"]).unwrap();
        let Command::Status(status) = cli.command else {
            panic!("parsed as status");
        };
        assert_eq!(status.name.as_deref(), Some("api"));
        assert!(status.common.json);
        let cli =
            Cli::try_parse_from(["corral", "logs", "-f", "-n", "5", "--worker", "2"]).unwrap();
        let Command::Logs(logs) = cli.command else {
            panic!("parsed as logs");
        };
        assert!(logs.follow);
        assert_eq!((logs.lines, logs.worker), (5, Some(2)));
    }

    #[test]
    fn watch_alone_watches_the_program_s_directory() {
        let dir = |command: &[&str]| {
            let command: Vec<OsString> = command.iter().map(OsString::from).collect();
            program_directory(&command)
        };
        let manifest = env!("CARGO_MANIFEST_DIR");
        let script = format!("{manifest}/Cargo.toml");
        assert_eq!(dir(&[]), PathBuf::from("."));
        assert_eq!(dir(&["./server", "--port", "0"]), PathBuf::from("."));
        assert_eq!(dir(&["/opt/app/bin/server"]), PathBuf::from("/opt/app/bin"));
        assert_eq!(
            dir(&["node", "--inspect", &script]),
            PathBuf::from(manifest)
        );
        assert_eq!(
            dir(&["/home/me/.nvm/versions/node/v22.1.0/bin/node", &script]),
            PathBuf::from(manifest)
        );
        assert_eq!(dir(&["python3.12", "-u", &script]), PathBuf::from(manifest));
        assert_eq!(dir(&["python3", "-m", "http.server"]), PathBuf::from("."));
        assert_eq!(dir(&["gunicorn", "app:app"]), PathBuf::from("."));
    }

    #[test]
    fn watch_takes_paths_or_none() {
        let parse = |args: &[&str]| {
            let argv = ["corral", "run"].iter().chain(args);
            let Command::Run(run) = Cli::try_parse_from(argv).unwrap().command else {
                panic!("parsed as run");
            };
            run.watch
        };
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&["--watch", "--", "node", "app.js"]), Some(vec![]));
        assert_eq!(
            parse(&["--watch", "src", "lib", "-w", "2"]),
            Some(vec![PathBuf::from("src"), PathBuf::from("lib")])
        );
        assert_eq!(
            parse(&["--watch", "src", "--watch", "lib"]),
            Some(vec![PathBuf::from("src"), PathBuf::from("lib")])
        );
    }

    #[test]
    fn bad_values_are_rejected() {
        for bad in [
            vec!["corral", "run", "-w", "0"],
            vec!["corral", "run", "--grace", "-1"],
            vec!["corral", "run", "-l", "nope"],
            vec!["corral", "run", "-l", "localhost"],
            vec!["corral", "run", "-l", "no-such-host.invalid:80"],
            vec!["corral", "run", "-l", "[fe80::1]:0"],
            vec!["corral", "run", "--grace", "1e18"],
            vec!["corral", "run", "--timeout", "31536001"],
            vec!["corral", "run", "--ready", "delay:1e18"],
            vec!["corral", "run", "--max-message-size", "4294967297"],
            vec!["corral", "run", "--max-requests", "18446744073709551615"],
            vec!["corral", "run", "--policy", "random"],
        ] {
            assert!(Cli::try_parse_from(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn service_user_without_a_value_is_a_user_unit() {
        let alias = |line: &str| -> String {
            let argv = line.split(' ').map(std::ffi::OsString::from).collect();
            let out: Vec<String> = service_user_alias(argv)
                .into_iter()
                .map(|arg| arg.to_string_lossy().into_owned())
                .collect();
            out.join(" ")
        };
        assert_eq!(
            alias("corral service install api --user -- node app.js"),
            "corral service install api --user-unit -- node app.js"
        );
        assert_eq!(
            alias("corral service install api --user --socket -- node app.js"),
            "corral service install api --user-unit --socket -- node app.js"
        );
        assert_eq!(
            alias("corral service install api --user www -- node app.js"),
            "corral service install api --user www -- node app.js"
        );
        assert_eq!(
            alias("corral service remove api --user"),
            "corral service remove api --user-unit"
        );
        assert_eq!(
            alias("corral run --user www -- x --user"),
            "corral run --user www -- x --user"
        );
    }
}
