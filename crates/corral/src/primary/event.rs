//! Lifecycle events of a cluster, mirroring Node's cluster events (`fork`,
//! `online`, `listening`, `disconnect`, `exit`). The primary logs each one and
//! hands it to the observer the library user installed.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Something that happened to the cluster or one of its workers.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The primary bound its listening sockets (real ports when 0 was asked).
    Bound { addresses: Vec<SocketAddr> },
    /// A worker process was started.
    Fork { id: u32, pid: u32, generation: u32 },
    /// The worker is running (its channel is up, or it was exec'd).
    Online { id: u32, pid: u32 },
    /// The worker serves its listeners.
    Ready { id: u32, pid: u32 },
    /// The worker was asked to stop, or said it is leaving, and is draining.
    Disconnect { id: u32, pid: u32 },
    /// The worker exited. `requested` is true when corral asked it to stop
    /// or it said it was leaving by itself (Node's `exitedAfterDisconnect`).
    Exit {
        id: u32,
        pid: u32,
        code: Option<i32>,
        signal: Option<i32>,
        requested: bool,
        ran_for: Duration,
    },
    /// A worker sent a user message (a JSON value).
    Message { id: u32, message: serde_json::Value },
    /// A slot keeps failing without a stable run (`--stable-after`); it is
    /// restarted after `delay`. `quick_failures`: its failures in a row.
    CrashLoop {
        id: u32,
        quick_failures: u32,
        delay: Duration,
    },
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
        }
    }
}

impl Event {
    /// The event's name, as JSON log lines give it (`event`): `bound`,
    /// `fork`, `online`, `ready`, `disconnect`, `exit`, `message`,
    /// `crash_loop`.
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
        }
    }

    /// The worker the event is about, and its pid when known.
    fn worker(&self) -> (Option<u32>, Option<u32>) {
        match self {
            Event::Bound { .. } => (None, None),
            Event::Fork { id, pid, .. }
            | Event::Online { id, pid }
            | Event::Ready { id, pid }
            | Event::Disconnect { id, pid }
            | Event::Exit { id, pid, .. } => (Some(*id), Some(*pid)),
            Event::Message { id, .. } | Event::CrashLoop { id, .. } => (Some(*id), None),
        }
    }

    /// Logs the event: a warning for an exit nobody asked for, an error for
    /// a crash loop, information otherwise; with its name, worker and pid
    /// as fields (and an exit's code, signal and run time).
    pub(crate) fn log(&self) {
        let event = self.name();
        let (worker, pid) = self.worker();
        match self {
            Event::Exit {
                code,
                signal,
                requested,
                ran_for,
                ..
            } => {
                let ran_for_ms = ran_for.as_millis() as u64;
                if *requested {
                    tracing::info!(
                        event, worker, pid, code, signal, requested, ran_for_ms, "{self}"
                    );
                } else {
                    tracing::warn!(
                        event, worker, pid, code, signal, requested, ran_for_ms, "{self}"
                    );
                }
            }
            Event::CrashLoop {
                quick_failures,
                delay,
                ..
            } => {
                let delay_ms = delay.as_millis() as u64;
                tracing::error!(event, worker, failures = quick_failures, delay_ms, "{self}")
            }
            Event::Fork { generation, .. } => {
                tracing::info!(event, worker, pid, generation, "{self}")
            }
            _ => tracing::info!(event, worker, pid, "{self}"),
        }
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
