//! The control socket and the commands that use it, with real processes:
//! `corral status` follows starts, kills, scaling and reloads; `reload`
//! says whether it worked; the socket is private and checks its peers; a
//! second cluster of one name is refused, a stale socket replaced; hostile
//! clients leave the cluster serving.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use corral_testkit::{
    ClusterBuilder, ClusterProcess, Load, Mark, PATIENCE, Signal, corral_path, hello, http_get,
    private_runtime_dir, send_signal, status_workers, two_ready_workers,
};
use serde_json::Value;

const ENV_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/env_server.py");

fn ready_pids(status: &Value) -> HashSet<u64> {
    status_workers(status)
        .into_iter()
        .filter(|(_, _, state)| state == "ready")
        .map(|(_, pid, _)| pid)
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn status_shows_the_workers_after_start_kill_scale_and_reload() {
    let (cluster, port) = two_ready_workers("reuseport");
    let first = cluster.status_json();
    // The field names are a contract.
    for field in ["name", "pid", "policy", "listeners", "workers"] {
        assert!(first.get(field).is_some(), "no {field} in {first:#}");
    }
    assert_eq!(first["name"], "demo");
    assert_eq!(first["pid"], cluster.pid());
    assert_eq!(first["policy"], "reuseport");
    assert_eq!(
        first["listeners"][0]["address"],
        format!("127.0.0.1:{port}")
    );
    assert!(first["listeners"][0]["queued"].is_u64());
    for worker in first["workers"].as_array().unwrap() {
        for field in [
            "id",
            "pid",
            "generation",
            "state",
            "uptime_seconds",
            "restarts",
            "last_restart_reason",
            "cpu_seconds",
            "rss_bytes",
            "connections",
            "requests",
        ] {
            assert!(
                worker.get(field).is_some(),
                "no workers[].{field} in {worker:#}"
            );
        }
        assert!(worker["rss_bytes"].as_u64().unwrap() > 0);
        assert!(worker["cpu_seconds"].is_number());
        assert!(
            worker["connections"].is_null(),
            "reuseport does not count connections"
        );
    }
    let pids: HashSet<u64> = cluster.worker_pids().into_iter().map(u64::from).collect();
    assert_eq!(ready_pids(&first), pids);
    assert_eq!(
        status_workers(&first)
            .iter()
            .map(|w| w.0)
            .collect::<Vec<_>>(),
        [1, 2]
    );

    // A kill: the slot's new worker, one restart, killed.
    let victim = status_workers(&first)[0].1;
    send_signal(victim as u32, Signal::KILL);
    let after_kill = cluster.await_status("worker 1 is replaced", |status| {
        let workers = status_workers(status);
        workers.len() == 2 && workers.iter().all(|w| w.1 != victim && w.2 == "ready")
    });
    let slot_1 = &after_kill["workers"][0];
    assert_eq!(slot_1["id"], 1);
    assert_eq!(slot_1["generation"], 2);
    assert_eq!(slot_1["restarts"], 1);
    assert_eq!(slot_1["last_restart_reason"], "killed");
    assert_eq!(after_kill["workers"][1]["restarts"], 0);

    // Scaling: up to 3, then down to 2 (`-1` is a count, not a flag).
    let scaled = cluster.control(&["scale", "3"]);
    assert!(scaled.status.success(), "{scaled:?}");
    assert_eq!(text(&scaled.stdout), "workers: 3\n");
    cluster.await_status("3 workers are ready", |status| {
        ready_pids(status).len() == 3
    });
    let scaled = cluster.control(&["scale", "-1", "--json"]);
    assert!(scaled.status.success(), "{scaled:?}");
    assert_eq!(
        serde_json::from_slice::<Value>(&scaled.stdout).unwrap()["workers_desired"],
        2
    );
    let two = cluster.await_status("worker 3 is gone", |status| {
        status_workers(status).len() == 2
    });
    assert_eq!(two["workers_desired"], 2);

    // A reload: every worker replaced, the command waits and says so.
    let before = ready_pids(&two);
    let reloaded = cluster.control(&["reload"]);
    assert!(reloaded.status.success(), "{reloaded:?}");
    assert!(
        text(&reloaded.stdout).starts_with("reload completed: 2 workers replaced"),
        "{reloaded:?}"
    );
    let after = cluster.await_status("only the new workers remain", |status| {
        status_workers(status).len() == 2
    });
    assert!(ready_pids(&after).is_disjoint(&before));
    assert_eq!(after["reloads"]["completed"], 1);
    assert_eq!(after["reloads"]["last"]["result"], "completed");
    for worker in after["workers"].as_array().unwrap() {
        assert_eq!(worker["last_restart_reason"], "reload");
    }
    let live: HashSet<u64> = cluster.worker_pids().into_iter().map(u64::from).collect();
    assert_eq!(ready_pids(&after), live);
    hello(port);
}

/// A wrapper script the test rewrites between reloads.
struct Deployment {
    dir: PathBuf,
}

impl Deployment {
    fn new() -> Self {
        Deployment {
            dir: private_runtime_dir(),
        }
    }

    fn script(&self) -> PathBuf {
        self.dir.join("app.sh")
    }

    fn deploy(&self, body: &str) {
        std::fs::write(self.script(), body).unwrap();
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn reload_fails_on_a_broken_deploy_and_succeeds_on_a_good_one_under_load() {
    let app = Deployment::new();
    app.deploy(&format!("APP_VERSION=1 exec python3 {ENV_SERVER}\n"));
    let script = app.script();
    let cluster = ClusterProcess::start(
        corral_path(),
        &[
            "run",
            "-w",
            "2",
            "-l",
            "127.0.0.1:0",
            "--grace",
            "2",
            "--name",
            "app",
            "--",
            "sh",
            script.to_str().unwrap(),
        ],
    );
    let port = cluster.port();
    cluster.expect_line("[worker 1] python worker 1 serving");
    cluster.expect_line("[worker 2] python worker 2 serving");
    let load = Load::start(port, 2);
    load.wait_for_more(20);

    app.deploy("echo 'the new version cannot start' >&2; exit 1\n");
    let broken = cluster.control(&["reload", "app"]);
    assert_eq!(broken.status.code(), Some(1), "{broken:?}");
    let error = text(&broken.stderr);
    assert!(
        error.contains("rolling reload aborted")
            && error.contains("the replacement for worker 1 exited with code 1"),
        "{error}"
    );
    load.wait_for_more(20);

    app.deploy(&format!("APP_VERSION=2 exec python3 {ENV_SERVER}\n"));
    let good = cluster.control(&["reload", "app", "--json"]);
    assert!(good.status.success(), "{good:?}");
    let reply: Value = serde_json::from_slice(&good.stdout).unwrap();
    assert_eq!(reply["outcome"]["result"], "completed");
    assert_eq!(reply["outcome"]["replaced"], 2);
    load.wait_for_more(20);
    let totals = load.stop();
    assert_eq!((totals.failed, totals.refused), (0, 0), "{totals:?}");
    let after = cluster.status_json();
    assert_eq!(after["reloads"]["aborted"], 1);
    assert_eq!(after["reloads"]["completed"], 1);
    let body = http_get(port, "/").unwrap().body;
    assert!(body.contains("version 2"), "{body}");
    // The workers' output is kept for `corral logs`, by worker.
    let logs = text(&cluster.control(&["logs", "app", "--worker", "2"]).stdout);
    assert!(logs.contains("python worker 2 serving"), "{logs}");
    assert!(!logs.contains("python worker 1 serving"), "{logs}");
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_socket_is_private_and_other_users_are_refused() {
    let (cluster, _port) = two_ready_workers("reuseport");
    let socket = cluster.control_socket("demo");
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(mode(socket.parent().unwrap()), 0o700);
    let is_root = rustix::process::geteuid().is_root();
    if !is_root {
        eprintln!("skipped the other-uid part: it needs root to switch users");
        return;
    }
    let as_nobody = |socket: &Path| {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                corral_path(),
            ])
            .args(["status", "--control"])
            .arg(socket)
            .stdin(Stdio::null());
        corral_testkit::finish(command)
    };
    // The file's mode keeps another user out.
    let refused = as_nobody(&socket);
    assert!(!refused.status.success(), "{refused:?}");
    assert!(
        text(&refused.stderr).contains("Permission denied"),
        "{refused:?}"
    );
    // Opened up by mistake, it still serves nobody else: the peer check.
    for dir in [cluster.runtime_dir(), socket.parent().unwrap()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let refused = as_nobody(&socket);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        text(&refused.stderr).contains("permission denied: uid 65534 may not control this cluster"),
        "{refused:?}"
    );
    cluster.expect_line("control socket: refused a client running as uid 65534");
    // The owner still can.
    assert_eq!(
        cluster.status_json()["workers"].as_array().unwrap().len(),
        2
    );
}

#[test]
fn a_second_cluster_of_the_same_name_is_refused_and_a_stale_socket_replaced() {
    let runtime_dir = private_runtime_dir();
    let start = |name: &str| {
        let mut command = Command::new(corral_path());
        command
            .args(["run", "-w", "1", "-l", "127.0.0.1:0", "--name", name])
            .env("XDG_RUNTIME_DIR", &runtime_dir);
        ClusterProcess::spawn(command)
    };
    let first = start("twin");
    first.expect_event(Mark::START, "ready", Some(1));
    let mut second = start("twin");
    let exit = second
        .wait_exit(PATIENCE)
        .expect("the second cluster exits");
    assert_eq!(exit.code(), Some(1));
    let socket = runtime_dir.join("corral/twin.sock");
    second.expect_line(&format!(
        "corral: error: control socket {}: a cluster is already running",
        socket.display()
    ));
    assert!(
        !second.output().contains("listening on"),
        "no port was bound"
    );
    assert_eq!(first.status_json()["pid"], first.pid());

    // A cluster killed outright leaves its socket file behind: stale.
    let mut killed = first;
    killed.signal(Signal::KILL);
    killed.wait_exit(PATIENCE).expect("the primary dies");
    assert!(socket.exists(), "SIGKILL leaves the file");
    let third = start("twin");
    third.expect_event(Mark::START, "ready", Some(1));
    assert_eq!(third.status_json()["pid"], third.pid());

    // `corral stop` waits until the primary exited and the file is gone.
    let mut third = third;
    let stopped = third.control(&["stop"]);
    assert!(stopped.status.success(), "{stopped:?}");
    assert!(
        third.wait_exit(Duration::ZERO).is_some(),
        "stop returned before the primary exited"
    );
    assert!(!socket.exists(), "the socket file is removed at stop");
    let gone = third.control(&["status", "twin"]);
    assert_eq!(gone.status.code(), Some(3), "{gone:?}");
    let _ = std::fs::remove_dir_all(&runtime_dir);
}

#[test]
fn garbage_a_huge_line_and_idle_connections_leave_the_cluster_serving() {
    raise_descriptor_limit();
    let (cluster, port) = two_ready_workers("round-robin");
    let socket = cluster.control_socket("demo");

    // Garbage gets an error naming the problem; the connection stays usable.
    let mut client = UnixStream::connect(&socket).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut answers = BufReader::new(client.try_clone().unwrap());
    client
        .write_all(b"\x00\xffnot json\n{\"id\":9,\"command\":\"dance\"}\n{\"id\":10,\"command\":\"status\"}\n")
        .unwrap();
    let answer = |reader: &mut BufReader<UnixStream>| {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        serde_json::from_str::<Value>(&line).unwrap()
    };
    let first = answer(&mut answers);
    assert_eq!(first["ok"], false);
    assert!(
        first["error"].as_str().unwrap().starts_with("not JSON"),
        "{first}"
    );
    let second = answer(&mut answers);
    assert_eq!(second["id"], 9);
    assert!(
        second["error"]
            .as_str()
            .unwrap()
            .contains("unknown command \"dance\"")
    );
    let third = answer(&mut answers);
    assert_eq!(
        (third["id"].clone(), third["ok"].clone()),
        (10.into(), true.into())
    );

    // A 100 MB line: refused after the limit, without reading it all.
    let huge = UnixStream::connect(&socket).unwrap();
    huge.set_read_timeout(Some(PATIENCE)).unwrap();
    huge.set_write_timeout(Some(PATIENCE)).unwrap();
    let writer = {
        let mut huge = huge.try_clone().unwrap();
        std::thread::spawn(move || {
            let chunk = vec![b'x'; 1 << 20];
            let mut sent = 0usize;
            for _ in 0..100 {
                match huge.write_all(&chunk) {
                    Ok(()) => sent += chunk.len(),
                    Err(_) => break,
                }
            }
            sent
        })
    };
    let refusal = answer(&mut BufReader::new(huge));
    assert!(
        refusal["error"]
            .as_str()
            .unwrap()
            .contains("request longer than"),
        "{refusal}"
    );
    let sent = writer.join().unwrap();
    assert!(
        sent < 100 << 20,
        "the primary stopped reading: {sent} bytes went in"
    );

    // 1,000 idle connections.
    let idle: Vec<UnixStream> = (0..1000)
        .map(|_| UnixStream::connect(&socket).expect("connect"))
        .collect();
    let during = cluster.status_json();
    assert_eq!(during["workers"].as_array().unwrap().len(), 2);
    for _ in 0..20 {
        hello(port);
    }
    drop(idle);
    let events = cluster.events_since(Mark::START);
    assert!(events.iter().any(|event| event.is_of("ready", 1)));
    assert_eq!(cluster.status_json()["pid"], cluster.pid());
}

/// A thousand connections need more descriptors than the usual soft limit.
fn raise_descriptor_limit() {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    )
    .expect("the soft limit can be raised to the hard one");
}

#[test]
fn logs_and_events_show_output_and_lifecycle() {
    let (cluster, port) = two_ready_workers("reuseport");
    let mut events = cluster.control_command(&["events"]);
    events.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut events = events.spawn().unwrap();
    let lines = BufReader::new(events.stdout.take().unwrap());
    let (sender, received) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in lines.lines() {
            let Ok(line) = line else { break };
            let event = serde_json::from_str(&line).expect("events prints JSON lines");
            if sender.send(event).is_err() {
                break;
            }
        }
    });
    // `corral events` follows from when it connected: scale until it saw a
    // worker start (the first scale may come before it listens).
    let deadline = Instant::now() + PATIENCE;
    let mut seen: Vec<Value> = Vec::new();
    let mut workers = 2;
    let saw = |seen: &[Value], kind: &str| {
        seen.iter()
            .any(|event| event["event"] == kind && event["worker"] == 3)
    };
    while !(saw(&seen, "fork") && saw(&seen, "ready")) {
        assert!(
            Instant::now() < deadline,
            "no worker 3 ready event: {seen:?}"
        );
        workers = if workers == 2 { 3 } else { 2 };
        assert!(
            cluster
                .control(&["scale", &workers.to_string()])
                .status
                .success()
        );
        while let Ok(event) = received.recv_timeout(Duration::from_millis(300)) {
            seen.push(event);
        }
    }
    let _ = events.kill();
    let _ = events.wait();
    let fork = seen
        .iter()
        .find(|event| event["event"] == "fork" && event["worker"] == 3)
        .expect("a fork event before the ready one");
    assert!(fork["pid"].as_u64().unwrap() > 0);
    assert!(fork["generation"].as_u64().unwrap() >= 1);
    assert!(fork["time"].as_f64().unwrap() > 1.0e9);
    assert!(
        seen.iter().any(|event| event["event"] == "scaled"),
        "{seen:?}"
    );
    hello(port);
    let logs = cluster.control(&["logs", "--lines", "50"]);
    assert!(logs.status.success(), "{logs:?}");
    let logs = text(&logs.stdout);
    assert!(logs.contains("[corral] worker 3 ready (pid"), "{logs}");
    let only_3 = text(&cluster.control(&["logs", "--worker", "3", "--json"]).stdout);
    assert!(!only_3.is_empty());
    for line in only_3.lines() {
        let line: Value = serde_json::from_str(line).unwrap();
        assert_eq!(line["worker"], 3, "{line}");
    }
}

/// `corral stop --now` does not wait for a request in flight: it returns
/// once the primary has exited, long before the grace would have ended,
/// and leaves no worker behind.
#[test]
fn stop_now_kills_busy_workers_at_once_and_returns_after_the_primary() {
    let grace = Duration::from_secs(30);
    let mut cluster = ClusterBuilder::corral()
        .workers(2)
        .args(&["--grace", "30"])
        .start();
    let port = cluster.port();
    let workers = cluster.worker_pids();
    assert_eq!(workers.len(), 2, "{}", cluster.output());
    let mark = cluster.mark();
    let client = std::thread::spawn(move || http_get(port, "/sleep/10000"));
    cluster.expect_line_after(mark, "sleeping 10000ms");

    let started = Instant::now();
    let stopped = cluster.control(&["stop", "--now"]);
    let took = started.elapsed();
    assert!(stopped.status.success(), "{stopped:?}");
    assert!(
        cluster.wait_exit(Duration::ZERO).is_some(),
        "stop --now returned before the primary exited:\n{}",
        cluster.output()
    );
    assert!(
        took < grace / 6,
        "stop --now took {took:?}, as if it waited for the request (grace {grace:?})"
    );
    let left: Vec<u32> = workers
        .into_iter()
        .filter(|&pid| corral_testkit::process_alive(pid))
        .collect();
    assert!(left.is_empty(), "workers left running: {left:?}");
    let answer = client.join().expect("the client thread ends");
    assert!(
        answer.is_err(),
        "the killed worker still answered the request: {answer:?}"
    );
}
