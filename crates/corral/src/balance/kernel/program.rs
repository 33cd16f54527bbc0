//! The steering program of one address, loaded in the kernel, and the maps
//! the primary writes for it. The object is `steer.bpf.o`, built from
//! `steer.bpf.c` by `build-bpf` and committed (see the module doc).

use std::fs::File;
use std::os::fd::AsRawFd;

use aya::maps::{Array, MapData, ReusePortSockArray};
use aya::programs::{CgroupAttachMode, SkReuseport, SockOps};
use aya::util::KernelVersion;
use aya::{Ebpf, EbpfLoader, include_bytes_aligned};
use socket2::Socket;

use crate::balance::Policy;

/// The compiled program (`steer.bpf.c`).
static OBJECT: &[u8] = include_bytes_aligned!("steer.bpf.o");

/// The program's entry point (its `SEC("sk_reuseport")` function).
const ENTRY: &str = "steer";
/// The open-connection counter's entry point (`SEC("sockops")`).
const COUNTER: &str = "count";
/// The map of connections steered and not yet established, sized in the
/// object for least-connections (`PENDING_HANDSHAKES`); the other
/// policies never write it.
const STEERED: &str = "steered";

// Keys of the `config` map and the policy values (as in steer.bpf.c).
const CONFIG_POLICY: u32 = 0;
const CONFIG_ELIGIBLE: u32 = 1;
const CONFIG_COUNTING: u32 = 2;
const COUNTING_KERNEL: u32 = 1;
const POLICY_ROUND_ROBIN: u32 = 0;
const POLICY_LEAST_CONNECTIONS: u32 = 1;
const POLICY_STICKY: u32 = 2;

/// One loaded program and its maps, for one address's group of sockets.
pub(crate) struct SteeringProgram {
    /// Keeps the program loaded while sockets are attached to it.
    ebpf: Ebpf,
    sockets: ReusePortSockArray<MapData>,
    config: Array<MapData, u32>,
    eligible: Array<MapData, u32>,
    given: Array<MapData, i64>,
    closed: Array<MapData, i64>,
    sticky_table: Array<MapData, u32>,
    /// The counter program loaded, or why not.
    counter: Result<(), Unavailable>,
    /// Whether the counter is attached: it then writes `given` and
    /// `closed`, and the workers' reports are not needed.
    counted_in_kernel: bool,
}

/// Why the program cannot serve: the kernel or the process lacks something.
pub(crate) type Unavailable = String;

impl SteeringProgram {
    /// Loads the program for `policy` (round-robin, least-connections or
    /// sticky). Fails without the capabilities (`CAP_BPF` and
    /// `CAP_NET_ADMIN`) or kernel support.
    pub(crate) fn load(policy: Policy) -> Result<Self, Unavailable> {
        let mut loader = EbpfLoader::new();
        if policy != Policy::LeastConnections {
            // Its entries are memory allocated up front, unused here.
            loader.map_max_entries(STEERED, 1);
        }
        let mut ebpf = loader
            .load(OBJECT)
            .map_err(|err| unavailable("load", &err))?;
        let program: &mut SkReuseport = ebpf
            .program_mut(ENTRY)
            .ok_or("the object has no steering program")?
            .try_into()
            .map_err(|err| unavailable("load", &err))?;
        program.load().map_err(|err| unavailable("load", &err))?;
        // An older kernel without what the counter needs still steers;
        // least-connections then counts from the workers' reports.
        let counter = match policy {
            Policy::LeastConnections => load_counter(&mut ebpf),
            _ => Err("the policy counts no connections".to_string()),
        };
        let mut map = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| format!("the object has no map {name}"))
        };
        let (sockets, config, eligible, given, closed, sticky_table) = (
            map("sockets")?,
            map("config")?,
            map("eligible")?,
            map("given")?,
            map("closed")?,
            map("sticky_table")?,
        );
        let typed = |err: aya::maps::MapError| unavailable("open the maps of", &err);
        let mut steering = SteeringProgram {
            sockets: sockets.try_into().map_err(typed)?,
            config: config.try_into().map_err(typed)?,
            eligible: eligible.try_into().map_err(typed)?,
            given: given.try_into().map_err(typed)?,
            closed: closed.try_into().map_err(typed)?,
            sticky_table: sticky_table.try_into().map_err(typed)?,
            ebpf,
            counter,
            counted_in_kernel: false,
        };
        steering
            .config
            .set(CONFIG_POLICY, policy_value(policy), 0)
            .map_err(|err| unavailable("configure", &err))?;
        Ok(steering)
    }

    /// Attaches the program to the `SO_REUSEPORT` group of `socket`.
    pub(crate) fn attach(&self, socket: &Socket) -> Result<(), Unavailable> {
        let program: &SkReuseport = self
            .ebpf
            .program(ENTRY)
            .ok_or("the object has no steering program")?
            .try_into()
            .map_err(|err| unavailable("attach", &err))?;
        program
            .attach(socket)
            .map_err(|err| unavailable("attach", &err))
    }

    /// Attaches the open-connection counter (least-connections) to the
    /// cgroup v2 `cgroup`, the primary's, where its listening sockets and
    /// so their connections are; other programs there keep running. From
    /// then on least-connections reads the counts it keeps. Detached when
    /// the program is dropped (the link's descriptor closes).
    pub(crate) fn count_in_cgroup(&mut self, cgroup: &File) -> Result<(), Unavailable> {
        self.counter.clone()?;
        let counter: &mut SockOps = self
            .ebpf
            .program_mut(COUNTER)
            .ok_or("the object has no counter program")?
            .try_into()
            .map_err(|err| unavailable("attach", &err))?;
        counter
            .attach(cgroup, shared_attach_mode())
            .map_err(|err| unavailable("attach the connection counter of", &err))?;
        self.set_config(CONFIG_COUNTING, COUNTING_KERNEL)
            .map_err(|err| format!("cannot configure the connection counter: {err}"))?;
        self.counted_in_kernel = true;
        Ok(())
    }

    /// Puts `socket` in the array at `slot`.
    pub(crate) fn set_socket(&mut self, slot: u32, socket: &Socket) -> std::io::Result<()> {
        self.sockets
            .set(slot, &socket.as_raw_fd(), 0)
            .map_err(std::io::Error::other)
    }

    /// Takes `slot`'s socket out of the array.
    pub(crate) fn clear_socket(&mut self, slot: u32) {
        let _ = self.sockets.clear_index(&slot);
    }

    /// Makes `slots` the eligible ones. Entries are written before the
    /// count when it grows and after it when it shrinks, so the program
    /// never reads an entry that was never written; for an instant it may
    /// still pick a slot just taken out, whose socket keeps the connection
    /// for that slot's next worker (nothing is lost).
    pub(crate) fn set_eligible(&mut self, slots: &[u32]) -> std::io::Result<()> {
        let count = slots.len() as u32;
        let before = self.config.get(&CONFIG_ELIGIBLE, 0).unwrap_or(0);
        if count < before {
            self.set_config(CONFIG_ELIGIBLE, count)?;
        }
        for (index, slot) in slots.iter().enumerate() {
            self.eligible
                .set(index as u32, *slot, 0)
                .map_err(std::io::Error::other)?;
        }
        self.set_config(CONFIG_ELIGIBLE, count)
    }

    /// Connections open in `slot` as least-connections counts them: those
    /// the counter saw established less those it saw closed, or without it
    /// those the program gave less those its workers reported closed.
    pub(crate) fn open_connections(&self, slot: u32) -> i64 {
        let given = self.given.get(&slot, 0).unwrap_or(0);
        given - self.closed.get(&slot, 0).unwrap_or(0)
    }

    /// Starts `slot` over at `open` connections (for its new worker). The
    /// kernel's counts are never reset: they are the sockets still open,
    /// whichever of the slot's workers holds them.
    pub(crate) fn restart_count(&mut self, slot: u32, open: i64) {
        if self.counted_in_kernel {
            return;
        }
        let _ = self.closed.set(slot, 0, 0);
        let _ = self.given.set(slot, open, 0);
    }

    /// Counts `count` more connections of `slot` closed, never more than
    /// the program gave it: a worker's report cannot draw every connection
    /// to itself.
    pub(crate) fn count_closed(&mut self, slot: u32, count: u64) {
        if self.counted_in_kernel {
            // Only the kernel counts: a report (none is asked for) is
            // ignored.
            return;
        }
        let given = self.given.get(&slot, 0).unwrap_or(0);
        let closed = self.closed.get(&slot, 0).unwrap_or(0);
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        let _ = self
            .closed
            .set(slot, closed.saturating_add(count).min(given), 0);
    }

    /// Rewrites the sticky table (slot numbers, `sticky::TABLE_SIZE`
    /// entries).
    pub(crate) fn set_sticky_table(&mut self, table: &[u32]) -> std::io::Result<()> {
        for (index, slot) in table.iter().enumerate() {
            self.sticky_table
                .set(index as u32, *slot, 0)
                .map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    /// Entries of the sticky table map (its size in the object).
    #[cfg(test)]
    pub(crate) fn sticky_table_len(&self) -> u32 {
        self.sticky_table.len()
    }

    fn set_config(&mut self, key: u32, value: u32) -> std::io::Result<()> {
        self.config
            .set(key, value, 0)
            .map_err(std::io::Error::other)
    }
}

/// The mode that attaches the counter next to the cgroup's other programs.
/// From Linux 5.7 aya attaches with a BPF link, which always runs beside
/// the others and refuses any mode flag (`EINVAL`): that is `Single`'s 0.
/// Before, it attaches with `BPF_PROG_ATTACH`, where only `AllowMultiple`
/// leaves the others in place.
fn shared_attach_mode() -> CgroupAttachMode {
    let linked = KernelVersion::current().is_ok_and(|kernel| kernel >= KernelVersion::new(5, 7, 0));
    match linked {
        true => CgroupAttachMode::Single,
        false => CgroupAttachMode::AllowMultiple,
    }
}

/// Loads (verifies) the open-connection counter of `ebpf`; it is attached
/// later, to a cgroup ([`SteeringProgram::count_in_cgroup`]).
fn load_counter(ebpf: &mut Ebpf) -> Result<(), Unavailable> {
    let counter: &mut SockOps = ebpf
        .program_mut(COUNTER)
        .ok_or("the object has no counter program")?
        .try_into()
        .map_err(|err| unavailable("load the connection counter of", &err))?;
    counter
        .load()
        .map_err(|err| unavailable("load the connection counter of", &err))
}

fn policy_value(policy: Policy) -> u32 {
    match policy {
        Policy::LeastConnections => POLICY_LEAST_CONNECTIONS,
        Policy::Sticky => POLICY_STICKY,
        _ => POLICY_ROUND_ROBIN,
    }
}

/// The error of `what`, with its causes, on one line.
fn unavailable(what: &str, err: &dyn std::error::Error) -> Unavailable {
    let mut text = format!("cannot {what} the steering program: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // aya repeats a cause in its own message.
        if !text.contains(&cause_text) {
            text.push_str(&format!(": {cause_text}"));
        }
        source = cause.source();
    }
    text
}
