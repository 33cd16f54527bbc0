//! Rolling reload (SIGHUP): every worker replaced, one at a time, each
//! replacement ready before the worker it replaces stops, under load.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use corral_testkit::{
    ClusterBuilder, ClusterProcess, Load, Mark, PATIENCE, Signal, hello, http_get, process_alive,
    wait_until,
};

const ENV_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/env_server.py");

fn corral() -> ClusterBuilder {
    ClusterBuilder::corral()
}

fn reloads_under_load_lose_no_request(policy: &str) {
    let cluster = corral().policy(policy).args(&["--grace", "5"]).start();
    let port = cluster.port();
    let before: HashSet<u32> = cluster.worker_pids().into_iter().collect();
    let load = Load::start(port, 1);
    for _ in 1..=5 {
        load.wait_for_more(20);
        let mark = cluster.mark();
        cluster.signal(Signal::HUP);
        let done = cluster.expect_event(mark, "reload_completed", None);
        assert_eq!(done.field("replaced"), Some(&2.into()), "{done:?}");
    }
    load.wait_for_more(20);
    load.stop()
        .assert_none_lost(&format!("{policy}: 5 rolling reloads"));
    assert!(
        wait_until(PATIENCE, || before.iter().all(|&pid| !process_alive(pid))),
        "the old workers exit"
    );
    assert!(
        wait_until(PATIENCE, || cluster.worker_pids().len() == 2),
        "two workers remain:\n{}",
        cluster.output()
    );
    let after: HashSet<u32> = cluster.worker_pids().into_iter().collect();
    assert!(after.is_disjoint(&before));
    let sixth_starts = cluster
        .events_since(Mark::START)
        .into_iter()
        .filter(|event| event.is("fork") && event.field("generation") == Some(&6.into()))
        .count();
    assert_eq!(sixth_starts, 2, "five replacements per slot");
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
    let cluster = corral()
        .args(&["--grace", "2"])
        .command(&["sh", script])
        .start();
    let port = cluster.port();
    cluster.expect_line("[worker 1] python worker 1 serving");
    cluster.expect_line("[worker 2] python worker 2 serving");
    let first: HashSet<u32> = cluster.worker_pids().into_iter().collect();

    app.deploy("echo 'the new version cannot start' >&2; exit 1\n");
    let mark = cluster.mark();
    cluster.signal(Signal::HUP);
    let aborted = cluster.expect_event(mark, "reload_aborted", Some(1));
    assert!(
        aborted.has("kind", "rolling")
            && aborted.string("reason").is_some_and(|reason| {
                reason.starts_with("the replacement for worker 1 exited with code 1")
            }),
        "{aborted:?}"
    );
    for _ in 0..10 {
        let (pid, version) = version_answering(port);
        assert_eq!(version, "1");
        assert!(
            first.contains(&pid.parse().unwrap()),
            "the old workers keep serving"
        );
    }

    app.deploy(&format!("APP_VERSION=2 exec python3 {ENV_SERVER}\n"));
    let mark = cluster.mark();
    cluster.signal(Signal::HUP);
    cluster.expect_event(mark, "reload_completed", None);
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

/// Waits for `count` replacements by recycling (not by a reload).
fn recycled(cluster: &ClusterProcess, count: usize) {
    cluster
        .wait_for_events(Mark::START, count, PATIENCE, |event| {
            event.is("replaced") && event.has("kind", "recycling")
        })
        .unwrap_or_else(|| panic!("workers are recycled:\n{}", cluster.output()));
}

#[test]
fn workers_over_max_memory_are_recycled_without_losing_a_request() {
    // Every demo worker uses more than 1 MiB: each is recycled once it has
    // run a second.
    let cluster = corral()
        .args(&["--max-memory", "1M", "--grace", "5"])
        .start();
    let load = Load::start(cluster.port(), 1);
    let over = cluster.expect_event(Mark::START, "recycled", None);
    let limit = over.number("limit_bytes");
    assert!(
        over.has("reason", "memory")
            && limit == Some(1 << 20)
            && over.number("resident_bytes") > limit,
        "{over:?}"
    );
    recycled(&cluster, 2);
    load.wait_for_more(20);
    load.stop().assert_none_lost("recycling over --max-memory");
}

#[test]
fn workers_are_recycled_after_max_requests_without_losing_a_request() {
    let cluster = corral()
        .policy("round-robin")
        .args(&["--max-requests", "100", "--max-requests-jitter", "20"])
        .start();
    let load = Load::start(cluster.port(), 1);
    recycled(&cluster, 3);
    load.stop()
        .assert_none_lost("recycling after --max-requests");
    let over = cluster.expect_event(Mark::START, "recycled", None);
    assert!(
        over.has("reason", "requests")
            && over
                .number("limit")
                .is_some_and(|limit| (100..=120).contains(&limit)),
        "--max-requests 100 with a jitter of up to 20: {over:?}"
    );
}

#[test]
fn max_surge_replaces_several_workers_at_once() {
    let cluster = corral()
        .workers(4)
        .args(&["--max-surge", "2", "--grace", "5"])
        .start();
    let load = Load::start(cluster.port(), 1);
    load.wait_for_more(20);
    let mark = cluster.mark();
    cluster.signal(Signal::HUP);
    let done = cluster.expect_event(mark, "reload_completed", None);
    assert_eq!(done.field("replaced"), Some(&4.into()));
    load.stop().assert_none_lost("a reload with --max-surge 2");
    // Two replacements were started before the first one took over.
    let events = cluster.events_since(mark);
    let first_promotion = events
        .iter()
        .position(|event| event.is("replaced"))
        .expect("a promotion");
    let started_before = events[..first_promotion]
        .iter()
        .filter(|event| event.is("fork"))
        .count();
    assert_eq!(started_before, 2, "{}", cluster.output());
}

#[test]
fn ready_message_waits_for_the_worker_to_say_so() {
    // env_server.py never says it is ready: under --ready message that is
    // reported at start.
    let mut cluster = corral()
        .workers(1)
        .args(&["--ready", "message", "--ready-timeout", "0.5"])
        .command(&["python3", ENV_SERVER])
        .no_wait()
        .start();
    let status = cluster.wait_exit(PATIENCE).expect("corral gives up");
    assert_eq!(status.code(), Some(1));
    let error = cluster.expect_event(Mark::START, "fatal", None);
    assert!(
        error.message.contains("--ready message")
            && error.message.contains("{\"corral\":\"ready\"}"),
        "{error:?}"
    );
}

#[test]
fn ready_delay_counts_a_worker_ready_after_it_ran_that_long() {
    let cluster = corral()
        .workers(1)
        .args(&["--ready", "delay:0.3"])
        .command(&["python3", ENV_SERVER])
        .start();
    // Measured between corral's own timestamps, not when this thread woke.
    let spawned = cluster.expect_event(Mark::START, "fork", Some(1));
    let ready = cluster.expect_event(Mark::START, "ready", Some(1));
    let waited = ready.time().unwrap() - spawned.time().unwrap();
    assert!(
        waited >= Duration::from_millis(300),
        "ready after {waited:?}"
    );
    let mark = cluster.mark();
    cluster.signal(Signal::HUP);
    cluster.expect_event(mark, "reload_completed", None);
}
