//! Crash loops are counted until a worker runs stably (`--stable-after`),
//! not only within its first second: a server that always dies after 1.1 s
//! backs off and is reported, where it used to be restarted at once forever.

use std::time::Duration;

use corral_testkit::{ClusterProcess, PATIENCE, Signal};

const CORRAL: &str = env!("CARGO_BIN_EXE_corral");

#[test]
fn a_worker_that_fails_after_a_second_is_reported_and_backs_off_to_the_cap() {
    let mut cluster = ClusterProcess::start(
        CORRAL,
        &[
            "run",
            "-w",
            "1",
            "-l",
            "127.0.0.1:0",
            "--max-restart-delay",
            "0.15",
            "--",
            "sh",
            "-c",
            "sleep 1.05; exit 3",
        ],
    );
    let reports = cluster
        .wait_for_lines("is crash-looping", 2, Duration::from_secs(12))
        .unwrap_or_else(|| panic!("the loop is never reported:\n{}", cluster.output()));
    assert!(
        reports[0].contains("3 failures in a row") && reports[0].contains("next restart in 100ms"),
        "{}",
        reports[0]
    );
    assert!(
        reports[1].contains("4 failures in a row") && reports[1].contains("next restart in 150ms"),
        "the delay doubles up to --max-restart-delay: {}",
        reports[1]
    );
    // Each failure is one spawn: four failures, at most a fifth start.
    let spawns = cluster.output().matches("spawned (pid").count();
    assert!(spawns <= 5, "{spawns} spawns:\n{}", cluster.output());
    cluster.signal(Signal::TERM);
    assert!(
        cluster
            .wait_exit(PATIENCE)
            .is_some_and(|status| status.success())
    );
}

#[test]
fn a_stable_run_shorter_than_a_start_is_refused() {
    let mut cluster = ClusterProcess::start(
        CORRAL,
        &["run", "-l", "127.0.0.1:0", "--stable-after", "0.5"],
    );
    let status = cluster.wait_exit(PATIENCE).expect("corral refuses at once");
    assert_eq!(status.code(), Some(1));
    let error = cluster.expect_line("--stable-after");
    assert!(error.contains("at least 1 s"), "{error}");
}
