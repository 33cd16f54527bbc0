//! One Node worker's cluster session, run by that worker's channel reader:
//! answers its `queryServer` for every `listen()` (a socket, connections,
//! or Node's error), turns its `listening` into readiness, acknowledges
//! what must be acknowledged (`exitedAfterDisconnect`, handles user code
//! sends), and logs what it does not understand against the worker, never
//! stopping anything else.
//!
//! What one worker can make the primary hold is bounded: the servers it
//! asks for ([`MAX_SERVERS_PER_WORKER`]), the `data` kept for each
//! ([`MAX_SERVER_DATA_BYTES`]); a query over a limit gets Node's error
//! (`EMFILE`, `ENOBUFS`), and a worker that keeps asking past the limits
//! ([`MAX_REFUSALS_OVER_LIMITS`]) is cut off. Every line a worker's query
//! can cause is rate-limited.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;

use super::NodeCluster;
use super::bind_failure::BindFailure;
use super::binds::{Served, ServerId};
use super::link::Link;
use super::newconn_dispatcher::Dispatcher;
use super::reports::{self, REPORTS_PER_SECOND};
use crate::log::rate::{RateLimit, error_limited, info_limited, left_out, warn_limited};
use crate::primary::io::notice::Notice;
use crate::protocol::agent_report::AgentReport;
use crate::protocol::message::{Control, cut_for_log};
use crate::protocol::node::{self, Act, ClusterMessage, Endpoint, Internal, ServerQuery};

/// Distinct servers (address and Node's `index`) one worker may be served:
/// each can hold a socket in the primary for the cluster's life.
pub(crate) const MAX_SERVERS_PER_WORKER: usize = 32;
/// The most bytes of a query's `data` (as JSON) kept and echoed for a
/// server. Node sends TLS ticket keys there: about 200 bytes.
pub(crate) const MAX_SERVER_DATA_BYTES: usize = 4096;
/// The longest server key (Node's `address:port:type:fd:index`) answered:
/// a longer one names no address anything could bind.
const MAX_KEY_BYTES: usize = 1024;
/// Queries refused by a limit after which the worker is cut off: it gets
/// no more connections and every query of its is refused unread.
pub(crate) const MAX_REFUSALS_OVER_LIMITS: u32 = 16;

/// Warnings about Node messages a worker should not have sent, shared by
/// every worker (a flood costs a few lines and a count, and a restarted
/// worker, or another one, gets no fresh allowance).
static BAD_NODE_MESSAGES: RateLimit = RateLimit::warnings();

pub(crate) struct Session {
    cluster: Arc<NodeCluster>,
    link: Arc<Link>,
    /// The worker's process, whose working directory relative socket paths
    /// are in.
    pid: u32,
    /// The worker's copies of the sockets bound up front (`LISTEN_FDS`).
    listeners: Vec<OwnedFd>,
    notices: mpsc::Sender<Notice>,
    /// The round-robin servers of this worker, by its key for them.
    servers: HashMap<String, Arc<Dispatcher>>,
    said_ready: bool,
    /// Every server it was served.
    served: HashSet<ServerId>,
    /// Its agent's metrics reports admitted ([`reports::report_limit`]).
    reports: RateLimit,
    /// Its queries refused by a limit.
    refusals_over_limits: u32,
    /// It flooded past the limits: nothing more is served to it.
    cut_off: bool,
    /// It said `exitedAfterDisconnect`.
    disconnected_itself: bool,
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
        pid: u32,
        listeners: Vec<OwnedFd>,
        notices: mpsc::Sender<Notice>,
    ) -> Self {
        Session {
            cluster,
            link,
            pid,
            listeners,
            notices,
            servers: HashMap::new(),
            said_ready: false,
            served: HashSet::new(),
            reports: reports::report_limit(),
            refusals_over_limits: 0,
            cut_off: false,
            disconnected_itself: false,
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
                let _ = self.link.outbox().push_reply(node::handle_ack().line);
                info_limited!(
                    "worker {}: sent a handle with a message; corral does not keep handles \
                     (it is closed) and delivers the message",
                    self.id()
                );
                return AfterInternal::Deliver(message);
            }
            Internal::Cluster(message) => return self.on_cluster(message).await,
            Internal::AgentReport(report) => return self.on_report(report).await,
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
                if let Some(seq) = seq {
                    let _ = self.link.send(|ours| node::ack(ours, seq), None);
                }
                // A worker disconnects itself once: a repeat is only
                // acknowledged (it waits for that), not told again (the
                // supervisor's `disconnect` event says `by_itself`).
                if std::mem::replace(&mut self.disconnected_itself, true) {
                    return AfterInternal::Done;
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

    /// Keeps the agent's metrics report, and counts the requests it
    /// served since the last one as served (`--max-requests`, `requests`).
    async fn on_report(&mut self, report: Result<AgentReport, String>) -> AfterInternal {
        if self.reports.admit().is_none() {
            let id = self.id();
            warn_limited!(
                event = "agent_reports_limited",
                worker = id,
                "worker {id} sends more than {REPORTS_PER_SECOND} metrics reports a second \
                 (corral's Node agent sends one): the rest of this second's are ignored"
            );
            return AfterInternal::Done;
        }
        let report = match report {
            Ok(report) => report,
            Err(why) => {
                self.warn(format_args!("{why}: ignored"));
                return AfterInternal::Done;
            }
        };
        let before = self.link.report.requests();
        let Some(served) = report.requests.checked_sub(before) else {
            self.warn(format_args!(
                "a metrics report whose requests went down ({before} to {}): ignored",
                report.requests
            ));
            return AfterInternal::Done;
        };
        self.link.report.store(report, std::time::Instant::now());
        if served > 0 {
            let notice = Notice::Served {
                worker: self.link.worker,
                count: served,
            };
            if self.notices.send(notice).await.is_err() {
                return AfterInternal::Stop;
            }
        }
        AfterInternal::Done
    }

    fn query_server(&mut self, seq: u64, query: &ServerQuery) {
        let key = query.key();
        // Too much data is neither kept nor echoed.
        let data_fits = data_fits(&query.data);
        let data = if data_fits {
            query.data.clone()
        } else {
            Value::Null
        };
        let answer = self
            .check(query, &key, data_fits)
            .and_then(|server| self.serve(&server, &data));
        let sent = match answer {
            Ok(reply) => self.reply(seq, &key, reply),
            Err(failure) => {
                self.log_refusal(&failure);
                // A key that long names nothing: not echoed.
                let key = if key.len() > MAX_KEY_BYTES { "" } else { &key };
                let reply = |ours| node::reply_error(ours, seq, key, &data, failure.errno);
                self.link.send(reply, None)
            }
        };
        if let Err(refused) = sent {
            self.warn(format_args!(
                "cannot answer its listen() of {}: {refused}",
                short(&key)
            ));
        }
    }

    /// The server a query asks for, if the worker may ask for it.
    fn check(
        &mut self,
        query: &ServerQuery,
        key: &str,
        data_fits: bool,
    ) -> Result<ServerId, BindFailure> {
        if self.cut_off {
            return Err(BindFailure::refused(libc::EMFILE, String::new()));
        }
        let server = ServerId {
            endpoint: self.endpoint(query)?,
            index: query.index.unwrap_or(0),
        };
        if self.served.contains(&server) {
            return Ok(server);
        }
        match over_limit(key, data_fits, self.served.len()) {
            Some(failure) => Err(self.count_over_limit(failure)),
            None => Ok(server),
        }
    }

    /// A refusal by a limit; past [`MAX_REFUSALS_OVER_LIMITS`] the worker
    /// is cut off.
    fn count_over_limit(&mut self, failure: BindFailure) -> BindFailure {
        self.refusals_over_limits += 1;
        if self.refusals_over_limits >= MAX_REFUSALS_OVER_LIMITS {
            self.cut_off = true;
            self.leave_servers();
            error_limited!(
                "worker {} misbehaves on its Node channel ({MAX_REFUSALS_OVER_LIMITS} listen() \
                 calls over the limits): it gets no more connections and its listen() calls \
                 are refused until it exits",
                self.id()
            );
        }
        failure
    }

    /// What `query` asks to listen on; a relative Unix socket path is in
    /// the worker's working directory (where its own `listen()` would
    /// have bound it), not the primary's.
    fn endpoint(&self, query: &ServerQuery) -> Result<Endpoint, BindFailure> {
        let endpoint = query.endpoint().map_err(|err| {
            BindFailure::refused(libc::EINVAL, format!("cannot serve its listen(): {err}"))
        })?;
        match endpoint {
            Endpoint::Unix(path) if path.is_relative() => {
                let cwd = std::fs::read_link(format!("/proc/{}/cwd", self.pid)).map_err(|err| {
                    BindFailure::io(
                        format!("cannot find the working directory of {}", path.display()),
                        &err,
                    )
                })?;
                Ok(Endpoint::Unix(cwd.join(path)))
            }
            endpoint => Ok(endpoint),
        }
    }

    fn serve(&mut self, server: &ServerId, data: &Value) -> Result<(Served, Value), BindFailure> {
        let (served, bound) = {
            let mut binds = self.cluster.binds();
            let served = binds.serve(self.id(), server, data, &self.listeners)?;
            (served, binds.take_newly_bound())
        };
        self.served.insert(server.clone());
        if !bound.is_empty() {
            // Told, not awaited: a full inbox drops it (the status still
            // lists the address, read from the binds).
            let _ = self.notices.try_send(Notice::Bound(bound));
        }
        Ok(served)
    }

    fn reply(
        &mut self,
        seq: u64,
        key: &str,
        (served, data): (Served, Value),
    ) -> Result<(), crate::primary::io::outbox::Refused> {
        match served {
            Served::Socket { fd, kind } => {
                let reply = |ours| node::reply_with_socket(ours, seq, key, &data, kind);
                self.link.send(reply, Some(Arc::new(fd)))
            }
            Served::Connections {
                dispatcher,
                sockname,
            } => {
                let sockname = sockname.map(node::sockname);
                let reply = |ours| node::reply_round_robin(ours, seq, key, &data, sockname);
                let sent = self.link.send(reply, None);
                dispatcher.join(self.link.clone(), key.to_string());
                self.servers.insert(key.to_string(), dispatcher);
                sent
            }
        }
    }

    /// Says why a `listen()` was refused, within one rate limit for every
    /// worker (a cut-off worker's refusals are not said again).
    fn log_refusal(&self, failure: &BindFailure) {
        if failure.reason.is_empty() {
            return;
        }
        // Node's own primary logs nothing; corral says what failed.
        error_limited!("worker {}: listen() failed: {}", self.id(), failure.reason);
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

    fn warn(&self, what: std::fmt::Arguments<'_>) {
        if let Some(suppressed) = BAD_NODE_MESSAGES.admit_static("worker N: a bad Node message") {
            // What the worker named (a command, a field) can be megabytes.
            let what = cut_for_log(what.to_string());
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

/// Whether a query's `data` is small enough to keep and echo.
fn data_fits(data: &Value) -> bool {
    serde_json::to_vec(data).is_ok_and(|json| json.len() <= MAX_SERVER_DATA_BYTES)
}

/// The limit a query for a server new to the worker goes over, if any: its
/// `data` does not fit, its key is too long, or the worker was already
/// served `served` servers.
fn over_limit(key: &str, data_fits: bool, served: usize) -> Option<BindFailure> {
    if !data_fits {
        return Some(BindFailure::refused(
            libc::ENOBUFS,
            format!(
                "its listen() of {} came with more than {MAX_SERVER_DATA_BYTES} bytes of data \
                 (Node sends TLS ticket keys there, about 200 bytes): refused",
                short(key)
            ),
        ));
    }
    if key.len() > MAX_KEY_BYTES {
        return Some(BindFailure::refused(
            libc::EINVAL,
            format!(
                "its listen() names an address of {} bytes: refused",
                key.len()
            ),
        ));
    }
    (served >= MAX_SERVERS_PER_WORKER).then(|| {
        BindFailure::refused(
            libc::EMFILE,
            format!(
                "its listen() of {} would be its server number {} (the most a worker is served \
                 is {MAX_SERVERS_PER_WORKER}): refused",
                short(key),
                served + 1
            ),
        )
    })
}

/// The start of a worker's key, for a log line.
fn short(key: &str) -> &str {
    let end = (0..=key.len().min(120))
        .rev()
        .find(|&end| key.is_char_boundary(end))
        .unwrap_or(0);
    &key[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_over_a_limit_get_node_errors() {
        assert!(over_limit("null:8000:4:undefined:0", true, 0).is_none());
        assert!(over_limit("k", true, MAX_SERVERS_PER_WORKER - 1).is_none());
        let full = over_limit("k", true, MAX_SERVERS_PER_WORKER).unwrap();
        assert_eq!(full.errno, -libc::EMFILE);
        assert!(full.reason.contains("server number 33"), "{}", full.reason);
        assert_eq!(over_limit("k", false, 0).unwrap().errno, -libc::ENOBUFS);
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(over_limit(&long, true, 0).unwrap().errno, -libc::EINVAL);
    }

    #[test]
    fn ticket_keys_fit_and_megabytes_do_not() {
        let ticket_keys =
            serde_json::json!({"ticketKeys": {"type": "Buffer", "data": vec![255; 48]}});
        assert!(data_fits(&ticket_keys) && data_fits(&Value::Null));
        assert!(!data_fits(&Value::String(
            "x".repeat(MAX_SERVER_DATA_BYTES)
        )));
    }

    #[test]
    fn a_long_key_is_cut_on_a_character_boundary() {
        assert_eq!(short("abc"), "abc");
        let long = "é".repeat(100);
        assert!(short(&long).len() <= 120 && long.starts_with(short(&long)));
    }
}
