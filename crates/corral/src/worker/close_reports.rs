//! Closed connections reported on the message channel. Under
//! `least-connections` steered in the kernel where the kernel cannot count
//! open connections itself (no cgroup v2 to attach its counter to), a
//! library worker accepts on its own socket and has no hand-off channel;
//! the kernel program counts the connections it gives each slot, and the
//! worker's reports of the ones it closed (`{"corral":{"closed":N}}`) make
//! that count the open ones. At most one report per
//! [`MESSAGE_REPORT_INTERVAL`] (`report_pace.rs`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::protocol::message;
use crate::worker::connection::CloseCounter;
use crate::worker::mailbox::WorkerSender;
use crate::worker::report_pace::{MESSAGE_REPORT_INTERVAL, delay_within};

/// Starts reporting the closes counted in the returned counter through
/// `sender`. Must run inside the worker's runtime.
pub(crate) fn start(sender: WorkerSender) -> Arc<CloseCounter> {
    let closes = Arc::new(CloseCounter::default());
    let counted = closes.clone();
    tokio::spawn(async move {
        let mut last_report = None;
        loop {
            counted.changed.notified().await;
            let delay = delay_within(MESSAGE_REPORT_INTERVAL, last_report, Instant::now());
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let count = counted.closed.swap(0, Ordering::Relaxed);
            if count > 0 {
                sender.send_control_line(message::encode_closed(count));
                last_report = Some(Instant::now());
            }
        }
    });
    closes
}
