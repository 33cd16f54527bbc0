//! `corral service install/remove`: the units it writes pass
//! `systemd-analyze verify`, their ExecStart serves when systemd hands it
//! the socket unit's port, a file of several apps gives a unit per app, and
//! files are written and removed where a user unit lives. (`systemctl
//! enable` itself cannot run here: no systemd is PID 1 in the test
//! environment; the command says so and exits 1.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use corral_testkit::{ClusterProcess, PATIENCE, corral_path, free_port, http_get, wait_until};

const ENV_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/env_server.py");

/// A scratch directory, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("corral-service-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn corral(args: &[&str], dir: &Path) -> Output {
    Command::new(corral_path())
        .args(args)
        .current_dir(dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .output()
        .expect("corral runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `--dry-run`'s output as its files: name → text.
fn dry_run_units(output: &Output) -> BTreeMap<String, String> {
    assert!(output.status.success(), "{}", text(&output.stderr));
    let mut units = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text(&output.stdout).lines() {
        if let Some(path) = line.strip_prefix("# file: ") {
            let name = path.rsplit('/').next().unwrap_or(path).to_string();
            units.insert(name.clone(), String::new());
            current = Some(name);
        } else if let Some(name) = &current {
            let unit = units.get_mut(name).expect("the current unit");
            unit.push_str(line);
            unit.push('\n');
        }
    }
    units
}

/// Writes `units` into `dir` and runs `systemd-analyze verify` on them:
/// no error and no warning (false when systemd-analyze is missing).
fn verify(units: &BTreeMap<String, String>, dir: &Path) -> bool {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        eprintln!("systemd-analyze is not installed: skipping the verification");
        return false;
    }
    std::fs::create_dir_all(dir).unwrap();
    let mut paths = Vec::new();
    for (name, text) in units {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        paths.push(path);
    }
    // The directory first in the unit path (the trailing colon keeps the
    // standard ones), so Requires= finds the socket unit.
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display()))
        .output()
        .expect("systemd-analyze runs");
    let said = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(
        output.status.success() && said.trim().is_empty(),
        "{said}\n{units:#?}"
    );
    true
}

/// A unit's `Key=` value.
fn value<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in\n{unit}"))
}

#[test]
fn the_units_verify_and_their_exec_start_serves_the_socket_units_port() {
    let scratch = Scratch::new("socket");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let output = corral(
        &[
            "service",
            "install",
            "api",
            "--dry-run",
            "--socket",
            "-w",
            "2",
            "--grace",
            "2",
            "-l",
            &listen,
            "--",
            "python3",
            ENV_SERVER,
        ],
        &scratch.0,
    );
    let units = dry_run_units(&output);
    assert_eq!(
        units.keys().collect::<Vec<_>>(),
        ["corral-api.service", "corral-api.socket"]
    );
    let service = &units["corral-api.service"];
    let socket = &units["corral-api.socket"];
    assert!(text(&output.stdout).contains("# file: /etc/systemd/system/corral-api.service"));
    assert_eq!(value(socket, "ListenStream"), listen);
    assert_eq!(value(service, "Requires"), "corral-api.socket");
    assert_eq!(
        value(service, "WorkingDirectory"),
        scratch.0.to_str().unwrap()
    );
    assert_eq!(value(service, "TimeoutStopSec"), "12");
    let exec_start: Vec<&str> = value(service, "ExecStart").split_whitespace().collect();
    // Absolute paths, resolved now; the socket unit holds the address.
    assert_eq!(
        exec_start[0],
        std::fs::canonicalize(corral_path())
            .unwrap()
            .to_str()
            .unwrap()
    );
    assert!(
        exec_start.contains(&"--workers=2") && !exec_start.iter().any(|arg| arg.contains("listen")),
        "{exec_start:?}"
    );
    let program = exec_start[exec_start
        .iter()
        .position(|arg| *arg == "\"--\"" || *arg == "--")
        .unwrap()
        + 1];
    assert!(
        program.starts_with('/') && program.ends_with("python3"),
        "{exec_start:?}"
    );
    verify(&units, &scratch.0.join("units"));

    // The ExecStart, started as systemd would with the socket unit's
    // socket: it serves that port.
    let activate = Command::new("systemd-socket-activate")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !activate {
        eprintln!("systemd-socket-activate is not installed: skipping the run");
        return;
    }
    let words: Vec<String> = exec_start
        .iter()
        .map(|word| word.trim_matches('"').to_string())
        .collect();
    let mut command = Command::new("systemd-socket-activate");
    command
        .args(["--listen", &listen, "--"])
        .args(&words)
        .current_dir(&scratch.0);
    let mut cluster = ClusterProcess::spawn(command);
    // systemd-socket-activate starts it at the first connection.
    let served = wait_until(PATIENCE, || {
        http_get(port, "/").is_ok_and(|response| response.body.starts_with("python worker"))
    });
    assert!(
        served,
        "the unit's command serves on {port}:\n{}",
        cluster.output()
    );
    cluster.stop_gracefully(PATIENCE);
}

#[test]
fn a_file_of_several_apps_gives_a_unit_per_app() {
    // A space in the path: WorkingDirectory= and ExecStart= must say it
    // as systemd reads it.
    let scratch = Scratch::new("several apps");
    std::fs::write(
        scratch.0.join("corral.toml"),
        "grace = 4\nlisten = [\"127.0.0.1:0\"]\n\n[apps.api]\ncommand = \"python3\"\n\
         args = [\"app.py\"]\n\n[apps.jobs]\ncommand = \"sh\"\nargs = [\"-c\", \"sleep 1000\"]\n",
    )
    .unwrap();
    let output = corral(
        &[
            "service",
            "install",
            "--dry-run",
            "--user-unit",
            "--config",
            "corral.toml",
        ],
        &scratch.0,
    );
    let units = dry_run_units(&output);
    assert_eq!(
        units.keys().collect::<Vec<_>>(),
        ["corral-api.service", "corral-jobs.service"]
    );
    let file = scratch.0.join("corral.toml");
    for app in ["api", "jobs"] {
        let unit = &units[&format!("corral-{app}.service")];
        let exec_start = value(unit, "ExecStart");
        assert!(
            exec_start.ends_with(&format!(" run --config \"{}\" --app {app}", file.display())),
            "{exec_start}"
        );
        assert_eq!(value(unit, "WorkingDirectory"), scratch.0.to_str().unwrap());
        assert_eq!(value(unit, "WantedBy"), "default.target");
        assert_eq!(value(unit, "TimeoutStopSec"), "14");
    }
    let user_dir = scratch.0.join("config/systemd/user");
    assert!(text(&output.stdout).contains(&format!(
        "# file: {}/corral-api.service",
        user_dir.display()
    )));
    verify(&units, &scratch.0.join("units"));

    // One app only.
    let output = corral(
        &[
            "service",
            "install",
            "--dry-run",
            "--config",
            "corral.toml",
            "--app",
            "jobs",
        ],
        &scratch.0,
    );
    assert_eq!(
        dry_run_units(&output).keys().collect::<Vec<_>>(),
        ["corral-jobs.service"]
    );
}

#[test]
fn units_are_written_and_removed_and_mistakes_are_one_line() {
    let scratch = Scratch::new("write");
    let dir = scratch.0.join("config/systemd/user");
    let output = corral(
        &[
            "service",
            "install",
            "web",
            "--user-unit",
            "--no-enable",
            "--",
            "python3",
            ENV_SERVER,
        ],
        &scratch.0,
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("systemctl --user enable --now corral-web.service"),
        "{}",
        text(&output.stdout)
    );
    assert!(dir.join("corral-web.service").is_file());

    // Without --no-enable, where systemd does not run: the file is
    // written, and the error says systemctl could not run.
    if !Path::new("/run/systemd/system").exists() {
        let output = corral(
            &[
                "service",
                "install",
                "web2",
                "--user-unit",
                "--",
                "python3",
                ENV_SERVER,
            ],
            &scratch.0,
        );
        assert_eq!(output.status.code(), Some(1));
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("systemd is not running here") && stderr.lines().count() == 1,
            "{stderr}"
        );
        assert!(dir.join("corral-web2.service").is_file());
        let output = corral(&["service", "remove", "web2", "--user-unit"], &scratch.0);
        assert!(output.status.success(), "{}", text(&output.stderr));
        assert!(!dir.join("corral-web2.service").exists());
    }

    let output = corral(
        &["service", "remove", "web", "--user-unit", "--dry-run"],
        &scratch.0,
    );
    assert!(
        text(&output.stdout).contains("would remove"),
        "{}",
        text(&output.stdout)
    );
    assert!(dir.join("corral-web.service").is_file());

    for (args, message) in [
        (
            &["service", "install", "--dry-run", "--", "python3"][..],
            "give the service's NAME",
        ),
        (
            &["service", "install", "x", "--dry-run"][..],
            "give the program after `--`",
        ),
        (
            &[
                "service",
                "install",
                "x",
                "--dry-run",
                "--",
                "no-such-program",
            ][..],
            "no-such-program: not found on PATH",
        ),
        (
            &[
                "service",
                "install",
                "x",
                "--dry-run",
                "--socket",
                "--",
                "python3",
            ][..],
            "--socket needs",
        ),
        (
            &["service", "install", "a/b", "--dry-run", "--", "python3"][..],
            "cannot name a systemd unit",
        ),
        (
            &["service", "remove", "nothing", "--user-unit"][..],
            "no unit corral-nothing.service",
        ),
    ] {
        let output = corral(args, &scratch.0);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(message) && stderr.lines().count() == 1,
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn user_with_no_value_is_the_user_unit_and_with_one_the_workers_user() {
    let scratch = Scratch::new("user");
    let dir = scratch.0.join("config/systemd/user");
    let output = corral(
        &[
            "service",
            "install",
            "web",
            "--user",
            "--no-enable",
            "--",
            "python3",
            ENV_SERVER,
        ],
        &scratch.0,
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(dir.join("corral-web.service").is_file());
    let output = corral(
        &[
            "service",
            "install",
            "web3",
            "--user",
            "nobody",
            "--dry-run",
            "--",
            "python3",
            ENV_SERVER,
        ],
        &scratch.0,
    );
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        stdout.contains("/etc/systemd/system/corral-web3.service") && stdout.contains("--user"),
        "{stdout}"
    );
    let output = corral(&["service", "remove", "web", "--user"], &scratch.0);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(!dir.join("corral-web.service").exists());
}
