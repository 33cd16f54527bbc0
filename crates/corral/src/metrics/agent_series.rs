//! The series of what corral's Node agent reports of Node workers
//! (docs/node.md, "Request metrics"), labelled by worker id as every
//! worker series is: the request latency as a histogram, and gauges for
//! requests in flight, event-loop lag and heap used. The requests served
//! are `corral_worker_requests_total`, shared with library workers. During
//! a reload a worker id has two processes: their counts and bytes add up,
//! their lags do not (the larger is shown).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::exposition::{WorkerLabel, encode_cumulative};
use crate::control::status::{AgentMetrics, Status};

type FloatGauge = Gauge<f64, AtomicU64>;

/// One worker id's latency: sum, count and cumulative buckets.
#[derive(Debug, Default)]
struct Latency {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl Latency {
    fn add(&mut self, metrics: &AgentMetrics) {
        let buckets = metrics.latency.buckets();
        if self.buckets.is_empty() {
            self.buckets = buckets.iter().map(|&(bound, _)| (bound, 0)).collect();
        }
        for (mine, (_, count)) in self.buckets.iter_mut().zip(buckets) {
            mine.1 = mine.1.saturating_add(count);
        }
        self.sum += metrics.latency.sum_seconds;
        self.count = self.count.saturating_add(metrics.latency.count);
    }
}

/// The latency histograms of every worker id, as one family.
#[derive(Debug)]
struct LatencyFamily(BTreeMap<u32, Latency>);

impl EncodeMetric for LatencyFamily {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (id, latency) in &self.0 {
            let label = WorkerLabel {
                worker: id.to_string(),
            };
            let sub = encoder.encode_family(&label)?;
            encode_cumulative(sub, latency.sum, latency.count, &latency.buckets)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Registers the agent's series for the workers of `status` that have a
/// report (none when no worker has one).
pub(super) fn register(registry: &mut Registry, status: &Status) {
    let mut latency = BTreeMap::<u32, Latency>::new();
    let in_flight = Family::<WorkerLabel, Gauge>::default();
    let lag = Family::<WorkerLabel, FloatGauge>::default();
    let lag_p99 = Family::<WorkerLabel, FloatGauge>::default();
    let heap = Family::<WorkerLabel, Gauge>::default();
    for worker in &status.workers {
        let Some(metrics) = &worker.agent else {
            continue;
        };
        let label = WorkerLabel {
            worker: worker.id.to_string(),
        };
        latency.entry(worker.id).or_default().add(metrics);
        in_flight
            .get_or_create(&label)
            .inc_by(metrics.requests_in_flight as i64);
        heap.get_or_create(&label)
            .inc_by(metrics.heap_used_bytes as i64);
        for (family, value) in [
            (&lag, metrics.event_loop_lag_seconds),
            (&lag_p99, metrics.event_loop_lag_p99_seconds),
        ] {
            let gauge = family.get_or_create(&label);
            if value > gauge.get() {
                gauge.set(value);
            }
        }
    }
    if latency.is_empty() {
        return;
    }
    registry.register(
        "corral_worker_request_duration_seconds",
        "Latency of the HTTP requests a Node worker served, from request to response end (corral's Node agent)",
        LatencyFamily(latency),
    );
    registry.register(
        "corral_worker_requests_in_flight",
        "HTTP requests a Node worker received and has not answered yet (corral's Node agent)",
        in_flight,
    );
    registry.register(
        "corral_worker_event_loop_lag_seconds",
        "How late a Node worker's event loop ran, on average, since its previous report (corral's Node agent)",
        lag,
    );
    registry.register(
        "corral_worker_event_loop_lag_p99_seconds",
        "The 99th percentile of a Node worker's event-loop lag since its previous report (corral's Node agent)",
        lag_p99,
    );
    registry.register(
        "corral_worker_heap_used_bytes",
        "V8 heap in use in a Node worker (corral's Node agent)",
        heap,
    );
}
