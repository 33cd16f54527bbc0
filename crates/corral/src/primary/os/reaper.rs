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
//! Where the kernel lists each process's children (`/proc/PID/task/TID/
//! children`, `CONFIG_PROC_CHILDREN`, which Debian's and most distributions'
//! kernels have), a search reads only the primary's children and what is
//! below the workers asked to stop; elsewhere a scan of all of `/proc`
//! builds the table. That scan reads a file per process, so with a thousand
//! workers it costs tens of milliseconds. Either way the stops, exits and
//! SIGCHLDs that need a search are gathered as [`StrayOrders`] and served by
//! one search at most every [`SCAN_PERIOD`], so stopping or reloading N
//! workers costs a few searches, not N of them (which made a stop
//! quadratic in the workers).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rustix::process::{Pid, Signal, WaitOptions};

use crate::protocol::env::{GENERATION, PRIMARY_PID, WORKER_ID};
use crate::worker_key::WorkerKey;

/// How long the primary, exiting, waits for leftover processes it killed.
const LEFTOVER_REAP_TIMEOUT: Duration = Duration::from_secs(1);

/// The least time between two scans of the process table for strays: what
/// a stray may wait for its signal, at most, while workers come and go.
pub(crate) const SCAN_PERIOD: Duration = Duration::from_millis(100);

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

/// The work waiting for the next scan of the process table: the workers
/// whose strays get a signal (by the worker's pid, which leads its group),
/// and whether exited children are to be reaped.
#[derive(Debug, Default)]
pub(crate) struct StrayOrders {
    signals: HashMap<u32, StrayOrder>,
    reap: bool,
}

#[derive(Debug, Clone, Copy)]
struct StrayOrder {
    origin: Origin,
    signal: Signal,
}

impl StrayOrders {
    /// What worker `origin` (pid `leader`) started outside its group is to
    /// get `signal`; SIGKILL (it exited) overrides SIGTERM (it was asked to
    /// stop).
    pub(crate) fn signal(&mut self, origin: WorkerKey, leader: u32, signal: Signal) {
        let order = self.signals.entry(leader).or_insert(StrayOrder {
            origin: origin.into(),
            signal,
        });
        if signal == Signal::KILL {
            order.signal = Signal::KILL;
        }
    }

    /// A child exited: the next scan reaps the ones that are not workers.
    pub(crate) fn reap(&mut self) {
        self.reap = true;
    }

    /// Whether a scan has work to do.
    pub(crate) fn pending(&self) -> bool {
        self.reap || !self.signals.is_empty()
    }

    /// The workers asked to stop and still running (SIGTERM orders): what
    /// is below them may be their strays.
    fn running_leaders(&self) -> impl Iterator<Item = u32> + '_ {
        self.signals
            .iter()
            .filter(|(_, order)| order.signal != Signal::KILL)
            .map(|(&leader, _)| leader)
    }
}

/// The strays of the workers in `orders`, with their worker's pid:
/// every process below a worker still running (a SIGTERM order) or
/// re-parented to the primary (`me`) whose environment names the worker
/// (`origin_of`), that is not in the worker's own group (the group is
/// signalled by the caller), nor a worker itself (`workers`), nor a zombie.
/// Below an exited worker (a SIGKILL order) nothing is left but what a
/// later process of the same pid started, which is not its stray.
fn strays<'table>(
    table: &'table [ProcessEntry],
    orders: &StrayOrders,
    workers: &HashSet<u32>,
    me: u32,
    origin_of: impl Fn(u32) -> Option<Origin>,
) -> Vec<(&'table ProcessEntry, u32)> {
    let children = children(table);
    let mut below: HashMap<u32, u32> = HashMap::new();
    for leader in orders.running_leaders() {
        below.extend(
            descendants(&children, leader)
                .into_iter()
                .map(|pid| (pid, leader)),
        );
    }
    let by_origin: HashMap<Origin, u32> = orders
        .signals
        .iter()
        .map(|(&leader, order)| (order.origin, leader))
        .collect();
    let mut found = Vec::new();
    for entry in table {
        let skipped =
            entry.zombie || workers.contains(&entry.pid) || orders.signals.contains_key(&entry.pid);
        if skipped {
            continue;
        }
        let leader = below.get(&entry.pid).copied().or_else(|| {
            // Only the primary's children: their environments are read.
            (entry.parent == me)
                .then(|| origin_of(entry.pid))
                .flatten()
                .and_then(|origin| by_origin.get(&origin).copied())
        });
        if let Some(leader) = leader
            && entry.group != leader
        {
            found.push((entry, leader));
        }
    }
    found
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

/// The table's line of process `pid`, if it still exists.
fn process_entry(pid: u32) -> Option<ProcessEntry> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The children of process `pid`, from the kernel's list of each of its
/// threads' children; none if it is gone.
fn listed_children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|child| child.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Whether the kernel lists children (`CONFIG_PROC_CHILDREN`).
fn children_are_listed(me: u32) -> bool {
    std::path::Path::new(&format!("/proc/{me}/task/{me}/children")).exists()
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
    /// The kernel lists children: searches read only what is near.
    children_listed: bool,
}

impl Reaper {
    pub(crate) fn new() -> Self {
        let me = rustix::process::getpid().as_raw_nonzero().get() as u32;
        Reaper {
            me,
            children_listed: children_are_listed(me),
        }
    }

    /// Does what `orders` ask with one search of the process table
    /// (`workers`: the pids of the workers, which tokio waits for).
    pub(crate) fn carry_out(&self, orders: &StrayOrders, workers: &HashSet<u32>) {
        if !orders.pending() {
            return;
        }
        let table = if self.children_listed {
            self.nearby_table(orders, workers)
        } else {
            process_table()
        };
        if orders.reap {
            self.reap(&table, workers);
        }
        let origin = |pid| origin_of(pid, self.me);
        for (stray, leader) in strays(&table, orders, workers, self.me, origin) {
            let order = orders.signals[&leader];
            tracing::info!(
                "worker {}: sending {} to pid {} ({}), which it started outside its process \
                 group",
                order.origin.slot,
                signal_label(order.signal),
                stray.pid,
                stray.name
            );
            send(stray.pid, order.signal);
        }
    }

    /// The part of the process table that `orders` need, from the kernel's
    /// lists of children: the primary's children that are not workers, and
    /// every process below the workers asked to stop.
    fn nearby_table(&self, orders: &StrayOrders, workers: &HashSet<u32>) -> Vec<ProcessEntry> {
        let mut pids: Vec<u32> = listed_children(self.me)
            .into_iter()
            .filter(|pid| !workers.contains(pid))
            .collect();
        let mut queue: Vec<u32> = orders.running_leaders().collect();
        while let Some(parent) = queue.pop() {
            let children = listed_children(parent);
            pids.extend(&children);
            queue.extend(children);
        }
        pids.sort_unstable();
        pids.dedup();
        pids.into_iter().filter_map(process_entry).collect()
    }

    /// Reaps every exited child in `table` that is not a worker (`workers`:
    /// the pids tokio waits for). Returns how many were reaped.
    fn reap(&self, table: &[ProcessEntry], workers: &HashSet<u32>) -> usize {
        let mut reaped = 0;
        for entry in table {
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

/// The children of each process in `table`, by parent.
fn children(table: &[ProcessEntry]) -> HashMap<u32, Vec<u32>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in table {
        children.entry(entry.parent).or_default().push(entry.pid);
    }
    children
}

/// Every process below `root`, from the `children` map of a table.
fn descendants(children: &HashMap<u32, Vec<u32>>, root: u32) -> HashSet<u32> {
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
        let children = children(&table);
        assert_eq!(descendants(&children, 10), HashSet::from([11, 12]));
        assert!(descendants(&children, 12).is_empty());
    }

    fn process(pid: u32, parent: u32, group: u32) -> ProcessEntry {
        ProcessEntry {
            pid,
            parent,
            group,
            zombie: false,
            name: format!("p{pid}"),
        }
    }

    fn key(slot: u32, generation: u32) -> WorkerKey {
        WorkerKey::new(slot, generation, u64::from(slot * 100 + generation))
    }

    /// The primary is pid 1 here; workers 10 (slot 1) and 20 (slot 2).
    fn found(table: &[ProcessEntry], orders: &StrayOrders) -> Vec<(u32, u32)> {
        let workers = HashSet::from([10, 20]);
        let origin_of = |pid| match pid {
            30 => Some(Origin::from(key(1, 1))),
            31 => Some(Origin::from(key(2, 1))),
            _ => None,
        };
        let mut found: Vec<(u32, u32)> = strays(table, orders, &workers, 1, origin_of)
            .into_iter()
            .map(|(entry, leader)| (entry.pid, leader))
            .collect();
        found.sort_unstable();
        found
    }

    #[test]
    fn strays_are_below_a_running_worker_outside_its_group_or_adopted_naming_it() {
        let table = [
            process(10, 1, 10),
            process(11, 10, 10), // in the worker's group: the caller's
            process(12, 10, 12), // its own session: a stray
            process(13, 12, 12), // below that: a stray too
            process(20, 1, 20),  // another worker
            process(21, 20, 21), // the other worker's
            process(30, 1, 30),  // adopted, names slot 1
            process(31, 1, 31),  // adopted, names slot 2
        ];
        let mut orders = StrayOrders::default();
        orders.signal(key(1, 1), 10, Signal::TERM);
        assert_eq!(found(&table, &orders), [(12, 10), (13, 10), (30, 10)]);
    }

    #[test]
    fn one_scan_serves_many_orders_and_kill_overrides_term() {
        let table = [
            process(10, 1, 10),
            process(12, 10, 12),
            process(20, 1, 20),
            process(21, 20, 21),
            process(30, 1, 30),
            process(31, 1, 31),
        ];
        let mut orders = StrayOrders::default();
        assert!(!orders.pending());
        orders.signal(key(1, 1), 10, Signal::TERM);
        orders.signal(key(2, 1), 20, Signal::TERM);
        assert_eq!(
            found(&table, &orders),
            [(12, 10), (21, 20), (30, 10), (31, 20)]
        );
        orders.signal(key(1, 1), 10, Signal::KILL);
        orders.signal(key(1, 1), 10, Signal::TERM);
        assert_eq!(orders.signals[&10].signal, Signal::KILL);
        assert!(orders.pending());
    }

    #[test]
    fn below_an_exited_worker_nothing_is_its_stray_but_the_adopted() {
        // Pid 10 exited (a SIGKILL order); a process since started with
        // pid 10 has a child 12, which is not the old worker's.
        let table = [process(10, 77, 10), process(12, 10, 12), process(30, 1, 30)];
        let mut orders = StrayOrders::default();
        orders.signal(key(1, 1), 10, Signal::KILL);
        assert_eq!(found(&table, &orders), [(30, 10)]);
    }

    #[test]
    fn this_process_is_in_the_table() {
        let me = std::process::id();
        assert!(process_table().iter().any(|entry| entry.pid == me));
    }
}
