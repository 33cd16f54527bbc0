//! Stall detection for one worker of a hand-off policy: a worker that read
//! nothing from its hand-off channel since the last check while connections
//! waited there has stalled (stopped, hung, swamped). Its connections are
//! taken back for the others and it gets none for a rest period, which
//! doubles each time it stalls again (100 ms up to 2 s) and starts over once
//! it reads again. The dispatcher measures; this type decides.

use std::time::{Duration, Instant};

/// How long a worker that stalled first gets no connections.
pub(crate) const FIRST_STALL_REST: Duration = Duration::from_millis(100);
/// The longest rest.
pub(crate) const MAX_STALL_REST: Duration = Duration::from_secs(2);

/// One worker's reading, as seen at the periodic checks.
#[derive(Debug, Clone)]
pub(crate) struct StallWatch {
    /// Connections unread in the channel at the last check.
    unread_at_check: u64,
    /// Connections sent since the last check.
    sent_since_check: u64,
    /// The worker stalled: it gets nothing until then.
    resting_until: Option<Instant>,
    /// The rest it gets if it stalls again.
    next_rest: Duration,
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stall {
    /// The worker reads, or had nothing to read.
    No,
    /// The worker read nothing while `unread` connections waited: take
    /// them back, and give it nothing for `rest`.
    Stalled { unread: u64, rest: Duration },
}

impl Default for StallWatch {
    fn default() -> Self {
        StallWatch {
            unread_at_check: 0,
            sent_since_check: 0,
            resting_until: None,
            next_rest: FIRST_STALL_REST,
        }
    }
}

impl StallWatch {
    /// `count` connections were sent to the worker.
    pub(crate) fn sent(&mut self, count: u64) {
        self.sent_since_check += count;
    }

    /// Whether the worker is resting after a stall.
    pub(crate) fn resting(&self) -> bool {
        self.resting_until.is_some()
    }

    /// The periodic check: `unread` connections are in the worker's
    /// channel now. A stalled worker's unread connections are taken back
    /// by the caller, so the next check starts from an empty channel.
    pub(crate) fn check(&mut self, unread: u64, now: Instant) -> Stall {
        if self.resting_until.is_some_and(|until| now >= until) {
            self.resting_until = None;
        }
        let read = (self.unread_at_check + self.sent_since_check).saturating_sub(unread);
        self.sent_since_check = 0;
        self.unread_at_check = unread;
        if read > 0 {
            // It reads again: a later stall starts over with a short rest.
            self.next_rest = FIRST_STALL_REST;
            return Stall::No;
        }
        if unread == 0 {
            // Nothing to read (idle, or resting with its channel emptied):
            // no sign either way, so the next rest stays as it was.
            return Stall::No;
        }
        let rest = self.next_rest;
        self.resting_until = Some(now + rest);
        self.next_rest = (rest * 2).min(MAX_STALL_REST);
        self.unread_at_check = 0;
        Stall::Stalled { unread, rest }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHECK: Duration = Duration::from_millis(100);

    /// A worker that never reads: each round it is sent `sent` connections
    /// (when not resting) and checked; returns the rests it got.
    fn stalled_worker_rests(rounds: u32, sent: u64) -> Vec<u128> {
        let mut watch = StallWatch::default();
        let mut now = Instant::now();
        let mut unread = 0;
        let mut rests = Vec::new();
        for _ in 0..rounds {
            if !watch.resting() {
                watch.sent(sent);
                unread += sent;
            }
            now += CHECK;
            if let Stall::Stalled { rest, .. } = watch.check(unread, now) {
                rests.push(rest.as_millis());
                unread = 0; // taken back
            }
        }
        rests
    }

    #[test]
    fn a_worker_that_keeps_stalling_rests_longer_each_time_up_to_2s() {
        let rests = stalled_worker_rests(80, 5);
        assert_eq!(rests, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
    }

    #[test]
    fn a_worker_that_reads_is_never_stalled() {
        let mut watch = StallWatch::default();
        let now = Instant::now();
        watch.sent(10);
        assert_eq!(watch.check(4, now), Stall::No, "it read 6");
        watch.sent(3);
        assert_eq!(watch.check(0, now + CHECK), Stall::No);
        assert!(!watch.resting());
    }

    #[test]
    fn an_idle_worker_is_not_stalled() {
        let mut watch = StallWatch::default();
        assert_eq!(watch.check(0, Instant::now()), Stall::No);
    }

    #[test]
    fn a_stalled_worker_rests_then_takes_connections_again() {
        let mut watch = StallWatch::default();
        let start = Instant::now();
        watch.sent(7);
        assert_eq!(
            watch.check(7, start),
            Stall::Stalled {
                unread: 7,
                rest: FIRST_STALL_REST
            }
        );
        assert!(watch.resting());
        assert_eq!(watch.check(0, start + Duration::from_millis(50)), Stall::No);
        assert!(watch.resting(), "the rest is not over");
        assert_eq!(watch.check(0, start + CHECK), Stall::No);
        assert!(!watch.resting());
    }

    #[test]
    fn reading_again_starts_the_rests_over() {
        let mut watch = StallWatch::default();
        let mut now = Instant::now();
        for expected in [100, 200] {
            watch.sent(5);
            now += Duration::from_secs(3);
            let Stall::Stalled { rest, .. } = watch.check(5, now) else {
                panic!("stalled");
            };
            assert_eq!(rest.as_millis(), expected);
        }
        now += Duration::from_secs(3);
        watch.check(0, now);
        watch.sent(5);
        now += CHECK;
        assert_eq!(watch.check(2, now), Stall::No, "it read 3");
        watch.sent(1);
        now += CHECK;
        assert_eq!(
            watch.check(3, now),
            Stall::Stalled {
                unread: 3,
                rest: FIRST_STALL_REST
            }
        );
    }
}
