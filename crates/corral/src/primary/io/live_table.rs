//! The live table of workers, shared by the supervisor (which keeps it up to
//! date), the channel readers (which relay messages between workers) and the
//! user's [`crate::Primary`] handle (which lists workers and sends to them).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use crate::control::status::WorkerState;
use crate::primary::io::outbox::{Outbox, Refused};
use crate::worker_key::WorkerKey;

/// One live worker, as [`crate::Primary::workers`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub id: u32,
    pub pid: u32,
    pub generation: u32,
    pub state: WorkerState,
}

struct Entry {
    /// The process listed (a slot's later process has another key).
    key: WorkerKey,
    info: WorkerInfo,
    outbox: Outbox,
}

#[derive(Default)]
pub(crate) struct LiveTable {
    workers: Mutex<BTreeMap<u32, Entry>>,
}

impl LiveTable {
    /// Lists the process `key` as its slot's worker.
    pub(crate) fn insert(&self, key: WorkerKey, info: WorkerInfo, outbox: Outbox) {
        self.lock().insert(key.slot, Entry { key, info, outbox });
    }

    /// Sets the state of the process `key`, if it is still listed.
    pub(crate) fn set_state(&self, key: WorkerKey, state: WorkerState) {
        if let Some(entry) = self.lock().get_mut(&key.slot)
            && entry.key == key
        {
            entry.info.state = state;
        }
    }

    /// Unlists the process `key` (not a successor listed since).
    pub(crate) fn remove(&self, key: WorkerKey) {
        let mut workers = self.lock();
        if workers.get(&key.slot).is_some_and(|entry| entry.key == key) {
            workers.remove(&key.slot);
        }
    }

    pub(crate) fn list(&self) -> Vec<WorkerInfo> {
        self.lock()
            .values()
            .map(|entry| entry.info.clone())
            .collect()
    }

    /// Queues `line` for worker `id`.
    pub(crate) fn send(&self, id: u32, line: Vec<u8>) -> Result<(), SendError> {
        // Queued under the lock (an unbounded queue never waits): cloning
        // the outbox's senders out of it cost more than the push.
        let workers = self.lock();
        let entry = workers.get(&id).ok_or(SendError::NoSuchWorker(id))?;
        entry
            .outbox
            .push(line)
            .map_err(|refused| refusal(id, refused))
    }

    /// Queues `line` for every worker but `except`; returns the refusals.
    pub(crate) fn broadcast(&self, line: &[u8], except: Option<u32>) -> Vec<SendError> {
        // Under the lock, as `send`.
        self.lock()
            .values()
            .filter(|entry| Some(entry.info.id) != except)
            .filter_map(|entry| {
                let id = entry.info.id;
                entry
                    .outbox
                    .push(line.to_vec())
                    .err()
                    .map(|refused| refusal(id, refused))
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u32, Entry>> {
        // The table stays consistent even if a holder panicked.
        self.workers
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// The error for a message worker `id`'s outbox refused; a full outbox
/// counts as a dropped message.
fn refusal(id: u32, refused: Refused) -> SendError {
    match refused {
        Refused::Full => {
            crate::metrics::message_dropped();
            SendError::Full(id)
        }
        Refused::Closed => SendError::NoSuchWorker(id),
    }
}

/// Why a message to a worker was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    #[error("there is no worker {0}")]
    NoSuchWorker(u32),
    #[error(
        "worker {0} is not reading its messages: its queue is full (64 MiB), the message was dropped"
    )]
    Full(u32),
}
