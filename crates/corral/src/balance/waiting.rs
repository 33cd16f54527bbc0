//! The queue of connections the hand-off dispatcher holds between
//! accepting them and handing them to a worker.

use std::collections::VecDeque;

use crate::protocol::handoff::Handed;

/// Connections accepted, returned or taken back, not yet handed on. Those
/// that come back go first, in their order: they waited longest.
#[derive(Debug, Default)]
pub(super) struct Waiting(VecDeque<Handed>);

impl Waiting {
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn push(&mut self, handed: Handed) {
        self.0.push_back(handed);
    }

    pub(super) fn pop(&mut self) -> Option<Handed> {
        self.0.pop_front()
    }

    /// Puts connections that came back (or were `pop`ped and not handed)
    /// at the front, in their order.
    pub(super) fn requeue(&mut self, connections: impl DoubleEndedIterator<Item = Handed>) {
        for handed in connections.rev() {
            self.0.push_front(handed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;

    use super::*;

    fn connection(listener: u8) -> Handed {
        let fd = std::fs::File::open("/dev/null").expect("/dev/null opens");
        Handed {
            fd: OwnedFd::from(fd),
            listener,
        }
    }

    fn order(waiting: &mut Waiting) -> Vec<u8> {
        std::iter::from_fn(|| waiting.pop())
            .map(|handed| handed.listener)
            .collect()
    }

    #[test]
    fn connections_that_come_back_go_first_in_their_order() {
        let mut waiting = Waiting::default();
        waiting.push(connection(10));
        waiting.push(connection(11));
        waiting.requeue([connection(1), connection(2), connection(3)].into_iter());
        assert_eq!(waiting.len(), 5);
        assert_eq!(order(&mut waiting), [1, 2, 3, 10, 11]);
        assert!(waiting.is_empty());
    }

    #[test]
    fn a_connection_popped_and_not_handed_keeps_its_place() {
        let mut waiting = Waiting::default();
        for listener in [1, 2, 3] {
            waiting.push(connection(listener));
        }
        let first = waiting.pop().expect("one waits");
        waiting.requeue(std::iter::once(first));
        assert_eq!(order(&mut waiting), [1, 2, 3]);
    }
}
