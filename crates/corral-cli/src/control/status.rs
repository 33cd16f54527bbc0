//! `corral status`: the cluster and a table of its workers.

use corral::Status;

use crate::args::ClusterArgs;
use crate::display::{human_bytes, human_latency, human_uptime, or_dash, print, print_json};
use crate::target;

pub(crate) fn run(args: &ClusterArgs) -> anyhow::Result<()> {
    let mut client = target::connect(args.name.as_deref(), &args.common)?;
    let status = client.status()?;
    if args.common.json {
        return print_json(&status);
    }
    print(&render(&status))?;
    Ok(())
}

/// The text `corral status` prints.
pub(crate) fn render(status: &Status) -> String {
    let mut out = String::new();
    let state = if status.stopping { " (stopping)" } else { "" };
    out.push_str(&format!(
        "cluster {}{state}: primary pid {}, policy {}, up {}\n",
        corral::cli_support::escape_untrusted(&status.name),
        status.pid,
        status.policy.name(),
        human_uptime(status.uptime_seconds)
    ));
    out.push_str(&format!(
        "workers: {} ready of {} desired\n",
        status.ready_workers(),
        status.workers_desired
    ));
    for listener in &status.listeners {
        let steering = listener
            .steering
            .map(|steering| format!(", steering: {}", steering.name()))
            .unwrap_or_default();
        let counts = listener
            .connection_counts
            .map(|counts| format!(", connections counted: {}", counts.name()))
            .unwrap_or_default();
        out.push_str(&format!(
            "listening on {} ({} queued{steering}{counts})\n",
            listener.address,
            or_dash(listener.queued, |n| n.to_string())
        ));
    }
    let reloads = &status.reloads;
    let mut line = format!(
        "reloads: {} completed, {} aborted",
        reloads.completed, reloads.aborted
    );
    if reloads.in_progress {
        line.push_str(", one under way");
    }
    if let Some(last) = &reloads.last {
        let result = serde_json::to_value(last.result).unwrap_or_default();
        line.push_str(&format!(
            "; last {} {} ago",
            result.as_str().unwrap_or("?"),
            human_uptime(last.ended_seconds_ago)
        ));
        if let Some(reason) = &last.reason {
            line.push_str(&format!(
                " ({})",
                corral::cli_support::escape_untrusted(reason)
            ));
        }
    }
    if let Some(next) = &status.next_scheduled_reload {
        line.push_str(&format!(
            "; next scheduled {}",
            corral::cli_support::escape_untrusted(next)
        ));
    }
    out.push_str(&line);
    out.push('\n');
    if let Some(still) = status.draining().describe() {
        out.push_str(&format!("{still}\n"));
    }
    let environment = &status.environment;
    if environment.profile.is_some() || !environment.files.is_empty() {
        let mut line = format!(
            "environment: profile {}",
            environment.profile.as_deref().unwrap_or("(none)")
        );
        for file in &environment.files {
            line.push_str(&format!(", {}", file.display()));
        }
        line.push_str(&format!(", {} variables", environment.variables.len()));
        out.push_str(&corral::cli_support::escape_untrusted(&line));
        out.push('\n');
    }
    out.push_str(&format!(
        "\n{:>4} {:>8} {:>4} {:<8} {:>7} {:>8} {:>6} {:>8} {:>8} {:>6} {:>9} {:>6}\n",
        "ID",
        "PID",
        "GEN",
        "STATE",
        "UPTIME",
        "RESTARTS",
        "CPU%",
        "CPU",
        "MEMORY",
        "CONNS",
        "REQUESTS",
        "BEAT"
    ));
    for worker in &status.workers {
        let restarts = match worker.last_restart_reason {
            Some(reason) if worker.restarts > 0 => format!("{} {reason}", worker.restarts),
            _ => worker.restarts.to_string(),
        };
        let state = serde_json::to_value(worker.state).unwrap_or_default();
        out.push_str(&format!(
            "{:>4} {:>8} {:>4} {:<8} {:>7} {:>8} {:>6} {:>8} {:>8} {:>6} {:>9} {:>6}\n",
            worker.id,
            worker.pid,
            worker.generation,
            state.as_str().unwrap_or("?"),
            human_uptime(worker.uptime_seconds),
            restarts,
            or_dash(worker.cpu_percent, |p| format!("{p:.1}")),
            or_dash(worker.cpu_seconds, |s| format!("{s:.2}s")),
            or_dash(worker.rss_bytes, human_bytes),
            or_dash(worker.connections, |n| n.to_string()),
            or_dash(worker.requests, |n| n.to_string()),
            or_dash(worker.heartbeat_age_seconds, |s| format!("{s:.1}s")),
        ));
    }
    out.push_str(&agent_table(status));
    out
}

/// What corral's Node agent reports of Node workers, a row per worker
/// with a report; nothing when none has one.
fn agent_table(status: &Status) -> String {
    let reporting = status
        .workers
        .iter()
        .filter_map(|worker| Some((worker, worker.agent.as_ref()?)));
    let mut out = String::new();
    for (worker, agent) in reporting {
        if out.is_empty() {
            out.push_str(&format!(
                "\nrequests (Node agent):\n{:>4} {:>8} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
                "ID", "PID", "REQUESTS", "IN-FLIGHT", "P50", "P95", "P99", "LAG", "HEAP"
            ));
        }
        out.push_str(&format!(
            "{:>4} {:>8} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            worker.id,
            worker.pid,
            worker.requests.unwrap_or(0),
            agent.requests_in_flight,
            or_dash(agent.latency_p50_seconds, human_latency),
            or_dash(agent.latency_p95_seconds, human_latency),
            or_dash(agent.latency_p99_seconds, human_latency),
            human_latency(agent.event_loop_lag_seconds),
            human_bytes(agent.heap_used_bytes),
        ));
    }
    out
}
