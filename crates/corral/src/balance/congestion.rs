//! A worker whose hand-off channel is full: it is skipped (its share goes to
//! the others) until the channel is writable again, and the dispatcher
//! never blocks on it. The writability watch is registered only while the
//! channel is full: a lasting one would wake the primary every time the
//! worker reads. The warning about it is logged at most once a second.

use std::io;
use std::os::fd::OwnedFd;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::sys::register_async;

/// The shortest time between two congestion warnings about one worker.
const WARNING_INTERVAL: Duration = Duration::from_secs(1);

/// One worker's congestion state.
#[derive(Debug, Default)]
pub(crate) struct Congestion {
    /// Set while the channel is full: a registration for writability.
    watch: Option<AsyncFd<OwnedFd>>,
    /// When the last warning was logged.
    warned_at: Option<Instant>,
}

impl Congestion {
    pub(crate) fn is_congested(&self) -> bool {
        self.watch.is_some()
    }

    /// The channel `socket` is full: watch it for writability. Returns
    /// whether a warning is due (the first in [`WARNING_INTERVAL`]).
    pub(crate) fn begin(&mut self, socket: &AsyncFd<OwnedFd>, now: Instant) -> io::Result<bool> {
        let watch = register_async(socket.get_ref().try_clone()?, Interest::WRITABLE)?;
        self.watch = Some(watch);
        Ok(self.warning_due(now))
    }

    /// Whether a warning is due at `now`; if so, it counts as given.
    fn warning_due(&mut self, now: Instant) -> bool {
        let due = self
            .warned_at
            .is_none_or(|last| now.duration_since(last) > WARNING_INTERVAL);
        if due {
            self.warned_at = Some(now);
        }
        due
    }

    /// Whether the full channel became writable (then call [`Self::clear`]).
    pub(crate) fn poll_cleared(&self, cx: &mut Context<'_>) -> bool {
        self.watch
            .as_ref()
            .is_some_and(|watch| matches!(watch.poll_write_ready(cx), Poll::Ready(_)))
    }

    /// The channel has room again.
    pub(crate) fn clear(&mut self) {
        self.watch = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::handoff::{self, Handed};
    use std::os::fd::AsFd;

    #[test]
    fn warnings_come_at_most_once_a_second() {
        let mut congestion = Congestion::default();
        let start = Instant::now();
        assert!(congestion.warning_due(start));
        assert!(!congestion.warning_due(start + Duration::from_millis(500)));
        assert!(!congestion.warning_due(start + Duration::from_millis(1000)));
        assert!(congestion.warning_due(start + Duration::from_millis(1001)));
    }

    #[tokio::test]
    async fn a_full_channel_is_watched_until_the_worker_reads() {
        let (primary_end, worker_end) = handoff::socket_pair().unwrap();
        let socket = register_async(primary_end, Interest::READABLE).unwrap();
        // Fill the channel with connections (any descriptor will do).
        let connection = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        loop {
            let handed = Handed {
                fd: OwnedFd::from(connection.try_clone().unwrap()),
                listener: 0,
            };
            match handoff::send_batch(socket.as_fd(), b"", &[handed]) {
                Ok(()) => continue,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => panic!("{err}"),
            }
        }
        let mut congestion = Congestion::default();
        assert!(congestion.begin(&socket, Instant::now()).unwrap());
        assert!(congestion.is_congested());
        let blocked = std::future::poll_fn(|cx| Poll::Ready(congestion.poll_cleared(cx))).await;
        assert!(!blocked, "still full");
        // The worker reads everything.
        while let Ok(Some(_)) = handoff::receive(worker_end.as_fd()) {}
        let cleared = tokio::time::timeout(
            Duration::from_secs(5),
            std::future::poll_fn(|cx| {
                if congestion.poll_cleared(cx) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }),
        )
        .await;
        assert!(cleared.is_ok(), "writable once the worker read");
        congestion.clear();
        assert!(!congestion.is_congested());
    }
}
