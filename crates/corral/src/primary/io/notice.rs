//! The supervisor's inbox: what the per-worker tasks and the timers tell the
//! primary's loop. Each notice names the worker it is about by its
//! [`WorkerKey`], so a late notice about a replaced worker is ignored.

use std::process::ExitStatus;

use crate::protocol::message::Control;
use crate::worker_key::WorkerKey;

#[derive(Debug)]
pub(crate) enum Notice {
    /// The worker sent a control word on its channel.
    Control { worker: WorkerKey, control: Control },
    /// Time to check that a Node program uses every `--listen` address.
    CheckListenUse,
    /// A Node worker's `listen()` bound these TCP addresses on demand.
    Bound(Vec<std::net::SocketAddr>),
    /// The worker reported `count` more requests served.
    Served { worker: WorkerKey, count: u64 },
    /// The worker reported `count` more connections closed.
    Closed { worker: WorkerKey, count: u64 },
    /// A Node worker disconnects itself (`cluster.worker.disconnect()`,
    /// `worker.kill()`): its coming exit is its own choice.
    Leaving(WorkerKey),
    /// The worker exited and was reaped (`None`: its status was lost).
    Exited {
        worker: WorkerKey,
        status: Option<ExitStatus>,
    },
    /// The slot's restart backoff has elapsed (the key is the worker that
    /// failed: a start since then makes the notice stale).
    RestartDue(WorkerKey),
    /// The worker was asked to stop `grace` ago.
    GraceExpired(WorkerKey),
    /// The worker was started `ready_timeout` ago.
    ReadyTimeout(WorkerKey),
    /// A rolling reload's replacement was started `ready_timeout` ago.
    ReloadTimeout(WorkerKey),
    /// A worker that cannot say it is ready has run long enough to count
    /// as ready (`--ready`).
    Settled(WorkerKey),
    /// A worker ready without waiting has run for
    /// [`SIGN_OF_LIFE`](crate::primary::rules::ready_plan::SIGN_OF_LIFE): ready if it still runs.
    SeenAlive(WorkerKey),
    /// The dispatcher took connections back from a worker that does not
    /// read its hand-off channel.
    Stalled(crate::balance::Stalled),
    /// The `--drain-delay` after a stop request has passed: drain now.
    DrainDelayOver,
    /// The configuration was read again for a reload (`reconfigure.rs`).
    ConfigurationRead(crate::primary::reconfigure::ConfigurationRead),
}
