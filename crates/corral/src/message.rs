//! The message protocol on `CORRAL_IPC_FD`: newline-delimited JSON, one value
//! a line, so that a worker in any language can speak it. A value of the form
//! `{"corral": …}` is corral's own ([`Control`]); any other value is a user
//! message.

use serde::{Deserialize, Serialize};

/// The key that marks corral's own messages.
pub const CONTROL_KEY: &str = "corral";

/// corral's own messages, written `{"corral":"ready"}` and so on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    /// Worker → primary: the worker runs and reads its channel.
    Online,
    /// Worker → primary: the worker serves its listeners.
    Ready,
    /// Worker → primary: the worker's event loop is alive.
    Heartbeat,
    /// Primary → worker: stop taking new work, finish what is in flight, exit.
    Stop,
}

/// One decoded line.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Control(Control),
    User(serde_json::Value),
}

/// Why a line could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a JSON value: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error(
        "unknown corral message {0} (expected one of \"online\", \"ready\", \"heartbeat\", \"stop\")"
    )]
    UnknownControl(serde_json::Value),
}

/// Decodes one line (without its newline). Blank lines decode to `None`.
pub fn decode(line: &[u8]) -> Result<Option<Message>, DecodeError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: serde_json::Value = serde_json::from_slice(line)?;
    let control = match &value {
        serde_json::Value::Object(map) if map.len() == 1 => map.get(CONTROL_KEY),
        _ => None,
    };
    match control {
        Some(inner) => serde_json::from_value(inner.clone())
            .map(|control| Some(Message::Control(control)))
            .map_err(|_| DecodeError::UnknownControl(inner.clone())),
        None => Ok(Some(Message::User(value))),
    }
}

/// Encodes a control message as one line, newline included.
pub fn encode_control(control: Control) -> Vec<u8> {
    let mut line = serde_json::to_vec(&serde_json::json!({ CONTROL_KEY: control }))
        .expect("a control message always serializes");
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let decoded = decode(&line[..line.len() - 1]).unwrap();
            assert_eq!(decoded, Some(Message::Control(control)));
        }
        assert_eq!(encode_control(Control::Ready), b"{\"corral\":\"ready\"}\n");
    }

    #[test]
    fn other_values_are_user_messages() {
        let decoded = decode(br#"{"cmd":"hi","corral":1}"#).unwrap();
        assert!(matches!(decoded, Some(Message::User(_))));
        assert!(matches!(decode(b"42").unwrap(), Some(Message::User(_))));
        assert_eq!(decode(b"  \r").unwrap(), None);
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert!(matches!(decode(b"{nope"), Err(DecodeError::NotJson(_))));
        assert!(matches!(
            decode(br#"{"corral":"explode"}"#),
            Err(DecodeError::UnknownControl(_))
        ));
    }
}
