//! The bounds of every setting, in one place. The `Cluster` builder checks
//! against them, and the command line checks its flags against the same
//! ones, so a value either accepts is one the workers' environment carries
//! (`CORRAL_GRACE_MS`, `CORRAL_HEARTBEAT_MS`, `CORRAL_MAX_MESSAGE_SIZE`) and
//! a worker can read: a bad value is refused once, up front, in one line,
//! never by every worker at start.

use std::time::Duration;

use crate::error::Error;

/// The largest number of workers a cluster accepts.
pub const MAX_WORKERS: usize = 1024;

/// The longest duration any setting takes (grace, timeouts, restart
/// delays): a year.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The smallest and largest `max_message_size` (`--max-message-size`), in
/// bytes: 4 GiB at most; at least a round 2 KiB, above the longest line
/// corral's own protocol and Node's cluster protocol need (see
/// `check_message_size`), so that every worker can say it is ready and
/// every Node `listen()` can be answered.
pub const MIN_MESSAGE_SIZE: u64 = 2048;
pub const MAX_MESSAGE_SIZE: u64 = 1 << 32;

/// The largest `max_requests` and its jitter (`--max-requests`,
/// `--max-requests-jitter`), so their sum cannot overflow.
pub const MAX_REQUESTS: u64 = 1 << 48;

/// Checks a duration setting; `flag` names it in the error.
pub fn check_duration(flag: &str, value: Duration) -> Result<(), Error> {
    if value > MAX_DURATION {
        return Err(Error::Config(format!(
            "{flag} must be at most {} seconds (a year), not {}",
            MAX_DURATION.as_secs(),
            value.as_secs_f64()
        )));
    }
    Ok(())
}

/// Checks a message size in bytes.
pub fn check_message_size(bytes: u64) -> Result<(), Error> {
    if !(MIN_MESSAGE_SIZE..=MAX_MESSAGE_SIZE).contains(&bytes) {
        return Err(Error::Config(format!(
            "the largest message (--max-message-size) must be from {MIN_MESSAGE_SIZE} to \
             {MAX_MESSAGE_SIZE} bytes (4 GiB), not {bytes}: a smaller limit would drop the \
             lines workers say they are ready with and Node's listen() requests"
        )));
    }
    Ok(())
}

/// Checks a request count (`--max-requests` or its jitter).
pub fn check_requests(flag: &str, count: u64) -> Result<(), Error> {
    if count > MAX_REQUESTS {
        return Err(Error::Config(format!(
            "{flag} must be at most {MAX_REQUESTS}, not {count}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounds_are_inclusive_and_errors_name_the_flag() {
        assert!(check_duration("--grace", MAX_DURATION).is_ok());
        let err = check_duration("--grace", MAX_DURATION + Duration::from_millis(1)).unwrap_err();
        assert!(
            err.to_string()
                .contains("--grace must be at most 31536000 seconds")
        );
        assert!(check_message_size(MAX_MESSAGE_SIZE).is_ok());
        assert!(check_message_size(MAX_MESSAGE_SIZE + 1).is_err());
        assert!(check_message_size(1).is_err());
        assert!(check_message_size(MIN_MESSAGE_SIZE - 1).is_err());
        assert!(check_message_size(MIN_MESSAGE_SIZE).is_ok());
        assert!(check_requests("--max-requests", MAX_REQUESTS).is_ok());
        assert!(check_requests("--max-requests", u64::MAX).is_err());
    }

    #[test]
    fn the_smallest_message_size_holds_every_protocol_line() {
        let needed = crate::protocol::message::longest_control_line()
            .max(crate::protocol::node::longest_cluster_message());
        assert!(needed as u64 <= MIN_MESSAGE_SIZE, "{needed}");
    }

    #[test]
    fn the_largest_values_fit_the_worker_environment() {
        // The environment carries milliseconds as u64, sizes as u64, and
        // a heartbeat of a quarter of the watchdog timeout.
        assert!(u64::try_from(MAX_DURATION.as_millis()).is_ok());
        assert!(usize::try_from(MAX_MESSAGE_SIZE).is_ok());
        assert!(MAX_REQUESTS.checked_add(MAX_REQUESTS).is_some());
    }
}
