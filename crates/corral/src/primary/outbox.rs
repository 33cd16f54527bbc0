//! A worker's outgoing message queue in the primary, bounded in bytes: a
//! worker that does not read its channel makes messages to it be dropped
//! (and logged), never the primary's memory grow. corral's own words (the
//! stop) go on a lane of their own, written ahead of queued user messages
//! and never refused for the budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::os::fd::OwnedFd;

use tokio::sync::mpsc;

use crate::protocol::lines::{Lanes, LineQueue, write_lines};

/// The most bytes queued for one worker.
pub(crate) const OUTBOX_LIMIT: usize = 64 * 1024 * 1024;

/// The sending side; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    control: mpsc::UnboundedSender<Vec<u8>>,
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
    /// Starts the task that writes queued lines to the stream socket `writer`.
    pub(crate) fn start(writer: OwnedFd) -> Self {
        let (control, control_queue) = mpsc::unbounded_channel::<Vec<u8>>();
        let (lines, queue) = mpsc::unbounded_channel::<Vec<u8>>();
        let queued = Arc::new(AtomicUsize::new(0));
        let written = queued.clone();
        let lanes = Lanes::new(
            LineQueue::Unbounded(control_queue),
            LineQueue::Unbounded(queue),
        );
        tokio::spawn(write_lines(writer, lanes, move |bytes| {
            written.fetch_sub(bytes, Ordering::Relaxed);
        }));
        Outbox {
            control,
            lines,
            queued,
        }
    }

    /// Queues one of corral's own lines (newline included), to be written
    /// before any queued user message. Only a closed channel refuses it.
    pub(crate) fn push_control(&self, line: Vec<u8>) -> Result<(), Refused> {
        let len = line.len();
        // Counted, so that the writer's accounting of written bytes balances.
        self.queued.fetch_add(len, Ordering::Relaxed);
        self.control.send(line).map_err(|_| {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            Refused::Closed
        })
    }

    /// An outbox whose worker is gone: every push is refused as closed.
    /// For tests of the supervisor's bookkeeping, which need no process.
    #[cfg(test)]
    pub(crate) fn closed() -> Self {
        let (control, _) = mpsc::unbounded_channel();
        let (lines, _) = mpsc::unbounded_channel();
        Outbox {
            control,
            lines,
            queued: Arc::default(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::lines::COALESCE_LIMIT;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn every_line_arrives_in_order_whatever_its_size() {
        let (primary_end, mut worker_end) = tokio::net::UnixStream::pair().unwrap();
        let writer = OwnedFd::from(primary_end.into_std().unwrap());
        let outbox = Outbox::start(writer);
        let mut expected = Vec::new();
        for index in 0..50u8 {
            // Small lines, and now and then one too large to coalesce.
            let len = if index % 7 == 3 {
                COALESCE_LIMIT + 10
            } else {
                10
            };
            let mut line = vec![b'a' + index % 26; len];
            line.push(b'\n');
            expected.extend_from_slice(&line);
            outbox.push(line).unwrap();
        }
        let mut received = vec![0; expected.len()];
        worker_end.read_exact(&mut received).await.unwrap();
        assert!(received == expected, "lines were lost or reordered");
    }

    #[tokio::test]
    async fn a_stop_is_queued_past_the_budget() {
        let (primary_end, _worker_end) = tokio::net::UnixStream::pair().unwrap();
        let outbox = Outbox::start(OwnedFd::from(primary_end.into_std().unwrap()));
        // Nobody reads the worker's end: user lines fill the budget...
        let chunk = vec![b'x'; 1024 * 1024];
        let mut refused = None;
        for _ in 0..=OUTBOX_LIMIT / chunk.len() + 1 {
            if let Err(err) = outbox.push(chunk.clone()) {
                refused = Some(err);
                break;
            }
        }
        assert_eq!(refused, Some(Refused::Full));
        // ...and the stop still goes in.
        assert_eq!(
            outbox.push_control(b"{\"corral\":\"stop\"}\n".to_vec()),
            Ok(())
        );
    }
}
