//! `--watch`: file changes become rolling reloads. A thread of its own
//! (never the supervisor's loop) holds an inotify watch on each directory
//! that is not ignored (`ignored.rs`), waits for a burst of changes to end
//! (`debounce.rs`), and sends the supervisor [`SupervisorCommand::FilesChanged`],
//! which is a reload as `corral reload` asks for it: a change that breaks
//! the program aborts that reload (the replacement exits or is never
//! ready), the running workers keep serving, and the next change tries
//! again.
//!
//! Idle, it costs nothing: the thread and notify's own sleep until the
//! kernel has an event. When the kernel's inotify limits are reached, a
//! one-line warning says which directories go unseen and how to raise the
//! limit; the cluster runs on.

mod debounce;
mod ignored;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Instant;

use notify::event::{MetadataKind, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::UnboundedSender;

use crate::control::command::SupervisorCommand;
use debounce::Debounce;
pub(crate) use debounce::QUIET;
use ignored::{GitIgnores, IGNORED_DIRECTORIES, ignored, ignored_name};

/// A watched path as given: a directory, with everything below it, or
/// one file (watched through its directory, so that an editor that saves
/// by renaming a new file over it is seen too).
#[derive(Debug, Clone)]
struct Root {
    path: PathBuf,
    is_dir: bool,
}

impl Root {
    /// Whether a change of `path` concerns this root.
    fn covers(&self, path: &Path, gitignores: &GitIgnores) -> bool {
        if self.is_dir {
            path.starts_with(&self.path) && !ignored(&self.path, path, gitignores)
        } else {
            path == self.path
        }
    }
}

/// Starts watching `paths` (absolute, existing) on a thread of its own;
/// each burst of changes is sent on `commands`. A failure to start is a
/// warning: the cluster runs on without watching.
pub(crate) fn start(paths: &[PathBuf], commands: UnboundedSender<SupervisorCommand>) {
    if paths.is_empty() {
        return;
    }
    let paths = paths.to_vec();
    let spawned = std::thread::Builder::new()
        .name("corral-watch".into())
        .spawn(move || run(paths, commands));
    if let Err(err) = spawned {
        tracing::warn!("--watch: cannot start its thread ({err}): the cluster runs on unwatched");
    }
}

fn run(paths: Vec<PathBuf>, commands: UnboundedSender<SupervisorCommand>) {
    let roots: Vec<Root> = paths
        .into_iter()
        .map(|path| Root {
            is_dir: path.is_dir(),
            path,
        })
        .collect();
    let (sender, events) = mpsc::channel();
    let watcher = match notify::recommended_watcher(sender) {
        Ok(watcher) => watcher,
        Err(err) => {
            tracing::warn!(
                "--watch: cannot watch files ({err}; the limit of inotify instances: {}): the \
                 cluster runs on unwatched",
                limit("max_user_instances", "max_inotify_instances")
            );
            return;
        }
    };
    let mut watch = Watch {
        watcher,
        roots,
        gitignores: GitIgnores::default(),
        watched: 0,
    };
    let started = Instant::now();
    watch.add_roots();
    tracing::info!(
        "watching {} for changes ({} watched, {} ms to set up; ignored: {} and \
         .gitignored paths): a change reloads after {} ms without another",
        watch.describe_roots(),
        directories(watch.watched),
        started.elapsed().as_millis(),
        IGNORED_DIRECTORIES.join(", "),
        QUIET.as_millis(),
    );
    let mut debounce = Debounce::default();
    loop {
        let received = match debounce.deadline() {
            None => events.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(deadline) => {
                events.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            }
        };
        match received {
            Ok(Ok(event)) => watch.on_event(event, &mut debounce),
            Ok(Err(err)) => watch.on_error(&err),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if let Some(burst) = debounce.take_due(Instant::now()) {
            let command = SupervisorCommand::FilesChanged {
                path: burst.path,
                changes: burst.changes,
            };
            if commands.send(command).is_err() {
                // The supervisor is gone: the cluster stopped.
                return;
            }
        }
    }
}

/// The watcher and what it watches.
struct Watch {
    watcher: RecommendedWatcher,
    roots: Vec<Root>,
    gitignores: GitIgnores,
    /// Directories watched.
    watched: usize,
}

impl Watch {
    fn add_roots(&mut self) {
        for root in self.roots.clone() {
            if root.is_dir {
                self.gitignores.read_parents(&root.path);
                self.add_tree(&root.path);
            } else if let Some(dir) = root.path.parent() {
                let mut unwatched = Unwatched::default();
                self.add(dir, &mut unwatched);
                unwatched.warn();
            }
        }
    }

    /// Watches `dir` and every directory below it that is not ignored,
    /// never entering an ignored one.
    fn add_tree(&mut self, dir: &Path) {
        let mut walk = ignore::WalkBuilder::new(dir);
        walk.hidden(false)
            .parents(true)
            .ignore(false)
            .git_global(false)
            .git_exclude(false)
            .require_git(false)
            .follow_links(false)
            .filter_entry(|entry| entry.depth() == 0 || !ignored_name(entry.file_name()));
        let mut unwatched = Unwatched::default();
        for entry in walk.build().flatten() {
            if entry.file_type().is_some_and(|kind| kind.is_dir()) {
                self.gitignores.read(entry.path());
                self.add(entry.path(), &mut unwatched);
            }
        }
        unwatched.warn();
    }

    fn add(&mut self, dir: &Path, unwatched: &mut Unwatched) {
        match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => self.watched += 1,
            Err(err) if matches!(err.kind, notify::ErrorKind::MaxFilesWatch) => {
                unwatched.count += 1;
                unwatched.first.get_or_insert_with(|| dir.to_path_buf());
            }
            // Gone since it was listed, or unreadable: nothing to watch.
            Err(err) => tracing::debug!("--watch: {}: {err}", dir.display()),
        }
    }

    fn on_event(&mut self, event: notify::Event, debounce: &mut Debounce) {
        let now = Instant::now();
        if event.need_rescan() {
            // The kernel's queue overflowed: changes were lost.
            if let Some(root) = self.roots.first() {
                debounce.changed(root.path.clone(), now);
            }
            return;
        }
        let kind = event.kind;
        let changes = match kind {
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
            // Opening, reading, closing: a worker reading its own files.
            _ => false,
        };
        if !changes {
            return;
        }
        for path in event.paths {
            let covered = self
                .roots
                .iter()
                .any(|root| root.covers(&path, &self.gitignores));
            if !covered {
                continue;
            }
            if path.file_name().is_some_and(|name| name == ".gitignore") {
                if let Some(dir) = path.parent() {
                    self.gitignores.read(dir);
                }
                continue;
            }
            let arrived = matches!(
                kind,
                EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_))
            );
            if arrived && path.is_dir() && self.roots.iter().any(|root| root.is_dir) {
                self.add_tree(&path);
            }
            debounce.changed(path, now);
        }
    }

    fn on_error(&mut self, err: &notify::Error) {
        if matches!(err.kind, notify::ErrorKind::MaxFilesWatch) {
            let mut unwatched = Unwatched {
                count: 1,
                first: err.paths.first().cloned(),
            };
            unwatched.warn();
            unwatched.count = 0;
        } else {
            crate::log::rate::warn_limited!("--watch: {err}");
        }
    }

    fn describe_roots(&self) -> String {
        let paths: Vec<String> = self
            .roots
            .iter()
            .map(|root| root.path.display().to_string())
            .collect();
        paths.join(", ")
    }
}

/// Directories left unwatched by one walk, for its one warning.
#[derive(Default)]
struct Unwatched {
    count: usize,
    first: Option<PathBuf>,
}

impl Unwatched {
    fn warn(&self) {
        if self.count == 0 {
            return;
        }
        let first = self
            .first
            .as_ref()
            .map_or_else(String::new, |dir| format!(", {} first", dir.display()));
        tracing::warn!(
            "--watch: the inotify watch limit is reached ({}): changes in {}{first} go \
             unseen; raise the limit (sysctl \
             fs.inotify.max_user_watches=524288) or watch fewer paths (--watch src); the \
             cluster runs on",
            limit("max_user_watches", "max_inotify_watches"),
            directories(self.count),
        );
    }
}

/// An inotify limit as `sysctl` names it, `fs.inotify.NAME = N`, or, when
/// the user namespace's own limit (`user.NAMESPACED`) is lower, that one.
fn limit(name: &str, namespaced: &str) -> String {
    let read = |path: String| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
    };
    let machine = read(format!("/proc/sys/fs/inotify/{name}"));
    let namespace = read(format!("/proc/sys/user/{namespaced}"));
    match (machine, namespace) {
        (Some(machine), Some(namespace)) if namespace < machine => {
            format!("user.{namespaced} = {namespace}")
        }
        (Some(machine), _) => format!("fs.inotify.{name} = {machine}"),
        (None, _) => format!("fs.inotify.{name}"),
    }
}

/// `1 directory`, `4 directories`.
fn directories(count: usize) -> String {
    match count {
        1 => "1 directory".into(),
        _ => format!("{count} directories"),
    }
}
