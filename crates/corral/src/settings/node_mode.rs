//! Whether a COMMAND is a Node program (`--node auto|on|off`): then each
//! worker starts as a Node cluster worker, with corral as its primary.

use std::ffi::OsStr;
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use crate::error::Error;

/// How corral decides that a COMMAND is a Node program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NodeMode {
    /// When the command is `node`, `nodejs` (or `node20`…), or a script
    /// whose `#!` line runs node (`#!/usr/bin/env node`).
    #[default]
    Auto,
    /// Always: the command is a wrapper that ends up running Node.
    On,
    /// Never: a Node program that only wants `LISTEN_FDS` and pm2-style
    /// messages, as with any COMMAND.
    Off,
}

impl NodeMode {
    /// Whether `program` (as given, or found in `PATH`) is run as a Node
    /// cluster worker.
    pub fn applies_to(self, program: &OsStr) -> bool {
        match self {
            NodeMode::On => true,
            NodeMode::Off => false,
            NodeMode::Auto => is_node_name(program) || runs_node(program),
        }
    }
}

/// `node`, `nodejs`, `node20`, as a bare name or a path.
fn is_node_name(program: &OsStr) -> bool {
    let name = Path::new(program)
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let version = name.strip_prefix("node").unwrap_or("x");
    name == "nodejs" || version.chars().all(|c| c.is_ascii_digit())
}

/// A script whose `#!` line runs node: `#!/usr/bin/node`,
/// `#!/usr/bin/env node`, `#!/usr/bin/env -S node --flag`.
fn runs_node(program: &OsStr) -> bool {
    let path = if program.as_encoded_bytes().contains(&b'/') {
        Some(Path::new(program).to_path_buf())
    } else {
        std::env::var_os("PATH").and_then(|dirs| {
            std::env::split_paths(&dirs)
                .map(|dir| dir.join(program))
                .find(|path| path.is_file())
        })
    };
    let Some(path) = path else {
        return false;
    };
    let mut head = [0u8; 256];
    let read = std::fs::File::open(path)
        .and_then(|mut file| file.read(&mut head))
        .unwrap_or(0);
    shebang_runs_node(&head[..read])
}

fn shebang_runs_node(head: &[u8]) -> bool {
    let Some(line) = head.strip_prefix(b"#!") else {
        return false;
    };
    let line = line.split(|&byte| byte == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let Some(interpreter) = words.next() else {
        return false;
    };
    if is_node_name(OsStr::new(interpreter)) {
        return true;
    }
    let is_env = Path::new(interpreter).file_name() == Some(OsStr::new("env"));
    is_env
        && words
            .find(|word| !word.starts_with('-'))
            .is_some_and(|word| is_node_name(OsStr::new(word)))
}

impl fmt::Display for NodeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeMode::Auto => "auto",
            NodeMode::On => "on",
            NodeMode::Off => "off",
        })
    }
}

impl FromStr for NodeMode {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        match text {
            "auto" => Ok(NodeMode::Auto),
            "on" => Ok(NodeMode::On),
            "off" => Ok(NodeMode::Off),
            _ => Err(Error::Config(format!(
                "--node {text:?}: use auto, on or off"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_commands_by_name() {
        for name in ["node", "nodejs", "node20", "/usr/local/bin/node"] {
            assert!(is_node_name(OsStr::new(name)), "{name}");
        }
        for name in ["nodemon", "python3", "sh", "corral"] {
            assert!(!is_node_name(OsStr::new(name)), "{name}");
        }
        assert!(NodeMode::On.applies_to(OsStr::new("sh")));
        assert!(!NodeMode::Off.applies_to(OsStr::new("node")));
    }

    #[test]
    fn node_scripts_by_their_shebang() {
        for head in [
            &b"#!/usr/bin/env node\nconsole.log(1)"[..],
            b"#!/usr/bin/node\n",
            b"#!/usr/bin/env -S node --max-old-space-size=100\n",
            b"#! /usr/bin/env nodejs\n",
        ] {
            assert!(shebang_runs_node(head), "{}", String::from_utf8_lossy(head));
        }
        for head in [
            &b"#!/bin/sh\nexec node app.js\n"[..],
            b"console.log(1)",
            b"#!",
        ] {
            assert!(
                !shebang_runs_node(head),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }
}
