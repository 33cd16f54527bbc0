//! What corral's Node agent reports of a Node worker, as the status shows
//! it (`status --json`'s `agent`, `corral top`, `/metrics`; docs/node.md,
//! "Request metrics"): requests in flight, the latency histogram and its
//! quantiles, event-loop lag and heap used. The requests served are the
//! worker's `requests`, shared with library workers.

use serde::{Deserialize, Serialize};

/// Upper bounds (seconds) of the request-latency buckets; a last bucket
/// (`+Inf`) counts the slower requests. The agent (`agent.js`) counts
/// into the same bounds.
pub const AGENT_LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One Node worker's last report from the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentMetrics {
    /// Requests received and not yet answered (or aborted).
    pub requests_in_flight: u64,
    /// Latency of the requests served, from the request to the response's end.
    pub latency: LatencyHistogram,
    /// Quantiles of the latency, estimated from the histogram as
    /// Prometheus' `histogram_quantile` does (`None` before any request).
    pub latency_p50_seconds: Option<f64>,
    pub latency_p95_seconds: Option<f64>,
    pub latency_p99_seconds: Option<f64>,
    /// How late the event loop ran, on average, over the last report's
    /// period (`perf_hooks.monitorEventLoopDelay`).
    pub event_loop_lag_seconds: f64,
    /// The 99th percentile of the same.
    pub event_loop_lag_p99_seconds: f64,
    /// V8's heap in use (`process.memoryUsage().heapUsed`).
    pub heap_used_bytes: u64,
    /// Seconds since the report arrived (a busy worker reports each
    /// second, an idle one every ten).
    pub report_age_seconds: f64,
}

/// Request latencies counted into [`AGENT_LATENCY_BUCKETS`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    pub sum_seconds: f64,
    pub count: u64,
    /// Requests at most each bound of [`AGENT_LATENCY_BUCKETS`].
    pub cumulative: Vec<u64>,
}

impl LatencyHistogram {
    /// From each bucket's own count (the last one `+Inf`'s) and the sum.
    pub(crate) fn from_own_counts(own: &[u64], sum_seconds: f64) -> Self {
        let mut total = 0u64;
        let mut cumulative = Vec::with_capacity(AGENT_LATENCY_BUCKETS.len());
        for &count in own.iter().take(AGENT_LATENCY_BUCKETS.len()) {
            total = total.saturating_add(count);
            cumulative.push(total);
        }
        let count = own.iter().fold(0u64, |sum, &n| sum.saturating_add(n));
        LatencyHistogram {
            sum_seconds,
            count,
            cumulative,
        }
    }

    /// `(upper bound, cumulative count)` pairs, ending with `+Inf`.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        AGENT_LATENCY_BUCKETS
            .iter()
            .enumerate()
            .map(|(index, &bound)| (bound, self.cumulative.get(index).copied().unwrap_or(0)))
            .chain(std::iter::once((f64::INFINITY, self.count)))
            .collect()
    }

    /// The `q` quantile (0 to 1), interpolated linearly inside its bucket;
    /// in the `+Inf` bucket, the highest finite bound. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * self.count as f64;
        let mut lower = (0.0, 0u64);
        for (bound, cumulative) in self.buckets() {
            if cumulative as f64 >= rank && cumulative > lower.1 {
                if bound.is_infinite() {
                    return Some(lower.0);
                }
                let within = (rank - lower.1 as f64) / (cumulative - lower.1) as f64;
                return Some(lower.0 + (bound - lower.0) * within.max(0.0));
            }
            lower = (bound, cumulative);
        }
        Some(lower.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(own: &[u64]) -> LatencyHistogram {
        LatencyHistogram::from_own_counts(own, 0.0)
    }

    #[test]
    fn quantiles_interpolate_inside_their_bucket() {
        // 90 requests up to 1 ms, 10 between 50 and 100 ms.
        let mut own = [0u64; 14];
        own[0] = 90;
        own[6] = 10;
        let latency = histogram(&own);
        assert_eq!(latency.count, 100);
        assert_eq!(latency.cumulative.len(), 13);
        let p50 = latency.quantile(0.5).unwrap();
        assert!(p50 > 0.0 && p50 <= 0.001, "{p50}");
        let p95 = latency.quantile(0.95).unwrap();
        assert!((p95 - 0.075).abs() < 1e-9, "{p95}");
        assert_eq!(latency.quantile(1.0), Some(0.1));
    }

    #[test]
    fn the_slowest_bucket_answers_its_lower_bound_and_empty_answers_none() {
        let mut own = [0u64; 14];
        own[13] = 3;
        assert_eq!(histogram(&own).quantile(0.99), Some(10.0));
        assert_eq!(histogram(&[0; 14]).quantile(0.5), None);
        assert_eq!(histogram(&own).quantile(1.5), None);
    }

    #[test]
    fn buckets_end_with_inf_and_the_count() {
        let mut own = [1u64; 14];
        own[13] = 5;
        let buckets = histogram(&own).buckets();
        assert_eq!(buckets.len(), 14);
        assert_eq!(buckets[0], (0.001, 1));
        assert_eq!(buckets[12], (10.0, 13));
        assert_eq!(buckets[13], (f64::INFINITY, 18));
    }
}
