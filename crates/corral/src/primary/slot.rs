//! A worker slot: a numbered place in the cluster that one worker process
//! fills at a time. The slot outlives its workers: it keeps the id, counts the
//! generations and carries the restart backoff from one worker to the next.

use std::time::Instant;

use super::outbox::Outbox;
use crate::backoff::RestartBackoff;
use crate::message::{self, Control};
use rustix::process::Signal;

pub(crate) struct Slot {
    pub id: u32,
    /// Starts so far; the current worker's generation.
    pub generation: u32,
    pub backoff: RestartBackoff,
    pub worker: Option<LiveWorker>,
    /// The cluster shrank: when this worker exits, the slot goes away.
    pub retiring: bool,
    /// Workers in a row that failed by themselves before they were up:
    /// the sign of a broken command.
    pub start_failures: u32,
}

impl Slot {
    pub(crate) fn new(id: u32, backoff: RestartBackoff) -> Self {
        Slot {
            id,
            generation: 0,
            backoff,
            worker: None,
            retiring: false,
            start_failures: 0,
        }
    }
}

/// The process currently filling a slot.
pub(crate) struct LiveWorker {
    pub pid: u32,
    pub started: Instant,
    pub ready: bool,
    pub stop_requested: bool,
    pub outbox: Outbox,
    /// A Node program: it also gets pm2's `'shutdown'` message on stop.
    pub node: bool,
}

impl LiveWorker {
    /// Sends `signal` to the worker's process group: the worker and what it
    /// started (a wrapper script's server, say). The worker leads its own
    /// group, and a group id is not reused while any member lives, so this
    /// never reaches another program. A group already gone is not an error.
    pub(crate) fn signal(&self, signal: Signal) {
        signal_group(self.pid, signal);
    }

    /// Asks the worker to drain and exit: the channel's stop message for
    /// workers that read it (and pm2's `'shutdown'` for Node programs),
    /// then SIGTERM for every server.
    pub(crate) fn request_stop(&mut self) {
        self.stop_requested = true;
        let _ = self.outbox.push(message::encode_control(Control::Stop));
        if self.node {
            let _ = self.outbox.push(b"\"shutdown\"\n".to_vec());
        }
        self.signal(Signal::TERM);
    }
}

/// Sends `signal` to the process group `leader` leads.
pub(crate) fn signal_group(leader: u32, signal: Signal) {
    let Some(group) = rustix::process::Pid::from_raw(leader as i32) else {
        return;
    };
    if let Err(err) = rustix::process::kill_process_group(group, signal)
        && err != rustix::io::Errno::SRCH
    {
        tracing::warn!("cannot signal worker {leader}'s processes: {err}");
    }
}
