//! Environments: the variables of `--env-file` files, the config file's
//! `[env]` and its `[env.PROFILE]` picked by `--env-name`, and `--env`
//! flags reach the workers in that order of precedence; a reload reads the
//! files again; `corral status --json` names the profile, the files and the
//! variables, never their values; bad files are one-line errors.

use std::path::{Path, PathBuf};
use std::process::Command;

use corral_testkit::{ClusterBuilder, Mark, Signal, corral_path, wait_ready};

/// A directory of its own, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("corral-env-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        Dir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("the file is written");
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A worker that prints the variables under test, then waits.
const PRINTER: &str = "command = \"sh\"\nargs = [\"-c\", \"echo env APP=$APP TIER=$TIER DB=$DB \
                       SECRET=$SECRET; exec sleep 600\"]\ngrace = 1\n";

fn config(dir: &Dir) -> PathBuf {
    dir.write(
        "corral.toml",
        &format!(
            "{PRINTER}env-name = \"production\"\nenv-file = [\"app.env\"]\n\n[env]\n\
             APP = \"base\"\nTIER = \"dev\"\n\n[env.production]\nTIER = \"prod\"\n\n\
             [env.staging]\nTIER = \"staging\"\n"
        ),
    )
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

#[test]
fn profiles_files_and_flags_reach_workers_in_order_and_a_reload_rereads_them() {
    let dir = Dir::new("order");
    let file = config(&dir);
    dir.write(
        "app.env",
        "# the file\nAPP=fromfile\nDB=first\nSECRET=s3cret\n",
    );
    let cluster = ClusterBuilder::corral()
        .workers(1)
        .args(&["--config", path(&file), "--env", "SECRET=flag"])
        .start();
    cluster.expect_line("env APP=base TIER=prod DB=first SECRET=flag");

    let status = cluster.status_json();
    let environment = &status["environment"];
    assert_eq!(environment["profile"], "production", "{status}");
    assert_eq!(
        environment["files"][0].as_str(),
        Some(path(&dir.0.join("app.env"))),
        "{status}"
    );
    let variables: Vec<&str> = environment["variables"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|name| name.as_str())
        .collect();
    for name in ["APP", "DB", "SECRET", "TIER"] {
        assert!(variables.contains(&name), "{name} in {variables:?}");
    }
    let shown = cluster.control(&["status", "sh"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("environment: profile production, ") && shown.contains(", 4 variables"),
        "{shown}"
    );
    let text = status.to_string() + &shown;
    for value in ["s3cret", "flag", "base", "first"] {
        assert!(!text.contains(value), "{value} shown: {text}");
    }

    // The file changes, the reload reads it again.
    dir.write("app.env", "DB=second\n");
    let reload = cluster.mark();
    cluster.signal(Signal::HUP);
    cluster.expect_event(reload, "reload_completed", None);
    cluster.expect_line_after(reload, "env APP=base TIER=prod DB=second SECRET=flag");
}

#[test]
fn an_env_file_without_a_config_file_is_read_again_at_each_reload() {
    let dir = Dir::new("flagonly");
    let env = dir.write("app.env", "DB=one\n");
    let cluster = ClusterBuilder::corral()
        .workers(1)
        .args(&["--env-file", path(&env), "--grace", "1"])
        .command(&["sh", "-c", "echo env DB=$DB; exec sleep 600"])
        .start();
    cluster.expect_line("env DB=one");
    dir.write("app.env", "DB=two\n");
    let reload = cluster.mark();
    cluster.signal(Signal::HUP);
    cluster.expect_event(reload, "reload_completed", None);
    cluster.expect_line_after(reload, "env DB=two");
}

#[test]
fn the_env_name_flag_overrides_the_files_key() {
    let dir = Dir::new("flag");
    let file = config(&dir);
    dir.write("app.env", "DB=x\n");
    let cluster = ClusterBuilder::corral()
        .workers(1)
        .args(&["--config", path(&file), "--env-name", "staging"])
        .start();
    cluster.expect_line("env APP=base TIER=staging DB=x SECRET=");
    wait_ready(&cluster, Mark::START, 1);
    assert_eq!(cluster.status_json()["environment"]["profile"], "staging");
}

fn check(file: &Path) -> (bool, String) {
    let output = Command::new(corral_path())
        .args(["check", path(file)])
        .output()
        .expect("corral runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_env_files_and_unknown_profiles_are_one_line_errors() {
    let dir = Dir::new("bad");
    let file = config(&dir);
    dir.write("app.env", "A=1\nthis is not a variable\n");
    let (ok, stderr) = check(&file);
    assert!(!ok);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("app.env: line 2: \"this is not a variable\""),
        "{stderr}"
    );

    std::fs::remove_file(dir.0.join("app.env")).unwrap();
    let (ok, stderr) = check(&file);
    assert!(!ok);
    assert!(stderr.contains("app.env: cannot read it"), "{stderr}");

    dir.write("app.env", "A=1\n");
    dir.write(
        "corral.toml",
        &format!("{PRINTER}env-name = \"prod\"\n[env.production]\nTIER = \"p\"\n"),
    );
    let (ok, stderr) = check(&file);
    assert!(!ok);
    assert!(
        stderr.contains("env-name \"prod\": there is no [env.prod] table (it has production)"),
        "{stderr}"
    );

    let output = Command::new(corral_path())
        .args(["run", "--env-name", "production", "--", "true"])
        .output()
        .expect("corral runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("give --config FILE"), "{stderr}");
}
