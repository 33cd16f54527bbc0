//! corral's Node agent (`agent.js`, shipped inside the binary): written
//! once to a file the workers can read, and loaded into each Node worker
//! with `NODE_OPTIONS=--require FILE` (docs/node.md, "Keep-alive and
//! reloads").
//!
//! The file: `$TMPDIR/corral-node-agent-UID/agent-HASH.js`, in a directory
//! the primary's user owns with mode 0755 and a file of mode 0644. Workers
//! started with `--user` read it; nobody else can change it (a directory
//! of that name owned by another user, or writable by others, is refused
//! and the workers run without the agent). The name carries a hash of the
//! content, so clusters of different corral versions never share a file,
//! and one written once is reused: nothing to remove at exit.

use std::ffi::{OsStr, OsString};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::primary::event::human_duration;
use crate::settings::WEBSOCKET_CLOSE_WAIT;

/// The agent's source.
pub(crate) const SOURCE: &str = include_str!("agent.js");

/// The variable the agent checks before it does anything: set only in
/// the environment of the workers corral starts.
pub(crate) const MARK: &str = "CORRAL_NODE_AGENT";
/// The option the agent removes from `NODE_OPTIONS`, so the programs a
/// worker starts do not load it.
pub(crate) const OPTION: &str = "CORRAL_NODE_AGENT_OPTION";
/// Over how many milliseconds the agent closes a draining worker's
/// WebSockets (`--ws-close-after`).
pub(crate) const WEBSOCKET_CLOSE_AFTER: &str = "CORRAL_WEBSOCKET_CLOSE_AFTER_MS";

/// Writes the agent where workers can read it, or finds it written.
pub(crate) fn install() -> std::io::Result<PathBuf> {
    let uid = rustix::process::geteuid().as_raw();
    let dir = std::env::temp_dir().join(format!("corral-node-agent-{uid}"));
    match std::fs::DirBuilder::new().mode(0o755).create(&dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err),
    }
    let meta = std::fs::symlink_metadata(&dir)?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o022 != 0 {
        return Err(std::io::Error::other(format!(
            "{} is not a directory of this user that only it may write",
            dir.display()
        )));
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    SOURCE.hash(&mut hasher);
    let path = dir.join(format!("agent-{:016x}.js", hasher.finish()));
    if let Ok(meta) = std::fs::symlink_metadata(&path)
        && meta.is_file()
        && meta.uid() == uid
        && std::fs::read(&path).is_ok_and(|bytes| bytes == SOURCE.as_bytes())
    {
        return Ok(path);
    }
    // Written whole under a private name, then renamed into place.
    let partial = dir.join(format!("agent.{}.partial", std::process::id()));
    let _ = std::fs::remove_file(&partial);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&partial)?;
    file.write_all(SOURCE.as_bytes())?;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    drop(file);
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

/// A warning when the agent's WebSocket closes, and the clients' time to
/// answer them, do not fit in the grace period: the last clients would
/// be cut (1006) when the worker is killed.
pub(crate) fn websocket_close_past_grace(close_after: Duration, grace: Duration) -> Option<String> {
    let needed = close_after + WEBSOCKET_CLOSE_WAIT;
    (needed > grace).then(|| {
        format!(
            "--ws-close-after {} and the clients' {} to answer do not fit in --grace {}: \
             WebSockets still open when the grace ends are cut (1006); lower \
             --ws-close-after or raise --grace",
            human_duration(close_after),
            human_duration(WEBSOCKET_CLOSE_WAIT),
            human_duration(grace)
        )
    })
}

/// The `--require` option for `path`, quoted as `NODE_OPTIONS` reads it.
fn require_option(path: &Path) -> OsString {
    let text = path.to_string_lossy();
    let mut option = OsString::from("--require ");
    if text.contains([' ', '"', '\\']) {
        let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
        option.push(format!("\"{escaped}\""));
    } else {
        option.push(path.as_os_str());
    }
    option
}

/// What the agent is told besides where it is.
pub(crate) struct AgentSettings {
    /// `--ws-close-after`.
    pub ws_close_after: Duration,
}

/// The variables that load the agent at `path` into a Node worker whose
/// `NODE_OPTIONS` would otherwise be `existing`: the option appended to
/// them, never replacing them.
pub(crate) fn environment(
    path: &Path,
    existing: Option<&OsStr>,
    settings: &AgentSettings,
) -> Vec<(OsString, OsString)> {
    let option = require_option(path);
    let mut options = OsString::new();
    if let Some(existing) = existing.filter(|value| !value.is_empty()) {
        options.push(existing);
        options.push(" ");
    }
    options.push(&option);
    vec![
        (OsString::from("NODE_OPTIONS"), options),
        (OsString::from(MARK), OsString::from("1")),
        (OsString::from(OPTION), option),
        (
            OsString::from(WEBSOCKET_CLOSE_AFTER),
            OsString::from(settings.ws_close_after.as_millis().to_string()),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: AgentSettings = AgentSettings {
        ws_close_after: Duration::from_millis(1500),
    };

    #[test]
    fn closes_that_do_not_fit_in_the_grace_are_warned_of() {
        let second = Duration::from_secs(1);
        assert!(websocket_close_past_grace(second, 2 * second).is_none());
        let warning = websocket_close_past_grace(2 * second, 2 * second).unwrap();
        assert!(warning.contains("--ws-close-after 2.0s"), "{warning}");
        assert!(warning.contains("--grace 2.0s"), "{warning}");
    }

    #[test]
    fn the_option_is_appended_to_node_options() {
        let env = environment(
            Path::new("/tmp/a/agent.js"),
            Some(OsStr::new("--max-old-space-size=64")),
            &SETTINGS,
        );
        assert_eq!(
            env[0].1,
            "--max-old-space-size=64 --require /tmp/a/agent.js"
        );
        let env = environment(Path::new("/tmp/a b/agent.js"), None, &SETTINGS);
        assert_eq!(env[0].1, "--require \"/tmp/a b/agent.js\"");
    }

    #[test]
    fn the_websocket_close_delay_is_passed_in_milliseconds() {
        let env = environment(Path::new("/tmp/a/agent.js"), None, &SETTINGS);
        assert!(env.contains(&(WEBSOCKET_CLOSE_AFTER.into(), "1500".into())));
    }
}
