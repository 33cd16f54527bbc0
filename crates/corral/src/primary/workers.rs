//! The life of each worker process, as the supervisor runs it: starting
//! one into its slot, the changes of its [`Lifecycle`] (ready, draining,
//! terminating) through the one transition function, its exit and what
//! follows (a restart after backoff, a crash loop, the slot's removal),
//! and the stops: asked, at the grace period's end, at the ready timeout.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::balance::Stalled;
use crate::control::status::WorkerState;
use crate::error::Chain;
use crate::error::Error;
use crate::primary::event::{Event, human_duration};
use crate::primary::io::notice::Notice;
use crate::primary::os::health::jitter;
use crate::primary::rules::crash_loop::{self, CRASH_LOOP_FATAL, Restart};
use crate::primary::rules::exit::{self, AfterExit, ExitFacts, SlotAfterExit, describe_exit};
use crate::primary::rules::lifecycle::{Lifecycle, Transition};
use crate::primary::rules::ready_plan::{self, LateVerdict, StartKind};
use crate::primary::rules::restarts;
use crate::primary::slot::{self, LiveWorker, Slot};
use crate::primary::{NODE_KILL_AFTER_TERM, Phase, REAP_TIMEOUT, Supervisor, WorkerInfo};
use crate::protocol::message::Control;
use crate::worker_key::WorkerKey;

impl Supervisor {
    pub(super) fn add_slot(&mut self, id: u32) {
        self.slots.insert(id, Slot::new(id, self.settings.backoff));
    }

    /// Starts a new worker in slot `id`; a failure to start counts as a
    /// failure of the slot and goes through its backoff.
    pub(super) fn start(&mut self, id: u32) -> Result<(), Error> {
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
    pub(super) fn launch(&mut self, id: u32, successor: bool) -> Result<Option<LiveWorker>, Error> {
        let Some(slot) = self.slots.get_mut(&id) else {
            return Ok(None);
        };
        let key = slot.next_key(&mut self.serials);
        let spawned = self
            .balancer
            .sockets_for(key)
            .and_then(|sockets| self.launcher.spawn(key, sockets, &self.settings))?;
        let pid = spawned.pid;
        let speaks_channel = self.launcher.program.speaks_channel();
        let node = self.node.is_some();
        let plan = if node {
            // Ready at its `listening` (or `process.send('ready')`).
            ready_plan::node_ready_plan(self.settings.ready, self.settings.ready_timeout, successor)
        } else {
            ready_plan::ready_plan(
                self.settings.ready,
                StartKind {
                    speaks_channel,
                    replacement: successor,
                    hands_off: self.balancer.hands_off(),
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
            self.notify_after(ready_plan::SIGN_OF_LIFE, Notice::SeenAlive(key));
        } else if plan.deadline {
            let timeout = self.settings.ready_timeout;
            self.notify_after(timeout, Notice::ReadyTimeout(key));
        }
        Ok(Some(worker))
    }

    /// Lists `worker` as its slot's worker in the live table.
    pub(super) fn register(&self, worker: &LiveWorker) {
        let info = WorkerInfo {
            id: worker.key.slot,
            pid: worker.pid,
            generation: worker.key.generation,
            state: WorkerState::Starting,
        };
        self.live_table
            .insert(worker.key, info, worker.outbox.clone());
    }

    /// Whether worker `key` is live and its process still runs.
    pub(super) fn still_runs(&mut self, key: WorkerKey) -> bool {
        self.worker_of(key)
            .is_some_and(|worker| slot::still_running(worker.pid))
    }

    /// A worker leaving by itself gets no new connections; its exit is
    /// then not a failure (`exit::classify`), and its slot is refilled.
    pub(super) fn on_leaving(&mut self, key: WorkerKey) {
        self.transition(key, Transition::Leaving);
    }

    /// A worker ready without waiting is announced ready once it has run
    /// for [`ready_plan::SIGN_OF_LIFE`], if it still runs; as a start ready
    /// at once it does not prove the command (only its run length does).
    pub(super) fn on_seen_alive(&mut self, key: WorkerKey) {
        if self.still_runs(key) {
            self.transition(key, Transition::BecameReady);
        }
    }

    /// The one place a worker process's state changes: the rule
    /// ([`Lifecycle::after`]) says what comes next, and the change goes to
    /// the live table, the balancer and the event stream. A reload's
    /// successor is not listed yet: its promotion announces it. Returns the
    /// new state, or `None` when nothing changed.
    pub(super) fn transition(
        &mut self,
        key: WorkerKey,
        transition: Transition,
    ) -> Option<Lifecycle> {
        let slot = self.slots.get_mut(&key.slot)?;
        let listed = !slot.is_successor(key);
        let worker = slot.find(key)?;
        let before = worker.lifecycle;
        let after = before.after(transition)?;
        worker.lifecycle = after;
        let pid = worker.pid;
        if listed {
            self.announce(key, pid, before, after);
        }
        Some(after)
    }

    /// Tells the live table, the balancer and the event stream that the
    /// process `key` went from `before` to `after`.
    pub(super) fn announce(
        &mut self,
        key: WorkerKey,
        pid: u32,
        before: Lifecycle,
        after: Lifecycle,
    ) {
        let id = key.slot;
        self.live_table.set_state(key, after.shown_as());
        if after.is_ready() && !before.is_ready() {
            self.balancer.worker_ready(key);
            if let Some(node) = &self.node {
                node.worker_ready(key);
            }
            self.emit(Event::Ready { id, pid });
        }
        if after.is_draining() && !before.is_draining() {
            self.balancer.worker_leaving(key);
            if let Some(node) = &self.node {
                node.worker_leaving(key);
            }
            let by_itself = after.left_by_itself();
            self.emit(Event::Disconnect { id, pid, by_itself });
        }
    }

    pub(super) fn on_control(&mut self, key: WorkerKey, control: Control) -> Result<(), Error> {
        let Some(worker) = self.worker_of(key) else {
            return Ok(());
        };
        let (id, pid) = (key.slot, worker.pid);
        match control {
            Control::Online => self.emit(Event::Online { id, pid }),
            Control::Ready => {
                if self.transition(key, Transition::BecameReady).is_none() {
                    return Ok(());
                }
                self.proven = true;
                self.ever_ready = true;
                if self.reload_awaits(key) {
                    return self.replacement_ready(id);
                }
            }
            Control::Heartbeat => worker.heartbeat(Instant::now()),
        }
        Ok(())
    }

    pub(super) fn on_exit(
        &mut self,
        key: WorkerKey,
        status: Option<ExitStatus>,
    ) -> Result<(), Error> {
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
        let state = worker.lifecycle;
        self.forget(key, worker.pid);
        let code = status.and_then(|status| status.code());
        let signal = status.and_then(|status| status.signal());
        self.emit(Event::Exit {
            id,
            pid: worker.pid,
            code,
            signal,
            requested: state.is_draining(),
            ran_for,
        });
        let facts = ExitFacts {
            role,
            stop_requested: state.stop_requested(),
            ran_for,
            code,
            signal,
            said_ready: state.was_ready() && self.launcher.program.speaks_channel(),
            left_by_itself: state.left_by_itself(),
        };
        let decision = exit::decide(&facts, slot_state, self.settings.backoff.min_uptime);
        self.proven |= decision.proves_command;
        let failure = describe_exit(code, signal, ran_for);
        let unready_failure = !facts.stop_requested && !state.was_ready() && slot_state.running;
        if unready_failure && self.watches_misfits() {
            return Err(self.misfit(id, &format!("{failure} before it said it is ready")));
        }
        self.carry_out(key, decision, ran_for, failure)
    }

    /// Removes an exited process from the live table, the balancer and
    /// the Node side, and kills what it started and left behind.
    pub(super) fn forget(&mut self, key: WorkerKey, pid: u32) {
        self.live_table.remove(key);
        slot::signal_group(pid, Signal::KILL);
        self.signal_strays(key, pid, Signal::KILL);
        self.balancer.worker_exited(key);
        if let Some(node) = &self.node {
            node.worker_exited(key);
        }
    }

    /// Does what `decision` says after the exit of `key`.
    pub(super) fn carry_out(
        &mut self,
        key: WorkerKey,
        decision: exit::ExitDecision,
        ran_for: Duration,
        failure: String,
    ) -> Result<(), Error> {
        let id = key.slot;
        let replaced_now = matches!(decision.next, AfterExit::RestartNow | AfterExit::Failure);
        if replaced_now
            && let Some(reason) = restarts::exit_reason(decision.kind)
            && let Some(slot) = self.slots.get_mut(&id)
        {
            slot.restarts_mut().record(reason);
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
    pub(super) fn restart_after(
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

    pub(super) fn begin_shutdown(&mut self) {
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
    pub(super) fn stop_worker(&mut self, id: u32) {
        let Some(slot) = self.slots.get(&id) else {
            return;
        };
        for key in slot.active_keys() {
            self.stop_process(key);
        }
    }

    /// Asks the process `key` to drain: the stop message and SIGTERM, or
    /// for a Node worker pm2's `'shutdown'` and Node's `disconnect` (signals
    /// only after --grace); killed if it has not exited after the grace
    /// period.
    pub(super) fn stop_process(&mut self, key: WorkerKey) {
        if self.transition(key, Transition::AskedToStop).is_none() {
            return;
        }
        let node = self.node.clone();
        let Some(worker) = self.worker_of(key) else {
            return;
        };
        match node {
            Some(node) => {
                worker.send_node_shutdown();
                if !node.disconnect(key) {
                    worker.signal(Signal::TERM);
                }
            }
            None => worker.send_stop(),
        }
        let pid = worker.pid;
        self.signal_strays(key, pid, Signal::TERM);
        self.notify_after(self.settings.grace, Notice::GraceExpired(key));
    }

    pub(super) fn on_stalled(&mut self, stalled: Stalled) {
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

    pub(super) fn on_grace_expired(&mut self, key: WorkerKey) {
        let grace = self.settings.grace;
        let Some(worker) = self.worker_of(key) else {
            return;
        };
        let (pid, node) = (worker.pid, worker.is_node());
        // A Node worker asked with `disconnect` gets SIGTERM first, and
        // SIGKILL if that does not end it either.
        let terminate = node && self.transition(key, Transition::Terminated).is_some();
        let signal = if terminate {
            Signal::TERM
        } else {
            Signal::KILL
        };
        slot::signal_group(pid, signal);
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
    pub(super) fn on_ready_timeout(&mut self, key: WorkerKey) -> Result<(), Error> {
        let timeout = human_duration(self.settings.ready_timeout);
        let policy = self.settings.policy;
        let hands_off = self.balancer.hands_off();
        let proven = self.proven;
        let Some(worker) = self.worker_of(key) else {
            return Ok(());
        };
        let id = key.slot;
        let verdict = ready_plan::on_ready_timeout(
            worker.lifecycle.was_ready(),
            worker.lifecycle.stop_requested(),
            proven,
            hands_off,
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

    pub(super) fn kill_all(&mut self) {
        self.phase = Phase::Killing;
        self.reload = None;
        self.control.reloads.cancel();
        for worker in self.slots.values().flat_map(Slot::processes) {
            worker.signal(Signal::KILL);
        }
    }

    /// Kills every worker and waits (briefly) until they are reaped.
    pub(super) async fn kill_and_reap(&mut self) {
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

    /// Adds a slot and starts its worker (a step of `scale_to`).
    pub(super) fn add_worker(&mut self) -> Result<(), Error> {
        let id = (1..)
            .find(|id| !self.slots.contains_key(id))
            .expect("ids are unbounded");
        self.add_slot(id);
        tracing::info!("scaling up: adding worker {id}");
        self.start(id)
    }

    /// Retires the newest slot and drains its worker (a step of
    /// `scale_to`, which keeps at least one).
    pub(super) fn remove_worker(&mut self) -> Result<(), Error> {
        let Some(id) = self
            .slots
            .values()
            .filter(|slot| !slot.is_retiring())
            .map(Slot::id)
            .next_back()
        else {
            return Ok(());
        };
        tracing::info!("scaling down: stopping worker {id}");
        // Release the slot's sockets now: a reuseport socket left open while
        // its worker drains would queue connections nobody accepts.
        self.balancer.remove_slot(id);
        if let Some(node) = &self.node {
            node.remove_slot(id);
        }
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
    pub(super) fn worker_of(&mut self, key: WorkerKey) -> Option<&mut LiveWorker> {
        self.slots.get_mut(&key.slot)?.find(key)
    }
}
