//! How the commands show things: values in human form (sizes, uptimes,
//! timestamps) and lines written to stdout.

use std::io::{self, Write};

/// Writes `text` to stdout; a closed stdout (`corral logs | head`) ends
/// the command quietly instead of panicking.
pub(crate) fn print(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Prints `value` as one line of JSON.
pub(crate) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut line = serde_json::to_string(value)?;
    line.push('\n');
    print(&line)?;
    Ok(())
}

/// Seconds as `3d4h`, `2h05m`, `4m07s`, `12s`.
pub(crate) fn human_uptime(seconds: f64) -> String {
    let total = seconds.max(0.0) as u64;
    let (days, hours, minutes, secs) = (
        total / 86_400,
        total / 3_600 % 24,
        total / 60 % 60,
        total % 60,
    );
    if days > 0 {
        format!("{days}d{hours}h")
    } else if hours > 0 {
        format!("{hours}h{minutes:02}m")
    } else if minutes > 0 {
        format!("{minutes}m{secs:02}s")
    } else {
        format!("{secs}s")
    }
}

/// Bytes as `12.3M`, `1.2G`, `900K`.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["K", "M", "G", "T"];
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value >= 100.0 {
        format!("{value:.0}{}", UNITS[unit])
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

/// A short duration as `850µs`, `12.5ms`, `230ms`, `1.25s`.
pub(crate) fn human_latency(seconds: f64) -> String {
    // Not `max(0.0)`, which may keep -0.0 (shown "-0µs").
    let seconds = if seconds > 0.0 { seconds } else { 0.0 };
    if seconds < 0.001 {
        format!("{:.0}µs", seconds * 1e6)
    } else if seconds < 0.1 {
        format!("{:.1}ms", seconds * 1e3)
    } else if seconds < 1.0 {
        format!("{:.0}ms", seconds * 1e3)
    } else {
        format!("{seconds:.2}s")
    }
}

/// Seconds since the epoch as RFC 3339 UTC with milliseconds.
pub(crate) fn timestamp(seconds: f64) -> String {
    // RFC 3339 in UTC, always with milliseconds, so lines align.
    const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    let nanos = (seconds * 1e9) as i128;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|at| at.format(FORMAT).ok())
        .unwrap_or_else(|| format!("{seconds:.3}"))
}

/// A value or `-` for unknown ones.
pub(crate) fn or_dash<T>(value: Option<T>, show: impl FnOnce(T) -> String) -> String {
    value.map_or_else(|| "-".to_string(), show)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_read_at_a_glance() {
        assert_eq!(human_latency(0.000_85), "850µs");
        assert_eq!(human_latency(0.0125), "12.5ms");
        assert_eq!(human_latency(0.23), "230ms");
        assert_eq!(human_latency(1.25), "1.25s");
        assert_eq!(human_latency(-0.0), "0µs");
    }

    #[test]
    fn durations_and_sizes_read_well() {
        assert_eq!(human_uptime(5.9), "5s");
        assert_eq!(human_uptime(247.0), "4m07s");
        assert_eq!(human_uptime(7_500.0), "2h05m");
        assert_eq!(human_uptime(3.0 * 86_400.0 + 4.0 * 3_600.0), "3d4h");
        assert_eq!(human_bytes(900 * 1024), "900K");
        assert_eq!(human_bytes(12_897_485), "12.3M");
        assert_eq!(human_bytes(3 << 30), "3.0G");
    }
}
