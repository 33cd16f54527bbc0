//! A worker's messages: what it receives from the primary (or, relayed by
//! the primary, from another worker) and the handle it sends with. Messages
//! are any `serde` type, carried as JSON lines on the channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::Error;
use crate::protocol::message::{self, Control};

/// How many received messages wait for the worker before the channel
/// stops being read (the primary then queues, up to its own bound).
pub(crate) const INBOX_CAPACITY: usize = 1024;

/// Who sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Primary,
    Worker(u32),
}

/// A received message.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub from: Origin,
    pub message: Value,
}

impl Received {
    /// The message as a `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.message)
    }
}

/// The messages a worker receives, in order.
#[derive(Debug)]
pub struct Messages {
    pub(crate) inbox: mpsc::Receiver<Received>,
}

/// The channel reader's side of the inbox. Until the worker takes its
/// [`Messages`], nobody reads them: they are dropped rather than queued.
#[derive(Debug, Clone)]
pub(crate) struct Inbox {
    pub sender: mpsc::Sender<Received>,
    pub subscribed: Arc<AtomicBool>,
}

impl Inbox {
    /// Queues a message; waits while a subscribed worker's inbox is full,
    /// which stops reading the channel and so pushes back on the primary.
    pub(crate) async fn deliver(&self, from: Origin, message: Value) {
        if !self.subscribed.load(Ordering::Acquire) {
            tracing::debug!("no one takes this worker's messages: dropped one from {from:?}");
            return;
        }
        let _ = self.sender.send(Received { from, message }).await;
    }
}

impl Messages {
    /// The next message; `None` once the primary is gone.
    pub async fn recv(&mut self) -> Option<Received> {
        self.inbox.recv().await
    }
}

/// How many of corral's own lines (online, ready, heartbeats, request
/// counts) may wait to be written; they are written before user messages,
/// so only a primary that reads nothing at all fills this.
pub(crate) const CONTROL_CAPACITY: usize = 64;

/// How many user messages may wait to be written before `send` waits.
pub(crate) const OUTBOX_CAPACITY: usize = 1024;

/// The two lanes to the channel's writer (see `lines::Lanes`).
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub control: mpsc::Sender<Vec<u8>>,
    pub user: mpsc::Sender<Vec<u8>>,
}

/// Sends messages from a worker; cheap to clone into other tasks.
#[derive(Debug, Clone)]
pub struct WorkerSender {
    pub(crate) outbox: Option<Outgoing>,
}

impl WorkerSender {
    /// Sends `message` to the primary, waiting while the channel's queue is full.
    pub async fn send<T: Serialize + ?Sized>(&self, message: &T) -> Result<(), Error> {
        let line = message::encode_user(message).map_err(Error::Encode)?;
        self.send_line(line).await
    }

    /// Sends `message` to worker `id`, through the primary.
    pub async fn send_to<T: Serialize + ?Sized>(&self, id: u32, message: &T) -> Result<(), Error> {
        let line = message::encode_send_to(id, message).map_err(Error::Encode)?;
        self.send_line(line).await
    }

    pub(crate) fn send_control(&self, control: Control) {
        self.send_control_line(message::encode_control(control));
    }

    /// Queues one of corral's own lines on the control lane, ahead of user
    /// messages, without waiting. The lane is full only when the primary
    /// reads nothing at all: it then learns the worker's state some other
    /// way (its exit, its watchdog), so dropping is safe.
    pub(crate) fn send_control_line(&self, line: Vec<u8>) {
        if let Some(outbox) = &self.outbox {
            let _ = outbox.control.try_send(line);
        }
    }

    async fn send_line(&self, line: Vec<u8>) -> Result<(), Error> {
        let outbox = self
            .outbox
            .as_ref()
            .ok_or(Error::Channel("this worker has no message channel"))?;
        outbox
            .user
            .send(line)
            .await
            .map_err(|_| Error::Channel("the channel to the primary is closed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn control_words_pass_a_full_user_queue() {
        let (control, mut control_queue) = mpsc::channel(CONTROL_CAPACITY);
        let (user, mut user_queue) = mpsc::channel(1);
        let sender = WorkerSender {
            outbox: Some(Outgoing { control, user }),
        };
        sender.send(&"fills the queue").await.unwrap();
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), sender.send(&"waits"))
                .await
                .is_err(),
            "the user queue is full"
        );
        sender.send_control(Control::Heartbeat);
        sender.send_control(Control::Ready);
        assert_eq!(
            control_queue.try_recv().unwrap(),
            message::encode_control(Control::Heartbeat)
        );
        assert_eq!(
            control_queue.try_recv().unwrap(),
            message::encode_control(Control::Ready)
        );
        assert_eq!(user_queue.try_recv().unwrap(), b"\"fills the queue\"\n");
    }
}
