//! The one name of a worker process inside the primary. A slot outlives its
//! workers, so the slot id alone is ambiguous during a reload (old worker,
//! successor) and after a restart; and a slot's generation is not unique
//! either, since a slot removed by a scale-down and added again starts
//! counting anew. So every process also gets a serial number, counted for
//! the whole cluster and never given twice: every notice, timer, table and
//! balancer entry about one process carries its key, and a late message or
//! timer about a process that has since been replaced finds nothing, even
//! when the new process has the same slot and generation.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct WorkerKey {
    /// The slot, 1-based (`CORRAL_WORKER_ID`).
    pub slot: u32,
    /// The slot's start count when this process was started
    /// (`CORRAL_GENERATION`).
    pub generation: u32,
    /// The cluster's count of processes started, at this one: what makes
    /// the key unique.
    pub serial: u64,
}

impl WorkerKey {
    pub(crate) fn new(slot: u32, generation: u32, serial: u64) -> Self {
        WorkerKey {
            slot,
            generation,
            serial,
        }
    }
}

/// As the logs name a worker: by its slot, which is what operators see.
impl fmt::Display for WorkerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker {}", self.slot)
    }
}

/// The source of process serials: one per cluster, counting every start.
#[derive(Debug, Default)]
pub(crate) struct Serials {
    last: u64,
}

impl Serials {
    /// The serial of the next process started.
    pub(crate) fn next(&mut self) -> u64 {
        self.last += 1;
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_slot_differ_by_generation_and_sort_by_slot_first() {
        let old = WorkerKey::new(2, 1, 5);
        let new = WorkerKey::new(2, 2, 6);
        assert_ne!(old, new);
        assert!(old < new);
        assert!(WorkerKey::new(1, 9, 9) < old);
        assert_eq!(new.to_string(), "worker 2");
    }

    #[test]
    fn serials_are_never_given_twice() {
        let mut serials = Serials::default();
        let first = serials.next();
        let second = serials.next();
        assert_ne!(first, second);
        assert!(first < second);
    }
}
