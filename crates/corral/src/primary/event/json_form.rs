//! How event fields serialize in the JSON form: durations as whole
//! milliseconds, signals by name.

use std::time::Duration;

use serde::Serializer;

use super::readable::signal_name;

pub(super) fn as_ms<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// A signal by its name (`SIGKILL`), as `signal_name` gives it.
pub(super) fn signal_as_name<S: Serializer>(
    signal: &impl SignalNumber,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match signal.number() {
        Some(number) => serializer.serialize_str(&signal_name(number)),
        None => serializer.serialize_none(),
    }
}

/// A signal field, present or not.
pub(super) trait SignalNumber {
    fn number(&self) -> Option<i32>;
}

impl SignalNumber for i32 {
    fn number(&self) -> Option<i32> {
        Some(*self)
    }
}

impl SignalNumber for Option<i32> {
    fn number(&self) -> Option<i32> {
        *self
    }
}
