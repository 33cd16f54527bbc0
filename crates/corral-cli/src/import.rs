//! `corral import ecosystem.config.js`: a pm2 ecosystem file as a
//! `corral.toml` with one `[apps.NAME]` table per app. The file is a
//! program (CommonJS, ESM or JSON), so `node` evaluates it, once, and
//! prints its apps as JSON; each pm2 key becomes the corral key it means,
//! and each key corral has no counterpart for becomes a comment in the
//! file and one line on stderr.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use serde_json::{Map, Value};

use crate::args::ImportArgs;

/// Evaluates the ecosystem file named by `CORRAL_IMPORT_FILE` and prints
/// its apps as a JSON array: `require` for CommonJS, `import()` for ESM
/// (.mjs, or a .js that `require` refuses as ESM), `JSON.parse` for JSON.
const EVALUATE: &str = r#"
const path = require('path');
const url = require('url');
const file = path.resolve(process.env.CORRAL_IMPORT_FILE);
const load = async () => {
  if (file.endsWith('.json')) return JSON.parse(require('fs').readFileSync(file, 'utf8'));
  const esm = async () => (await import(url.pathToFileURL(file).href)).default;
  if (file.endsWith('.mjs')) return esm();
  try {
    return require(file);
  } catch (err) {
    if (err && (err.code === 'ERR_REQUIRE_ESM' || err instanceof SyntaxError)) return esm();
    throw err;
  }
};
load().then((config) => {
  if (config && !Array.isArray(config) && !config.apps && config.default) config = config.default;
  const apps = Array.isArray(config) ? config : config && config.apps;
  if (!Array.isArray(apps)) {
    console.error('it has no apps: an ecosystem file exports { apps: [ ... ] }');
    process.exit(3);
  }
  process.stdout.write(JSON.stringify(apps));
}, (err) => {
  const where = String(err && err.stack || '').split('\n')[0];
  const what = err && err.name ? `${err.name}: ${err.message}` : String(err);
  console.error(/:\d+$/.test(where) ? `${what} (${where})` : what.split('\n')[0]);
  process.exit(3);
});
"#;

/// `corral import FILE [-o OUT]`.
pub fn run(args: &ImportArgs) -> anyhow::Result<()> {
    let apps = evaluate(&args.file)?;
    let base = args
        .file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let imported = convert(&args.file, &base, &apps)?;
    let mut stderr = std::io::stderr().lock();
    for note in &imported.notes {
        writeln!(stderr, "{note}")?;
    }
    match &args.output {
        Some(out) => {
            if out.exists() && !args.force {
                bail!(
                    "{} exists: choose another -o, or add --force to replace it",
                    out.display()
                );
            }
            std::fs::write(out, &imported.toml)
                .with_context(|| format!("cannot write {}", out.display()))?;
            writeln!(
                stderr,
                "wrote {} ({} app{}): check it with `corral check {}`, run one with `corral run \
                 --config {} --app NAME`",
                out.display(),
                imported.apps,
                if imported.apps == 1 { "" } else { "s" },
                out.display(),
                out.display()
            )?;
        }
        None => std::io::stdout()
            .lock()
            .write_all(imported.toml.as_bytes())?,
    }
    Ok(())
}

/// The apps of the ecosystem file, as `node` evaluates it.
fn evaluate(file: &Path) -> anyhow::Result<Vec<Value>> {
    let name = file.display();
    let known = ["js", "cjs", "mjs", "json"];
    let extension = file.extension().and_then(|ext| ext.to_str()).unwrap_or("");
    if !known.contains(&extension) {
        bail!("{name}: an ecosystem file ends in .js, .cjs, .mjs or .json");
    }
    if !file.is_file() {
        bail!("{name}: no such file: give the path of the ecosystem file");
    }
    let output = Command::new("node")
        .args(["-e", EVALUATE])
        .env("CORRAL_IMPORT_FILE", file)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| {
            anyhow::anyhow!(
                "{name}: cannot run node to read it ({err}): corral import needs node on PATH"
            )
        })?;
    if !output.status.success() {
        let why = String::from_utf8_lossy(&output.stderr);
        bail!("{name}: node cannot read it: {}", why.trim());
    }
    serde_json::from_slice(&output.stdout)
        .with_context(|| format!("{name}: node printed no list of apps"))
}

/// The configuration written, and the notes printed.
#[derive(Debug)]
pub struct Imported {
    pub toml: String,
    pub notes: Vec<String>,
    pub apps: usize,
}

/// The pm2 keys with no counterpart yet, and what to do meanwhile.
const NO_COUNTERPART: &[(&str, &str)] = &[
    (
        "ignore_watch",
        "--watch skips .git, node_modules and what .gitignore ignores; watch = [PATHS] narrows it",
    ),
    (
        "watch_delay",
        "--watch reloads 300 ms after the last change",
    ),
    (
        "out_file",
        "corral keeps one log file of every line, log-file = PATH (corral start keeps one anyway)",
    ),
    (
        "error_file",
        "corral keeps one log file of every line, log-file = PATH (corral start keeps one anyway)",
    ),
    (
        "log_date_format",
        "corral's own lines carry an RFC 3339 timestamp",
    ),
    ("merge_logs", "each line names its worker: [worker N]"),
    ("combine_logs", "each line names its worker: [worker N]"),
    ("time", "corral's own lines carry an RFC 3339 timestamp"),
    ("autorestart", "corral always restarts a worker that exits"),
    (
        "max_restarts",
        "corral backs off instead: stable-after, max-restart-delay",
    ),
    (
        "restart_delay",
        "corral backs off instead: max-restart-delay",
    ),
    (
        "exp_backoff_restart_delay",
        "corral backs off instead: max-restart-delay",
    ),
    ("increment_var", "each worker has CORRAL_WORKER_ID"),
    ("instance_var", "each worker has CORRAL_WORKER_ID"),
    ("namespace", "a cluster is found by its name"),
];

/// Keys read as part of another key, or that need nothing in corral.
const SILENT: &[&str] = &[
    "name",
    "script",
    "args",
    "interpreter",
    "interpreter_args",
    "node_args",
];

/// The corral configuration the apps describe.
pub fn convert(file: &Path, base: &Path, apps: &[Value]) -> anyhow::Result<Imported> {
    let mut toml = format!(
        "# Imported from {} by `corral import`: one [apps.NAME] table per pm2 app.\n\
         # Run one with `corral run --config FILE --app NAME`; check with `corral check FILE`.\n",
        file.display()
    );
    let mut notes = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (index, app) in apps.iter().enumerate() {
        let Value::Object(app) = app else {
            bail!("{}: app {} is not an object", file.display(), index + 1);
        };
        let name = app_name(app, index);
        if names.contains(&name) {
            bail!(
                "{}: two apps are named {name}: give each its own name",
                file.display()
            );
        }
        names.push(name.clone());
        let table = convert_app(&name, app, base, &mut notes)?;
        toml.push('\n');
        toml.push_str(&table);
    }
    Ok(Imported {
        toml,
        notes,
        apps: names.len(),
    })
}

/// An app's name as a table name: pm2's `name`, else its script's file
/// name without extension (as pm2 names it), in the characters corral
/// takes.
fn app_name(app: &Map<String, Value>, index: usize) -> String {
    let given = match (app.get("name"), app.get("script")) {
        (Some(Value::String(name)), _) => name.clone(),
        (_, Some(Value::String(script))) => Path::new(script)
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default(),
        _ => String::new(),
    };
    let cleaned: String = given
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('.').to_string();
    if cleaned.is_empty() {
        format!("app{}", index + 1)
    } else {
        cleaned
    }
}

fn convert_app(
    name: &str,
    app: &Map<String, Value>,
    base: &Path,
    notes: &mut Vec<String>,
) -> anyhow::Result<String> {
    let mut keys: Vec<String> = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    let mut env = String::new();
    let mut profiles = String::new();
    let note = |notes: &mut Vec<String>, comments: &mut Vec<String>, key: &str, why: &str| {
        let value = app.get(key).map(Value::to_string).unwrap_or_default();
        notes.push(format!(
            "{name}: {key}: no counterpart in corral yet ({why})"
        ));
        comments.push(format!(
            "# {key} = {value}: no counterpart in corral yet ({why})"
        ));
    };

    // The directory the app runs in: its cwd, else the ecosystem file's.
    let cwd = match app.get("cwd") {
        Some(Value::String(cwd)) => absolute(&base.join(cwd)),
        _ => base.to_path_buf(),
    };
    let (command, args) = command_line(name, app)?;
    keys.push(format!("command = {}", quoted(&command)));
    if !args.is_empty() {
        let list: Vec<String> = args.iter().map(|arg| quoted(arg)).collect();
        keys.push(format!("args = [{}]", list.join(", ")));
    }

    if !app.contains_key("instances") {
        // pm2 runs one process unless told more; corral one per CPU.
        keys.push("workers = 1".into());
    }
    for (key, value) in app {
        match key.as_str() {
            key if SILENT.contains(&key) => {}
            "instances" => match instances(value) {
                Some(Some(count)) => keys.push(format!("workers = {count}")),
                Some(None) => comments.push(format!(
                    "# instances = {value}: corral's default, one worker per CPU"
                )),
                None => note(notes, &mut comments, key, "give workers = N"),
            },
            "exec_mode" => comments.push(format!(
                "# exec_mode = {value}: corral runs every app as a cluster (Node programs get \
                 corral as their cluster primary)"
            )),
            "env" => match value {
                Value::Object(vars) => env = env_table(name, None, vars, notes)?,
                _ => note(notes, &mut comments, key, "env must be an object"),
            },
            "max_memory_restart" => match memory(value) {
                Some(size) => keys.push(format!("max-memory = {}", quoted(&size))),
                None => note(notes, &mut comments, key, "give max-memory = \"512M\""),
            },
            "kill_timeout" => match milliseconds(value) {
                Some(seconds) => keys.push(format!("grace = {seconds}")),
                None => note(notes, &mut comments, key, "give grace = SECONDS"),
            },
            "listen_timeout" => match milliseconds(value) {
                Some(seconds) => keys.push(format!("ready-timeout = {seconds}")),
                None => note(notes, &mut comments, key, "give ready-timeout = SECONDS"),
            },
            "min_uptime" => match milliseconds(value) {
                Some(seconds) if seconds >= 1.0 => keys.push(format!("stable-after = {seconds}")),
                _ => note(
                    notes,
                    &mut comments,
                    key,
                    "give stable-after = SECONDS (1 at least)",
                ),
            },
            "wait_ready" => match value {
                Value::Bool(true) => keys.push("ready = \"message\"".into()),
                _ => comments.push(format!("# wait_ready = {value}: corral's ready = \"auto\"")),
            },
            "cwd" => keys.push(format!("cwd = {}", quoted(&cwd.display().to_string()))),
            "uid" | "gid" => {}
            key if key.starts_with("env_") => match value {
                Value::Object(vars) => {
                    let profile = &key["env_".len()..];
                    profiles.push_str(&env_table(name, Some(profile), vars, notes)?);
                }
                _ => note(notes, &mut comments, key, "a profile must be an object"),
            },
            "watch" => match value {
                Value::Bool(true) => keys.push("watch = true".into()),
                Value::Bool(false) => {}
                Value::String(path) => keys.push(format!("watch = [{}]", quoted(path))),
                Value::Array(_) => {
                    let list: Vec<String> = words(value).iter().map(|path| quoted(path)).collect();
                    keys.push(format!("watch = [{}]", list.join(", ")));
                }
                _ => note(
                    notes,
                    &mut comments,
                    key,
                    "give watch = true or a list of paths",
                ),
            },
            "cron_restart" => match value {
                Value::String(cron) => {
                    keys.push(format!("reload-at = {}", quoted(cron)));
                    comments.push(
                        "# reload-at is in UTC (pm2's cron_restart runs in local time), and \
                         reloads without downtime"
                            .into(),
                    );
                }
                _ => note(notes, &mut comments, key, "give reload-at = \"CRON\""),
            },
            "log_file" => match value {
                Value::String(path) => keys.push(format!("log-file = {}", quoted(path))),
                _ => note(notes, &mut comments, key, "give log-file = PATH"),
            },
            // Off, or what corral does anyway: nothing to say.
            "merge_logs" | "combine_logs" | "time" if value == &Value::Bool(false) => {}
            "autorestart" if value == &Value::Bool(true) => {}
            _ if value.is_null() => {}
            key => match NO_COUNTERPART.iter().find(|(known, _)| *known == key) {
                Some((_, why)) => note(notes, &mut comments, key, why),
                None => note(notes, &mut comments, key, "not a key corral knows"),
            },
        }
    }
    if let Some(user) = user(app) {
        keys.push(format!("user = {}", quoted(&user)));
    }

    let mut table = format!("[apps.{name}]\n");
    for line in keys.iter().chain(&comments) {
        table.push_str(line);
        table.push('\n');
    }
    table.push_str(&env);
    table.push_str(&profiles);
    Ok(table)
}

/// The program and its arguments: pm2's `script` run by its interpreter
/// (given, or chosen by its extension as pm2 does), with the
/// interpreter's arguments before it and `args` after it.
fn command_line(name: &str, app: &Map<String, Value>) -> anyhow::Result<(String, Vec<String>)> {
    let Some(Value::String(script)) = app.get("script") else {
        bail!("app {name} has no script: pm2 needs one too");
    };
    // As given: corral runs in the app's cwd (the `cwd` key), as pm2 does.
    let script_path = script.clone();
    let interpreter = match app
        .get("interpreter")
        .or_else(|| app.get("exec_interpreter"))
    {
        Some(Value::String(interpreter)) if interpreter == "none" => None,
        Some(Value::String(interpreter)) => Some(interpreter.clone()),
        _ => by_extension(script).map(str::to_string),
    };
    let mut interpreter_args = Vec::new();
    for key in ["interpreter_args", "node_args"] {
        if let Some(value) = app.get(key) {
            interpreter_args.extend(words(value));
        }
    }
    let script_args = app.get("args").map(words).unwrap_or_default();
    Ok(match interpreter {
        Some(interpreter) => {
            let mut args = interpreter_args;
            args.push(script_path);
            args.extend(script_args);
            (interpreter, args)
        }
        None => (script_path, script_args),
    })
}

/// The interpreter pm2 picks by a script's extension.
fn by_extension(script: &str) -> Option<&'static str> {
    let extension = Path::new(script).extension()?.to_str()?;
    Some(match extension {
        "js" | "cjs" | "mjs" => "node",
        "ts" => "ts-node",
        "py" => "python3",
        "sh" => "bash",
        "rb" => "ruby",
        "php" => "php",
        "pl" => "perl",
        _ => return None,
    })
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// pm2's `args`: a list, or one string split at spaces (quotes kept
/// together).
fn words(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            })
            .collect(),
        Value::String(text) => split_words(text),
        Value::Null => Vec::new(),
        other => vec![other.to_string()],
    }
}

fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    for c in text.chars() {
        match (quote, c) {
            (Some(open), c) if c == open => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                started = true;
            }
            (None, c) if c.is_whitespace() => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (None, c) => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

/// pm2's `instances`: a count; `max`, 0 and -1 are one per CPU
/// (`Some(None)`); anything else (-2: all CPUs but two) has no counterpart.
fn instances(value: &Value) -> Option<Option<u64>> {
    match value {
        Value::String(text) if text == "max" => Some(None),
        Value::String(text) => instances(&Value::from(text.parse::<i64>().ok()?)),
        Value::Number(number) => match number.as_i64()? {
            0 | -1 => Some(None),
            count @ 1..=1024 => Some(Some(count as u64)),
            _ => None,
        },
        _ => None,
    }
}

/// pm2's `max_memory_restart`: `300M`, `1G`, `512K` or bytes.
fn memory(value: &Value) -> Option<String> {
    let text = match value {
        Value::Number(number) => number.as_u64().filter(|&bytes| bytes > 0)?.to_string(),
        Value::String(text) => text.trim().to_string(),
        _ => return None,
    };
    crate::args::parse_size(&text).ok().map(|_| text)
}

/// pm2's milliseconds (a number, or a string of digits) as seconds.
fn milliseconds(value: &Value) -> Option<f64> {
    let ms = match value {
        Value::Number(number) => number.as_f64()?,
        Value::String(text) => text.trim().parse().ok()?,
        _ => return None,
    };
    (ms >= 0.0 && ms.is_finite()).then_some(ms / 1000.0)
}

/// pm2's `uid` and `gid` as corral's USER[:GROUP].
fn user(app: &Map<String, Value>) -> Option<String> {
    let text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let uid = app.get("uid").map(text)?;
    Some(match app.get("gid").map(text) {
        Some(gid) => format!("{uid}:{gid}"),
        None => uid,
    })
}

/// The app's `env` as its `[apps.NAME.env]` table, or its `env_PROFILE` as
/// `[apps.NAME.env.PROFILE]` (selected with `--env-name PROFILE`); corral's
/// own variables are left out with a note.
fn env_table(
    name: &str,
    profile: Option<&str>,
    vars: &Map<String, Value>,
    notes: &mut Vec<String>,
) -> anyhow::Result<String> {
    let mut table = match profile {
        None => format!("[apps.{name}.env]\n"),
        Some(profile) => format!("[apps.{name}.env.{}]\n", quoted_key(profile)),
    };
    for (key, value) in vars {
        let value = match value {
            Value::String(text) => text.clone(),
            Value::Number(_) | Value::Bool(_) => value.to_string(),
            Value::Null => continue,
            other => {
                notes.push(format!(
                    "{name}: env.{key}: {other} is not a single value; left out"
                ));
                continue;
            }
        };
        if let Err(err) = corral::cli_support::check_env_variable(key.as_ref(), value.as_ref()) {
            notes.push(format!("{name}: env.{key}: left out: {err}"));
            continue;
        }
        table.push_str(&format!("{} = {}\n", quoted_key(key), quoted(&value)));
    }
    Ok(table)
}

fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// A key bare when TOML allows it, else quoted.
fn quoted_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    {
        key.to_string()
    } else {
        quoted(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn import(json: &str) -> Imported {
        let apps: Vec<Value> = serde_json::from_str(json).unwrap();
        convert(Path::new("ecosystem.config.js"), Path::new("/srv"), &apps).unwrap()
    }

    #[test]
    fn each_pm2_key_becomes_its_corral_key() {
        let imported = import(
            r#"[{"name": "api", "script": "server.js", "args": "--port 3000 'a b'",
                 "instances": 4, "exec_mode": "cluster", "max_memory_restart": "300M",
                 "kill_timeout": 5000, "listen_timeout": 8000, "wait_ready": true,
                 "node_args": ["--max-old-space-size=256"],
                 "env": {"NODE_ENV": "development", "PORT": 3000}},
                {"script": "worker.py", "instances": "max", "watch": true,
                 "env_production": {"NODE_ENV": "production"}, "uid": "www"}]"#,
        );
        let toml = &imported.toml;
        for line in [
            "[apps.api]\ncommand = \"node\"\n\
             args = [\"--max-old-space-size=256\", \"server.js\", \"--port\", \"3000\", \"a b\"]\n",
            "workers = 4\n",
            "max-memory = \"300M\"\n",
            "grace = 5\n",
            "ready-timeout = 8\n",
            "ready = \"message\"\n",
            "[apps.api.env]\nNODE_ENV = \"development\"\nPORT = \"3000\"\n",
            "[apps.worker]\ncommand = \"python3\"\nargs = [\"worker.py\"]\n",
            "# instances = \"max\": corral's default",
            "watch = true\n",
            "[apps.worker.env.production]\nNODE_ENV = \"production\"\n",
            "user = \"www\"\n",
        ] {
            assert!(toml.contains(line), "{line:?} in\n{toml}");
        }
        assert_eq!(imported.apps, 2);
        assert!(imported.notes.is_empty(), "{:?}", imported.notes);
    }

    #[test]
    fn a_cwd_is_made_absolute_against_the_ecosystem_files_directory() {
        let imported = import(r#"[{"name": "x", "script": "./bin/www", "cwd": "app"}]"#);
        assert!(
            imported
                .toml
                .contains("command = \"./bin/www\"\nworkers = 1\ncwd = \"/srv/app\"\n"),
            "{}",
            imported.toml
        );
        assert!(imported.notes.is_empty(), "{:?}", imported.notes);
    }

    #[test]
    fn odd_values_are_notes_not_errors() {
        let imported = import(
            r#"[{"name": "a b", "script": "npm", "args": "start", "instances": -2,
                 "max_memory_restart": "lots", "env": {"CORRAL_WORKER_ID": "1", "X": {"y": 1}}}]"#,
        );
        assert!(
            imported
                .toml
                .contains("[apps.a-b]\ncommand = \"npm\"\nargs = [\"start\"]\n")
        );
        assert_eq!(imported.notes.len(), 4, "{:?}", imported.notes);
        let apps: Vec<Value> =
            serde_json::from_str(r#"[{"name": "a", "script": "x"}, {"name": "a", "script": "y"}]"#)
                .unwrap();
        let err = convert(Path::new("e.js"), Path::new("/"), &apps).unwrap_err();
        assert!(err.to_string().contains("two apps are named a"), "{err}");
    }

    #[test]
    fn words_split_at_spaces_outside_quotes() {
        assert_eq!(split_words(" a  'b c' \"d\"e "), ["a", "b c", "de"]);
        assert!(split_words("  ").is_empty());
        assert_eq!(split_words("''"), [""]);
    }
}
