//! The library face, through its examples: the same executable re-run as
//! each worker, serving real HTTP.

use std::collections::HashMap;

use corral_testkit::{ClusterProcess, Load, PATIENCE, Signal, example_path, hello, send_signal};

fn example(name: &str, args: &[&str]) -> ClusterProcess {
    ClusterProcess::start(example_path(name), args)
}

fn answers(port: u16, workers: usize) -> HashMap<u32, u32> {
    let mut seen = HashMap::new();
    for _ in 0..500 {
        let answer = hello(port);
        seen.insert(answer.id, answer.pid);
        if seen.len() == workers {
            break;
        }
    }
    seen
}

#[test]
fn the_hello_example_serves_with_every_worker() {
    let mut cluster = example("hello", &["--workers", "3", "--listen", "127.0.0.1:0"]);
    let seen = answers(cluster.port(), 3);
    let mut ids: Vec<u32> = seen.keys().copied().collect();
    ids.sort();
    assert_eq!(ids, [1, 2, 3], "{seen:?}");
    cluster.signal(Signal::TERM);
    let status = cluster
        .wait_exit(PATIENCE)
        .expect("the example exits on SIGTERM");
    assert!(status.success(), "{status:?}:\n{}", cluster.output());
}

#[test]
fn the_axum_example_serves_replaces_and_drains() {
    for policy in ["reuseport", "shared"] {
        let mut cluster = example(
            "axum",
            &["-w", "2", "-l", "127.0.0.1:0", "--policy", policy],
        );
        let port = cluster.port();
        let seen = answers(port, 2);
        assert_eq!(seen.len(), 2, "{seen:?}");
        send_signal(seen[&2], Signal::KILL);
        cluster.expect_line("worker 2 ready (pid");
        let replaced = answers(port, 2);
        assert_ne!(replaced[&2], seen[&2], "worker 2 has a new process");
        cluster.signal(Signal::TERM);
        let status = cluster
            .wait_exit(PATIENCE)
            .expect("the example exits on SIGTERM");
        assert!(status.success(), "{status:?}:\n{}", cluster.output());
    }
}

#[test]
fn the_messages_example_counts_reports_and_broadcasts_config_changes() {
    let cluster = example("messages", &["-w", "2", "-l", "127.0.0.1:0"]);
    let port = cluster.port();
    for _ in 0..10 {
        corral_testkit::http_get(port, "/").expect("the example answers");
    }
    cluster.expect_line("primary: 10 requests served; config version 1 sent to 2 workers");
    cluster.expect_line("[worker 1] worker 1: config changed to version 1");
    cluster.expect_line("[worker 2] worker 2: config changed to version 1");
    let answer = corral_testkit::http_get(port, "/").unwrap();
    assert!(answer.body.ends_with("config version 1\n"), "{answer:?}");
}

/// Five rolling reloads of a library cluster under load (a new connection
/// per request): the worker written as the README shows (`axum::serve` or
/// a hyper loop with `with_graceful_shutdown`/`stopped()`) loses nothing.
fn reloads_lose_no_request(name: &str, policy: &str) {
    let cluster = example(
        name,
        &[
            "-w",
            "2",
            "-l",
            "127.0.0.1:0",
            "--policy",
            policy,
            "--grace",
            "5",
        ],
    );
    let port = cluster.port();
    cluster.expect_line("worker 1 ready");
    cluster.expect_line("worker 2 ready");
    let load = Load::start(port, 4);
    for round in 1..=5 {
        load.wait_for_more(50);
        cluster.signal(Signal::HUP);
        cluster
            .wait_for_lines("rolling reload complete", round, PATIENCE)
            .unwrap_or_else(|| panic!("reload {round} did not complete:\n{}", cluster.output()));
    }
    load.wait_for_more(50);
    let totals = load.stop();
    eprintln!("{name} {policy}: {totals:?} over 5 reloads");
    assert_eq!(
        (totals.failed, totals.refused),
        (0, 0),
        "{name} {policy}: requests lost during the reloads"
    );
}

#[test]
fn the_axum_example_loses_no_request_over_five_reloads() {
    reloads_lose_no_request("axum", "reuseport");
    reloads_lose_no_request("axum", "round-robin");
}

#[test]
fn the_hello_example_loses_no_request_over_five_reloads() {
    reloads_lose_no_request("hello", "reuseport");
    reloads_lose_no_request("hello", "round-robin");
}

#[test]
fn a_worker_flooded_both_ways_keeps_its_heartbeats_and_still_stops() {
    // Every queue full: the primary's to each worker and each worker's
    // inbox (never read) for good; each worker's outgoing queue when it
    // says it is ready. corral's own words must still pass.
    let mut cluster = example(
        "flood",
        &[
            "-w",
            "2",
            "-l",
            "127.0.0.1:0",
            "--watchdog",
            "1",
            "--grace",
            "5",
        ],
    );
    let port = cluster.port();
    cluster.expect_line("worker 1 ready");
    cluster.expect_line("worker 2 ready");
    // Three watchdog periods with every queue full: a heartbeat held back
    // by user messages would get its worker killed well within them.
    let hung = cluster.wait_for_line("sent no heartbeat", std::time::Duration::from_secs(3));
    assert_eq!(hung, None, "{}", cluster.output());
    assert_eq!(answers(port, 2).len(), 2, "both workers serve");
    cluster.signal(Signal::TERM);
    let status = cluster.wait_exit(PATIENCE).expect("the cluster stops");
    assert!(status.success(), "{status:?}:\n{}", cluster.output());
    let output = cluster.output();
    assert_eq!(
        output.matches("exited with code 0 as asked").count(),
        2,
        "both workers stopped when asked, none was killed:\n{output}"
    );
}
