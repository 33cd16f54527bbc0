//! `corral ls`: the running clusters of this user, one line each.

use serde_json::json;

use crate::args::LsArgs;
use crate::display::{human_uptime, print, print_json};
use crate::target::running_clusters;

pub(crate) fn run(args: &LsArgs) -> anyhow::Result<()> {
    let clusters = running_clusters();
    if args.json {
        let list: Vec<_> = clusters
            .iter()
            .map(|(name, path, status)| {
                json!({
                    "name": name,
                    "pid": status.pid,
                    "workers_ready": status.ready_workers(),
                    "workers_desired": status.workers_desired,
                    "policy": status.policy.name(),
                    "listeners": status.listeners.iter().map(|l| l.address.to_string()).collect::<Vec<_>>(),
                    "uptime_seconds": status.uptime_seconds,
                    "control": path,
                })
            })
            .collect();
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
    print(&out)?;
    Ok(())
}
