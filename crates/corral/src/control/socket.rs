//! The control socket's file: bound with mode 0600 under its final name in
//! one step (bound under a temporary name, made private, then renamed over
//! the final one), never over a live cluster's socket, and removed when the
//! cluster stops.
//!
//! A socket file already at the path belongs to another cluster if
//! connecting to it succeeds: starting is then an error naming it. If
//! nobody answers (a cluster that was killed leaves its file behind), the
//! file is stale and is replaced.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// A bound control socket; its file is removed when this is dropped (if it
/// is still this socket's file).
pub(crate) struct BoundSocket {
    pub listener: UnixListener,
    pub path: PathBuf,
    /// Device and inode of the file, to leave alone a file that another
    /// cluster put at the path since.
    identity: (u64, u64),
}

impl BoundSocket {
    /// Binds the control socket at `path` for the cluster `name`.
    pub(crate) fn bind(path: &Path, name: &str) -> Result<Self, Error> {
        check_not_in_use(path, name)?;
        let temporary = temporary_path(path);
        let _ = std::fs::remove_file(&temporary);
        let failed = |err: io::Error| Error::Control {
            path: path.to_path_buf(),
            problem: format!("cannot create the control socket: {err}"),
        };
        let listener = UnixListener::bind(&temporary).map_err(failed)?;
        let made_private = std::fs::set_permissions(&temporary, PermissionsExt::from_mode(0o600))
            .and_then(|()| std::fs::rename(&temporary, path));
        if let Err(err) = made_private {
            let _ = std::fs::remove_file(&temporary);
            return Err(failed(err));
        }
        let metadata = std::fs::metadata(path).map_err(failed)?;
        listener.set_nonblocking(true).map_err(failed)?;
        Ok(BoundSocket {
            listener,
            path: path.to_path_buf(),
            identity: (metadata.dev(), metadata.ino()),
        })
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|metadata| (metadata.dev(), metadata.ino()) == self.identity);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Fails when a cluster answers at `path`, or when the path holds
/// something other than a socket.
fn check_not_in_use(path: &Path, name: &str) -> Result<(), Error> {
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    let problem = if !metadata.file_type().is_socket() {
        "it exists and is not a socket: remove it or choose another --control PATH".to_string()
    } else {
        match UnixStream::connect(path) {
            Ok(_) => format!(
                "a cluster is already running with this control socket: stop it (corral stop \
                 {name}), or give this cluster another --name or --control PATH"
            ),
            // Nobody listens: a cluster that died left it behind.
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => return Ok(()),
            Err(err) => format!(
                "it exists and cannot be checked ({err}): remove it or choose another \
                 --control PATH"
            ),
        }
    };
    Err(Error::Control {
        path: path.to_path_buf(),
        problem,
    })
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{}.new", std::process::id()));
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("corral-socket-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn the_socket_is_private_and_removed_on_drop() {
        let path = scratch("private.sock");
        let socket = BoundSocket::bind(&path, "t").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(socket);
        assert!(!path.exists());
    }

    #[test]
    fn a_live_socket_is_not_taken_over_and_a_stale_one_is() {
        let path = scratch("live.sock");
        let first = BoundSocket::bind(&path, "t").unwrap();
        let err = BoundSocket::bind(&path, "t").err().unwrap().to_string();
        assert!(err.contains("already running"), "{err}");
        drop(first);
        assert!(!path.exists());
        // A socket file nobody listens on: what a killed cluster leaves.
        let stale = scratch("stale.sock");
        drop(UnixListener::bind(&stale).unwrap());
        assert!(stale.exists());
        let replaced = BoundSocket::bind(&stale, "t").unwrap();
        assert!(UnixStream::connect(&stale).is_ok());
        drop(replaced);
    }

    #[test]
    fn a_file_that_is_not_a_socket_is_left_alone() {
        let path = scratch("regular.sock");
        std::fs::write(&path, b"data").unwrap();
        let err = BoundSocket::bind(&path, "t").err().unwrap().to_string();
        assert!(err.contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
    }
}
