//! Background clusters, with real processes: `corral start` returns only
//! once every worker is ready and the cluster serves after the shell that
//! started it exited; a broken command fails the start with its reason;
//! the log is kept on disk, survives `stop` (`corral logs`), rotates at
//! its size and is reopened on SIGUSR1; `corral ls` shows the stopped and
//! failed ones until `corral delete`.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use corral_testkit::{PATIENCE, Signal, corral_path, http_get, private_runtime_dir, send_signal};
use serde_json::Value;

/// A user of their own: a runtime directory (control sockets) and a
/// state directory (records, logs). Stops what it started when dropped.
struct User {
    runtime: PathBuf,
    state: PathBuf,
}

impl User {
    fn new() -> Self {
        User {
            runtime: private_runtime_dir(),
            state: private_runtime_dir(),
        }
    }

    fn corral(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("corral runs")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(corral_path());
        command
            .args(args)
            .env("XDG_RUNTIME_DIR", &self.runtime)
            .env("XDG_STATE_HOME", &self.state)
            .stdin(Stdio::null());
        command
    }

    fn ls(&self) -> Vec<Value> {
        let out = self.corral(&["ls", "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("ls --json")
    }

    fn listed(&self, name: &str) -> Value {
        self.ls()
            .into_iter()
            .find(|entry| entry["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not listed"))
    }

    fn cluster_dir(&self, name: &str) -> PathBuf {
        self.state.join("corral").join(name)
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = self.corral(&["stop", "--all", "--now"]);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The port of the `listening on 127.0.0.1:PORT` line.
fn port_of(stdout: &str) -> u16 {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("listening on 127.0.0.1:"))
        .and_then(|port| port.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {stdout:?}"))
}

/// The session a process leads or belongs to (`/proc/PID/stat`'s sixth field).
fn session_of(pid: u64) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    rest.split_whitespace().nth(3).unwrap().parse().unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn start_returns_once_ready_and_the_cluster_outlives_the_shell_and_its_log_outlives_it() {
    let user = User::new();
    // The shell that starts it exits at once after.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} start -w 2 -l 127.0.0.1:0 --name web; echo start-exit=$?",
            corral_path()
        ))
        .env("XDG_RUNTIME_DIR", &user.runtime)
        .env("XDG_STATE_HOME", &user.state)
        .stdin(Stdio::null())
        .output()
        .expect("sh runs");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("start-exit=0"),
        "{stdout}{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("started web (pid "), "{stdout}");
    assert!(stdout.contains("2 of 2 workers ready"), "{stdout}");
    // Ready when it returned: served at once, no retry.
    let port = port_of(&stdout);
    let response = http_get(port, "/").expect("the cluster serves after its shell exited");
    assert_eq!(response.status, 200);

    let listed = user.listed("web");
    assert_eq!(listed["state"], "running");
    assert_eq!(listed["workers_ready"], 2);
    let pid = listed["pid"].as_u64().unwrap();
    assert_eq!(
        session_of(pid),
        pid,
        "the primary leads a session of its own"
    );
    let log = PathBuf::from(listed["log"].as_str().unwrap());
    assert_eq!(log, user.cluster_dir("web").join("corral.log"));

    // Starting it again is refused while it runs.
    let again = user.corral(&["start", "-l", "127.0.0.1:0", "--name", "web"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("running already"),
        "{}",
        text(&again.stderr)
    );

    let stopped = user.corral(&["stop", "web"]);
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    let listed = user.listed("web");
    assert_eq!(listed["state"], "stopped", "{listed}");
    assert_eq!(listed["exit_code"], 0);
    assert!(listed["ended_at"].as_f64().is_some());
    let table = text(&user.corral(&["ls"]).stdout);
    assert!(
        table.contains("web") && table.contains("stopped"),
        "{table}"
    );

    // The log outlives the cluster, with timestamps.
    let logs = user.corral(&["logs", "web", "-n", "50"]);
    assert!(logs.status.success(), "{}", text(&logs.stderr));
    let lines = text(&logs.stdout);
    assert!(lines.contains("cluster stopped"), "{lines}");
    assert!(lines.contains("worker 2 ready"), "{lines}");
    assert!(
        lines.lines().all(|line| line.starts_with("20")),
        "every line has its timestamp: {lines}"
    );

    let deleted = user.corral(&["delete", "web"]);
    assert!(deleted.status.success(), "{}", text(&deleted.stderr));
    assert!(!user.cluster_dir("web").exists());
    assert!(user.ls().is_empty());
    let again = user.corral(&["delete", "web"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("no background cluster named"));
}

#[test]
fn a_broken_command_fails_the_start_with_its_reason() {
    let user = User::new();
    let started = Instant::now();
    let out = user.corral(&[
        "start",
        "-w",
        "2",
        "-l",
        "127.0.0.1:0",
        "--name",
        "broken",
        "--",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(started.elapsed() < PATIENCE);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("broken failed to start"), "{stderr}");
    assert!(stderr.contains("every worker fails at start"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let listed = user.listed("broken");
    assert_eq!(listed["state"], "failed");
    assert!(
        listed["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("every worker fails at start")),
        "{listed}"
    );
    let logs = text(&user.corral(&["logs", "broken"]).stdout);
    assert!(logs.contains("exited with code 3"), "{logs}");
}

#[test]
fn the_log_file_rotates_at_its_size_and_is_reopened_on_usr1() {
    let user = User::new();
    let log_dir = private_runtime_dir();
    let log = log_dir.join("app.log");
    // 3 MB of output, 100 bytes a line, then quiet.
    let out = user.corral(&[
        "start",
        "-w",
        "1",
        "-l",
        "127.0.0.1:0",
        "--name",
        "chatty",
        "--log-file",
        log.to_str().unwrap(),
        "--log-max-size",
        "256K",
        "--log-keep",
        "3",
        "--",
        "sh",
        "-c",
        "sleep 0.3; head -c 3000000 /dev/zero | tr '\\0' x | fold -w 99; echo done-printing; exec sleep 100",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let numbered = |n: u32| PathBuf::from(format!("{}.{n}", log.display()));
    wait_for("the last line to be written", || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains("done-printing"))
    });
    for n in 1..=3 {
        let size = std::fs::metadata(numbered(n)).map(|m| m.len()).unwrap_or(0);
        assert!(
            (256 << 10..(256 << 10) + 200).contains(&size),
            "{}: {size} bytes",
            numbered(n).display()
        );
    }
    assert!(!numbered(4).exists(), "only 3 rotated files are kept");
    assert!(std::fs::metadata(&log).unwrap().len() <= (256 << 10) + 200);
    let rotated = std::fs::read_to_string(numbered(1)).unwrap();
    let line = rotated.lines().last().unwrap();
    assert!(
        line.ends_with(&format!("[worker 1] {}", "x".repeat(99))),
        "{line}"
    );

    // An external rotator moves the file away, then sends SIGUSR1.
    let moved = log_dir.join("moved.log");
    std::fs::rename(&log, &moved).unwrap();
    let pid = user.listed("chatty")["pid"].as_u64().unwrap() as u32;
    send_signal(pid, Signal::USR1);
    wait_for("the log file to be reopened", || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains("log file is reopened"))
    });
    assert!(user.corral(&["stop", "chatty"]).status.success());
    let tail = text(&user.corral(&["logs", "chatty", "-n", "3"]).stdout);
    assert!(tail.contains("cluster stopped"), "{tail}");
    assert_eq!(tail.lines().count(), 3, "{tail}");
    let _ = std::fs::remove_dir_all(&log_dir);
}

#[test]
fn a_log_file_that_cannot_be_written_costs_lines_not_the_cluster() {
    let user = User::new();
    // /dev/full: every write fails with ENOSPC, as on a full disk.
    let out = user.corral(&[
        "start",
        "-w",
        "2",
        "-l",
        "127.0.0.1:0",
        "--name",
        "full",
        "--log-file",
        "/dev/full",
        "--",
        "sh",
        "-c",
        "while :; do echo spam; sleep 0.01; done",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let reload = user.corral(&["reload", "full"]);
    assert!(reload.status.success(), "{}", text(&reload.stderr));
    let status = user.corral(&["status", "full", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["workers"].as_array().unwrap().len(), 2, "{status}");
    assert!(stdout.contains("2 of 2 workers ready"), "{stdout}");
    let stopped = user.corral(&["stop", "full"]);
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    assert_eq!(user.listed("full")["state"], "stopped");
}

#[test]
fn start_with_a_file_of_several_apps_starts_each_and_stop_all_stops_them() {
    let user = User::new();
    let dir = private_runtime_dir();
    let file = dir.join("corral.toml");
    std::fs::write(
        &file,
        "workers = 1\nlisten = [\"127.0.0.1:0\"]\ngrace = 2\n\n[apps.api]\n\n[apps.jobs]\n",
    )
    .expect("the file is written");
    let out = user.corral(&["start", "--config", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("started api") && stdout.contains("started jobs"),
        "{stdout}"
    );
    for app in ["api", "jobs"] {
        let status = user.corral(&["status", app, "--json"]);
        assert!(status.status.success(), "{app}: {}", text(&status.stderr));
    }
    let stop = user.corral(&["stop", "--all"]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    for app in ["api", "jobs"] {
        assert_eq!(user.listed(app)["state"], "stopped", "{app}");
    }
    // A list starts those named; an unknown one is refused, naming the apps.
    let file = file.to_str().unwrap();
    let out = user.corral(&["start", "--config", file, "--app", "jobs,api"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = user.corral(&["start", "--config", file, "--app", "api,web"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no app named \"web\": the apps are api, jobs"),
        "{}",
        text(&out.stderr)
    );
}
