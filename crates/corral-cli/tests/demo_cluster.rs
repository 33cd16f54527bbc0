//! The demo cluster (`corral run` with no command), driven as a user would:
//! real processes, real sockets, real HTTP on 127.0.0.1.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use corral_testkit::{
    ClusterProcess, Hello, Mark, PATIENCE, SCHED_BATCH, SCHED_OTHER, Signal, corral_path, hello,
    http_get, parse_hello, process_alive, scheduling_policy, send_signal, wait_until,
};

fn demo(args: &[&str]) -> ClusterProcess {
    let mut all = vec!["run", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    ClusterProcess::start(corral_path(), &all)
}

/// Sends requests until `workers` distinct workers answered (at most
/// `limit` requests); returns each worker's pid by id.
fn pids_by_id(port: u16, workers: usize, limit: usize) -> HashMap<u32, u32> {
    let mut seen = HashMap::new();
    for _ in 0..limit {
        let Hello { id, pid } = hello(port);
        seen.insert(id, pid);
        if seen.len() == workers {
            break;
        }
    }
    seen
}

#[test]
fn every_worker_answers_with_its_own_id_and_pid() {
    for policy in ["reuseport", "shared", "round-robin", "least-connections"] {
        let cluster = demo(&["--workers", "2", "--policy", policy]);
        let port = cluster.port();
        let seen = pids_by_id(port, 2, 500);
        assert_eq!(seen.len(), 2, "policy {policy}: answers from {seen:?}");
        assert!(seen.contains_key(&1) && seen.contains_key(&2), "{seen:?}");
        let pids: HashSet<u32> = seen.values().copied().collect();
        assert_eq!(pids.len(), 2, "two workers, two processes: {seen:?}");
        let children: HashSet<u32> = cluster.worker_pids().into_iter().collect();
        assert_eq!(
            pids, children,
            "the answering processes are the primary's children"
        );
    }
}

#[test]
fn a_killed_worker_is_replaced_in_its_slot_while_requests_keep_succeeding() {
    let cluster = demo(&["--workers", "2"]);
    let port = cluster.port();
    let before = pids_by_id(port, 2, 500);
    let victim = before[&1];
    send_signal(victim, Signal::KILL);
    let started = Instant::now();
    let mut requests = 0;
    let replacement = loop {
        // `hello` fails the test on any failed request.
        let answer = hello(port);
        requests += 1;
        if answer.id == 1 && answer.pid != victim {
            break answer;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "worker 1 was not replaced:\n{}",
            cluster.output()
        );
    };
    assert!(!process_alive(victim));
    assert_ne!(replacement.pid, victim);
    cluster.expect_event_where(Mark::START, "worker 1 killed by SIGKILL", |event| {
        event.is_of("exit", 1)
            && event.pid == Some(victim)
            && event.has("signal", "SIGKILL")
            && event.has("requested", false)
    });
    cluster.expect_event_where(Mark::START, "worker 1's second start", |event| {
        event.is_of("fork", 1) && event.has("generation", 2)
    });
    eprintln!("{requests} requests succeeded while worker 1 was replaced");
}

#[test]
fn sigterm_lets_an_in_flight_request_finish_then_exits_zero() {
    for policy in ["reuseport", "round-robin"] {
        sigterm_drains_under(policy);
    }
}

fn sigterm_drains_under(policy: &str) {
    let mut cluster = demo(&["--workers", "1", "--grace", "10", "--policy", policy]);
    let port = cluster.port();
    let slow = std::thread::spawn(move || http_get(port, "/sleep/700"));
    cluster.expect_line("sleeping 700ms before answering");
    cluster.signal(Signal::TERM);
    let response = slow
        .join()
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(response.status, 200);
    assert!(parse_hello(&response.body).is_some(), "{response:?}");
    let status = cluster.wait_exit(PATIENCE).expect("the primary exits");
    assert!(
        status.success(),
        "exit status {status:?}:\n{}",
        cluster.output()
    );
    let exits = cluster.events_since(Mark::START);
    assert!(
        exits
            .iter()
            .any(|event| event.is("exit") && event.has("code", 0) && event.has("requested", true)),
        "no worker exited with code 0 as asked:\n{}",
        cluster.output()
    );
}

#[test]
fn a_second_sigterm_stops_at_once() {
    let mut cluster = demo(&["--workers", "1", "--grace", "60"]);
    let port = cluster.port();
    let _slow = std::thread::spawn(move || http_get(port, "/sleep/30000"));
    cluster.expect_line("sleeping 30000ms");
    let asked = cluster.mark();
    cluster.signal(Signal::TERM);
    cluster.expect_event(asked, "stopping", None);
    let second = Instant::now();
    cluster.signal(Signal::TERM);
    cluster.wait_exit(PATIENCE).expect("the primary exits");
    assert!(
        second.elapsed() < Duration::from_secs(5),
        "took {:?}",
        second.elapsed()
    );
    let now = cluster.expect_event(Mark::START, "stopping_now", None);
    assert_eq!(now.level, "WARN", "{now:?}");
}

#[test]
fn killing_the_primary_leaves_no_worker_behind() {
    let mut cluster = demo(&["--workers", "2"]);
    cluster.expect_event(Mark::START, "ready", Some(2));
    cluster.expect_event(Mark::START, "ready", Some(1));
    let workers = cluster.worker_pids();
    assert_eq!(workers.len(), 2, "{workers:?}");
    cluster.signal(Signal::KILL);
    cluster.wait_exit(PATIENCE);
    let killed = Instant::now();
    let gone = wait_until(Duration::from_secs(2), || {
        workers.iter().all(|&pid| !process_alive(pid))
    });
    assert!(gone, "workers {workers:?} outlived their primary");
    eprintln!(
        "workers exited {:?} after the primary was killed",
        killed.elapsed()
    );
}

#[test]
fn ttin_adds_a_worker_and_ttou_removes_it_gracefully() {
    let cluster = demo(&["--workers", "1"]);
    let port = cluster.port();
    cluster.expect_event(Mark::START, "ready", Some(1));
    let added = cluster.mark();
    cluster.signal(Signal::from_named_raw(libc::SIGTTIN).expect("a known signal"));
    cluster.expect_event(added, "ready", Some(2));
    let seen = pids_by_id(port, 2, 500);
    assert_eq!(seen.len(), 2, "the new worker takes connections: {seen:?}");
    let removed = cluster.mark();
    cluster.signal(Signal::from_named_raw(libc::SIGTTOU).expect("a known signal"));
    cluster.expect_event(removed, "disconnect", Some(2));
    let exited = cluster.expect_event_where(removed, "worker 2 exits", |event| {
        event.is_of("exit", 2) && event.pid == Some(seen[&2])
    });
    assert!(exited.has("requested", true), "{exited:?}");
    // Only worker 1 is left, and it is not replaced.
    for _ in 0..20 {
        assert_eq!(hello(port).id, 1);
    }
    assert_eq!(cluster.worker_pids(), vec![seen[&1]]);
}

#[test]
fn workers_killed_again_and_again_are_always_replaced_at_once() {
    let cluster = demo(&["--workers", "2"]);
    let port = cluster.port();
    cluster.expect_event(Mark::START, "ready", Some(1));
    cluster.expect_event(Mark::START, "ready", Some(2));
    for round in 1..=10 {
        let victims = cluster.worker_pids();
        assert_eq!(victims.len(), 2, "round {round}");
        for &pid in &victims {
            send_signal(pid, Signal::KILL);
        }
        let refilled = wait_until(PATIENCE, || {
            let now = cluster.worker_pids();
            now.len() == 2 && now.iter().all(|pid| !victims.contains(pid))
        });
        assert!(
            refilled,
            "round {round}: slots not refilled:\n{}",
            cluster.output()
        );
        for pid in cluster.worker_pids() {
            cluster.expect_event_where(Mark::START, "the replacement is ready", |event| {
                event.is("ready") && event.pid == Some(pid)
            });
        }
        hello(port);
    }
    let events = cluster.events_since(Mark::START);
    assert!(
        !events
            .iter()
            .any(|event| event.is("crash_loop") || event.is("fatal")),
        "{}",
        cluster.output()
    );
}

#[test]
fn the_primary_runs_as_a_batch_task_and_its_workers_as_normal_ones() {
    let cluster = demo(&["--workers", "2", "--policy", "round-robin"]);
    pids_by_id(cluster.port(), 2, 500);
    assert_eq!(scheduling_policy(cluster.pid()), SCHED_BATCH);
    let workers = cluster.worker_pids();
    assert_eq!(workers.len(), 2, "{workers:?}");
    for worker in workers {
        assert_eq!(scheduling_policy(worker), SCHED_OTHER, "worker {worker}");
    }

    let mut command = std::process::Command::new(corral_path());
    command.args(["run", "--listen", "127.0.0.1:0", "--workers", "1"]);
    command.env("CORRAL_PRIMARY_BATCH", "0");
    let normal = ClusterProcess::spawn(command);
    hello(normal.port());
    assert_eq!(scheduling_policy(normal.pid()), SCHED_OTHER, "opted out");
}
