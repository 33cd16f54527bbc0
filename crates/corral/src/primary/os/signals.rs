//! The signals the primary obeys, following nginx and gunicorn: TERM and INT
//! stop the cluster gracefully (a second one stops it at once), HUP asks for
//! a rolling reload, TTIN and TTOU add and remove a worker. Each becomes the
//! same command the control socket sends.

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::control::command::{ScaleTarget, StopMode, SupervisorCommand};
use crate::error::Error;

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

    /// The command the next signal stands for.
    pub(crate) async fn next(&mut self) -> SupervisorCommand {
        tokio::select! {
            _ = self.terminate.recv() => SupervisorCommand::Stop(StopMode::GracefulThenNow),
            _ = self.interrupt.recv() => SupervisorCommand::Stop(StopMode::GracefulThenNow),
            _ = self.hangup.recv() => SupervisorCommand::Reload { outcome: None, started: None },
            _ = self.more.recv() => scale_by(1),
            _ = self.fewer.recv() => scale_by(-1),
        }
    }
}

/// Adds or removes a worker, with no one to answer.
pub(crate) fn scale_by(change: i64) -> SupervisorCommand {
    SupervisorCommand::Scale {
        target: ScaleTarget::By(change),
        reply: None,
    }
}

/// SIGCHLD: a child of the primary exited. tokio reaps the workers it
/// started; the primary reaps the rest (`reaper.rs`).
pub(crate) fn child_exits() -> Result<Signal, Error> {
    signal(SignalKind::child()).map_err(Error::io("cannot install a signal handler"))
}

/// SIGUSR1: reopen the log file (`--log-file`) before its next line, as
/// after an external rotator (logrotate) moved it. A task of its own: the
/// supervisor's loop has nothing to do for it.
pub(crate) fn reopen_log_on_usr1() -> Result<(), Error> {
    let mut usr1 = signal(SignalKind::user_defined1())
        .map_err(Error::io("cannot install a signal handler"))?;
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            crate::log::file::reopen();
            tracing::info!(event = "log_reopened", "SIGUSR1: the log file is reopened");
        }
    });
    Ok(())
}
