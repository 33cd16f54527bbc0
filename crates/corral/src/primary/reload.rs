//! Rolling reload (SIGHUP, `Primary::reload`), and recycling (a worker over
//! `--max-memory` or past `--max-requests`), which is the same for one
//! slot: slot by slot, start a replacement beside the running worker, wait
//! until it is ready, then make it the slot's worker and let the old one
//! drain. The running worker keeps serving until its replacement can. A
//! replacement that exits or is not ready within `ready_timeout` aborts the
//! reload, and the workers still running keep serving. A reload asked for
//! during one runs after it (requests in between count once).
//!
//! This file carries the steps out; [`ReloadPlan`] decides them.

use std::time::Instant;

use super::Phase;
use super::Supervisor;
use super::lifecycle::Lifecycle;
use super::notice::Notice;
use super::reconfigure::BeforeReload;
use super::reload_plan::{ReloadPlan, ReloadStep};
use super::slot::Slot;
use crate::Error;
use crate::control::status::RestartReason;
use crate::error::Chain;
use crate::primary::event::{Event, ReloadKind, human_duration};
use crate::worker_key::WorkerKey;

impl Supervisor {
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
                    if kind == ReloadKind::Rolling {
                        self.control.reloads.complete(replaced, Instant::now());
                    }
                    self.emit(Event::ReloadCompleted { kind, replaced });
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
