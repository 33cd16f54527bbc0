//! The status snapshot: what a running cluster reports about itself, to
//! `corral status` and `corral top` (over the control socket, as JSON), to
//! the library user ([`crate::Primary::status`]) and to the metrics. One
//! definition for all of them; the JSON field names are a contract that
//! scripts rely on (docs/operating.md lists them), so they never change meaning.
//! A value the primary cannot know is `None` (`null` in JSON).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::balance::{ConnectionCounts, Policy, Steering};
pub use crate::control::agent_metrics::{AGENT_LATENCY_BUCKETS, AgentMetrics, LatencyHistogram};

/// A cluster at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The cluster's name (`--name`).
    pub name: String,
    /// The primary's pid.
    pub pid: u32,
    /// The balancing policy.
    #[serde(with = "policy_name")]
    pub policy: Policy,
    /// Seconds since the primary started.
    pub uptime_seconds: f64,
    /// How many worker slots the cluster keeps filled (what `scale` sets).
    pub workers_desired: usize,
    /// The cluster is stopping: workers drain or are killed.
    pub stopping: bool,
    /// The listening addresses, in `--listen` order.
    pub listeners: Vec<ListenerStatus>,
    /// Rolling reloads so far.
    pub reloads: ReloadStats,
    /// Every worker process: the slots' workers, replacements being started
    /// by a reload and old workers draining (so an id can appear twice),
    /// by id then generation.
    pub workers: Vec<WorkerStatus>,
    /// Where the workers' added variables come from (names only: values
    /// are never shown).
    #[serde(default)]
    pub environment: EnvironmentStatus,
    /// When `--reload-at` starts the next rolling reload (RFC 3339, UTC).
    #[serde(default)]
    pub next_scheduled_reload: Option<String>,
}

/// The workers' added environment: the profile (`--env-name`), the files
/// (`--env-file`) and the names of the variables set, without values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentStatus {
    pub profile: Option<String>,
    pub files: Vec<std::path::PathBuf>,
    pub variables: Vec<String>,
}

/// One listening address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerStatus {
    /// The address as bound (the real port when 0 was asked).
    pub address: SocketAddr,
    /// Connections waiting in the kernel's accept queue, summed over the
    /// address's sockets (one per slot under `reuseport`).
    pub queued: Option<u32>,
    /// How `round-robin`, `least-connections` and `sticky` reach the workers here:
    /// `"kernel"` (an `SK_REUSEPORT` program) or `"hand-off"` (the
    /// primary accepts); `null` under `shared` and `reuseport`.
    #[serde(default)]
    pub steering: Option<Steering>,
    /// Under `least-connections` steered in the kernel, where each
    /// worker's open connections are counted: `"kernel"` (a `SOCK_OPS`
    /// program) or `"worker-reports"` (library workers report closes);
    /// `null` otherwise.
    #[serde(default)]
    pub connection_counts: Option<ConnectionCounts>,
}

/// Rolling reloads: how many ended which way, and the last one's result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReloadStats {
    /// Reloads that replaced every worker.
    pub completed: u64,
    /// Reloads given up because a replacement failed.
    pub aborted: u64,
    /// A reload is under way.
    pub in_progress: bool,
    /// The last reload that ended.
    pub last: Option<ReloadOutcome>,
    /// How long the reloads that ended took.
    #[serde(default)]
    pub durations: DurationHistogram,
}

/// Upper bounds (seconds) of the reload-duration histogram's buckets.
pub const RELOAD_DURATION_BUCKETS: [f64; 10] =
    [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Durations, counted into [`RELOAD_DURATION_BUCKETS`] (Prometheus'
/// histogram: each bucket counts the observations up to its bound).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DurationHistogram {
    pub sum_seconds: f64,
    pub count: u64,
    /// Observations at most each bound of [`RELOAD_DURATION_BUCKETS`].
    pub cumulative: Vec<u64>,
}

impl DurationHistogram {
    pub(crate) fn observe(&mut self, seconds: f64) {
        self.cumulative.resize(RELOAD_DURATION_BUCKETS.len(), 0);
        for (bound, count) in RELOAD_DURATION_BUCKETS.iter().zip(&mut self.cumulative) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.sum_seconds += seconds;
        self.count += 1;
    }

    /// `(upper bound, cumulative count)` pairs, ending with `+Inf`.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        RELOAD_DURATION_BUCKETS
            .iter()
            .enumerate()
            .map(|(index, &bound)| (bound, self.cumulative.get(index).copied().unwrap_or(0)))
            .chain(std::iter::once((f64::INFINITY, self.count)))
            .collect()
    }
}

/// How a rolling reload ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadOutcome {
    /// `completed` or `aborted`.
    pub result: ReloadResult,
    /// Why it aborted (`None` when it completed).
    pub reason: Option<String>,
    /// Workers replaced before it ended.
    pub replaced: usize,
    /// How long it ran.
    pub duration_seconds: f64,
    /// How long ago it ended.
    pub ended_seconds_ago: f64,
    /// The old workers still draining when it ended (a worker holding
    /// WebSockets or long requests drains after the reload completes).
    #[serde(default)]
    pub draining: Draining,
}

/// Workers asked to stop and not exited yet, while the cluster runs on:
/// the old workers of a reload, finishing what they hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draining {
    pub workers: usize,
    /// Their open connections, where the primary counts them (the
    /// policies that hand connections out; see `WorkerStatus::connections`).
    pub connections: Option<u64>,
}

impl Draining {
    /// What "… still draining" says, if any worker does: `2 old workers
    /// still draining (5 connections)`.
    pub fn describe(&self) -> Option<String> {
        if self.workers == 0 {
            return None;
        }
        let workers = match self.workers {
            1 => "1 old worker".to_string(),
            n => format!("{n} old workers"),
        };
        Some(match self.connections {
            Some(1) => format!("{workers} still draining (1 connection)"),
            Some(n) => format!("{workers} still draining ({n} connections)"),
            None => format!("{workers} still draining"),
        })
    }
}

/// The two ways a rolling reload ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReloadResult {
    Completed,
    Aborted,
}

/// Where a worker is in its life (`"starting"`, `"ready"`, `"stopping"` in
/// the control socket's JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum WorkerState {
    /// Started, not ready yet.
    Starting,
    /// Serving.
    Ready,
    /// Asked to stop, draining.
    Stopping,
}

/// One worker process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// The slot number (`CORRAL_WORKER_ID`).
    pub id: u32,
    pub pid: u32,
    /// How many times the slot was started, this start included.
    pub generation: u32,
    pub state: WorkerState,
    /// Seconds since this process started.
    pub uptime_seconds: f64,
    /// How many times the slot's worker was replaced (a crash, a kill, the
    /// watchdog, recycling or a reload).
    pub restarts: u32,
    /// Why the slot's worker was last replaced.
    pub last_restart_reason: Option<RestartReason>,
    /// The slot's replacements by reason (only reasons that occurred).
    #[serde(default)]
    pub restarts_by_reason: std::collections::BTreeMap<RestartReason, u32>,
    /// CPU time the process used (user and system).
    pub cpu_seconds: Option<f64>,
    /// CPU use since the previous snapshot (or over the process's life, on
    /// the first), in percent of one core.
    pub cpu_percent: Option<f64>,
    /// Resident memory.
    pub rss_bytes: Option<u64>,
    /// Connections open in the worker, under the policies where the primary
    /// hands connections out and workers report closing them
    /// (`least-connections`; handed and not yet reported under
    /// `round-robin`).
    pub connections: Option<u64>,
    /// Requests served, once the worker reported any (demo and library
    /// workers count; a COMMAND's workers send `{"corral":{"served":N}}`;
    /// corral's Node agent counts a Node worker's HTTP requests).
    pub requests: Option<u64>,
    /// Seconds since the worker's last heartbeat, once it sent one.
    pub heartbeat_age_seconds: Option<f64>,
    /// What corral's Node agent last reported of a Node worker (`None` for
    /// other workers, and before the first report).
    #[serde(default)]
    pub agent: Option<AgentMetrics>,
}

/// Why a worker was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum RestartReason {
    /// It exited by itself: an exit code or a crash signal (SIGSEGV…).
    Crash,
    /// It was killed from outside (an operator, the OOM killer).
    Killed,
    /// Its heartbeats stopped: the watchdog killed it.
    Hung,
    /// It grew past `--max-memory` and was recycled.
    Memory,
    /// It served `--max-requests` and was recycled.
    Requests,
    /// A rolling reload replaced it.
    Reload,
}

impl RestartReason {
    /// Every reason, for exporters that list them all.
    pub const ALL: [RestartReason; 6] = [
        RestartReason::Crash,
        RestartReason::Killed,
        RestartReason::Hung,
        RestartReason::Memory,
        RestartReason::Requests,
        RestartReason::Reload,
    ];

    /// The name in JSON and in metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            RestartReason::Crash => "crash",
            RestartReason::Killed => "killed",
            RestartReason::Hung => "hung",
            RestartReason::Memory => "memory",
            RestartReason::Requests => "requests",
            RestartReason::Reload => "reload",
        }
    }
}

impl fmt::Display for RestartReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Status {
    /// The old workers still draining while the cluster runs on (none
    /// once it stops: then every worker drains).
    pub fn draining(&self) -> Draining {
        if self.stopping {
            return Draining::default();
        }
        draining(&self.workers)
    }

    /// Workers that are ready (the slots' workers serving).
    pub fn ready_workers(&self) -> usize {
        self.workers
            .iter()
            .filter(|worker| worker.state == WorkerState::Ready)
            .count()
    }
}

/// The workers among `workers` asked to stop, and their connections.
pub(crate) fn draining(workers: &[WorkerStatus]) -> Draining {
    let stopping: Vec<&WorkerStatus> = workers
        .iter()
        .filter(|worker| worker.state == WorkerState::Stopping)
        .collect();
    Draining {
        workers: stopping.len(),
        connections: stopping.iter().map(|worker| worker.connections).sum(),
    }
}

/// The policy as its command-line name (`"round-robin"`), both ways.
mod policy_name {
    use super::*;

    pub fn serialize<S: serde::Serializer>(policy: &Policy, out: S) -> Result<S::Ok, S::Error> {
        out.serialize_str(policy.name())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(input: D) -> Result<Policy, D::Error> {
        let name = String::deserialize(input)?;
        Policy::from_str(&name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use WorkerState;

    #[test]
    fn draining_workers_are_described_with_their_connections_when_counted() {
        let draining = |workers, connections| Draining {
            workers,
            connections,
        };
        assert_eq!(draining(0, Some(3)).describe(), None);
        assert_eq!(
            draining(1, None).describe().unwrap(),
            "1 old worker still draining"
        );
        assert_eq!(
            draining(2, Some(5)).describe().unwrap(),
            "2 old workers still draining (5 connections)"
        );
    }

    #[test]
    fn only_stopping_workers_of_a_running_cluster_are_draining() {
        let mut status = sample();
        assert_eq!(status.draining().workers, 0);
        let mut old = status.workers[0].clone();
        old.state = WorkerState::Stopping;
        old.connections = Some(4);
        status.workers.push(old);
        assert_eq!(
            status.draining(),
            Draining {
                workers: 1,
                connections: Some(4)
            }
        );
        status.stopping = true;
        assert_eq!(status.draining().workers, 0);
    }

    fn sample() -> Status {
        Status {
            name: "api".into(),
            pid: 100,
            policy: Policy::RoundRobin,
            uptime_seconds: 2.5,
            workers_desired: 1,
            environment: Default::default(),
            next_scheduled_reload: None,
            stopping: false,
            listeners: vec![ListenerStatus {
                address: "127.0.0.1:8000".parse().unwrap(),
                queued: Some(3),
                steering: None,
                connection_counts: None,
            }],
            reloads: ReloadStats {
                completed: 1,
                aborted: 0,
                in_progress: false,
                durations: Default::default(),
                last: Some(ReloadOutcome {
                    result: ReloadResult::Completed,
                    reason: None,
                    replaced: 1,
                    duration_seconds: 0.5,
                    ended_seconds_ago: 1.0,
                    draining: Draining::default(),
                }),
            },
            workers: vec![WorkerStatus {
                id: 1,
                pid: 101,
                generation: 2,
                state: WorkerState::Ready,
                uptime_seconds: 1.5,
                restarts: 1,
                last_restart_reason: Some(RestartReason::Reload),
                restarts_by_reason: Default::default(),
                cpu_seconds: Some(0.25),
                cpu_percent: Some(1.0),
                rss_bytes: Some(4096),
                connections: None,
                requests: Some(7),
                heartbeat_age_seconds: None,
                agent: None,
            }],
        }
    }

    #[test]
    fn connection_counts_are_named_as_documented() {
        let named = |counts| serde_json::to_value(Some(counts)).unwrap();
        assert_eq!(named(ConnectionCounts::Kernel), "kernel");
        assert_eq!(named(ConnectionCounts::WorkerReports), "worker-reports");
        assert_eq!(ConnectionCounts::WorkerReports.name(), "worker-reports");
    }

    #[test]
    fn the_json_field_names_are_the_documented_ones() {
        let json = serde_json::to_value(sample()).unwrap();
        assert_eq!(json["name"], "api");
        assert_eq!(json["pid"], 100);
        assert_eq!(json["policy"], "round-robin");
        assert_eq!(json["listeners"][0]["address"], "127.0.0.1:8000");
        assert_eq!(json["listeners"][0]["queued"], 3);
        assert!(json["listeners"][0]["steering"].is_null());
        assert!(json["listeners"][0]["connection_counts"].is_null());
        assert_eq!(json["reloads"]["last"]["result"], "completed");
        let worker = &json["workers"][0];
        assert_eq!(worker["state"], "ready");
        assert_eq!(worker["last_restart_reason"], "reload");
        assert!(worker["connections"].is_null());
        for field in [
            "id",
            "pid",
            "generation",
            "state",
            "uptime_seconds",
            "restarts",
            "last_restart_reason",
            "cpu_seconds",
            "rss_bytes",
            "connections",
            "requests",
        ] {
            assert!(worker.get(field).is_some(), "workers[].{field} is missing");
        }
    }

    #[test]
    fn a_snapshot_reads_back_as_it_was_written() {
        let text = serde_json::to_string(&sample()).unwrap();
        let back: Status = serde_json::from_str(&text).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn an_unknown_policy_name_is_an_error() {
        let mut json = serde_json::to_value(sample()).unwrap();
        json["policy"] = "random".into();
        assert!(serde_json::from_value::<Status>(json).is_err());
    }
}
