//! What the primary reads of one line a worker wrote, in one pass over its
//! bytes and without building the line's value (a worker tells the
//! primary's lines apart with it too): whether it is corral's own
//! word (`{"corral": …}`, the JSON text under the key kept as it is) or a
//! user message, and of a user message only the few top-level fields the
//! primary routes by (Node's `cmd`, socket.io's `source`, `type`,
//! `requesterUid` and `uid`, prom-client's `type`), borrowed from the line.
//!
//! The line is still checked whole, exactly as `serde_json::Value` would
//! check it: every string is unescaped and validated (UTF-8, surrogate
//! pairs) and every number parsed, by walking it with
//! `deserialize_any` ([`Checked`]) rather than serde's `IgnoredAny` (which
//! skips strings unchecked). So a line the primary passes on as its bytes
//! (a relay, a broadcast) is one a `Value` parse would have accepted, and
//! nothing is allocated unless a routed field has escapes in it.
//!
//! Fields read as `Value::get(…).as_str()` / `.as_u64()` read them: a
//! field of another type is absent, and a repeated key counts once, its
//! last value (so a worker cannot make corral route a message by one value
//! and its receiver read another).

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::protocol::message::CONTROL_KEY;

/// One line from a worker (or, read by a worker, from the primary).
#[derive(Debug)]
pub(crate) enum WorkerLine<'a> {
    /// Whitespace only.
    Blank,
    /// `{"corral": …}`: the JSON text under the key, not checked yet
    /// (its decoder does: [`checked`]).
    Control(&'a RawValue),
    /// Any other JSON value: the user's.
    User(UserMessage<'a>),
}

/// A user message: its JSON text, checked, and what it is routed by.
#[derive(Debug, Clone)]
pub(crate) struct UserMessage<'a> {
    /// The line as the worker wrote it (one JSON value, without newline).
    pub text: &'a [u8],
    pub fields: Fields<'a>,
}

/// The top-level fields a user message is routed by.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Fields<'a> {
    /// The message itself, when it is a string (pm2's `"ready"`).
    pub word: Option<Cow<'a, str>>,
    /// `cmd` (Node's own messages start with `NODE_`).
    pub cmd: Option<Cow<'a, str>>,
    /// `source` (`"_sio_adapter"`: socket.io's cluster adapter).
    pub source: Option<Cow<'a, str>>,
    /// `type`: a string (prom-client) or a number (socket.io).
    pub kind: Scalar<'a>,
    /// `requesterUid` (socket.io).
    pub requester_uid: Option<Cow<'a, str>>,
    /// `uid` (socket.io).
    pub uid: Option<Cow<'a, str>>,
}

/// A field that may be a string or a whole number; anything else is
/// `Other`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) enum Scalar<'a> {
    Str(Cow<'a, str>),
    Unsigned(u64),
    #[default]
    Other,
}

impl Scalar<'_> {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Scalar::Str(text) => Some(text),
            _ => None,
        }
    }

    pub(crate) fn as_u64(&self) -> Option<u64> {
        match self {
            Scalar::Unsigned(number) => Some(*number),
            _ => None,
        }
    }
}

/// Reads `line` (one JSON value, whitespace around it allowed); an error if
/// it is not one, or if a `Value` parse would refuse it.
pub(crate) fn read(line: &[u8]) -> serde_json::Result<WorkerLine<'_>> {
    read_with::<true>(line)
}

/// [`read`], but the parts no field is read from are skipped, not
/// checked (serde's `IgnoredAny`): for a worker, which parses a user
/// message whole next, and so checks it then.
pub(crate) fn read_unchecked(line: &[u8]) -> serde_json::Result<WorkerLine<'_>> {
    read_with::<false>(line)
}

fn read_with<const CHECKED: bool>(line: &[u8]) -> serde_json::Result<WorkerLine<'_>> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(WorkerLine::Blank);
    }
    let Read::<CHECKED>(read) = serde_json::from_slice(line)?;
    Ok(match read {
        ReadLine::Control(raw) => WorkerLine::Control(raw),
        ReadLine::User(fields) => WorkerLine::User(UserMessage { text: line, fields }),
    })
}

/// Reads `text` (one JSON value) as a user message whatever its shape: a
/// message that came wrapped (Node's `NODE_HANDLE`) is the user's even if
/// it looks like corral's own word.
pub(crate) fn read_as_user(text: &[u8]) -> serde_json::Result<UserMessage<'_>> {
    Ok(match read(text)? {
        WorkerLine::User(user) => user,
        WorkerLine::Blank | WorkerLine::Control(_) => UserMessage {
            text,
            fields: Fields::default(),
        },
    })
}

/// Checks `text` as a `Value` parse would, without building one.
pub(crate) fn checked(text: &str) -> serde_json::Result<()> {
    serde_json::from_str::<Checked>(text).map(|_| ())
}

/// What the one pass found.
enum ReadLine<'a> {
    Control(&'a RawValue),
    User(Fields<'a>),
}

struct Read<'a, const CHECKED: bool>(ReadLine<'a>);

impl<'de, const CHECKED: bool> Deserialize<'de> for Read<'de, CHECKED> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(LineVisitor::<CHECKED>)
            .map(Read)
    }
}

/// Reads a line's value; with `CHECKED`, checks all of it.
struct LineVisitor<const CHECKED: bool>;

/// Skips the next value of `map`, checked if `CHECKED`.
fn skip_value<'de, A: MapAccess<'de>, const CHECKED: bool>(map: &mut A) -> Result<(), A::Error> {
    if CHECKED {
        map.next_value::<Checked>().map(drop)
    } else {
        map.next_value::<IgnoredAny>().map(drop)
    }
}

impl<'de, const CHECKED: bool> Visitor<'de> for LineVisitor<CHECKED> {
    type Value = ReadLine<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(ReadLine::User(Fields::default()))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(ReadLine::User(Fields::default()))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(ReadLine::User(Fields::default()))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(ReadLine::User(Fields::default()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(ReadLine::User(Fields::default()))
    }

    fn visit_borrowed_str<E: de::Error>(self, word: &'de str) -> Result<Self::Value, E> {
        let word = Some(Cow::Borrowed(word));
        Ok(ReadLine::User(Fields {
            word,
            ..Fields::default()
        }))
    }

    fn visit_str<E: de::Error>(self, word: &str) -> Result<Self::Value, E> {
        let word = Some(Cow::Owned(word.to_owned()));
        Ok(ReadLine::User(Fields {
            word,
            ..Fields::default()
        }))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        if CHECKED {
            CheckedVisitor.visit_seq(seq)?;
        } else {
            IgnoredAny.visit_seq(seq)?;
        }
        Ok(ReadLine::User(Fields::default()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields::default();
        let mut control: Option<&'de RawValue> = None;
        let mut other_key = false;
        while let Some(Key(key)) = map.next_key()? {
            other_key |= key != CONTROL_KEY;
            match &*key {
                CONTROL_KEY => control = Some(map.next_value()?),
                "cmd" => fields.cmd = map.next_value::<Text>()?.0,
                "source" => fields.source = map.next_value::<Text>()?.0,
                "type" => fields.kind = map.next_value()?,
                "requesterUid" => fields.requester_uid = map.next_value::<Text>()?.0,
                "uid" => fields.uid = map.next_value::<Text>()?.0,
                _ => skip_value::<A, CHECKED>(&mut map)?,
            }
        }
        Ok(match control {
            Some(raw) if !other_key => ReadLine::Control(raw),
            // A user object with a `corral` key beside others: its value
            // must pass as any other's.
            Some(raw) => {
                if CHECKED {
                    checked(raw.get()).map_err(de::Error::custom)?;
                }
                ReadLine::User(fields)
            }
            None => ReadLine::User(fields),
        })
    }
}

/// An object key, borrowed from the line unless it has escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_str(TextVisitor)
            .map(|text| Key(text.unwrap_or_default()))
    }
}

/// A field read as `Value::as_str` reads it: a string, or `None` for any
/// other (checked) value.
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor).map(Text)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(text)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(text.to_owned())))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        CheckedVisitor.visit_seq(seq).map(|_| None)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        CheckedVisitor.visit_map(map).map(|_| None)
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_u64<E: de::Error>(self, number: u64) -> Result<Self::Value, E> {
        Ok(Scalar::Unsigned(number))
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(text)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(text.to_owned())))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        CheckedVisitor.visit_seq(seq).map(|_| Scalar::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        CheckedVisitor.visit_map(map).map(|_| Scalar::Other)
    }
}

/// Any JSON value, checked as `Value` checks it and then forgotten.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_key::<Checked>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// What `Value` makes of `line`, the reference.
    fn by_value(line: &[u8]) -> Option<Value> {
        serde_json::from_slice(line).ok()
    }

    fn user(line: &[u8]) -> Fields<'_> {
        match read(line) {
            Ok(WorkerLine::User(user)) => {
                assert_eq!(user.text, line);
                user.fields
            }
            other => panic!("{}: {other:?}", String::from_utf8_lossy(line)),
        }
    }

    #[test]
    fn control_lines_and_user_messages_are_told_apart_as_by_value() {
        for line in [
            &br#"{"corral":"ready"}"#[..],
            br#" { "corral" : {"to": 2, "message": [1, {"corral": 1}]} } "#,
            br#"{"corral":1,"corral":2}"#,
            br#"{"\u0063orral":"stop"}"#,
            br#"{"corral":1,"cmd":"hi"}"#,
            br#"{"cmd":{"corral":"ready"}}"#,
            br#"{}"#,
            br#"[{"corral":"ready"}]"#,
            br#""corral""#,
            b"42",
            b"-1.5e3",
            b"null",
            b"true",
        ] {
            let control = match by_value(line).unwrap() {
                Value::Object(map) => map.len() == 1 && map.contains_key(CONTROL_KEY),
                _ => false,
            };
            let read = read(line).unwrap();
            assert_eq!(
                matches!(read, WorkerLine::Control(_)),
                control,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        assert!(matches!(read(b"  \r").unwrap(), WorkerLine::Blank));
        assert!(matches!(read(b"").unwrap(), WorkerLine::Blank));
        // A repeated key's last value is the one kept, as in `Value`.
        let WorkerLine::Control(raw) = read(br#"{"corral":1,"corral":2}"#).unwrap() else {
            panic!("not control");
        };
        assert_eq!(raw.get(), "2");
    }

    #[test]
    fn routed_fields_are_read_as_value_reads_them() {
        let line =
            br#"{"source":"_sio_adapter","type":8,"requesterUid":"abc","uid":"x","data":[1]}"#;
        let fields = user(line);
        assert_eq!(fields.source.as_deref(), Some("_sio_adapter"));
        assert_eq!(fields.kind.as_u64(), Some(8));
        assert_eq!(fields.requester_uid.as_deref(), Some("abc"));
        assert_eq!(fields.uid.as_deref(), Some("x"));
        let fields = user(br#"{"type":"prom-client:getMetricsRes","requestId":1}"#);
        assert_eq!(fields.kind.as_str(), Some("prom-client:getMetricsRes"));
        assert_eq!(user(br#""ready""#).word.as_deref(), Some("ready"));
        // Escapes are undone, as in a `Value`.
        assert_eq!(
            user(br#"{"\u0063md":"NODE_\u0043LUSTER"}"#).cmd.as_deref(),
            Some("NODE_CLUSTER")
        );
        assert_eq!(user(br#""re\u0061dy""#).word.as_deref(), Some("ready"));
    }

    #[test]
    fn fields_of_the_wrong_type_are_absent() {
        for line in [
            &br#"{"cmd":1,"source":["_sio_adapter"],"type":-8,"uid":null,"requesterUid":{}}"#[..],
            br#"{"cmd":true,"source":{"a":"_sio_adapter"},"type":8.0,"uid":2.5}"#,
            br#"{"type":[8]}"#,
            br#"{"type":{"t":8}}"#,
            br#"[{"cmd":"NODE_CLUSTER"}]"#,
        ] {
            let fields = user(line);
            assert_eq!(fields.word, None);
            assert_eq!(fields.cmd, None);
            assert_eq!(fields.source, None);
            assert_eq!(fields.kind, Scalar::Other);
            assert_eq!(fields.uid, None);
            assert_eq!(fields.requester_uid, None);
        }
        // Only top-level fields count.
        assert_eq!(user(br#"{"a":{"cmd":"NODE_CLUSTER"}}"#).cmd, None);
    }

    #[test]
    fn a_repeated_key_routes_by_its_last_value_as_its_receiver_reads_it() {
        let line = br#"{"source":"_sio_adapter","source":"mine","cmd":"NODE_X","cmd":"hi"}"#;
        let fields = user(line);
        let value = by_value(line).unwrap();
        assert_eq!(fields.source.as_deref(), value["source"].as_str());
        assert_eq!(fields.cmd.as_deref(), value["cmd"].as_str());
        assert_eq!(fields.source.as_deref(), Some("mine"));
    }

    #[test]
    fn what_value_refuses_is_refused() {
        for bad in [
            &b"{nope"[..],
            b"{\"a\":1} 2",
            b"[1,",
            b"\"unterminated",
            b"{\"corral\":}",
            // A lone surrogate and invalid UTF-8, in a routed field, in
            // an ignored one, nested, beside `corral`, and as a key.
            br#"{"cmd":"\ud800"}"#,
            br#"{"data":"\udfff x"}"#,
            br#"{"data":[{"deep":"\ud800"}]}"#,
            br#"{"corral":"\ud800","cmd":1}"#,
            br#"{"\ud800":1}"#,
            b"{\"data\":\"\xff\xfe\"}",
            b"[\"\xc3\x28\"]",
            b"\"\xed\xa0\x80\"",
        ] {
            assert!(read(bad).is_err(), "{}", String::from_utf8_lossy(bad));
            assert_eq!(by_value(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        // So does a control line's text, once checked.
        let WorkerLine::Control(raw) = read(br#"{"corral":{"to":1,"message":"\ud800"}}"#).unwrap()
        else {
            panic!("not control");
        };
        assert!(checked(raw.get()).is_err());
    }

    #[test]
    fn the_unchecked_read_tells_the_same_kinds_apart() {
        for line in [
            &br#"{"corral":"stop"}"#[..],
            br#"{"corral":1,"seq":"\ud800"}"#,
            br#"{"seq":7}"#,
            br#"["\ud800"]"#,
            b"  ",
        ] {
            fn kind(read: &WorkerLine<'_>) -> u8 {
                match read {
                    WorkerLine::Blank => 0,
                    WorkerLine::Control(_) => 1,
                    WorkerLine::User(_) => 2,
                }
            }
            let unchecked = read_unchecked(line).unwrap();
            match read(line) {
                Ok(checked) => assert_eq!(kind(&checked), kind(&unchecked)),
                // Only what a `Value` would refuse differs.
                Err(_) => assert!(matches!(unchecked, WorkerLine::User(_))),
            }
        }
        assert!(read_unchecked(b"{nope").is_err());
    }

    #[test]
    fn deep_nesting_is_refused_as_by_value() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(read(deep.as_bytes()).is_err());
        assert!(by_value(deep.as_bytes()).is_none());
        let fine = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(read(fine.as_bytes()).is_ok());
    }

    #[test]
    fn any_json_value_reads_with_the_fields_value_finds() {
        for value in [
            json!({"cmd": "NODE_CLUSTER", "act": "online", "seq": 0}),
            json!({"type": 3, "source": "_sio_adapter", "data": {"x": [1, "two", null]}}),
            json!(["a", {"b": 1.5e300}]),
            json!(-7),
        ] {
            let line = serde_json::to_vec(&value).unwrap();
            let fields = user(&line);
            assert_eq!(
                fields.cmd.as_deref(),
                value.get("cmd").and_then(Value::as_str)
            );
            assert_eq!(
                fields.kind.as_u64(),
                value.get("type").and_then(Value::as_u64)
            );
        }
    }
}
