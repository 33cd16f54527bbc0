//! What `corral top` shows, computed from successive status snapshots:
//! requests per second per worker and in total (from the growth of each
//! worker's request count), a history of the total for the sparkline, and
//! the last events. Pure data: the view draws it, the tests check it.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use corral::Status;

/// Points of requests/s history kept for the sparkline (one per refresh).
pub(crate) const HISTORY: usize = 120;
/// Events kept for the list of recent ones.
pub(crate) const EVENTS: usize = 50;

#[derive(Default)]
pub(crate) struct Model {
    pub status: Option<Status>,
    /// Requests/s per worker process (by pid) over the last interval.
    pub rates: HashMap<u32, f64>,
    /// Total requests/s, one point per refresh, oldest first.
    pub history: VecDeque<u64>,
    /// Recent events in words, oldest first.
    pub events: VecDeque<String>,
    /// The last thing a key did (or why it failed).
    pub notice: Option<String>,
}

impl Model {
    /// Takes a new snapshot, `elapsed` after the previous one.
    pub(crate) fn update(&mut self, status: Status, elapsed: Duration) {
        if let Some(previous) = &self.status {
            self.rates = request_rates(previous, &status, elapsed);
            let total = self.total_rate();
            if self.history.len() == HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(total.round() as u64);
        }
        self.status = Some(status);
    }

    pub(crate) fn total_rate(&self) -> f64 {
        // Not `sum()`: summing no f64 gives -0.0, shown as "-0".
        self.rates.values().fold(0.0, |total, rate| total + rate)
    }

    /// Keeps an event's line, escaped: it may carry a worker's text, and a
    /// control character would corrupt the screen.
    pub(crate) fn add_event(&mut self, text: String) {
        if self.events.len() == EVENTS {
            self.events.pop_front();
        }
        let text = match corral::cli_support::escape_untrusted(&text) {
            std::borrow::Cow::Owned(escaped) => escaped,
            std::borrow::Cow::Borrowed(_) => text,
        };
        self.events.push_back(text);
    }
}

/// Requests/s of each worker process present in both snapshots, from the
/// growth of its count. A process that is new, or reports no count, has no
/// rate; a count that went down (it cannot) counts as no growth.
pub(crate) fn request_rates(
    previous: &Status,
    next: &Status,
    elapsed: Duration,
) -> HashMap<u32, f64> {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 {
        return HashMap::new();
    }
    let before: HashMap<u32, u64> = previous
        .workers
        .iter()
        .filter_map(|worker| Some((worker.pid, worker.requests?)))
        .collect();
    next.workers
        .iter()
        .filter_map(|worker| {
            let now = worker.requests?;
            let then = before.get(&worker.pid).copied().unwrap_or(0);
            Some((worker.pid, now.saturating_sub(then) as f64 / seconds))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use corral::{Policy, ReloadStats, WorkerState, WorkerStatus};

    pub(crate) fn worker(id: u32, pid: u32, requests: Option<u64>) -> WorkerStatus {
        WorkerStatus {
            id,
            pid,
            generation: 1,
            state: WorkerState::Ready,
            uptime_seconds: 10.0,
            restarts: 0,
            last_restart_reason: None,
            restarts_by_reason: Default::default(),
            cpu_seconds: Some(0.5),
            cpu_percent: Some(2.0),
            rss_bytes: Some(8 << 20),
            connections: None,
            requests,
            heartbeat_age_seconds: None,
            agent: None,
        }
    }

    pub(crate) fn status(workers: Vec<WorkerStatus>) -> Status {
        Status {
            name: "demo".into(),
            pid: 1,
            policy: Policy::ReusePort,
            uptime_seconds: 10.0,
            workers_desired: workers.len(),
            environment: Default::default(),
            next_scheduled_reload: None,
            stopping: false,
            listeners: Vec::new(),
            reloads: ReloadStats::default(),
            workers,
        }
    }

    #[test]
    fn rates_come_from_the_growth_of_each_count() {
        let before = status(vec![worker(1, 10, Some(100)), worker(2, 20, Some(50))]);
        let after = status(vec![
            worker(1, 10, Some(300)),
            worker(2, 21, Some(40)),
            worker(3, 30, None),
        ]);
        let rates = request_rates(&before, &after, Duration::from_secs(2));
        assert_eq!(rates.get(&10), Some(&100.0));
        // A replacement (new pid) counts from zero.
        assert_eq!(rates.get(&21), Some(&20.0));
        assert_eq!(rates.get(&30), None);
    }

    #[test]
    fn the_history_is_bounded_and_starts_at_the_second_snapshot() {
        let mut model = Model::default();
        model.update(status(vec![worker(1, 10, Some(0))]), Duration::from_secs(1));
        assert!(model.history.is_empty());
        for n in 1..=(HISTORY as u64 + 10) {
            model.update(
                status(vec![worker(1, 10, Some(n * 5))]),
                Duration::from_secs(1),
            );
        }
        assert_eq!(model.history.len(), HISTORY);
        assert_eq!(model.history.back(), Some(&5));
        assert_eq!(model.total_rate(), 5.0);
    }

    #[test]
    fn no_rates_total_a_positive_zero() {
        let model = Model::default();
        assert_eq!(format!("{:.0}", model.total_rate()), "0");
        assert!(model.total_rate().is_sign_positive());
    }
}
