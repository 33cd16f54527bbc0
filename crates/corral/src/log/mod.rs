//! corral's own logging: the subscriber the CLI and library clusters
//! install, unless the program installed its own first. It writes through a
//! bounded queue that never blocks (`writer`), in text or JSON (`format`),
//! filtered by `CORRAL_LOG` (`filter`); repeated warnings go through a
//! rate limit (`rate`). Every message and field value is escaped
//! (`escape`): a line's text may come from a worker, and must not break
//! the line or drive the terminal.
//!
//! * `CORRAL_LOG`: the filter (`info` by default; `debug`, `corral=trace`…).
//! * `CORRAL_LOG_FORMAT` (or [`crate::Cluster::log_format`], the CLI's
//!   `--log-format`): `text` (default) or `json`, one object a line.

mod escape;
pub(crate) mod file;
pub(crate) mod filter;
pub(crate) mod format;
pub(crate) mod rate;
pub(crate) mod writer;

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

pub(crate) use escape::escape_json_strings;
pub use escape::escape_untrusted;
pub use writer::flush;

use format::LineFormat;

/// The environment variable that picks the format when the program does not.
pub const FORMAT_VAR: &str = "CORRAL_LOG_FORMAT";
/// The environment variable that filters corral's lines.
pub const FILTER_VAR: &str = "CORRAL_LOG";

/// How corral writes its log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `TIMESTAMP LEVEL message`; the timestamp (RFC 3339, UTC) is left out
    /// when stderr goes to journald, which stamps lines itself.
    #[default]
    Text,
    /// One JSON object a line: `timestamp`, `level`, `event`, `worker`,
    /// `pid`, `message`, `fields`.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("unknown log format {text:?}: use text or json")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// The format of corral's installed subscriber; unset when the program
/// installed its own.
static ACTIVE: OnceLock<LogFormat> = OnceLock::new();

/// The format corral writes in, if its subscriber is the one installed.
pub(crate) fn active_format() -> Option<LogFormat> {
    ACTIVE.get().copied()
}

/// Installs corral's subscriber as the process's global default, unless one
/// is installed already (then returns `false` and changes nothing). The
/// format is `format`, else `CORRAL_LOG_FORMAT`, else text. A bad
/// `CORRAL_LOG` or `CORRAL_LOG_FORMAT` is logged as a warning, not obeyed.
pub fn install(format: Option<LogFormat>) -> bool {
    let from_env = std::env::var(FORMAT_VAR).ok();
    let (format, format_warning) = match (format, from_env.as_deref().map(str::parse)) {
        (Some(format), _) => (format, None),
        (None, Some(Ok(format))) => (format, None),
        (None, Some(Err(why))) => (LogFormat::Text, Some(format!("{FORMAT_VAR}: {why}"))),
        (None, None) => (LogFormat::Text, None),
    };
    let (filter, filter_warning) = filter::parse(std::env::var(FILTER_VAR).ok().as_deref());
    let line = LineFormat {
        format,
        journald: stderr_is_journald(),
        own_worker: own_worker(),
    };
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer::QueuedStderr)
        .event_format(line)
        .finish();
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        return false;
    }
    let _ = ACTIVE.set(format);
    for warning in [format_warning, filter_warning].into_iter().flatten() {
        tracing::warn!(event = "bad_log_setting", "{warning}");
    }
    true
}

/// Writes `corral: error: MESSAGE` (or, in JSON, an `ERROR` object with the
/// event `fatal`) through the log queue, whatever `CORRAL_LOG` filters: the
/// one line a program that gives up must always leave.
pub fn fatal(message: &str) {
    let line = match active_format() {
        Some(LogFormat::Json) => format::Record {
            message: escape_untrusted(message).into_owned(),
            event: Some("fatal".into()),
            ..format::Record::default()
        }
        .render(
            tracing::Level::ERROR,
            &format::now_rfc3339(),
            &LineFormat {
                format: LogFormat::Json,
                journald: false,
                own_worker: None,
            },
        ),
        _ => format!("corral: error: {}", escape_untrusted(message)),
    };
    writer::push_line(line);
}

/// In a worker process: its id (from the environment) and pid.
fn own_worker() -> Option<(u32, u32)> {
    let id = std::env::var(crate::protocol::env::WORKER_ID).ok()?;
    Some((id.parse().ok()?, std::process::id()))
}

/// Whether stderr is the journald stream systemd connected: `JOURNAL_STREAM`
/// names its device and inode, and stderr must still be that file (a
/// program's stderr redirected elsewhere inherits the variable too).
fn stderr_is_journald() -> bool {
    let Ok(stat) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    journal_stream_matches(
        std::env::var("JOURNAL_STREAM").ok().as_deref(),
        stat.st_dev,
        stat.st_ino,
    )
}

fn journal_stream_matches(journal_stream: Option<&str>, device: u64, inode: u64) -> bool {
    journal_stream.is_some_and(|value| value.trim() == format!("{device}:{inode}"))
}

/// How long a process that is about to exit waits for its log lines.
pub(crate) const EXIT_FLUSH: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_print() {
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert_eq!(" Text ".parse(), Ok(LogFormat::Text));
        assert!(
            "yaml"
                .parse::<LogFormat>()
                .unwrap_err()
                .contains("text or json")
        );
        assert_eq!(LogFormat::Json.to_string(), "json");
    }

    #[test]
    fn journald_is_recognised_by_device_and_inode() {
        assert!(journal_stream_matches(Some("8:1234"), 8, 1234));
        assert!(!journal_stream_matches(Some("8:1234"), 8, 1235));
        assert!(!journal_stream_matches(None, 8, 1234));
        assert!(!journal_stream_matches(Some("garbage"), 8, 1234));
    }
}
