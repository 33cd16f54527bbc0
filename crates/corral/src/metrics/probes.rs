//! What the health endpoints answer, as plain rules over a status snapshot:
//! `/readyz` says whether the cluster can serve (a Kubernetes readiness
//! probe, a load balancer's check), `/readyz?all` whether every worker can.
//! `/healthz` needs no rule: it is answered by the primary's own loop, so
//! an answer at all means the primary runs.

use crate::control::status::Status;
use crate::control::status::WorkerState;

/// Ready: not stopping, and at least one worker (`all`: every slot the
/// cluster keeps) ready to serve.
pub(crate) fn ready(status: &Status, all: bool) -> bool {
    if status.stopping {
        return false;
    }
    let mut ready_ids: Vec<u32> = status
        .workers
        .iter()
        .filter(|worker| worker.state == WorkerState::Ready)
        .map(|worker| worker.id)
        .collect();
    ready_ids.dedup();
    if all {
        status.workers_desired > 0 && ready_ids.len() >= status.workers_desired
    } else {
        !ready_ids.is_empty()
    }
}

/// Whether a request's query asks about every worker (`?all`, `?all=1`).
pub(crate) fn asks_all(query: Option<&str>) -> bool {
    query.is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair == "all" || pair.starts_with("all="))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Policy;
    use crate::control::status::{ReloadStats, WorkerStatus};

    fn status(states: &[(u32, WorkerState)], desired: usize) -> Status {
        Status {
            name: "t".into(),
            pid: 1,
            policy: Policy::ReusePort,
            uptime_seconds: 1.0,
            workers_desired: desired,
            environment: Default::default(),
            next_scheduled_reload: None,
            stopping: false,
            listeners: Vec::new(),
            reloads: ReloadStats::default(),
            workers: states
                .iter()
                .map(|&(id, state)| WorkerStatus {
                    id,
                    pid: 10 + id,
                    generation: 1,
                    state,
                    uptime_seconds: 1.0,
                    restarts: 0,
                    last_restart_reason: None,
                    restarts_by_reason: Default::default(),
                    cpu_seconds: None,
                    cpu_percent: None,
                    rss_bytes: None,
                    connections: None,
                    requests: None,
                    heartbeat_age_seconds: None,
                    agent: None,
                })
                .collect(),
        }
    }

    #[test]
    fn one_ready_worker_is_ready_and_all_needs_every_slot() {
        let half = status(&[(1, WorkerState::Ready), (2, WorkerState::Starting)], 2);
        assert!(ready(&half, false));
        assert!(!ready(&half, true));
        let full = status(&[(1, WorkerState::Ready), (2, WorkerState::Ready)], 2);
        assert!(ready(&full, true));
        let none = status(&[(1, WorkerState::Starting)], 1);
        assert!(!ready(&none, false));
        let mut stopping = full.clone();
        stopping.stopping = true;
        assert!(!ready(&stopping, false));
    }

    #[test]
    fn the_all_query_is_recognised() {
        assert!(asks_all(Some("all")));
        assert!(asks_all(Some("x=1&all=1")));
        assert!(!asks_all(Some("allx")));
        assert!(!asks_all(None));
    }
}
