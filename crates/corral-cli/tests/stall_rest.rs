//! A worker that stops reading its hand-off channel (here: SIGSTOPped) gets
//! no connections for a rest period that doubles each time it stalls again
//! (100 ms up to 2 s), while the other workers serve everything.

use corral_testkit::{ClusterProcess, Load, PATIENCE, Signal, send_signal};

const CORRAL: &str = env!("CARGO_BIN_EXE_corral");

/// The pid in a `worker N ready (pid P)` line.
fn pid_in(line: &str) -> u32 {
    line.rsplit_once("(pid ")
        .and_then(|(_, rest)| rest.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"))
}

#[test]
fn a_stopped_worker_rests_longer_each_time_it_stalls() {
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
        ],
    );
    let port = cluster.port();
    cluster.expect_line("worker 1 ready (pid");
    let stopped = pid_in(&cluster.expect_line("worker 2 ready (pid"));
    send_signal(stopped, Signal::STOP);
    let load = Load::start(port, 4);
    for rest in ["100ms", "200ms", "400ms"] {
        let found = cluster.wait_for_line(&format!("none to it for {rest}"), PATIENCE);
        assert!(
            found.is_some_and(|line| line.contains("worker 2 is not reading")),
            "no rest of {rest}:\n{}",
            cluster.output()
        );
    }
    send_signal(stopped, Signal::CONT);
    load.wait_for_more(20);
    let totals = load.stop();
    assert_eq!(
        (totals.failed, totals.refused),
        (0, 0),
        "worker 1 served the stalled worker's connections: {totals:?}"
    );
    // The rest never exceeds its cap.
    assert!(!cluster.output().contains("none to it for 4000ms"));
}
