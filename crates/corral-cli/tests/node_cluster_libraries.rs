//! Node libraries that need code in Node's own primary, which under corral
//! never runs (docs/node.md): `@socket.io/cluster-adapter` (corral relays
//! its messages as `setupPrimary()` would) and prom-client's
//! `AggregatorRegistry` (corral asks every worker for its metrics at a
//! scrape of `--metrics`). Real Node, real packages, real clients.

use std::process::Command;
use std::time::Duration;

use corral_testkit::{
    ClusterProcess, Mark, PATIENCE, Signal, corral_path, free_port, http_get, node_available,
    node_with, promtool, sample, scrape, scrape_path,
};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/node");

/// `corral run -w 2 ARGS -- node FIXTURES/app` with `env`, once both
/// workers are ready.
fn start_two(app: &str, args: &[&str], env: &[(&str, &str)]) -> ClusterProcess {
    let mut command = Command::new(corral_path());
    command
        .args(["run", "-w", "2"])
        .args(args)
        .arg("--")
        .arg("node")
        .arg(format!("{FIXTURES}/{app}"))
        .env("PORT", "0")
        .envs(env.iter().copied());
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
    if !node_with(&["@socket.io/cluster-adapter"]) {
        return;
    }
    let cluster = start_two("socketio_chat.js", &[], &[]);
    let port = cluster.bound_port().to_string();
    // 16 clients under reuseport: both workers are reached but once in
    // 2^15 runs; the clients say which they reached.
    let result = node_json("socketio_chat_clients.js", &[&port, "16"]);
    assert_eq!(result["workers"], serde_json::json!(["1", "2"]), "{result}");
    assert_eq!(result["heard"], 16, "{result}");
    let census = result["census"].as_array().expect("a census");
    assert_eq!(census.len(), 16, "{result}");
    for worker in ["1", "2"] {
        assert!(census.iter().any(|w| w == worker), "{result}");
    }
    stop(cluster);
}

#[test]
fn a_frozen_worker_does_not_hold_socketio_broadcasts_to_the_others() {
    if !node_with(&["@socket.io/cluster-adapter"]) {
        return;
    }
    let mut command = Command::new(corral_path());
    command
        .args(["run", "-w", "3", "--grace", "1", "--", "node"])
        .arg(format!("{FIXTURES}/socketio_chat.js"))
        .env("PORT", "0");
    let mut cluster = ClusterProcess::spawn(command);
    for worker in 1..=3 {
        cluster.expect_event(Mark::START, "ready", Some(worker));
    }
    let port = cluster.bound_port().to_string();
    // Worker 3 stops reading its channel; 200 shouts of 16 KiB (more than
    // its socket buffer holds) are queued for it, in corral's outbox.
    let result = node_json("socketio_chat_clients.js", &[&port, "24", "freeze", "3"]);
    assert_eq!(result["shouts"], 200, "{result}");
    assert!(result["heard_all"].as_u64() > Some(0), "{result}");
    cluster.signal(Signal::TERM);
    // Worker 3 spins: it is killed at the grace's end.
    cluster.wait_exit(PATIENCE).expect("the cluster stops");
}

/// The budget itself is the relay's unit test: whether a flood goes over
/// it depends on how fast the primary reads (a debug build on a loaded
/// machine reads fewer than 10,000 a second).
#[test]
fn a_worker_flooding_as_the_socketio_adapter_leaves_the_primary_serving() {
    if !node_available() {
        return;
    }
    let cluster = start_two("socketio_flood.js", &["--on-message", "log"], &[]);
    // The worker that gets this request floods, once both are ready.
    let response = http_get(cluster.bound_port(), "/").expect("a worker answers");
    assert_eq!(response.status, 200);
    // One message of 5 MiB, then 20,000, then a word.
    let patience = Duration::from_secs(60);
    for line in [
        "socket.io adapter message, over the 4194304-byte limit",
        "flood sent",
    ] {
        let said = cluster.wait_for_line(line, patience);
        assert!(said.is_some(), "{line}: {}", cluster.output());
    }
    let response = http_get(cluster.bound_port(), "/").expect("the workers still serve");
    assert_eq!(response.status, 200);
    stop(cluster);
}

/// What `promtool check metrics` says about `text` besides its lint of
/// three of prom-client's own default gauges, named `…_total` (it says the
/// same of a scrape of the app alone); `None` when promtool is missing.
fn promtool_complaints(text: &str) -> Option<Vec<String>> {
    let (_, said) = promtool(text)?;
    let prom_clients_own = |line: &str| {
        line.starts_with("nodejs_active_")
            && line.ends_with("non-counter metrics should not have \"_total\" suffix")
    };
    let rest = said
        .lines()
        .filter(|line| !line.trim().is_empty() && !prom_clients_own(line))
        .map(str::to_string)
        .collect();
    Some(rest)
}

#[test]
fn prom_client_counters_are_summed_over_workers_beside_corrals_own_series() {
    if !node_with(&["prom-client"]) {
        return;
    }
    let metrics = free_port();
    let address = format!("127.0.0.1:{metrics}");
    let cluster = start_two("prom_app.js", &["--metrics", &address], &[]);
    let port = cluster.bound_port();
    let requests = 40;
    let mut by_worker = std::collections::BTreeMap::new();
    for _ in 0..requests {
        let response = http_get(port, "/").expect("the app answers");
        assert_eq!(response.status, 200);
        *by_worker
            .entry(response.body.trim().to_string())
            .or_insert(0) += 1;
    }
    // Under reuseport both serve some (all 40 on one: once in 2^39 runs),
    // so the total below is a sum over workers.
    assert_eq!(by_worker.len(), 2, "{by_worker:?}");
    let text = scrape(metrics);
    assert_eq!(
        sample(&text, "app_requests_total"),
        Some(f64::from(requests)),
        "{text}"
    );
    assert_eq!(
        sample(&text, "corral_workers{state=\"ready\"}"),
        Some(2.0),
        "{text}"
    );
    // prom-client's default metrics, merged by their own aggregators.
    assert!(
        text.contains("# TYPE nodejs_eventloop_lag_seconds gauge"),
        "{text}"
    );
    assert!(
        !text.contains("process_start_time_seconds"),
        "omitted: {text}"
    );
    // A format error would be a complaint too.
    if let Some(complaints) = promtool_complaints(&text) {
        assert!(
            complaints.is_empty(),
            "promtool check metrics: {complaints:?}\n{text}"
        );
    }
    let app = scrape_path(metrics, "/metrics/app");
    assert_eq!(
        sample(&app, "app_requests_total"),
        Some(f64::from(requests)),
        "{app}"
    );
    assert!(!app.contains("corral_"), "{app}");
    stop(cluster);
}

#[test]
fn a_worker_that_never_answers_is_left_out_of_the_scrape() {
    if !node_with(&["prom-client"]) {
        return;
    }
    let metrics = free_port();
    let address = format!("127.0.0.1:{metrics}");
    let args = ["--metrics", &address, "--grace", "1"];
    let mut cluster = start_two("prom_app.js", &args, &[("SILENT_WORKER", "2")]);
    cluster.expect_line("worker stops its event loop");
    let text = scrape(metrics);
    // Worker 1's metrics, and corral's own.
    assert_eq!(sample(&text, "app_requests_total"), Some(0.0), "{text}");
    assert!(text.contains("corral_workers"), "{text}");
    cluster.expect_line("worker 2 did not send its app metrics");
    cluster.signal(Signal::TERM);
    // Worker 2 spins: it is killed at the grace's end.
    cluster.wait_exit(PATIENCE).expect("the cluster stops");
}
