//! Chaos under load: workers killed every 300 ms, and the cluster scaled up
//! and down, while a client opens a new connection for every request. The
//! totals are printed; the assertions are what the README promises.

use std::time::{Duration, Instant};

use corral_testkit::{
    Load, LoadTotals, PATIENCE, Signal, send_signal, two_ready_workers, wait_until,
};

/// Kills a worker every 300 ms for `duration` under load from one client
/// (so no request is in flight on the killed worker when it dies only by
/// chance): new connections must all succeed.
fn kill_every_300ms(policy: &str) {
    let (cluster, port) = two_ready_workers(policy);
    let load = Load::start(port, 1);
    let started = Instant::now();
    let mut kills = 0u64;
    let mut victim = 0usize;
    while started.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(300));
        let workers = cluster.worker_pids();
        if let Some(&pid) = workers.get(victim % workers.len().max(1)) {
            send_signal(pid, Signal::KILL);
            kills += 1;
        }
        victim += 1;
    }
    let before = load.succeeded();
    assert!(
        wait_until(PATIENCE, || load.succeeded() > before + 10),
        "the cluster serves again after the kills:\n{}",
        cluster.output()
    );
    let LoadTotals {
        succeeded,
        failed,
        refused,
        ..
    } = load.stop();
    eprintln!(
        "{policy}: {kills} workers killed; {succeeded} requests succeeded, \
         {failed} failed in flight on a killed worker, {refused} new connections refused"
    );
    assert!(kills >= 8);
    assert_eq!(refused, 0, "{policy}: new connections were lost");
    // One client, sequential requests: a kill lands between two requests or
    // during one; only the latter may fail, so at most one per kill.
    assert!(
        failed <= kills,
        "{policy}: {failed} failed for {kills} kills"
    );
    assert!(
        cluster
            .events_since(corral_testkit::Mark::START)
            .iter()
            .all(|event| !event.is("fatal")),
        "the cluster keeps going:\n{}",
        cluster.output()
    );
}

#[test]
fn killing_a_worker_every_300ms_loses_no_new_connection_under_reuseport() {
    kill_every_300ms("reuseport");
}

#[test]
fn killing_a_worker_every_300ms_loses_no_new_connection_under_round_robin() {
    kill_every_300ms("round-robin");
}

#[test]
fn killing_a_worker_every_300ms_loses_no_new_connection_under_least_connections() {
    kill_every_300ms("least-connections");
}

/// Scales 2 → 4 → 2 twice under load from 4 clients: nothing may fail.
fn scale_up_and_down(policy: &str) {
    let (cluster, port) = two_ready_workers(policy);
    let load = Load::start(port, 4);
    let ttin = Signal::from_named_raw(libc::SIGTTIN).expect("a known signal");
    let ttou = Signal::from_named_raw(libc::SIGTTOU).expect("a known signal");
    for _ in 0..2 {
        for signal in [ttin, ttin, ttou, ttou] {
            let before = load.succeeded();
            cluster.signal(signal);
            assert!(
                wait_until(PATIENCE, || load.succeeded() > before + 50),
                "load stalled"
            );
        }
    }
    assert!(
        wait_until(PATIENCE, || cluster.worker_pids().len() == 2),
        "back to 2 workers"
    );
    load.stop()
        .assert_none_lost(&format!("{policy}: scaled 2-4-2 twice"));
}

#[test]
fn scaling_up_and_down_under_load_loses_nothing_with_round_robin() {
    scale_up_and_down("round-robin");
}

#[test]
fn scaling_up_and_down_under_load_loses_nothing_with_least_connections() {
    scale_up_and_down("least-connections");
}
