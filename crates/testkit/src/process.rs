//! A running cluster primary ([`ClusterProcess`]): started with its output
//! captured into a transcript, searched for lines and events, signalled,
//! stopped, killed with its workers when dropped.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::events::Transcript;
use crate::os::{live_children, send_signal};
use crate::runtime_dir::{claim_runtime_dir, private_runtime_dir};
use crate::{LogEvent, Mark, PATIENCE, Signal};

/// A running cluster primary; killed (with its workers) on drop.
pub struct ClusterProcess {
    child: Child,
    pub(crate) transcript: Arc<Transcript>,
    /// How many of its streams are captured.
    streams: usize,
    status: Option<ExitStatus>,
    /// The cluster's `XDG_RUNTIME_DIR`, where its control socket is.
    runtime_dir: PathBuf,
    /// Whether this helper made `runtime_dir` (and removes it).
    own_runtime_dir: bool,
}

impl ClusterProcess {
    /// Starts `program` with `args`, stdout and stderr captured.
    pub fn start(program: impl AsRef<Path>, args: &[&str]) -> Self {
        let mut command = Command::new(program.as_ref());
        command.args(args);
        Self::spawn(command)
    }

    /// Starts a prepared command, stdout and stderr captured. corral's
    /// lines are asked for in JSON, at level info (unless the command sets
    /// `CORRAL_LOG_FORMAT` or `CORRAL_LOG` itself), so that they are events.
    /// Unless the command sets `XDG_RUNTIME_DIR`, the cluster gets a
    /// private one (its control socket is there: see
    /// [`Self::control_command`]).
    pub fn spawn(command: Command) -> Self {
        Self::spawn_with_stderr(command, None)
    }

    /// Like [`Self::spawn`], with stderr going to `stderr` instead of being
    /// captured (`None`: captured).
    pub fn spawn_with_stderr(mut command: Command, stderr: Option<Stdio>) -> Self {
        for (name, default) in [("CORRAL_LOG_FORMAT", "json"), ("CORRAL_LOG", "info")] {
            if !command.get_envs().any(|(set, _)| set == name) {
                command.env(name, default);
            }
        }
        let given = command
            .get_envs()
            .find(|(key, _)| *key == "XDG_RUNTIME_DIR")
            .and_then(|(_, value)| value.map(PathBuf::from));
        let own_runtime_dir = given.as_deref().is_none_or(claim_runtime_dir);
        let runtime_dir = given.unwrap_or_else(private_runtime_dir);
        let captured = stderr.is_none();
        command
            .env("XDG_RUNTIME_DIR", &runtime_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr.unwrap_or_else(Stdio::piped));
        let mut child = command.spawn().expect("the cluster program starts");
        let transcript = Arc::new(Transcript::default());
        collect_lines(
            child.stdout.take().expect("piped"),
            "out",
            transcript.clone(),
        );
        if captured {
            collect_lines(
                child.stderr.take().expect("piped"),
                "err",
                transcript.clone(),
            );
        }
        ClusterProcess {
            child,
            transcript,
            streams: if captured { 2 } else { 1 },
            status: None,
            runtime_dir,
            own_runtime_dir,
        }
    }

    /// The cluster's `XDG_RUNTIME_DIR`.
    pub fn runtime_dir(&self) -> &Path {
        &self.runtime_dir
    }

    /// The control socket of the cluster named `name` (`--name`), in its
    /// runtime directory.
    pub fn control_socket(&self, name: &str) -> PathBuf {
        self.runtime_dir.join("corral").join(format!("{name}.sock"))
    }

    /// `corral ARGS` ([`corral_path`](crate::corral_path)), set up to find
    /// this cluster's control socket by name, as a user's shell would.
    pub fn control_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(crate::corral_path());
        command
            .args(args)
            .env("XDG_RUNTIME_DIR", &self.runtime_dir)
            .stdin(Stdio::null());
        command
    }

    /// Runs `corral ARGS` against this cluster to its end, failing the test
    /// if it takes longer than `PATIENCE`.
    pub fn control(&self, args: &[&str]) -> Output {
        finish(self.control_command(args))
    }

    /// `corral status --json` of the cluster, parsed; fails the test if it
    /// fails.
    pub fn status_json(&self) -> serde_json::Value {
        let output = self.control(&["status", "--json"]);
        assert!(output.status.success(), "status failed: {output:?}");
        serde_json::from_slice(&output.stdout).expect("status prints JSON")
    }

    /// Polls `corral status --json` until `condition` holds; returns that
    /// status. Fails the test, saying it awaited `what`, with the last
    /// status and the output, if it does not hold within [`PATIENCE`].
    pub fn await_status(
        &self,
        what: &str,
        condition: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let current = self.status_json();
            if condition(&current) {
                return current;
            }
            assert!(
                Instant::now() < deadline,
                "{what}; last status: {current:#}\noutput:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The primary's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process printed so far, one line each, stdout lines
    /// marked `out|` and stderr lines `err|` (corral's JSON lines in their
    /// text form, see [`LogEvent::text`]).
    pub fn output(&self) -> String {
        self.transcript.text()
    }

    /// The point reached so far: searches from it see only later lines.
    pub fn mark(&self) -> Mark {
        self.transcript.mark()
    }

    /// Waits for a line containing `needle`; returns it, or `None` on timeout.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_for_line_after(Mark::START, needle, timeout)
    }

    /// Waits for a line after `since` containing `needle`.
    pub fn wait_for_line_after(
        &self,
        since: Mark,
        needle: &str,
        timeout: Duration,
    ) -> Option<String> {
        self.transcript.wait(since, timeout, |lines| {
            lines
                .iter()
                .find(|line| line.text.contains(needle))
                .map(|line| line.text.clone())
        })
    }

    /// Waits until `count` lines contain `needle`; returns them.
    pub fn wait_for_lines(
        &self,
        needle: &str,
        count: usize,
        timeout: Duration,
    ) -> Option<Vec<String>> {
        self.transcript.wait(Mark::START, timeout, |lines| {
            let found: Vec<String> = lines
                .iter()
                .filter(|line| line.text.contains(needle))
                .map(|line| line.text.clone())
                .collect();
            (found.len() >= count).then_some(found)
        })
    }

    /// Like [`Self::wait_for_line`], but fails the test with the output.
    pub fn expect_line(&self, needle: &str) -> String {
        self.expect_line_after(Mark::START, needle)
    }

    /// Like [`Self::wait_for_line_after`], but fails the test with the output.
    pub fn expect_line_after(&self, since: Mark, needle: &str) -> String {
        self.wait_for_line_after(since, needle, PATIENCE)
            .unwrap_or_else(|| {
                panic!(
                    "no line containing {needle:?} within {PATIENCE:?}; output:\n{}",
                    self.output()
                )
            })
    }

    /// The lines that are not corral's JSON lines (`tag|line`).
    pub fn plain_lines(&self) -> Vec<String> {
        self.transcript.plain_lines()
    }

    /// corral's events after `since`, in order.
    pub fn events_since(&self, since: Mark) -> Vec<LogEvent> {
        self.transcript.events(since)
    }

    /// Waits until `count` events after `since` satisfy `wanted`; returns them.
    pub fn wait_for_events(
        &self,
        since: Mark,
        count: usize,
        timeout: Duration,
        wanted: impl Fn(&LogEvent) -> bool,
    ) -> Option<Vec<LogEvent>> {
        self.transcript.wait(since, timeout, |lines| {
            let found: Vec<LogEvent> = lines
                .iter()
                .filter_map(|line| line.event.as_ref())
                .filter(|event| wanted(event))
                .cloned()
                .collect();
            (found.len() >= count).then_some(found)
        })
    }

    /// Waits for the first event after `since` that satisfies `wanted`.
    pub fn wait_for_event(
        &self,
        since: Mark,
        timeout: Duration,
        wanted: impl Fn(&LogEvent) -> bool,
    ) -> Option<LogEvent> {
        self.wait_for_events(since, 1, timeout, wanted)
            .map(|mut found| found.remove(0))
    }

    /// The event `name` after `since` (about worker `worker`, if given);
    /// fails the test with the output if none comes within [`PATIENCE`].
    pub fn expect_event(&self, since: Mark, name: &str, worker: Option<u32>) -> LogEvent {
        self.expect_events(since, name, worker, 1).remove(0)
    }

    /// `count` events `name` after `since` (about worker `worker`, if given).
    pub fn expect_events(
        &self,
        since: Mark,
        name: &str,
        worker: Option<u32>,
        count: usize,
    ) -> Vec<LogEvent> {
        let wanted =
            |event: &LogEvent| event.is(name) && worker.is_none_or(|id| event.worker == Some(id));
        self.wait_for_events(since, count, PATIENCE, wanted)
            .unwrap_or_else(|| {
                panic!(
                    "no {count} {name:?} events (worker {worker:?}) within {PATIENCE:?}; output:\n{}",
                    self.output()
                )
            })
    }

    /// The first event after `since` that `wanted` accepts; fails the test
    /// with the output, saying it awaited `what`, if none comes within
    /// [`PATIENCE`].
    pub fn expect_event_where(
        &self,
        since: Mark,
        what: &str,
        wanted: impl Fn(&LogEvent) -> bool,
    ) -> LogEvent {
        self.expect_events_where(since, 1, what, wanted).remove(0)
    }

    /// `count` events after `since` that `wanted` accepts; fails the test
    /// like [`Self::expect_event_where`].
    pub fn expect_events_where(
        &self,
        since: Mark,
        count: usize,
        what: &str,
        wanted: impl Fn(&LogEvent) -> bool,
    ) -> Vec<LogEvent> {
        self.wait_for_events(since, count, PATIENCE, wanted)
            .unwrap_or_else(|| {
                panic!(
                    "not {count} events: {what}, within {PATIENCE:?}; output:\n{}",
                    self.output()
                )
            })
    }

    /// Waits until the process and every holder of its output pipes (its
    /// workers) closed them, so that the transcript is complete.
    pub fn wait_output_closed(&self, timeout: Duration) -> bool {
        self.transcript.wait_closed(self.streams, timeout)
    }

    /// The first port the cluster printed in its `listening on` line.
    pub fn port(&self) -> u16 {
        let line = self.expect_line("out|listening on ");
        line.rsplit(':')
            .next()
            .and_then(|port| port.trim().parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"))
    }

    /// The port a Node worker's `listen()` had corral bind on demand (its
    /// first `listen() bound ADDR` line).
    pub fn bound_port(&self) -> u16 {
        let line = self.expect_line("listen() bound ");
        line.split("listen() bound ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|address| address.rsplit(':').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"))
    }

    /// Sends `signal` to the primary.
    pub fn signal(&self, signal: Signal) {
        send_signal(self.pid(), signal);
    }

    /// Stops the cluster as an operator does (SIGTERM) and asserts that the
    /// primary exits 0 within `timeout`, showing the transcript if not.
    pub fn stop_gracefully(&mut self, timeout: Duration) {
        self.signal(Signal::TERM);
        let status = self.wait_exit(timeout);
        assert!(
            status.is_some_and(|status| status.success()),
            "SIGTERM: the primary did not exit 0 in {timeout:?} ({status:?}):\n{}",
            self.output()
        );
    }

    /// Waits for the primary to exit, and for its output to be read to the
    /// end; `None` on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait works") {
                self.status = Some(status);
                // What it wrote before exiting is read to the end, so the
                // transcript is whole (unless something it left behind
                // still holds its output open).
                self.wait_output_closed(Duration::from_secs(1));
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The primary's live child processes (its workers).
    pub fn worker_pids(&self) -> Vec<u32> {
        live_children(self.pid())
    }
}

impl Drop for ClusterProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            let workers = self.worker_pids();
            let _ = self.child.kill();
            let _ = self.child.wait();
            for pid in workers {
                send_signal(pid, Signal::KILL);
            }
        }
        if self.own_runtime_dir {
            let _ = std::fs::remove_dir_all(&self.runtime_dir);
        }
    }
}

fn collect_lines(
    stream: impl Read + Send + 'static,
    tag: &'static str,
    transcript: Arc<Transcript>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            transcript.push(tag, line);
        }
        transcript.close();
    });
}

/// Runs `command` to its end with its output captured, failing the test if
/// it takes longer than `PATIENCE`.
pub fn finish(mut command: Command) -> Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("corral starts");
    let deadline = Instant::now() + PATIENCE;
    loop {
        if child.try_wait().expect("try_wait works").is_some() {
            return child.wait_with_output().expect("output is read");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output is read");
            panic!(
                "{command:?} did not finish within {PATIENCE:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The workers a `corral status --json` lists, as (id, pid, state).
pub fn status_workers(status: &serde_json::Value) -> Vec<(u64, u64, String)> {
    status["workers"]
        .as_array()
        .expect("a workers array")
        .iter()
        .map(|worker| {
            (
                worker["id"].as_u64().unwrap(),
                worker["pid"].as_u64().unwrap(),
                worker["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}
