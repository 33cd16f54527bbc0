//! What the machine offers and says: processes (their state, children,
//! memory and descriptors, as `/proc` tells) and signals to them, a free
//! port, whether Node is installed.

use rustix::process::{Pid, Signal};

/// `SCHED_OTHER`, the normal scheduling policy.
pub const SCHED_OTHER: u32 = 0;
/// `SCHED_BATCH`, the policy of a corral primary of non-Node workers.
pub const SCHED_BATCH: u32 = 3;

/// The scheduling policy of `pid` ([`SCHED_OTHER`], [`SCHED_BATCH`], …).
pub fn scheduling_policy(pid: u32) -> u32 {
    procfs::process::Process::new(pid as i32)
        .and_then(|process| process.stat())
        .expect("the process lives")
        .policy
        .expect("the kernel reports the policy")
}

/// Sends `signal` to `pid`, ignoring a process that is already gone.
pub fn send_signal(pid: u32, signal: Signal) {
    if let Some(pid) = Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// Whether `pid` is a running (not zombie) process.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// The live (not zombie) children of `pid`.
pub fn live_children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|child| child.parse().ok())
        .filter(|&child| process_alive(child))
        .collect()
}

/// The resident memory of `pid` in KiB (`VmRSS`); `None` if it is gone.
pub fn resident_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// How many descriptors `pid` holds open (0 if it is gone).
pub fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

/// A loopback port free right now (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Whether `node` runs here; if not, says the test is skipped (.ci/run
/// installs Node; a developer machine may lack it).
pub fn node_available() -> bool {
    let found = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        eprintln!("node is not installed: skipping (.ci/run installs it)");
    }
    found
}

/// The Node fixtures' directory, where `.ci/run` installs their packages.
const NODE_FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../corral-cli/tests/fixtures/node"
);

/// Whether `node` runs here and the Node fixtures have `packages`
/// installed; if not, says the test is skipped and what to install.
pub fn node_with(packages: &[&str]) -> bool {
    if !node_available() {
        return false;
    }
    let modules = std::path::Path::new(NODE_FIXTURES).join("node_modules");
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|package| !modules.join(package).is_dir())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "{} not installed for the fixtures: skipping; run \
             `npm ci --prefix crates/corral-cli/tests/fixtures/node` (.ci/run does)",
            missing.join(", ")
        );
        return false;
    }
    true
}
