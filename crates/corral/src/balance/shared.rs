//! The `shared` policy: one socket per address, inherited by every worker,
//! which all accept on it. No primary on the hot path; the kernel decides
//! who wakes up, which skews load toward some workers.

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};

use socket2::Socket;

use super::{Balancer, WorkerKey, WorkerSockets, bind_options, duplicate};
use crate::balance::bind::{bind_listener, local_addr};
use crate::error::Error;

pub(crate) struct SharedSocket {
    sockets: Vec<Socket>,
    addresses: Vec<SocketAddr>,
}

impl SharedSocket {
    pub(crate) fn bind(addresses: &[SocketAddr], backlog: i32) -> Result<Self, Error> {
        let sockets = addresses
            .iter()
            .map(|&address| bind_listener(address, bind_options(backlog, false)))
            .collect::<Result<Vec<_>, _>>()?;
        let addresses = sockets.iter().map(local_addr).collect::<Result<_, _>>()?;
        Ok(SharedSocket { sockets, addresses })
    }
}

impl Balancer for SharedSocket {
    fn local_addrs(&self) -> &[SocketAddr] {
        &self.addresses
    }

    fn sockets_for(&mut self, _worker: WorkerKey) -> Result<WorkerSockets, Error> {
        Ok(WorkerSockets {
            listeners: self
                .sockets
                .iter()
                .map(duplicate)
                .collect::<Result<_, _>>()?,
            handoff: None,
            report_closes: false,
        })
    }

    fn listening_sockets(&self) -> Vec<(usize, BorrowedFd<'_>)> {
        self.sockets.iter().map(AsFd::as_fd).enumerate().collect()
    }
}
