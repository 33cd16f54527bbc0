//! Rate limiting of repeated log lines. A warning that can repeat once per
//! message, connection or output line (a refused broadcast, a malformed
//! message, an accept error) would otherwise flood the log: one flood
//! measured 1.43 M lines in 4 s. Each such site holds a [`RateLimit`]: a
//! few lines per window are written, the rest are counted, and the next
//! line written after them says how many were left out. A limit that lives
//! as long as the process (a `static`, as `warn_limited!` makes) also has
//! its count said once its window ends with no line after it: the log
//! writer sweeps them ([`sweep`]), so a flood that stops is still counted.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets `burst` lines through per `window`; counts the others.
#[derive(Debug)]
pub(crate) struct RateLimit {
    burst: u32,
    window: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    window_start: Option<Instant>,
    written_in_window: u32,
    suppressed: u64,
    /// Listed for the sweep, under this description.
    swept_as: Option<&'static str>,
}

/// The process-long limits that left lines out, for [`sweep`].
static SWEPT: Mutex<Vec<&'static RateLimit>> = Mutex::new(Vec::new());

impl RateLimit {
    /// `burst` lines per `window`.
    pub(crate) const fn new(burst: u32, window: Duration) -> Self {
        RateLimit {
            burst,
            window,
            state: Mutex::new(State {
                window_start: None,
                written_in_window: 0,
                suppressed: 0,
                swept_as: None,
            }),
        }
    }

    /// Ten lines per ten seconds: for warnings. The first few of a burst
    /// (often different problems from one source) are all shown; a flood
    /// costs a line a second on average.
    pub(crate) const fn warnings() -> Self {
        Self::new(10, Duration::from_secs(10))
    }

    /// Whether to write a line now. `Some(n)`: write it, and say that `n`
    /// lines were left out before it; `None`: leave it out (it is counted).
    pub(crate) fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    /// [`Self::admit`] for a limit that lives as long as the process: what
    /// it leaves out is also said by [`sweep`] once its window ends, as
    /// lines like `what`.
    pub(crate) fn admit_static(&'static self, what: &'static str) -> Option<u64> {
        let verdict = self.admit();
        if verdict.is_none() {
            let mut state = self.lock();
            if state.swept_as.is_none() {
                state.swept_as = Some(what);
                drop(state);
                lock(&SWEPT).push(self);
            }
        }
        verdict
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The count of lines left out in a window that has ended, taken (the
    /// next line then says none).
    fn take_expired(&self, now: Instant) -> Option<(&'static str, u64)> {
        let mut state = self.lock();
        let ended = state
            .window_start
            .is_some_and(|start| now.saturating_duration_since(start) >= self.window);
        if !ended || state.suppressed == 0 {
            return None;
        }
        let what = state.swept_as?;
        Some((what, std::mem::take(&mut state.suppressed)))
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.lock();
        let expired = state
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.window);
        if expired {
            state.window_start = Some(now);
            state.written_in_window = 0;
        }
        if state.written_in_window < self.burst {
            state.written_in_window += 1;
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed += 1;
            None
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Says the counts of lines left out in windows that have ended, for every
/// process-long limit; the log writer calls it about once a second.
pub(crate) fn sweep() {
    let limits: Vec<&'static RateLimit> = lock(&SWEPT).clone();
    let now = Instant::now();
    for (what, suppressed) in limits.iter().filter_map(|limit| limit.take_expired(now)) {
        tracing::warn!(
            event = "not_logged",
            suppressed,
            "{suppressed} more lines like {what:?} were not logged"
        );
    }
}

/// The words appended to a line written after `suppressed` were left out:
/// empty when none were.
pub(crate) fn left_out(suppressed: u64) -> String {
    match suppressed {
        0 => String::new(),
        1 => " (1 more like it was not logged)".to_string(),
        n => format!(" ({n} more like it were not logged)"),
    }
}

/// A `tracing` event at `$level` through a [`RateLimit`] of its own (ten
/// lines per ten seconds per call site, whichever worker caused them, so a
/// restarted worker gets no fresh allowance): writes the line when the
/// limit admits it, with the count of lines left out before it (also as
/// the field `suppressed`). Used through [`warn_limited!`],
/// [`error_limited!`] and [`info_limited!`].
macro_rules! log_limited {
    ($level:expr, $($field:ident = $value:expr,)* $format:literal $(, $arg:expr)* $(,)?) => {{
        static LIMIT: $crate::log::rate::RateLimit = $crate::log::rate::RateLimit::warnings();
        if let Some(suppressed) = LIMIT.admit_static($format) {
            tracing::event!(
                $level,
                $($field = $value,)*
                suppressed,
                "{}{}",
                format_args!($format $(, $arg)*),
                $crate::log::rate::left_out(suppressed)
            );
        }
    }};
}
pub(crate) use log_limited;

/// `tracing::warn!` through a rate limit of its own (see [`log_limited!`]).
macro_rules! warn_limited {
    ($($line:tt)*) => {
        $crate::log::rate::log_limited!(tracing::Level::WARN, $($line)*)
    };
}
pub(crate) use warn_limited;

/// `tracing::error!` through a rate limit of its own (see [`log_limited!`]).
macro_rules! error_limited {
    ($($line:tt)*) => {
        $crate::log::rate::log_limited!(tracing::Level::ERROR, $($line)*)
    };
}
pub(crate) use error_limited;

/// `tracing::info!` through a rate limit of its own (see [`log_limited!`]).
macro_rules! info_limited {
    ($($line:tt)*) => {
        $crate::log::rate::log_limited!(tracing::Level::INFO, $($line)*)
    };
}
pub(crate) use info_limited;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_lines_are_counted_until_the_window_ends() {
        let limit = RateLimit::new(2, Duration::from_secs(1));
        let start = Instant::now();
        assert_eq!(limit.admit_at(start), Some(0));
        assert_eq!(limit.admit_at(start), Some(0));
        for _ in 0..5 {
            assert_eq!(limit.admit_at(start + Duration::from_millis(500)), None);
        }
        // The next window's first line carries the count.
        assert_eq!(limit.admit_at(start + Duration::from_secs(1)), Some(5));
        assert_eq!(limit.admit_at(start + Duration::from_secs(1)), Some(0));
        assert_eq!(limit.admit_at(start + Duration::from_secs(1)), None);
    }

    #[test]
    fn a_flood_of_warnings_writes_ten_lines_then_one_with_the_count() {
        let limit = RateLimit::warnings();
        let start = Instant::now();
        // The measured flood: 1.43 M lines in 4 s.
        let written = (0..1_430_000u64)
            .filter(|i| {
                let at = start + Duration::from_nanos(i * 2_800);
                limit.admit_at(at).is_some()
            })
            .count();
        assert_eq!(written, 10);
        assert_eq!(
            limit.admit_at(start + Duration::from_secs(10)),
            Some(1_429_990)
        );
    }

    #[test]
    fn an_ended_window_gives_up_its_count_once() {
        static LIMIT: RateLimit = RateLimit::new(1, Duration::from_secs(1));
        let start = Instant::now();
        assert_eq!(LIMIT.admit_at(start), Some(0));
        assert_eq!(LIMIT.admit_at(start), None);
        assert_eq!(LIMIT.admit_at(start), None);
        LIMIT.lock().swept_as = Some("a flood");
        assert_eq!(LIMIT.take_expired(start), None, "the window has not ended");
        let later = start + Duration::from_secs(1);
        assert_eq!(LIMIT.take_expired(later), Some(("a flood", 2)));
        assert_eq!(LIMIT.take_expired(later), None, "said once");
        assert_eq!(
            LIMIT.admit_at(later),
            Some(0),
            "and not again by the next line"
        );
    }

    #[test]
    fn the_count_is_said_in_words() {
        assert_eq!(left_out(0), "");
        assert_eq!(left_out(1), " (1 more like it was not logged)");
        assert_eq!(left_out(38_150), " (38150 more like it were not logged)");
    }
}
