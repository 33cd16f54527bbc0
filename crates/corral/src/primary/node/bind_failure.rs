//! Why a worker's `listen()` cannot be served: the errno Node reports to
//! the worker, and the reason corral logs, with a hint for the common ones.

use std::io;

use crate::protocol::node;

/// A `listen()` that cannot be served: the errno for the worker and the
/// reason for the log.
#[derive(Debug)]
pub(crate) struct BindFailure {
    pub errno: i32,
    pub reason: String,
}

impl BindFailure {
    /// Refused by a limit of corral's, with Node's `errno` for it.
    pub(crate) fn refused(errno: i32, reason: String) -> Self {
        BindFailure {
            errno: -errno,
            reason,
        }
    }

    pub(crate) fn io(what: String, error: &io::Error) -> Self {
        BindFailure {
            errno: node::negative_errno(error),
            reason: format!("{what}: {error}{}", hint(error)),
        }
    }
}

fn hint(error: &io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(libc::EADDRINUSE) => " (another process holds this port: stop it or use another port)",
        Some(libc::EACCES) => {
            " (no permission: ports below 1024 need privileges, a socket path a directory the \
             workers may write; use a higher port or another directory)"
        }
        Some(libc::EADDRNOTAVAIL) => " (this machine has no such address)",
        _ => "",
    }
}
