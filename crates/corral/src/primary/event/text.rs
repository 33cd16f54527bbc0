//! The text form of events, for log lines and `corral events`: what
//! happened in words, with signals by name and durations for people.

use std::fmt;

use super::readable::{human_duration, signal_name};
use super::{Event, RecycleLimit, ReloadKind};
use crate::control::status::Draining;

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
            Event::Disconnect {
                id,
                pid,
                by_itself: false,
            } => write!(f, "worker {id} disconnecting (pid {pid})"),
            Event::Disconnect {
                id,
                pid,
                by_itself: true,
            } => write!(f, "worker {id} disconnecting by itself (pid {pid})"),
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
            Event::WatchTriggered { path, changes: 1 } => {
                write!(f, "{path} changed: rolling reload")
            }
            Event::WatchTriggered { path, changes } => {
                let more = changes.saturating_sub(1);
                write!(f, "{path} and {more} more files changed: rolling reload")
            }
            Event::ReloadStarted { kind, workers } => {
                write!(f, "{kind}: replacing {workers} workers, one at a time")
            }
            Event::ReloadCompleted {
                kind,
                replaced,
                draining,
            } => {
                write!(f, "{kind} complete: {replaced} workers replaced")?;
                let draining = Draining {
                    workers: *draining,
                    connections: None,
                };
                match draining.describe() {
                    Some(still) => write!(f, "; {still}"),
                    None => Ok(()),
                }
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
            Event::DrainingSoon { delay } => write!(
                f,
                "stopping: /readyz fails now; workers keep serving for {} (--drain-delay), \
                 then drain (send the signal again to drain now)",
                human_duration(*delay)
            ),
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
