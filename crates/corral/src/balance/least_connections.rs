//! The `least-connections` policy: each new connection goes to the worker
//! with the fewest open connections (handed to it and not yet reported
//! closed), so long-lived connections and uneven requests balance by real
//! load. Ties rotate, so an idle cluster is served in turn.

use std::os::fd::BorrowedFd;

use super::pick::{Candidates, Pick};

#[derive(Debug, Default)]
pub(crate) struct LeastConnections {
    next: usize,
}

impl Pick for LeastConnections {
    fn pick(&mut self, targets: &dyn Candidates, _: BorrowedFd<'_>) -> Option<usize> {
        let count = targets.count();
        let chosen = (0..count)
            .map(|step| (self.next + step) % count)
            .filter(|&index| targets.accepting(index))
            .min_by_key(|&index| targets.open_connections(index))?;
        self.next = chosen + 1;
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;
    use crate::balance::pick::no_connection;

    #[test]
    fn the_worker_with_the_fewest_open_connections_gets_the_next() {
        let connection = no_connection();
        let mut strategy = LeastConnections::default();
        assert_eq!(
            strategy.pick(&vec![(true, 5), (true, 2), (true, 9)], connection.as_fd()),
            Some(1)
        );
    }

    #[test]
    fn ties_rotate_so_an_idle_cluster_is_served_in_turn() {
        let connection = no_connection();
        let mut strategy = LeastConnections::default();
        let idle = vec![(true, 0), (true, 0), (true, 0)];
        let picks: Vec<Option<usize>> = (0..4)
            .map(|_| strategy.pick(&idle, connection.as_fd()))
            .collect();
        assert_eq!(picks, [Some(0), Some(1), Some(2), Some(0)]);
    }

    #[test]
    fn a_worker_that_cannot_take_connections_is_skipped_however_idle() {
        let connection = no_connection();
        let mut strategy = LeastConnections::default();
        assert_eq!(
            strategy.pick(&vec![(false, 0), (true, 40)], connection.as_fd()),
            Some(1)
        );
        assert_eq!(
            strategy.pick(&vec![(false, 0), (false, 1)], connection.as_fd()),
            None
        );
    }
}
