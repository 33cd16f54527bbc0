//! Property-based fuzzing of the channel's message decoder: whatever bytes a
//! worker writes, decoding returns a value or an error, never panics; and
//! everything corral encodes decodes back to what was encoded.
//!
//! Run longer with `PROPTEST_CASES=100000 cargo test -p corral --test fuzz_message_decoder`.

use corral::message::{self, Control, Message};
use proptest::prelude::*;
use serde_json::Value;

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

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = message::decode(&bytes);
    }

    #[test]
    fn arbitrary_text_under_the_corral_key_never_panics(text in ".{0,64}") {
        let line = format!("{{\"corral\":{text}}}");
        let _ = message::decode(line.as_bytes());
    }

    #[test]
    fn user_messages_round_trip(value in json_value()) {
        let line = message::encode_user(&value).unwrap();
        prop_assert_eq!(line.last(), Some(&b'\n'));
        prop_assert!(!line[..line.len() - 1].contains(&b'\n'), "one line per message");
        match message::decode(&line[..line.len() - 1]).unwrap() {
            Some(Message::User(decoded)) => prop_assert_eq!(decoded, value),
            // A user value that is itself {"corral": …} is corral's own.
            Some(_) => prop_assert!(value.get("corral").is_some()),
            None => prop_assert!(false, "a value decodes to something"),
        }
    }

    #[test]
    fn relays_round_trip(to in any::<u32>(), value in json_value()) {
        let line = message::encode_send_to(to, &value).unwrap();
        let decoded = message::decode(&line[..line.len() - 1]).unwrap();
        prop_assert_eq!(decoded, Some(Message::SendTo { to, message: value.clone() }));
        let line = message::encode_from(to, value.clone());
        let decoded = message::decode(&line[..line.len() - 1]).unwrap();
        prop_assert_eq!(decoded, Some(Message::From { from: to, message: value }));
    }
}

#[test]
fn control_words_decode() {
    for control in [
        Control::Online,
        Control::Ready,
        Control::Heartbeat,
        Control::Stop,
    ] {
        let line = message::encode_control(control);
        let decoded = message::decode(&line[..line.len() - 1]).unwrap();
        assert_eq!(decoded, Some(Message::Control(control)));
    }
}
