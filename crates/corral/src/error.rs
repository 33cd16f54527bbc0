//! The library's typed errors. Each message names the problem and, where
//! there is one, what to do about it, because the CLI prints them as they are.

use std::io;
use std::net::SocketAddr;

/// Everything that can go wrong in a cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A listen address could not be parsed or resolved.
    #[error("invalid listen address {address:?}: {reason}")]
    InvalidAddress { address: String, reason: String },

    /// A listening socket could not be bound.
    #[error("cannot listen on {address}: {source}{hint}")]
    Bind {
        address: SocketAddr,
        source: io::Error,
        hint: &'static str,
    },

    /// The worker command does not exist or is not executable.
    #[error("command not found: {0:?} (no such executable file, and not in PATH)")]
    CommandNotFound(String),

    /// A setting is out of range or not supported.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A worker process could not be started.
    #[error("cannot start worker {id}: {source}")]
    Spawn { id: u32, source: io::Error },

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
    #[error("worker failed: {0}")]
    Worker(Box<dyn std::error::Error + Send + Sync>),

    /// A message could not be encoded as JSON.
    #[error("cannot encode the message as JSON: {0}")]
    Encode(serde_json::Error),

    /// A message could not be queued for a worker.
    #[error("{0}")]
    Send(crate::SendError),

    /// A worker's message could not be sent to the primary: the channel is
    /// gone (the primary is) or this worker has none.
    #[error("cannot send to the primary: {0}")]
    Channel(&'static str),

    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        source: io::Error,
    },
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
            _ => "",
        };
        Error::Bind {
            address,
            source,
            hint,
        }
    }
}
