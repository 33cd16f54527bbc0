//! Worker output, passed through line by line with the worker's id in front
//! (`[worker 2] …`). One thread does the writing, so a slow reader of the
//! primary's output slows the workers that write (as a terminal would) but
//! never the primary's supervision.

use std::io::Write;

use tokio::io::{AsyncRead, BufReader};
use tokio::sync::mpsc;

use crate::protocol::lines::{Line, LineReader};

/// The longest line passed through whole; longer ones are cut.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// The queue to the writing thread, and the bookkeeping to flush it.
pub(crate) struct OutputSink {
    lines: mpsc::Sender<(Stream, Vec<u8>)>,
    /// Every relay task holds a clone; when all are dropped, `relays_done`
    /// yields `None`: every worker's output has been queued.
    relays_alive: Option<mpsc::Sender<()>>,
    relays_done: mpsc::Receiver<()>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl OutputSink {
    pub(crate) fn start() -> Self {
        let (lines, mut queued) = mpsc::channel::<(Stream, Vec<u8>)>(1024);
        let writer = std::thread::Builder::new()
            .name("corral-output".into())
            .spawn(move || {
                while let Some((stream, line)) = queued.blocking_recv() {
                    // A closed stdout or stderr must not stop the cluster.
                    let _ = match stream {
                        Stream::Stdout => std::io::stdout().lock().write_all(&line),
                        Stream::Stderr => std::io::stderr().lock().write_all(&line),
                    };
                }
            })
            .expect("cannot start the output thread");
        let (relays_alive, relays_done) = mpsc::channel(1);
        OutputSink {
            lines,
            relays_alive: Some(relays_alive),
            relays_done,
            writer: Some(writer),
        }
    }

    /// Waits (up to `timeout`) until the output of every exited worker has
    /// been written, so that a worker's last words before the primary exits
    /// are not lost.
    pub(crate) async fn flush(&mut self, timeout: std::time::Duration) {
        self.relays_alive = None;
        let relays_finished = tokio::time::timeout(timeout, self.relays_done.recv()).await;
        if relays_finished.is_ok() {
            let (closed, _) = mpsc::channel(1);
            drop(std::mem::replace(&mut self.lines, closed));
            if let Some(writer) = self.writer.take() {
                let _ = writer.join();
            }
        }
    }

    /// Passes `source` through, each line prefixed with `[worker ID] `.
    pub(crate) fn relay(
        &self,
        id: u32,
        stream: Stream,
        source: impl AsyncRead + Unpin + Send + 'static,
    ) {
        let sink = self.lines.clone();
        let alive = self.relays_alive.clone();
        tokio::spawn(async move {
            let _alive = alive;
            let prefix = format!("[worker {id}] ");
            let mut lines = LineReader::new(BufReader::new(source), MAX_LINE);
            while let Ok(Some(line)) = lines.next_line().await {
                let mut out = prefix.clone().into_bytes();
                match line {
                    Line::Complete(bytes) => out.extend_from_slice(bytes),
                    Line::TooLong(len) => {
                        out.extend_from_slice(
                            format!("({len} bytes of output without a newline, not shown)")
                                .as_bytes(),
                        );
                    }
                }
                out.push(b'\n');
                if sink.send((stream, out)).await.is_err() {
                    break;
                }
            }
        });
    }
}
