//! `--watch`: a file change is a rolling reload that loses no request; a
//! change that breaks the program aborts its reload while the old workers
//! serve on, and the next change reloads; changes under `node_modules`,
//! `.git` or `.gitignore`d paths reload nothing; when the inotify watch
//! limit is reached, a warning says so and the cluster runs on.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;

use corral_testkit::{
    ClusterBuilder, ClusterProcess, Load, Mark, PATIENCE, corral_path, http_get, node_available,
    wait_until,
};

const ENV_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/env_server.py");

/// A directory of the test's own, removed at the end.
struct Project {
    dir: PathBuf,
}

impl Project {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("corral-watch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Project {
            dir: dir.canonicalize().unwrap(),
        }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }

    fn write(&self, relative: &str, text: &str) {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The next `watch_triggered` after `mark`: the file it names and how many
/// files changed.
fn triggered(cluster: &ClusterProcess, mark: Mark) -> (PathBuf, u64) {
    let event = cluster.expect_event(mark, "watch_triggered", None);
    let path = PathBuf::from(event.string("path").expect("a path"));
    (path, event.number("changes").expect("a count"))
}

#[test]
fn a_watched_edit_reloads_every_worker_without_losing_a_request() {
    let project = Project::new("edit");
    project.write("config.json", "{\"version\": 1}\n");
    let dir = project.dir.to_str().unwrap();
    let cluster = ClusterBuilder::corral()
        .args(&["--grace", "5", "--watch", dir])
        .start();
    let port = cluster.port();
    cluster.expect_line("watching");
    let first: HashSet<u32> = cluster.worker_pids().into_iter().collect();
    let new_connections = Load::start(port, 1);
    let kept_alive = Load::keep_alive(port, 2);
    new_connections.wait_for_more(20);
    kept_alive.wait_for_more(20);

    let mark = cluster.mark();
    project.write("config.json", "{\"version\": 2}\n");
    let (path, changes) = triggered(&cluster, mark);
    assert_eq!((path, changes), (project.path("config.json"), 1));
    let done = cluster.expect_event(mark, "reload_completed", None);
    assert!(done.has("replaced", 2), "{done:?}");
    new_connections.wait_for_more(20);
    kept_alive.wait_for_more(20);
    new_connections
        .stop()
        .assert_none_lost("a watched edit, new connections");
    kept_alive
        .stop()
        .assert_none_lost("a watched edit, connections kept alive");
    assert!(
        wait_until(PATIENCE, || {
            let now: HashSet<u32> = cluster.worker_pids().into_iter().collect();
            now.len() == 2 && now.is_disjoint(&first)
        }),
        "every worker was replaced:\n{}",
        cluster.output()
    );
}

/// app.py: the fixture server, answering `version VERSION`.
fn app(version: &str) -> String {
    format!(
        "import os, runpy\nos.environ['APP_VERSION'] = '{version}'\n\
         runpy.run_path('{ENV_SERVER}', run_name='__main__')\n"
    )
}

/// The pid and version of the worker that answers (`cluster`'s output in
/// the failure, to tell which worker did not answer and why).
fn answer(cluster: &ClusterProcess, port: u16) -> (u32, String) {
    let body = http_get(port, "/")
        .unwrap_or_else(|err| panic!("the app answers: {err}\n{}", cluster.output()))
        .body;
    let words: Vec<&str> = body.split_whitespace().collect();
    let field = |key: &str| words[words.iter().position(|word| *word == key).unwrap() + 1];
    (field("pid").parse().unwrap(), field("version").to_string())
}

#[test]
fn a_broken_edit_keeps_the_old_workers_serving_and_the_next_edit_reloads() {
    let project = Project::new("broken");
    project.write("app.py", &app("1"));
    project.write(".gitignore", "*.log\n");
    project.write("node_modules/dep/index.js", "module.exports = 1;\n");
    project.write(".git/HEAD", "ref: refs/heads/main\n");
    // `--watch` alone: the directory of the script, app.py's.
    let script = project.path("app.py");
    let cluster = ClusterBuilder::corral()
        .args(&["--grace", "2", "--watch"])
        .command(&["python3", script.to_str().unwrap()])
        .start();
    let port = cluster.port();
    cluster.expect_line(&format!("watching {}", project.dir.display()));
    let first: HashSet<u32> = cluster.worker_pids().into_iter().collect();
    let load = Load::start(port, 1);
    load.wait_for_more(10);

    // Ignored changes, then the edit that breaks the program, at once: one
    // burst, in which only app.py counts.
    let mark = cluster.mark();
    project.write("node_modules/dep/index.js", "module.exports = 2;\n");
    project.write(".git/HEAD", "ref: refs/heads/next\n");
    project.write("app.log", "a line the app logged\n");
    project.write("app.py", "raise SystemExit('app.py: broken on purpose')\n");
    assert_eq!(triggered(&cluster, mark), (script.clone(), 1));
    let aborted = cluster.expect_event(mark, "reload_aborted", None);
    assert!(
        aborted
            .string("reason")
            .is_some_and(|reason| reason.contains("exited with code 1")),
        "{aborted:?}"
    );
    for _ in 0..10 {
        let (pid, version) = answer(&cluster, port);
        assert_eq!(version, "1");
        assert!(first.contains(&pid), "the old workers keep serving");
    }
    load.wait_for_more(10);

    let mark = cluster.mark();
    project.write("app.py", &app("2"));
    assert_eq!(triggered(&cluster, mark), (script.clone(), 1));
    cluster.expect_event(mark, "reload_completed", None);
    load.wait_for_more(10);
    load.stop()
        .assert_none_lost("a broken edit, then a good one");
    assert!(
        wait_until(PATIENCE, || (0..4).all(|_| answer(&cluster, port).1 == "2")),
        "every worker runs the new version"
    );
    assert_eq!(
        cluster
            .events_since(Mark::START)
            .iter()
            .filter(|event| event.is("watch_triggered"))
            .count(),
        2,
        "no change reloaded but the two edits:\n{}",
        cluster.output()
    );
}

/// app.js: a plain Node server (corral is its cluster primary), answering
/// `version VERSION pid PID`.
fn node_app(version: &str) -> String {
    format!(
        "require('http').createServer((req, res) => \
         res.end(`version {version} pid ${{process.pid}}\\n`)).listen(process.env.PORT);\n"
    )
}

#[test]
fn a_node_app_s_broken_save_aborts_its_reload_and_the_old_workers_serve_on() {
    if !node_available() {
        eprintln!("skipped: no node");
        return;
    }
    let project = Project::new("node");
    project.write("app.js", &node_app("1"));
    project.write("node_modules/dep/index.js", "module.exports = 1;\n");
    // `node app.js` from the project's directory, as pm2 users run it.
    let mut command = Command::new(corral_path());
    command
        .args([
            "run", "-w", "2", "--grace", "2", "--watch", "--", "node", "app.js",
        ])
        .current_dir(&project.dir)
        .env("PORT", "0");
    let cluster = ClusterProcess::spawn(command);
    corral_testkit::wait_ready(&cluster, Mark::START, 2);
    let port = cluster.bound_port();
    cluster.expect_line(&format!("watching {}", project.dir.display()));
    let load = Load::start(port, 1);
    load.wait_for_more(10);

    let mark = cluster.mark();
    project.write("node_modules/dep/index.js", "module.exports = 2;\n");
    project.write("app.js", "throw new Error('app.js: broken on purpose');\n");
    assert_eq!(triggered(&cluster, mark), (project.path("app.js"), 1));
    cluster.expect_event(mark, "reload_aborted", None);
    let body = http_get(port, "/").expect("the old workers answer").body;
    assert!(body.starts_with("version 1 "), "{body}");
    load.wait_for_more(10);

    let mark = cluster.mark();
    project.write("app.js", &node_app("2"));
    cluster.expect_event(mark, "reload_completed", None);
    load.wait_for_more(10);
    load.stop()
        .assert_none_lost("a Node app's broken save, then a good one");
    for _ in 0..4 {
        let body = http_get(port, "/").expect("the new workers answer").body;
        assert!(body.starts_with("version 2 "), "{body}");
    }
}

/// Whether this machine lets a test set inotify limits of its own in a user
/// namespace (`unshare -U -r`): the limits of the machine stay as they are.
fn own_inotify_limits() -> bool {
    Command::new("unshare")
        .args(["-U", "-r", "sh", "-c"])
        .arg("echo 4 > /proc/sys/user/max_inotify_watches")
        .output()
        .is_ok_and(|output| output.status.success())
}

#[test]
fn past_the_inotify_watch_limit_a_warning_says_so_and_the_cluster_runs_on() {
    if !own_inotify_limits() {
        eprintln!("skipped: no user namespace to set an inotify limit in");
        return;
    }
    let project = Project::new("limit");
    for dir in ["a", "b", "c", "d", "e", "f"] {
        project.write(&format!("{dir}/x.txt"), "1\n");
    }
    let corral = ClusterBuilder::corral()
        .args(&["--grace", "1", "--watch", project.dir.to_str().unwrap()])
        .command_line();
    // A limit of 3 watches in a user namespace of the cluster's own: the
    // root and two directories are watched, four are not.
    let mut command = Command::new("unshare");
    command
        .args(["-U", "-r", "sh", "-c"])
        .arg("echo 3 > /proc/sys/user/max_inotify_watches && exec \"$0\" \"$@\"")
        .arg(corral.get_program())
        .args(corral.get_args());
    for (name, value) in corral.get_envs() {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    let cluster = ClusterProcess::spawn(command);
    let warning = cluster.expect_line("the inotify watch limit is reached");
    assert!(
        warning.contains("user.max_inotify_watches = 3")
            && warning.contains("changes in 4 directories")
            && warning.contains("the cluster runs on"),
        "{warning}"
    );
    corral_testkit::wait_ready(&cluster, Mark::START, 2);
    let mark = cluster.mark();
    project.write("x.txt", "a change in the watched root\n");
    assert_eq!(triggered(&cluster, mark).0, project.path("x.txt"));
    cluster.expect_event(mark, "reload_completed", None);
}
