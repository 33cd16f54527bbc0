//! What the supervisor is asked to do, whoever asks (the control socket,
//! the signals, the library's handle; see `control::command`): a status
//! snapshot, the one stop path, the one scale path, and the rolling reload,
//! with the configuration read again before it.
//!
//! A rolling reload (SIGHUP, `Primary::reload`), and recycling (a worker
//! over `--max-memory` or past `--max-requests`), which is the same for one
//! slot: slot by slot, start a replacement beside the running worker, wait
//! until it is ready, then make it the slot's worker and let the old one
//! drain. The running worker keeps serving until its replacement can. A
//! replacement that exits or is not ready within `ready_timeout` aborts the
//! reload, and the workers still running keep serving. A reload asked for
//! during one runs after it (requests in between count once). This file
//! carries the steps out; [`ReloadPlan`] decides them.

use std::time::Instant;

use crate::balance::Steering;
use crate::control::command::{ScaleTarget, StopMode, SupervisorCommand};
use crate::control::journal;
use crate::control::status::{
    Draining, EnvironmentStatus, ListenerStatus, Status, WorkerState, WorkerStatus,
};
use crate::limits::MAX_WORKERS;
use crate::log::rate::warn_limited;
use crate::primary::Settings;
use crate::primary::reconfigure::{ConfigurationRead, fixed_changes, read_off_the_loop};
use crate::settings::Program;
use crate::sys;

use crate::control::status::RestartReason;
use crate::error::Chain;
use crate::error::Error;
use crate::primary::Phase;
use crate::primary::Supervisor;
use crate::primary::event::{Event, ReloadKind, human_duration};
use crate::primary::io::notice::Notice;
use crate::primary::reconfigure::BeforeReload;
use crate::primary::rules::lifecycle::Lifecycle;
use crate::primary::rules::reload_plan::{ReloadPlan, ReloadStep};
use crate::primary::slot::Slot;
use crate::worker_key::WorkerKey;

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

impl Supervisor {
    pub(super) fn on_command(&mut self, command: SupervisorCommand) -> Result<(), Error> {
        match command {
            SupervisorCommand::Status(reply) => {
                let _ = reply.send(self.snapshot());
            }
            SupervisorCommand::Reload { outcome, started } => {
                if self.phase != Phase::Running || self.drain_soon {
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
            SupervisorCommand::FilesChanged { path, changes } => {
                if self.phase != Phase::Running {
                    return Ok(());
                }
                self.emit(Event::WatchTriggered {
                    path: path.display().to_string(),
                    changes,
                });
                return self.request_reload();
            }
        }
        Ok(())
    }

    /// The one stop path, whoever asks.
    fn stop(&mut self, mode: StopMode) {
        match (mode, self.phase) {
            (StopMode::Graceful | StopMode::GracefulThenNow, Phase::Running) => {
                let delay = self.settings.drain_delay;
                if delay.is_zero() || self.drain_soon {
                    // Asked again during the delay: drain now.
                    self.begin_shutdown()
                } else {
                    self.drain_soon = true;
                    self.emit(Event::DrainingSoon { delay });
                    self.notify_after(delay, Notice::DrainDelayOver);
                }
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
                    agent: self
                        .node
                        .as_ref()
                        .and_then(|node| node.agent_metrics(key, now)),
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
            stopping: self.phase != Phase::Running || self.drain_soon,
            listeners: self.listener_status(),
            reloads: self.control.reloads.stats(now),
            workers,
            environment: self.environment_status(),
            next_scheduled_reload: self
                .settings
                .schedule
                .as_ref()
                .and_then(|schedule| schedule.next_after(chrono::Utc::now()))
                .map(crate::settings::schedule::shown),
        }
    }

    /// How a hand-off policy's connections reach the workers: as the
    /// balancer says; for Node workers, in the kernel or by Node's
    /// `newconn`.
    fn listener_steering(&self) -> Option<Steering> {
        if !self.settings.policy.hands_off() {
            return None;
        }
        if let Some(node) = &self.node {
            return Some(match node.steers_in_kernel() {
                true => Steering::Kernel,
                false => Steering::HandOff,
            });
        }
        Some(self.balancer.steering().unwrap_or(Steering::HandOff))
    }

    /// The workers asked to stop that have not exited, and their
    /// connections where the balancer counts them.
    fn draining_now(&self) -> Draining {
        let stopping: Vec<WorkerKey> = self
            .slots
            .values()
            .flat_map(Slot::processes)
            .filter(|worker| worker.lifecycle.shown_as() == WorkerState::Stopping)
            .map(|worker| worker.key)
            .collect();
        let connections = self.balancer.open_connections().map(|open| {
            stopping
                .iter()
                .map(|key| open.get(key).copied().unwrap_or(0))
                .sum()
        });
        Draining {
            workers: stopping.len(),
            connections,
        }
    }

    /// Where the workers' added variables come from, by name only.
    fn environment_status(&self) -> EnvironmentStatus {
        let mut variables: Vec<String> = Vec::new();
        for (name, _) in &self.settings.env {
            let name = name.to_string_lossy().into_owned();
            if !variables.contains(&name) {
                variables.push(name);
            }
        }
        EnvironmentStatus {
            profile: self.settings.env_name.clone(),
            files: self.settings.env_file.clone(),
            variables,
        }
    }

    /// Each address with the connections waiting in its accept queues.
    fn listener_status(&self) -> Vec<ListenerStatus> {
        let sockets = self.balancer.listening_sockets();
        let steering = self.listener_steering();
        let connection_counts = match &self.node {
            Some(node) => node.connection_counts(),
            None => self.balancer.connection_counts(),
        };
        let mut listeners: Vec<ListenerStatus> = self
            .balancer
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
                ListenerStatus {
                    address,
                    queued,
                    steering,
                    connection_counts,
                }
            })
            .collect();
        // A Node cluster's addresses bound on demand, after the --listen ones.
        if let Some(node) = &self.node {
            for (address, queued) in node.listening() {
                if !listeners.iter().any(|listener| listener.address == address) {
                    listeners.push(ListenerStatus {
                        address,
                        queued,
                        steering,
                        connection_counts,
                    });
                }
            }
        }
        listeners
    }

    /// Hands a lifecycle event to the journal.
    pub(super) fn journal_event(&self, event: &Event) {
        if let Some(record) = journal::event_record(event) {
            self.control.journal.event(record);
        }
    }

    /// Starts reading the configuration again before a reload, if the
    /// cluster was given a way to, on a thread of its own.
    pub(super) fn read_configuration(&mut self) -> BeforeReload {
        let Some(reread) = self.settings.reread.as_mut() else {
            return BeforeReload::Begin;
        };
        if reread.reading {
            tracing::info!("the configuration is being read: the reload follows");
            return BeforeReload::Reading;
        }
        reread.reading = true;
        let read = read_off_the_loop(reread.function.clone(), self.launcher.program.clone());
        let notices = self.launcher.notices.clone();
        tokio::spawn(async move {
            let read = ConfigurationRead(read.await);
            let _ = notices.send(Notice::ConfigurationRead(read)).await;
        });
        BeforeReload::Reading
    }

    /// The configuration was read: applies it and begins the reload, or
    /// aborts the reload with the reason, the running configuration kept.
    pub(super) fn on_configuration_read(&mut self, read: ConfigurationRead) -> Result<(), Error> {
        if let Some(reread) = self.settings.reread.as_mut() {
            reread.reading = false;
        }
        if self.phase != Phase::Running || self.reload.is_some() {
            return Ok(());
        }
        match read.0 {
            Ok((settings, program)) => {
                self.apply(*settings, program)?;
                self.begin_reload()
            }
            Err(err) => {
                self.abort_before_reload(&format!("the configuration is not valid: {err}"));
                Ok(())
            }
        }
    }

    /// Takes what can change from `new`; logs what cannot.
    fn apply(&mut self, new: Settings, program: Option<Program>) -> Result<(), Error> {
        let fixed = fixed_changes(&self.settings, &new);
        if !fixed.is_empty() {
            tracing::warn!(
                "reload: {} changed, which a running cluster cannot take: restart corral to \
                 apply it; the rest of the configuration applies",
                fixed.join(", ")
            );
        }
        if let Some(program) = program {
            self.launcher.program = program;
        }
        let workers = new.workers;
        self.settings.reloadable = new.reloadable;
        self.resize(workers)
    }

    /// Adds or drains workers until the cluster has `workers` of them, by
    /// the scale path every command takes.
    fn resize(&mut self, workers: usize) -> Result<(), Error> {
        self.settings.workers = workers;
        self.scale_to(workers)
    }

    /// Starts a rolling reload, or queues one if a reload is under way.
    pub(super) fn request_reload(&mut self) -> Result<(), Error> {
        if self.phase != Phase::Running {
            return Ok(());
        }
        if let Some(reload) = self.reload.as_mut() {
            reload.ask_again();
            tracing::info!("a rolling reload is under way: another will follow it");
            return Ok(());
        }
        match self.read_configuration() {
            BeforeReload::Begin => self.begin_reload(),
            BeforeReload::Reading => Ok(()),
        }
    }

    /// A reload that ends before it began (`why`), for whoever waits for it.
    pub(super) fn abort_before_reload(&mut self, why: &str) {
        let now = Instant::now();
        self.control.reloads.begin(now);
        self.control.reloads.abort(0, why, now);
        self.emit(Event::ReloadAborted {
            kind: ReloadKind::Rolling,
            id: None,
            replaced: 0,
            reason: why.to_owned(),
        });
    }

    /// Begins the rolling reload, the configuration read.
    pub(super) fn begin_reload(&mut self) -> Result<(), Error> {
        let plan = ReloadPlan::rolling(
            self.slots
                .values()
                .filter(|slot| slot.replaceable())
                .map(Slot::id),
        );
        let workers = plan.remaining();
        self.control.reloads.begin(Instant::now());
        self.emit(Event::ReloadStarted {
            kind: plan.kind(),
            workers,
        });
        self.reload = Some(plan);
        self.reload_next()
    }

    /// Carries out the reload's next steps until it waits or ends.
    pub(super) fn reload_next(&mut self) -> Result<(), Error> {
        loop {
            let Some(reload) = self.reload.as_mut() else {
                return Ok(());
            };
            let slots = &self.slots;
            let step = reload.next_step(self.settings.max_surge, |id| {
                slots.get(&id).is_some_and(Slot::replaceable)
            });
            match step {
                ReloadStep::Wait => return Ok(()),
                ReloadStep::Complete {
                    kind,
                    replaced,
                    again,
                } => {
                    self.reload = None;
                    let draining = self.draining_now();
                    if kind == ReloadKind::Rolling {
                        self.control
                            .reloads
                            .complete(replaced, draining, Instant::now());
                    }
                    self.emit(Event::ReloadCompleted {
                        kind,
                        replaced,
                        draining: draining.workers,
                    });
                    return if again { self.request_reload() } else { Ok(()) };
                }
                ReloadStep::Replace(id) => self.start_replacement(id)?,
            }
        }
    }

    /// Starts the replacement of slot `id`'s worker beside it.
    fn start_replacement(&mut self, id: u32) -> Result<(), Error> {
        let successor = match self.launch(id, true) {
            Ok(Some(successor)) => successor,
            Ok(None) => return Ok(()),
            Err(err) => {
                let why = format!("could not be started: {}", Chain(&err));
                return self.abort_reload(id, &why);
            }
        };
        let (key, ready) = (successor.key, successor.lifecycle.is_ready());
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.install_successor(successor);
        }
        if let Some(reload) = self.reload.as_mut() {
            reload.started(key);
        }
        if ready {
            self.promote(id);
        } else {
            let timeout = self.settings.ready_timeout;
            self.notify_after(timeout, Notice::ReloadTimeout(key));
        }
        Ok(())
    }

    /// Replaces slot `id`'s worker gracefully (it uses too much memory, or
    /// served its requests): after the reload under way, if any, else at
    /// once.
    pub(super) fn recycle(&mut self, id: u32) -> Result<(), Error> {
        if let Some(reload) = self.reload.as_mut() {
            reload.recycle(id);
            return Ok(());
        }
        self.reload = Some(ReloadPlan::recycling(id));
        self.reload_next()
    }

    /// Whether the reload waits for the process `key`.
    pub(super) fn reload_awaits(&self, key: WorkerKey) -> bool {
        self.reload
            .as_ref()
            .is_some_and(|reload| reload.awaits(key))
    }

    /// The awaited replacement said it is ready: promote it, go on.
    pub(super) fn replacement_ready(&mut self, id: u32) -> Result<(), Error> {
        self.promote(id);
        self.reload_next()
    }

    /// Makes slot `id`'s successor its worker and asks the old one to drain.
    fn promote(&mut self, id: u32) {
        let Some(promotion) = self.slots.get_mut(&id).and_then(Slot::promote) else {
            return;
        };
        let kind = match self.reload.as_mut() {
            Some(reload) => {
                reload.promoted(id);
                reload.kind()
            }
            None => ReloadKind::Rolling,
        };
        let (key, pid) = promotion.new;
        let Some(worker) = self.slots.get(&id).and_then(Slot::worker) else {
            return;
        };
        let state = worker.lifecycle;
        self.register(worker);
        self.announce(key, pid, Lifecycle::Starting, state);
        if let Some((old_key, old_pid)) = promotion.old {
            if let Some(slot) = self.slots.get_mut(&id) {
                slot.restarts_mut().record(RestartReason::Reload);
            }
            self.emit(Event::Replaced {
                kind,
                id,
                pid,
                old_pid,
            });
            self.stop_process(old_key);
        }
    }

    pub(super) fn on_reload_timeout(&mut self, key: WorkerKey) -> Result<(), Error> {
        if !self.reload_awaits(key) {
            return Ok(());
        }
        let timeout = human_duration(self.settings.ready_timeout);
        self.abort_reload(key.slot, &format!("was not ready within {timeout}"))
    }

    /// Gives up the reload: the replacement of slot `id` failed. The
    /// workers running keep serving; the replacements under way are
    /// stopped; a slot whose worker died meanwhile is restarted as after
    /// any exit.
    pub(super) fn abort_reload(&mut self, id: u32, why: &str) -> Result<(), Error> {
        let Some(reload) = self.reload.take() else {
            return Ok(());
        };
        let reason = format!("the replacement for worker {id} {why}");
        let replaced = reload.replaced();
        self.control
            .reloads
            .abort(replaced, &reason, Instant::now());
        self.emit(Event::ReloadAborted {
            kind: reload.kind(),
            id: Some(id),
            replaced,
            reason,
        });
        for slot_id in reload.abort(id) {
            let Some(slot) = self.slots.get_mut(&slot_id) else {
                continue;
            };
            if let Some(successor) = slot.retire_successor() {
                self.stop_process(successor);
            }
            let orphaned = self
                .slots
                .get(&slot_id)
                .is_some_and(|slot| slot.worker().is_none() && !slot.is_retiring());
            if orphaned && self.phase == Phase::Running {
                self.start(slot_id)?;
            }
        }
        Ok(())
    }
}
