//! Rolling reload (SIGHUP, `Primary::reload`), and recycling (a worker over
//! `--max-memory`), which is the same for one slot: slot by slot, start a
//! replacement beside the running worker, wait until it is ready, then make
//! it the slot's worker and let the old one drain. At most `max_surge`
//! extra workers at a time (1 by default); the running worker keeps serving
//! until its replacement can. A
//! replacement that exits or is not ready within `ready_timeout` aborts the
//! reload, and the workers still running keep serving. A reload asked for
//! during one runs after it (requests in between count once).

use std::collections::VecDeque;

use super::Supervisor;
use super::notice::Notice;
use super::{Phase, WorkerState};
use crate::Error;
use crate::balance::WorkerKey;
use crate::primary::event::{Event, human_duration};

/// A rolling reload under way.
pub(super) struct Reload {
    /// What the logs call it: "rolling reload" or "recycling".
    label: &'static str,
    /// Slots still to replace, in order.
    queue: VecDeque<u32>,
    /// The replacements being waited for: slot and generation.
    awaiting: Vec<(u32, u32)>,
    /// Another reload was asked for meanwhile.
    again: bool,
    replaced: usize,
}

impl Reload {
    /// A rolling reload's progress: replacements done, and in all.
    /// Recycling a worker is not a reload of the service: `None`.
    pub(super) fn progress(&self) -> Option<(usize, usize)> {
        let total = self.replaced + self.queue.len() + self.awaiting.len();
        (self.label == "rolling reload").then_some((self.replaced, total))
    }
}

impl Supervisor {
    /// Starts a rolling reload, or queues one if a reload is under way.
    pub(super) fn request_reload(&mut self) -> Result<(), Error> {
        if self.phase != Phase::Running {
            return Ok(());
        }
        if let Some(reload) = self.reload.as_mut() {
            reload.again = true;
            tracing::info!("a rolling reload is under way: another will follow it");
            return Ok(());
        }
        let queue: VecDeque<u32> = self
            .slots
            .values()
            .filter(|slot| !slot.retiring && slot.worker.is_some())
            .map(|slot| slot.id)
            .collect();
        tracing::info!(
            "rolling reload: replacing {} workers, one at a time",
            queue.len()
        );
        self.reload = Some(Reload {
            label: "rolling reload",
            queue,
            awaiting: Vec::new(),
            again: false,
            replaced: 0,
        });
        self.reload_next()
    }

    /// Starts the replacements of the next slots, as many as the surge
    /// allows, or ends the reload.
    fn reload_next(&mut self) -> Result<(), Error> {
        loop {
            let Some(reload) = self.reload.as_mut() else {
                return Ok(());
            };
            if reload.awaiting.len() >= self.settings.max_surge {
                return Ok(());
            }
            let Some(id) = reload.queue.pop_front() else {
                if !reload.awaiting.is_empty() {
                    return Ok(());
                }
                let (replaced, again, label) = (reload.replaced, reload.again, reload.label);
                self.reload = None;
                tracing::info!("{label} complete: {replaced} workers replaced");
                return if again { self.request_reload() } else { Ok(()) };
            };
            let replaceable = self.slots.get(&id).is_some_and(|slot| {
                !slot.retiring && slot.worker.is_some() && slot.successor.is_none()
            });
            if !replaceable {
                continue;
            }
            let successor = match self.launch(id, true) {
                Ok(Some(successor)) => successor,
                Ok(None) => continue,
                Err(err) => {
                    return self.abort_reload(id, &format!("could not be started: {err}"));
                }
            };
            let (generation, ready) = (successor.generation, successor.ready);
            if let Some(slot) = self.slots.get_mut(&id) {
                slot.successor = Some(successor);
            }
            if let Some(reload) = self.reload.as_mut() {
                reload.awaiting.push((id, generation));
            }
            if !ready {
                let timeout = self.settings.ready_timeout;
                self.notify_after(timeout, Notice::ReloadTimeout { id, generation });
                continue;
            }
            self.promote(id);
        }
    }

    /// Replaces slot `id`'s worker gracefully (it uses too much memory):
    /// after the reload under way, if any, else at once.
    pub(super) fn recycle(&mut self, id: u32) -> Result<(), Error> {
        if let Some(reload) = self.reload.as_mut() {
            let awaited = reload.awaiting.iter().any(|&(slot, _)| slot == id);
            if !reload.queue.contains(&id) && !awaited {
                reload.queue.push_back(id);
            }
            return Ok(());
        }
        self.reload = Some(Reload {
            label: "recycling",
            queue: VecDeque::from([id]),
            awaiting: Vec::new(),
            again: false,
            replaced: 0,
        });
        self.reload_next()
    }

    /// Whether the reload waits for slot `id`'s process of `generation`.
    pub(super) fn reload_awaits(&self, id: u32, generation: u32) -> bool {
        self.reload
            .as_ref()
            .is_some_and(|reload| reload.awaiting.contains(&(id, generation)))
    }

    /// The awaited replacement said it is ready: promote it, go on.
    pub(super) fn replacement_ready(&mut self, id: u32) -> Result<(), Error> {
        self.promote(id);
        self.reload_next()
    }

    /// Makes slot `id`'s successor its worker and asks the old one to drain.
    fn promote(&mut self, id: u32) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let Some(successor) = slot.successor.take() else {
            return;
        };
        let (pid, generation) = (successor.pid, successor.generation);
        let old = slot.worker.replace(successor);
        let mut label = "rolling reload";
        if let Some(reload) = self.reload.as_mut() {
            reload.awaiting.retain(|&(slot, _)| slot != id);
            reload.replaced += 1;
            label = reload.label;
        }
        if let Some(worker) = self.slots.get(&id).and_then(|slot| slot.worker.as_ref()) {
            self.register(id, worker);
        }
        self.registry.set_state(id, generation, WorkerState::Ready);
        self.balancer.worker_ready(WorkerKey {
            slot: id,
            generation,
        });
        self.emit(Event::Ready { id, pid });
        if let Some(old) = old {
            tracing::info!("{label}: worker {id} replaced (pid {} -> {pid})", old.pid);
            let old_generation = old.generation;
            if let Some(slot) = self.slots.get_mut(&id) {
                slot.retired.push(old);
            }
            self.stop_generation(id, old_generation);
        }
    }

    /// Whether slot `id`, whose worker just exited, has a replacement on
    /// its way: then the replacement, once ready, is the slot's worker, and
    /// no restart is needed.
    pub(super) fn replacement_coming(&self, id: u32) -> bool {
        self.slots
            .get(&id)
            .is_some_and(|slot| slot.successor.is_some())
    }

    pub(super) fn on_reload_timeout(&mut self, id: u32, generation: u32) -> Result<(), Error> {
        if !self.reload_awaits(id, generation) {
            return Ok(());
        }
        let timeout = human_duration(self.settings.ready_timeout);
        self.abort_reload(id, &format!("was not ready within {timeout}"))
    }

    /// Gives up the reload: the replacement of slot `id` failed. The
    /// workers running keep serving; the replacement, if alive, is stopped;
    /// a slot whose worker died meanwhile is restarted as after any exit.
    pub(super) fn abort_reload(&mut self, id: u32, why: &str) -> Result<(), Error> {
        let Some(reload) = self.reload.take() else {
            return Ok(());
        };
        tracing::error!(
            "{} aborted: the replacement for worker {id} {why}; \
             the running workers keep serving",
            reload.label
        );
        // Every replacement under way goes; the old workers stay.
        let mut slots: Vec<u32> = reload.awaiting.iter().map(|&(slot, _)| slot).collect();
        slots.push(id);
        slots.dedup();
        for slot_id in slots {
            let successor = self
                .slots
                .get_mut(&slot_id)
                .and_then(|slot| slot.successor.take());
            if let Some(successor) = successor {
                let generation = successor.generation;
                if let Some(slot) = self.slots.get_mut(&slot_id) {
                    slot.retired.push(successor);
                }
                self.stop_generation(slot_id, generation);
            }
            let orphaned = self
                .slots
                .get(&slot_id)
                .is_some_and(|slot| slot.worker.is_none() && !slot.retiring);
            if orphaned && self.phase == Phase::Running {
                self.start(slot_id)?;
            }
        }
        Ok(())
    }
}
