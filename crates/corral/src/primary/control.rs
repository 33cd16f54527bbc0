//! The supervisor's side of the control plane: it obeys what the control
//! socket and the [`crate::Primary`] handle ask (status, reload, scale,
//! stop), takes status snapshots, and keeps the records they draw on (the
//! reload book, CPU samples, the journal of output and
//! events).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::reload_book::ReloadBook;
use super::{Phase, Supervisor};
use crate::Error;
use crate::control::ControlService;
use crate::control::command::{ScaleTarget, StopMode, SupervisorCommand};
use crate::control::journal::{self, Journal};
use crate::control::process_stats::CpuSampler;
use crate::control::status::{ListenerStatus, Status, WorkerStatus};
use crate::limits::MAX_WORKERS;
use crate::log::rate::warn_limited;
use crate::primary::event::Event;
use crate::sys;

/// Why a scale was not done.
enum ScaleRefused {
    /// A request the cluster cannot take (past a limit, while stopping).
    Because(String),
    /// Starting a worker failed fatally (every worker fails at start).
    Fatal(Error),
}

impl std::fmt::Display for ScaleRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScaleRefused::Because(why) => f.write_str(why),
            ScaleRefused::Fatal(err) => write!(f, "{err}"),
        }
    }
}

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

impl Supervisor {
    pub(super) fn on_command(&mut self, command: SupervisorCommand) -> Result<(), Error> {
        match command {
            SupervisorCommand::Status(reply) => {
                let _ = reply.send(self.snapshot());
            }
            SupervisorCommand::Reload { outcome, started } => {
                if self.phase != Phase::Running {
                    // Dropping the channels tells the client: stopping.
                    return Ok(());
                }
                let under_way = self.reload.is_some();
                if let Some(waiter) = outcome {
                    self.control.reloads.wait_for_next(waiter);
                }
                if let Some(started) = started {
                    let _ = started.send(!under_way);
                }
                return self.request_reload();
            }
            SupervisorCommand::Scale { target, reply } => {
                let outcome = self.scale(target);
                if let Err(ScaleRefused::Because(why)) = &outcome
                    && reply.is_none()
                {
                    warn_limited!(event = "scale_refused", "not scaling: {why}");
                }
                if let Some(reply) = reply {
                    let answer = match &outcome {
                        Ok(workers) => Ok(*workers),
                        Err(refused) => Err(refused.to_string()),
                    };
                    let _ = reply.send(answer);
                }
                if let Err(ScaleRefused::Fatal(err)) = outcome {
                    return Err(err);
                }
            }
            SupervisorCommand::Stop(mode) => self.stop(mode),
        }
        Ok(())
    }

    /// The one stop path, whoever asks.
    fn stop(&mut self, mode: StopMode) {
        match (mode, self.phase) {
            (StopMode::Graceful | StopMode::GracefulThenNow, Phase::Running) => {
                self.begin_shutdown()
            }
            (StopMode::Now, Phase::Running | Phase::Draining)
            | (StopMode::GracefulThenNow, Phase::Draining) => {
                self.emit(Event::StoppingNow);
                self.kill_all();
            }
            _ => {}
        }
    }

    /// The one scale path, whoever asks: the new number of workers, or why
    /// not.
    fn scale(&mut self, target: ScaleTarget) -> Result<usize, ScaleRefused> {
        if self.phase != Phase::Running {
            return Err(ScaleRefused::Because("the cluster is stopping".into()));
        }
        let wanted = target
            .resolve(self.desired_workers(), MAX_WORKERS)
            .map_err(ScaleRefused::Because)?;
        self.scale_to(wanted).map_err(ScaleRefused::Fatal)?;
        Ok(self.desired_workers())
    }

    /// Adds or drains workers until `wanted` slots are kept.
    pub(super) fn scale_to(&mut self, wanted: usize) -> Result<(), Error> {
        let before = self.desired_workers();
        while self.desired_workers() < wanted {
            self.add_worker()?;
        }
        while self.desired_workers() > wanted {
            let count = self.desired_workers();
            self.remove_worker()?;
            if self.desired_workers() == count {
                break;
            }
        }
        let after = self.desired_workers();
        if after != before {
            self.emit(Event::Scaled {
                from: before,
                to: after,
            });
        }
        Ok(())
    }

    /// Slots the cluster keeps filled: those not shrinking away.
    pub(super) fn desired_workers(&self) -> usize {
        self.slots
            .values()
            .filter(|slot| !slot.is_retiring())
            .count()
    }

    /// The cluster now.
    pub(super) fn snapshot(&mut self) -> Status {
        let now = Instant::now();
        let connections = self.balancer.open_connections();
        let mut workers = Vec::new();
        for slot in self.slots.values() {
            let restarts = slot.restarts();
            for worker in slot.processes() {
                let uptime = now.saturating_duration_since(worker.started).as_secs_f64();
                let stats = self.control.cpu.sample(worker.pid, uptime, now);
                let state = worker.lifecycle.shown_as();
                let key = worker.key;
                workers.push(WorkerStatus {
                    id: key.slot,
                    pid: worker.pid,
                    generation: key.generation,
                    state,
                    uptime_seconds: uptime,
                    restarts: restarts.count,
                    last_restart_reason: restarts.last,
                    restarts_by_reason: restarts.by_reason(),
                    cpu_seconds: stats.map(|stats| stats.cpu_seconds),
                    cpu_percent: stats.map(|stats| stats.cpu_percent),
                    rss_bytes: stats.map(|stats| stats.rss_bytes),
                    connections: connections
                        .as_ref()
                        .map(|open| open.get(&key).copied().unwrap_or(0)),
                    requests: Some(worker.requests_served()).filter(|&served| served > 0),
                    heartbeat_age_seconds: worker
                        .last_heartbeat()
                        .map(|beat| now.saturating_duration_since(beat).as_secs_f64()),
                });
            }
        }
        workers.sort_by_key(|worker| (worker.id, worker.generation));
        let alive: Vec<u32> = workers.iter().map(|worker| worker.pid).collect();
        self.control.cpu.retain(&alive);
        Status {
            name: self.settings.name.clone(),
            pid: std::process::id(),
            policy: self.settings.policy,
            uptime_seconds: now
                .saturating_duration_since(self.control.started)
                .as_secs_f64(),
            workers_desired: self.desired_workers(),
            stopping: self.phase != Phase::Running,
            listeners: self.listener_status(),
            reloads: self.control.reloads.stats(now),
            workers,
        }
    }

    /// Each address with the connections waiting in its accept queues.
    fn listener_status(&self) -> Vec<ListenerStatus> {
        let sockets = self.balancer.listening_sockets();
        self.balancer
            .local_addrs()
            .iter()
            .enumerate()
            .map(|(index, &address)| {
                let mut queues = sockets
                    .iter()
                    .filter(|(of, _)| *of == index)
                    .map(|(_, socket)| sys::accept_queue_len(*socket).ok())
                    .peekable();
                let queued = match queues.peek() {
                    None => None,
                    Some(_) => queues.sum::<Option<u32>>(),
                };
                ListenerStatus { address, queued }
            })
            .collect()
    }

    /// Hands a lifecycle event to the journal.
    pub(super) fn journal_event(&self, event: &Event) {
        if let Some(record) = journal::event_record(event) {
            self.control.journal.event(record);
        }
    }
}
