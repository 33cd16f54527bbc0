//! The Prometheus exposition of a status snapshot (`GET /metrics`), built
//! with `prometheus-client` at each scrape from the same [`Status`] that
//! `corral status` prints. Worker series are labelled by worker id (the
//! slot), never by pid: a replaced worker continues its id's series (a
//! counter of a new process starts again, which `rate()` handles as a
//! reset). Values corral cannot know are left out rather than reported as
//! zero.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet, text::encode,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::control::status::WorkerState;
use crate::control::status::{DurationHistogram, RestartReason, Status};

/// What the primary knows beside the snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PrimaryFacts {
    pub resident_memory_bytes: Option<u64>,
    pub messages_dropped: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct WorkerLabel {
    pub worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RestartLabels {
    worker: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AddressLabel {
    address: String,
}

type FloatCounter = Counter<f64, AtomicU64>;

/// The reload durations as a Prometheus histogram.
#[derive(Debug)]
struct Histogram(DurationHistogram);

impl EncodeMetric for Histogram {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encode_cumulative(encoder, self.0.sum_seconds, self.0.count, &self.0.buckets())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A histogram kept as `(bound, cumulative count)` pairs ending with `+Inf`.
pub(super) fn encode_cumulative(
    mut encoder: MetricEncoder,
    sum: f64,
    count: u64,
    cumulative: &[(f64, u64)],
) -> Result<(), std::fmt::Error> {
    // The encoder sums the buckets itself: it wants each bucket's own
    // count, where the status keeps them cumulative.
    let own: Vec<(f64, u64)> = cumulative
        .iter()
        .scan(0, |below, &(bound, count)| {
            let own = count.saturating_sub(*below);
            *below = count;
            Some((bound, own))
        })
        .collect();
    encoder.encode_histogram::<NoLabelSet>(sum, count, &own, None)
}

fn state_name(state: WorkerState) -> &'static str {
    match state {
        WorkerState::Starting => "starting",
        WorkerState::Ready => "ready",
        WorkerState::Stopping => "stopping",
    }
}

/// The reasons every worker has a restart series for (a reload's
/// replacements are counted as reloads, not per worker).
const COUNTED_REASONS: [RestartReason; 5] = [
    RestartReason::Crash,
    RestartReason::Killed,
    RestartReason::Hung,
    RestartReason::Memory,
    RestartReason::Requests,
];

/// The exposition in Prometheus' classic text format (0.0.4), which
/// `promtool check metrics` and any scraper read: OpenMetrics names a
/// counter family without its `_total` suffix and ends with `# EOF`; the
/// classic format names the family as its samples are named.
pub(crate) fn classic(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The text exposition of `status`, in OpenMetrics text ([`classic`]
/// turns it into Prometheus' classic format).
pub(crate) fn render(status: &Status, facts: PrimaryFacts) -> String {
    let mut registry = Registry::default();

    let workers = Family::<StateLabel, Gauge>::default();
    for state in [
        WorkerState::Starting,
        WorkerState::Ready,
        WorkerState::Stopping,
    ] {
        let count = status.workers.iter().filter(|w| w.state == state).count();
        workers
            .get_or_create(&StateLabel {
                state: state_name(state),
            })
            .set(count as i64);
    }
    registry.register(
        "corral_workers",
        "Worker processes by state (a reload's replacements and draining workers included)",
        workers,
    );

    let desired = Gauge::<i64>::default();
    desired.set(status.workers_desired as i64);
    registry.register(
        "corral_workers_desired",
        "Worker slots the cluster keeps filled",
        desired,
    );

    // Per worker id: the sum over its processes (two during a reload).
    let cpu = Family::<WorkerLabel, FloatCounter>::default();
    let memory = Family::<WorkerLabel, Gauge>::default();
    let connections = Family::<WorkerLabel, Gauge>::default();
    let requests = Family::<WorkerLabel, Counter>::default();
    let restarts = Family::<RestartLabels, Counter>::default();
    let mut restart_counts: BTreeMap<(u32, RestartReason), u32> = BTreeMap::new();
    for worker in &status.workers {
        let label = WorkerLabel {
            worker: worker.id.to_string(),
        };
        if let Some(seconds) = worker.cpu_seconds {
            cpu.get_or_create(&label).inc_by(seconds);
        }
        if let Some(bytes) = worker.rss_bytes {
            memory.get_or_create(&label).inc_by(bytes as i64);
        }
        if let Some(open) = worker.connections {
            connections.get_or_create(&label).inc_by(open as i64);
        }
        if let Some(served) = worker.requests {
            requests.get_or_create(&label).inc_by(served);
        }
        // The slot's counts, the same on each of its processes; every
        // reason a series from zero, so a first restart is a rise.
        for reason in COUNTED_REASONS {
            restart_counts.entry((worker.id, reason)).or_insert(0);
        }
        for (&reason, &count) in &worker.restarts_by_reason {
            restart_counts.insert((worker.id, reason), count);
        }
    }
    for ((id, reason), count) in restart_counts {
        restarts
            .get_or_create(&RestartLabels {
                worker: id.to_string(),
                reason: reason.name(),
            })
            .inc_by(u64::from(count));
    }
    registry.register(
        "corral_worker_cpu_seconds",
        "CPU time (user and system) used by the worker's processes",
        cpu,
    );
    registry.register(
        "corral_worker_resident_memory_bytes",
        "Resident memory of the worker's processes",
        memory,
    );
    registry.register(
        "corral_worker_restarts",
        "Times the worker was replaced, by reason (crash, killed, hung, memory, requests, reload)",
        restarts,
    );
    registry.register(
        "corral_worker_connections",
        "Connections open in the worker (policies where the primary hands connections out)",
        connections,
    );
    registry.register(
        "corral_worker_requests",
        "Requests the worker's current process reported serving",
        requests,
    );
    super::agent_series::register(&mut registry, status);

    let reloads = Family::<ResultLabel, Counter>::default();
    reloads
        .get_or_create(&ResultLabel {
            result: "completed",
        })
        .inc_by(status.reloads.completed);
    reloads
        .get_or_create(&ResultLabel { result: "aborted" })
        .inc_by(status.reloads.aborted);
    registry.register(
        "corral_reloads",
        "Rolling reloads, by how they ended",
        reloads,
    );
    registry.register(
        "corral_reload_duration_seconds",
        "How long rolling reloads took, from start to completion or abort",
        Histogram(status.reloads.durations.clone()),
    );

    let queued = Family::<AddressLabel, Gauge>::default();
    for listener in &status.listeners {
        if let Some(count) = listener.queued {
            queued
                .get_or_create(&AddressLabel {
                    address: listener.address.to_string(),
                })
                .set(i64::from(count));
        }
    }
    registry.register(
        "corral_listener_queued_connections",
        "Connections waiting in the listening sockets' accept queues",
        queued,
    );

    if let Some(bytes) = facts.resident_memory_bytes {
        let gauge = Gauge::<i64>::default();
        gauge.set(bytes as i64);
        registry.register(
            "corral_primary_resident_memory_bytes",
            "Resident memory of the primary",
            gauge,
        );
    }
    let dropped = Counter::<u64>::default();
    dropped.inc_by(facts.messages_dropped);
    registry.register(
        "corral_messages_dropped",
        "Messages dropped: malformed or oversized lines from workers, messages to workers whose queue was full",
        dropped,
    );

    let mut text = String::new();
    encode(&mut text, &registry).expect("writing to a String cannot fail");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Policy;
    use crate::control::status::{ListenerStatus, ReloadStats, WorkerStatus};

    fn worker(id: u32, generation: u32, state: WorkerState) -> WorkerStatus {
        WorkerStatus {
            id,
            pid: 40_000 + id * 10 + generation,
            generation,
            state,
            uptime_seconds: 1.0,
            restarts: 0,
            last_restart_reason: None,
            restarts_by_reason: BTreeMap::new(),
            cpu_seconds: Some(0.5),
            cpu_percent: Some(1.0),
            rss_bytes: Some(1000),
            connections: None,
            requests: Some(7),
            heartbeat_age_seconds: None,
            agent: None,
        }
    }

    fn status() -> Status {
        let mut first = worker(1, 2, WorkerState::Ready);
        first.restarts = 3;
        first.restarts_by_reason =
            BTreeMap::from([(RestartReason::Crash, 2), (RestartReason::Hung, 1)]);
        let mut durations = DurationHistogram::default();
        durations.observe(0.3);
        durations.observe(4.0);
        Status {
            name: "demo".into(),
            pid: 100,
            policy: Policy::ReusePort,
            uptime_seconds: 10.0,
            workers_desired: 2,
            environment: Default::default(),
            next_scheduled_reload: None,
            stopping: false,
            listeners: vec![ListenerStatus {
                address: "127.0.0.1:8000".parse().unwrap(),
                queued: Some(4),
                steering: None,
                connection_counts: None,
            }],
            reloads: ReloadStats {
                completed: 2,
                aborted: 1,
                in_progress: false,
                last: None,
                durations,
            },
            workers: vec![
                first,
                worker(2, 1, WorkerState::Ready),
                worker(2, 2, WorkerState::Starting),
            ],
        }
    }

    #[test]
    fn the_classic_format_names_counter_families_with_total() {
        let text = classic(&render(&status(), PrimaryFacts::default()));
        assert!(
            text.contains("# TYPE corral_reloads_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP corral_reloads_total Rolling reloads"),
            "{text}"
        );
        assert!(text.contains("# TYPE corral_workers gauge\n"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn every_metric_is_there_labelled_by_worker_id() {
        let text = render(
            &status(),
            PrimaryFacts {
                resident_memory_bytes: Some(5_000_000),
                messages_dropped: 9,
            },
        );
        for line in [
            "corral_workers{state=\"ready\"} 2",
            "corral_workers{state=\"starting\"} 1",
            "corral_workers{state=\"stopping\"} 0",
            "corral_workers_desired 2",
            "corral_worker_cpu_seconds_total{worker=\"2\"} 1.0",
            "corral_worker_resident_memory_bytes{worker=\"2\"} 2000",
            "corral_worker_restarts_total{worker=\"1\",reason=\"crash\"} 2",
            "corral_worker_restarts_total{worker=\"1\",reason=\"hung\"} 1",
            "corral_worker_restarts_total{worker=\"2\",reason=\"memory\"} 0",
            "corral_worker_requests_total{worker=\"1\"} 7",
            "corral_reloads_total{result=\"completed\"} 2",
            "corral_reloads_total{result=\"aborted\"} 1",
            "corral_reload_duration_seconds_bucket{le=\"0.5\"} 1",
            "corral_reload_duration_seconds_bucket{le=\"5.0\"} 2",
            "corral_reload_duration_seconds_count 2",
            "corral_reload_duration_seconds_bucket{le=\"0.25\"} 0",
            "corral_reload_duration_seconds_bucket{le=\"300.0\"} 2",
            "corral_reload_duration_seconds_bucket{le=\"+Inf\"} 2",
            "corral_listener_queued_connections{address=\"127.0.0.1:8000\"} 4",
            "corral_primary_resident_memory_bytes 5000000",
            "corral_messages_dropped_total 9",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in:\n{text}"
            );
        }
        // Unknown values are left out, and pids never appear.
        assert!(!text.contains("corral_worker_connections{"), "{text}");
        assert!(!text.contains("40012"), "{text}");
    }

    #[test]
    fn node_workers_have_latency_histograms_and_gauges_by_worker_id() {
        use crate::control::status::{AgentMetrics, LatencyHistogram};
        let mut own = [0u64; 14];
        own[0] = 3;
        own[6] = 1;
        let agent = AgentMetrics {
            requests_in_flight: 2,
            latency: LatencyHistogram::from_own_counts(&own, 0.08),
            latency_p50_seconds: None,
            latency_p95_seconds: None,
            latency_p99_seconds: None,
            event_loop_lag_seconds: 0.004,
            event_loop_lag_p99_seconds: 0.02,
            heap_used_bytes: 1000,
            report_age_seconds: 0.5,
        };
        let mut status = status();
        // Worker 2's two processes (a reload) add up; their lags do not.
        for worker in &mut status.workers[1..] {
            worker.agent = Some(agent.clone());
        }
        let text = classic(&render(&status, PrimaryFacts::default()));
        for line in [
            "# TYPE corral_worker_request_duration_seconds histogram",
            "corral_worker_request_duration_seconds_bucket{le=\"0.001\",worker=\"2\"} 6",
            "corral_worker_request_duration_seconds_bucket{le=\"0.05\",worker=\"2\"} 6",
            "corral_worker_request_duration_seconds_bucket{le=\"0.1\",worker=\"2\"} 8",
            "corral_worker_request_duration_seconds_bucket{le=\"+Inf\",worker=\"2\"} 8",
            "corral_worker_request_duration_seconds_count{worker=\"2\"} 8",
            "corral_worker_request_duration_seconds_sum{worker=\"2\"} 0.16",
            "corral_worker_requests_in_flight{worker=\"2\"} 4",
            "corral_worker_event_loop_lag_seconds{worker=\"2\"} 0.004",
            "corral_worker_event_loop_lag_p99_seconds{worker=\"2\"} 0.02",
            "corral_worker_heap_used_bytes{worker=\"2\"} 2000",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in:\n{text}"
            );
        }
        // Worker 1 sent no report: none of its series.
        assert!(
            !text.contains("duration_seconds_count{worker=\"1\"}"),
            "{text}"
        );
        // Without a report, no agent series at all.
        let text = render(&self::status(), PrimaryFacts::default());
        assert!(!text.contains("request_duration"), "{text}");
    }
}
