//! The control server: accepts connections on the control socket, checks
//! who is calling, and answers one JSON request per line (see
//! [`super::protocol`]). It runs as tasks of the primary's runtime; nothing
//! a client does can hold up the supervisor:
//!
//! * a request line is at most [`MAX_REQUEST_LINE`] bytes: a longer one
//!   gets an error and the connection is closed, without reading the rest;
//! * a connection that sends no request for [`IDLE_TIMEOUT`] is closed, and
//!   a client that does not read its answers within [`WRITE_TIMEOUT`] is
//!   dropped;
//! * at most [`super::roster::MAX_CONNECTIONS`] connections are open: the
//!   longest-idle one makes room for a newcomer; at most
//!   [`super::roster::MAX_LONG_LIVED`] of them follow, wait for a reload
//!   or receive a log, so a `status` always finds a place;
//! * a long answer (`logs`) is read from the buffer and written
//!   [`LOG_PART_BYTES`] at a time as the client reads it, never built
//!   whole: a client that does not read holds one part at most;
//! * garbage gets an error response naming the problem, and the connection
//!   stays usable.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::command::{ScaleTarget, StopMode, SupervisorCommand};
use super::journal::Journal;
use super::peer;
use super::protocol::{
    Command, LINES_RESPONSE_TAIL, MAX_REQUEST_LINE, ReloadReply, Request, Response, ScaleReply,
    Streamed, lines_response_head, lines_response_part, parse_request,
};
use super::roster::{MAX_LONG_LIVED, Roster, Seat};
use crate::primary::event::human_duration;

/// How long a connection may wait before sending its next request.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long writing one answer may take before the client is dropped.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines `logs` returns when the request does not say.
const DEFAULT_LOG_LINES: usize = 100;
/// How much log text is read from the buffer and written at a time.
const LOG_PART_BYTES: usize = 64 * 1024;
/// How long accepting pauses after an error (out of descriptors).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// What every connection's task shares.
pub(crate) struct Context {
    pub commands: mpsc::UnboundedSender<SupervisorCommand>,
    pub journal: Arc<Journal>,
    /// The uid the cluster runs as.
    pub uid: u32,
    pub roster: Arc<Roster>,
}

/// Accepts connections until the task is dropped.
pub(crate) async fn accept_loop(listener: tokio::net::UnixListener, context: Arc<Context>) {
    let mut last_warning: Option<Instant> = None;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream, context.clone()));
            }
            Err(err) => {
                // Rate-limited: a descriptor shortage repeats every pause.
                if last_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!("control socket: cannot accept a connection: {err}");
                    last_warning = Some(Instant::now());
                }
                tokio::time::sleep(ACCEPT_PAUSE).await;
            }
        }
    }
}

async fn serve_connection(stream: UnixStream, context: Arc<Context>) {
    let peer_uid = match peer::peer_uid(&stream) {
        Ok(uid) => uid,
        Err(err) => {
            tracing::warn!("control socket: cannot read a client's credentials: {err}");
            return;
        }
    };
    let (reader, mut writer) = stream.into_split();
    if !peer::may_control(peer_uid, context.uid) {
        tracing::warn!(
            "control socket: refused a client running as uid {peer_uid} (only uid {} and root \
             may control this cluster)",
            context.uid
        );
        let refusal = Response::failure(Value::Null, peer::refusal(peer_uid, context.uid));
        let _ = send(&mut writer, &refusal).await;
        return;
    }
    let Some(seat) = context.roster.seat(Instant::now()) else {
        let busy = Response::failure(
            Value::Null,
            "too many control connections are busy: try again shortly",
        );
        let _ = send(&mut writer, &busy).await;
        return;
    };
    let mut connection = Connection {
        reader: BufReader::new(reader),
        writer,
        seat,
        context,
    };
    let _ = connection.serve().await;
}

struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    seat: Seat,
    context: Arc<Context>,
}

/// Why a connection ends.
enum End {
    Closed,
}

impl From<io::Error> for End {
    fn from(_: io::Error) -> Self {
        End::Closed
    }
}

impl Connection {
    async fn serve(&mut self) -> Result<(), End> {
        loop {
            self.seat.idle(Instant::now());
            let evicted = self.seat.evicted.clone();
            let line = tokio::select! {
                _ = evicted.notified() => {
                    let closing = Response::failure(
                        Value::Null,
                        "closed to make room for another client (too many idle control connections)",
                    );
                    let _ = send(&mut self.writer, &closing).await;
                    return Err(End::Closed);
                }
                line = tokio::time::timeout(IDLE_TIMEOUT, read_line(&mut self.reader)) => line,
            };
            let line = match line {
                Err(_elapsed) => return Err(End::Closed),
                Ok(Err(err)) => return Err(err.into()),
                Ok(Ok(Incoming::End)) => return Ok(()),
                Ok(Ok(Incoming::TooLong)) => {
                    let refusal = Response::failure(
                        Value::Null,
                        format!(
                            "request longer than {MAX_REQUEST_LINE} bytes: closing the connection"
                        ),
                    );
                    let _ = send(&mut self.writer, &refusal).await;
                    return Err(End::Closed);
                }
                Ok(Ok(Incoming::Line(line))) => line,
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.seat.busy();
            match parse_request(&line) {
                Ok(request) => self.obey(request).await?,
                Err((id, error)) => send(&mut self.writer, &Response::failure(id, error)).await?,
            }
        }
    }

    async fn obey(&mut self, request: Request) -> Result<(), End> {
        let id = request.id;
        if is_long_lived(&request.command) && !self.seat.long_lived() {
            let refusal = Response::failure(
                id,
                format!(
                    "too many control connections are following or waiting ({MAX_LONG_LIVED} at \
                     most): close a `corral events`, `corral logs -f` or waiting `corral \
                     reload`, or retry shortly"
                ),
            );
            return send(&mut self.writer, &refusal).await.map_err(End::from);
        }
        match request.command {
            Command::Status => {
                let response = match self.status().await {
                    Some(status) => Response::success(id, status),
                    None => Response::failure(id, "the cluster is stopping"),
                };
                send(&mut self.writer, &response).await?;
            }
            Command::Reload { wait } => {
                let response = self.reload(id, wait).await;
                send(&mut self.writer, &response).await?;
            }
            Command::Scale { workers, change } => {
                let target = match (workers, change) {
                    (Some(count), _) => ScaleTarget::Exactly(count),
                    (None, change) => ScaleTarget::By(change.unwrap_or(0)),
                };
                let response = self.scale(id, target).await;
                send(&mut self.writer, &response).await?;
            }
            Command::Stop { now } => {
                let _ = self.context.commands.send(SupervisorCommand::Stop(if now {
                    StopMode::Now
                } else {
                    StopMode::Graceful
                }));
                send(
                    &mut self.writer,
                    &Response::success(id, json!({ "stopping": true })),
                )
                .await?;
                // The connection closes when the primary exits: the client
                // waits for that.
                self.wait_for_close().await;
                return Err(End::Closed);
            }
            Command::Logs {
                lines,
                worker,
                follow,
            } => {
                let count = lines.unwrap_or(DEFAULT_LOG_LINES);
                let live = follow.then(|| self.context.journal.follow_logs());
                let newest = self.send_lines(&id, count, worker).await?;
                if let Some(live) = live {
                    self.stream(id, live, |line: super::protocol::LogLine| {
                        let wanted = worker.is_none() || line.worker == worker;
                        let new = newest.is_none_or(|newest| line.seq > newest);
                        (wanted && new).then_some((None, Some(line)))
                    })
                    .await;
                    return Err(End::Closed);
                }
            }
            Command::Events => {
                let live = self.context.journal.follow_events();
                let recent = self.context.journal.recent_events();
                send(
                    &mut self.writer,
                    &Response::success(id.clone(), json!({ "recent": recent })),
                )
                .await?;
                self.stream(id, live, |record| Some((Some(record), None)))
                    .await;
                return Err(End::Closed);
            }
        }
        Ok(())
    }

    /// Sends the response to `logs`: the last `count` lines (of `worker`),
    /// a part at a time; returns the number of the last line sent.
    async fn send_lines(
        &mut self,
        id: &Value,
        count: usize,
        worker: Option<u32>,
    ) -> Result<Option<u64>, End> {
        let journal = self.context.journal.clone();
        let span = journal.last_lines_span(count, worker);
        write(&mut self.writer, &lines_response_head(id)).await?;
        if let Some((first, last)) = span {
            let mut next = first;
            let mut part_text = Vec::new();
            loop {
                let part = journal.lines_from(next, last, worker, LOG_PART_BYTES);
                let Some(end) = part.last() else {
                    break;
                };
                part_text.clear();
                lines_response_part(&part, next == first, &mut part_text)
                    .map_err(io::Error::other)?;
                next = end.seq + 1;
                write(&mut self.writer, &part_text).await?;
            }
        }
        write(&mut self.writer, LINES_RESPONSE_TAIL).await?;
        Ok(span.map(|(_, last)| last))
    }

    async fn status(&self) -> Option<crate::Status> {
        let (reply, answer) = oneshot::channel();
        self.context
            .commands
            .send(SupervisorCommand::Status(reply))
            .ok()?;
        answer.await.ok()
    }

    async fn reload(&self, id: Value, wait: bool) -> Response {
        let (started_tx, started_rx) = oneshot::channel();
        let (outcome_tx, outcome_rx) = oneshot::channel();
        let command = SupervisorCommand::Reload {
            outcome: wait.then_some(outcome_tx),
            started: Some(started_tx),
        };
        if self.context.commands.send(command).is_err() {
            return Response::failure(id, "the cluster is stopping");
        }
        let Ok(started) = started_rx.await else {
            return Response::failure(id, "the cluster is stopping");
        };
        if !wait {
            return Response::success(
                id,
                ReloadReply {
                    started,
                    outcome: None,
                },
            );
        }
        match outcome_rx.await {
            Ok(Ok(outcome)) => Response::success(
                id,
                ReloadReply {
                    started,
                    outcome: Some(outcome),
                },
            ),
            Ok(Err(outcome)) => Response {
                error: Some(format!(
                    "rolling reload aborted after {}: {}",
                    human_duration(Duration::from_secs_f64(outcome.duration_seconds)),
                    outcome.reason.as_deref().unwrap_or("no reason given")
                )),
                ..Response::success(
                    id,
                    ReloadReply {
                        started,
                        outcome: Some(outcome),
                    },
                )
            }
            .failed(),
            Err(_) => Response::failure(id, "the cluster stopped before the reload ended"),
        }
    }

    async fn scale(&self, id: Value, target: ScaleTarget) -> Response {
        let (reply, answer) = oneshot::channel();
        let command = SupervisorCommand::Scale {
            target,
            reply: Some(reply),
        };
        if self.context.commands.send(command).is_err() {
            return Response::failure(id, "the cluster is stopping");
        }
        match answer.await {
            Ok(Ok(workers_desired)) => Response::success(id, ScaleReply { workers_desired }),
            Ok(Err(why)) => Response::failure(id, why),
            Err(_) => Response::failure(id, "the cluster is stopping"),
        }
    }

    /// Sends every item of `live` that `select` keeps, until the client
    /// goes away; a client that fell behind is told how much it missed.
    async fn stream<T: Clone>(
        &mut self,
        id: Value,
        mut live: broadcast::Receiver<T>,
        mut select: impl FnMut(
            T,
        ) -> Option<(
            Option<super::protocol::EventRecord>,
            Option<super::protocol::LogLine>,
        )>,
    ) {
        let mut scratch = [0u8; 512];
        loop {
            let item = tokio::select! {
                item = live.recv() => item,
                // Anything from the client, or its end, ends the stream.
                _ = self.reader.read(&mut scratch) => return,
            };
            let line = match item {
                Ok(item) => match select(item) {
                    Some((event, log)) => Streamed {
                        id: id.clone(),
                        event,
                        log,
                        missed: None,
                    },
                    None => continue,
                },
                Err(broadcast::error::RecvError::Lagged(missed)) => Streamed {
                    id: id.clone(),
                    event: None,
                    log: None,
                    missed: Some(missed),
                },
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if send(&mut self.writer, &line).await.is_err() {
                return;
            }
        }
    }

    /// Waits until the client closes the connection or the primary exits.
    async fn wait_for_close(&mut self) {
        let mut scratch = [0u8; 512];
        while let Ok(read) = self.reader.read(&mut scratch).await {
            if read == 0 {
                return;
            }
        }
    }
}

impl Response {
    fn failed(mut self) -> Self {
        self.ok = false;
        self
    }
}

enum Incoming {
    Line(Vec<u8>),
    TooLong,
    End,
}

/// Reads one line of at most [`MAX_REQUEST_LINE`] bytes, without reading
/// past the limit.
async fn read_line(reader: &mut BufReader<OwnedReadHalf>) -> io::Result<Incoming> {
    let mut line = Vec::new();
    let limit = MAX_REQUEST_LINE as u64 + 1;
    let read = (&mut *reader)
        .take(limit)
        .read_until(b'\n', &mut line)
        .await?;
    if read == 0 {
        return Ok(Incoming::End);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        return Ok(Incoming::Line(line));
    }
    if line.len() as u64 >= limit {
        return Ok(Incoming::TooLong);
    }
    // The last line, without a newline, before the client closed.
    Ok(Incoming::Line(line))
}

/// Whether `command` holds its connection for long: a stream, a reload
/// waited for, a log (long when the client reads slowly).
fn is_long_lived(command: &Command) -> bool {
    match command {
        Command::Events | Command::Logs { .. } => true,
        Command::Reload { wait } => *wait,
        Command::Status | Command::Scale { .. } | Command::Stop { .. } => false,
    }
}

/// Writes `value` as one JSON line, within [`WRITE_TIMEOUT`].
async fn send(writer: &mut OwnedWriteHalf, value: &impl Serialize) -> io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
    line.push(b'\n');
    write(writer, &line).await
}

/// Writes `bytes` within [`WRITE_TIMEOUT`].
async fn write(writer: &mut OwnedWriteHalf, bytes: &[u8]) -> io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(bytes)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client does not read its answers",
        )),
    }
}
