//! The log file (`--log-file`): a copy of everything the primary prints
//! (its own lines and its workers' output), each line with a timestamp,
//! rotated by size (`PATH.1` … `PATH.N`, the oldest dropped) and reopened
//! when the primary gets SIGUSR1 (for external rotators such as
//! logrotate). Only the two writing threads (corral's log lines, the
//! workers' output) write to it, never the primary's loop; a write that
//! fails (a full disk) drops the line and counts it, and the next line
//! that can be written is preceded by one that says how many were lost.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

/// The open log file and its rotation rule.
#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    file: Option<File>,
    /// Bytes in the current file.
    size: u64,
    max_size: u64,
    keep: u32,
    /// Lines that could not be written since the last one that could.
    dropped: u64,
}

static FILE: OnceLock<Mutex<LogFile>> = OnceLock::new();
static REOPEN: AtomicBool = AtomicBool::new(false);

/// Opens `path` for appending (its directory created), to rotate once it
/// holds `max_size` bytes, keeping `keep` older files. Called once, by the
/// primary before it starts.
pub(crate) fn open(path: &Path, max_size: u64, keep: u32) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let file = open_append(path)?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = FILE.set(Mutex::new(LogFile {
        path: path.to_path_buf(),
        file: Some(file),
        size,
        max_size: max_size.max(1),
        keep,
        dropped: 0,
    }));
    Ok(())
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Asks the writers to reopen the file before their next line (SIGUSR1).
pub(crate) fn reopen() {
    REOPEN.store(true, Ordering::Release);
}

/// Whether a log file is open.
pub(crate) fn active() -> bool {
    FILE.get().is_some()
}

/// Appends `line` (one or more whole lines), with `stamp` put in front
/// of it when given. Never panics; a failed write is counted.
pub(crate) fn write(stamp: Option<&str>, line: &[u8]) {
    let Some(file) = FILE.get() else {
        return;
    };
    let Ok(mut file) = file.lock() else {
        return;
    };
    file.append(stamp, line);
}

impl LogFile {
    fn append(&mut self, stamp: Option<&str>, line: &[u8]) {
        if REOPEN.swap(false, Ordering::AcqRel) {
            self.reopen();
        }
        if self.size >= self.max_size {
            // Truncated from outside (logrotate's copytruncate): no rotation.
            self.size = self
                .file
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .map_or(self.size, |m| m.len());
            if self.size >= self.max_size {
                self.rotate();
            }
        }
        if self.dropped > 0 {
            let note = format!(
                "{} corral: {} log lines were dropped: {} could not be written\n",
                crate::log::format::now_rfc3339(),
                self.dropped,
                self.path.display()
            );
            if !self.put(None, note.as_bytes()) {
                self.dropped += 1;
                return;
            }
            self.dropped = 0;
        }
        if !self.put(stamp, line) {
            self.dropped += 1;
        }
    }

    /// Writes `line` in one piece; false when it could not be.
    fn put(&mut self, stamp: Option<&str>, line: &[u8]) -> bool {
        let Some(file) = self.file.as_mut() else {
            return false;
        };
        let mut whole = Vec::with_capacity(line.len() + 32);
        if let Some(stamp) = stamp {
            whole.extend_from_slice(stamp.as_bytes());
            whole.push(b' ');
        }
        whole.extend_from_slice(line);
        match file.write_all(&whole) {
            Ok(()) => {
                self.size += whole.len() as u64;
                true
            }
            Err(_) => false,
        }
    }

    /// PATH becomes PATH.1, PATH.1 PATH.2 …, PATH.KEEP is dropped; a new
    /// PATH is opened. With KEEP 0, PATH is emptied.
    fn rotate(&mut self) {
        self.file = None;
        if self.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(numbered(&self.path, n), numbered(&self.path, n + 1));
            }
            let _ = std::fs::rename(&self.path, numbered(&self.path, 1));
        }
        self.reopen();
    }

    fn reopen(&mut self) {
        self.file = open_append(&self.path).ok();
        self.size = self
            .file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
    }
}

/// `PATH.N`, a rotated file.
pub fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory of this test's own.
    fn scratch(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("corral-logfile-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn log_file(path: &Path, max_size: u64, keep: u32) -> LogFile {
        LogFile {
            path: path.to_path_buf(),
            file: Some(open_append(path).unwrap()),
            size: 0,
            max_size,
            keep,
            dropped: 0,
        }
    }

    #[test]
    fn files_rotate_by_size_and_the_oldest_is_dropped() {
        let path = scratch("rotate").join("app.log");
        let mut file = log_file(&path, 9, 2);
        for n in 0..5 {
            file.append(Some("T"), format!("line {n}\n").as_bytes());
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "T line 4\n");
        assert_eq!(
            std::fs::read_to_string(numbered(&path, 1)).unwrap(),
            "T line 3\n"
        );
        assert_eq!(
            std::fs::read_to_string(numbered(&path, 2)).unwrap(),
            "T line 2\n"
        );
        assert!(!numbered(&path, 3).exists());
    }

    #[test]
    fn lines_that_cannot_be_written_are_counted_and_reported() {
        let path = scratch("dropped").join("app.log");
        let mut file = log_file(&path, 1 << 20, 1);
        file.file = None;
        file.append(None, b"lost\n");
        file.append(None, b"lost\n");
        assert_eq!(file.dropped, 2);
        file.reopen();
        file.append(None, b"kept\n");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("2 log lines were dropped"), "{text}");
        assert!(text.ends_with("kept\n"), "{text}");
        assert_eq!(file.dropped, 0);
    }
}
