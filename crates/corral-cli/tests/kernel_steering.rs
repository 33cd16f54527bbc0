//! Kernel steering: `round-robin` and `least-connections` served by the
//! `SK_REUSEPORT` program over per-slot sockets, each worker accepting on
//! its own listening socket; and the hand-off fallback where the program
//! cannot load. These tests run as root (CI does); without the capability
//! they check the fallback instead, and say so.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::Command;

use corral_testkit::{
    ClusterBuilder, ClusterProcess, KeepAlive, Load, Mark, PATIENCE, Signal, corral_path, get_from,
    hello, http_get, node_available, parse_hello, private_runtime_dir, send_signal, wait_until,
};

const ENV_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/env_server.py");
const HOLD_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hold_server.py");
const NODE_HOLD_SERVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/node/hold_server.js"
);
const NODE_WORKER_IDS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/node/worker_ids.js"
);

/// Whether this process may load BPF programs (root with every
/// capability, as CI runs).
fn can_steer() -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        eprintln!("not root: kernel steering cannot load here, only the fallback is tested");
    }
    root
}

/// The `steering` field of each listener in `status --json`.
fn steering(cluster: &ClusterProcess) -> Vec<String> {
    let status = cluster.status_json();
    status["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .map(|listener| listener["steering"].as_str().unwrap_or("null").to_string())
        .collect()
}

/// Asserts that `ids` alternates: no worker twice in a row, and each of
/// `workers` takes its exact share.
fn assert_exact_rotation(ids: &[u32], workers: u32, cluster: &ClusterProcess) {
    let repeated = ids.windows(2).position(|pair| pair[0] == pair[1]);
    assert_eq!(
        repeated,
        None,
        "the rotation broke: {ids:?}\n{}",
        cluster.output()
    );
    for id in 1..=workers {
        let share = ids.iter().filter(|&&served| served == id).count();
        assert_eq!(share, ids.len() / workers as usize, "worker {id}: {ids:?}");
    }
}

#[test]
fn round_robin_alternates_exactly_over_100_fresh_connections_to_demo_workers() {
    let cluster = ClusterBuilder::corral().policy("round-robin").start();
    let port = cluster.port();
    let expected = if can_steer() { "kernel" } else { "hand-off" };
    assert_eq!(steering(&cluster), vec![expected]);
    cluster.expect_line(&format!("round-robin {}", how(expected)));
    let ids: Vec<u32> = (0..100).map(|_| hello(port).id).collect();
    assert_exact_rotation(&ids, 2, &cluster);
}

fn how(steering: &str) -> &'static str {
    match steering {
        "kernel" => "steered in the kernel",
        _ => "served by the primary's hand-off",
    }
}

/// The worker id in the Python fixture's answer.
fn python_worker(port: u16) -> u32 {
    let body = http_get(port, "/").expect("the Python worker answers").body;
    let words: Vec<&str> = body.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"python"), "{body:?}");
    words[2].parse().expect("a worker id")
}

#[test]
fn a_python_server_on_fd_3_gets_an_exact_rotation_under_round_robin() {
    if !can_steer() {
        return;
    }
    // socket.socket(fileno=3): a server that only knows a listening
    // socket, which the hand-off path cannot serve.
    let cluster = ClusterBuilder::corral()
        .policy("round-robin")
        .command(&["python3", ENV_SERVER])
        .start();
    let port = cluster.port();
    assert_eq!(steering(&cluster), vec!["kernel"]);
    let ids: Vec<u32> = (0..100).map(|_| python_worker(port)).collect();
    assert_exact_rotation(&ids, 2, &cluster);
}

/// The worker id in the Node fixture's answer (`worker N pid P`).
fn node_worker(port: u16) -> u32 {
    let body = http_get(port, "/").expect("the Node worker answers").body;
    let words: Vec<&str> = body.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"worker"), "{body:?}");
    words[1].parse().expect("a worker id")
}

#[test]
fn a_node_cluster_program_gets_its_slot_socket_and_an_exact_rotation() {
    if !can_steer() || !node_available() {
        return;
    }
    let mut command = Command::new(corral_path());
    command
        .args(["run", "-w", "2", "--policy", "round-robin", "--", "node"])
        .arg(NODE_WORKER_IDS)
        .env("PORT", "0")
        .env("XDG_RUNTIME_DIR", private_runtime_dir());
    let cluster = ClusterProcess::spawn(command);
    corral_testkit::wait_ready(&cluster, Mark::START, 2);
    let port = cluster.port();
    cluster.expect_line("Node workers' listen(): round-robin steered in the kernel");
    // Each worker's listen() got its slot's own socket: no newconn.
    cluster.expect_line("steered in the kernel: one socket per worker slot");
    assert_eq!(steering(&cluster), vec!["kernel"]);
    let ids: Vec<u32> = (0..100).map(|_| node_worker(port)).collect();
    assert_exact_rotation(&ids, 2, &cluster);
}

/// The demo worker that answered `GET /` from the source address `from`.
fn worker_from(from: &str, port: u16) -> u32 {
    let body = get_from(from, port);
    parse_hello(&body)
        .unwrap_or_else(|| panic!("not a greeting from {from}: {body:?}"))
        .id
}

/// The slot each client 127.0.0.2 … 127.0.0.30 lands on.
fn sticky_slots(port: u16) -> Vec<u32> {
    (2..=30)
        .map(|last| worker_from(&format!("127.0.0.{last}"), port))
        .collect()
}

#[test]
fn sticky_in_the_kernel_sends_each_client_where_the_hand_off_would() {
    if !can_steer() {
        return;
    }
    let kernel = ClusterBuilder::corral().policy("sticky").workers(3).start();
    assert_eq!(steering(&kernel), vec!["kernel"]);
    let port = kernel.port();
    let in_kernel = sticky_slots(port);
    let again: HashSet<u32> = (0..20).map(|_| worker_from("127.0.0.2", port)).collect();
    assert_eq!(again.len(), 1, "20 connections from one client, one worker");
    drop(kernel);
    let hand_off = ClusterBuilder::corral()
        .policy("sticky")
        .workers(3)
        .args(&["--kernel-steering", "off"])
        .start();
    assert_eq!(steering(&hand_off), vec!["hand-off"]);
    // A worker descheduled past the hand-off's stall check (a loaded
    // machine) is rested on purpose and its clients go elsewhere meanwhile:
    // only a round without a stall compares.
    let mut by_hand_off = Vec::new();
    for _ in 0..5 {
        let since = hand_off.mark();
        by_hand_off = sticky_slots(hand_off.port());
        let stalled = hand_off
            .events_since(since)
            .iter()
            .any(|event| event.is("worker_stalled"));
        if !stalled {
            break;
        }
    }
    assert_eq!(in_kernel, by_hand_off, "the same table and hash both ways");
    let used: HashSet<u32> = in_kernel.iter().copied().collect();
    assert_eq!(used.len(), 3, "29 clients over 3 workers: {in_kernel:?}");
}

#[test]
fn least_connections_in_the_kernel_steers_new_connections_away_from_a_busy_worker() {
    if !can_steer() {
        return;
    }
    let cluster = ClusterBuilder::corral().policy("least-connections").start();
    assert_eq!(steering(&cluster), vec!["kernel"]);
    assert_eq!(connection_counts(&cluster), vec!["kernel"]);
    assert_avoids_a_busy_demo_worker(cluster.port());
}

/// Twenty held connections, which least-connections spreads evenly; once
/// worker 2's close, new connections avoid worker 1 and its ten.
fn assert_avoids_a_busy_demo_worker(port: u16) {
    let (on_one, on_two) = KeepAlive::twenty_split_evenly(port);
    drop(on_two);
    // The closes are counted within a moment (the kernel: when the worker
    // closes its side; reports: within their pace); until then a round
    // may still alternate.
    let mut ids = Vec::new();
    let avoided = wait_until(PATIENCE, || {
        ids = (0..20).map(|_| hello(port).id).collect();
        ids.iter().filter(|&&id| id == 2).count() >= 15
    });
    assert!(
        avoided,
        "new connections should avoid the busy worker 1: {ids:?}"
    );
    drop(on_one);
}

/// `corral run` of `builder` in a mount namespace of its own without the
/// cgroup2 file system: kernel steering loads, but least-connections'
/// counter has no cgroup to attach to (as in a container that does not
/// mount it).
fn without_cgroup2(builder: ClusterBuilder) -> ClusterProcess {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let points: Vec<&str> = mountinfo
        .lines()
        .filter(|line| {
            line.split(" - ")
                .nth(1)
                .is_some_and(|fs| fs.starts_with("cgroup2 "))
        })
        .filter_map(|line| line.split(' ').nth(4))
        .collect();
    let script = format!("umount -l {} && exec \"$@\"", points.join(" "));
    let unshare = [
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        &script,
        "sh",
    ];
    wrapped("unshare", &unshare, builder)
}

/// `corral run` of `builder`, run by `program` with `args` (which exec it
/// with the rest of the command line).
fn wrapped(program: &str, args: &[&str], builder: ClusterBuilder) -> ClusterProcess {
    let inner = builder.command_line();
    let mut command = Command::new(program);
    command
        .args(args)
        .arg(inner.get_program())
        .args(inner.get_args());
    for (name, value) in inner.get_envs() {
        if let Some(value) = value {
            command.env(name, value);
        }
    }
    ClusterProcess::spawn(command)
}

#[test]
fn without_a_cgroup2_mount_least_connections_counts_from_worker_reports() {
    if !can_steer() {
        return;
    }
    let cluster = without_cgroup2(ClusterBuilder::corral().policy("least-connections"));
    corral_testkit::wait_ready(&cluster, Mark::START, 2);
    let line = cluster.expect_line(
        "least-connections steered in the kernel, open connections counted from worker reports",
    );
    assert!(line.contains("no cgroup2 file system is mounted"), "{line}");
    assert_eq!(steering(&cluster), vec!["kernel"]);
    assert_eq!(connection_counts(&cluster), vec!["worker-reports"]);
    let status = cluster.control(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("connections counted: worker-reports"),
        "{text}"
    );
    // The demo workers report their closes.
    assert_avoids_a_busy_demo_worker(cluster.port());
}

/// A connection to a greeting server (`hold_server.py`, `hold_server.js`),
/// held open: the worker that greeted it.
struct Held {
    _stream: TcpStream,
    worker: u32,
    pid: u32,
}

/// Connects and reads the greeting ("… worker ID pid PID").
fn greeted(port: u16) -> Held {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .expect("a greeting");
    let words: Vec<&str> = line.split_whitespace().collect();
    let position = words.iter().position(|&word| word == "worker");
    let number = |index: usize| -> u32 {
        words
            .get(index)
            .and_then(|word| word.parse().ok())
            .unwrap_or_else(|| panic!("not a greeting: {line:?}"))
    };
    let at = position.unwrap_or_else(|| panic!("not a greeting: {line:?}"));
    Held {
        _stream: stream,
        worker: number(at + 1),
        pid: number(at + 3),
    }
}

/// Twenty held connections, which least-connections spreads evenly over
/// two workers: (those on worker 1, those on worker 2). Evenly within
/// two: a connection just closed by the client may still count for a
/// moment, until its worker closes its side.
fn twenty_held(port: u16) -> (Vec<Held>, Vec<Held>) {
    let held: Vec<Held> = (0..20).map(|_| greeted(port)).collect();
    let split: (Vec<Held>, Vec<Held>) = held.into_iter().partition(|held| held.worker == 1);
    assert!(
        (8..=12).contains(&split.0.len()),
        "held connections spread evenly: {} and {}",
        split.0.len(),
        split.1.len()
    );
    split
}

/// Which workers greet 20 fresh connections, each closed at once, once
/// `accepted` holds of them (within `PATIENCE`: closes are counted when
/// the worker closes its side, a moment after the client).
fn fresh_workers_until(port: u16, accepted: impl Fn(&[u32]) -> bool) -> Vec<u32> {
    let mut workers = Vec::new();
    wait_until(PATIENCE, || {
        workers = (0..20).map(|_| greeted(port).worker).collect();
        accepted(&workers)
    });
    workers
}

fn shared(workers: &[u32]) -> bool {
    (1..=2).all(|id| workers.iter().filter(|&&worker| worker == id).count() >= 5)
}

/// The `connection_counts` field of each listener in `status --json`.
fn connection_counts(cluster: &ClusterProcess) -> Vec<String> {
    let status = cluster.status_json();
    status["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .map(|listener| {
            listener["connection_counts"]
                .as_str()
                .unwrap_or("null")
                .to_string()
        })
        .collect()
}

/// Least-connections over two workers that report nothing, counted in the
/// kernel: new connections avoid the worker holding about ten open ones, are
/// shared again once those close, and a killed worker's count drops.
fn assert_counted_in_the_kernel(cluster: &ClusterProcess, port: u16) {
    assert_eq!(connection_counts(cluster), vec!["kernel"]);
    let (on_one, on_two) = twenty_held(port);
    drop(on_two);
    let workers = fresh_workers_until(port, |workers| workers.iter().all(|&id| id == 2));
    assert!(
        workers.iter().all(|&id| id == 2),
        "new connections should avoid worker 1 and its 10 open ones: {workers:?}"
    );
    drop(on_one);
    let workers = fresh_workers_until(port, shared);
    assert!(
        shared(&workers),
        "shared again once they closed: {workers:?}"
    );
    // Worker 1 killed with ten connections open: the kernel closes them,
    // and its replacement starts at its slot's true count, none.
    let (on_one, on_two) = twenty_held(port);
    drop(on_two);
    let mark = cluster.mark();
    send_signal(on_one[0].pid, Signal::KILL);
    cluster.expect_event(mark, "exit", Some(1));
    cluster.expect_event(mark, "ready", Some(1));
    let workers = fresh_workers_until(port, shared);
    assert!(
        shared(&workers),
        "the killed worker's count dropped: {workers:?}"
    );
    drop(on_one);
}

#[test]
fn least_connections_counts_a_python_server_on_fd_3_in_the_kernel() {
    if !can_steer() {
        return;
    }
    // socket.socket(fileno=3), sending corral nothing.
    let cluster = ClusterBuilder::corral()
        .policy("least-connections")
        .command(&["python3", HOLD_SERVER])
        .start();
    cluster.expect_line(
        "least-connections steered in the kernel, open connections counted in the kernel",
    );
    assert_counted_in_the_kernel(&cluster, cluster.port());
}

#[test]
fn least_connections_counts_a_node_program_in_the_kernel() {
    if !can_steer() || !node_available() {
        return;
    }
    let mut command = Command::new(corral_path());
    command
        .args([
            "run",
            "-w",
            "2",
            "--policy",
            "least-connections",
            "--",
            "node",
        ])
        .arg(NODE_HOLD_SERVER)
        .env("PORT", "0")
        .env("XDG_RUNTIME_DIR", private_runtime_dir());
    let cluster = ClusterProcess::spawn(command);
    corral_testkit::wait_ready(&cluster, Mark::START, 2);
    cluster.expect_line(
        "Node workers' listen(): least-connections steered in the kernel, open connections \
         counted in the kernel",
    );
    assert_counted_in_the_kernel(&cluster, cluster.port());
}

#[test]
fn a_killed_worker_gets_no_new_connection_and_none_is_lost() {
    if !can_steer() {
        return;
    }
    let cluster = ClusterBuilder::corral()
        .policy("round-robin")
        .args(&["--grace", "5"])
        .start();
    let port = cluster.port();
    let killed = hello(port);
    let mark = cluster.mark();
    send_signal(killed.pid, Signal::KILL);
    cluster.expect_event(mark, "exit", Some(killed.id));
    // Until its replacement is ready, every connection goes to the other
    // worker; after, the two alternate again. The killed pid never answers.
    let served: Vec<_> = (0..40).map(|_| hello(port)).collect();
    assert!(
        served.iter().all(|hello| hello.pid != killed.pid),
        "the killed worker answered"
    );
    cluster.expect_event(mark, "ready", Some(killed.id));
    let ids: Vec<u32> = (0..10).map(|_| hello(port).id).collect();
    assert_exact_rotation(&ids, 2, &cluster);
}

#[test]
fn a_draining_worker_gets_no_new_connection() {
    if !can_steer() {
        return;
    }
    let cluster = ClusterBuilder::corral()
        .policy("round-robin")
        .workers(3)
        .args(&["--grace", "5"])
        .start();
    let port = cluster.port();
    // The rotation gives worker 3 the connection after worker 2's: a
    // request in flight there keeps it draining after `scale 2`.
    while hello(port).id != 2 {}
    let slow = std::thread::spawn(move || http_get(port, "/sleep/1500"));
    let mark = cluster.mark();
    let scaled = cluster.control(&["scale", "2"]);
    assert!(scaled.status.success(), "{scaled:?}");
    cluster.expect_event(mark, "disconnect", Some(3));
    let ids: HashSet<u32> = (0..30).map(|_| hello(port).id).collect();
    assert_eq!(ids, HashSet::from([1, 2]), "worker 3 drains");
    assert_eq!(slow.join().unwrap().expect("the slow request").status, 200);
}

#[test]
fn five_reloads_under_new_connection_and_keep_alive_load_lose_nothing() {
    if !can_steer() {
        return;
    }
    let cluster = ClusterBuilder::corral()
        .policy("least-connections")
        .args(&["--grace", "5"])
        .start();
    let port = cluster.port();
    assert_eq!(steering(&cluster), vec!["kernel"]);
    let fresh = Load::start(port, 2);
    let kept = Load::keep_alive(port, 2);
    for _ in 0..5 {
        fresh.wait_for_more(20);
        let mark = cluster.mark();
        cluster.signal(Signal::HUP);
        cluster.expect_event(mark, "reload_completed", None);
    }
    fresh.wait_for_more(20);
    kept.wait_for_more(20);
    fresh
        .stop()
        .assert_none_lost("least-connections in the kernel, new connections, 5 reloads");
    kept.stop()
        .assert_none_lost("least-connections in the kernel, keep-alive, 5 reloads");
}

/// `corral run` of `builder` with every capability dropped (`setpriv`), as
/// an unprivileged primary or a locked-down container runs.
fn without_capabilities(builder: ClusterBuilder) -> ClusterProcess {
    let setpriv = ["--inh-caps=-all", "--bounding-set=-all", "--"];
    wrapped("setpriv", &setpriv, builder)
}

#[test]
fn without_the_capability_the_hand_off_serves_and_says_so() {
    if !can_steer() {
        return;
    }
    let cluster = without_capabilities(ClusterBuilder::corral().policy("round-robin"));
    let port = cluster.port();
    corral_testkit::wait_ready(&cluster, Mark::START, 2);
    let line = cluster.expect_line("round-robin served by the primary's hand-off");
    assert!(line.contains("CAP_BPF"), "{line}");
    assert_eq!(steering(&cluster), vec!["hand-off"]);
    let ids: Vec<u32> = (0..20).map(|_| hello(port).id).collect();
    assert_exact_rotation(&ids, 2, &cluster);
}

#[test]
fn kernel_steering_off_keeps_the_hand_off() {
    let cluster = ClusterBuilder::corral()
        .policy("least-connections")
        .args(&["--kernel-steering", "off"])
        .start();
    let port = cluster.port();
    cluster.expect_line(
        "least-connections served by the primary's hand-off: --kernel-steering is off",
    );
    assert_eq!(steering(&cluster), vec!["hand-off"]);
    let status = cluster.control(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("steering: hand-off"), "{text}");
    assert!(wait_until(PATIENCE, || hello(port).id > 0));
}

#[test]
fn reuseport_shows_no_steering() {
    let cluster = ClusterBuilder::corral().policy("reuseport").start();
    assert_eq!(steering(&cluster), vec!["null"]);
}
