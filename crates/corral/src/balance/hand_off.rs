//! The primary's side of the policies that hand connections out
//! (`round-robin`, `least-connections`, `sticky`): one task owns the listening
//! sockets, accepts many connections per wake-up, and sends them to workers
//! over their hand-off channels, many descriptors per message. The policies
//! differ only in how they [`Pick`] the worker for each connection.
//!
//! What the task guarantees:
//! * only workers that said they are ready get connections; when none can
//!   take any, it stops accepting and connections wait in the kernel queue;
//! * a worker whose channel is full is skipped (its share goes to others)
//!   until it reads again; it never blocks the loop;
//! * a worker that stops reading is found within [`STALL_CHECK`]: the
//!   connections waiting in its channel are taken back for the others, and
//!   it gets none for a while (longer each time it stalls again). The
//!   primary can tell, because it holds a copy of the worker's end: on a
//!   `SOCK_SEQPACKET` socket `FIONREAD` counts every unread data byte, and
//!   each handed connection is one byte;
//! * connections sent to a worker that leaves or dies before reading them are
//!   taken back (the primary keeps a copy of the worker's end of the channel)
//!   and handed to another worker; so are those a stopping worker returns;
//! * a worker cannot hurt the primary through its reports: a returned
//!   descriptor must be a TCP connection accepted on the listener its index
//!   names, a worker returns or reports closed no more connections than it
//!   holds, few reports are read per wake-up, and a worker that sends
//!   [`MAX_BAD_REPORTS`] bad reports, or returns more than it holds, is cut
//!   off: it gets no more connections and its channel is no longer read.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustix::net::SocketFlags;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::congestion::Congestion;
use super::pick::{Candidates, Pick};
use super::stall::{Stall, StallWatch};
use super::waiting::Waiting;
use super::{Balancer, StallReport, Stalled, WorkerKey, WorkerSockets, bind_options};
use crate::balance::bind::{bind_listener, local_addr};
use crate::error::Error;
use crate::log::rate::{error_limited, info_limited, warn_limited};
use crate::protocol::handoff::{self, Handed, MAX_FDS_PER_MESSAGE, Report};
use crate::sys::register_async;

/// Connections accepted from one listener per wake-up, at most: enough to
/// batch under load, few enough to keep the other work of the loop going.
const ACCEPT_BATCH: usize = 256;
/// How long accepting pauses after the process ran out of descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(20);
/// The most connections held in the primary waiting for a worker; past it
/// the primary stops accepting and the kernel queues them.
const MAX_WAITING: usize = 4 * MAX_FDS_PER_MESSAGE;
/// How often the dispatcher checks that workers read their channels.
const STALL_CHECK: Duration = Duration::from_millis(100);
/// Reports read from one worker per wake-up, so a flooding worker cannot
/// hold the loop.
const REPORTS_PER_WAKE: usize = 64;
/// Bad reports after which a worker is cut off as misbehaving.
const MAX_BAD_REPORTS: u32 = 10;

impl Candidates for Vec<Target> {
    fn count(&self) -> usize {
        self.len()
    }

    fn slot(&self, index: usize) -> u32 {
        self[index].key.slot
    }

    fn accepting(&self, index: usize) -> bool {
        self[index].accepting()
    }

    fn open_connections(&self, index: usize) -> u64 {
        self[index].open
    }
}

/// One ready worker as the dispatcher sees it.
pub(crate) struct Target {
    key: WorkerKey,
    /// The primary's end of the hand-off channel.
    socket: AsyncFd<OwnedFd>,
    /// A copy of the worker's end, to take back what it never read.
    worker_end: OwnedFd,
    /// Connections handed and not yet reported closed or returned.
    open: u64,
    leaving: bool,
    congestion: Congestion,
    stall: StallWatch,
    /// Reports refused so far.
    bad_reports: u32,
    /// Misbehaving: no connections for it, its reports unread.
    cut_off: bool,
}

impl Target {
    fn new(key: WorkerKey, socket: AsyncFd<OwnedFd>, worker_end: OwnedFd) -> Self {
        Target {
            key,
            socket,
            worker_end,
            open: 0,
            leaving: false,
            congestion: Congestion::default(),
            stall: StallWatch::default(),
            bad_reports: 0,
            cut_off: false,
        }
    }

    /// Whether the worker can be given a connection now.
    fn accepting(&self) -> bool {
        !self.leaving && !self.congestion.is_congested() && !self.stall.resting()
    }

    /// `count` connections it held came back (taken back, or unsent).
    fn released(&mut self, count: usize) {
        self.open = self.open.saturating_sub(count as u64);
    }
}

/// A worker's hand-off channel, before the worker is ready.
struct Channel {
    primary_end: OwnedFd,
    worker_end: OwnedFd,
}

enum Command {
    Ready(WorkerKey, Channel),
    Leaving(WorkerKey),
    Exited(WorkerKey),
}

/// The [`Balancer`] of the hand-off policies: the supervisor's handle on
/// the dispatcher task.
pub(crate) struct HandOff {
    addresses: Vec<SocketAddr>,
    commands: mpsc::UnboundedSender<Command>,
    pending: HashMap<WorkerKey, Channel>,
    /// Copies of the listening sockets, to read their accept queues.
    listener_copies: Vec<OwnedFd>,
    /// Open connections per worker, as the dispatcher last published them.
    open: Arc<Mutex<HashMap<WorkerKey, u64>>>,
}

impl HandOff {
    /// Binds the listening sockets and starts the dispatcher task (which
    /// must run inside the primary's runtime).
    pub(crate) fn bind(
        addresses: &[SocketAddr],
        backlog: i32,
        pick: Box<dyn Pick>,
        stalls: StallReport,
    ) -> Result<Self, Error> {
        if addresses.len() > usize::from(u8::MAX) + 1 {
            return Err(Error::Config(
                "a hand-off policy takes at most 256 listen addresses".into(),
            ));
        }
        let mut listeners = Vec::with_capacity(addresses.len());
        let mut bound: Vec<SocketAddr> = Vec::with_capacity(addresses.len());
        let mut listener_copies = Vec::with_capacity(addresses.len());
        for &address in addresses {
            let socket = bind_listener(address, bind_options(backlog, false))?;
            bound.push(local_addr(&socket)?);
            listener_copies.push(
                socket
                    .try_clone()
                    .map(OwnedFd::from)
                    .map_err(Error::io("cannot duplicate a listening socket"))?,
            );
            socket
                .set_nonblocking(true)
                .map_err(Error::io("cannot make a listening socket non-blocking"))?;
            let listener = register_async(OwnedFd::from(socket), Interest::READABLE)
                .map_err(Error::io("cannot watch a listening socket"))?;
            listeners.push(listener);
        }
        let (commands, inbox) = mpsc::unbounded_channel();
        let open = Arc::new(Mutex::new(HashMap::new()));
        let dispatcher = Dispatcher {
            published: open.clone(),
            listeners,
            ports: bound.iter().map(SocketAddr::port).collect(),
            targets: Vec::new(),
            pick,
            inbox,
            waiting: Waiting::default(),
            paused: None,
            stall_check: tokio::time::interval(STALL_CHECK),
            stalls,
        };
        tokio::spawn(dispatcher.run());
        Ok(HandOff {
            addresses: bound,
            commands,
            pending: HashMap::new(),
            listener_copies,
            open,
        })
    }

    fn send(&self, command: Command) {
        // The dispatcher lives as long as this handle.
        let _ = self.commands.send(command);
    }
}

impl Balancer for HandOff {
    fn local_addrs(&self) -> &[SocketAddr] {
        &self.addresses
    }

    fn steering(&self) -> Option<super::Steering> {
        Some(super::Steering::HandOff)
    }

    fn sockets_for(&mut self, worker: WorkerKey) -> Result<WorkerSockets, Error> {
        let (primary_end, worker_end) =
            handoff::socket_pair().map_err(Error::io("cannot create a hand-off channel"))?;
        let copy = worker_end
            .try_clone()
            .map_err(Error::io("cannot create a hand-off channel"))?;
        self.pending.insert(
            worker,
            Channel {
                primary_end,
                worker_end: copy,
            },
        );
        Ok(WorkerSockets {
            listeners: Vec::new(),
            handoff: Some(worker_end),
            report_closes: false,
        })
    }

    fn worker_ready(&mut self, worker: WorkerKey) {
        if let Some(channel) = self.pending.remove(&worker) {
            self.send(Command::Ready(worker, channel));
        }
    }

    fn worker_leaving(&mut self, worker: WorkerKey) {
        self.pending.remove(&worker);
        self.send(Command::Leaving(worker));
    }

    fn worker_exited(&mut self, worker: WorkerKey) {
        self.pending.remove(&worker);
        self.send(Command::Exited(worker));
    }

    fn listening_sockets(&self) -> Vec<(usize, BorrowedFd<'_>)> {
        self.listener_copies
            .iter()
            .map(AsFd::as_fd)
            .enumerate()
            .collect()
    }

    fn open_connections(&self) -> Option<HashMap<WorkerKey, u64>> {
        let open = self
            .open
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        Some(open.clone())
    }
}

/// What woke the dispatcher.
enum Wake {
    Command(Option<Command>),
    Report(usize),
    Writable(usize),
    Accept(usize),
    Resume,
    StallCheck,
}

struct Dispatcher {
    listeners: Vec<AsyncFd<OwnedFd>>,
    /// The listeners' ports, in order: what a returned connection must be on.
    ports: Vec<u16>,
    targets: Vec<Target>,
    pick: Box<dyn Pick>,
    inbox: mpsc::UnboundedReceiver<Command>,
    waiting: Waiting,
    /// Accepting is paused (out of descriptors) until this timer fires.
    paused: Option<Pin<Box<tokio::time::Sleep>>>,
    stall_check: tokio::time::Interval,
    /// Where the open connections per worker are published for status
    /// snapshots (at every stall check, not per connection).
    published: Arc<Mutex<HashMap<WorkerKey, u64>>>,
    /// Where stalled workers are reported (the supervisor's events).
    stalls: StallReport,
}

impl Dispatcher {
    async fn run(mut self) {
        loop {
            match std::future::poll_fn(|cx| self.poll_wake(cx)).await {
                Wake::Command(None) => return,
                Wake::Command(Some(command)) => self.apply(command),
                Wake::Report(index) => self.read_reports(index),
                Wake::Writable(index) => self.targets[index].congestion.clear(),
                Wake::Accept(index) => self.accept_batch(index),
                Wake::Resume => self.paused = None,
                Wake::StallCheck => {
                    self.check_stalls();
                    self.publish_open_connections();
                }
            }
            self.dispatch();
        }
    }

    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<Wake> {
        if let Poll::Ready(command) = self.inbox.poll_recv(cx) {
            return Poll::Ready(Wake::Command(command));
        }
        for (index, target) in self.targets.iter().enumerate() {
            if !target.cut_off && target.socket.poll_read_ready(cx).is_ready() {
                return Poll::Ready(Wake::Report(index));
            }
            if target.congestion.poll_cleared(cx) {
                return Poll::Ready(Wake::Writable(index));
            }
        }
        if self.stall_check.poll_tick(cx).is_ready() {
            return Poll::Ready(Wake::StallCheck);
        }
        if let Some(pause) = self.paused.as_mut() {
            return pause.as_mut().poll(cx).map(|()| Wake::Resume);
        }
        if self.waiting.len() < MAX_WAITING && self.targets.iter().any(Target::accepting) {
            for (index, listener) in self.listeners.iter().enumerate() {
                if listener.poll_read_ready(cx).is_ready() {
                    return Poll::Ready(Wake::Accept(index));
                }
            }
        }
        Poll::Pending
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Ready(key, channel) => {
                match register_async(channel.primary_end, Interest::READABLE) {
                    Ok(socket) => self
                        .targets
                        .push(Target::new(key, socket, channel.worker_end)),
                    Err(err) => tracing::error!(
                        "worker {}: cannot watch its hand-off channel: {err}",
                        key.slot
                    ),
                }
            }
            Command::Leaving(key) => {
                if let Some(index) = self.position(key) {
                    self.targets[index].leaving = true;
                    self.take_back(index);
                }
            }
            Command::Exited(key) => {
                if let Some(index) = self.position(key) {
                    self.read_reports(index);
                    self.take_back(index);
                    self.targets.remove(index);
                }
            }
        }
    }

    fn position(&self, key: WorkerKey) -> Option<usize> {
        self.targets.iter().position(|target| target.key == key)
    }

    /// Accepts up to [`ACCEPT_BATCH`] connections from listener `index`.
    fn accept_batch(&mut self, index: usize) {
        let listener = &self.listeners[index];
        for _ in 0..ACCEPT_BATCH {
            // Accepted connections are blocking, as a plain accept() gives
            // them; a worker in an event loop switches its own.
            let accepted = listener.try_io(Interest::READABLE, |socket| {
                rustix::net::accept_with(socket, SocketFlags::CLOEXEC).map_err(io::Error::from)
            });
            match accepted {
                Ok(fd) => self.waiting.push(Handed {
                    fd,
                    listener: index as u8,
                }),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if is_connection_error(&err) => continue,
                Err(err) => {
                    warn_limited!(
                        "accept failed: {err}; pausing accepts for {}ms",
                        ACCEPT_PAUSE.as_millis()
                    );
                    self.paused = Some(Box::pin(tokio::time::sleep(ACCEPT_PAUSE)));
                    return;
                }
            }
        }
    }

    /// Hands the waiting connections to workers, one message per worker.
    fn dispatch(&mut self) {
        while !self.waiting.is_empty() {
            let mut batches: Vec<Vec<Handed>> = self.targets.iter().map(|_| Vec::new()).collect();
            while let Some(handed) = self.waiting.pop() {
                let Some(index) = self.pick.pick(&self.targets, handed.fd.as_fd()) else {
                    self.waiting.requeue(std::iter::once(handed));
                    break;
                };
                self.targets[index].open += 1;
                batches[index].push(handed);
            }
            let mut handed_any = false;
            for (index, batch) in batches.into_iter().enumerate() {
                if batch.is_empty() {
                    continue;
                }
                let count = batch.len();
                let unsent = self.send_batch(index, batch);
                handed_any |= unsent.len() < count;
                self.targets[index].released(unsent.len());
                self.waiting.requeue(unsent.into_iter());
            }
            if !handed_any {
                return;
            }
        }
    }

    /// Sends `batch` to worker `index`; returns what could not be sent.
    fn send_batch(&mut self, index: usize, mut batch: Vec<Handed>) -> Vec<Handed> {
        let target = &mut self.targets[index];
        let mut sent = 0;
        while sent < batch.len() {
            let end = batch.len().min(sent + MAX_FDS_PER_MESSAGE);
            let chunk = &batch[sent..end];
            match handoff::send_batch(target.socket.as_fd(), b"", chunk) {
                Ok(()) => {
                    target.stall.sent((end - sent) as u64);
                    sent = end;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    congested(target);
                    break;
                }
                Err(err) => {
                    warn_limited!(
                        "worker {}: cannot hand it connections ({err}): skipping it",
                        target.key.slot
                    );
                    target.leaving = true;
                    break;
                }
            }
        }
        // Dropping the sent descriptors closes the primary's copies.
        batch.split_off(sent)
    }

    /// Reads worker `index`'s reports, up to [`REPORTS_PER_WAKE`] (the
    /// channel stays readable, so the loop comes back for the rest).
    fn read_reports(&mut self, index: usize) {
        for _ in 0..REPORTS_PER_WAKE {
            let target = &mut self.targets[index];
            if target.cut_off {
                return;
            }
            let received = target.socket.try_io(Interest::READABLE, |socket| {
                handoff::receive(socket.as_fd())
            });
            let report = match received {
                Ok(Some(received)) => handoff::decode_report(received),
                Ok(None) => return,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) => Err(err),
            };
            match report {
                Ok(report) => self.apply_report(index, report),
                Err(err) => self.refuse_report(index, &err.to_string()),
            }
        }
    }

    /// Applies a well-formed report of worker `index`, if it is true to
    /// what the worker holds.
    fn apply_report(&mut self, index: usize, report: Report) {
        let target = &mut self.targets[index];
        match report {
            Report::Closed(count) if count > target.open => {
                let open = target.open;
                self.refuse_report(
                    index,
                    &format!("a close report (C) of {count} connections, but it holds {open}"),
                );
            }
            Report::Closed(count) => target.open -= count,
            Report::Returned(connections) => {
                let (valid, refused): (Vec<Handed>, Vec<Handed>) = connections
                    .into_iter()
                    .partition(|handed| handoff::check_returned(handed, &self.ports).is_ok());
                if let Some(first) = refused.first() {
                    let problem = handoff::check_returned(first, &self.ports).unwrap_err();
                    let what = format!(
                        "a return (R) of {} descriptors that are not its connections ({problem}): \
                         closed them",
                        refused.len()
                    );
                    drop(refused);
                    self.refuse_report(index, &what);
                }
                let target = &mut self.targets[index];
                if target.cut_off {
                    return;
                }
                if valid.len() as u64 > target.open {
                    let why = format!(
                        "it returned {} connections, more than the {} it holds",
                        valid.len(),
                        target.open
                    );
                    drop(valid);
                    self.cut_off(index, &why);
                    return;
                }
                target.open -= valid.len() as u64;
                if !valid.is_empty() {
                    tracing::debug!(
                        "worker {} returned {} connections",
                        target.key.slot,
                        valid.len()
                    );
                }
                self.waiting.requeue(valid.into_iter());
            }
        }
    }

    /// Logs a refused report; past [`MAX_BAD_REPORTS`] cuts the worker off.
    fn refuse_report(&mut self, index: usize, problem: &str) {
        let target = &mut self.targets[index];
        target.bad_reports += 1;
        warn_limited!(
            "worker {}: refused a report on its hand-off channel: {problem}",
            target.key.slot
        );
        if target.bad_reports >= MAX_BAD_REPORTS {
            self.cut_off(index, &format!("{MAX_BAD_REPORTS} bad reports"));
        }
    }

    /// Stops handing worker `index` connections and reading its channel:
    /// it breaks the hand-off protocol. What it has not read goes to others.
    fn cut_off(&mut self, index: usize, why: &str) {
        let target = &mut self.targets[index];
        error_limited!(
            "worker {} misbehaves on its hand-off channel ({why}): it gets no more connections \
             and its reports are ignored until it exits",
            target.key.slot
        );
        target.cut_off = true;
        target.leaving = true;
        self.take_back(index);
    }

    /// Publishes the open connections of every worker.
    fn publish_open_connections(&self) {
        let open = self
            .targets
            .iter()
            .map(|target| (target.key, target.open))
            .collect();
        *self
            .published
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = open;
    }

    /// Finds workers that read nothing since the last check while
    /// connections waited for them; takes those back and rests the worker.
    fn check_stalls(&mut self) {
        let now = Instant::now();
        for index in 0..self.targets.len() {
            let target = &mut self.targets[index];
            let Ok(unread) = rustix::io::ioctl_fionread(&target.worker_end) else {
                continue;
            };
            let Stall::Stalled { unread, rest } = target.stall.check(unread, now) else {
                continue;
            };
            (self.stalls)(Stalled {
                worker: target.key,
                unread,
                rest,
            });
            self.take_back(index);
        }
    }

    /// Takes back the connections sent to worker `index` that it has not
    /// read, so another worker serves them.
    fn take_back(&mut self, index: usize) {
        let target = &mut self.targets[index];
        let mut taken = Vec::new();
        loop {
            match handoff::receive(target.worker_end.as_fd()) {
                Ok(Some(received)) => match handoff::pair_up(&received.data, received.fds) {
                    Ok(connections) => taken.extend(connections),
                    Err(err) => warn_limited!("taking back connections: {err}"),
                },
                Ok(None) => break,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => {
                    warn_limited!("taking back connections: {err}");
                    break;
                }
            }
        }
        if !taken.is_empty() {
            info_limited!(
                "worker {}: took back {} connections it never read, for other workers",
                target.key.slot,
                taken.len()
            );
            target.released(taken.len());
            self.waiting.requeue(taken.into_iter());
        }
    }
}

/// Worker `target`'s channel is full: skip it until it reads.
fn congested(target: &mut Target) {
    match target.congestion.begin(&target.socket, Instant::now()) {
        Ok(false) => {}
        Ok(true) => warn_limited!(
            "worker {} is not reading its hand-off channel fast enough: skipping it until it does",
            target.key.slot
        ),
        Err(err) => {
            warn_limited!(
                "worker {}: cannot watch its hand-off channel: {err}",
                target.key.slot
            );
            target.leaving = true;
        }
    }
}

/// Errors that concern only the connection being accepted.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM)
    )
}
