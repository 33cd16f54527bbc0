//! The signals the primary obeys, following nginx and gunicorn: TERM and INT
//! stop the cluster gracefully (a second one stops it at once), HUP asks for
//! a rolling reload, TTIN and TTOU add and remove a worker.

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::Error;

/// What a signal asks of the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    Stop,
    Reload,
    AddWorker,
    RemoveWorker,
}

pub(crate) struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
    more: Signal,
    fewer: Signal,
}

impl Signals {
    pub(crate) fn install() -> Result<Self, Error> {
        let watch =
            |kind: SignalKind| signal(kind).map_err(Error::io("cannot install a signal handler"));
        Ok(Signals {
            terminate: watch(SignalKind::terminate())?,
            interrupt: watch(SignalKind::interrupt())?,
            hangup: watch(SignalKind::hangup())?,
            more: watch(SignalKind::from_raw(libc::SIGTTIN))?,
            fewer: watch(SignalKind::from_raw(libc::SIGTTOU))?,
        })
    }

    pub(crate) async fn next(&mut self) -> Request {
        tokio::select! {
            _ = self.terminate.recv() => Request::Stop,
            _ = self.interrupt.recv() => Request::Stop,
            _ = self.hangup.recv() => Request::Reload,
            _ = self.more.recv() => Request::AddWorker,
            _ = self.fewer.recv() => Request::RemoveWorker,
        }
    }
}

/// SIGCHLD: a child of the primary exited. tokio reaps the workers it
/// started; the primary reaps the rest (reaper.rs).
pub(crate) fn child_exits() -> Result<Signal, Error> {
    signal(SignalKind::child()).map_err(Error::io("cannot install a signal handler"))
}
