//! The watchdog (`--timeout`): a worker whose heartbeats stop is hung; it is
//! killed and replaced within the timeout and a second.

use std::time::{Duration, Instant};

use corral_testkit::{ClusterProcess, PATIENCE};

const CORRAL: &str = env!("CARGO_BIN_EXE_corral");
const HANGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hangs.py");

#[test]
fn a_worker_whose_heartbeats_stop_is_replaced_within_the_timeout_and_a_second() {
    let cluster = ClusterProcess::start(
        CORRAL,
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
    cluster.expect_line("[worker 1] hanging");
    let hung_at = Instant::now();
    let line = cluster.expect_line("sent no heartbeat for 1.0s: it is hung; killing it");
    cluster
        .wait_for_lines("worker 1 spawned (pid", 2, PATIENCE)
        .expect("a replacement is started");
    let replaced_after = hung_at.elapsed();
    eprintln!("{line}\nreplacement started {replaced_after:?} after the worker hung");
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
        CORRAL,
        &["run", "-w", "2", "-l", "127.0.0.1:0", "--timeout", "0.4"],
    );
    cluster.expect_line("worker 1 ready");
    cluster.expect_line("worker 2 ready");
    assert!(
        cluster
            .wait_for_line("it is hung", Duration::from_secs(2))
            .is_none(),
        "{}",
        cluster.output()
    );
    assert_eq!(cluster.worker_pids().len(), 2);
}
