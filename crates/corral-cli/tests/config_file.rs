//! `corral run --config FILE` and `corral check FILE`: settings from a TOML
//! file, overridden by flags, checked with errors that name the key and the
//! line, and read again at each reload (HUP), where a broken file aborts the
//! reload and keeps the running configuration.

use std::path::PathBuf;
use std::process::Command;

use corral_testkit::{ClusterProcess, PATIENCE, Signal, http_get};

const CORRAL: &str = env!("CARGO_BIN_EXE_corral");
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
    let output = Command::new(CORRAL)
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
    let output = Command::new(CORRAL)
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
    let mut cluster = ClusterProcess::start(CORRAL, &["run", "--config", file.arg(), "-w", "2"]);
    let port = cluster.port();
    cluster.expect_line("2 workers");
    cluster.expect_line("[worker 2] python worker 2 serving");
    assert_eq!(served_version(port), "v1");

    // A new version in the file: the reload's workers run it.
    file.write(&app_file("v2", "3"));
    cluster.signal(Signal::HUP);
    cluster.expect_line("rolling reload complete");
    for _ in 0..10 {
        assert_eq!(served_version(port), "v2");
    }

    // A broken file: the reload is aborted, the running workers stay.
    let spawned_before = cluster.output().matches(" spawned (pid").count();
    file.write(&app_file("v3", "\"many\""));
    cluster.signal(Signal::HUP);
    let aborted = cluster.expect_line("reload aborted: the configuration is not valid");
    assert!(aborted.contains("line 3: workers"), "{aborted}");
    for _ in 0..10 {
        assert_eq!(served_version(port), "v2");
    }
    assert_eq!(
        cluster.output().matches(" spawned (pid").count(),
        spawned_before,
        "no worker was replaced"
    );

    // Fixed: the next reload applies it; `-w 2` from the command line
    // still wins over the file's count.
    file.write(&app_file("v4", "5"));
    cluster.signal(Signal::HUP);
    cluster
        .wait_for_lines("rolling reload complete", 2, PATIENCE)
        .expect("the fixed file reloads");
    assert_eq!(served_version(port), "v4");
    assert!(
        !cluster.output().contains("worker 3 spawned"),
        "-w 2 still wins"
    );

    cluster.stop_gracefully(PATIENCE);
}

#[test]
fn a_reload_applies_a_new_worker_count() {
    let file = ConfigFile::new("count", &app_file("v1", "1"));
    let mut cluster = ClusterProcess::start(CORRAL, &["run", "--config", file.arg()]);
    let port = cluster.port();
    cluster.expect_line("[worker 1] python worker 1 serving");
    file.write(&app_file("v2", "2"));
    cluster.signal(Signal::HUP);
    cluster.expect_line("reload: 1 workers -> 2");
    cluster.expect_line("[worker 2] python worker 2 serving");
    cluster.expect_line("rolling reload complete");
    assert_eq!(served_version(port), "v2");
    cluster.stop_gracefully(PATIENCE);
}
