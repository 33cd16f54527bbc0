//! Crash loops are counted until a worker runs stably (`--stable-after`),
//! not only within its first second: a server that always dies after 1.1 s
//! backs off and is reported, where it used to be restarted at once forever.

use std::time::Duration;

use corral_testkit::{ClusterBuilder, LogEvent, Mark, PATIENCE, Signal};

fn number(event: &LogEvent, field: &str) -> Option<u64> {
    event.field(field).and_then(|value| value.as_u64())
}

#[test]
fn a_worker_that_fails_after_a_second_is_reported_and_backs_off_to_the_cap() {
    let mut cluster = ClusterBuilder::corral()
        .workers(1)
        .args(&["--max-restart-delay", "0.15"])
        .command(&["sh", "-c", "sleep 1.05; exit 3"])
        .no_wait()
        .start();
    let reports = cluster.expect_events(Mark::START, "crash_loop", Some(1), 2);
    let seen: Vec<(Option<u64>, Option<u64>)> = reports
        .iter()
        .map(|event| (number(event, "quick_failures"), number(event, "delay_ms")))
        .collect();
    assert_eq!(
        seen,
        [(Some(3), Some(100)), (Some(4), Some(150))],
        "reported from the third failure; the delay doubles up to --max-restart-delay"
    );
    // The restart after the third failure really waited, by corral's clock.
    let events = cluster.events_since(Mark::START);
    let times = |name: &str| -> Vec<Duration> {
        events
            .iter()
            .filter(|event| event.is(name))
            .filter_map(LogEvent::time)
            .collect()
    };
    let (forks, exits) = (times("fork"), times("exit"));
    assert!(forks.len() >= 4 && exits.len() >= 3, "{}", cluster.output());
    let waited = forks[3].saturating_sub(exits[2]);
    assert!(
        waited >= Duration::from_millis(100),
        "restarted {waited:?} after the third failure"
    );
    cluster.stop_gracefully(PATIENCE);
}

#[test]
fn a_stable_run_shorter_than_a_start_is_refused() {
    let mut cluster = ClusterBuilder::corral()
        .args(&["--stable-after", "0.5"])
        .no_wait()
        .start();
    let status = cluster.wait_exit(PATIENCE).expect("corral refuses at once");
    assert_eq!(status.code(), Some(1));
    let error = cluster.expect_event(Mark::START, "fatal", None);
    assert!(
        error.message.contains("--stable-after") && error.message.contains("at least 1 s"),
        "{}",
        error.message
    );
}

/// A command that exits at its start is `online` (its exec succeeded) but
/// never announced `ready`, nor counted ready by `corral status`: readiness
/// waits until a worker is seen still running a moment after its start.
/// One that keeps running is ready as before, without saying so.
#[test]
fn a_command_that_exits_at_its_start_is_never_announced_ready() {
    let mut cluster = ClusterBuilder::corral()
        .workers(2)
        .args(&["--log-format", "json"])
        .command(&["sh", "-c", "exit 3"])
        .no_wait()
        .start();
    // Several starts of each worker, each one exited.
    cluster.expect_events(Mark::START, "exit", Some(1), 3);
    cluster.expect_events(Mark::START, "exit", Some(2), 3);
    let events = cluster.events_since(Mark::START);
    let count = |name: &str| events.iter().filter(|event| event.is(name)).count();
    assert!(count("online") >= 6, "{}", cluster.output());
    assert_eq!(
        count("ready"),
        0,
        "a worker that lived a few ms was called ready:\n{}",
        cluster.output()
    );
    cluster.signal(Signal::TERM);
    assert!(
        cluster.wait_exit(PATIENCE).is_some(),
        "{}",
        cluster.output()
    );

    let mut cluster = ClusterBuilder::corral()
        .workers(2)
        .args(&["--log-format", "json"])
        .command(&["sh", "-c", "exec sleep 30"])
        .start();
    let events = cluster.events_since(Mark::START);
    assert!(
        !events.iter().any(|event| event.is("exit")),
        "{}",
        cluster.output()
    );
    cluster.signal(Signal::TERM);
    assert!(
        cluster.wait_exit(PATIENCE).is_some(),
        "{}",
        cluster.output()
    );
}
