//! The `round-robin` policy: each new connection goes to the next worker in
//! turn, skipping workers that cannot take connections right now (Node's
//! `SCHED_RR`, without its per-connection cost: see `hand_off.rs`).

use std::os::fd::BorrowedFd;

use super::pick::{Candidates, Pick};

#[derive(Debug, Default)]
pub(crate) struct RoundRobin {
    next: usize,
}

impl Pick for RoundRobin {
    fn pick(&mut self, targets: &dyn Candidates, _: BorrowedFd<'_>) -> Option<usize> {
        let count = targets.count();
        let chosen = (0..count)
            .map(|step| (self.next + step) % count)
            .find(|&index| targets.accepting(index))?;
        self.next = chosen + 1;
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;
    use crate::balance::pick::no_connection;

    fn picks(strategy: &mut RoundRobin, targets: &Vec<(bool, u64)>, count: usize) -> Vec<usize> {
        let connection = no_connection();
        (0..count)
            .map(|_| {
                strategy
                    .pick(targets, connection.as_fd())
                    .expect("a worker accepts")
            })
            .collect()
    }

    #[test]
    fn workers_take_turns() {
        let mut strategy = RoundRobin::default();
        let targets = vec![(true, 0), (true, 0), (true, 0)];
        assert_eq!(picks(&mut strategy, &targets, 7), [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn a_worker_that_cannot_take_connections_is_skipped_and_keeps_its_turn_order() {
        let mut strategy = RoundRobin::default();
        let targets = vec![(true, 0), (false, 0), (true, 0)];
        assert_eq!(picks(&mut strategy, &targets, 4), [0, 2, 0, 2]);
        // Open connections do not matter to round-robin.
        let targets = vec![(true, 100), (true, 0)];
        assert_eq!(picks(&mut strategy, &targets, 2), [1, 0]);
    }

    #[test]
    fn nobody_accepting_is_no_pick() {
        let connection = no_connection();
        let mut strategy = RoundRobin::default();
        assert_eq!(
            strategy.pick(&vec![(false, 0), (false, 0)], connection.as_fd()),
            None
        );
        assert_eq!(
            strategy.pick(&Vec::<(bool, u64)>::new(), connection.as_fd()),
            None
        );
    }
}
