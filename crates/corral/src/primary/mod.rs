//! The primary: binds the listeners, fills the worker slots and supervises
//! them. It never runs user request code. Everything happens on one thread
//! (a current-thread runtime), which is also the thread that spawns workers,
//! so the workers' parent-death signal is tied to the primary's whole life.

mod control;
pub(crate) mod event;
pub(crate) mod io;
pub(crate) mod node;
mod os;
mod reconfigure;
mod reload_book;
mod rules;
mod settings;
mod slot;
mod steering;
mod workers;

use std::collections::HashSet;
use std::time::Instant;

use rustix::process::Signal;

use crate::control::status::RestartReason;
use crate::primary::event::RecycleLimit;
use crate::worker_key::{Serials, WorkerKey};
use os::health::resident_bytes;
use os::own_sockets::own_listeners;
use os::systemd::View;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

pub use io::handle::{EventAs, Primary};
pub use io::live_table::{SendError, WorkerInfo};
pub(crate) use reconfigure::Reread;
pub(crate) use settings::Settings;

use crate::balance::kernel::SteeredGroups;
use crate::balance::{Balancer, Policy, StallReport};
use crate::control::ControlService;
use crate::control::command::SupervisorCommand;
use crate::control::journal::Journal;
use crate::error::Error;
use crate::protocol::message::Control;
use crate::settings::Program;
use control::ControlPlane;
use event::Event;
use io::app_metrics::AppMetrics;
use io::handle::EventSink;
use io::live_table::LiveTable;
use io::messages::MessageRouter;
use io::notice::Notice;
use io::socketio::SocketIoRelay;
use io::spawn::Launcher;
use io::worker_output::OutputSink;
use node::NodeCluster;
use os::reaper::{Reaper, StrayOrders};
use os::signals::Signals;
use os::systemd::Notifier;
use rules::reload_plan::ReloadPlan;
use slot::Slot;
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
    let watch_commands = commands.clone();
    let control_service = ControlService::start(
        &settings.control,
        &settings.name,
        commands.clone(),
        journal.clone(),
    )?;
    // Written before any worker starts; a file that cannot be written
    // leaves the workers without the agent, as `--node-agent off` would.
    let node_agent = (program.is_node() && settings.node_agent)
        .then(|| match node::agent::install() {
            Ok(path) => Some(path),
            Err(err) => {
                tracing::warn!("Node agent not loaded: {err} (--node-agent off silences this)");
                None
            }
        })
        .flatten();
    let live_table = Arc::new(LiveTable::default());
    // prom-client's answers come from the Node agent: without it, no
    // worker would answer, and every scrape would wait for them.
    let app_metrics = node_agent
        .is_some()
        .then(|| Arc::new(AppMetrics::new(live_table.clone())));
    if let Some(address) = settings.metrics {
        let listener = crate::metrics::bind(address)?;
        let bound = crate::metrics::serve(listener, commands.clone(), app_metrics.clone())?;
        tracing::info!(
            event = "metrics",
            "metrics on http://{bound}/metrics (health: /healthz, /readyz)"
        );
    }
    let (notices, inbox) = mpsc::channel(1024);
    // Node workers take connections by Node's own protocol (`node/`), not
    // the hand-off channel: under kernel steering every address is steered
    // by the program; otherwise the sockets bound up front are shared, and
    // the Node side dispatches them with `newconn`.
    let mut node_steering = program
        .is_node()
        .then(|| node_kernel_steering(&settings))
        .flatten();
    let upfront_policy = match settings.policy {
        policy if policy.hands_off() && program.is_node() && node_steering.is_none() => {
            Policy::Shared
        }
        // Nothing to bind up front: no program to load for it.
        _ if program.is_node() && settings.addresses.is_empty() => Policy::Shared,
        policy => policy,
    };
    let mut balancer = upfront_policy.balancer(
        &settings.addresses,
        settings.workers,
        settings.backlog,
        settings.kernel_steering,
        report_stalls(notices.clone()),
    )?;
    if program.is_node() && balancer.hands_off() {
        // The program loaded a moment ago and not now: Node's own way.
        node_steering = None;
        drop(balancer);
        balancer = Policy::Shared.balancer(
            &settings.addresses,
            settings.workers,
            settings.backlog,
            false,
            report_stalls(notices.clone()),
        )?;
    }
    let node = program.is_node().then(|| {
        NodeCluster::new(node::NodeSettings {
            policy: settings.policy,
            backlog: settings.backlog,
            upfront: balancer.local_addrs().to_vec(),
            run_as: settings.user.clone(),
            allowed: settings.allow_worker_binds.clone(),
            steering: node_steering,
        })
    });
    if let Some(schedule) = settings.schedule.clone() {
        schedule_reloads(schedule, commands.clone());
    }
    let mut signals = Signals::install()?;
    if crate::log::file::active() {
        os::signals::reopen_log_on_usr1()?;
    }
    os::reaper::become_subreaper();
    let (events, primary_handle) = match primary_task {
        Some(task) => {
            let (sink, receiver, dropped) = EventSink::new();
            (sink, Some((task, receiver, dropped)))
        }
        None => (EventSink::none(), None),
    };
    let messages = Arc::new(MessageRouter {
        live_table: live_table.clone(),
        events: events.clone(),
        notices: notices.clone(),
        policy: settings.messages,
        socketio: SocketIoRelay::default(),
        app_metrics,
    });
    if let Some((task, receiver, dropped)) = primary_handle {
        let handle = Primary::new(live_table.clone(), receiver, dropped, commands);
        tokio::spawn(task(handle));
    }
    if node_agent.is_some()
        && let Some(warning) =
            node::agent::websocket_close_past_grace(settings.ws_close_after, settings.grace)
    {
        tracing::warn!("{warning}");
    }
    let launcher = Launcher {
        program,
        primary_pid: rustix::process::getpid(),
        addresses: balancer.local_addrs().to_vec(),
        output: OutputSink::start(journal.clone()),
        notices,
        messages,
        node: node.clone(),
        node_agent,
    };
    let mut primary = Supervisor {
        settings,
        launcher,
        balancer,
        slots: BTreeMap::new(),
        serials: Serials::default(),
        inbox,
        live_table,
        events,
        observer,
        phase: Phase::Running,
        drain_soon: false,
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
    os::watch::start(&primary.settings.watch, watch_commands);
    if primary.node.is_some() && !primary.balancer.local_addrs().is_empty() {
        // A --listen address the program never listens on is a black hole:
        // told once the workers had their time to listen.
        let check_after = primary.settings.ready_timeout;
        primary.notify_after(check_after, Notice::CheckListenUse);
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

/// `--reload-at`: sleeps until each time the schedule names, then asks the
/// supervisor for a rolling reload as any client would. It never touches
/// the loop's state; it ends when the supervisor is gone.
fn schedule_reloads(
    schedule: crate::settings::schedule::Schedule,
    commands: mpsc::UnboundedSender<SupervisorCommand>,
) {
    use crate::settings::schedule::shown;
    tokio::spawn(async move {
        while let Some((next, wait)) = schedule.wait_from(chrono::Utc::now()) {
            tracing::info!(
                event = "reload_scheduled",
                "next scheduled reload (--reload-at) at {}",
                shown(next)
            );
            tokio::time::sleep(wait).await;
            // The wall clock may lag the monotonic one: never reload early.
            while let Ok(left) = (next - chrono::Utc::now()).to_std() {
                tokio::time::sleep(left).await;
            }
            let reload = SupervisorCommand::Reload {
                outcome: None,
                started: None,
            };
            if commands.send(reload).is_err() {
                return;
            }
        }
    });
}

/// Kernel steering for the addresses Node workers' `listen()` binds, under
/// `round-robin`, `least-connections` and `sticky` where the program loads; one log
/// line says which and why.
fn node_kernel_steering(settings: &Settings) -> Option<SteeredGroups> {
    let policy = settings.policy;
    if !policy.hands_off() {
        return None;
    }
    let why = if settings.kernel_steering {
        match SteeredGroups::new(policy) {
            Ok(groups) => {
                tracing::info!(
                    event = "steering",
                    "Node workers' listen(): {policy} steered in the kernel: the SK_REUSEPORT \
                     program picks each connection's worker"
                );
                return Some(groups);
            }
            Err(why) => format!("{why} (kernel steering needs root, or CAP_BPF and CAP_NET_ADMIN)"),
        }
    } else {
        "--kernel-steering is off".to_string()
    };
    tracing::info!(
        event = "steering",
        "Node workers' listen(): {policy} served by the primary's newconn hand-off: {why}"
    );
    None
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
    live_table: Arc<LiveTable>,
    events: EventSink,
    observer: Option<Observer>,
    phase: Phase,
    /// Asked to stop, the cluster waits out `--drain-delay` (still
    /// `Running`, but not ready) before it drains.
    drain_soon: bool,
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
        let mut memory_check = tokio::time::interval(os::health::MEMORY_CHECK);
        let mut child_exits = os::signals::child_exits()?;
        let systemd_watchdog = self.notifier.watchdog;
        let mut systemd_ping =
            tokio::time::interval(systemd_watchdog.unwrap_or(Duration::from_secs(3600)));
        let mut misfit_check = tokio::time::interval(os::own_sockets::CHECK_PERIOD);
        // The first scan at once, the next ones after a pause: one scan
        // serves the stops and exits of many workers.
        let mut stray_scan = tokio::time::interval(os::reaper::SCAN_PERIOD);
        stray_scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.finished() {
            tokio::select! {
                Some(notice) = self.inbox.recv() => self.handle(notice)?,
                command = signals.next() => self.on_command(command)?,
                _ = child_exits.recv() => self.reap_orphans(),
                _ = systemd_ping.tick(), if systemd_watchdog.is_some() => self.notifier.ping(),
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
            Notice::Closed { worker, count } => {
                self.balancer.connections_closed(worker, count);
                Ok(())
            }
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
            Notice::Bound(addresses) => {
                self.emit(Event::Bound { addresses });
                Ok(())
            }
            Notice::CheckListenUse => {
                self.warn_unused_listen_addresses();
                Ok(())
            }
            Notice::DrainDelayOver => {
                if self.phase == Phase::Running && self.drain_soon {
                    self.begin_shutdown();
                }
                Ok(())
            }
            Notice::Stalled(stalled) => {
                self.on_stalled(stalled);
                Ok(())
            }
        }
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

// The watchdog and recycling (`os/health.rs` has the rules).
impl Supervisor {
    /// The watchdog: a worker that sent heartbeats and then none for the
    /// watchdog's timeout is hung; it is killed, and replaced as any worker
    /// killed from outside.
    fn kill_hung_workers(&mut self) {
        let Some(timeout) = self.settings.watchdog else {
            return;
        };
        let now = Instant::now();
        let mut hung = Vec::new();
        for worker in self.slots.values().filter_map(|slot| slot.worker()) {
            if worker.is_hung(now, timeout) {
                worker.signal(Signal::KILL);
                hung.push((worker.key.slot, worker.pid));
            }
        }
        for (id, pid) in hung {
            if let Some(slot) = self.slots.get_mut(&id) {
                slot.restarts_mut().expect(RestartReason::Hung);
            }
            self.emit(Event::Hung { id, pid, timeout });
        }
    }

    /// Counts requests a worker served; recycles it at its limit.
    fn on_served(&mut self, key: WorkerKey, count: u64) -> Result<(), Error> {
        let running = self.phase == Phase::Running;
        let is_current = self
            .slots
            .get(&key.slot)
            .is_some_and(|slot| slot.is_current(key));
        let Some(worker) = self.worker_of(key) else {
            return Ok(());
        };
        let Some((served, limit)) = worker.count_served(count) else {
            return Ok(());
        };
        if !is_current || !running {
            return Ok(());
        }
        let pid = worker.pid;
        self.recycle_over(key.slot, pid, RecycleLimit::Requests { served, limit })
    }

    /// Replaces slot `id`'s worker `pid` gracefully: it is `over` a limit.
    fn recycle_over(&mut self, id: u32, pid: u32, over: RecycleLimit) -> Result<(), Error> {
        self.emit(Event::Recycled { id, pid, over });
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.restarts_mut().expect(over.reason());
        }
        self.recycle(id)
    }

    /// Recycles workers over `--max-memory` (resident set), once they have
    /// run `min_uptime`: the replacement is ready before the old worker
    /// drains.
    fn recycle_large_workers(&mut self) -> Result<(), Error> {
        let Some(limit) = self.settings.max_memory else {
            return Ok(());
        };
        if self.phase != Phase::Running {
            return Ok(());
        }
        let settled = self.settings.backoff.min_uptime;
        let over: Vec<(u32, u32, u64)> = self
            .slots
            .values()
            .filter(|slot| slot.replaceable())
            .filter_map(|slot| {
                let worker = slot.worker()?;
                let old_enough =
                    worker.started.elapsed() >= settled && !worker.lifecycle.stop_requested();
                let resident = resident_bytes(worker.pid)?;
                (old_enough && resident > limit).then_some((slot.id(), worker.pid, resident))
            })
            .collect();
        for (id, pid, resident) in over {
            let over = RecycleLimit::Memory {
                resident_bytes: resident,
                limit_bytes: limit,
            };
            self.recycle_over(id, pid, over)?;
        }
        Ok(())
    }
}

// A COMMAND that cannot take handed-off connections (`os/own_sockets.rs`).
impl Supervisor {
    /// Whether this cluster can have the misfit: a hand-off policy, workers
    /// that are a COMMAND speaking neither corral's library nor Node's
    /// cluster protocol, and no worker ready yet.
    fn watches_misfits(&self) -> bool {
        self.balancer.hands_off()
            && !self.launcher.program.speaks_channel()
            && self.node.is_none()
            && !self.ever_ready
    }

    /// Stops the cluster when a worker not yet ready listens on a TCP port
    /// of its own.
    fn check_misfits(&self) -> Result<(), Error> {
        if !self.watches_misfits() {
            return Ok(());
        }
        for slot in self.slots.values() {
            let Some(worker) = slot.worker().filter(|worker| !worker.lifecycle.was_ready()) else {
                continue;
            };
            if let Some(address) = own_listeners(worker.pid).into_iter().next() {
                return Err(
                    self.misfit(worker.key.slot, &format!("listens on {address} by itself"))
                );
            }
        }
        Ok(())
    }

    /// The error for worker `id`, which did `what` instead of taking
    /// connections from corral.
    fn misfit(&self, id: u32, what: &str) -> Error {
        let policy = self.settings.policy;
        Error::NeverReady(format!(
            "worker {id} {what}: under --policy {policy} corral accepts connections and \
             hands them over on CORRAL_HANDOFF_FD, and fd 3 is the message channel, not a \
             listening socket; a server that expects a socket (LISTEN_FDS, fd 3: gunicorn, \
             uvicorn --fd 3) needs --policy reuseport"
        ))
    }
}

// What workers start outside their process groups (`os/reaper.rs`).
impl Supervisor {
    /// The pids of the workers (tokio waits for those itself).
    fn worker_pids(&self) -> HashSet<u32> {
        self.slots
            .values()
            .flat_map(Slot::processes)
            .map(|worker| worker.pid)
            .collect()
    }

    /// A child exited: the next scan reaps the ones that are not workers.
    fn reap_orphans(&mut self) {
        self.strays.reap();
    }

    /// Has what the process `key` (pid `leader`) started outside its
    /// process group get `signal`, at the next scan.
    fn signal_strays(&mut self, key: WorkerKey, leader: u32, signal: Signal) {
        self.strays.signal(key, leader, signal);
    }

    /// Scans the process table for what the strays orders gathered ask.
    fn scan_for_strays(&mut self) {
        let orders = std::mem::take(&mut self.strays);
        self.reaper.carry_out(&orders, &self.worker_pids());
    }

    /// The cluster is stopping: processes re-parented to the primary get
    /// SIGTERM with the workers.
    fn terminate_orphans(&self) {
        self.reaper.terminate_leftovers(&self.worker_pids());
    }
}

// What systemd is told (`os/systemd.rs`).
impl Supervisor {
    /// The cluster as systemd sees it now.
    fn systemd_view(&self) -> View {
        let serving = self.slots.values().filter(|slot| !slot.is_retiring());
        let (mut ready, mut desired) = (0, 0);
        for slot in serving {
            desired += 1;
            ready += usize::from(
                slot.worker()
                    .is_some_and(|worker| worker.lifecycle.was_ready()),
            );
        }
        View {
            ready,
            desired,
            reloading: self.reload.as_ref().and_then(|reload| reload.progress()),
            stopping: self.phase != Phase::Running,
        }
    }

    /// Tells systemd what changed (after each turn of the loop).
    fn tell_systemd(&mut self) {
        if self.notifier.enabled() {
            let view = self.systemd_view();
            self.notifier.update(view);
        }
    }
}

// A Node program's use of the --listen addresses (node/binds.rs).
impl Supervisor {
    /// Warns about each `--listen` address no Node worker listens on.
    fn warn_unused_listen_addresses(&self) {
        let Some(node) = &self.node else {
            return;
        };
        let listening: Vec<String> = node
            .listening()
            .iter()
            .map(|(address, _)| address.to_string())
            .collect();
        let instead = match listening.as_slice() {
            [] => "no worker listened on any address yet".to_string(),
            list => format!("the workers listen on {}", list.join(", ")),
        };
        for address in node.unused_upfront() {
            tracing::warn!(
                event = "listen_unused",
                address = %address,
                "--listen {address}: no worker of this Node program listens on it ({instead}), \
                 so its connections wait unanswered: give the port the program listens on, or \
                 have it listen on process.env.PORT or {{fd: 3}}"
            );
        }
    }
}
