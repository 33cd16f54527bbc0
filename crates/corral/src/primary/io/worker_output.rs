//! Worker output, passed through line by line with the worker's id in front
//! (`[worker 2] …`). One thread does the writing, so a slow reader of the
//! primary's output slows the workers that write (as a terminal would) but
//! never the primary's supervision. With `--log-format json` every line
//! becomes one JSON object too: a worker's own JSON lines keep theirs (with
//! `worker` and `pid` added when missing), other lines are wrapped as
//! `{"event":"output","stream":"stdout",…,"message":LINE}`.
//!
//! A worker's output is untrusted text: each line keeps its words, but its
//! control characters (all but tab) and escape sequences are shown escaped
//! (`\x1b[31m`, see `log::escape`), in the text log, in JSON (every string
//! of a worker's own JSON line too) and in `corral logs`, so that no worker
//! can start a line that seems to be corral's or drive the terminal of
//! whoever reads the log. A worker's own JSON line always carries the
//! `worker` and `pid` of the worker that wrote it, whatever it claimed.

use std::io::Write;

use std::sync::Arc;

use tokio::io::{AsyncRead, BufReader};
use tokio::sync::mpsc;

use crate::control::journal::Journal;
use crate::control::protocol::LogStream;
use crate::log::format::now_rfc3339;
use crate::log::rate::{RateLimit, left_out};
use crate::log::{LogFormat, escape_json_strings, escape_untrusted};

use crate::protocol::lines::{Line, LineReader};

/// The longest line passed through whole; longer ones are cut.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// The queue to the writing thread, and the bookkeeping to flush it.
pub(crate) struct OutputSink {
    lines: mpsc::Sender<(Stream, Vec<u8>)>,
    /// Every relay task holds a clone; when all are dropped, `relays_done`
    /// yields `None`: every worker's output has been queued.
    relays_alive: Option<mpsc::Sender<()>>,
    relays_done: mpsc::Receiver<()>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Keeps the lines for `corral logs`.
    journal: Arc<Journal>,
}

impl OutputSink {
    pub(crate) fn start(journal: Arc<Journal>) -> Self {
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
                    if crate::log::file::active() {
                        // A JSON line has its timestamp; a text line gets one.
                        let stamp = (line.first() != Some(&b'{')).then(now_rfc3339);
                        crate::log::file::write(stamp.as_deref(), &line);
                    }
                }
            })
            .expect("cannot start the output thread");
        let (relays_alive, relays_done) = mpsc::channel(1);
        OutputSink {
            lines,
            relays_alive: Some(relays_alive),
            relays_done,
            writer: Some(writer),
            journal,
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

    /// Passes `source` through, each line prefixed with `[worker ID] ` (or,
    /// in JSON, as one object naming worker `id`, process `pid`).
    pub(crate) fn relay(
        &self,
        id: u32,
        pid: u32,
        stream: Stream,
        source: impl AsyncRead + Unpin + Send + 'static,
    ) {
        let sink = self.lines.clone();
        let alive = self.relays_alive.clone();
        let json = crate::log::active_format() == Some(LogFormat::Json);
        let journal = self.journal.clone();
        let kept_as = match stream {
            Stream::Stdout => LogStream::Stdout,
            Stream::Stderr => LogStream::Stderr,
        };
        tokio::spawn(async move {
            let _alive = alive;
            let prefix = format!("[worker {id}] ");
            let too_long = RateLimit::new(1, std::time::Duration::from_secs(1));
            let mut lines = LineReader::new(BufReader::new(source), MAX_LINE);
            while let Ok(Some(line)) = lines.next_line().await {
                let text = match line {
                    Line::Complete(bytes) => {
                        escape_untrusted(&String::from_utf8_lossy(bytes)).into_owned()
                    }
                    Line::TooLong(len) => match too_long.admit() {
                        Some(suppressed) => format!(
                            "({len} bytes of output without a newline, not shown){}",
                            left_out(suppressed)
                        ),
                        None => continue,
                    },
                };
                journal.output(id, kept_as, text.clone());
                let mut out = if json {
                    json_line(id, pid, stream, text)
                } else {
                    prefix.clone() + &text
                };
                out.push('\n');
                if sink.send((stream, out.into_bytes())).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// A worker's output line (escaped already) as one JSON object.
fn json_line(id: u32, pid: u32, stream: Stream, text: String) -> String {
    if text.starts_with('{')
        && let Ok(value @ serde_json::Value::Object(_)) = serde_json::from_str(&text)
        && let serde_json::Value::Object(mut object) = escape_json_strings(value)
    {
        object.insert("worker".into(), id.into());
        object.insert("pid".into(), pid.into());
        if let Some(serde_json::Value::Object(fields)) = object.get_mut("fields") {
            fields.entry("stream").or_insert(stream.name().into());
        }
        return serde_json::Value::Object(object).to_string();
    }
    let stream = stream.name();
    serde_json::json!({
        "timestamp": now_rfc3339(),
        "level": "INFO",
        "event": "output",
        "worker": id,
        "pid": pid,
        "message": text,
        "fields": {"stream": stream},
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn plain_output_is_wrapped_and_json_output_is_attributed() {
        let line: Value =
            serde_json::from_str(&json_line(2, 42, Stream::Stderr, "oops \"x\"".into())).unwrap();
        assert_eq!(line["event"], "output");
        assert_eq!(line["worker"], 2);
        assert_eq!(line["pid"], 42);
        assert_eq!(line["message"], "oops \"x\"");
        assert_eq!(line["fields"]["stream"], "stderr");

        let own = r#"{"level":"WARN","message":"hi","worker":2,"pid":42,"fields":{}}"#;
        let relayed: Value =
            serde_json::from_str(&json_line(2, 42, Stream::Stderr, own.into())).unwrap();
        assert_eq!(relayed["message"], "hi");
        assert_eq!(relayed["fields"]["stream"], "stderr");
        let foreign: Value =
            serde_json::from_str(&json_line(3, 7, Stream::Stdout, r#"{"msg":"x"}"#.into()))
                .unwrap();
        assert_eq!(
            (foreign["worker"].clone(), foreign["pid"].clone()),
            (3.into(), 7.into())
        );
        assert_eq!(foreign["msg"], "x");
    }

    #[test]
    fn a_worker_cannot_pass_its_json_line_off_as_another_worker_or_smuggle_controls() {
        let forged = r#"{"level":"INFO","worker":null,"pid":1,"message":"a\nINFO b","fields":{"k":["\u001b[2J"]}}"#;
        let relayed: Value =
            serde_json::from_str(&json_line(3, 77, Stream::Stdout, forged.into())).unwrap();
        assert_eq!(
            (relayed["worker"].clone(), relayed["pid"].clone()),
            (3.into(), 77.into())
        );
        assert_eq!(relayed["message"], "a\\nINFO b");
        assert_eq!(relayed["fields"]["k"][0], "\\x1b[2J");
    }
}
