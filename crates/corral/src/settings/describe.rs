//! The settings as `corral check` prints them: each under its flag's name
//! (the field's, kebab-case), its value as the flag would take it.

use std::ffi::OsString;
use std::fmt::Display;
use std::time::Duration;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::Configuration;
use super::{BackoffPolicy, MessagePolicy};
use crate::control::ControlSocket;

impl Configuration {
    /// Every setting by its flag's name, with its value as text; `name` is
    /// the cluster's name as resolved (the default depends on the
    /// program). Nothing is left out: a test checks the names against the
    /// command line's flags.
    pub fn describe(&self, name: &str) -> Vec<(String, String)> {
        let mut described = self.clone();
        described.fixed.name = Some(name.to_string());
        let serde_json::Value::Object(map) =
            serde_json::to_value(&described).expect("settings serialize")
        else {
            unreachable!("settings serialize as a map");
        };
        map.into_iter()
            .map(|(key, value)| {
                let text = match (key.as_str(), &self.fixed.control) {
                    ("control", ControlSocket::Default) => {
                        crate::control::path::default_socket(name)
                            .display()
                            .to_string()
                    }
                    _ => text(value),
                };
                (key, text)
            })
            .collect()
    }
}

/// A value as text: `off` for none, a list comma-separated.
fn text(value: serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Null => "off".into(),
        Value::String(text) => text,
        Value::Array(items) => items.into_iter().map(text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

pub(super) fn seconds<S: Serializer>(duration: &Duration, to: S) -> Result<S::Ok, S::Error> {
    to.collect_str(&duration.as_secs_f64())
}

pub(super) fn optional_seconds<S: Serializer>(
    duration: &Option<Duration>,
    to: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => seconds(duration, to),
        None => to.serialize_none(),
    }
}

pub(super) fn display<S: Serializer>(value: &impl Display, to: S) -> Result<S::Ok, S::Error> {
    to.collect_str(value)
}

/// The backoff's two settings that have flags.
pub(super) fn backoff<S: Serializer>(backoff: &BackoffPolicy, to: S) -> Result<S::Ok, S::Error> {
    let mut map = to.serialize_map(Some(2))?;
    map.serialize_entry(
        "stable-after",
        &backoff.stable_after.as_secs_f64().to_string(),
    )?;
    map.serialize_entry("max-restart-delay", &backoff.cap.as_secs_f64().to_string())?;
    map.end()
}

/// `NAME=VALUE`, space-separated.
pub(super) fn variables<S: Serializer>(
    env: &[(OsString, OsString)],
    to: S,
) -> Result<S::Ok, S::Error> {
    let pairs: Vec<String> = env
        .iter()
        .map(|(key, value)| format!("{}={}", key.to_string_lossy(), value.to_string_lossy()))
        .collect();
    to.serialize_str(&pairs.join(" "))
}

/// `log` or `broadcast`, as `--on-message` names them; `off` when
/// messages are neither logged nor relayed.
pub(super) fn messages<S: Serializer>(policy: &MessagePolicy, to: S) -> Result<S::Ok, S::Error> {
    to.serialize_str(match (policy.log, policy.rebroadcast) {
        (_, true) => "broadcast",
        (true, false) => "log",
        (false, false) => "off",
    })
}

/// The threads of a worker's runtime: 1 (a current-thread runtime) unless
/// more were asked for.
pub(super) fn threads<S: Serializer>(threads: &Option<usize>, to: S) -> Result<S::Ok, S::Error> {
    threads.unwrap_or(1).serialize(to)
}

/// A path, `none`, or (the default) the path `describe` resolves.
pub(super) fn control<S: Serializer>(control: &ControlSocket, to: S) -> Result<S::Ok, S::Error> {
    match control {
        ControlSocket::Path(path) => to.collect_str(&path.display()),
        ControlSocket::Off => to.serialize_str("none"),
        ControlSocket::Default => to.serialize_none(),
    }
}

/// Paths, comma-separated; `off` for none.
pub(super) fn paths<S: Serializer>(paths: &[std::path::PathBuf], to: S) -> Result<S::Ok, S::Error> {
    if paths.is_empty() {
        return to.serialize_none();
    }
    let shown: Vec<String> = paths
        .iter()
        .map(|path| path.display().to_string())
        .collect();
    to.serialize_str(&shown.join(", "))
}

/// A switch, as its flag takes it: `on` or `off`.
pub(super) fn on_off<S: Serializer>(on: &bool, to: S) -> Result<S::Ok, S::Error> {
    to.serialize_str(if *on { "on" } else { "off" })
}
