//! What several integration tests start: a demo cluster of two workers on a
//! free port, returned once both workers are ready.

use corral_testkit::ClusterProcess;

/// `corral run -w 2 --policy POLICY --grace 5` with the demo worker; returns
/// the cluster and its port once both workers said they are ready.
pub fn two_ready_workers(policy: &str) -> (ClusterProcess, u16) {
    let cluster = ClusterProcess::start(
        env!("CARGO_BIN_EXE_corral"),
        &[
            "run",
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
    (cluster, port)
}
