//! The library's worker side. When the executable is re-run as a worker,
//! [`crate::Cluster::run`] lands here: it builds the worker's runtime, adopts
//! the inherited sockets and channel, and hands the user's body a [`Worker`]
//! with its id, its listeners and a future that completes when it must stop.

mod close_reports;
pub(crate) mod connection;
pub(crate) mod drain;
pub(crate) mod incoming;
pub(crate) mod listener;
pub(crate) mod mailbox;
pub(crate) mod report_pace;
pub(crate) mod requests;

use std::future::Future;

use serde::Serialize;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::BufReader;
use tokio::sync::{mpsc, watch};

use crate::balance::Policy;
use crate::error::Error;
use crate::error::WorkerResult;
use crate::log::rate::warn_limited;
use crate::protocol::env::WorkerEnvironment;
use crate::protocol::lines::{Lanes, Line, LineQueue, LineReader, write_lines};
use crate::protocol::message::{self, Control, ToWorkerRaw};
use crate::protocol::socket_reader::{READ_BUFFER, SocketReader};
use crate::worker::connection::CloseCounter;
use crate::worker::drain::{Drain, FIRST_READ_GRACE};
use crate::worker::listener::Listener;
use crate::worker::mailbox::{
    CONTROL_CAPACITY, INBOX_CAPACITY, Inbox, Messages, OUTBOX_CAPACITY, Origin, Outgoing,
    WorkerSender,
};
use crate::worker::requests::RequestCounter;

/// How long a worker whose primary vanished may take to finish in-flight
/// work before it exits anyway: nothing supervises it any more.
const ORPHAN_DEADLINE: Duration = Duration::from_millis(500);

/// What a worker knows about itself, handed to the worker body.
#[derive(Debug)]
pub struct Worker {
    id: u32,
    generation: u32,
    grace: Duration,
    listeners: Vec<Listener>,
    stop: watch::Receiver<bool>,
    drain: Arc<Drain>,
    sender: WorkerSender,
    messages: Option<Messages>,
    subscribed: Arc<AtomicBool>,
    requests: RequestCounter,
    announced_ready: Arc<AtomicBool>,
}

impl Worker {
    /// The worker's slot, 1-based; a replacement keeps the id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// How many times this slot has been started, this start included.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// How long the primary lets this worker drain once asked to stop,
    /// before it kills it.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Takes every listener, in the order of the cluster's listen addresses,
    /// and tells the primary the worker is ready.
    pub fn listeners(&mut self) -> Vec<Listener> {
        self.ready();
        std::mem::take(&mut self.listeners)
    }

    /// Takes the first listener not yet taken and tells the primary the
    /// worker is ready.
    pub fn listener(&mut self) -> Result<Listener, Error> {
        if self.listeners.is_empty() {
            return Err(Error::Config(
                "this worker has no listener left: the cluster listens on no more addresses".into(),
            ));
        }
        self.ready();
        Ok(self.listeners.remove(0))
    }

    /// Completes when the worker must stop (asked by the primary, by
    /// SIGTERM or SIGINT, or because the primary is gone): stop accepting,
    /// finish in-flight work, return from the worker body. Hand it to
    /// `with_graceful_shutdown`.
    ///
    /// From the stop on, the worker's listeners hand out no connection, and
    /// this completes once the server has read from every connection they
    /// handed out (at most 1 s, or the grace period if shorter, for a
    /// client that sends nothing), so a graceful shutdown never closes a
    /// connection whose request the client already sent.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let drain = self.drain.clone();
        let patience = FIRST_READ_GRACE.min(self.grace);
        async move { drain.stopped(patience).await }
    }

    /// Whether the worker has been asked to stop.
    pub fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Tells the primary the worker serves. Taking the listeners does it;
    /// call it yourself when the worker is ready later than that.
    pub fn ready(&self) {
        if !self.announced_ready.swap(true, Ordering::SeqCst) {
            self.sender.send_control(Control::Ready);
        }
    }

    /// Sends `message` to the primary.
    pub async fn send<T: Serialize + ?Sized>(&self, message: &T) -> Result<(), Error> {
        self.sender.send(message).await
    }

    /// Sends `message` to worker `id`, through the primary.
    pub async fn send_to<T: Serialize + ?Sized>(&self, id: u32, message: &T) -> Result<(), Error> {
        self.sender.send_to(id, message).await
    }

    /// Counts served requests for `--max-requests` (clone it into handlers
    /// and call `served()` per request).
    pub fn request_counter(&self) -> RequestCounter {
        self.requests.clone()
    }

    /// A handle to send messages from other tasks.
    pub fn sender(&self) -> WorkerSender {
        self.sender.clone()
    }

    /// Takes the stream of messages this worker receives (from the primary,
    /// or from other workers through it). `None` if already taken.
    pub fn messages(&mut self) -> Option<Messages> {
        self.subscribed.store(true, Ordering::Release);
        self.messages.take()
    }
}

/// Builds the tokio runtime a worker runs on. With no thread count, or 1, it
/// is a current-thread runtime: corral runs one worker process per core, so
/// the processes are the parallelism, and one thread per worker wakes no
/// other thread when a connection or a message arrives (a multi-thread
/// runtime took 5–6 context switches per message round trip against 2, see
/// `bench/profiles/AFTER.md`). `threads` > 1 gives a multi-thread runtime
/// for bodies that want more threads per worker.
///
/// `corral demo-worker` builds the bare benchmark baseline's runtime here
/// too, so both sides of that comparison run the same runtime.
pub fn worker_runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match threads {
        None | Some(0 | 1) => tokio::runtime::Builder::new_current_thread(),
        Some(threads) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        }
    };
    builder.enable_all().build()
}

/// Runs the worker body in a fresh runtime ([`worker_runtime`]).
pub(crate) fn run_worker<F, Fut>(environment: WorkerEnvironment, body: F) -> Result<(), Error>
where
    F: FnOnce(Worker) -> Fut,
    Fut: Future<Output = WorkerResult>,
{
    let runtime = worker_runtime(environment.env.worker_threads)
        .map_err(Error::io("cannot start the worker's runtime"))?;
    let result = runtime.block_on(async move {
        let worker = prepare(environment)?;
        body(worker).await.map_err(Error::Worker)
    });
    // Helper tasks (channel, signals) must not keep a finished worker alive.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

fn prepare(environment: WorkerEnvironment) -> Result<Worker, Error> {
    let (stop_sender, stop) = watch::channel(false);
    let stop_sender = Arc::new(stop_sender);
    watch_stop_signals(stop_sender.clone())?;
    let (sender, inbox) = mpsc::channel(INBOX_CAPACITY);
    let subscribed = Arc::new(AtomicBool::new(false));
    let reader_inbox = Inbox {
        sender,
        subscribed: subscribed.clone(),
    };
    let outbox = match environment.channel {
        Some(fd) => Some(start_channel(
            fd,
            environment.env.max_message_size,
            stop_sender,
            reader_inbox,
        )?),
        None => None,
    };
    let drain = Drain::new(stop.clone());
    let listeners = match environment.handoff {
        Some(handoff) => {
            let policy = environment.env.policy.unwrap_or(Policy::RoundRobin);
            let closes = policy
                .needs_close_reports()
                .then(|| Arc::new(CloseCounter::default()));
            let addresses = environment.env.addresses;
            let queues = incoming::start(handoff, addresses.len(), closes.clone(), stop.clone())
                .map_err(Error::io("cannot use the hand-off channel"))?;
            queues
                .into_iter()
                .zip(addresses)
                .map(|(queue, address)| {
                    Listener::from_handoff(queue, address, closes.clone(), drain.clone())
                })
                .collect()
        }
        None => {
            // Least-connections steered in the kernel, where the kernel
            // cannot count connections itself, counts the closes the worker
            // reports on its message channel.
            let closes = environment
                .env
                .close_reports
                .then(|| {
                    outbox.clone().map(|outbox| {
                        close_reports::start(WorkerSender {
                            outbox: Some(outbox),
                        })
                    })
                })
                .flatten();
            environment
                .listeners
                .into_iter()
                .map(|fd| Listener::from_inherited(fd, closes.clone(), drain.clone()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(Error::io("cannot use an inherited listening socket"))?
        }
    };
    let worker = Worker {
        id: environment.env.id,
        generation: environment.env.generation,
        grace: environment.env.grace,
        listeners,
        stop,
        drain,
        sender: WorkerSender {
            outbox: outbox.clone(),
        },
        messages: Some(Messages { inbox }),
        subscribed,
        requests: RequestCounter::start_reporting(WorkerSender {
            outbox: outbox.clone(),
        }),
        announced_ready: Arc::new(AtomicBool::new(false)),
    };
    worker.sender.send_control(Control::Online);
    if let Some(period) = environment.env.heartbeat {
        let sender = worker.sender.clone();
        // Sent from the worker's own runtime: when its event loop stops,
        // the heartbeats stop, and the primary's watchdog replaces it.
        tokio::spawn(async move {
            let mut beat = tokio::time::interval(period);
            loop {
                beat.tick().await;
                sender.send_control(Control::Heartbeat);
            }
        });
    }
    Ok(worker)
}

/// SIGTERM and SIGINT ask the worker to stop gracefully.
fn watch_stop_signals(stop: Arc<watch::Sender<bool>>) -> Result<(), Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).map_err(Error::io("cannot watch SIGTERM"))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(Error::io("cannot watch SIGINT"))?;
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        stop.send_replace(true);
    });
    Ok(())
}

/// Starts the channel's reader and writer; returns the writer's lanes.
fn start_channel(
    fd: OwnedFd,
    max_message_size: usize,
    stop: Arc<watch::Sender<bool>>,
    inbox: Inbox,
) -> Result<Outgoing, Error> {
    let channel_error = Error::io("cannot use the message channel");
    let reader = fd
        .try_clone()
        .and_then(SocketReader::new)
        .map_err(channel_error)?;
    let writer = fd;
    let (control, control_queue) = mpsc::channel::<Vec<u8>>(CONTROL_CAPACITY);
    let (user, user_queue) = mpsc::channel::<Vec<u8>>(OUTBOX_CAPACITY);
    let lanes = Lanes::new(
        LineQueue::Bounded(control_queue),
        LineQueue::Bounded(user_queue),
    );
    tokio::spawn(write_lines(writer, lanes, |_| {}));
    tokio::spawn(async move {
        read_channel(reader, max_message_size, &stop, inbox).await;
        // The primary closed the channel: it is gone. Stop, and do not
        // outlive it for long.
        stop.send_replace(true);
        tokio::time::sleep(ORPHAN_DEADLINE).await;
        tracing::warn!(event = "orphaned", "the primary is gone: exiting");
        // Its last words, if stderr still takes them; a closed stderr
        // costs nothing here (the log writer drops lines, never panics).
        crate::log::flush(Duration::from_millis(100));
        std::process::exit(1);
    });
    Ok(Outgoing { control, user })
}

/// Reads the primary's messages until the channel closes. While the
/// worker's inbox is full this waits, and so stops reading: the primary's
/// stop then still arrives as SIGTERM, which [`watch_stop_signals`] turns
/// into the same stop, so no flood of messages can hold a stop back.
async fn read_channel(
    reader: SocketReader,
    max_message_size: usize,
    stop: &watch::Sender<bool>,
    inbox: Inbox,
) {
    let mut lines = LineReader::new(
        BufReader::with_capacity(READ_BUFFER, reader),
        max_message_size,
    );
    while let Ok(Some(line)) = lines.next_line().await {
        let Line::Complete(bytes) = line else {
            warn_limited!("the primary sent an oversized message: skipped");
            continue;
        };
        match message::decode_to_worker_raw(bytes) {
            Ok(Some(ToWorkerRaw::Stop)) => {
                stop.send_replace(true);
            }
            Ok(Some(ToWorkerRaw::User(json))) => {
                inbox.deliver(Origin::Primary, json.to_vec()).await;
            }
            Ok(Some(ToWorkerRaw::From { from, message })) => {
                let json = Box::<str>::from(message).into_string().into_bytes();
                inbox.deliver(Origin::Worker(from), json).await;
            }
            Ok(None) => {}
            Err(err) => warn_limited!("bad message from the primary: {err}"),
        }
    }
}
