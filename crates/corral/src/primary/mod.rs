//! The primary: binds the listeners, fills the worker slots and supervises
//! them. It never runs user request code. Everything happens on one thread
//! (a current-thread runtime), which is also the thread that spawns workers,
//! so the workers' parent-death signal is tied to the primary's whole life.

pub(crate) mod backoff;
mod control;
mod crash_loop;
pub(crate) mod event;
mod exit;
mod handle;
mod health;
mod misfit;
pub(crate) mod node;
mod notice;
mod notify;
mod outbox;
mod output;
mod program;
mod readiness;
pub(crate) mod ready_mode;
mod reaper;
mod reconfigure;
mod registry;
mod reload;
mod reload_book;
mod reload_plan;
mod restarts;
mod router;
mod run_as;
mod settings;
mod signals;
mod slot;
mod spawn;

use std::collections::BTreeMap;
use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use tokio::sync::mpsc;

pub use handle::Primary;
pub(crate) use program::Program;
pub(crate) use reconfigure::Reread;
pub use registry::{SendError, WorkerInfo, WorkerState};
pub use router::MessagePolicy;
pub(crate) use settings::Settings;

use crate::Error;
use crate::balance::{Balancer, Policy, StallReport, Stalled};
use crate::control::ControlService;
use crate::control::journal::Journal;
use crate::error::Chain;
use crate::protocol::env::WorkerEnv;
use crate::protocol::message::Control;
use crate::worker_key::{Serials, WorkerKey};
use control::ControlPlane;
use crash_loop::{CRASH_LOOP_FATAL, Restart};
use event::{Event, human_duration};
use exit::{AfterExit, ExitFacts, SlotAfterExit, describe_exit};
use handle::EventSink;
use health::jitter;
use node::NodeCluster;
use notice::Notice;
use notify::Notifier;
use output::OutputSink;
use readiness::{LateVerdict, StartKind};
use reaper::{Reaper, StrayOrders};
use registry::Registry;
use reload_plan::ReloadPlan;
use router::Router;
use signals::{Request, Signals};
use slot::{LiveWorker, Slot};
use spawn::Launcher;
/// How long a fatal stop waits for killed workers to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a Node worker that got SIGTERM at the end of its grace period
/// has before SIGKILL.
const NODE_KILL_AFTER_TERM: Duration = Duration::from_secs(1);
/// How long the primary, exiting, waits for its workers' last output.
const OUTPUT_FLUSH_TIMEOUT: Duration = Duration::from_millis(500);

/// The user's task beside the supervisor (`Cluster::primary`).
pub(crate) type PrimaryTask =
    Box<dyn FnOnce(Primary) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The library user's view of the lifecycle.
pub(crate) type Observer = Box<dyn FnMut(&Event) + Send>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Workers were asked to stop and are draining.
    Draining,
    /// Workers were killed; waiting to reap them.
    Killing,
}

/// Runs a cluster until it is stopped. Returns an error when it cannot start
/// or when every worker fails at start.
pub(crate) async fn run(
    settings: Settings,
    program: Program,
    observer: Option<Observer>,
    primary_task: Option<PrimaryTask>,
) -> Result<(), Error> {
    // The control socket first: a cluster of the same name already running
    // is found before any port is bound.
    let journal = Arc::new(Journal::default());
    let (commands, command_inbox) = mpsc::unbounded_channel();
    let control_service = ControlService::start(
        &settings.control,
        &settings.name,
        commands.clone(),
        journal.clone(),
    )?;
    if let Some(address) = settings.metrics {
        let listener = crate::metrics::bind(address)?;
        let bound = crate::metrics::serve(listener, commands.clone())?;
        tracing::info!(
            event = "metrics",
            "metrics on http://{bound}/metrics (health: /healthz, /readyz)"
        );
    }
    let (notices, inbox) = mpsc::channel(1024);
    // Node workers take connections by Node's own protocol (`node/`), not
    // the hand-off channel: the sockets bound up front are shared, and the
    // Node side dispatches them under round-robin.
    let upfront_policy = match settings.policy {
        policy if policy.hands_off() && program.is_node() => Policy::Shared,
        policy => policy,
    };
    let balancer = upfront_policy.balancer(
        &settings.addresses,
        settings.workers,
        settings.backlog,
        report_stalls(notices.clone()),
    )?;
    let node = program.is_node().then(|| {
        NodeCluster::new(node::NodeSettings {
            policy: settings.policy,
            backlog: settings.backlog,
            upfront: balancer.local_addrs().to_vec(),
            run_as: settings.user.clone(),
            allowed: settings.allow_worker_binds.clone(),
        })
    });
    let mut signals = Signals::install()?;
    reaper::become_subreaper();
    let (requests, requested) = mpsc::unbounded_channel();
    let registry = Arc::new(Registry::default());
    let (events, primary_handle) = match primary_task {
        Some(task) => {
            let (sink, receiver, dropped) = EventSink::new();
            (sink, Some((task, receiver, dropped)))
        }
        None => (EventSink::none(), None),
    };
    let router = Arc::new(Router {
        registry: registry.clone(),
        events: events.clone(),
        notices: notices.clone(),
        policy: settings.messages,
    });
    if let Some((task, receiver, dropped)) = primary_handle {
        let handle = Primary::new(registry.clone(), receiver, dropped, requests, commands);
        tokio::spawn(task(handle));
    }
    let node_program = program.is_node();
    let launcher = Launcher {
        program,
        primary_pid: rustix::process::getpid(),
        worker_env: WorkerEnv {
            id: 0,
            generation: 0,
            listener_count: 0,
            has_handoff: false,
            node_channel: node_program,
            primary_pid: Some(std::process::id()),
            grace: settings.grace,
            max_message_size: settings.max_message_size,
            worker_threads: settings.worker_threads,
            heartbeat: settings.watchdog.map(|timeout| timeout / 4),
            cluster_name: settings.name.clone(),
            policy: Some(settings.policy),
            addresses: balancer.local_addrs().to_vec(),
        },
        user: settings.user.clone(),
        env: settings.env.clone(),
        output: OutputSink::start(journal.clone()),
        notices,
        router,
        node: node.clone(),
    };
    let mut primary = Supervisor {
        settings,
        launcher,
        balancer,
        slots: BTreeMap::new(),
        serials: Serials::default(),
        inbox,
        requested,
        registry,
        events,
        observer,
        phase: Phase::Running,
        reload: None,
        proven: false,
        ever_ready: false,
        reaper: Reaper::new(),
        strays: StrayOrders::default(),
        notifier: Notifier::from_environment(),
        node,
        control: ControlPlane::new(journal, command_inbox, control_service),
    };
    primary.emit(Event::Bound {
        addresses: primary.balancer.local_addrs().to_vec(),
    });
    tracing::info!(
        "cluster {:?}: {} workers, policy {}",
        primary.settings.name,
        primary.settings.workers,
        primary.settings.policy
    );
    if let Some(user) = &primary.settings.user {
        tracing::info!("workers run as {user}, supplementary groups cleared");
    }
    for id in 1..=primary.settings.workers as u32 {
        primary.add_slot(id);
        primary.start(id)?;
    }
    let outcome = primary.supervise(&mut signals).await;
    if outcome.is_err() {
        tracing::error!("giving up: killing every worker");
        primary.kill_and_reap().await;
    }
    primary.scan_for_strays();
    primary.reaper.kill_leftovers().await;
    primary.launcher.output.flush(OUTPUT_FLUSH_TIMEOUT).await;
    outcome
}

/// Stalled workers become notices, so the supervisor emits their event. A
/// full inbox drops the report: the dispatcher never waits, and a stall
/// check comes again.
fn report_stalls(notices: mpsc::Sender<Notice>) -> StallReport {
    Box::new(move |stalled| {
        let _ = notices.try_send(Notice::Stalled(stalled));
    })
}

struct Supervisor {
    settings: Settings,
    launcher: Launcher,
    balancer: Box<dyn Balancer>,
    slots: BTreeMap<u32, Slot>,
    /// Numbers every process started, so that no two share a key.
    serials: Serials,
    inbox: mpsc::Receiver<Notice>,
    /// Requests from the user's `Primary` handle.
    requested: mpsc::UnboundedReceiver<Request>,
    registry: Arc<Registry>,
    events: EventSink,
    observer: Option<Observer>,
    phase: Phase,
    /// The rolling reload under way, if any.
    reload: Option<ReloadPlan>,
    /// The command works: some worker ran past the backoff's
    /// `min_uptime`, or a worker that speaks the channel said it is ready.
    proven: bool,
    /// Some worker said it is ready (or was deemed so by `--ready`).
    ever_ready: bool,
    /// Reaps and stops what workers start outside their process groups.
    reaper: Reaper,
    /// What the reaper's next scan of the process table is to do.
    strays: StrayOrders,
    /// systemd's notification socket (`NOTIFY_SOCKET`), if any.
    notifier: Notifier,
    /// The Node side, when the workers are Node cluster workers.
    node: Option<Arc<NodeCluster>>,
    /// The control socket and the records it serves.
    control: ControlPlane,
}

impl Supervisor {
    async fn supervise(&mut self, signals: &mut Signals) -> Result<(), Error> {
        // The checks follow the settings, which a reload may change.
        let period =
            (self.settings.watchdog).map_or(reconfigure::CHECK_PERIOD, |timeout| timeout / 4);
        let mut watchdog_check = tokio::time::interval(period);
        let mut memory_check = tokio::time::interval(health::MEMORY_CHECK);
        let mut child_exits = signals::child_exits()?;
        let systemd_watchdog = self.notifier.watchdog;
        let mut systemd_ping =
            tokio::time::interval(systemd_watchdog.unwrap_or(Duration::from_secs(3600)));
        let mut misfit_check = tokio::time::interval(misfit::CHECK_PERIOD);
        // The first scan at once, the next ones after a pause: one scan
        // serves the stops and exits of many workers.
        let mut stray_scan = tokio::time::interval(reaper::SCAN_PERIOD);
        stray_scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.finished() {
            tokio::select! {
                Some(notice) = self.inbox.recv() => self.handle(notice)?,
                request = signals.next() => self.obey(request)?,
                _ = child_exits.recv() => self.reap_orphans(),
                _ = systemd_ping.tick(), if systemd_watchdog.is_some() => self.notifier.ping(),
                Some(request) = self.requested.recv() => self.obey(request)?,
                Some(command) = self.control.commands.recv() => self.on_command(command)?,
                _ = watchdog_check.tick(), if self.settings.watchdog.is_some() => {
                    self.kill_hung_workers()
                }
                _ = memory_check.tick(), if self.settings.max_memory.is_some() => {
                    self.recycle_large_workers()?
                }
                _ = misfit_check.tick(), if self.watches_misfits() => self.check_misfits()?,
                _ = stray_scan.tick(), if self.strays.pending() => self.scan_for_strays(),
            }
            self.tell_systemd();
        }
        self.emit(Event::Stopped);
        Ok(())
    }

    fn finished(&self) -> bool {
        self.phase != Phase::Running
            && self
                .slots
                .values()
                .all(|slot| slot.processes().next().is_none())
    }

    fn handle(&mut self, notice: Notice) -> Result<(), Error> {
        match notice {
            Notice::Control { worker, control } => self.on_control(worker, control),
            Notice::Exited { worker, status } => self.on_exit(worker, status),
            Notice::Served { worker, count } => self.on_served(worker, count),
            Notice::Leaving(worker) => {
                self.on_leaving(worker);
                Ok(())
            }
            Notice::RestartDue(failed) => {
                let due = self.phase == Phase::Running
                    && self
                        .slots
                        .get(&failed.slot)
                        .is_some_and(|slot| slot.restart_due(failed));
                if due { self.start(failed.slot) } else { Ok(()) }
            }
            Notice::GraceExpired(worker) => {
                self.on_grace_expired(worker);
                Ok(())
            }
            Notice::ReadyTimeout(worker) => self.on_ready_timeout(worker),
            Notice::ReloadTimeout(worker) => self.on_reload_timeout(worker),
            // Ran long enough to count as ready (--ready): as if it said
            // so, unless it exited meanwhile (its exit is on its way).
            Notice::Settled(worker) if self.still_runs(worker) => {
                self.on_control(worker, Control::Ready)
            }
            Notice::Settled(_) => Ok(()),
            Notice::SeenAlive(worker) => {
                self.on_seen_alive(worker);
                Ok(())
            }
            Notice::ConfigurationRead(read) => self.on_configuration_read(read),
            Notice::Stalled(stalled) => {
                self.on_stalled(stalled);
                Ok(())
            }
        }
    }

    fn obey(&mut self, request: Request) -> Result<(), Error> {
        match request {
            Request::Stop if self.phase == Phase::Running => self.begin_shutdown(),
            Request::Stop => {
                self.emit(Event::StoppingNow);
                self.kill_all();
            }
            Request::Reload => return self.request_reload(),
            Request::AddWorker => return self.scale_up(),
            Request::RemoveWorker => return self.scale_down(),
        }
        Ok(())
    }

    fn add_slot(&mut self, id: u32) {
        self.slots.insert(id, Slot::new(id, self.settings.backoff));
    }

    /// Starts a new worker in slot `id`; a failure to start counts as a
    /// failure of the slot and goes through its backoff.
    fn start(&mut self, id: u32) -> Result<(), Error> {
        match self.launch(id, false) {
            Ok(Some(worker)) => {
                if let Some(slot) = self.slots.get_mut(&id) {
                    slot.install(worker);
                }
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(err) => {
                let failure = Chain(&err).to_string();
                tracing::error!("{failure}");
                let Some(slot) = self.slots.get_mut(&id) else {
                    return Ok(());
                };
                let Some(failed) = slot.newest_key() else {
                    return Ok(());
                };
                let restart = slot.history().record_spawn_failure();
                self.restart_after(failed, restart, failure)
            }
        }
    }

    /// Spawns the next generation of slot `id`. A successor (rolling
    /// reload) is not announced as the slot's worker until it is promoted.
    fn launch(&mut self, id: u32, successor: bool) -> Result<Option<LiveWorker>, Error> {
        let Some(slot) = self.slots.get_mut(&id) else {
            return Ok(None);
        };
        let key = slot.next_key(&mut self.serials);
        let spawned = self
            .balancer
            .sockets_for(key)
            .and_then(|sockets| self.launcher.spawn(key, sockets))?;
        let pid = spawned.pid;
        let speaks_channel = self.launcher.program.speaks_channel();
        let node = self.node.is_some();
        let plan = if node {
            // Ready at its `listening` (or `process.send('ready')`).
            readiness::node_ready_plan(self.settings.ready, self.settings.ready_timeout, successor)
        } else {
            readiness::ready_plan(
                self.settings.ready,
                StartKind {
                    speaks_channel,
                    replacement: successor,
                    hands_off: self.settings.policy.hands_off(),
                },
            )
        };
        let request_limit = self
            .settings
            .max_requests
            .map(|max| max + jitter(pid, self.settings.max_requests_jitter));
        let worker = LiveWorker::new(
            key,
            pid,
            spawned.outbox,
            plan.at_once,
            request_limit,
            self.launcher.program.is_node(),
        );
        if !successor {
            self.register(&worker);
        }
        self.emit(Event::Fork {
            id,
            pid,
            generation: key.generation,
        });
        if !speaks_channel {
            self.emit(Event::Online { id, pid });
        }
        if let Some(delay) = plan.settle_after {
            self.notify_after(delay, Notice::Settled(key));
        }
        if successor {
            // The reload promotes it once ready, or gives up on it.
        } else if plan.once_alive {
            self.notify_after(readiness::SIGN_OF_LIFE, Notice::SeenAlive(key));
        } else if plan.deadline {
            let timeout = self.settings.ready_timeout;
            self.notify_after(timeout, Notice::ReadyTimeout(key));
        }
        Ok(Some(worker))
    }

    /// Lists `worker` as its slot's worker in the live table.
    fn register(&self, worker: &LiveWorker) {
        let state = if worker.is_ready() {
            WorkerState::Ready
        } else {
            WorkerState::Starting
        };
        let info = WorkerInfo {
            id: worker.key.slot,
            pid: worker.pid,
            generation: worker.key.generation,
            state,
        };
        self.registry
            .insert(worker.key, info, worker.outbox.clone());
    }

    /// Whether worker `key` is live and its process still runs.
    fn still_runs(&mut self, key: WorkerKey) -> bool {
        self.worker_of(key)
            .is_some_and(|worker| slot::still_running(worker.pid))
    }

    /// A worker leaving by itself gets no new connections; its exit is
    /// then not a failure (`exit::classify`), and its slot is refilled.
    fn on_leaving(&mut self, key: WorkerKey) {
        let Some(worker) = self.worker_of(key) else {
            return;
        };
        if !worker.mark_leaving() {
            return;
        }
        let pid = worker.pid;
        self.announce_draining(key, pid);
    }

    /// A worker ready without waiting is announced ready once it has run
    /// for [`readiness::SIGN_OF_LIFE`], if it still runs; as a start ready
    /// at once it does not prove the command (only its run length does).
    fn on_seen_alive(&mut self, key: WorkerKey) {
        if !self.still_runs(key) {
            return;
        }
        let Some(worker) = self.worker_of(key) else {
            return;
        };
        if !worker.mark_ready() {
            return;
        }
        let pid = worker.pid;
        self.registry.set_state(key, WorkerState::Ready);
        self.balancer.worker_ready(key);
        self.emit(Event::Ready { id: key.slot, pid });
    }

    fn on_control(&mut self, key: WorkerKey, control: Control) -> Result<(), Error> {
        let Some(worker) = self.worker_of(key) else {
            return Ok(());
        };
        let (id, pid) = (key.slot, worker.pid);
        match control {
            Control::Online => self.emit(Event::Online { id, pid }),
            Control::Ready => {
                if !worker.mark_ready() {
                    return Ok(());
                }
                self.proven = true;
                self.ever_ready = true;
                if self.reload_awaits(key) {
                    return self.replacement_ready(id);
                }
                self.registry.set_state(key, WorkerState::Ready);
                self.balancer.worker_ready(key);
                self.emit(Event::Ready { id, pid });
            }
            Control::Heartbeat => worker.heartbeat(Instant::now()),
        }
        Ok(())
    }

    fn on_exit(&mut self, key: WorkerKey, status: Option<ExitStatus>) -> Result<(), Error> {
        let id = key.slot;
        let Some(slot) = self.slots.get_mut(&id) else {
            return Ok(());
        };
        let Some((worker, role)) = slot.take(key) else {
            return Ok(());
        };
        let slot_state = SlotAfterExit {
            emptied_and_retiring: slot.emptied_and_retiring(),
            replacement_coming: slot.replacement_coming(),
            running: self.phase == Phase::Running,
        };
        let ran_for = worker.started.elapsed();
        self.forget(key, worker.pid);
        let code = status.and_then(|status| status.code());
        let signal = status.and_then(|status| status.signal());
        self.emit(Event::Exit {
            id,
            pid: worker.pid,
            code,
            signal,
            requested: worker.stop_requested() || worker.left_by_itself(),
            ran_for,
        });
        let facts = ExitFacts {
            role,
            stop_requested: worker.stop_requested(),
            ran_for,
            code,
            signal,
            said_ready: worker.is_ready() && self.launcher.program.speaks_channel(),
            left_by_itself: worker.left_by_itself(),
        };
        let decision = exit::decide(&facts, slot_state, self.settings.backoff.min_uptime);
        self.proven |= decision.proves_command;
        let failure = describe_exit(code, signal, ran_for);
        let unready_failure = !facts.stop_requested && !worker.is_ready() && slot_state.running;
        if unready_failure && self.watches_misfits() {
            return Err(self.misfit(id, &format!("{failure} before it said it is ready")));
        }
        self.carry_out(key, decision, ran_for, failure)
    }

    /// Removes an exited process from the live table, the balancer and
    /// the Node side, and kills what it started and left behind.
    fn forget(&mut self, key: WorkerKey, pid: u32) {
        self.registry.remove(key);
        slot::signal_group(pid, Signal::KILL);
        self.signal_strays(key, pid, Signal::KILL);
        self.balancer.worker_exited(key);
        if let Some(node) = &self.node {
            node.worker_exited(key);
        }
    }

    /// Does what `decision` says after the exit of `key`.
    fn carry_out(
        &mut self,
        key: WorkerKey,
        decision: exit::ExitDecision,
        ran_for: Duration,
        failure: String,
    ) -> Result<(), Error> {
        let id = key.slot;
        let replaced_now = matches!(decision.next, AfterExit::RestartNow | AfterExit::Failure);
        if replaced_now && let Some(reason) = restarts::exit_reason(decision.kind) {
            self.control.restarts.record(id, reason);
        }
        match decision.next {
            AfterExit::Nothing => Ok(()),
            AfterExit::RemoveSlot => {
                self.slots.remove(&id);
                Ok(())
            }
            AfterExit::AbortReload => {
                self.abort_reload(id, &format!("{failure} before it was ready"))
            }
            AfterExit::RestartNow => {
                if let Some(slot) = self.slots.get_mut(&id)
                    && decision.kind == exit::ExitKind::KilledAfterUp
                {
                    slot.history().came_up();
                }
                self.start(id)
            }
            AfterExit::Failure => {
                let Some(slot) = self.slots.get_mut(&id) else {
                    return Ok(());
                };
                let restart = slot.history().record_exit(decision.kind, ran_for);
                self.restart_after(key, restart, failure)
            }
        }
    }

    /// Schedules the restart of a slot whose worker `failed`, reports a
    /// crash loop, and gives up on the cluster when every slot fails at
    /// start.
    fn restart_after(
        &mut self,
        failed: WorkerKey,
        restart: Restart,
        failure: String,
    ) -> Result<(), Error> {
        let id = failed.slot;
        if crash_loop::command_is_broken(self.proven, self.slots.values().map(Slot::history_ref)) {
            return Err(Error::CrashLoop(format!(
                "worker {id} {failure}, and every worker failed {CRASH_LOOP_FATAL} times in a row \
                 as it started: check the command, its arguments and its output above"
            )));
        }
        if let Some(failures) = restart.crash_looping {
            self.emit(Event::CrashLoop {
                id,
                quick_failures: failures,
                delay: restart.delay,
            });
        }
        if restart.delay.is_zero() {
            return self.start(id);
        }
        self.notify_after(restart.delay, Notice::RestartDue(failed));
        Ok(())
    }

    fn begin_shutdown(&mut self) {
        self.emit(Event::Stopping {
            grace: self.settings.grace,
        });
        self.phase = Phase::Draining;
        self.reload = None;
        self.terminate_orphans();
        self.control.reloads.cancel();
        let ids: Vec<u32> = self.slots.keys().copied().collect();
        for id in ids {
            self.stop_worker(id);
        }
    }

    /// Asks the worker of slot `id` (and its successor, during a reload) to
    /// drain, and to be killed if it has not exited after the grace period.
    fn stop_worker(&mut self, id: u32) {
        let Some(slot) = self.slots.get(&id) else {
            return;
        };
        for key in slot.active_keys() {
            self.stop_process(key);
        }
    }

    /// Asks the process `key` to drain.
    fn stop_process(&mut self, key: WorkerKey) {
        let grace = self.settings.grace;
        let node = self.node.clone();
        let Some(worker) = self.worker_of(key) else {
            return;
        };
        let asked = match node {
            // Node's graceful stop: `disconnect`; signals only after --grace.
            Some(node) => {
                let asked = worker.request_node_stop();
                if asked && !node.disconnect(key) {
                    worker.signal(Signal::TERM);
                }
                asked
            }
            None => worker.request_stop(),
        };
        if !asked {
            return;
        }
        let pid = worker.pid;
        self.signal_strays(key, pid, Signal::TERM);
        self.announce_draining(key, pid);
        self.notify_after(grace, Notice::GraceExpired(key));
    }

    /// What every draining worker gets, asked to stop or leaving by itself:
    /// the `stopping` state, no new connections, a `disconnect` event.
    fn announce_draining(&mut self, key: WorkerKey, pid: u32) {
        self.registry.set_state(key, WorkerState::Stopping);
        self.balancer.worker_leaving(key);
        self.emit(Event::Disconnect { id: key.slot, pid });
    }

    fn on_stalled(&mut self, stalled: Stalled) {
        let Some(worker) = self.worker_of(stalled.worker) else {
            return;
        };
        let pid = worker.pid;
        self.emit(Event::WorkerStalled {
            id: stalled.worker.slot,
            pid,
            unread: stalled.unread,
            rest: stalled.rest,
        });
    }

    fn on_grace_expired(&mut self, key: WorkerKey) {
        let grace = self.settings.grace;
        let Some(worker) = self.worker_of(key) else {
            return;
        };
        let pid = worker.pid;
        // A Node worker asked with `disconnect` gets SIGTERM first, and
        // SIGKILL if that does not end it either.
        let terminate = worker.terminate_before_kill();
        let signal = if terminate {
            Signal::TERM
        } else {
            Signal::KILL
        };
        worker.signal(signal);
        self.emit(Event::GraceExpired {
            id: key.slot,
            pid,
            grace,
            signal: signal.as_raw(),
        });
        if terminate {
            self.notify_after(NODE_KILL_AFTER_TERM, Notice::GraceExpired(key));
        }
    }

    /// A worker that has not said it is ready in time: with no worker ever
    /// ready, the command does not speak corral's protocol, which the
    /// settings need; otherwise this one worker is stuck and is replaced.
    fn on_ready_timeout(&mut self, key: WorkerKey) -> Result<(), Error> {
        let timeout = human_duration(self.settings.ready_timeout);
        let policy = self.settings.policy;
        let proven = self.proven;
        let Some(worker) = self.worker_of(key) else {
            return Ok(());
        };
        let id = key.slot;
        let verdict = readiness::on_ready_timeout(
            worker.is_ready(),
            worker.stop_requested(),
            proven,
            policy.hands_off(),
        );
        match verdict {
            LateVerdict::Ignore => Ok(()),
            LateVerdict::NeverSaysReady => Err(Error::NeverReady(format!(
                "worker {id} did not say it is ready within {timeout}: with --ready message every \
                 worker must send {{\"corral\":\"ready\"}} on CORRAL_IPC_FD (or \
                 process.send('ready') in Node); use --ready auto or delay:SECONDS for a \
                 server that cannot"
            ))),
            LateVerdict::NeverTakesConnections => Err(Error::NeverReady(format!(
                "worker {id} did not say it is ready within {timeout}: under --policy {policy} \
                 every worker must take connections from CORRAL_HANDOFF_FD and send \
                 {{\"corral\":\"ready\"}} on CORRAL_IPC_FD (see docs/protocols.md, the hand-off \
                 protocol); for a server that accepts on its own socket, use --policy \
                 reuseport or shared"
            ))),
            LateVerdict::Replace => {
                let pid = worker.pid;
                worker.signal(Signal::KILL);
                self.emit(Event::ReadyTimeout {
                    id,
                    pid,
                    timeout: self.settings.ready_timeout,
                });
                Ok(())
            }
        }
    }

    fn kill_all(&mut self) {
        self.phase = Phase::Killing;
        self.reload = None;
        self.control.reloads.cancel();
        for worker in self.slots.values().flat_map(Slot::processes) {
            worker.signal(Signal::KILL);
        }
    }

    /// Kills every worker and waits (briefly) until they are reaped.
    async fn kill_and_reap(&mut self) {
        self.kill_all();
        let reaped = async {
            while !self.finished() {
                match self.inbox.recv().await {
                    Some(Notice::Exited { worker, status }) => {
                        let _ = self.on_exit(worker, status);
                    }
                    Some(_) => {}
                    None => return,
                }
            }
        };
        let _ = tokio::time::timeout(REAP_TIMEOUT, reaped).await;
    }

    fn scale_up(&mut self) -> Result<(), Error> {
        if self.phase != Phase::Running {
            return Ok(());
        }
        let id = (1..)
            .find(|id| !self.slots.contains_key(id))
            .expect("ids are unbounded");
        self.add_slot(id);
        tracing::info!("scaling up: adding worker {id}");
        self.start(id)
    }

    fn scale_down(&mut self) -> Result<(), Error> {
        if self.phase != Phase::Running {
            return Ok(());
        }
        let active: Vec<u32> = self
            .slots
            .values()
            .filter(|slot| !slot.is_retiring())
            .map(Slot::id)
            .collect();
        let Some(&id) = active.last().filter(|_| active.len() > 1) else {
            tracing::warn!("not scaling down: the cluster keeps at least one worker");
            return Ok(());
        };
        tracing::info!("scaling down: stopping worker {id}");
        // Release the slot's sockets now: a reuseport socket left open while
        // its worker drains would queue connections nobody accepts.
        self.balancer.remove_slot(id);
        if let Some(node) = &self.node {
            node.remove_slot(id);
        }
        self.control.restarts.forget(id);
        let slot = self.slots.get_mut(&id).expect("listed above");
        if slot.retire() {
            self.stop_worker(id);
        } else {
            self.slots.remove(&id);
        }
        // A reload under way no longer replaces the slot (nor waits for
        // its replacement, now stopping): it goes on with the others.
        if let Some(reload) = self.reload.as_mut() {
            reload.drop_slot(id);
            return self.reload_next();
        }
        Ok(())
    }

    /// The process `key`, whatever its role in its slot.
    fn worker_of(&mut self, key: WorkerKey) -> Option<&mut LiveWorker> {
        self.slots.get_mut(&key.slot)?.find(key)
    }

    fn notify_after(&self, delay: Duration, notice: Notice) {
        let notices = self.launcher.notices.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = notices.send(notice).await;
        });
    }

    fn emit(&mut self, event: Event) {
        event.log();
        self.journal_event(&event);
        if let Some(observer) = self.observer.as_mut() {
            observer(&event);
        }
        if self.events.is_listened() {
            self.events.emit(event);
        }
    }
}
