//! Balancing policies: how connections reach workers. Each policy is one
//! implementation of [`Balancer`] in its own file; adding one touches that
//! file, the [`Policy`] enum and [`Policy::balancer`].

mod reuseport;
mod shared;

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::str::FromStr;

use crate::Error;
use crate::bind::BindOptions;

/// The policy a cluster balances connections with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Every worker accepts on the one socket (Node's `SCHED_NONE`).
    Shared,
    /// One `SO_REUSEPORT` socket per worker slot, kept across restarts.
    #[default]
    ReusePort,
    /// The primary accepts and hands connections out in turn (not built yet).
    RoundRobin,
    /// The primary accepts and hands each connection to the worker with the
    /// fewest open ones (not built yet).
    LeastConnections,
}

impl Policy {
    /// Every policy, in the order the CLI lists them.
    pub const ALL: [Policy; 4] = [
        Policy::Shared,
        Policy::ReusePort,
        Policy::RoundRobin,
        Policy::LeastConnections,
    ];

    /// The name used on the command line and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Shared => "shared",
            Policy::ReusePort => "reuseport",
            Policy::RoundRobin => "round-robin",
            Policy::LeastConnections => "least-connections",
        }
    }

    /// Binds the cluster's sockets for this policy.
    pub(crate) fn balancer(
        self,
        addresses: &[SocketAddr],
        slots: usize,
        backlog: i32,
    ) -> Result<Box<dyn Balancer>, Error> {
        match self {
            Policy::Shared => Ok(Box::new(shared::SharedSocket::bind(addresses, backlog)?)),
            Policy::ReusePort => Ok(Box::new(reuseport::SocketPerSlot::bind(
                addresses, slots, backlog,
            )?)),
            Policy::RoundRobin | Policy::LeastConnections => Err(Error::Config(format!(
                "policy {self} is not built yet: use --policy shared or --policy reuseport"
            ))),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Policy {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        Policy::ALL
            .into_iter()
            .find(|policy| policy.name() == text)
            .ok_or_else(|| {
                let names: Vec<_> = Policy::ALL.iter().map(|p| p.name()).collect();
                Error::Config(format!(
                    "unknown policy {text:?}: use one of {}",
                    names.join(", ")
                ))
            })
    }
}

/// One balancing policy at work in the primary.
pub(crate) trait Balancer {
    /// The addresses the cluster listens on, as bound (real ports).
    fn local_addrs(&self) -> &[SocketAddr];

    /// The listening sockets the worker of `slot` inherits, one per address
    /// in order. Called at every (re)start of the slot; each call returns new
    /// descriptors for the same sockets, which the caller closes once they
    /// are passed on.
    fn sockets_for_slot(&mut self, slot: u32) -> Result<Vec<OwnedFd>, Error>;

    /// The slot is gone for good (the cluster shrank): release what the
    /// policy holds for it.
    fn remove_slot(&mut self, slot: u32);
}

fn bind_options(backlog: i32, reuse_port: bool) -> BindOptions {
    BindOptions {
        backlog,
        reuse_port,
    }
}

fn duplicate(socket: &socket2::Socket) -> Result<OwnedFd, Error> {
    socket
        .try_clone()
        .map(OwnedFd::from)
        .map_err(Error::io("cannot duplicate a listening socket"))
}
