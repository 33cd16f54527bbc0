//! The sockets Node workers asked for, bound on demand: the first
//! `listen()` of any worker on an address binds it; every later worker,
//! and every replacement, gets the same socket (or, under `reuseport`, its
//! slot's own socket on the same port). Nothing here is closed while the
//! cluster runs, so a crash or a reload never drops the queue of waiting
//! connections. An address the operator bound up front with `--listen` is
//! served from that socket instead.
//!
//! Per policy, for TCP: `shared` (one socket), `reuseport` (one
//! `SO_REUSEPORT` socket per slot), `round-robin`/`least-connections` (one
//! socket the primary accepts on, see `newconn_dispatcher.rs`; or, steered
//! in the kernel, one socket per slot as under `reuseport` with the
//! steering program attached to the address's group, `balance/kernel/`). Unix socket
//! paths are one shared socket (round-robin dispatches them too); UDP is
//! always one shared socket, as in Node.
//!
//! What a worker may have bound is decided by `boundary.rs` (privileged
//! ports, and whose credentials bind a Unix path, `socket_file.rs`); how
//! many sockets the cluster holds for its workers is capped
//! ([`MAX_BINDS_PER_CLUSTER`]), since they live as long as the cluster.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use serde_json::Value;
use socket2::Socket;

use super::bind_failure::BindFailure;
use super::boundary::Boundary;
use super::net_socket::{bind_any, bind_tcp, bind_udp, duplicate, duplicate_fd};
use super::newconn_dispatcher::Dispatcher;
use super::socket_file::{self, SocketFile};
use crate::balance::kernel::{GroupIndex, SteeredGroups};
use crate::balance::{ConnectionCounts, Policy};
use crate::protocol::env::FIRST_LISTEN_FD;
use crate::protocol::node::{Endpoint, HandleType};
use crate::worker_key::WorkerKey;

/// How a `listen()` is served.
pub(crate) enum Served {
    /// Here is the socket (the worker accepts on it itself).
    Socket { fd: OwnedFd, kind: HandleType },
    /// The primary accepts and hands connections out.
    Connections {
        dispatcher: Arc<Dispatcher>,
        /// The address the server reports (`None` for a Unix path).
        sockname: Option<SocketAddr>,
    },
}

/// Addresses bound on demand that the cluster holds at most, for all its
/// workers together: each is held for the cluster's life.
pub(crate) const MAX_BINDS_PER_CLUSTER: usize = 128;

/// The sockets of one requested address.
enum Sockets {
    /// One socket every worker gets.
    Shared { socket: Socket, kind: HandleType },
    /// `reuseport`: each slot's own socket on `address`.
    PerSlot {
        address: SocketAddr,
        ipv6_only: bool,
        slots: BTreeMap<u32, Socket>,
        /// The address's steering program, under kernel steering.
        group: Option<GroupIndex>,
    },
    /// The primary accepts on it.
    Dispatched {
        dispatcher: Arc<Dispatcher>,
        sockname: Option<SocketAddr>,
    },
}

impl Sockets {
    /// The IP address as bound (the real port); `None` for a Unix path.
    fn local_addr(&self) -> Option<SocketAddr> {
        let socket = match self {
            Sockets::Shared { socket, .. } => socket,
            Sockets::PerSlot { slots, .. } => slots.values().next()?,
            Sockets::Dispatched { sockname, .. } => return *sockname,
        };
        socket.local_addr().ok()?.as_socket()
    }

    /// The address as bound, for the log.
    fn describe(&self, endpoint: &Endpoint) -> String {
        self.local_addr()
            .map_or_else(|| describe_endpoint(endpoint), |a| a.to_string())
    }
}

fn describe_endpoint(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Unix(path) => path.display().to_string(),
        other => format!("{other:?}"),
    }
}

/// One server of the workers: what it listens on, and which of a worker's
/// servers on that address it is (Node's `index`: a worker's second
/// `listen(0)` is another server, on another port, as in Node).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ServerId {
    pub endpoint: Endpoint,
    pub index: u64,
}

/// Every address Node workers listen on, for the cluster's life.
pub(crate) struct Binds {
    policy: Policy,
    backlog: i32,
    /// The `--listen` addresses as bound, in order (`LISTEN_FDS` order).
    upfront: Vec<SocketAddr>,
    entries: HashMap<ServerId, Sockets>,
    /// The data (TLS ticket keys) of the first worker's query of each
    /// address served, echoed to every worker so they share it.
    data: HashMap<ServerId, Value>,
    /// What workers may have the primary bind for them.
    boundary: Boundary,
    /// The Unix socket files bound, removed when the cluster ends.
    files: Vec<SocketFile>,
    /// TCP addresses bound since the supervisor was last told.
    newly_bound: Vec<SocketAddr>,
    /// Which `--listen` addresses some worker's `listen()` used.
    upfront_used: Vec<bool>,
    /// `round-robin` and `least-connections` steered in the kernel: the
    /// programs of the addresses bound on demand.
    steering: Option<SteeredGroups>,
}

impl Binds {
    pub(crate) fn new(
        policy: Policy,
        backlog: i32,
        upfront: Vec<SocketAddr>,
        boundary: Boundary,
    ) -> Self {
        Binds {
            policy,
            backlog,
            upfront,
            entries: HashMap::new(),
            data: HashMap::new(),
            boundary,
            files: Vec::new(),
            newly_bound: Vec::new(),
            upfront_used: Vec::new(),
            steering: None,
        }
    }

    /// Serves TCP addresses with one socket per slot and `groups`'
    /// programs (kernel steering) instead of the `newconn` hand-off.
    pub(crate) fn steer_in_kernel(&mut self, groups: SteeredGroups) {
        self.steering = Some(groups);
    }

    /// Whether the kernel steers this cluster's TCP addresses.
    pub(crate) fn steers_in_kernel(&self) -> bool {
        self.steering.is_some()
    }

    /// Where least-connections steered in the kernel counts open
    /// connections.
    pub(crate) fn connection_counts(&self) -> Option<ConnectionCounts> {
        self.steering
            .as_ref()
            .and_then(SteeredGroups::connection_counts)
    }

    /// The worker is ready: under kernel steering its slot gets
    /// connections.
    pub(crate) fn ready(&mut self, worker: WorkerKey) {
        if let Some(steering) = &mut self.steering {
            steering.ready(worker);
        }
    }

    /// The `--listen` addresses no worker's `listen()` has used: their
    /// connections wait in a queue nobody accepts from.
    pub(crate) fn unused_upfront(&self) -> Vec<SocketAddr> {
        self.upfront
            .iter()
            .enumerate()
            .filter(|(index, _)| !self.upfront_used.get(*index).copied().unwrap_or(false))
            .map(|(_, address)| *address)
            .collect()
    }

    fn mark_upfront_used(&mut self, index: usize) {
        if self.upfront_used.len() < self.upfront.len() {
            self.upfront_used.resize(self.upfront.len(), false);
        }
        if let Some(used) = self.upfront_used.get_mut(index) {
            *used = true;
        }
    }

    /// The TCP addresses bound since the last call: the supervisor tells
    /// them as it tells the `--listen` ones (`listening on`, `bound`).
    pub(crate) fn take_newly_bound(&mut self) -> Vec<SocketAddr> {
        std::mem::take(&mut self.newly_bound)
    }

    /// Every TCP address bound on demand, with the connections waiting in
    /// its accept queues (unknown when the primary accepts on it): the
    /// listeners `corral status`, `ls`, `top` and `/metrics` show.
    pub(crate) fn listening(&self) -> Vec<(SocketAddr, Option<u32>)> {
        let queued = |socket: &Socket| {
            use std::os::fd::AsFd;
            crate::sys::accept_queue_len(socket.as_fd()).ok()
        };
        let mut listening: Vec<(SocketAddr, Option<u32>)> = self
            .entries
            .values()
            .filter_map(|sockets| {
                let queue = match sockets {
                    Sockets::Shared {
                        socket,
                        kind: HandleType::Net,
                    } => queued(socket),
                    Sockets::Shared { .. } => return None,
                    Sockets::PerSlot { slots, .. } => slots.values().map(queued).sum(),
                    Sockets::Dispatched { .. } => None,
                };
                Some((sockets.local_addr()?, queue))
            })
            .collect();
        listening.sort_by_key(|(address, _)| *address);
        listening.dedup_by_key(|(address, _)| *address);
        listening
    }

    /// Serves slot `slot`'s `listen()` of `server`, and the data every
    /// worker's server there shares (the first served query's `data`).
    /// `listeners` are the worker's own copies of the sockets bound up front.
    pub(crate) fn serve(
        &mut self,
        slot: u32,
        server: &ServerId,
        data: &Value,
        listeners: &[OwnedFd],
    ) -> Result<(Served, Value), BindFailure> {
        let served = self.serve_server(slot, server, listeners)?;
        // Kept only for a server served: as many as the sockets held.
        let data = self
            .data
            .entry(server.clone())
            .or_insert_with(|| data.clone())
            .clone();
        Ok((served, data))
    }

    fn serve_server(
        &mut self,
        slot: u32,
        server: &ServerId,
        listeners: &[OwnedFd],
    ) -> Result<Served, BindFailure> {
        let endpoint = &server.endpoint;
        if let Endpoint::Fd(fd) = endpoint {
            if let Ok(index) = usize::try_from(*fd - FIRST_LISTEN_FD) {
                self.mark_upfront_used(index);
            }
            return serve_inherited(*fd, listeners);
        }
        if let Some(index) = self.upfront_index(server) {
            self.mark_upfront_used(index);
            return self.serve_upfront(server, &listeners[index]);
        }
        if let Endpoint::Tcp { port, .. } | Endpoint::Udp { port, .. } = endpoint {
            self.boundary
                .check_port(*port)
                .map_err(|reason| BindFailure::refused(libc::EACCES, reason))?;
        }
        if let Some(served) = self.existing(slot, server)? {
            return Ok(served);
        }
        if self.entries.len() >= MAX_BINDS_PER_CLUSTER {
            return Err(BindFailure::refused(
                libc::EMFILE,
                format!(
                    "the cluster already holds {MAX_BINDS_PER_CLUSTER} addresses bound for its \
                     workers (the most it holds): refused; bind fewer addresses, or bind them \
                     up front with --listen"
                ),
            ));
        }
        let sockets = self.bind(slot, endpoint)?;
        tracing::info!(
            "worker {slot}'s listen() bound {} ({}; held for the cluster's life)",
            sockets.describe(endpoint),
            self.how(endpoint)
        );
        if let Endpoint::Tcp { .. } = endpoint
            && let Some(address) = sockets.local_addr()
        {
            self.newly_bound.push(address);
        }
        self.entries.insert(server.clone(), sockets);
        self.existing(slot, server)?.ok_or_else(|| BindFailure {
            errno: -libc::EIO,
            reason: "a socket just bound is missing".into(),
        })
    }

    /// How workers share `endpoint`, for the log.
    fn how(&self, endpoint: &Endpoint) -> &'static str {
        match (endpoint, self.policy) {
            (Endpoint::Udp { .. }, _) => "shared by every worker",
            (Endpoint::Tcp { .. }, Policy::ReusePort) => "reuseport: one socket per worker slot",
            (Endpoint::Tcp { .. }, _) if self.steering.is_some() => {
                "steered in the kernel: one socket per worker slot"
            }
            (_, policy) if policy.hands_off() => "the primary accepts and hands connections out",
            _ => "shared by every worker",
        }
    }

    /// The worker takes no more connections on any address.
    pub(crate) fn leave(&mut self, worker: WorkerKey) {
        if let Some(steering) = &mut self.steering {
            steering.gone(worker);
        }
        for sockets in self.entries.values() {
            if let Sockets::Dispatched { dispatcher, .. } = sockets {
                dispatcher.leave(worker);
            }
        }
    }

    /// The slot is gone (the cluster shrank): its `reuseport` sockets close.
    pub(crate) fn remove_slot(&mut self, slot: u32) {
        if let Some(steering) = &mut self.steering {
            steering.remove_slot(slot);
        }
        for sockets in self.entries.values_mut() {
            if let Sockets::PerSlot { slots, .. } = sockets {
                slots.remove(&slot);
            }
        }
    }

    /// The `--listen` address a TCP query on any address (or that exact
    /// address) and that port names.
    fn upfront_index(&self, server: &ServerId) -> Option<usize> {
        let Endpoint::Tcp { host, port, .. } = &server.endpoint else {
            return None;
        };
        if *port == 0 || server.index != 0 {
            return None;
        }
        self.upfront.iter().position(|address| {
            address.port() == *port && host.is_none_or(|host| host == address.ip())
        })
    }

    fn serve_upfront(
        &mut self,
        server: &ServerId,
        socket: &OwnedFd,
    ) -> Result<Served, BindFailure> {
        let copy = duplicate_fd(socket)?;
        // Under kernel steering the --listen sockets are the slot's own,
        // steered by the primary's balancer.
        if !self.policy.hands_off() || self.steering.is_some() {
            return Ok(Served::Socket {
                fd: copy,
                kind: HandleType::Net,
            });
        }
        if !self.entries.contains_key(server) {
            let socket = Socket::from(copy);
            let sockname = socket.local_addr().ok().and_then(|a| a.as_socket());
            let dispatcher = Dispatcher::start(socket, self.policy).map_err(|err| {
                BindFailure::io("cannot accept on a --listen socket".into(), &err)
            })?;
            self.entries.insert(
                server.clone(),
                Sockets::Dispatched {
                    dispatcher,
                    sockname,
                },
            );
        }
        Ok(self.existing(0, server)?.expect("inserted above"))
    }

    /// Serves from the sockets already bound for `endpoint`, if any.
    fn existing(&mut self, slot: u32, server: &ServerId) -> Result<Option<Served>, BindFailure> {
        let backlog = self.backlog;
        let steering = &mut self.steering;
        let Some(sockets) = self.entries.get_mut(server) else {
            return Ok(None);
        };
        let served = match sockets {
            Sockets::Shared { socket, kind } => Served::Socket {
                fd: duplicate(socket)?,
                kind: *kind,
            },
            Sockets::Dispatched {
                dispatcher,
                sockname,
            } => Served::Connections {
                dispatcher: dispatcher.clone(),
                sockname: *sockname,
            },
            Sockets::PerSlot {
                address,
                ipv6_only,
                slots,
                group,
            } => {
                let socket = match slots.entry(slot) {
                    Entry::Occupied(entry) => entry.into_mut(),
                    Entry::Vacant(entry) => {
                        let bound =
                            bind_tcp(*address, *ipv6_only, true, backlog).map_err(|err| {
                                BindFailure::io(format!("cannot bind {address}"), &err)
                            })?;
                        entry.insert(bound)
                    }
                };
                if let (Some(steering), Some(group)) = (steering.as_mut(), *group) {
                    steering.add_socket(group, slot, socket).map_err(|err| {
                        BindFailure::io("cannot add a socket to the steering program".into(), &err)
                    })?;
                }
                Served::Socket {
                    fd: duplicate(socket)?,
                    kind: HandleType::Net,
                }
            }
        };
        Ok(Some(served))
    }

    /// Binds the first socket(s) of `endpoint`.
    fn bind(&mut self, slot: u32, endpoint: &Endpoint) -> Result<Sockets, BindFailure> {
        let backlog = self.backlog;
        match endpoint {
            Endpoint::Tcp {
                host,
                port,
                ipv6_only,
            } => {
                let reuse_port = self.policy == Policy::ReusePort || self.steering.is_some();
                if reuse_port && *port != 0 {
                    // SO_REUSEPORT would silently join another program's
                    // port group: check that nobody holds the port first.
                    drop(bind_any(*host, *port, *ipv6_only, false, backlog)?);
                }
                let (socket, address) = bind_any(*host, *port, *ipv6_only, reuse_port, backlog)?;
                if reuse_port {
                    // The first slot to ask binds the port (a free one for
                    // port 0); every other slot gets its own socket on it.
                    let group = match &mut self.steering {
                        Some(steering) => {
                            Some(steering.add_group(&socket).map_err(|why| BindFailure {
                                errno: -libc::EIO,
                                reason: why,
                            })?)
                        }
                        None => None,
                    };
                    return Ok(Sockets::PerSlot {
                        address,
                        ipv6_only: *ipv6_only,
                        slots: BTreeMap::from([(slot, socket)]),
                        group,
                    });
                }
                self.shared_or_dispatched(socket, Some(address))
            }
            Endpoint::Unix(path) => {
                let (credentials, allowed_dir) = self.boundary.unix_binder(path);
                let (socket, file) =
                    socket_file::bind(path, &credentials, allowed_dir.as_deref(), backlog)
                        .map_err(|err| {
                            BindFailure::io(format!("cannot listen on {}", path.display()), &err)
                        })?;
                self.files.push(file);
                self.shared_or_dispatched(socket, None)
            }
            Endpoint::Udp { host, port, v6 } => {
                let socket = bind_udp(*host, *port, *v6)
                    .map_err(|err| BindFailure::io(format!("cannot bind UDP port {port}"), &err))?;
                Ok(Sockets::Shared {
                    socket,
                    kind: HandleType::Dgram,
                })
            }
            Endpoint::Fd(_) => unreachable!("served from the worker's own descriptors"),
        }
    }

    fn shared_or_dispatched(
        &self,
        socket: Socket,
        sockname: Option<SocketAddr>,
    ) -> Result<Sockets, BindFailure> {
        if !self.policy.hands_off() {
            return Ok(Sockets::Shared {
                socket,
                kind: HandleType::Net,
            });
        }
        let dispatcher = Dispatcher::start(socket, self.policy)
            .map_err(|err| BindFailure::io("cannot accept on a socket".into(), &err))?;
        Ok(Sockets::Dispatched {
            dispatcher,
            sockname,
        })
    }
}

impl Drop for Binds {
    /// The cluster ends: the Unix socket files it bound go, as a Node
    /// server's do when it closes, so the next start can bind them again;
    /// only the very files it created, with the credentials that created
    /// them (`socket_file.rs`).
    fn drop(&mut self) {
        for file in &self.files {
            let _ = file.remove();
        }
    }
}

/// `listen({fd: N})`: Node means a descriptor of its primary; corral can
/// serve the ones it passed the worker itself (`LISTEN_FDS`).
fn serve_inherited(fd: i32, listeners: &[OwnedFd]) -> Result<Served, BindFailure> {
    let index = fd - FIRST_LISTEN_FD;
    let socket = usize::try_from(index)
        .ok()
        .and_then(|index| listeners.get(index))
        .ok_or_else(|| BindFailure {
            errno: -libc::EBADF,
            reason: format!(
                "listen({{fd: {fd}}}) names a descriptor of the primary, which corral does not \
                 have: use the descriptors of LISTEN_FDS (3 and up, one per --listen) or \
                 listen(PORT)"
            ),
        })?;
    Ok(Served::Socket {
        fd: duplicate_fd(socket)?,
        kind: HandleType::Net,
    })
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::primary::node::socket_file::Credentials;

    fn tcp(port: u16) -> ServerId {
        server(Endpoint::Tcp {
            host: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            port,
            ipv6_only: false,
        })
    }

    fn server(endpoint: Endpoint) -> ServerId {
        ServerId { endpoint, index: 0 }
    }

    fn serve(binds: &mut Binds, slot: u32, server: &ServerId) -> Result<Served, BindFailure> {
        binds
            .serve(slot, server, &Value::Null, &[])
            .map(|(served, _)| served)
    }

    fn udp(index: u64) -> ServerId {
        ServerId {
            endpoint: Endpoint::Udp {
                host: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                port: 0,
                v6: false,
            },
            index,
        }
    }

    fn port_of(served: &Served) -> u16 {
        match served {
            Served::Socket { fd, .. } => {
                let socket = Socket::from(fd.try_clone().unwrap());
                socket.local_addr().unwrap().as_socket().unwrap().port()
            }
            Served::Connections { sockname, .. } => sockname.unwrap().port(),
        }
    }

    #[test]
    fn port_0_gives_every_slot_the_same_port_under_each_policy() {
        for policy in [Policy::Shared, Policy::ReusePort] {
            let mut binds = Binds::new(policy, 16, vec![], Boundary::none());
            let first = serve(&mut binds, 1, &tcp(0)).unwrap();
            let second = serve(&mut binds, 2, &tcp(0)).unwrap();
            let again = serve(&mut binds, 1, &tcp(0)).unwrap();
            assert_ne!(port_of(&first), 0);
            assert_eq!(port_of(&first), port_of(&second), "{policy}");
            assert_eq!(port_of(&first), port_of(&again), "{policy}");
            // A worker's second listen(0) is another server.
            let second_server = ServerId { index: 1, ..tcp(0) };
            let other = serve(&mut binds, 1, &second_server).unwrap();
            assert_ne!(port_of(&first), port_of(&other), "{policy}");
        }
    }

    #[test]
    fn a_port_in_use_is_eaddrinuse_and_a_bad_fd_is_ebadf() {
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = holder.local_addr().unwrap().port();
        for policy in [Policy::Shared, Policy::ReusePort] {
            let mut binds = Binds::new(policy, 16, vec![], Boundary::none());
            let failure = serve(&mut binds, 1, &tcp(port)).err().unwrap();
            assert_eq!(failure.errno, -libc::EADDRINUSE, "{policy}");
            assert!(
                failure.reason.contains("another process"),
                "{}",
                failure.reason
            );
        }
        let mut binds = Binds::new(Policy::Shared, 16, vec![], Boundary::none());
        let failure = serve(&mut binds, 1, &server(Endpoint::Fd(7)))
            .err()
            .unwrap();
        assert_eq!(failure.errno, -libc::EBADF);
    }

    #[test]
    fn udp_and_unix_paths_are_shared() {
        let mut binds = Binds::new(Policy::ReusePort, 16, vec![], Boundary::none());
        let udp = server(Endpoint::Udp {
            host: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            port: 0,
            v6: false,
        });
        let Served::Socket { kind, .. } = serve(&mut binds, 1, &udp).unwrap() else {
            panic!("UDP is shared")
        };
        assert_eq!(kind, HandleType::Dgram);
        let dir = std::env::temp_dir().join(format!("corral-binds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("app.sock");
        let _ = std::fs::remove_file(&path);
        let unix = server(Endpoint::Unix(path.clone()));
        assert!(matches!(
            serve(&mut binds, 1, &unix),
            Ok(Served::Socket { .. })
        ));
        assert!(matches!(
            serve(&mut binds, 2, &unix),
            Ok(Served::Socket { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_cluster_holds_a_bounded_number_of_addresses_and_their_data() {
        let mut binds = Binds::new(Policy::Shared, 16, vec![], Boundary::none());
        let big = Value::String("x".repeat(100));
        for index in 0..MAX_BINDS_PER_CLUSTER as u64 {
            binds.serve(1, &udp(index), &big, &[]).unwrap();
        }
        let failure = binds
            .serve(1, &udp(MAX_BINDS_PER_CLUSTER as u64), &big, &[])
            .err()
            .unwrap();
        assert_eq!(failure.errno, -libc::EMFILE);
        assert!(failure.reason.contains("--listen"), "{}", failure.reason);
        assert_eq!(
            binds.data.len(),
            MAX_BINDS_PER_CLUSTER,
            "no data kept for a refusal"
        );
        // An address already held is still served.
        assert!(binds.serve(2, &udp(0), &Value::Null, &[]).is_ok());
    }

    #[test]
    fn privileged_ports_are_eacces_across_the_boundary() {
        let nobody = Credentials::User(crate::settings::run_as::RunAs {
            uid: 65534,
            gid: 65534,
            spec: "nobody".into(),
        });
        let boundary = Boundary::for_workers(nobody, Default::default());
        let mut binds = Binds::new(Policy::Shared, 16, vec![], boundary);
        let failure = serve(&mut binds, 1, &tcp(22)).err().unwrap();
        assert_eq!(failure.errno, -libc::EACCES);
        assert!(binds.data.is_empty() && binds.entries.is_empty());
        assert!(serve(&mut binds, 1, &tcp(0)).is_ok());
    }
}
