//! Node programs started through a launcher (`npm start`, `yarn`, `npx tsx
//! app.ts`, `./node_modules/.bin/tsx`): corral looks through the launcher,
//! so each worker is the Node program itself, a cluster worker, and the
//! cluster is named after the package or the script. A launcher it cannot
//! look through is a one-line error saying what to run. Real npm and tsx.

use std::collections::BTreeSet;
use std::process::Command;

use corral_testkit::{
    ClusterProcess, Mark, PATIENCE, Signal, corral_path, http_get, node_available,
};

const PROJECT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/node/launcher_app"
);
const TSX: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/node/node_modules/tsx"
);

/// Node, npm and the fixtures' tsx, or a line saying what is missing.
fn have_tools() -> bool {
    if !node_available() {
        return false;
    }
    if !std::path::Path::new(TSX).is_dir() {
        eprintln!(
            "tsx is not installed for the fixtures: skipping; run \
             `npm ci --prefix crates/corral-cli/tests/fixtures/node` (.ci/run does)"
        );
        return false;
    }
    true
}

/// `corral run -w 2 -- LAUNCHER…` in the project's directory, once both
/// workers are ready.
fn start(launcher: &[&str]) -> ClusterProcess {
    let mut command = Command::new(corral_path());
    command
        .current_dir(PROJECT)
        .args(["run", "-w", "2", "--grace", "5", "--"])
        .args(launcher)
        .env("PORT", "0");
    let cluster = ClusterProcess::spawn(command);
    cluster.expect_event(Mark::START, "ready", Some(1));
    cluster.expect_event(Mark::START, "ready", Some(2));
    cluster
}

/// Asks until both workers answered; their answers.
fn both_answers(port: u16) -> BTreeSet<String> {
    let mut answers = BTreeSet::new();
    for _ in 0..200 {
        let body = http_get(port, "/").expect("the cluster serves").body;
        answers.insert(body.trim().to_string());
        if answers.len() == 2 {
            break;
        }
    }
    answers
}

fn stop(mut cluster: ClusterProcess) {
    cluster.signal(Signal::TERM);
    let status = cluster.wait_exit(PATIENCE).expect("the cluster stops");
    assert!(status.success(), "{status:?}\n{}", cluster.output());
}

#[test]
fn npm_start_runs_the_package_script_as_two_cluster_workers() {
    if !have_tools() {
        return;
    }
    let cluster = start(&["npm", "start"]);
    let port = cluster.bound_port();
    let answers = both_answers(port);
    assert_eq!(answers.len(), 2, "two workers answer: {answers:?}");
    for answer in &answers {
        // Each worker is the script's `node app.js`, a cluster worker, with
        // the variable the script sets in front of it.
        assert!(answer.starts_with("js worker "), "{answer}");
        assert!(
            !answer.contains("worker none"),
            "not a cluster worker: {answer}"
        );
        assert!(answer.ends_with("env production"), "{answer}");
    }
    cluster.expect_line("`npm start` runs `NODE_ENV=production node app.js`");
    assert!(
        cluster.output().contains("cluster \"launcher-app\""),
        "named after the package:\n{}",
        cluster.output()
    );
    stop(cluster);
}

#[test]
fn tsx_through_npx_and_its_bin_runs_as_node_import_tsx() {
    if !have_tools() {
        return;
    }
    for launcher in [
        &["npx", "tsx", "app.ts"][..],
        &["../node_modules/.bin/tsx", "app.ts"],
    ] {
        let cluster = start(launcher);
        let port = cluster.bound_port();
        let answers = both_answers(port);
        assert_eq!(answers.len(), 2, "{launcher:?}: {answers:?}");
        assert!(
            answers
                .iter()
                .all(|answer| answer.starts_with("ts worker ") && !answer.contains("none")),
            "{launcher:?}: {answers:?}"
        );
        assert!(cluster.output().contains("cluster \"app\""), "{launcher:?}");
        stop(cluster);
    }
}

#[test]
fn a_script_that_is_a_shell_line_is_refused_with_what_to_run() {
    if !have_tools() {
        return;
    }
    let output = Command::new(corral_path())
        .current_dir(PROJECT)
        .args(["run", "-w", "2", "--", "npm", "run", "build"])
        .output()
        .expect("corral runs");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("error"))
        .collect();
    assert_eq!(errors.len(), 1, "one line: {stderr}");
    assert!(
        errors[0].contains("tsc && node dist/app.js") && errors[0].contains("corral run -- node"),
        "{stderr}"
    );
}
