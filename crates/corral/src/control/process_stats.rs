//! CPU time and resident memory of worker processes, read from `/proc`
//! (the procfs crate) when a status snapshot is taken, and CPU use in
//! percent: over the time since the previous snapshot of the same process,
//! or over its life on the first.

use std::collections::HashMap;
use std::time::Instant;

/// What `/proc` tells of one process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ProcessStats {
    pub cpu_seconds: f64,
    pub cpu_percent: f64,
    pub rss_bytes: u64,
}

/// Remembers each process's CPU time at the last snapshot.
#[derive(Default)]
pub(crate) struct CpuSampler {
    last: HashMap<u32, (Instant, f64)>,
}

impl CpuSampler {
    /// Reads process `pid`, which has run for `uptime` seconds; `None` if
    /// it is gone or unreadable.
    pub(crate) fn sample(&mut self, pid: u32, uptime: f64, now: Instant) -> Option<ProcessStats> {
        let stat = procfs::process::Process::new(pid as i32)
            .ok()?
            .stat()
            .ok()?;
        let cpu_seconds = (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64;
        let rss_bytes = stat.rss * procfs::page_size();
        let previous = self.last.insert(pid, (now, cpu_seconds));
        let cpu_percent = cpu_percent(previous, (now, cpu_seconds), uptime);
        Some(ProcessStats {
            cpu_seconds,
            cpu_percent,
            rss_bytes,
        })
    }

    /// Forgets processes not in `alive`.
    pub(crate) fn retain(&mut self, alive: &[u32]) {
        self.last.retain(|pid, _| alive.contains(pid));
    }
}

/// CPU use in percent of one core: since `previous` when there is one,
/// else over the process's `uptime`.
fn cpu_percent(previous: Option<(Instant, f64)>, now: (Instant, f64), uptime: f64) -> f64 {
    let (at, cpu) = now;
    let (elapsed, used) = match previous {
        Some((then, before)) if at.duration_since(then).as_secs_f64() > 0.0 => {
            (at.duration_since(then).as_secs_f64(), cpu - before)
        }
        _ => (uptime, cpu),
    };
    if elapsed <= 0.0 {
        return 0.0;
    }
    (used.max(0.0) / elapsed * 100.0 * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn cpu_percent_is_over_the_interval_or_the_life() {
        let start = Instant::now();
        let later = start + Duration::from_secs(2);
        assert_eq!(cpu_percent(Some((start, 1.0)), (later, 2.0), 100.0), 50.0);
        assert_eq!(cpu_percent(None, (later, 2.0), 4.0), 50.0);
        assert_eq!(cpu_percent(None, (later, 2.0), 0.0), 0.0);
        assert_eq!(cpu_percent(Some((later, 2.0)), (later, 2.0), 4.0), 50.0);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let mut sampler = CpuSampler::default();
        let stats = sampler
            .sample(std::process::id(), 1.0, Instant::now())
            .unwrap();
        assert!(stats.rss_bytes > 0);
        assert!(stats.cpu_seconds >= 0.0);
        assert!(sampler.sample(u32::MAX - 1, 1.0, Instant::now()).is_none());
    }
}
