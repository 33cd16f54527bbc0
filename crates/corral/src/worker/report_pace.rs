//! How often a worker under `least-connections` reports closed connections.
//! Each report wakes the primary (a `recvmsg` and a trip through its event
//! loop), and at thousands of new connections a second one report per close
//! was a third of the primary's wake-ups per connection. So closes are
//! reported at once when they are rare, and at most once per interval when
//! they come fast: one report then carries every close of that interval,
//! and the primary's counts lag by at most that.
//!
//! On the hand-off channel ([`REPORT_INTERVAL`]) the primary's own picks
//! read the counts at every connection. On the message channel, where the
//! kernel steers and cannot count ([`MESSAGE_REPORT_INTERVAL`]), each report
//! costs the primary a message and a map update, and the counts only need
//! to be roughly current: a longer interval.

use std::time::{Duration, Instant};

/// The shortest time between two close reports on the hand-off channel.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_millis(1);

/// The shortest time between two close reports on the message channel.
pub(crate) const MESSAGE_REPORT_INTERVAL: Duration = Duration::from_millis(5);

/// How long to wait before sending a close report on the hand-off channel
/// at `now`, when the last one went at `last_report` (`None`: never).
pub(crate) fn report_delay(last_report: Option<Instant>, now: Instant) -> Duration {
    delay_within(REPORT_INTERVAL, last_report, now)
}

/// How long to wait before sending a close report at `now`, at most one
/// per `interval`, when the last one went at `last_report`.
pub(crate) fn delay_within(
    interval: Duration,
    last_report: Option<Instant>,
    now: Instant,
) -> Duration {
    match last_report {
        None => Duration::ZERO,
        Some(last) => interval.saturating_sub(now.saturating_duration_since(last)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_report_and_rare_ones_go_at_once() {
        let now = Instant::now();
        assert_eq!(report_delay(None, now), Duration::ZERO);
        assert_eq!(
            report_delay(Some(now), now + REPORT_INTERVAL),
            Duration::ZERO
        );
        assert_eq!(
            report_delay(Some(now), now + Duration::from_secs(3)),
            Duration::ZERO
        );
    }

    #[test]
    fn fast_closes_wait_for_the_rest_of_the_interval() {
        let last = Instant::now();
        let soon = last + Duration::from_micros(300);
        assert_eq!(
            report_delay(Some(last), soon),
            REPORT_INTERVAL - Duration::from_micros(300)
        );
        assert_eq!(report_delay(Some(last), last), REPORT_INTERVAL);
    }

    #[test]
    fn message_channel_reports_wait_for_their_longer_interval() {
        let last = Instant::now();
        let soon = last + Duration::from_millis(2);
        assert_eq!(
            delay_within(MESSAGE_REPORT_INTERVAL, Some(last), soon),
            Duration::from_millis(3)
        );
        assert_eq!(
            delay_within(MESSAGE_REPORT_INTERVAL, None, soon),
            Duration::ZERO
        );
    }

    #[test]
    fn a_clock_that_reads_earlier_than_the_last_report_waits_one_interval_at_most() {
        let last = Instant::now() + Duration::from_millis(5);
        assert_eq!(report_delay(Some(last), Instant::now()), REPORT_INTERVAL);
    }
}
