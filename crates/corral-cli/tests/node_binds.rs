//! Hostile Node workers against the primary that binds their `listen()`
//! calls (issue 17): under `--user nobody` a worker gets only what it could
//! have bound itself, or what `--allow-worker-binds` allows; the socket
//! files it has bound are removed at stop without following its symlinks;
//! and a flood of queries holds a bounded number of descriptors, is cut
//! off, and costs a few log lines.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use corral_testkit::{
    ClusterProcess, PATIENCE, corral_path, free_port, http_get, node_available, open_descriptors,
};
use serde_json::{Value, json};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/node");
const NOBODY: u32 = 65534;

/// Whether ports up to 443 need a privilege here (containers often set
/// `net.ipv4.ip_unprivileged_port_start` to 0: then anyone may bind them,
/// and the primary rightly binds them for workers too).
fn low_ports_are_privileged() -> bool {
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .unwrap_or(1024);
    if start <= 443 {
        eprintln!(
            "ip_unprivileged_port_start is {start}: any user may bind low ports here, not \
             checking that they are refused"
        );
    }
    start > 443
}

fn root_and_node() -> bool {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: running workers as nobody needs root");
        return false;
    }
    node_available()
}

/// A fresh directory under /tmp with `mode`, owned by `uid`.
fn scratch(name: &str, uid: u32, mode: u32) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("corral-binds-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
    dir
}

/// A port below 1024 that nothing listens on (as the worker would ask
/// for it: any address, dual-stack).
fn free_privileged_port() -> u16 {
    (900..1000)
        .find(|port| std::net::TcpListener::bind(("::", *port)).is_ok())
        .expect("a free port in 900..1000")
}

/// `corral run -w 1 --user nobody EXTRA -- node hostile_binds.js`, doing `steps`.
fn start_hostile(steps: &Value, extra: &[&str], port: u16) -> ClusterProcess {
    let mut command = Command::new(corral_path());
    command
        .args(["run", "-w", "1", "--grace", "2", "--user", "nobody"])
        .args(extra)
        .arg("--")
        .arg("node")
        .arg(format!("{FIXTURES}/hostile_binds.js"))
        .env("ATTEMPTS", steps.to_string())
        .env("PORT", port.to_string());
    let cluster = ClusterProcess::spawn(command);
    cluster.expect_line("RESULT serving ok");
    cluster
}

/// The code the worker reported for its attempt `name`.
fn result(cluster: &ClusterProcess, name: &str) -> String {
    let line = cluster.expect_line(&format!("RESULT {name} "));
    let code = line.split(&format!("RESULT {name} ")).nth(1).unwrap();
    code.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_worker_gets_no_privileged_port_nor_path_and_cannot_steer_the_cleanup() {
    if !root_and_node() {
        return;
    }
    let own = scratch("own", NOBODY, 0o755);
    let (real, cwd, link) = (own.join("real"), own.join("cwd"), own.join("d"));
    for dir in [&real, &cwd] {
        std::fs::create_dir(dir).unwrap();
        std::os::unix::fs::chown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    std::os::unix::fs::symlink(&real, &link).unwrap();
    std::os::unix::fs::chown(&link, Some(NOBODY), Some(NOBODY)).ok();
    // Left by a run of an older corral, which bound them.
    for leftover in [
        "/etc/corral-binds-test.sock",
        "/root/corral-binds-test.sock",
    ] {
        let _ = std::fs::remove_file(leftover);
    }
    let root_only = scratch("root-only", 0, 0o700);
    std::fs::write(root_only.join("victim.txt"), "root's").unwrap();
    let path = |p: &Path| p.display().to_string();
    let steps = json!([
        ["listen", "p22", 22],
        ["listen", "p80", 80],
        ["listen", "h443", {"port": 443, "host": "127.0.0.1"}],
        ["raw", "raw25", 25],
        ["udp", "udp53", 53],
        ["listen", "etc", "/etc/corral-binds-test.sock"],
        ["listen", "root", "/root/corral-binds-test.sock"],
        ["chdir", path(&cwd)],
        ["listen", "relative", "rel.sock"],
        ["listen", "victim", path(&link.join("victim.txt"))],
        // The attack: the link now leads to a directory only root may enter.
        ["symlink", path(&root_only), path(&link)],
    ]);
    let port = free_port();
    let mut cluster = start_hostile(&steps, &[], port);
    if low_ports_are_privileged() {
        for name in ["p22", "p80", "h443", "raw25", "udp53"] {
            assert_eq!(result(&cluster, name), "EACCES", "{name}");
        }
        cluster.expect_line("port 22 is below");
        cluster.expect_line("--allow-worker-binds 22");
    }
    for name in ["etc", "root"] {
        assert_eq!(result(&cluster, name), "EACCES", "{name}");
    }
    assert!(!Path::new("/etc/corral-binds-test.sock").exists());
    assert!(!Path::new("/root/corral-binds-test.sock").exists());
    // A relative path is in the worker's working directory, its own file.
    assert_eq!(result(&cluster, "relative"), "ok");
    let socket = std::fs::symlink_metadata(cwd.join("rel.sock")).expect("rel.sock in the cwd");
    assert_eq!(
        socket.uid(),
        NOBODY,
        "created with the worker's credentials"
    );
    assert_eq!(result(&cluster, "victim"), "ok");
    assert!(real.join("victim.txt").exists());
    // The worker's own listen() of a high port works.
    let response = http_get(port, "/").expect("the worker serves its port");
    assert!(response.body.starts_with("hello from"), "{response:?}");

    cluster.stop_gracefully(PATIENCE);
    assert_eq!(
        std::fs::read_to_string(root_only.join("victim.txt")).unwrap(),
        "root's",
        "the primary's cleanup deleted a root-only file through the worker's symlink"
    );
    assert!(
        !real.join("victim.txt").exists(),
        "its own socket file is removed"
    );
    assert!(!cwd.join("rel.sock").exists());
    std::fs::remove_dir_all(&own).unwrap();
    std::fs::remove_dir_all(&root_only).unwrap();
}

#[test]
fn the_operator_allows_ports_and_a_directory() {
    if !root_and_node() {
        return;
    }
    // A directory only root may write, named by the operator.
    let allowed = scratch("allowed", 0, 0o755);
    let privileged = free_privileged_port();
    let steps = json!([
        ["listen", "allowed_port", privileged],
        [
            "listen",
            "allowed_dir",
            allowed.join("app.sock").display().to_string()
        ],
        ["listen", "other_port", 22],
    ]);
    let allow = format!("{privileged},{}", allowed.display());
    let port = free_port();
    let mut cluster = start_hostile(&steps, &["--allow-worker-binds", &allow], port);
    assert_eq!(result(&cluster, "allowed_port"), "ok");
    assert_eq!(result(&cluster, "allowed_dir"), "ok");
    if low_ports_are_privileged() {
        assert_eq!(result(&cluster, "other_port"), "EACCES");
    }
    let socket = std::fs::symlink_metadata(allowed.join("app.sock")).unwrap();
    assert_eq!(
        socket.uid(),
        0,
        "bound by the primary in the allowed directory"
    );
    cluster.stop_gracefully(PATIENCE);
    assert!(!allowed.join("app.sock").exists(), "removed at stop");
    std::fs::remove_dir_all(&allowed).unwrap();
}

#[test]
fn a_primary_with_a_capability_its_workers_lack_refuses_privileged_ports() {
    if !root_and_node() || !low_ports_are_privileged() {
        return;
    }
    let setcap = Command::new("setcap").arg("-v").output();
    if setcap.is_err() {
        eprintln!("skipped: setcap (libcap2-bin) is not installed");
        return;
    }
    // A copy of corral that binds low ports by a file capability, run as
    // nobody: the `node` it starts does not inherit the capability.
    let dir = scratch("setcap", 0, 0o755);
    let copy = dir.join("corral");
    std::fs::copy(corral_path(), &copy).unwrap();
    let status = Command::new("setcap")
        .arg("cap_net_bind_service=ep")
        .arg(&copy)
        .status()
        .unwrap();
    if !status.success() {
        eprintln!("skipped: this filesystem takes no file capabilities");
        return;
    }
    let port = free_port();
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(&copy)
        .args(["run", "-w", "1", "--grace", "2", "--control", "none", "--"])
        .arg("node")
        .arg(format!("{FIXTURES}/hostile_binds.js"))
        .env("ATTEMPTS", json!([["listen", "p22", 22]]).to_string())
        .env("PORT", port.to_string());
    let mut cluster = ClusterProcess::spawn(command);
    cluster.expect_line("RESULT serving ok");
    assert_eq!(result(&cluster, "p22"), "EACCES");
    cluster.stop_gracefully(PATIENCE);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_flood_of_queries_holds_bounded_descriptors_and_a_few_log_lines() {
    if !node_available() {
        return;
    }
    let port = free_port();
    let mut command = Command::new(corral_path());
    command
        .args(["run", "-w", "2", "--grace", "2", "--"])
        .arg("node")
        .arg(format!("{FIXTURES}/flood_binds.js"))
        .env("PORT", port.to_string())
        .env("FLOOD_WORKER", "1")
        .env("FLOOD", "3000")
        .env("DATA_BYTES", (64 * 1024).to_string());
    let mut cluster = ClusterProcess::spawn(command);
    assert_eq!(result(&cluster, "data"), "ENOBUFS");
    let flood = cluster
        .wait_for_line("RESULT flood ", Duration::from_secs(15))
        .unwrap_or_else(|| panic!("the flood was not answered:\n{}", cluster.output()));
    // Its first servers are served, up to the per-worker limit (its HTTP
    // server is one); every other query is refused with EMFILE.
    assert!(
        flood.contains("EMFILE=2969") && flood.contains("ok=31"),
        "{flood}"
    );
    cluster.expect_line("worker 1 misbehaves on its Node channel");
    let descriptors = open_descriptors(cluster.pid());
    assert!(
        descriptors < 200,
        "the primary holds {descriptors} descriptors"
    );
    // The cluster keeps serving (the other worker) and answering.
    for _ in 0..20 {
        let response = http_get(port, "/").expect("the cluster serves");
        assert!(
            response.body.starts_with("hello from worker"),
            "{response:?}"
        );
    }
    let status = cluster
        .control_command(&["status"])
        .output()
        .expect("corral status runs");
    assert!(status.status.success(), "{status:?}");
    // A few lines, then one with the count of those left out.
    let refusals = cluster
        .output()
        .lines()
        .filter(|line| line.contains("listen() failed"))
        .count();
    assert!(
        (1..=12).contains(&refusals),
        "{refusals} lines:\n{}",
        cluster.output()
    );
    cluster.stop_gracefully(PATIENCE);
}
