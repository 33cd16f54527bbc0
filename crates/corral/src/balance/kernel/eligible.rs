//! Which slots the kernel program may give a new connection: those whose
//! worker is ready and neither draining nor gone. The primary's one
//! lifecycle transition (`Supervisor::announce`, through the
//! [`Balancer`](crate::balance::Balancer) calls) keeps this set current, and
//! every change is written to the program's `eligible` map.
//!
//! A slot is eligible while any of its processes is: during a rolling
//! reload the replacement and the worker it replaces share the slot's
//! socket, so the slot stays eligible from the replacement's readiness on,
//! whatever the order of the two announcements.

use std::collections::BTreeSet;

use crate::balance::WorkerKey;

#[derive(Debug, Default)]
pub(crate) struct Eligible {
    workers: BTreeSet<WorkerKey>,
}

impl Eligible {
    /// The worker said it is ready.
    pub(crate) fn ready(&mut self, worker: WorkerKey) {
        self.workers.insert(worker);
    }

    /// The worker drains, exited or was stalled: no new connection.
    pub(crate) fn gone(&mut self, worker: WorkerKey) {
        self.workers.remove(&worker);
    }

    /// The slot is removed (the cluster shrank).
    pub(crate) fn remove_slot(&mut self, slot: u32) {
        self.workers.retain(|worker| worker.slot != slot);
    }

    /// Whether the slot has an eligible worker.
    pub(crate) fn has(&self, slot: u32) -> bool {
        self.workers.iter().any(|worker| worker.slot == slot)
    }

    /// The eligible slots, ascending, each once.
    pub(crate) fn slots(&self) -> Vec<u32> {
        let mut slots: Vec<u32> = self.workers.iter().map(|worker| worker.slot).collect();
        slots.dedup();
        slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(slot: u32, generation: u32) -> WorkerKey {
        WorkerKey {
            slot,
            generation,
            serial: u64::from(slot * 100 + generation),
        }
    }

    #[test]
    fn only_ready_workers_that_did_not_leave_are_eligible() {
        let mut eligible = Eligible::default();
        assert!(eligible.slots().is_empty(), "starting workers get nothing");
        eligible.ready(key(2, 1));
        eligible.ready(key(1, 1));
        eligible.ready(key(3, 1));
        assert_eq!(eligible.slots(), vec![1, 2, 3]);
        eligible.gone(key(2, 1));
        assert_eq!(eligible.slots(), vec![1, 3], "a draining worker");
        eligible.gone(key(3, 1));
        assert_eq!(eligible.slots(), vec![1], "an exited worker");
        eligible.ready(key(3, 2));
        assert_eq!(eligible.slots(), vec![1, 3], "its ready replacement");
    }

    #[test]
    fn a_slot_stays_eligible_while_a_reload_swaps_its_workers() {
        let mut eligible = Eligible::default();
        eligible.ready(key(1, 1));
        eligible.ready(key(1, 2));
        assert_eq!(eligible.slots(), vec![1]);
        eligible.gone(key(1, 1));
        assert!(eligible.has(1));
        eligible.gone(key(1, 2));
        assert!(!eligible.has(1));
    }

    #[test]
    fn a_removed_slot_is_never_eligible() {
        let mut eligible = Eligible::default();
        eligible.ready(key(1, 1));
        eligible.ready(key(2, 1));
        eligible.remove_slot(2);
        assert_eq!(eligible.slots(), vec![1]);
    }
}
