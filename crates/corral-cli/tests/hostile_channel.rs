//! Workers that abuse their message channel (issue 17): what they send
//! must cost the primary a bounded number of log lines and bounded memory,
//! and it keeps answering. The workers are Python scripts speaking corral's
//! or Node's channel protocol (`fixtures/hostile_node_channel.py`).

use std::time::{Duration, Instant};

use corral_testkit::{ClusterBuilder, ClusterProcess, PATIENCE, resident_kib};

const HOSTILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/hostile_node_channel.py"
);

fn hostile(mode: &str, workers: usize) -> ClusterProcess {
    let node = if mode == "malformed" { "off" } else { "on" };
    let cluster = ClusterBuilder::corral()
        .workers(workers)
        // A worker that ignores Node's disconnect is killed 1 s into a stop.
        .args(&["--node", node, "--grace", "1"])
        .command(&["python3", HOSTILE])
        .env("HOSTILE", mode)
        .start();
    cluster
        .wait_for_lines("flooded", workers, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the workers did not flood:\n{}", cluster.output()));
    cluster
}

fn assert_status_answers(cluster: &ClusterProcess) {
    let status = cluster
        .control_command(&["status"])
        .output()
        .expect("corral status runs");
    assert!(status.status.success(), "{status:?}");
}

#[test]
fn a_worker_sending_long_and_malformed_lines_costs_a_few_short_lines() {
    let mut cluster = hostile("malformed", 2);
    std::thread::sleep(Duration::from_secs(1));
    assert_status_answers(&cluster);
    let output = cluster.output();
    let dropped = output
        .lines()
        .filter(|line| line.contains("dropped a malformed message"))
        .count();
    assert!(
        (1..=20).contains(&dropped),
        "{dropped} lines for 200,010 bad lines of 2 workers"
    );
    let longest = output.lines().map(str::len).max().unwrap_or(0);
    assert!(
        longest < 1000,
        "a line of {longest} bytes: a worker's message is quoted cut"
    );
    cluster.expect_line("… (100003 bytes) (expected");
    for id in [1, 2] {
        let online = format!("worker {id} online");
        let said: Vec<&str> = output
            .lines()
            .filter(|line| line.contains(&online))
            .collect();
        // Once as it starts (corral cannot know a COMMAND speaks the
        // channel), once as it says so; not once per line.
        assert!(
            (1..=2).contains(&said.len()),
            "10,000 onlines of worker {id}: {} lines",
            said.len()
        );
    }
    assert_eq!(cluster.worker_pids().len(), 2, "no worker was lost");
    cluster.stop_gracefully(PATIENCE);
}

#[test]
fn workers_chattering_on_the_node_channel_cost_a_few_short_lines() {
    let mut cluster = hostile("chatter", 4);
    // Let the primary read all of it.
    std::thread::sleep(Duration::from_secs(1));
    assert_status_answers(&cluster);
    let output = cluster.output();
    let warnings: Vec<&str> = output
        .lines()
        .filter(|line| line.contains("unknown Node command") || line.contains("unknown cluster"))
        .collect();
    // One limit for every worker: ten lines per ten seconds, not ten each.
    assert!(
        (1..=10).contains(&warnings.len()),
        "{} lines for 20,020 bad messages of 4 workers:\n{output}",
        warnings.len()
    );
    let longest = output.lines().map(str::len).max().unwrap_or(0);
    assert!(
        longest < 1000,
        "a line of {longest} bytes: a worker's names are cut"
    );
    assert!(
        warnings
            .iter()
            .any(|line| line.contains("… (100038 bytes)")),
        "a cut name says its length:\n{output}"
    );
    assert_eq!(cluster.worker_pids().len(), 4, "no worker was lost");
    cluster.stop_gracefully(PATIENCE);
}

#[test]
fn a_node_worker_that_asks_and_never_reads_does_not_grow_the_primary() {
    let mut cluster = hostile("unread", 1);
    // 10,000 answers of 4 KB each would be 40 MB more (the primary starts
    // at about 18 MB); keep the most it held while it reads what is left.
    let until = Instant::now() + Duration::from_secs(3);
    let mut most = 0;
    while Instant::now() < until {
        most = most.max(resident_kib(cluster.pid()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        most < 40 * 1024,
        "the primary grew to {most} KiB for a worker that never reads"
    );
    cluster.expect_line("worker 1 misbehaves on its Node channel");
    cluster.expect_line("worker 1: cannot answer its listen()");
    assert_status_answers(&cluster);
    cluster.stop_gracefully(PATIENCE);
}
