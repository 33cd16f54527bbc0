//! What `@socket.io/cluster-adapter`'s `setupPrimary()` does in Node's own
//! primary, done by corral: the adapter's messages (those whose `source`
//! is `"_sio_adapter"`) are relayed between workers whatever
//! `--on-message` says. A response (to `fetchSockets()`, to a
//! `serverSideEmit` with an acknowledgement) goes back to the worker whose
//! adapter asked (its `requesterUid`); anything else goes to every other
//! worker.
//!
//! A worker is untrusted: each message is at most
//! [`MAX_SOCKETIO_MESSAGE_BYTES`], each worker relays at most
//! [`SOCKETIO_MESSAGES_PER_SECOND`], and the adapter ids remembered per
//! worker are at most [`MAX_UIDS_PER_WORKER`] of at most
//! [`MAX_UID_BYTES`]. Queues to workers are the outboxes', bounded in
//! bytes: a worker that does not read loses messages, never holds the
//! primary.
//!
//! A message is routed by the fields the primary read from its line
//! ([`Fields`]) and relayed as the bytes the worker wrote.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::log::rate::{RateLimit, warn_limited};
use crate::primary::io::live_table::LiveTable;
use crate::primary::io::messages::as_line;
use crate::protocol::envelope::{Fields, UserMessage};
use crate::worker_key::WorkerKey;

/// The adapter's mark on its messages (`MESSAGE_SOURCE`).
const MESSAGE_SOURCE: &str = "_sio_adapter";
/// socket.io-adapter's `MessageType.FETCH_SOCKETS_RESPONSE`.
const FETCH_SOCKETS_RESPONSE: u64 = 8;
/// socket.io-adapter's `MessageType.SERVER_SIDE_EMIT_RESPONSE`.
const SERVER_SIDE_EMIT_RESPONSE: u64 = 10;

/// The longest adapter message relayed, as JSON. socket.io takes client
/// packets of up to 1 MB (`maxHttpBufferSize`), and binary data is four
/// times longer as JSON (`{"type":"Buffer","data":[…]}`).
pub(crate) const MAX_SOCKETIO_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// The adapter messages one worker may have relayed per second. One
/// `io.emit()` is one message, and the adapter adds a heartbeat per
/// namespace every 5 s: this leaves room for a busy chat server.
pub(crate) const SOCKETIO_MESSAGES_PER_SECOND: u32 = 10_000;
/// Adapter ids remembered per worker (the adapter has one per namespace).
pub(crate) const MAX_UIDS_PER_WORKER: usize = 64;
/// The longest adapter id remembered (socket.io's are 14 characters).
pub(crate) const MAX_UID_BYTES: usize = 64;

/// One worker's budget of relayed adapter messages.
pub(crate) const fn socketio_limit() -> RateLimit {
    RateLimit::new(SOCKETIO_MESSAGES_PER_SECOND, Duration::from_secs(1))
}

/// Whether `message` is one of the adapter's.
pub(crate) fn is_adapter_message(message: &Fields<'_>) -> bool {
    message.source.as_deref() == Some(MESSAGE_SOURCE)
}

/// What became of an adapter message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Relayed {
    /// Queued for its destination (or it had none).
    Sent,
    /// Over the sender's budget: not relayed.
    OverBudget,
    /// Too long: dropped.
    TooLong,
}

/// Where an adapter message goes.
#[derive(Debug, PartialEq, Eq)]
enum Destination<'a> {
    /// To the worker whose adapter has this id.
    Requester(&'a str),
    /// To every worker but the sender.
    Others,
}

fn destination<'a>(message: &'a Fields<'_>) -> Destination<'a> {
    let kind = message.kind.as_u64();
    let requester = message.requester_uid.as_deref();
    match (kind, requester) {
        (Some(FETCH_SOCKETS_RESPONSE | SERVER_SIDE_EMIT_RESPONSE), Some(uid)) => {
            Destination::Requester(uid)
        }
        _ => Destination::Others,
    }
}

/// The adapter ids seen from each worker process, by slot.
#[derive(Default)]
pub(crate) struct SocketIoRelay {
    uids: Mutex<BTreeMap<u32, WorkerUids>>,
}

struct WorkerUids {
    key: WorkerKey,
    /// Oldest first; at most [`MAX_UIDS_PER_WORKER`].
    uids: VecDeque<String>,
}

impl SocketIoRelay {
    /// Relays the adapter message `message` from worker `from`, within its
    /// budget `limit`.
    pub(crate) fn relay(
        &self,
        live_table: &LiveTable,
        from: WorkerKey,
        message: &UserMessage<'_>,
        limit: &RateLimit,
    ) -> Relayed {
        let id = from.slot;
        if limit.admit().is_none() {
            warn_limited!(
                event = "socketio_limited",
                worker = id,
                "worker {id} sends more than {SOCKETIO_MESSAGES_PER_SECOND} socket.io adapter \
                 messages a second: the rest of this second's are not relayed"
            );
            return Relayed::OverBudget;
        }
        let Some(line) = adapter_line(id, message.text) else {
            return Relayed::TooLong;
        };
        if let Some(uid) = message.fields.uid.as_deref() {
            self.remember(from, uid);
        }
        let refusals = match destination(&message.fields) {
            Destination::Requester(uid) => match self.worker_of(uid) {
                Some(to) => live_table.send(to, line).err().into_iter().collect(),
                None => Vec::new(),
            },
            Destination::Others => live_table.broadcast(&line, Some(id)),
        };
        for refused in refusals {
            warn_limited!(
                event = "send_refused",
                worker = id,
                "relaying a socket.io message from worker {id}: {refused}"
            );
        }
        Relayed::Sent
    }

    /// Remembers that worker `from`'s adapter has the id `uid`.
    fn remember(&self, from: WorkerKey, uid: &str) {
        if uid.len() > MAX_UID_BYTES {
            return;
        }
        let mut table = self.lock();
        let entry = table.entry(from.slot).or_insert_with(|| WorkerUids {
            key: from,
            uids: VecDeque::new(),
        });
        // A slot's new process starts afresh.
        if entry.key != from {
            entry.key = from;
            entry.uids.clear();
        }
        if entry.uids.iter().any(|known| known == uid) {
            return;
        }
        if entry.uids.len() == MAX_UIDS_PER_WORKER {
            entry.uids.pop_front();
        }
        entry.uids.push_back(uid.to_string());
    }

    /// The slot of the worker whose adapter has the id `uid`.
    fn worker_of(&self, uid: &str) -> Option<u32> {
        self.lock()
            .iter()
            .find(|(_, worker)| worker.uids.iter().any(|known| known == uid))
            .map(|(slot, _)| *slot)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u32, WorkerUids>> {
        self.uids
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// `message` (its JSON text) as a line to send, if it is not too long.
fn adapter_line(id: u32, message: &[u8]) -> Option<Vec<u8>> {
    if message.len() + 1 > MAX_SOCKETIO_MESSAGE_BYTES {
        crate::metrics::message_dropped();
        warn_limited!(
            event = "message_dropped",
            worker = id,
            "worker {id}: dropped a {}-byte socket.io adapter message, over the \
             {MAX_SOCKETIO_MESSAGE_BYTES}-byte limit",
            message.len() + 1
        );
        return None;
    }
    Some(as_line(message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::envelope::{self, WorkerLine};
    use serde_json::{Value, json};

    /// What the primary reads of `value`'s line, kept with it.
    struct Read {
        line: Vec<u8>,
    }

    impl Read {
        fn of(value: &Value) -> Self {
            Read {
                line: serde_json::to_vec(value).unwrap(),
            }
        }

        fn message(&self) -> UserMessage<'_> {
            match envelope::read(&self.line).unwrap() {
                WorkerLine::User(user) => user,
                other => panic!("{other:?}"),
            }
        }
    }

    fn is_adapter(value: Value) -> bool {
        is_adapter_message(&Read::of(&value).message().fields)
    }

    fn destination_of(value: Value) -> Option<String> {
        let read = Read::of(&value);
        let message = read.message();
        match destination(&message.fields) {
            Destination::Requester(uid) => Some(uid.to_string()),
            Destination::Others => None,
        }
    }

    fn key(slot: u32, serial: u64) -> WorkerKey {
        WorkerKey {
            slot,
            generation: 1,
            serial,
        }
    }

    #[test]
    fn adapter_messages_are_known_by_their_source() {
        assert!(is_adapter(json!({"source": "_sio_adapter", "type": 3})));
        assert!(!is_adapter(json!({"source": "other"})));
        assert!(!is_adapter(json!("_sio_adapter")));
        assert!(!is_adapter(json!({"source": ["_sio_adapter"]})));
    }

    #[test]
    fn responses_go_to_the_requester_and_the_rest_to_the_others() {
        let response = json!({"type": 8, "requesterUid": "abc"});
        assert_eq!(destination_of(response), Some("abc".into()));
        let ack = json!({"type": 10, "requesterUid": "abc"});
        assert_eq!(destination_of(ack), Some("abc".into()));
        assert_eq!(destination_of(json!({"type": 3})), None);
        // A response that names no requester has nowhere better to go.
        assert_eq!(destination_of(json!({"type": 8})), None);
        assert_eq!(
            destination_of(json!({"type": "8", "requesterUid": "abc"})),
            None
        );
    }

    #[test]
    fn a_worker_over_its_budget_or_the_size_limit_is_not_relayed() {
        let relay = SocketIoRelay::default();
        let table = LiveTable::default();
        let budget = RateLimit::new(2, Duration::from_secs(3600));
        let small = Read::of(&json!({"source": MESSAGE_SOURCE, "type": 3, "uid": "a"}));
        let big = Read::of(
            &json!({"source": MESSAGE_SOURCE, "data": "x".repeat(MAX_SOCKETIO_MESSAGE_BYTES)}),
        );
        let ample = RateLimit::new(10, Duration::from_secs(3600));
        assert_eq!(
            relay.relay(&table, key(1, 1), &big.message(), &ample),
            Relayed::TooLong
        );
        for expected in [Relayed::Sent, Relayed::Sent, Relayed::OverBudget] {
            assert_eq!(
                relay.relay(&table, key(1, 1), &small.message(), &budget),
                expected
            );
        }
    }

    #[test]
    fn ids_are_remembered_per_process_and_bounded() {
        let relay = SocketIoRelay::default();
        relay.remember(key(1, 1), "a");
        relay.remember(key(2, 2), "b");
        assert_eq!(relay.worker_of("a"), Some(1));
        assert_eq!(relay.worker_of("b"), Some(2));
        // Slot 1's next process forgets the old one's ids.
        relay.remember(key(1, 3), "c");
        assert_eq!(relay.worker_of("a"), None);
        for n in 0..MAX_UIDS_PER_WORKER * 2 {
            relay.remember(key(2, 2), &n.to_string());
        }
        assert_eq!(relay.lock()[&2].uids.len(), MAX_UIDS_PER_WORKER);
        relay.remember(key(2, 2), &"x".repeat(MAX_UID_BYTES + 1));
        assert_eq!(relay.worker_of(&"x".repeat(MAX_UID_BYTES + 1)), None);
    }
}
