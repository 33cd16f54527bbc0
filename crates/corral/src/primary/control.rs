//! The supervisor's side of the control plane: it obeys what the control
//! socket and the [`crate::Primary`] handle ask (status, reload, scale,
//! stop), takes status snapshots, and keeps the records they draw on (the
//! reload book, CPU samples, the journal of output and
//! events).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::control::ControlService;
use crate::control::command::SupervisorCommand;
use crate::control::journal::Journal;
use crate::control::process_stats::CpuSampler;
use crate::primary::reload_book::ReloadBook;

pub(super) struct ControlPlane {
    pub started: Instant,
    pub journal: Arc<Journal>,
    pub commands: mpsc::UnboundedReceiver<SupervisorCommand>,
    pub reloads: ReloadBook,
    pub cpu: CpuSampler,
    /// The control socket, held so that it lives (and its file goes) with
    /// the supervisor.
    _service: Option<ControlService>,
}

impl ControlPlane {
    pub(super) fn new(
        journal: Arc<Journal>,
        commands: mpsc::UnboundedReceiver<SupervisorCommand>,
        service: Option<ControlService>,
    ) -> Self {
        ControlPlane {
            started: Instant::now(),
            journal,
            commands,
            reloads: ReloadBook::default(),
            cpu: CpuSampler::default(),
            _service: service,
        }
    }
}
