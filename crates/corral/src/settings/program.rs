//! What a worker runs: this executable again (library mode, as
//! `cluster.fork()` re-runs the script) or another program (`corral run --
//! COMMAND`). The path is resolved at every start, so a restart after the
//! file changed runs the file as it is now.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::process::Signal;

use super::launcher::{self, Launch};
use super::{NodeMode, program_name};
use crate::error::Error;

#[derive(Debug, Clone)]
pub(crate) enum Program {
    /// This executable, with this process's arguments. The path is taken
    /// once at start: after a deploy replaced the file, a restart or reload
    /// runs the new one (the running process's own image is the old one).
    CurrentExe { path: PathBuf },
    /// Another program with its arguments; `node`: it is a Node program,
    /// run as a Node cluster worker (`--node`); `env`: variables a package
    /// script sets in front of its command (`launcher.rs`); `launcher`:
    /// the command as given, when a launcher was looked through (the
    /// cluster is named after it: `npm start` after the package).
    Command {
        program: OsString,
        args: Vec<OsString>,
        node: bool,
        env: Vec<(OsString, OsString)>,
        launcher: Option<(OsString, Vec<OsString>)>,
    },
}

/// A program resolved to a file, with its full argv (argv[0] included).
#[derive(Debug)]
pub(crate) struct ResolvedProgram {
    pub path: PathBuf,
    pub argv: Vec<OsString>,
}

impl Program {
    /// `program args` as the workers run it: a launcher (`npm start`, `npx
    /// tsx app.ts`) looked through to the Node command it runs, unless
    /// `--node off`; one corral cannot look through is an error that says
    /// what to run instead.
    pub(crate) fn command(
        program: OsString,
        args: Vec<OsString>,
        mode: NodeMode,
    ) -> Result<Program, Error> {
        let launch = match mode {
            NodeMode::Off => Launch::AsGiven,
            _ => launcher::unwrap(&program, &args, &launcher::CurrentDir),
        };
        let given = (program, args);
        let (program, args, env, launcher) = match launch {
            Launch::AsGiven => (given.0, given.1, Vec::new(), None),
            Launch::Unwrapped(unwrapped) => {
                tracing::info!(event = "launcher", "{}", unwrapped.note);
                (
                    unwrapped.program,
                    unwrapped.args,
                    unwrapped.env,
                    Some(given),
                )
            }
            Launch::Refused(why) => return Err(Error::Config(why)),
        };
        let node = mode.applies_to(&program);
        Ok(Program::Command {
            program,
            args,
            node,
            env,
            launcher,
        })
    }

    /// Variables the program itself sets for its workers (a package
    /// script's `NODE_ENV=production node app.js`).
    pub(crate) fn env(&self) -> &[(OsString, OsString)] {
        match self {
            Program::CurrentExe { .. } => &[],
            Program::Command { env, .. } => env,
        }
    }

    pub(crate) fn resolve(&self) -> Result<ResolvedProgram, Error> {
        self.check()?;
        match self {
            Program::CurrentExe { path } => Ok(ResolvedProgram {
                path: path.clone(),
                argv: std::env::args_os().collect(),
            }),
            Program::Command { program, args, .. } => {
                let path = find_executable(program)?;
                let mut argv = vec![program.clone()];
                argv.extend(args.iter().cloned());
                Ok(ResolvedProgram { path, argv })
            }
        }
    }

    /// Refuses a command or argument with a NUL byte, which `execve`
    /// cannot pass: every start would fail.
    pub(crate) fn check(&self) -> Result<(), Error> {
        let Program::Command { program, args, .. } = self else {
            return Ok(());
        };
        let has_nul = |text: &OsString| text.as_encoded_bytes().contains(&0);
        if has_nul(program) {
            return Err(Error::Config(format!(
                "the command {program:?} contains a NUL byte, which no program name can \
                 hold: remove it"
            )));
        }
        if let Some((at, arg)) = args.iter().enumerate().find(|(_, arg)| has_nul(arg)) {
            return Err(Error::Config(format!(
                "argument {} of the command, {arg:?}, contains a NUL byte, which no argument \
                 can hold: remove it",
                at + 1
            )));
        }
        Ok(())
    }

    /// What a worker gets when the primary dies. Library workers drain on
    /// SIGTERM within a short deadline; a foreign command might drain for
    /// as long as it likes, and nothing would supervise it, so it is killed.
    pub(crate) fn death_signal(&self) -> Signal {
        match self {
            Program::CurrentExe { .. } => Signal::TERM,
            Program::Command { .. } => Signal::KILL,
        }
    }

    /// Whether the worker speaks corral's channel for sure (the library).
    pub(crate) fn speaks_channel(&self) -> bool {
        matches!(self, Program::CurrentExe { .. })
    }

    /// Whether the worker is a Node program: a Node cluster worker with
    /// corral as its primary (`primary/node/`), whose channel is also
    /// `NODE_CHANNEL_FD`.
    pub(crate) fn is_node(&self) -> bool {
        matches!(self, Program::Command { node: true, .. })
    }

    /// The cluster's name when none is given (`program_name.rs`): for a
    /// Node program its script's (`node app.js` is `app`, as pm2 names
    /// it), for `npm start` its package's, else the program's file name.
    pub(crate) fn display_name(&self) -> String {
        match self {
            Program::CurrentExe { .. } => {
                let exe = std::env::args_os().next().unwrap_or_default();
                program_name::name_for(&exe, &[], false, || None)
            }
            Program::Command {
                launcher: Some((program, args)),
                ..
            } => program_name::name_for(program, args, true, program_name::package_json_name),
            Program::Command {
                program,
                args,
                node,
                ..
            } => program_name::name_for(program, args, *node, program_name::package_json_name),
        }
    }
}

/// Finds `program` as `execvp` would: as a path when it has a slash, else in
/// each directory of `PATH`. A file that is there but cannot be run is
/// named as such, not as missing.
fn find_executable(program: &OsString) -> Result<PathBuf, Error> {
    let candidate = Path::new(program);
    let candidates: Vec<PathBuf> = if program.as_encoded_bytes().contains(&b'/') {
        vec![candidate.to_path_buf()]
    } else {
        let search_path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&search_path)
            .map(|dir| dir.join(candidate))
            .collect()
    };
    let mut unusable = None;
    for path in candidates {
        match why_not_executable(&path) {
            None => return Ok(path),
            Some(Unusable::Missing) => {}
            Some(Unusable::Present(reason)) => {
                unusable.get_or_insert((path, reason));
            }
        }
    }
    Err(match unusable {
        Some((path, reason)) => Error::CommandNotExecutable {
            command: program.to_string_lossy().into(),
            path: path.display().to_string(),
            reason,
        },
        None => Error::CommandNotFound(program.to_string_lossy().into()),
    })
}

enum Unusable {
    Missing,
    Present(&'static str),
}

fn why_not_executable(path: &Path) -> Option<Unusable> {
    let Ok(meta) = path.metadata() else {
        return Some(Unusable::Missing);
    };
    if meta.is_dir() {
        Some(Unusable::Present("is a directory"))
    } else if !meta.is_file() {
        Some(Unusable::Present("is not a regular file"))
    } else if meta.permissions().mode() & 0o111 == 0 {
        Some(Unusable::Present(
            "has no execute permission (chmod +x it, or name its interpreter: -- python3 app.py)",
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_program_is_named_after_its_script() {
        let node = |args: &[&str]| Program::Command {
            program: "node".into(),
            args: args.iter().map(Into::into).collect(),
            node: true,
            env: vec![],
            launcher: None,
        };
        assert_eq!(node(&["/srv/app.js"]).display_name(), "app");
        assert_eq!(node(&["--inspect", "server.mjs"]).display_name(), "server");
        assert_eq!(node(&[]).display_name(), "node");
    }

    #[test]
    fn commands_are_found_in_path_or_by_path() {
        let sh = Program::Command {
            program: "sh".into(),
            args: vec![],
            node: false,
            env: vec![],
            launcher: None,
        };
        assert!(sh.resolve().unwrap().path.is_absolute());
        let missing = Program::Command {
            program: "/no/such/program".into(),
            args: vec![],
            node: false,
            env: vec![],
            launcher: None,
        };
        assert!(matches!(missing.resolve(), Err(Error::CommandNotFound(_))));
        let not_executable = Program::Command {
            program: "/etc/passwd".into(),
            args: vec![],
            node: false,
            env: vec![],
            launcher: None,
        };
        let err = not_executable.resolve().unwrap_err().to_string();
        assert!(err.contains("not executable"), "{err}");
        let directory = Program::Command {
            program: "/tmp".into(),
            args: vec![],
            node: false,
            env: vec![],
            launcher: None,
        };
        let err = directory.resolve().unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
        let not_in_path = Program::Command {
            program: "corral-no-such-command".into(),
            args: vec![],
            node: false,
            env: vec![],
            launcher: None,
        };
        assert!(not_in_path.resolve().is_err());
    }
}
