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
//! from it ([`Event::parts`], `record.rs`; how durations and signals
//! serialize, `json_form.rs`); `Display` is its one text form (`text.rs`,
//! with signals and durations worded by `readable.rs`).
//! docs/events.md lists the vocabulary.

mod json_form;
mod readable;
mod record;
mod text;

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use strum::IntoStaticStr;

use crate::control::status::RestartReason;
use json_form::{as_ms, signal_as_name};
pub(crate) use readable::{human_duration, signal_name};

/// Something that happened to the cluster or one of its workers.
#[derive(Debug, Clone, PartialEq, Serialize, IntoStaticStr)]
#[cfg_attr(test, derive(strum::EnumCount))]
#[serde(tag = "event", rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
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
    /// The worker was asked to stop, or said it is leaving (`by_itself`),
    /// and is draining.
    Disconnect {
        #[serde(rename = "worker")]
        id: u32,
        pid: u32,
        by_itself: bool,
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
    /// Watched files changed (`--watch`): a rolling reload follows (after
    /// the one under way, if any). `path`: the first file that changed;
    /// `changes`: how many files changed in that burst.
    WatchTriggered { path: String, changes: usize },
    /// A reload began: `workers` are to be replaced, a few at a time.
    /// `kind`: a `rolling reload` (asked for) or `recycling` (of workers
    /// over a limit).
    ReloadStarted { kind: ReloadKind, workers: usize },
    /// A reload replaced every worker it was to replace. `draining`: the
    /// old workers not exited yet (they finish what they hold, WebSockets
    /// or long requests, within `--grace`).
    ReloadCompleted {
        kind: ReloadKind,
        replaced: usize,
        draining: usize,
    },
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
    /// The cluster was asked to stop: `/readyz` fails from now on, and the
    /// workers keep serving for `delay` (`--drain-delay`) before they
    /// drain.
    DrainingSoon {
        #[serde(rename = "delay_ms", serialize_with = "as_ms")]
        delay: Duration,
    },
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

impl Event {
    /// The event's name, the `event` key of its JSON form (`fork`,
    /// `exit`, `crash_loop`, `reload_completed`…; docs/events.md lists
    /// them). Derived from the variant's name as serde's tag is, so the
    /// two cannot drift apart.
    pub fn name(&self) -> &'static str {
        self.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use strum::EnumCount;

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
                Event::Disconnect {
                    id: 1,
                    pid: 10,
                    by_itself: false,
                },
                json!({"event": "disconnect", "worker": 1, "pid": 10, "by_itself": false}),
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
                Event::WatchTriggered {
                    path: "/srv/app/app.py".into(),
                    changes: 2,
                },
                json!({"event": "watch_triggered", "path": "/srv/app/app.py", "changes": 2}),
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
                    draining: 1,
                },
                json!({"event": "reload_completed", "kind": "recycling", "replaced": 1,
                       "draining": 1}),
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
            (
                Event::DrainingSoon { delay: MS(5_000) },
                json!({"event": "draining_soon", "delay_ms": 5000}),
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
    fn every_variant_s_name_is_its_serialized_event_tag() {
        let events = every_event();
        let names: std::collections::HashSet<&str> =
            events.iter().map(|(event, _)| event.name()).collect();
        assert_eq!(names.len(), Event::COUNT, "every_event lists each variant");
        for (event, _) in &events {
            let json = serde_json::to_value(event).unwrap();
            assert_eq!(json["event"], event.name(), "{event:?}");
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
