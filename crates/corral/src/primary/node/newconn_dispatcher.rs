//! `round-robin`, `least-connections` and `sticky` for Node workers: the primary
//! accepts on the socket of one `listen()` address and hands each
//! connection to a worker that listens on it, with Node's `newconn`
//! message. It accepts only while some worker can take a connection, so
//! the rest wait in the kernel's queue.
//!
//! Node's own primary sends a worker its next connection only after the
//! worker answered the previous one. corral keeps up to
//! [`IN_FLIGHT_PER_WORKER`] unanswered per worker (pipelining: the worker
//! answers each `newconn` by its `seq`, independently), and one descriptor
//! on the wire at a time per channel (the outbox waits for each receipt).
//!
//! Node workers do not report closed connections, so `least-connections`
//! picks the worker with the fewest connections sent and not yet answered
//! (the one whose event loop is keeping up), ties in turn; under a steady
//! load that is round-robin.
//!
//! `sticky` sends each connection to the slot its client's address picks
//! (`balance/sticky.rs`) among the workers listening that can take one.
//! Its limit of unanswered connections per worker is higher
//! ([`STICKY_IN_FLIGHT_PER_WORKER`]): a client's connections must stay on
//! its worker through a burst (a socket.io client polls and posts at once),
//! and only a worker whose event loop stopped answering has its clients
//! sent elsewhere.

use std::collections::VecDeque;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};

use rustix::net::SocketFlags;
use socket2::Socket;
use tokio::io::Interest;
use tokio::sync::Notify;

use super::link::{Conn, ConnSource, Link};
use crate::balance::Policy;
use crate::balance::sticky_pick::{Tables, client_address};
use crate::log::rate::warn_limited;
use crate::sys::register_async;
use crate::worker_key::WorkerKey;

/// Connections sent to one worker and not yet answered.
pub(crate) const IN_FLIGHT_PER_WORKER: usize = 4;
/// The same under `sticky`, where going past it moves the worker's clients.
pub(crate) const STICKY_IN_FLIGHT_PER_WORKER: usize = 64;

/// A worker listening on the dispatcher's address.
struct Member {
    link: Arc<Link>,
    /// The worker's name for this server (`newconn` carries it).
    key: String,
    in_flight: usize,
}

#[derive(Default)]
struct State {
    members: Vec<Member>,
    /// Where round-robin's turn starts.
    next: usize,
    /// Connections refused or left unanswered by a worker that died, to
    /// hand out before accepting more.
    returned: VecDeque<Conn>,
    /// The lookup tables of `sticky`.
    tables: Tables,
}

pub(crate) struct Dispatcher {
    policy: Policy,
    /// Connections a worker may have unanswered.
    in_flight_limit: usize,
    state: Mutex<State>,
    /// Something changed: a member joined or answered, a connection came back.
    changed: Notify,
}

impl Dispatcher {
    /// Starts accepting on `listener` (bound and listening).
    pub(crate) fn start(listener: Socket, policy: Policy) -> io::Result<Arc<Self>> {
        listener.set_nonblocking(true)?;
        let listener = register_async(OwnedFd::from(listener), Interest::READABLE)?;
        let dispatcher = Arc::new(Dispatcher {
            policy,
            in_flight_limit: match policy {
                Policy::Sticky => STICKY_IN_FLIGHT_PER_WORKER,
                _ => IN_FLIGHT_PER_WORKER,
            },
            state: Mutex::default(),
            changed: Notify::new(),
        });
        tokio::spawn(dispatcher.clone().accept_loop(listener));
        Ok(dispatcher)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The worker of `link` listens on this address as its server `key`.
    pub(crate) fn join(&self, link: Arc<Link>, key: String) {
        let mut state = self.state();
        state
            .members
            .retain(|member| member.link.worker != link.worker);
        state.members.push(Member {
            link,
            key,
            in_flight: 0,
        });
        drop(state);
        self.changed.notify_one();
    }

    /// The worker takes no more connections (it closed the server, was
    /// asked to stop, or exited).
    pub(crate) fn leave(&self, worker: WorkerKey) {
        self.state()
            .members
            .retain(|member| member.link.worker != worker);
    }

    async fn accept_loop(self: Arc<Self>, listener: tokio::io::unix::AsyncFd<OwnedFd>) {
        loop {
            self.hand_out_returned();
            if !self.has_capacity() {
                self.changed.notified().await;
                continue;
            }
            tokio::select! {
                ready = listener.readable() => {
                    let Ok(mut ready) = ready else { return };
                    if !self.accept_batch(listener.get_ref()) {
                        ready.clear_ready();
                    }
                }
                _ = self.changed.notified() => {}
            }
        }
    }

    /// Accepts while some worker can take a connection. Returns whether the
    /// queue may hold more (`false`: it is empty).
    fn accept_batch(self: &Arc<Self>, listener: &OwnedFd) -> bool {
        while self.has_capacity() {
            let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
            match rustix::net::accept_with(listener.as_fd(), flags) {
                Ok(conn) => self.hand(Arc::new(conn)),
                Err(rustix::io::Errno::AGAIN) => return false,
                Err(rustix::io::Errno::INTR | rustix::io::Errno::CONNABORTED) => {}
                Err(errno) => {
                    // EMFILE and friends: leave the connection queued and
                    // try again on the next wake-up.
                    warn_limited!("cannot accept a connection for Node workers: {errno}");
                    return false;
                }
            }
        }
        true
    }

    fn hand_out_returned(self: &Arc<Self>) {
        while self.has_capacity() {
            let Some(conn) = self.state().returned.pop_front() else {
                return;
            };
            self.hand(conn);
        }
    }

    fn has_capacity(&self) -> bool {
        self.state()
            .members
            .iter()
            .any(|member| member.in_flight < self.in_flight_limit)
    }

    /// Sends `conn` to the next worker; keeps it for later when none can
    /// take it.
    fn hand(self: &Arc<Self>, mut conn: Conn) {
        loop {
            let Some((link, key)) = self.pick(&conn) else {
                self.state().returned.push_front(conn);
                return;
            };
            match link.newconn(self.clone(), &key, conn) {
                Ok(()) => return,
                Err(back) => {
                    // Its channel is gone: it gets nothing more.
                    self.leave(link.worker);
                    conn = back;
                }
            }
        }
    }

    /// The worker to send `conn` to, counted as in flight.
    fn pick(&self, conn: &Conn) -> Option<(Arc<Link>, String)> {
        let mut state = self.state();
        let index = match self.policy {
            Policy::Sticky => self.by_client(&mut state, client_address(conn.as_fd())),
            _ => self.in_turn(&state),
        }?;
        state.next = index + 1;
        let member = &mut state.members[index];
        member.in_flight += 1;
        Some((member.link.clone(), member.key.clone()))
    }

    /// Round-robin, or least-connections by connections in flight.
    fn in_turn(&self, state: &State) -> Option<usize> {
        let count = state.members.len();
        let start = state.next;
        let mut candidates = (0..count)
            .map(|offset| (start + offset) % count)
            .filter(|&index| state.members[index].in_flight < self.in_flight_limit);
        if self.policy == Policy::LeastConnections {
            candidates.min_by_key(|&index| state.members[index].in_flight)
        } else {
            candidates.next()
        }
    }

    /// The member the client's address picks among those that can take a
    /// connection; any of them for a client without one (a Unix socket).
    fn by_client(&self, state: &mut State, client: Option<IpAddr>) -> Option<usize> {
        let State {
            members, tables, ..
        } = state;
        let able = |index: &usize| members[*index].in_flight < self.in_flight_limit;
        let Some(client) = client else {
            return (0..members.len()).find(able);
        };
        let eligible = (0..members.len())
            .filter(able)
            .map(|index| members[index].link.worker.slot);
        let slot = tables.slot(eligible, client)?;
        (0..members.len()).find(|index| able(index) && members[*index].link.worker.slot == slot)
    }
}

impl ConnSource for Dispatcher {
    fn answered(&self, worker: WorkerKey, refused: Option<Conn>) {
        let mut state = self.state();
        if let Some(member) = state.members.iter_mut().find(|m| m.link.worker == worker) {
            member.in_flight = member.in_flight.saturating_sub(1);
        }
        if let Some(conn) = refused {
            state.returned.push_back(conn);
        }
        drop(state);
        self.changed.notify_one();
    }

    fn give_back(&self, conn: Conn) {
        self.state().returned.push_back(conn);
        self.changed.notify_one();
    }
}
