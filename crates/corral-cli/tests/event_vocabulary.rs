//! One vocabulary: over a real cluster's life (start, a worker killed, a
//! rolling reload, a scale, a stop), the JSON log and `corral events` name
//! the same events, in the same order, with the same worker, pid, fields
//! and text.

use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use corral_testkit::{ClusterBuilder, ClusterProcess, LogEvent, PATIENCE, Signal, send_signal};
use serde_json::{Map, Value};

/// The lifecycle events (docs/events.md), as opposed to other log lines.
const LIFECYCLE: [&str; 22] = [
    "bound",
    "fork",
    "online",
    "ready",
    "disconnect",
    "exit",
    "crash_loop",
    "reload_started",
    "reload_completed",
    "reload_aborted",
    "replaced",
    "scaled",
    "draining_soon",
    "stopping",
    "stopping_now",
    "stopped",
    "hung",
    "grace_expired",
    "recycled",
    "ready_timeout",
    "worker_stalled",
    "watch_triggered",
];

/// An event as both sides must agree on it: name, worker, pid, fields, text.
#[derive(Debug, Clone, PartialEq)]
struct Said {
    event: String,
    worker: Option<u64>,
    pid: Option<u64>,
    fields: Map<String, Value>,
    text: String,
}

impl Said {
    fn from_log(line: &LogEvent) -> Said {
        Said {
            event: line.event.clone().unwrap_or_default(),
            worker: line.worker.map(u64::from),
            pid: line.pid.map(u64::from),
            fields: line.fields.as_object().cloned().unwrap_or_default(),
            text: line.message.clone(),
        }
    }

    /// From a `corral events` line: every key but the envelope is a field.
    fn from_record(mut record: Map<String, Value>) -> Said {
        assert!(record.remove("time").is_some_and(|time| time.is_f64()));
        let mut take = |key: &str| record.remove(key).unwrap_or(Value::Null);
        let event = take("event").as_str().unwrap_or_default().to_owned();
        let text = take("text").as_str().unwrap_or_default().to_owned();
        let worker = take("worker").as_u64();
        let pid = take("pid").as_u64();
        Said {
            event,
            worker,
            pid,
            fields: record,
            text,
        }
    }
}

fn corral(cluster: &ClusterProcess, args: &[&str]) -> Output {
    let output = cluster.control(args);
    assert!(output.status.success(), "corral {args:?}: {output:?}");
    output
}

/// Reads what `events` prints until `condition` holds of it.
fn read_until(
    received: &mpsc::Receiver<Said>,
    seen: &mut Vec<Said>,
    what: &str,
    condition: impl Fn(&[Said]) -> bool,
) {
    let deadline = Instant::now() + PATIENCE;
    while !condition(seen) {
        assert!(Instant::now() < deadline, "{what}: {seen:#?}");
        if let Ok(said) = received.recv_timeout(Duration::from_millis(100)) {
            seen.push(said);
        }
    }
}

#[test]
fn the_json_log_and_corral_events_tell_the_same_story() {
    let mut cluster = ClusterBuilder::corral()
        .workers(2)
        .args(&["--grace", "5"])
        .start();
    let mut events = cluster.control_command(&["events"]);
    events.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut events = events.spawn().expect("corral events starts");
    let lines = BufReader::new(events.stdout.take().unwrap());
    let (sender, received) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in lines.lines().map_while(Result::ok) {
            let record: Value = serde_json::from_str(&line).expect("events prints JSON lines");
            let Value::Object(record) = record else {
                panic!("not an object: {line}");
            };
            if sender.send(Said::from_record(record)).is_err() {
                break;
            }
        }
    });
    // `events` follows from when it connected: scale until it saw one.
    let mut seen = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    let mut workers = 2;
    while !seen.iter().any(|said: &Said| said.event == "scaled") {
        assert!(Instant::now() < deadline, "corral events sees nothing");
        workers = if workers == 2 { 3 } else { 2 };
        corral(&cluster, &["scale", &workers.to_string()]);
        while let Ok(said) = received.recv_timeout(Duration::from_millis(300)) {
            seen.push(said);
        }
    }

    let victim = cluster
        .expect_event(corral_testkit::Mark::START, "ready", Some(1))
        .pid
        .expect("ready names the pid");
    send_signal(victim, Signal::KILL);
    read_until(&received, &mut seen, "worker 1 restarted", |seen| {
        seen.iter().any(|said| {
            said.event == "ready" && said.worker == Some(1) && said.pid != Some(victim.into())
        })
    });
    corral(&cluster, &["reload"]);
    read_until(&received, &mut seen, "the reload completes", |seen| {
        seen.iter().any(|said| said.event == "reload_completed")
    });
    let target = if workers == 2 { 3 } else { 2 };
    corral(&cluster, &["scale", &target.to_string()]);
    corral(&cluster, &["stop"]);
    let stopped = cluster.wait_exit(PATIENCE).expect("the cluster stops");
    assert!(stopped.success(), "{}", cluster.output());
    let _ = events.wait();
    let _ = reader.join();
    seen.extend(received.try_iter());

    let logged: Vec<Said> = cluster
        .events_since(corral_testkit::Mark::START)
        .iter()
        .filter(|line| LIFECYCLE.iter().any(|name| line.is(name)))
        .map(Said::from_log)
        .collect();
    // What `events` printed is a run of the log's lifecycle lines (it
    // connected after the first ones).
    assert!(
        (0..logged.len()).any(|start| logged[start..].starts_with(&seen)),
        "the log and corral events differ:\nlog: {logged:#?}\nevents: {seen:#?}"
    );
    let named = |name: &str| seen.iter().any(|said| said.event == name);
    for name in [
        "fork",
        "online",
        "ready",
        "exit",
        "disconnect",
        "reload_started",
        "replaced",
        "reload_completed",
        "scaled",
        "stopping",
    ] {
        assert!(named(name), "corral events shows {name}: {seen:#?}");
    }
    let killed = seen
        .iter()
        .find(|said| said.event == "exit" && said.pid == Some(victim.into()))
        .expect("the killed worker's exit");
    assert_eq!(killed.fields["signal"], "SIGKILL");
    assert_eq!(killed.fields["requested"], false);
    assert!(killed.fields["ran_for_ms"].as_u64().unwrap() > 0);
    assert!(
        logged.last().is_some_and(|said| said.event == "stopped"),
        "the log ends with stopped: {logged:#?}"
    );
}
