//! The control plane: a Unix socket per cluster through which `corral
//! status`, `reload`, `scale`, `stop`, `logs`, `events` and `top` (or any
//! script, in any language) see and steer a running cluster.
//!
//! * [`path`]: where the socket is (per-user default directory, or
//!   `--control PATH`);
//! * `socket`: the socket file's lifetime (mode 0600, never over a live
//!   cluster's socket, stale ones replaced, removed at stop);
//! * `peer`: who may connect (the cluster's uid and root, by
//!   `SO_PEERCRED`);
//! * `server` and `roster`: answering requests, with bounded lines,
//!   timeouts and a cap on connections;
//! * [`protocol`]: the requests and responses (newline-delimited JSON);
//! * [`status`]: the status snapshot, shared with
//!   [`crate::Primary::status`] and the metrics;
//! * `journal`: the ring buffer of output lines and events;
//! * `command`: what the server asks of the supervisor;
//! * [`client`]: a blocking client, what the `corral` commands use.

mod agent_metrics;
pub mod client;
pub(crate) mod command;
pub(crate) mod journal;
pub mod path;
mod peer;
pub(crate) mod process_stats;
pub mod protocol;
mod roster;
mod server;
mod socket;
pub mod status;

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::error::Error;
use command::SupervisorCommand;
use journal::Journal;
use socket::BoundSocket;

pub use path::ControlSocket;

/// A running control server. Dropping it stops the server and removes the
/// socket file.
pub(crate) struct ControlService {
    server: tokio::task::JoinHandle<()>,
    /// Held for its `Drop`, which removes the socket file.
    _socket: BoundSocket,
}

impl ControlService {
    /// Binds the control socket of cluster `name` (unless off) and serves
    /// it. Must run inside the primary's runtime.
    pub(crate) fn start(
        setting: &ControlSocket,
        name: &str,
        commands: mpsc::UnboundedSender<SupervisorCommand>,
        journal: Arc<Journal>,
    ) -> Result<Option<Self>, Error> {
        let Some(path) = setting.resolve(name)? else {
            return Ok(None);
        };
        let socket = BoundSocket::bind(&path, name)?;
        let listener = socket
            .listener
            .try_clone()
            .and_then(tokio::net::UnixListener::from_std)
            .map_err(|err| Error::Control {
                path: path.clone(),
                problem: format!("cannot serve the control socket: {err}"),
            })?;
        let context = Arc::new(server::Context {
            commands,
            journal,
            uid: path::effective_uid(),
            roster: Arc::default(),
        });
        let server = tokio::spawn(server::accept_loop(listener, context));
        tracing::info!("control socket {}", path.display());
        Ok(Some(ControlService {
            server,
            _socket: socket,
        }))
    }
}

impl Drop for ControlService {
    fn drop(&mut self) {
        self.server.abort();
    }
}
