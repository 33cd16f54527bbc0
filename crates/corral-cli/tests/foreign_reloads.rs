//! The per-language recipes of docs/command-line.md for foreign workers, checked with the
//! real servers: each recipe, clustered by `corral run` under `reuseport`,
//! loses no request over rolling reloads with a new connection per request.
//! (A server that dies at once on SIGTERM drops the connection it had just
//! accepted; the recipes stop accepting, finish what they hold, then exit.)
//!
//! gunicorn and uvicorn come from PyPI (`.ci/run` installs them) and Node
//! from Debian; a test whose server is missing says so and skips.

use std::path::Path;
use std::process::Command;

use corral_testkit::{
    ClusterProcess, Load, LoadTotals, PATIENCE, Signal, corral_path, http_get, wait_until,
};

const RECIPES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/recipes");

/// Whether `program --version` (`go version`) runs.
fn installed(program: &str) -> bool {
    let version = if program == "go" {
        "version"
    } else {
        "--version"
    };
    let found = Command::new(program)
        .arg(version)
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        eprintln!("{program} is not installed: skipping (.ci/run installs it)");
    }
    found
}

/// What the clients saw, and the cluster's log.
struct Outcome {
    totals: LoadTotals,
    log: String,
}

/// Runs `command` as 2 workers, reloads them `reloads` times under load
/// (4 clients), and returns what the clients saw.
fn reload_under_load(command: &[&str], env: &[(&str, &str)], reloads: usize) -> Outcome {
    let mut args = vec![
        "run",
        "-w",
        "2",
        "-l",
        "127.0.0.1:0",
        "--ready",
        "delay:0.5",
        "--grace",
        "5",
        "--",
    ];
    args.extend_from_slice(command);
    let mut process = Command::new(corral_path());
    process.args(&args).current_dir(Path::new(RECIPES));
    for (key, value) in env {
        process.env(key, value);
    }
    let cluster = ClusterProcess::spawn(process);
    let port = cluster.port();
    assert!(
        wait_until(PATIENCE, || http_get(port, "/")
            .is_ok_and(|r| r.status == 200)),
        "{command:?} never answered:\n{}",
        cluster.output()
    );
    let load = Load::start(port, 4);
    for round in 1..=reloads {
        load.wait_for_more(20);
        let reload = cluster.mark();
        cluster.signal(Signal::HUP);
        cluster.expect_event_where(reload, &format!("reload {round} completes"), |event| {
            event.is("reload_completed") && event.has("kind", "rolling")
        });
    }
    load.wait_for_more(20);
    let failures = load.failures();
    let totals = load.stop();
    eprintln!("{command:?}: {totals:?} over {reloads} reloads; failures: {failures:#?}");
    Outcome {
        totals,
        log: cluster.output(),
    }
}

fn assert_nothing_lost(outcome: Outcome, what: &str) {
    let totals = outcome.totals;
    assert_eq!(
        (totals.failed, totals.refused),
        (0, 0),
        "{what}: requests lost during the reloads:\n{}",
        outcome.log
    );
}

#[test]
fn a_plain_python_server_with_the_sigterm_recipe_loses_nothing() {
    let totals = reload_under_load(&["python3", "plain_http.py"], &[], 3);
    assert_nothing_lost(totals, "python http.server");
}

#[test]
fn gunicorn_as_the_readme_runs_it_loses_nothing() {
    if !installed("gunicorn") {
        return;
    }
    let totals = reload_under_load(&["gunicorn", "wsgi_app:app"], &[], 3);
    assert_nothing_lost(totals, "gunicorn");
}

#[test]
fn uvicorn_with_the_readme_launcher_loses_nothing() {
    if !installed("uvicorn") {
        return;
    }
    let totals = reload_under_load(&["python3", "uvicorn_serve.py"], &[], 3);
    assert_nothing_lost(totals, "uvicorn (uvicorn_serve.py)");
}

/// `uvicorn --fd 3` as is serves and reloads; it may drop a connection it
/// accepted just before its shutdown (the README says so).
#[test]
fn uvicorn_on_fd_3_serves_and_reloads() {
    if !installed("uvicorn") {
        return;
    }
    let totals = reload_under_load(&["uvicorn", "--fd", "3", "asgi_app:app"], &[], 1).totals;
    assert!(totals.succeeded > 0);
    assert_eq!(totals.refused, 0);
}

#[test]
fn node_with_the_sigterm_recipe_loses_nothing() {
    if !installed("node") {
        return;
    }
    let totals = reload_under_load(&["node", "node_server.js"], &[], 3);
    assert_nothing_lost(totals, "node");
}

#[test]
fn go_with_shutdown_on_sigterm_loses_nothing() {
    if !installed("go") {
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-recipe");
    let binary = dir.join("go_server");
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg("go_server.go")
        .current_dir(RECIPES)
        .env("GOCACHE", dir.join("cache"))
        .env("GOPATH", dir.join("gopath"))
        .env("GO111MODULE", "off")
        .output()
        .expect("go runs");
    assert!(
        built.status.success(),
        "go build failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let binary = binary.to_str().expect("a UTF-8 path");
    let totals = reload_under_load(&[binary], &[], 3);
    assert_nothing_lost(totals, "go");
}
