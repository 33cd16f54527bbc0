//! A worker's identity inside the primary, with real processes: a slot
//! removed by a scale-down and added again within the grace period gets a
//! new worker that the old worker's grace timer cannot reach, under load and
//! with no request lost; concurrent scale requests end in the state the last
//! one asked for, with no healthy worker killed; a scale-down during a
//! rolling reload leaves the reload to complete with the slots that stay.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use corral_testkit::{ClusterBuilder, ClusterProcess, Load, Mark, process_alive, status_workers};
use serde_json::Value;

const ENV_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/env_server.py");
/// The grace period of the clusters here: the stale timers fire after it.
const GRACE: Duration = Duration::from_secs(4);

fn two_workers(policy: &str) -> (ClusterProcess, u16) {
    let cluster = ClusterBuilder::corral()
        .policy(policy)
        .args(&["--grace", &GRACE.as_secs().to_string()])
        .start();
    let port = cluster.port();
    (cluster, port)
}

fn scale(cluster: &ClusterProcess, count: &str) {
    let output = cluster.control(&["scale", count]);
    assert!(output.status.success(), "scale {count}: {output:?}");
}

/// Waits until exactly `count` workers are listed, all ready; returns
/// their pids.
fn await_ready_workers(cluster: &ClusterProcess, count: usize) -> HashSet<u64> {
    let status = cluster.await_status(&format!("{count} ready workers"), |status| {
        let current = status_workers(status);
        current.len() == count && current.iter().all(|(_, _, state)| state == "ready")
    });
    status_workers(&status)
        .into_iter()
        .map(|(_, pid, _)| pid)
        .collect()
}

/// After the grace period of everything stopped so far: the same workers
/// serve, and none was killed for overstaying a grace period.
fn assert_untouched_after_grace(cluster: &ClusterProcess, serving: &HashSet<u64>) {
    std::thread::sleep(GRACE + Duration::from_millis(1500));
    let output = cluster.output();
    let events = cluster.events_since(Mark::START);
    assert!(
        !events.iter().any(|event| event.is("grace_expired")),
        "a worker was killed at the end of a grace period:\n{output}"
    );
    for &pid in serving {
        assert!(
            process_alive(pid as u32),
            "worker pid {pid} is gone:\n{output}"
        );
    }
    assert_eq!(
        &await_ready_workers(cluster, serving.len()),
        serving,
        "the serving workers changed:\n{output}"
    );
}

fn scale_down_and_up_within_grace_under(policy: &str) {
    let (cluster, port) = two_workers(policy);
    let load = Load::start_on(port, "/sleep/200", 4);
    load.wait_for_more(10);
    scale(&cluster, "1");
    // The removed worker drains its 200 ms requests and exits, and its slot
    // goes; the scale-up adds the slot again, long before the removed
    // worker's grace timer ends.
    std::thread::sleep(Duration::from_millis(500));
    scale(&cluster, "2");
    let serving = await_ready_workers(&cluster, 2);
    load.wait_for_more(10);
    assert_untouched_after_grace(&cluster, &serving);
    load.wait_for_more(10);
    let totals = load.stop();
    if totals.failed + totals.refused > 0 {
        eprintln!("{}", cluster.output());
    }
    totals.assert_none_lost(&format!("scale 2 -> 1 -> 2 within --grace under {policy}"));
}

#[test]
fn scaling_down_and_up_within_grace_kills_no_new_worker_under_reuseport() {
    scale_down_and_up_within_grace_under("reuseport");
}

#[test]
fn scaling_down_and_up_within_grace_kills_no_new_worker_under_round_robin() {
    scale_down_and_up_within_grace_under("round-robin");
}

#[test]
fn concurrent_scale_requests_end_in_the_last_state_asked_for() {
    let (cluster, _port) = two_workers("reuseport");
    let requests: Vec<_> = (0..50)
        .map(|n| {
            let change = if n % 2 == 0 { "+1" } else { "-1" };
            let mut command = cluster.control_command(&["scale", change]);
            command.stdout(Stdio::null()).stderr(Stdio::null());
            command.spawn().expect("corral scale starts")
        })
        .collect();
    for mut request in requests {
        // A -1 at one worker is refused; what matters is what follows.
        let _ = request.wait();
    }
    let output = cluster.control(&["scale", "2", "--json"]);
    assert!(output.status.success(), "{output:?}");
    let reply: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(reply["workers_desired"], 2);
    let serving = await_ready_workers(&cluster, 2);
    assert_untouched_after_grace(&cluster, &serving);
    assert_eq!(cluster.status_json()["workers_desired"], 2);
}

#[test]
fn a_scale_down_during_a_reload_lets_the_reload_complete_with_the_slots_that_stay() {
    // Replacements count as ready after 2 s, and all three are awaited at
    // once: the scale-down removes a slot whose replacement is under way.
    let cluster = ClusterBuilder::corral()
        .workers(3)
        .args(&["--ready", "delay:2", "--max-surge", "3", "--grace", "4"])
        .command(&["python3", ENV_SERVER])
        .start();
    let mut reload = cluster.control_command(&["reload"]);
    reload.stdout(Stdio::piped()).stderr(Stdio::piped());
    let reload = reload.spawn().expect("corral reload starts");
    cluster.expect_event_where(Mark::START, "a rolling reload of 3 workers", |event| {
        event.is("reload_started") && event.has("kind", "rolling") && event.has("workers", 3)
    });
    std::thread::sleep(Duration::from_millis(300));
    scale(&cluster, "-1");
    let outcome = reload.wait_with_output().expect("corral reload ends");
    assert!(
        outcome.status.success(),
        "the reload did not complete: {outcome:?}\n{}",
        cluster.output()
    );
    let serving = await_ready_workers(&cluster, 2);
    assert_eq!(cluster.status_json()["workers_desired"], 2);
    let events = cluster.events_since(Mark::START);
    assert!(
        !events.iter().any(|event| event.is("reload_aborted")),
        "{}",
        cluster.output()
    );
    assert_eq!(await_ready_workers(&cluster, 2), serving);
}
