//! corral's Node agent (docs/node.md, "Keep-alive and reloads"): keep-alive
//! clients that never retry lose no request across 5 rolling reloads of a
//! plain `http` app and an Express app, under reuseport and round-robin.

use std::process::Command;

use corral_testkit::{
    ClusterProcess, Load, LoadTotals, Mark, PATIENCE, Signal, corral_path, node_with,
};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/node");

/// Node (and for Express, the fixtures' node_modules) present, else a
/// line saying what to install.
fn have_node(needs_express: bool) -> bool {
    node_with(if needs_express { &["express"] } else { &[] })
}

/// 8 keep-alive clients against `app` under `policy`, through 5 rolling
/// reloads; the totals.
fn five_reloads(app: &str, policy: &str) -> (LoadTotals, Vec<String>) {
    let mut command = Command::new(corral_path());
    command
        .args(["run", "-w", "2", "--grace", "5", "--policy", policy])
        .args(["--node-agent", "on", "--"])
        .arg("node")
        .arg(format!("{FIXTURES}/{app}"))
        .env("PORT", "0");
    let mut cluster = ClusterProcess::spawn(command);
    cluster.expect_event(Mark::START, "ready", Some(1));
    cluster.expect_event(Mark::START, "ready", Some(2));
    let port = cluster.bound_port();
    let load = Load::keep_alive(port, 8);
    load.wait_for_more(50);
    for _ in 0..5 {
        let reload = cluster.mark();
        cluster.signal(Signal::HUP);
        cluster.expect_event_where(reload, "a rolling reload of 2 workers completes", |event| {
            event.is("reload_completed") && event.has("replaced", 2)
        });
        load.wait_for_more(20);
    }
    let failures = load.failures();
    let totals = load.stop();
    cluster.signal(Signal::TERM);
    let status = cluster.wait_exit(PATIENCE).expect("the cluster stops");
    assert!(status.success(), "{status:?}\n{}", cluster.output());
    (totals, failures)
}

/// No request lost: failed, refused, or sent again after the server
/// closed a kept connection without answering (a client that does not
/// retry would have lost it).
fn assert_none_lost(app: &str, policy: &str) {
    let (totals, failures) = five_reloads(app, policy);
    assert_eq!(
        (totals.failed, totals.refused, totals.reconnected),
        (0, 0, 0),
        "{app} under {policy}: {totals:?} {failures:?}"
    );
}

#[test]
fn an_http_app_under_reuseport_loses_no_keep_alive_request_across_5_reloads() {
    if have_node(false) {
        assert_none_lost("keepalive_http.js", "reuseport");
    }
}

#[test]
fn an_http_app_under_round_robin_loses_no_keep_alive_request_across_5_reloads() {
    if have_node(false) {
        assert_none_lost("keepalive_http.js", "round-robin");
    }
}

#[test]
fn an_express_app_under_reuseport_loses_no_keep_alive_request_across_5_reloads() {
    if have_node(true) {
        assert_none_lost("express_app.js", "reuseport");
    }
}

#[test]
fn an_express_app_under_round_robin_loses_no_keep_alive_request_across_5_reloads() {
    if have_node(true) {
        assert_none_lost("express_app.js", "round-robin");
    }
}
