//! The commands that operate a running cluster through its control socket:
//! `ls`, `status`, `reload`, `scale`, `stop`, `logs`, `events` (and `top`,
//! in its own module). Each finds the cluster (by NAME, by `--control
//! PATH`, or as the one cluster of this user that runs), asks, and prints
//! text or, with `--json`, JSON.
//!
//! Exit codes: 0 done; 1 the cluster refused or the operation failed (an
//! aborted reload, a scale past the limits); 2 bad usage; 3 no cluster
//! could be reached.

mod events;
mod logs;
mod ls;
mod reload;
mod scale;
mod status;
mod stop;
pub(crate) mod target;

use std::io::{self, Write};
use std::process::ExitCode;

use crate::args::Command;

pub(crate) use target::Unreachable;

/// The exit code for "no cluster could be reached".
pub(crate) const EXIT_UNREACHABLE: u8 = 3;

/// Runs a control command; `None` when `command` is not one.
pub(crate) fn run(command: Command) -> Result<Option<()>, anyhow::Error> {
    let done = match command {
        Command::Ls(args) => ls::run(&args),
        Command::Status(args) => status::run(&args),
        Command::Reload(args) => reload::run(&args),
        Command::Scale(args) => scale::run(&args),
        Command::Stop(args) => stop::run(&args),
        Command::Logs(args) => logs::run(&args),
        Command::Events(args) => events::run(&args),
        Command::Top(args) => crate::top::run(&args),
        Command::Run(_) | Command::DemoWorker(_) | Command::Check(_) | Command::Generate(_) => {
            return Ok(None);
        }
    };
    done.map(Some)
}

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

/// An exit code that is not 0 or 1, for main to return.
pub(crate) fn exit_code(err: &anyhow::Error) -> ExitCode {
    if err.downcast_ref::<Unreachable>().is_some() {
        ExitCode::from(EXIT_UNREACHABLE)
    } else {
        ExitCode::FAILURE
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
