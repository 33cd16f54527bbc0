//! Lifecycle events of a cluster, mirroring Node's cluster events (`fork`,
//! `online`, `listening`, `disconnect`, `exit`) plus corral's own (reloads,
//! scaling, stopping, watchdog kills, recycling…). The primary logs each
//! one, keeps it in the control journal (`corral events`) and hands it to
//! the observer the library user installed.
//!
//! An event has one machine form, its `Serialize` derive: a JSON object
//! whose `event` names it and whose other keys are its fields, in
//! snake_case, durations in whole milliseconds (`_ms`), the worker's slot
//! as `worker`. The JSON log line and the journal's record are both cut
//! from it ([`Event::parts`]); `Display` is its one text form.
//! docs/events.md lists the vocabulary.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::control::status::RestartReason;

/// Something that happened to the cluster or one of its workers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// The primary bound its listening sockets (real ports when 0 was asked).
    Bound { addresses: Vec<SocketAddr> },
    /// A worker process was started.
    Fork {
        #[serde(rename = "worker")]
        id: u32,
        pid: u32,
        generation: u32,
    },
    /// The worker is running (its channel is up, or it was exec'd).
    Online {
        #[serde(rename = "worker")]
        id: u32,
        pid: u32,
    },
    /// The worker serves its listeners.
    Ready {
        #[serde(rename = "worker")]
        id: u32,
        pid: u32,
    },
    /// The worker was asked to stop, or said it is leaving, and is draining.
    Disconnect {
        #[serde(rename = "worker")]
        id: u32,
        pid: u32,
    },
    /// The worker exited. `requested` is true when corral asked it to stop
    /// or it said it was leaving by itself (Node's `exitedAfterDisconnect`).
    Exit {
        #[serde(rename = "worker")]
        id: u32,
        pid: u32,
        code: Option<i32>,
        #[serde(serialize_with = "signal_as_name")]
        signal: Option<i32>,
        requested: bool,
        #[serde(rename = "ran_for_ms", serialize_with = "as_ms")]
        ran_for: Duration,
    },
    /// A worker sent a user message (a JSON value).
    Message {
        #[serde(rename = "worker")]
        id: u32,
        message: Value,
    },
    /// A slot keeps failing without a stable run (`--stable-after`); it is
    /// restarted after `delay`. `quick_failures`: its failures in a row.
    CrashLoop {
        #[serde(rename = "worker")]
        id: u32,
        quick_failures: u32,
        #[serde(rename = "delay_ms", serialize_with = "as_ms")]
        delay: Duration,
    },
    /// A reload began: `workers` are to be replaced, a few at a time.
    /// `kind`: a `rolling reload` (asked for) or `recycling` (of workers
    /// over a limit).
    ReloadStarted { kind: ReloadKind, workers: usize },
    /// A reload replaced every worker it was to replace.
    ReloadCompleted { kind: ReloadKind, replaced: usize },
    /// A reload stopped part-way (`replaced` workers were); the running
    /// workers keep serving. `id`: the slot whose replacement failed, if
    /// one did.
    ReloadAborted {
        kind: ReloadKind,
        #[serde(rename = "worker")]
        id: Option<u32>,
        replaced: usize,
        reason: String,
    },
    /// A reload's replacement for slot `id` is ready and took over from
    /// the worker `old_pid`, which now drains.
    Replaced {
        kind: ReloadKind,
        #[serde(rename = "worker")]
        id: u32,
        pid: u32,
        old_pid: u32,
    },
    /// The number of workers the cluster keeps changed.
    Scaled { from: usize, to: usize },
    /// The cluster is stopping: workers drain for up to `grace`.
    Stopping {
        #[serde(rename = "grace_ms", serialize_with = "as_ms")]
        grace: Duration,
    },
    /// The cluster stops at once (asked again, or `stop --now`): every
    /// worker is killed.
    StoppingNow,
    /// Every worker exited: the cluster stopped.
    Stopped,
    /// The worker sent heartbeats and then none for `timeout`
    /// (`--watchdog`): it is killed, and replaced.
    Hung {
        #[serde(rename = "worker")]
        id: u32,
        pid: u32,
        #[serde(rename = "timeout_ms", serialize_with = "as_ms")]
        timeout: Duration,
    },
    /// The worker did not exit within the grace period after it was asked
    /// to: it is sent `signal` (SIGKILL; a Node worker SIGTERM first).
    GraceExpired {
        #[serde(rename = "worker")]
        id: u32,
        pid: u32,
        #[serde(rename = "grace_ms", serialize_with = "as_ms")]
        grace: Duration,
        #[serde(serialize_with = "signal_as_name")]
        signal: i32,
    },
    /// The worker reached a limit (`--max-requests`, `--max-memory`) and
    /// is replaced gracefully.
    Recycled {
        #[serde(rename = "worker")]
        id: u32,
        pid: u32,
        #[serde(flatten)]
        over: RecycleLimit,
    },
    /// The worker did not say it is ready within `timeout`
    /// (`--ready-timeout`): it is killed, and replaced.
    ReadyTimeout {
        #[serde(rename = "worker")]
        id: u32,
        pid: u32,
        #[serde(rename = "timeout_ms", serialize_with = "as_ms")]
        timeout: Duration,
    },
    /// The worker did not read its hand-off channel while `unread`
    /// connections waited: they go to other workers, and it gets none for
    /// `rest`.
    WorkerStalled {
        #[serde(rename = "worker")]
        id: u32,
        pid: u32,
        unread: u64,
        #[serde(rename = "rest_ms", serialize_with = "as_ms")]
        rest: Duration,
    },
}

/// What a reload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReloadKind {
    /// Every worker replaced, as asked (`corral reload`, SIGHUP).
    Rolling,
    /// Workers over a limit replaced, one at a time.
    Recycling,
}

/// The limit a recycled worker reached; `reason` names it as restart
/// reasons do (`corral status`, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecycleLimit {
    /// It served `served` requests, `limit` with its jitter.
    Requests { served: u64, limit: u64 },
    /// Its resident memory is over `--max-memory`.
    Memory {
        resident_bytes: u64,
        limit_bytes: u64,
    },
}

impl RecycleLimit {
    /// The restart reason it is (`corral status`, the metrics' `reason`
    /// label), whose name the event's `reason` field is.
    pub fn reason(&self) -> RestartReason {
        match self {
            RecycleLimit::Requests { .. } => RestartReason::Requests,
            RecycleLimit::Memory { .. } => RestartReason::Memory,
        }
    }
}

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

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Bound { addresses } if addresses.is_empty() => {
                f.write_str("no socket bound up front")
            }
            Event::Bound { addresses } => {
                let list: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
                write!(f, "listening on {}", list.join(", "))
            }
            Event::Fork {
                id,
                pid,
                generation,
            } => write!(
                f,
                "worker {id} spawned (pid {pid}, generation {generation})"
            ),
            Event::Online { id, pid } => write!(f, "worker {id} online (pid {pid})"),
            Event::Ready { id, pid } => write!(f, "worker {id} ready (pid {pid})"),
            Event::Disconnect { id, pid } => write!(f, "worker {id} disconnecting (pid {pid})"),
            Event::Exit {
                id,
                pid,
                code,
                signal,
                requested,
                ran_for,
            } => {
                write!(f, "worker {id} (pid {pid}) exited")?;
                match (code, signal) {
                    (Some(code), _) => write!(f, " with code {code}")?,
                    (None, Some(signal)) => write!(f, " on signal {}", signal_name(*signal))?,
                    (None, None) => {}
                }
                let why = if *requested {
                    "as asked"
                } else {
                    "unexpectedly"
                };
                write!(f, " {why} after {}", human_duration(*ran_for))
            }
            Event::Message { id, message } => write!(f, "message from worker {id}: {message}"),
            Event::CrashLoop {
                id,
                quick_failures,
                delay,
            } => write!(
                f,
                "worker {id} is crash-looping ({quick_failures} failures in a row without a \
                 stable run): next restart in {}",
                human_duration(*delay)
            ),
            Event::ReloadStarted { kind, workers } => {
                write!(f, "{kind}: replacing {workers} workers, one at a time")
            }
            Event::ReloadCompleted { kind, replaced } => {
                write!(f, "{kind} complete: {replaced} workers replaced")
            }
            Event::ReloadAborted { kind, reason, .. } => {
                write!(
                    f,
                    "{kind} aborted: {reason}; the running workers keep serving"
                )
            }
            Event::Replaced {
                kind,
                id,
                pid,
                old_pid,
            } => {
                write!(f, "{kind}: worker {id} replaced (pid {old_pid} -> {pid})")
            }
            Event::Scaled { from, to } => write!(f, "scaled from {from} to {to} workers"),
            Event::Stopping { grace } => write!(
                f,
                "stopping: workers drain for up to {} (send the signal again to stop at once)",
                human_duration(*grace)
            ),
            Event::StoppingNow => f.write_str("stopping at once: killing every worker"),
            Event::Stopped => f.write_str("all workers exited: cluster stopped"),
            Event::Hung { id, pid, timeout } => write!(
                f,
                "worker {id} (pid {pid}) sent no heartbeat for {}: it is hung; killing it",
                human_duration(*timeout)
            ),
            Event::GraceExpired {
                id,
                pid,
                grace,
                signal,
            } => write!(
                f,
                "worker {id} (pid {pid}) did not exit within the grace period of {}: sending {}",
                human_duration(*grace),
                signal_name(*signal)
            ),
            Event::Recycled { id, pid, over } => {
                write!(f, "worker {id} (pid {pid}) ")?;
                match over {
                    RecycleLimit::Requests { served, limit } => write!(
                        f,
                        "served {served} requests (--max-requests with jitter: {limit})"
                    )?,
                    RecycleLimit::Memory {
                        resident_bytes,
                        limit_bytes,
                    } => write!(
                        f,
                        "uses {} MiB, over --max-memory {} MiB",
                        resident_bytes >> 20,
                        limit_bytes >> 20
                    )?,
                }
                f.write_str(": replacing it gracefully")
            }
            Event::ReadyTimeout { id, pid, timeout } => write!(
                f,
                "worker {id} (pid {pid}) did not say it is ready within {}: replacing it",
                human_duration(*timeout)
            ),
            Event::WorkerStalled {
                id, unread, rest, ..
            } => write!(
                f,
                "worker {id} is not reading its hand-off channel ({unread} connections \
                 waiting): handing them to other workers, none to it for {}ms",
                rest.as_millis()
            ),
        }
    }
}

impl fmt::Display for ReloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReloadKind::Rolling => "rolling reload",
            ReloadKind::Recycling => "recycling",
        })
    }
}

impl Event {
    /// The event's name, the `event` key of its JSON form (`fork`,
    /// `exit`, `crash_loop`, `reload_completed`…; docs/events.md lists
    /// them).
    pub fn name(&self) -> &'static str {
        match self {
            Event::Bound { .. } => "bound",
            Event::Fork { .. } => "fork",
            Event::Online { .. } => "online",
            Event::Ready { .. } => "ready",
            Event::Disconnect { .. } => "disconnect",
            Event::Exit { .. } => "exit",
            Event::Message { .. } => "message",
            Event::CrashLoop { .. } => "crash_loop",
            Event::ReloadStarted { .. } => "reload_started",
            Event::ReloadCompleted { .. } => "reload_completed",
            Event::ReloadAborted { .. } => "reload_aborted",
            Event::Replaced { .. } => "replaced",
            Event::Scaled { .. } => "scaled",
            Event::Stopping { .. } => "stopping",
            Event::StoppingNow => "stopping_now",
            Event::Stopped => "stopped",
            Event::Hung { .. } => "hung",
            Event::GraceExpired { .. } => "grace_expired",
            Event::Recycled { .. } => "recycled",
            Event::ReadyTimeout { .. } => "ready_timeout",
            Event::WorkerStalled { .. } => "worker_stalled",
        }
    }

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

fn as_ms<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// A signal by its name (`SIGKILL`), as `signal_name` gives it.
fn signal_as_name<S: Serializer>(
    signal: &impl SignalNumber,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match signal.number() {
        Some(number) => serializer.serialize_str(&signal_name(number)),
        None => serializer.serialize_none(),
    }
}

/// A signal field, present or not.
trait SignalNumber {
    fn number(&self) -> Option<i32>;
}

impl SignalNumber for i32 {
    fn number(&self) -> Option<i32> {
        Some(*self)
    }
}

impl SignalNumber for Option<i32> {
    fn number(&self) -> Option<i32> {
        *self
    }
}

/// `SIGKILL` rather than 9, for log lines.
pub(crate) fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => return format!("signal {signal}"),
    };
    name.to_string()
}

pub(crate) fn human_duration(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// Every variant, and its JSON form.
    fn every_event() -> Vec<(Event, Value)> {
        vec![
            (
                Event::Bound {
                    addresses: vec!["127.0.0.1:8000".parse().unwrap()],
                },
                json!({"event": "bound", "addresses": ["127.0.0.1:8000"]}),
            ),
            (
                Event::Fork {
                    id: 1,
                    pid: 10,
                    generation: 2,
                },
                json!({"event": "fork", "worker": 1, "pid": 10, "generation": 2}),
            ),
            (
                Event::Online { id: 1, pid: 10 },
                json!({"event": "online", "worker": 1, "pid": 10}),
            ),
            (
                Event::Ready { id: 1, pid: 10 },
                json!({"event": "ready", "worker": 1, "pid": 10}),
            ),
            (
                Event::Disconnect { id: 1, pid: 10 },
                json!({"event": "disconnect", "worker": 1, "pid": 10}),
            ),
            (
                Event::Exit {
                    id: 1,
                    pid: 10,
                    code: None,
                    signal: Some(libc::SIGKILL),
                    requested: false,
                    ran_for: MS(1500),
                },
                json!({"event": "exit", "worker": 1, "pid": 10, "code": null,
                       "signal": "SIGKILL", "requested": false, "ran_for_ms": 1500}),
            ),
            (
                Event::Message {
                    id: 1,
                    message: json!({"a": 1}),
                },
                json!({"event": "message", "worker": 1, "message": {"a": 1}}),
            ),
            (
                Event::CrashLoop {
                    id: 1,
                    quick_failures: 3,
                    delay: MS(400),
                },
                json!({"event": "crash_loop", "worker": 1, "quick_failures": 3,
                       "delay_ms": 400}),
            ),
            (
                Event::ReloadStarted {
                    kind: ReloadKind::Rolling,
                    workers: 4,
                },
                json!({"event": "reload_started", "kind": "rolling", "workers": 4}),
            ),
            (
                Event::ReloadCompleted {
                    kind: ReloadKind::Recycling,
                    replaced: 1,
                },
                json!({"event": "reload_completed", "kind": "recycling", "replaced": 1}),
            ),
            (
                Event::ReloadAborted {
                    kind: ReloadKind::Rolling,
                    id: Some(3),
                    replaced: 2,
                    reason: "the replacement for worker 3 exited".into(),
                },
                json!({"event": "reload_aborted", "kind": "rolling", "worker": 3, "replaced": 2,
                       "reason": "the replacement for worker 3 exited"}),
            ),
            (
                Event::Replaced {
                    kind: ReloadKind::Rolling,
                    id: 3,
                    pid: 11,
                    old_pid: 10,
                },
                json!({"event": "replaced", "kind": "rolling", "worker": 3, "pid": 11,
                       "old_pid": 10}),
            ),
            (
                Event::Scaled { from: 2, to: 3 },
                json!({"event": "scaled", "from": 2, "to": 3}),
            ),
            (
                Event::Stopping { grace: MS(30_000) },
                json!({"event": "stopping", "grace_ms": 30000}),
            ),
            (Event::StoppingNow, json!({"event": "stopping_now"})),
            (Event::Stopped, json!({"event": "stopped"})),
            (
                Event::Hung {
                    id: 1,
                    pid: 10,
                    timeout: MS(1000),
                },
                json!({"event": "hung", "worker": 1, "pid": 10, "timeout_ms": 1000}),
            ),
            (
                Event::GraceExpired {
                    id: 1,
                    pid: 10,
                    grace: MS(5000),
                    signal: libc::SIGKILL,
                },
                json!({"event": "grace_expired", "worker": 1, "pid": 10, "grace_ms": 5000,
                       "signal": "SIGKILL"}),
            ),
            (
                Event::Recycled {
                    id: 1,
                    pid: 10,
                    over: RecycleLimit::Requests {
                        served: 101,
                        limit: 100,
                    },
                },
                json!({"event": "recycled", "worker": 1, "pid": 10, "reason": "requests",
                       "served": 101, "limit": 100}),
            ),
            (
                Event::Recycled {
                    id: 1,
                    pid: 10,
                    over: RecycleLimit::Memory {
                        resident_bytes: 3 << 20,
                        limit_bytes: 1 << 20,
                    },
                },
                json!({"event": "recycled", "worker": 1, "pid": 10, "reason": "memory",
                       "resident_bytes": 3 << 20, "limit_bytes": 1 << 20}),
            ),
            (
                Event::ReadyTimeout {
                    id: 1,
                    pid: 10,
                    timeout: MS(500),
                },
                json!({"event": "ready_timeout", "worker": 1, "pid": 10, "timeout_ms": 500}),
            ),
            (
                Event::WorkerStalled {
                    id: 2,
                    pid: 12,
                    unread: 7,
                    rest: MS(200),
                },
                json!({"event": "worker_stalled", "worker": 2, "pid": 12, "unread": 7,
                       "rest_ms": 200}),
            ),
        ]
    }

    #[test]
    fn each_event_serializes_to_its_documented_form() {
        for (event, expected) in every_event() {
            assert_eq!(serde_json::to_value(&event).unwrap(), expected, "{event:?}");
            assert_eq!(expected["event"], event.name(), "{event:?}");
        }
    }

    #[test]
    fn a_recycled_worker_s_reason_is_named_as_restart_reasons_are() {
        for (event, json) in every_event() {
            if let Event::Recycled { over, .. } = event {
                assert_eq!(json["reason"], over.reason().name());
            }
        }
    }

    #[test]
    fn parts_take_name_worker_and_pid_out_of_the_json_form() {
        for (event, mut expected) in every_event() {
            let parts = event.parts();
            let object = expected.as_object_mut().unwrap();
            assert_eq!(object.remove("event").unwrap(), parts.name);
            let number = |value: Option<Value>| value.and_then(|v| v.as_u64());
            assert_eq!(number(object.remove("worker")), parts.worker.map(u64::from));
            assert_eq!(number(object.remove("pid")), parts.pid.map(u64::from));
            assert_eq!(*object, parts.fields, "{event:?}");
        }
    }

    #[test]
    fn every_name_is_snake_case_and_documented() {
        let docs = include_str!("../../../../../docs/events.md");
        for (event, _) in every_event() {
            let name = event.name();
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}"
            );
            assert!(
                docs.contains(&format!("### `{name}`")),
                "{name} in docs/events.md"
            );
        }
    }

    #[test]
    fn the_text_says_what_happened() {
        let texts: Vec<String> = every_event()
            .into_iter()
            .map(|(event, _)| event.to_string())
            .collect();
        assert!(texts.contains(&"scaled from 2 to 3 workers".to_string()));
        assert!(texts.contains(&"rolling reload: worker 3 replaced (pid 10 -> 11)".to_string()));
        assert!(
            texts.contains(
                &"worker 1 (pid 10) did not exit within the grace period of 5.0s: sending SIGKILL"
                    .to_string()
            )
        );
        assert!(texts.contains(&"all workers exited: cluster stopped".to_string()));
    }
}
