//! Launchers: `npm start`, `yarn dev`, `pnpm start`, `npx tsx app.ts`,
//! `tsx app.ts`. Each is a process that starts the real Node program as its
//! child, and Node hands its cluster channel (`NODE_CHANNEL_FD`,
//! `NODE_UNIQUE_ID`) to the first Node process only: the launcher becomes
//! the "worker", and the program it starts is a plain `node` that binds the
//! port by itself, once per slot. So corral looks through the launcher and
//! runs what it would run: the package script's `node …` command (with the
//! variables it sets in front), and TypeScript through `node --import tsx`.
//! A script it cannot look through (a shell line with `&&`, a tool that
//! forks on its own) is refused with a line saying what to run instead.

use std::ffi::{OsStr, OsString};
use std::path::Path;

use serde_json::Value;

/// A command with the launcher looked through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unwrapped {
    pub program: OsString,
    pub args: Vec<OsString>,
    /// Variables the package script sets in front of its command
    /// (`NODE_ENV=production node app.js`).
    pub env: Vec<(OsString, OsString)>,
    /// What corral says it runs instead, for the log.
    pub note: String,
}

/// What to run for a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Launch {
    /// Not a launcher: run it as given.
    AsGiven,
    Unwrapped(Unwrapped),
    /// A launcher corral cannot look through: why, and what to run.
    Refused(String),
}

/// What a package manager runs, looked up in `./package.json`.
pub(crate) trait Project {
    /// The `scripts` entry `name`, if any.
    fn script(&self, name: &str) -> Option<String>;
    /// Whether a file exists relative to the project (npm's default
    /// `start` is `node server.js` when `server.js` exists).
    fn has_file(&self, path: &str) -> bool;
    /// Whether the `tsx` package is installed for the project.
    fn has_tsx(&self) -> bool;
}

/// Looks through `program args` if it is a launcher.
pub(crate) fn unwrap(program: &OsStr, args: &[OsString], project: &dyn Project) -> Launch {
    let base = Path::new(program)
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let words: Vec<String> = args
        .iter()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    match base.as_str() {
        "npm" | "yarn" | "pnpm" => package_script(&base, &words, project),
        "npx" => npx(&words, project),
        "tsx" => through_tsx(&words, project, &format!("{base} {}", words.join(" "))),
        _ => Launch::AsGiven,
    }
}

/// `npm start`, `npm run X [-- ARGS]`, `yarn X`, `pnpm X`: the script.
fn package_script(manager: &str, words: &[String], project: &dyn Project) -> Launch {
    let (name, extra) = match script_call(manager, words) {
        Some(call) => call,
        None => return Launch::AsGiven,
    };
    let given = format!("{manager} {}", words.join(" "));
    let script = match project.script(name) {
        Some(script) => script,
        None if name == "start" && project.has_file("server.js") => "node server.js".into(),
        None => {
            return Launch::Refused(format!(
                "`{given}`: ./package.json has no script {name:?}: run corral from the \
                 package's directory, or give the command the script runs (corral run -- node \
                 app.js)"
            ));
        }
    };
    let Some(mut parts) = shlex::split(&script) else {
        return refuse_script(&given, name, &script);
    };
    parts.extend(extra.iter().cloned());
    let (env, command) = split_assignments(&parts);
    let Some((first, rest)) = command.split_first() else {
        return refuse_script(&given, name, &script);
    };
    if is_shell_line(&script) {
        return refuse_script(&given, name, &script);
    }
    let shown = format!("`{given}` runs `{script}`");
    match first.as_str() {
        "node" | "nodejs" => Launch::Unwrapped(Unwrapped {
            program: first.into(),
            args: rest.iter().map(Into::into).collect(),
            env,
            note: format!("{shown}: corral runs that as each worker"),
        }),
        "tsx" => match through_tsx(rest, project, &given) {
            Launch::Unwrapped(unwrapped) => Launch::Unwrapped(Unwrapped { env, ..unwrapped }),
            other => other,
        },
        _ => refuse_script(&given, name, &script),
    }
}

/// The script a package manager's arguments call, and the arguments
/// after `--` passed on to it.
fn script_call<'a>(manager: &str, words: &'a [String]) -> Option<(&'a str, &'a [String])> {
    let (name, rest) = match words {
        [run, name, rest @ ..] if run == "run" || run == "run-script" => (name, rest),
        [name, rest @ ..] if name == "start" => (name, rest),
        // `yarn dev`, `pnpm dev`: a script by its name alone.
        [name, rest @ ..] if manager != "npm" && !name.starts_with('-') => (name, rest),
        _ => return None,
    };
    let extra = match rest.split_first() {
        Some((dashes, extra)) if dashes == "--" => extra,
        _ => rest,
    };
    Some((name.as_str(), extra))
}

/// `npx [--yes] tsx FILE …`: TypeScript through `node --import tsx`.
fn npx(words: &[String], project: &dyn Project) -> Launch {
    let given = format!("npx {}", words.join(" "));
    let mut rest = words
        .iter()
        .skip_while(|word| word.starts_with('-'))
        .cloned()
        .collect::<Vec<_>>();
    if rest.is_empty() {
        return Launch::AsGiven;
    }
    let tool = rest.remove(0);
    match Path::new(&tool).file_name().and_then(OsStr::to_str) {
        Some("tsx") => through_tsx(&rest, project, &given),
        Some("node") => Launch::Unwrapped(Unwrapped {
            program: "node".into(),
            args: rest.iter().map(Into::into).collect(),
            env: Vec::new(),
            note: format!("`{given}` runs node: corral runs it as each worker"),
        }),
        _ => Launch::Refused(format!(
            "`{given}`: npx starts {tool} as its child, which then cannot be a cluster worker: \
             give corral the program npx runs (corral run -- node ./node_modules/{tool}/…)"
        )),
    }
}

/// `tsx [watch] FILE ARGS`: `node --import tsx FILE ARGS`.
fn through_tsx(words: &[String], project: &dyn Project, given: &str) -> Launch {
    if words.first().is_some_and(|word| word == "watch") {
        return Launch::Refused(format!(
            "`{given}`: tsx watch restarts the program by itself; use corral's --watch and run \
             corral run -- node --import tsx FILE"
        ));
    }
    if !project.has_tsx() {
        return Launch::Refused(format!(
            "`{given}`: tsx starts node as its child, which then cannot be a cluster worker, \
             and tsx is not installed in this project for node --import tsx: run `npm install \
             --save-dev tsx`, then corral looks through tsx by itself"
        ));
    }
    let mut args: Vec<OsString> = vec!["--import".into(), "tsx".into()];
    args.extend(words.iter().map(Into::into));
    Launch::Unwrapped(Unwrapped {
        program: "node".into(),
        args,
        env: Vec::new(),
        note: format!(
            "`{given}` runs as `node --import tsx …`, so each worker is one Node process"
        ),
    })
}

/// Leading `NAME=value` words, as a shell takes them, and the rest.
fn split_assignments(parts: &[String]) -> (Vec<(OsString, OsString)>, &[String]) {
    let count = parts
        .iter()
        .take_while(|part| {
            part.split_once('=').is_some_and(|(name, _)| {
                !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.starts_with(|c: char| c.is_ascii_digit())
            })
        })
        .count();
    // corral's own variables stay corral's, whatever a script sets.
    let env = parts[..count]
        .iter()
        .filter_map(|part| part.split_once('='))
        .filter(|(name, _)| !crate::protocol::env::is_reserved(name))
        .map(|(name, value)| (name.into(), value.into()))
        .collect();
    (env, &parts[count..])
}

/// Whether a script is a shell line rather than one command.
fn is_shell_line(script: &str) -> bool {
    ["&&", "||", ";", "|", "$(", "`", ">", "<", "&"]
        .iter()
        .any(|token| script.contains(token))
}

fn refuse_script(given: &str, name: &str, script: &str) -> Launch {
    Launch::Refused(format!(
        "`{given}` runs the script {name:?} (`{script}`), which corral cannot cluster through \
         the package manager (its child would bind the port alone): run the Node command \
         itself, e.g. corral run -- node app.js"
    ))
}

/// `./package.json`, if it is there and is JSON.
pub(super) fn package_json() -> Option<Value> {
    let text = std::fs::read_to_string("package.json").ok()?;
    serde_json::from_str(&text).ok()
}

/// The project in the current directory.
pub(crate) struct CurrentDir;

impl Project for CurrentDir {
    fn script(&self, name: &str) -> Option<String> {
        let json = package_json()?;
        Some(json.get("scripts")?.get(name)?.as_str()?.to_owned())
    }

    fn has_file(&self, path: &str) -> bool {
        Path::new(path).is_file()
    }

    /// Found as node's `--import tsx` finds it: in `node_modules` of this
    /// directory or of one above it.
    fn has_tsx(&self) -> bool {
        let Ok(here) = std::env::current_dir() else {
            return false;
        };
        here.ancestors()
            .any(|dir| dir.join("node_modules/tsx/package.json").is_file())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        scripts: &'static [(&'static str, &'static str)],
        server_js: bool,
        tsx: bool,
    }

    impl Project for Fake {
        fn script(&self, name: &str) -> Option<String> {
            self.scripts
                .iter()
                .find(|(script, _)| *script == name)
                .map(|(_, command)| command.to_string())
        }
        fn has_file(&self, _: &str) -> bool {
            self.server_js
        }
        fn has_tsx(&self) -> bool {
            self.tsx
        }
    }

    const PROJECT: Fake = Fake {
        scripts: &[
            (
                "start",
                "NODE_ENV=production node --enable-source-maps app.js",
            ),
            ("dev", "tsx src/server.ts"),
            ("build", "tsc && node dist/app.js"),
            ("serve", "nodemon app.js"),
        ],
        server_js: false,
        tsx: true,
    };

    fn launch(command: &str, project: &Fake) -> Launch {
        let words: Vec<OsString> = command.split(' ').map(Into::into).collect();
        unwrap(&words[0], &words[1..], project)
    }

    fn unwrapped(command: &str, project: &Fake) -> (String, Vec<(OsString, OsString)>) {
        match launch(command, project) {
            Launch::Unwrapped(unwrapped) => {
                let mut line = vec![unwrapped.program.to_string_lossy().into_owned()];
                line.extend(
                    unwrapped
                        .args
                        .iter()
                        .map(|a| a.to_string_lossy().into_owned()),
                );
                (line.join(" "), unwrapped.env)
            }
            other => panic!("{command}: {other:?}"),
        }
    }

    #[test]
    fn a_package_script_runs_as_its_node_command_with_its_variables() {
        let (line, env) = unwrapped("npm start", &PROJECT);
        assert_eq!(line, "node --enable-source-maps app.js");
        assert_eq!(env, [("NODE_ENV".into(), "production".into())]);
        assert_eq!(
            unwrapped("npm run start -- --port 3", &PROJECT).0,
            "node --enable-source-maps app.js --port 3"
        );
        assert_eq!(
            unwrapped("yarn start", &PROJECT).0,
            "node --enable-source-maps app.js"
        );
        assert_eq!(
            unwrapped("pnpm run dev", &PROJECT).0,
            "node --import tsx src/server.ts"
        );
        assert_eq!(
            unwrapped("yarn dev", &PROJECT).0,
            "node --import tsx src/server.ts"
        );
    }

    #[test]
    fn npms_default_start_is_node_server_js() {
        let project = Fake {
            scripts: &[],
            server_js: true,
            tsx: false,
        };
        assert_eq!(unwrapped("npm start", &project).0, "node server.js");
    }

    #[test]
    fn typescript_launchers_become_node_import_tsx() {
        assert_eq!(
            unwrapped("npx tsx app.ts", &PROJECT).0,
            "node --import tsx app.ts"
        );
        assert_eq!(
            unwrapped("npx --yes tsx app.ts a", &PROJECT).0,
            "node --import tsx app.ts a"
        );
        assert_eq!(
            unwrapped("./node_modules/.bin/tsx app.ts", &PROJECT).0,
            "node --import tsx app.ts"
        );
        let without = Fake {
            tsx: false,
            ..PROJECT
        };
        assert!(
            matches!(launch("npx tsx app.ts", &without), Launch::Refused(why) if why.contains("npm install --save-dev tsx"))
        );
    }

    #[test]
    fn what_cannot_be_looked_through_is_refused_with_what_to_run() {
        for command in [
            "npm run build",
            "npm run serve",
            "npm run missing",
            "npx serve",
            "tsx watch app.ts",
        ] {
            match launch(command, &PROJECT) {
                Launch::Refused(why) => assert!(why.contains("corral run --"), "{command}: {why}"),
                other => panic!("{command}: {other:?}"),
            }
        }
    }

    #[test]
    fn other_commands_run_as_given() {
        for command in ["node app.js", "python3 app.py", "npm", "npm install"] {
            assert_eq!(launch(command, &PROJECT), Launch::AsGiven, "{command}");
        }
    }
}
