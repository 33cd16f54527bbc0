//! The `least-connections` policy: each new connection goes to the worker
//! with the fewest open connections (handed to it and not yet reported
//! closed), so long-lived connections and uneven requests balance by real
//! load. Ties rotate, so an idle cluster is served in turn.

use super::dispatch::{Pick, Target};

#[derive(Debug, Default)]
pub(crate) struct LeastConnections {
    next: usize,
}

impl Pick for LeastConnections {
    fn pick(&mut self, targets: &[Target]) -> Option<usize> {
        let count = targets.len();
        let chosen = (0..count)
            .map(|step| (self.next + step) % count)
            .filter(|&index| targets[index].accepting())
            .min_by_key(|&index| targets[index].open_connections())?;
        self.next = chosen + 1;
        Some(chosen)
    }
}
