//! The library face, through its examples: the same executable re-run as
//! each worker, serving real HTTP.

use std::collections::HashMap;

use std::time::Duration;

use corral_testkit::{ClusterBuilder, Load, Mark, PATIENCE, Signal, hello, send_signal};

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
    let mut cluster = ClusterBuilder::example("hello").workers(3).start();
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
        let mut cluster = ClusterBuilder::example("axum").policy(policy).start();
        let port = cluster.port();
        let seen = answers(port, 2);
        assert_eq!(seen.len(), 2, "{seen:?}");
        // Only what comes after the kill: the startup's ready must not count.
        let killed = cluster.mark();
        send_signal(seen[&2], Signal::KILL);
        let ready = cluster.expect_event(killed, "ready", Some(2));
        assert_ne!(ready.pid, Some(seen[&2]), "{ready:?}");
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
    let cluster = ClusterBuilder::example("messages").start();
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
    let cluster = ClusterBuilder::example(name)
        .policy(policy)
        .args(&["--grace", "5"])
        .start();
    let load = Load::start(cluster.port(), 4);
    for _ in 1..=5 {
        load.wait_for_more(50);
        let mark = cluster.mark();
        cluster.signal(Signal::HUP);
        cluster.expect_event(mark, "reload_completed", None);
    }
    load.wait_for_more(50);
    load.stop()
        .assert_none_lost(&format!("{name} {policy}: 5 rolling reloads"));
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
    let mut cluster = ClusterBuilder::example("flood")
        .args(&["--watchdog", "1", "--grace", "5"])
        .start();
    let port = cluster.port();
    // Three watchdog periods with every queue full: a heartbeat held back
    // by user messages would get its worker killed well within them.
    let hung = cluster.wait_for_event(Mark::START, Duration::from_secs(3), |event| {
        event.is("hung")
    });
    assert_eq!(hung, None, "{}", cluster.output());
    assert_eq!(answers(port, 2).len(), 2, "both workers serve");
    let stop = cluster.mark();
    cluster.signal(Signal::TERM);
    let status = cluster.wait_exit(PATIENCE).expect("the cluster stops");
    assert!(status.success(), "{status:?}:\n{}", cluster.output());
    let exits = cluster.expect_events(stop, "exit", None, 2);
    for exit in exits {
        assert_eq!(exit.field("requested"), Some(&true.into()), "{exit:?}");
        assert_eq!(
            exit.field("code"),
            Some(&0.into()),
            "stopped, not killed: {exit:?}"
        );
    }
}

#[test]
fn the_primary_serves_its_status_from_primary_status() {
    let cluster = ClusterBuilder::example("status").start();
    let line = cluster.expect_line("out|status on ");
    let address = line.rsplit(' ').next().unwrap().to_string();
    let port: u16 = address.rsplit(':').next().unwrap().parse().unwrap();
    let response = corral_testkit::http_get(port, "/status").expect("the status answers");
    assert_eq!(response.status, 200, "{response:?}");
    let status: serde_json::Value = serde_json::from_str(&response.body).expect("JSON");
    assert_eq!(status["name"], "status");
    assert_eq!(status["pid"], cluster.pid());
    let mut pids: Vec<u64> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|worker| {
            assert_eq!(worker["state"], "ready", "{worker}");
            worker["pid"].as_u64().unwrap()
        })
        .collect();
    pids.sort();
    let mut live: Vec<u64> = cluster.worker_pids().into_iter().map(u64::from).collect();
    live.sort();
    assert_eq!(pids, live);
    assert_eq!(
        status["listeners"][0]["address"],
        format!("127.0.0.1:{}", cluster.port())
    );
}
