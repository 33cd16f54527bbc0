//! The primary as the reaper of everything its workers start. A worker that
//! daemonizes (fork, `setsid`, fork) or runs a helper in a session of its
//! own leaves processes outside its process group, which the group signals
//! never reach and which would keep the cluster's port after it stops. The
//! primary makes itself the *child subreaper* (`PR_SET_CHILD_SUBREAPER`), so
//! such processes are re-parented to it rather than to init, and then:
//!
//! * reaps the ones that exit (tokio only waits for the workers it started),
//!   which is also the duty of a container's PID 1;
//! * finds the ones a worker left, by their environment (`CORRAL_WORKER_ID`,
//!   `CORRAL_GENERATION` and `CORRAL_PRIMARY_PID`, inherited by whatever the
//!   worker starts) or by descent from the worker, and stops them with it:
//!   SIGTERM when it is asked to stop, SIGKILL when it exits;
//! * when the cluster stops, ends whatever is still re-parented to it.
//!
//! There is no portable way to list a process's children (`/proc/PID/task/
//! TID/children` needs a kernel option many lack), so a scan of `/proc`
//! builds the table; it runs only when something exits or stops.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rustix::process::{Pid, Signal, WaitOptions};

use super::Supervisor;
use super::slot::Slot;
use crate::protocol::env::{GENERATION, PRIMARY_PID, WORKER_ID};
use crate::worker_key::WorkerKey;

/// How long the primary, exiting, waits for leftover processes it killed.
const LEFTOVER_REAP_TIMEOUT: Duration = Duration::from_secs(1);

/// Which worker process a stray names in its environment: the slot and
/// generation it inherited (`CORRAL_WORKER_ID`, `CORRAL_GENERATION`). A
/// re-added slot repeats them, so this is what a stray can tell, not a
/// [`WorkerKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Origin {
    pub slot: u32,
    pub generation: u32,
}

impl From<WorkerKey> for Origin {
    fn from(key: WorkerKey) -> Self {
        Origin {
            slot: key.slot,
            generation: key.generation,
        }
    }
}

/// One line of the process table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcessEntry {
    pub pid: u32,
    pub parent: u32,
    pub group: u32,
    pub zombie: bool,
    pub name: String,
}

/// Parses `/proc/PID/stat`: `pid (comm) state ppid pgrp …`. The command name
/// may itself contain spaces and parentheses, so the fields are read after
/// the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcessEntry> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let name = text.get(open + 1..close)?.to_string();
    let mut fields = text[close + 1..].split_whitespace();
    let state = fields.next()?;
    let parent = fields.next()?.parse().ok()?;
    let group = fields.next()?.parse().ok()?;
    Some(ProcessEntry {
        pid,
        parent,
        group,
        zombie: state == "Z" || state == "X",
        name,
    })
}

/// Every process this process can see. Processes that exit during the scan
/// are simply missing.
pub(crate) fn process_table() -> Vec<ProcessEntry> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().as_encoded_bytes()[0].is_ascii_digit())
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter_map(|text| parse_stat(&text))
        .collect()
}

/// Reads the worker identity from a NUL-separated environment block, if it
/// names a worker of the primary `primary`.
pub(crate) fn origin_in(environ: &[u8], primary: u32) -> Option<Origin> {
    let mut id = None;
    let mut generation = None;
    let mut from_us = false;
    for entry in environ.split(|&byte| byte == 0) {
        let text = std::str::from_utf8(entry).unwrap_or("");
        let Some((key, value)) = text.split_once('=') else {
            continue;
        };
        match key {
            WORKER_ID => id = value.parse().ok(),
            GENERATION => generation = value.parse().ok(),
            PRIMARY_PID => from_us = value.parse() == Ok(primary),
            _ => {}
        }
    }
    Some(Origin {
        slot: id?,
        generation: generation?,
    })
    .filter(|_| from_us)
}

fn origin_of(pid: u32, primary: u32) -> Option<Origin> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    origin_in(&environ, primary)
}

/// Makes this process the child subreaper. A process that is PID 1 (a
/// container's entrypoint) already is the reaper of its namespace.
pub(crate) fn become_subreaper() {
    if let Err(err) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        tracing::warn!(
            "cannot become the child subreaper ({err}): processes a worker starts outside its \
             process group may outlive it"
        );
    }
}

/// The primary's view of the processes below it.
pub(crate) struct Reaper {
    me: u32,
}

impl Reaper {
    pub(crate) fn new() -> Self {
        Reaper {
            me: rustix::process::getpid().as_raw_nonzero().get() as u32,
        }
    }

    /// Reaps every exited child that is not a worker (`workers`: the pids
    /// tokio waits for). Returns how many were reaped.
    pub(crate) fn reap(&self, workers: &HashSet<u32>) -> usize {
        let mut reaped = 0;
        for entry in process_table() {
            if entry.parent != self.me || !entry.zombie || workers.contains(&entry.pid) {
                continue;
            }
            if let Some(status) = reap_one(entry.pid) {
                tracing::debug!(
                    "reaped pid {} ({}), left by a worker: {status}",
                    entry.pid,
                    entry.name
                );
                reaped += 1;
            }
        }
        reaped
    }

    /// Signals the processes worker `origin` (pid `leader`, which leads its
    /// own process group) started outside its group: those still below it,
    /// and those re-parented to the primary whose environment names it.
    /// The group itself is signalled by the caller.
    pub(crate) fn signal_strays(&self, origin: WorkerKey, leader: u32, signal: Signal) {
        let table = process_table();
        let below = descendants(&table, leader);
        for entry in &table {
            if entry.zombie || entry.group == leader || entry.pid == leader {
                continue;
            }
            let adopted =
                entry.parent == self.me && origin_of(entry.pid, self.me) == Some(origin.into());
            if adopted || below.contains(&entry.pid) {
                tracing::info!(
                    "worker {}: sending {} to pid {} ({}), which it started outside its \
                     process group",
                    origin.slot,
                    signal_label(signal),
                    entry.pid,
                    entry.name
                );
                send(entry.pid, signal);
            }
        }
    }

    /// Children of the primary that are not workers and still run.
    fn leftovers(&self, workers: &HashSet<u32>) -> Vec<ProcessEntry> {
        process_table()
            .into_iter()
            .filter(|entry| entry.parent == self.me && !workers.contains(&entry.pid))
            .collect()
    }

    /// Asks every process re-parented to the primary to stop (the cluster
    /// is stopping): they get the workers' grace period.
    pub(crate) fn terminate_leftovers(&self, workers: &HashSet<u32>) {
        for entry in self.leftovers(workers) {
            if !entry.zombie {
                send(entry.pid, Signal::TERM);
            }
        }
    }

    /// The cluster stopped: kills and reaps whatever is still re-parented
    /// to the primary, naming each, and waits briefly for them to go.
    pub(crate) async fn kill_leftovers(&self) {
        let none = HashSet::new();
        let leftovers = self.leftovers(&none);
        for entry in leftovers.iter().filter(|entry| !entry.zombie) {
            tracing::warn!(
                "pid {} ({}), started by a worker, outlived the cluster: killing it",
                entry.pid,
                entry.name
            );
            send(entry.pid, Signal::KILL);
        }
        let deadline = tokio::time::Instant::now() + LEFTOVER_REAP_TIMEOUT;
        let mut pending: Vec<u32> = leftovers.iter().map(|entry| entry.pid).collect();
        while !pending.is_empty() && tokio::time::Instant::now() < deadline {
            pending.retain(|&pid| reap_one(pid).is_none() && still_child(pid));
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

impl Supervisor {
    /// The pids of the workers (tokio waits for those itself).
    fn worker_pids(&self) -> HashSet<u32> {
        self.slots
            .values()
            .flat_map(Slot::processes)
            .map(|worker| worker.pid)
            .collect()
    }

    /// A child exited: reaps the ones that are not workers.
    pub(super) fn reap_orphans(&self) {
        self.reaper.reap(&self.worker_pids());
    }

    /// Sends `signal` to what the process `key` (pid `leader`) started
    /// outside its process group.
    pub(super) fn signal_strays(&self, key: WorkerKey, leader: u32, signal: Signal) {
        self.reaper.signal_strays(key, leader, signal);
    }

    /// The cluster is stopping: processes re-parented to the primary get
    /// SIGTERM with the workers.
    pub(super) fn terminate_orphans(&self) {
        self.reaper.terminate_leftovers(&self.worker_pids());
    }
}

/// Every process below `root` in `table`.
fn descendants(table: &[ProcessEntry], root: u32) -> HashSet<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in table {
        children.entry(entry.parent).or_default().push(entry.pid);
    }
    let mut found = HashSet::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            if found.insert(child) {
                queue.push(child);
            }
        }
    }
    found
}

/// Reaps child `pid` if it has exited; `None` while it runs (or is gone).
fn reap_one(pid: u32) -> Option<String> {
    let target = Pid::from_raw(pid as i32)?;
    match rustix::process::waitpid(Some(target), WaitOptions::NOHANG) {
        Ok(Some((_, status))) => Some(match (status.exit_status(), status.terminating_signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (_, Some(signal)) => format!("signal {signal}"),
            _ => "exited".to_string(),
        }),
        _ => None,
    }
}

fn still_child(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn send(pid: u32, signal: Signal) {
    if let Some(target) = Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(target, signal);
    }
}

fn signal_label(signal: Signal) -> &'static str {
    match signal {
        Signal::TERM => "SIGTERM",
        Signal::KILL => "SIGKILL",
        _ => "a signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_odd_names() {
        let entry = parse_stat("4242 (my (odd) srv) S 17 4242 4242 0 -1 4194560 1 2 3").unwrap();
        assert_eq!(
            entry,
            ProcessEntry {
                pid: 4242,
                parent: 17,
                group: 4242,
                zombie: false,
                name: "my (odd) srv".into(),
            }
        );
        assert!(parse_stat("12 (sh) Z 1 12 12").unwrap().zombie);
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("12 (sh) S x 12"), None);
    }

    #[test]
    fn the_worker_is_found_in_the_environment() {
        let environ =
            b"PATH=/bin\0CORRAL_WORKER_ID=3\0CORRAL_GENERATION=7\0CORRAL_PRIMARY_PID=100\0";
        let origin = Origin {
            slot: 3,
            generation: 7,
        };
        assert_eq!(origin_in(environ, 100), Some(origin));
        // Another cluster's worker, or no worker at all.
        assert_eq!(origin_in(environ, 101), None);
        assert_eq!(origin_in(b"PATH=/bin\0", 100), None);
    }

    #[test]
    fn descendants_follow_the_tree() {
        let entry = |pid, parent| ProcessEntry {
            pid,
            parent,
            group: pid,
            zombie: false,
            name: String::new(),
        };
        let table = [entry(10, 1), entry(11, 10), entry(12, 11), entry(13, 1)];
        assert_eq!(descendants(&table, 10), HashSet::from([11, 12]));
        assert!(descendants(&table, 12).is_empty());
    }

    #[test]
    fn this_process_is_in_the_table() {
        let me = std::process::id();
        assert!(process_table().iter().any(|entry| entry.pid == me));
    }
}
