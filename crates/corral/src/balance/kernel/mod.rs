//! Kernel steering: `round-robin`, `least-connections` and `sticky` served
//! by an `SK_REUSEPORT` eBPF program instead of the primary's hand-off.
//!
//! The sockets are `reuseport`'s: one `SO_REUSEPORT` socket per address and
//! worker slot, kept by the primary across the slot's restarts, and every
//! worker receives its slot's sockets as plain listening sockets (library,
//! demo, a COMMAND by `LISTEN_FDS`, Node programs in answer to
//! `queryServer`). The program (`steer.bpf.c`), attached to each address's
//! group with `SO_ATTACH_REUSEPORT_EBPF`, picks the socket of an eligible
//! slot for each new connection (`eligible.rs`): no process is on the
//! connection's path, so the cost is reuseport's.
//!
//! Where the program cannot load (no `CAP_BPF` and `CAP_NET_ADMIN`, a kernel
//! without `SK_REUSEPORT` programs, a locked-down container), the policy is
//! served by the hand-off path (`hand_off.rs`) instead, chosen at start; one
//! log line per listener says which and why, and `corral status` shows it
//! (`steering`).
//!
//! # Least-connections in the kernel
//!
//! A slot's open connections are `given` less `closed` (two maps indexed
//! by slot); the next connection goes to the eligible slot with the fewest,
//! equals in turn. Who writes the two maps depends on where the counts come
//! from (`status`'s `connection_counts`):
//!
//! * **Counted in the kernel** (`cgroup.rs`, the `count` program of
//!   `steer.bpf.c`): a `SOCK_OPS` program attached to the primary's cgroup
//!   v2 (beside any other program there). The steering program notes each
//!   connection's 4-tuple and slot in an LRU map (`steered`,
//!   `PENDING_HANDSHAKES` entries: a SYN that never completes is evicted);
//!   when the handshake completes, the counter takes the entry out, tags
//!   the new socket with its slot (socket-local storage), adds one to
//!   `given` and asks for the socket's state changes; when the worker closes
//!   it (`FIN_WAIT1`, `LAST_ACK`) or it is gone (`CLOSE`: a reset, the
//!   worker killed), it adds one to `closed` and removes the tag, so once.
//!   Every kind of worker is counted, library, COMMAND or Node, and none
//!   sends anything; the primary never writes the counts (a slot's new
//!   worker starts at the slot's real count: sockets still open in it, a
//!   draining predecessor's included). Sockets the steering program never
//!   noted (other processes in the cgroup, other listeners) cost a
//!   callback and are ignored. Addresses are compared in IPv6 form, IPv4
//!   ones v4-mapped, as a dual-stack socket shows them.
//! * **Counted from worker reports**, where the counter cannot attach (no
//!   cgroup2 mounted, a cgroup outside the mount a container sees, a
//!   kernel without what it needs): the steering program adds to `given`
//!   at each pick; library workers report their closes on their message
//!   channel (`{"corral":{"closed":N}}`, at most one per 5 ms, told to by
//!   `CORRAL_CLOSE_REPORTS`), and the primary adds them to `closed`, never
//!   above `given`. A worker that reports nothing (a COMMAND, a Node
//!   program) only ever has its count grow: least-connections then rotates
//!   over such workers exactly as round-robin does. A slot's new worker
//!   starts at the lowest count of the others, so it is neither flooded nor
//!   starved.
//!
//! # Sticky in the kernel
//!
//! The program hashes the client's address (FNV-1a over its 4 or 16
//! bytes, read from the SYN's IP header) and looks the slot up in the
//! `sticky_table` map, which the primary rewrites from `sticky::table` of
//! the eligible slots at every change: the same function and table the
//! hand-off path uses, so a client lands on the same slot either way.
//!
//! # Why aya
//!
//! aya loads and attaches the program (`SkReuseport`, `ReusePortSockArray`).
//! It is pure Rust: no libbpf, no C toolchain, and it links statically
//! under musl, which the npm packages' binary is (`packaging/binary`).
//! libbpf-rs would bring libbpf's C and its build. Version 0.14 is the
//! newest whose minimum Rust (1.87) fits this workspace's (1.88).
//!
//! # Building the program
//!
//! `steer.bpf.o` is committed and embedded with `include_bytes!`, so that
//! building corral needs no clang or LLVM. After changing `steer.bpf.c`,
//! run `./build-bpf` in this folder (clang with the BPF target and the
//! kernel's UAPI headers, `linux-libc-dev`): it rebuilds the object and
//! records the source's SHA-256 in `steer.bpf.c.sha256`. A test fails when
//! that record does not match the source, so a stale object cannot be
//! committed unnoticed.

mod cgroup;
mod eligible;
mod groups;
mod program;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;

use super::reuseport::SocketPerSlot;
use super::{Balancer, ConnectionCounts, Policy, WorkerKey, WorkerSockets};
use crate::error::Error;
pub(crate) use groups::{GroupIndex, SteeredGroups};
pub(crate) use program::Unavailable;

/// `round-robin`, `least-connections` or `sticky` steered in the kernel, on the
/// `--listen` addresses: address `i` is group `i`.
pub(crate) struct KernelSteered {
    sockets: SocketPerSlot,
    groups: SteeredGroups,
}

impl KernelSteered {
    /// Loads the program and binds the sockets of slots `1..=slots`. The
    /// outer error is a real failure (a port in use); the inner one says
    /// why the kernel cannot steer, and the caller falls back.
    pub(crate) fn bind(
        addresses: &[SocketAddr],
        slots: usize,
        backlog: i32,
        policy: Policy,
    ) -> Result<Result<Self, Unavailable>, Error> {
        let groups = match SteeredGroups::new(policy) {
            Ok(groups) => groups,
            Err(why) => return Ok(Err(why)),
        };
        let mut steered = KernelSteered {
            sockets: SocketPerSlot::bind(addresses, slots, backlog)?,
            groups,
        };
        if let Err(why) = steered.attach() {
            return Ok(Err(why));
        }
        Ok(Ok(steered))
    }

    /// Attaches a program to each address's group and fills the socket
    /// arrays with the slots bound so far.
    fn attach(&mut self) -> Result<(), Unavailable> {
        let slots: Vec<u32> = self.sockets.all_sockets().map(|(slot, _)| slot).collect();
        if let Some((_, first)) = self.sockets.all_sockets().next() {
            for socket in first {
                self.groups.add_group(socket)?;
            }
        }
        for slot in slots {
            self.register(slot)
                .map_err(|err| format!("cannot fill the socket array: {err}"))?;
        }
        Ok(())
    }

    /// The start log's words on least-connections' counts.
    pub(crate) fn counting_note(&self) -> String {
        self.groups.counting_note()
    }

    /// Puts `slot`'s sockets in the programs' arrays (binding them if the
    /// slot is new).
    fn register(&mut self, slot: u32) -> Result<(), Error> {
        if self.groups.has_socket(0, slot) {
            return Ok(());
        }
        let sockets = self.sockets.slot_sockets(slot)?;
        for (group, socket) in sockets.iter().enumerate() {
            self.groups
                .add_socket(group, slot, socket)
                .map_err(Error::io("cannot add a socket to the steering program"))?;
        }
        Ok(())
    }
}

impl Balancer for KernelSteered {
    fn local_addrs(&self) -> &[SocketAddr] {
        self.sockets.local_addrs()
    }

    fn sockets_for(&mut self, worker: WorkerKey) -> Result<WorkerSockets, Error> {
        self.register(worker.slot)?;
        let mut sockets = self.sockets.sockets_for(worker)?;
        sockets.report_closes = self.groups.workers_report_closes();
        Ok(sockets)
    }

    fn worker_ready(&mut self, worker: WorkerKey) {
        self.groups.ready(worker);
    }

    fn worker_leaving(&mut self, worker: WorkerKey) {
        self.groups.gone(worker);
    }

    fn worker_exited(&mut self, worker: WorkerKey) {
        self.groups.gone(worker);
    }

    fn connections_closed(&mut self, worker: WorkerKey, count: u64) {
        self.groups.connections_closed(worker, count);
    }

    fn remove_slot(&mut self, slot: u32) {
        self.groups.remove_slot(slot);
        self.sockets.remove_slot(slot);
    }

    fn listening_sockets(&self) -> Vec<(usize, BorrowedFd<'_>)> {
        self.sockets.listening_sockets()
    }

    fn open_connections(&self) -> Option<HashMap<WorkerKey, u64>> {
        None
    }

    fn steering(&self) -> Option<super::Steering> {
        Some(super::Steering::Kernel)
    }

    fn connection_counts(&self) -> Option<ConnectionCounts> {
        self.groups.connection_counts()
    }
}

#[cfg(test)]
mod tests;
