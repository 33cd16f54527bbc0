//! Helpers for corral's integration tests, which run real processes on real
//! sockets: start a cluster (the `corral` binary or an example; a
//! [`ClusterBuilder`] for "N workers under policy P"), collect its output as
//! it comes, with corral's log lines as events ([`LogEvent`]) and marks to
//! search only after a point, wait on conditions with timeouts instead of
//! sleeps, send HTTP requests over loopback, and check that a load lost no
//! request ([`LoadTotals::assert_none_lost`]).
//!
//! # Modules
//!
//! * `builder.rs`: "a cluster of N workers under policy P", started and
//!   waited for until ready ([`ClusterBuilder`]).
//! * `process.rs`: a running primary ([`ClusterProcess`]): its transcript,
//!   lines and events, signals, exit; killed with its workers on drop.
//! * `events.rs`: the transcript, and corral's JSON log lines as
//!   [`LogEvent`]s; [`Mark`]s to search after a point.
//! * `runtime_dir.rs`: private `XDG_RUNTIME_DIR`s for control sockets.
//! * `os.rs`: what `/proc` says about a process (alive, children, memory,
//!   descriptors); signals; a free port; whether Node is installed.
//! * `wait.rs`: polling a condition with a timeout ([`wait_until`]).
//! * `http.rs`: a minimal HTTP client ([`http_get`], [`KeepAlive`]) and the
//!   demo worker's greeting ([`hello`]).
//! * `load.rs`: clients under load ([`Load`]) and the "no request lost"
//!   assertion.

mod builder;
mod events;
mod http;
mod load;
mod os;
mod process;
mod prometheus;
mod runtime_dir;
mod wait;

pub use builder::{ClusterBuilder, two_ready_workers, wait_ready};
pub use events::{LogEvent, Mark};
pub use http::{Hello, KeepAlive, Response, get_from, hello, http_get, parse_hello};
pub use load::{Load, LoadTotals};
pub use os::{
    SCHED_BATCH, SCHED_OTHER, free_port, live_children, node_available, node_with,
    open_descriptors, process_alive, resident_kib, scheduling_policy, send_signal,
};
pub use process::{ClusterProcess, finish, status_workers};
pub use prometheus::{promtool, sample, scrape, scrape_path};
pub use runtime_dir::private_runtime_dir;
pub use wait::wait_until;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

pub use rustix::process::Signal;

/// A generous bound for things that take milliseconds when all is well.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The `corral` binary built by `cargo test` for the corral-cli tests.
///
/// Cargo names it in `CARGO_BIN_EXE_corral`, which newer Cargo versions
/// set for the running test too (older ones only while compiling it, where
/// this crate cannot see it); otherwise it is beside the test binary's
/// `deps/`, where Cargo puts it.
pub fn corral_path() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::var("CARGO_BIN_EXE_corral").unwrap_or_else(|_| {
            let path = profile_dir().join("corral");
            path.to_str()
                .expect("the target directory's path is UTF-8")
                .to_string()
        })
    })
}

/// The path of an example binary built by `cargo test` in this workspace.
pub fn example_path(name: &str) -> PathBuf {
    profile_dir().join("examples").join(name)
}

/// `target/<profile>`, where Cargo puts binaries and `examples/`.
fn profile_dir() -> PathBuf {
    let test_binary = std::env::current_exe().expect("the test binary has a path");
    // target/<profile>/deps/<test> → target/<profile>
    test_binary
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps")
        .to_path_buf()
}
