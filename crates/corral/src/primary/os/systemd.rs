//! Telling systemd how the cluster is (`sd_notify`), when it was started
//! with `NOTIFY_SOCKET` (a `Type=notify` service): `READY=1` once the first
//! generation of workers is ready, `RELOADING=1` (with `MONOTONIC_USEC`) and
//! `READY=1` again around a rolling reload, `STOPPING=1`, a `STATUS=` line
//! (workers ready/desired, reload progress), and `WATCHDOG=1` pings when the
//! unit sets `WatchdogSec=` — sent from the supervisor loop itself, so a
//! frozen loop stops them.
//!
//! The supervisor does not announce each change: after every turn of its
//! loop it describes the cluster as a [`View`], and [`transitions`] (a
//! plain function) says what systemd must be told about the difference.

use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::time::Duration;

use sd_notify::NotifyState;

/// The cluster as systemd sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct View {
    /// Workers ready to serve, and the workers the cluster should have.
    pub ready: usize,
    pub desired: usize,
    /// A rolling reload under way: replacements done and in all.
    pub reloading: Option<(usize, usize)>,
    pub stopping: bool,
}

impl View {
    /// The `STATUS=` text.
    pub(crate) fn status(&self) -> String {
        let mut status = format!("{}/{} workers ready", self.ready, self.desired);
        if let Some((done, total)) = self.reloading {
            status.push_str(&format!(", reloading {done}/{total}"));
        }
        if self.stopping {
            status.push_str(", stopping");
        }
        status
    }
}

/// One message to systemd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tell {
    Ready,
    Reloading,
    Stopping,
    Status(String),
}

/// What to tell systemd when the cluster goes from `before` to `now`.
/// `announced`: `READY=1` was sent already (it is sent once the whole first
/// generation is ready, and again after each reload).
pub(crate) fn transitions(before: &View, now: &View, announced: bool) -> Vec<Tell> {
    let mut tell = Vec::new();
    if now.stopping {
        if !before.stopping {
            tell.push(Tell::Stopping);
        }
    } else if !announced {
        if now.desired > 0 && now.ready >= now.desired && now.reloading.is_none() {
            tell.push(Tell::Ready);
        }
    } else if before.reloading.is_none() && now.reloading.is_some() {
        tell.push(Tell::Reloading);
    } else if before.reloading.is_some() && now.reloading.is_none() {
        tell.push(Tell::Ready);
    }
    if now.status() != before.status() || !tell.is_empty() {
        tell.push(Tell::Status(now.status()));
    }
    tell
}

/// The primary's end of the notification socket.
pub(crate) struct Notifier {
    socket: Option<(UnixDatagram, UnixAddr)>,
    last: View,
    announced: bool,
    /// How often to ping systemd's watchdog (half its timeout).
    pub watchdog: Option<Duration>,
}

impl Notifier {
    /// Connects to `NOTIFY_SOCKET` if it is set (a path, or `@name` for an
    /// abstract socket); otherwise every call does nothing.
    pub(crate) fn from_environment() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|path| match open(&path) {
            Ok(socket) => Some(socket),
            Err(err) => {
                tracing::warn!("cannot use NOTIFY_SOCKET {path:?}: {err}; not notifying systemd");
                None
            }
        });
        let watchdog = socket
            .as_ref()
            .and_then(|_| sd_notify::watchdog_enabled())
            .map(|timeout| timeout / 2);
        Notifier {
            socket,
            last: View::default(),
            announced: false,
            watchdog,
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Tells systemd what changed since the last call.
    pub(crate) fn update(&mut self, now: View) {
        if self.socket.is_none() || now == self.last {
            return;
        }
        let tell = transitions(&self.last, &now, self.announced);
        let mut states = Vec::new();
        for message in &tell {
            match message {
                Tell::Ready => {
                    self.announced = true;
                    states.push(NotifyState::Ready);
                }
                Tell::Reloading => {
                    states.push(NotifyState::Reloading);
                    // systemd ≥ 253 wants the time of the reload with it.
                    if let Ok(now) = NotifyState::monotonic_usec_now() {
                        states.push(now);
                    }
                }
                Tell::Stopping => states.push(NotifyState::Stopping),
                Tell::Status(text) => states.push(NotifyState::Status(text)),
            }
        }
        self.send(&states);
        self.last = now;
    }

    /// `WATCHDOG=1`: the supervisor loop is alive.
    pub(crate) fn ping(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// Sends one datagram without blocking: a systemd that does not read
    /// must not stall the supervisor.
    fn send(&self, states: &[NotifyState]) {
        let Some((socket, address)) = self.socket.as_ref() else {
            return;
        };
        if states.is_empty() {
            return;
        }
        let text: String = states.iter().map(|state| format!("{state}\n")).collect();
        if let Err(err) = socket.send_to_addr(text.as_bytes(), address) {
            tracing::warn!("cannot notify systemd ({}): {err}", text.trim_end());
        }
    }
}

fn open(path: &std::ffi::OsStr) -> std::io::Result<(UnixDatagram, UnixAddr)> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_bytes();
    let address = match bytes.strip_prefix(b"@") {
        Some(name) => UnixAddr::from_abstract_name(name)?,
        None => UnixAddr::from_pathname(path)?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    Ok((socket, address))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(ready: usize, desired: usize) -> View {
        View {
            ready,
            desired,
            ..View::default()
        }
    }

    #[test]
    fn ready_once_the_first_generation_is() {
        let none = View::default();
        let half = view(1, 2);
        let all = view(2, 2);
        assert_eq!(
            transitions(&none, &half, false),
            [Tell::Status("1/2 workers ready".into())]
        );
        assert_eq!(
            transitions(&half, &all, false),
            [Tell::Ready, Tell::Status("2/2 workers ready".into())]
        );
        // Once announced, a worker coming and going changes the status only.
        assert_eq!(
            transitions(&all, &half, true),
            [Tell::Status("1/2 workers ready".into())]
        );
    }

    #[test]
    fn a_reload_is_announced_then_ready_again() {
        let all = view(2, 2);
        let reloading = View {
            reloading: Some((0, 2)),
            ..all.clone()
        };
        let halfway = View {
            reloading: Some((1, 2)),
            ..all.clone()
        };
        assert_eq!(
            transitions(&all, &reloading, true),
            [
                Tell::Reloading,
                Tell::Status("2/2 workers ready, reloading 0/2".into())
            ]
        );
        assert_eq!(
            transitions(&reloading, &halfway, true),
            [Tell::Status("2/2 workers ready, reloading 1/2".into())]
        );
        assert_eq!(
            transitions(&halfway, &all, true),
            [Tell::Ready, Tell::Status("2/2 workers ready".into())]
        );
    }

    #[test]
    fn stopping_is_said_once() {
        let all = view(2, 2);
        let stopping = View {
            stopping: true,
            ..all.clone()
        };
        let fewer = View {
            ready: 1,
            ..stopping.clone()
        };
        assert_eq!(
            transitions(&all, &stopping, true),
            [
                Tell::Stopping,
                Tell::Status("2/2 workers ready, stopping".into())
            ]
        );
        assert_eq!(
            transitions(&stopping, &fewer, true),
            [Tell::Status("1/2 workers ready, stopping".into())]
        );
    }

    #[test]
    fn a_cluster_stopped_before_it_was_ready_never_says_ready() {
        let starting = view(1, 2);
        let stopping = View {
            stopping: true,
            ..starting.clone()
        };
        assert_eq!(transitions(&starting, &stopping, false)[0], Tell::Stopping);
    }
}
