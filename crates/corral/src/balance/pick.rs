//! What a hand-off policy ([`hand_off`](super::hand_off)) differs in: how it
//! picks the worker for each new connection, and what it sees of the
//! workers to pick from.

use std::os::fd::BorrowedFd;

/// How a hand-off policy chooses the worker for each new connection.
pub(crate) trait Pick: Send {
    /// The index of the worker for `connection`, among those
    /// [`Candidates::accepting`]; `None` when none is.
    fn pick(&mut self, targets: &dyn Candidates, connection: BorrowedFd<'_>) -> Option<usize>;
}

/// What a [`Pick`] sees of the ready workers, by index.
pub(crate) trait Candidates {
    fn count(&self) -> usize;
    /// The worker's slot number (1-based, as `CORRAL_WORKER_ID`).
    fn slot(&self, index: usize) -> u32;
    /// Whether the worker can be given a connection now.
    fn accepting(&self, index: usize) -> bool;
    /// Connections handed to the worker that it has not reported closed.
    fn open_connections(&self, index: usize) -> u64;
}

/// Workers as plain (accepting, open connections) pairs, for the
/// strategies' unit tests; the worker at index `i` has slot `i + 1`.
#[cfg(test)]
impl Candidates for Vec<(bool, u64)> {
    fn count(&self) -> usize {
        self.len()
    }

    fn slot(&self, index: usize) -> u32 {
        index as u32 + 1
    }

    fn accepting(&self, index: usize) -> bool {
        self[index].0
    }

    fn open_connections(&self, index: usize) -> u64 {
        self[index].1
    }
}

/// A connection for the strategies' unit tests that ignore it.
#[cfg(test)]
pub(crate) fn no_connection() -> std::os::fd::OwnedFd {
    std::fs::File::open("/dev/null")
        .expect("/dev/null opens")
        .into()
}
