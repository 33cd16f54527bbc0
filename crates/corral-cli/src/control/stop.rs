//! `corral stop [--now]`: stops the cluster and waits until its primary
//! has exited.

use std::time::Duration;

use corral::cli_support::protocol::Command;
use serde_json::json;

use crate::args::StopArgs;
use crate::display::{print, print_json};
use crate::target;

pub(crate) fn run(args: &StopArgs) -> anyhow::Result<()> {
    let cluster = &args.cluster;
    let mut client = target::connect(cluster.name.as_deref(), &cluster.common)?;
    let status = client.status()?;
    client.request(Command::Stop { now: args.now })?;
    // Draining takes up to the cluster's grace period.
    client.set_timeout(None)?;
    client.wait_closed()?;
    while process_running(status.pid) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if cluster.common.json {
        return print_json(&json!({ "name": status.name, "pid": status.pid, "stopped": true }));
    }
    print(&format!(
        "cluster {} (pid {}) stopped\n",
        status.name, status.pid
    ))?;
    Ok(())
}

/// Whether `pid` runs (a zombie, exited and not yet reaped, does not).
fn process_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}
