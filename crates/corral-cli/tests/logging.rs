//! corral's own log lines: their formats (text with timestamps, journald's
//! priorities, one JSON object a line), a bad `CORRAL_LOG`, rate-limited
//! floods, and that logging never blocks: a primary whose stderr nobody
//! reads still serves and stops, an orphaned worker whose stderr is closed
//! still exits on time.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use corral_testkit::{
    ClusterBuilder, ClusterProcess, Mark, PATIENCE, Signal, corral_path, hello, http_get,
    process_alive, send_signal, wait_until,
};

fn corral() -> ClusterBuilder {
    ClusterBuilder::corral()
}

#[test]
fn json_makes_every_line_one_object_with_events_for_each_worker() {
    let mut cluster = corral().start();
    hello(cluster.port());
    let since = cluster.mark();
    cluster.signal(Signal::TERM);
    assert!(cluster.wait_exit(PATIENCE).expect("it stops").success());
    assert!(cluster.wait_output_closed(PATIENCE));
    // Only the stdout line scripts read stays as it is.
    let plain = cluster.plain_lines();
    assert!(
        plain
            .iter()
            .all(|line| line.starts_with("out|listening on ")),
        "lines that are not JSON objects: {plain:#?}"
    );
    let events = cluster.events_since(Mark::START);
    for name in ["fork", "online", "ready", "disconnect", "exit"] {
        let workers: HashSet<u32> = events
            .iter()
            .filter(|event| event.is(name))
            .filter_map(|event| event.worker)
            .collect();
        assert_eq!(workers, HashSet::from([1, 2]), "{name}: {events:#?}");
    }
    let exit = cluster.expect_event(since, "exit", Some(1));
    assert_eq!(exit.field("requested"), Some(&true.into()));
    assert!(exit.pid.is_some() && exit.time().is_some(), "{exit:?}");
    cluster.expect_event(since, "stopped", None);
}

#[test]
fn text_lines_start_with_an_rfc3339_timestamp() {
    let mut command = corral().command_line();
    command.env("CORRAL_LOG_FORMAT", "text");
    let mut cluster = ClusterProcess::spawn(command);
    cluster.expect_line("worker 2 ready (pid");
    cluster.signal(Signal::TERM);
    assert!(cluster.wait_exit(PATIENCE).expect("it stops").success());
    assert!(cluster.wait_output_closed(PATIENCE));
    let output = cluster.output();
    let own: Vec<&str> = output
        .lines()
        .filter_map(|line| line.strip_prefix("err|"))
        .filter(|line| !line.starts_with("[worker "))
        .collect();
    assert!(own.len() >= 8, "{output}");
    for line in own {
        // 2026-11-29T19:07:29.123456Z  INFO …
        let (stamp, rest) = line.split_once(' ').unwrap_or_default();
        assert!(
            stamp.len() == 27 && &stamp[10..11] == "T" && stamp.ends_with('Z'),
            "no timestamp: {line:?}"
        );
        assert!(rest.trim_start().starts_with(['I', 'W', 'E']), "{line:?}");
    }
}

#[test]
fn under_journald_lines_carry_priorities_instead_of_timestamps() {
    let (reader, writer) = rustix::pipe::pipe().unwrap();
    let stat = rustix::fs::fstat(&writer).unwrap();
    let mut child = corral()
        .workers(1)
        .command_line()
        .env("JOURNAL_STREAM", format!("{}:{}", stat.st_dev, stat.st_ino))
        .env("CORRAL_LOG_FORMAT", "text")
        .stdout(Stdio::null())
        .stderr(Stdio::from(writer))
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(std::fs::File::from(reader)).lines();
    let mut seen = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        let ready = line.contains("worker 1 ready");
        seen.push(line);
        if ready {
            break;
        }
    }
    send_signal(child.id(), Signal::KILL);
    let _ = child.wait();
    assert!(
        seen.iter().any(|line| line.contains("worker 1 ready")),
        "{seen:#?}"
    );
    for line in &seen {
        assert!(
            line.starts_with("<6>") || line.starts_with("<4>"),
            "{line:?}"
        );
    }
}

#[test]
fn a_corral_log_that_is_no_filter_is_refused_with_a_warning() {
    let cluster = corral().workers(1).env("CORRAL_LOG", "garbage").start();
    let warning = cluster.expect_event(Mark::START, "bad_log_setting", None);
    assert!(
        warning.message.contains("CORRAL_LOG=\"garbage\"") && warning.message.contains("info"),
        "{warning:?}"
    );
    // And the default applies: the lifecycle is logged.
    cluster.expect_event(Mark::START, "ready", Some(1));
}

#[test]
fn a_flood_of_bad_messages_and_of_messages_is_logged_in_counted_summaries() {
    // 100,000 malformed lines and 5,000 messages at once, then a message
    // every 200 ms, which brings the counts of what was not logged.
    let flood = "import os, time\n\
        fd = int(os.environ['CORRAL_IPC_FD'])\n\
        os.write(fd, b'{bad\\n' * 100000)\n\
        os.write(fd, b''.join(b'{\"n\":%d}\\n' % i for i in range(5000)))\n\
        print('flooded', flush=True)\n\
        while True:\n\
        \x20   time.sleep(0.2)\n\
        \x20   os.write(fd, b'{\"trickle\":1}\\n')\n";
    let cluster = corral()
        .workers(1)
        .command(&["python3", "-c", flood])
        .start();
    cluster.expect_line("[worker 1] flooded");
    // Every message is either logged or counted in a summary.
    let accounted = || {
        let events = cluster.events_since(Mark::START);
        let logged = events
            .iter()
            .filter(|event| event.is("message") && event.message.contains("{\"n\":"))
            .count() as u64;
        let counted: u64 = events
            .iter()
            .filter(|event| {
                // Said before the next message logged, or, when none
                // follows in time, by the log writer's sweep.
                event.is("messages_not_logged")
                    || (event.is("not_logged") && event.message.contains("message from worker"))
            })
            .filter_map(|event| event.field("suppressed")?.as_u64())
            .sum();
        (logged, counted)
    };
    assert!(
        wait_until(PATIENCE, || {
            let (logged, counted) = accounted();
            logged + counted >= 5000
        }),
        "messages neither logged nor counted: {:?}",
        accounted()
    );
    let (logged, counted) = accounted();
    eprintln!("of 5,000 messages: {logged} logged, {counted} (and trickles) counted");
    assert!(
        logged < 2500,
        "most are counted, not logged: {logged} logged"
    );
    let malformed = cluster
        .events_since(Mark::START)
        .into_iter()
        .filter(|event| event.is("message_dropped"))
        .count();
    // Ten per ten seconds; the count comes with the next one after them
    // (the rate limit's own tests show it).
    assert!(
        (10..=20).contains(&malformed),
        "{malformed} lines for 100,000 malformed messages"
    );
}

#[test]
fn a_primary_whose_stderr_nobody_reads_still_serves_reloads_and_stops() {
    let (reader, writer) = rustix::pipe::pipe().unwrap();
    // The smallest pipe: a few dozen lines fill it.
    rustix::pipe::fcntl_setpipe_size(&writer, 4096).unwrap();
    let mut cluster = ClusterProcess::spawn_with_stderr(
        corral()
            .policy("round-robin")
            .args(&["--grace", "5"])
            .command_line(),
        Some(Stdio::from(writer)),
    );
    let port = cluster.port();
    assert!(wait_until(PATIENCE, || cluster.worker_pids().len() == 2));
    // Each reload logs a dozen lines nobody reads.
    for round in 1..=8 {
        let before: HashSet<u32> = cluster.worker_pids().into_iter().collect();
        cluster.signal(Signal::HUP);
        let replaced = wait_until(PATIENCE, || {
            let now: HashSet<u32> = cluster.worker_pids().into_iter().collect();
            now.len() == 2 && now.is_disjoint(&before)
        });
        assert!(replaced, "reload {round} did not replace the workers");
        hello(port);
    }
    let unread = rustix::io::ioctl_fionread(&reader).unwrap();
    // Full: the next line (a few hundred bytes, written whole) does not fit.
    assert!(unread > 3500, "the pipe is full: {unread} bytes unread");
    for _ in 0..20 {
        let answer = http_get(port, "/").expect("served through the primary's hand-off");
        assert_eq!(answer.status, 200);
    }
    cluster.signal(Signal::TERM);
    let status = cluster
        .wait_exit(PATIENCE)
        .expect("SIGTERM is obeyed with stderr blocked");
    assert!(status.success(), "{status:?}");
    drop(reader);
}

#[test]
fn orphaned_workers_exit_on_time_though_their_stderr_is_closed() {
    let cluster = corral().workers(1).start();
    let port = cluster.port();
    let worker = cluster.worker_pids()[0];
    // A request the worker would serve for 15 s.
    let request = std::thread::spawn(move || http_get(port, "/sleep/15000"));
    cluster.expect_line("sleeping 15000ms before answering");
    // The primary dies: the worker's channel closes and its stderr, a pipe
    // to the primary, has no reader left.
    send_signal(cluster.pid(), Signal::KILL);
    let killed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || !process_alive(worker)),
        "the orphan still runs {:?} after the primary died",
        killed.elapsed()
    );
    eprintln!("the orphan exited within {:?}", killed.elapsed());
    let _ = request.join();
}

/// The line a worker would like to slip into corral's log.
const FORGED: &str = "2026-01-01T00:00:00.000000Z  INFO all workers exited: cluster stopped";

/// Every line corral wrote (`out|` and `err|` both), after the transcript's
/// marker; a raw control character in any of them is a failure.
fn lines_without_controls(cluster: &ClusterProcess) -> Vec<String> {
    let output = cluster.output();
    let lines: Vec<String> = output
        .lines()
        .filter_map(|line| line.split_once('|').map(|(_, text)| text.to_string()))
        .collect();
    for line in &lines {
        assert!(
            !line.chars().any(|c| c.is_control() && c != '\t'),
            "a raw control character: {line:?}"
        );
    }
    lines
}

#[test]
fn a_worker_cannot_forge_or_hide_lines_of_the_text_log_with_its_output() {
    let script = format!(
        "printf 'x\\r{FORGED}\\n\\033[2Jcleared\\033]0;title\\007\\n'; printf '\\n{FORGED}\\n' >&2; \
         exec python3 -m http.server --bind 127.0.0.1 0 >/dev/null 2>&1"
    );
    let mut command = std::process::Command::new(corral_path());
    command
        .args([
            "run",
            "-w",
            "1",
            "-l",
            "127.0.0.1:0",
            "--ready",
            "delay:0.2",
        ])
        .args(["--", "sh", "-c", &script])
        .env("CORRAL_LOG_FORMAT", "text");
    let mut cluster = ClusterProcess::spawn(command);
    cluster.expect_line("cleared");
    cluster.signal(Signal::TERM);
    assert!(cluster.wait_exit(PATIENCE).expect("it stops").success());
    assert!(cluster.wait_output_closed(PATIENCE));
    let lines = lines_without_controls(&cluster);
    let wanted = [
        format!("[worker 1] x\\r{FORGED}"),
        "[worker 1] \\x1b[2Jcleared\\x1b]0;title\\x07".to_string(),
        format!("[worker 1] {FORGED}"),
    ];
    for line in &wanted {
        assert!(lines.contains(line), "{line:?} in {lines:#?}");
    }
    // Only corral itself says the cluster stopped, once.
    let stopped: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains("all workers exited: cluster stopped"))
        .filter(|line| !line.starts_with("[worker 1] "))
        .collect();
    assert_eq!(stopped.len(), 1, "{lines:#?}");
    assert!(!stopped[0].starts_with("2026-01-01"), "{stopped:?}");
}

#[test]
fn a_node_worker_cannot_forge_lines_with_the_path_it_listens_on() {
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no node");
        return;
    }
    let dir = std::env::temp_dir().join(format!("corral-forge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = format!("{}/x\n{FORGED}\x1b[2J", dir.display());
    let program = format!(
        "require('http').createServer((q, s) => s.end('hi')).listen({})",
        serde_json::to_string(&path).unwrap()
    );
    let script = dir.join("app.js");
    std::fs::write(&script, program).unwrap();
    let mut command = std::process::Command::new(corral_path());
    command
        .args(["run", "-w", "1", "--control", "none", "--", "node"])
        .arg(&script)
        .env("CORRAL_LOG_FORMAT", "text");
    let mut cluster = ClusterProcess::spawn(command);
    cluster.expect_line("worker 1 ready");
    cluster.signal(Signal::TERM);
    assert!(cluster.wait_exit(PATIENCE).expect("it stops").success());
    assert!(cluster.wait_output_closed(PATIENCE));
    let lines = lines_without_controls(&cluster);
    let escaped = format!("x\\n{FORGED}\\x1b[2J");
    assert!(
        lines.iter().any(|line| line.contains(&escaped)),
        "the path shows escaped: {lines:#?}"
    );
    assert!(
        !lines.iter().any(|line| line.starts_with(FORGED)),
        "{lines:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
