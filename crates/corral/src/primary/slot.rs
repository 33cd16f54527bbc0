//! A worker slot: a numbered place in the cluster that one worker process
//! serves at a time. The slot outlives its workers: it keeps the id, counts
//! the generations and carries the restart history from one worker to the
//! next. During a rolling reload it briefly holds a successor beside its
//! worker, and old workers stay in it while they drain.
//!
//! The slot's methods keep its invariants: a process is in exactly one role
//! (worker, successor, retired), every process has a distinct key, and only
//! a promotion or a give-up moves a successor.

use std::time::{Duration, Instant};

use crate::primary::io::outbox::Outbox;
use crate::primary::rules::crash_loop::RestartHistory;
use crate::primary::rules::exit::Role;
use crate::primary::rules::lifecycle::Lifecycle;
use crate::primary::rules::restarts::SlotRestarts;
use crate::protocol::message;
use crate::settings::BackoffPolicy;
use crate::worker_key::{Serials, WorkerKey};
use rustix::process::Signal;

pub(crate) struct Slot {
    id: u32,
    /// Starts so far; the newest process's generation.
    generation: u32,
    /// The key of the newest start, if any.
    newest: Option<WorkerKey>,
    history: RestartHistory,
    /// How many times its worker was replaced, and why (for `corral
    /// status` and the metrics); a slot added again starts from zero.
    restarts: SlotRestarts,
    /// The worker serving the slot.
    worker: Option<LiveWorker>,
    /// A rolling reload's replacement, started and not yet ready.
    successor: Option<LiveWorker>,
    /// Former workers asked to stop, draining until they exit.
    retired: Vec<LiveWorker>,
    /// The cluster shrank: when its processes are gone, the slot goes away.
    retiring: bool,
}

/// What a promotion changed: the new worker, and the old one now draining.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Promotion {
    pub new: (WorkerKey, u32),
    pub old: Option<(WorkerKey, u32)>,
}

impl Slot {
    pub(crate) fn new(id: u32, backoff: BackoffPolicy) -> Self {
        Slot {
            id,
            generation: 0,
            newest: None,
            history: RestartHistory::new(backoff),
            restarts: SlotRestarts::default(),
            worker: None,
            successor: None,
            retired: Vec::new(),
            retiring: false,
        }
    }

    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// The key of the slot's next process, with the cluster's next serial;
    /// counts the start.
    pub(crate) fn next_key(&mut self, serials: &mut Serials) -> WorkerKey {
        self.generation += 1;
        let key = WorkerKey::new(self.id, self.generation, serials.next());
        self.newest = Some(key);
        key
    }

    /// The key of the slot's newest start (which may have failed to spawn).
    pub(crate) fn newest_key(&self) -> Option<WorkerKey> {
        self.newest
    }

    /// Whether a restart scheduled after `failed` is still due: no start
    /// since, nothing serving, and the slot stays.
    pub(crate) fn restart_due(&self, failed: WorkerKey) -> bool {
        self.newest == Some(failed) && self.worker.is_none() && !self.retiring
    }

    /// Makes `worker` the slot's worker (a start or a restart).
    pub(crate) fn install(&mut self, worker: LiveWorker) {
        debug_assert!(self.worker.is_none(), "a slot serves one worker at a time");
        self.worker = Some(worker);
    }

    /// Places a rolling reload's replacement beside the worker.
    pub(crate) fn install_successor(&mut self, successor: LiveWorker) {
        debug_assert!(self.successor.is_none(), "one replacement at a time");
        self.successor = Some(successor);
    }

    /// Whether a reload can replace the worker now.
    pub(crate) fn replaceable(&self) -> bool {
        !self.retiring && self.worker.is_some() && self.successor.is_none()
    }

    /// Whether a replacement is on its way (so a dead worker needs no restart).
    pub(crate) fn replacement_coming(&self) -> bool {
        self.successor.is_some()
    }

    /// Makes the successor the worker; the old worker, if any, is retired
    /// (the caller asks it to stop). `None` without a successor.
    pub(crate) fn promote(&mut self) -> Option<Promotion> {
        let successor = self.successor.take()?;
        let new = (successor.key, successor.pid);
        let old = self.worker.replace(successor);
        let old_ids = old.as_ref().map(|old| (old.key, old.pid));
        self.retired.extend(old);
        Some(Promotion { new, old: old_ids })
    }

    /// Gives up the successor (the reload was aborted): it joins the
    /// retired processes, to be asked to stop. Returns its key.
    pub(crate) fn retire_successor(&mut self) -> Option<WorkerKey> {
        let successor = self.successor.take()?;
        let key = successor.key;
        self.retired.push(successor);
        Some(key)
    }

    /// Marks the slot for removal once its processes are gone (the
    /// cluster shrinks). Returns whether a worker or a successor is still
    /// there to stop.
    pub(crate) fn retire(&mut self) -> bool {
        self.retiring = true;
        self.worker.is_some() || self.successor.is_some()
    }

    pub(crate) fn is_retiring(&self) -> bool {
        self.retiring
    }

    /// A slot that is being removed and has no process left.
    pub(crate) fn emptied_and_retiring(&self) -> bool {
        self.retiring && self.processes().next().is_none()
    }

    /// The worker serving the slot.
    pub(crate) fn worker(&self) -> Option<&LiveWorker> {
        self.worker.as_ref()
    }

    /// Whether `key` is the worker serving the slot.
    pub(crate) fn is_current(&self, key: WorkerKey) -> bool {
        self.worker.as_ref().is_some_and(|worker| worker.key == key)
    }

    /// Whether `key` is the reload's successor, not yet the slot's worker.
    pub(crate) fn is_successor(&self, key: WorkerKey) -> bool {
        self.successor
            .as_ref()
            .is_some_and(|successor| successor.key == key)
    }

    /// The keys of the worker and the successor (what a stop asks to drain).
    pub(crate) fn active_keys(&self) -> Vec<WorkerKey> {
        self.worker
            .iter()
            .chain(self.successor.iter())
            .map(|worker| worker.key)
            .collect()
    }

    pub(crate) fn history(&mut self) -> &mut RestartHistory {
        &mut self.history
    }

    pub(crate) fn history_ref(&self) -> &RestartHistory {
        &self.history
    }

    pub(crate) fn restarts(&self) -> &SlotRestarts {
        &self.restarts
    }

    pub(crate) fn restarts_mut(&mut self) -> &mut SlotRestarts {
        &mut self.restarts
    }

    /// The slot's process `key`, whatever its role.
    pub(crate) fn find(&mut self, key: WorkerKey) -> Option<&mut LiveWorker> {
        self.worker
            .iter_mut()
            .chain(self.successor.iter_mut())
            .chain(self.retired.iter_mut())
            .find(|worker| worker.key == key)
    }

    /// Removes the process `key` from the slot.
    pub(crate) fn take(&mut self, key: WorkerKey) -> Option<(LiveWorker, Role)> {
        if self.worker.as_ref().is_some_and(|w| w.key == key) {
            return self.worker.take().map(|worker| (worker, Role::Current));
        }
        if self.successor.as_ref().is_some_and(|w| w.key == key) {
            return self
                .successor
                .take()
                .map(|worker| (worker, Role::Successor));
        }
        let index = self.retired.iter().position(|w| w.key == key)?;
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
    pub key: WorkerKey,
    pub pid: u32,
    pub started: Instant,
    /// The last heartbeat, once the worker sent one (the watchdog watches
    /// only workers that do).
    last_heartbeat: Option<Instant>,
    /// Where it is in its life; changed only by the supervisor's
    /// transition function (`Supervisor::transition`).
    pub lifecycle: Lifecycle,
    /// Requests the worker reported serving, and the count at which it is
    /// recycled (`--max-requests` plus its jitter).
    requests: u64,
    request_limit: Option<u64>,
    pub outbox: Outbox,
    /// A Node program: it also gets pm2's `'shutdown'` message on stop.
    node: bool,
}

impl LiveWorker {
    pub(crate) fn new(
        key: WorkerKey,
        pid: u32,
        outbox: Outbox,
        ready: bool,
        request_limit: Option<u64>,
        node: bool,
    ) -> Self {
        LiveWorker {
            key,
            pid,
            started: Instant::now(),
            last_heartbeat: None,
            lifecycle: if ready {
                Lifecycle::Ready
            } else {
                Lifecycle::Starting
            },
            requests: 0,
            request_limit,
            outbox,
            node,
        }
    }

    /// Requests the worker reported serving so far.
    pub(crate) fn requests_served(&self) -> u64 {
        self.requests
    }

    /// When the worker last sent a heartbeat, if it ever did.
    pub(crate) fn last_heartbeat(&self) -> Option<Instant> {
        self.last_heartbeat
    }

    pub(crate) fn heartbeat(&mut self, now: Instant) {
        self.last_heartbeat = Some(now);
    }

    /// Whether the worker sent heartbeats and then none for `timeout`.
    pub(crate) fn is_hung(&self, now: Instant, timeout: Duration) -> bool {
        !self.lifecycle.stop_requested()
            && self
                .last_heartbeat
                .is_some_and(|last| now.duration_since(last) > timeout)
    }

    /// Counts `count` more requests served. Returns the total when this
    /// report crossed the worker's limit (it is to be recycled, once).
    pub(crate) fn count_served(&mut self, count: u64) -> Option<(u64, u64)> {
        let before = self.requests;
        self.requests = self.requests.saturating_add(count);
        let limit = self.request_limit?;
        (before < limit && self.requests >= limit).then_some((self.requests, limit))
    }

    /// Sends `signal` to the worker's process group: the worker and what it
    /// started (a wrapper script's server, say). The worker leads its own
    /// group, and a group id is not reused while any member lives, so this
    /// never reaches another program. A group already gone is not an error.
    pub(crate) fn signal(&self, signal: Signal) {
        signal_group(self.pid, signal);
    }

    /// Asks the worker to drain and exit: the channel's stop message for
    /// workers that read it (and pm2's `'shutdown'` for Node programs),
    /// then SIGTERM for every server. The supervisor calls it once, as the
    /// worker begins to drain at the primary's request.
    pub(crate) fn send_stop(&mut self) {
        let _ = self.outbox.push_control(message::encode_stop());
        if self.node {
            let _ = self.outbox.push_control(b"\"shutdown\"\n".to_vec());
        }
        self.signal(Signal::TERM);
    }

    /// The first half of a Node cluster worker's graceful stop: pm2's
    /// `'shutdown'` message (user code may act on it); Node's own
    /// `disconnect` follows from the Node side, and no signal before the
    /// grace period ends.
    pub(crate) fn send_node_shutdown(&mut self) {
        let _ = self.outbox.push_control(b"\"shutdown\"\n".to_vec());
    }

    /// Whether this is a Node program's worker (stopped with `disconnect`,
    /// and SIGTERM before SIGKILL at the end of its grace period).
    pub(crate) fn is_node(&self) -> bool {
        self.node
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

/// Whether the worker process `pid` (a child of the primary) still runs.
/// Asked without reaping it (`WNOWAIT`), so its exit is still handled in
/// order by the task that waits for it.
pub(crate) fn still_running(pid: u32) -> bool {
    let Some(child) = rustix::process::Pid::from_raw(pid as i32) else {
        return false;
    };
    let options = rustix::process::WaitIdOptions::EXITED
        | rustix::process::WaitIdOptions::NOHANG
        | rustix::process::WaitIdOptions::NOWAIT;
    running_by_waitid(
        rustix::process::waitid(rustix::process::WaitId::Pid(child), options)
            .map(|status| status.is_some()),
    )
}

/// What a `waitid(WNOHANG | WNOWAIT)` on a child says of it: nothing to
/// report, it runs; an exit status, it exited; no such child, it was
/// already reaped. Another error cannot tell, and the worker is taken as
/// running (its exit, when it comes, is handled anyway).
fn running_by_waitid(outcome: rustix::io::Result<bool>) -> bool {
    match outcome {
        Ok(exited) => !exited,
        Err(rustix::io::Errno::CHILD) => false,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_running_until_waitid_reports_its_exit_or_its_reaping() {
        assert!(running_by_waitid(Ok(false)));
        assert!(!running_by_waitid(Ok(true)));
        assert!(!running_by_waitid(Err(rustix::io::Errno::CHILD)));
        assert!(running_by_waitid(Err(rustix::io::Errno::INTR)));
    }

    /// A worker with no process behind it (pid 0 is never signalled here).
    fn worker(slot: &mut Slot) -> LiveWorker {
        let key = slot.next_key(&mut Serials::default());
        LiveWorker::new(key, 0, Outbox::closed(), false, Some(10), false)
    }

    fn slot() -> Slot {
        Slot::new(1, BackoffPolicy::default())
    }

    #[test]
    fn each_start_gets_the_next_generation_and_serial() {
        let mut serials = Serials::default();
        let mut slot = slot();
        let first = slot.next_key(&mut serials);
        let second = slot.next_key(&mut serials);
        assert_eq!((first.slot, first.generation), (1, 1));
        assert_eq!((second.slot, second.generation), (1, 2));
        assert!(first.serial < second.serial);
        assert_eq!(slot.newest_key(), Some(second));
    }

    /// A slot removed by a scale-down and added again counts generations
    /// anew, yet its processes' keys differ from the old ones: a grace
    /// timer or a message about the old process cannot reach the new one.
    #[test]
    fn keys_of_a_re_added_slot_differ_from_the_removed_slots() {
        let mut serials = Serials::default();
        let mut removed = Slot::new(2, BackoffPolicy::default());
        let old = removed.next_key(&mut serials);
        removed.install(LiveWorker::new(old, 0, Outbox::closed(), true, None, false));
        drop(removed);
        let mut re_added = Slot::new(2, BackoffPolicy::default());
        let new = re_added.next_key(&mut serials);
        assert_eq!((new.slot, new.generation), (old.slot, old.generation));
        assert_ne!(new, old);
        re_added.install(LiveWorker::new(new, 0, Outbox::closed(), true, None, false));
        assert!(re_added.find(old).is_none(), "the old key finds nothing");
        assert!(!re_added.is_current(old));
        assert!(!re_added.restart_due(old));
        assert!(re_added.find(new).is_some());
    }

    #[test]
    fn promotion_retires_the_old_worker_and_serves_with_the_new() {
        let mut slot = slot();
        let old = worker(&mut slot);
        let old_key = old.key;
        slot.install(old);
        assert!(slot.replaceable());
        let new = worker(&mut slot);
        let new_key = new.key;
        slot.install_successor(new);
        assert!(!slot.replaceable(), "one replacement at a time");
        assert!(slot.replacement_coming());
        let promotion = slot.promote().expect("a successor");
        assert_eq!(promotion.new.0, new_key);
        assert_eq!(promotion.old.map(|(key, _)| key), Some(old_key));
        assert!(slot.is_current(new_key));
        assert_eq!(
            slot.take(old_key).map(|(_, role)| role),
            Some(Role::Retired)
        );
        assert!(slot.promote().is_none());
    }

    #[test]
    fn an_aborted_successor_is_retired_and_the_worker_stays() {
        let mut slot = slot();
        let current = worker(&mut slot);
        let current_key = current.key;
        slot.install(current);
        let successor = worker(&mut slot);
        let successor_key = successor.key;
        slot.install_successor(successor);
        assert_eq!(slot.active_keys(), [current_key, successor_key]);
        assert_eq!(slot.retire_successor(), Some(successor_key));
        assert!(slot.is_current(current_key));
        assert!(slot.replaceable());
        assert_eq!(
            slot.take(successor_key).map(|(_, role)| role),
            Some(Role::Retired)
        );
    }

    #[test]
    fn processes_are_found_and_taken_by_key_whatever_their_role() {
        let mut slot = slot();
        let current = worker(&mut slot);
        let key = current.key;
        slot.install(current);
        assert!(slot.find(key).is_some());
        assert!(slot.find(WorkerKey::new(1, 9, 9)).is_none());
        assert_eq!(slot.take(key).map(|(_, role)| role), Some(Role::Current));
        assert!(slot.processes().next().is_none());
        assert!(slot.take(key).is_none(), "taken once");
    }

    #[test]
    fn a_restart_is_due_only_for_the_failure_it_was_scheduled_for() {
        let mut serials = Serials::default();
        let mut slot = slot();
        let failed = slot.next_key(&mut serials);
        assert!(slot.restart_due(failed));
        let later = slot.next_key(&mut serials);
        assert!(!slot.restart_due(failed), "a start happened since");
        slot.install(LiveWorker::new(
            later,
            0,
            Outbox::closed(),
            false,
            None,
            false,
        ));
        assert!(!slot.restart_due(later), "a worker serves");
    }

    #[test]
    fn a_retiring_slot_is_removed_once_empty_and_never_restarted() {
        let mut slot = slot();
        let current = worker(&mut slot);
        let key = current.key;
        slot.install(current);
        assert!(slot.retire(), "a worker to stop");
        assert!(!slot.emptied_and_retiring());
        assert!(!slot.replaceable());
        slot.take(key);
        assert!(slot.emptied_and_retiring());
        assert!(!slot.restart_due(key));
    }

    #[test]
    fn the_request_limit_triggers_once() {
        let mut slot = slot();
        let mut worker = worker(&mut slot);
        assert_eq!(worker.count_served(6), None);
        assert_eq!(worker.count_served(5), Some((11, 10)));
        assert_eq!(worker.count_served(5), None, "recycled once");
    }

    #[test]
    fn a_worker_is_hung_only_after_heartbeats_stop() {
        let mut slot = slot();
        let mut worker = worker(&mut slot);
        let start = Instant::now();
        let timeout = Duration::from_secs(1);
        assert!(!worker.is_hung(start + Duration::from_secs(60), timeout));
        worker.heartbeat(start);
        assert!(!worker.is_hung(start + Duration::from_millis(900), timeout));
        assert!(worker.is_hung(start + Duration::from_millis(1100), timeout));
    }
}
