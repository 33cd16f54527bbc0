//! The environment contract between the primary and a worker: the variables
//! the primary sets (built here for the spawn) and their reading on the
//! worker's side. Listening sockets follow systemd's socket-activation
//! protocol so that any server supporting it runs unchanged.

use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use crate::balance::Policy;
use crate::error::Error;
use crate::protocol::lines::DEFAULT_MAX_LINE;
use crate::sys;

/// The worker's slot number, 1-based; a replacement keeps its slot's id.
pub const WORKER_ID: &str = "CORRAL_WORKER_ID";
/// How many times the slot has been started, this start included (1 first).
pub const GENERATION: &str = "CORRAL_GENERATION";
/// The descriptor of the message channel (newline-delimited JSON).
pub const IPC_FD: &str = "CORRAL_IPC_FD";
/// The primary's pid, so a worker can tell at start that it was orphaned.
pub const PRIMARY_PID: &str = "CORRAL_PRIMARY_PID";
/// How many workers the cluster keeps when this one started.
pub const WORKERS: &str = "CORRAL_WORKERS";
/// pm2's name for the worker's 0-based instance number (the slot id less
/// one), which pm2 users read to run a job on one instance only.
pub const NODE_APP_INSTANCE: &str = "NODE_APP_INSTANCE";
/// The drain time the primary allows, in milliseconds.
pub const GRACE_MS: &str = "CORRAL_GRACE_MS";
/// With a watchdog: how often a library worker sends a heartbeat, in ms.
pub const HEARTBEAT_MS: &str = "CORRAL_HEARTBEAT_MS";
/// Threads of the library worker's tokio runtime (1: a current-thread
/// runtime, also when unset; more: a multi-thread runtime).
pub const WORKER_THREADS: &str = "CORRAL_WORKER_THREADS";
/// The largest message line the worker's channel accepts, in bytes.
pub const MAX_MESSAGE_SIZE: &str = "CORRAL_MAX_MESSAGE_SIZE";
/// The cluster's name, as given by `--name`.
pub const CLUSTER_NAME: &str = "CORRAL_NAME";
/// The cluster's balancing policy (`shared`, `reuseport`, `round-robin`,
/// `least-connections`, `sticky`).
pub const POLICY: &str = "CORRAL_POLICY";
/// `1` when a library worker reports the connections it closes on its
/// message channel: least-connections steered in the kernel where the kernel
/// cannot count them itself.
pub const CLOSE_REPORTS: &str = "CORRAL_CLOSE_REPORTS";
/// The addresses the cluster listens on, as bound, comma-separated.
pub const LISTEN_ADDRS: &str = "CORRAL_LISTEN_ADDRS";
/// Under `round-robin`, `least-connections` and `sticky`: the descriptor of the
/// hand-off channel that brings accepted connections (see `handoff`).
pub const HANDOFF_FD: &str = "CORRAL_HANDOFF_FD";
/// Node.js: the IPC channel behind `process.send` (set for `node` workers).
pub const NODE_CHANNEL_FD: &str = "NODE_CHANNEL_FD";
/// Node.js: the channel's framing; corral's is `json`.
pub const NODE_CHANNEL_SERIALIZATION_MODE: &str = "NODE_CHANNEL_SERIALIZATION_MODE";
/// Node.js: makes the program a cluster worker (`cluster.isPrimary` false,
/// `cluster.worker.id` = this value, the slot id), whose `listen()` asks
/// its primary, corral, for the socket (set for Node programs, `--node`).
pub const NODE_UNIQUE_ID: &str = "NODE_UNIQUE_ID";
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
    WORKERS,
    NODE_APP_INSTANCE,
    GENERATION,
    IPC_FD,
    PRIMARY_PID,
    GRACE_MS,
    HEARTBEAT_MS,
    WORKER_THREADS,
    MAX_MESSAGE_SIZE,
    CLUSTER_NAME,
    POLICY,
    CLOSE_REPORTS,
    LISTEN_ADDRS,
    HANDOFF_FD,
    NODE_CHANNEL_FD,
    NODE_CHANNEL_SERIALIZATION_MODE,
    NODE_UNIQUE_ID,
    LISTEN_FDS,
    LISTEN_FDNAMES,
    LISTEN_PID,
    "NOTIFY_SOCKET",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
];

/// Whether `key` is a variable corral sets or withholds itself, which a
/// configuration may not set for workers.
pub fn is_reserved(key: &str) -> bool {
    key.starts_with("CORRAL_") || NOT_INHERITED.contains(&key)
}

/// Checks one variable a configuration sets for every worker
/// (`--env NAME=VALUE`): a name an environment can carry and that is not
/// corral's own, a value without NUL bytes (which no environment can
/// carry: `execve` would refuse every start). For the command line
/// (`corral::cli_support`); `Cluster::env` checks the same.
#[doc(hidden)]
pub fn check_variable(name: &OsStr, value: &OsStr) -> Result<(), Error> {
    let text = name.to_string_lossy();
    if text.is_empty() || text.contains(['=', '\0']) {
        return Err(Error::Config(format!(
            "{text:?} is not a valid environment variable name: write NAME=VALUE, as \
             APP_ENV=production"
        )));
    }
    if is_reserved(&text) {
        return Err(Error::Config(format!(
            "the environment variable {text} is corral's own: workers get it from corral; use \
             another name"
        )));
    }
    if value.as_bytes().contains(&0) {
        return Err(Error::Config(format!(
            "the value of the environment variable {text} contains a NUL byte, which no \
             environment can carry: remove it"
        )));
    }
    Ok(())
}

/// The worker environment contract: everything the primary tells a worker
/// through its environment, in one place. The primary [`encode`]s it for
/// each start; the worker [`decode`]s it. `LISTEN_PID` is not part of it:
/// only the child knows its pid (see `sys::ExecImage`).
///
/// [`encode`]: WorkerEnv::encode
/// [`decode`]: WorkerEnv::decode
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkerEnv {
    /// `CORRAL_WORKER_ID`.
    pub id: u32,
    /// `CORRAL_GENERATION`.
    pub generation: u32,
    /// `CORRAL_WORKERS`: the workers the cluster keeps (0 when unset).
    pub workers: usize,
    /// `LISTEN_FDS`: listening sockets from descriptor 3 up.
    pub listener_count: usize,
    /// Whether `CORRAL_HANDOFF_FD` names a hand-off channel.
    pub has_handoff: bool,
    /// Node's `NODE_CHANNEL_FD` is set to the message channel too.
    pub node_channel: bool,
    /// `CORRAL_PRIMARY_PID`.
    pub primary_pid: Option<u32>,
    /// `CORRAL_GRACE_MS`.
    pub grace: Duration,
    /// `CORRAL_MAX_MESSAGE_SIZE`.
    pub max_message_size: usize,
    /// `CORRAL_WORKER_THREADS`.
    pub worker_threads: Option<usize>,
    /// `CORRAL_HEARTBEAT_MS`.
    pub heartbeat: Option<Duration>,
    /// `CORRAL_NAME`.
    pub cluster_name: String,
    /// `CORRAL_POLICY`.
    pub policy: Option<Policy>,
    /// `CORRAL_CLOSE_REPORTS`.
    pub close_reports: bool,
    /// `CORRAL_LISTEN_ADDRS`.
    pub addresses: Vec<SocketAddr>,
}

/// What a worker assumes when the primary says nothing.
const DEFAULT_GRACE_MS: u64 = 30_000;

impl WorkerEnv {
    /// The descriptor number the channel gets in the worker: after the sockets.
    pub(crate) fn ipc_fd(&self) -> RawFd {
        FIRST_LISTEN_FD + self.listener_count as RawFd
    }

    /// The descriptor number of the hand-off channel: after the channel.
    pub(crate) fn handoff_fd(&self) -> RawFd {
        self.ipc_fd() + 1
    }

    /// corral's variables for this worker, `LISTEN_PID` aside.
    pub(crate) fn encode(&self) -> Vec<(&'static str, String)> {
        let names = (0..self.listener_count)
            .map(|index| format!("listener{index}"))
            .collect::<Vec<_>>()
            .join(":");
        let addresses: Vec<String> = self.addresses.iter().map(|a| a.to_string()).collect();
        let mut ours = vec![
            (WORKER_ID, self.id.to_string()),
            (WORKERS, self.workers.to_string()),
            (NODE_APP_INSTANCE, self.id.saturating_sub(1).to_string()),
            (GENERATION, self.generation.to_string()),
            (IPC_FD, self.ipc_fd().to_string()),
            (GRACE_MS, self.grace.as_millis().to_string()),
            (MAX_MESSAGE_SIZE, self.max_message_size.to_string()),
            (CLUSTER_NAME, self.cluster_name.clone()),
            (LISTEN_ADDRS, addresses.join(",")),
            (LISTEN_FDS, self.listener_count.to_string()),
            (LISTEN_FDNAMES, names),
        ];
        if let Some(pid) = self.primary_pid {
            ours.push((PRIMARY_PID, pid.to_string()));
        }
        if let Some(policy) = self.policy {
            ours.push((POLICY, policy.name().to_string()));
        }
        if self.close_reports {
            ours.push((CLOSE_REPORTS, "1".to_string()));
        }
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
            ours.push((NODE_UNIQUE_ID, self.id.to_string()));
        }
        ours
    }

    /// Reads the contract through `lookup` (the process environment, or
    /// anything else in tests). `None` when `CORRAL_WORKER_ID` is not set:
    /// this is not a worker. A variable with a bad value is an error that
    /// names it.
    pub(crate) fn decode(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, Error> {
        let Some(id) = number(&lookup, WORKER_ID)? else {
            return Ok(None);
        };
        let listener_count = number(&lookup, LISTEN_FDS)?.unwrap_or(0);
        let ipc_fd = FIRST_LISTEN_FD as u64 + listener_count;
        if let Some(fd) = number(&lookup, IPC_FD)?
            && fd != ipc_fd
        {
            return Err(Error::WorkerEnvironment(format!(
                "{IPC_FD}={fd} but {LISTEN_FDS}={listener_count}: the channel follows the \
                 listening sockets, at {ipc_fd}"
            )));
        }
        Ok(Some(WorkerEnv {
            id: narrow(id, WORKER_ID)?,
            generation: narrow(number(&lookup, GENERATION)?.unwrap_or(1), GENERATION)?,
            workers: narrow(number(&lookup, WORKERS)?.unwrap_or(0), WORKERS)?,
            listener_count: narrow(listener_count, LISTEN_FDS)?,
            has_handoff: number(&lookup, HANDOFF_FD)?.is_some(),
            node_channel: lookup(NODE_CHANNEL_FD).is_some(),
            primary_pid: number(&lookup, PRIMARY_PID)?
                .map(|pid| narrow(pid, PRIMARY_PID))
                .transpose()?,
            grace: Duration::from_millis(number(&lookup, GRACE_MS)?.unwrap_or(DEFAULT_GRACE_MS)),
            max_message_size: number(&lookup, MAX_MESSAGE_SIZE)?
                .map_or(Ok(DEFAULT_MAX_LINE), |bytes| {
                    narrow(bytes, MAX_MESSAGE_SIZE)
                })?,
            worker_threads: number(&lookup, WORKER_THREADS)?
                .filter(|&threads| threads > 0)
                .map(|threads| narrow(threads, WORKER_THREADS))
                .transpose()?,
            heartbeat: number(&lookup, HEARTBEAT_MS)?
                .filter(|&ms| ms > 0)
                .map(Duration::from_millis),
            cluster_name: lookup(CLUSTER_NAME).unwrap_or_default(),
            policy: lookup(POLICY).map(|text| text.parse()).transpose()?,
            close_reports: lookup(CLOSE_REPORTS).is_some_and(|value| value == "1"),
            addresses: addresses(&lookup)?,
        }))
    }

    /// The worker's whole environment except `LISTEN_PID`, which only the
    /// child knows: the primary's own variables, minus corral's and
    /// systemd's, plus this worker's.
    pub(crate) fn environment(&self) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(key, _)| !NOT_INHERITED.iter().any(|name| key == name))
            .collect();
        env.extend(
            self.encode()
                .into_iter()
                .map(|(key, value)| (OsString::from(key), OsString::from(value))),
        );
        env
    }
}

/// A worker's start: the contract, and the descriptors it names, adopted.
pub(crate) struct WorkerEnvironment {
    pub env: WorkerEnv,
    pub listeners: Vec<OwnedFd>,
    pub channel: Option<OwnedFd>,
    pub handoff: Option<OwnedFd>,
}

impl WorkerEnvironment {
    /// Whether a worker's environment is present but meant for another
    /// process (`LISTEN_PID` is not this one): inherited from a worker by
    /// a process it started.
    pub(crate) fn inherited_from_another_process() -> bool {
        let lookup =
            |name: &str| std::env::var_os(name).map(|value| value.to_string_lossy().into_owned());
        lookup(WORKER_ID).is_some()
            && number(&lookup, LISTEN_PID).ok().flatten() != Some(u64::from(std::process::id()))
    }

    /// `None` when this process is not a corral worker (it is a primary).
    /// A process is a worker when `CORRAL_WORKER_ID` is set; it must then
    /// also be the process `LISTEN_PID` names, or the environment is broken.
    pub(crate) fn detect() -> Result<Option<Self>, Error> {
        let lookup =
            |name: &str| std::env::var_os(name).map(|value| value.to_string_lossy().into_owned());
        let Some(env) = WorkerEnv::decode(lookup)? else {
            return Ok(None);
        };
        let own_pid = std::process::id();
        let listen_pid = number(&lookup, LISTEN_PID)?;
        if listen_pid != Some(u64::from(own_pid)) {
            return Err(Error::WorkerEnvironment(format!(
                "{WORKER_ID} is set but {LISTEN_PID} is {listen_pid:?}, not this process ({own_pid}): \
                 the worker must be the process corral started (use `exec` in wrapper scripts)"
            )));
        }
        if let Some(primary) = env.primary_pid {
            let parent = rustix::process::getppid().map(|pid| pid.as_raw_nonzero().get() as u32);
            if parent != Some(primary) {
                return Err(Error::WorkerEnvironment(format!(
                    "the primary ({primary}) is gone: this worker was orphaned at start"
                )));
            }
        }
        let has_channel = lookup(IPC_FD).is_some();
        let mut numbers: Vec<RawFd> = (0..env.listener_count)
            .map(|index| FIRST_LISTEN_FD + index as RawFd)
            .collect();
        numbers.extend(has_channel.then(|| env.ipc_fd()));
        numbers.extend(env.has_handoff.then(|| env.handoff_fd()));
        let mut fds = sys::adopt_inherited_fds(&numbers)
            .map_err(|err| Error::WorkerEnvironment(err.to_string()))?;
        let handoff = env.has_handoff.then(|| fds.pop()).flatten();
        let channel = has_channel.then(|| fds.pop()).flatten();
        Ok(Some(WorkerEnvironment {
            env,
            listeners: fds,
            channel,
            handoff,
        }))
    }
}

fn addresses(lookup: &impl Fn(&str) -> Option<String>) -> Result<Vec<SocketAddr>, Error> {
    let text = lookup(LISTEN_ADDRS).unwrap_or_default();
    text.split(',')
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse().map_err(|_| {
                Error::WorkerEnvironment(format!("{LISTEN_ADDRS} has a bad address {part:?}"))
            })
        })
        .collect()
}

fn number(lookup: &impl Fn(&str) -> Option<String>, name: &str) -> Result<Option<u64>, Error> {
    let Some(text) = lookup(name) else {
        return Ok(None);
    };
    text.trim()
        .parse()
        .map(Some)
        .map_err(|_| Error::WorkerEnvironment(format!("{name}={text:?} is not a whole number")))
}

/// `value` in the narrower type of its field.
fn narrow<T: TryFrom<u64>>(value: u64, name: &str) -> Result<T, Error> {
    T::try_from(value)
        .map_err(|_| Error::WorkerEnvironment(format!("{name}={value} is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn sample() -> WorkerEnv {
        WorkerEnv {
            id: 3,
            generation: 7,
            workers: 4,
            listener_count: 2,
            has_handoff: true,
            node_channel: true,
            primary_pid: Some(4242),
            // Past u32 milliseconds: the documented maximum grace.
            grace: Duration::from_secs(4_294_968),
            max_message_size: 1 << 32,
            worker_threads: Some(1),
            heartbeat: Some(Duration::from_millis(250)),
            cluster_name: "api, v2".into(),
            policy: Some(Policy::LeastConnections),
            close_reports: true,
            addresses: vec![
                "127.0.0.1:8000".parse().unwrap(),
                "[::1]:8001".parse().unwrap(),
            ],
        }
    }

    fn as_map(env: &WorkerEnv) -> HashMap<String, String> {
        env.encode()
            .into_iter()
            .map(|(key, value)| (key.to_string(), value))
            .collect()
    }

    #[test]
    fn the_contract_round_trips() {
        let env = sample();
        let map = as_map(&env);
        let decoded = WorkerEnv::decode(|name| map.get(name).cloned()).unwrap();
        assert_eq!(decoded, Some(env));
    }

    #[test]
    fn a_minimal_contract_round_trips_too() {
        let env = WorkerEnv {
            id: 1,
            generation: 1,
            workers: 1,
            listener_count: 0,
            has_handoff: false,
            node_channel: false,
            primary_pid: None,
            grace: Duration::from_secs(30),
            max_message_size: DEFAULT_MAX_LINE,
            worker_threads: None,
            heartbeat: None,
            cluster_name: String::new(),
            policy: None,
            close_reports: false,
            addresses: Vec::new(),
        };
        let map = as_map(&env);
        assert_eq!(map.get(IPC_FD).map(String::as_str), Some("3"));
        assert!(!map.contains_key(HANDOFF_FD));
        let decoded = WorkerEnv::decode(|name| map.get(name).cloned()).unwrap();
        assert_eq!(decoded, Some(env));
    }

    #[test]
    fn descriptors_follow_the_listening_sockets() {
        let map = as_map(&sample());
        assert_eq!(map[LISTEN_FDS], "2");
        assert_eq!(map[LISTEN_FDNAMES], "listener0:listener1");
        assert_eq!(map[IPC_FD], "5");
        assert_eq!(map[NODE_CHANNEL_FD], "5");
        assert_eq!(map[HANDOFF_FD], "6");
    }

    #[test]
    fn pm2s_instance_number_is_the_slot_less_one() {
        let map = as_map(&sample());
        assert_eq!(map[NODE_APP_INSTANCE], "2");
        assert_eq!(map[WORKERS], "4");
    }

    #[test]
    fn no_worker_id_is_no_worker() {
        assert_eq!(WorkerEnv::decode(|_| None).unwrap(), None);
    }

    #[test]
    fn bad_values_name_their_variable() {
        let mut map = as_map(&sample());
        map.insert(GRACE_MS.into(), "soon".into());
        let err = WorkerEnv::decode(|name| map.get(name).cloned()).unwrap_err();
        assert!(err.to_string().contains(GRACE_MS), "{err}");
        let mut map = as_map(&sample());
        map.insert(WORKER_ID.into(), "99999999999".into());
        let err = WorkerEnv::decode(|name| map.get(name).cloned()).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
        let mut map = as_map(&sample());
        map.insert(LISTEN_ADDRS.into(), "here".into());
        let err = WorkerEnv::decode(|name| map.get(name).cloned()).unwrap_err();
        assert!(err.to_string().contains(LISTEN_ADDRS), "{err}");
        let mut map = as_map(&sample());
        map.insert(IPC_FD.into(), "9".into());
        let err = WorkerEnv::decode(|name| map.get(name).cloned()).unwrap_err();
        assert!(
            err.to_string().contains("follows the listening sockets"),
            "{err}"
        );
    }
}
