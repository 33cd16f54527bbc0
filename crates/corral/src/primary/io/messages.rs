//! What the primary does with each message a worker sends, right in that
//! worker's channel reader: control words go to the supervisor; user
//! messages go to the user's [`crate::Primary`] handle (and to the log, or
//! to every other worker, as configured), except those of Node libraries
//! whose primary code corral does (socket.io's cluster adapter, relayed by
//! [`socketio`]; prom-client's answers, for [`app_metrics`]); relay
//! requests go to the named worker. User messages never pass through the
//! supervisor's inbox, so a
//! worker flooding its channel cannot delay the supervision of the others.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::log::rate::{RateLimit, warn_limited};
use crate::primary::io::app_metrics::{self, AppMetrics};
use crate::primary::io::handle::EventSink;
use crate::primary::io::live_table::LiveTable;
use crate::primary::io::notice::Notice;
use crate::primary::io::socketio::{self, SocketIoRelay};
use crate::protocol::envelope::UserMessage;
use crate::protocol::message::{self, Control, ToPrimary};
use crate::settings::MessagePolicy;
use crate::worker_key::WorkerKey;

pub(crate) struct MessageRouter {
    pub live_table: Arc<LiveTable>,
    pub events: EventSink,
    pub notices: mpsc::Sender<Notice>,
    pub policy: MessagePolicy,
    /// `@socket.io/cluster-adapter`'s messages, relayed whatever `policy` says.
    pub socketio: SocketIoRelay,
    /// Collects prom-client's answers (Node workers with the agent only).
    pub app_metrics: Option<Arc<AppMetrics>>,
}

/// One worker's budgets of relayed messages, kept by its channel reader.
pub(crate) struct WorkerLimits {
    /// `--on-message broadcast` ([`relay_limit`]).
    relays: RateLimit,
    /// socket.io adapter messages ([`socketio::socketio_limit`]).
    socketio: RateLimit,
}

impl WorkerLimits {
    pub(crate) const fn new() -> Self {
        WorkerLimits {
            relays: relay_limit(),
            socketio: socketio::socketio_limit(),
        }
    }
}

impl MessageRouter {
    /// Handles one message from the process `worker`, whose relays are
    /// limited by `limits`. Returns `false` when the supervisor is gone.
    pub(crate) async fn route(
        &self,
        worker: WorkerKey,
        message: ToPrimary<'_>,
        limits: &WorkerLimits,
    ) -> bool {
        let id = worker.slot;
        match message {
            ToPrimary::Control(control) => self.to_supervisor(worker, control).await,
            // pm2's idiom: `process.send('ready')`.
            ToPrimary::User(user) if user.fields.word.as_deref() == Some("ready") => {
                self.to_supervisor(worker, Control::Ready).await
            }
            ToPrimary::User(user) if socketio::is_adapter_message(&user.fields) => {
                self.socketio
                    .relay(&self.live_table, worker, &user, &limits.socketio);
                true
            }
            ToPrimary::User(user)
                if app_metrics::is_answer(&user.fields)
                    && let Some(collector) = &self.app_metrics =>
            {
                if let Ok(value) = serde_json::from_slice::<Value>(user.text) {
                    collector.answer(worker, &value);
                }
                true
            }
            ToPrimary::User(user) => {
                self.deliver(id, &user, &limits.relays);
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
            ToPrimary::Closed { count } => {
                let notice = Notice::Closed { worker, count };
                self.notices.send(notice).await.is_ok()
            }
        }
    }

    /// The channel of the process `worker` closed: a metrics collection
    /// under way stops waiting for its answer.
    pub(crate) fn channel_closed(&self, worker: WorkerKey) {
        if let Some(collector) = &self.app_metrics {
            collector.gone(worker);
        }
    }

    async fn to_supervisor(&self, worker: WorkerKey, control: Control) -> bool {
        let notice = Notice::Control { worker, control };
        self.notices.send(notice).await.is_ok()
    }

    fn deliver(&self, id: u32, message: &UserMessage<'_>, relays: &RateLimit) {
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
                shown(message.text)
            );
        }
        if self.policy.rebroadcast && !is_corral_word(message) {
            self.relay(id, message.text, relays);
        }
        if self.events.is_listened()
            && let Ok(text) = std::str::from_utf8(message.text)
        {
            self.events.emit_message(id, text.into());
        }
    }

    /// Relays `message` (the line as worker `id` wrote it) to every other
    /// worker, within its limit ([`relay_limit`]).
    fn relay(&self, id: u32, message: &[u8], relays: &RateLimit) {
        if relays.admit().is_none() {
            warn_limited!(
                event = "relay_limited",
                worker = id,
                "worker {id} sends more than {RELAYS_PER_SECOND} messages a second to relay \
                 (workers answering each other's broadcasts?): the rest of this second's are \
                 not relayed"
            );
            return;
        }
        let line = as_line(message);
        for refused in self.live_table.broadcast(&line, Some(id)) {
            warn_limited!(
                event = "send_refused",
                worker = id,
                "relaying a message from worker {id}: {refused}"
            );
        }
    }
}

/// The relays one worker gets per second.
pub(crate) const RELAYS_PER_SECOND: u32 = 100;

/// One worker's limit of relayed messages (`--on-message broadcast`): at
/// most [`RELAYS_PER_SECOND`] a second. Two workers that each answer every
/// message they receive (the tutorials' IPC program) relay each other's
/// answers forever, and every relay reaches every other worker: a storm
/// that grows until the machine is busy with it. The limit damps such a
/// loop to a steady trickle, and a (rate-limited) warning shows it; the
/// messages still reach the user's `Primary` handle and the log, they are
/// only not relayed.
pub(crate) const fn relay_limit() -> RateLimit {
    RateLimit::new(RELAYS_PER_SECOND, Duration::from_secs(1))
}

/// corral's own words to workers (pm2's `'shutdown'`) that a worker may
/// echo: they are never relayed, so one stop or reload cannot set every
/// worker answering every other.
fn is_corral_word(message: &UserMessage<'_>) -> bool {
    message.fields.word.as_deref() == Some("shutdown")
}

/// `text` (one JSON value as a worker wrote it) as a line to queue: the
/// same bytes and a newline, in one allocation.
pub(crate) fn as_line(text: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(text.len() + 1);
    line.extend_from_slice(text);
    line.push(b'\n');
    line
}

/// A user message's text (checked JSON) for the log, as its `Value` shows
/// ([`message::shown`]): compact, cut. Built for the logged lines only (at
/// most 100 a second).
fn shown(text: &[u8]) -> String {
    serde_json::from_slice::<Value>(text)
        .map(|value| message::shown(&value))
        .unwrap_or_default()
}
