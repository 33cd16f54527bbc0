//! `corral stop [--now] [NAME | --all]`: stops the cluster (or every
//! running cluster of this user) and waits until its primary has exited.

use std::time::Duration;

use corral::cli_support::protocol::Command;
use serde_json::json;

use crate::args::StopArgs;
use crate::display::{print, print_json};
use crate::target;

use super::process_running;

pub(crate) fn run(args: &StopArgs) -> anyhow::Result<()> {
    let cluster = &args.cluster;
    if args.all {
        let running = target::running_clusters();
        if running.is_empty() && !cluster.common.json {
            print("no cluster of yours is running\n")?;
        }
        let mut stopped = Vec::new();
        for (name, path, _) in running {
            let client = target::connect_to(&path, Some(&name))?;
            stopped.push(stop(client, args.now, cluster.common.json)?);
        }
        if cluster.common.json {
            return print_json(&stopped);
        }
        return Ok(());
    }
    let client = target::connect(cluster.name.as_deref(), &cluster.common)?;
    let stopped = stop(client, args.now, cluster.common.json)?;
    if cluster.common.json {
        return print_json(&stopped);
    }
    Ok(())
}

/// Stops one cluster, prints (in text) that it stopped, and returns it in JSON.
fn stop(
    mut client: corral::cli_support::client::Client,
    now: bool,
    json: bool,
) -> anyhow::Result<serde_json::Value> {
    let status = client.status()?;
    client.request(Command::Stop { now })?;
    // Draining takes up to the cluster's grace period.
    client.set_timeout(None)?;
    client.wait_closed()?;
    while process_running(status.pid) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !json {
        print(&format!(
            "cluster {} (pid {}) stopped\n",
            status.name, status.pid
        ))?;
    }
    Ok(json!({ "name": status.name, "pid": status.pid, "stopped": true }))
}
