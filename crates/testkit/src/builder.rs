//! "A cluster of N workers under policy P", the setup most tests share:
//! `corral run` (or a library example) on a free loopback port, returned
//! once every worker said it is ready.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;

use crate::{ClusterProcess, Mark, PATIENCE, corral_path, example_path};

/// Builds and starts a cluster process.
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    program: PathBuf,
    leading: Vec<String>,
    workers: usize,
    policy: Option<String>,
    args: Vec<String>,
    command: Vec<String>,
    env: Vec<(String, String)>,
    wait_ready: bool,
}

impl ClusterBuilder {
    /// `corral run` ([`corral_path`]), two workers, the demo worker unless
    /// [`Self::command`] names another.
    pub fn corral() -> Self {
        Self::new(PathBuf::from(corral_path()), vec!["run".into()])
    }

    /// The library example `name`, two workers.
    pub fn example(name: &str) -> Self {
        Self::new(example_path(name), Vec::new())
    }

    fn new(program: PathBuf, leading: Vec<String>) -> Self {
        ClusterBuilder {
            program,
            leading,
            workers: 2,
            policy: None,
            args: Vec::new(),
            command: Vec::new(),
            env: Vec::new(),
            wait_ready: true,
        }
    }

    /// How many workers (`-w`).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// The balancing policy (`--policy`).
    pub fn policy(mut self, policy: &str) -> Self {
        self.policy = Some(policy.into());
        self
    }

    /// More flags.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|arg| arg.to_string()));
        self
    }

    /// The worker command, after `--`.
    pub fn command(mut self, command: &[&str]) -> Self {
        self.command = command.iter().map(|arg| arg.to_string()).collect();
        self
    }

    /// An environment variable of the cluster (and so of its workers).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Returns as soon as the process started, without waiting for ready
    /// workers (for clusters that are not meant to get there).
    pub fn no_wait(mut self) -> Self {
        self.wait_ready = false;
        self
    }

    /// The command line this builds.
    pub fn command_line(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.leading)
            .args(["-w", &self.workers.to_string(), "-l", "127.0.0.1:0"]);
        if let Some(policy) = &self.policy {
            command.args(["--policy", policy]);
        }
        command.args(&self.args);
        if !self.command.is_empty() {
            command.arg("--").args(&self.command);
        }
        command.envs(self.env.iter().map(|(name, value)| (name, value)));
        // The cluster's control socket in a directory of its own, so that
        // parallel tests' clusters of one name never meet (nor a cluster
        // someone runs on the machine).
        if !self.env.iter().any(|(name, _)| name == "XDG_RUNTIME_DIR") {
            command.env(
                "XDG_RUNTIME_DIR",
                crate::runtime_dir::runtime_dir_for_one_cluster(),
            );
        }
        command
    }

    /// Starts the cluster; unless [`Self::no_wait`], returns once its port
    /// is known and each of its workers sent a `ready` event.
    pub fn start(self) -> ClusterProcess {
        let cluster = ClusterProcess::spawn(self.command_line());
        if self.wait_ready {
            cluster.port();
            wait_ready(&cluster, Mark::START, self.workers);
        }
        cluster
    }
}

/// The start most tests share: `corral run` of two demo workers under
/// `policy` (5 s grace), returned once both are ready, with their port.
pub fn two_ready_workers(policy: &str) -> (ClusterProcess, u16) {
    let cluster = ClusterBuilder::corral()
        .policy(policy)
        .args(&["--grace", "5"])
        .start();
    let port = cluster.port();
    (cluster, port)
}

/// Waits until `workers` distinct workers sent `ready` after `since`;
/// fails the test with the output otherwise.
pub fn wait_ready(cluster: &ClusterProcess, since: Mark, workers: usize) {
    let ready = cluster.transcript.wait(since, PATIENCE, |lines| {
        let ids: HashSet<u32> = lines
            .iter()
            .filter_map(|line| line.event.as_ref())
            .filter(|event| event.is("ready"))
            .filter_map(|event| event.worker)
            .collect();
        (ids.len() >= workers).then_some(())
    });
    if ready.is_none() {
        panic!(
            "{workers} workers were not ready within {PATIENCE:?}; output:\n{}",
            cluster.output()
        );
    }
}
