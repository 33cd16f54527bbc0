//! The message channel with workers in other languages: a Python worker
//! speaking the documented protocol, and an unmodified Node program using
//! `process.send` and `process.on('message')`.

use std::time::Duration;

use corral_testkit::{
    ClusterBuilder, ClusterProcess, Mark, PATIENCE, Signal, corral_path, http_get, node_available,
    resident_kib,
};

const MESSENGER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/messenger.py");
const NODE_WORKER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/node_worker.js");

fn messenger(extra_env: &[(&str, &str)], extra_args: &[&str]) -> ClusterProcess {
    let mut cluster = ClusterBuilder::corral()
        .args(extra_args)
        .command(&["python3", MESSENGER]);
    for (name, value) in extra_env {
        cluster = cluster.env(name, value);
    }
    cluster.start()
}

#[test]
fn messages_from_workers_are_logged_and_relayed_between_workers() {
    let cluster = messenger(&[], &[]);
    cluster.expect_line(r#"message from worker 1: {"hello":1}"#);
    cluster.expect_line(r#"message from worker 2: {"hello":2}"#);
    // Worker 2 asked the primary to deliver to worker 1, naming the sender;
    // the message arrives as worker 2 wrote it (Python's `json.dumps`
    // spacing), byte for byte.
    cluster.expect_line(r#"[worker 1] got {"corral":{"from":2,"message":{"ping": "from 2"}}}"#);
    // Without --on-message broadcast, user messages are not relayed.
    assert!(!cluster.output().contains(r#"got {"invalidate""#));
}

#[test]
fn on_message_broadcast_relays_to_every_other_worker() {
    let cluster = messenger(&[], &["--on-message", "broadcast"]);
    // Relayed as the sender wrote it, byte for byte (Python's spacing).
    cluster.expect_line(r#"[worker 2] got {"invalidate": "users"}"#);
    cluster.expect_line(r#"[worker 1] got {"hello": 2}"#);
    cluster.expect_line(r#"[worker 2] got {"hello": 1}"#);
    assert!(
        !cluster.output().contains(r#"[worker 1] got {"invalidate""#),
        "not back to the sender"
    );
}

#[test]
fn malformed_and_oversized_messages_are_dropped_and_logged_against_the_worker() {
    let cluster = messenger(&[("BAD_INPUT", "1")], &["--max-message-size", "2048"]);
    cluster.expect_line("worker 1: dropped a malformed message: not a JSON value");
    cluster.expect_line("worker 1: dropped a malformed message: unknown corral message");
    cluster.expect_line("worker 1: dropped a 5002-byte message, over the 2048-byte limit");
    // The worker's next, valid messages still arrive; the cluster is whole.
    cluster.expect_line(r#"message from worker 1: {"hello":1}"#);
    cluster.expect_line(r#"[worker 1] got {"corral":{"from":2,"#);
    assert_eq!(cluster.worker_pids().len(), 2);
}

#[test]
fn an_unmodified_node_program_uses_process_send_and_gets_shutdown() {
    if !node_available() {
        return;
    }
    let mut cluster = ClusterProcess::start(
        corral_path(),
        &[
            "run",
            "-w",
            "2",
            "-l",
            "127.0.0.1:0",
            "--grace",
            "5",
            "--",
            "node",
            NODE_WORKER,
        ],
    );
    let port = cluster.port();
    cluster.expect_line(r#"message from worker 1: {"hello":1}"#);
    cluster.expect_line(r#"message from worker 2: {"hello":2}"#);
    assert!(
        !cluster
            .output()
            .contains(r#"message from worker 1: "ready""#),
        "'ready' is pm2's ready signal"
    );
    let response = http_get(port, "/").unwrap();
    assert!(response.body.starts_with("node worker "), "{response:?}");
    cluster.signal(Signal::TERM);
    cluster.expect_line(r#"[worker 1] got "shutdown""#);
    cluster.expect_line("[worker 1] closed cleanly");
    cluster.expect_line("[worker 2] closed cleanly");
    let status = cluster.wait_exit(PATIENCE).expect("the cluster stops");
    assert!(status.success());
    let events = cluster.events_since(Mark::START);
    assert!(
        events
            .iter()
            .any(|event| event.is("exit") && event.has("code", 0) && event.has("requested", true)),
        "{}",
        cluster.output()
    );
}

#[test]
fn a_flooding_worker_neither_stalls_the_primary_nor_grows_its_memory() {
    const FLOODER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/flooder.py");
    let mut cluster = ClusterBuilder::corral()
        .args(&["--grace", "1"])
        .command(&["python3", FLOODER])
        .start();
    cluster.expect_line("[worker 1] flooding");
    cluster.expect_line("[worker 2] calm");
    let primary = cluster.pid();
    let mut peak = 0;
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        peak = peak.max(resident_kib(primary).unwrap_or(0));
    }
    assert!(
        peak < 64 * 1024,
        "the primary grew to {peak} KiB under the flood"
    );
    // The supervisor still answers: it scales up, then stops, promptly.
    cluster.signal(Signal::from_named_raw(libc::SIGTTIN).expect("a known signal"));
    cluster.expect_line("[worker 3] calm");
    cluster.signal(Signal::TERM);
    let status = cluster.wait_exit(PATIENCE).expect("the cluster stops");
    assert!(status.success(), "{status:?}");
    // Measured between corral's own timestamps, whenever this thread woke.
    let stopping = cluster.expect_event(Mark::START, "stopping", None);
    let stopped = cluster.expect_event(Mark::START, "stopped", None);
    let took = stopped.time().unwrap() - stopping.time().unwrap();
    assert!(took < Duration::from_secs(4), "the stop took {took:?}");
}
