//! What the primary does with each message a worker sends, right in that
//! worker's channel reader: control words go to the supervisor; user
//! messages go to the user's [`crate::Primary`] handle (and to the log, or
//! to every other worker, as configured); relay requests go to the named
//! worker. User messages never pass through the supervisor's inbox, so a
//! worker flooding its channel cannot delay the supervision of the others.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::log::rate::{RateLimit, warn_limited};
use crate::primary::event::Event;
use crate::primary::io::handle::EventSink;
use crate::primary::io::live_table::LiveTable;
use crate::primary::io::notice::Notice;
use crate::protocol::message::{self, Control, ToPrimary};
use crate::settings::MessagePolicy;
use crate::worker_key::WorkerKey;

pub(crate) struct MessageRouter {
    pub live_table: Arc<LiveTable>,
    pub events: EventSink,
    pub notices: mpsc::Sender<Notice>,
    pub policy: MessagePolicy,
}

impl MessageRouter {
    /// Handles one message from the process `worker`. Returns `false` when
    /// the supervisor is gone.
    pub(crate) async fn route(&self, worker: WorkerKey, message: ToPrimary) -> bool {
        let id = worker.slot;
        match message {
            ToPrimary::Control(control) => self.to_supervisor(worker, control).await,
            // pm2's idiom: `process.send('ready')`.
            ToPrimary::User(Value::String(word)) if word == "ready" => {
                self.to_supervisor(worker, Control::Ready).await
            }
            ToPrimary::User(value) => {
                self.deliver(id, value);
                true
            }
            ToPrimary::SendTo { to, message } => {
                if let Err(err) = self.live_table.send(to, message::encode_from(id, message)) {
                    warn_limited!(
                        event = "send_refused",
                        worker = id,
                        "worker {id}: cannot relay a message: {err}"
                    );
                }
                true
            }
            ToPrimary::Served { count } => {
                let notice = Notice::Served { worker, count };
                self.notices.send(notice).await.is_ok()
            }
        }
    }

    async fn to_supervisor(&self, worker: WorkerKey, control: Control) -> bool {
        let notice = Notice::Control { worker, control };
        self.notices.send(notice).await.is_ok()
    }

    fn deliver(&self, id: u32, message: Value) {
        // A chatty worker must not turn the log into the bottleneck: past
        // a hundred a second, messages are counted, not logged.
        static LOGGED: RateLimit = RateLimit::new(100, Duration::from_secs(1));
        if self.policy.log
            && let Some(suppressed) = LOGGED.admit_static("message from worker …")
        {
            if suppressed > 0 {
                tracing::info!(
                    event = "messages_not_logged",
                    suppressed,
                    "{suppressed} more messages from workers were not logged (over 100 a second)"
                );
            }
            tracing::info!(
                event = "message",
                worker = id,
                "message from worker {id}: {}",
                message::shown(&message)
            );
        }
        if self.policy.rebroadcast
            && let Ok(line) = message::encode_user(&message)
        {
            for refused in self.live_table.broadcast(&line, Some(id)) {
                warn_limited!(
                    event = "send_refused",
                    worker = id,
                    "relaying a message from worker {id}: {refused}"
                );
            }
        }
        if self.events.is_listened() {
            self.events.emit(Event::Message { id, message });
        }
    }
}
