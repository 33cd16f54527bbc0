//! Rolling reload (SIGHUP): every worker replaced, one at a time, each
//! replacement ready before the worker it replaces stops, under load.

use std::collections::HashSet;
use std::path::PathBuf;

use corral_testkit::{
    ClusterProcess, Load, LoadTotals, PATIENCE, Signal, hello, http_get, process_alive, wait_until,
};

mod common;

use common::two_ready_workers;

const CORRAL: &str = env!("CARGO_BIN_EXE_corral");
const ENV_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/env_server.py");

fn reloads_under_load_lose_no_request(policy: &str) {
    let (cluster, port) = two_ready_workers(policy);
    let before: HashSet<u32> = cluster.worker_pids().into_iter().collect();
    let load = Load::start(port, 1);
    for round in 1..=5 {
        load.wait_for_more(20);
        cluster.signal(Signal::HUP);
        cluster
            .wait_for_lines(
                "rolling reload complete: 2 workers replaced",
                round,
                PATIENCE,
            )
            .unwrap_or_else(|| panic!("reload {round} did not complete:\n{}", cluster.output()));
    }
    load.wait_for_more(20);
    let LoadTotals {
        succeeded,
        failed,
        refused,
    } = load.stop();
    assert_eq!(refused, 0);
    eprintln!("{policy}: {succeeded} requests succeeded, {failed} failed during 5 reloads");
    assert_eq!(failed, 0, "{policy}: requests failed during the reloads");
    assert!(
        wait_until(PATIENCE, || before.iter().all(|&pid| !process_alive(pid))),
        "the old workers exit"
    );
    let after: HashSet<u32> = cluster.worker_pids().into_iter().collect();
    assert_eq!(after.len(), 2);
    assert!(after.is_disjoint(&before));
    assert!(
        cluster.output().contains("generation 6"),
        "five replacements per slot"
    );
    hello(port);
}

#[test]
fn five_rolling_reloads_under_load_lose_no_request_with_reuseport() {
    reloads_under_load_lose_no_request("reuseport");
}

#[test]
fn five_rolling_reloads_under_load_lose_no_request_with_round_robin() {
    reloads_under_load_lose_no_request("round-robin");
}

/// A deployed app: a wrapper script the test rewrites between reloads.
struct Deployment {
    script: PathBuf,
}

impl Deployment {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("corral-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Deployment {
            script: dir.join("app.sh"),
        }
    }

    fn deploy(&self, body: &str) {
        std::fs::write(&self.script, body).unwrap();
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if let Some(dir) = self.script.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn version_answering(port: u16) -> (String, String) {
    let body = http_get(port, "/").expect("the app answers").body;
    let words: Vec<&str> = body.split_whitespace().collect();
    let field = |key: &str| {
        let at = words.iter().position(|word| *word == key).unwrap();
        words[at + 1].to_string()
    };
    (field("pid"), field("version"))
}

#[test]
fn a_broken_deploy_aborts_the_reload_and_a_fixed_one_upgrades_every_worker() {
    let app = Deployment::new("reload");
    app.deploy(&format!("APP_VERSION=1 exec python3 {ENV_SERVER}\n"));
    let script = app.script.to_str().unwrap();
    let cluster = ClusterProcess::start(
        CORRAL,
        &[
            "run",
            "-w",
            "2",
            "-l",
            "127.0.0.1:0",
            "--grace",
            "2",
            "--",
            "sh",
            script,
        ],
    );
    let port = cluster.port();
    cluster.expect_line("[worker 1] python worker 1 serving");
    cluster.expect_line("[worker 2] python worker 2 serving");
    let first: HashSet<u32> = cluster.worker_pids().into_iter().collect();

    app.deploy("echo 'the new version cannot start' >&2; exit 1\n");
    cluster.signal(Signal::HUP);
    cluster.expect_line("rolling reload aborted: the replacement for worker 1 exited with code 1");
    for _ in 0..10 {
        let (pid, version) = version_answering(port);
        assert_eq!(version, "1");
        assert!(
            first.contains(&pid.parse().unwrap()),
            "the old workers keep serving"
        );
    }

    app.deploy(&format!("APP_VERSION=2 exec python3 {ENV_SERVER}\n"));
    cluster.signal(Signal::HUP);
    cluster.expect_line("rolling reload complete: 2 workers replaced");
    assert!(wait_until(PATIENCE, || first
        .iter()
        .all(|&pid| !process_alive(pid))));
    for _ in 0..10 {
        assert_eq!(
            version_answering(port).1,
            "2",
            "every worker runs the new version"
        );
    }
}

#[test]
fn workers_over_max_memory_are_recycled_without_losing_a_request() {
    // Every demo worker uses more than 1 MiB: each is recycled once it has
    // run a second.
    let cluster = ClusterProcess::start(
        CORRAL,
        &[
            "run",
            "-w",
            "2",
            "-l",
            "127.0.0.1:0",
            "--max-memory",
            "1M",
            "--grace",
            "5",
        ],
    );
    let port = cluster.port();
    cluster.expect_line("worker 1 ready");
    let load = Load::start(port, 1);
    cluster.expect_line("over --max-memory 1 MiB: replacing it gracefully");
    cluster
        .wait_for_lines("recycling: worker", 2, PATIENCE)
        .expect("workers are recycled");
    load.wait_for_more(20);
    let LoadTotals {
        succeeded,
        failed,
        refused,
    } = load.stop();
    assert_eq!(refused, 0);
    eprintln!("recycling: {succeeded} requests succeeded, {failed} failed");
    assert_eq!(failed, 0);
}

#[test]
fn workers_are_recycled_after_max_requests_without_losing_a_request() {
    let cluster = ClusterProcess::start(
        CORRAL,
        &[
            "run",
            "-w",
            "2",
            "-l",
            "127.0.0.1:0",
            "--policy",
            "round-robin",
            "--max-requests",
            "100",
            "--max-requests-jitter",
            "20",
        ],
    );
    let port = cluster.port();
    cluster.expect_line("worker 1 ready");
    cluster.expect_line("worker 2 ready");
    let load = Load::start(port, 1);
    let replaced = cluster
        .wait_for_lines("recycling: worker", 3, PATIENCE)
        .unwrap_or_else(|| panic!("workers are recycled:\n{}", cluster.output()));
    let LoadTotals {
        succeeded,
        failed,
        refused,
    } = load.stop();
    assert_eq!(refused, 0);
    eprintln!("max-requests: {succeeded} requests succeeded, {failed} failed; {replaced:?}");
    assert_eq!(failed, 0);
    let reasons = cluster.output();
    assert!(
        reasons.contains("requests (--max-requests with jitter: 1"),
        "{reasons}"
    );
}

#[test]
fn max_surge_replaces_several_workers_at_once() {
    let cluster = ClusterProcess::start(
        CORRAL,
        &[
            "run",
            "-w",
            "4",
            "-l",
            "127.0.0.1:0",
            "--max-surge",
            "2",
            "--grace",
            "5",
        ],
    );
    let port = cluster.port();
    for id in 1..=4 {
        cluster.expect_line(&format!("worker {id} ready"));
    }
    let load = Load::start(port, 1);
    load.wait_for_more(20);
    cluster.signal(Signal::HUP);
    cluster.expect_line("rolling reload complete: 4 workers replaced");
    let LoadTotals {
        failed, refused, ..
    } = load.stop();
    assert_eq!(refused, 0);
    assert_eq!(failed, 0);
    // Two replacements were started before the first one took over.
    let output = cluster.output();
    let lines: Vec<&str> = output.lines().collect();
    let first_promotion = lines
        .iter()
        .position(|line| line.contains("rolling reload: worker"))
        .unwrap();
    let started_before = lines[..first_promotion]
        .iter()
        .filter(|line| line.contains("spawned") && line.contains("generation 2)"))
        .count();
    assert_eq!(started_before, 2, "{output}");
}

#[test]
fn ready_message_waits_for_the_worker_to_say_so() {
    // env_server.py never says it is ready: under --ready message that is
    // reported at start.
    let mut cluster = ClusterProcess::start(
        CORRAL,
        &[
            "run",
            "-w",
            "1",
            "-l",
            "127.0.0.1:0",
            "--ready",
            "message",
            "--ready-timeout",
            "0.5",
            "--",
            "python3",
            ENV_SERVER,
        ],
    );
    let status = cluster.wait_exit(PATIENCE).expect("corral gives up");
    assert_eq!(status.code(), Some(1));
    let error = cluster.expect_line("corral: error:");
    assert!(
        error.contains("--ready message") && error.contains("{\"corral\":\"ready\"}"),
        "{error}"
    );
}

#[test]
fn ready_delay_counts_a_worker_ready_after_it_ran_that_long() {
    let cluster = ClusterProcess::start(
        CORRAL,
        &[
            "run",
            "-w",
            "1",
            "-l",
            "127.0.0.1:0",
            "--ready",
            "delay:0.3",
            "--",
            "python3",
            ENV_SERVER,
        ],
    );
    cluster.expect_line("worker 1 spawned");
    let spawned = std::time::Instant::now();
    cluster.expect_line("worker 1 ready");
    let waited = spawned.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(250),
        "ready after {waited:?}"
    );
    cluster.signal(Signal::HUP);
    cluster.expect_line("rolling reload complete: 1 workers replaced");
}
