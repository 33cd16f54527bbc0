//! How corral writes a log line. `text`: an RFC 3339 timestamp (left out
//! when journald, which stamps lines itself, reads stderr: it gets the
//! `<N>` priority prefix instead), the level and the message. `json`: one
//! object a line, for machines (log shippers, corral's tests):
//!
//! ```text
//! {"timestamp":"2026-11-29T19:07:29.123456Z","level":"INFO","event":"ready",
//!  "worker":2,"pid":4242,"message":"worker 2 ready (pid 4242)","fields":{}}
//! ```
//!
//! `event` names what happened (null for plain lines), `worker` and `pid`
//! are the worker the line is about (in a worker's own lines: itself),
//! `fields` holds the line's other structured values.
//!
//! The message and every string field are escaped ([`escape_untrusted`])
//! as they are recorded, whatever the format: the text of a line may carry
//! what a worker sent (a path it listens on, a name), and neither a text
//! line nor a JSON value once decoded may hold a newline or an escape
//! sequence from it.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::LogFormat;
use super::escape::{escape_json_strings, escape_untrusted};

/// corral's event formatter.
#[derive(Debug, Clone)]
pub(crate) struct LineFormat {
    pub format: LogFormat,
    /// Stderr goes to journald: no timestamp, a priority prefix.
    pub journald: bool,
    /// In a worker process: its id and pid, for lines that name no other.
    pub own_worker: Option<(u32, u32)>,
}

/// One line's content, before it is written out.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Record {
    pub message: String,
    pub event: Option<String>,
    pub worker: Option<u64>,
    pub pid: Option<u64>,
    pub fields: Map<String, Value>,
}

/// The field that carries a lifecycle event's own fields, as a JSON
/// object (see `Event::log`); its members become the line's fields.
pub(crate) const EVENT_FIELDS: &str = "event_fields";

impl Visit for Record {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == EVENT_FIELDS {
            self.put_event_fields(value);
            return;
        }
        self.put(field.name(), Value::from(escape_untrusted(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field.name(), Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field.name(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field.name(), Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field.name(), Value::from(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // The message arrives as `format_args!`, whose Debug is its text.
        let text = format!("{value:?}");
        self.put(field.name(), Value::from(escape_untrusted(&text)));
    }
}

impl Record {
    fn put(&mut self, name: &str, value: Value) {
        match name {
            "message" => self.message = value.as_str().map(str::to_owned).unwrap_or_default(),
            "event" => self.event = value.as_str().map(str::to_owned),
            "worker" => self.worker = value.as_u64(),
            "pid" => self.pid = value.as_u64(),
            _ => {
                self.fields.insert(name.to_owned(), value);
            }
        }
    }

    /// Takes an event's fields, their strings escaped as any field's.
    fn put_event_fields(&mut self, json: &str) {
        let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(json) else {
            return;
        };
        for (name, value) in fields {
            self.fields.insert(name, escape_json_strings(value));
        }
    }

    /// The line in `format` (newline not included).
    pub(crate) fn render(&self, level: Level, timestamp: &str, line: &LineFormat) -> String {
        match line.format {
            LogFormat::Json => self.json(level, timestamp),
            LogFormat::Text if line.journald => {
                format!("<{}>{}", journald_priority(level), self.message)
            }
            LogFormat::Text => format!("{timestamp} {level:>5} {}", self.message),
        }
    }

    fn json(&self, level: Level, timestamp: &str) -> String {
        let object = serde_json::json!({
            "timestamp": timestamp,
            "level": level.as_str(),
            "event": self.event,
            "worker": self.worker,
            "pid": self.pid,
            "message": self.message,
            "fields": self.fields,
        });
        object.to_string()
    }
}

/// sd-daemon's priority prefixes, which journald reads off each line.
fn journald_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// The current time in RFC 3339 (UTC, microseconds).
pub(crate) fn now_rfc3339() -> String {
    let mut text = String::new();
    let _ = SystemTime.format_time(&mut Writer::new(&mut text));
    text
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut record = Record::default();
        event.record(&mut record);
        if record.worker.is_none()
            && let Some((id, pid)) = self.own_worker
        {
            record.worker = Some(id.into());
            record.pid = Some(pid.into());
        }
        let level = *event.metadata().level();
        writeln!(writer, "{}", record.render(level, &now_rfc3339(), self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> Record {
        Record {
            message: "worker 2 ready (pid 42)".into(),
            event: Some("ready".into()),
            worker: Some(2),
            pid: Some(42),
            fields: Map::new(),
        }
    }

    fn format(format: LogFormat, journald: bool) -> LineFormat {
        LineFormat {
            format,
            journald,
            own_worker: None,
        }
    }

    #[test]
    fn text_lines_carry_a_timestamp_unless_journald_reads_them() {
        let stamp = "2026-11-29T19:07:29.123456Z";
        assert_eq!(
            ready().render(Level::INFO, stamp, &format(LogFormat::Text, false)),
            "2026-11-29T19:07:29.123456Z  INFO worker 2 ready (pid 42)"
        );
        assert_eq!(
            ready().render(Level::WARN, stamp, &format(LogFormat::Text, true)),
            "<4>worker 2 ready (pid 42)"
        );
    }

    #[test]
    fn json_lines_are_one_object_with_every_key() {
        let mut record = ready();
        record.fields.insert("generation".into(), Value::from(3));
        let line = record.render(Level::INFO, "T", &format(LogFormat::Json, true));
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "timestamp": "T", "level": "INFO", "event": "ready", "worker": 2,
                "pid": 42, "message": "worker 2 ready (pid 42)",
                "fields": {"generation": 3},
            })
        );
        let plain = Record {
            message: "a \"quoted\" line".into(),
            ..Record::default()
        };
        let line = plain.render(Level::ERROR, "T", &format(LogFormat::Json, false));
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["event"], Value::Null);
        assert_eq!(value["message"], "a \"quoted\" line");
    }

    #[test]
    fn messages_and_fields_are_recorded_escaped() {
        use tracing_subscriber::layer::SubscriberExt;
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = lines.clone();
        let subscriber = tracing_subscriber::registry().with(Capture(seen));
        let path = "/tmp/x\nINFO all workers exited: cluster stopped\x1b[2J";
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(address = path, "listening on {path}");
        });
        let record = lines.lock().unwrap().pop().expect("one event");
        let escaped = "/tmp/x\\nINFO all workers exited: cluster stopped\\x1b[2J";
        assert_eq!(record.message, format!("listening on {escaped}"));
        assert_eq!(record.fields["address"], escaped);
        for format in [LogFormat::Text, LogFormat::Json] {
            let line = record.render(Level::INFO, "T", &self::format(format, false));
            assert!(!line.contains(['\n', '\x1b']), "{line:?}");
        }
    }

    #[test]
    fn a_lifecycle_event_logs_its_json_form() {
        use crate::primary::event::{Event, ReloadKind};
        use tracing_subscriber::layer::SubscriberExt;
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(lines.clone()));
        let exit = Event::Exit {
            id: 2,
            pid: 42,
            code: Some(3),
            signal: None,
            requested: false,
            ran_for: std::time::Duration::from_millis(1500),
        };
        let aborted = Event::ReloadAborted {
            kind: ReloadKind::Rolling,
            id: None,
            replaced: 0,
            reason: "bad\nINFO forged\u{1b}[2J".into(),
        };
        tracing::subscriber::with_default(subscriber, || {
            exit.log();
            aborted.log();
        });
        let records = lines.lock().unwrap();
        assert_eq!(
            records[0],
            Record {
                message: exit.to_string(),
                event: Some("exit".into()),
                worker: Some(2),
                pid: Some(42),
                fields: exit.parts().fields,
            }
        );
        assert_eq!(records[0].fields["ran_for_ms"], 1500);
        assert_eq!(records[1].event.as_deref(), Some("reload_aborted"));
        assert_eq!(records[1].fields["reason"], "bad\\nINFO forged\\x1b[2J");
        assert_eq!((records[1].worker, records[1].pid), (None, None));
    }

    /// Records each event as corral's formatter would.
    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<Record>>>);

    impl<S: Subscriber> tracing_subscriber::Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            let mut record = Record::default();
            event.record(&mut record);
            self.0.lock().unwrap().push(record);
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let stamp = now_rfc3339();
        // 2026-11-29T19:07:29.123456Z
        assert_eq!(stamp.len(), 27, "{stamp}");
        assert_eq!(&stamp[4..5], "-");
        assert_eq!(&stamp[10..11], "T");
        assert!(stamp.ends_with('Z'), "{stamp}");
    }
}
