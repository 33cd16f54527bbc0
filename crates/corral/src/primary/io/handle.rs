//! The library user's handle on the primary, for code that runs beside the
//! supervisor (`Cluster::primary`): the lifecycle and message events, the
//! live worker table, messages to one worker or all, and the requests the
//! signals also make (stop, one worker more or fewer).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::control::command::{StopMode, SupervisorCommand};
use crate::control::status::Status;
use crate::error::Error;
use crate::log::rate::{RateLimit, warn_limited};
use crate::primary::event::Event;
use crate::primary::io::live_table::{LiveTable, SendError, WorkerInfo};
use crate::primary::os::signals::scale_by;
use crate::protocol::message;

/// How many events wait for a slow primary task; past that, new events are
/// dropped (and the task is told how many it missed).
pub(crate) const EVENT_BACKLOG: usize = 4096;

/// What the primary task's queue carries: an event, or a worker's message
/// as its JSON text, parsed only by the task that takes it
/// ([`Primary::next_event`] into a `Value`, [`Primary::next_event_as`]
/// straight into the user's type), so a channel reader builds no tree.
#[derive(Debug)]
pub(crate) enum Delivery {
    Event(Event),
    Message { id: u32, text: Box<str> },
}

/// The sending side of the primary task's events, shared by the supervisor
/// and the channel readers.
#[derive(Debug, Clone)]
pub(crate) struct EventSink {
    events: Option<mpsc::Sender<Delivery>>,
    dropped: Arc<AtomicU64>,
}

impl EventSink {
    /// A sink and the receiving end for a primary task.
    pub(crate) fn new() -> (Self, mpsc::Receiver<Delivery>, Arc<AtomicU64>) {
        let (events, receiver) = mpsc::channel(EVENT_BACKLOG);
        let dropped = Arc::new(AtomicU64::new(0));
        let sink = EventSink {
            events: Some(events),
            dropped: dropped.clone(),
        };
        (sink, receiver, dropped)
    }

    /// A sink for a cluster without a primary task: events go nowhere.
    pub(crate) fn none() -> Self {
        EventSink {
            events: None,
            dropped: Arc::default(),
        }
    }

    /// Whether anybody listens (so events are worth building).
    pub(crate) fn is_listened(&self) -> bool {
        self.events
            .as_ref()
            .is_some_and(|events| !events.is_closed())
    }

    /// Queues `event` without waiting; counts it as dropped when full.
    pub(crate) fn emit(&self, event: Event) {
        self.deliver(Delivery::Event(event));
    }

    /// Queues worker `id`'s message `text` (checked JSON) as
    /// [`emit`](Self::emit) queues an event.
    pub(crate) fn emit_message(&self, id: u32, text: Box<str>) {
        self.deliver(Delivery::Message { id, text });
    }

    fn deliver(&self, delivery: Delivery) {
        if let Some(events) = &self.events
            && let Err(mpsc::error::TrySendError::Full(_)) = events.try_send(delivery)
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What [`Primary::next_event_as`] yields.
#[derive(Debug)]
#[non_exhaustive]
pub enum EventAs<T> {
    /// Worker `id` sent `message`, parsed straight from its JSON text into
    /// `T`; a message that is not a `T` comes with its parse error.
    Message {
        id: u32,
        message: Result<T, serde_json::Error>,
    },
    /// Any other event (never `Event::Message`).
    Other(Event),
}

/// The primary's side of the cluster, handed to the `Cluster::primary` task.
pub struct Primary {
    live_table: Arc<LiveTable>,
    events: mpsc::Receiver<Delivery>,
    dropped: Arc<AtomicU64>,
    commands: mpsc::UnboundedSender<SupervisorCommand>,
}

impl Primary {
    pub(crate) fn new(
        live_table: Arc<LiveTable>,
        events: mpsc::Receiver<Delivery>,
        dropped: Arc<AtomicU64>,
        commands: mpsc::UnboundedSender<SupervisorCommand>,
    ) -> Self {
        Primary {
            live_table,
            events,
            dropped,
            commands,
        }
    }

    /// The cluster now: its listeners, reloads and every worker process
    /// with its state, restarts, CPU, memory and counts (what `corral
    /// status --json` prints). Fails once the cluster has stopped.
    pub async fn status(&self) -> Result<Status, Error> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(SupervisorCommand::Status(reply))
            .map_err(|_| Error::Stopped)?;
        answer.await.map_err(|_| Error::Stopped)
    }

    /// The next event (lifecycle or `Event::Message`); `None` once the
    /// cluster has stopped. While a task is 4096 events behind, newer events
    /// are dropped; a warning says how many.
    pub async fn next_event(&mut self) -> Option<Event> {
        Some(match self.next_delivery().await? {
            Delivery::Event(event) => event,
            Delivery::Message { id, text } => Event::Message {
                id,
                // Checked JSON: it parses.
                message: serde_json::from_str(&text).unwrap_or(Value::Null),
            },
        })
    }

    /// As [`next_event`](Self::next_event), but a worker's message is
    /// parsed straight from its JSON text into `T`, with no
    /// `serde_json::Value` built (`EventAs::Message`); every other event
    /// comes as `EventAs::Other`.
    pub async fn next_event_as<T: DeserializeOwned>(&mut self) -> Option<EventAs<T>> {
        Some(match self.next_delivery().await? {
            Delivery::Event(event) => EventAs::Other(event),
            Delivery::Message { id, text } => EventAs::Message {
                id,
                message: serde_json::from_str(&text),
            },
        })
    }

    async fn next_delivery(&mut self) -> Option<Delivery> {
        let event = self.events.recv().await;
        // Counted until the limit lets a line through, so no drop goes unsaid.
        static FELL_BEHIND: RateLimit = RateLimit::warnings();
        if self.dropped.load(Ordering::Relaxed) > 0 && FELL_BEHIND.admit().is_some() {
            let missed = self.dropped.swap(0, Ordering::Relaxed);
            tracing::warn!(
                event = "events_dropped",
                missed,
                "the primary task fell behind: {missed} events were dropped"
            );
        }
        event
    }

    /// The live workers.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.live_table.list()
    }

    /// Sends `message` to worker `id`.
    pub fn send<T: Serialize + ?Sized>(&self, id: u32, message: &T) -> Result<(), Error> {
        let line = message::encode_user(message).map_err(Error::Encode)?;
        self.live_table.send(id, line).map_err(Error::Send)
    }

    /// Sends `message` to every live worker; returns how many got it.
    pub fn broadcast<T: Serialize + ?Sized>(&self, message: &T) -> Result<usize, Error> {
        let line = message::encode_user(message).map_err(Error::Encode)?;
        let workers = self.live_table.list().len();
        let refused: Vec<SendError> = self.live_table.broadcast(&line, None);
        for err in &refused {
            warn_limited!(event = "send_refused", "broadcast: {err}");
        }
        Ok(workers - refused.len())
    }

    /// Stops the cluster gracefully, as SIGTERM does.
    pub fn stop(&self) {
        let _ = self
            .commands
            .send(SupervisorCommand::Stop(StopMode::GracefulThenNow));
    }

    /// Replaces every worker, one at a time, as SIGHUP does: each
    /// replacement is started and ready before the worker it replaces
    /// stops.
    pub fn reload(&self) {
        let _ = self.commands.send(SupervisorCommand::Reload {
            outcome: None,
            started: None,
        });
    }

    /// Adds a worker, as SIGTTIN does.
    pub fn add_worker(&self) {
        let _ = self.commands.send(scale_by(1));
    }

    /// Removes a worker gracefully, as SIGTTOU does.
    pub fn remove_worker(&self) {
        let _ = self.commands.send(scale_by(-1));
    }
}
