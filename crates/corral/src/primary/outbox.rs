//! A worker's outgoing message queue in the primary, bounded in bytes: a
//! worker that does not read its channel makes messages to it be dropped
//! (and logged), never the primary's memory grow.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;

/// The most bytes queued for one worker.
pub(crate) const OUTBOX_LIMIT: usize = 64 * 1024 * 1024;

/// The sending side; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    lines: mpsc::UnboundedSender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
}

/// Why a message was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The worker is not reading: its queue holds [`OUTBOX_LIMIT`] bytes.
    Full,
    /// The worker's channel is closed.
    Closed,
}

impl Outbox {
    /// Starts the task that writes queued lines to `writer`.
    pub(crate) fn start(mut writer: OwnedWriteHalf) -> Self {
        let (lines, mut queue) = mpsc::unbounded_channel::<Vec<u8>>();
        let queued = Arc::new(AtomicUsize::new(0));
        let written = queued.clone();
        tokio::spawn(async move {
            while let Some(line) = queue.recv().await {
                let result = writer.write_all(&line).await;
                written.fetch_sub(line.len(), Ordering::Relaxed);
                if result.is_err() {
                    break;
                }
            }
        });
        Outbox { lines, queued }
    }

    /// Queues one line (newline included).
    pub(crate) fn push(&self, line: Vec<u8>) -> Result<(), Refused> {
        let len = line.len();
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > OUTBOX_LIMIT {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return Err(Refused::Full);
        }
        self.lines.send(line).map_err(|_| {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            Refused::Closed
        })
    }
}
