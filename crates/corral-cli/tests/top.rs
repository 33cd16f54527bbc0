//! `corral top` for real, in a tmux terminal: it shows every worker's pid,
//! follows a scale from 2 to 3 made with its `+` key, survives a resize and
//! a killed worker, and says so and exits when the cluster stops. A Node
//! worker's row shows what corral's Node agent reports.

use std::process::Command;
use std::time::{Duration, Instant};

use corral_testkit::{
    ClusterProcess, Mark, PATIENCE, Signal, corral_path, http_get, node_available, send_signal,
    two_ready_workers,
};

/// tmux servers started by this test process.
static SERVERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A private tmux server (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Self {
        Tmux {
            // One server per test: tests run in parallel in this process.
            socket: format!(
                "corral-top-test-{}-{}",
                std::process::id(),
                SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
        }
    }

    /// A session `top` of 120×40 running `top NAME` against `cluster`; the
    /// pane stays open after top exits, to read its last words.
    fn top(cluster: &ClusterProcess, name: &str) -> Self {
        let tmux = Tmux::new();
        let command = format!(
            "env XDG_RUNTIME_DIR={} {} top {name}; echo \"top exited with $?\"; sleep 60",
            cluster.runtime_dir().display(),
            corral_path()
        );
        let started = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "120",
            "-y",
            "40",
            &command,
        ]);
        assert!(started.status.success(), "{started:?}");
        tmux
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs (.ci/run installs it)")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }

    /// Waits until the screen satisfies `condition`; returns it.
    fn await_screen(&self, what: &str, condition: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let screen = self.screen();
            if condition(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "{what}; the screen:\n{screen}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

#[test]
fn top_shows_every_worker_and_follows_a_scale_from_2_to_3() {
    let (mut cluster, _port) = two_ready_workers("reuseport");
    let tmux = Tmux::top(&cluster, "demo");
    let pids = cluster.worker_pids();
    assert_eq!(pids.len(), 2);
    let screen = tmux.await_screen("both workers are shown", |screen| {
        pids.iter().all(|pid| screen.contains(&pid.to_string()))
    });
    assert!(screen.contains("cluster demo"), "{screen}");

    // The `+` key scales up; the new worker appears.
    tmux.run(&["send-keys", "-t", "top", "+"]);
    let deadline = Instant::now() + PATIENCE;
    while cluster.worker_pids().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "no third worker:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let three = cluster.worker_pids();
    tmux.await_screen("the third worker is shown", |screen| {
        three.iter().all(|pid| screen.contains(&pid.to_string()))
    });

    // A resize and a killed worker: it keeps going.
    tmux.run(&["resize-window", "-t", "top", "-x", "90", "-y", "30"]);
    send_signal(three[0], Signal::KILL);
    let deadline = Instant::now() + PATIENCE;
    while cluster.worker_pids().len() < 3 || cluster.worker_pids().contains(&three[0]) {
        assert!(
            Instant::now() < deadline,
            "the killed worker is not replaced"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let replaced = cluster.worker_pids();
    tmux.await_screen("the replacement is shown", |screen| {
        replaced.iter().all(|pid| screen.contains(&pid.to_string()))
    });

    // The cluster stops: top says so and exits.
    cluster.signal(Signal::TERM);
    cluster.wait_exit(PATIENCE).expect("the cluster stops");
    let screen = tmux.await_screen("top says the cluster stopped", |screen| {
        screen.contains("corral top: cluster demo stopped") && screen.contains("top exited")
    });
    assert!(
        screen.contains("top exited with 0"),
        "top exited:\n{screen}"
    );
}

#[test]
fn top_shows_a_node_worker_s_requests_p95_lag_and_heap() {
    if !node_available() {
        return;
    }
    let app = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/node/metrics_http.js"
    );
    let mut command = Command::new(corral_path());
    command
        .args(["run", "-w", "1", "--name", "web", "--", "node", app])
        .env("PORT", "0");
    let mut cluster = ClusterProcess::spawn(command);
    cluster.expect_event(Mark::START, "ready", Some(1));
    let port = cluster.bound_port();
    // Every request waits 60 ms: the p95 shows in milliseconds.
    for _ in 0..10 {
        let response = http_get(port, "/slow").expect("the app answers");
        assert_eq!(response.status, 200, "{response:?}");
    }
    let pid = cluster.worker_pids()[0].to_string();
    let tmux = Tmux::top(&cluster, "web");
    let screen = tmux.await_screen(
        "the Node worker's row shows the agent's numbers",
        |screen| {
            screen
                .lines()
                .find(|line| line.contains(&pid))
                .is_some_and(|row| row.contains(" 10 ") && row.contains("ms") && row.contains('M'))
        },
    );
    assert!(
        screen.contains("P95") && screen.contains("HEAP"),
        "{screen}"
    );
    assert!(!screen.contains("requests/s: -0"), "{screen}");
    cluster.signal(Signal::TERM);
    cluster.wait_exit(PATIENCE).expect("the cluster stops");
}
