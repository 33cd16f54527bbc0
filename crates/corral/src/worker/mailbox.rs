//! A worker's messages: what it receives from the primary (or, relayed by
//! the primary, from another worker) and the handle it sends with. Messages
//! are any `serde` type, carried as JSON lines on the channel. A received
//! message waits as its JSON text, and is parsed when the worker takes it:
//! into a `serde_json::Value` ([`Messages::recv`]) or straight into the
//! worker's own type ([`Messages::recv_as`]), with no tree in between.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::Error;
use crate::log::rate::warn_limited;
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
    /// The message as a `T` (from the value already built; to parse into
    /// `T` without it, use [`Messages::recv_as`]).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.message)
    }
}

/// A received message parsed into the worker's own type
/// ([`Messages::recv_as`]).
#[derive(Debug)]
pub struct ReceivedAs<T> {
    pub from: Origin,
    /// The message, or why its JSON is not a `T` (the message is then
    /// skipped; the next one is read as usual).
    pub message: Result<T, serde_json::Error>,
}

/// A message as it waits in the inbox: one JSON value's text, checked.
#[derive(Debug)]
pub(crate) struct Incoming {
    from: Origin,
    json: Vec<u8>,
}

/// The messages a worker receives, in order.
#[derive(Debug)]
pub struct Messages {
    pub(crate) inbox: mpsc::Receiver<Incoming>,
}

/// The channel reader's side of the inbox. Until the worker takes its
/// [`Messages`], nobody reads them: they are dropped rather than queued.
#[derive(Debug, Clone)]
pub(crate) struct Inbox {
    pub sender: mpsc::Sender<Incoming>,
    pub subscribed: Arc<AtomicBool>,
}

impl Inbox {
    /// Queues a message; waits while a subscribed worker's inbox is full,
    /// which stops reading the channel and so pushes back on the primary.
    /// `json` must be one JSON value, as the channel reader checked it.
    pub(crate) async fn deliver(&self, from: Origin, json: Vec<u8>) {
        if !self.subscribed.load(Ordering::Acquire) {
            tracing::debug!("no one takes this worker's messages: dropped one from {from:?}");
            return;
        }
        let _ = self.sender.send(Incoming { from, json }).await;
    }
}

impl Messages {
    /// The next message, as a JSON value; `None` once the primary is gone.
    pub async fn recv(&mut self) -> Option<Received> {
        loop {
            let Incoming { from, json } = self.inbox.recv().await?;
            match serde_json::from_slice(&json) {
                Ok(message) => return Some(Received { from, message }),
                // Checked by the channel reader: only a value too deep for
                // a tree gets here.
                Err(err) => warn_limited!("a message from {from:?} skipped: {err}"),
            }
        }
    }

    /// The next message parsed straight from its JSON text into `T`,
    /// without a `serde_json::Value` in between; `None` once the primary is
    /// gone. A message that is not a `T` comes with the parse error.
    ///
    /// ```no_run
    /// use corral::{Cluster, Worker, WorkerResult};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Debug, Deserialize)]
    /// struct Job {
    ///     id: u64,
    ///     url: String,
    /// }
    ///
    /// #[derive(Serialize)]
    /// struct Done {
    ///     id: u64,
    /// }
    ///
    /// async fn worker(mut worker: Worker) -> WorkerResult {
    ///     let mut messages = worker.messages().expect("taken once");
    ///     worker.ready();
    ///     while let Some(received) = messages.recv_as::<Job>().await {
    ///         match received.message {
    ///             // Sent as it is serialized: no Value built either.
    ///             Ok(job) => worker.send(&Done { id: job.id }).await?,
    ///             Err(err) => eprintln!("not a job from {:?}: {err}", received.from),
    ///         }
    ///     }
    ///     Ok(())
    /// }
    ///
    /// fn main() -> Result<(), corral::Error> {
    ///     Cluster::new().workers(2).run(worker)
    /// }
    /// ```
    pub async fn recv_as<T: DeserializeOwned>(&mut self) -> Option<ReceivedAs<T>> {
        let Incoming { from, json } = self.inbox.recv().await?;
        let message = serde_json::from_slice(&json);
        Some(ReceivedAs { from, message })
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
    async fn messages_are_parsed_as_value_or_straight_into_a_type() {
        #[derive(Debug, PartialEq, serde::Deserialize)]
        struct Job {
            id: u64,
        }
        let (sender, inbox) = mpsc::channel(4);
        let inbox_side = Inbox {
            sender,
            subscribed: Arc::new(AtomicBool::new(true)),
        };
        let mut messages = Messages { inbox };
        for json in [&br#"{"id":7}"#[..], br#"{"id":8}"#, br#""not a job""#] {
            inbox_side.deliver(Origin::Worker(2), json.to_vec()).await;
        }
        let first = messages.recv_as::<Job>().await.unwrap();
        assert_eq!(first.from, Origin::Worker(2));
        assert_eq!(first.message.unwrap(), Job { id: 7 });
        let second = messages.recv().await.unwrap();
        assert_eq!(second.message, serde_json::json!({"id": 8}));
        assert!(messages.recv_as::<Job>().await.unwrap().message.is_err());
    }

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
