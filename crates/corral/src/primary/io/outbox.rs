//! A worker's outgoing message queue in the primary, bounded in bytes: a
//! worker that does not read its channel makes messages to it be dropped
//! (and logged), never the primary's memory grow. corral's own words (the
//! stop, Node's cluster messages) go on a lane of their own, written ahead
//! of queued user messages. The stop is never refused; the replies to a
//! worker's own messages (Node's cluster messages, which a worker can send
//! without end) have a budget of their own ([`REPLY_LIMIT`]), so a worker
//! that asks and never reads cannot grow that lane either.
//!
//! For Node workers a control line may carry one descriptor (`SCM_RIGHTS`
//! on the `sendmsg` that writes its first byte). Node keeps one pending
//! descriptor and gives it to the next `NODE_HANDLE` line it parses, so
//! after such a line the writer waits for the worker's receipt
//! (`NODE_HANDLE_ACK`, told with [`Outbox::receipt`]) before it writes
//! anything more, as Node's own primary does; a `NODE_HANDLE_NACK` makes
//! it send the line again.

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use tokio::sync::mpsc;

use crate::log::rate::warn_limited;
use crate::protocol::lines::{COALESCE_LIMIT, coalesce};
use crate::protocol::node::HandleReceipt;
use crate::protocol::socket_reader::{writable, write_all};

/// The most bytes of user messages queued for one worker.
pub(crate) const OUTBOX_LIMIT: usize = 64 * 1024 * 1024;

/// The most bytes of replies to a worker's own messages (Node's cluster
/// messages: a `queryServer` answer is at most about 5 KiB) queued for one
/// worker: a worker that keeps asking and never reads is answered no more.
pub(crate) const REPLY_LIMIT: usize = 1024 * 1024;

/// The receipts (`NODE_HANDLE_ACK`) kept for the writer; the writer waits
/// for one at a time, so more are unsolicited and dropped.
const RECEIPTS_KEPT: usize = 4;

/// How many times a line whose descriptor did not arrive is sent again
/// (Node's own limit).
const MAX_RETRANSMISSIONS: u32 = 3;

/// One queued line, and the descriptor that travels with it.
struct Outgoing {
    line: Vec<u8>,
    fd: Option<Arc<OwnedFd>>,
    /// Counted against [`REPLY_LIMIT`] until the writer takes it.
    reply: bool,
}

impl Outgoing {
    fn plain(line: Vec<u8>) -> Self {
        Outgoing {
            line,
            fd: None,
            reply: false,
        }
    }
}

/// The sending side; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    control: mpsc::UnboundedSender<Outgoing>,
    lines: mpsc::UnboundedSender<Vec<u8>>,
    receipts: mpsc::Sender<HandleReceipt>,
    queued: Arc<AtomicUsize>,
    /// Bytes of replies on the control lane not yet taken by the writer.
    replies_queued: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes, fd: {}", self.line.len(), self.fd.is_some())
    }
}

/// Why a message was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The worker is not reading: its queue holds [`OUTBOX_LIMIT`] bytes
    /// of user messages, or [`REPLY_LIMIT`] bytes of replies.
    Full,
    /// The worker's channel is closed.
    Closed,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::Full => "its channel is full (it does not read it): not sent",
            Refused::Closed => "its channel is closed",
        })
    }
}

impl Outbox {
    /// Starts the task that writes queued lines to the stream socket `writer`.
    pub(crate) fn start(writer: OwnedFd) -> Self {
        let (control, control_queue) = mpsc::unbounded_channel();
        let (lines, queue) = mpsc::unbounded_channel();
        let (receipts, receipts_queue) = mpsc::channel(RECEIPTS_KEPT);
        let queued = Arc::new(AtomicUsize::new(0));
        let written = queued.clone();
        let replies_queued = Arc::new(AtomicUsize::new(0));
        let lanes = Lanes {
            control: control_queue,
            user: queue,
            control_closed: false,
            replies_queued: replies_queued.clone(),
        };
        tokio::spawn(write_queue(writer, lanes, receipts_queue, move |bytes| {
            written.fetch_sub(bytes, Ordering::Relaxed);
        }));
        Outbox {
            control,
            lines,
            receipts,
            queued,
            replies_queued,
        }
    }

    /// Queues one of corral's own lines (newline included) that the primary
    /// sends of itself (the stop), to be written before any queued user
    /// message. Only a closed channel refuses it.
    pub(crate) fn push_control(&self, line: Vec<u8>) -> Result<(), Refused> {
        self.enqueue_control(Outgoing::plain(line))
    }

    /// Queues one of corral's own lines that answers the worker (or hands
    /// it a connection), ahead of user messages, within [`REPLY_LIMIT`].
    pub(crate) fn push_reply(&self, line: Vec<u8>) -> Result<(), Refused> {
        self.enqueue_reply(Outgoing {
            line,
            fd: None,
            reply: true,
        })
    }

    /// [`Self::push_reply`] for a line that carries the descriptor `fd` (a
    /// Node `NODE_HANDLE` line). The writer holds `fd` until the receipt.
    pub(crate) fn push_reply_with_fd(
        &self,
        line: Vec<u8>,
        fd: Arc<OwnedFd>,
    ) -> Result<(), Refused> {
        self.enqueue_reply(Outgoing {
            line,
            fd: Some(fd),
            reply: true,
        })
    }

    /// The worker's receipt for the last descriptor sent; one the writer
    /// does not wait for (the worker sent it unasked) is dropped.
    pub(crate) fn receipt(&self, receipt: HandleReceipt) {
        let _ = self.receipts.try_send(receipt);
    }

    fn enqueue_reply(&self, outgoing: Outgoing) -> Result<(), Refused> {
        let len = outgoing.line.len();
        if self.replies_queued.fetch_add(len, Ordering::Relaxed) + len > REPLY_LIMIT {
            self.replies_queued.fetch_sub(len, Ordering::Relaxed);
            return Err(Refused::Full);
        }
        self.enqueue_control(outgoing).inspect_err(|_| {
            self.replies_queued.fetch_sub(len, Ordering::Relaxed);
        })
    }

    fn enqueue_control(&self, outgoing: Outgoing) -> Result<(), Refused> {
        let len = outgoing.line.len();
        // Counted, so that the writer's accounting of written bytes balances.
        self.queued.fetch_add(len, Ordering::Relaxed);
        self.control.send(outgoing).map_err(|_| {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            Refused::Closed
        })
    }

    /// An outbox whose worker is gone: every push is refused as closed.
    /// For tests of the supervisor's bookkeeping, which need no process.
    #[cfg(test)]
    pub(crate) fn closed() -> Self {
        let (control, _) = mpsc::unbounded_channel();
        let (lines, _) = mpsc::unbounded_channel();
        let (receipts, _) = mpsc::channel(RECEIPTS_KEPT);
        Outbox {
            control,
            lines,
            receipts,
            queued: Arc::default(),
            replies_queued: Arc::default(),
        }
    }

    /// Queues one line (newline included).
    pub(crate) fn push(&self, line: Vec<u8>) -> Result<(), Refused> {
        let len = line.len();
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > OUTBOX_LIMIT {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return Err(Refused::Full);
        }
        self.lines.send(line).map_err(|_| {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            Refused::Closed
        })
    }
}

/// The writer's two lanes: corral's own lines, always first, and user
/// messages.
struct Lanes {
    control: mpsc::UnboundedReceiver<Outgoing>,
    user: mpsc::UnboundedReceiver<Vec<u8>>,
    control_closed: bool,
    /// The outbox's count of queued reply bytes, which a reply leaves as
    /// the writer takes it.
    replies_queued: Arc<AtomicUsize>,
}

impl Lanes {
    /// The next line, a control line whenever one waits; `None` once the
    /// user lane closed (the outbox is gone).
    async fn recv(&mut self) -> Option<Outgoing> {
        if let Some(next) = self.try_recv() {
            return Some(next);
        }
        if self.control_closed {
            return self.user.recv().await.map(Outgoing::plain);
        }
        tokio::select! {
            biased;
            next = self.control.recv() => match next {
                Some(next) => Some(self.taken(next)),
                None => {
                    self.control_closed = true;
                    self.user.recv().await.map(Outgoing::plain)
                }
            },
            line = self.user.recv() => line.map(Outgoing::plain),
        }
    }

    fn try_recv(&mut self) -> Option<Outgoing> {
        if !self.control_closed
            && let Ok(next) = self.control.try_recv()
        {
            return Some(self.taken(next));
        }
        self.user.try_recv().ok().map(Outgoing::plain)
    }

    /// A control line the writer takes: a reply no longer counts against
    /// the budget.
    fn taken(&self, outgoing: Outgoing) -> Outgoing {
        if outgoing.reply {
            self.replies_queued
                .fetch_sub(outgoing.line.len(), Ordering::Relaxed);
        }
        outgoing
    }
}

/// Writes the queued lines to `socket` until the outbox is gone or a
/// write fails: plain lines gathered into one write, a line with a
/// descriptor alone and then nothing until its receipt.
async fn write_queue(
    socket: OwnedFd,
    mut lanes: Lanes,
    mut receipts: mpsc::Receiver<HandleReceipt>,
    mut written: impl FnMut(usize),
) {
    let mut held: Option<Outgoing> = None;
    loop {
        let next = match held.take() {
            Some(outgoing) => Some(outgoing),
            None => lanes.recv().await,
        };
        let Some(Outgoing {
            line: mut batch,
            fd,
            ..
        }) = next
        else {
            return;
        };
        if let Some(fd) = fd {
            let len = batch.len();
            let sent = send_with_fd(socket.as_fd(), &batch, &fd, &mut receipts).await;
            written(len);
            if !sent {
                return;
            }
            continue;
        }
        if batch.len() < COALESCE_LIMIT {
            let leftover = coalesce(&mut batch, || match lanes.try_recv()? {
                Outgoing { line, fd: None, .. } => Some(line),
                with_fd => {
                    held = Some(with_fd);
                    None
                }
            });
            if let Some(line) = leftover {
                held = Some(Outgoing::plain(line));
            }
        }
        let result = write_all(socket.as_fd(), &batch).await;
        written(batch.len());
        if result.is_err() {
            return;
        }
    }
}

/// Sends `line` with `fd` and waits for the worker's receipt, sending
/// again on a NACK. Returns `false` when the channel is gone.
async fn send_with_fd(
    socket: BorrowedFd<'_>,
    line: &[u8],
    fd: &OwnedFd,
    receipts: &mut mpsc::Receiver<HandleReceipt>,
) -> bool {
    for attempt in 0..=MAX_RETRANSMISSIONS {
        if write_with_fd(socket, line, fd.as_fd()).await.is_err() {
            return false;
        }
        match receipts.recv().await {
            Some(HandleReceipt::Ack) => return true,
            Some(HandleReceipt::Nack) if attempt < MAX_RETRANSMISSIONS => {}
            Some(HandleReceipt::Nack) => {
                warn_limited!(
                    "a descriptor did not reach a Node worker after {MAX_RETRANSMISSIONS} \
                     retransmissions: dropped"
                );
                return true;
            }
            None => return false,
        }
    }
    true
}

/// Writes `line` with `fd` attached to its first byte.
async fn write_with_fd(
    socket: BorrowedFd<'_>,
    line: &[u8],
    fd: BorrowedFd<'_>,
) -> std::io::Result<()> {
    let fds = [fd];
    loop {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        control.push(SendAncillaryMessage::ScmRights(&fds));
        let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
        match rustix::net::sendmsg(socket, &[IoSlice::new(line)], &mut control, flags) {
            Ok(sent) => return write_all(socket, &line[sent..]).await,
            Err(rustix::io::Errno::AGAIN) => writable(socket).await?,
            Err(rustix::io::Errno::INTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::lines::COALESCE_LIMIT;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn every_line_arrives_in_order_whatever_its_size() {
        let (primary_end, mut worker_end) = tokio::net::UnixStream::pair().unwrap();
        let writer = OwnedFd::from(primary_end.into_std().unwrap());
        let outbox = Outbox::start(writer);
        let mut expected = Vec::new();
        for index in 0..50u8 {
            // Small lines, and now and then one too large to coalesce.
            let len = if index % 7 == 3 {
                COALESCE_LIMIT + 10
            } else {
                10
            };
            let mut line = vec![b'a' + index % 26; len];
            line.push(b'\n');
            expected.extend_from_slice(&line);
            outbox.push(line).unwrap();
        }
        let mut received = vec![0; expected.len()];
        worker_end.read_exact(&mut received).await.unwrap();
        assert!(received == expected, "lines were lost or reordered");
    }

    #[tokio::test]
    async fn replies_to_a_worker_that_does_not_read_stop_at_their_budget() {
        let (primary_end, _worker_end) = tokio::net::UnixStream::pair().unwrap();
        let outbox = Outbox::start(OwnedFd::from(primary_end.into_std().unwrap()));
        // Nobody reads: the socket buffer fills, then replies queue up to
        // the budget and no further.
        let reply = vec![b'r'; 4096];
        let mut queued = 0;
        while outbox.push_reply(reply.clone()).is_ok() {
            queued += 1;
            assert!(queued < 10_000, "replies queue without end");
            tokio::task::yield_now().await;
        }
        assert_eq!(outbox.push_reply(reply), Err(Refused::Full));
        // The stop and user messages have budgets of their own.
        assert_eq!(
            outbox.push_control(b"{\"corral\":\"stop\"}\n".to_vec()),
            Ok(())
        );
        assert_eq!(outbox.push(b"1\n".to_vec()), Ok(()));
        // Receipts nobody waits for are dropped, not kept.
        for _ in 0..100_000 {
            outbox.receipt(HandleReceipt::Ack);
        }
        assert_eq!(outbox.receipts.capacity(), 0);
        assert_eq!(outbox.receipts.max_capacity(), RECEIPTS_KEPT);
    }

    #[tokio::test]
    async fn a_stop_is_queued_past_the_budget() {
        let (primary_end, _worker_end) = tokio::net::UnixStream::pair().unwrap();
        let outbox = Outbox::start(OwnedFd::from(primary_end.into_std().unwrap()));
        // Nobody reads the worker's end: user lines fill the budget...
        let chunk = vec![b'x'; 1024 * 1024];
        let mut refused = None;
        for _ in 0..=OUTBOX_LIMIT / chunk.len() + 1 {
            if let Err(err) = outbox.push(chunk.clone()) {
                refused = Some(err);
                break;
            }
        }
        assert_eq!(refused, Some(Refused::Full));
        // ...and the stop still goes in.
        assert_eq!(
            outbox.push_control(b"{\"corral\":\"stop\"}\n".to_vec()),
            Ok(())
        );
    }
}
