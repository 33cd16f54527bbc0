//! The settings the primary runs with: a cluster's [`Configuration`]
//! checked and resolved (addresses bound to, the user looked up, the name
//! chosen). What a reload may change stays as given, [`Reloadable`], which
//! a reload replaces whole; the fields read through it
//! (`settings.grace`).

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;

use crate::address::ListenAddr;
use crate::balance::Policy;
use crate::error::Error;
use crate::primary::{node, reconfigure};
use crate::settings::name::check_name;
use crate::settings::{Configuration, Reloadable};
use crate::settings::{MessagePolicy, Program, run_as};

/// The cluster's settings, validated and resolved.
pub(crate) struct Settings {
    /// What a reload may change.
    pub reloadable: Reloadable,
    pub addresses: Vec<SocketAddr>,
    pub policy: Policy,
    pub backlog: i32,
    pub name: String,
    pub max_message_size: usize,
    pub messages: MessagePolicy,
    pub worker_threads: Option<usize>,
    /// Workers run as this user and group (`--user`).
    pub user: Option<run_as::RunAs>,
    /// What Node workers may have the primary bind beyond their own
    /// privileges (`--allow-worker-binds`).
    pub allow_worker_binds: node::AllowedBinds,
    /// Reads the configuration again at each reload (`Cluster::on_reload`).
    pub reread: Option<reconfigure::Reread>,
    /// Where the control socket is (or none).
    pub control: crate::control::ControlSocket,
    /// The metrics and health endpoint's address, if any.
    pub metrics: Option<SocketAddr>,
    /// When rolling reloads start by themselves (`--reload-at`).
    pub schedule: Option<crate::settings::schedule::Schedule>,
    /// Whether Node workers load corral's Node agent (`--node-agent`).
    pub node_agent: bool,
    /// Whether the kernel may steer a hand-off policy (`--kernel-steering`).
    pub kernel_steering: bool,
    /// What `--watch` watches: absolute paths that exist (none: off).
    pub watch: Vec<PathBuf>,
}

impl Deref for Settings {
    type Target = Reloadable;

    fn deref(&self) -> &Reloadable {
        &self.reloadable
    }
}

impl DerefMut for Settings {
    fn deref_mut(&mut self) -> &mut Reloadable {
        &mut self.reloadable
    }
}

impl Settings {
    /// How often a worker sends heartbeats (`CORRAL_HEARTBEAT_MS`): four
    /// times within the watchdog's timeout.
    pub(crate) fn heartbeat(&self) -> Option<std::time::Duration> {
        self.watchdog.map(|timeout| timeout / 4)
    }

    /// Checks `configuration` for running `program`, and resolves it.
    pub(crate) fn resolve(
        configuration: &Configuration,
        program: &Program,
    ) -> Result<Settings, Error> {
        configuration.check()?;
        program.check()?;
        let fixed = &configuration.fixed;
        let name = configuration.name_for(program);
        check_name(&name)?;
        let mut addresses = fixed
            .listen
            .iter()
            .map(|text| text.parse::<ListenAddr>()?.resolve())
            .collect::<Result<Vec<SocketAddr>, Error>>()?;
        if fixed.listen.is_empty() {
            // Socket-activated with no address given: serve every socket.
            addresses = crate::settings::activated_addresses();
        }
        let mut reloadable = configuration.reloadable.clone();
        // The files' variables first: `env` (the file's tables, the flags)
        // overrides them, as the later of two variables wins at spawn.
        let mut from_files = Vec::new();
        for path in &reloadable.env_file {
            from_files.extend(crate::settings::env_file::read(path)?);
        }
        from_files.append(&mut reloadable.env);
        reloadable.env = from_files;
        let schedule = fixed
            .reload_at
            .as_deref()
            .map(crate::settings::schedule::Schedule::parse)
            .transpose()?;
        Ok(Settings {
            reloadable,
            schedule,
            addresses,
            policy: fixed.policy,
            backlog: fixed.backlog as i32,
            name,
            max_message_size: fixed.max_message_size,
            messages: fixed.messages,
            worker_threads: fixed.worker_threads,
            user: fixed.user.as_deref().map(run_as::resolve).transpose()?,
            allow_worker_binds: node::AllowedBinds::parse(&fixed.allow_worker_binds)?,
            reread: None,
            control: fixed.control.clone(),
            metrics: fixed
                .metrics
                .as_deref()
                .map(|text| text.parse::<ListenAddr>()?.resolve())
                .transpose()?,
            node_agent: fixed.node_agent,
            kernel_steering: fixed.kernel_steering,
            watch: fixed.watch.iter().map(|path| watched_path(path)).collect(),
        })
    }
}

/// A `--watch` path made absolute, its symbolic links resolved when it
/// exists. A missing one is refused at start ([`Settings::check_watched`]),
/// not when a reload reads the configuration again: a build may have
/// removed it for a moment, and a running cluster keeps what it watches.
fn watched_path(path: &std::path::Path) -> PathBuf {
    path.canonicalize()
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

impl Settings {
    /// Refuses a `--watch` path that does not exist (at start and in
    /// `corral check`).
    pub(crate) fn check_watched(&self) -> Result<(), Error> {
        for path in &self.watch {
            if let Err(err) = std::fs::metadata(path) {
                return Err(Error::Config(format!(
                    "--watch {}: {err}: give an existing file or directory",
                    path.display()
                )));
            }
        }
        Ok(())
    }
}
