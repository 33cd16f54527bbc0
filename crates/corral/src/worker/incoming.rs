//! The worker's end of the hand-off channel (`round-robin`,
//! `least-connections`): a task receives the connections the primary hands
//! over and queues them for the worker's listeners; another reports closed
//! connections in batches when the policy needs it (paced: see
//! `report_pace.rs`). When the worker is told to stop, it stops reading and
//! returns the connections its server has not taken, so the primary hands
//! them to another worker instead of losing them.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{Notify, watch};

use crate::log::rate::warn_limited;
use crate::protocol::handoff::{self, Handed, MAX_FDS_PER_MESSAGE};
use crate::protocol::socket_reader;
use crate::sys::register_async;
use crate::worker::connection::CloseCounter;
use crate::worker::drain::{Drain, Stopping, Unread};
use crate::worker::report_pace::report_delay;

/// Connections received for one listener, waiting for its `accept`.
#[derive(Debug, Default)]
pub(crate) struct ConnectionQueue {
    waiting: Mutex<VecDeque<OwnedFd>>,
    arrived: Notify,
    /// No more will come: the channel closed or the worker is stopping.
    closed: AtomicBool,
}

impl ConnectionQueue {
    /// The next connection; `None` once the queue is closed and empty.
    /// With the worker's `drain`, it is counted unread, and nothing is taken
    /// once the worker is stopping.
    pub(crate) async fn next(
        &self,
        drain: Option<&Arc<Drain>>,
    ) -> Result<Option<(OwnedFd, Option<Unread>)>, Stopping> {
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let taken = match drain {
                Some(drain) => drain
                    .admit(|| self.lock().pop_front())?
                    .map(|(fd, unread)| (fd, Some(unread))),
                None => self.lock().pop_front().map(|fd| (fd, None)),
            };
            if taken.is_some() {
                return Ok(taken);
            }
            if self.closed.load(Ordering::Acquire) {
                return Ok(None);
            }
            arrived.await;
        }
    }

    fn push(&self, fd: OwnedFd) {
        self.lock().push_back(fd);
        self.arrived.notify_one();
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.arrived.notify_waiters();
    }

    fn take_all(&self) -> Vec<OwnedFd> {
        self.lock().drain(..).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<OwnedFd>> {
        // A panic while holding this lock cannot leave the queue invalid.
        self.waiting
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Starts receiving on the hand-off channel `socket` for `listener_count`
/// listeners. Must run inside the worker's runtime.
pub(crate) fn start(
    socket: OwnedFd,
    listener_count: usize,
    closes: Option<Arc<CloseCounter>>,
    stop: watch::Receiver<bool>,
) -> io::Result<Vec<Arc<ConnectionQueue>>> {
    let socket = Arc::new(register_async(socket, Interest::READABLE)?);
    let queues: Vec<Arc<ConnectionQueue>> = (0..listener_count).map(|_| Arc::default()).collect();
    tokio::spawn(receive(socket.clone(), queues.clone(), stop));
    if let Some(closes) = closes {
        tokio::spawn(report_closes(socket, closes));
    }
    Ok(queues)
}

/// Receives connections until the worker stops or the primary is gone.
async fn receive(
    socket: Arc<AsyncFd<OwnedFd>>,
    queues: Vec<Arc<ConnectionQueue>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let stopping = tokio::select! {
            readable = socket.readable() => {
                if readable.is_err() || !drain_channel(&socket, &queues) {
                    break;
                }
                false
            }
            // An error means the stop sender is gone, which also means stop.
            stopped = stop.wait_for(|stopping| *stopping) => {
                drop(stopped);
                true
            }
        };
        if stopping {
            return_unserved(&socket, &queues).await;
            break;
        }
    }
    for queue in &queues {
        queue.close();
    }
}

/// Queues every connection waiting in the channel. `false` when the
/// channel is finished (the primary is gone).
fn drain_channel(socket: &AsyncFd<OwnedFd>, queues: &[Arc<ConnectionQueue>]) -> bool {
    loop {
        let received = socket.try_io(Interest::READABLE, |fd| handoff::receive(fd.as_fd()));
        match received {
            Ok(Some(message)) => match handoff::pair_up(&message.data, message.fds) {
                Ok(connections) => route(connections, queues),
                Err(err) => warn_limited!("bad hand-off message from the primary: {err}"),
            },
            Ok(None) => return false,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return true,
            Err(err) if err.kind() == io::ErrorKind::InvalidData => {
                warn_limited!("bad hand-off message from the primary: {err}");
            }
            Err(err) => {
                tracing::warn!("the hand-off channel failed: {err}");
                return false;
            }
        }
    }
}

fn route(connections: Vec<Handed>, queues: &[Arc<ConnectionQueue>]) {
    for handed in connections {
        match queues.get(usize::from(handed.listener)) {
            Some(queue) => queue.push(handed.fd),
            None => warn_limited!(
                "the primary handed a connection for listener {} of {}: closed it",
                handed.listener,
                queues.len()
            ),
        }
    }
}

/// Sends the connections no `accept` has taken back to the primary.
async fn return_unserved(socket: &AsyncFd<OwnedFd>, queues: &[Arc<ConnectionQueue>]) {
    let mut unserved: Vec<Handed> = Vec::new();
    for (index, queue) in queues.iter().enumerate() {
        queue.close();
        unserved.extend(queue.take_all().into_iter().map(|fd| Handed {
            fd,
            listener: index as u8,
        }));
    }
    for chunk in unserved.chunks(MAX_FDS_PER_MESSAGE) {
        let returned = loop {
            match handoff::send_batch(socket.as_fd(), b"R", chunk) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(err) = socket_reader::writable(socket.as_fd()).await {
                        break Err(err);
                    }
                }
                result => break result,
            }
        };
        if let Err(err) = returned {
            warn_limited!(
                "could not return {} connections to the primary: {err}",
                chunk.len()
            );
        }
    }
}

/// Reports closed connections, one message per batch of closes, paced by
/// [`report_delay`] so that fast closes share a report.
async fn report_closes(socket: Arc<AsyncFd<OwnedFd>>, closes: Arc<CloseCounter>) {
    let mut last_report = None;
    loop {
        closes.changed.notified().await;
        let delay = report_delay(last_report, Instant::now());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let count = closes.closed.swap(0, Ordering::Relaxed);
        if count == 0 {
            continue;
        }
        let sent = loop {
            match handoff::send_closed(socket.as_fd(), count) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    if socket_reader::writable(socket.as_fd()).await.is_err() {
                        return;
                    }
                }
                result => break result,
            }
        };
        if sent.is_err() {
            return;
        }
        last_report = Some(Instant::now());
    }
}
