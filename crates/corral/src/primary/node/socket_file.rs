//! Unix socket files bound for Node workers, created and removed so that
//! the primary's privileges never reach a path the worker controls.
//!
//! Each operation runs on a short-lived thread of its own that first takes
//! on the credentials it acts with. Linux keeps uids, gids, groups and
//! capabilities per thread (the C library's `setuid` only broadcasts the
//! change to every thread; the raw system calls used here do not), so that
//! thread is, for the kernel, the worker: every permission check and every
//! symlink it follows is the worker's, and what it may do is exactly what
//! the worker could have done itself. The thread then ends; its credentials
//! go with it and the rest of the primary never runs with them.
//!
//! The parent directory is opened once, and the socket is bound and later
//! removed by its name inside that directory (through
//! `/proc/self/fd/N/NAME`, and `unlinkat` on the descriptor), so a symlink
//! re-pointed after the bind cannot move the removal elsewhere; and the
//! removal only unlinks a socket with the inode the bind created (checked
//! with `fstatat` without following a symlink).

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use socket2::{Domain, SockAddr, Socket, Type};

use crate::settings::run_as::RunAs;

/// Whose credentials a socket file is bound and removed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Credentials {
    /// The primary's own (workers have the same privileges, or the
    /// operator allowed the directory).
    Primary,
    /// The workers' user and group, no supplementary groups (`--user`).
    User(RunAs),
    /// The primary's user without its effective capabilities (a primary
    /// with capabilities its workers do not inherit).
    NoCapabilities,
}

impl Credentials {
    /// Makes the calling thread act with these credentials, for good.
    fn assume(&self) -> io::Result<()> {
        match self {
            Credentials::Primary => {}
            Credentials::User(user) => {
                let gid = rustix::fs::Gid::from_raw(user.gid);
                let uid = rustix::fs::Uid::from_raw(user.uid);
                rustix::thread::set_thread_groups(&[])?;
                rustix::thread::set_thread_res_gid(gid, gid, gid)?;
                // Leaving uid 0 for good clears the thread's capabilities.
                rustix::thread::set_thread_res_uid(uid, uid, uid)?;
            }
            Credentials::NoCapabilities => {
                let mut sets = rustix::thread::capabilities(None)?;
                sets.effective = rustix::thread::CapabilitySet::empty();
                sets.permitted = rustix::thread::CapabilitySet::empty();
                rustix::thread::set_capabilities(None, sets)?;
            }
        }
        Ok(())
    }

    /// Runs `work` on a thread of its own acting with these credentials.
    fn run<T: Send>(&self, work: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    self.assume()?;
                    work()
                })
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the binding thread panicked")))
        })
    }
}

/// A socket file a bind created, to remove when the cluster ends.
#[derive(Debug)]
pub(crate) struct SocketFile {
    credentials: Credentials,
    /// The directory it was created in, as opened at the bind.
    dir: OwnedFd,
    name: OsString,
    device: u64,
    inode: u64,
}

/// Binds and listens on the Unix socket `path` (absolute) as
/// `credentials`; with `allowed_dir`, only directly inside that directory.
pub(crate) fn bind(
    path: &Path,
    credentials: &Credentials,
    allowed_dir: Option<&Path>,
    backlog: i32,
) -> io::Result<(Socket, SocketFile)> {
    let (parent, name) = match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if path.is_absolute() => (parent, name),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a path to a file",
            ));
        }
    };
    let parent = allowed_dir.unwrap_or(parent);
    credentials.run(|| {
        let dir = rustix::fs::open(
            parent,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        // The name inside the directory just opened, whatever its path
        // now leads to (the kernel resolves the descriptor, not the path).
        let mut inside = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
        inside.extend_from_slice(name.as_bytes());
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        socket.bind(&SockAddr::unix(std::ffi::OsStr::from_bytes(&inside))?)?;
        socket.listen(backlog)?;
        let stat = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let file = SocketFile {
            credentials: credentials.clone(),
            dir,
            name: name.to_os_string(),
            device: stat.st_dev as u64,
            inode: stat.st_ino as u64,
        };
        Ok((socket, file))
    })
}

impl SocketFile {
    /// Removes the file, if it is still the socket the bind created.
    pub(crate) fn remove(&self) -> io::Result<()> {
        self.credentials.run(|| {
            let stat = rustix::fs::statat(&self.dir, &self.name, AtFlags::SYMLINK_NOFOLLOW)?;
            let same = FileType::from_raw_mode(stat.st_mode as _) == FileType::Socket
                && stat.st_dev as u64 == self.device
                && stat.st_ino as u64 == self.inode;
            if !same {
                return Err(io::Error::other("no longer the socket corral created"));
            }
            rustix::fs::unlinkat(&self.dir, &self.name, AtFlags::empty())?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("corral-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn removal_follows_the_directory_opened_at_the_bind_not_the_path() {
        let root = scratch("socket-file");
        let real = root.join("real");
        let other = root.join("other");
        std::fs::create_dir(&real).unwrap();
        std::fs::create_dir(&other).unwrap();
        let link = root.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let (_socket, file) = bind(&link.join("s.sock"), &Credentials::Primary, None, 8).unwrap();
        assert!(real.join("s.sock").exists());
        // The link now points elsewhere, at a file of the same name.
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&other, &link).unwrap();
        std::fs::write(other.join("s.sock"), "keep").unwrap();
        file.remove().unwrap();
        assert!(!real.join("s.sock").exists());
        assert_eq!(std::fs::read(other.join("s.sock")).unwrap(), b"keep");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_file_replaced_after_the_bind_is_not_removed() {
        let root = scratch("socket-replaced");
        let path = root.join("s.sock");
        let (_socket, file) = bind(&path, &Credentials::Primary, None, 8).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "keep").unwrap();
        assert!(file.remove().is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"keep");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_worker_user_cannot_bind_where_it_cannot_write() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: acting as another user needs root");
            return;
        }
        let nobody = Credentials::User(RunAs {
            uid: 65534,
            gid: 65534,
            spec: "nobody".into(),
        });
        let root = scratch("socket-nobody");
        let err = bind(&root.join("s.sock"), &nobody, None, 8).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
        // In a directory of its own it binds, and the file is its own.
        let own = root.join("own");
        std::fs::create_dir(&own).unwrap();
        std::os::unix::fs::chown(&own, Some(65534), Some(65534)).unwrap();
        let (_socket, file) = bind(&own.join("s.sock"), &nobody, None, 8).unwrap();
        let owner =
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(own.join("s.sock")).unwrap());
        assert_eq!(owner, 65534);
        file.remove().unwrap();
        assert!(!own.join("s.sock").exists());
        // The primary's own thread is still root.
        assert!(rustix::process::geteuid().is_root());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
