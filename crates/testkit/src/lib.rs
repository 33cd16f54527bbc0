//! Helpers for corral's integration tests, which run real processes on real
//! sockets: start a cluster (the `corral` binary or an example; a
//! [`ClusterBuilder`] for "N workers under policy P"), collect its output as
//! it comes, with corral's log lines as events ([`LogEvent`]) and marks to
//! search only after a point, wait on conditions with timeouts instead of
//! sleeps, send HTTP requests over loopback, and check that a load lost no
//! request ([`LoadTotals::assert_none_lost`]).

mod builder;
mod events;

pub use builder::{ClusterBuilder, wait_ready};
use events::Transcript;
pub use events::{LogEvent, Mark};

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::Pid;
pub use rustix::process::Signal;

/// A generous bound for things that take milliseconds when all is well.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The path of an example binary built by `cargo test` in this workspace.
pub fn example_path(name: &str) -> PathBuf {
    let test_binary = std::env::current_exe().expect("the test binary has a path");
    // target/<profile>/deps/<test> → target/<profile>/examples/<name>
    let profile_dir = test_binary
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    profile_dir.join("examples").join(name)
}

/// A running cluster primary; killed (with its workers) on drop.
pub struct ClusterProcess {
    child: Child,
    transcript: Arc<Transcript>,
    /// How many of its streams are captured.
    streams: usize,
    status: Option<ExitStatus>,
    /// The cluster's `XDG_RUNTIME_DIR`, where its control socket is.
    runtime_dir: PathBuf,
    /// Whether this helper made `runtime_dir` (and removes it).
    own_runtime_dir: bool,
}

/// A new private directory (mode 0700) for one test cluster's control
/// socket, so that test clusters of the same name never meet.
pub fn private_runtime_dir() -> PathBuf {
    use std::os::unix::fs::DirBuilderExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "corral-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .expect("a private directory for the test cluster");
    dir
}

/// Private directories the [`ClusterBuilder`] put in a command line, not yet
/// claimed by the [`ClusterProcess`] that runs it (which then removes the
/// directory when it is dropped).
static UNCLAIMED_RUNTIME_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A private directory for a command line built for one cluster; the
/// process started from it owns it.
pub(crate) fn runtime_dir_for_one_cluster() -> PathBuf {
    let dir = private_runtime_dir();
    UNCLAIMED_RUNTIME_DIRS
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .push(dir.clone());
    dir
}

/// Whether `dir` came from [`runtime_dir_for_one_cluster`] and is unclaimed;
/// claims it.
fn claim_runtime_dir(dir: &Path) -> bool {
    let mut unclaimed = UNCLAIMED_RUNTIME_DIRS
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    let before = unclaimed.len();
    unclaimed.retain(|known| known != dir);
    unclaimed.len() < before
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

    /// `program` (the `corral` binary) with `args`, set up to find this
    /// cluster's control socket by name, as a user's shell would.
    pub fn control_command(&self, program: impl AsRef<Path>, args: &[&str]) -> Command {
        let mut command = Command::new(program.as_ref());
        command
            .args(args)
            .env("XDG_RUNTIME_DIR", &self.runtime_dir)
            .stdin(Stdio::null());
        command
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
        let pid = self.pid();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .filter(|&pid| process_alive(pid))
            .collect()
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

/// `SCHED_OTHER`, the normal scheduling policy.
pub const SCHED_OTHER: u32 = 0;
/// `SCHED_BATCH`, the policy of a corral primary of non-Node workers.
pub const SCHED_BATCH: u32 = 3;

/// The scheduling policy of `pid` ([`SCHED_OTHER`], [`SCHED_BATCH`], …).
pub fn scheduling_policy(pid: u32) -> u32 {
    procfs::process::Process::new(pid as i32)
        .and_then(|process| process.stat())
        .expect("the process lives")
        .policy
        .expect("the kernel reports the policy")
}

/// Sends `signal` to `pid`, ignoring a process that is already gone.
pub fn send_signal(pid: u32, signal: Signal) {
    if let Some(pid) = Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// Whether `pid` is a running (not zombie) process.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An HTTP response: status code and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// `GET path` on 127.0.0.1:`port` over a new connection (`Connection: close`).
pub fn http_get(port: u16, path: &str) -> io::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(PATIENCE))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> io::Result<Response> {
    let text = String::from_utf8_lossy(raw);
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an HTTP response: {text:?}"),
        )
    };
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(bad)?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Response { status, body })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// A kept-alive HTTP/1.1 connection, held open until dropped.
pub struct KeepAlive {
    stream: TcpStream,
    /// Who answered the request that opened it.
    pub hello: Hello,
}

impl KeepAlive {
    /// Connects to 127.0.0.1:`port`, sends `GET /` and reads the answer,
    /// keeping the connection open.
    pub fn open(port: u16) -> io::Result<Self> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(PATIENCE))?;
        write!(stream, "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n")?;
        let body = read_sized_response(&mut stream)?;
        let hello =
            parse_hello(&body).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, body))?;
        Ok(KeepAlive { stream, hello })
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Reads one response with a `Content-Length` from `stream`; returns its body.
fn read_sized_response(stream: &mut TcpStream) -> io::Result<String> {
    let mut reader = BufReader::new(stream);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Who answered, parsed from `Hello from worker <id> (pid <pid>)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hello {
    pub id: u32,
    pub pid: u32,
}

/// Parses the demo worker's greeting.
pub fn parse_hello(body: &str) -> Option<Hello> {
    let rest = body.strip_prefix("Hello from worker ")?;
    let (id, rest) = rest.split_once(" (pid ")?;
    let pid = rest.strip_suffix(")\n")?;
    Some(Hello {
        id: id.parse().ok()?,
        pid: pid.parse().ok()?,
    })
}

/// `GET /` and parse who answered; panics with the reason otherwise.
pub fn hello(port: u16) -> Hello {
    let response = http_get(port, "/").unwrap_or_else(|err| panic!("GET / failed: {err}"));
    assert_eq!(response.status, 200, "{response:?}");
    parse_hello(&response.body).unwrap_or_else(|| panic!("not a greeting: {:?}", response.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greetings_and_responses_parse() {
        assert_eq!(
            parse_hello("Hello from worker 2 (pid 77)\n"),
            Some(Hello { id: 2, pid: 77 })
        );
        assert_eq!(parse_hello("Hello from worker 2 (pid 77)"), None);
        let response = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((response.status, response.body.as_str()), (200, "hello"));
    }
}

/// Clients requesting `GET /` (or another path) on new connections, one
/// request each, until stopped; counts what they saw.
pub struct Load {
    running: std::sync::Arc<std::sync::atomic::AtomicBool>,
    counts: std::sync::Arc<LoadCounts>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct LoadCounts {
    succeeded: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
    refused: std::sync::atomic::AtomicU64,
    /// What the first failures were, for the test's message.
    reasons: Mutex<Vec<String>>,
}

/// What a [`Load`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadTotals {
    pub succeeded: u64,
    /// Requests that failed after the connection was made (in flight).
    pub failed: u64,
    /// Connections refused: new connections the server lost.
    pub refused: u64,
}

impl LoadTotals {
    /// The one "no request lost" assertion: requests succeeded, none failed
    /// in flight, no connection was refused. `what` names the scenario.
    pub fn assert_none_lost(&self, what: &str) {
        eprintln!("{what}: {self:?}");
        assert!(self.succeeded > 0, "{what}: no request succeeded: {self:?}");
        assert_eq!(
            (self.failed, self.refused),
            (0, 0),
            "{what}: requests were lost (failed in flight, refused): {self:?}"
        );
    }
}

impl Load {
    /// Starts `clients` threads against 127.0.0.1:`port`.
    pub fn start(port: u16, clients: usize) -> Self {
        Self::start_on(port, "/", clients)
    }

    /// Starts `clients` threads requesting `path` (the demo worker's
    /// `/sleep/MS` keeps requests in flight) against 127.0.0.1:`port`.
    pub fn start_on(port: u16, path: &'static str, clients: usize) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let counts = std::sync::Arc::new(LoadCounts::default());
        let threads = (0..clients)
            .map(|_| {
                let (running, counts) = (running.clone(), counts.clone());
                std::thread::spawn(move || {
                    while running.load(Relaxed) {
                        let started = std::time::Instant::now();
                        let (counter, reason) = match http_get(port, path) {
                            Ok(response) if response.status == 200 => (&counts.succeeded, None),
                            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                                (&counts.refused, Some(err.to_string()))
                            }
                            Ok(response) => (&counts.failed, Some(format!("{response:?}"))),
                            Err(err) => (&counts.failed, Some(format!("{err} ({:?})", err.kind()))),
                        };
                        counter.fetch_add(1, Relaxed);
                        if let Some(reason) = reason {
                            let mut reasons =
                                counts.reasons.lock().unwrap_or_else(|p| p.into_inner());
                            if reasons.len() < 10 {
                                reasons.push(format!("{reason} after {:?}", started.elapsed()));
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            running,
            counts,
            threads,
        }
    }

    /// Requests that succeeded so far.
    pub fn succeeded(&self) -> u64 {
        self.counts
            .succeeded
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `count` more requests have succeeded; fails the test if
    /// the load stalls.
    pub fn wait_for_more(&self, count: u64) {
        let target = self.succeeded() + count;
        assert!(
            wait_until(PATIENCE, || self.succeeded() >= target),
            "the load stalled"
        );
    }

    /// What the first (up to 10) failed or refused requests saw.
    pub fn failures(&self) -> Vec<String> {
        self.counts
            .reasons
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Stops the clients and returns the totals.
    pub fn stop(self) -> LoadTotals {
        use std::sync::atomic::Ordering::Relaxed;
        self.running.store(false, Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
        LoadTotals {
            succeeded: self.counts.succeeded.load(Relaxed),
            failed: self.counts.failed.load(Relaxed),
            refused: self.counts.refused.load(Relaxed),
        }
    }
}
