//! Everything that steers the supervisor, whoever asks: the control
//! socket, the library's [`crate::Primary`] handle, the signals (TERM,
//! INT, HUP, TTIN, TTOU) and the file watcher (`--watch`) all send a [`SupervisorCommand`], each with the
//! channel its answer comes back on, if any. The supervisor's loop receives
//! them beside worker notices, so every change to the cluster still happens
//! in one place, by one path per command.

use std::path::PathBuf;

use tokio::sync::oneshot;

use super::status::{ReloadOutcome, Status};

pub(crate) enum SupervisorCommand {
    /// A status snapshot.
    Status(oneshot::Sender<Status>),
    /// A rolling reload; `outcome` hears how the reload that includes this
    /// request ended (queued behind one under way, it is the next one).
    Reload {
        outcome: Option<oneshot::Sender<Result<ReloadOutcome, ReloadOutcome>>>,
        started: Option<oneshot::Sender<bool>>,
    },
    /// Sets the number of workers; answers with the new number, or why not
    /// (with no one to answer, as after TTIN or TTOU, why not is logged).
    Scale {
        target: ScaleTarget,
        reply: Option<oneshot::Sender<Result<usize, String>>>,
    },
    /// Stops the cluster.
    Stop(StopMode),
    /// Watched files changed (`--watch`): a rolling reload, as `Reload`
    /// with no one waiting. `path`: the first file that changed; `changes`:
    /// how many did.
    FilesChanged { path: PathBuf, changes: usize },
}

/// How a stop goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopMode {
    /// Every worker drains within `--grace` (`corral stop`).
    Graceful,
    /// Every worker is killed at once (`corral stop --now`).
    Now,
    /// As TERM and INT: graceful the first time, at once when the cluster
    /// is already draining (a second Ctrl-C).
    GracefulThenNow,
}

/// The worker count `scale` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScaleTarget {
    Exactly(usize),
    By(i64),
}

impl ScaleTarget {
    /// The count to reach from `current`, within 1..=`max`; an error names
    /// the limit a request goes past.
    pub(crate) fn resolve(self, current: usize, max: usize) -> Result<usize, String> {
        let wanted: i64 = match self {
            ScaleTarget::Exactly(count) => i64::try_from(count).unwrap_or(i64::MAX),
            ScaleTarget::By(change) => (current as i64).saturating_add(change),
        };
        if wanted < 1 {
            return Err(format!(
                "a cluster keeps at least 1 worker (it has {current}; asked for {wanted})"
            ));
        }
        if wanted > max as i64 {
            return Err(format!(
                "a cluster has at most {max} workers (it has {current}; asked for {wanted})"
            ));
        }
        Ok(wanted as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_targets_resolve_within_the_limits() {
        assert_eq!(ScaleTarget::Exactly(3).resolve(2, 1024), Ok(3));
        assert_eq!(ScaleTarget::By(1).resolve(2, 1024), Ok(3));
        assert_eq!(ScaleTarget::By(-1).resolve(2, 1024), Ok(1));
        assert!(
            ScaleTarget::By(-2)
                .resolve(2, 1024)
                .unwrap_err()
                .contains("at least 1")
        );
        assert!(ScaleTarget::Exactly(0).resolve(2, 1024).is_err());
        assert!(
            ScaleTarget::Exactly(2000)
                .resolve(2, 1024)
                .unwrap_err()
                .contains("at most 1024")
        );
        assert!(ScaleTarget::By(i64::MAX).resolve(2, 1024).is_err());
    }
}
