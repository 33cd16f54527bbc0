//! Worker health: the watchdog (a worker whose heartbeats stop is hung: it
//! is killed and replaced) and recycling (a worker over `--max-memory` or
//! past `--max-requests` is replaced gracefully, as a one-slot reload).

use std::time::{Duration, Instant};

use rustix::process::Signal;

use super::{Phase, Supervisor};
use crate::Error;
use crate::control::status::RestartReason;
use crate::primary::event::{Event, RecycleLimit};
use crate::worker_key::WorkerKey;

/// How often worker memory is compared with `--max-memory`.
pub(super) const MEMORY_CHECK: Duration = Duration::from_secs(1);

impl Supervisor {
    /// The watchdog: a worker that sent heartbeats and then none for the
    /// watchdog's timeout is hung; it is killed, and replaced as any worker
    /// killed from outside.
    pub(super) fn kill_hung_workers(&mut self) {
        let Some(timeout) = self.settings.watchdog else {
            return;
        };
        let now = Instant::now();
        let mut hung = Vec::new();
        for worker in self.slots.values().filter_map(|slot| slot.worker()) {
            if worker.is_hung(now, timeout) {
                worker.signal(Signal::KILL);
                hung.push((worker.key.slot, worker.pid));
            }
        }
        for (id, pid) in hung {
            if let Some(slot) = self.slots.get_mut(&id) {
                slot.restarts_mut().expect(RestartReason::Hung);
            }
            self.emit(Event::Hung { id, pid, timeout });
        }
    }

    /// Counts requests a worker served; recycles it at its limit.
    pub(super) fn on_served(&mut self, key: WorkerKey, count: u64) -> Result<(), Error> {
        let running = self.phase == Phase::Running;
        let is_current = self
            .slots
            .get(&key.slot)
            .is_some_and(|slot| slot.is_current(key));
        let Some(worker) = self.worker_of(key) else {
            return Ok(());
        };
        let Some((served, limit)) = worker.count_served(count) else {
            return Ok(());
        };
        if !is_current || !running {
            return Ok(());
        }
        let pid = worker.pid;
        self.recycle_over(key.slot, pid, RecycleLimit::Requests { served, limit })
    }

    /// Replaces slot `id`'s worker `pid` gracefully: it is `over` a limit.
    fn recycle_over(&mut self, id: u32, pid: u32, over: RecycleLimit) -> Result<(), Error> {
        self.emit(Event::Recycled { id, pid, over });
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.restarts_mut().expect(over.reason());
        }
        self.recycle(id)
    }

    /// Recycles workers over `--max-memory` (resident set), once they have
    /// run `min_uptime`: the replacement is ready before the old worker
    /// drains.
    pub(super) fn recycle_large_workers(&mut self) -> Result<(), Error> {
        let Some(limit) = self.settings.max_memory else {
            return Ok(());
        };
        if self.phase != Phase::Running {
            return Ok(());
        }
        let settled = self.settings.backoff.min_uptime;
        let over: Vec<(u32, u32, u64)> = self
            .slots
            .values()
            .filter(|slot| slot.replaceable())
            .filter_map(|slot| {
                let worker = slot.worker()?;
                let old_enough =
                    worker.started.elapsed() >= settled && !worker.lifecycle.stop_requested();
                let resident = resident_bytes(worker.pid)?;
                (old_enough && resident > limit).then_some((slot.id(), worker.pid, resident))
            })
            .collect();
        for (id, pid, resident) in over {
            let over = RecycleLimit::Memory {
                resident_bytes: resident,
                limit_bytes: limit,
            };
            self.recycle_over(id, pid, over)?;
        }
        Ok(())
    }
}

/// A worker's share of `--max-requests-jitter`: spread over 0..=`jitter` by
/// its pid, so workers started together are not recycled together.
pub(super) fn jitter(pid: u32, jitter: u64) -> u64 {
    if jitter == 0 {
        return 0;
    }
    u64::from(pid).wrapping_mul(0x9E37_79B9_7F4A_7C15) % (jitter + 1)
}

/// The resident set size of process `pid`, in bytes.
fn resident_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}
