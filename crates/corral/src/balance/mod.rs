//! Balancing policies: how connections reach workers. The policies where
//! workers accept by themselves implement [`Balancer`] directly (`shared`,
//! `reuseport`); the ones where the primary hands connections out share the
//! dispatcher in `hand_off.rs` (with the queue of `waiting.rs`) and differ
//! only in how they [`Pick`](pick::Pick) a worker (`pick.rs`; `round_robin`,
//! `least_connections`, `sticky_pick` with the rule of `sticky`). Adding a policy touches its own file, the
//! [`Policy`] enum and [`Policy::balancer`].

pub(crate) mod activation;
pub(crate) mod bind;
mod congestion;
mod hand_off;
pub(crate) mod kernel;
mod least_connections;
mod pick;
mod reuseport;
mod round_robin;
mod shared;
mod stall;
pub(crate) mod sticky;
pub(crate) mod sticky_pick;
mod waiting;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::str::FromStr;

use crate::balance::bind::BindOptions;
use crate::error::Error;
pub(crate) use crate::worker_key::WorkerKey;

/// A worker that stopped reading its hand-off channel while `unread`
/// connections waited: they went to other workers, and it gets none for
/// `rest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stalled {
    pub worker: WorkerKey,
    pub unread: u64,
    pub rest: std::time::Duration,
}

/// Where a hand-off balancer reports stalled workers; it must not block.
pub(crate) type StallReport = Box<dyn Fn(Stalled) + Send>;

/// The policy a cluster balances connections with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Every worker accepts on the one socket (Node's `SCHED_NONE`).
    Shared,
    /// One `SO_REUSEPORT` socket per worker slot, kept across restarts.
    #[default]
    ReusePort,
    /// The primary accepts and hands connections out in turn (Node's
    /// `SCHED_RR`).
    RoundRobin,
    /// The primary accepts and hands each connection to the ready worker
    /// with the fewest open connections.
    LeastConnections,
    /// The primary accepts and hands each connection to the worker slot
    /// its client's source address picks (a Maglev table over the ready
    /// slots), so a client keeps its worker across that worker's restarts.
    Sticky,
}

impl Policy {
    /// Every policy, in the order the CLI lists them.
    pub const ALL: [Policy; 5] = [
        Policy::Shared,
        Policy::ReusePort,
        Policy::RoundRobin,
        Policy::LeastConnections,
        Policy::Sticky,
    ];

    /// The name used on the command line and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Shared => "shared",
            Policy::ReusePort => "reuseport",
            Policy::RoundRobin => "round-robin",
            Policy::LeastConnections => "least-connections",
            Policy::Sticky => "sticky",
        }
    }

    /// Binds the cluster's sockets for this policy.
    pub(crate) fn balancer(
        self,
        addresses: &[SocketAddr],
        slots: usize,
        backlog: i32,
        kernel_steering: bool,
        stalls: StallReport,
    ) -> Result<Box<dyn Balancer>, Error> {
        match self {
            Policy::Shared => Ok(Box::new(shared::SharedSocket::bind(addresses, backlog)?)),
            Policy::ReusePort => Ok(Box::new(reuseport::SocketPerSlot::bind(
                addresses, slots, backlog,
            )?)),
            Policy::RoundRobin | Policy::LeastConnections | Policy::Sticky if !kernel_steering => {
                let hand_off = self.hand_off(addresses, backlog, stalls)?;
                let why = "--kernel-steering is off";
                log_steering(self, hand_off.local_addrs(), &Steering::HandOff.how(), why);
                Ok(hand_off)
            }
            Policy::RoundRobin | Policy::LeastConnections | Policy::Sticky => {
                match kernel::KernelSteered::bind(addresses, slots, backlog, self)? {
                    Ok(steered) => {
                        let why = "the SK_REUSEPORT program picks each connection's worker";
                        let how = Steering::Kernel.how() + &steered.counting_note();
                        log_steering(self, steered.local_addrs(), &how, why);
                        Ok(Box::new(steered))
                    }
                    Err(why) => {
                        let hand_off = self.hand_off(addresses, backlog, stalls)?;
                        let why = format!(
                            "{why} (kernel steering needs root, or CAP_BPF and CAP_NET_ADMIN)"
                        );
                        log_steering(self, hand_off.local_addrs(), &Steering::HandOff.how(), &why);
                        Ok(hand_off)
                    }
                }
            }
        }
    }

    /// The primary's hand-off dispatcher for this policy: the policies
    /// where the primary hands connections out differ only in their pick.
    fn hand_off(
        self,
        addresses: &[SocketAddr],
        backlog: i32,
        stalls: StallReport,
    ) -> Result<Box<dyn Balancer>, Error> {
        let pick: Box<dyn pick::Pick> = match self {
            Policy::LeastConnections => Box::<least_connections::LeastConnections>::default(),
            Policy::Sticky => Box::<sticky_pick::Sticky>::default(),
            _ => Box::<round_robin::RoundRobin>::default(),
        };
        Ok(Box::new(hand_off::HandOff::bind(
            addresses, backlog, pick, stalls,
        )?))
    }

    /// Whether the primary hands connections to workers (which then need
    /// the hand-off channel and must say they are ready).
    pub fn hands_off(self) -> bool {
        matches!(
            self,
            Policy::RoundRobin | Policy::LeastConnections | Policy::Sticky
        )
    }

    /// Whether workers report the connections they close (the policy
    /// balances on open connections).
    pub fn needs_close_reports(self) -> bool {
        matches!(self, Policy::LeastConnections)
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

/// Where `least-connections` steered in the kernel gets each worker's open
/// connections (`corral status`'s `connection_counts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectionCounts {
    /// A `SOCK_OPS` program on the primary's cgroup counts each slot's
    /// sockets as they are established and closed.
    Kernel,
    /// The workers report the connections they close (library workers
    /// only: others are counted by the connections given them).
    WorkerReports,
}

impl ConnectionCounts {
    /// The name shown by `status` and `top`.
    pub fn name(self) -> &'static str {
        match self {
            ConnectionCounts::Kernel => "kernel",
            ConnectionCounts::WorkerReports => "worker-reports",
        }
    }
}

/// How the connections of a `round-robin`, `least-connections` or `sticky`
/// listener reach the workers (`corral status`'s `steering`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Steering {
    /// An `SK_REUSEPORT` program picks each new connection's worker in the
    /// kernel; workers accept on their own sockets.
    Kernel,
    /// The primary accepts and hands each connection to a worker.
    HandOff,
}

impl Steering {
    /// The name shown by `status` and `top`.
    pub fn name(self) -> &'static str {
        match self {
            Steering::Kernel => "kernel",
            Steering::HandOff => "hand-off",
        }
    }

    /// How the start log says it.
    fn how(self) -> String {
        match self {
            Steering::Kernel => "steered in the kernel",
            Steering::HandOff => "served by the primary's hand-off",
        }
        .to_string()
    }
}

/// The one line per listener at start saying how it is served, and why.
fn log_steering(policy: Policy, addresses: &[SocketAddr], how: &str, why: &str) {
    for address in addresses {
        tracing::info!(event = "steering", "{address}: {policy} {how}: {why}");
    }
}

/// What a worker is given to receive connections with.
#[derive(Debug, Default)]
pub(crate) struct WorkerSockets {
    /// Listening sockets, one per address in order (`LISTEN_FDS`).
    pub listeners: Vec<OwnedFd>,
    /// The worker's end of the hand-off channel (`CORRAL_HANDOFF_FD`).
    pub handoff: Option<OwnedFd>,
    /// Whether a library worker reports the connections it closes on its
    /// message channel (`CORRAL_CLOSE_REPORTS`): least-connections steered
    /// in the kernel where the kernel cannot count them.
    pub report_closes: bool,
}

/// One balancing policy at work in the primary.
pub(crate) trait Balancer {
    /// The addresses the cluster listens on, as bound (real ports).
    fn local_addrs(&self) -> &[SocketAddr];

    /// The sockets a new worker starts with. Called at every (re)start; the
    /// descriptors are the caller's to pass on and close.
    fn sockets_for(&mut self, worker: WorkerKey) -> Result<WorkerSockets, Error>;

    /// The worker said it is ready: it may be given connections.
    fn worker_ready(&mut self, _worker: WorkerKey) {}

    /// The worker was asked to stop: it must be given no more connections.
    fn worker_leaving(&mut self, _worker: WorkerKey) {}

    /// The worker exited: connections handed to it but never taken go to
    /// other workers.
    fn worker_exited(&mut self, _worker: WorkerKey) {}

    /// The worker reported `count` of its connections closed on its message
    /// channel (least-connections steered in the kernel).
    fn connections_closed(&mut self, _worker: WorkerKey, _count: u64) {}

    /// The slot is gone for good (the cluster shrank): release what the
    /// policy holds for it.
    fn remove_slot(&mut self, _slot: u32) {}

    /// The listening sockets the primary holds, each with the index of its
    /// address in [`Balancer::local_addrs`] (for the accept-queue lengths
    /// of `corral status`).
    fn listening_sockets(&self) -> Vec<(usize, BorrowedFd<'_>)> {
        Vec::new()
    }

    /// Connections open in each worker, where the policy knows them.
    fn open_connections(&self) -> Option<HashMap<WorkerKey, u64>> {
        None
    }

    /// How a hand-off policy's connections reach the workers (`None` for
    /// `shared` and `reuseport`, where workers always accept).
    fn steering(&self) -> Option<Steering> {
        None
    }

    /// Where least-connections steered in the kernel gets its open counts
    /// (`None` elsewhere).
    fn connection_counts(&self) -> Option<ConnectionCounts> {
        None
    }

    /// Whether the primary hands connections to workers (which then need
    /// the hand-off channel and must say they are ready).
    fn hands_off(&self) -> bool {
        self.steering() == Some(Steering::HandOff)
    }
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
