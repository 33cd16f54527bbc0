//! Load generation: clients requesting until stopped, and the one
//! "no request lost" assertion.

use std::io;
use std::sync::Mutex;

use crate::{PATIENCE, http_get, wait_until};

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
