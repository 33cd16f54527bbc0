//! Background clusters: `corral start` runs `corral run` in a session of
//! its own, its log on disk, and returns once every worker is ready (or
//! the cluster failed). There is no central daemon: each cluster is its
//! own primary, as under `corral run`, and what outlives it is a directory
//! per cluster in the user's state directory:
//!
//! * `cluster.json`: what `corral start` started (name, pid, command, log);
//! * `exit.json`: written by the primary's `corral run` as it exits (code,
//!   error, when): `corral ls` shows stopped and failed clusters from it;
//! * `corral.log` (and `corral.log.1` …): the log, unless `--log-file`.
//!
//! `corral delete NAME` removes the directory.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use corral::cli_support::client::Client;
use serde::{Deserialize, Serialize};

use crate::args::{LogFormatArg, RunArgs};

/// What `corral start` records.
pub(crate) const RECORD: &str = "cluster.json";
/// What the primary records as it exits.
pub(crate) const EXIT: &str = "exit.json";
/// The log's file name in the cluster's state directory.
pub(crate) const LOG: &str = "corral.log";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub name: String,
    pub pid: u32,
    pub command: Vec<String>,
    pub cwd: PathBuf,
    pub log: PathBuf,
    /// Seconds since the epoch.
    pub started_at: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ExitRecord {
    pub pid: u32,
    /// 0: stopped as asked; else failed, for `error`.
    pub code: i32,
    pub error: Option<String>,
    /// Seconds since the epoch.
    pub at: f64,
}

/// Where background clusters keep their records and logs:
/// `$XDG_STATE_HOME/corral`, else `~/.local/state/corral`; for root
/// without `XDG_STATE_HOME`, `/var/lib/corral`.
pub(crate) fn state_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("corral");
    }
    if is_root() {
        return PathBuf::from("/var/lib/corral");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/state/corral"),
        None => PathBuf::from("/var/lib/corral"),
    }
}

fn is_root() -> bool {
    // The owner of /proc/self is this process's effective user.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

pub(crate) fn state_dir(name: &str) -> PathBuf {
    state_root().join(name)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn write_json(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let partial = path.with_extension("json.partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, path)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// In the `corral run` that `corral start` started: a session of its own,
/// away from the terminal `corral start` ran in.
pub(crate) fn detach() {
    let _ = corral::cli_support::new_session();
}

/// In that `corral run`, as it exits: how it ended, in `dir/exit.json`.
pub(crate) fn record_exit(dir: &Path, outcome: &anyhow::Result<()>) {
    let record = ExitRecord {
        pid: std::process::id(),
        code: if outcome.is_ok() { 0 } else { 1 },
        error: outcome.as_ref().err().map(|err| format!("{err:#}")),
        at: now(),
    };
    let _ = write_json(&dir.join(EXIT), &record);
}

/// `corral start`: the `run` flags as given, checked here, then run by a
/// `corral run` in the background.
pub(crate) fn start(run: RunArgs, log_format: LogFormatArg) -> anyhow::Result<()> {
    let given: Vec<OsString> = std::env::args_os()
        .skip_while(|arg| arg != "start")
        .skip(1)
        .collect();
    let Some(path) = run.config.clone() else {
        return start_one(run, given, log_format);
    };
    // A file of several apps with none chosen (or a list of them, `--app
    // api,jobs`): each app, one after the other, its own background cluster.
    let all = crate::config::app_names(&path)?;
    let apps: Vec<String> = match run.app.as_deref() {
        Some(list) if list.contains(',') => list.split(',').map(str::to_owned).collect(),
        Some(_) => Vec::new(),
        None if all.len() > 1 => all.clone(),
        None => Vec::new(),
    };
    if apps.is_empty() {
        let run = crate::config::resolve(&path, &given)?;
        return start_one(run, given, log_format);
    }
    if let Some(unknown) = apps.iter().find(|app| !all.contains(app)) {
        bail!(
            "{}: no app named {unknown:?}: the apps are {}",
            path.display(),
            all.join(", ")
        );
    }
    crate::config::apps(&path)?;
    let given = without_app(given);
    let mut failed = Vec::new();
    for app in &apps {
        let mut given = given.clone();
        given.splice(0..0, [OsString::from("--app"), OsString::from(app)]);
        let outcome = crate::config::resolve(&path, &given)
            .map_err(anyhow::Error::from)
            .and_then(|run| start_one(run, given, log_format));
        if let Err(err) = outcome {
            corral::cli_support::log_fatal(&format!("{err:#}"));
            failed.push(app.as_str());
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} apps did not start: {} (the others run)",
            failed.len(),
            apps.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// The arguments without `--app LIST` (each app's start names its own).
fn without_app(given: Vec<OsString>) -> Vec<OsString> {
    let mut kept = Vec::with_capacity(given.len());
    let mut args = given.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            kept.push(arg);
            kept.extend(args.by_ref());
            break;
        }
        if arg == "--app" {
            args.next();
        } else if !arg.as_encoded_bytes().starts_with(b"--app=") {
            kept.push(arg);
        }
    }
    kept
}

/// Starts one cluster in the background and waits until it is ready.
fn start_one(run: RunArgs, given: Vec<OsString>, log_format: LogFormatArg) -> anyhow::Result<()> {
    let cluster = run.cluster();
    let cluster = match run.command.split_first() {
        Some((program, args)) => cluster.command(program, args),
        None => cluster,
    };
    cluster.check()?;
    let described: std::collections::BTreeMap<String, String> =
        cluster.describe().into_iter().collect();
    let name = described.get("name").cloned().unwrap_or_default();
    let control = described.get("control").cloned().unwrap_or_default();
    if control == "none" {
        bail!(
            "corral start needs the control socket to see the cluster start: leave out --control none"
        );
    }
    let control = PathBuf::from(control);
    if let Ok(status) = Client::connect(&control).and_then(|mut c| c.status()) {
        bail!(
            "a cluster named {name:?} is running already (pid {}): stop it with `corral stop \
             {name}`, or give this one another --name",
            status.pid
        );
    }
    let dir = state_dir(&name);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    let _ = std::fs::remove_file(dir.join(EXIT));
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let log = match &run.log_file {
        Some(path) => cwd.join(path),
        None => dir.join(LOG),
    };

    let mut args: Vec<OsString> = vec![
        "--log-format".into(),
        match log_format {
            LogFormatArg::Text => "text",
            LogFormatArg::Json => "json",
        }
        .into(),
        "run".into(),
        "--state-dir".into(),
        dir.clone().into(),
    ];
    if run.log_file.is_none() {
        args.extend(["--log-file".into(), log.clone().into()]);
    }
    args.extend(given);
    let exe = std::env::current_exe().context("cannot find the corral executable")?;
    let mut child = std::process::Command::new(exe)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("cannot start corral run in the background")?;
    let record = Record {
        name: name.clone(),
        pid: child.id(),
        command: run
            .command
            .iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect(),
        cwd,
        log: log.clone(),
        started_at: now(),
    };
    write_json(&dir.join(RECORD), &record)
        .with_context(|| format!("cannot write {}", dir.join(RECORD).display()))?;

    // Ready, failed, or still starting after the workers' own time to be ready.
    let patience = run.ready_timeout.0 + Duration::from_secs(60);
    let started = Instant::now();
    let mut last = None;
    loop {
        if let Some(exit) = child.try_wait()? {
            let reason = read_json::<ExitRecord>(&dir.join(EXIT))
                .and_then(|exit| exit.error)
                .unwrap_or_else(|| format!("corral run exited ({exit})"));
            bail!("{name} failed to start: {reason} (log: {})", log.display());
        }
        if let Ok(status) = Client::connect(&control).and_then(|mut c| c.status()) {
            if status.workers_desired > 0 && status.ready_workers() >= status.workers_desired {
                let mut out = format!(
                    "started {name} (pid {}): {} of {} workers ready\n",
                    status.pid,
                    status.ready_workers(),
                    status.workers_desired
                );
                for listener in &status.listeners {
                    out.push_str(&format!("listening on {}\n", listener.address));
                }
                out.push_str(&format!("log: {}\n", log.display()));
                crate::display::print(&out)?;
                return Ok(());
            }
            last = Some((status.ready_workers(), status.workers_desired));
        }
        if started.elapsed() > patience {
            let (ready, desired) = last.unwrap_or((0, 0));
            bail!(
                "{name} is not ready after {} s ({ready} of {desired} workers ready); it goes on \
                 in the background: see `corral logs {name}`, stop it with `corral stop {name}`",
                patience.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A background cluster's state when its primary does not answer.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub record: Record,
    pub exit: Option<ExitRecord>,
    /// Its primary still runs (starting, or without a control socket).
    pub alive: bool,
}

impl Recorded {
    /// `stopped`, `failed` or `starting`.
    pub(crate) fn state(&self) -> &'static str {
        match (&self.exit, self.alive) {
            (Some(exit), _) if exit.code == 0 => "stopped",
            (Some(_), _) => "failed",
            (None, true) => "starting",
            (None, false) => "failed",
        }
    }

    /// Why it failed, in a few words.
    pub(crate) fn reason(&self) -> Option<String> {
        match (&self.exit, self.alive) {
            (Some(exit), _) => exit.error.clone(),
            (None, false) => {
                Some("its primary vanished without recording its exit (killed?)".into())
            }
            (None, true) => None,
        }
    }

    /// When it stopped (seconds since the epoch), if it did.
    pub(crate) fn ended_at(&self) -> Option<f64> {
        match &self.exit {
            Some(exit) => Some(exit.at),
            None if !self.alive => std::fs::metadata(&self.record.log)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64()),
            None => None,
        }
    }
}

/// Every background cluster recorded, by name.
pub(crate) fn recorded() -> Vec<Recorded> {
    let Ok(entries) = std::fs::read_dir(state_root()) else {
        return Vec::new();
    };
    let mut found: Vec<Recorded> = entries
        .flatten()
        .filter_map(|entry| {
            let dir = entry.path();
            let record: Record = read_json(&dir.join(RECORD))?;
            let exit: Option<ExitRecord> = read_json(&dir.join(EXIT));
            let alive = exit.is_none() && crate::control::process_running(record.pid);
            Some(Recorded {
                record,
                exit,
                alive,
            })
        })
        .collect();
    found.sort_by(|a, b| a.record.name.cmp(&b.record.name));
    found
}

/// The record of the background cluster `name`, if any.
pub(crate) fn find(name: &str) -> Option<Recorded> {
    recorded().into_iter().find(|r| r.record.name == name)
}

/// `corral delete NAME`: a stopped background cluster's record and logs.
pub(crate) fn delete(name: &str) -> anyhow::Result<()> {
    let Some(found) = find(name) else {
        bail!(
            "no background cluster named {name:?} is recorded in {}; `corral ls` lists them",
            state_root().display()
        );
    };
    let running = crate::target::running_clusters()
        .into_iter()
        .any(|(running, _, _)| running == name);
    if running || found.alive {
        bail!("{name} is running: stop it first with `corral stop {name}`");
    }
    let log = &found.record.log;
    let mut removed = vec![log.clone()];
    for n in 1..=1000 {
        let rotated = corral::cli_support::numbered_log(log, n);
        if !rotated.exists() {
            break;
        }
        removed.push(rotated);
    }
    for path in &removed {
        let _ = std::fs::remove_file(path);
    }
    let dir = state_dir(name);
    std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    crate::display::print(&format!("deleted {name} (its record and log files)\n"))?;
    Ok(())
}

/// The last `count` lines of the log at `path` (only worker `worker`'s
/// when given), from the rotated files too when the current one has fewer.
pub(crate) fn tail(path: &Path, count: usize, worker: Option<u32>) -> Vec<String> {
    let tag = worker.map(|id| format!("[worker {id}]"));
    let keep = |line: &String| match &tag {
        None => true,
        Some(tag) => line
            .split_once(' ')
            .is_some_and(|(_, rest)| rest.starts_with(tag.as_str())),
    };
    let mut lines: Vec<String> = Vec::new();
    let mut files = vec![path.to_path_buf()];
    files.extend(
        (1..=1000)
            .map(|n| corral::cli_support::numbered_log(path, n))
            .take_while(|p| p.exists()),
    );
    for file in files {
        if lines.len() >= count {
            break;
        }
        // Only a regular file: /dev/full as a log reads zeros forever.
        if !std::fs::metadata(&file).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let Ok(opened) = std::fs::File::open(&file) else {
            continue;
        };
        let mut older: Vec<String> = BufReader::new(opened)
            .split(b'\n')
            .map_while(Result::ok)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .filter(keep)
            .collect();
        let wanted = count - lines.len();
        if older.len() > wanted {
            older.drain(..older.len() - wanted);
        }
        older.append(&mut lines);
        lines = older;
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_reads_back_into_rotated_files_and_filters_by_worker() {
        let dir = std::env::temp_dir().join(format!("corral-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("corral.log");
        std::fs::write(&log, "T [worker 1] c\nT [worker 2] d\n").unwrap();
        std::fs::write(dir.join("corral.log.1"), "T [worker 1] a\nT [corral] b\n").unwrap();
        assert_eq!(
            tail(&log, 3, None),
            ["T [corral] b", "T [worker 1] c", "T [worker 2] d"]
        );
        assert_eq!(tail(&log, 5, Some(1)), ["T [worker 1] a", "T [worker 1] c"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
