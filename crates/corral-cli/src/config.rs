//! The configuration file (`corral run --config corral.toml`, `corral check
//! corral.toml`): every `run` flag as a TOML key of the same name
//! (`workers = 4`, `max-memory = "512M"`, `listen = ["127.0.0.1:8000"]`),
//! plus `command`, `args` and an `[env]` table for the workers, with
//! profiles `[env.production]` that `--env-name` (or the key `env-name`)
//! selects; flags given on the command line override the file. The
//! environment adds up, lowest first: `--env-file`, `[env]`, the profile,
//! `--env` flags.
//!
//! The file is turned into the flags it stands for, and each key is checked
//! by clap's own parser for that flag, so a value means the same in a file as
//! on the command line and an error names the key and its line:
//! `corral.toml line 7: grace: "-1" must be zero or a positive number of
//! seconds`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use toml::{Spanned, Value};

use crate::args::{Cli, Command, RunArgs};

/// Keys that are not flags: the worker's command line and environment.
const COMMAND: &str = "command";
const ARGS: &str = "args";
const ENV: &str = "env";
/// The one flag whose value is optional: `watch = true` is `--watch`.
const WATCH: &str = "watch";
/// Flags that make no sense in the file itself.
const NOT_IN_FILE: &[&str] = &["config", "help", "state-dir"];

/// A configuration problem, as one line: the file, the line, the key.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The `run` settings from `file`, overridden by `cli` (the arguments
/// after `corral run`, as given).
pub fn resolve(file: &Path, cli: &[OsString]) -> Result<RunArgs, ConfigError> {
    let text =
        corral::cli_support::read_config_file(file).map_err(|err| ConfigError(err.to_string()))?;
    let from_file = file_flags(file, &text)?;
    let given = given_on_command_line(cli)?;
    let mut argv: Vec<OsString> = vec!["corral".into(), "run".into()];
    for (key, flags) in &from_file.flags {
        if !given.iter().any(|id| id == &key.replace('-', "_")) {
            argv.extend(flags.iter().map(OsString::from));
        }
    }
    let (options, command) = split_command(cli);
    let given_env_files = given.iter().any(|id| id == "env_file");
    argv.extend(options.iter().cloned());
    argv.push("--".into());
    if command.is_empty() {
        argv.extend(from_file.command.iter().map(OsString::from));
    } else {
        argv.extend(command.iter().cloned());
    }
    let mut run = match Cli::try_parse_from_os(argv) {
        Ok(Cli {
            command: Command::Run(run),
            ..
        }) => *run,
        Ok(_) => unreachable!("the arguments start with `run`"),
        Err(err) => {
            return Err(ConfigError(format!(
                "{}: {}",
                file.display(),
                first_line(&err.to_string())
            )));
        }
    };
    // The file's env files are named from its directory; the command
    // line's, from the working directory.
    if !given_env_files {
        let base = file.parent().unwrap_or(Path::new(""));
        run.env_file = run.env_file.iter().map(|path| base.join(path)).collect();
    }
    let mut env = from_file.env;
    if let Some(profile) = &run.env_name {
        match from_file.profiles.get(profile) {
            Some(variables) => env.extend(variables.iter().cloned()),
            None => {
                let known: Vec<&str> = from_file.profiles.keys().map(String::as_str).collect();
                let known = if known.is_empty() {
                    "it has none".to_string()
                } else {
                    format!("it has {}", known.join(", "))
                };
                return Err(ConfigError(format!(
                    "{}: env-name {profile:?}: there is no [env.{profile}] table ({known}): \
                     add one or pick another profile",
                    file.display()
                )));
            }
        }
    }
    env.append(&mut run.env);
    run.env = env;
    Ok(run)
}

impl Cli {
    fn try_parse_from_os(argv: Vec<OsString>) -> Result<Cli, clap::Error> {
        let matches = Cli::command().try_get_matches_from(argv)?;
        Cli::from_arg_matches(&matches)
    }
}

/// The ids of the `run` flags given on the command line itself.
fn given_on_command_line(cli: &[OsString]) -> Result<Vec<String>, ConfigError> {
    let mut argv: Vec<OsString> = vec!["corral".into(), "run".into()];
    argv.extend(cli.iter().cloned());
    let matches = Cli::command()
        .try_get_matches_from(argv)
        .map_err(|err| ConfigError(first_line(&err.to_string())))?;
    let run: &ArgMatches = matches
        .subcommand_matches("run")
        .expect("the arguments start with `run`");
    Ok(run
        .ids()
        .filter(|id| run.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| id.as_str().to_string())
        .collect())
}

/// The options before `--`, and the command after it.
fn split_command(cli: &[OsString]) -> (&[OsString], &[OsString]) {
    match cli.iter().position(|arg| arg == "--") {
        Some(at) => (&cli[..at], &cli[at + 1..]),
        None => (cli, &[]),
    }
}

/// The file as flags, key by key, and the command it names.
#[derive(Debug, Default, PartialEq)]
struct FileFlags {
    flags: BTreeMap<String, Vec<String>>,
    command: Vec<String>,
    /// `[env]`'s variables, as `NAME=value`.
    env: Vec<String>,
    /// Each `[env.PROFILE]` table's variables, as `NAME=value`.
    profiles: BTreeMap<String, Vec<String>>,
}

fn file_flags(file: &Path, text: &str) -> Result<FileFlags, ConfigError> {
    let name = file.display();
    let document: BTreeMap<Spanned<String>, Spanned<Value>> = toml::from_str(text)
        .map_err(|err| ConfigError(format!("{name}: {}", one_line(&err.to_string()))))?;
    let flag_names = run_flag_names();
    let mut out = FileFlags::default();
    let mut command: Option<String> = None;
    let mut args: Vec<String> = Vec::new();
    for (key, value) in &document {
        let line = line_of(text, key.span().start);
        let key = key.get_ref().as_str();
        let at = |message: String| ConfigError(format!("{name} line {line}: {key}: {message}"));
        match key {
            COMMAND => command = Some(string(value.get_ref()).map_err(at)?),
            ARGS => args = strings(value.get_ref()).map_err(at)?,
            ENV => {
                let Value::Table(table) = value.get_ref() else {
                    return Err(at(
                        "must be a table of variables, as [env] then NAME = \"value\"".into(),
                    ));
                };
                for (name, value) in table {
                    match value {
                        Value::Table(_) => {
                            let variables = env_variables(value)
                                .map_err(|message| at(format!("[env.{name}]: {message}")))?;
                            out.profiles.insert(name.clone(), variables);
                        }
                        _ => out.env.push(env_variable(name, value).map_err(at)?),
                    }
                }
            }
            WATCH if matches!(value.get_ref(), Value::Boolean(_)) => {
                if value.get_ref().as_bool() == Some(true) {
                    out.flags
                        .insert(key.to_string(), vec![format!("--{WATCH}")]);
                }
            }
            _ if flag_names.iter().any(|flag| flag == key) => {
                let flags = flags_for(key, value.get_ref()).map_err(at)?;
                check_flag(&flags).map_err(at)?;
                out.flags.insert(key.to_string(), flags);
            }
            _ => {
                return Err(at(format!(
                    "unknown key; the keys are {COMMAND}, {ARGS}, {ENV} and the `corral run` \
                     flags: {}",
                    flag_names.join(", ")
                )));
            }
        }
    }
    match command {
        Some(command) => {
            out.command = std::iter::once(command).chain(args).collect();
        }
        None if !args.is_empty() => {
            let line = document
                .keys()
                .find(|key| key.get_ref() == ARGS)
                .map_or(1, |key| line_of(text, key.span().start));
            return Err(ConfigError(format!(
                "{name} line {line}: args: there are arguments but no command: add \
                 command = \"PROGRAM\""
            )));
        }
        None => {}
    }
    Ok(out)
}

/// The long names of `corral run`'s flags that a file may set.
fn run_flag_names() -> Vec<String> {
    let cli = Cli::command();
    let run = cli
        .find_subcommand("run")
        .expect("corral has a run command");
    run.get_arguments()
        .filter_map(|arg| arg.get_long())
        .filter(|long| !NOT_IN_FILE.contains(long) && *long != ENV)
        .map(str::to_string)
        .collect()
}

/// `key = value` as the flags it stands for.
fn flags_for(key: &str, value: &Value) -> Result<Vec<String>, String> {
    let flag = format!("--{key}");
    match value {
        Value::Array(items) => Ok(items
            .iter()
            .map(scalar)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flat_map(|item| [flag.clone(), item])
            .collect()),
        other => Ok(vec![flag, scalar(other)?]),
    }
}

/// Checks one key's flags with clap's parser for them.
fn check_flag(flags: &[String]) -> Result<(), String> {
    let argv = ["corral", "run"]
        .into_iter()
        .map(str::to_string)
        .chain(flags.iter().cloned());
    Cli::command()
        .try_get_matches_from(argv)
        .map(drop)
        .map_err(|err| first_line(&err.to_string()))
}

/// A profile's table as `NAME=value` variables.
fn env_variables(value: &Value) -> Result<Vec<String>, String> {
    let Value::Table(table) = value else {
        return Err("must be a table of variables, as NAME = \"value\"".into());
    };
    table
        .iter()
        .map(|(name, value)| env_variable(name, value))
        .collect()
}

/// `NAME = value` as `NAME=value`, checked as `--env` checks it.
fn env_variable(name: &str, value: &Value) -> Result<String, String> {
    let variable = format!("{name}={}", scalar(value)?);
    check_flag(&["--env".to_string(), variable.clone()])?;
    Ok(variable)
}

fn scalar(value: &Value) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Integer(number) => Ok(number.to_string()),
        Value::Float(number) => Ok(number.to_string()),
        Value::Boolean(flag) => Ok(flag.to_string()),
        _ => Err(format!("{value} is not a single value")),
    }
}

fn string(value: &Value) -> Result<String, String> {
    match value {
        Value::String(text) if !text.is_empty() => Ok(text.clone()),
        _ => Err("must be a program name or path, as \"python3\"".into()),
    }
}

fn strings(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Ok(text.clone()),
                other => Err(format!("{other} is not a string")),
            })
            .collect(),
        _ => Err("must be a list of strings, as [\"app.py\", \"--port\", \"0\"]".into()),
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// clap's message without its `error: ` prefix and usage lines.
fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or(message);
    line.trim_start_matches("error: ").to_string()
}

/// toml's multi-line report (`TOML parse error at line 7, column 5`, the
/// line, a caret, the reason) as one line.
fn one_line(message: &str) -> String {
    let mut lines = message.lines();
    let head = lines
        .next()
        .unwrap_or_default()
        .replace("TOML parse error at ", "");
    let reason = message
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty() && !line.trim_start().starts_with(['|', '^']))
        .unwrap_or_default();
    let reason = reason.trim();
    if reason.is_empty() || message.lines().count() == 1 {
        head
    } else {
        format!("{head}: {reason}")
    }
}

/// The settings `corral check` prints: the command, then every `run`
/// flag the file may set, in `--help`'s order, with the value the cluster
/// was given (defaults included), as the library describes it.
pub fn describe(run: &RunArgs, cluster: &corral::Cluster) -> Vec<(String, String)> {
    let command = if run.command.is_empty() {
        "(the demo worker)".into()
    } else {
        run.command
            .iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut values: BTreeMap<String, String> = cluster.describe().into_iter().collect();
    let mut settings = vec![(COMMAND.to_string(), command)];
    for key in run_flag_names().into_iter().chain([ENV.to_string()]) {
        let value = values.remove(&key).unwrap_or_default();
        settings.push((key, value));
    }
    settings
}

/// Where `--config` points, to read it again at each reload.
pub fn config_path(run: &RunArgs) -> Option<PathBuf> {
    run.config.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(text: &str) -> Result<FileFlags, String> {
        file_flags(Path::new("corral.toml"), text).map_err(|err| err.0)
    }

    #[test]
    fn keys_become_the_flags_of_the_same_name() {
        let parsed = flags(
            "command = \"python3\"\nargs = [\"app.py\"]\nworkers = 3\ngrace = 2.5\n\
             listen = [\"127.0.0.1:0\", \"[::1]:0\"]\nmax-memory = \"512M\"\n[env]\nAPP = \"x\"\n",
        )
        .unwrap();
        assert_eq!(parsed.command, ["python3", "app.py"]);
        assert_eq!(parsed.flags["workers"], ["--workers", "3"]);
        assert_eq!(parsed.flags["grace"], ["--grace", "2.5"]);
        assert_eq!(
            parsed.flags["listen"],
            ["--listen", "127.0.0.1:0", "--listen", "[::1]:0"]
        );
        assert_eq!(parsed.env, ["APP=x"]);
    }

    #[test]
    fn env_tables_are_the_base_and_profiles() {
        let parsed = flags(
            "env-name = \"prod\"\n[env]\nA = \"1\"\n[env.prod]\nA = \"2\"\nB = 3\n[env.dev]\n",
        )
        .unwrap();
        assert_eq!(parsed.env, ["A=1"]);
        assert_eq!(parsed.profiles["prod"], ["A=2", "B=3"]);
        assert!(parsed.profiles["dev"].is_empty());
        assert_eq!(parsed.flags["env-name"], ["--env-name", "prod"]);
        let err = flags("[env.prod]\nCORRAL_X = \"1\"\n").unwrap_err();
        assert!(err.contains("line 1: env: [env.prod]: "), "{err}");
    }

    #[test]
    fn watch_is_true_false_or_paths() {
        assert_eq!(flags("watch = true\n").unwrap().flags["watch"], ["--watch"]);
        assert!(
            !flags("watch = false\n")
                .unwrap()
                .flags
                .contains_key("watch")
        );
        assert_eq!(
            flags("watch = [\"src\", \"lib\"]\n").unwrap().flags["watch"],
            ["--watch", "src", "--watch", "lib"]
        );
        assert_eq!(
            flags("watch = \"src\"\n").unwrap().flags["watch"],
            ["--watch", "src"]
        );
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let text = "workers = 2\n\n# comment\n\n\n\ngrace = -1\n";
        let err = flags(text).unwrap_err();
        assert!(err.starts_with("corral.toml line 7: grace: "), "{err}");
        let err = flags("workers = 2\ngracee = 1\n").unwrap_err();
        assert!(
            err.starts_with("corral.toml line 2: gracee: unknown key"),
            "{err}"
        );
        let err = flags("workers = 0\n").unwrap_err();
        assert!(err.contains("line 1: workers"), "{err}");
        let err = flags("a = = 1\n").unwrap_err();
        assert!(err.contains("line 1, column"), "{err}");
        let err = flags("args = [\"x\"]\n").unwrap_err();
        assert!(
            err.contains("line 1: args: there are arguments but no command"),
            "{err}"
        );
        let err = flags("[env]\nCORRAL_WORKER_ID = \"3\"\n").unwrap_err();
        assert!(err.contains("env"), "{err}");
    }

    #[test]
    fn every_run_flag_is_a_key() {
        let names = run_flag_names();
        for flag in ["workers", "listen", "grace", "max-memory", "user", "policy"] {
            assert!(names.iter().any(|name| name == flag), "{flag}: {names:?}");
        }
    }

    #[test]
    fn check_prints_every_setting_the_library_has_and_every_flag() {
        let printed: Vec<String> = corral::Cluster::new()
            .describe()
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        let mut flags = run_flag_names();
        flags.push(ENV.to_string());
        for key in &printed {
            assert!(flags.contains(key), "{key} is no `run` flag");
        }
        for flag in &flags {
            assert!(printed.contains(flag), "--{flag} is not printed");
        }
    }

    #[test]
    fn lines_count_from_one() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 4), 3);
    }
}
