//! The library user's handle on the primary, for code that runs beside the
//! supervisor (`Cluster::primary`): the lifecycle and message events, the
//! live worker table, messages to one worker or all, and the requests the
//! signals also make (stop, one worker more or fewer).

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

use super::registry::{Registry, SendError, WorkerInfo};
use super::signals::Request;
use crate::event::Event;
use crate::{Error, message};

/// How many events wait for a slow primary task before the oldest are
/// dropped (it is then told how many it missed).
pub(crate) const EVENT_BACKLOG: usize = 4096;

/// The primary's side of the cluster, handed to the `Cluster::primary` task.
pub struct Primary {
    registry: Arc<Registry>,
    events: broadcast::Receiver<Event>,
    requests: mpsc::UnboundedSender<Request>,
}

impl Primary {
    pub(crate) fn new(
        registry: Arc<Registry>,
        events: broadcast::Receiver<Event>,
        requests: mpsc::UnboundedSender<Request>,
    ) -> Self {
        Primary {
            registry,
            events,
            requests,
        }
    }

    /// The next event (lifecycle or `Event::Message`); `None` once the
    /// cluster has stopped. A task that falls more than 4096 events behind
    /// loses the oldest; a warning says how many.
    pub async fn next_event(&mut self) -> Option<Event> {
        loop {
            match self.events.recv().await {
                Ok(event) => return Some(event),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!("the primary task fell behind: {missed} events were dropped");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The live workers.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.registry.list()
    }

    /// Sends `message` to worker `id`.
    pub fn send<T: Serialize + ?Sized>(&self, id: u32, message: &T) -> Result<(), Error> {
        let line = message::encode_user(message).map_err(Error::Encode)?;
        self.registry.send(id, line).map_err(Error::Send)
    }

    /// Sends `message` to every live worker; returns how many got it.
    pub fn broadcast<T: Serialize + ?Sized>(&self, message: &T) -> Result<usize, Error> {
        let line = message::encode_user(message).map_err(Error::Encode)?;
        let workers = self.registry.list().len();
        let refused: Vec<SendError> = self.registry.broadcast(&line, None);
        for err in &refused {
            tracing::warn!("broadcast: {err}");
        }
        Ok(workers - refused.len())
    }

    /// Stops the cluster gracefully, as SIGTERM does.
    pub fn stop(&self) {
        let _ = self.requests.send(Request::Stop);
    }

    /// Adds a worker, as SIGTTIN does.
    pub fn add_worker(&self) {
        let _ = self.requests.send(Request::AddWorker);
    }

    /// Removes a worker gracefully, as SIGTTOU does.
    pub fn remove_worker(&self) {
        let _ = self.requests.send(Request::RemoveWorker);
    }
}
