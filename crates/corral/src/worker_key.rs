//! The one name of a worker process inside the primary: its slot and the
//! slot's generation when it was started. A slot outlives its workers, so
//! the slot id alone is ambiguous during a reload (old worker, successor)
//! and after a restart; every notice, timer, table and balancer entry about
//! one process carries this key, and a late message about a process that
//! has since been replaced finds nothing.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct WorkerKey {
    /// The slot, 1-based (`CORRAL_WORKER_ID`).
    pub slot: u32,
    /// The slot's start count when this process was started
    /// (`CORRAL_GENERATION`).
    pub generation: u32,
}

impl WorkerKey {
    pub(crate) fn new(slot: u32, generation: u32) -> Self {
        WorkerKey { slot, generation }
    }
}

/// As the logs name a worker: by its slot, which is what operators see.
impl fmt::Display for WorkerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker {}", self.slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_slot_differ_by_generation_and_sort_by_slot_first() {
        let old = WorkerKey::new(2, 1);
        let new = WorkerKey::new(2, 2);
        assert_ne!(old, new);
        assert!(old < new);
        assert!(WorkerKey::new(1, 9) < old);
        assert_eq!(new.to_string(), "worker 2");
    }
}
