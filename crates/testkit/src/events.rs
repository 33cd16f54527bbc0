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
    /// What happened (`ready`, `exit`, `reload_complete`…), if named.
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

    /// A field's value.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.get(name)
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
            r#"{"timestamp":"T","level":"INFO","event":"ready","worker":2,"pid":42,"message":"worker 2 ready (pid 42)","fields":{}}"#,
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
