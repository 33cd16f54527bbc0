//! Starting one worker process: its descriptors (the listening sockets from 3
//! up, the message channel after them), its environment, and the tasks that
//! pass on its output and report its messages and its exit to the supervisor.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::process::Stdio;

use command_fds::{CommandFdExt, FdMapping};
use rustix::process::Pid;
use std::sync::Arc;

use serde_json::Value;
use tokio::io::BufReader;
use tokio::sync::mpsc;

use crate::balance::WorkerSockets;
use crate::error::Error;
use crate::log::rate::warn_limited;
use crate::primary::io::messages::{MessageRouter, WorkerLimits};
use crate::primary::io::notice::Notice;
use crate::primary::io::outbox::Outbox;
use crate::primary::io::worker_output::{OutputSink, Stream};
use crate::primary::node::agent::AgentSettings;
use crate::primary::node::{AfterInternal, NodeCluster, Session};
use crate::protocol::env::{FIRST_LISTEN_FD, WorkerEnv};
use crate::protocol::envelope;
use crate::protocol::lines::{Line, LineReader};
use crate::protocol::message::{self, Control, DecodeError, ToPrimary};
use crate::protocol::node;
use crate::protocol::socket_reader::{READ_BUFFER, SocketReader};
use crate::settings::Program;
use std::net::SocketAddr;

use crate::primary::Settings;
use crate::sys::ExecImage;
use crate::worker_key::WorkerKey;

/// What starts workers: the program, and the parts of the primary each
/// worker is tied to. The settings come with each start, so a worker
/// started after a reload gets the reloaded ones (its environment is built
/// from them then, never kept).
pub(crate) struct Launcher {
    pub program: Program,
    pub primary_pid: Pid,
    /// The addresses the listeners are bound to (`CORRAL_LISTEN_ADDRS`).
    pub addresses: Vec<SocketAddr>,
    pub output: OutputSink,
    pub notices: mpsc::Sender<Notice>,
    pub messages: Arc<MessageRouter>,
    /// For a Node program: the cluster's Node side, which answers each
    /// worker's cluster messages.
    pub node: Option<Arc<NodeCluster>>,
    /// corral's Node agent, for Node workers (`--node-agent`).
    pub node_agent: Option<std::path::PathBuf>,
}

/// A started worker, as the supervisor holds it.
pub(crate) struct Spawned {
    pub pid: u32,
    /// Lines to write to the worker's channel.
    pub outbox: Outbox,
}

impl Launcher {
    pub(crate) fn spawn(
        &self,
        key: WorkerKey,
        sockets: WorkerSockets,
        settings: &Settings,
    ) -> Result<Spawned, Error> {
        let WorkerKey {
            slot: id,
            generation,
            ..
        } = key;
        let resolved = self.program.resolve()?;
        let identity = WorkerEnv {
            id,
            generation,
            workers: settings.workers,
            listener_count: sockets.listeners.len(),
            has_handoff: sockets.handoff.is_some(),
            node_channel: self.node.is_some(),
            primary_pid: Some(self.primary_pid.as_raw_nonzero().get() as u32),
            grace: settings.grace,
            max_message_size: settings.max_message_size,
            worker_threads: settings.worker_threads,
            heartbeat: settings.heartbeat(),
            cluster_name: settings.name.clone(),
            policy: Some(settings.policy),
            addresses: self.addresses.clone(),
        };
        let spawn_error = |source| Error::Spawn { id, source };
        // A Node worker's session serves `listen({fd: 3})` from these.
        let node_listeners = match &self.node {
            Some(_) => sockets
                .listeners
                .iter()
                .map(OwnedFd::try_clone)
                .collect::<Result<Vec<_>, _>>()
                .map_err(spawn_error)?,
            None => Vec::new(),
        };
        let (primary_end, worker_end) =
            std::os::unix::net::UnixStream::pair().map_err(spawn_error)?;
        let mut mappings: Vec<FdMapping> = sockets
            .listeners
            .into_iter()
            .zip(FIRST_LISTEN_FD..)
            .map(|(parent_fd, child_fd)| FdMapping {
                parent_fd,
                child_fd,
            })
            .collect();
        mappings.push(FdMapping {
            parent_fd: OwnedFd::from(worker_end),
            child_fd: identity.ipc_fd(),
        });
        if let Some(handoff) = sockets.handoff {
            mappings.push(FdMapping {
                parent_fd: handoff,
                child_fd: identity.handoff_fd(),
            });
        }
        let first_unmapped = mappings
            .iter()
            .map(|mapping| mapping.child_fd + 1)
            .max()
            .unwrap_or(FIRST_LISTEN_FD);
        let image = ExecImage::new(
            resolved.path.as_os_str(),
            &resolved.argv,
            &environment(
                &identity,
                self.program.env(),
                &settings.env,
                self.node_agent.as_deref().map(|path| {
                    (
                        path,
                        AgentSettings {
                            ws_close_after: settings.ws_close_after,
                        },
                    )
                }),
            ),
            self.program.death_signal(),
            self.primary_pid,
        )
        .map_err(spawn_error)?
        .closing_fds_from(first_unmapped);

        let mut command = tokio::process::Command::new(&resolved.path);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C in the terminal reaches only
            // the primary, which then stops the workers in order.
            .process_group(0);
        // std clears the supplementary groups when root starts a process
        // with another uid.
        if let Some(user) = &settings.user {
            command.uid(user.uid).gid(user.gid);
        }
        command
            .fd_mappings(mappings)
            .expect("descriptor numbers are distinct by construction");
        let mut child = image.spawn(command).map_err(spawn_error)?;

        let pid = child.id().expect("a child not yet waited for has a pid");
        if let Some(stdout) = child.stdout.take() {
            self.output.relay(id, pid, Stream::Stdout, stdout);
        }
        if let Some(stderr) = child.stderr.take() {
            self.output.relay(id, pid, Stream::Stderr, stderr);
        }
        let outbox = self
            .start_channel(key, pid, primary_end, node_listeners, settings)
            .map_err(spawn_error)?;
        let notices = self.notices.clone();
        tokio::spawn(async move {
            let status = child.wait().await.ok();
            let _ = notices
                .send(Notice::Exited {
                    worker: key,
                    status,
                })
                .await;
        });
        Ok(Spawned { pid, outbox })
    }

    fn start_channel(
        &self,
        key: WorkerKey,
        pid: u32,
        stream: std::os::unix::net::UnixStream,
        node_listeners: Vec<OwnedFd>,
        settings: &Settings,
    ) -> std::io::Result<Outbox> {
        let writer = OwnedFd::from(stream);
        let reader = SocketReader::new(writer.try_clone()?)?;
        let outbox = Outbox::start(writer);
        let messages = self.messages.clone();
        let limit = settings.max_message_size;
        let session = self.node.as_ref().map(|node| {
            node.session(
                key,
                pid,
                outbox.clone(),
                node_listeners,
                self.notices.clone(),
            )
        });
        tokio::spawn(async move {
            read_channel(key, reader, limit, messages.clone(), session).await;
            messages.channel_closed(key);
        });
        Ok(outbox)
    }
}

/// The worker's environment: corral's, then the variables the program
/// sets (a package script's), then the configured ones (`Cluster::env`),
/// each in place of earlier ones of the same name.
fn environment(
    identity: &WorkerEnv,
    from_program: &[(OsString, OsString)],
    configured: &[(OsString, OsString)],
    node_agent: Option<(&std::path::Path, AgentSettings)>,
) -> Vec<(OsString, OsString)> {
    let mut env = identity.environment();
    for added in [from_program, configured] {
        env.retain(|(key, _)| !added.iter().any(|(name, _)| name == key));
        env.extend(added.iter().cloned());
    }
    if let Some((path, agent)) = node_agent {
        // Appended to the NODE_OPTIONS the worker would have had (the
        // inherited one, or the one --env or a package script sets).
        let existing = env
            .iter()
            .rev()
            .find(|(key, _)| key == "NODE_OPTIONS")
            .map(|(_, value)| value.clone());
        let added = crate::primary::node::agent::environment(path, existing.as_deref(), &agent);
        env.retain(|(key, _)| !added.iter().any(|(name, _)| name == key));
        env.extend(added);
    }
    env
}

/// Hands a Node worker's own message (`text`, whose `cmd` starts with
/// `NODE_`) to its session: one of the few lines the primary parses
/// whole.
async fn handle_internal(session: &mut Session, text: &[u8]) -> AfterInternal {
    let internal = serde_json::from_slice::<Value>(text)
        .ok()
        .and_then(|value| node::classify(&value));
    match internal {
        Some(internal) => session.handle(internal).await,
        None => AfterInternal::Done,
    }
}

/// Reads one worker's messages until its channel closes (a line is
/// decoded once, without building its value: [`message::decode_to_primary`]).
/// Bad input is logged against the worker and skipped.
async fn read_channel(
    key: WorkerKey,
    reader: SocketReader,
    limit: usize,
    messages: Arc<MessageRouter>,
    mut session: Option<Session>,
) {
    let id = key.slot;
    let mut lines = LineReader::new(BufReader::with_capacity(READ_BUFFER, reader), limit);
    // Each `online` is a log line, a journal entry and an event: a worker
    // says it once; repeats say nothing new and are dropped here.
    let mut said_online = false;
    let limits = WorkerLimits::new();
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => return,
            // A worker that exits with messages unread resets the channel.
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(err) => {
                warn_limited!("worker {id}: message channel failed: {err}");
                return;
            }
        };
        let bytes = match line {
            Line::Complete(bytes) => bytes,
            Line::TooLong(len) => {
                crate::metrics::message_dropped();
                warn_limited!(
                    event = "message_dropped",
                    worker = id,
                    "worker {id}: dropped a {len}-byte message, over the {limit}-byte limit"
                );
                continue;
            }
        };
        // The per-connection lines of round-robin, without a JSON tree.
        if let Some(session) = session.as_mut()
            && let Some(internal) = node::hot_path(bytes)
        {
            match session.handle(internal).await {
                AfterInternal::Stop => return,
                _ => continue,
            }
        }
        let unwrapped: String;
        let decoded = match (message::decode_to_primary(bytes), session.as_mut()) {
            // Node's own messages go to the worker's Node session.
            (Ok(Some(ToPrimary::User(user))), Some(session)) if node::is_internal(&user.fields) => {
                match handle_internal(session, user.text).await {
                    AfterInternal::Done => Ok(None),
                    AfterInternal::Deliver(value) => {
                        unwrapped = value.to_string();
                        envelope::read_as_user(unwrapped.as_bytes())
                            .map(|user| Some(ToPrimary::User(user)))
                            .map_err(DecodeError::from)
                    }
                    AfterInternal::Stop => return,
                }
            }
            (decoded, _) => decoded,
        };
        match decoded {
            Ok(Some(ToPrimary::Control(Control::Online)))
                if std::mem::replace(&mut said_online, true) => {}
            Ok(Some(message)) => {
                if !messages.route(key, message, &limits).await {
                    return;
                }
            }
            Ok(None) => {}
            Err(err) => {
                crate::metrics::message_dropped();
                warn_limited!(
                    event = "message_dropped",
                    worker = id,
                    "worker {id}: dropped a malformed message: {err}"
                )
            }
        }
    }
}
