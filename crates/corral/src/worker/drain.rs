//! The order in which a stopping worker lets go of its connections, so that
//! a server built the usual way (`axum::serve(listener, app)
//! .with_graceful_shutdown(worker.stopped())`, or a hyper accept loop) loses
//! no request.
//!
//! The race it closes: a connection accepted just before the stop has often
//! not been read yet when the server's graceful shutdown begins, and hyper
//! closes a connection it has read nothing from at once: the client, which
//! already sent its request, sees the connection reset. So:
//! 1. once the worker is asked to stop, its [`crate::Listener`]s hand out no
//!    more connections (they stay in the kernel's queue, or go back to the
//!    primary under the hand-off policies, for another worker);
//! 2. [`crate::Worker::stopped`] completes only when every connection
//!    already handed to the server has been read from (its first request
//!    is in the server's hands, which then finishes it), or after
//!    [`FIRST_READ_GRACE`] for a client that connected and sent nothing.
//!
//! A connection counts as unread from the moment a listener hands it out
//! until the server's first read of it returns (data, end of file or an
//! error) or it is dropped. Handing out and the check of the stop flag
//! happen under one lock, so no connection can slip out after the wait has
//! begun.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, watch};

/// How long a stopping worker waits for a client that connected just
/// before the stop to send its first request.
pub(crate) const FIRST_READ_GRACE: Duration = Duration::from_secs(1);

/// The worker's stop flag and its count of unread connections.
#[derive(Debug)]
pub(crate) struct Drain {
    stop: watch::Receiver<bool>,
    unread: Mutex<usize>,
    all_read: Notify,
}

/// Why a listener handed nothing out.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Stopping;

impl Drain {
    pub(crate) fn new(stop: watch::Receiver<bool>) -> Arc<Self> {
        Arc::new(Drain {
            stop,
            unread: Mutex::new(0),
            all_read: Notify::new(),
        })
    }

    /// Whether the worker has been asked to stop.
    pub(crate) fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// A stop receiver, for waiting on the stop itself.
    pub(crate) fn stop_receiver(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }

    /// Runs `take` (which takes a connection, if one is there) unless the
    /// worker is stopping; what it takes is counted unread until the
    /// returned [`Unread`] is released.
    pub(crate) fn admit<T>(
        self: &Arc<Self>,
        take: impl FnOnce() -> Option<T>,
    ) -> Result<Option<(T, Unread)>, Stopping> {
        let mut unread = self.lock();
        if self.is_stopping() {
            return Err(Stopping);
        }
        Ok(take().map(|taken| {
            *unread += 1;
            (taken, Unread(Some(self.clone())))
        }))
    }

    /// Completes once the worker is asked to stop and every connection
    /// handed out has been read from, or `patience` after the stop.
    pub(crate) async fn stopped(&self, patience: Duration) {
        let mut stop = self.stop.clone();
        // An error means the sender is gone, which also means stop.
        let _ = stop.wait_for(|stopping| *stopping).await;
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let all_read = self.all_read.notified();
            tokio::pin!(all_read);
            all_read.as_mut().enable();
            // Taking the lock orders this check after any hand-out that
            // saw the flag unset.
            if *self.lock() == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, all_read).await.is_err() {
                return;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, usize> {
        // A panic while holding this lock cannot leave a count invalid.
        self.unread
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// A handed-out connection not yet read from; releasing it (or dropping
/// it) counts it read.
#[derive(Debug)]
pub(crate) struct Unread(Option<Arc<Drain>>);

impl Unread {
    pub(crate) fn release(&mut self) {
        if let Some(drain) = self.0.take() {
            let mut unread = drain.lock();
            *unread = unread.saturating_sub(1);
            if *unread == 0 {
                drain.all_read.notify_waiters();
            }
        }
    }
}

impl Drop for Unread {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stopped_waits_for_every_handed_connection_to_be_read() {
        let (stop_sender, stop) = watch::channel(false);
        let drain = Drain::new(stop);
        let (_, mut first) = drain.admit(|| Some(1)).unwrap().unwrap();
        let (_, second) = drain.admit(|| Some(2)).unwrap().unwrap();
        assert_eq!(drain.admit(|| None::<u8>).unwrap().map(|(n, _)| n), None);
        stop_sender.send_replace(true);
        assert_eq!(drain.admit(|| Some(3)).err(), Some(Stopping));
        let waiting = tokio::spawn({
            let drain = drain.clone();
            async move { drain.stopped(Duration::from_secs(30)).await }
        });
        first.release();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "one connection is still unread");
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("stopped completes once all were read")
            .unwrap();
    }

    #[tokio::test]
    async fn a_silent_client_holds_the_stop_no_longer_than_the_patience() {
        let (stop_sender, stop) = watch::channel(false);
        let drain = Drain::new(stop);
        let _silent = drain.admit(|| Some(())).unwrap().unwrap();
        stop_sender.send_replace(true);
        let started = std::time::Instant::now();
        drain.stopped(Duration::from_millis(50)).await;
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
