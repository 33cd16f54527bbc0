//! The metrics corral's Node agent reports from a Node worker
//! (`protocol/agent_report.rs`), as the primary keeps them: the last
//! report only, in the worker's link (a fixed size per worker, gone with
//! the worker), admitted at most [`REPORTS_PER_SECOND`] times a second
//! per worker (the agent sends one a second; a flood past that is dropped,
//! not kept or counted).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::control::status::{AgentMetrics, LatencyHistogram};
use crate::log::rate::RateLimit;
use crate::protocol::agent_report::AgentReport;

/// Reports one worker may send per second; the rest are ignored.
pub(crate) const REPORTS_PER_SECOND: u32 = 5;

/// One worker's admission of reports.
pub(crate) const fn report_limit() -> RateLimit {
    RateLimit::new(REPORTS_PER_SECOND, Duration::from_secs(1))
}

/// A worker's last report and when it arrived.
#[derive(Default)]
pub(crate) struct ReportSlot(Mutex<Option<(AgentReport, Instant)>>);

impl ReportSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(AgentReport, Instant)>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The requests the last report counted (0 before any).
    pub(crate) fn requests(&self) -> u64 {
        self.lock()
            .as_ref()
            .map_or(0, |(report, _)| report.requests)
    }

    pub(crate) fn store(&self, report: AgentReport, at: Instant) {
        *self.lock() = Some((report, at));
    }

    /// The last report as the status shows it.
    pub(crate) fn metrics(&self, now: Instant) -> Option<AgentMetrics> {
        let guard = self.lock();
        let (report, at) = guard.as_ref()?;
        Some(shown(report, now.saturating_duration_since(*at)))
    }
}

/// `report`, received `age` ago, as the status shows it.
fn shown(report: &AgentReport, age: Duration) -> AgentMetrics {
    let latency = LatencyHistogram::from_own_counts(&report.buckets, report.sum_seconds);
    AgentMetrics {
        requests_in_flight: report.in_flight,
        latency_p50_seconds: latency.quantile(0.5),
        latency_p95_seconds: latency.quantile(0.95),
        latency_p99_seconds: latency.quantile(0.99),
        latency,
        event_loop_lag_seconds: report.lag_seconds,
        event_loop_lag_p99_seconds: report.lag_p99_seconds,
        heap_used_bytes: report.heap_used_bytes,
        report_age_seconds: age.as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::agent_report::REPORT_BUCKETS;

    #[test]
    fn the_slot_keeps_the_last_report_only() {
        let slot = ReportSlot::default();
        let start = Instant::now();
        assert_eq!(slot.requests(), 0);
        assert!(slot.metrics(start).is_none());
        let mut buckets = [0; REPORT_BUCKETS];
        for requests in [10, 20] {
            buckets[6] = requests;
            slot.store(
                AgentReport {
                    requests,
                    in_flight: 2,
                    buckets,
                    sum_seconds: 0.06 * requests as f64,
                    lag_seconds: 0.001,
                    lag_p99_seconds: 0.004,
                    heap_used_bytes: 1 << 20,
                },
                start,
            );
        }
        assert_eq!(slot.requests(), 20);
        let metrics = slot.metrics(start + Duration::from_secs(2)).unwrap();
        assert_eq!(metrics.latency.count, 20);
        assert_eq!(metrics.requests_in_flight, 2);
        assert_eq!(metrics.report_age_seconds, 2.0);
        let p95 = metrics.latency_p95_seconds.unwrap();
        assert!((0.05..=0.1).contains(&p95), "{p95}");
    }

    #[test]
    fn past_the_limit_reports_are_refused() {
        let limit = report_limit();
        let admitted = (0..100).filter(|_| limit.admit().is_some()).count();
        assert_eq!(admitted, REPORTS_PER_SECOND as usize);
    }
}
