//! The control socket's protocol, for `corral`'s own commands and for
//! scripts in any language: newline-delimited JSON over a Unix stream
//! socket. A client writes one request a line, each with an `id` of its
//! choosing (any JSON value); the primary answers each with one response
//! line carrying the same `id`, in order:
//!
//! ```text
//! → {"id":1,"command":"status"}
//! ← {"id":1,"ok":true,"result":{"name":"api","pid":4242,…}}
//! → {"id":2,"command":"scale","workers":4}
//! ← {"id":2,"ok":true,"result":{"workers_desired":4}}
//! → {"id":3,"command":"frobnicate"}
//! ← {"id":3,"ok":false,"error":"unknown command \"frobnicate\": …"}
//! ```
//!
//! Two requests then stream: `events` and `logs` with `"follow":true`
//! answer once, then send one line per event (`{"id":…,"event":{…}}`) or
//! output line (`{"id":…,"log":{…}}`) until the client closes the
//! connection. docs/protocols.md documents every command with examples.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::status::ReloadOutcome;

/// The longest request line the primary reads; a longer one gets an error
/// response and the connection is closed.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;

/// One request line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Echoed in the response, so a client can match them up.
    #[serde(default)]
    pub id: Value,
    #[serde(flatten)]
    pub command: Command,
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Command {
    /// The cluster's [`crate::Status`].
    Status,
    /// A rolling reload. With `wait` (the default) the response comes when
    /// the reload that includes this request has ended: `ok` when every
    /// worker was replaced, an error with the reason when it aborted.
    Reload {
        #[serde(default = "yes")]
        wait: bool,
    },
    /// Sets the number of workers: `workers` (a count) or `change` (a
    /// difference, `+1` or `-1`), not both. Scaling down drains gracefully.
    Scale {
        #[serde(default)]
        workers: Option<usize>,
        #[serde(default)]
        change: Option<i64>,
    },
    /// Stops the cluster: gracefully, or with `now` at once (SIGKILL). The
    /// response comes at once; the connection closes when the primary exits.
    Stop {
        #[serde(default)]
        now: bool,
    },
    /// The last `lines` (default 100) of the buffered output: workers'
    /// stdout and stderr and corral's own events; only worker `worker`'s
    /// with it; with `follow`, then every new line as it comes.
    Logs {
        #[serde(default)]
        lines: Option<usize>,
        #[serde(default)]
        worker: Option<u32>,
        #[serde(default)]
        follow: bool,
    },
    /// The lifecycle events from now on, one line each, until the client
    /// closes the connection.
    Events,
}

fn yes() -> bool {
    true
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub id: Value,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub(crate) fn success(id: Value, result: impl Serialize) -> Self {
        Response {
            id,
            ok: true,
            result: Some(serde_json::to_value(result).unwrap_or(Value::Null)),
            error: None,
        }
    }

    pub(crate) fn failure(id: Value, error: impl Into<String>) -> Self {
        Response {
            id,
            ok: false,
            result: None,
            error: Some(error.into()),
        }
    }
}

/// The result of `reload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadReply {
    /// The reload started now (`false`: it was queued behind the one under
    /// way, or the cluster is stopping).
    pub started: bool,
    /// How it ended (with `wait`).
    pub outcome: Option<ReloadOutcome>,
}

/// The result of `scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleReply {
    pub workers_desired: usize,
}

/// One line of output the primary buffered: a worker's stdout or stderr,
/// or an event of corral's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// Numbers lines in order, across the cluster's life.
    pub seq: u64,
    /// When the primary read it, in seconds since the Unix epoch.
    pub time: f64,
    /// The worker it came from or is about (`None`: the cluster).
    pub worker: Option<u32>,
    /// `stdout` or `stderr` for a worker's output, `corral` for an event.
    pub stream: LogStream,
    pub text: String,
}

/// Where a [`LogLine`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
    Corral,
}

/// One lifecycle event, as `events` streams it: an `Event`'s JSON form
/// (`event` names it, `worker` and `pid` name the worker where there is
/// one, `fields` holds the rest; docs/events.md lists them), with the
/// `time` it happened and its `text` in words, as the log says it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Seconds since the Unix epoch.
    pub time: f64,
    pub event: String,
    #[serde(default)]
    pub worker: Option<u32>,
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(flatten)]
    pub fields: serde_json::Map<String, Value>,
    pub text: String,
}

/// A line of a streamed answer (after the response).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Streamed {
    pub id: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<EventRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LogLine>,
    /// Set when the primary stopped streaming to this client because it
    /// fell behind; the connection closes after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<u64>,
}

/// The response to `logs` written a part at a time, so that a long one is
/// never whole in memory: [`lines_response_head`], the lines in parts by
/// [`lines_response_part`], then [`LINES_RESPONSE_TAIL`]. Together they
/// make the line `Response::success(id, {"lines": […]})` would.
pub(crate) fn lines_response_head(id: &Value) -> Vec<u8> {
    format!(r#"{{"id":{id},"ok":true,"result":{{"lines":["#).into_bytes()
}

/// Appends `lines` to `out` as members of the `lines` array; `first`: no
/// line was written before them.
pub(crate) fn lines_response_part(
    lines: &[LogLine],
    first: bool,
    out: &mut Vec<u8>,
) -> serde_json::Result<()> {
    for (n, line) in lines.iter().enumerate() {
        if !(first && n == 0) {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, line)?;
    }
    Ok(())
}

/// The end of the response to `logs`.
pub(crate) const LINES_RESPONSE_TAIL: &[u8] = b"]}}\n";

/// Parses a request line; the error says what is wrong with it, for the
/// error response.
pub fn parse_request(line: &[u8]) -> Result<Request, (Value, String)> {
    let value: Value =
        serde_json::from_slice(line).map_err(|err| (Value::Null, format!("not JSON: {err}")))?;
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    match value.get("command") {
        None => {
            return Err((
                id,
                format!(
                    "no \"command\" field: send {{\"id\":1,\"command\":\"status\"}}; commands: {COMMANDS}"
                ),
            ));
        }
        Some(Value::String(name)) if !COMMANDS.split(", ").any(|known| known == name) => {
            return Err((
                id,
                format!("unknown command {name:?}: use one of {COMMANDS}"),
            ));
        }
        Some(_) => {}
    }
    let request: Request =
        serde_json::from_value(value).map_err(|err| (id.clone(), format!("bad request: {err}")))?;
    if let Command::Scale { workers, change } = &request.command
        && workers.is_some() == change.is_some()
    {
        return Err((
            id,
            "scale takes either \"workers\" (a count) or \"change\" (+N or -N)".into(),
        ));
    }
    Ok(request)
}

/// The command names, as the error for an unknown one lists them.
const COMMANDS: &str = "status, reload, scale, stop, logs, events";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_with_their_defaults() {
        let request = parse_request(br#"{"id":7,"command":"reload"}"#).unwrap();
        assert_eq!(request.id, 7);
        assert_eq!(request.command, Command::Reload { wait: true });
        let request = parse_request(br#"{"id":"a","command":"scale","change":-1}"#).unwrap();
        assert_eq!(
            request.command,
            Command::Scale {
                workers: None,
                change: Some(-1)
            }
        );
        let request = parse_request(br#"{"command":"logs","lines":5,"follow":true}"#).unwrap();
        assert_eq!(request.id, Value::Null);
        assert_eq!(
            request.command,
            Command::Logs {
                lines: Some(5),
                worker: None,
                follow: true
            }
        );
    }

    #[test]
    fn bad_requests_say_what_is_wrong_and_keep_the_id() {
        let (id, error) = parse_request(b"garbage").unwrap_err();
        assert_eq!(id, Value::Null);
        assert!(error.starts_with("not JSON"), "{error}");
        let (id, error) = parse_request(br#"{"id":3,"command":"frobnicate"}"#).unwrap_err();
        assert_eq!(id, 3);
        assert!(error.contains("unknown command \"frobnicate\""), "{error}");
        let (_, error) = parse_request(br#"{"id":3}"#).unwrap_err();
        assert!(error.contains("no \"command\""), "{error}");
        let (_, error) = parse_request(br#"{"id":3,"command":"scale"}"#).unwrap_err();
        assert!(error.contains("either"), "{error}");
        let (_, error) =
            parse_request(br#"{"id":3,"command":"scale","workers":"many"}"#).unwrap_err();
        assert!(error.starts_with("bad request"), "{error}");
    }

    #[test]
    fn requests_write_as_they_read() {
        let request = Request {
            id: 1.into(),
            command: Command::Stop { now: true },
        };
        let text = serde_json::to_string(&request).unwrap();
        assert_eq!(text, r#"{"id":1,"command":"stop","now":true}"#);
        assert_eq!(parse_request(text.as_bytes()).unwrap(), request);
    }

    #[test]
    fn the_logs_response_in_parts_is_the_whole_response() {
        let line = |seq: u64, text: &str| LogLine {
            seq,
            time: 1.5,
            worker: Some(1),
            stream: LogStream::Stdout,
            text: text.into(),
        };
        let lines = [line(1, "a \"quoted\" line"), line(2, "b"), line(3, "c")];
        let id = Value::from("x");
        for split in 0..=lines.len() {
            let mut written = lines_response_head(&id);
            lines_response_part(&lines[..split], true, &mut written).unwrap();
            lines_response_part(&lines[split..], split == 0, &mut written).unwrap();
            written.extend_from_slice(LINES_RESPONSE_TAIL);
            assert_eq!(written.pop(), Some(b'\n'), "one line");
            assert!(!written.contains(&b'\n'), "one line");
            let response: Response = serde_json::from_slice(&written).unwrap();
            let whole = Response::success(id.clone(), serde_json::json!({ "lines": lines }));
            assert_eq!(response, whole);
        }
        let mut empty = lines_response_head(&Value::Null);
        empty.extend_from_slice(LINES_RESPONSE_TAIL);
        let response: Response = serde_json::from_slice(&empty).unwrap();
        assert_eq!(response.result.unwrap()["lines"], serde_json::json!([]));
    }

    #[test]
    fn responses_carry_a_result_or_an_error() {
        let ok = serde_json::to_string(&Response::success(
            1.into(),
            ScaleReply { workers_desired: 3 },
        ))
        .unwrap();
        assert_eq!(ok, r#"{"id":1,"ok":true,"result":{"workers_desired":3}}"#);
        let failed = serde_json::to_string(&Response::failure(2.into(), "no")).unwrap();
        assert_eq!(failed, r#"{"id":2,"ok":false,"error":"no"}"#);
    }
}
