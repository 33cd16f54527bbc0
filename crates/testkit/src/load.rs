//! Load generation: clients requesting until stopped, and the one
//! "no request lost" assertion.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use crate::{PATIENCE, http_get, wait_until};

/// Clients requesting `GET /` (or another path) until stopped, each on a
/// new connection ([`Load::start`]) or on connections kept alive
/// ([`Load::keep_alive`]); counts what they saw.
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
    reconnected: std::sync::atomic::AtomicU64,
    /// What the first failures were, for the test's message.
    reasons: Mutex<Vec<String>>,
}

/// Why one request of a load did not succeed.
enum Failure {
    /// The connection was refused (no socket listening).
    Refused(String),
    /// Anything else: an error, a bad status.
    Failed(String),
}

impl Failure {
    fn of(err: io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => Failure::Refused(err.to_string()),
            kind => Failure::Failed(format!("{err} ({kind:?})")),
        }
    }
}

impl LoadCounts {
    /// Counts one request's outcome, keeping the first failures' reasons
    /// (with how long the request took).
    fn record(&self, outcome: Result<(), Failure>, started: std::time::Instant) {
        use std::sync::atomic::Ordering::Relaxed;
        let (counter, reason) = match outcome {
            Ok(()) => (&self.succeeded, None),
            Err(Failure::Refused(reason)) => (&self.refused, Some(reason)),
            Err(Failure::Failed(reason)) => (&self.failed, Some(reason)),
        };
        counter.fetch_add(1, Relaxed);
        let Some(reason) = reason else {
            return;
        };
        let mut reasons = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
        if reasons.len() < 10 {
            reasons.push(format!("{reason} after {:?}", started.elapsed()));
        }
    }
}

/// What a [`Load`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadTotals {
    pub succeeded: u64,
    /// Requests that failed after the connection was made (in flight).
    pub failed: u64,
    /// Connections refused: new connections the server lost.
    pub refused: u64,
    /// (Keep-alive.) Requests sent again on a new connection because the
    /// server had closed the kept one, answering nothing, as HTTP clients
    /// do for idempotent requests (RFC 9110 9.2.2): how a draining server
    /// closes idle connections.
    pub reconnected: u64,
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
        Self::spawn_clients(clients, |_| {
            move || match http_get(port, path) {
                Ok(response) if response.status == 200 => Ok(()),
                Ok(response) => Err(Failure::Failed(format!("{response:?}"))),
                Err(err) => Err(Failure::of(err)),
            }
        })
    }

    /// Starts `clients` threads against 127.0.0.1:`port`, each sending
    /// `GET /` on one connection kept alive as long as the server keeps it.
    /// A request that failed on a kept connection before any byte of an
    /// answer came is sent again on a new connection, once (counted as
    /// `reconnected`); every other failure counts as failed or refused.
    pub fn keep_alive(port: u16, clients: usize) -> Self {
        Self::spawn_clients(clients, |counts| {
            let mut connection: Option<KeptConnection> = None;
            move || {
                let outcome = match keep_alive_request(port, &mut connection, &counts) {
                    Ok(200) => Ok(()),
                    Ok(status) => Err(Failure::Failed(format!("status {status}"))),
                    Err(err) => Err(Failure::of(err)),
                };
                if outcome.is_err() {
                    connection = None;
                }
                outcome
            }
        })
    }

    /// Starts `clients` threads, each sending requests with its own client
    /// (`new_client` makes it, given the counts) until the load stops, and
    /// counts their outcomes.
    fn spawn_clients<C>(clients: usize, new_client: impl Fn(Arc<LoadCounts>) -> C) -> Self
    where
        C: FnMut() -> Result<(), Failure> + Send + 'static,
    {
        use std::sync::atomic::Ordering::Relaxed;
        let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let counts = std::sync::Arc::new(LoadCounts::default());
        let threads = (0..clients)
            .map(|_| {
                let (running, counts) = (running.clone(), counts.clone());
                let mut request = new_client(counts.clone());
                std::thread::spawn(move || {
                    while running.load(Relaxed) {
                        let started = std::time::Instant::now();
                        counts.record(request(), started);
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
            reconnected: self.counts.reconnected.load(Relaxed),
        }
    }
}

/// A connection kept alive, with what was read past the last answer.
struct KeptConnection {
    reader: BufReader<TcpStream>,
}

/// One `GET /` on the kept connection (opened if there is none); its
/// status. See [`Load::keep_alive`] for when it is sent again.
fn keep_alive_request(
    port: u16,
    connection: &mut Option<KeptConnection>,
    counts: &LoadCounts,
) -> io::Result<u16> {
    use std::sync::atomic::Ordering::Relaxed;
    if let Some(kept) = connection.as_mut() {
        match exchange(port, kept) {
            Ok(answer) => {
                if answer.close {
                    *connection = None;
                }
                return Ok(answer.status);
            }
            Err(Unanswered::Nothing(_)) => {
                counts.reconnected.fetch_add(1, Relaxed);
                *connection = None;
            }
            Err(Unanswered::Partly(err)) => {
                *connection = None;
                return Err(err);
            }
        }
    }
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(PATIENCE))?;
    let mut kept = KeptConnection {
        reader: BufReader::new(stream),
    };
    let answer = exchange(port, &mut kept).map_err(|err| match err {
        Unanswered::Nothing(err) | Unanswered::Partly(err) => err,
    })?;
    if !answer.close {
        *connection = Some(kept);
    }
    Ok(answer.status)
}

/// How a request went unanswered: not a byte came back, or the answer
/// broke off.
enum Unanswered {
    Nothing(io::Error),
    Partly(io::Error),
}

struct Answer {
    status: u16,
    /// The server closes the connection after it (`Connection: close`).
    close: bool,
}

/// Sends `GET /` and reads the answer (its body by `Content-Length`).
fn exchange(port: u16, kept: &mut KeptConnection) -> Result<Answer, Unanswered> {
    let request = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    kept.reader
        .get_mut()
        .write_all(request.as_bytes())
        .map_err(Unanswered::Nothing)?;
    let mut status_line = String::new();
    match kept.reader.read_line(&mut status_line) {
        Ok(0) => {
            return Err(Unanswered::Nothing(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before answering",
            )));
        }
        Ok(_) => {}
        Err(err) => return Err(Unanswered::Nothing(err)),
    }
    let broken = |what: &str| {
        Unanswered::Partly(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} in the answer to a kept-alive request"),
        ))
    };
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| broken("no status"))?;
    let (mut length, mut close) = (0usize, false);
    loop {
        let mut line = String::new();
        match kept.reader.read_line(&mut line) {
            Ok(0) => return Err(broken("end of headers missing")),
            Ok(_) => {}
            Err(err) => return Err(Unanswered::Partly(err)),
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().map_err(|_| broken("bad Content-Length"))?;
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
    }
    let mut body = vec![0; length];
    kept.reader
        .read_exact(&mut body)
        .map_err(Unanswered::Partly)?;
    Ok(Answer { status, close })
}
