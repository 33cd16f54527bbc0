//! Where corral's own log lines go: a bounded queue drained by one thread
//! that writes them to stderr. Logging never blocks the caller (the
//! supervisor, a worker's tasks): with stderr on a pipe nobody reads (a
//! stuck log shipper), the queue fills and further lines are dropped and
//! counted, and once the queue drains a line says how many were lost. A
//! closed stderr (the primary that read a worker's stderr died) is not an
//! error either: lines are discarded, nothing panics.

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How often the writer has the rate limits' ended windows counted.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How many lines wait for stderr before new ones are dropped.
const QUEUE_LINES: usize = 4096;

/// The queue shared by every writer handle and the writing thread.
#[derive(Debug)]
struct Queue {
    lines: SyncSender<Vec<u8>>,
    /// Lines queued and not yet written (for [`flush`]).
    pending: AtomicUsize,
    /// Lines dropped since the last report.
    dropped: AtomicU64,
}

static QUEUE: OnceLock<Arc<Queue>> = OnceLock::new();

/// The process's log queue, started on first use.
fn queue() -> &'static Arc<Queue> {
    QUEUE.get_or_init(|| {
        let (lines, received) = sync_channel(QUEUE_LINES);
        let queue = Arc::new(Queue {
            lines,
            pending: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        });
        let drained = queue.clone();
        let started = std::thread::Builder::new()
            .name("corral-log".into())
            .spawn(move || {
                let mut stderr = std::io::stderr();
                write_out(received, &drained.pending, &drained.dropped, &mut stderr)
            });
        if started.is_err() {
            // No thread, no logs: lines queue up, then are counted as dropped.
        }
        queue
    })
}

/// The writing thread: every line to `out`, errors ignored (a closed or
/// broken stderr must not stop anything), and once the queue is empty
/// after drops, a line that says how many.
fn write_out(
    received: Receiver<Vec<u8>>,
    pending: &AtomicUsize,
    dropped: &AtomicU64,
    out: &mut impl Write,
) {
    let mut swept = Instant::now();
    loop {
        // About once a second, the rate limits' counts of ended windows.
        if swept.elapsed() >= SWEEP_EVERY {
            super::rate::sweep();
            swept = Instant::now();
        }
        let line = match received.recv_timeout(SWEEP_EVERY) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let _ = out.write_all(&line);
        if super::file::active() {
            // A text line of corral's starts with its timestamp, but not
            // under journald, nor `corral: error: …`; JSON has its own.
            let stamped = line
                .first()
                .is_some_and(|b| b.is_ascii_digit() || *b == b'{');
            let stamp = (!stamped).then(super::format::now_rfc3339);
            super::file::write(stamp.as_deref(), &line);
        }
        pending.fetch_sub(1, Ordering::Release);
        if pending.load(Ordering::Acquire) == 0 {
            let dropped = dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                // Formatted like any line, and queued like any line.
                tracing::warn!(
                    event = "log_dropped",
                    dropped,
                    "{dropped} log lines were dropped: stderr was not being read fast enough"
                );
            }
        }
    }
}

/// Queues one formatted line (or several), never waiting.
fn push(bytes: &[u8]) {
    let queue = queue();
    queue.pending.fetch_add(1, Ordering::AcqRel);
    match queue.lines.try_send(bytes.to_vec()) {
        Ok(()) => {}
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            queue.pending.fetch_sub(1, Ordering::AcqRel);
            queue.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Queues `line` as it is, newline added.
pub(crate) fn push_line(mut line: String) {
    line.push('\n');
    push(line.as_bytes());
}

/// Waits up to `timeout` until every queued line is written: called before
/// the process exits, so that its last words are not lost when stderr keeps
/// up, and the exit is not held up when it does not.
pub fn flush(timeout: Duration) {
    let Some(queue) = QUEUE.get() else {
        return;
    };
    let deadline = Instant::now() + timeout;
    while queue.pending.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The `MakeWriter` of corral's subscriber: each formatted event goes to
/// the queue in one piece.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct QueuedStderr;

impl Write for QueuedStderr {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        push(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for QueuedStderr {
    type Writer = QueuedStderr;

    fn make_writer(&'a self) -> Self::Writer {
        QueuedStderr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails every other write, as a broken pipe would.
    struct Flaky {
        written: Vec<u8>,
        calls: usize,
    }

    impl Write for Flaky {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(2) {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            self.written.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_errors_do_not_stop_the_writer() {
        let (lines, received) = sync_channel(8);
        for line in ["a\n", "b\n", "c\n", "d\n"] {
            lines.send(line.as_bytes().to_vec()).unwrap();
        }
        drop(lines);
        let pending = AtomicUsize::new(4);
        let dropped = AtomicU64::new(0);
        let mut out = Flaky {
            written: Vec::new(),
            calls: 0,
        };
        write_out(received, &pending, &dropped, &mut out);
        assert_eq!(out.written, b"a\nc\n");
        assert_eq!(pending.load(Ordering::Acquire), 0);
    }

    #[test]
    fn the_drop_count_is_reported_once_the_queue_drains() {
        let (lines, received) = sync_channel(8);
        lines.send(b"last\n".to_vec()).unwrap();
        drop(lines);
        let pending = AtomicUsize::new(1);
        let dropped = AtomicU64::new(17);
        let mut out = Vec::new();
        write_out(received, &pending, &dropped, &mut out);
        assert_eq!(out, b"last\n");
        assert_eq!(dropped.load(Ordering::Relaxed), 0, "reported and reset");
    }
}
