//! Bad input gets one clear line naming the problem, and a non-zero exit
//! where it is fatal.

use std::net::TcpListener;
use std::process::ExitStatus;

use corral_testkit::{ClusterProcess, Mark, PATIENCE, Signal, corral_path, live_children};

/// Runs corral to its end; returns the exit status and stderr lines.
fn run_to_end(args: &[&str]) -> (ExitStatus, Vec<String>) {
    let (status, cluster) = run_to_end_of(args);
    let stderr = cluster
        .output()
        .lines()
        .filter_map(|line| line.strip_prefix("err|").map(str::to_string))
        .collect();
    (status, stderr)
}

/// Runs corral to its end, with everything it wrote read; returns the exit
/// status and the process, for its output and events.
fn run_to_end_of(args: &[&str]) -> (ExitStatus, ClusterProcess) {
    let mut cluster = ClusterProcess::start(corral_path(), args);
    let status = cluster
        .wait_exit(PATIENCE)
        .unwrap_or_else(|| panic!("corral {args:?} did not exit:\n{}", cluster.output()));
    // Everything written before the exit, read to the end of the pipes.
    assert!(
        cluster.wait_output_closed(PATIENCE),
        "corral {args:?}: its output pipes stay open"
    );
    (status, cluster)
}

fn the_error_line(stderr: &[String]) -> &str {
    let errors: Vec<&String> = stderr
        .iter()
        .filter(|line| line.contains("error"))
        .collect();
    assert_eq!(errors.len(), 1, "exactly one error line: {stderr:#?}");
    errors[0]
}

#[test]
fn a_port_in_use_is_one_clear_error() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = holder.local_addr().unwrap().to_string();
    for policy in ["reuseport", "shared"] {
        let (status, stderr) = run_to_end(&["run", "-w", "2", "-l", &address, "--policy", policy]);
        assert_eq!(status.code(), Some(1));
        let error = the_error_line(&stderr);
        assert!(
            error.contains(&format!("cannot listen on {address}")),
            "{error}"
        );
        assert!(error.contains("in use"), "{error}");
    }
}

#[test]
fn a_missing_command_is_one_clear_error() {
    let (status, stderr) =
        run_to_end(&["run", "-l", "127.0.0.1:0", "--", "corral-no-such-program"]);
    assert_eq!(status.code(), Some(1));
    let error = the_error_line(&stderr);
    assert!(
        error.contains("command not found") && error.contains("corral-no-such-program"),
        "{error}"
    );
}

#[test]
fn a_command_that_always_fails_ends_the_cluster_with_an_error() {
    let (status, cluster) = run_to_end_of(&[
        "run",
        "-w",
        "2",
        "-l",
        "127.0.0.1:0",
        "--",
        "sh",
        "-c",
        "echo cannot start >&2; exit 3",
    ]);
    assert_eq!(status.code(), Some(1));
    let output = cluster.output();
    let stderr: Vec<&str> = output
        .lines()
        .filter_map(|line| line.strip_prefix("err|"))
        .collect();
    let last = stderr.last().expect("corral says why it stopped");
    assert!(last.contains("every worker fails at start"), "{last}");
    assert!(last.contains("exited with code 3"), "{last}");
    assert!(stderr.contains(&"[worker 1] cannot start"), "{stderr:#?}");
    let events = cluster.events_since(Mark::START);
    let restarts = events.iter().filter(|event| event.is("fork")).count();
    assert!(
        restarts <= 12,
        "a crash loop must not become a fork storm: {restarts} spawns"
    );
}

#[test]
fn bad_flag_values_name_the_flag() {
    for (args, flag) in [
        (&["run", "-w", "0"][..], "--workers"),
        (&["run", "--workers", "lots"][..], "--workers"),
        (&["run", "--grace", "soon"][..], "--grace"),
        (&["run", "--grace", "-1"][..], "--grace"),
        (&["run", "-l", "localhost"][..], "--listen"),
        (&["run", "-l", "[::1:80"][..], "--listen"),
        (&["run", "--policy", "random"][..], "--policy"),
        (&["run", "--backlog", "0"][..], "--backlog"),
        (&["run", "--no-such-flag"][..], "--no-such-flag"),
    ] {
        let (status, stderr) = run_to_end(args);
        assert_eq!(status.code(), Some(2), "{args:?}");
        let error = the_error_line(&stderr);
        assert!(error.contains(flag), "{args:?}: {error}");
    }
}

#[test]
fn an_unresolvable_host_is_one_clear_error() {
    let (status, stderr) = run_to_end(&["run", "-l", "no-such-host.invalid:8000"]);
    assert_eq!(
        status.code(),
        Some(2),
        "a bad --listen value is a usage error"
    );
    let error = the_error_line(&stderr);
    assert!(error.contains("no-such-host.invalid"), "{error}");
}

/// The traps of the command line: each is a usage error (exit 2) or a
/// fatal one (exit 1) with one line that names the real problem.
#[test]
fn command_line_traps_name_the_real_problem() {
    for (args, code, says) in [
        (&["run", "--"][..], 2, "no command after `--`"),
        (&["run", "-l", "localhost"][..], 2, "the port is missing"),
        (
            &["run", "-l", "[fe80::1]:0"][..],
            2,
            "link-local IPv6 address without a scope id",
        ),
        (
            &["run", "-w", "1", "-l", "127.0.0.1:0", "--", "/etc/passwd"][..],
            1,
            "is not executable: /etc/passwd has no execute permission",
        ),
    ] {
        let (status, stderr) = run_to_end(args);
        assert_eq!(status.code(), Some(code), "{args:?}: {stderr:#?}");
        let error = the_error_line(&stderr);
        assert!(error.contains(says), "{args:?}: {error}");
    }
}

#[test]
fn help_names_every_signal() {
    for args in [&["--help"][..], &["run", "--help"][..]] {
        let output = std::process::Command::new(corral_path())
            .args(args)
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&output.stdout);
        for signal in ["HUP", "TERM", "INT", "TTIN", "TTOU"] {
            assert!(help.contains(signal), "{args:?} omits {signal}:\n{help}");
        }
    }
}

/// A worker (here a shell) that runs `corral run` itself: the inner corral
/// inherits `CORRAL_WORKER_ID` but is a cluster of its own.
#[test]
fn corral_run_inside_a_worker_runs_its_own_cluster() {
    let inner = format!("{} run -w 1 -l 127.0.0.1:0 --name inner", corral_path());
    let mut outer = ClusterProcess::start(
        corral_path(),
        &[
            "run",
            "-w",
            "1",
            "-l",
            "127.0.0.1:0",
            "--",
            "sh",
            "-c",
            &inner,
        ],
    );
    let line = outer.expect_line("[worker 1] listening on");
    let port: u16 = line.rsplit(':').next().unwrap().trim().parse().unwrap();
    outer.expect_line("cluster \"inner\"");
    assert!(
        corral_testkit::wait_until(PATIENCE, || corral_testkit::http_get(port, "/")
            .is_ok_and(|response| response.status == 200)),
        "the inner cluster never served:\n{}",
        outer.output()
    );
    let answer = corral_testkit::hello(port);
    assert_eq!(answer.id, 1);
    assert!(
        !outer.output().contains("broken worker environment"),
        "{}",
        outer.output()
    );

    // The shell is the outer worker; the inner primary is its child, and
    // the inner worker the inner primary's. A SIGKILL of the outer primary
    // would reach none of them past the shell, so the outer cluster is
    // stopped as a user would stop it, and every one of them must be gone.
    let shells = outer.worker_pids();
    let inner_primaries: Vec<u32> = shells.iter().flat_map(|&pid| live_children(pid)).collect();
    let inner_workers: Vec<u32> = inner_primaries
        .iter()
        .flat_map(|&pid| live_children(pid))
        .collect();
    assert!(
        !inner_primaries.is_empty() && !inner_workers.is_empty(),
        "no inner cluster under the outer worker {shells:?}:\n{}",
        outer.output()
    );
    outer.signal(Signal::TERM);
    assert!(
        outer.wait_exit(PATIENCE).is_some(),
        "the outer cluster did not stop:\n{}",
        outer.output()
    );
    let everyone: Vec<u32> = [shells, inner_primaries, inner_workers].concat();
    assert!(
        corral_testkit::wait_until(PATIENCE, || everyone
            .iter()
            .all(|&pid| !corral_testkit::process_alive(pid))),
        "left running after the outer cluster stopped: {:?}\n{}",
        everyone
            .iter()
            .filter(|&&pid| corral_testkit::process_alive(pid))
            .collect::<Vec<_>>(),
        outer.output()
    );
}

/// The values the issue found accepted by the flags and then refused by
/// every worker at start: now the workers take them, and what is past the
/// one set of limits is refused at the flag.
#[test]
fn every_value_a_flag_accepts_reaches_the_workers() {
    for flag in [
        &["--grace", "4294968"][..],
        &["--timeout", "17179870"][..],
        &["--max-message-size", "4294967296"][..],
        &["--grace", "31536000", "--timeout", "31536000"][..],
    ] {
        let mut args = vec!["run", "-w", "1", "-l", "127.0.0.1:0"];
        args.extend_from_slice(flag);
        let cluster = ClusterProcess::start(corral_path(), &args);
        cluster.expect_event(Mark::START, "ready", Some(1));
        assert!(
            !cluster.output().contains("broken worker environment"),
            "{flag:?}:\n{}",
            cluster.output()
        );
    }
    for (args, flag) in [
        (&["run", "--grace", "31536001"][..], "--grace"),
        (&["run", "--timeout", "1e18"][..], "--timeout"),
        (
            &["run", "--max-message-size", "4294967297"][..],
            "--max-message-size",
        ),
    ] {
        let (status, stderr) = run_to_end(args);
        assert_eq!(status.code(), Some(2), "{args:?}");
        let error = the_error_line(&stderr);
        assert!(error.contains(flag), "{args:?}: {error}");
    }
}

/// Values that were accepted and then could not work: an address no
/// stream socket can accept on, a message limit below the protocol's own
/// lines, a name with control characters. Each is one line naming the flag.
#[test]
fn values_that_cannot_work_are_refused_naming_the_flag() {
    for (args, flag, code) in [
        (&["run", "-l", "224.0.0.1:0"][..], "--listen", 2),
        (&["run", "-l", "255.255.255.255:0"][..], "--listen", 2),
        (&["run", "-l", "[ff02::1]:0"][..], "--listen", 2),
        (&["run", "--metrics", "239.1.1.1:9090"][..], "--metrics", 2),
        (
            &["run", "--max-message-size", "2", "--policy", "round-robin"][..],
            "--max-message-size",
            2,
        ),
        (
            &["run", "--max-message-size", "2047"][..],
            "--max-message-size",
            2,
        ),
        (
            &["run", "-l", "127.0.0.1:0", "--name", "\n"][..],
            "--name",
            1,
        ),
        (
            &["run", "-l", "127.0.0.1:0", "--name", "a\u{1b}[2Jb"][..],
            "--name",
            1,
        ),
    ] {
        let (status, stderr) = run_to_end(args);
        assert_eq!(status.code(), Some(code), "{args:?}: {stderr:#?}");
        let error = the_error_line(&stderr);
        assert!(error.contains(flag), "{args:?}: {error}");
        assert!(!error.contains('\u{1b}'), "{args:?}: {error:?}");
    }
}
