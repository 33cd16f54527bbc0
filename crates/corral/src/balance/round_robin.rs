//! The `round-robin` policy: each new connection goes to the next worker in
//! turn, skipping workers that cannot take connections right now (Node's
//! `SCHED_RR`, without its per-connection cost: see `dispatch.rs`).

use super::dispatch::{Pick, Target};

#[derive(Debug, Default)]
pub(crate) struct RoundRobin {
    next: usize,
}

impl Pick for RoundRobin {
    fn pick(&mut self, targets: &[Target]) -> Option<usize> {
        let count = targets.len();
        let chosen = (0..count)
            .map(|step| (self.next + step) % count)
            .find(|&index| targets[index].accepting())?;
        self.next = chosen + 1;
        Some(chosen)
    }
}
