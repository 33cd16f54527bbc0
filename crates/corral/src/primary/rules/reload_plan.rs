//! The rolling reload's state machine: which slots are still to replace,
//! which replacements are awaited, when the reload is complete. It decides
//! the next step; the supervisor (`steering.rs`) starts processes and reports
//! back what happened. At most `max_surge` replacements are awaited at once.

use std::collections::VecDeque;

use crate::primary::event::ReloadKind;
use crate::worker_key::WorkerKey;

/// A rolling reload (or recycling, the same for chosen slots) under way.
#[derive(Debug)]
pub(crate) struct ReloadPlan {
    kind: ReloadKind,
    /// Slots still to replace, in order.
    queue: VecDeque<u32>,
    /// The replacements started and not yet ready.
    awaiting: Vec<WorkerKey>,
    /// Another reload was asked for meanwhile: it runs after this one.
    again: bool,
    replaced: usize,
}

/// What the supervisor does next for the reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReloadStep {
    /// Start a replacement for this slot, then report it with
    /// [`ReloadPlan::started`] (or abort the reload).
    Replace(u32),
    /// Wait for the replacements under way.
    Wait,
    /// Every slot is replaced; the reload is over.
    Complete {
        kind: ReloadKind,
        replaced: usize,
        /// Another reload was asked for during this one.
        again: bool,
    },
}

impl ReloadPlan {
    /// A reload of `slots`, in order.
    pub(crate) fn rolling(slots: impl IntoIterator<Item = u32>) -> Self {
        Self::new(ReloadKind::Rolling, slots.into_iter().collect())
    }

    /// The graceful replacement of one slot's worker.
    pub(crate) fn recycling(slot: u32) -> Self {
        Self::new(ReloadKind::Recycling, VecDeque::from([slot]))
    }

    fn new(kind: ReloadKind, queue: VecDeque<u32>) -> Self {
        ReloadPlan {
            kind,
            queue,
            awaiting: Vec::new(),
            again: false,
            replaced: 0,
        }
    }

    /// Replacements done so far.
    pub(crate) fn replaced(&self) -> usize {
        self.replaced
    }

    /// A reload of every worker (not the recycling of some).
    pub(crate) fn is_rolling(&self) -> bool {
        self.kind == ReloadKind::Rolling
    }

    /// What it is, as events name it.
    pub(crate) fn kind(&self) -> ReloadKind {
        self.kind
    }

    /// Slots left to replace, the ones under way included.
    pub(crate) fn remaining(&self) -> usize {
        self.queue.len() + self.awaiting.len()
    }

    /// A rolling reload's progress: replacements done, and in all.
    /// Recycling a worker is not a reload of the service: `None`.
    pub(crate) fn progress(&self) -> Option<(usize, usize)> {
        let total = self.replaced + self.remaining();
        self.is_rolling().then_some((self.replaced, total))
    }

    /// Another reload was asked for: it follows this one (requests in
    /// between count once).
    pub(crate) fn ask_again(&mut self) {
        self.again = true;
    }

    /// Adds `slot` to the slots to replace, unless it is already there.
    pub(crate) fn recycle(&mut self, slot: u32) {
        let awaited = self.awaiting.iter().any(|key| key.slot == slot);
        if !awaited && !self.queue.contains(&slot) {
            self.queue.push_back(slot);
        }
    }

    /// The next step. `replaceable` tells whether a slot can be replaced
    /// now (it may have shrunk away, or lost its worker, meanwhile): those
    /// that cannot are skipped.
    pub(crate) fn next_step(
        &mut self,
        max_surge: usize,
        replaceable: impl Fn(u32) -> bool,
    ) -> ReloadStep {
        if self.awaiting.len() >= max_surge {
            return ReloadStep::Wait;
        }
        while let Some(slot) = self.queue.pop_front() {
            if replaceable(slot) {
                return ReloadStep::Replace(slot);
            }
        }
        if self.awaiting.is_empty() {
            ReloadStep::Complete {
                kind: self.kind,
                replaced: self.replaced,
                again: self.again,
            }
        } else {
            ReloadStep::Wait
        }
    }

    /// The replacement `key` was started: the reload waits for it.
    pub(crate) fn started(&mut self, key: WorkerKey) {
        self.awaiting.push(key);
    }

    /// Whether the reload waits for the process `key`.
    pub(crate) fn awaits(&self, key: WorkerKey) -> bool {
        self.awaiting.contains(&key)
    }

    /// Slot `slot`'s replacement is ready and now serves.
    pub(crate) fn promoted(&mut self, slot: u32) {
        let before = self.awaiting.len();
        self.awaiting.retain(|key| key.slot != slot);
        if self.awaiting.len() < before {
            self.replaced += 1;
        }
    }

    /// Slot `slot` was removed (the cluster shrank): it is neither replaced
    /// nor waited for, and does not count as replaced.
    pub(crate) fn drop_slot(&mut self, slot: u32) {
        self.queue.retain(|&queued| queued != slot);
        self.awaiting.retain(|key| key.slot != slot);
    }

    /// Gives the reload up because slot `failed`'s replacement failed.
    /// Returns the slots whose replacements go (every one under way, and
    /// `failed`); their old workers stay.
    pub(crate) fn abort(self, failed: u32) -> Vec<u32> {
        let mut slots: Vec<u32> = self.awaiting.iter().map(|key| key.slot).collect();
        if !slots.contains(&failed) {
            slots.push(failed);
        }
        slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(_: u32) -> bool {
        true
    }

    #[test]
    fn a_slot_removed_during_the_reload_is_neither_awaited_nor_counted() {
        let mut plan = ReloadPlan::rolling([1, 2, 3]);
        for slot in 1..=2 {
            assert_eq!(plan.next_step(2, all), ReloadStep::Replace(slot));
            plan.started(WorkerKey::new(slot, 2, u64::from(slot)));
        }
        plan.drop_slot(2);
        plan.drop_slot(3);
        assert!(!plan.awaits(WorkerKey::new(2, 2, 2)));
        assert_eq!(plan.remaining(), 1);
        plan.promoted(1);
        let complete = ReloadStep::Complete {
            kind: ReloadKind::Rolling,
            replaced: 1,
            again: false,
        };
        assert_eq!(plan.next_step(2, all), complete);
    }

    /// Runs `plan` as a supervisor whose replacements are ready at once
    /// would, and returns the order of the replacements.
    fn run_instantly(plan: &mut ReloadPlan, surge: usize) -> (Vec<u32>, ReloadStep) {
        let mut order = Vec::new();
        loop {
            match plan.next_step(surge, all) {
                ReloadStep::Replace(slot) => {
                    order.push(slot);
                    plan.started(WorkerKey::new(slot, 2, 0));
                    plan.promoted(slot);
                }
                step => return (order, step),
            }
        }
    }

    #[test]
    fn slots_are_replaced_in_order_then_the_reload_completes() {
        let mut plan = ReloadPlan::rolling([1, 2, 3]);
        let (order, end) = run_instantly(&mut plan, 1);
        assert_eq!(order, [1, 2, 3]);
        assert_eq!(
            end,
            ReloadStep::Complete {
                kind: ReloadKind::Rolling,
                replaced: 3,
                again: false
            }
        );
    }

    #[test]
    fn one_replacement_at_a_time_waits_for_readiness() {
        let mut plan = ReloadPlan::rolling([1, 2]);
        assert_eq!(plan.next_step(1, all), ReloadStep::Replace(1));
        let key = WorkerKey::new(1, 2, 0);
        plan.started(key);
        assert!(plan.awaits(key));
        assert!(!plan.awaits(WorkerKey::new(1, 1, 0)), "not the old worker");
        assert_eq!(plan.next_step(1, all), ReloadStep::Wait);
        plan.promoted(1);
        assert_eq!(plan.next_step(1, all), ReloadStep::Replace(2));
    }

    #[test]
    fn a_surge_of_two_starts_two_replacements_at_once() {
        let mut plan = ReloadPlan::rolling([1, 2, 3]);
        for slot in [1, 2] {
            assert_eq!(plan.next_step(2, all), ReloadStep::Replace(slot));
            plan.started(WorkerKey::new(slot, 2, 0));
        }
        assert_eq!(plan.next_step(2, all), ReloadStep::Wait);
        assert_eq!(plan.remaining(), 3);
        plan.promoted(2);
        assert_eq!(plan.next_step(2, all), ReloadStep::Replace(3));
    }

    #[test]
    fn slots_that_cannot_be_replaced_are_skipped() {
        let mut plan = ReloadPlan::rolling([1, 2, 3]);
        assert_eq!(plan.next_step(1, |slot| slot == 3), ReloadStep::Replace(3));
        plan.started(WorkerKey::new(3, 5, 0));
        plan.promoted(3);
        assert_eq!(
            plan.next_step(1, all),
            ReloadStep::Complete {
                kind: ReloadKind::Rolling,
                replaced: 1,
                again: false
            }
        );
    }

    #[test]
    fn progress_counts_a_rolling_reload_but_not_recycling() {
        let mut plan = ReloadPlan::rolling([1, 2, 3]);
        assert_eq!(plan.progress(), Some((0, 3)));
        plan.next_step(1, all);
        plan.started(WorkerKey::new(1, 2, 0));
        assert_eq!(plan.progress(), Some((0, 3)));
        plan.promoted(1);
        assert_eq!(plan.progress(), Some((1, 3)));
        assert_eq!(ReloadPlan::recycling(1).progress(), None);
    }

    #[test]
    fn a_reload_asked_during_one_is_reported_once_at_the_end() {
        let mut plan = ReloadPlan::rolling([1]);
        plan.ask_again();
        plan.ask_again();
        let (_, end) = run_instantly(&mut plan, 1);
        assert!(matches!(end, ReloadStep::Complete { again: true, .. }));
    }

    #[test]
    fn recycling_queues_a_slot_once() {
        let mut plan = ReloadPlan::recycling(2);
        assert_eq!(plan.kind(), ReloadKind::Recycling);
        plan.recycle(2);
        plan.recycle(3);
        assert_eq!(plan.next_step(1, all), ReloadStep::Replace(2));
        plan.started(WorkerKey::new(2, 4, 0));
        plan.recycle(2);
        plan.promoted(2);
        assert_eq!(plan.next_step(1, all), ReloadStep::Replace(3));
        plan.started(WorkerKey::new(3, 1, 0));
        plan.promoted(3);
        assert!(matches!(
            plan.next_step(1, all),
            ReloadStep::Complete { replaced: 2, .. }
        ));
    }

    #[test]
    fn an_abort_gives_up_every_replacement_under_way() {
        let mut plan = ReloadPlan::rolling([1, 2, 3]);
        for slot in [1, 2] {
            plan.next_step(2, all);
            plan.started(WorkerKey::new(slot, 2, 0));
        }
        assert_eq!(plan.abort(2), [1, 2]);
        let plan = ReloadPlan::rolling([4]);
        assert_eq!(plan.abort(4), [4], "a replacement that could not start");
    }

    #[test]
    fn a_late_promotion_does_not_count_twice() {
        let mut plan = ReloadPlan::rolling([1]);
        plan.next_step(1, all);
        plan.started(WorkerKey::new(1, 2, 0));
        plan.promoted(1);
        plan.promoted(1);
        assert!(matches!(
            plan.next_step(1, all),
            ReloadStep::Complete { replaced: 1, .. }
        ));
    }
}
