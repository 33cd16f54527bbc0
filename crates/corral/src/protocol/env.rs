//! The environment contract between the primary and a worker: the variables
//! the primary sets (built here for the spawn) and their reading on the
//! worker's side. Listening sockets follow systemd's socket-activation
//! protocol so that any server supporting it runs unchanged.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::time::Duration;

use crate::protocol::lines::DEFAULT_MAX_LINE;
use crate::{Error, Policy, sys};

/// The worker's slot number, 1-based; a replacement keeps its slot's id.
pub const WORKER_ID: &str = "CORRAL_WORKER_ID";
/// How many times the slot has been started, this start included (1 first).
pub const GENERATION: &str = "CORRAL_GENERATION";
/// The descriptor of the message channel (newline-delimited JSON).
pub const IPC_FD: &str = "CORRAL_IPC_FD";
/// The primary's pid, so a worker can tell at start that it was orphaned.
pub const PRIMARY_PID: &str = "CORRAL_PRIMARY_PID";
/// The drain time the primary allows, in milliseconds.
pub const GRACE_MS: &str = "CORRAL_GRACE_MS";
/// With a watchdog: how often a library worker sends a heartbeat, in ms.
pub const HEARTBEAT_MS: &str = "CORRAL_HEARTBEAT_MS";
/// Threads of the library worker's tokio runtime (1: a current-thread
/// runtime); unset: one per CPU.
pub const WORKER_THREADS: &str = "CORRAL_WORKER_THREADS";
/// The largest message line the worker's channel accepts, in bytes.
pub const MAX_MESSAGE_SIZE: &str = "CORRAL_MAX_MESSAGE_SIZE";
/// The cluster's name, as given by `--name`.
pub const CLUSTER_NAME: &str = "CORRAL_NAME";
/// The cluster's balancing policy (`shared`, `reuseport`, `round-robin`,
/// `least-connections`).
pub const POLICY: &str = "CORRAL_POLICY";
/// The addresses the cluster listens on, as bound, comma-separated.
pub const LISTEN_ADDRS: &str = "CORRAL_LISTEN_ADDRS";
/// Under `round-robin` and `least-connections`: the descriptor of the
/// hand-off channel that brings accepted connections (see `handoff`).
pub const HANDOFF_FD: &str = "CORRAL_HANDOFF_FD";
/// Node.js: the IPC channel behind `process.send` (set for `node` workers).
pub const NODE_CHANNEL_FD: &str = "NODE_CHANNEL_FD";
/// Node.js: the channel's framing; corral's is `json`.
pub const NODE_CHANNEL_SERIALIZATION_MODE: &str = "NODE_CHANNEL_SERIALIZATION_MODE";
/// systemd: how many listening sockets, from descriptor 3 up.
pub const LISTEN_FDS: &str = "LISTEN_FDS";
/// systemd: the sockets' names, colon-separated.
pub const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
/// systemd: the pid the sockets are meant for; corral sets the worker's own.
pub const LISTEN_PID: &str = "LISTEN_PID";
/// systemd's first passed descriptor.
pub const FIRST_LISTEN_FD: RawFd = 3;

/// Variables a worker must not inherit from the primary's own environment:
/// corral sets its own values, and only the primary talks to systemd.
const NOT_INHERITED: &[&str] = &[
    WORKER_ID,
    GENERATION,
    IPC_FD,
    PRIMARY_PID,
    GRACE_MS,
    HEARTBEAT_MS,
    WORKER_THREADS,
    MAX_MESSAGE_SIZE,
    CLUSTER_NAME,
    POLICY,
    LISTEN_ADDRS,
    HANDOFF_FD,
    NODE_CHANNEL_FD,
    NODE_CHANNEL_SERIALIZATION_MODE,
    LISTEN_FDS,
    LISTEN_FDNAMES,
    LISTEN_PID,
    "NOTIFY_SOCKET",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
];

/// What the primary tells one worker start.
pub(crate) struct WorkerIdentity<'a> {
    pub id: u32,
    pub generation: u32,
    pub listener_count: usize,
    pub has_handoff: bool,
    pub node_channel: bool,
    pub primary_pid: u32,
    pub grace: Duration,
    pub max_message_size: usize,
    pub worker_threads: Option<usize>,
    pub heartbeat: Option<Duration>,
    pub cluster_name: &'a str,
    pub policy: Policy,
    pub addresses: &'a [SocketAddr],
}

impl WorkerIdentity<'_> {
    /// The descriptor number the channel gets in the worker: after the sockets.
    pub(crate) fn ipc_fd(&self) -> RawFd {
        FIRST_LISTEN_FD + self.listener_count as RawFd
    }

    /// The descriptor number of the hand-off channel: after the channel.
    pub(crate) fn handoff_fd(&self) -> RawFd {
        self.ipc_fd() + 1
    }

    /// The worker's whole environment except `LISTEN_PID`, which only the
    /// child knows: the primary's own variables, minus corral's and
    /// systemd's, plus this worker's.
    pub(crate) fn environment(&self) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(key, _)| !NOT_INHERITED.iter().any(|name| key == name))
            .collect();
        let names = (0..self.listener_count)
            .map(|index| format!("listener{index}"))
            .collect::<Vec<_>>()
            .join(":");
        let addresses: Vec<String> = self.addresses.iter().map(|a| a.to_string()).collect();
        let mut ours = vec![
            (WORKER_ID, self.id.to_string()),
            (GENERATION, self.generation.to_string()),
            (IPC_FD, self.ipc_fd().to_string()),
            (PRIMARY_PID, self.primary_pid.to_string()),
            (GRACE_MS, self.grace.as_millis().to_string()),
            (MAX_MESSAGE_SIZE, self.max_message_size.to_string()),
            (CLUSTER_NAME, self.cluster_name.to_string()),
            (POLICY, self.policy.name().to_string()),
            (LISTEN_ADDRS, addresses.join(",")),
            (LISTEN_FDS, self.listener_count.to_string()),
            (LISTEN_FDNAMES, names),
        ];
        if self.has_handoff {
            ours.push((HANDOFF_FD, self.handoff_fd().to_string()));
        }
        if let Some(threads) = self.worker_threads {
            ours.push((WORKER_THREADS, threads.to_string()));
        }
        if let Some(heartbeat) = self.heartbeat {
            ours.push((HEARTBEAT_MS, heartbeat.as_millis().max(1).to_string()));
        }
        if self.node_channel {
            ours.push((NODE_CHANNEL_FD, self.ipc_fd().to_string()));
            ours.push((NODE_CHANNEL_SERIALIZATION_MODE, "json".to_string()));
        }
        env.extend(
            ours.into_iter()
                .map(|(key, value)| (OsString::from(key), OsString::from(value))),
        );
        env
    }
}

/// A worker's view of what its primary handed it.
pub(crate) struct WorkerEnvironment {
    pub id: u32,
    pub generation: u32,
    pub grace: Duration,
    pub max_message_size: usize,
    pub worker_threads: Option<usize>,
    pub heartbeat: Option<Duration>,
    pub policy: Option<Policy>,
    pub addresses: Vec<SocketAddr>,
    pub listeners: Vec<OwnedFd>,
    pub channel: Option<OwnedFd>,
    pub handoff: Option<OwnedFd>,
}

impl WorkerEnvironment {
    /// `None` when this process is not a corral worker (it is a primary).
    /// A process is a worker when `CORRAL_WORKER_ID` is set; it must then
    /// also be the process `LISTEN_PID` names, or the environment is broken.
    pub(crate) fn detect() -> Result<Option<Self>, Error> {
        let Some(id) = read_number(WORKER_ID)? else {
            return Ok(None);
        };
        let own_pid = std::process::id();
        let listen_pid = read_number(LISTEN_PID)?;
        if listen_pid != Some(own_pid) {
            return Err(Error::WorkerEnvironment(format!(
                "{WORKER_ID} is set but {LISTEN_PID} is {listen_pid:?}, not this process ({own_pid}): \
                 the worker must be the process corral started (use `exec` in wrapper scripts)"
            )));
        }
        if let Some(primary) = read_number(PRIMARY_PID)? {
            let parent = rustix::process::getppid().map(|pid| pid.as_raw_nonzero().get() as u32);
            if parent != Some(primary) {
                return Err(Error::WorkerEnvironment(format!(
                    "the primary ({primary}) is gone: this worker was orphaned at start"
                )));
            }
        }
        let listener_count = read_number(LISTEN_FDS)?.unwrap_or(0);
        let channel_fd = read_number(IPC_FD)?;
        let handoff_fd = read_number(HANDOFF_FD)?;
        let mut numbers: Vec<RawFd> = (0..listener_count)
            .map(|index| FIRST_LISTEN_FD + index as RawFd)
            .collect();
        numbers.extend(channel_fd.map(|fd| fd as RawFd));
        numbers.extend(handoff_fd.map(|fd| fd as RawFd));
        let mut fds = sys::adopt_inherited_fds(&numbers)
            .map_err(|err| Error::WorkerEnvironment(err.to_string()))?;
        let handoff = handoff_fd.and_then(|_| fds.pop());
        let channel = channel_fd.and_then(|_| fds.pop());
        Ok(Some(WorkerEnvironment {
            id,
            generation: read_number(GENERATION)?.unwrap_or(1),
            grace: Duration::from_millis(read_number(GRACE_MS)?.unwrap_or(30_000).into()),
            max_message_size: read_number(MAX_MESSAGE_SIZE)?
                .map_or(DEFAULT_MAX_LINE, |bytes| bytes as usize),
            heartbeat: read_number(HEARTBEAT_MS)?
                .filter(|&ms| ms > 0)
                .map(|ms| Duration::from_millis(ms.into())),
            worker_threads: read_number(WORKER_THREADS)?
                .filter(|&threads| threads > 0)
                .map(|threads| threads as usize),
            policy: read_policy()?,
            addresses: read_addresses()?,
            listeners: fds,
            channel,
            handoff,
        }))
    }
}

fn read_policy() -> Result<Option<Policy>, Error> {
    match std::env::var(POLICY) {
        Ok(text) => text.parse().map(Some),
        Err(_) => Ok(None),
    }
}

fn read_addresses() -> Result<Vec<SocketAddr>, Error> {
    let text = std::env::var(LISTEN_ADDRS).unwrap_or_default();
    text.split(',')
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse().map_err(|_| {
                Error::WorkerEnvironment(format!("{LISTEN_ADDRS} has a bad address {part:?}"))
            })
        })
        .collect()
}

fn read_number(name: &str) -> Result<Option<u32>, Error> {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Ok(text) => text.trim().parse().map(Some).map_err(|_| {
            Error::WorkerEnvironment(format!("{name}={text:?} is not a whole number"))
        }),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::WorkerEnvironment(format!(
            "{name} is not valid UTF-8"
        ))),
    }
}
