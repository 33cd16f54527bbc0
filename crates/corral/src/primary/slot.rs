//! A worker slot: a numbered place in the cluster that one worker process
//! serves at a time. The slot outlives its workers: it keeps the id, counts
//! the generations and carries the restart backoff from one worker to the
//! next. During a rolling reload it briefly holds a successor beside its
//! worker, and old workers stay in it while they drain.

use std::time::Instant;

use super::outbox::Outbox;
use crate::primary::backoff::RestartBackoff;
use crate::protocol::message;
use rustix::process::Signal;

pub(crate) struct Slot {
    pub id: u32,
    /// Starts so far; the current worker's generation.
    pub generation: u32,
    pub backoff: RestartBackoff,
    /// The worker serving the slot.
    pub worker: Option<LiveWorker>,
    /// A rolling reload's replacement, started and not yet ready.
    pub successor: Option<LiveWorker>,
    /// Former workers asked to stop, draining until they exit.
    pub retired: Vec<LiveWorker>,
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
            successor: None,
            retired: Vec::new(),
            retiring: false,
            start_failures: 0,
        }
    }
}

/// Which of a slot's processes a worker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Current,
    Successor,
    Retired,
}

impl Slot {
    /// The slot's process of `generation`, whatever its role.
    pub(crate) fn find(&mut self, generation: u32) -> Option<&mut LiveWorker> {
        self.worker
            .iter_mut()
            .chain(self.successor.iter_mut())
            .chain(self.retired.iter_mut())
            .find(|worker| worker.generation == generation)
    }

    /// Removes the process of `generation` from the slot.
    pub(crate) fn take(&mut self, generation: u32) -> Option<(LiveWorker, Role)> {
        if self
            .worker
            .as_ref()
            .is_some_and(|w| w.generation == generation)
        {
            return self.worker.take().map(|worker| (worker, Role::Current));
        }
        if self
            .successor
            .as_ref()
            .is_some_and(|w| w.generation == generation)
        {
            return self
                .successor
                .take()
                .map(|worker| (worker, Role::Successor));
        }
        let index = self
            .retired
            .iter()
            .position(|w| w.generation == generation)?;
        Some((self.retired.remove(index), Role::Retired))
    }

    /// Every process of the slot.
    pub(crate) fn processes(&self) -> impl Iterator<Item = &LiveWorker> {
        self.worker
            .iter()
            .chain(self.successor.iter())
            .chain(self.retired.iter())
    }
}

/// A worker process of a slot.
pub(crate) struct LiveWorker {
    pub generation: u32,
    pub pid: u32,
    pub started: Instant,
    /// The last heartbeat, once the worker sent one (the watchdog watches
    /// only workers that do).
    pub last_heartbeat: Option<Instant>,
    pub ready: bool,
    pub stop_requested: bool,
    /// Requests the worker reported serving, and the count at which it is
    /// recycled (`--max-requests` plus its jitter).
    pub requests: u64,
    pub request_limit: Option<u64>,
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
        let _ = self.outbox.push_control(message::encode_stop());
        if self.node {
            let _ = self.outbox.push_control(b"\"shutdown\"\n".to_vec());
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
