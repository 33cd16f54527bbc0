//! Reading a configuration file without trusting what the path names. The
//! file is read again at every reload, inside a running primary, so a path
//! replaced by a FIFO, a device (`/dev/zero`), a directory or a huge file
//! must be a one-line error, never a hang or unbounded memory: it is
//! opened with `O_NONBLOCK` (opening a FIFO with no writer then returns at
//! once), accepted only if the opened file is a regular file, and read up
//! to [`MAX_CONFIG_SIZE`] bytes.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::error::Error;

/// The largest configuration file corral reads: 1 MiB, far more than any
/// real configuration, little enough to hold at every reload.
pub const MAX_CONFIG_SIZE: u64 = 1024 * 1024;

/// The text of the configuration file at `path`, read safely: a regular
/// file of at most [`MAX_CONFIG_SIZE`] bytes of UTF-8. Anything else is an
/// [`Error::ConfigFile`] that names the file and the fix.
pub fn read_config_file(path: &Path) -> Result<String, Error> {
    let refuse = |problem: String| Error::ConfigFile {
        path: path.to_path_buf(),
        problem,
    };
    let file =
        open_without_blocking(path).map_err(|err| refuse(format!("cannot open it: {err}")))?;
    let metadata = file
        .metadata()
        .map_err(|err| refuse(format!("cannot read its metadata: {err}")))?;
    let kind = metadata.file_type();
    if !kind.is_file() {
        return Err(refuse(format!(
            "it is {}, not a regular file: point the configuration at a regular file",
            file_kind(&kind)
        )));
    }
    let too_large = || {
        refuse(format!(
            "it is larger than {MAX_CONFIG_SIZE} bytes (1 MiB): a configuration file must be \
             smaller"
        ))
    };
    if metadata.len() > MAX_CONFIG_SIZE {
        return Err(too_large());
    }
    // The file may grow after the check: never read more than one byte past.
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(MAX_CONFIG_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| refuse(format!("cannot read it: {err}")))?;
    if bytes.len() as u64 > MAX_CONFIG_SIZE {
        return Err(too_large());
    }
    String::from_utf8(bytes)
        .map_err(|_| refuse("it is not UTF-8 text: save it as UTF-8".to_string()))
}

/// Opens `path` for reading with `O_NONBLOCK` (a FIFO without a writer
/// does not hold the open) and `O_NOCTTY` (a terminal does not become ours).
fn open_without_blocking(path: &Path) -> std::io::Result<File> {
    let flags = rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY;
    OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
}

/// What a file that is not a regular file is, for the error.
fn file_kind(kind: &std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn refused(path: &Path) -> String {
        let started = Instant::now();
        let err = read_config_file(path).unwrap_err().to_string();
        assert!(started.elapsed() < Duration::from_secs(1), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        err
    }

    #[test]
    fn reads_a_regular_file() {
        let dir = std::env::temp_dir().join(format!("corral-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ok.toml");
        std::fs::write(&file, "workers = 2\n").unwrap();
        assert_eq!(read_config_file(&file).unwrap(), "workers = 2\n");

        let large = dir.join("large.toml");
        std::fs::write(&large, vec![b'#'; MAX_CONFIG_SIZE as usize + 1]).unwrap();
        assert!(refused(&large).contains("larger than 1048576 bytes"));
        std::fs::write(&large, vec![b'#'; MAX_CONFIG_SIZE as usize]).unwrap();
        assert!(read_config_file(&large).is_ok());

        let fifo = dir.join("fifo.toml");
        let _ = std::fs::remove_file(&fifo);
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        assert!(refused(&fifo).contains("a FIFO"));
        assert!(refused(&dir).contains("a directory"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn devices_are_refused_without_reading_them() {
        let err = refused(Path::new("/dev/zero"));
        assert!(
            err.contains("a character device, not a regular file"),
            "{err}"
        );
        assert!(refused(Path::new("/no/such/file")).contains("cannot open it"));
    }
}
