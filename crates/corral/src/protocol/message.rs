//! The message protocol on `CORRAL_IPC_FD`: newline-delimited JSON, one value
//! a line, both ways, so that a worker in any language can speak it (it is
//! the framing of Node's `NODE_CHANNEL_FD` in `json` mode). A value of the
//! form `{"corral": …}` is corral's own; any other value is a user message.
//!
//! corral's own values:
//! * `{"corral":"online"}`, `"ready"`, `"heartbeat"` (worker → primary) and
//!   `{"corral":"stop"}` (primary → worker): see [`Control`];
//! * `{"corral":{"to":ID,"message":VALUE}}` (worker → primary): deliver VALUE
//!   to worker ID;
//! * `{"corral":{"from":ID,"message":VALUE}}` (primary → worker): VALUE, sent
//!   by worker ID;
//! * `{"corral":{"served":N}}` (worker → primary): N more requests served
//!   (`--max-requests` counts them).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The key that marks corral's own messages.
pub const CONTROL_KEY: &str = "corral";

/// corral's control words, written `{"corral":"ready"}` and so on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    /// Worker → primary: the worker runs and reads its channel.
    Online,
    /// Worker → primary: the worker serves (and, under a hand-off policy,
    /// reads its hand-off channel).
    Ready,
    /// Worker → primary: the worker's event loop is alive.
    Heartbeat,
    /// Primary → worker: stop taking new work, finish what is in flight, exit.
    Stop,
}

/// One decoded line.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A control word.
    Control(Control),
    /// A worker asks the primary to deliver `message` to worker `to`.
    SendTo { to: u32, message: Value },
    /// The primary delivers `message` from worker `from`.
    From { from: u32, message: Value },
    /// The worker served `count` more requests.
    Served { count: u64 },
    /// Anything else: the user's own message.
    User(Value),
}

/// The object forms under the `corral` key.
#[derive(Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
enum Envelope {
    SendTo { to: u32, message: Value },
    From { from: u32, message: Value },
    Served { served: u64 },
}

/// Why a line could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a JSON value: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error(
        "unknown corral message {0} (expected \"online\", \"ready\", \"heartbeat\", \"stop\", \
         {{\"to\":ID,\"message\":…}}, {{\"from\":ID,\"message\":…}} or {{\"served\":N}})"
    )]
    UnknownControl(Value),
}

/// Decodes one line (without its newline). Blank lines decode to `None`.
pub fn decode(line: &[u8]) -> Result<Option<Message>, DecodeError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let mut value: Value = serde_json::from_slice(line)?;
    let inner = match &mut value {
        Value::Object(map) if map.len() == 1 => map.remove(CONTROL_KEY),
        _ => None,
    };
    let Some(inner) = inner else {
        return Ok(Some(Message::User(value)));
    };
    if let Ok(control) = Control::deserialize(&inner) {
        return Ok(Some(Message::Control(control)));
    }
    match Envelope::deserialize(&inner) {
        Ok(Envelope::SendTo { to, message }) => Ok(Some(Message::SendTo { to, message })),
        Ok(Envelope::From { from, message }) => Ok(Some(Message::From { from, message })),
        Ok(Envelope::Served { served }) => Ok(Some(Message::Served { count: served })),
        Err(_) => Err(DecodeError::UnknownControl(inner)),
    }
}

/// Encodes a control word as one line, newline included.
pub fn encode_control(control: Control) -> Vec<u8> {
    line(&serde_json::json!({ CONTROL_KEY: control }))
}

/// Encodes a user message as one line, newline included.
pub fn encode_user<T: Serialize + ?Sized>(message: &T) -> serde_json::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec(message)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Encodes a request to deliver `message` to worker `to`.
pub fn encode_send_to<T: Serialize + ?Sized>(to: u32, message: &T) -> serde_json::Result<Vec<u8>> {
    let message = serde_json::to_value(message)?;
    Ok(line(
        &serde_json::json!({ CONTROL_KEY: Envelope::SendTo { to, message } }),
    ))
}

/// Encodes a report of `count` more requests served.
pub fn encode_served(count: u64) -> Vec<u8> {
    line(&serde_json::json!({ CONTROL_KEY: Envelope::Served { served: count } }))
}

/// Encodes `message` as delivered from worker `from`.
pub fn encode_from(from: u32, message: Value) -> Vec<u8> {
    line(&serde_json::json!({ CONTROL_KEY: Envelope::From { from, message } }))
}

fn line(value: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).expect("a JSON value always serializes");
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_line(line: &[u8]) -> Option<Message> {
        decode(&line[..line.len() - 1]).unwrap()
    }

    #[test]
    fn control_messages_round_trip() {
        for control in [
            Control::Online,
            Control::Ready,
            Control::Heartbeat,
            Control::Stop,
        ] {
            let line = encode_control(control);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(decode_line(&line), Some(Message::Control(control)));
        }
        assert_eq!(encode_control(Control::Ready), b"{\"corral\":\"ready\"}\n");
    }

    #[test]
    fn relays_round_trip() {
        let payload = serde_json::json!({"cache": "flush", "keys": [1, 2]});
        let line = encode_send_to(3, &payload).unwrap();
        assert_eq!(
            decode_line(&line),
            Some(Message::SendTo {
                to: 3,
                message: payload.clone()
            })
        );
        let line = encode_from(2, payload.clone());
        assert_eq!(
            decode_line(&line),
            Some(Message::From {
                from: 2,
                message: payload
            })
        );
    }

    #[test]
    fn other_values_are_user_messages() {
        let decoded = decode(br#"{"cmd":"hi","corral":1}"#).unwrap();
        assert!(matches!(decoded, Some(Message::User(_))));
        assert!(matches!(decode(b"42").unwrap(), Some(Message::User(_))));
        assert_eq!(
            decode(b"\"ready\"").unwrap(),
            Some(Message::User(Value::from("ready")))
        );
        assert_eq!(decode(b"  \r").unwrap(), None);
        let line = encode_user(&vec!["a", "b"]).unwrap();
        assert_eq!(line, b"[\"a\",\"b\"]\n");
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert!(matches!(decode(b"{nope"), Err(DecodeError::NotJson(_))));
        for bad in [
            &br#"{"corral":"explode"}"#[..],
            br#"{"corral":{"to":"x","message":1}}"#,
            br#"{"corral":{"to":1}}"#,
            br#"{"corral":{"to":1,"message":2,"extra":3}}"#,
            br#"{"corral":7}"#,
        ] {
            assert!(
                matches!(decode(bad), Err(DecodeError::UnknownControl(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
