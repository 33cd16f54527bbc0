//! `--reload-at`: a cron schedule starts rolling reloads by itself, and
//! status shows the next one. `--drain-delay`: on SIGTERM `/readyz` fails at
//! once while the workers keep serving for the delay, then they drain.

use std::time::{Duration, Instant};

use corral_testkit::{ClusterBuilder, Mark, PATIENCE, Signal, free_port, http_get};

#[test]
fn an_every_second_schedule_reloads_again_and_again() {
    let cluster = ClusterBuilder::corral()
        .args(&["--reload-at", "* * * * * *", "--grace", "1"])
        .start();
    cluster.expect_line("next scheduled reload (--reload-at) at ");
    let next = cluster.status_json()["next_scheduled_reload"].clone();
    assert!(
        next.as_str().is_some_and(|time| time.ends_with('Z')),
        "{next}"
    );
    let shown = cluster.control(&["status", "demo"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("; next scheduled "), "{shown}");
    let port = cluster.port();
    cluster.expect_events(Mark::START, "reload_completed", None, 2);
    assert_eq!(http_get(port, "/").expect("still serving").status, 200);
}

#[test]
fn a_bad_schedule_is_refused_at_once() {
    let output = std::process::Command::new(corral_testkit::corral_path())
        .args(["run", "--reload-at", "every day"])
        .output()
        .expect("corral runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a cron expression"), "{stderr}");
}

#[test]
fn the_drain_delay_fails_readyz_first_and_serves_meanwhile() {
    let metrics = free_port();
    let address = format!("127.0.0.1:{metrics}");
    let mut cluster = ClusterBuilder::corral()
        .args(&["--metrics", &address, "--drain-delay", "1", "--grace", "2"])
        .start();
    let port = cluster.port();
    assert_eq!(http_get(metrics, "/readyz").expect("readyz").status, 200);

    let asked = cluster.mark();
    let sent = Instant::now();
    cluster.signal(Signal::TERM);
    let event = cluster.expect_event(asked, "draining_soon", None);
    assert_eq!(event.number("delay_ms"), Some(1000), "{}", event.text());
    assert_eq!(http_get(metrics, "/readyz").expect("readyz").status, 503);
    // Meanwhile every request is still served.
    let mut served = 0;
    while sent.elapsed() < Duration::from_millis(800) {
        assert_eq!(http_get(port, "/").expect("still serving").status, 200);
        served += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(served > 5, "{served}");
    let stopping = cluster.expect_event(asked, "stopping", None);
    let (Some(began), Some(stops)) = (event.time(), stopping.time()) else {
        panic!("events without time:\n{}", cluster.output());
    };
    assert!(
        stops.saturating_sub(began) >= Duration::from_millis(950),
        "the drain began {:?} after the stop request",
        stops.saturating_sub(began)
    );
    let status = cluster.wait_exit(PATIENCE).expect("the primary exits");
    assert!(status.success(), "{status:?}:\n{}", cluster.output());
}
