//! What a cluster process printed, as it comes: each line kept in order
//! with a text form to match on, and — for the JSON lines corral writes
//! under `CORRAL_LOG_FORMAT=json` — the event it records. Tests assert on
//! events (`ready` of worker 2, after this point) rather than on prose, and
//! a [`Mark`] limits a search to what came after it, so a check after a
//! kill cannot match the startup line.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One of corral's JSON log lines.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEvent {
    /// When, as corral wrote it (RFC 3339, UTC).
    pub timestamp: String,
    /// What happened (`ready`, `exit`, `reload_completed`…), if named.
    pub event: Option<String>,
    pub level: String,
    /// The worker the line is about.
    pub worker: Option<u32>,
    pub pid: Option<u32>,
    pub message: String,
    pub fields: Value,
}

impl LogEvent {
    /// Parses one of corral's JSON lines; `None` for anything else.
    pub fn parse(line: &str) -> Option<LogEvent> {
        if !line.starts_with('{') {
            return None;
        }
        let value: Value = serde_json::from_str(line).ok()?;
        let number = |key: &str| value.get(key)?.as_u64()?.try_into().ok();
        Some(LogEvent {
            timestamp: value.get("timestamp")?.as_str()?.to_owned(),
            event: value.get("event")?.as_str().map(str::to_owned),
            level: value.get("level")?.as_str()?.to_owned(),
            worker: number("worker"),
            pid: number("pid"),
            message: value.get("message")?.as_str()?.to_owned(),
            fields: value.get("fields").cloned().unwrap_or(Value::Null),
        })
    }

    /// Whether this is event `name`.
    pub fn is(&self, name: &str) -> bool {
        self.event.as_deref() == Some(name)
    }

    /// Whether this is event `name` about worker `id`.
    pub fn is_of(&self, name: &str, id: u32) -> bool {
        self.is(name) && self.worker == Some(id)
    }

    /// The time since the Unix epoch this event was written, from its
    /// timestamp (`2026-11-29T19:07:29.123456Z`): for measuring between
    /// two events, whenever the test thread happened to see them.
    pub fn time(&self) -> Option<Duration> {
        let (date, time) = self.timestamp.strip_suffix('Z')?.split_once('T')?;
        let mut date = date.splitn(3, '-').map(str::parse::<i64>);
        let (year, month, day) = (date.next()?.ok()?, date.next()?.ok()?, date.next()?.ok()?);
        let mut time = time.splitn(3, ':');
        let (hour, minute) = (
            time.next()?.parse::<u64>().ok()?,
            time.next()?.parse::<u64>().ok()?,
        );
        let seconds: f64 = time.next()?.parse().ok()?;
        let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
        let whole = days * 86_400 + hour * 3_600 + minute * 60;
        Some(Duration::from_secs(whole) + Duration::from_secs_f64(seconds))
    }

    /// A field's value.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.get(name)
    }

    /// A field's value if it is a whole number (`code`, `generation`…).
    pub fn number(&self, name: &str) -> Option<u64> {
        self.field(name)?.as_u64()
    }

    /// A field's value if it is a string (`kind`, `signal`, `reason`…).
    pub fn string(&self, name: &str) -> Option<&str> {
        self.field(name)?.as_str()
    }

    /// Whether field `name` is `value`: `event.has("signal", "SIGKILL")`.
    pub fn has(&self, name: &str, value: impl Into<Value>) -> bool {
        self.field(name) == Some(&value.into())
    }

    /// The line as a person reads it: `INFO worker 2 ready (pid 42)`,
    /// `[worker 2] …` for a worker's output, `corral: error: …` for a
    /// fatal error.
    pub fn text(&self) -> String {
        let from_worker = self.field("stream").is_some();
        match (self.event.as_deref(), self.worker) {
            (Some("fatal"), _) => format!("corral: error: {}", self.message),
            (Some("output"), Some(id)) => format!("[worker {id}] {}", self.message),
            (_, Some(id)) if from_worker => {
                format!("[worker {id}] {} {}", self.level, self.message)
            }
            _ => format!("{} {}", self.level, self.message),
        }
    }
}

/// Days from 1970-01-01 to the given date (proleptic Gregorian).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// A point in a transcript: searches from a mark see only later lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mark(usize);

impl Mark {
    /// The beginning: everything.
    pub const START: Mark = Mark(0);
}

/// One line: which stream (`out`, `err`), its text form, its event.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub text: String,
    pub event: Option<LogEvent>,
}

/// Output lines collected from a process, shared with the reader threads.
#[derive(Default)]
pub(crate) struct Transcript {
    state: Mutex<State>,
    grew: Condvar,
}

#[derive(Default)]
struct State {
    lines: Vec<Line>,
    /// Streams read to their end.
    closed: usize,
}

impl Transcript {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a line read from stream `tag`.
    pub(crate) fn push(&self, tag: &str, raw: String) {
        let event = LogEvent::parse(&raw);
        let shown = event.as_ref().map(LogEvent::text).unwrap_or(raw);
        self.lock().lines.push(Line {
            text: format!("{tag}|{shown}"),
            event,
        });
        self.grew.notify_all();
    }

    /// Notes that a stream reached its end.
    pub(crate) fn close(&self) {
        self.lock().closed += 1;
        self.grew.notify_all();
    }

    pub(crate) fn mark(&self) -> Mark {
        Mark(self.lock().lines.len())
    }

    pub(crate) fn text(&self) -> String {
        let state = self.lock();
        let lines: Vec<&str> = state.lines.iter().map(|line| line.text.as_str()).collect();
        lines.join("\n")
    }

    pub(crate) fn plain_lines(&self) -> Vec<String> {
        let state = self.lock();
        state
            .lines
            .iter()
            .filter(|line| line.event.is_none())
            .map(|line| line.text.clone())
            .collect()
    }

    pub(crate) fn events(&self, since: Mark) -> Vec<LogEvent> {
        let state = self.lock();
        state.lines[since.0.min(state.lines.len())..]
            .iter()
            .filter_map(|line| line.event.clone())
            .collect()
    }

    /// Waits until `found` finds what it looks for in the lines after
    /// `since`, or `timeout` passes.
    pub(crate) fn wait<T>(
        &self,
        since: Mark,
        timeout: Duration,
        mut found: impl FnMut(&[Line]) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            let from = since.0.min(state.lines.len());
            if let Some(result) = found(&state.lines[from..]) {
                return Some(result);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            state = self
                .grew
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Waits until `streams` streams reached their end.
    pub(crate) fn wait_closed(&self, streams: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while state.closed < streams {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            state = self
                .grew
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_become_events_with_a_text_form() {
        let ready = LogEvent::parse(
            r#"{"timestamp":"2026-11-29T19:07:29.5Z","level":"INFO","event":"ready","worker":2,"pid":42,"message":"worker 2 ready (pid 42)","fields":{}}"#,
        )
        .unwrap();
        assert!(ready.is_of("ready", 2));
        assert_eq!(ready.pid, Some(42));
        assert_eq!(ready.text(), "INFO worker 2 ready (pid 42)");
        let output = LogEvent::parse(
            r#"{"timestamp":"T","level":"INFO","event":"output","worker":1,"pid":7,"message":"hi","fields":{"stream":"stdout"}}"#,
        )
        .unwrap();
        assert_eq!(output.text(), "[worker 1] hi");
        assert_eq!(LogEvent::parse("listening on 127.0.0.1:1"), None);
        let mut later = ready.clone();
        later.timestamp = "2026-11-30T00:00:00.25Z".into();
        let mut earlier = ready.clone();
        earlier.timestamp = "2026-11-29T23:59:59.75Z".into();
        assert_eq!(
            later.time().unwrap() - earlier.time().unwrap(),
            Duration::from_millis(500)
        );
        earlier.timestamp = "1970-01-02T00:00:01Z".into();
        assert_eq!(earlier.time(), Some(Duration::from_secs(86_401)));
        assert_eq!(LogEvent::parse(r#"{"some":"json"}"#), None);
    }

    #[test]
    fn a_mark_hides_what_came_before_it() {
        let transcript = Transcript::default();
        transcript.push("err", "worker 2 ready (pid 1)".into());
        let mark = transcript.mark();
        let find = |lines: &[Line]| lines.iter().find(|l| l.text.contains("ready")).cloned();
        assert!(transcript.wait(mark, Duration::ZERO, find).is_none());
        transcript.push("err", "worker 2 ready (pid 2)".into());
        let line = transcript.wait(mark, Duration::ZERO, find).unwrap();
        assert_eq!(line.text, "err|worker 2 ready (pid 2)");
        assert_eq!(
            transcript
                .wait(Mark::START, Duration::ZERO, find)
                .unwrap()
                .text,
            "err|worker 2 ready (pid 1)"
        );
    }
}
