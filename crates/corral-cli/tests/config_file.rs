//! `corral run --config FILE` and `corral check FILE`: settings from a TOML
//! file, overridden by flags, checked with errors that name the key and the
//! line, and read again at each reload (HUP), where a broken file aborts the
//! reload and keeps the running configuration.

use std::path::PathBuf;
use std::process::Command;

use corral_testkit::{
    ClusterProcess, LogEvent, Mark, PATIENCE, Signal, corral_path, http_get, resident_kib,
};

const ENV_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/env_server.py");

/// A configuration file in a directory of its own, removed at the end.
struct ConfigFile {
    path: PathBuf,
}

impl ConfigFile {
    fn new(name: &str, text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("corral-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let file = ConfigFile {
            path: dir.join("corral.toml"),
        };
        file.write(text);
        file
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.path, text).expect("the file is written");
    }

    fn arg(&self) -> &str {
        self.path.to_str().expect("a UTF-8 path")
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The python fixture as the command; `workers` is line 3.
fn app_file(version: &str, workers: &str) -> String {
    format!(
        "command = \"python3\"\nargs = [\"{ENV_SERVER}\"]\nworkers = {workers}\n\
         listen = [\"127.0.0.1:0\"]\ngrace = 2\n\n[env]\nAPP_VERSION = \"{version}\"\n"
    )
}

/// The version the python fixture reports, `version X` in its answer.
fn served_version(port: u16) -> String {
    let body = http_get(port, "/").expect("the workers serve").body;
    body.split_whitespace()
        .skip_while(|word| *word != "version")
        .nth(1)
        .unwrap_or_else(|| panic!("no version in {body:?}"))
        .to_string()
}

#[test]
fn check_names_the_line_and_the_key_of_an_error() {
    let file = ConfigFile::new(
        "check",
        "command = \"python3\"\nargs = [\"app.py\"]\nworkers = 2\n\n# drain\n\ngrace = -1\n",
    );
    let output = Command::new(corral_path())
        .args(["check", file.arg()])
        .output()
        .expect("corral runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("corral.toml line 7: grace: ") && stderr.contains("-1"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");

    file.write("workers = 3\nmax-memory = \"1G\"\n[env]\nAPP = \"x\"\n");
    let output = Command::new(corral_path())
        .args(["check", file.arg()])
        .output()
        .expect("corral runs");
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    for line in [
        "workers             = 3",
        "max-memory          = 1073741824",
        "env                 = APP=x",
    ] {
        assert!(stdout.contains(line), "{line:?} in\n{stdout}");
    }
}

#[test]
fn flags_override_the_file_and_a_reload_reads_it_again_unless_it_is_broken() {
    let file = ConfigFile::new("reload", &app_file("v1", "3"));
    let mut cluster =
        ClusterProcess::start(corral_path(), &["run", "--config", file.arg(), "-w", "2"]);
    let port = cluster.port();
    cluster.expect_line("2 workers");
    cluster.expect_line("[worker 2] python worker 2 serving");
    assert_eq!(served_version(port), "v1");

    // A new version in the file: the reload's workers run it.
    file.write(&app_file("v2", "3"));
    let reload = cluster.mark();
    cluster.signal(Signal::HUP);
    cluster.expect_event_where(reload, "a rolling reload completes", completed_rolling);
    for _ in 0..10 {
        assert_eq!(served_version(port), "v2");
    }

    // A broken file: the reload is aborted, the running workers stay.
    file.write(&app_file("v3", "\"many\""));
    let broken = cluster.mark();
    cluster.signal(Signal::HUP);
    let aborted = cluster.expect_event(broken, "reload_aborted", None);
    let reason = aborted.string("reason").unwrap_or_default();
    assert!(
        reason.starts_with("the configuration is not valid") && reason.contains("line 3: workers"),
        "{aborted:?}"
    );
    assert_eq!(aborted.worker, None, "{aborted:?}");
    for _ in 0..10 {
        assert_eq!(served_version(port), "v2");
    }
    let forks = cluster.events_since(broken);
    assert!(
        !forks.iter().any(|event| event.is("fork")),
        "no worker was replaced: {forks:#?}"
    );

    // Fixed: the next reload applies it; `-w 2` from the command line
    // still wins over the file's count.
    file.write(&app_file("v4", "5"));
    let fixed = cluster.mark();
    cluster.signal(Signal::HUP);
    cluster.expect_event_where(fixed, "the fixed file reloads", completed_rolling);
    assert_eq!(served_version(port), "v4");
    let events = cluster.events_since(Mark::START);
    assert!(
        !events.iter().any(|event| event.is_of("fork", 3)),
        "-w 2 still wins:\n{}",
        cluster.output()
    );

    cluster.stop_gracefully(PATIENCE);
}

#[test]
fn a_reload_applies_a_new_worker_count() {
    let file = ConfigFile::new("count", &app_file("v1", "1"));
    let mut cluster = ClusterProcess::start(corral_path(), &["run", "--config", file.arg()]);
    let port = cluster.port();
    cluster.expect_line("[worker 1] python worker 1 serving");
    file.write(&app_file("v2", "2"));
    let reload = cluster.mark();
    cluster.signal(Signal::HUP);
    cluster.expect_event_where(reload, "scaled from 1 to 2", |event| {
        event.is("scaled") && event.has("from", 1) && event.has("to", 2)
    });
    cluster.expect_line_after(reload, "[worker 2] python worker 2 serving");
    cluster.expect_event_where(reload, "a rolling reload completes", completed_rolling);
    assert_eq!(served_version(port), "v2");
    cluster.stop_gracefully(PATIENCE);
}

/// Whether `event` says a rolling reload completed.
fn completed_rolling(event: &LogEvent) -> bool {
    event.is("reload_completed") && event.has("kind", "rolling")
}

/// Makes `path` a FIFO (named pipe), in place of whatever it was.
fn make_fifo(path: &std::path::Path) {
    let _ = std::fs::remove_file(path);
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        path,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .expect("a FIFO");
}

/// `corral check PATH`, which must end within a second or two; returns
/// its exit code and stderr.
fn check_quickly(path: &str) -> (Option<i32>, String) {
    let started = std::time::Instant::now();
    let mut check = ClusterProcess::start(corral_path(), &["check", path]);
    let status = check
        .wait_exit(std::time::Duration::from_secs(5))
        .unwrap_or_else(|| panic!("corral check {path} hangs"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "corral check {path} took {:?}",
        started.elapsed()
    );
    assert!(check.wait_output_closed(PATIENCE));
    (status.code(), check.output())
}

#[test]
fn check_refuses_a_fifo_a_device_and_a_directory_at_once() {
    let file = ConfigFile::new("special", "workers = 1\n");
    make_fifo(&file.path);
    let directory = file.path.parent().unwrap().to_str().unwrap().to_string();
    for (path, kind) in [
        (file.arg(), "a FIFO (named pipe), not a regular file"),
        ("/dev/zero", "a character device, not a regular file"),
        (directory.as_str(), "a directory, not a regular file"),
    ] {
        let (code, output) = check_quickly(path);
        assert_eq!(code, Some(1), "{output}");
        let errors: Vec<&str> = output.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "one line: {output}");
        assert!(
            errors[0].contains(path) && errors[0].contains(kind),
            "{output}"
        );
    }
}

#[test]
fn check_refuses_a_file_over_one_mebibyte() {
    let file = ConfigFile::new("huge", "");
    file.write(&format!("workers = 1\n{}\n", "#".repeat(1 << 20)));
    let (code, output) = check_quickly(file.arg());
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("larger than 1048576 bytes"), "{output}");
}

#[test]
fn check_refuses_nul_bytes_that_run_would_refuse() {
    for (name, text, what) in [
        (
            "nul-env",
            "command = \"sh\"\n[env]\nAPP = \"a\\u0000b\"\n",
            "APP",
        ),
        ("nul-command", "command = \"s\\u0000h\"\n", "NUL"),
        (
            "nul-args",
            "command = \"sh\"\nargs = [\"-c\", \"x\\u0000y\"]\n",
            "NUL",
        ),
    ] {
        let file = ConfigFile::new(name, text);
        let (code, output) = check_quickly(file.arg());
        assert_eq!(code, Some(1), "{name}: {output}");
        assert!(
            output.contains("NUL") && output.contains(what),
            "{name}: {output}"
        );
        assert!(!output.contains(": valid"), "{name}: {output}");
    }
}

/// The cluster's status, asked over its control socket; `None` if it does
/// not answer within a few seconds.
fn status_of(cluster: &ClusterProcess) -> Option<String> {
    let mut status = ClusterProcess::spawn(cluster.control_command(&["status"]));
    let exited = status.wait_exit(std::time::Duration::from_secs(5))?;
    status.wait_output_closed(PATIENCE);
    assert!(exited.success(), "{}", status.output());
    Some(status.output())
}

#[test]
fn a_fifo_or_a_device_in_place_of_the_file_aborts_the_reload_and_the_primary_answers() {
    let file = ConfigFile::new("swapped", &app_file("v1", "1"));
    let mut cluster = ClusterProcess::start(corral_path(), &["run", "--config", file.arg()]);
    let port = cluster.port();
    cluster.expect_line("[worker 1] python worker 1 serving");

    make_fifo(&file.path);
    let since = cluster.mark();
    cluster.signal(Signal::HUP);
    let aborted = cluster.expect_event(since, "reload_aborted", None);
    assert!(
        aborted
            .string("reason")
            .is_some_and(|reason| reason.contains("a FIFO (named pipe)")),
        "{aborted:?}"
    );
    let status = status_of(&cluster).expect("the primary answers while the file is a FIFO");
    assert!(status.contains("1 aborted"), "{status}");
    assert_eq!(served_version(port), "v1");

    // A symlink to /dev/zero: refused without reading it.
    std::fs::remove_file(&file.path).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &file.path).unwrap();
    let since = cluster.mark();
    cluster.signal(Signal::HUP);
    let aborted = cluster.expect_event(since, "reload_aborted", None);
    assert!(
        aborted
            .string("reason")
            .is_some_and(|reason| reason.contains("a character device")),
        "{aborted:?}"
    );
    let rss_kib = resident_kib(cluster.pid()).expect("the primary runs");
    assert!(rss_kib < 64 * 1024, "the primary holds {rss_kib} KiB");
    assert!(status_of(&cluster).is_some_and(|status| status.contains("2 aborted")));
    assert_eq!(served_version(port), "v1");
    cluster.stop_gracefully(PATIENCE);
}

#[test]
fn a_file_of_several_apps_runs_the_one_chosen_and_checks_them_all() {
    let file = ConfigFile::new(
        "apps",
        &format!(
            "grace = 2\nlisten = [\"127.0.0.1:0\"]\n[env]\nAPP_VERSION = \"shared\"\n\n\
             [apps.api]\ncommand = \"python3\"\nargs = [\"{ENV_SERVER}\"]\nworkers = 2\n\n\
             [apps.jobs]\ncommand = \"python3\"\nargs = [\"{ENV_SERVER}\"]\n\
             [apps.jobs.env]\nAPP_VERSION = \"jobs\"\n"
        ),
    );
    let output = Command::new(corral_path())
        .args(["check", file.arg()])
        .output()
        .expect("corral runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in [
        "corral.toml [apps.api]: valid",
        "corral.toml [apps.jobs]: valid",
        "name                = api",
        "name                = jobs",
        "env                 = APP_VERSION=jobs",
    ] {
        assert!(stdout.contains(line), "{line:?} in\n{stdout}");
    }

    // Several apps and none chosen: one error naming them.
    let output = Command::new(corral_path())
        .args(["run", "--config", file.arg()])
        .output()
        .expect("corral runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("several apps (api, jobs): choose one with --app NAME"),
        "{stderr}"
    );

    let mut cluster = ClusterProcess::start(
        corral_path(),
        &["run", "--config", file.arg(), "--app", "jobs"],
    );
    let port = cluster.port();
    cluster.expect_line("[worker 1] python worker 1 serving");
    assert_eq!(served_version(port), "jobs");
    cluster.stop_gracefully(PATIENCE);

    // Two apps whose clusters would share a name (and control socket).
    file.write("[apps.a]\ncommand = \"python3\"\nname = \"x\"\n[apps.b]\ncommand = \"python3\"\nname = \"x\"\n");
    let output = Command::new(corral_path())
        .args(["check", file.arg()])
        .output()
        .expect("corral runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("apps a and b have the same name (x)"),
        "{stderr}"
    );
}
