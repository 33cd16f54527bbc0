//! `--user`: the primary, as root, binds a port below 1024 and starts its
//! workers as another user, with no supplementary groups.

use std::process::Command;

use corral_testkit::{ClusterProcess, Mark, PATIENCE, corral_path, http_get};

/// `Uid:`, `Gid:` and `Groups:` of `/proc/PID/status`, values only.
fn credentials(pid: u32) -> (String, String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("a live process");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|value| value.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    (field("Uid:"), field("Gid:"), field("Groups:"))
}

fn worker_pid(cluster: &ClusterProcess, id: u32) -> u32 {
    let ready = cluster.expect_event(Mark::START, "ready", Some(id));
    ready.pid.unwrap_or_else(|| panic!("no pid in {ready:?}"))
}

#[test]
fn workers_run_as_nobody_on_port_80_bound_by_root() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: binding port 80 and switching users needs root");
        return;
    }
    // The primary starts with supplementary groups, which workers must not keep.
    let mut command = Command::new("setpriv");
    command.args(["--groups", "4,24", corral_path()]).args([
        "run",
        "-w",
        "2",
        "-l",
        "127.0.0.1:80",
        "--grace",
        "2",
        "--user",
        "nobody",
    ]);
    let mut cluster = ClusterProcess::spawn(command);
    cluster.expect_line("workers run as nobody (uid 65534, gid 65534)");
    let (_, _, primary_groups) = credentials(cluster.pid());
    assert_eq!(primary_groups, "4 24", "the primary keeps its own groups");
    for id in [1, 2] {
        let pid = worker_pid(&cluster, id);
        let (uid, gid, groups) = credentials(pid);
        assert_eq!(uid, "65534 65534 65534 65534", "worker {id}");
        assert_eq!(gid, "65534 65534 65534 65534", "worker {id}");
        assert_eq!(groups, "", "worker {id} has no supplementary group");
    }
    let response = http_get(80, "/").expect("the workers serve port 80");
    assert!(
        response.body.starts_with("Hello from worker"),
        "{response:?}"
    );
    cluster.stop_gracefully(PATIENCE);
}

#[test]
fn user_needs_root_and_an_existing_user() {
    let mut unknown = ClusterProcess::start(
        corral_path(),
        &[
            "run",
            "-w",
            "1",
            "-l",
            "127.0.0.1:0",
            "--user",
            "no-such-user-here",
        ],
    );
    let status = unknown.wait_exit(PATIENCE).expect("corral exits");
    assert_eq!(status.code(), Some(1));
    let expected = if rustix::process::geteuid().is_root() {
        "no user named \"no-such-user-here\""
    } else {
        "needs root"
    };
    unknown.expect_line(expected);
    if !rustix::process::geteuid().is_root() {
        return;
    }
    // As a user that is not root: one clear error.
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            corral_path(),
        ])
        .args(["run", "-w", "1", "-l", "127.0.0.1:0", "--user", "nobody"]);
    let mut as_nobody = ClusterProcess::spawn(command);
    let status = as_nobody.wait_exit(PATIENCE).expect("corral exits");
    assert_eq!(status.code(), Some(1));
    as_nobody.expect_line("--user nobody needs root: corral runs as uid 65534");
}
