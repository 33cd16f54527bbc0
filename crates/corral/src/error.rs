//! The library's typed errors. Each message names the problem and, where
//! there is one, what to do about it, because the CLI prints them as they
//! are. An underlying error is the variant's `source()`, never also part of
//! its message (reporters print the chain, and would print it twice): print
//! an error with its causes as `{:#}` does with anyhow, or with [`Chain`]
//! inside the crate.

use std::fmt;

use std::io;
use std::net::SocketAddr;

/// Any error, boxed: what a worker body fails with. Its `?` takes every
/// error type (`corral::Error`, `std::io::Error`, `anyhow::Error`, …).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a worker body returns, so that its closing `Ok(())` needs no type
/// annotation.
pub type WorkerResult = Result<(), BoxError>;

/// Everything that can go wrong in a cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A listen address could not be parsed or resolved.
    #[error("invalid listen address {address:?}: {reason}")]
    InvalidAddress { address: String, reason: String },

    /// A listening socket could not be bound.
    #[error("cannot listen on {address}{hint}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: io::Error,
        hint: &'static str,
    },

    /// The worker command does not exist or is not executable.
    #[error("command not found: {0:?} (no such executable file, and not in PATH)")]
    CommandNotFound(String),

    /// The worker command exists but cannot be run.
    #[error("command {command:?} is not executable: {path} {reason}")]
    CommandNotExecutable {
        command: String,
        path: String,
        reason: &'static str,
    },

    /// A setting is out of range or not supported.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A configuration file (the `corral` command's `--config`) cannot be
    /// read safely: `problem` says why and what to do.
    #[error("configuration file {}: {problem}", path.display())]
    ConfigFile {
        path: std::path::PathBuf,
        problem: String,
    },

    /// A worker process could not be started.
    #[error("cannot start worker {id}")]
    Spawn {
        id: u32,
        #[source]
        source: io::Error,
    },

    /// Every worker fails as soon as it starts: the cluster gives up.
    #[error("every worker fails at start: {0}")]
    CrashLoop(String),

    /// A worker never said it is ready, and none ever did.
    #[error("{0}")]
    NeverReady(String),

    /// This process was started as a worker but its environment is not what
    /// the primary sets up.
    #[error("broken worker environment: {0}")]
    WorkerEnvironment(String),

    /// The worker body returned an error.
    #[error("worker failed")]
    Worker(#[source] BoxError),

    /// A message could not be encoded as JSON.
    #[error("cannot encode the message as JSON")]
    Encode(#[source] serde_json::Error),

    /// A message could not be queued for a worker.
    #[error(transparent)]
    Send(crate::SendError),

    /// A worker's message could not be sent to the primary: the channel is
    /// gone (the primary is) or this worker has none.
    #[error("cannot send to the primary: {0}")]
    Channel(&'static str),

    /// The control socket cannot be set up at this path.
    #[error("control socket {}: {problem}", path.display())]
    Control {
        path: std::path::PathBuf,
        problem: String,
    },

    /// The cluster has stopped: there is no status to give.
    #[error("the cluster has stopped")]
    Stopped,

    /// An operating-system call failed.
    #[error("{context}")]
    Io {
        context: &'static str,
        #[source]
        source: io::Error,
    },
}

/// A link-local IPv6 address without the interface it belongs to.
fn needs_scope_id(address: SocketAddr) -> bool {
    match address {
        SocketAddr::V6(v6) => v6.ip().is_unicast_link_local() && v6.scope_id() == 0,
        SocketAddr::V4(_) => false,
    }
}

impl Error {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { context, source }
    }

    pub(crate) fn bind(address: SocketAddr, source: io::Error) -> Error {
        let hint = match source.kind() {
            io::ErrorKind::AddrInUse => {
                " (another process holds this port: stop it or listen on another port)"
            }
            io::ErrorKind::AddrNotAvailable => {
                " (this machine has no such address: use one of its own, or 0.0.0.0)"
            }
            io::ErrorKind::PermissionDenied => {
                " (ports below 1024 need privileges: use a port of 1024 or more)"
            }
            io::ErrorKind::InvalidInput if needs_scope_id(address) => {
                " (a link-local IPv6 address needs its interface's index as scope id, \
                 as in [fe80::1%2]:8000; `ip link` lists the indexes)"
            }
            _ => "",
        };
        Error::Bind {
            address,
            source,
            hint,
        }
    }
}

/// Shows an error with its causes, `outer: cause: root cause`, as the logs
/// print library errors.
pub(crate) struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(err) = cause {
            write!(f, ": {err}")?;
            cause = err.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_cause_is_printed_once_by_a_chain() {
        let err = Error::io("cannot watch a socket")(io::Error::from_raw_os_error(libc::EBADF));
        assert_eq!(err.to_string(), "cannot watch a socket");
        let chain = Chain(&err).to_string();
        assert!(
            chain.starts_with("cannot watch a socket: Bad file descriptor"),
            "{chain}"
        );
        assert_eq!(chain.matches("Bad file descriptor").count(), 1);
    }

    #[test]
    fn every_wrapped_error_is_the_source() {
        let bind = Error::bind(
            "127.0.0.1:80".parse().unwrap(),
            io::Error::from(io::ErrorKind::AddrInUse),
        );
        assert!(bind.source().is_some());
        assert!(bind.to_string().contains("another process holds this port"));
        let spawn = Error::Spawn {
            id: 2,
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert!(spawn.source().is_some());
        assert_eq!(spawn.to_string(), "cannot start worker 2");
        let worker = Error::Worker("boom".into());
        assert_eq!(Chain(&worker).to_string(), "worker failed: boom");
        let send = Error::Send(crate::SendError::NoSuchWorker(4));
        assert_eq!(send.to_string(), "there is no worker 4");
        assert!(send.source().is_none(), "transparent: its own message");
    }
}
