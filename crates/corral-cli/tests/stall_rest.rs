//! A worker that stops reading its hand-off channel (here: SIGSTOPped) gets
//! no connections for a rest period that doubles each time it stalls again
//! (100 ms up to 2 s), while the other workers serve everything.

use corral_testkit::{ClusterBuilder, Load, Mark, Signal, send_signal};

#[test]
fn a_stopped_worker_rests_longer_each_time_it_stalls() {
    let cluster = ClusterBuilder::corral()
        .args(&["--kernel-steering", "off"])
        .policy("round-robin")
        .start();
    let stopped = cluster
        .expect_event(Mark::START, "ready", Some(2))
        .pid
        .expect("the ready event names the pid");
    let mark = cluster.mark();
    send_signal(stopped, Signal::STOP);
    let load = Load::start(cluster.port(), 4);
    let stalls = cluster.expect_events(mark, "worker_stalled", Some(2), 3);
    let rests: Vec<Option<u64>> = stalls
        .iter()
        .map(|event| event.field("rest_ms").and_then(|value| value.as_u64()))
        .collect();
    assert_eq!(rests, [Some(100), Some(200), Some(400)]);
    send_signal(stopped, Signal::CONT);
    load.wait_for_more(20);
    load.stop()
        .assert_none_lost("worker 1 serves the stalled worker's connections");
}
