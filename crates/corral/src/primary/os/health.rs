//! Worker health: the watchdog (a worker whose heartbeats stop is hung: it
//! is killed and replaced) and recycling (a worker over `--max-memory` or
//! past `--max-requests` is replaced gracefully, as a one-slot reload).

use std::time::Duration;

/// How often worker memory is compared with `--max-memory`.
pub(crate) const MEMORY_CHECK: Duration = Duration::from_secs(1);

/// A worker's share of `--max-requests-jitter`: spread over 0..=`jitter` by
/// its pid, so workers started together are not recycled together.
pub(crate) fn jitter(pid: u32, jitter: u64) -> u64 {
    if jitter == 0 {
        return 0;
    }
    u64::from(pid).wrapping_mul(0x9E37_79B9_7F4A_7C15) % (jitter + 1)
}

/// The resident set size of process `pid`, in bytes.
pub(crate) fn resident_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}
