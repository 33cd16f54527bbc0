//! The watchdog (`--timeout`): a worker whose heartbeats stop is hung; it is
//! killed and replaced within the timeout and a second.

use std::time::Duration;

use corral_testkit::{ClusterProcess, Mark, PATIENCE, corral_path};

const HANGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hangs.py");

#[test]
fn a_worker_whose_heartbeats_stop_is_replaced_within_the_timeout_and_a_second() {
    let cluster = ClusterProcess::start(
        corral_path(),
        &[
            "run",
            "-w",
            "1",
            "-l",
            "127.0.0.1:0",
            "--timeout",
            "1",
            "--",
            "python3",
            HANGS,
        ],
    );
    // Measured between the cluster's own timestamps, not when this thread woke.
    let hanging = cluster
        .wait_for_event(Mark::START, PATIENCE, |event| {
            event.is_of("output", 1) && event.message == "hanging"
        })
        .unwrap_or_else(|| panic!("the worker hangs:\n{}", cluster.output()));
    let hung = cluster.expect_event(Mark::START, "hung", Some(1));
    assert!(hung.has("timeout_ms", 1000), "{hung:?}");
    let replacement = cluster
        .wait_for_event(Mark::START, PATIENCE, |event| {
            event.is_of("fork", 1) && event.field("generation") == Some(&2.into())
        })
        .unwrap_or_else(|| panic!("a replacement is started:\n{}", cluster.output()));
    let replaced_after = replacement.time().unwrap() - hanging.time().unwrap();
    eprintln!("replacement started {replaced_after:?} after the worker hung");
    assert!(
        replaced_after < Duration::from_secs(2),
        "replaced after {replaced_after:?}, more than the 1 s timeout and a second"
    );
    cluster
        .wait_for_lines("[worker 1] hanging", 2, PATIENCE)
        .expect("the replacement runs");
}

#[test]
fn healthy_library_workers_keep_the_watchdog_quiet() {
    let cluster = ClusterProcess::start(
        corral_path(),
        &["run", "-w", "2", "-l", "127.0.0.1:0", "--timeout", "0.4"],
    );
    cluster.expect_event(Mark::START, "ready", Some(1));
    cluster.expect_event(Mark::START, "ready", Some(2));
    assert!(
        cluster
            .wait_for_event(Mark::START, Duration::from_secs(2), |event| event
                .is("hung"))
            .is_none(),
        "{}",
        cluster.output()
    );
    assert_eq!(cluster.worker_pids().len(), 2);
}
