//! What the primary holds of one Node worker's channel, shared by the
//! worker's session and the dispatchers that hand it connections: its
//! outbox, corral's `NODE_CLUSTER` sequence numbers for it, and the
//! connections sent with `newconn` and not yet answered. The primary keeps
//! its copy of each such connection until the worker says it accepted it,
//! so a refusal or the worker's death hands it to another worker instead
//! of losing it (Node's own primary loses these). And the last metrics
//! report of the worker's agent (`reports.rs`), which goes with the link.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use super::reports::ReportSlot;
use crate::primary::io::outbox::{Outbox, Refused};
use crate::protocol::node::{self, Outgoing, Sequencer};
use crate::worker_key::WorkerKey;

/// An accepted connection on its way to a worker. The writer holds one
/// reference until the worker's receipt, the link another until its answer.
pub(crate) type Conn = Arc<OwnedFd>;

/// What sent a connection with `newconn` (the dispatcher that accepted it):
/// told of the worker's answer, and given the connection back when the
/// worker dies first. A trait, so that the link, which dispatchers hold,
/// does not depend on them.
pub(crate) trait ConnSource: Send + Sync {
    /// The worker answered one `newconn`; a refused connection comes back.
    fn answered(&self, worker: WorkerKey, refused: Option<Conn>);
    /// A connection sent to a worker that died before answering.
    fn give_back(&self, conn: Conn);
}

/// A connection sent and not yet answered.
struct Pending {
    source: Arc<dyn ConnSource>,
    conn: Conn,
}

struct State {
    seq: Sequencer,
    pending: HashMap<u64, Pending>,
    /// The worker exited or its channel closed: nothing more is sent.
    closed: bool,
}

pub(crate) struct Link {
    pub worker: WorkerKey,
    outbox: Outbox,
    state: Mutex<State>,
    /// The agent's last metrics report.
    pub report: ReportSlot,
}

impl Link {
    pub(crate) fn new(worker: WorkerKey, outbox: Outbox) -> Arc<Self> {
        Arc::new(Link {
            worker,
            outbox,
            state: Mutex::new(State {
                seq: Sequencer::default(),
                pending: HashMap::new(),
                closed: false,
            }),
            report: ReportSlot::default(),
        })
    }

    pub(crate) fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends the message `build` makes with the next sequence number.
    pub(crate) fn send(
        &self,
        build: impl FnOnce(u64) -> Outgoing,
        fd: Option<Arc<OwnedFd>>,
    ) -> Result<(), Refused> {
        let outgoing = {
            let mut state = self.state();
            if state.closed {
                return Err(Refused::Closed);
            }
            build(state.seq.next())
        };
        self.push(outgoing, fd)
    }

    fn push(&self, outgoing: Outgoing, fd: Option<Arc<OwnedFd>>) -> Result<(), Refused> {
        match (outgoing.carries_fd, fd) {
            (true, Some(fd)) => self.outbox.push_reply_with_fd(outgoing.line, fd),
            (false, None) => self.outbox.push_reply(outgoing.line),
            // A wrapper line without its descriptor (or the reverse) would
            // desynchronise Node's pending handle: never sent.
            _ => Err(Refused::Closed),
        }
    }

    /// Sends `conn` to the worker's server `key`; gives it back when the
    /// channel is closed or full.
    pub(crate) fn newconn(
        &self,
        source: Arc<dyn ConnSource>,
        key: &str,
        conn: Conn,
    ) -> Result<(), Conn> {
        let seq = {
            let mut state = self.state();
            if state.closed {
                return Err(conn);
            }
            let seq = state.seq.next();
            let pending = Pending {
                source,
                conn: conn.clone(),
            };
            state.pending.insert(seq, pending);
            seq
        };
        if self.push(node::newconn(seq, key), Some(conn)).is_err() {
            let pending = self.state().pending.remove(&seq);
            return Err(pending.map(|p| p.conn).expect("inserted above"));
        }
        Ok(())
    }

    /// The worker answered the `newconn` of `seq`: what sent it, and the
    /// connection (to close when accepted, to hand to another worker when
    /// refused).
    pub(crate) fn answered(&self, seq: u64) -> Option<(Arc<dyn ConnSource>, Conn)> {
        let pending = self.state().pending.remove(&seq)?;
        Some((pending.source, pending.conn))
    }

    /// The worker is gone: nothing more is sent, and every connection it
    /// had not answered for goes back to what sent it.
    pub(crate) fn close(&self) -> Vec<(Arc<dyn ConnSource>, Conn)> {
        let mut state = self.state();
        state.closed = true;
        state
            .pending
            .drain()
            .map(|(_, pending)| (pending.source, pending.conn))
            .collect()
    }
}
