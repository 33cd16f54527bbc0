//! Node's cluster dialect on the message channel, as a Node worker
//! (`NODE_UNIQUE_ID` set) speaks it to its primary: which lines are Node's
//! own (`{"cmd":"NODE_…"}`), the `NODE_CLUSTER` messages a worker sends
//! (`online`, `queryServer`, `listening`, `close`, `exitedAfterDisconnect`,
//! the answer to `newconn`), and the lines corral sends back. Pure: no
//! sockets here, so every rule is unit-tested.
//!
//! Rules that keep a Node worker alive (a bad line throws inside its read
//! callback): every line is compact, valid JSON ending in one newline; a
//! reply carries `ack` = the seq of the message it answers, an unsolicited
//! message never does; each side numbers its own `NODE_CLUSTER` messages
//! from 0 ([`Sequencer`]); a line that carries a descriptor is wrapped as
//! `{"cmd":"NODE_HANDLE","type":…,"msg":…}` ([`Outgoing::handle`]).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::protocol::agent_report::{self, AgentReport};
use crate::protocol::lines::json_line;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The `cmd` of cluster messages.
pub const CLUSTER_CMD: &str = "NODE_CLUSTER";
/// The prefix that makes a message Node's own, not the user's.
pub const INTERNAL_PREFIX: &str = "NODE_";

/// What Node's acknowledgement of a received descriptor says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleReceipt {
    /// `NODE_HANDLE_ACK`: the descriptor arrived.
    Ack,
    /// `NODE_HANDLE_NACK`: the line arrived without its descriptor; the
    /// receiver dropped the message and expects it again.
    Nack,
}

/// A message of Node's own, read from a worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Internal {
    /// A `NODE_CLUSTER` message.
    Cluster(ClusterMessage),
    /// The worker's receipt for a descriptor corral sent.
    Receipt(HandleReceipt),
    /// User code sent a handle (`process.send(msg, handle)`): the wrapped
    /// user message; the sender waits for `NODE_HANDLE_ACK`.
    Handle { message: Value },
    /// The metrics report of corral's Node agent, or why it is refused.
    AgentReport(Result<AgentReport, String>),
    /// Any other `NODE_…` command, with its name.
    Other(String),
}

/// A `NODE_CLUSTER` message from a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterMessage {
    /// The worker's sequence number; replies carry it as `ack`.
    pub seq: Option<u64>,
    pub act: Act,
}

/// What a worker's `NODE_CLUSTER` message is about.
#[derive(Debug, Clone, PartialEq)]
pub enum Act {
    /// The worker's cluster module is up. No reply.
    Online,
    /// A `listen()` (or a dgram `bind()`) asks for a socket. Always reply.
    QueryServer(ServerQuery),
    /// A server is listening (Node's `listening` event). No reply.
    Listening(ServerQuery),
    /// A server closed. No reply.
    Close { key: String },
    /// The worker disconnects itself (`cluster.worker.disconnect()`):
    /// reply with an ack, or it hangs.
    ExitedAfterDisconnect,
    /// The answer to a `newconn`: whether the worker took the connection.
    Accepted { ack: u64, accepted: bool },
    /// A reply to one of corral's messages with nothing more in it.
    Ack(u64),
    /// An `act` this primary does not know (or none).
    Unknown(String),
}

/// The fields of `queryServer` and `listening` (`net.js` `listenInCluster`,
/// `dgram.js` `bind`, `cluster/child.js` `_getServer`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerQuery {
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub port: Option<i64>,
    #[serde(default)]
    pub address_type: Value,
    #[serde(default)]
    pub fd: Option<i64>,
    #[serde(default)]
    pub flags: Option<i64>,
    #[serde(default)]
    pub index: Option<u64>,
    /// Per-server data (TLS ticket keys) that the reply echoes.
    #[serde(default)]
    pub data: Value,
}

/// What a query asks to listen on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A TCP port. `host` is `None` for "any address" (dual-stack `[::]`
    /// where IPv6 exists, else `0.0.0.0`); port 0 = a free port.
    Tcp {
        host: Option<IpAddr>,
        port: u16,
        ipv6_only: bool,
    },
    /// A Unix socket path (absolute: the worker resolves it).
    Unix(PathBuf),
    /// A UDP port (`dgram`); `v6` for `udp6`.
    Udp {
        host: Option<IpAddr>,
        port: u16,
        v6: bool,
    },
    /// `listen({fd: N})`: a descriptor number in the worker, which Node
    /// assumes names a descriptor of the primary.
    Fd(i32),
}

/// Why a query cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("port {0} is out of range")]
    BadPort(i64),
    #[error("address {0:?} is not an IP address")]
    BadAddress(String),
    #[error("unknown addressType {0}")]
    BadAddressType(Value),
    #[error("a Unix socket query without a path")]
    NoPath,
}

/// Node's `IPV6ONLY` bind flag.
const IPV6_ONLY_FLAG: i64 = 1;

impl ServerQuery {
    /// Node's name for the server, unique per worker: the primary's reply
    /// carries it and `newconn` names the server by it.
    pub fn key(&self) -> String {
        let address = self.address.as_deref().unwrap_or("null");
        let port = self
            .port
            .map_or_else(|| "undefined".to_string(), |port| port.to_string());
        let kind = match &self.address_type {
            Value::Null => "undefined".to_string(),
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        let fd = self
            .fd
            .map_or_else(|| "undefined".to_string(), |fd| fd.to_string());
        let index = self
            .index
            .map_or_else(|| "undefined".to_string(), |index| index.to_string());
        format!("{address}:{port}:{kind}:{fd}:{index}")
    }

    /// What the query asks to listen on.
    pub fn endpoint(&self) -> Result<Endpoint, QueryError> {
        if let Some(fd) = self.fd.filter(|fd| *fd >= 0) {
            return Ok(Endpoint::Fd(fd as i32));
        }
        let host = || -> Result<Option<IpAddr>, QueryError> {
            match self.address.as_deref() {
                None | Some("") => Ok(None),
                Some(text) => text
                    .parse()
                    .map(Some)
                    .map_err(|_| QueryError::BadAddress(text.into())),
            }
        };
        let port = || -> Result<u16, QueryError> {
            let port = self.port.unwrap_or(0);
            u16::try_from(port).map_err(|_| QueryError::BadPort(port))
        };
        match &self.address_type {
            Value::Number(kind) if kind.as_i64() == Some(-1) => self
                .address
                .as_ref()
                .filter(|path| !path.is_empty())
                .map(|path| Endpoint::Unix(path.into()))
                .ok_or(QueryError::NoPath),
            Value::Number(kind) if matches!(kind.as_i64(), Some(4 | 6)) => Ok(Endpoint::Tcp {
                host: host()?,
                port: port()?,
                ipv6_only: self.flags.unwrap_or(0) & IPV6_ONLY_FLAG != 0,
            }),
            // `listen(port)` with no address sends no addressType.
            Value::Null => Ok(Endpoint::Tcp {
                host: host()?,
                port: port()?,
                ipv6_only: false,
            }),
            Value::String(kind) if kind == "udp4" || kind == "udp6" => Ok(Endpoint::Udp {
                host: host()?,
                port: port()?,
                v6: kind == "udp6",
            }),
            other => Err(QueryError::BadAddressType(other.clone())),
        }
    }
}

/// The longest line a Node worker sends corral as its primary, newline
/// included: a `queryServer` for a Unix socket whose path fills `sun_path`
/// (107 bytes) with characters JSON escapes as `\u00XX`, every number at
/// its widest, and the ticket keys an HTTPS server sends as a JSON Buffer
/// (48 bytes). `listening` and `online` carry less. The primary must read
/// lines this long, or a Node worker's `listen()` could never be answered.
#[cfg(test)]
pub(crate) fn longest_cluster_message() -> usize {
    let path: String = std::iter::repeat_n('\u{1}', 107).collect();
    let ticket_keys = serde_json::json!({"type": "Buffer", "data": vec![255; 48]});
    let query = serde_json::json!({
        "cmd": CLUSTER_CMD, "act": "queryServer", "index": u32::MAX,
        "data": {"ticketKeys": ticket_keys}, "address": path, "port": i32::MIN,
        "addressType": "udp6", "fd": i32::MIN, "flags": i32::MIN,
        "backlog": i32::MIN, "exclusive": false, "seq": u64::MAX,
    });
    crate::protocol::lines::json_line(&query).len()
}

/// Whether a message with these top-level fields is one of Node's own
/// (then [`classify`] its value, which says which).
pub(crate) fn is_internal(fields: &crate::protocol::envelope::Fields<'_>) -> bool {
    fields
        .cmd
        .as_deref()
        .is_some_and(|cmd| cmd.starts_with(INTERNAL_PREFIX))
}

/// Whether `value` is one of Node's own messages, and which. `None`: a
/// user message.
pub fn classify(value: &Value) -> Option<Internal> {
    let object = value.as_object()?;
    let cmd = object.get("cmd")?.as_str()?;
    if !cmd.starts_with(INTERNAL_PREFIX) {
        return None;
    }
    Some(match cmd {
        "NODE_HANDLE_ACK" => Internal::Receipt(HandleReceipt::Ack),
        "NODE_HANDLE_NACK" => Internal::Receipt(HandleReceipt::Nack),
        "NODE_HANDLE" => Internal::Handle {
            message: object.get("msg").cloned().unwrap_or(Value::Null),
        },
        CLUSTER_CMD => Internal::Cluster(cluster_message(object)),
        agent_report::REPORT_CMD => Internal::AgentReport(agent_report::parse(value)),
        other => Internal::Other(other.to_string()),
    })
}

/// The two lines a worker sends for every connection under round-robin
/// (the receipt of its descriptor and the answer to `newconn`), recognised
/// without building a JSON tree; `None` for any other line (then
/// [`classify`] the decoded value).
pub fn hot_path(line: &[u8]) -> Option<Internal> {
    if line == br#"{"cmd":"NODE_HANDLE_ACK"}"# {
        return Some(Internal::Receipt(HandleReceipt::Ack));
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Answer<'a> {
        cmd: &'a str,
        ack: u64,
        accepted: bool,
        seq: Option<u64>,
    }
    let answer: Answer<'_> = serde_json::from_slice(line).ok()?;
    (answer.cmd == CLUSTER_CMD).then_some(Internal::Cluster(ClusterMessage {
        seq: answer.seq,
        act: Act::Accepted {
            ack: answer.ack,
            accepted: answer.accepted,
        },
    }))
}

fn cluster_message(object: &Map<String, Value>) -> ClusterMessage {
    let seq = object.get("seq").and_then(Value::as_u64);
    let ack = object.get("ack").and_then(Value::as_u64);
    let query = || ServerQuery::deserialize(Value::Object(object.clone()));
    let act = match (object.get("act").and_then(Value::as_str), ack) {
        (Some("online"), _) => Act::Online,
        (Some("queryServer"), _) => match query() {
            Ok(query) => Act::QueryServer(query),
            Err(err) => Act::Unknown(format!("queryServer with bad fields ({err})")),
        },
        (Some("listening"), _) => match query() {
            Ok(query) => Act::Listening(query),
            Err(err) => Act::Unknown(format!("listening with bad fields ({err})")),
        },
        (Some("close"), _) => Act::Close {
            key: object
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        },
        (Some("exitedAfterDisconnect"), _) => Act::ExitedAfterDisconnect,
        (None, Some(ack)) => match object.get("accepted").and_then(Value::as_bool) {
            Some(accepted) => Act::Accepted { ack, accepted },
            None => Act::Ack(ack),
        },
        (Some(act), _) => Act::Unknown(act.to_string()),
        (None, None) => Act::Unknown("a message without act or ack".into()),
    };
    ClusterMessage { seq, act }
}

/// corral's side of the numbering: one counter per worker, from 0.
#[derive(Debug, Default)]
pub struct Sequencer {
    next: u64,
}

impl Sequencer {
    pub fn next(&mut self) -> u64 {
        let seq = self.next;
        self.next += 1;
        seq
    }
}

/// The kind of descriptor a line carries, as Node names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleType {
    /// TCP and Unix stream sockets, listening or connected.
    Net,
    /// UDP sockets.
    Dgram,
}

impl HandleType {
    fn name(self) -> &'static str {
        match self {
            HandleType::Net => "net.Native",
            HandleType::Dgram => "dgram.Native",
        }
    }
}

/// A line for a Node worker, and whether a descriptor must go with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub line: Vec<u8>,
    /// Send exactly one descriptor with this line.
    pub carries_fd: bool,
}

impl Outgoing {
    fn plain(value: Value) -> Self {
        Outgoing {
            line: json_line(&value),
            carries_fd: false,
        }
    }

    /// `message` wrapped to travel with one descriptor of `kind`.
    fn handle(kind: HandleType, message: Value) -> Self {
        let wrapped = json!({"cmd": "NODE_HANDLE", "type": kind.name(), "msg": message});
        Outgoing {
            line: json_line(&wrapped),
            carries_fd: true,
        }
    }
}

/// The address a round-robin server reports (`server.address()`).
pub fn sockname(address: SocketAddr) -> Value {
    let family = if address.is_ipv6() { "IPv6" } else { "IPv4" };
    json!({"address": address.ip().to_string(), "family": family, "port": address.port()})
}

/// "Here is the socket": the reply to `queryServer` `ack`, with the bound
/// socket as its descriptor (Node's `SCHED_NONE`).
pub fn reply_with_socket(
    seq: u64,
    ack: u64,
    key: &str,
    data: &Value,
    kind: HandleType,
) -> Outgoing {
    let message =
        json!({"cmd": CLUSTER_CMD, "errno": 0, "key": key, "ack": ack, "data": data, "seq": seq});
    Outgoing::handle(kind, message)
}

/// "I will hand you connections": the reply to `queryServer` `ack` under
/// round-robin; `sockname` for TCP servers (`None` for Unix paths).
pub fn reply_round_robin(
    seq: u64,
    ack: u64,
    key: &str,
    data: &Value,
    sockname: Option<Value>,
) -> Outgoing {
    let mut message = json!({"cmd": CLUSTER_CMD, "errno": null, "key": key, "ack": ack, "data": data, "seq": seq});
    if let Some(sockname) = sockname {
        message["sockname"] = sockname;
    }
    Outgoing::plain(message)
}

/// The reply to `queryServer` `ack` that fails the worker's `listen()`
/// with `errno` (negative, libuv's convention: -98 is EADDRINUSE), which
/// the worker's server emits as an `'error'` event.
pub fn reply_error(seq: u64, ack: u64, key: &str, data: &Value, errno: i32) -> Outgoing {
    let errno = if errno < 0 { errno } else { -errno.max(1) };
    Outgoing::plain(
        json!({"cmd": CLUSTER_CMD, "errno": errno, "key": key, "ack": ack, "data": data, "seq": seq}),
    )
}

/// A connection for the server `key`, with its descriptor. Written once
/// per connection, so formatted directly rather than through a JSON tree.
pub fn newconn(seq: u64, key: &str) -> Outgoing {
    let key = serde_json::to_string(key).expect("a string always serializes");
    let line = format!(
        r#"{{"cmd":"NODE_HANDLE","type":"net.Native","msg":{{"cmd":"{CLUSTER_CMD}","act":"newconn","key":{key},"seq":{seq}}}}}"#
    );
    let mut line = line.into_bytes();
    line.push(b'\n');
    Outgoing {
        line,
        carries_fd: true,
    }
}

/// Node's `worker.disconnect()`: close every server, let open connections
/// finish, close the channel, exit.
pub fn disconnect(seq: u64) -> Outgoing {
    Outgoing::plain(json!({"cmd": CLUSTER_CMD, "act": "disconnect", "seq": seq}))
}

/// A bare reply to the worker's message `ack` (`exitedAfterDisconnect`).
pub fn ack(seq: u64, ack: u64) -> Outgoing {
    Outgoing::plain(json!({"cmd": CLUSTER_CMD, "ack": ack, "seq": seq}))
}

/// The receipt for a descriptor the worker sent (`process.send(m, handle)`).
pub fn handle_ack() -> Outgoing {
    Outgoing::plain(json!({"cmd": "NODE_HANDLE_ACK"}))
}

/// The negative errno Node expects for a failed bind (EIO when the error
/// has no number).
pub fn negative_errno(error: &io::Error) -> i32 {
    -error.raw_os_error().unwrap_or(libc::EIO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Option<Internal> {
        classify(&serde_json::from_str(text).unwrap())
    }

    fn cluster(text: &str) -> ClusterMessage {
        match parse(text) {
            Some(Internal::Cluster(message)) => message,
            other => panic!("not a cluster message: {other:?}"),
        }
    }

    fn decoded(outgoing: &Outgoing) -> Value {
        assert_eq!(outgoing.line.last(), Some(&b'\n'));
        let body = &outgoing.line[..outgoing.line.len() - 1];
        assert!(!body.contains(&b'\n') && !body.is_empty());
        serde_json::from_slice(body).unwrap()
    }

    #[test]
    fn user_messages_are_not_internal() {
        for text in [
            r#""ready""#,
            r#"{"hello":"world"}"#,
            r#"{"cmd":"hello"}"#,
            r#"{"cmd":7}"#,
            "[1,2]",
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
        assert_eq!(
            parse(r#"{"cmd":"NODE_HANDLE_ACK"}"#),
            Some(Internal::Receipt(HandleReceipt::Ack))
        );
        assert_eq!(
            parse(r#"{"cmd":"NODE_HANDLE_NACK"}"#),
            Some(Internal::Receipt(HandleReceipt::Nack))
        );
        assert_eq!(
            parse(r#"{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"a":1}}"#),
            Some(Internal::Handle {
                message: json!({"a": 1})
            })
        );
        assert_eq!(
            parse(r#"{"cmd":"NODE_WHATEVER"}"#),
            Some(Internal::Other("NODE_WHATEVER".into()))
        );
    }

    #[test]
    fn a_worker_s_listen_8000_is_a_tcp_query_on_any_address() {
        // What `http.createServer().listen(8000)` sends from Node 20.
        let message = cluster(
            r#"{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":null,"port":8000,"addressType":4,"backlog":511,"seq":1}"#,
        );
        assert_eq!(message.seq, Some(1));
        let Act::QueryServer(query) = message.act else {
            panic!("{message:?}")
        };
        assert_eq!(query.key(), "null:8000:4:undefined:0");
        assert_eq!(
            query.endpoint().unwrap(),
            Endpoint::Tcp {
                host: None,
                port: 8000,
                ipv6_only: false
            }
        );
    }

    #[test]
    fn endpoints_of_every_kind() {
        let endpoint = |text: &str| match cluster(text).act {
            Act::QueryServer(query) => query.endpoint(),
            other => panic!("{other:?}"),
        };
        let q = |rest: &str| format!(r#"{{"cmd":"NODE_CLUSTER","act":"queryServer",{rest}}}"#);
        assert_eq!(
            endpoint(&q(r#""address":"::1","port":0,"addressType":6,"flags":1"#)).unwrap(),
            Endpoint::Tcp {
                host: Some("::1".parse().unwrap()),
                port: 0,
                ipv6_only: true
            }
        );
        assert_eq!(
            endpoint(&q(r#""address":"/tmp/a.sock","port":-1,"addressType":-1"#)).unwrap(),
            Endpoint::Unix("/tmp/a.sock".into())
        );
        assert_eq!(
            endpoint(&q(
                r#""address":"127.0.0.1","port":5353,"addressType":"udp4""#
            ))
            .unwrap(),
            Endpoint::Udp {
                host: Some("127.0.0.1".parse().unwrap()),
                port: 5353,
                v6: false
            }
        );
        assert_eq!(
            endpoint(&q(
                r#""address":null,"port":null,"addressType":null,"fd":3"#
            ))
            .unwrap(),
            Endpoint::Fd(3)
        );
        assert_eq!(
            endpoint(&q(r#""port":70000,"addressType":4"#)),
            Err(QueryError::BadPort(70000))
        );
        assert_eq!(
            endpoint(&q(r#""address":"example.com","port":1,"addressType":4"#)),
            Err(QueryError::BadAddress("example.com".into()))
        );
        assert!(matches!(
            endpoint(&q(r#""port":1,"addressType":"sctp""#)),
            Err(QueryError::BadAddressType(_))
        ));
    }

    #[test]
    fn acts_and_answers() {
        assert_eq!(
            cluster(r#"{"cmd":"NODE_CLUSTER","act":"online","seq":0}"#).act,
            Act::Online
        );
        assert_eq!(
            cluster(r#"{"cmd":"NODE_CLUSTER","ack":7,"accepted":false,"seq":3}"#).act,
            Act::Accepted {
                ack: 7,
                accepted: false
            }
        );
        assert_eq!(
            cluster(r#"{"cmd":"NODE_CLUSTER","act":"close","key":"k","seq":4}"#).act,
            Act::Close { key: "k".into() }
        );
        assert_eq!(
            cluster(r#"{"cmd":"NODE_CLUSTER","act":"exitedAfterDisconnect","seq":5}"#).act,
            Act::ExitedAfterDisconnect
        );
        assert_eq!(
            cluster(r#"{"cmd":"NODE_CLUSTER","act":"explode","seq":6}"#).act,
            Act::Unknown("explode".into())
        );
        assert!(matches!(
            cluster(r#"{"cmd":"NODE_CLUSTER","act":"queryServer","port":"x"}"#).act,
            Act::Unknown(_)
        ));
    }

    #[test]
    fn replies_are_single_valid_lines_with_ack_only_on_replies() {
        let mut seq = Sequencer::default();
        assert_eq!((seq.next(), seq.next()), (0, 1));
        let data = json!({"ticketKeys": "abc"});
        let socket = reply_with_socket(2, 1, "null:8000:4:undefined:0", &data, HandleType::Net);
        assert!(socket.carries_fd);
        let value = decoded(&socket);
        assert_eq!(value["cmd"], "NODE_HANDLE");
        assert_eq!(value["type"], "net.Native");
        assert_eq!(value["msg"]["ack"], 1);
        assert_eq!(value["msg"]["errno"], 0);
        assert_eq!(value["msg"]["data"], data);
        assert_eq!(value["msg"]["cmd"], "NODE_CLUSTER");
        let udp = reply_with_socket(2, 1, "k", &Value::Null, HandleType::Dgram);
        assert_eq!(decoded(&udp)["type"], "dgram.Native");

        let rr = reply_round_robin(
            3,
            1,
            "k",
            &Value::Null,
            Some(sockname("[::]:8000".parse().unwrap())),
        );
        assert!(!rr.carries_fd);
        let value = decoded(&rr);
        assert_eq!(value["errno"], Value::Null);
        assert_eq!(value["key"], "k");
        assert_eq!(
            value["sockname"],
            json!({"address": "::", "family": "IPv6", "port": 8000})
        );

        let error = decoded(&reply_error(4, 2, "k", &Value::Null, libc::EADDRINUSE));
        assert_eq!(error["errno"], -98);
        assert_eq!(error["ack"], 2);

        let conn = newconn(5, "k");
        assert!(conn.carries_fd);
        let value = decoded(&conn);
        assert_eq!(value["msg"]["act"], "newconn");
        assert!(value["msg"].get("ack").is_none(), "newconn is unsolicited");
        assert!(decoded(&disconnect(6)).get("ack").is_none());
        assert_eq!(decoded(&ack(7, 9))["ack"], 9);
        assert_eq!(handle_ack().line, b"{\"cmd\":\"NODE_HANDLE_ACK\"}\n");
    }

    #[test]
    fn the_hot_lines_parse_as_their_general_form_does() {
        for line in [
            r#"{"cmd":"NODE_HANDLE_ACK"}"#,
            r#"{"cmd":"NODE_CLUSTER","ack":7,"accepted":true,"seq":12}"#,
            r#"{"cmd":"NODE_CLUSTER","ack":8,"accepted":false,"seq":13}"#,
        ] {
            assert_eq!(hot_path(line.as_bytes()), parse(line), "{line}");
            assert!(hot_path(line.as_bytes()).is_some());
        }
        for other in [
            r#"{"cmd":"NODE_CLUSTER","act":"online","seq":0}"#,
            r#"{"cmd":"NODE_CLUSTER","ack":7,"accepted":true,"seq":1,"act":"x"}"#,
            r#"{"cmd":"USER","ack":7,"accepted":true}"#,
            r#""ready""#,
        ] {
            assert_eq!(hot_path(other.as_bytes()), None, "{other}");
        }
        let general = Outgoing::handle(
            HandleType::Net,
            json!({"cmd": CLUSTER_CMD, "act": "newconn", "key": "a\"b", "seq": 5}),
        );
        assert_eq!(decoded(&newconn(5, "a\"b")), decoded(&general));
        assert!(newconn(5, "k").carries_fd);
    }

    #[test]
    fn errnos_are_negative() {
        let in_use = io::Error::from_raw_os_error(libc::EADDRINUSE);
        assert_eq!(negative_errno(&in_use), -98);
        assert_eq!(negative_errno(&io::Error::other("x")), -libc::EIO);
    }
}
