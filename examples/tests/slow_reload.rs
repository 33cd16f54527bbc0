//! A configuration that takes too long to read (`Cluster::on_reload` that
//! hangs): the reload is aborted after 5 s, and the primary supervises
//! throughout.

use std::time::{Duration, Instant};

use corral_testkit::{ClusterBuilder, PATIENCE, Signal, send_signal};

#[test]
fn a_hung_configuration_read_aborts_the_reload_and_never_stops_supervision() {
    let mut cluster = ClusterBuilder::example("slow_reload").workers(2).start();
    let since = cluster.mark();
    let asked = Instant::now();
    cluster.signal(Signal::HUP);

    // While the read hangs, a killed worker is reaped and replaced.
    let worker = cluster.worker_pids()[0];
    send_signal(worker, Signal::KILL);
    let exited = cluster.expect_event(since, "exit", None);
    assert_eq!(exited.pid, Some(worker), "{exited:?}");
    cluster.expect_event(since, "fork", None);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );

    let aborted = cluster
        .wait_for_line_after(since, "reload aborted", Duration::from_secs(10))
        .expect("the reload is aborted");
    assert!(aborted.contains("took longer than 5 s"), "{aborted}");
    let waited = asked.elapsed();
    assert!(waited < Duration::from_secs(8), "aborted after {waited:?}");

    // The stuck read is not started again, nor does it hold up the stop.
    let again = cluster.mark();
    cluster.signal(Signal::HUP);
    let refused = cluster
        .wait_for_line_after(again, "reload aborted", Duration::from_secs(10))
        .expect("the second reload is aborted");
    assert!(
        refused.contains("the previous read has not finished"),
        "{refused}"
    );
    cluster.signal(Signal::TERM);
    let status = cluster.wait_exit(PATIENCE).expect("it stops");
    assert!(status.success(), "{status:?}:\n{}", cluster.output());
}
