//! Framing of the message channel: reading newline-terminated lines with a
//! size limit, so that a worker sending garbage or a flood costs the reader a
//! bounded buffer and a logged error, never its memory.

use std::os::fd::{AsFd, OwnedFd};

use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::sync::mpsc;

use crate::protocol::socket_reader;

/// The most line buffer a reader keeps between lines. A longer line (or an
/// oversized one being skipped) grows it, and it is given back once that
/// line is dealt with, so one huge message does not leave megabytes resident
/// per worker for the rest of its life.
const RETAINED_LINE_CAPACITY: usize = 64 * 1024;

/// The default largest line accepted on a channel.
pub const DEFAULT_MAX_LINE: usize = 16 * 1024 * 1024;

/// Lines up to this size are gathered into one write with the lines queued
/// behind them; larger ones are written alone (copying them would cost more
/// than the system call it saves).
pub(crate) const COALESCE_LIMIT: usize = 64 * 1024;

/// `value` as one line of the channel: its JSON and a newline (JSON escapes
/// every newline inside a value, so the line is whole).
pub(crate) fn json_line(value: &serde_json::Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).expect("a JSON value always serializes");
    bytes.push(b'\n');
    bytes
}

/// Appends to `batch` (which holds `first`) the lines `next` yields while
/// the batch stays under [`COALESCE_LIMIT`]; returns a line that did not fit,
/// to write after the batch. Under load this turns many small messages into
/// one write, with no delay when only one is queued.
pub(crate) fn coalesce(
    batch: &mut Vec<u8>,
    mut next: impl FnMut() -> Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    while batch.len() < COALESCE_LIMIT {
        let line = next()?;
        if batch.len() + line.len() > COALESCE_LIMIT {
            return Some(line);
        }
        batch.extend_from_slice(&line);
    }
    None
}

/// One queue a channel's writer task drains: bounded, so senders wait (a
/// worker's messages). The primary's outboxes have their own writer, whose
/// control lines may carry descriptors (`primary/io/outbox.rs`).
pub(crate) enum LineQueue {
    Bounded(mpsc::Receiver<Vec<u8>>),
}

impl LineQueue {
    async fn recv(&mut self) -> Option<Vec<u8>> {
        match self {
            LineQueue::Bounded(queue) => queue.recv().await,
        }
    }

    fn try_recv(&mut self) -> Option<Vec<u8>> {
        match self {
            LineQueue::Bounded(queue) => queue.try_recv().ok(),
        }
    }
}

/// The two lanes of a channel's writer: corral's own words, always written
/// first, and user messages. A full user lane never holds back a `ready`,
/// a heartbeat or a stop.
pub(crate) struct Lanes {
    pub control: LineQueue,
    pub user: LineQueue,
    /// Set once the control lane closed (its senders are gone).
    control_closed: bool,
}

impl Lanes {
    pub(crate) fn new(control: LineQueue, user: LineQueue) -> Self {
        Lanes {
            control,
            user,
            control_closed: false,
        }
    }

    /// The next line, a control line whenever one waits; `None` once the
    /// user lane closed (the channel's owner is gone).
    async fn recv(&mut self) -> Option<Vec<u8>> {
        if let Some(line) = self.try_recv() {
            return Some(line);
        }
        if self.control_closed {
            return self.user.recv().await;
        }
        tokio::select! {
            biased;
            line = self.control.recv() => match line {
                Some(line) => Some(line),
                None => {
                    self.control_closed = true;
                    self.user.recv().await
                }
            },
            line = self.user.recv() => line,
        }
    }

    fn try_recv(&mut self) -> Option<Vec<u8>> {
        if !self.control_closed
            && let Some(line) = self.control.try_recv()
        {
            return Some(line);
        }
        self.user.try_recv()
    }
}

/// Writes the lines of `lanes` to the stream socket `socket` until the
/// user lane closes or a write fails, control lines first, small lines
/// queued together in one write. `written` is told the size of each write
/// once it is done.
pub(crate) async fn write_lines(socket: OwnedFd, mut lanes: Lanes, mut written: impl FnMut(usize)) {
    let mut pending = None;
    loop {
        let next = match pending.take() {
            Some(line) => Some(line),
            None => lanes.recv().await,
        };
        let Some(mut batch) = next else {
            return;
        };
        if batch.len() < COALESCE_LIMIT {
            pending = coalesce(&mut batch, || lanes.try_recv());
        }
        let result = socket_reader::write_all(socket.as_fd(), &batch).await;
        written(batch.len());
        if result.is_err() {
            return;
        }
    }
}

/// What [`LineReader::next_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line<'a> {
    /// A whole line, without its newline.
    Complete(&'a [u8]),
    /// A line longer than the limit was skipped; holds its length.
    TooLong(usize),
}

/// Splits a byte stream into lines of at most `limit` bytes. A line that
/// lies whole in the read buffer (most do: the buffer is 64 KiB on a
/// message channel) is handed out in place, not copied; only a line split
/// across reads is gathered in a line buffer.
pub(crate) struct LineReader<R> {
    inner: R,
    limit: usize,
    line: Vec<u8>,
    /// Bytes of the read buffer handed out in place by the last call, to
    /// consume at the next.
    lent: usize,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    pub(crate) fn new(inner: R, limit: usize) -> Self {
        LineReader {
            inner,
            limit,
            line: Vec::new(),
            lent: 0,
        }
    }

    /// The next line, or `None` at the end of the stream. A last line without
    /// a newline still counts as a line.
    pub(crate) async fn next_line(&mut self) -> std::io::Result<Option<Line<'_>>> {
        self.inner.consume(std::mem::take(&mut self.lent));
        self.release_large_buffer();
        let mut skipped = 0usize;
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                return Ok(match (skipped, self.line.is_empty()) {
                    (0, true) => None,
                    (0, false) => Some(Line::Complete(&self.line)),
                    _ => Some(Line::TooLong(skipped)),
                });
            }
            let (chunk, found_end) = match memchr::memchr(b'\n', available) {
                Some(end) => (&available[..end], true),
                None => (available, false),
            };
            let consumed = chunk.len() + usize::from(found_end);
            if found_end && skipped == 0 && self.line.is_empty() && chunk.len() <= self.limit {
                // Whole in the buffer: lent, consumed at the next call.
                self.lent = consumed;
                let available = self.inner.fill_buf().await?;
                return Ok(Some(Line::Complete(&available[..consumed - 1])));
            }
            if skipped > 0 || self.line.len() + chunk.len() > self.limit {
                skipped += self.line.len() + chunk.len();
                self.release_large_buffer();
            } else {
                self.line.extend_from_slice(chunk);
            }
            self.inner.consume(consumed);
            if found_end {
                return Ok(Some(if skipped > 0 {
                    Line::TooLong(skipped)
                } else {
                    Line::Complete(&self.line)
                }));
            }
        }
    }

    /// Empties the line buffer, giving its memory back if it grew large.
    fn release_large_buffer(&mut self) {
        if self.line.capacity() > RETAINED_LINE_CAPACITY {
            self.line = Vec::new();
        } else {
            self.line.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_lines_coalesce_and_a_large_one_is_handed_back() {
        let mut queued = vec![
            b"b\n".to_vec(),
            b"c\n".to_vec(),
            vec![b'x'; COALESCE_LIMIT],
            b"d\n".to_vec(),
        ]
        .into_iter();
        let mut batch = b"a\n".to_vec();
        let leftover = coalesce(&mut batch, || queued.next());
        assert_eq!(batch, b"a\nb\nc\n");
        assert_eq!(leftover.map(|line| line.len()), Some(COALESCE_LIMIT));
        assert_eq!(queued.next(), Some(b"d\n".to_vec()));
    }

    async fn lines(input: &[u8], limit: usize) -> Vec<Result<Vec<u8>, usize>> {
        lines_read_by(input, limit, 4).await
    }

    async fn lines_read_by(
        input: &[u8],
        limit: usize,
        buffer: usize,
    ) -> Vec<Result<Vec<u8>, usize>> {
        let reader = tokio::io::BufReader::with_capacity(buffer, input);
        let mut lines = LineReader::new(reader, limit);
        let mut out = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            out.push(match line {
                Line::Complete(bytes) => Ok(bytes.to_vec()),
                Line::TooLong(len) => Err(len),
            });
        }
        out
    }

    #[tokio::test]
    async fn control_lines_overtake_queued_user_lines() {
        let (control_tx, control_rx) = mpsc::channel(8);
        let (user_tx, user_rx) = mpsc::channel(8);
        for index in 0..3 {
            user_tx
                .send(format!("user {index}\n").into_bytes())
                .await
                .unwrap();
        }
        control_tx.send(b"stop\n".to_vec()).await.unwrap();
        let mut lanes = Lanes::new(LineQueue::Bounded(control_rx), LineQueue::Bounded(user_rx));
        assert_eq!(lanes.recv().await, Some(b"stop\n".to_vec()));
        assert_eq!(lanes.recv().await, Some(b"user 0\n".to_vec()));
        // A closed control lane leaves the user lane working.
        drop(control_tx);
        assert_eq!(lanes.recv().await, Some(b"user 1\n".to_vec()));
        assert_eq!(lanes.recv().await, Some(b"user 2\n".to_vec()));
        drop(user_tx);
        assert_eq!(lanes.recv().await, None);
    }

    #[tokio::test]
    async fn splits_lines_across_buffer_refills() {
        let got = lines(b"hello world\n\nlast", 100).await;
        assert_eq!(
            got,
            vec![
                Ok(b"hello world".to_vec()),
                Ok(vec![]),
                Ok(b"last".to_vec())
            ]
        );
    }

    #[tokio::test]
    async fn a_huge_line_leaves_no_large_buffer_behind() {
        let mut input = vec![b'x'; 3 << 20];
        input.push(b'\n');
        input.extend_from_slice(&vec![b'y'; 1 << 20]);
        input.extend_from_slice(b"\nsmall\n");
        let reader = tokio::io::BufReader::new(&input[..]);
        let mut lines = LineReader::new(reader, 2 << 20);
        let line = lines.next_line().await.unwrap();
        assert_eq!(line, Some(Line::TooLong(3 << 20)));
        assert!(lines.line.capacity() <= RETAINED_LINE_CAPACITY);
        let line = lines.next_line().await.unwrap();
        assert!(matches!(line, Some(Line::Complete(bytes)) if bytes.len() == 1 << 20));
        let line = lines.next_line().await.unwrap();
        assert_eq!(line, Some(Line::Complete(&b"small"[..])));
        assert!(lines.line.capacity() <= RETAINED_LINE_CAPACITY);
    }

    #[tokio::test]
    async fn lines_whole_in_the_buffer_are_lent_within_the_same_limit() {
        let input = b"short\nthis line is too long\nok\n\nlast";
        let expected = vec![
            Ok(b"short".to_vec()),
            Err(21),
            Ok(b"ok".to_vec()),
            Ok(vec![]),
            Ok(b"last".to_vec()),
        ];
        // Every line whole in one buffer, and lines split across reads.
        for buffer in [1024, 7, 1] {
            assert_eq!(lines_read_by(input, 8, buffer).await, expected, "{buffer}");
        }
    }

    #[tokio::test]
    async fn skips_lines_over_the_limit_and_recovers() {
        let got = lines(b"short\nthis line is too long\nok\n", 8).await;
        assert_eq!(
            got,
            vec![Ok(b"short".to_vec()), Err(21), Ok(b"ok".to_vec())]
        );
    }
}
