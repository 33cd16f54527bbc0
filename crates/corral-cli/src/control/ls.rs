//! `corral ls`: the running clusters of this user, one line each, then the
//! background clusters (`corral start`) that stopped or failed, until
//! `corral delete NAME` forgets them.

use serde_json::json;

use crate::args::LsArgs;
use crate::background::{Recorded, recorded};
use crate::display::{human_uptime, print, print_json, timestamp};
use crate::target::running_clusters;

pub(crate) fn run(args: &LsArgs) -> anyhow::Result<()> {
    let clusters = running_clusters();
    let mut background = recorded();
    let log_of = |name: &str| {
        background
            .iter()
            .find(|r| r.record.name == name)
            .map(|r| r.record.log.clone())
    };
    let logs: Vec<_> = clusters.iter().map(|(name, _, _)| log_of(name)).collect();
    // Only the recorded clusters whose primary does not answer.
    background.retain(|r| !clusters.iter().any(|(name, _, _)| *name == r.record.name));
    if args.json {
        let mut list: Vec<_> = clusters
            .iter()
            .zip(&logs)
            .map(|((name, path, status), log)| {
                json!({
                    "name": name,
                    "state": "running",
                    "pid": status.pid,
                    "workers_ready": status.ready_workers(),
                    "workers_desired": status.workers_desired,
                    "policy": status.policy.name(),
                    "listeners": status.listeners.iter().map(|l| l.address.to_string()).collect::<Vec<_>>(),
                    "uptime_seconds": status.uptime_seconds,
                    "control": path,
                    "log": log,
                })
            })
            .collect();
        list.extend(background.iter().map(|r| {
            json!({
                "name": r.record.name,
                "state": r.state(),
                "pid": r.record.pid,
                "reason": r.reason(),
                "exit_code": r.exit.as_ref().map(|e| e.code),
                "ended_at": r.ended_at(),
                "log": r.record.log,
            })
        }));
        return print_json(&list);
    }
    let mut out = format!(
        "{:<20} {:>8} {:>9} {:<18} {:>8}  {}\n",
        "NAME", "PID", "WORKERS", "POLICY", "UPTIME", "LISTEN"
    );
    for (name, _, status) in &clusters {
        let listen: Vec<String> = status
            .listeners
            .iter()
            .map(|l| l.address.to_string())
            .collect();
        out.push_str(&format!(
            "{:<20} {:>8} {:>9} {:<18} {:>8}  {}\n",
            name,
            status.pid,
            format!("{}/{}", status.ready_workers(), status.workers_desired),
            status.policy.name(),
            human_uptime(status.uptime_seconds),
            listen.join(", ")
        ));
    }
    if !background.is_empty() {
        out.push_str("\nNot running (background clusters; `corral delete NAME` forgets one):\n");
        for r in &background {
            out.push_str(&format!("{}\n", describe(r)));
        }
    }
    print(&out)?;
    Ok(())
}

/// `api  stopped  2026-12-07T19:14:14.000Z  log: PATH`, and why it failed.
fn describe(r: &Recorded) -> String {
    let when = r
        .ended_at()
        .map(timestamp)
        .unwrap_or_else(|| "-".to_string());
    let mut line = format!(
        "{:<20} {:<8} {}  log: {}",
        r.record.name,
        r.state(),
        when,
        r.record.log.display()
    );
    if let Some(reason) = r.reason() {
        line.push_str(&format!(
            "\n{:<20} {}",
            "",
            corral::cli_support::escape_untrusted(&reason)
        ));
    }
    line
}
