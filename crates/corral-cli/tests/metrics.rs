//! `--metrics ADDR`: the Prometheus endpoint, checked with the real
//! `promtool check metrics` on a live scrape, and the health endpoints a
//! Kubernetes probe or a load balancer asks.

use corral_testkit::{
    ClusterBuilder, PATIENCE, Signal, free_port, hello, http_get, promtool, sample, scrape,
    send_signal, wait_until,
};

#[test]
fn a_live_scrape_passes_promtool_and_counts_restarts_and_reloads() {
    let metrics = free_port();
    let address = format!("127.0.0.1:{metrics}");
    let mut cluster = ClusterBuilder::corral()
        .args(&["--metrics", &address, "--grace", "2"])
        .start();
    let port = cluster.port();

    let text = scrape(metrics);
    match promtool(&text) {
        Some((passed, said)) => assert!(passed, "promtool check metrics: {said}\n{text}"),
        None => eprintln!("promtool is not installed (apt-get install prometheus): not run"),
    }
    assert_eq!(
        sample(&text, "corral_workers{state=\"ready\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(sample(&text, "corral_workers_desired"), Some(2.0));
    for id in ["1", "2"] {
        let memory = format!("corral_worker_resident_memory_bytes{{worker=\"{id}\"}}");
        assert!(
            sample(&text, &memory).is_some_and(|bytes| bytes > 0.0),
            "{text}"
        );
        let cpu = format!("corral_worker_cpu_seconds_total{{worker=\"{id}\"}}");
        assert!(sample(&text, &cpu).is_some(), "{text}");
    }
    assert!(sample(&text, "corral_primary_resident_memory_bytes").is_some_and(|b| b > 0.0));
    assert!(text.contains("corral_listener_queued_connections{address=\"127.0.0.1:"));

    // A worker killed from outside is a restart of its id, reason killed.
    let victim = hello(port);
    send_signal(victim.pid, Signal::KILL);
    let killed = format!(
        "corral_worker_restarts_total{{worker=\"{}\",reason=\"killed\"}}",
        victim.id
    );
    assert!(
        wait_until(PATIENCE, || sample(&scrape(metrics), &killed) == Some(1.0)),
        "{}",
        scrape(metrics)
    );
    // Label values are worker ids, never pids.
    assert!(!scrape(metrics).contains(&format!("\"{}\"", victim.pid)));

    // A rolling reload is counted, and its duration observed.
    cluster.signal(Signal::HUP);
    let completed = "corral_reloads_total{result=\"completed\"}";
    assert!(
        wait_until(PATIENCE, || sample(&scrape(metrics), completed)
            == Some(1.0)),
        "{}",
        scrape(metrics)
    );
    let text = scrape(metrics);
    assert_eq!(
        sample(&text, "corral_reload_duration_seconds_count"),
        Some(1.0)
    );
    if let Some((passed, said)) = promtool(&text) {
        assert!(passed, "promtool after a reload: {said}\n{text}");
    }

    cluster.stop_gracefully(PATIENCE);
}

#[test]
fn health_and_readiness_answer_as_probes_expect() {
    let metrics = free_port();
    let address = format!("127.0.0.1:{metrics}");
    // Workers that never say they are ready (--ready message).
    let cluster = ClusterBuilder::corral()
        .args(&[
            "--metrics",
            &address,
            "--ready",
            "message",
            "--ready-timeout",
            "30",
        ])
        .command(&["sh", "-c", "exec sleep 30"])
        .no_wait()
        .start();
    assert!(wait_until(PATIENCE, || http_get(metrics, "/healthz")
        .is_ok_and(|response| response.status == 200)));
    assert_eq!(http_get(metrics, "/readyz").unwrap().status, 503);
    assert_eq!(http_get(metrics, "/nope").unwrap().status, 404);
    drop(cluster);

    let metrics = free_port();
    let address = format!("127.0.0.1:{metrics}");
    let cluster = ClusterBuilder::corral()
        .args(&["--metrics", &address])
        .start();
    assert_eq!(http_get(metrics, "/readyz").unwrap().status, 200);
    assert_eq!(http_get(metrics, "/readyz?all").unwrap().status, 200);
    drop(cluster);
}
