//! The steering programs of a cluster, one per `SO_REUSEPORT` group (one
//! address), and the eligible slots they all choose among. The `--listen`
//! addresses (`KernelSteered`) and the addresses Node workers' `listen()`
//! binds on demand (`primary/node/binds.rs`) each add their groups here.

use std::collections::BTreeSet;
use std::fs::File;

use socket2::Socket;

use super::cgroup;
use super::eligible::Eligible;
use super::program::{SteeringProgram, Unavailable};
use crate::balance::{ConnectionCounts, Policy, WorkerKey, sticky};

/// One address's program and the slots whose sockets are in its array (a
/// socket is in at most one array, once: adding it again fails with
/// `EBUSY`).
struct Group {
    program: SteeringProgram,
    registered: BTreeSet<u32>,
}

pub(crate) struct SteeredGroups {
    policy: Policy,
    groups: Vec<Group>,
    eligible: Eligible,
    /// The program loaded to check that loading works, for the first
    /// group: each load runs the kernel's verifier (about 0.5 s on a busy
    /// 2-core machine), which a worker's `listen()` would otherwise wait
    /// for.
    spare: Option<SteeringProgram>,
    /// Least-connections: where its open counts come from.
    counts: Option<Counting>,
}

/// Where least-connections' open counts come from.
enum Counting {
    /// The counters attach to this cgroup (the primary's), one per group.
    Kernel(File),
    /// The workers report their closes; the kernel cannot count, for this
    /// reason.
    WorkerReports(Unavailable),
}

impl Counting {
    /// Attaches `program`'s counter to the primary's cgroup, or says why
    /// it cannot.
    fn start(program: &mut SteeringProgram) -> Self {
        let attached = cgroup::open_own().and_then(|cgroup| {
            program.count_in_cgroup(&cgroup)?;
            Ok(cgroup)
        });
        match attached {
            Ok(cgroup) => Counting::Kernel(cgroup),
            Err(why) => Counting::WorkerReports(why),
        }
    }
}

/// Which group of a [`SteeredGroups`] an address is.
pub(crate) type GroupIndex = usize;

impl SteeredGroups {
    /// Checks that the program loads for `policy` here (capabilities,
    /// kernel support); no group yet.
    pub(crate) fn new(policy: Policy) -> Result<Self, Unavailable> {
        let mut spare = SteeringProgram::load(policy)?;
        let counts = (policy == Policy::LeastConnections).then(|| Counting::start(&mut spare));
        Ok(SteeredGroups {
            policy,
            groups: Vec::new(),
            eligible: Eligible::default(),
            spare: Some(spare),
            counts,
        })
    }

    /// Where least-connections' open counts come from (`None` for the
    /// other policies).
    pub(crate) fn connection_counts(&self) -> Option<ConnectionCounts> {
        self.counts.as_ref().map(|counts| match counts {
            Counting::Kernel(_) => ConnectionCounts::Kernel,
            Counting::WorkerReports(_) => ConnectionCounts::WorkerReports,
        })
    }

    /// The start log's words on the counts: empty, or where they come
    /// from and why.
    pub(crate) fn counting_note(&self) -> String {
        match &self.counts {
            None => String::new(),
            Some(Counting::Kernel(_)) => ", open connections counted in the kernel".into(),
            Some(Counting::WorkerReports(why)) => {
                format!(", open connections counted from worker reports ({why})")
            }
        }
    }

    /// Whether library workers must report the connections they close.
    pub(crate) fn workers_report_closes(&self) -> bool {
        matches!(self.counts, Some(Counting::WorkerReports(_)))
    }

    /// Loads a program for the group of `socket` (any of its sockets) and
    /// attaches it.
    pub(crate) fn add_group(&mut self, socket: &Socket) -> Result<GroupIndex, Unavailable> {
        let mut program = match self.spare.take() {
            Some(spare) => spare,
            None => self.load_counting()?,
        };
        program.attach(socket)?;
        program
            .set_eligible(&self.eligible.slots())
            .map_err(|err| format!("cannot write the eligible slots: {err}"))?;
        self.groups.push(Group {
            program,
            registered: BTreeSet::new(),
        });
        Ok(self.groups.len() - 1)
    }

    /// A new group's program, its counter attached when the kernel counts.
    /// Should that fail now (it worked for the first group), the group's
    /// least-connections counts the connections it gave, as for workers
    /// that report nothing: the error says so.
    fn load_counting(&self) -> Result<SteeringProgram, Unavailable> {
        let mut program = SteeringProgram::load(self.policy)?;
        if let Some(Counting::Kernel(cgroup)) = &self.counts
            && let Err(why) = program.count_in_cgroup(cgroup)
        {
            tracing::error!(
                "{why}: least-connections on this address counts only the connections it gives"
            );
        }
        Ok(program)
    }

    /// Puts `slot`'s socket of `group` in its array, once.
    pub(crate) fn add_socket(
        &mut self,
        group: GroupIndex,
        slot: u32,
        socket: &Socket,
    ) -> std::io::Result<()> {
        let Some(group) = self.groups.get_mut(group) else {
            return Ok(());
        };
        if group.registered.insert(slot) {
            group.program.set_socket(slot, socket)?;
        }
        Ok(())
    }

    /// Whether `slot`'s socket of `group` is in its array.
    pub(crate) fn has_socket(&self, group: GroupIndex, slot: u32) -> bool {
        self.groups
            .get(group)
            .is_some_and(|group| group.registered.contains(&slot))
    }

    /// The worker is ready: its slot may get connections.
    pub(crate) fn ready(&mut self, worker: WorkerKey) {
        if !self.eligible.has(worker.slot) {
            self.start_count(worker.slot);
        }
        self.eligible.ready(worker);
        self.publish();
    }

    /// The worker drains or exited: no new connection for it.
    pub(crate) fn gone(&mut self, worker: WorkerKey) {
        self.eligible.gone(worker);
        self.publish();
    }

    /// The worker reported `count` connections closed.
    pub(crate) fn connections_closed(&mut self, worker: WorkerKey, count: u64) {
        for group in &mut self.groups {
            group.program.count_closed(worker.slot, count);
        }
    }

    /// The slot is gone for good: out of the eligible set and the arrays.
    pub(crate) fn remove_slot(&mut self, slot: u32) {
        self.eligible.remove_slot(slot);
        self.publish();
        for group in &mut self.groups {
            group.program.clear_socket(slot);
            group.registered.remove(&slot);
        }
    }

    /// Writes the eligible slots to every program, and under `sticky`
    /// their Maglev table (`sticky::table`, the one the hand-off path
    /// uses, so a client goes to the same slot either way). With no slot
    /// eligible the table is left as it was: the program then leaves the
    /// connection to the kernel's hash.
    fn publish(&mut self) {
        let slots = self.eligible.slots();
        let table = (self.policy == Policy::Sticky).then(|| sticky::table(&slots));
        for group in &mut self.groups {
            let program = &mut group.program;
            let written = match &table {
                Some(table) => program.set_sticky_table(table),
                None => Ok(()),
            }
            .and_then(|()| program.set_eligible(&slots));
            if let Err(err) = written {
                tracing::error!("cannot update the steering program's eligible slots: {err}");
            }
        }
    }

    /// Connections open in `slot` of the first group, as least-connections
    /// counts them.
    #[cfg(test)]
    pub(crate) fn open_connections(&self, slot: u32) -> i64 {
        self.groups[0].program.open_connections(slot)
    }

    /// A slot's new worker starts least-connections' count at the lowest
    /// of the other eligible slots.
    fn start_count(&mut self, slot: u32) {
        let others = self.eligible.slots();
        for group in &mut self.groups {
            let program = &mut group.program;
            let lowest = others
                .iter()
                .map(|&other| program.open_connections(other))
                .min();
            program.restart_count(slot, lowest.unwrap_or(0).max(0));
        }
    }
}
