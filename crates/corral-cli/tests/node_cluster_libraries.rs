//! Node libraries that need code in Node's own primary, which under corral
//! never runs (docs/node.md): `@socket.io/cluster-adapter` (corral relays
//! its messages as `setupPrimary()` would) and prom-client's
//! `AggregatorRegistry` (corral asks every worker for its metrics at a
//! scrape of `--metrics`). Real Node, real packages, real clients.

use std::process::Command;

use corral_testkit::{ClusterProcess, Mark, PATIENCE, Signal, corral_path, node_available};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/node");

/// Node and the fixtures' `package` installed, else a line saying what to
/// install.
fn have_node_with(package: &str) -> bool {
    if !node_available() {
        return false;
    }
    if !std::path::Path::new(FIXTURES)
        .join("node_modules")
        .join(package)
        .is_dir()
    {
        eprintln!(
            "{package} is not installed for the fixtures: skipping; run \
             `npm ci --prefix crates/corral-cli/tests/fixtures/node`"
        );
        return false;
    }
    true
}

/// `corral run -w 2 ARGS -- node FIXTURES/app`, once both workers are
/// ready.
fn start_two(app: &str, args: &[&str]) -> ClusterProcess {
    let mut command = Command::new(corral_path());
    command
        .args(["run", "-w", "2"])
        .args(args)
        .arg("--")
        .arg("node")
        .arg(format!("{FIXTURES}/{app}"))
        .env("PORT", "0");
    let cluster = ClusterProcess::spawn(command);
    cluster.expect_event(Mark::START, "ready", Some(1));
    cluster.expect_event(Mark::START, "ready", Some(2));
    cluster
}

fn stop(mut cluster: ClusterProcess) {
    cluster.signal(Signal::TERM);
    let status = cluster.wait_exit(PATIENCE).expect("the cluster stops");
    assert!(status.success(), "{status:?}\n{}", cluster.output());
}

/// Runs the fixture `script` with node and `args`; its stdout's JSON.
fn node_json(script: &str, args: &[&str]) -> serde_json::Value {
    let output = Command::new("node")
        .arg(format!("{FIXTURES}/{script}"))
        .args(args)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|err| {
        panic!(
            "{script}: {err}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[test]
fn a_socketio_broadcast_reaches_clients_on_every_worker_and_fetch_sockets_sees_them_all() {
    if !have_node_with("@socket.io/cluster-adapter") {
        return;
    }
    let cluster = start_two("socketio_chat.js", &[]);
    let port = cluster.bound_port().to_string();
    // 16 clients under reuseport: both workers are reached but once in
    // 2^15 runs; the clients say which they reached.
    let result = node_json("socketio_clients.js", &[&port, "16"]);
    assert_eq!(result["workers"], serde_json::json!(["1", "2"]), "{result}");
    assert_eq!(result["heard"], 16, "{result}");
    let census = result["census"].as_array().expect("a census");
    assert_eq!(census.len(), 16, "{result}");
    for worker in ["1", "2"] {
        assert!(census.iter().any(|w| w == worker), "{result}");
    }
    stop(cluster);
}
