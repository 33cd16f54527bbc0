//! How many of one worker's messages `--on-message broadcast` relays to the
//! others: at most [`RELAYS_PER_SECOND`] a second. Two workers that each
//! answer every message they receive (the tutorials' IPC program) relay each
//! other's answers forever, and every relay reaches every other worker: a
//! storm that grows until the machine is busy with it. The budget damps such
//! a loop to a steady trickle, and the first message over it each second is
//! reported, so the loop is seen; the messages still reach the user's
//! `Primary` handle and the log, they are only not relayed.

use std::time::{Duration, Instant};

/// The relays one worker gets per second.
pub(crate) const RELAYS_PER_SECOND: u32 = 100;

/// One worker's relays in the current second.
#[derive(Debug)]
pub(crate) struct RelayBudget {
    window_start: Option<Instant>,
    used: u32,
    refused: u64,
}

/// What to do with one message to relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Relay {
    /// Relay it.
    Yes,
    /// Over the budget, the first time this second: don't relay it, and
    /// warn (a loop, most likely).
    NoAndWarn,
    /// Over the budget again this second: don't relay it.
    No,
}

impl RelayBudget {
    pub(crate) const fn new() -> Self {
        RelayBudget {
            window_start: None,
            used: 0,
            refused: 0,
        }
    }

    /// Whether a message sent `now` is relayed.
    pub(crate) fn spend(&mut self, now: Instant) -> Relay {
        let expired = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= Duration::from_secs(1));
        if expired {
            self.window_start = Some(now);
            self.used = 0;
        }
        if self.used < RELAYS_PER_SECOND {
            self.used += 1;
            return Relay::Yes;
        }
        self.refused += 1;
        if self.used == RELAYS_PER_SECOND {
            // Counted past the budget once, so the warning comes once a
            // second at most.
            self.used += 1;
            return Relay::NoAndWarn;
        }
        Relay::No
    }

    /// Messages not relayed so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_relays_the_budget_then_warns_once() {
        let mut budget = RelayBudget::new();
        let start = Instant::now();
        for _ in 0..RELAYS_PER_SECOND {
            assert_eq!(budget.spend(start), Relay::Yes);
        }
        assert_eq!(budget.spend(start), Relay::NoAndWarn);
        assert_eq!(budget.spend(start + Duration::from_millis(500)), Relay::No);
        assert_eq!(budget.refused(), 2);
    }

    #[test]
    fn the_next_second_has_a_new_budget() {
        let mut budget = RelayBudget::new();
        let start = Instant::now();
        for _ in 0..=RELAYS_PER_SECOND {
            budget.spend(start);
        }
        let later = start + Duration::from_secs(1);
        assert_eq!(budget.spend(later), Relay::Yes);
    }
}
