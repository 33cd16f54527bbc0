//! Reading the configuration again at each rolling reload (`Cluster::
//! on_reload`; `corral run --config FILE` re-reads its file), as nginx does
//! on SIGHUP. What can change on a running cluster — the command and its
//! arguments, the workers' environment, the number of workers, the grace
//! period, recycling and the watchdog — applies to every worker started from
//! then on, so the reload's replacements run with it. What cannot (listen
//! addresses, policy, backlog, user…) is named in a warning and waits for a
//! restart. A configuration that no longer validates aborts that reload with
//! its error, and the running configuration stays.

use std::time::Duration;

use super::{Program, Settings, Supervisor};
use crate::Error;
use crate::cluster::Cluster;

/// How often the watchdog looks at heartbeats when none was configured at
/// start (a reload may turn it on).
pub(super) const CHECK_PERIOD: Duration = Duration::from_millis(250);

/// The user's function that builds the cluster's configuration anew.
pub(crate) type Reread = Box<dyn FnMut() -> Result<Cluster, String> + Send>;

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
    check(running.name != new.name, "name");
    check(running.metrics != new.metrics, "metrics");
    check(running.control != new.control, "control");
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

impl Supervisor {
    /// Reads the configuration again before a reload, if the cluster was
    /// given a way to. Returns whether the reload goes ahead, or why not.
    pub(super) fn reread_configuration(&mut self) -> Result<Result<(), String>, Error> {
        let Some(reread) = self.settings.reread.as_mut() else {
            return Ok(Ok(()));
        };
        let new = reread().and_then(|cluster| {
            let program = cluster.configured_command();
            let settings = cluster
                .settings(program.as_ref().unwrap_or(&self.launcher.program))
                .map_err(|err| err.to_string())?;
            Ok((settings, program))
        });
        match new {
            Ok((settings, program)) => {
                self.apply(settings, program)?;
                Ok(Ok(()))
            }
            Err(err) => {
                tracing::error!(
                    "reload aborted: the configuration is not valid: {err}; the running \
                     configuration stays"
                );
                Ok(Err(format!("the configuration is not valid: {err}")))
            }
        }
    }

    /// Takes what can change from `new`; logs what cannot.
    fn apply(&mut self, new: Settings, program: Option<Program>) -> Result<(), Error> {
        let fixed = fixed_changes(&self.settings, &new);
        if !fixed.is_empty() {
            tracing::warn!(
                "reload: {} changed, which a running cluster cannot take: restart corral to \
                 apply it; the rest of the configuration applies",
                fixed.join(", ")
            );
        }
        if let Some(program) = program {
            self.launcher.program = program;
        }
        self.launcher.env = new.env.clone();
        self.launcher.worker_env.grace = new.grace;
        self.launcher.worker_env.heartbeat = new.watchdog.map(|timeout| timeout / 4);
        let running = &mut self.settings;
        running.grace = new.grace;
        running.env = new.env;
        running.watchdog = new.watchdog;
        running.max_memory = new.max_memory;
        running.max_requests = new.max_requests;
        running.max_requests_jitter = new.max_requests_jitter;
        running.max_surge = new.max_surge;
        running.ready = new.ready;
        running.ready_timeout = new.ready_timeout;
        running.backoff = new.backoff;
        self.resize(new.workers)
    }

    /// Adds or drains workers until the cluster has `workers` of them.
    fn resize(&mut self, workers: usize) -> Result<(), Error> {
        let serving = || {
            self.slots
                .values()
                .filter(|slot| !slot.is_retiring())
                .count()
        };
        let current = serving();
        self.settings.workers = workers;
        if workers > current {
            tracing::info!("reload: {current} workers -> {workers}");
            for _ in current..workers {
                self.scale_up()?;
            }
        } else if workers < current {
            tracing::info!("reload: {current} workers -> {workers}");
            for _ in workers..current {
                self.scale_down()?;
            }
        }
        Ok(())
    }
}
