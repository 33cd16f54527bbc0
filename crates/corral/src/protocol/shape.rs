//! Whether a line is corral's own word or a user message, found without
//! building the line's value: the check `{"corral": …}` (an object whose
//! one key is `corral`) walks the JSON with serde's `IgnoredAny`, which
//! allocates nothing, so a user message can then be parsed straight from
//! its bytes into the user's type.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::protocol::message::CONTROL_KEY;

/// What one line holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Whitespace only.
    Blank,
    /// `{"corral": …}`: corral's own.
    Control,
    /// Any other JSON value.
    User,
}

/// The shape of `line`, which must be one JSON value (with whitespace
/// around it, or none); an error if it is not.
pub(crate) fn shape(line: &[u8]) -> serde_json::Result<Shape> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(Shape::Blank);
    }
    let IsControl(control) = serde_json::from_slice(line)?;
    Ok(if control { Shape::Control } else { Shape::User })
}

/// Deserialized from a whole value: whether it is an object whose keys are
/// all `corral` (as `serde_json::Value` sees it, a repeated key counting
/// once).
struct IsControl(bool);

impl<'de> Deserialize<'de> for IsControl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(IsControlVisitor)
            .map(IsControl)
    }
}

struct IsControlVisitor;

impl<'de> Visitor<'de> for IsControlVisitor {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let (mut control_key, mut other_key) = (false, false);
        while let Some(IsControlKey(is_it)) = map.next_key()? {
            control_key |= is_it;
            other_key |= !is_it;
            map.next_value::<IgnoredAny>()?;
        }
        Ok(control_key && !other_key)
    }
}

/// An object key, compared with `corral` without being copied.
struct IsControlKey(bool);

impl<'de> Deserialize<'de> for IsControlKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor).map(IsControlKey)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == CONTROL_KEY)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// What parsing the whole value says, for comparison.
    fn shape_by_value(line: &[u8]) -> Option<Shape> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Some(Shape::Blank);
        }
        let value: Value = serde_json::from_slice(line).ok()?;
        Some(match value {
            Value::Object(map) if map.len() == 1 && map.contains_key(CONTROL_KEY) => Shape::Control,
            _ => Shape::User,
        })
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
            b"  \r",
            b"",
        ] {
            assert_eq!(
                shape(line).ok(),
                shape_by_value(line),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn what_is_not_one_json_value_is_an_error() {
        for bad in [
            &b"{nope"[..],
            b"{\"a\":1} 2",
            b"[1,",
            b"\"unterminated",
            b"{\"corral\":}",
        ] {
            assert!(shape(bad).is_err(), "{}", String::from_utf8_lossy(bad));
            assert_eq!(shape_by_value(bad), None);
        }
    }
}
