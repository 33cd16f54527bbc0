//! `corral run -- COMMAND`: clustering programs that are not Rust, which
//! receive their sockets by the systemd socket-activation protocol.

use std::collections::HashMap;
use std::time::Duration;

use corral_testkit::{
    ClusterProcess, Mark, PATIENCE, Signal, corral_path, http_get, process_alive, wait_until,
};

const ENV_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/env_server.py");

fn run(args: &[&str]) -> ClusterProcess {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    ClusterProcess::start(corral_path(), &all)
}

/// The fixture's answer, `python worker 1 pid 10 listen_pid 10 …`, as a map.
fn fields(body: &str) -> HashMap<String, String> {
    let body = body
        .strip_prefix("python ")
        .unwrap_or_else(|| panic!("not the fixture: {body:?}"));
    let words: Vec<&str> = body.split_whitespace().collect();
    words
        .chunks(2)
        .filter_map(|pair| match pair {
            [key, value] => Some((key.to_string(), value.to_string())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_python_worker_gets_the_systemd_environment_with_its_own_pid() {
    let cluster = run(&["-w", "2", "-l", "127.0.0.1:0", "--", "python3", ENV_SERVER]);
    let port = cluster.port();
    let mut by_worker = HashMap::new();
    for _ in 0..400 {
        let response = http_get(port, "/").expect("the python worker answers");
        assert_eq!(response.status, 200);
        let answer = fields(&response.body);
        by_worker.insert(answer["worker"].clone(), answer);
        if by_worker.len() == 2 {
            break;
        }
    }
    assert_eq!(
        by_worker.len(),
        2,
        "both python workers answer: {by_worker:?}"
    );
    let children = cluster.worker_pids();
    for (id, answer) in &by_worker {
        assert!(id == "1" || id == "2", "{answer:?}");
        assert_eq!(
            answer["listen_pid"], answer["pid"],
            "LISTEN_PID is the worker's own pid"
        );
        assert!(
            children.contains(&answer["pid"].parse().unwrap()),
            "{children:?}"
        );
        assert_eq!(answer["fds"], "1");
        assert_eq!(answer["names"], "listener0");
        assert_eq!(answer["generation"], "1");
        assert_eq!(answer["ipc"], "4", "the channel follows the sockets");
        let instance: u32 = answer["instance"].parse().unwrap();
        assert_eq!(
            instance + 1,
            id.parse::<u32>().unwrap(),
            "NODE_APP_INSTANCE is pm2's 0-based instance number"
        );
        assert_eq!(answer["workers"], "2", "CORRAL_WORKERS");
    }
}

#[test]
fn every_listen_address_is_passed_as_its_own_descriptor() {
    let cluster = run(&[
        "-w",
        "1",
        "-l",
        "127.0.0.1:0",
        "-l",
        "127.0.0.1:0",
        "--",
        "python3",
        ENV_SERVER,
    ]);
    let ports = cluster
        .wait_for_lines("out|listening on ", 2, PATIENCE)
        .expect("one line per address");
    assert_ne!(ports[0], ports[1]);
    let response = http_get(cluster.port(), "/").unwrap();
    let answer = fields(&response.body);
    assert_eq!(answer["fds"], "2");
    assert_eq!(answer["names"], "listener0:listener1");
    assert_eq!(answer["ipc"], "5");
}

#[test]
fn worker_output_is_passed_through_prefixed_with_its_id() {
    let script =
        "echo \"out of $CORRAL_WORKER_ID\"; echo \"err of $CORRAL_WORKER_ID\" >&2; exec sleep 30";
    let cluster = run(&["-w", "2", "-l", "127.0.0.1:0", "--", "sh", "-c", script]);
    cluster.expect_line("out|[worker 1] out of 1");
    cluster.expect_line("out|[worker 2] out of 2");
    cluster.expect_line("err|[worker 1] err of 1");
    cluster.expect_line("err|[worker 2] err of 2");
}

#[test]
fn a_worker_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let program = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)";
    let mut cluster = run(&[
        "-w",
        "1",
        "-l",
        "127.0.0.1:0",
        "--grace",
        "0.3",
        "--",
        "python3",
        "-c",
        program,
    ]);
    cluster.expect_line("[worker 1] up");
    let worker = cluster.worker_pids();
    cluster.signal(Signal::TERM);
    let status = cluster.wait_exit(PATIENCE).expect("the primary exits");
    assert!(status.success(), "{status:?}");
    // The reader thread may still be draining the primary's last lines.
    cluster.expect_event_where(Mark::START, "worker 1's grace period ends", |event| {
        event.is_of("grace_expired", 1) && event.has("signal", "SIGKILL")
    });
    assert!(worker.iter().all(|&pid| !process_alive(pid)));
}

#[test]
fn killing_the_primary_kills_foreign_workers_too() {
    let mut cluster = run(&["-w", "2", "-l", "127.0.0.1:0", "--", "python3", ENV_SERVER]);
    cluster.expect_line("[worker 1] python worker 1 serving");
    cluster.expect_line("[worker 2] python worker 2 serving");
    let workers = cluster.worker_pids();
    assert_eq!(workers.len(), 2);
    cluster.signal(Signal::KILL);
    cluster.wait_exit(PATIENCE);
    let gone = wait_until(Duration::from_secs(1), || {
        workers.iter().all(|&pid| !process_alive(pid))
    });
    assert!(gone, "python workers {workers:?} outlived their primary");
}

#[test]
fn stopping_the_cluster_stops_what_a_wrapper_script_started() {
    // A wrapper that does not `exec`: the server is the shell's child.
    let script = "sleep 60 & echo \"child $!\"; wait";
    let mut cluster = run(&[
        "-w",
        "1",
        "-l",
        "127.0.0.1:0",
        "--grace",
        "2",
        "--",
        "sh",
        "-c",
        script,
    ]);
    let line = cluster.expect_line("[worker 1] child ");
    let child: u32 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(process_alive(child));
    cluster.signal(Signal::TERM);
    let status = cluster.wait_exit(PATIENCE).expect("the cluster stops");
    assert!(status.success());
    let gone = wait_until(Duration::from_secs(2), || !process_alive(child));
    assert!(gone, "the wrapper's child {child} outlived the cluster");
}

/// corral started from a shell with an extra descriptor open (`7>file`,
/// not close-on-exec) and a low soft descriptor limit: the worker gets
/// stdio, its socket and its channel, nothing else, and the hard limit.
#[test]
fn a_worker_inherits_only_its_own_descriptors_and_the_hard_descriptor_limit() {
    let dir = std::env::temp_dir().join(format!("corral-fds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stray = dir.join("stray");
    let worker = r#"for fd in /proc/$$/fd/*; do [ -e "$fd" ] && echo "fd ${fd##*/}"; done
echo "limits $(ulimit -Sn) $(ulimit -Hn)"; exec sleep 30"#;
    let mut command = std::process::Command::new("sh");
    command.args([
        "-c",
        r#"exec 7>"$1"; ulimit -Sn 256; exec "$2" run -w 1 -l 127.0.0.1:0 -- sh -c "$3""#,
        "sh",
    ]);
    command.arg(&stray).arg(corral_path()).arg(worker);
    let cluster = ClusterProcess::spawn(command);
    let limits = cluster.expect_line("[worker 1] limits");
    let words: Vec<&str> = limits.split_whitespace().collect();
    let (soft, hard) = (words[words.len() - 2], words[words.len() - 1]);
    assert_eq!(
        soft, hard,
        "the soft limit is raised to the hard one: {limits}"
    );
    let fds: Vec<String> = cluster
        .output()
        .lines()
        .filter_map(|line| line.split_once("[worker 1] fd ").map(|(_, fd)| fd))
        .map(str::to_string)
        .collect();
    assert_eq!(fds, ["0", "1", "2", "3", "4"], "{}", cluster.output());
    let _ = std::fs::remove_dir_all(&dir);
}
