//! Unmodified Node `cluster` programs (the tutorials' own shapes, in
//! `fixtures/node/`) and a plain Express app, run by real Node under
//! `corral run -w 2 -- node app.js`, with corral as their primary: every
//! worker is a Node cluster worker, every `listen()` is answered by corral.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use corral_testkit::{
    ClusterProcess, Load, Mark, PATIENCE, SCHED_OTHER, Signal, corral_path, free_port, http_get,
    node_with, process_alive, scheduling_policy, send_signal, wait_until,
};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/node");

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

/// Node (and for Express, the fixtures' node_modules) present, else a
/// line saying what to install.
fn have_node(needs_express: bool) -> bool {
    node_with(if needs_express { &["express"] } else { &[] })
}

/// `corral run -w 2 --grace 5 EXTRA -- node FIXTURE` with `PORT=0` (or as
/// `env` says); returns once both workers are ready.
fn start(name: &str, extra: &[&str], env: &[(&str, &str)]) -> ClusterProcess {
    let mut command = Command::new(corral_path());
    command
        .args(["run", "-w", "2", "--grace", "5"])
        .args(extra)
        .arg("--")
        .arg("node")
        .arg(fixture(name))
        .env("PORT", "0");
    for (key, value) in env {
        command.env(key, value);
    }
    let cluster = ClusterProcess::spawn(command);
    cluster.expect_event(Mark::START, "ready", Some(1));
    cluster.expect_event(Mark::START, "ready", Some(2));
    cluster
}

/// The cluster's processes (its workers and whatever they started) that
/// run `name`.
fn node_processes(cluster: &ClusterProcess, name: &str) -> Vec<u32> {
    let path = fixture(name);
    let mut found = Vec::new();
    let mut parents = vec![cluster.pid()];
    while let Some(parent) = parents.pop() {
        let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        for child in children
            .split_whitespace()
            .filter_map(|pid| pid.parse::<u32>().ok())
        {
            parents.push(child);
            let runs_it = std::fs::read(format!("/proc/{child}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&path));
            if runs_it && process_alive(child) {
                found.push(child);
            }
        }
    }
    found
}

/// Waits until the cluster runs exactly `count` processes of `name`.
fn expect_node_processes(cluster: &ClusterProcess, name: &str, count: usize) {
    assert!(
        wait_until(PATIENCE, || node_processes(cluster, name).len() == count),
        "expected {count} Node processes, found {:?}\n{}",
        node_processes(cluster, name),
        cluster.output()
    );
}

/// The bodies of `count` requests, each on a new connection.
fn bodies(port: u16, path: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|_| {
            let response = http_get(port, path).expect("the cluster answers");
            assert_eq!(response.status, 200, "{response:?}");
            response.body
        })
        .collect()
}

/// Requests until `distinct` different bodies were seen (at most 200).
fn distinct_bodies(port: u16, distinct: usize) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..200 {
        let body = bodies(port, "/", 1).remove(0);
        if !seen.contains(&body) {
            seen.push(body);
        }
        if seen.len() >= distinct {
            break;
        }
    }
    seen
}

/// TERM; the cluster exits 0 and leaves no process of `name` behind.
fn stop_cleanly(mut cluster: ClusterProcess, name: &str) {
    let workers = node_processes(&cluster, name);
    cluster.signal(Signal::TERM);
    let status = cluster.wait_exit(PATIENCE).expect("the cluster stops");
    assert!(status.success(), "{status:?}\n{}", cluster.output());
    let left: Vec<u32> = workers
        .into_iter()
        .filter(|&pid| process_alive(pid))
        .collect();
    assert!(left.is_empty(), "Node processes left: {left:?}");
}

/// What every tutorial program must show: exactly 2 Node processes, none
/// ran the primary branch, every worker answers (`distinct` different
/// bodies: 2 when the body names the worker), a clean stop.
fn runs_unchanged(name: &str, primary_says: &str, distinct: usize, needs_express: bool) {
    if !have_node(needs_express) {
        return;
    }
    let cluster = start(name, &[], &[]);
    let port = cluster.bound_port();
    expect_node_processes(&cluster, name, 2);
    let seen = distinct_bodies(port, distinct);
    assert_eq!(seen.len(), distinct, "{seen:?}");
    assert_eq!(node_processes(&cluster, name).len(), 2, "a worker forked");
    assert_eq!(
        scheduling_policy(cluster.pid()),
        SCHED_OTHER,
        "a primary of Node programs keeps the normal policy"
    );
    let output = cluster.output();
    assert!(
        !output.contains(primary_says),
        "the primary branch ran:\n{output}"
    );
    stop_cleanly(cluster, name);
}

#[test]
fn tutorial_1_commonjs_is_master_hello_world() {
    runs_unchanged("hello_master.js", "is running", 1, false);
}

#[test]
fn tutorial_2_es_module_is_primary_that_reforks() {
    runs_unchanged("primary_refork.mjs", "is running", 2, false);
}

#[test]
fn tutorial_3_es_module_with_express() {
    runs_unchanged("express_cluster.mjs", "is running", 2, true);
}

#[test]
fn tutorial_6_worker_suicide() {
    runs_unchanged("suicide.js", "Worker crashed", 2, false);
}

#[test]
fn a_plain_express_app_runs_as_two_workers() {
    runs_unchanged("express_app.js", "is running", 2, true);
}

#[test]
fn tutorial_4_worker_ids_are_slot_ids_and_a_killed_worker_keeps_its_id() {
    if !have_node(false) {
        return;
    }
    let name = "worker_ids.js";
    let cluster = start(name, &[], &[]);
    let port = cluster.bound_port();
    expect_node_processes(&cluster, name, 2);
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    for body in distinct_bodies(port, 2) {
        // "worker <id> pid <pid>"
        let words: Vec<&str> = body.split_whitespace().collect();
        ids.insert(words[1].to_string(), words[3].to_string());
    }
    assert_eq!(ids.keys().collect::<Vec<_>>(), ["1", "2"], "{ids:?}");
    assert!(
        !cluster.output().contains("forking"),
        "the primary branch ran"
    );

    let killed: u32 = ids["1"].parse().unwrap();
    let kill = cluster.mark();
    send_signal(killed, Signal::KILL);
    cluster.expect_event_where(kill, "worker 1 killed by SIGKILL", |event| {
        event.is_of("exit", 1) && event.pid == Some(killed) && event.has("signal", "SIGKILL")
    });
    cluster.expect_event(kill, "ready", Some(1));
    let deadline = Instant::now() + PATIENCE;
    let replacement = loop {
        let body = bodies(port, "/", 1).remove(0);
        if body.starts_with("worker 1 ") && !body.contains(&format!("pid {killed}")) {
            break body;
        }
        assert!(Instant::now() < deadline, "no answer from the new worker 1");
    };
    assert!(replacement.starts_with("worker 1 pid "), "{replacement}");
    expect_node_processes(&cluster, name, 2);
    stop_cleanly(cluster, name);
}

#[test]
fn tutorial_5_ipc_process_send_and_process_on_message() {
    if !have_node(false) {
        return;
    }
    let name = "messaging.js";
    // broadcast: each worker's messages reach the other's process.on('message').
    let cluster = start(name, &["--on-message", "broadcast"], &[]);
    let port = cluster.bound_port();
    cluster.expect_line(r#"message from worker 1: "hello master""#);
    cluster.expect_line(r#"message from worker 2: {"hello":"world"}"#);
    cluster.expect_line(r#"[worker 1] Worker "#);
    cluster.expect_line(r#"received: {"hello":"world"}"#);
    assert_eq!(distinct_bodies(port, 2).len(), 2);
    assert!(
        !cluster.output().contains("Master "),
        "the primary branch ran"
    );
    let workers = node_processes(&cluster, name);
    cluster.signal(Signal::TERM);
    cluster.expect_line(r#"received: "shutdown""#);
    let mut cluster = cluster;
    let status = cluster.wait_exit(PATIENCE).expect("the cluster stops");
    assert!(status.success());
    assert!(workers.iter().all(|&pid| !process_alive(pid)));
}

#[test]
fn a_port_a_node_worker_binds_is_listed_like_a_listen_address() {
    if !have_node(false) {
        return;
    }
    let name = "worker_ids.js";
    let cluster = start(name, &[], &[]);
    let port = cluster.bound_port();
    // The stable stdout line scripts read, and the bound event behind it.
    cluster.expect_line(&format!("listening on [::]:{port}"));
    cluster.expect_event_where(Mark::START, "a bound event names the port", |event| {
        event.is("bound")
            && event
                .field("addresses")
                .is_some_and(|list| list.to_string().contains(&format!(":{port}")))
    });
    let status = cluster.status_json();
    let listeners = status["listeners"].to_string();
    assert!(listeners.contains(&format!(":{port}")), "{listeners}");
    stop_cleanly(cluster, name);
}

#[test]
fn a_listen_address_the_program_never_listens_on_is_warned_about() {
    if !have_node(false) {
        return;
    }
    let name = "worker_ids.js";
    // -l on one port, the program on another (PORT=0): a black hole.
    let cluster = start(name, &["-l", "127.0.0.1:0", "--ready-timeout", "1"], &[]);
    let warning = cluster.expect_event_where(Mark::START, "listen_unused", |event| {
        event.is("listen_unused")
    });
    assert!(
        warning
            .message
            .contains("no worker of this Node program listens on it"),
        "{}",
        warning.message
    );
    stop_cleanly(cluster, name);
    // The program on the -l port: no warning.
    let port = free_port();
    let cluster = start(
        name,
        &["-l", &format!("127.0.0.1:{port}"), "--ready-timeout", "1"],
        &[("PORT", &port.to_string())],
    );
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(
        !cluster.output().contains("listen_unused") && !cluster.output().contains("listens on it"),
        "{}",
        cluster.output()
    );
    stop_cleanly(cluster, name);
}

#[test]
fn workers_answering_each_others_broadcasts_are_damped_not_a_storm() {
    if !have_node(false) {
        return;
    }
    let name = "echo_storm.js";
    let cluster = start(name, &["--on-message", "broadcast"], &[]);
    let since = cluster.mark();
    cluster.expect_event_where(since, "the relay budget is reached", |event| {
        event.is("relay_limited")
    });
    std::thread::sleep(Duration::from_secs(2));
    let received = cluster
        .plain_lines()
        .iter()
        .filter(|line| line.contains("] received "))
        .count();
    // 100 relays a second per worker, each reaching the one other worker:
    // about 200 a second in all, where the loop undamped makes thousands.
    assert!(
        received < 1_500,
        "{received} messages relayed in about 2 s: the loop is not damped"
    );
    stop_cleanly(cluster, name);
}

#[test]
fn sighup_reloads_node_workers_under_load_without_a_failed_request() {
    if !have_node(false) {
        return;
    }
    let name = "worker_ids.js";
    for policy in ["reuseport", "round-robin"] {
        let cluster = start(name, &["--policy", policy], &[]);
        let port = cluster.bound_port();
        // New connection per request, 4 clients.
        let load = Load::start(port, 4);
        load.wait_for_more(50);
        let reload = cluster.mark();
        cluster.signal(Signal::HUP);
        cluster.expect_event_where(reload, "a rolling reload of 2 workers completes", |event| {
            event.is("reload_completed") && event.has("kind", "rolling") && event.has("replaced", 2)
        });
        load.wait_for_more(50);
        let totals = load.stop();
        assert_eq!(
            (totals.failed, totals.refused),
            (0, 0),
            "{policy}: {totals:?}"
        );
        expect_node_processes(&cluster, name, 2);
        stop_cleanly(cluster, name);
    }
}

#[test]
fn killed_node_workers_lose_no_waiting_connection_under_round_robin() {
    killed_node_workers_lose_no_waiting_connection(&["--policy", "round-robin"]);
}

/// The same through Node's `newconn` hand-off, which kernel steering
/// replaces where it can load.
#[test]
fn killed_node_workers_lose_no_waiting_connection_under_the_newconn_hand_off() {
    killed_node_workers_lose_no_waiting_connection(&[
        "--policy",
        "round-robin",
        "--kernel-steering",
        "off",
    ]);
}

fn killed_node_workers_lose_no_waiting_connection(flags: &[&str]) {
    if !have_node(false) {
        return;
    }
    let name = "worker_ids.js";
    let cluster = start(name, flags, &[]);
    let port = cluster.bound_port();
    let load = Load::start(port, 4);
    for _ in 1..=3 {
        load.wait_for_more(30);
        let victim = node_processes(&cluster, name)[0];
        let since = cluster.mark();
        send_signal(victim, Signal::KILL);
        let exit = cluster.expect_event_where(since, "the victim killed by SIGKILL", |event| {
            event.is("exit") && event.pid == Some(victim) && event.has("signal", "SIGKILL")
        });
        let slot = exit.worker.expect("an exit names its worker");
        cluster.expect_event(since, "ready", Some(slot));
    }
    load.wait_for_more(30);
    let totals = load.stop();
    eprintln!("{flags:?}, 3 kills of a Node worker: {totals:?}");
    // Requests a killed worker was serving die with it; connections it had
    // not accepted yet go to the other worker: none is refused.
    assert_eq!(totals.refused, 0, "{totals:?}");
    assert!(totals.failed <= 3 * 4, "{totals:?}");
    stop_cleanly(cluster, name);
}

#[test]
fn sigterm_drains_an_in_flight_slow_request_and_exits_0() {
    if !have_node(false) {
        return;
    }
    let name = "worker_ids.js";
    let mut cluster = start(name, &[], &[]);
    let port = cluster.bound_port();
    let workers = node_processes(&cluster, name);
    let slow = std::thread::spawn(move || http_get(port, "/slow"));
    cluster.expect_line("slow request started");
    cluster.signal(Signal::TERM);
    let response = slow.join().unwrap().expect("the slow request is answered");
    assert_eq!(response.status, 200);
    assert!(response.body.starts_with("worker "), "{response:?}");
    let status = cluster.wait_exit(PATIENCE).expect("the cluster stops");
    assert!(status.success(), "{status:?}");
    let output = cluster.output();
    let events = cluster.events_since(Mark::START);
    assert!(
        events
            .iter()
            .any(|event| event.is("exit") && event.has("code", 0) && event.has("requested", true)),
        "{output}"
    );
    assert!(!output.contains("SIGKILL"), "{output}");
    assert!(workers.iter().all(|&pid| !process_alive(pid)));
}

#[test]
fn round_robin_splits_100_connections_50_50() {
    if !have_node(false) {
        return;
    }
    let name = "worker_ids.js";
    let cluster = start(name, &["--policy", "round-robin"], &[]);
    let port = cluster.bound_port();
    let mut per_worker: BTreeMap<String, usize> = BTreeMap::new();
    for body in bodies(port, "/", 100) {
        let id = body
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        *per_worker.entry(id).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = [("1".into(), 50), ("2".into(), 50)].into();
    assert_eq!(per_worker, expected);
    stop_cleanly(cluster, name);
}

#[test]
fn a_second_listen_on_another_port_in_the_same_worker_works() {
    if !have_node(false) {
        return;
    }
    let name = "two_servers.js";
    for policy in ["reuseport", "round-robin"] {
        let cluster = start(name, &["--policy", policy], &[("ADMIN_PORT", "0")]);
        let lines = cluster
            .wait_for_lines("admin on port ", 2, PATIENCE)
            .expect("both admin servers listen");
        let ports: Vec<u16> = lines
            .iter()
            .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
            .collect();
        assert_eq!(ports.len(), 2);
        assert_eq!(
            ports[0], ports[1],
            "port 0 gives every worker the same port"
        );
        let app_port = cluster.bound_port();
        assert_ne!(app_port, ports[0]);
        assert!(bodies(app_port, "/", 1)[0].starts_with("app of worker "));
        assert!(bodies(ports[0], "/", 1)[0].starts_with("admin of worker "));
        assert!(!cluster.output().contains("primary branch ran"));
        stop_cleanly(cluster, name);
    }
}

#[test]
fn a_port_in_use_is_eaddrinuse_in_the_worker_and_a_corral_error_line() {
    if !have_node(true) {
        return;
    }
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    let mut command = Command::new(corral_path());
    command
        .args(["run", "-w", "2", "--grace", "1", "--", "node"])
        .arg(fixture("express_cluster.mjs"))
        .env("PORT", &port);
    let mut cluster = ClusterProcess::spawn(command);
    // Express 5 hands the listen error to the callback, which logs its code.
    cluster.expect_line("[worker 1] Worker ");
    cluster.expect_line("cannot listen: EADDRINUSE");
    let line = cluster.expect_line("listen() failed");
    assert!(line.contains(&format!(":{port}")), "{line}");
    assert!(line.contains("another process holds this port"), "{line}");
    cluster.stop_gracefully(PATIENCE);
}

#[test]
fn a_misbehaving_worker_is_logged_and_the_others_keep_serving() {
    if !have_node(false) {
        return;
    }
    let name = "bad_worker.js";
    let cluster = start(name, &[], &[]);
    let port = cluster.bound_port();
    cluster.expect_line("worker 1: unknown cluster message \"explode\"");
    cluster.expect_line("[worker 1] stray server: EADDRNOTAVAIL");
    let line = cluster.expect_line("worker 1: listen() failed");
    assert!(line.contains("192.0.2.1:8000"), "{line}");
    let warnings = cluster.output().matches("unknown cluster message").count();
    assert!(warnings <= 10, "2000 bad messages gave {warnings} warnings");
    assert_eq!(distinct_bodies(port, 2).len(), 2);
    stop_cleanly(cluster, name);
}

#[test]
fn listen_on_a_port_given_with_listen_is_served_from_that_socket() {
    if !have_node(false) {
        return;
    }
    let name = "worker_ids.js";
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let port_text = port.to_string();
    for policy in ["reuseport", "round-robin"] {
        let cluster = start(
            name,
            &["-l", &address, "--policy", policy],
            &[("PORT", &port_text)],
        );
        assert_eq!(cluster.port(), port);
        assert_eq!(distinct_bodies(port, 2).len(), 2, "{policy}");
        assert!(
            !cluster.output().contains("listen() bound"),
            "nothing is bound on demand"
        );
        stop_cleanly(cluster, name);
    }
}

#[test]
fn a_worker_that_disconnects_itself_is_replaced_without_counting_as_a_crash() {
    if !have_node(false) {
        return;
    }
    let name = "self_disconnect.js";
    let cluster = start(name, &[], &[]);
    let port = cluster.bound_port();
    // Past the minimum uptime (1 s): a worker that leaves sooner counts as
    // failing at start, so that a program whose workers all leave at once
    // is not restarted in a tight loop.
    std::thread::sleep(std::time::Duration::from_millis(1_200));
    let before = node_processes(&cluster, name);
    let since = cluster.mark();
    let body = bodies(port, "/leave", 1).remove(0);
    let pid: u32 = body
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("a pid in {body:?}"));
    assert!(before.contains(&pid), "{pid} among {before:?}");
    cluster.expect_event_where(since, "the worker disconnects by itself", |event| {
        event.is("disconnect") && event.pid == Some(pid) && event.has("by_itself", true)
    });
    let exit = cluster.expect_event_where(since, "the worker that left exits", |event| {
        event.is("exit") && event.pid == Some(pid)
    });
    assert!(
        exit.has("code", 0) && exit.has("requested", true),
        "{exit:?}"
    );
    let slot = exit.worker.expect("an exit names its worker");
    cluster.expect_event(since, "ready", Some(slot));
    expect_node_processes(&cluster, name, 2);
    let output = cluster.output();
    let events = cluster.events_since(Mark::START);
    assert!(
        !events
            .iter()
            .any(|event| (event.is("exit") && event.has("requested", false))
                || event.is("crash_loop")),
        "{output}"
    );
    assert!(!output.contains("crash"), "{output}");
    stop_cleanly(cluster, name);
}
