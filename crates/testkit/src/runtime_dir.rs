//! Private `XDG_RUNTIME_DIR`s, so that test clusters' control sockets
//! never meet.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
pub(crate) fn claim_runtime_dir(dir: &Path) -> bool {
    let mut unclaimed = UNCLAIMED_RUNTIME_DIRS
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    let before = unclaimed.len();
    unclaimed.retain(|known| known != dir);
    unclaimed.len() < before
}
