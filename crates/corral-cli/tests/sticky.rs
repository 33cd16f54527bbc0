//! The `sticky` policy: the primary accepts and a client's source address
//! picks its worker, across that worker's restarts. Clients come from
//! different loopback addresses (127.0.0.2 …) with `curl --interface`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use corral_testkit::{
    ClusterBuilder, ClusterProcess, Mark, Signal, corral_path, get_from, node_available, node_with,
    parse_hello, send_signal,
};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/node");

/// Who answered a request: (worker id, pid).
type Answer = (u32, u32);

/// The demo worker that answered a request from `from`.
fn demo_answer(from: &str, port: u16) -> Answer {
    let body = get_from(from, port);
    let hello = parse_hello(&body).unwrap_or_else(|| panic!("not a greeting: {body:?}"));
    (hello.id, hello.pid)
}

/// The Node worker that answered (`worker <id> pid <pid>`) from `from`.
fn node_answer(from: &str, port: u16) -> Answer {
    let body = get_from(from, port);
    let words: Vec<&str> = body.split_whitespace().collect();
    match (words.get(1), words.get(3)) {
        (Some(id), Some(pid)) => (
            id.parse().expect("a worker id"),
            pid.parse().expect("a pid"),
        ),
        _ => panic!("not worker_ids.js's answer: {body:?}"),
    }
}

/// The workers that served 20 connections from `from`.
fn workers_of_20(from: &str, worker_for: impl Fn(&str) -> u32) -> BTreeSet<u32> {
    (0..20).map(|_| worker_for(from)).collect()
}

/// The worker of each client 127.0.0.2 … 127.0.0.40.
fn workers_of_clients(worker_for: impl Fn(&str) -> u32) -> BTreeMap<String, u32> {
    (2..=40)
        .map(|last| {
            let from = format!("127.0.0.{last}");
            let worker = worker_for(&from);
            (from, worker)
        })
        .collect()
}

/// `measure`, again while a worker was rested as stalled during it (at
/// most 5 rounds): a loaded machine can deschedule a worker past the
/// stall check, which rests it on purpose, and its clients go elsewhere
/// for that time; only a round without a stall measures stickiness.
fn without_stalls<T>(cluster: &ClusterProcess, measure: impl Fn() -> T) -> T {
    let mut rounds = 1;
    loop {
        let since = cluster.mark();
        let measured = measure();
        let stalled = cluster
            .events_since(since)
            .iter()
            .any(|event| event.is("worker_stalled"));
        if !stalled || rounds == 5 {
            return measured;
        }
        rounds += 1;
    }
}

fn assert_spread(clients: &BTreeMap<String, u32>, cluster: &ClusterProcess) {
    let workers: BTreeSet<u32> = clients.values().copied().collect();
    assert_eq!(
        workers,
        BTreeSet::from([1, 2]),
        "39 clients spread over both workers: {clients:?}; output:\n{}",
        cluster.output()
    );
}

/// Kills the worker of slot `slot` (pid `pid`) and waits for its
/// replacement to be ready.
fn kill_and_await_replacement(cluster: &ClusterProcess, slot: u32, pid: u32) {
    let since = cluster.mark();
    send_signal(pid, Signal::KILL);
    cluster.expect_event(since, "ready", Some(slot));
}

/// 20 connections from 127.0.0.2 land on one worker; after that worker
/// is killed and replaced, on the same slot again; clients from 39
/// addresses spread over both workers.
fn assert_sticky_across_restart(cluster: &ClusterProcess, answer: impl Fn(&str) -> Answer) {
    let worker_for = |from: &str| answer(from).0;
    let before = without_stalls(cluster, || workers_of_20("127.0.0.2", worker_for));
    assert_eq!(before.len(), 1, "20 connections on one worker: {before:?}");
    let (slot, pid) = answer("127.0.0.2");
    kill_and_await_replacement(cluster, slot, pid);
    let after = without_stalls(cluster, || workers_of_20("127.0.0.2", worker_for));
    assert_eq!(after, before, "the same slot after its restart");
    assert_ne!(answer("127.0.0.2").1, pid, "served by the replacement");
    assert_spread(
        &without_stalls(cluster, || workers_of_clients(worker_for)),
        cluster,
    );
}

#[test]
fn a_client_keeps_its_worker_across_that_workers_restart() {
    let cluster = ClusterBuilder::corral().policy("sticky").start();
    let port = cluster.port();
    assert_sticky_across_restart(&cluster, |from| demo_answer(from, port));
}

#[test]
fn clients_of_a_worker_that_is_down_go_to_the_other_and_come_back() {
    let cluster = ClusterBuilder::corral().policy("sticky").start();
    let port = cluster.port();
    let worker_for = |from: &str| demo_answer(from, port).0;
    let clients = without_stalls(&cluster, || workers_of_clients(worker_for));
    assert_spread(&clients, &cluster);
    let (client_of_two, _) = clients
        .iter()
        .find(|(_, worker)| **worker == 2)
        .expect("a client of worker 2");
    let (_, victim) = demo_answer(client_of_two, port);
    let since = cluster.mark();
    send_signal(victim, Signal::KILL);
    // Requests during the restart are all served (by worker 1, or by the
    // replacement once ready).
    for from in clients.keys().take(10) {
        let worker = worker_for(from);
        assert!([1, 2].contains(&worker));
    }
    cluster.expect_event(since, "ready", Some(2));
    let after = without_stalls(&cluster, || workers_of_clients(worker_for));
    assert_eq!(after, clients, "output:\n{}", cluster.output());
}

/// `corral run -w 2 --policy POLICY -- node fixtures/node/FIXTURE`, with
/// both workers ready.
fn node_cluster(policy: &str, fixture: &str) -> ClusterProcess {
    let mut command = Command::new(corral_path());
    command
        .args(["run", "-w", "2", "--grace", "5", "--policy", policy])
        .args(["--", "node", &format!("{FIXTURES}/{fixture}")])
        .env("PORT", "0");
    let cluster = ClusterProcess::spawn(command);
    cluster.expect_event(Mark::START, "ready", Some(1));
    cluster.expect_event(Mark::START, "ready", Some(2));
    cluster
}

#[test]
fn a_node_program_under_sticky() {
    if !node_available() {
        return;
    }
    let cluster = node_cluster("sticky", "worker_ids.js");
    let port = cluster.bound_port();
    assert_sticky_across_restart(&cluster, |from| node_answer(from, port));
}

/// Runs the socket.io long-polling client of `fixtures/node` against
/// `port`: `ok <worker ids>` or `failed <reason>`.
fn socket_io_client(port: u16) -> String {
    let output = Command::new("node")
        .arg(format!("{FIXTURES}/sticky_polling_client.js"))
        .arg(port.to_string())
        .arg("10")
        .output()
        .expect("node runs");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
fn socket_io_long_polling_needs_sticky() {
    if !node_with(&["socket.io"]) {
        return;
    }
    for (policy, works) in [("sticky", true), ("round-robin", false)] {
        let cluster = node_cluster(policy, "sticky_polling.js");
        let port = cluster.bound_port();
        for _ in 0..3 {
            let answer = socket_io_client(port);
            // Each polling request is a new connection: under round-robin
            // the second reaches the worker without the session.
            assert_eq!(
                answer.starts_with("ok "),
                works,
                "{policy}: {answer}; output:\n{}",
                cluster.output()
            );
        }
    }
}
