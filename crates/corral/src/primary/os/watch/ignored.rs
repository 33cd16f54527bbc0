//! Which changed paths `--watch` pays no attention to: what lives under
//! `.git`, `node_modules` and the other directories no program's code is
//! in, editors' temporary files, and what the `.gitignore` files ignore
//! (nested ones included, the deepest deciding, as git does).
//!
//! Ignored directories get no inotify watch at all: the walk that adds
//! the watches (`ignore`'s walker, which applies the same `.gitignore`
//! files) never enters them, so a `node_modules` of 20,000 files costs
//! nothing.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use ignore::Match;
use ignore::gitignore::Gitignore;

/// Directories never watched, wherever they are: version control, Node's
/// and Python's dependencies and caches (a Python worker writes its
/// `__pycache__` when a reload starts it, which must not reload again).
pub(crate) const IGNORED_DIRECTORIES: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    "node_modules",
    "__pycache__",
    ".venv",
];

/// Whether a file or directory of this name is never watched: an ignored
/// directory, or an editor's or compiler's by-product (vim's `.x.swp`
/// and its `4913` probe, emacs' `#x#` and `.#x`, `x~` backups, JetBrains'
/// `x___jb_tmp___` and `x___jb_old___`, `.pyc`).
pub(crate) fn ignored_name(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    IGNORED_DIRECTORIES.contains(&name)
        || name == "4913"
        || name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with(".pyc")
        || name.ends_with("___jb_tmp___")
        || name.ends_with("___jb_old___")
        || name.starts_with(".#")
        || (name.starts_with('#') && name.ends_with('#'))
}

/// The `.gitignore` files that apply to the watched paths, each with its
/// directory, the deepest first.
#[derive(Default)]
pub(crate) struct GitIgnores {
    files: Vec<(PathBuf, Gitignore)>,
}

impl GitIgnores {
    /// Reads `dir/.gitignore`, if there is one (again, if it was read).
    pub(crate) fn read(&mut self, dir: &Path) {
        self.files.retain(|(of, _)| of != dir);
        let file = dir.join(".gitignore");
        if !file.is_file() {
            return;
        }
        let (rules, error) = Gitignore::new(&file);
        if let Some(error) = error {
            tracing::warn!("--watch: {}: {error}", file.display());
        }
        self.files.push((dir.to_path_buf(), rules));
        self.files
            .sort_by_key(|(dir, _)| std::cmp::Reverse(dir.components().count()));
    }

    /// Reads the `.gitignore` files of `root`'s parents, up to the
    /// repository's top (the directory with `.git`), as git applies them.
    pub(crate) fn read_parents(&mut self, root: &Path) {
        for dir in root.ancestors().skip(1) {
            self.read(dir);
            if dir.join(".git").exists() {
                break;
            }
        }
    }

    /// Whether the `.gitignore` files ignore `path` (or a directory above
    /// it): the deepest file that names it decides.
    pub(crate) fn ignore(&self, path: &Path, is_dir: bool) -> bool {
        for (dir, rules) in &self.files {
            if !path.starts_with(dir) || path == dir {
                continue;
            }
            match rules.matched_path_or_any_parents(path, is_dir) {
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
                Match::None => {}
            }
        }
        false
    }
}

/// Whether a changed `path` under `root` is to be ignored: a part of it
/// below the root has an ignored name, or the `.gitignore` files ignore
/// it.
pub(crate) fn ignored(root: &Path, path: &Path, gitignores: &GitIgnores) -> bool {
    let Ok(below) = path.strip_prefix(root) else {
        return true;
    };
    below.iter().any(ignored_name) || gitignores.ignore(path, path.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependency_and_editor_files_are_ignored_by_name() {
        for name in [
            ".git",
            "node_modules",
            "__pycache__",
            ".app.py.swp",
            "app.py~",
            "4913",
            ".#app.py",
            "#app.py#",
            "app.cpython-312.pyc",
            "app.js___jb_tmp___",
        ] {
            assert!(ignored_name(OsStr::new(name)), "{name}");
        }
        for name in ["app.py", "server.js", ".env", "package.json", "src", "git"] {
            assert!(!ignored_name(OsStr::new(name)), "{name}");
        }
    }

    #[test]
    fn paths_are_ignored_by_any_part_below_the_root() {
        let root = Path::new("/srv/app");
        let none = GitIgnores::default();
        assert!(ignored(root, Path::new("/srv/app/.git/HEAD"), &none));
        assert!(ignored(
            root,
            Path::new("/srv/app/node_modules/x/index.js"),
            &none
        ));
        assert!(!ignored(root, Path::new("/srv/app/src/index.js"), &none));
        // The root's own path may have any name.
        assert!(!ignored(
            Path::new("/home/me/node_modules/app"),
            Path::new("/home/me/node_modules/app/index.js"),
            &none
        ));
        assert!(ignored(root, Path::new("/elsewhere/x.js"), &none));
    }

    #[test]
    fn the_deepest_gitignore_decides() {
        let dir = std::env::temp_dir().join(format!("corral-ignored-{}", std::process::id()));
        let sub = dir.join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(dir.join(".gitignore"), "*.log\n/build\n").unwrap();
        std::fs::write(sub.join(".gitignore"), "!keep.log\n").unwrap();
        let mut rules = GitIgnores::default();
        rules.read(&dir);
        rules.read(&sub);
        assert!(rules.ignore(&dir.join("app.log"), false));
        assert!(rules.ignore(&sub.join("other.log"), false));
        assert!(!rules.ignore(&sub.join("keep.log"), false));
        assert!(rules.ignore(&dir.join("build/out.js"), false));
        assert!(!rules.ignore(&sub.join("build/out.js"), false), "anchored");
        assert!(!rules.ignore(&dir.join("app.py"), false));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
