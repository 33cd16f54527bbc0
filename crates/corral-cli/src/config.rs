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
/// The tables of a file with several apps: `[apps.NAME]`.
const APPS: &str = "apps";
/// Flags that make no sense in the file itself.
const NOT_IN_FILE: &[&str] = &["config", "app", "help", "state-dir"];

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
/// after `corral run`, as given). A file with `[apps.NAME]` tables gives
/// the settings of the app `--app` names (or of its only app).
pub fn resolve(file: &Path, cli: &[OsString]) -> Result<RunArgs, ConfigError> {
    let text =
        corral::cli_support::read_config_file(file).map_err(|err| ConfigError(err.to_string()))?;
    let document = Document::parse(file, &text)?;
    let given = given_on_command_line(cli)?;
    let app = chosen_app(cli)?;
    let from_file = document.flags(file, app.as_deref())?;
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

/// The names of the apps of `file` (its `[apps.NAME]` tables), or none
/// when it describes one cluster.
pub fn app_names(file: &Path) -> Result<Vec<String>, ConfigError> {
    let text =
        corral::cli_support::read_config_file(file).map_err(|err| ConfigError(err.to_string()))?;
    let document = Document::parse(file, &text)?;
    Ok(document.apps.into_iter().map(|app| app.name).collect())
}

/// Every cluster `file` describes, each with its `run` settings: one per
/// `[apps.NAME]` table (named NAME), or the file's one cluster (named "").
/// Two that would share a name or a control socket are an error.
pub fn apps(file: &Path) -> Result<Vec<(String, RunArgs)>, ConfigError> {
    let names = app_names(file)?;
    let clusters = if names.is_empty() {
        vec![(String::new(), resolve(file, &[])?)]
    } else {
        names
            .into_iter()
            .map(|name| {
                let given: [OsString; 4] = [
                    "--config".into(),
                    file.into(),
                    "--app".into(),
                    name.clone().into(),
                ];
                let run = resolve(file, &given)?;
                Ok((name, run))
            })
            .collect::<Result<Vec<_>, ConfigError>>()?
    };
    let described: Vec<(&str, BTreeMap<String, String>)> = clusters
        .iter()
        .map(|(app, run)| (app.as_str(), run.cluster().describe().into_iter().collect()))
        .collect();
    for (at, (app, settings)) in described.iter().enumerate() {
        for (other, other_settings) in &described[..at] {
            for key in ["name", "control"] {
                let (mine, theirs) = (&settings[key], &other_settings[key]);
                if mine == theirs && mine != "none" {
                    return Err(ConfigError(format!(
                        "{}: apps {other} and {app} have the same {key} ({mine}): give each \
                         its own with name = \"…\" in its [apps.NAME] table",
                        file.display()
                    )));
                }
            }
        }
    }
    Ok(clusters)
}

/// `--app NAME` among the arguments after `corral run`.
fn chosen_app(cli: &[OsString]) -> Result<Option<String>, ConfigError> {
    let mut argv: Vec<OsString> = vec!["corral".into(), "run".into()];
    argv.extend(cli.iter().cloned());
    match Cli::try_parse_from_os(argv) {
        Ok(Cli {
            command: Command::Run(run),
            ..
        }) => Ok(run.app),
        Ok(_) => Ok(None),
        Err(err) => Err(ConfigError(first_line(&err.to_string()))),
    }
}

/// An app's name names its cluster, control socket and systemd unit.
fn is_app_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// One table's keys, each with its line and value.
type Keys = BTreeMap<String, (usize, Value)>;

/// A configuration file: its top-level keys (the settings of its one
/// cluster, or shared by every app) and its `[apps.NAME]` tables.
#[derive(Debug, Default)]
struct Document {
    shared: Keys,
    apps: Vec<App>,
}

#[derive(Debug)]
struct App {
    name: String,
    line: usize,
    keys: Keys,
}

/// The `[apps]` table, read again with its apps' keys' positions.
#[derive(serde::Deserialize)]
struct AppTables {
    #[serde(default)]
    apps: BTreeMap<Spanned<String>, BTreeMap<Spanned<String>, Spanned<Value>>>,
}

impl Document {
    fn parse(file: &Path, text: &str) -> Result<Document, ConfigError> {
        let name = file.display();
        let syntax =
            |err: toml::de::Error| ConfigError(format!("{name}: {}", one_line(&err.to_string())));
        let top: BTreeMap<Spanned<String>, Spanned<Value>> =
            toml::from_str(text).map_err(syntax)?;
        let mut document = Document::default();
        for (key, value) in top {
            let line = line_of(text, key.span().start);
            if key.get_ref() == APPS {
                if !matches!(value.get_ref(), Value::Table(_)) {
                    return Err(ConfigError(format!(
                        "{name} line {line}: {APPS}: must be tables, as [apps.api] then its keys"
                    )));
                }
                continue;
            }
            document
                .shared
                .insert(key.into_inner(), (line, value.into_inner()));
        }
        let tables: AppTables = toml::from_str(text).map_err(|err| {
            ConfigError(format!(
                "{name}: {}: each app is a table, as [apps.api] then its keys",
                one_line(&err.to_string())
            ))
        })?;
        for (app, keys) in tables.apps {
            let line = line_of(text, app.span().start);
            let app_name = app.into_inner();
            if !is_app_name(&app_name) {
                return Err(ConfigError(format!(
                    "{name} line {line}: [apps.{app_name:?}]: an app's name is its cluster's \
                     and its unit's: use letters, digits, '-', '_' or '.' (not first)"
                )));
            }
            let keys = keys
                .into_iter()
                .map(|(key, value)| {
                    let line = line_of(text, key.span().start);
                    (key.into_inner(), (line, value.into_inner()))
                })
                .collect();
            document.apps.push(App {
                name: app_name,
                line,
                keys,
            });
        }
        Ok(document)
    }

    /// The flags and command of the cluster `app` names: the shared keys,
    /// and over them the app's own (its [env] added to the shared one).
    fn flags(&self, file: &Path, app: Option<&str>) -> Result<FileFlags, ConfigError> {
        let name = file.display();
        if self.apps.is_empty() {
            if let Some(app) = app {
                return Err(ConfigError(format!(
                    "{name}: --app {app}: the file has no [apps.NAME] tables: leave out --app"
                )));
            }
            return keys_flags(file, "", &self.shared);
        }
        let names = || {
            self.apps
                .iter()
                .map(|app| app.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let chosen = match app {
            Some(wanted) => self
                .apps
                .iter()
                .find(|app| app.name == wanted)
                .ok_or_else(|| {
                    ConfigError(format!(
                        "{name}: no app named {wanted}: the apps are {}",
                        names()
                    ))
                })?,
            None if self.apps.len() == 1 => &self.apps[0],
            None => {
                return Err(ConfigError(format!(
                    "{name} has several apps ({}): choose one with --app NAME",
                    names()
                )));
            }
        };
        let mut keys = self.shared.clone();
        for (key, (line, value)) in &chosen.keys {
            let merged = match (key.as_str(), keys.get(key), value) {
                (ENV, Some((_, Value::Table(shared))), Value::Table(own)) => {
                    let mut env = shared.clone();
                    env.extend(own.clone());
                    Value::Table(env)
                }
                _ => value.clone(),
            };
            keys.insert(key.clone(), (*line, merged));
        }
        if !chosen.keys.contains_key("name") {
            keys.insert(
                "name".to_string(),
                (chosen.line, Value::String(chosen.name.clone())),
            );
        }
        keys_flags(file, &format!("[apps.{}] ", chosen.name), &keys)
    }
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

/// One cluster's keys as flags; `app` (`[apps.NAME] ` or empty) goes
/// before a key in an error.
fn keys_flags(file: &Path, app: &str, keys: &Keys) -> Result<FileFlags, ConfigError> {
    let name = file.display();
    let flag_names = run_flag_names();
    let mut out = FileFlags::default();
    let mut command: Option<String> = None;
    let mut args: Vec<String> = Vec::new();
    for (key, (line, value)) in keys {
        let key = key.as_str();
        let value = Spanned::new(0..0, value.clone());
        let at =
            |message: String| ConfigError(format!("{name} line {line}: {app}{key}: {message}"));
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
            "cwd" => {
                let dir = string(value.get_ref())
                    .map_err(|_| at("must be a directory, as \"/srv/api\"".into()))?;
                let base = file.parent().unwrap_or(Path::new(""));
                let dir = std::path::absolute(base.join(&dir)).unwrap_or_else(|_| base.join(dir));
                out.flags.insert(
                    key.to_string(),
                    vec!["--cwd".into(), dir.display().to_string()],
                );
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
            let line = keys.get(ARGS).map_or(1, |(line, _)| *line);
            return Err(ConfigError(format!(
                "{name} line {line}: {app}args: there are arguments but no command: add \
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
        let value = match key.as_str() {
            "cwd" => match &run.cwd {
                Some(dir) => dir.display().to_string(),
                None => "(the current directory)".to_string(),
            },
            _ => values.remove(&key).unwrap_or_default(),
        };
        settings.push((key, value));
    }
    settings
}

/// Where `--config` points, to read it again at each reload.
/// Absolute, as `--cwd` changes the directory before a reload reads it.
pub fn config_path(run: &RunArgs) -> Option<PathBuf> {
    run.config
        .as_ref()
        .map(|path| std::path::absolute(path).unwrap_or_else(|_| path.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flags of the command line itself, not settings of the library:
    /// `describe` prints them from the flags.
    const CLI_ONLY: &[&str] = &["cwd"];

    fn flags(text: &str) -> Result<FileFlags, String> {
        app_flags(text, None)
    }

    fn app_flags(text: &str, app: Option<&str>) -> Result<FileFlags, String> {
        let file = Path::new("corral.toml");
        Document::parse(file, text)
            .and_then(|document| document.flags(file, app))
            .map_err(|err| err.0)
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

    const TWO_APPS: &str = "grace = 3\n[env]\nSHARED = \"1\"\n\n[apps.api]\ncommand = \"node\"\n\
                            args = [\"api.js\"]\nworkers = 2\n[apps.api.env]\nPORT = \"3000\"\n\n\
                            [apps.jobs]\ncommand = \"python3\"\ngrace = 9\n";

    #[test]
    fn an_app_takes_the_shared_keys_under_its_own() {
        let api = app_flags(TWO_APPS, Some("api")).unwrap();
        assert_eq!(api.command, ["node", "api.js"]);
        assert_eq!(api.flags["grace"], ["--grace", "3"]);
        assert_eq!(api.flags["workers"], ["--workers", "2"]);
        assert_eq!(api.flags["name"], ["--name", "api"]);
        assert_eq!(api.env, ["PORT=3000", "SHARED=1"]);
        let jobs = app_flags(TWO_APPS, Some("jobs")).unwrap();
        assert_eq!(jobs.command, ["python3"]);
        assert_eq!(jobs.flags["grace"], ["--grace", "9"]);
        assert_eq!(jobs.env, ["SHARED=1"]);
        assert_eq!(jobs.flags["name"], ["--name", "jobs"]);
    }

    #[test]
    fn apps_must_be_chosen_and_their_errors_name_them() {
        let err = app_flags(TWO_APPS, None).unwrap_err();
        assert!(
            err.contains("several apps (api, jobs): choose one with --app NAME"),
            "{err}"
        );
        let err = app_flags(TWO_APPS, Some("web")).unwrap_err();
        assert!(
            err.contains("no app named web: the apps are api, jobs"),
            "{err}"
        );
        let err = app_flags("workers = 2\n", Some("api")).unwrap_err();
        assert!(err.contains("no [apps.NAME] tables"), "{err}");
        let one = app_flags("[apps.solo]\ncommand = \"x\"\n", None).unwrap();
        assert_eq!(one.flags["name"], ["--name", "solo"]);
        let err =
            app_flags("[apps.api]\ncommand = \"x\"\n\ngrace = -1\n", Some("api")).unwrap_err();
        assert!(
            err.starts_with("corral.toml line 4: [apps.api] grace: "),
            "{err}"
        );
        let err = app_flags("[apps.api]\nwrkers = 1\n", Some("api")).unwrap_err();
        assert!(
            err.contains("line 2: [apps.api] wrkers: unknown key"),
            "{err}"
        );
        let err = app_flags("apps = 3\n", None).unwrap_err();
        assert!(err.contains("line 1: apps: must be tables"), "{err}");
        let err = app_flags("[apps]\napi = 3\n", None).unwrap_err();
        assert!(err.contains("each app is a table"), "{err}");
        let err = app_flags("[apps.\"a/b\"]\ncommand = \"x\"\n", None).unwrap_err();
        assert!(err.contains("line 1: [apps.\"a/b\"]"), "{err}");
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
        flags.retain(|flag| !CLI_ONLY.contains(&flag.as_str()));
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
