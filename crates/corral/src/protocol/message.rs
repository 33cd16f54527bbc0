//! The message protocol on `CORRAL_IPC_FD`: newline-delimited JSON, one value
//! a line, both ways, so that a worker in any language can speak it (it is
//! the framing of Node's `NODE_CHANNEL_FD` in `json` mode). A value of the
//! form `{"corral": …}` is corral's own; any other value is a user message.
//!
//! Each direction has its own type, so a reader only ever sees what may
//! come its way ([`ToPrimary`], [`ToWorker`]):
//! * worker → primary: `{"corral":"online"}`, `"ready"`, `"heartbeat"` (see
//!   [`Control`]); `{"corral":{"to":ID,"message":VALUE}}` (deliver VALUE to
//!   worker ID); `{"corral":{"served":N}}` (N more requests served, which
//!   `--max-requests` counts); `{"corral":{"closed":N}}` (N more
//!   connections closed, which least-connections steered in the kernel
//!   counts);
//! * primary → worker: `{"corral":"stop"}`; `{"corral":{"from":ID,"message":VALUE}}`
//!   (VALUE, sent by worker ID).
//!
//! corral's own words never wait behind user messages: both ends queue them
//! on a lane of their own and write them first (`lines::write_lines`), and
//! the primary's stop also goes out as SIGTERM, which no full queue can hold
//! back.

use crate::protocol::envelope::{self, UserMessage, WorkerLine};
use crate::protocol::lines::json_line;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// The key that marks corral's own messages.
pub(crate) const CONTROL_KEY: &str = "corral";

/// A worker's control words to the primary, written `{"corral":"ready"}`
/// and so on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Control {
    /// The worker runs and reads its channel.
    Online,
    /// The worker serves (and, under a hand-off policy, reads its hand-off
    /// channel).
    Ready,
    /// The worker's event loop is alive.
    Heartbeat,
}

/// The primary's one control word: stop taking new work, finish what is in
/// flight, exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Stop {
    Stop,
}

/// One decoded line from a worker, borrowed from the line: no message's
/// value is built ([`envelope`]).
#[derive(Debug)]
pub(crate) enum ToPrimary<'a> {
    /// A control word.
    Control(Control),
    /// Deliver `message` (its JSON text, checked) to worker `to`.
    SendTo { to: u32, message: &'a RawValue },
    /// The worker served `count` more requests.
    Served { count: u64 },
    /// The worker closed `count` more connections.
    Closed { count: u64 },
    /// Anything else: the user's own message.
    User(UserMessage<'a>),
}

/// One line from the primary, decoded without building a user message's
/// value: the worker parses it into whatever type its user asks for.
#[derive(Debug)]
pub(crate) enum ToWorkerRaw<'a> {
    /// Stop taking new work, finish what is in flight, exit.
    Stop,
    /// `message` (its JSON text), sent by worker `from`.
    From { from: u32, message: Box<RawValue> },
    /// The user's own message from the primary: the line, one JSON value.
    User(&'a [u8]),
}

/// One decoded line from the primary.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ToWorker {
    /// Stop taking new work, finish what is in flight, exit.
    Stop,
    /// `message`, sent by worker `from`.
    From { from: u32, message: Value },
    /// Anything else: the user's own message, from the primary.
    User(Value),
}

/// The counts under the `corral` key, worker → primary (the relay request
/// is [`RawSendTo`]).
#[derive(Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
enum WorkerEnvelope {
    Served { served: u64 },
    Closed { closed: u64 },
}

/// A relay request's envelope, its message kept as JSON text.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSendTo<'a> {
    to: u32,
    #[serde(borrow)]
    message: &'a RawValue,
}

/// The object form under the `corral` key, primary → worker.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FromEnvelope {
    from: u32,
    message: Value,
}

/// A relayed message's line, its message kept as JSON text.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFromLine {
    corral: RawFromEnvelope,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFromEnvelope {
    from: u32,
    message: Box<RawValue>,
}

/// A worker's relay request as written, its message serialized in place.
#[derive(Serialize)]
struct SendToLine<'a, T: ?Sized> {
    corral: SendToEnvelope<'a, T>,
}

#[derive(Serialize)]
struct SendToEnvelope<'a, T: ?Sized> {
    to: u32,
    message: &'a T,
}

const TO_PRIMARY_FORMS: &str = "\"online\", \"ready\", \"heartbeat\", \
     {\"to\":ID,\"message\":…}, {\"served\":N} or {\"closed\":N}";
const TO_WORKER_FORMS: &str = "\"stop\" or {\"from\":ID,\"message\":…}";

/// Why a line could not be decoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("not a JSON value: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("unknown corral message {found} (expected {expected})")]
    UnknownControl {
        /// The start of what was found ([`shown`]).
        found: String,
        expected: &'static str,
    },
}

/// The most bytes of a worker's message shown in a log line: a message can
/// be as long as `--max-message-size` (16 MiB by default), and a line per
/// message would let a worker fill the log at that size.
pub(crate) const MAX_SHOWN_BYTES: usize = 256;

/// `value` as JSON for a log line, cut as [`cut_for_log`] cuts.
pub(crate) fn shown(value: &Value) -> String {
    cut_for_log(value.to_string())
}

/// `text` (from a worker) cut after [`MAX_SHOWN_BYTES`], on a character
/// boundary, with the length it had.
pub(crate) fn cut_for_log(mut text: String) -> String {
    if text.len() > MAX_SHOWN_BYTES {
        let full = text.len();
        let end = (0..=MAX_SHOWN_BYTES)
            .rev()
            .find(|&end| text.is_char_boundary(end))
            .unwrap_or(0);
        text.truncate(end);
        text.push_str(&format!("… ({full} bytes)"));
    }
    text
}

/// Splits a line into corral's own part (the value under `corral`) or a
/// user message. Blank lines are `None`.
fn split(line: &[u8]) -> Result<Option<Result<Value, Value>>, DecodeError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let mut value: Value = serde_json::from_slice(line)?;
    let inner = match &mut value {
        Value::Object(map) if map.len() == 1 => map.remove(CONTROL_KEY),
        _ => None,
    };
    Ok(Some(inner.ok_or(value)))
}

/// Decodes one line a worker wrote (without its newline), in one pass
/// over its bytes ([`envelope::read`]): a user message stays its text,
/// a relayed one its JSON text.
pub(crate) fn decode_to_primary(line: &[u8]) -> Result<Option<ToPrimary<'_>>, DecodeError> {
    match envelope::read(line)? {
        WorkerLine::Blank => Ok(None),
        WorkerLine::User(user) => Ok(Some(ToPrimary::User(user))),
        WorkerLine::Control(inner) => decode_worker_word(inner).map(Some),
    }
}

/// Decodes what a worker wrote under the `corral` key. The relay request
/// comes first: it is the one a busy worker sends per message.
fn decode_worker_word(inner: &RawValue) -> Result<ToPrimary<'_>, DecodeError> {
    let text = inner.get();
    if let Ok(RawSendTo { to, message }) = serde_json::from_str(text) {
        envelope::checked(message.get())?;
        return Ok(ToPrimary::SendTo { to, message });
    }
    if let Ok(control) = serde_json::from_str::<Control>(text) {
        return Ok(ToPrimary::Control(control));
    }
    match serde_json::from_str::<WorkerEnvelope>(text) {
        Ok(WorkerEnvelope::Served { served }) => Ok(ToPrimary::Served { count: served }),
        Ok(WorkerEnvelope::Closed { closed }) => Ok(ToPrimary::Closed { count: closed }),
        _ => {
            envelope::checked(text)?;
            Err(DecodeError::UnknownControl {
                found: cut_for_log(text.to_owned()),
                expected: TO_PRIMARY_FORMS,
            })
        }
    }
}

/// Decodes one line the primary wrote (without its newline).
pub(crate) fn decode_to_worker(line: &[u8]) -> Result<Option<ToWorker>, DecodeError> {
    let inner = match split(line)? {
        None => return Ok(None),
        Some(Err(user)) => return Ok(Some(ToWorker::User(user))),
        Some(Ok(inner)) => inner,
    };
    if Stop::deserialize(&inner).is_ok() {
        return Ok(Some(ToWorker::Stop));
    }
    match FromEnvelope::deserialize(&inner) {
        Ok(FromEnvelope { from, message }) => Ok(Some(ToWorker::From { from, message })),
        Err(_) => Err(DecodeError::UnknownControl {
            found: shown(&inner),
            expected: TO_WORKER_FORMS,
        }),
    }
}

/// Decodes one line the primary wrote (without its newline), leaving a
/// user message as the line's bytes and a relayed one as its JSON text.
pub(crate) fn decode_to_worker_raw(line: &[u8]) -> Result<Option<ToWorkerRaw<'_>>, DecodeError> {
    // Unchecked: the worker parses a user message whole next.
    match envelope::read_unchecked(line)? {
        WorkerLine::Blank => Ok(None),
        WorkerLine::User(_) => Ok(Some(ToWorkerRaw::User(line))),
        WorkerLine::Control(_) => {
            if let Ok(RawFromLine { corral }) = serde_json::from_slice(line) {
                let (from, message) = (corral.from, corral.message);
                return Ok(Some(ToWorkerRaw::From { from, message }));
            }
            // The rare words (stop) and the errors, as the value decoder
            // tells them.
            match decode_to_worker(line)? {
                Some(ToWorker::Stop) => Ok(Some(ToWorkerRaw::Stop)),
                Some(ToWorker::From { from, message }) => Ok(Some(ToWorkerRaw::From {
                    from,
                    message: serde_json::value::to_raw_value(&message)?,
                })),
                Some(ToWorker::User(_)) => Ok(Some(ToWorkerRaw::User(line))),
                None => Ok(None),
            }
        }
    }
}

/// Encodes a worker's control word as one line, newline included.
pub(crate) fn encode_control(control: Control) -> Vec<u8> {
    json_line(&serde_json::json!({ CONTROL_KEY: control }))
}

/// Encodes the primary's stop word as one line, newline included.
pub(crate) fn encode_stop() -> Vec<u8> {
    json_line(&serde_json::json!({ CONTROL_KEY: Stop::Stop }))
}

/// Encodes a user message as one line, newline included.
pub(crate) fn encode_user<T: Serialize + ?Sized>(message: &T) -> serde_json::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec(message)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Encodes a worker's request to deliver `message` to worker `to`.
pub(crate) fn encode_send_to<T: Serialize + ?Sized>(
    to: u32,
    message: &T,
) -> serde_json::Result<Vec<u8>> {
    encode_user(&SendToLine {
        corral: SendToEnvelope { to, message },
    })
}

/// Encodes a worker's report of `count` more connections closed.
pub(crate) fn encode_closed(count: u64) -> Vec<u8> {
    json_line(&serde_json::json!({ CONTROL_KEY: WorkerEnvelope::Closed { closed: count } }))
}

/// Encodes a worker's report of `count` more requests served.
pub(crate) fn encode_served(count: u64) -> Vec<u8> {
    json_line(&serde_json::json!({ CONTROL_KEY: WorkerEnvelope::Served { served: count } }))
}

/// Encodes `message` (JSON text) as the primary delivers it from worker
/// `from`: the text is copied as it is, never parsed again.
pub(crate) fn encode_from(from: u32, message: &RawValue) -> Vec<u8> {
    let line = FromLine {
        corral: FromEnvelopeRef { from, message },
    };
    encode_user(&line).expect("JSON text always serializes")
}

/// A relayed message's line as the primary writes it.
#[derive(Serialize)]
struct FromLine<'a> {
    corral: FromEnvelopeRef<'a>,
}

#[derive(Serialize)]
struct FromEnvelopeRef<'a> {
    from: u32,
    message: &'a RawValue,
}

/// The longest line of corral's own words a worker sends (its ready,
/// heartbeat and served reports), newline included: the primary must read
/// lines at least this long, or a worker could never say it is ready.
#[cfg(test)]
pub(crate) fn longest_control_line() -> usize {
    [Control::Online, Control::Ready, Control::Heartbeat]
        .into_iter()
        .map(|control| encode_control(control).len())
        .chain([encode_served(u64::MAX).len(), encode_closed(u64::MAX).len()])
        .max()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A decoded line with its messages as values, to compare.
    #[derive(Debug, PartialEq)]
    enum Decoded {
        Control(Control),
        SendTo { to: u32, message: Value },
        Served { count: u64 },
        Closed { count: u64 },
        User(Value),
    }

    fn decoded(line: &[u8]) -> Result<Option<Decoded>, DecodeError> {
        let value = |text: &[u8]| serde_json::from_slice::<Value>(text).unwrap();
        Ok(decode_to_primary(line)?.map(|decoded| match decoded {
            ToPrimary::Control(control) => Decoded::Control(control),
            ToPrimary::SendTo { to, message } => Decoded::SendTo {
                to,
                message: value(message.get().as_bytes()),
            },
            ToPrimary::Served { count } => Decoded::Served { count },
            ToPrimary::Closed { count } => Decoded::Closed { count },
            ToPrimary::User(user) => Decoded::User(value(user.text)),
        }))
    }

    /// `encode_from` of a value.
    fn from_line(from: u32, message: &Value) -> Vec<u8> {
        encode_from(from, &serde_json::value::to_raw_value(message).unwrap())
    }

    #[test]
    fn the_longest_control_line_is_a_served_report() {
        assert_eq!(
            longest_control_line(),
            "{\"corral\":{\"served\":18446744073709551615}}\n".len()
        );
    }

    fn without_newline(line: &[u8]) -> &[u8] {
        assert_eq!(line.last(), Some(&b'\n'), "every encoded line ends a line");
        &line[..line.len() - 1]
    }

    #[test]
    fn a_long_message_is_shown_cut_with_its_length() {
        assert_eq!(shown(&Value::from("hi")), "\"hi\"");
        let long = Value::from("é".repeat(10_000));
        let text = shown(&long);
        assert!(text.len() <= MAX_SHOWN_BYTES + 20, "{}", text.len());
        assert!(text.ends_with("… (20002 bytes)"), "{text}");
        let line = format!("{{\"corral\":{long}}}");
        let err = decode_to_primary(line.as_bytes()).unwrap_err().to_string();
        assert!(
            err.len() < 600,
            "the error quotes at most the start: {}",
            err.len()
        );
    }

    #[test]
    fn control_words_round_trip_in_their_direction() {
        for control in [Control::Online, Control::Ready, Control::Heartbeat] {
            let line = encode_control(control);
            assert_eq!(
                decoded(without_newline(&line)).unwrap(),
                Some(Decoded::Control(control))
            );
        }
        assert_eq!(encode_control(Control::Ready), b"{\"corral\":\"ready\"}\n");
        assert_eq!(encode_stop(), b"{\"corral\":\"stop\"}\n");
        assert_eq!(
            decode_to_worker(without_newline(&encode_stop())).unwrap(),
            Some(ToWorker::Stop)
        );
    }

    #[test]
    fn words_of_the_other_direction_are_refused() {
        // A worker cannot stop the primary, nor claim a message's sender.
        for line in [encode_stop(), from_line(2, &Value::from(1))] {
            assert!(matches!(
                decode_to_primary(without_newline(&line)),
                Err(DecodeError::UnknownControl { expected, .. }) if expected == TO_PRIMARY_FORMS
            ));
        }
        // The primary sends none of a worker's words.
        for line in [
            encode_control(Control::Ready),
            encode_served(3),
            encode_send_to(1, &"x").unwrap(),
        ] {
            assert!(matches!(
                decode_to_worker(without_newline(&line)),
                Err(DecodeError::UnknownControl { expected, .. }) if expected == TO_WORKER_FORMS
            ));
        }
    }

    #[test]
    fn relays_and_counts_round_trip() {
        let payload = serde_json::json!({"cache": "flush", "keys": [1, 2]});
        let line = encode_send_to(3, &payload).unwrap();
        assert_eq!(
            decoded(without_newline(&line)).unwrap(),
            Some(Decoded::SendTo {
                to: 3,
                message: payload.clone()
            })
        );
        let line = from_line(2, &payload);
        assert_eq!(
            decode_to_worker(without_newline(&line)).unwrap(),
            Some(ToWorker::From {
                from: 2,
                message: payload
            })
        );
        assert_eq!(
            decoded(without_newline(&encode_served(7))).unwrap(),
            Some(Decoded::Served { count: 7 })
        );
        assert_eq!(
            decoded(without_newline(&encode_closed(4))).unwrap(),
            Some(Decoded::Closed { count: 4 })
        );
    }

    #[test]
    fn a_relayed_message_keeps_its_text_byte_for_byte() {
        let line = br#"{"corral":{"to":1,"message":{"b": 1,  "a":[1.0e2, "\u00e9"]}}}"#;
        let Ok(Some(ToPrimary::SendTo { to: 1, message })) = decode_to_primary(line) else {
            panic!("not a relay");
        };
        assert_eq!(
            encode_from(2, message),
            br#"{"corral":{"from":2,"message":{"b": 1,  "a":[1.0e2, "\u00e9"]}}}
"#
        );
    }

    #[test]
    fn a_relay_request_whose_message_value_would_refuse_is_refused() {
        let lone_surrogate = br#"{"corral":{"to":1,"message":"\ud800"}}"#;
        assert!(matches!(
            decode_to_primary(lone_surrogate),
            Err(DecodeError::NotJson(_))
        ));
    }

    #[test]
    fn the_raw_decoder_leaves_user_messages_as_text() {
        let line = br#"{"seq":7,"corral":1}"#;
        assert!(matches!(
            decode_to_worker_raw(line).unwrap(),
            Some(ToWorkerRaw::User(text)) if text == line
        ));
        let relayed = from_line(2, &serde_json::json!({"a": [1, 2]}));
        match decode_to_worker_raw(without_newline(&relayed)).unwrap() {
            Some(ToWorkerRaw::From { from, message }) => {
                assert_eq!(from, 2);
                assert_eq!(message.get(), r#"{"a":[1,2]}"#);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode_to_worker_raw(without_newline(&encode_stop())).unwrap(),
            Some(ToWorkerRaw::Stop)
        ));
        assert!(decode_to_worker_raw(b" ").unwrap().is_none());
        assert!(matches!(
            decode_to_worker_raw(br#"{"corral":"explode"}"#),
            Err(DecodeError::UnknownControl { .. })
        ));
        assert!(matches!(
            decode_to_worker_raw(b"{nope"),
            Err(DecodeError::NotJson(_))
        ));
    }

    #[test]
    fn other_values_are_user_messages() {
        let user = decode_to_primary(br#"{"cmd":"hi","corral":1}"#).unwrap();
        assert!(matches!(user, Some(ToPrimary::User(_))));
        assert!(matches!(
            decode_to_worker(b"42").unwrap(),
            Some(ToWorker::User(_))
        ));
        assert_eq!(
            decoded(b"\"ready\"").unwrap(),
            Some(Decoded::User(Value::from("ready")))
        );
        assert_eq!(decoded(b"  \r").unwrap(), None);
        assert_eq!(decode_to_worker(b"").unwrap(), None);
        let line = encode_user(&vec!["a", "b"]).unwrap();
        assert_eq!(line, b"[\"a\",\"b\"]\n");
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert!(matches!(
            decode_to_primary(b"{nope"),
            Err(DecodeError::NotJson(_))
        ));
        for bad in [
            &br#"{"corral":"explode"}"#[..],
            br#"{"corral":{"to":"x","message":1}}"#,
            br#"{"corral":{"to":1}}"#,
            br#"{"corral":{"to":1,"message":2,"extra":3}}"#,
            br#"{"corral":7}"#,
            // A repeated key in corral's own words is refused, not guessed.
            br#"{"corral":{"to":1,"to":2,"message":3}}"#,
            br#"{"corral":{"to":1,"message":3,"message":4}}"#,
        ] {
            assert!(
                matches!(
                    decode_to_primary(bad),
                    Err(DecodeError::UnknownControl { .. })
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            decode_to_worker(br#"{"corral":{"from":1,"message":2,"extra":3}}"#),
            Err(DecodeError::UnknownControl { .. })
        ));
    }

    /// Arbitrary JSON values, a few levels deep.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".*".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..6)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    // The two cases the property tests once found (when they lived in
    // tests/fuzz_message_decoder.rs): large floats lost their last digit
    // before serde_json's `float_roundtrip`.
    #[test]
    fn large_floats_round_trip_exactly() {
        let relayed = serde_json::json!([5.563298669671764e251]);
        let line = encode_send_to(0, &relayed).unwrap();
        assert_eq!(
            decoded(without_newline(&line)).unwrap(),
            Some(Decoded::SendTo {
                to: 0,
                message: relayed
            })
        );
        let user = serde_json::json!({"": [-1.0883759407563133e266]});
        let line = encode_user(&user).unwrap();
        assert_eq!(
            decoded(without_newline(&line)).unwrap(),
            Some(Decoded::User(user))
        );
    }

    // Whatever bytes the other end writes, decoding returns a value or an
    // error, never panics; everything corral encodes decodes back to what
    // was encoded. Run longer with `PROPTEST_CASES=100000 cargo test -p
    // corral --lib message`.
    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_to_primary(&bytes);
            let _ = decode_to_worker(&bytes);
        }

        #[test]
        fn arbitrary_text_under_the_corral_key_never_panics(text in ".{0,64}") {
            let line = format!("{{\"corral\":{text}}}");
            let _ = decode_to_primary(line.as_bytes());
            let _ = decode_to_worker(line.as_bytes());
        }

        #[test]
        fn user_messages_round_trip(value in json_value()) {
            let line = encode_user(&value).unwrap();
            prop_assert!(!without_newline(&line).contains(&b'\n'), "one line per message");
            match decoded(without_newline(&line)) {
                Ok(Some(Decoded::User(decoded))) => prop_assert_eq!(decoded, value),
                // A user value that is itself {"corral": …} is corral's own.
                _ => prop_assert!(value.get(CONTROL_KEY).is_some()),
            }
        }

        #[test]
        fn relays_round_trip(to in any::<u32>(), value in json_value()) {
            let line = encode_send_to(to, &value).unwrap();
            let decoded = decoded(without_newline(&line)).unwrap();
            prop_assert_eq!(decoded, Some(Decoded::SendTo { to, message: value.clone() }));
            let line = from_line(to, &value);
            let decoded = decode_to_worker(without_newline(&line)).unwrap();
            prop_assert_eq!(decoded, Some(ToWorker::From { from: to, message: value }));
        }
    }
}
