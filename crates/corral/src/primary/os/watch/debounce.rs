//! Many changes, one reload: an editor's save, a `git checkout` or a build
//! touches many files within moments; the reload waits for [`QUIET`] without
//! a change (at most [`LONGEST_WAIT`] after the first, so that a file
//! written all the time still shows, in the reload's event, what keeps
//! reloading).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long no file may change before the reload starts.
pub(crate) const QUIET: Duration = Duration::from_millis(300);
/// The longest a reload waits after the first change of a burst.
pub(crate) const LONGEST_WAIT: Duration = Duration::from_secs(2);

/// The changes seen since the last reload was asked for.
#[derive(Debug, Default)]
pub(crate) struct Debounce {
    first: Option<(PathBuf, Instant)>,
    last: Option<Instant>,
    changed: HashSet<PathBuf>,
}

/// What a burst of changes asks for: a reload, for `path` (the first file
/// that changed) and `changes` files in all.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Burst {
    pub path: PathBuf,
    pub changes: usize,
}

impl Debounce {
    /// `path` changed at `now`.
    pub(crate) fn changed(&mut self, path: PathBuf, now: Instant) {
        if self.first.is_none() {
            self.first = Some((path.clone(), now));
        }
        self.last = Some(now);
        self.changed.insert(path);
    }

    /// When the burst under way ends, if one is: [`QUIET`] after its last
    /// change, or [`LONGEST_WAIT`] after its first.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let (_, first) = self.first.as_ref()?;
        let last = self.last?;
        Some((last + QUIET).min(*first + LONGEST_WAIT))
    }

    /// The burst, once its deadline passed at `now`; it starts a new one.
    pub(crate) fn take_due(&mut self, now: Instant) -> Option<Burst> {
        if self.deadline()? > now {
            return None;
        }
        let (path, _) = self.first.take()?;
        self.last = None;
        let changes = self.changed.len();
        self.changed.clear();
        Some(Burst { path, changes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn a_burst_ends_after_a_quiet_moment_and_names_its_first_file() {
        let start = Instant::now();
        let mut debounce = Debounce::default();
        assert_eq!(debounce.deadline(), None);
        debounce.changed("a.py".into(), start);
        debounce.changed("b.py".into(), start + MS(100));
        debounce.changed("a.py".into(), start + MS(200));
        assert_eq!(debounce.deadline(), Some(start + MS(200) + QUIET));
        assert_eq!(debounce.take_due(start + MS(400)), None);
        assert_eq!(
            debounce.take_due(start + MS(500)),
            Some(Burst {
                path: "a.py".into(),
                changes: 2
            })
        );
        assert_eq!(debounce.deadline(), None);
        assert_eq!(debounce.take_due(start + MS(10_000)), None);
    }

    #[test]
    fn changes_without_pause_reload_after_the_longest_wait() {
        let start = Instant::now();
        let mut debounce = Debounce::default();
        for step in 0..30 {
            debounce.changed("app.log".into(), start + MS(step * 100));
        }
        assert_eq!(debounce.deadline(), Some(start + LONGEST_WAIT));
        assert!(debounce.take_due(start + LONGEST_WAIT).is_some());
    }
}
