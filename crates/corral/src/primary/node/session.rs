//! One Node worker's cluster session, run by that worker's channel reader:
//! answers its `queryServer` for every `listen()` (a socket, connections,
//! or Node's error), turns its `listening` into readiness, acknowledges
//! what must be acknowledged (`exitedAfterDisconnect`, handles user code
//! sends), and logs what it does not understand against the worker, never
//! stopping anything else.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;

use super::NodeCluster;
use super::binds::{Served, ServerId};
use super::dispatch::Dispatcher;
use super::link::Link;
use crate::log::rate::{RateLimit, left_out};
use crate::primary::notice::Notice;
use crate::protocol::message::Control;
use crate::protocol::node::{self, Act, ClusterMessage, Internal, ServerQuery};

pub(crate) struct Session {
    cluster: Arc<NodeCluster>,
    link: Arc<Link>,
    /// The worker's copies of the sockets bound up front (`LISTEN_FDS`).
    listeners: Vec<OwnedFd>,
    notices: mpsc::Sender<Notice>,
    /// The round-robin servers of this worker, by its key for them.
    servers: HashMap<String, Arc<Dispatcher>>,
    said_ready: bool,
    /// This worker's warnings about its bad messages (a flood costs a few
    /// lines and a count).
    warnings: RateLimit,
}

/// What the reader does with a user message after the session saw it.
pub(crate) enum AfterInternal {
    /// Nothing more.
    Done,
    /// Deliver this user message (it came wrapped with a handle).
    Deliver(Value),
    /// The supervisor is gone.
    Stop,
}

impl Session {
    pub(crate) fn new(
        cluster: Arc<NodeCluster>,
        link: Arc<Link>,
        listeners: Vec<OwnedFd>,
        notices: mpsc::Sender<Notice>,
    ) -> Self {
        Session {
            cluster,
            link,
            listeners,
            notices,
            servers: HashMap::new(),
            said_ready: false,
            warnings: RateLimit::warnings(),
        }
    }

    fn id(&self) -> u32 {
        self.link.worker.slot
    }

    /// Handles one of Node's own messages from the worker.
    pub(crate) async fn handle(&mut self, internal: Internal) -> AfterInternal {
        match internal {
            Internal::Receipt(receipt) => self.link.outbox().receipt(receipt),
            Internal::Handle { message } => {
                // Node waits for this receipt before it sends anything more.
                let _ = self.link.outbox().push_control(node::handle_ack().line);
                tracing::info!(
                    "worker {}: sent a handle with a message; corral does not keep handles (it \
                     is closed) and delivers the message",
                    self.id()
                );
                return AfterInternal::Deliver(message);
            }
            Internal::Cluster(message) => return self.on_cluster(message).await,
            Internal::Other(cmd) => {
                self.warn(format_args!("unknown Node command {cmd:?}: ignored"))
            }
        }
        AfterInternal::Done
    }

    async fn on_cluster(&mut self, message: ClusterMessage) -> AfterInternal {
        let ClusterMessage { seq, act } = message;
        match act {
            Act::Online => {}
            Act::QueryServer(query) => match seq {
                Some(seq) => self.query_server(seq, &query),
                None => self.warn(format_args!("a queryServer without seq: ignored")),
            },
            Act::Listening(_) if !self.said_ready => {
                self.said_ready = true;
                let notice = Notice::Control {
                    worker: self.link.worker,
                    control: Control::Ready,
                };
                if self.notices.send(notice).await.is_err() {
                    return AfterInternal::Stop;
                }
            }
            Act::Listening(_) => {}
            Act::Close { key } => {
                if let Some(dispatcher) = self.servers.remove(&key) {
                    dispatcher.leave(self.link.worker);
                }
            }
            Act::ExitedAfterDisconnect => {
                tracing::info!("worker {} disconnects itself", self.id());
                if let Some(seq) = seq {
                    let _ = self.link.send(|ours| node::ack(ours, seq), None);
                }
                if self
                    .notices
                    .send(Notice::Leaving(self.link.worker))
                    .await
                    .is_err()
                {
                    return AfterInternal::Stop;
                }
            }
            Act::Accepted { ack, accepted } => self.answered(ack, accepted),
            Act::Ack(_) => {}
            Act::Unknown(act) => {
                self.warn(format_args!("unknown cluster message {act:?}: ignored"))
            }
        }
        AfterInternal::Done
    }

    fn query_server(&mut self, seq: u64, query: &ServerQuery) {
        let key = query.key();
        let endpoint = match query.endpoint() {
            Ok(endpoint) => endpoint,
            Err(err) => {
                self.warn(format_args!("cannot serve its listen(): {err}"));
                let reply = |ours| node::reply_error(ours, seq, &key, &query.data, -libc::EINVAL);
                let _ = self.link.send(reply, None);
                return;
            }
        };
        let server = ServerId {
            endpoint,
            index: query.index.unwrap_or(0),
        };
        let (served, data) = {
            let mut binds = self.cluster.binds();
            let data = binds.shared_data(&server, &query.data);
            (binds.serve(self.id(), &server, &self.listeners), data)
        };
        let sent = match served {
            Ok(Served::Socket { fd, kind }) => {
                let reply = |ours| node::reply_with_socket(ours, seq, &key, &data, kind);
                self.link.send(reply, Some(Arc::new(fd)))
            }
            Ok(Served::Connections {
                dispatcher,
                sockname,
            }) => {
                let sockname = sockname.map(node::sockname);
                let reply = |ours| node::reply_round_robin(ours, seq, &key, &data, sockname);
                let sent = self.link.send(reply, None);
                dispatcher.join(self.link.clone(), key.clone());
                self.servers.insert(key, dispatcher);
                sent
            }
            Err(failure) => {
                // Node's own primary logs nothing; corral says what failed.
                tracing::error!("worker {}: listen() failed: {}", self.id(), failure.reason);
                let reply = |ours| node::reply_error(ours, seq, &key, &data, failure.errno);
                self.link.send(reply, None)
            }
        };
        if let Err(refused) = sent {
            tracing::warn!(
                "worker {}: cannot answer its listen(): {refused:?}",
                self.id()
            );
        }
    }

    fn answered(&mut self, seq: u64, accepted: bool) {
        let Some((dispatcher, conn)) = self.link.answered(seq) else {
            self.warn(format_args!(
                "an answer to an unknown connection (seq {seq}): ignored"
            ));
            return;
        };
        // Accepted: the worker has its own copy; the primary's closes here.
        let refused = (!accepted).then_some(conn);
        dispatcher.answered(self.link.worker, refused);
    }

    /// The worker stops taking connections (it was asked to stop).
    pub(crate) fn leave_servers(&mut self) {
        for dispatcher in self.servers.values() {
            dispatcher.leave(self.link.worker);
        }
    }

    fn warn(&mut self, what: std::fmt::Arguments<'_>) {
        if let Some(suppressed) = self.warnings.admit() {
            tracing::warn!("worker {}: {what}{}", self.id(), left_out(suppressed));
        }
    }
}

impl Drop for Session {
    /// The channel closed: the worker takes nothing more, and connections
    /// it had not answered for go to the others.
    fn drop(&mut self) {
        self.leave_servers();
        self.cluster.worker_gone(&self.link);
    }
}
