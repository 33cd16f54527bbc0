//! Counting the requests a worker serves, for `--max-requests`: the server
//! calls [`RequestCounter::served`] per request; a task reports the count to
//! the primary in batches (`{"corral":{"served":N}}`, at most one message
//! per `REPORT_EVERY`), so counting costs an atomic add, not a message.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::protocol::message;
use crate::worker::mailbox::WorkerSender;

const REPORT_EVERY: Duration = Duration::from_millis(100);

/// Counts served requests; cheap to clone into handlers.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter {
    unreported: Arc<AtomicU64>,
    counted: Arc<Notify>,
}

impl RequestCounter {
    /// Counts one served request.
    pub fn served(&self) {
        self.unreported.fetch_add(1, Ordering::Relaxed);
        self.counted.notify_one();
    }

    /// Starts reporting counts through `sender`. Must run inside the
    /// worker's runtime.
    pub(crate) fn start_reporting(sender: WorkerSender) -> Self {
        let counter = RequestCounter::default();
        let reporting = counter.clone();
        tokio::spawn(async move {
            loop {
                reporting.counted.notified().await;
                tokio::time::sleep(REPORT_EVERY).await;
                let count = reporting.unreported.swap(0, Ordering::Relaxed);
                if count > 0 {
                    sender.send_control_line(message::encode_served(count));
                }
            }
        });
        counter
    }
}
