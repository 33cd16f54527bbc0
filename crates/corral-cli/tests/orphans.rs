//! Processes a worker leaves outside its process group (a daemon started
//! with fork/setsid/fork, an orphan whose parent did not wait): the primary,
//! as child subreaper (or as PID 1 of a container), adopts them, reaps them,
//! and stops them with the worker that started them, so nothing keeps the
//! port after the cluster stops.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use corral_testkit::{
    ClusterProcess, Mark, PATIENCE, Signal, corral_path, process_alive, send_signal, wait_until,
};

const DAEMONIZER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/daemonizer.py");

/// The pid in the `count`-th line `[worker N] WHAT PID` the workers printed.
fn printed_pid(cluster: &ClusterProcess, what: &str, count: usize) -> u32 {
    let needle = format!("] {what} ");
    let lines = cluster
        .wait_for_lines(&needle, count, PATIENCE)
        .unwrap_or_else(|| panic!("no {what} line; output:\n{}", cluster.output()));
    let line = &lines[count - 1];
    line.rsplit(' ')
        .next()
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"))
}

/// Fields of `/proc/PID/stat` after the command name: state, ppid, …
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// Whether `pid` exists at all, even as a zombie nobody reaped.
fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn processes_a_worker_leaves_outside_its_group_are_reaped_and_stopped_with_it() {
    let mut cluster = ClusterProcess::start(
        corral_path(),
        &[
            "run",
            "-w",
            "1",
            "-l",
            "127.0.0.1:0",
            "--grace",
            "2",
            "--",
            "python3",
            DAEMONIZER,
        ],
    );
    let port = cluster.port();
    let primary = cluster.pid();
    let worker = printed_pid(&cluster, "worker", 1);
    let daemon = printed_pid(&cluster, "daemon", 1);
    let orphan = printed_pid(&cluster, "orphan", 1);

    // Both were re-parented to the primary, not to init.
    assert!(
        wait_until(PATIENCE, || parent_of(daemon) == Some(primary)),
        "the daemon is adopted by the primary: parent {:?}",
        parent_of(daemon)
    );
    // The orphan runs `sleep 1`; once it exits the primary reaps it: no
    // zombie is left behind.
    assert!(
        wait_until(PATIENCE, || !exists(orphan)),
        "the orphan was reaped, not left a zombie: {:?}",
        stat_fields(orphan)
    );

    // A worker killed from outside takes its daemon with it; its
    // replacement starts a daemon of its own.
    send_signal(worker, Signal::KILL);
    assert!(
        wait_until(PATIENCE, || !exists(daemon)),
        "the killed worker's daemon was stopped and reaped; output:\n{}",
        cluster.output()
    );
    let second_daemon = printed_pid(&cluster, "daemon", 2);
    assert!(process_alive(second_daemon));

    // A clean stop leaves nothing on the port.
    cluster.signal(Signal::TERM);
    let status = cluster.wait_exit(PATIENCE).expect("the cluster stops");
    assert!(
        status.success(),
        "{status:?}; output:\n{}",
        cluster.output()
    );
    assert!(
        wait_until(PATIENCE, || !exists(second_daemon)),
        "no daemon outlives the cluster"
    );
    TcpListener::bind(("127.0.0.1", port)).expect("the port is free after a clean stop");
}

/// Why the PID-namespace test cannot run here, if it cannot.
fn namespace_unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root (unshare --pid needs it)".into());
    }
    let works = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status()
        .map(|status| status.success());
    match works {
        Ok(true) => None,
        Ok(false) => Some("unshare --pid --fork --mount-proc fails here".into()),
        Err(err) => Some(format!("unshare is not available: {err}")),
    }
}

#[test]
fn as_pid_1_of_a_pid_namespace_corral_reaps_orphans_and_stops_gracefully() {
    if let Some(reason) = namespace_unavailable() {
        eprintln!("skipped: {reason}");
        return;
    }
    let control = corral_testkit::private_runtime_dir().join("control.sock");
    let mut command = Command::new("unshare");
    command
        .args(["--pid", "--fork", "--mount-proc", corral_path()])
        .args([
            "run",
            "-w",
            "2",
            "-l",
            "127.0.0.1:0",
            "--grace",
            "3",
            "--control",
            control.to_str().unwrap(),
            "--",
            "python3",
            DAEMONIZER,
        ]);
    let mut cluster = ClusterProcess::spawn(command);
    let port = cluster.port();
    cluster.expect_event(Mark::START, "ready", Some(1));
    cluster.expect_event(Mark::START, "ready", Some(2));
    // corral is the only child of `unshare`: PID 1 of the new namespace.
    let unshare = cluster.pid();
    let mut corral = None;
    assert!(wait_until(PATIENCE, || {
        corral = children_of(unshare).first().copied();
        corral.is_some()
    }));
    let corral = corral.unwrap();
    let status = std::fs::read_to_string(format!("/proc/{corral}/status")).unwrap();
    let namespace_pid = status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))
        .and_then(|pids| pids.split_whitespace().last())
        .unwrap_or_default()
        .to_string();
    assert_eq!(namespace_pid, "1", "corral is PID 1 in its namespace");

    // Both workers' orphans (`sleep 1`) are adopted by PID 1 and reaped.
    cluster
        .wait_for_lines("] orphan ", 2, PATIENCE)
        .expect("both workers left an orphan");
    let sleepers = || {
        children_of(corral)
            .into_iter()
            .filter(|&pid| name_of(pid).as_deref() == Some("sleep"))
            .count()
    };
    assert!(
        wait_until(PATIENCE, || sleepers() == 0),
        "no `sleep` orphan is left as a zombie of PID 1; output:\n{}",
        cluster.output()
    );
    corral_testkit::http_get(port, "/").expect("the workers serve");

    // A client outside the namespace (the host, against a container's
    // socket) is seen with pid 0; its uid still decides, and it is served.
    let status = Command::new(corral_path())
        .args(["status", "--control", control.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        status.status.success() && String::from_utf8_lossy(&status.stdout).contains("ready"),
        "corral status from the parent namespace: {}{}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );

    // SIGTERM to PID 1 stops the cluster gracefully, well within --grace.
    let asked = std::time::Instant::now();
    send_signal(corral, Signal::TERM);
    let status = cluster.wait_exit(PATIENCE).expect("corral exits");
    assert!(
        status.success(),
        "{status:?}; output:\n{}",
        cluster.output()
    );
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    cluster.expect_event(Mark::START, "stopped", None);
    TcpListener::bind(("127.0.0.1", port)).expect("the port is free after a clean stop");
}

fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| parent_of(pid) == Some(parent))
        .collect()
}

fn name_of(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat.split_once('(')?.1.rsplit_once(')')?.0.to_string())
}
