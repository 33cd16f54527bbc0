//! An event as the log and the control journal record it: its JSON form
//! cut in parts (name, worker, pid, other fields), and how bad it is.

use serde_json::{Map, Value};

use super::{Event, RecycleLimit};

/// How bad an event is, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Severity {
    Info,
    Warn,
    Error,
}

/// An event cut for the log and the journal: its name, the worker it is
/// about and that worker's pid (when known), and its other fields.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EventParts {
    pub name: String,
    pub worker: Option<u32>,
    pub pid: Option<u32>,
    pub fields: Map<String, Value>,
}

impl Event {
    /// How bad it is: an exit nobody asked for and a kill are warnings, a
    /// crash loop and a failed reload errors.
    pub(crate) fn severity(&self) -> Severity {
        match self {
            Event::Exit { requested, .. } if !requested => Severity::Warn,
            Event::Hung { .. }
            | Event::StoppingNow
            | Event::GraceExpired { .. }
            | Event::ReadyTimeout { .. }
            | Event::WorkerStalled { .. }
            | Event::Recycled {
                over: RecycleLimit::Memory { .. },
                ..
            } => Severity::Warn,
            Event::CrashLoop { .. } | Event::ReloadAborted { .. } => Severity::Error,
            _ => Severity::Info,
        }
    }

    /// The event's JSON form cut in parts: `event`, `worker` and `pid` out,
    /// the rest as fields.
    pub(crate) fn parts(&self) -> EventParts {
        let mut fields = match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            // Every variant is a struct of plain values.
            _ => Map::new(),
        };
        let name = match fields.remove("event") {
            Some(Value::String(name)) => name,
            _ => self.name().to_owned(),
        };
        let mut number = |key: &str| {
            fields
                .remove(key)
                .and_then(|value| value.as_u64())
                .and_then(|value| u32::try_from(value).ok())
        };
        let worker = number("worker");
        let pid = number("pid");
        EventParts {
            name,
            worker,
            pid,
            fields,
        }
    }

    /// Logs the event: its name, worker and pid as the line's own keys,
    /// its other fields as the line's fields, its text as the message.
    pub(crate) fn log(&self) {
        let EventParts {
            name: event,
            worker,
            pid,
            fields,
        } = self.parts();
        let event = event.as_str();
        let fields = Value::Object(fields).to_string();
        let event_fields = fields.as_str();
        match self.severity() {
            Severity::Info => tracing::info!(event, worker, pid, event_fields, "{self}"),
            Severity::Warn => tracing::warn!(event, worker, pid, event_fields, "{self}"),
            Severity::Error => tracing::error!(event, worker, pid, event_fields, "{self}"),
        }
    }
}
