//! The `reuseport` policy: one `SO_REUSEPORT` socket per address and worker
//! slot. The kernel spreads connections over the slots by 4-tuple hash, so no
//! primary is on the hot path and the spread is even.
//!
//! Closing a `SO_REUSEPORT` socket resets the connections waiting in its
//! queue, so the primary keeps each slot's sockets open across the slot's
//! restarts and hands the same sockets to every replacement.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};

use socket2::Socket;

use super::{Balancer, WorkerKey, WorkerSockets, bind_options, duplicate};
use crate::balance::bind::{bind_listener, ensure_port_free, local_addr};
use crate::error::Error;

pub(crate) struct SocketPerSlot {
    /// Resolved addresses with their real ports, so later slots join the
    /// same port group even when port 0 was asked.
    addresses: Vec<SocketAddr>,
    backlog: i32,
    sockets: BTreeMap<u32, Vec<Socket>>,
}

impl SocketPerSlot {
    /// Binds the sockets of slots `1..=slots` now, so that errors show at start.
    pub(crate) fn bind(
        addresses: &[SocketAddr],
        slots: usize,
        backlog: i32,
    ) -> Result<Self, Error> {
        for &address in addresses {
            ensure_port_free(address, backlog)?;
        }
        let mut policy = SocketPerSlot {
            addresses: addresses.to_vec(),
            backlog,
            sockets: BTreeMap::new(),
        };
        for slot in 1..=slots.max(1) as u32 {
            let sockets = policy.bind_slot()?;
            if slot == 1 {
                policy.addresses = sockets.iter().map(local_addr).collect::<Result<_, _>>()?;
            }
            policy.sockets.insert(slot, sockets);
        }
        Ok(policy)
    }

    /// The sockets of `slot`, one per address, bound now if the slot is new.
    pub(crate) fn slot_sockets(&mut self, slot: u32) -> Result<&[Socket], Error> {
        if !self.sockets.contains_key(&slot) {
            let sockets = self.bind_slot()?;
            self.sockets.insert(slot, sockets);
        }
        Ok(&self.sockets[&slot])
    }

    /// Every slot's sockets, by slot.
    pub(crate) fn all_sockets(&self) -> impl Iterator<Item = (u32, &[Socket])> {
        self.sockets
            .iter()
            .map(|(&slot, sockets)| (slot, sockets.as_slice()))
    }

    fn bind_slot(&self) -> Result<Vec<Socket>, Error> {
        self.addresses
            .iter()
            .map(|&address| bind_listener(address, bind_options(self.backlog, true)))
            .collect()
    }
}

impl Balancer for SocketPerSlot {
    fn local_addrs(&self) -> &[SocketAddr] {
        &self.addresses
    }

    fn sockets_for(&mut self, worker: WorkerKey) -> Result<WorkerSockets, Error> {
        Ok(WorkerSockets {
            listeners: self
                .slot_sockets(worker.slot)?
                .iter()
                .map(duplicate)
                .collect::<Result<_, _>>()?,
            handoff: None,
            report_closes: false,
        })
    }

    fn remove_slot(&mut self, slot: u32) {
        self.sockets.remove(&slot);
    }

    fn listening_sockets(&self) -> Vec<(usize, BorrowedFd<'_>)> {
        self.sockets
            .values()
            .flat_map(|sockets| sockets.iter().map(AsFd::as_fd).enumerate())
            .collect()
    }
}
