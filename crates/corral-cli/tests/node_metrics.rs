//! The Node agent's request metrics (docs/node.md, "Request metrics"): a
//! plain `http` app and an Express app under `corral run -w 2 --metrics`,
//! N requests of which some are slow; the counts, latency quantiles and
//! heap in `status --json`, the text of `corral status`, the per-worker
//! histogram in a `/metrics` scrape that `promtool check metrics` passes.
//! And a worker that sends malformed, oversized and flooding reports: the
//! primary keeps serving, warns within its limits, and does not grow. And
//! `--max-requests` recycles a Node worker by the agent's count.

use std::process::Command;
use std::time::Duration;

use corral_testkit::{
    ClusterProcess, Mark, PATIENCE, Signal, free_port, http_get, node_with, promtool, resident_kib,
    sample, scrape,
};
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/node");

/// Requests sent: [`SLOW`] of them to `/slow` (60 ms), the rest to `/`.
const REQUESTS: u64 = 200;
const SLOW: u64 = 40;

/// Node (and for Express, the fixtures' node_modules) present, else a
/// line saying what to install.
fn have_node(needs_express: bool) -> bool {
    node_with(if needs_express { &["express"] } else { &[] })
}

/// `app` under `corral run -w WORKERS --metrics --on-message broadcast`
/// (a user message would be logged and relayed), its workers ready; the
/// cluster, its port and the metrics port.
fn start(app: &str, workers: usize, env: &[(&str, &str)]) -> (ClusterProcess, u16, u16) {
    let metrics = free_port();
    let mut command = Command::new(corral_testkit::corral_path());
    command
        .args(["run", "-w", &workers.to_string(), "--grace", "5"])
        .args(["--metrics", &format!("127.0.0.1:{metrics}")])
        .args(["--on-message", "broadcast"])
        .args(["--", "node"])
        .arg(format!("{FIXTURES}/{app}"))
        .env("PORT", "0")
        .envs(env.iter().copied());
    let cluster = ClusterProcess::spawn(command);
    for id in 1..=workers as u32 {
        cluster.expect_event(Mark::START, "ready", Some(id));
    }
    let port = cluster.bound_port();
    (cluster, port, metrics)
}

/// [`REQUESTS`] requests, [`SLOW`] of them slow, from 4 clients.
fn send_requests(port: u16) {
    let clients: Vec<_> = (0..4u64)
        .map(|client| {
            std::thread::spawn(move || {
                for n in (client..REQUESTS).step_by(4) {
                    let path = if n % (REQUESTS / SLOW) == 0 {
                        "/slow"
                    } else {
                        "/"
                    };
                    let response = http_get(port, path).expect("the app answers");
                    assert_eq!(response.status, 200, "{response:?}");
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a client thread");
    }
}

fn agent_requests(status: &Value) -> u64 {
    workers(status)
        .iter()
        .filter(|worker| worker["agent"].is_object())
        .map(|worker| worker["requests"].as_u64().unwrap_or(0))
        .sum()
}

fn workers(status: &Value) -> &Vec<Value> {
    status["workers"].as_array().expect("a workers list")
}

fn counts_every_request(app: &str) {
    let (mut cluster, port, metrics) = start(app, 2, &[]);
    send_requests(port);
    let status = cluster.await_status("the agents report every request", |status| {
        agent_requests(status) == REQUESTS
    });
    let mut over_50ms = 0;
    for worker in workers(&status) {
        let agent = &worker["agent"];
        assert!(agent["heap_used_bytes"].as_u64().unwrap() > 0, "{worker:#}");
        assert_eq!(agent["requests_in_flight"], 0, "{worker:#}");
        let latency = &agent["latency"];
        let count = latency["count"].as_u64().unwrap();
        assert_eq!(Some(count), worker["requests"].as_u64(), "{worker:#}");
        // Bucket 5 is "at most 50 ms" (AGENT_LATENCY_BUCKETS).
        let slow = count - latency["cumulative"][5].as_u64().unwrap();
        over_50ms += slow;
        // More than 5% of its requests over 50 ms: so is its p95.
        if slow * 20 > count {
            let p95 = agent["latency_p95_seconds"].as_f64().unwrap();
            assert!(p95 >= 0.05, "p95 {p95}: {worker:#}");
        }
    }
    // Every /slow request waited 60 ms (fast ones may take 50, on a busy machine).
    assert!(
        over_50ms >= SLOW,
        "{over_50ms} requests over 50 ms: {status:#}"
    );

    let text = scrape(metrics);
    match promtool(&text) {
        Some((passed, said)) => assert!(passed, "promtool check metrics: {said}\n{text}"),
        None => eprintln!("promtool is not installed (apt-get install prometheus): not run"),
    }
    let total = |series: &str| -> f64 {
        ["1", "2"]
            .iter()
            .filter_map(|id| sample(&text, &format!("{series}{{worker=\"{id}\"}}")))
            .sum()
    };
    assert_eq!(
        total("corral_worker_request_duration_seconds_count"),
        REQUESTS as f64,
        "{text}"
    );
    assert_eq!(
        total("corral_worker_requests_total"),
        REQUESTS as f64,
        "{text}"
    );
    assert!(total("corral_worker_heap_used_bytes") > 0.0, "{text}");
    assert!(
        text.contains("corral_worker_request_duration_seconds_bucket{le=\"0.05\",worker=\"1\"}"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE corral_worker_event_loop_lag_seconds gauge"),
        "{text}"
    );

    let shown = cluster.control(&["status"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("requests (Node agent):"), "{shown}");
    assert!(shown.contains("P95") && shown.contains("HEAP"), "{shown}");

    // The reports are Node's own messages: never logged as the app's,
    // so never relayed either.
    let output = cluster.output();
    assert!(!output.contains("message from worker"), "{output}");
    cluster.signal(Signal::TERM);
    let exit = cluster.wait_exit(PATIENCE).expect("the cluster stops");
    assert!(exit.success(), "{exit:?}\n{output}");
}

#[test]
fn an_http_app_s_requests_latency_and_heap_are_in_status_and_metrics() {
    if have_node(false) {
        counts_every_request("metrics_http.js");
    }
}

#[test]
fn an_express_app_s_requests_latency_and_heap_are_in_status_and_metrics() {
    if have_node(true) {
        counts_every_request("metrics_express.js");
    }
}

#[test]
fn a_worker_flooding_bad_reports_costs_the_primary_nothing_lasting() {
    if !have_node(false) {
        return;
    }
    let (mut cluster, port, _) = start("hostile_reports.js", 1, &[]);
    cluster.expect_line("flooding");
    std::thread::sleep(Duration::from_secs(1));
    let primary = cluster.pid();
    let before = resident_kib(primary).expect("the primary's memory");
    let done = cluster
        .wait_for_line("flood done", PATIENCE)
        .expect("the worker floods, then says so");
    let after = resident_kib(primary).expect("the primary is alive");
    assert!(
        after < before + 8 * 1024,
        "the primary grew from {before} KiB to {after} KiB ({done})"
    );
    eprintln!("primary resident memory: {before} KiB, then {after} KiB after {done}");
    // It still answers, and so does the worker.
    cluster.status_json();
    let response = http_get(port, "/").expect("the worker still serves");
    assert_eq!(response.body, "still here\n");

    let output = cluster.output();
    let limited: Vec<&str> = output
        .lines()
        .filter(|line| line.contains("metrics reports a second"))
        .collect();
    assert!(!limited.is_empty(), "no warning about the flood:\n{output}");
    assert!(limited.len() <= 10, "the warning is not limited:\n{output}");
    assert!(output.contains("a malformed report"), "{output}");
    assert!(
        !output.lines().any(|line| line.starts_with("INFO forged")),
        "{output}"
    );
    cluster.signal(Signal::TERM);
    let exit = cluster.wait_exit(PATIENCE).expect("the cluster stops");
    assert!(exit.success(), "{exit:?}\n{output}");
}

#[test]
fn max_requests_recycles_a_node_worker_by_the_agent_s_count() {
    if !have_node(false) {
        return;
    }
    let mut command = Command::new(corral_testkit::corral_path());
    command
        .args([
            "run",
            "-w",
            "1",
            "--max-requests",
            "20",
            "--max-requests-jitter",
            "0",
        ])
        .args(["--", "node"])
        .arg(format!("{FIXTURES}/metrics_http.js"))
        .env("PORT", "0");
    let mut cluster = ClusterProcess::spawn(command);
    cluster.expect_event(Mark::START, "ready", Some(1));
    let port = cluster.bound_port();
    for _ in 0..25 {
        let response = http_get(port, "/").expect("the app answers");
        assert_eq!(response.status, 200, "{response:?}");
    }
    let over = cluster.expect_event(Mark::START, "recycled", Some(1));
    assert!(
        over.has("reason", "requests") && over.number("limit") == Some(20),
        "{over:?}"
    );
    cluster.signal(Signal::TERM);
    cluster.wait_exit(PATIENCE).expect("the cluster stops");
}
