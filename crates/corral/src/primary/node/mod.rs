//! corral as the primary of unmodified Node `cluster` programs. A Node
//! worker (started with `NODE_UNIQUE_ID` and `NODE_CHANNEL_FD`) asks its
//! primary for every socket it listens on; this module answers: the
//! table of sockets bound on demand (`binds.rs`; the sockets themselves
//! are bound as Node's primary binds them in `net_socket.rs`, and a
//! `listen()` that fails says why with `bind_failure.rs`), the per-worker
//! session that speaks Node's cluster messages (`session.rs`) over the worker's
//! outbox and sequence numbers (`link.rs`), and the round-robin dispatch of
//! connections with `newconn` (`newconn_dispatcher.rs`). The metrics the
//! agent (`agent.rs`) reports are kept per worker by `reports.rs`. What a worker may
//! have the primary bind is `boundary.rs`, and how a Unix socket file is
//! created and removed without lending the primary's privileges,
//! `socket_file.rs`. The wire format itself is `protocol/node.rs`.

pub(crate) mod agent;
mod bind_failure;
mod binds;
mod boundary;
mod link;
mod net_socket;
mod newconn_dispatcher;
mod reports;
mod session;
mod socket_file;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

pub(crate) use boundary::AllowedBinds;
pub(crate) use session::{AfterInternal, Session};

use crate::balance::kernel::SteeredGroups;
use crate::balance::{ConnectionCounts, Policy};
use crate::primary::io::notice::Notice;
use crate::primary::io::outbox::Outbox;
use crate::protocol::node;
use crate::settings::run_as::RunAs;
use crate::worker_key::WorkerKey;
use binds::Binds;
use boundary::Boundary;
use link::Link;

/// The Node side of the cluster: what every Node worker's session shares.
pub(crate) struct NodeCluster {
    binds: Mutex<Binds>,
    links: Mutex<HashMap<WorkerKey, Arc<Link>>>,
}

/// What the Node side of a cluster is configured with.
pub(crate) struct NodeSettings {
    pub policy: Policy,
    pub backlog: i32,
    /// The `--listen` addresses as bound, in `LISTEN_FDS` order.
    pub upfront: Vec<SocketAddr>,
    /// The workers' user (`--user`).
    pub run_as: Option<RunAs>,
    /// `--allow-worker-binds`.
    pub allowed: AllowedBinds,
    /// Kernel steering of `round-robin` and `least-connections`, where the
    /// program loads.
    pub steering: Option<SteeredGroups>,
}

impl NodeCluster {
    pub(crate) fn new(settings: NodeSettings) -> Arc<Self> {
        let boundary = Boundary::of_this_process(settings.run_as.as_ref(), settings.allowed);
        let mut binds = Binds::new(
            settings.policy,
            settings.backlog,
            settings.upfront,
            boundary,
        );
        if let Some(steering) = settings.steering {
            binds.steer_in_kernel(steering);
        }
        Arc::new(NodeCluster {
            binds: Mutex::new(binds),
            links: Mutex::default(),
        })
    }

    /// Whether the kernel steers the TCP addresses workers listen on.
    pub(crate) fn steers_in_kernel(&self) -> bool {
        self.binds().steers_in_kernel()
    }

    /// Where least-connections steered in the kernel counts open
    /// connections.
    pub(crate) fn connection_counts(&self) -> Option<ConnectionCounts> {
        self.binds().connection_counts()
    }

    /// The worker is ready: under kernel steering it gets connections.
    pub(crate) fn worker_ready(&self, worker: WorkerKey) {
        self.binds().ready(worker);
    }

    /// The worker drains: it gets no more connections.
    pub(crate) fn worker_leaving(&self, worker: WorkerKey) {
        self.binds().leave(worker);
    }

    fn binds(&self) -> MutexGuard<'_, Binds> {
        self.binds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn links(&self) -> MutexGuard<'_, HashMap<WorkerKey, Arc<Link>>> {
        self.links
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts the session of a Node worker just spawned (process `pid`).
    /// `listeners` are copies of the sockets it got by `LISTEN_FDS`.
    pub(crate) fn session(
        self: &Arc<Self>,
        worker: WorkerKey,
        pid: u32,
        outbox: Outbox,
        listeners: Vec<OwnedFd>,
        notices: mpsc::Sender<Notice>,
    ) -> Session {
        let link = Link::new(worker, outbox);
        self.links().insert(worker, link.clone());
        Session::new(self.clone(), link, pid, listeners, notices)
    }

    /// Graceful stop, Node's way: `disconnect` makes the worker close its
    /// servers, finish its open connections and exit. It is given no more
    /// connections from now on.
    pub(crate) fn disconnect(&self, worker: WorkerKey) -> bool {
        let Some(link) = self.links().get(&worker).cloned() else {
            return false;
        };
        self.binds().leave(worker);
        link.send(node::disconnect, None).is_ok()
    }

    /// The worker exited: connections it had not answered for go to the
    /// other workers.
    pub(crate) fn worker_exited(&self, worker: WorkerKey) {
        let link = self.links().get(&worker).cloned();
        if let Some(link) = link {
            self.worker_gone(&link);
        }
    }

    fn worker_gone(&self, link: &Arc<Link>) {
        self.links().remove(&link.worker);
        self.binds().leave(link.worker);
        for (dispatcher, conn) in link.close() {
            dispatcher.answered(link.worker, None);
            dispatcher.give_back(conn);
        }
    }

    /// What the agent of the Node worker `worker` last reported.
    pub(crate) fn agent_metrics(
        &self,
        worker: WorkerKey,
        now: std::time::Instant,
    ) -> Option<crate::control::status::AgentMetrics> {
        let link = self.links().get(&worker).cloned()?;
        link.report.metrics(now)
    }

    /// The `--listen` addresses no worker's `listen()` has used.
    pub(crate) fn unused_upfront(&self) -> Vec<SocketAddr> {
        self.binds().unused_upfront()
    }

    /// The TCP addresses workers' `listen()` bound, with their queues.
    pub(crate) fn listening(&self) -> Vec<(SocketAddr, Option<u32>)> {
        self.binds().listening()
    }

    /// The slot is gone for good: its `reuseport` sockets close.
    pub(crate) fn remove_slot(&self, slot: u32) {
        self.binds().remove_slot(slot);
    }
}
