//! Finding the cluster a command is about: `--control PATH`, or NAME's
//! socket in this user's default directory, or, with neither, the one
//! cluster of this user that answers.

use std::path::{Path, PathBuf};

use corral::cli_support::client::{Client, ClientError};
use corral::cli_support::path::{default_directory, default_socket, listed_sockets};

use crate::args::CommonArgs;

/// No cluster could be reached (exit code 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unreachable(pub String);

/// The control socket of the cluster a command names.
pub(crate) fn socket_path(name: Option<&str>, common: &CommonArgs) -> anyhow::Result<PathBuf> {
    if let Some(path) = &common.control {
        if name.is_some() {
            anyhow::bail!("give either NAME or --control PATH, not both");
        }
        return Ok(path.clone());
    }
    if let Some(name) = name {
        return Ok(default_socket(name));
    }
    let running: Vec<(String, PathBuf)> = running_clusters()
        .into_iter()
        .map(|(name, path, _)| (name, path))
        .collect();
    match running.as_slice() {
        [(_, path)] => Ok(path.clone()),
        [] => Err(Unreachable(format!(
            "no cluster of yours is running (no live control socket in {}); start one with \
             `corral run`, or give --control PATH",
            default_directory().display()
        ))
        .into()),
        several => {
            let names: Vec<&str> = several.iter().map(|(name, _)| name.as_str()).collect();
            Err(anyhow::anyhow!(
                "{} clusters are running ({}): name one, as in `corral status {}`",
                names.len(),
                names.join(", "),
                names[0]
            ))
        }
    }
}

/// Connects to the cluster a command names.
pub(crate) fn connect(name: Option<&str>, common: &CommonArgs) -> anyhow::Result<Client> {
    let path = socket_path(name, common)?;
    connect_to(&path, name)
}

/// Connects to the socket at `path` (of the cluster `name`, if named).
pub(crate) fn connect_to(path: &Path, name: Option<&str>) -> anyhow::Result<Client> {
    Client::connect(path).map_err(|err| match (&err, name) {
        (ClientError::Connect { source, .. }, Some(name)) => Unreachable(format!(
            "no cluster named {name:?} is running ({err}: {source}); `corral ls` lists the \
             running ones"
        ))
        .into(),
        (ClientError::Connect { source, .. }, None) => {
            Unreachable(format!("{err}: {source}")).into()
        }
        _ => anyhow::Error::from(err),
    })
}

/// The clusters of this user that answer, with their status: (name,
/// socket, status).
pub(crate) fn running_clusters() -> Vec<(String, PathBuf, corral::Status)> {
    listed_sockets()
        .into_iter()
        .filter_map(|(name, path)| {
            let status = Client::connect(&path).ok()?.status().ok()?;
            Some((name, path, status))
        })
        .collect()
}
