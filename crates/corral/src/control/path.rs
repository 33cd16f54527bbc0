//! Where a cluster's control socket lives. By default one directory per
//! user holds a socket per cluster name:
//!
//! * `$XDG_RUNTIME_DIR/corral/` when that variable is set (systemd's
//!   per-user runtime directory, already private to the user);
//! * `/run/corral/` for root;
//! * `/tmp/corral-UID/` otherwise, which corral creates with mode 0700 and
//!   refuses to use when another user owns it or may enter it.
//!
//! `--control PATH` (library: [`ControlSocket::Path`]) puts the socket
//! anywhere else; `--control none` ([`ControlSocket::Off`]) turns it off.
//! The commands find clusters in the same default directory, so they see
//! the clusters of the user who runs them.

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::settings::name::check_file_name;

/// The file name suffix of control sockets in the default directory.
pub const SOCKET_SUFFIX: &str = ".sock";

/// The longest socket path the kernel takes (`sun_path` holds 108 bytes,
/// the last one a NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Where a cluster's control socket is, if it has one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ControlSocket {
    /// `NAME.sock` in the user's default directory (see the module docs).
    #[default]
    Default,
    /// This path.
    Path(PathBuf),
    /// No control socket.
    Off,
}

impl ControlSocket {
    /// Parses the command line's `--control` value: a path, or `none`.
    pub fn from_arg(text: &str) -> ControlSocket {
        if text == "none" {
            ControlSocket::Off
        } else {
            ControlSocket::Path(PathBuf::from(text))
        }
    }

    /// The socket path for a cluster called `name`, creating the default
    /// directory if need be; `None` when off.
    pub(crate) fn resolve(&self, name: &str) -> Result<Option<PathBuf>, Error> {
        let path = match self {
            ControlSocket::Off => return Ok(None),
            ControlSocket::Path(path) => path.clone(),
            ControlSocket::Default => {
                check_file_name(name)?;
                let directory = default_directory();
                prepare_directory(&directory)?;
                directory.join(format!("{name}{SOCKET_SUFFIX}"))
            }
        };
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(Error::Config(format!(
                "the control socket path {} is longer than {MAX_SOCKET_PATH} bytes, the most a \
                 Unix socket takes: use a shorter --name or --control PATH",
                path.display()
            )));
        }
        Ok(Some(path))
    }
}

/// The current user's default directory of control sockets (whether or not
/// it exists).
pub fn default_directory() -> PathBuf {
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").filter(|dir| !dir.is_empty());
    directory_for(runtime.as_deref().map(Path::new), effective_uid())
}

/// The default directory for a user `uid` with `runtime_dir` as its
/// `XDG_RUNTIME_DIR`.
fn directory_for(runtime_dir: Option<&Path>, uid: u32) -> PathBuf {
    match runtime_dir {
        Some(dir) => dir.join("corral"),
        None if uid == 0 => PathBuf::from("/run/corral"),
        None => std::env::temp_dir().join(format!("corral-{uid}")),
    }
}

/// The control sockets in the current user's default directory, as
/// (cluster name, path), sorted by name. Sockets of clusters that are gone
/// are listed too: ask them to find out.
pub fn listed_sockets() -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(default_directory()) else {
        return Vec::new();
    };
    let mut sockets: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let cluster = name.strip_suffix(SOCKET_SUFFIX)?.to_string();
            Some((cluster, entry.path()))
        })
        .collect();
    sockets.sort();
    sockets
}

/// The socket of the cluster called `name` in the default directory.
pub fn default_socket(name: &str) -> PathBuf {
    default_directory().join(format!("{name}{SOCKET_SUFFIX}"))
}

pub(crate) fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Creates the default directory (mode 0700) if it is missing, and checks
/// that nobody else owns it or may enter it: another user who could would
/// be able to put a socket of theirs where corral's commands look.
fn prepare_directory(directory: &Path) -> Result<(), Error> {
    match DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(directory)
    {
        Ok(()) => {}
        Err(err) => {
            return Err(Error::Config(format!(
                "cannot create the control socket directory {}: {err} (use --control PATH, \
                 or --control none)",
                directory.display()
            )));
        }
    }
    let metadata = std::fs::symlink_metadata(directory).map_err(|err| {
        Error::Config(format!(
            "cannot read the control socket directory {}: {err}",
            directory.display()
        ))
    })?;
    let uid = effective_uid();
    let mode = metadata.permissions().mode() & 0o777;
    if !metadata.is_dir() || metadata.uid() != uid || mode & 0o077 != 0 {
        return Err(Error::Config(format!(
            "refusing to put the control socket in {}: it must be a directory of uid {uid} \
             with mode 0700, and it is {} of uid {} with mode {mode:04o} (remove it, or use \
             --control PATH)",
            directory.display(),
            if metadata.is_dir() {
                "a directory"
            } else {
                "not a directory"
            },
            metadata.uid(),
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_directory_follows_the_rules() {
        assert_eq!(
            directory_for(Some(Path::new("/run/user/1000")), 1000),
            Path::new("/run/user/1000/corral")
        );
        assert_eq!(directory_for(None, 0), Path::new("/run/corral"));
        assert_eq!(
            directory_for(None, 1000),
            std::env::temp_dir().join("corral-1000")
        );
    }

    #[test]
    fn control_values_parse() {
        assert_eq!(ControlSocket::from_arg("none"), ControlSocket::Off);
        assert_eq!(
            ControlSocket::from_arg("/tmp/x.sock"),
            ControlSocket::Path("/tmp/x.sock".into())
        );
    }

    #[test]
    fn an_open_directory_is_refused() {
        let dir = std::env::temp_dir().join(format!("corral-path-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = prepare_directory(&dir).unwrap_err().to_string();
        assert!(err.contains("mode 0755"), "{err}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(prepare_directory(&dir).is_ok());
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn an_overlong_path_is_refused() {
        let long = ControlSocket::Path(PathBuf::from(format!("/tmp/{}", "x".repeat(200))));
        assert!(long.resolve("demo").is_err());
    }
}
