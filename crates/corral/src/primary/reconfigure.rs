//! Reading the configuration again at each rolling reload (`Cluster::
//! on_reload`; `corral run --config FILE` re-reads its file), as nginx does
//! on SIGHUP. What can change on a running cluster — the command and its
//! arguments, the workers' environment, the number of workers, the grace
//! period, recycling and the watchdog — applies to every worker started from
//! then on, so the reload's replacements run with it. What cannot (listen
//! addresses, policy, backlog, user…) is named in a warning and waits for a
//! restart. A configuration that no longer validates aborts that reload with
//! its error, and the running configuration stays.
//!
//! The user's function runs on a thread of its own, never on the
//! supervisor's loop: it reads files, resolves host and user names, and any
//! of that may hang (a FIFO, a stuck network file system, a slow name
//! service). The loop hears back through a [`Notice`], and a read that
//! takes longer than [`READ_TIMEOUT`] aborts the reload.

use std::sync::{Arc, Mutex, TryLockError};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::primary::Settings;
use crate::settings::Configuration;
use crate::settings::Program;

/// How often the watchdog looks at heartbeats when none was configured at
/// start (a reload may turn it on).
pub(super) const CHECK_PERIOD: Duration = Duration::from_millis(250);

/// How long reading the configuration may take before the reload is
/// aborted and the running configuration stays.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The user's function that builds the cluster's configuration anew.
pub(crate) type RereadFn = Box<dyn FnMut() -> Result<Configuration, String> + Send>;

/// The user's function, shared with the thread that runs it, and whether
/// a read is under way.
pub(crate) struct Reread {
    pub(super) function: Arc<Mutex<RereadFn>>,
    pub(super) reading: bool,
}

impl Reread {
    pub(crate) fn new(function: RereadFn) -> Self {
        Reread {
            function: Arc::new(Mutex::new(function)),
            reading: false,
        }
    }
}

/// What a read of the configuration gave: the new settings and program,
/// or why they cannot be used.
pub(crate) struct ConfigurationRead(pub(super) Result<(Box<Settings>, Option<Program>), String>);

impl std::fmt::Debug for ConfigurationRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Ok(_) => f.write_str("ConfigurationRead(Ok)"),
            Err(why) => write!(f, "ConfigurationRead(Err({why:?}))"),
        }
    }
}

/// Whether a reload may begin at once or waits for the configuration.
pub(super) enum BeforeReload {
    /// No configuration to read: the reload begins now.
    Begin,
    /// The configuration is being read; [`Notice::ConfigurationRead`]
    /// continues the reload.
    Reading,
}

/// The settings a running cluster cannot take from a new configuration,
/// by the name the command line gives them, when they differ.
pub(crate) fn fixed_changes(running: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |differs: bool, name| {
        if differs {
            changed.push(name);
        }
    };
    check(running.addresses != new.addresses, "listen");
    check(running.policy != new.policy, "policy");
    check(running.backlog != new.backlog, "backlog");
    check(running.user != new.user, "user");
    check(
        running.allow_worker_binds != new.allow_worker_binds,
        "allow-worker-binds",
    );
    check(running.name != new.name, "name");
    check(running.metrics != new.metrics, "metrics");
    check(running.schedule != new.schedule, "reload-at");
    check(running.control != new.control, "control");
    check(running.watch != new.watch, "watch");
    check(
        running.worker_threads != new.worker_threads,
        "worker-threads",
    );
    check(
        running.max_message_size != new.max_message_size,
        "max-message-size",
    );
    changed
}

/// Runs the user's function on a thread of its own; its outcome, or why
/// there is none within [`READ_TIMEOUT`]. A read that hangs keeps its
/// thread, not the loop.
pub(super) fn read_off_the_loop(
    function: Arc<Mutex<RereadFn>>,
    running: Program,
) -> impl Future<Output = Result<(Box<Settings>, Option<Program>), String>> {
    let (sender, receiver) = oneshot::channel();
    let started = std::thread::Builder::new()
        .name("corral-config".into())
        .spawn(move || {
            let _ = sender.send(read_with(&function, &running));
        });
    async move {
        if let Err(err) = started {
            return Err(format!("cannot start reading it: {err}"));
        }
        match tokio::time::timeout(READ_TIMEOUT, receiver).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err("reading it failed (the reader panicked)".into()),
            Err(_) => Err(format!(
                "reading it took longer than {} s",
                READ_TIMEOUT.as_secs()
            )),
        }
    }
}

/// Runs the user's function and checks what it returns, as at start.
fn read_with(
    function: &Mutex<RereadFn>,
    running: &Program,
) -> Result<(Box<Settings>, Option<Program>), String> {
    let mut reread = match function.try_lock() {
        Ok(reread) => reread,
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(TryLockError::WouldBlock) => {
            return Err(format!(
                "the previous read has not finished after {} s",
                READ_TIMEOUT.as_secs()
            ));
        }
    };
    let configuration = reread()?;
    let program = configuration
        .configured_command()
        .map_err(|err| err.to_string())?;
    let settings = Settings::resolve(&configuration, program.as_ref().unwrap_or(running))
        .map_err(|err| err.to_string())?;
    Ok((Box::new(settings), program))
}
